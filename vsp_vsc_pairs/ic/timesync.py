"""The time synchronization IC (icmsgtype 4, fact sheet §5.6), and a guest clock it disciplines.

Time is in 100 ns units since 1601-01-01 UTC (``WLTIMEDELTA`` is 1970 in those units). The host
sends a SYNC sample when the IC comes up (and on :meth:`TimesyncHost.sync`), then a SAMPLE every
``sample_period_ns`` (OpenVMM: 5 s), each as a transaction, one at a time.

Two layouts, chosen by the negotiated message version:

* **< 4.0** (``ictimesync_data``): ``parenttime u64, childtime u64, roundtriptime u64,
  flags u8`` -- 25 bytes in Linux, 28 with OpenVMM's 3 reserved bytes. The guest takes
  ``parenttime`` as the time *now*: the delivery latency becomes clock error.
* **4.0** (``ictimesync_ref_data``, "ref data"): ``parenttime u64, vmreferencetime u64,
  flags u8, leap u8, stratum u8`` -- 22 bytes in Linux, 24 in OpenVMM. ``vmreferencetime`` is
  the guest's partition reference counter when the host sampled ``parenttime``, so the guest
  computes ``host_time = parenttime + (now_ref - vmreferencetime)`` and latency cancels out.

The host sends OpenVMM's sizes (28/24); the guest accepts anything from Linux's sizes up.

**The guest clock** (:class:`GuestClock`) is a system clock driven by an oscillator that runs
``drift_ppm`` fast or slow against the reference counter, starting from any reading (an initial
offset). :class:`TimesyncGuest` disciplines it:

* SYNC, or a SAMPLE more than 5 s off (Linux's threshold): **step** to the host time;
* other SAMPLEs: **slew**. The clock's rate is set from the last two samples (host time
  elapsed / oscillator ticks elapsed, which removes the drift), plus a correction that absorbs
  the remaining phase error over one sample interval, limited to ``max_slew_ppm`` (500 ppm, as
  ``adjtime``). The clock never jumps and never runs backwards while slewing.

**Tolerance achieved** (tested in ``tests/ic/test_timesync.py``): with version 4.0, any
initial offset, drift up to ±400 ppm (comfortably inside the 500 ppm slew limit: at the
limit itself the correction has no headroom left for phase) and any constant delivery
latency, from the third sample
on (SYNC and two SAMPLEs) the guest clock is within 1 µs (10 units) of the host clock at every
instant; the residue is rounding to 100 ns units. With a version < 4.0 the error instead
settles at the one-way delivery latency, which that layout cannot see.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntFlag
from typing import ClassVar, Final

from ._framework import (
    IcEvent,
    IcGuestProtocol,
    IcHostProtocol,
    IcStep,
    IcTransaction,
)
from ._icmsg import IC_BY_NAME, IcHeader, IcSpec, IcStatus, IcVersion
from ._negotiate import NegotiatedVersions

__all__ = [
    "DEFAULT_SAMPLE_PERIOD_NS",
    "STEP_THRESHOLD_100NS",
    "TIMESYNC_REF_DATA",
    "TIMESYNC_REF_DATA_LINUX_SIZE",
    "TIMESYNC_REF_DATA_SIZE",
    "TIMESYNC_REF_VERSION",
    "TIMESYNC_V1_DATA",
    "TIMESYNC_V1_DATA_LINUX_SIZE",
    "TIMESYNC_V1_DATA_SIZE",
    "WLTIMEDELTA",
    "GuestClock",
    "TimeAdjusted",
    "TimesyncAnswered",
    "TimesyncFlags",
    "TimesyncGuest",
    "TimesyncHost",
    "TimesyncSample",
]

#: 100 ns intervals from 1601-01-01 to 1970-01-01 (§5.6).
WLTIMEDELTA: Final = 116444736000000000
#: The first message version with the "ref data" layout.
TIMESYNC_REF_VERSION: Final = IcVersion(4, 0)
#: parenttime, childtime, roundtriptime u64; flags u8; 3 reserved (OpenVMM, 28 bytes).
TIMESYNC_V1_DATA: Final = struct.Struct("<QQQB3x")
TIMESYNC_V1_DATA_SIZE: Final = TIMESYNC_V1_DATA.size
TIMESYNC_V1_DATA_LINUX_SIZE: Final = 25
#: parenttime, vmreferencetime u64; flags, leap, stratum u8; 5 reserved (OpenVMM, 24 bytes).
#: The sheet is unsure of the size (§8.11); Linux ``include/linux/hyperv.h`` has ``struct
#: ictimesync_ref_data { u64 parenttime; u64 vmreferencetime; u8 flags; char leapflags; char
#: stratum; u8 reserved[3]; } __packed`` (22 bytes) and ``struct ictimesync_data { u64
#: parenttime; u64 childtime; u64 roundtriptime; u8 flags; } __packed`` (25): the offsets of
#: every field agree, so the host sends OpenVMM's padded sizes and the guest accepts Linux's.
TIMESYNC_REF_DATA: Final = struct.Struct("<QQBBB5x")
TIMESYNC_REF_DATA_SIZE: Final = TIMESYNC_REF_DATA.size
TIMESYNC_REF_DATA_LINUX_SIZE: Final = 22
#: OpenVMM's host sends a SAMPLE every 5 s (§5.6).
DEFAULT_SAMPLE_PERIOD_NS: Final = 5_000_000_000
#: A SAMPLE further off than 5 s steps the clock instead of slewing it (§5.6, Linux).
STEP_THRESHOLD_100NS: Final = 50_000_000
_V1_FIELDS: Final = struct.Struct("<QQQB")
_REF_FIELDS: Final = struct.Struct("<QQBBB")


def _reference_of(now: int) -> int:
    return now // 100


def _host_time_of(now: int) -> int:
    return WLTIMEDELTA + now // 100


class TimesyncFlags(IntFlag):
    """The sample's ``flags`` byte; PROBE is the value 0 (§5.6)."""

    PROBE = 0
    SYNC = 1
    SAMPLE = 2


