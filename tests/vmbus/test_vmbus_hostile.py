"""A hostile guest against the root (architecture: "the guest is untrusted"): random control
messages posted on the VMBus connections 1 and 4 (fact sheet §3.1, §3.5(a)), and random
writes over the rings it shares with the host (§4.1–§4.3). The host never raises past
``run()``, never storms, closes the channel it cannot trust with a reason, and the other
channels and the other VM keep round-tripping.
"""

from __future__ import annotations

import contextlib
import struct

from hypothesis import event, given, settings
from hypothesis import strategies as st
from support.vmbus_io import (
    ECHO_IF,
    EchoVsp,
    assert_echo_works,
    frame,
    two_vms,
)
from support.vmbus_strategies import messages

from winhv.drivers.vmbus._channel import ChannelError
from winhv.drivers.vmbus._messages import Direction, InitiateContact
from winhv.drivers.vmbus._versions import VmbusVersion
from winhv.drivers.vmbus.loopback import Loopback
from winhv.drivers.vmbus.ring import READ_INDEX_OFFSET, WRITE_INDEX_OFFSET

#: Far below the scheduler's default: a storm fails the test at once instead of hanging it.
MAX_STEPS = 100_000
RING = 4 * 4096   # EchoVsc.ring_size

_guest_messages = messages(Direction.GUEST_TO_HOST).map(lambda m: m.pack()[:240])
_posts = st.lists(
    st.tuples(st.sampled_from([1, 4]),
              st.binary(max_size=240) | _guest_messages
              | st.builds(lambda t, rest: struct.pack("<II", t, 0) + rest,
                          st.integers(0, 0x20), st.binary(max_size=232))),
    min_size=1, max_size=8)


def _machine() -> tuple[Loopback, Loopback]:
    a, b = two_vms()
    a.hv.scheduler.max_steps = MAX_STEPS
    # A second device on the hostile VM: it must survive what happens to the first.
    a.offer("second", EchoVsp(), ECHO_IF)
    return a, b


def _host_is_sound(vm: Loopback) -> None:
    """No internal error escaped the state machine; every closed channel says why."""
    assert not [e for e in vm.server.errors if "internal error" in e]
    for device in vm.server.devices.values():
        vsp = device.vsp
        for channel in getattr(vsp, "opened", []):
            if channel.closed:
                assert channel.close_reason


# -- control messages ---------------------------------------------------------------------------


@settings(max_examples=40)
@given(posts=_posts)
def test_random_control_messages_never_escape_the_host(posts):
    a, b = _machine()
    for connection, data in posts:
        a.guest.hv.WinHvPostMessage(connection, 1, data)
        a.settle()
    _host_is_sound(a)
    event(f"guest connected: {a.server.protocol.version is not None}")
    event(f"host errors: {min(len(a.server.errors), 3)}")
    assert_echo_works(b)
    assert b.server.errors == []


def _host_holds(vm: Loopback) -> dict[str, int]:
    """How much of what every VM shares is in use: the host's pools, routes, root wiring."""
    host = vm.host
    root = vm.hv.partitions[vm.root.partition_id]

    def used(pool) -> int:
        return pool.next - len(pool.free)

    return {"flags": used(host._flags), "port ids": used(host._port_ids),
            "connection ids": used(host._connection_ids), "routes": len(host._routes),
            "root ports": len(root.ports), "root connections": len(root.connections)}


@settings(max_examples=25)
@given(posts=_posts)
def test_whatever_a_guest_sent_its_vm_stopping_gives_back_all_it_held(posts):
    # Whatever the guest did, once its VM's server shuts down the host holds exactly what it
    # holds when the same VM stops right after boot: no flag, id, route or port leaks.
    reference, _ = _machine()
    reference.server.shutdown()
    a, b = _machine()
    for connection, data in posts:
        a.guest.hv.WinHvPostMessage(connection, 1, data)
        a.settle()
    a.server.shutdown()
    assert _host_holds(a) == _host_holds(reference)
    assert_echo_works(b)


def test_a_contact_naming_a_sint_that_does_not_exist_is_answered_on_sint_2():
    a, b = _machine()
    # msg_sint 200: there is no such SINT, so the host cannot create that port.
    contact = InitiateContact(VmbusVersion.WIN10_V5_3, msg_sint=200).pack()
    a.guest.hv.WinHvPostMessage(4, 1, contact)
    a.settle()
    assert any("unreachable target" in e for e in a.server.errors)
    _host_is_sound(a)
    assert_echo_works(b)


