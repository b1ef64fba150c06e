"""MockHost: boots the real core, records everything in order, and each fault does what it
says (and only that), deterministically for a given seed."""

from __future__ import annotations

import pytest
from support.vmbus_io import ECHO_IF, ECHO_PREFIX, EchoVsc, EchoVsp, frame, unframe

from winhv import HvStatus
from winhv.drivers.vmbus.protocol import ChannelMessageType, VmbusVersion
from winhv.drivers.vmbus.ring import PacketType
from winhv.plugins.testing import (
    FILLER_TRANS_ID,
    TO_GUEST,
    TO_HOST,
    InjectedFault,
    MockError,
    MockHost,
    message_type,
)


@pytest.fixture
def mock() -> MockHost:
    host = MockHost(seed=7)
    yield host
    host.close()


def echo(mock: MockHost, **vm):
    return mock.harness(EchoVsp(), EchoVsc, name="echo", **vm)


def ask(pair, data: bytes) -> list[bytes]:
    replies: list[bytes] = []
    pair.vsc.channel.send_request(frame(data), lambda p: replies.append(unframe(p.payload)))
    pair.mock.settle()
    return replies


# -- recording --------------------------------------------------------------------


def test_vm_connects_and_the_handshake_is_recorded_in_order(mock: MockHost) -> None:
    vm = mock.vm(name="guest")
    assert vm.version == VmbusVersion.WIN10_V5_3
    sent = [(r.direction, r.name) for r in mock.messages(vm="guest")]
    assert sent == [(TO_HOST, "INITIATE_CONTACT"), (TO_GUEST, "VERSION_RESPONSE"),
                    (TO_HOST, "REQUESTOFFERS"), (TO_GUEST, "ALLOFFERS_DELIVERED")]
    received = mock.messages(vm="guest", stage="received")
    assert [r.type for r in received] == [r.type for r in mock.messages(vm="guest")]
    assert all(a.seq < b.seq for a, b in zip(mock.log, mock.log[1:], strict=False))


def test_hypercalls_are_recorded_with_caller_and_status(mock: MockHost) -> None:
    mock.vm(name="guest")
    posts = mock.calls("HvCallPostMessage")
    assert {c.caller for c in posts} == {"root", "guest"}
    assert all(c.status == HvStatus.SUCCESS for c in posts)
    assert mock.calls("POST_MESSAGE") == posts
    assert mock.calls(0x5C, caller="guest") == [c for c in posts if c.caller == "guest"]
    assert posts[0].name == "HvCallPostMessage"


def test_packets_and_signals_are_recorded_both_ways(mock: MockHost) -> None:
    pair = echo(mock)
    assert ask(pair, b"hi") == [ECHO_PREFIX + b"hi"]
    request, completion = mock.packets(vm=pair.vm.name)
    assert (request.direction, request.type, request.payload) == (
        TO_HOST, PacketType.DATA_INBAND, frame(b"hi"))
    assert (completion.direction, completion.type, completion.trans_id) == (
        TO_GUEST, PacketType.COMP, request.trans_id)
    assert len(mock.packets(stage="received")) == 2
    assert [s.direction for s in mock.signals()] == [TO_HOST, TO_GUEST]


def test_same_seed_same_log(mock: MockHost) -> None:
    def run(seed: int) -> list[str]:
        host = MockHost(seed=seed)
        pair = echo(host)
        host.duplicate("signal", probability=0.5, count=None)
        for n in range(8):
            pair.vsc.channel.send_request(frame(bytes([n])), None)
            host.settle()
        host.close()
        return [r.line() for r in host.log]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_message_type_accepts_every_spelling() -> None:
    expected = ChannelMessageType.OPEN_CHANNEL
    assert {message_type(x) for x in ("OPENCHANNEL", "open_channel", 5, expected)} == {expected}
    with pytest.raises(ValueError, match="unknown VMBus message type 'OPEN'"):
        message_type("OPEN")


@pytest.mark.parametrize("version", ["4.0", "5.0", "6.0", "WIN8"])
def test_version_pin_is_what_gets_negotiated(mock: MockHost, version: str) -> None:
    vm = mock.vm(version=version)
    assert f"{vm.version >> 16}.{vm.version & 0xFFFF}" == {"WIN8": "2.4"}.get(version, version)


