"""A whole machine end to end: connect and negotiate (fact sheet §3.5(a), §3.4), offers and
driver binding, request/completion round trips, GPA-direct packets and host-initiated packets
over real rings, SynIC messages and event signals (§3.5(c)–(d), §4.3)."""

from __future__ import annotations

import struct

import pytest
from support.vmbus_io import (
    ALT_IF,
    ECHO_IF,
    ECHO_PREFIX,
    UNKNOWN_IF,
    AltVsc,
    EchoVsc,
    EchoVsp,
    echo_vm,
    frame,
    request,
    unframe,
)

from winhv.drivers.vmbus._guest import DeviceState
from winhv.drivers.vmbus._versions import CLIENT_VERSIONS, VmbusVersion
from winhv.drivers.vmbus.loopback import boot_vm, connect_pair
from winhv.drivers.vmbus.ring import PacketType

V = VmbusVersion


# -- connect and negotiate ----------------------------------------------------------------------


def test_default_negotiates_the_newest_version_the_guest_proposes():
    loop = boot_vm()
    assert loop.client.connected_version is CLIENT_VERSIONS[0] is V.WIN10_V5_3
    assert loop.server.protocol.version is V.WIN10_V5_3
    assert loop.client.offers_complete
    assert loop.client.errors == []
    assert loop.server.errors == []
    # From 5.0 the host names the message connection: 1 (§3.5(a) step 3.4).
    assert loop.client.protocol.message_connection_id == 1


def test_host_capped_at_win8_1_gets_the_guest_down_to_win8_1():
    loop = boot_vm(host_version=V.WIN8_1)
    assert loop.client.connected_version is V.WIN8_1
    assert loop.server.protocol.version is V.WIN8_1
    assert loop.server.connection is not None
    # Below 5.0 the contact and all later messages use connection 1, SINT 2 (§3.5(a)).
    assert loop.server.connection.message_sint == 2
    assert loop.client.errors == []


@pytest.mark.parametrize("versions", [(V.WIN8,), (V.WIN8_1, V.WIN8), (V.WIN10, V.WIN8_1)])
def test_guest_offering_only_older_versions_gets_its_newest(versions):
    loop = boot_vm(guest_versions=versions)
    assert loop.client.connected_version is versions[0]
    assert loop.server.protocol.version is versions[0]


def test_no_common_version_leaves_the_guest_disconnected_with_an_error():
    loop = boot_vm(guest_versions=(V.WIN10_V5_3, V.WIN10_V5_2), host_version=V.WIN8_1)
    assert loop.client.connected_version is None
    assert loop.server.protocol.version is None
    assert any("version_supported" in e for e in loop.client.errors)


def test_a_device_opens_at_a_capped_version_and_round_trips():
    loop, _vsp, device = echo_vm(host_version=V.WIN8)
    assert loop.client.connected_version is V.WIN8
    assert device.state is DeviceState.OPEN
    assert request(loop, device.channel, b"win8") == ECHO_PREFIX + b"win8"


# -- offers and binding -------------------------------------------------------------------------


def test_offers_made_before_connect_are_all_delivered_and_bound_by_guid():
    loop = boot_vm([EchoVsc, AltVsc], connect=False)
    echo = loop.server.add_device("echo", EchoVsp(), ECHO_IF)
    alt = loop.server.add_device("alt", EchoVsp(), ALT_IF)
    other = loop.server.add_device("other", EchoVsp(), UNKNOWN_IF)
    loop.client.connect()
    loop.run()
    assert loop.client.offers_complete
    devices = loop.client.devices
    assert set(devices) == {echo.relid, alt.relid, other.relid}
    assert devices[echo.relid].driver_class is EchoVsc
    assert devices[alt.relid].driver_class is AltVsc
    assert devices[echo.relid].state is devices[alt.relid].state is DeviceState.OPEN
    assert devices[echo.relid].instance_id == echo.instance_id
    # No driver for UNKNOWN_IF: offered, never probed, no rings, no GPADL.
    lonely = devices[other.relid]
    assert lonely.state is DeviceState.OFFERED
    assert lonely.driver is None
    assert lonely.gpadl_id is None
    assert lonely.ring_pages == 0
    assert other.channel is None


def test_tree_describes_every_device():
    loop = boot_vm([EchoVsc])
    echo = loop.offer("echo", EchoVsp(), ECHO_IF)
    other = loop.offer("other", EchoVsp(), UNKNOWN_IF)
    tree = loop.client.tree()
    assert [node["relid"] for node in tree] == sorted([echo.relid, other.relid])
    by_relid = {node["relid"]: node for node in tree}
    node = by_relid[echo.relid]
    assert node["driver"] == "EchoVsc"
    assert node["state"] == "open"
    assert node["interface_id"] == str(ECHO_IF)
    assert node["connection_id"] == 0x2000 | echo.relid
    assert node["ring_size"] == EchoVsc.ring_size
    assert by_relid[other.relid]["driver"] is None
    assert by_relid[other.relid]["state"] == "offered"


def test_per_vm_override_binds_another_driver():
    loop = boot_vm([EchoVsc])
    loop.client.overrides[ECHO_IF] = AltVsc
    device = loop.offer("echo", EchoVsp(), ECHO_IF)
    guest = loop.client.devices[device.relid]
    assert guest.driver_class is AltVsc
    assert isinstance(guest.driver, AltVsc)
    assert guest.state is DeviceState.OPEN
    assert request(loop, guest.channel, b"alt") == ECHO_PREFIX + b"alt"


