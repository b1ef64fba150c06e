"""The deterministic scheduler: one virtual clock orders interrupt delivery and timers.

Nothing in the core runs on a thread or reads the wall clock. An interrupt raised by the
hypervisor (a message landing in a SIM slot, an event flag going 0 -> 1) marks the target VP
ready; :meth:`Scheduler.run_until_idle` then runs each ready VP's interrupt handler (the guest's
ISR) in the order the VPs became ready, and each VP's vectors highest first, as an APIC would.
Timers fire in deadline order (ties in the order they were set). So the same inputs replay the
same way, and tests step the machine explicitly. Real time, when wanted, is an adapter that
advances this clock; it is not part of the core.

Virtual time is kept in nanoseconds; :attr:`Scheduler.reference_time` gives it in the TLFS
100 ns units of the partition reference counter (MSR 0x40000020).
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Scheduler", "SchedulerError", "Timer"]

_log = logging.getLogger("winhv.scheduler")


class SchedulerError(RuntimeError):
    """The machine did not settle (an interrupt or timer storm beyond the step limit)."""


@dataclass(order=True, slots=True)
class Timer:
    """A pending timer; cancel it with :meth:`cancel`."""

    deadline: int
    seq: int
    callback: Callable[[], Any] = field(compare=False)
    name: str = field(compare=False, default="")
    cancelled: bool = field(compare=False, default=False)

    def cancel(self) -> None:
        """Stop the timer from firing (idempotent)."""
        self.cancelled = True


class Scheduler:
    """Virtual clock, ready list of VPs with pending interrupts, and a timer heap.

    ``ready`` is shared with the compiled core: a VP appends itself when it gets its first
    pending vector and is removed when its vectors are taken.
    """

    def __init__(self, *, start_ns: int = 0, max_steps: int = 10_000_000) -> None:
        self.now: int = start_ns
        self.ready: list[Any] = []
        self.max_steps = max_steps
        # Heap of (deadline, seq, timer): tuples compare in C, where Timer's generated
        # dataclass ordering cost a Python call per comparison.
        self._timers: list[tuple[int, int, Timer]] = []
        self._seq = itertools.count()
        #: Called as ``on_error(vp, vector, exc)`` when an ISR raises; the default logs it.
        self.on_error: Callable[[Any, int, BaseException], None] | None = None
        self.interrupts_delivered = 0
        #: Partitions whose VPs do not run (HvPartitionPropertySuspend): their interrupts
        #: stay pending until they resume.
        self.suspended: set[int] = set()
        self._held: list[Any] = []

    def suspend(self, partition_id: int) -> None:
        """Stop running ``partition_id``'s VPs; interrupts raised meanwhile stay pending."""
        self.suspended.add(partition_id)

    def resume(self, partition_id: int) -> None:
        """Run ``partition_id``'s VPs again, delivering what was held, in order."""
        self.suspended.discard(partition_id)
        keep = []
        for vp in self._held:
            (self.ready if vp.partition.partition_id == partition_id else keep).append(vp)
        self._held = keep

    # -- time --------------------------------------------------------------------------------

    @property
    def reference_time(self) -> int:
        """Virtual time in 100 ns units (the partition reference counter)."""
        return self.now // 100

    def call_at(self, deadline_ns: int, callback: Callable[[], Any], name: str = "") -> Timer:
        """Run ``callback`` when the clock reaches ``deadline_ns`` (never earlier than now)."""
        timer = Timer(max(deadline_ns, self.now), next(self._seq), callback, name)
        heapq.heappush(self._timers, (timer.deadline, timer.seq, timer))
        return timer

    def call_later(self, delay_ns: int, callback: Callable[[], Any], name: str = "") -> Timer:
        """Run ``callback`` ``delay_ns`` nanoseconds of virtual time from now."""
        if delay_ns < 0:
            raise ValueError(f"delay must be >= 0 ns, got {delay_ns}")
        return self.call_at(self.now + delay_ns, callback, name)

    def next_deadline(self) -> int | None:
        """Deadline of the earliest live timer, or None."""
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    # -- running -----------------------------------------------------------------------------

    def run_until_idle(self) -> int:
        """Deliver interrupts and fire due timers until none is left at the current time.

        Does not advance the clock. Returns the number of steps (ISR calls + timers) taken.
        """
        steps = 0
        while True:
            steps += self._drain_interrupts()
            deadline = self.next_deadline()
            if deadline is None or deadline > self.now:
                return steps
            self._fire(heapq.heappop(self._timers)[2])
            steps += 1
            self._check(steps)

    def run_for(self, duration_ns: int) -> int:
        """Run, advancing the clock timer by timer, until ``duration_ns`` have passed."""
        return self.run_until(self.now + duration_ns)

    def run_until(self, deadline_ns: int, until: Callable[[], bool] | None = None) -> int:
        """Run until the clock reaches ``deadline_ns`` or ``until()`` becomes true."""
        steps = self.run_until_idle()
        while until is None or not until():
            deadline = self.next_deadline()
            if deadline is None or deadline > deadline_ns:
                break
            self.now = deadline
            steps += self.run_until_idle()
            self._check(steps)
        if until is None or not until():
            self.now = max(self.now, deadline_ns)
        return steps

    def _fire(self, timer: Timer) -> None:
        if timer.cancelled:
            return
        try:
            timer.callback()
        except Exception as exc:  # contained: a timer belongs to some driver, not to us
            _log.exception("timer %r raised", timer.name or timer.callback)
            if self.on_error is not None:
                self.on_error(timer, -1, exc)

    def _drain_interrupts(self) -> int:
        steps = 0
        ready = self.ready
        while ready:
            batch = ready[:]
            del ready[:]
            for vp in batch:
                if self.suspended and vp.partition.partition_id in self.suspended:
                    self._held.append(vp)   # stays "queued": the core will not re-add it
                    continue
                for vector in vp.take_pending():
                    steps += 1
                    self.interrupts_delivered += 1
                    handler = vp.interrupt_handler
                    if handler is None:
                        continue
                    try:
                        handler(vector)
                    except Exception as exc:  # an ISR fault is the guest's, not the host's
                        _log.exception("ISR of %r vector %#x raised", vp, vector)
                        if self.on_error is not None:
                            self.on_error(vp, vector, exc)
            if steps > self.max_steps:   # _check(), without a call per batch
                self._check(steps)
        return steps

    def _check(self, steps: int) -> None:
        if steps > self.max_steps:
            raise SchedulerError(
                f"no quiescence after {steps} steps at t={self.now} ns: interrupt or timer storm"
            )
