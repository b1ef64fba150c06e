"""Negotiation (§5.2) both sides, the one-transaction rule, ids, timeouts and late answers."""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Iterator

import pytest

from winhv.vsp_vsc_pairs.ic import (
    IC_PREFIX_SIZE,
    IC_PROTOCOLS,
    IC_TABLE,
    IcFlags,
    IcGuestProtocol,
    IcHeader,
    IcHostProtocol,
    IcLateResponse,
    IcLoopback,
    IcMessageType,
    IcNegotiated,
    IcNegotiationFailed,
    IcProtocolError,
    IcRequestAbandoned,
    IcRequestRefused,
    IcState,
    IcStatus,
    IcVersion,
    NegotiateMessage,
    check_negotiate_response,
    choose_versions,
    decode_message,
    encode_message,
)
from winhv.vsp_vsc_pairs.ic.kvp import KvpGuest
from winhv.vsp_vsc_pairs.ic.shutdown import ShutdownAnswered, ShutdownHost, ShutdownTimedOut

V = IcVersion.parse
NAMES = [spec.name for spec in IC_TABLE]


@pytest.fixture
def pool_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as path:
        yield path


def make_guest(name: str, pool_dir: str, **kwargs: object) -> IcGuestProtocol:
    guest_cls = IC_PROTOCOLS[name][1]
    if guest_cls is KvpGuest:
        return KvpGuest(pool_dir, **kwargs)  # type: ignore[arg-type]
    return guest_cls(**kwargs)  # type: ignore[arg-type]


def close(guest: IcGuestProtocol) -> None:
    if isinstance(guest, KvpGuest):
        guest.close()


def test_guest_picks_its_first_preference_that_was_offered() -> None:
    offer = NegotiateMessage((V("1.0"), V("3.0")), (V("1.0"), V("3.0"), V("3.1")))
    chosen = choose_versions(offer, (V("3.0"), V("1.0")), (V("3.2"), V("3.1"), V("1.0")))
    assert chosen is not None
    assert (chosen.framework, chosen.message) == (V("3.0"), V("3.1"))
    assert choose_versions(offer, (V("4.0"),), (V("3.1"),)) is None


def test_host_rejects_counts_other_than_one_one_and_unoffered_choices() -> None:
    fw, msg = (V("1.0"), V("3.0")), (V("3.0"),)
    none = NegotiateMessage((), ()).pack(min_size=16)
    assert "supports none" in str(check_negotiate_response(none, fw, msg))
    two = NegotiateMessage((V("3.0"),), (V("3.0"), V("1.0"))).pack()
    assert "counts 1/2, expected 1/1" in str(check_negotiate_response(two, fw, msg))
    other = NegotiateMessage((V("3.0"),), (V("9.9"),)).pack()
    assert "message version 9.9, which the host did not offer" in str(
        check_negotiate_response(other, fw, msg))
    with pytest.raises(IcProtocolError, match="counts whose 16 bytes fit the 12-byte body"):
        check_negotiate_response(struct.pack("<HHI", 1, 1, 0) + b"\0" * 4, fw, msg)


def test_negotiation_request_and_response_bytes() -> None:
    host = ShutdownHost()
    (request,) = host.start(0).send
    header, body = decode_message(request)
    assert header == IcHeader(IcMessageType.NEGOTIATE, size=8 + 4 * 6,
                              flags=IcFlags.TRANSACTION | IcFlags.REQUEST)
    assert NegotiateMessage.unpack(body, what="t") == NegotiateMessage(
        (V("1.0"), V("3.0")), (V("1.0"), V("3.0"), V("3.1"), V("3.2")))
    guest = IC_PROTOCOLS["shutdown"][1]()
    (response,) = guest.receive(request, 0).send
    # Linux answers in place: same length, icmsgsize 0x10, counts 1/1
    assert len(response) == len(request)
    answer, answer_body = decode_message(response)
    assert answer.size == 0x10
    assert answer.flags == IcFlags.TRANSACTION | IcFlags.RESPONSE
    assert bytes(answer_body) == struct.pack("<HHIHHHH", 1, 1, 0, 3, 0, 3, 2)
    step = host.receive(response, 0)
    assert step.events_of(IcNegotiated)[0].versions.message == V("3.2")
    assert host.state is IcState.READY


@pytest.mark.parametrize("name", NAMES)
def test_each_ic_negotiates_newest_common_versions(name: str, pool_dir: str) -> None:
    spec = IC_PROTOCOLS[name][0].spec
    host, guest = IC_PROTOCOLS[name][0](), make_guest(name, pool_dir)
    pair = IcLoopback(host, guest)
    pair.start()
    expected = max(set(spec.host_message_versions) & set(spec.guest_message_versions))
    assert host.versions is not None
    assert host.versions == guest.versions
    assert host.versions.message == expected
    assert host.versions.framework == V("3.0")
    close(guest)