def test_per_vm_override_to_none_leaves_the_device_unbound():
    loop = boot_vm([EchoVsc])
    loop.client.overrides[ECHO_IF] = None
    device = loop.offer("echo", EchoVsp(), ECHO_IF)
    guest = loop.client.devices[device.relid]
    assert guest.state is DeviceState.OFFERED
    assert guest.driver is None
    assert device.channel is None


def test_connect_pair_returns_both_open_ends():
    vsp = EchoVsp()
    _loop, host_channel, guest = connect_pair(vsp, EchoVsc)
    assert vsp.channel is host_channel
    assert not host_channel.closed
    assert guest.channel.relid == host_channel.relid == guest.relid
    assert guest.channel.connection_id == host_channel.connection_id == 0x2000 | guest.relid
    assert host_channel.guest_view is not None


def test_connect_pair_reports_why_the_channel_did_not_open():
    with pytest.raises(RuntimeError, match=r"did not open: .*probe failed"):
        connect_pair(EchoVsp(), type("Bad", (EchoVsc,), {"fail_in": "probe"}))


# -- data path ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 7, 8, 100, 3000])
def test_request_and_completion_round_trip_the_payload(size):
    loop, vsp, device = echo_vm()
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    assert request(loop, device.channel, data) == ECHO_PREFIX + data
    kind, trans_id, got = vsp.received[-1]
    assert kind == PacketType.DATA_INBAND
    assert got == data
    assert trans_id != 0
    assert device.channel.outstanding == 0


def test_many_requests_outstanding_complete_in_order_with_their_own_payloads():
    loop, vsp, device = echo_vm()
    channel = device.channel
    replies: list[tuple[int, bytes]] = []
    ids = []
    for i in range(300):
        data = struct.pack("<I", i) * (1 + i % 5)
        ids.append(channel.send_request(
            frame(data), lambda p, i=i: replies.append((i, unframe(p.payload)))))
    assert len(set(ids)) == 300
    assert channel.outstanding == 300
    loop.run()
    assert [i for i, _ in replies] == list(range(300))
    for i, reply in replies:
        assert reply == ECHO_PREFIX + struct.pack("<I", i) * (1 + i % 5)
    assert channel.outstanding == 0
    assert [t for _, t, _ in vsp.received] == ids


def test_packets_without_completion_requested_get_no_completion():
    loop, vsp, device = echo_vm()
    device.channel.send(frame(b"fire and forget"))
    loop.run()
    assert vsp.received == [(PacketType.DATA_INBAND, 0, b"fire and forget")]
    assert device.channel.packets_received == 0


def test_gpa_direct_read_lets_the_vsp_read_the_named_guest_pages():
    loop, vsp, device = echo_vm()
    gpa = loop.guest.alloc_pages(3)
    pattern = bytes((i * 7 + 3) & 0xFF for i in range(3 * 4096))
    loop.guest.view(gpa, 3 * 4096)[:] = pattern
    offset, count = 100, 2 * 4096 + 50
    pfns = [(gpa >> 12) + i for i in range(3)]
    replies: list[bytes] = []
    device.channel.send_gpa_direct([(count, offset, pfns)], frame(b"R"),
                                   lambda p: replies.append(unframe(p.payload)))
    loop.run()
    assert replies == [pattern[offset:offset + count]]
    kind, _, command = vsp.received[-1]
    assert kind == PacketType.DATA_USING_GPA_DIRECT
    assert command == b"R"


def test_gpa_direct_write_lands_in_guest_memory():
    loop, _vsp, device = echo_vm()
    gpa = loop.guest.alloc_pages(2)
    first, second = gpa >> 12, (gpa >> 12) + 1
    # Two ranges: 10 bytes at the end of page 1, 20 bytes at the start of page 2.
    ranges = [(10, 4086, [first]), (20, 0, [second])]
    done: list[bytes] = []
    device.channel.send_gpa_direct(ranges, frame(b"W\x5a"), lambda p: done.append(b"ok"))
    loop.run()
    assert done == [b"ok"]
    memory = bytes(loop.guest.view(gpa, 2 * 4096))
    assert memory[4086:4096] == b"\x5a" * 10
    assert memory[4096:4116] == b"\x5a" * 20
    assert memory[:4086] == bytes(4086)
    assert memory[4116:] == bytes(2 * 4096 - 4116)


def test_unsolicited_host_packets_reach_the_guest_driver():
    loop, vsp, device = echo_vm()
    for i in range(5):
        vsp.channel.send(frame(b"news %d" % i))
    loop.run()
    assert device.driver.unsolicited == [b"news %d" % i for i in range(5)]


def test_host_requests_complete_through_the_guest():
    loop, vsp, device = echo_vm()
    device.driver.channel.on_packet = lambda ch, p: ch.complete(p.trans_id, frame(b"guest ok"))
    replies: list[bytes] = []
    vsp.channel.send_request(frame(b"ping"), lambda p: replies.append(unframe(p.payload)))
    loop.run()
    assert replies == [b"guest ok"]
