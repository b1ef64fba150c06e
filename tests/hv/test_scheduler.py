"""The deterministic scheduler: one virtual clock orders interrupts and timers, so the same
inputs replay identically; ISR and timer faults are contained; storms are detected."""

from __future__ import annotations

import logging

import pytest
from support.hv import VECTOR, Machine, boot, ok

from winhv.abi import HvRegisterName
from winhv.drivers.hv.scheduler import Scheduler, SchedulerError

R = HvRegisterName


def _scenario(kind: str) -> list[tuple[int, int, int]]:
    """Timers post messages and signal events to two children; ISRs log (time, who, vector)
    and answer with timers of their own."""
    machine = boot(kind, children=2)
    sched = machine.hv.scheduler
    log: list[tuple[int, int, int]] = []
    for n, guest in enumerate(machine.guests):
        ok(guest.handle.WinHvSetVpRegister(R.SINT3, 0x60 + n))
        machine.message_channel(guest.partition_id, 1, port_id=1, connection_id=10 + n)
        machine.event_channel(guest.partition_id, 1, port_id=2, connection_id=20 + n,
                              flag_count=8, sint=3)

        def isr(vector: int, guest: object = guest, n: int = n) -> None:
            log.append((sched.now, n, vector))
            if vector == VECTOR:
                guest.consume()
            if len(log) < 40:
                sched.call_later(250 * (n + 1), lambda n=n: machine.root.WinHvSignalEvent(
                    20 + n, len(log) % 8))

        machine.hv.set_interrupt_handler(guest.partition_id, 0, isr)
    for t in range(0, 5000, 700):
        sched.call_at(t, lambda t=t: machine.root.WinHvPostMessage(10 + t % 2, 1, b"tick"))
        sched.call_at(t, lambda t=t: machine.root.WinHvSignalEvent(21 - t % 2, t % 8))
    sched.run_for(20_000)
    return log


@pytest.mark.parametrize("kind", ["compiled", "reference"])
def test_identical_runs_replay_identically(kind: str) -> None:
    first, second = _scenario(kind), _scenario(kind)
    assert len(first) > 10
    assert first == second


def test_both_bridges_replay_the_same_history() -> None:
    assert _scenario("compiled") == _scenario("reference")


def test_timers_fire_by_deadline_then_insertion_order() -> None:
    sched = Scheduler()
    fired: list[str] = []
    for name, deadline in (("c", 300), ("a1", 100), ("b", 200), ("a2", 100), ("a3", 100)):
        sched.call_at(deadline, lambda name=name: fired.append((name, sched.now)))
    sched.call_later(150, lambda: fired.append(("later", sched.now)))
    cancelled = sched.call_at(50, lambda: fired.append(("cancelled", sched.now)))
    cancelled.cancel()
    assert sched.next_deadline() == 100
    sched.run_for(1000)
    assert fired == [("a1", 100), ("a2", 100), ("a3", 100), ("later", 150), ("b", 200),
                     ("c", 300)]
    assert sched.now == 1000
    assert sched.reference_time == 10


def test_past_deadlines_fire_now_and_negative_delays_are_refused() -> None:
    sched = Scheduler(start_ns=500)
    fired: list[int] = []
    sched.call_at(10, lambda: fired.append(sched.now))
    assert sched.run_until_idle() == 1
    assert fired == [500]
    with pytest.raises(ValueError, match="delay must be >= 0"):
        sched.call_later(-1, lambda: None)


def test_run_until_stops_when_the_condition_holds() -> None:
    sched = Scheduler()
    hits: list[int] = []
    for t in (10, 20, 30, 40):
        sched.call_at(t, lambda: hits.append(sched.now))
    sched.run_until(1000, until=lambda: len(hits) >= 2)
    assert hits == [10, 20]
    assert sched.now == 20


def test_isr_exception_is_contained_and_reported(machine: Machine,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    guest = machine.guests[0]
    machine.enable_root_synic()
    errors: list[tuple[object, int, BaseException]] = []
    machine.hv.scheduler.on_error = lambda vp, vector, exc: errors.append((vp, vector, exc))

    def broken(vector: int) -> None:
        raise ZeroDivisionError("guest bug")

    machine.hv.set_interrupt_handler(guest.partition_id, 0, broken)
    machine.message_channel(guest.partition_id, 1, port_id=1, connection_id=1)
    machine.message_channel(1, guest.partition_id, port_id=2, connection_id=2)
    ok(machine.root.WinHvPostMessage(1, 1, b"to the broken guest"))
    ok(guest.handle.WinHvPostMessage(2, 1, b"to the root"))
    with caplog.at_level(logging.ERROR, logger="winhv.scheduler"):
        machine.run()
    assert machine.root_interrupts == [VECTOR]            # the other VP still ran
    [(vp, vector, exc)] = errors
    assert vp is guest.vp
    assert vector == VECTOR
    assert isinstance(exc, ZeroDivisionError)
    assert "ISR of" in caplog.text


def test_timer_exception_is_contained(caplog: pytest.LogCaptureFixture) -> None:
    sched = Scheduler()
    fired: list[int] = []
    sched.call_at(1, lambda: 1 / 0, name="bad timer")
    sched.call_at(2, lambda: fired.append(2))
    with caplog.at_level(logging.ERROR, logger="winhv.scheduler"):
        sched.run_for(10)
    assert fired == [2]
    assert "bad timer" in caplog.text


def test_interrupt_storm_raises_scheduler_error(bridge_kind: str) -> None:
    machine = boot(bridge_kind)
    machine.hv.scheduler.max_steps = 1000
    guest = machine.guests[0]
    machine.hv.set_interrupt_handler(guest.partition_id, 0,
                                     lambda vector: guest.vp.raise_vector(2))
    guest.vp.raise_vector(2)
    with pytest.raises(SchedulerError, match="interrupt or timer storm"):
        machine.run()


def test_timer_storm_raises_scheduler_error() -> None:
    sched = Scheduler(max_steps=500)

    def again() -> None:
        sched.call_later(0, again)

    sched.call_later(0, again)
    with pytest.raises(SchedulerError, match="no quiescence after"):
        sched.run_until_idle()
