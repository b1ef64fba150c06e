"""The guest's bus enumerator: hot add, hot remove (rescind → remove, close, GPADL teardown,
pages freed, RELID_RELEASED; fact sheet §3.5(e)–(f)), unload and reconnect (§3.5(g)), and
VSC faults contained to their own device."""

from __future__ import annotations

from support.vmbus_io import (
    ECHO_IF,
    ECHO_PREFIX,
    EchoVsc,
    EchoVsp,
    assert_echo_works,
    echo_vm,
    failing,
    frame,
    request,
    two_vms,
)

from winhv.drivers.vmbus._guest import DeviceState
from winhv.drivers.vmbus._server_notifier import ChannelState
from winhv.drivers.vmbus.loopback import boot_host, boot_vm

# -- hot add and hot remove ---------------------------------------------------------------------


def test_hot_add_while_connected_opens_the_new_device():
    loop, _vsp, first = echo_vm()
    events: list[tuple[str, int]] = []
    loop.client.on_change = lambda event, device: events.append((event, device.relid))
    added = loop.server.add_device("second", EchoVsp(), ECHO_IF)
    assert loop.client.devices.get(added.relid) is None   # nothing moves until the guest runs
    loop.run()
    device = loop.client.devices[added.relid]
    assert device.state is DeviceState.OPEN
    assert events == [("offered", added.relid), ("bound", added.relid)]
    assert request(loop, device.channel, b"new") == ECHO_PREFIX + b"new"
    assert request(loop, first.channel, b"old") == ECHO_PREFIX + b"old"


def test_hot_remove_while_open_releases_everything_and_the_relid_is_reused():
    loop = boot_vm([EchoVsc])
    free_before = loop.guest.allocator.free_pages
    vsp = EchoVsp()
    host_device = loop.offer("echo", vsp, ECHO_IF)
    relid = host_device.relid
    device = loop.client.devices[relid]
    driver, channel, host_channel = device.driver, device.channel, host_device.channel
    assert loop.guest.allocator.free_pages == free_before - device.ring_pages
    events: list[str] = []
    loop.client.on_change = lambda event, d: events.append(event)

    loop.server.remove_device(relid)
    loop.run()

    assert driver.removed
    assert channel.closed
    assert host_channel.closed
    assert vsp.closed == [host_channel]
    assert events == ["unbound", "removed"]
    assert device.state is DeviceState.REMOVED
    assert device.gpadl_id is None
    assert device.ring_pages == 0
    # GPADL torn down on both sides, rings freed, relid released (§3.5(f) step 3).
    assert loop.guest.allocator.free_pages == free_before
    assert loop.server.protocol.gpadl_pages == 0   # no GPADL left on the host
    assert relid not in loop.client.devices
    assert relid not in loop.server.devices
    assert relid not in loop.server.protocol.channels()
    assert relid not in loop.client.protocol.offers
    # The relid is free: the next offer takes it and opens again.
    again = loop.offer("echo again", EchoVsp(), ECHO_IF)
    assert again.relid == relid
    assert_echo_works(loop, relid)
    assert loop.client.errors == []
    assert loop.server.errors == []


def test_rescinding_an_unbound_offer_releases_the_relid():
    loop = boot_vm()
    host_device = loop.offer("nobody", EchoVsp(), ECHO_IF)
    assert loop.client.devices[host_device.relid].state is DeviceState.OFFERED
    loop.server.remove_device(host_device.relid)
    loop.run()
    assert host_device.relid not in loop.client.devices
    assert host_device.relid not in loop.server.protocol.channels()


def test_rescinding_one_device_leaves_the_others_running():
    loop, _vsp, first = echo_vm()
    second = loop.offer("second", EchoVsp(), ECHO_IF)
    loop.server.remove_device(first.relid)
    loop.run()
    assert_echo_works(loop, second.relid)


def test_hot_remove_while_the_guests_open_is_in_flight_still_releases_the_relid():
    # Audit finding 4 (/tmp/aud/h_rescind_race.py): the host rescinds before it sees the
    # guest's OPENCHANNEL, so it never answers that open. The guest must drop the open, tear
    # down the GPADL and send RELID_RELEASED, so the host's revoked channel goes (§3.5(f)).
    loop = boot_vm([EchoVsc])
    free_before = loop.guest.allocator.free_pages
    server = loop.server
    deliver = server.receive

    def receive(payload: bytes, connection_id: int) -> None:
        if payload[:4] == (5).to_bytes(4, "little"):      # OPENCHANNEL in flight ...
            server.remove_device(int.from_bytes(payload[8:12], "little"))   # ... hot remove
        deliver(payload, connection_id)

    server.receive = receive   # type: ignore[method-assign]
    device = server.add_device("echo", EchoVsp(), ECHO_IF)
    loop.settle()
    assert device.relid not in server.protocol.channels()     # RELID_RELEASED arrived
    assert device.relid not in server.devices
    assert device.relid not in loop.client.devices
    assert device.relid not in loop.client.protocol.offers
    assert loop.guest.allocator.free_pages == free_before
    assert server.protocol.gpadl_pages == 0   # no GPADL left on the host
    assert loop.client.errors == []
    assert server.errors == []


