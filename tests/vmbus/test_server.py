"""The root side: per-channel wiring (connection ids 0x2000 + relid, one root SIEF flag each;
fact sheet §3.1, §3.5(d)), ring GPADLs checked against the guest's RAM, VSP faults contained
to their device, 64 channels on one VM, and VM stop (which gives the root's ports and ids back).
Hostile guests against the same glue are in ``test_server_hostile``."""

from __future__ import annotations

import struct
import time

import pytest
from support.vmbus_io import (
    ECHO_IF,
    ECHO_PREFIX,
    UNKNOWN_IF,
    EchoVsc,
    EchoVsp,
    assert_echo_works,
    echo_vm,
    frame,
    request,
)

from winhv._status import HvStatus
from winhv.drivers.vmbus._guest import DeviceState
from winhv.drivers.vmbus._host import CHANNEL_CONNECTION_BASE, ROOT_EVENT_SINTS
from winhv.drivers.vmbus._messages import Unload
from winhv.drivers.vmbus._server import VmbusServer
from winhv.drivers.vmbus._server_notifier import ChannelState
from winhv.drivers.vmbus.loopback import boot_host, boot_vm

# -- wiring -------------------------------------------------------------------------------------


def test_sixty_four_channels_open_with_unique_ids_and_flags():
    started = time.perf_counter()
    loop = boot_vm([EchoVsc], connect=False)
    devices = [loop.server.add_device(f"echo{i}", EchoVsp(), ECHO_IF) for i in range(64)]
    loop.client.connect()
    # 64 offers overflow the SINT's message buffers: the host retries on a virtual timer.
    loop.settle()
    elapsed = time.perf_counter() - started
    relids = [d.relid for d in devices]
    assert sorted(relids) == list(range(1, 65))
    guests = [loop.client.devices[r] for r in relids]
    assert all(g.state is DeviceState.OPEN for g in guests)
    assert len({g.gpadl_id for g in guests}) == 64
    assert len({g.ring_gpa for g in guests}) == 64
    connections = {g.offer.connection_id for g in guests}
    assert connections == {CHANNEL_CONNECTION_BASE | r for r in relids}
    assert len({d.instance_id for d in devices}) == 64
    opened = [loop.server._open[r] for r in relids]
    flags = {o.root_flag for o in opened}
    assert len(flags) == 64
    assert all(sint in ROOT_EVENT_SINTS and 1 <= flag < 2048 for sint, flag in flags)
    assert len({o.root_port for o in opened}) == 64
    assert len({o.root_connection for o in opened}) == 64
    assert len({o.guest_port for o in opened}) == 64
    for relid in relids:
        channel = loop.client.devices[relid].channel
        channel.send_request(frame(b"%d" % relid))
    loop.run()
    for device in devices:
        assert device.vsp.received == [(6, 1, b"%d" % device.relid)]
    assert loop.client.errors == []
    assert loop.server.errors == []
    assert elapsed < 2.0   # the bar is 20 ms (benchmarks); this only catches pathologies


def test_sixty_four_hot_adds_all_open_once_retries_have_run():
    loop = boot_vm([EchoVsc])
    devices = [loop.server.add_device(f"echo{i}", EchoVsp(), ECHO_IF) for i in range(64)]
    loop.settle()
    assert all(loop.client.devices[d.relid].state is DeviceState.OPEN for d in devices)
    assert loop.server.errors == []


class _CountingHandle:
    """The root's WinHv handle, counting the host's INSUFFICIENT_BUFFERS posts."""

    def __init__(self, hv):
        self._hv = hv
        self.refused = 0

    def __getattr__(self, name):
        return getattr(self._hv, name)

    def WinHvPostMessage(self, *args):
        status = self._hv.WinHvPostMessage(*args)
        if status == HvStatus.INSUFFICIENT_BUFFERS:
            self.refused += 1
        return status


