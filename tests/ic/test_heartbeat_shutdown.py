"""Heartbeat (§5.4) and shutdown (§5.5) end to end through the loopback, and their errors."""

from __future__ import annotations

import struct

import pytest

from winhv.vsp_vsc_pairs.ic import (
    IC_PREFIX_SIZE,
    IcFlags,
    IcHeader,
    IcLoopback,
    IcMessageType,
    IcProtocolError,
    IcRequestRefused,
    IcStatus,
    IcTransactionTimedOut,
    IcVersion,
    decode_message,
    encode_message,
)
from winhv.vsp_vsc_pairs.ic.heartbeat import (
    HeartbeatAnswered,
    HeartbeatGuest,
    HeartbeatHealth,
    HeartbeatHealthChanged,
    HeartbeatHost,
)
from winhv.vsp_vsc_pairs.ic.shutdown import (
    ShutdownAnswered,
    ShutdownGuest,
    ShutdownHost,
    ShutdownKind,
    ShutdownRequest,
    ShutdownRequested,
    ShutdownTimedOut,
)

S = 1_000_000_000
REQ = IcFlags.TRANSACTION | IcFlags.REQUEST


def health_changes(pair: IcLoopback) -> list[HeartbeatHealth]:
    return [e.new for e in pair.host_events if isinstance(e, HeartbeatHealthChanged)]


def test_heartbeat_guest_answers_sequence_plus_one_in_place() -> None:
    host, guest = HeartbeatHost(first_sequence=41), HeartbeatGuest()
    pair = IcLoopback(host, guest, latency_ns=1000)
    pair.start()
    request, response = pair.sent_to_guest[1], pair.sent_to_host[1]
    assert len(request) == IC_PREFIX_SIZE + 40
    assert len(response) == len(request)
    assert struct.unpack_from("<Q", request, IC_PREFIX_SIZE) == (41,)
    assert struct.unpack_from("<Q", response, IC_PREFIX_SIZE) == (42,)
    assert response[IC_PREFIX_SIZE + 8:] == request[IC_PREFIX_SIZE + 8:]
    assert host.last_sequence == 42
    assert host.health is HeartbeatHealth.OK


def test_heartbeat_period_and_health_ok_then_lost_then_ok() -> None:
    host, guest = HeartbeatHost(period_ns=2 * S, lost_after=3), HeartbeatGuest()
    pair = IcLoopback(host, guest, latency_ns=1000)
    assert host.health is HeartbeatHealth.NO_CONTACT
    pair.start()
    pair.run_for(10 * S)
    answers = [e for e in pair.host_events if isinstance(e, HeartbeatAnswered)]
    assert [a.sequence for a in answers] == [0, 1, 2, 3, 4, 5]
    assert [a.at for a in answers][1] - answers[0].at == 2 * S
    pair.to_guest = lambda payload: None  # the guest hangs
    pair.run_for(5 * S)
    assert host.health is HeartbeatHealth.OK
    pair.run_for(2 * S)
    assert host.health is HeartbeatHealth.LOST
    pair.to_guest = None
    pair.run_for(2 * S)
    assert host.health is HeartbeatHealth.OK
    assert health_changes(pair) == [HeartbeatHealth.OK, HeartbeatHealth.LOST, HeartbeatHealth.OK]


def test_heartbeat_guest_that_never_answers_stays_no_contact() -> None:
    host, guest = HeartbeatHost(period_ns=S), HeartbeatGuest()
    pair = IcLoopback(host, guest)
    pair.start()
    pair.to_guest = lambda payload: None
    host2 = HeartbeatHost(period_ns=S)
    pair2 = IcLoopback(host2, HeartbeatGuest(), to_guest=lambda p: None)
    pair2.start()
    pair2.run_for(20 * S)
    assert host2.health is HeartbeatHealth.NO_CONTACT
    assert health_changes(pair2) == []


def test_heartbeat_wrong_sequence_from_guest_is_a_protocol_error() -> None:
    host = HeartbeatHost()
    pair = IcLoopback(host, HeartbeatGuest())
    pair.start()
    pair.run_for(2 * S - 1)
    host.tick(pair.now + 1)
    txn = host.pending
    assert txn is not None
    header = IcHeader(IcMessageType.HEARTBEAT, IcVersion(3, 0), IcVersion(3, 0), 8, 0,
                      txn.transaction_id, IcFlags.TRANSACTION | IcFlags.RESPONSE)
    with pytest.raises(IcProtocolError, match=r"seq_num: found 7, expected 2 \(the request's 1"):
        host.receive(encode_message(header, struct.pack("<Q", 7)), pair.now)
    short = IcHeader(IcMessageType.HEARTBEAT, IcVersion(3, 0), IcVersion(3, 0), 4, 0,
                     txn.transaction_id, IcFlags.TRANSACTION | IcFlags.RESPONSE)
    with pytest.raises(IcProtocolError, match="icmsgsize: found 4, expected at least 8"):
        host.receive(encode_message(short, bytes(4)), pair.now)