# -- unload and reconnect -----------------------------------------------------------------------


def test_unload_closes_every_channel_frees_the_rings_and_allows_a_reconnect():
    loop = boot_vm([EchoVsc])
    free_before = loop.guest.allocator.free_pages
    vsps = [EchoVsp(), EchoVsp()]
    relids = [loop.offer(f"echo{i}", vsp, ECHO_IF).relid for i, vsp in enumerate(vsps)]
    drivers = [loop.client.devices[r].driver for r in relids]

    loop.client.unload()
    loop.run()

    assert loop.client.connected_version is None
    assert loop.server.protocol.version is None
    assert all(d.removed for d in drivers)
    assert all(len(v.closed) == 1 for v in vsps)
    assert loop.guest.allocator.free_pages == free_before
    assert loop.server.protocol.gpadl_pages == 0   # no GPADL left on the host
    assert all(loop.server.channel(r) is None for r in relids)
    assert loop.client.tree() == []
    assert loop.client.errors == []   # no RELID_RELEASED after an unload (§3.5(g))

    loop.client.connect()
    loop.run()
    assert loop.client.connected_version is not None
    for relid in relids:
        assert loop.client.devices[relid].state is DeviceState.OPEN
        assert_echo_works(loop, relid)
    assert loop.client.errors == []


# -- VSC faults ---------------------------------------------------------------------------------


def _with_a_healthy_neighbour(vsc: type[EchoVsc]):
    loop = boot_vm([vsc])
    free_before = loop.guest.allocator.free_pages
    bad = loop.offer("bad", EchoVsp(), ECHO_IF)
    loop.client.overrides[ECHO_IF] = EchoVsc
    good = loop.offer("good", EchoVsp(), ECHO_IF)
    return loop, bad, good, free_before


def test_a_vsc_raising_in_probe_fails_only_its_device():
    loop, bad, good, _ = _with_a_healthy_neighbour(failing("probe"))
    device = loop.client.devices[bad.relid]
    assert device.state is DeviceState.FAILED
    assert device.error == "probe failed: RuntimeError: injected fault in " \
        "EchoVscFailing_probe.probe"
    assert any("probe failed" in e for e in loop.client.errors)
    assert device.ring_pages == 0
    assert device.gpadl_id is None
    assert bad.channel is None
    assert loop.client.tree()[0]["error"] == device.error
    assert_echo_works(loop, good.relid)


def test_a_vsc_raising_in_on_open_fails_its_device_and_releases_its_channel():
    loop, bad, good, free_before = _with_a_healthy_neighbour(failing("on_open"))
    device = loop.client.devices[bad.relid]
    assert device.state is DeviceState.FAILED
    assert device.error.startswith("on_open raised RuntimeError")
    assert device.driver.removed
    assert bad.channel is None                  # the guest closed it: the host closed its end
    assert bad.vsp.closed
    assert loop.server.protocol.channel_state(bad.relid) is ChannelState.CLOSED
    # Its rings went back (the good device still holds its own).
    good_pages = loop.client.devices[good.relid].ring_pages
    assert loop.guest.allocator.free_pages == free_before - good_pages
    assert_echo_works(loop, good.relid)


def test_a_vsc_raising_in_on_packet_fails_its_device_and_closes_the_channel():
    loop, bad, good, _ = _with_a_healthy_neighbour(failing("on_packet"))
    device = loop.client.devices[bad.relid]
    assert device.state is DeviceState.OPEN
    bad.vsp.channel.send(frame(b"trigger"))
    loop.run()
    assert device.state is DeviceState.FAILED
    assert device.error == "channel: driver raised RuntimeError: injected fault in " \
        "EchoVscFailing_on_packet.on_packet"
    assert device.driver.removed
    assert bad.channel is None
    assert_echo_works(loop, good.relid)


def test_a_failing_vsc_in_one_vm_does_not_touch_another_vm():
    machine = boot_host()
    bad_vm, _, bad = echo_vm("bad", machine=machine, drivers=(failing("on_packet"),))
    good_vm, _, _ = echo_vm("good", machine=machine)
    bad_vm.server.devices[bad.relid].vsp.channel.send(frame(b"trigger"))
    bad_vm.run()
    assert bad.state is DeviceState.FAILED
    assert_echo_works(good_vm)
    assert good_vm.client.errors == []


def test_two_vms_each_round_trip_on_their_own_channel():
    a, b = two_vms()
    assert a.hv is b.hv
    assert a.guest.partition_id != b.guest.partition_id
    assert request(a, a.client.devices[1].channel, b"to a") == ECHO_PREFIX + b"to a"
    assert request(b, b.client.devices[1].channel, b"to b") == ECHO_PREFIX + b"to b"
    assert a.server.devices[1].vsp.received[-1][2] == b"to a"
    assert b.server.devices[1].vsp.received[-1][2] == b"to b"
