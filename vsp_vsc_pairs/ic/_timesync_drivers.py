"""The timesync IC's drivers (fact sheet §5.6): host time samples discipline a guest clock.

Both sides read time from the machine's virtual clock, never the wall clock. The host's time
is the virtual clock counted from 1970-01-01 (``WLTIMEDELTA`` in 100 ns units since 1601) plus
``offset_ms``; the reference counter ``vmreferencetime`` is the partition reference counter,
virtual ns // 100 (MSR 0x40000020, as the hypervisor's scheduler reports it).

:class:`TimesyncVsc` keeps a :class:`~winhv.vsp_vsc_pairs.ic.timesync.GuestClock` in
:attr:`~TimesyncVsc.clock`. It starts, when the driver binds, at the host epoch plus
``guest_offset_ms`` and runs ``guest_drift_ppm`` fast or slow, so a VM shows the IC's work:
with version 4.0, from the third sample on the clock is within 1 µs of the host's (the
tolerance ``tests/ic/test_timesync.py`` proves for the machine and ``tests/ic/test_drivers``
for the drivers over real channels).
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from winhv.plugins.api import ConfigField

from ._drivers import IcVsc, IcVsp
from ._framework import IcEvent, IcGuestProtocol, IcHostProtocol
from ._icmsg import IC_BY_NAME, IcSpec
from .timesync import (
    DEFAULT_SAMPLE_PERIOD_NS,
    WLTIMEDELTA,
    GuestClock,
    TimesyncAnswered,
    TimesyncGuest,
    TimesyncHost,
)

__all__ = ["TIMESYNC_CONFIG", "TimesyncVsc", "TimesyncVsp", "reference_time"]

#: The timesync IC's configuration.
TIMESYNC_CONFIG: Final = (
    ConfigField("sample_period_ms", "int", DEFAULT_SAMPLE_PERIOD_NS // 1_000_000,
                "time between SAMPLE messages (OpenVMM: 5 s, §5.6)", minimum=1,
                maximum=3_600_000),
    ConfigField("offset_ms", "int", 0,
                "host clock = the virtual clock since 1970-01-01 plus this offset",
                minimum=-WLTIMEDELTA // 10_000, maximum=2**62 // 10_000),
    ConfigField("guest_offset_ms", "int", 0,
                "guest side: the guest clock starts this far from the host epoch",
                minimum=-WLTIMEDELTA // 10_000, maximum=2**62 // 10_000),
    ConfigField("guest_drift_ppm", "float", 0.0,
                "guest side: how fast (+) or slow (-) the guest's oscillator runs",
                minimum=-1000.0, maximum=1000.0),
)


def reference_time(now: int) -> int:
    """The partition reference counter (100 ns units) at virtual time ``now`` (ns)."""
    return now // 100


class TimesyncVsp(IcVsp):
    """Root side of the timesync IC: SYNC on start, then a SAMPLE every period."""

    spec: ClassVar[IcSpec] = IC_BY_NAME["timesync"]
    config_schema = TIMESYNC_CONFIG

    def __init__(self, config: Any = None) -> None:
        #: Samples the guest answered (on every channel open so far).
        self.answered = 0
        super().__init__(config)

    def status(self) -> dict[str, Any]:
        """The IC's status plus ``samples_answered``."""
        return {**super().status(), "samples_answered": self.answered}

    def _on_event(self, event: IcEvent) -> None:
        if isinstance(event, TimesyncAnswered):
            self.answered += 1

    def _new_protocol(self) -> IcHostProtocol:
        period = self.config["sample_period_ms"] * 1_000_000
        return TimesyncHost(sample_period_ns=period, host_time=self.host_time,
                            reference_time=reference_time, response_timeout_ns=period)

    def host_time(self, now: int) -> int:
        """The host's clock (100 ns since 1601) at virtual time ``now``."""
        return WLTIMEDELTA + now // 100 + self.config["offset_ms"] * 10_000

    def sync(self) -> None:
        """Send a SYNC sample (a hard set of the guest clock) as soon as the channel is free."""
        host = self.protocol
        assert isinstance(host, TimesyncHost)
        self._apply(host.sync(self.now()))


class TimesyncVsc(IcVsc):
    """Guest side of the timesync IC; :attr:`clock` is the guest's system clock."""

    spec: ClassVar[IcSpec] = IC_BY_NAME["timesync"]
    config_schema = TIMESYNC_CONFIG

    def __init__(self, device: Any) -> None:
        super().__init__(device)
        start = reference_time(self.now())
        #: The guest's clock; read it with :meth:`read_clock` (or ``clock.read(ref)``).
        self.clock = GuestClock(WLTIMEDELTA + start + self.settings["guest_offset_ms"] * 10_000,
                                drift_ppm=self.settings["guest_drift_ppm"], start_ref=start)

    def _new_protocol(self) -> IcGuestProtocol:
        return TimesyncGuest(self.clock, reference_time=reference_time)

    def read_clock(self) -> int:
        """The guest clock now (100 ns since 1601)."""
        return self.clock.read(reference_time(self.now()))