def test_heartbeat_reads_the_openvmm_application_state() -> None:
    host = HeartbeatHost()
    pair = IcLoopback(host, HeartbeatGuest())
    pair.start()
    pair.run_for(2 * S - 1)
    host.tick(pair.now + 1)
    txn = host.pending
    assert txn is not None
    header = IcHeader(IcMessageType.HEARTBEAT, IcVersion(3, 0), IcVersion(3, 0), 16, 0,
                      txn.transaction_id, IcFlags.TRANSACTION | IcFlags.RESPONSE)
    step = host.receive(encode_message(header, struct.pack("<QI4x", 2, 1)), pair.now + 1)
    assert step.events_of(HeartbeatAnswered)[0].application_state == 1


@pytest.mark.parametrize("kind", list(ShutdownKind))
@pytest.mark.parametrize("force", [False, True])
def test_shutdown_round_trip(kind: ShutdownKind, force: bool) -> None:
    seen: list[ShutdownRequest] = []
    guest = ShutdownGuest(lambda r: seen.append(r) is None, hibernate_supported=True)
    host = ShutdownHost()
    pair = IcLoopback(host, guest)
    pair.start()
    pair.host_step(host.request(kind, pair.now, reason=7, timeout_s=60, force=force,
                                message="Maintenance ✓"))
    pair.settle()
    expected = ShutdownRequest(kind, 7, 60, force, "Maintenance ✓")
    assert seen == [expected]
    assert [e for e in pair.guest_events if isinstance(e, ShutdownRequested)] == [
        ShutdownRequested(expected, True)]
    assert [e for e in pair.host_events if isinstance(e, ShutdownAnswered)] == [
        ShutdownAnswered(expected, 0, True)]
    request = pair.sent_to_guest[-1]
    assert len(request) == IC_PREFIX_SIZE + 2060


def test_shutdown_refused_by_the_application_or_hibernate_unsupported() -> None:
    host, guest = ShutdownHost(), ShutdownGuest(lambda r: False)
    pair = IcLoopback(host, guest)
    pair.start()
    pair.host_step(host.request("shutdown", pair.now))
    pair.host_step(host.request("hibernate", pair.now))
    pair.settle()
    answers = [e for e in pair.host_events if isinstance(e, ShutdownAnswered)]
    assert [(a.status, a.accepted) for a in answers] == [(IcStatus.E_FAIL, False)] * 2
    reasons = [e.reason for e in pair.guest_events if isinstance(e, IcRequestRefused)]
    assert reasons == ["the guest application refused", "hibernate is not supported"]


def test_shutdown_without_an_answer_times_out() -> None:
    host = ShutdownHost(response_timeout_ns=30 * S)
    pair = IcLoopback(host, ShutdownGuest())
    pair.start()
    pair.to_guest = lambda payload: None
    pair.host_step(host.request("shutdown", pair.now, timeout_s=30))
    pair.run_for(30 * S)
    assert isinstance(pair.host_events[-2], IcTransactionTimedOut)
    assert pair.host_events[-1] == ShutdownTimedOut(ShutdownRequest(ShutdownKind.SHUTDOWN,
                                                                    timeout_s=30))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (bytes(8), "shutdown body of 8 bytes"),
        (struct.pack("<III", 0, 0, 6), "shutdown flags 0x6"),
        (struct.pack("<III", 0, 0, 0x10), "shutdown flags 0x10"),
    ],
)
def test_shutdown_guest_answers_invalid_requests_with_e_fail(body: bytes, reason: str) -> None:
    guest = ShutdownGuest()
    IcLoopback(ShutdownHost(), guest).start()
    header = IcHeader(IcMessageType.SHUTDOWN, IcVersion(3, 0), IcVersion(3, 2), len(body),
                      flags=REQ)
    step = guest.receive(encode_message(header, body), 0)
    assert decode_message(step.send[0])[0].status == IcStatus.E_FAIL
    assert reason in step.events_of(IcRequestRefused)[0].reason


def test_shutdown_guest_tolerates_a_short_or_odd_message_field() -> None:
    guest = ShutdownGuest()
    IcLoopback(ShutdownHost(), guest).start()
    body = struct.pack("<III", 1, 2, 2) + "ab".encode("utf-16-le") + b"\xff"
    header = IcHeader(IcMessageType.SHUTDOWN, IcVersion(3, 0), IcVersion(3, 2), len(body),
                      flags=REQ)
    step = guest.receive(encode_message(header, body), 0)
    assert step.events_of(ShutdownRequested)[0].request.message == "ab"