@dataclass(frozen=True, slots=True)
class TimesyncSample:
    """One sample as it travels: ``reference_time`` is ``vmreferencetime`` (4.0) or ``None``."""

    parent_time: int
    reference_time: int | None
    flags: int
    leap: int = 0
    stratum: int = 0


@dataclass(frozen=True, slots=True)
class TimesyncAnswered(IcEvent):
    """The guest answered ``sample`` with ``status`` after ``round_trip_ns``."""

    sample: TimesyncSample
    status: int
    round_trip_ns: int


@dataclass(frozen=True, slots=True)
class TimeAdjusted(IcEvent):
    """Guest side: what a sample did to the clock.

    ``action`` is ``"step"``, ``"slew"`` or ``"none"`` (PROBE); ``error`` is host time minus
    the guest clock at ``reference`` before the adjustment, in 100 ns units.
    """

    action: str
    host_time: int
    error: int
    reference: int


class TimesyncHost(IcHostProtocol):
    """Host side: SYNC when ready, then a SAMPLE every ``sample_period_ns``.

    ``host_time(now)`` gives the host's clock (100 ns since 1601) and ``reference_time(now)``
    the guest's reference counter (100 ns) at virtual time ``now``; both default to the virtual
    clock itself (starting at 1970-01-01 and 0). They are pure functions of ``now``: nothing here
    reads the wall clock.
    """

    spec: ClassVar[IcSpec] = IC_BY_NAME["timesync"]

    def __init__(
        self,
        *,
        sample_period_ns: int = DEFAULT_SAMPLE_PERIOD_NS,
        host_time: Callable[[int], int] = _host_time_of,
        reference_time: Callable[[int], int] = _reference_of,
        framework_versions: tuple[IcVersion | str, ...] | None = None,
        message_versions: tuple[IcVersion | str, ...] | None = None,
        response_timeout_ns: int | None = DEFAULT_SAMPLE_PERIOD_NS,
    ) -> None:
        if sample_period_ns <= 0:
            raise ValueError(f"timesync sample_period_ns: found {sample_period_ns}, "
                             "expected > 0")
        super().__init__(framework_versions=framework_versions,
                         message_versions=message_versions,
                         response_timeout_ns=response_timeout_ns)
        self.sample_period_ns = sample_period_ns
        self.host_time = host_time
        self.reference_time = reference_time
        self._next_sample: int | None = None
        self._sent_time = 0

    def sync(self, now: int) -> IcStep:
        """Send a SYNC sample (a hard set, as after a restore) as soon as the channel is free."""
        return self._submit(b"", TimesyncFlags.SYNC, now)

    def _on_ready(self, now: int) -> None:
        self._enqueue(b"", TimesyncFlags.SYNC)
        self._next_sample = now + self.sample_period_ns

    def _poll(self, now: int) -> None:
        if self._next_sample is not None and now >= self._next_sample:
            self._next_sample = now + self.sample_period_ns
            if self.pending is None and not self.queued:
                self._enqueue(b"", TimesyncFlags.SAMPLE)

    def _wakeup(self) -> int | None:
        return self._next_sample

    def _prepare(self, txn: IcTransaction, now: int) -> bytes:
        flags = int(txn.request)  # type: ignore[call-overload]
        v4 = self.versions is not None and self.versions.message >= TIMESYNC_REF_VERSION
        sample = TimesyncSample(self.host_time(now), self.reference_time(now) if v4 else None,
                                flags)
        txn.request = sample
        self._sent_time = now
        if sample.reference_time is not None:
            return TIMESYNC_REF_DATA.pack(sample.parent_time, sample.reference_time, flags, 0, 0)
        return TIMESYNC_V1_DATA.pack(sample.parent_time, 0, 0, flags)

    def _on_response(self, txn: IcTransaction, header: IcHeader, body: memoryview,
                     now: int) -> None:
        assert isinstance(txn.request, TimesyncSample)
        self._emit(TimesyncAnswered(txn.request, header.status, now - self._sent_time))