def test_a_vm_that_cannot_connect_fails_with_the_trace(mock: MockHost) -> None:
    with pytest.raises(MockError, match=r"(?s)did not connect.*recent winhv trace"):
        mock.vm(version="5.0", guest_versions=[VmbusVersion.WIN10_V5_3])


# -- hypercall faults --------------------------------------------------------------------


def test_failed_post_message_is_retried_and_recorded(mock: MockHost) -> None:
    vm = mock.vm(name="guest", connect=False)
    mock.fail_hypercall("HvCallPostMessage", "INSUFFICIENT_BUFFERS", count=2)
    vm.client.connect()
    mock.settle()
    assert vm.version is not None
    statuses = [c.status for c in mock.calls("HvCallPostMessage", caller="guest")]
    assert statuses[:3] == [HvStatus.INSUFFICIENT_BUFFERS] * 2 + [HvStatus.SUCCESS]
    assert mock.now > 0   # the retries waited on the virtual clock


# -- transport faults --------------------------------------------------------------------


def test_dropped_open_result_leaves_the_device_opening(mock: MockHost) -> None:
    vm = mock.vm([EchoVsc])
    fault = mock.drop("message", type="OPENCHANNEL_RESULT")
    vm.server.add_device("echo", EchoVsp(), ECHO_IF)
    mock.settle()
    assert fault.fired == 1
    assert vm.device("echo").state.value == "opening"
    assert mock.messages("OPENCHANNEL_RESULT")[0].fault == "dropped"
    assert not mock.messages("OPENCHANNEL_RESULT", stage="received")


def test_delayed_message_arrives_later_on_the_virtual_clock(mock: MockHost) -> None:
    mock.delay("message", 50_000, type="VERSION_RESPONSE")
    mock.vm()
    sent = mock.messages("VERSION_RESPONSE")[0]
    got = mock.messages("VERSION_RESPONSE", stage="received")[0]
    assert (sent.fault, got.time_ns - sent.time_ns) == ("delayed", 50_000)


def test_duplicated_offer_is_refused_by_the_guest(mock: MockHost) -> None:
    vm = mock.vm([EchoVsc])
    mock.duplicate("message", type="OFFERCHANNEL")
    vm.server.add_device("echo", EchoVsp(), ECHO_IF)
    mock.settle()
    assert len(mock.messages("OFFERCHANNEL", stage="received")) == 2
    assert any("not already offered" in e for e in vm.client.errors)
    assert vm.device("echo").state.value == "open"   # the first one still worked


def test_reordered_messages_arrive_swapped(mock: MockHost) -> None:
    vm = mock.vm([EchoVsc], connect=False)
    vm.server.add_device("echo", EchoVsp(), ECHO_IF)   # offered in answer to REQUESTOFFERS
    mock.reorder("message", type="OFFERCHANNEL")
    vm.client.connect()
    mock.settle()
    sent = [r.name for r in mock.messages(direction=TO_GUEST)]
    received = [r.name for r in mock.messages(direction=TO_GUEST, stage="received")]
    assert sent[1:3] == ["OFFERCHANNEL", "ALLOFFERS_DELIVERED"]
    assert received[1:3] == ["ALLOFFERS_DELIVERED", "OFFERCHANNEL"]
    assert mock.messages("OFFERCHANNEL")[0].fault == "reordered"
    assert vm.device("echo").state.value == "open"


def test_dropped_signal_is_a_lost_interrupt(mock: MockHost) -> None:
    pair = echo(mock)
    mock.drop("signal", direction=TO_HOST)
    replies: list[bytes] = []
    for data in (b"one", b"two"):
        pair.vsc.channel.send_request(frame(data), lambda p: replies.append(unframe(p.payload)))
        mock.settle()
    # §4.4: only the empty -> non-empty write signals, so the second request did not either
    assert [s.fault for s in mock.signals(direction=TO_HOST)] == ["dropped"]
    assert replies == []
    pair.host.channel.poll()   # the host looks at its ring anyway (as a polling VSP would)
    mock.settle()
    assert replies == [ECHO_PREFIX + b"one", ECHO_PREFIX + b"two"]


def test_duplicated_signal_is_harmless(mock: MockHost) -> None:
    pair = echo(mock)
    mock.duplicate("signal", count=None)
    assert ask(pair, b"x") == [ECHO_PREFIX + b"x"]
    assert len(pair.vsp.received) == 1