def test_a_congested_host_keeps_one_retry_and_reposts_nothing_until_it_fires():
    # 64 offers overflow the guest's 16 message buffers. Messages queued behind a refused
    # one must wait for the single pending retry: posting each as it is queued only fails
    # again (one refused hypercall and one more retry timer per message, ~180 here).
    loop = boot_vm([EchoVsc], connect=False)
    for i in range(64):
        loop.server.add_device(f"echo{i}", EchoVsp(), ECHO_IF)
    counting = _CountingHandle(loop.root.hv)
    loop.root.hv = counting
    loop.client.connect()
    loop.settle()
    assert all(d.state is DeviceState.OPEN for d in loop.client.devices.values())
    assert len(loop.client.devices) == 64
    assert 0 < counting.refused <= 16   # about one per 16 buffered messages, not per message
    assert loop.server.errors == []


def test_closing_a_channel_gives_its_root_flag_back():
    loop, _vsp, device = echo_vm()
    flag = loop.server._open[device.relid].root_flag
    loop.server.remove_device(device.relid)
    loop.run()
    assert flag in loop.host._flags.free


def test_guest_view_is_bounded_by_the_guest_ram():
    loop = boot_vm()
    size = loop.server.guest_pages << 12
    assert len(loop.server.guest_view(size - 16, 16)) == 16
    for gpa, length in [(size - 16, 17), (size, 1), (-1, 1), (0, -1)]:
        with pytest.raises(ValueError, match="outside the guest's RAM"):
            loop.server.guest_view(gpa, length)


def test_guest_writes_through_guest_view_are_the_guests_memory():
    loop = boot_vm()
    gpa = loop.guest.alloc_pages(1)
    loop.server.guest_view(gpa + 8, 4)[:] = b"host"
    assert bytes(loop.guest.view(gpa, 12)) == bytes(8) + b"host"


# -- GPADLs and OPENCHANNEL the host refuses ----------------------------------------------------


def _unbound_offer(loop):
    """A device no guest driver binds, so the test can drive the guest protocol by hand."""
    host_device = loop.offer("manual", EchoVsp(), UNKNOWN_IF)
    return host_device.relid


def test_a_gpadl_naming_pages_outside_guest_ram_is_refused():
    loop = boot_vm()
    relid = _unbound_offer(loop)
    outside = loop.server.guest_pages + 5
    gpadl_id = loop.client.protocol.create_gpadl(relid, [100, outside])
    loop.run()
    with pytest.raises(ValueError, match="gpadl_id"):
        loop.server.protocol.gpadl(relid, gpadl_id)
    assert any(f"{outside:#x}" in e for e in loop.server.errors)
    assert loop.server.protocol.gpadl_pages == 0   # no GPADL left on the host


@pytest.mark.parametrize(("pfns", "split", "reason"), [
    ([100, 102, 103, 104], 2, "not contiguous"),
    ([100, 101, 102, 103], 1, "under 2 pages"),
    ([100, 101, 102, 103], 3, "under 2 pages"),
])
def test_an_open_over_a_bad_ring_gpadl_is_refused_with_the_reason(pfns, split, reason):
    loop = boot_vm()
    relid = _unbound_offer(loop)
    gpadl_id = loop.client.protocol.create_gpadl(relid, pfns)
    loop.run()
    loop.client.protocol.open_channel(relid, gpadl_id, split)
    loop.run()
    assert not loop.client.protocol.is_open(relid)
    assert loop.server.protocol.channel_state(relid) is ChannelState.CLOSED
    assert loop.server.channel(relid) is None
    assert any("ring GPADL refused" in e and reason in e for e in loop.server.errors)


def test_modify_channel_is_answered_with_a_failure_status():
    loop, _vsp, device = echo_vm()
    statuses: list[tuple[int, int]] = []
    loop.client.modify_channel_response = lambda relid, status: statuses.append((relid, status))
    loop.client.protocol.modify_channel(device.relid, 0)
    loop.run()
    assert statuses == [(device.relid, 0xC0000001 - (1 << 32))]   # STATUS_UNSUCCESSFUL
    assert loop.server.errors == []
    assert_echo_works(loop, device.relid)


# -- VSP faults ---------------------------------------------------------------------------------