class GuestClock:
    """A guest system clock: reading = base + oscillator ticks since base x rate.

    The oscillator ticks ``1 + drift_ppm / 1e6`` times per reference-counter unit, so an
    undisciplined clock started at ``reading`` (100 ns since 1601) at reference ``start_ref``
    gains ``drift_ppm`` microseconds per second. Absolute values are integers; only elapsed
    ticks use floating point.
    """

    __slots__ = ("_base_osc", "_base_time", "drift_ppm", "rate", "start_ref")

    def __init__(self, reading: int, *, drift_ppm: float = 0.0, start_ref: int = 0) -> None:
        self.drift_ppm = drift_ppm
        self.start_ref = start_ref
        #: Clock units per oscillator tick (1.0 until disciplined).
        self.rate = 1.0
        self._base_time = reading
        self._base_osc = 0.0

    def oscillator(self, ref: int) -> float:
        """Oscillator ticks elapsed since ``start_ref`` at reference ``ref``."""
        return (ref - self.start_ref) * (1.0 + self.drift_ppm / 1e6)

    def read(self, ref: int) -> int:
        """The clock's reading (100 ns since 1601) at reference ``ref``."""
        return self._base_time + round((self.oscillator(ref) - self._base_osc) * self.rate)

    def step(self, ref: int, value: int) -> None:
        """Set the clock to ``value`` at reference ``ref`` (a jump)."""
        self._base_time = value
        self._base_osc = self.oscillator(ref)

    def set_rate(self, ref: int, rate: float) -> None:
        """Keep the reading continuous at ``ref`` and run at ``rate`` units per tick from now."""
        self._base_time = self.read(ref)
        self._base_osc = self.oscillator(ref)
        self.rate = rate


class TimesyncGuest(IcGuestProtocol):
    """Guest side: apply each sample to :attr:`clock` (see the module docstring) and answer.

    ``reference_time(now)`` is the partition reference counter at virtual time ``now``
    (default ``now // 100``, matching :class:`TimesyncHost`'s default).
    """

    spec: ClassVar[IcSpec] = IC_BY_NAME["timesync"]

    def __init__(
        self,
        clock: GuestClock | None = None,
        *,
        reference_time: Callable[[int], int] = _reference_of,
        max_slew_ppm: float = 500.0,
        step_threshold: int = STEP_THRESHOLD_100NS,
        framework_versions: tuple[IcVersion | str, ...] | None = None,
        message_versions: tuple[IcVersion | str, ...] | None = None,
    ) -> None:
        super().__init__(framework_versions=framework_versions,
                         message_versions=message_versions)
        self.clock = clock if clock is not None else GuestClock(WLTIMEDELTA)
        self.reference_time = reference_time
        self.max_slew_ppm = max_slew_ppm
        self.step_threshold = step_threshold
        self._anchor: tuple[float, int] | None = None  # (oscillator, host time) at last sample
        self._interval: float | None = None

    def _on_negotiated(self, versions: NegotiatedVersions) -> None:
        self._anchor = None
        self._interval = None

    def _on_request(self, header: IcHeader, body: memoryview, now: int) -> int:
        v4 = header.message >= TIMESYNC_REF_VERSION
        need = TIMESYNC_REF_DATA_LINUX_SIZE if v4 else TIMESYNC_V1_DATA_LINUX_SIZE
        if len(body) < need:
            return self._refuse(header, IcStatus.E_FAIL,
                                f"timesync {header.message} body of {len(body)} bytes, expected "
                                f"at least {need} (§5.6)")
        ref = self.reference_time(now)
        if v4:
            parent, vmref, flags, _leap, _stratum = _REF_FIELDS.unpack_from(body)
            host_time = parent + (ref - vmref)
        else:
            parent, _child, _rtt, flags = _V1_FIELDS.unpack_from(body)
            host_time = parent
        self._apply(host_time, flags, ref)
        return int(IcStatus.S_OK)

    def _apply(self, host_time: int, flags: int, ref: int) -> None:
        clock = self.clock
        error = host_time - clock.read(ref)
        osc = clock.oscillator(ref)
        if flags & TimesyncFlags.SYNC or (flags & TimesyncFlags.SAMPLE
                                          and abs(error) > self.step_threshold):
            clock.step(ref, host_time)
            self._anchor, self._interval = (osc, host_time), None
            self._emit(TimeAdjusted("step", host_time, error, ref))
            return
        if not flags & TimesyncFlags.SAMPLE:
            self._emit(TimeAdjusted("none", host_time, error, ref))
            return
        rate = clock.rate
        if self._anchor is not None and osc > self._anchor[0]:
            interval = osc - self._anchor[0]
            rate = (host_time - self._anchor[1]) / interval
            self._interval = interval
        if self._interval:
            limit = self.max_slew_ppm / 1e6
            rate += max(-limit, min(limit, error / self._interval))
        clock.set_rate(ref, rate)
        self._anchor = (osc, host_time)
        self._emit(TimeAdjusted("slew", host_time, error, ref))
