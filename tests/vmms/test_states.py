"""VMMS's state machine through its API: every legal transition of ``TRANSITIONS`` is reached
and announced in order; every request the current state does not allow is refused with
:class:`IllegalTransition` naming that state, and changes nothing."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from support.hosts import Recorder, echo_spec, make_host, ping
from support.vmbus_io import frame

from winhv.drivers.vid import MemoryReserve
from winhv.drivers.vmms import TRANSITIONS, Host, IllegalTransition, VmState

S = VmState
NS = 1_000_000_000
REQUESTS = ("start", "stop", "restart", "pause", "resume", "save", "reset", "delete")

#: The requests each state accepts; every other (state, request) pair must be refused.
LEGAL: dict[VmState, frozenset[str]] = {
    S.OFF: frozenset({"start", "delete"}),
    S.STARTING: frozenset({"stop", "restart"}),
    S.RUNNING: frozenset({"stop", "restart", "pause", "save"}),
    S.PAUSING: frozenset(),
    S.PAUSED: frozenset({"stop", "restart", "resume", "save"}),
    S.RESUMING: frozenset(),
    S.SAVING: frozenset(),
    S.SAVED: frozenset({"start", "stop", "restart"}),
    S.STOPPING: frozenset(),
    S.FAILED: frozenset({"reset"}),
}
#: Where each accepted request leaves the VM right away (no time run).
AFTER: dict[tuple[VmState, str], VmState | None] = {
    (S.OFF, "start"): S.STARTING,
    (S.OFF, "delete"): None,
    (S.STARTING, "stop"): S.OFF,
    (S.STARTING, "restart"): S.STARTING,  # a hard stop, then it starts again at once
    (S.RUNNING, "stop"): S.STOPPING,     # no shutdown IC: Stopping until the timeout
    (S.RUNNING, "restart"): S.STOPPING,
    (S.PAUSED, "restart"): S.STOPPING,
    (S.SAVED, "restart"): S.STARTING,    # the saved state discarded, a fresh boot
    (S.RUNNING, "pause"): S.PAUSED,
    (S.RUNNING, "save"): S.SAVED,
    (S.PAUSED, "stop"): S.STOPPING,
    (S.PAUSED, "resume"): S.RUNNING,
    (S.PAUSED, "save"): S.SAVED,
    (S.SAVED, "start"): S.RUNNING,
    (S.SAVED, "stop"): S.OFF,
    (S.FAILED, "reset"): S.OFF,
}
STABLE = (S.OFF, S.STARTING, S.RUNNING, S.PAUSED, S.SAVED, S.STOPPING, S.FAILED)
TRANSIENT = (S.PAUSING, S.RESUMING, S.SAVING)


def call(host: Host, request: str, name: str = "vm") -> Any:
    return getattr(host.vmms, request)(name)


def bring_to(host: Host, state: VmState, name: str = "vm") -> None:
    """Drive VM ``name`` (Off, no shutdown IC) into ``state`` through the API."""
    vmms = host.vmms
    if state is S.OFF:
        return
    vmms.start(name)
    if state is S.STARTING:
        return
    host.settle()
    if state is S.PAUSED:
        vmms.pause(name)
    elif state is S.SAVED:
        vmms.save(name)
    elif state is S.STOPPING:
        vmms.stop(name, timeout_s=30)
        host.settle()
    elif state is S.FAILED:
        worker = vmms.get(name).worker
        assert worker is not None
        worker.fail("injected worker fault")
        host.run_until_idle()
    assert vmms.get(name).state is state


#: The first transition each accepted request makes (``None``: delete, the VM is gone).
FIRST: dict[tuple[VmState, str], VmState | None] = {
    (S.OFF, "start"): S.STARTING,
    (S.OFF, "delete"): None,
    (S.STARTING, "stop"): S.STOPPING,
    (S.STARTING, "restart"): S.STOPPING,
    (S.RUNNING, "stop"): S.STOPPING,
    (S.RUNNING, "restart"): S.STOPPING,
    (S.PAUSED, "restart"): S.STOPPING,
    (S.SAVED, "restart"): S.OFF,
    (S.RUNNING, "pause"): S.PAUSING,
    (S.RUNNING, "save"): S.SAVING,
    (S.PAUSED, "stop"): S.STOPPING,
    (S.PAUSED, "resume"): S.RESUMING,
    (S.PAUSED, "save"): S.SAVING,
    (S.SAVED, "start"): S.RESUMING,
    (S.SAVED, "stop"): S.OFF,
    (S.FAILED, "reset"): S.OFF,
}


def test_every_accepted_request_starts_with_a_transition_of_the_table() -> None:
    assert {(s, r) for s, rs in LEGAL.items() for r in rs} == set(AFTER) == set(FIRST)
    for (state, _request), first in FIRST.items():
        assert first is None or first in TRANSITIONS[state]


@pytest.mark.parametrize("request_name", REQUESTS)
@pytest.mark.parametrize("state", STABLE, ids=str)
def test_every_state_request_pair_is_accepted_or_refused_naming_the_state(
    state: VmState, request_name: str,
) -> None:
    recorder = Recorder()
    host = make_host(echo_spec("vm"), recorder=recorder)
    bring_to(host, state)
    if request_name in LEGAL[state]:
        recorder.clear()
        call(host, request_name)
        first = FIRST[(state, request_name)]
        if first is not None:
            assert recorder.transitions("vm")[0] == ("vm", state, first)
        after = AFTER[(state, request_name)]
        if after is None:
            assert host.vmms.list() == []
        else:
            assert host.vmms.get("vm").state is after
        return
    history = list(host.vmms.get("vm").history)
    with pytest.raises(IllegalTransition) as info:
        call(host, request_name)
    assert info.value.state is state
    assert info.value.request == request_name
    assert f"cannot {request_name} while {state}" in str(info.value)
    assert "'vm'" in str(info.value)
    vm = host.vmms.get("vm")
    assert vm.state is state
    assert vm.history == history


class _TryInTransit:
    """A notifier that, whenever the VM enters a transient state, tries every request."""

    def __init__(self) -> None:
        self.host: Host | None = None
        self.outcomes: dict[tuple[VmState, str], str] = {}

    def __call__(self, event: str, **details: Any) -> None:
        if event != "vm_state_changed" or details["new"] not in TRANSIENT:
            return
        assert self.host is not None
        for request in REQUESTS:
            try:
                call(self.host, request)
            except IllegalTransition as exc:
                self.outcomes[(details["new"], request)] = str(exc)
            else:
                self.outcomes[(details["new"], request)] = "accepted"


def test_requests_while_pausing_resuming_or_saving_are_all_refused() -> None:
    probe = _TryInTransit()
    host = make_host(echo_spec("vm"), recorder=probe)
    probe.host = host
    bring_to(host, S.RUNNING)
    host.vmms.pause("vm")
    host.vmms.resume("vm")
    host.vmms.save("vm")
    assert host.vmms.get("vm").state is S.SAVED
    assert set(probe.outcomes) == {(s, r) for s in TRANSIENT for r in REQUESTS}
    for (state, request), outcome in probe.outcomes.items():
        assert f"cannot {request} while {state}" in outcome


def _crash_guest_isr(host: Host, name: str) -> None:
    """Make the guest's kernel fail inside its ISR, then interrupt it (a packet from the host)."""

    class Crashing:
        def interrupt(self, vector: int) -> None:
            raise RuntimeError("bugcheck 0x0000000A")

    worker = host.vmms.get(name).worker
    assert worker is not None
    assert worker.guest is not None
    worker.guest._synic = Crashing()  # type: ignore[assignment]
    worker.host_devices["echo0"].vsp.channel.send(frame(b"wake up"))