def test_a_vsp_raising_in_on_open_refuses_the_open_and_only_that_device_fails():
    loop = boot_vm([EchoVsc])
    free_before = loop.guest.allocator.free_pages
    bad = loop.offer("bad", EchoVsp({"fail_in": "on_open"}), ECHO_IF)
    good = loop.offer("good", EchoVsp(), ECHO_IF)
    device = loop.client.devices[bad.relid]
    assert device.state is DeviceState.FAILED
    assert device.error == "the host refused OPENCHANNEL (status 0xc0000001)"
    assert bad.errors == ["on_open: injected fault in EchoVsp.on_open"]
    assert bad.channel is None
    good_pages = loop.client.devices[good.relid].ring_pages
    assert loop.guest.allocator.free_pages == free_before - good_pages
    assert_echo_works(loop, good.relid)


def test_a_vsp_raising_in_on_packet_closes_its_channel_rescinds_it_and_the_rest_go_on():
    machine = boot_host()
    loop, bad_vsp, device = echo_vm("a", machine=machine, vsp=EchoVsp({"fail_in": "on_packet"}))
    good = loop.offer("good", EchoVsp(), ECHO_IF)
    other_vm, _, _ = echo_vm("b", machine=machine)
    host_device = loop.server.devices[device.relid]
    device.channel.send_request(frame(b"boom"))
    loop.settle()
    reason = "driver raised RuntimeError: injected fault in EchoVsp.on_packet"
    assert bad_vsp.channel.closed
    assert bad_vsp.channel.close_reason == reason
    assert host_device.errors == [reason]
    assert loop.server.errors == [f"a: echo: channel closed: {reason}"]
    assert bad_vsp.closed == [bad_vsp.channel]
    # The offer was withdrawn so the guest stops waiting on it: removed and released.
    assert device.relid not in loop.client.devices
    assert device.relid not in loop.server.devices
    assert_echo_works(loop, good.relid)
    assert_echo_works(other_vm)
    assert other_vm.server.errors == []


def test_a_vsp_reading_outside_guest_ram_fails_only_its_channel():
    loop, vsp, device = echo_vm()
    outside = loop.server.guest_pages + 1
    device.channel.send_gpa_direct([(16, 0, [outside])], frame(b"R"))
    loop.run()
    assert vsp.channel.closed
    assert "outside the guest's RAM" in vsp.channel.close_reason
    second = loop.offer("second", EchoVsp(), ECHO_IF)
    assert_echo_works(loop, second.relid)


# -- VM stop ------------------------------------------------------------------------------------


def test_shutdown_closes_every_channel_stops_every_vsp_and_unroutes_the_vm():
    machine = boot_host()
    loop, vsp, _device = echo_vm("a", machine=machine)
    other_vm, _, _ = echo_vm("b", machine=machine)
    ports = list(loop.server._ports)
    loop.server.shutdown()
    assert vsp.stopped
    assert vsp.channel.closed
    assert vsp.channel.close_reason == "VM stopped"
    assert vsp.closed == [vsp.channel]
    assert all(port not in loop.host._routes for port in ports)
    assert loop.partition.partition_id not in loop.host.servers
    # The guest may still post: the root drops what no server routes, and goes on.
    loop.guest.hv.WinHvPostMessage(1, 1, bytes(16))
    loop.run()
    assert_echo_works(other_vm)


def _root(loop):
    return loop.hv.partitions[loop.root.partition_id]


def test_shutdown_gives_the_roots_ports_and_connections_back_for_the_next_vm():
    machine = boot_host()
    other_vm, _, _ = echo_vm("b", machine=machine)
    root = _root(other_vm)
    ports, connections = sorted(root.ports), sorted(root.connections)
    loop, _vsp, _device = echo_vm("a", machine=machine)
    stopped = set(loop.server._ports)
    loop.server.shutdown()
    assert (sorted(root.ports), sorted(root.connections)) == (ports, connections)
    # Once the root has taken another VMBus message, the stopped VM's message ports can have
    # left none in its SIM slot: their ids are free again.
    other_vm.client.protocol.modify_channel(1, 0)
    other_vm.run()
    fresh = (loop.host._port_ids.next, loop.host._connection_ids.next)
    third, _, _ = echo_vm("c", machine=machine)
    assert set(third.server._ports) == stopped
    assert (loop.host._port_ids.next, loop.host._connection_ids.next) == fresh
    assert_echo_works(third)