def test_a_second_contact_resets_the_guests_connection_only():
    a, b = _machine()
    contact = InitiateContact(VmbusVersion.WIN10_V5_3, msg_sint=2).pack()
    a.guest.hv.WinHvPostMessage(4, 1, contact)
    a.settle()
    # The host dropped every channel of that guest (§3.5(g)) with a reason; b goes on.
    for device in a.server.devices.values():
        assert device.channel is None
    assert all(vsp.channel.closed for vsp in (d.vsp for d in a.server.devices.values()))
    assert_echo_works(b)


# -- ring contents ------------------------------------------------------------------------------


def _signal_host(vm: Loopback, relid: int = 1) -> None:
    device = vm.client.devices[relid]
    vm.guest.hv.WinHvSignalEvent(device.offer.connection_id, 0)


def test_an_out_of_range_write_index_closes_that_channel_only():
    a, b = _machine()
    vsp = a.server.devices[1].vsp   # captured now: a faulted device is rescinded
    device = a.client.devices[1]
    struct.pack_into("<I", a.guest.view(device.ring_gpa, 8), WRITE_INDEX_OFFSET, 0x7FFF_FFF8)
    _signal_host(a)
    a.run()
    host = vsp.channel
    assert host.closed
    assert host.close_reason.startswith("inbound ring: ")
    assert "write_index" in host.close_reason
    assert any("channel closed: inbound ring" in e for e in a.server.errors)
    assert_echo_works(a, 2)
    assert_echo_works(b)


def test_a_broken_descriptor_closes_that_channel_only():
    a, b = _machine()
    vsp = a.server.devices[1].vsp   # captured now: a faulted device is rescinded
    device = a.client.devices[1]
    device.channel.send_request(frame(b"x"))        # queued; the host has not run
    data = a.guest.view(device.ring_gpa + 4096, 16)
    struct.pack_into("<HHH", data, 0, 6, 9, 3)        # offset8 9 > len8 3
    a.run()
    host = vsp.channel
    assert host.closed
    assert "len8" in host.close_reason
    assert_echo_works(a, 2)
    assert_echo_works(b)


def test_a_read_index_the_guest_broke_closes_the_hosts_sending_channel():
    a, b = _machine()
    vsp = a.server.devices[1].vsp   # captured now: a faulted device is rescinded
    device = a.client.devices[1]
    inbound_control = a.guest.view(device.ring_gpa + RING, 8)
    struct.pack_into("<I", inbound_control, READ_INDEX_OFFSET, 12)   # not 8-byte aligned
    device.channel.send_request(frame(b"answer me"))
    a.run()
    host = vsp.channel
    assert host.closed
    assert host.close_reason.startswith("outbound ring: ")
    assert "read_index" in host.close_reason
    assert_echo_works(a, 2)
    assert_echo_works(b)


@settings(max_examples=40)
@given(
    ring=st.sampled_from(["to host", "to guest"]),
    area=st.sampled_from(["control", "data"]),
    offset=st.integers(0, RING - 4096 - 1),
    junk=st.binary(min_size=1, max_size=64),
    queued=st.integers(0, 3),
)
def test_random_ring_corruption_never_escapes_the_host(ring, area, offset, junk, queued):
    a, b = _machine()
    vsp = a.server.devices[1].vsp   # captured now: a faulted device is rescinded
    device = a.client.devices[1]
    for i in range(queued):
        device.channel.send_request(frame(b"request %d" % i))
    base = device.ring_gpa + (0 if ring == "to host" else RING)
    if area == "control":
        offset %= 72          # the indices, mask, pending size and feature bits
        base_offset = offset
    else:
        base_offset = 4096 + offset
    length = min(len(junk), RING - base_offset)
    a.guest.view(base + base_offset, length)[:] = junk[:length]
    _signal_host(a)
    a.run()
    with contextlib.suppress(ChannelError):   # the guest may have closed its own end
        device.channel.send_request(frame(b"after"))
    a.run()
    _host_is_sound(a)
    host = vsp.channel
    event(f"host channel: {host.close_reason.split(':')[0] if host.closed else 'open'}")
    assert_echo_works(a, 2)
    assert_echo_works(b)
