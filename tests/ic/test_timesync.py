"""Timesync (§5.6): both layouts, SYNC then SAMPLEs, and the guest clock's stated tolerance."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from winhv.vsp_vsc_pairs.ic import (
    IC_PREFIX_SIZE,
    IcFlags,
    IcHeader,
    IcLoopback,
    IcMessageType,
    IcRequestRefused,
    IcStatus,
    IcVersion,
    decode_message,
    encode_message,
)
from winhv.vsp_vsc_pairs.ic.timesync import (
    WLTIMEDELTA,
    GuestClock,
    TimeAdjusted,
    TimesyncAnswered,
    TimesyncFlags,
    TimesyncGuest,
    TimesyncHost,
)

S = 1_000_000_000
#: The tolerance the module states: 1 µs = 10 units of 100 ns, from the third sample on.
TOLERANCE = 10


def error_at(pair: IcLoopback, guest: TimesyncGuest) -> int:
    ref = pair.now // 100
    return guest.clock.read(ref) - (WLTIMEDELTA + ref)


def test_host_sends_sync_first_then_sample_every_period_v4_layout() -> None:
    host, guest = TimesyncHost(), TimesyncGuest()
    pair = IcLoopback(host, guest, now=7 * S)
    pair.start()
    pair.run_for(12 * S)
    samples = [decode_message(p) for p in pair.sent_to_guest[1:]]
    assert all(h.message == IcVersion(4, 0) and h.size == 24 for h, _ in samples)
    parsed = [struct.unpack_from("<QQB", body) for _, body in samples]
    assert [p[2] for p in parsed] == [TimesyncFlags.SYNC, TimesyncFlags.SAMPLE,
                                      TimesyncFlags.SAMPLE]
    assert [p[1] for p in parsed] == [7 * S // 100, 12 * S // 100, 17 * S // 100]
    assert parsed[0][0] == WLTIMEDELTA + 7 * S // 100
    answered = [e for e in pair.host_events if isinstance(e, TimesyncAnswered)]
    assert [a.status for a in answered] == [0, 0, 0]


def test_pre_v4_layout_is_28_bytes_and_has_no_reference_time() -> None:
    host, guest = TimesyncHost(message_versions=("1.0", "3.0")), TimesyncGuest()
    pair = IcLoopback(host, guest)
    pair.start()
    header, body = decode_message(pair.sent_to_guest[1])
    assert (header.message, header.size) == (IcVersion(3, 0), 28)
    parent, child, rtt, flags = struct.unpack_from("<QQQB", body)
    assert (parent, child, rtt, flags) == (WLTIMEDELTA, 0, 0, TimesyncFlags.SYNC)
    assert len(pair.sent_to_host[1]) == IC_PREFIX_SIZE + 28


def test_sync_steps_the_clock_and_probe_leaves_it() -> None:
    guest = TimesyncGuest(GuestClock(WLTIMEDELTA + 10**9))
    IcLoopback(TimesyncHost(), guest).start()
    assert guest.clock.read(0) == WLTIMEDELTA
    probe = struct.pack("<QQBBB5x", WLTIMEDELTA + 5, 0, 0, 0, 0)
    header = IcHeader(IcMessageType.TIMESYNC, IcVersion(3, 0), IcVersion(4, 0), 24,
                      flags=IcFlags.TRANSACTION | IcFlags.REQUEST)
    step = guest.receive(encode_message(header, probe), 0)
    assert step.events_of(TimeAdjusted)[0].action == "none"
    assert guest.clock.read(0) == WLTIMEDELTA


@pytest.mark.parametrize("size", [21, 0])
def test_short_sample_is_answered_with_e_fail(size: int) -> None:
    guest = TimesyncGuest()
    IcLoopback(TimesyncHost(), guest).start()
    header = IcHeader(IcMessageType.TIMESYNC, IcVersion(3, 0), IcVersion(4, 0), size,
                      flags=IcFlags.TRANSACTION | IcFlags.REQUEST)
    step = guest.receive(encode_message(header, bytes(size)), 0)
    assert decode_message(step.send[0])[0].status == IcStatus.E_FAIL
    assert "expected at least 22" in step.events_of(IcRequestRefused)[0].reason


def test_linux_sized_v4_sample_is_accepted() -> None:
    guest = TimesyncGuest()
    IcLoopback(TimesyncHost(), guest).start()
    body = struct.pack("<QQBBB3x", WLTIMEDELTA + 100, 0, TimesyncFlags.SYNC, 0, 0)
    header = IcHeader(IcMessageType.TIMESYNC, IcVersion(3, 0), IcVersion(4, 0), 22,
                      flags=IcFlags.TRANSACTION | IcFlags.REQUEST)
    step = guest.receive(encode_message(header, body), 50 * 100)
    assert decode_message(step.send[0])[0].status == IcStatus.S_OK
    # host_time = parenttime + (now_ref - vmreferencetime) = +100 + 50
    assert guest.clock.read(50) == WLTIMEDELTA + 150


@settings(max_examples=25, deadline=None)
@given(
    offset=st.integers(-(10**12), 10**12),
    drift=st.floats(-400.0, 400.0),
    latency_ns=st.integers(0, 50_000_000),
)
def test_guest_clock_converges_within_the_stated_tolerance_v4(
        offset: int, drift: float, latency_ns: int) -> None:
    guest = TimesyncGuest(GuestClock(WLTIMEDELTA + offset, drift_ppm=drift))
    pair = IcLoopback(TimesyncHost(), guest, latency_ns=latency_ns)
    pair.start()
    pair.run_for(10 * S + 2 * latency_ns)  # SYNC and two SAMPLEs delivered
    worst = 0
    for _ in range(40):
        pair.run_for(S // 4 + 1)
        worst = max(worst, abs(error_at(pair, guest)))
    assert worst <= TOLERANCE


def test_clock_never_runs_backwards_while_slewing() -> None:
    guest = TimesyncGuest(GuestClock(WLTIMEDELTA, drift_ppm=-500))
    pair = IcLoopback(TimesyncHost(), guest)
    pair.start()
    readings = []
    for _ in range(200):
        pair.run_for(S // 10)
        readings.append(guest.clock.read(pair.now // 100))
    assert readings == sorted(readings)
    actions = {e.action for e in pair.guest_events if isinstance(e, TimeAdjusted)}
    assert actions == {"step", "slew"}


def test_a_sample_more_than_five_seconds_off_steps_the_clock() -> None:
    guest = TimesyncGuest(GuestClock(WLTIMEDELTA, drift_ppm=0))
    pair = IcLoopback(TimesyncHost(), guest)
    pair.start()
    guest.clock.step(pair.now // 100, WLTIMEDELTA + 6 * 10**7)  # someone set it 6 s ahead
    pair.run_for(5 * S)
    last = [e for e in pair.guest_events if isinstance(e, TimeAdjusted)][-1]
    assert last.action == "step"
    assert abs(error_at(pair, guest)) <= TOLERANCE


def test_pre_v4_error_settles_at_the_delivery_latency() -> None:
    latency_ns = 3_000_000
    guest = TimesyncGuest(GuestClock(WLTIMEDELTA, drift_ppm=200), message_versions=("3.0",))
    pair = IcLoopback(TimesyncHost(), guest, latency_ns=latency_ns)
    pair.start()
    pair.run_for(30 * S)
    assert abs(error_at(pair, guest) + latency_ns // 100) <= TOLERANCE


def test_host_sync_request_sends_a_sync_sample() -> None:
    host, guest = TimesyncHost(), TimesyncGuest()
    pair = IcLoopback(host, guest)
    pair.start()
    pair.host_step(host.sync(pair.now + 1))
    pair.settle()
    flags = [struct.unpack_from("<QQB", decode_message(p)[1])[2] for p in pair.sent_to_guest[1:]]
    assert flags == [TimesyncFlags.SYNC, TimesyncFlags.SYNC]