@pytest.mark.parametrize("name", NAMES)
def test_each_ic_negotiates_with_a_guest_offering_only_older_versions(
        name: str, pool_dir: str) -> None:
    spec = IC_PROTOCOLS[name][0].spec
    oldest = min(set(spec.host_message_versions) & set(spec.guest_message_versions))
    host = IC_PROTOCOLS[name][0]()
    guest = make_guest(name, pool_dir, framework_versions=("1.0",), message_versions=(oldest,))
    pair = IcLoopback(host, guest)
    pair.start()
    assert host.state is IcState.READY
    assert host.versions is not None
    assert (host.versions.framework, host.versions.message) == (V("1.0"), oldest)
    close(guest)


@pytest.mark.parametrize("name", NAMES)
def test_each_ic_negotiates_with_a_host_offering_only_older_versions(
        name: str, pool_dir: str) -> None:
    spec = IC_PROTOCOLS[name][0].spec
    oldest = min(set(spec.host_message_versions) & set(spec.guest_message_versions))
    host = IC_PROTOCOLS[name][0](framework_versions=("1.0",), message_versions=(oldest,))
    guest = make_guest(name, pool_dir)
    IcLoopback(host, guest).start()
    assert guest.versions is not None
    assert guest.versions.message == oldest
    close(guest)


@pytest.mark.parametrize("name", NAMES)
def test_each_ic_fails_cleanly_without_a_common_version(name: str, pool_dir: str) -> None:
    host = IC_PROTOCOLS[name][0]()
    guest = make_guest(name, pool_dir, message_versions=("9.9",))
    pair = IcLoopback(host, guest)
    pair.start()
    assert host.state is IcState.FAILED
    assert guest.state is IcState.FAILED
    (failed,) = [e for e in pair.host_events if isinstance(e, IcNegotiationFailed)]
    assert "supports none of the offered versions" in failed.reason
    (guest_failed,) = [e for e in pair.guest_events if isinstance(e, IcNegotiationFailed)]
    assert "guest speaks framework 3.0, 1.0 and message 9.9" in guest_failed.reason
    assert host.next_deadline() is None
    close(guest)


def test_framework_mismatch_fails_too(pool_dir: str) -> None:
    host = IC_PROTOCOLS["heartbeat"][0](framework_versions=("1.0",))
    guest = make_guest("heartbeat", pool_dir, framework_versions=("3.0",))
    pair = IcLoopback(host, guest)
    pair.start()
    assert host.state is IcState.FAILED
    assert host.failure_reason is not None


def test_requests_wait_for_negotiation_and_are_abandoned_when_it_fails() -> None:
    host = ShutdownHost()
    host.start(0)
    assert host.request("shutdown", 0).send == ()
    assert host.queued == 1
    refusal = NegotiateMessage((), ()).pack(min_size=16)
    header = IcHeader(IcMessageType.NEGOTIATE, size=16, flags=IcFlags.TRANSACTION
                      | IcFlags.RESPONSE)
    step = host.receive(encode_message(header, refusal), 0)
    assert [type(e) for e in step.events] == [IcNegotiationFailed, IcRequestAbandoned]
    with pytest.raises(RuntimeError, match="shutdown IC failed"):
        host.request("shutdown", 0)


def test_negotiation_without_an_answer_fails_after_the_timeout() -> None:
    host = ShutdownHost(response_timeout_ns=1000)
    host.start(0)
    assert host.next_deadline() == 1000
    assert host.tick(999).events == ()
    step = host.tick(1000)
    assert "no answer to version negotiation within 1e-06 s" in step.events_of(
        IcNegotiationFailed)[0].reason


def test_one_transaction_at_a_time_with_counting_ids() -> None:
    host, guest = ShutdownHost(), IC_PROTOCOLS["shutdown"][1]()
    pair = IcLoopback(host, guest, latency_ns=10)
    pair.start()
    first = host.request("shutdown", pair.now)
    second = host.request("reboot", pair.now)
    assert len(first.send) == 1
    assert second.send == ()
    assert host.queued == 1
    pair.host_step(first)
    pair.settle()
    ids = [decode_message(p)[0].transaction_id for p in pair.sent_to_guest]
    assert ids == [0, 1, 2]
    answered = [e for e in pair.host_events if isinstance(e, ShutdownAnswered)]
    assert [a.request.kind.value for a in answered] == ["shutdown", "reboot"]
    headers = [decode_message(p)[0] for p in pair.sent_to_guest[1:]]
    assert all(h.framework == V("3.0") and h.message == V("3.2") for h in headers)