def test_a_message_left_by_a_stopped_vm_never_reaches_the_vm_that_reuses_its_port_id():
    machine = boot_host()
    loop, _vsp, _device = echo_vm("a", machine=machine)
    # The guest's last message sits in the root's SIM slot when its VM stops.
    loop.guest.hv.WinHvPostMessage(1, 1, struct.pack("<II", 0x1F, 0))
    loop.server.shutdown()
    third, _, _ = echo_vm("c", machine=machine)
    assert third.server.errors == []
    assert_echo_works(third)


def test_the_per_vm_limits_are_constructor_keywords():
    loop = boot_vm(connect=False)
    part = loop.vid.create_partition("second", memory_mb=1)
    server = VmbusServer(loop.host, part.partition_id, root_ram_page=part.root_ram_page,
                         guest_pages=part.memory_pages, max_open_channels=3, outbox_limit=5)
    assert (server.max_open_channels, server.outbox_limit) == (3, 5)
    assert (loop.server.max_open_channels, loop.server.outbox_limit) == (256, 4096)


def test_echo_payloads_survive_both_directions_at_once():
    loop, vsp, device = echo_vm()
    vsp.channel.send(frame(b"host first"))
    reply = request(loop, device.channel, b"guest second")
    assert reply == ECHO_PREFIX + b"guest second"
    assert device.driver.unsolicited == [b"host first"]




# -- VSP code that calls back into the server while it is closed -------------------------------


class _UnplugOnClose(EchoVsp):
    """Withdraws its own device when its channel closes ("unplug when the guest lets go")."""

    server: VmbusServer
    nested: list[str]

    def on_close(self, channel):
        super().on_close(channel)
        try:
            self.server.remove_device(channel.relid)
        except ValueError as exc:   # already being rescinded: the host API says so
            self.nested.append(str(exc))


def _unplugging(loop):
    vsp = _UnplugOnClose()
    vsp.server, vsp.nested = loop.server, []
    device = loop.offer("unplug", vsp, ECHO_IF)
    sent: list[str] = []
    send = loop.server.send
    loop.server.send = lambda m: (sent.append(type(m).__name__), send(m))[1]
    return vsp, device.relid, sent


def test_a_device_unplugged_from_on_close_after_the_guest_closed_it_is_gone_for_good():
    loop = boot_vm([EchoVsc])
    _vsp, relid, sent = _unplugging(loop)
    loop.client.protocol.close_channel(relid)
    loop.settle()
    assert sent.count("RescindChannelOffer") == 1
    assert relid not in loop.server.protocol.channels()   # RELID_RELEASED freed it
    assert relid not in loop.server.devices
    loop.client.unload()
    loop.settle()
    loop.client.connect()
    loop.settle()
    assert relid not in loop.client.devices                # not offered again
    assert loop.server.errors == []
    assert loop.client.errors == []


def test_a_device_unplugged_again_while_being_rescinded_gets_one_rescind():
    loop = boot_vm([EchoVsc])
    vsp, relid, sent = _unplugging(loop)
    loop.server.remove_device(relid)
    loop.settle()
    assert sent.count("RescindChannelOffer") == 1
    assert vsp.nested == [f"rescind: relid {relid} found revoked, expected a live channel"]
    assert relid not in loop.server.protocol.channels()
    assert loop.client.errors == []


def test_a_device_unplugged_while_an_unload_closes_it_sends_no_rescind():
    # UNLOAD with the channel still open (the implicit close of §3.5(g)): the device's
    # on_close withdraws it, which must not send RESCIND to a guest that is disconnecting.
    loop = boot_vm([EchoVsc])
    _vsp, relid, sent = _unplugging(loop)
    loop.guest.hv.WinHvPostMessage(4, 1, Unload().pack())
    loop.settle()
    assert sent == ["UnloadComplete"]
    assert relid not in loop.server.protocol.channels()
    assert relid not in loop.server.devices
    assert loop.server.errors == []