def test_delayed_signal(mock: MockHost) -> None:
    pair = echo(mock)
    mock.delay("signal", 30_000, direction=TO_HOST)
    start = mock.now
    assert ask(pair, b"late") == [ECHO_PREFIX + b"late"]
    assert mock.now - start == 30_000


def test_fault_arguments_are_checked(mock: MockHost) -> None:
    with pytest.raises(ValueError, match="direction: found 'up'"):
        mock.drop("message", direction="up")
    with pytest.raises(ValueError, match="on: found 'packet'"):
        mock.drop("packet")
    with pytest.raises(ValueError, match="probability: found 0"):
        mock.drop("signal", probability=0)
    with pytest.raises(ValueError, match="unknown hypercall 'HvCallNothing'"):
        mock.fail_hypercall("HvCallNothing", "INVALID_PARAMETER")


# -- rescind --------------------------------------------------------------------


@pytest.mark.parametrize(("step", "when"), [("GPADL_HEADER", "before"), ("OPENCHANNEL", "before"),
                                            ("OPENCHANNEL", "after"),
                                            ("OPENCHANNEL_RESULT", "before")])
def test_rescind_at_each_step_leaves_the_bus_clean(mock: MockHost, step: str, when: str) -> None:
    vm = mock.vm([EchoVsc])
    fault = vm.rescind_at(step, device="echo", when=when)
    vsp = EchoVsp()
    vm.server.add_device("echo", vsp, ECHO_IF)
    mock.settle()
    assert fault.fired == 1
    assert vm.tree() == []                          # the guest released the relid
    assert mock.expect_message("RESCIND_CHANNELOFFER").relid == 1
    assert mock.notes("fault")[-1].text.startswith("rescind echo at")
    # the VM is still usable: a new device opens normally
    pair = mock.harness(EchoVsp(), EchoVsc, vm=vm, name="again")
    assert ask(pair, b"ok") == [ECHO_PREFIX + b"ok"]


# -- ring faults --------------------------------------------------------------------


def test_corrupt_write_index_closes_the_channel_with_the_reason(mock: MockHost) -> None:
    pair = echo(mock)
    mock.corrupt_ring(pair.guest.channel, "write_index", 0x7FFF_FFF8)
    host = pair.host.channel
    assert host.closed
    assert "write_index" in host.close_reason
    assert any("write_index" in e for e in pair.vm.errors())


def test_corrupt_with_a_seeded_value_replays(mock: MockHost) -> None:
    values = []
    for _ in range(2):
        host = MockHost(seed=99)
        pair = echo(host)
        values.append(host.corrupt_ring(pair.guest.channel, "write_index"))
        assert pair.host.channel.closed
        host.close()
    assert values[0] == values[1]


def test_fill_ring_makes_the_next_send_wait_then_flush(mock: MockHost) -> None:
    pair = echo(mock)
    channel = pair.vsc.channel
    written = mock.fill_ring(channel)
    assert written > 0
    replies: list[bytes] = []
    channel.send_request(frame(b"after"), lambda p: replies.append(unframe(p.payload)))
    assert channel.backlog == 1
    mock.settle()
    assert replies == [ECHO_PREFIX + b"after"]
    assert channel.backlog == 0
    assert [d for _, _, d in pair.vsp.received] == [b"after"]   # the filler never reached it
    assert mock.packets(trans_id=FILLER_TRANS_ID)


# -- driver faults --------------------------------------------------------------------


def test_crash_in_vsp_on_packet_closes_only_that_channel(mock: MockHost) -> None:
    pair = echo(mock)
    other = mock.harness(EchoVsp(), EchoVsc, vm=pair.vm, name="other")
    fault = mock.crash(pair.vsp, "on_packet", after=1)
    assert ask(pair, b"first") == [ECHO_PREFIX + b"first"]
    assert ask(pair, b"second") == []
    assert fault.fired == 1
    assert pair.host.channel.closed
    assert "InjectedFault" in pair.host.channel.close_reason
    assert ask(other, b"fine") == [ECHO_PREFIX + b"fine"]


def test_crash_in_vsc_probe_via_the_class_is_undone_by_close(mock: MockHost) -> None:
    original = EchoVsc.probe
    mock.crash(EchoVsc, "probe", error=InjectedFault("probe says no"))
    vm = mock.vm([EchoVsc])
    vm.offer(EchoVsp(), name="echo")
    assert vm.device("echo").state.value == "failed"
    assert "probe says no" in vm.device("echo").error
    mock.close()
    assert EchoVsc.probe is original
