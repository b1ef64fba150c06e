"""The VM state machine VMMS enforces: states, the legal transitions, and the requests."""

from __future__ import annotations

from enum import Enum

__all__ = ["TRANSITIONS", "IllegalTransition", "VmState", "check_transition"]


class VmState(Enum):
    """A VM's state, as Hyper-V's management service names them."""

    OFF = "Off"
    STARTING = "Starting"
    RUNNING = "Running"
    PAUSING = "Pausing"
    PAUSED = "Paused"
    RESUMING = "Resuming"
    SAVING = "Saving"
    SAVED = "Saved"
    STOPPING = "Stopping"
    #: The worker failed (start failed, the guest crashed, a worker fault); see the reason.
    FAILED = "Failed"

    def __str__(self) -> str:
        return self.value


S = VmState
#: Every legal transition. Transitional states (…ing) are left by the worker, never by a
#: request; FAILED is reachable from every state but OFF.
TRANSITIONS: dict[VmState, frozenset[VmState]] = {
    S.OFF: frozenset({S.STARTING}),
    S.STARTING: frozenset({S.RUNNING, S.FAILED, S.STOPPING}),
    S.RUNNING: frozenset({S.PAUSING, S.SAVING, S.STOPPING, S.FAILED}),
    S.PAUSING: frozenset({S.PAUSED, S.FAILED}),
    S.PAUSED: frozenset({S.RESUMING, S.STOPPING, S.SAVING, S.FAILED}),
    S.RESUMING: frozenset({S.RUNNING, S.FAILED}),
    S.SAVING: frozenset({S.SAVED, S.FAILED}),
    S.SAVED: frozenset({S.RESUMING, S.OFF, S.FAILED}),
    S.STOPPING: frozenset({S.OFF, S.FAILED}),
    S.FAILED: frozenset({S.OFF}),
}


class IllegalTransition(RuntimeError):
    """A request that the VM's current state does not allow."""

    def __init__(self, vm: str, request: str, state: VmState) -> None:
        allowed = ", ".join(sorted(str(s) for s in TRANSITIONS[state])) or "nothing"
        super().__init__(f"VM {vm!r}: cannot {request} while {state} (from {state} it can go "
                         f"to: {allowed})")
        self.vm = vm
        self.request = request
        self.state = state


def check_transition(vm: str, request: str, state: VmState, target: VmState) -> None:
    """Raise :class:`IllegalTransition` unless ``state -> target`` is legal."""
    if target not in TRANSITIONS[state]:
        raise IllegalTransition(vm, request, state)