def _suspend_fails(worker: Any) -> Callable[[bool], None]:
    def refuse(suspended: bool) -> None:
        raise RuntimeError(f"HvCallSetPartitionProperty(Suspend={int(suspended)}) refused")

    return refuse


def test_every_legal_transition_is_reached_through_the_api_and_announced_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = Recorder()
    reserve = MemoryReserve({"reserve_mb": 0})
    host = make_host(echo_spec("vm"), recorder=recorder, services=[reserve])
    vmms = host.vmms

    def worker() -> Any:
        w = vmms.get("vm").worker
        assert w is not None
        return w

    def running() -> None:
        vmms.start("vm")
        host.settle()

    def fail_and_reset(fault: Callable[[], Any]) -> None:
        fault()
        host.run_until_idle()
        assert vmms.get("vm").state is S.FAILED
        vmms.reset("vm")

    running()                                       # Off > Starting > Running
    vmms.pause("vm")                                # > Pausing > Paused
    vmms.resume("vm")                               # > Resuming > Running
    vmms.save("vm")                                 # > Saving > Saved
    vmms.start("vm")                                # Saved > Resuming > Running
    vmms.pause("vm")
    vmms.save("vm")                                 # Paused > Saving > Saved
    vmms.stop("vm")                                 # Saved > Off
    running()
    vmms.stop("vm", timeout_s=5)                    # Running > Stopping
    host.run_for(6 * NS)                            # > Off (hard, after the timeout)
    vmms.start("vm")
    vmms.stop("vm")                                 # Starting > Stopping > Off
    running()
    vmms.pause("vm")
    vmms.stop("vm")                                 # Paused > Stopping
    fail_and_reset(lambda: worker().fail("stuck"))  # Stopping > Failed > Off
    reserve.reserve_mb = 1 << 30
    vmms.start("vm")                                # Starting > Failed (VID refused)
    reserve.reserve_mb = 0
    vmms.reset("vm")
    running()
    fail_and_reset(lambda: _crash_guest_isr(host, "vm"))   # Running > Failed
    running()
    vmms.pause("vm")
    fail_and_reset(lambda: worker().fail("lost"))   # Paused > Failed
    running()
    vmms.save("vm")
    fail_and_reset(lambda: worker().fail("lost"))   # Saved > Failed
    running()
    monkeypatch.setattr(worker(), "set_suspended", _suspend_fails(worker()))
    fail_and_reset(lambda: vmms.pause("vm"))        # Pausing > Failed
    running()
    vmms.pause("vm")
    monkeypatch.setattr(worker(), "set_suspended", _suspend_fails(worker()))
    fail_and_reset(lambda: vmms.resume("vm"))       # Resuming > Failed
    running()
    monkeypatch.setattr(worker(), "set_suspended", _suspend_fails(worker()))
    fail_and_reset(lambda: vmms.save("vm"))         # Saving > Failed

    every_edge = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    announced = [(old, new) for _, old, new in recorder.transitions("vm")]
    assert set(announced) == every_edge
    # announced in order, as they happened, each starting where the last one ended
    assert announced == [(old, new) for _, old, new in vmms.get("vm").history]
    assert all(a[1] is b[0] for a, b in itertools.pairwise(announced))
    assert announced[0] == (S.OFF, S.STARTING)
    times = [t for t, _, _ in vmms.get("vm").history]
    assert times == sorted(times)


def test_a_failed_vm_keeps_its_reason_until_it_is_started_again() -> None:
    host = make_host(echo_spec("vm"))
    bring_to(host, S.RUNNING)
    _crash_guest_isr(host, "vm")
    host.run_until_idle()
    vm = host.vmms.get("vm")
    assert vm.state is S.FAILED
    assert vm.reason is not None
    assert "crashed in its interrupt handler" in vm.reason
    assert "bugcheck 0x0000000A" in vm.reason
    assert vm.worker is None
    assert host.vid.partitions == {}
    host.vmms.reset("vm")
    assert vm.reason is not None   # reset keeps why it failed
    host.vmms.start("vm")
    host.settle()
    assert vm.state is S.RUNNING
    assert vm.reason is None
    assert ping(host, "vm", b"again") == [b"echo:again"]


def test_names_are_unique_and_unknown_names_say_which_exist() -> None:
    host = make_host(echo_spec("a"), echo_spec("b"))
    with pytest.raises(ValueError, match="a VM named 'a' exists already"):
        host.vmms.create(echo_spec("a"))
    with pytest.raises(KeyError, match=r"no VM named 'c' \(known: a, b\)"):
        host.vmms.start("c")