def test_timeout_then_late_answer_is_dropped_not_misattributed() -> None:
    host, guest = ShutdownHost(response_timeout_ns=100), IC_PROTOCOLS["shutdown"][1]()
    pair = IcLoopback(host, guest)
    pair.start()
    held: list[bytes] = []
    pair.to_host = lambda p: held.append(p) or None  # the guest's answer is delayed
    pair.host_step(host.request("shutdown", pair.now))
    pair.run_for(100)
    assert any(isinstance(e, ShutdownTimedOut) for e in pair.host_events)
    pair.to_host = None
    pair.host_step(host.request("reboot", pair.now))
    late = host.receive(held[0], pair.now)
    assert late.events_of(IcLateResponse)[0].transaction_id == 1
    assert host.pending is not None
    assert host.pending.transaction_id == 2
    pair.settle()
    answered = [e for e in pair.host_events if isinstance(e, ShutdownAnswered)]
    assert [a.request.kind.value for a in answered] == ["reboot"]


def test_host_refuses_unsolicited_and_mismatched_answers() -> None:
    host, guest = ShutdownHost(), IC_PROTOCOLS["shutdown"][1]()
    pair = IcLoopback(host, guest)
    pair.start()
    answer = IcHeader(IcMessageType.SHUTDOWN, V("3.0"), V("3.2"), 0, 0, 5,
                      IcFlags.TRANSACTION | IcFlags.RESPONSE)
    with pytest.raises(IcProtocolError, match="found 3/5, expected no response"):
        host.receive(encode_message(answer, b""), 0)
    request = IcHeader(IcMessageType.SHUTDOWN, flags=IcFlags.TRANSACTION | IcFlags.REQUEST)
    with pytest.raises(IcProtocolError, match="icflags: found 0x3"):
        host.receive(encode_message(request, b""), 0)
    host.request("shutdown", 0)
    wrong_type = IcHeader(IcMessageType.HEARTBEAT, size=0, transaction_id=1,
                          flags=IcFlags.TRANSACTION | IcFlags.RESPONSE)
    with pytest.raises(IcProtocolError, match="expected icmsgtype 3, transaction id 1"):
        host.receive(encode_message(wrong_type, b""), 0)
    assert host.pending is not None  # unchanged by the refused packets


def test_guest_answers_other_types_and_early_requests_with_e_fail() -> None:
    guest = IC_PROTOCOLS["heartbeat"][1]()
    early = IcHeader(IcMessageType.HEARTBEAT, size=8, flags=IcFlags.TRANSACTION
                     | IcFlags.REQUEST)
    step = guest.receive(encode_message(early, bytes(8)), 0)
    assert decode_message(step.send[0])[0].status == IcStatus.E_FAIL
    assert "before a successful version negotiation" in step.events_of(
        IcRequestRefused)[0].reason
    IcLoopback(IC_PROTOCOLS["heartbeat"][0](), guest).start()
    other = IcHeader(IcMessageType.VSS, size=0, flags=IcFlags.TRANSACTION | IcFlags.REQUEST)
    step = guest.receive(encode_message(other, b""), 0)
    assert decode_message(step.send[0])[0].status == IcStatus.E_FAIL
    response = IcHeader(IcMessageType.HEARTBEAT, size=0,
                        flags=IcFlags.TRANSACTION | IcFlags.RESPONSE)
    with pytest.raises(IcProtocolError, match="RESPONSE is for the guest to set"):
        guest.receive(encode_message(response, b""), 0)


def test_guest_extends_a_short_negotiation_request_to_hold_its_answer() -> None:
    guest = IC_PROTOCOLS["heartbeat"][1]()
    body = NegotiateMessage((V("3.0"),), ()).pack()
    request = encode_message(IcHeader(IcMessageType.NEGOTIATE, size=len(body),
                                      flags=IcFlags.TRANSACTION | IcFlags.REQUEST), body)
    (response,) = guest.receive(request, 0).send
    assert len(response) == IC_PREFIX_SIZE + 16
    header, answer = decode_message(response)
    assert header.size == 16
    assert bytes(answer[:4]) == b"\0\0\0\0"
    assert guest.state is IcState.FAILED


def test_host_start_twice_is_a_usage_error() -> None:
    host: IcHostProtocol = ShutdownHost()
    host.start(0)
    with pytest.raises(RuntimeError, match="already started"):
        host.start(0)
