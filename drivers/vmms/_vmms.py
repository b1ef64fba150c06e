"""VMMS: the management service. It owns every VM's state machine and is the management API
(the role WMI plays for Hyper-V): create, start, stop, pause, resume, save, delete, list,
inspect. Requests that the current state does not allow raise :class:`IllegalTransition`
naming the state; a worker that fails takes down only its VM, which is marked FAILED with
the reason.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from winhv.drivers.vmms._spec import VmSpec
from winhv.drivers.vmms._states import IllegalTransition, VmState, check_transition
from winhv.drivers.vmwp import Worker, WorkerError

__all__ = ["KVP_WAIT_LIMIT_S", "STOP_TIMEOUT_S", "Vm", "VmNotRunning", "Vmms", "VmmsError"]

_log = logging.getLogger("winhv.vmms")

#: Seconds (virtual) a graceful stop waits for the guest before the hard stop.
STOP_TIMEOUT_S = 30
#: Virtual seconds a KVP request may take at most before VMMS gives up waiting (each KVP
#: transaction times out far sooner, after the IC's ``timeout_ms``; this only bounds a walk).
KVP_WAIT_LIMIT_S = 3600
S = VmState


class VmmsError(RuntimeError):
    """A management request that could not be carried out; the message says why."""


class VmNotRunning(IllegalTransition):
    """A request that needs a Running VM (a KVP exchange) made in another state."""

    def __init__(self, vm: str, request: str, state: VmState) -> None:
        RuntimeError.__init__(self, f"VM {vm!r}: cannot {request} while {state} (the VM "
                              "must be Running)")
        self.vm = vm
        self.request = request
        self.state = state


@dataclass(eq=False)
class Vm:
    """VMMS's record of one VM."""

    spec: VmSpec
    state: VmState = VmState.OFF
    worker: Worker | None = None
    #: Why the VM is FAILED (or the last stop was hard), if it is.
    reason: str | None = None
    #: ``(virtual time ns, old state, new state)`` of every transition.
    history: list[tuple[int, VmState, VmState]] = field(default_factory=list)
    stop_timer: Any = None
    stop_mode: str | None = None   # "graceful" / "hard": how the last stop ended
    #: Why a stop in progress would end hard at its timeout (the reason it then records).
    stop_why: str = ""
    #: A restart is under way: start again once Off. ``restarts`` counts the completed ones.
    restart_pending: bool = False
    restarts: int = 0

    @property
    def name(self) -> str:
        return self.spec.name


class Vmms:
    """The management service of one host. ``notify(event, **details)`` sees every state
    change (``vm_state_changed``) and the workers' device/channel events."""

    def __init__(self, host: Any, notify: Callable[..., Any] | None = None) -> None:
        self._host = host
        self._notify = notify
        self._vms: dict[str, Vm] = {}

    # -- bookkeeping ---------------------------------------------------------------------------

    def _event(self, event: str, **details: Any) -> None:
        if self._notify is not None:
            try:
                self._notify(event, **details)
            except Exception:
                _log.exception("VMMS observer failed on %s", event)

    def _set(self, vm: Vm, state: VmState, request: str = "") -> None:
        check_transition(vm.name, request or f"go to {state}", vm.state, state)
        old, vm.state = vm.state, state
        vm.history.append((self._host.scheduler.now, old, state))
        self._event("vm_state_changed", vm=vm.name, old=old, new=state)

    def _fail(self, vm: Vm, reason: str) -> None:
        _log.warning("VM %r failed: %s", vm.name, reason)
        vm.reason = reason
        vm.restart_pending = False
        if vm.state is not S.FAILED and S.FAILED in _reachable(vm.state):
            self._set(vm, S.FAILED, "fail")
        self._teardown(vm)

    def _teardown(self, vm: Vm) -> None:
        if vm.stop_timer is not None:
            vm.stop_timer.cancel()
            vm.stop_timer = None
        worker, vm.worker = vm.worker, None
        if worker is not None:
            try:
                worker.stop()
            except Exception as exc:  # even teardown failing stays inside this VM
                _log.exception("VM %r: teardown failed", vm.name)
                vm.reason = (vm.reason or "") + f"; teardown failed: {exc}"

    def get(self, name: str) -> Vm:
        try:
            return self._vms[name]
        except KeyError:
            known = ", ".join(sorted(self._vms)) or "none"
            raise KeyError(f"no VM named {name!r} (known: {known})") from None

    def list(self) -> list[Vm]:
        """Every VM, in creation order."""
        return list(self._vms.values())

    # -- requests ------------------------------------------------------------------------------

    def create(self, spec: VmSpec) -> Vm:
        """Register a VM (Off). Names are unique."""
        if spec.name in self._vms:
            raise ValueError(f"a VM named {spec.name!r} exists already")
        vm = self._vms[spec.name] = Vm(spec)
        self._event("vm_created", vm=spec.name)
        return vm

    def delete(self, name: str) -> None:
        vm = self.get(name)
        if vm.state is not S.OFF:
            raise IllegalTransition(name, "delete", vm.state)
        del self._vms[name]

    def start(self, name: str) -> Vm:
        """Off -> Starting (-> Running once every channel is open); Saved -> Running."""
        vm = self.get(name)
        if vm.state is S.SAVED:
            return self._resume(vm, "start")
        self._set(vm, S.STARTING, "start")
        vm.reason = None
        vm.stop_mode = None
        host = self._host
        vm.worker = Worker(vm.spec, hypervisor=host.hypervisor, root=host.root,
                           vmbus=host.vmbus, vid=host.vid, notify=self._event,
                           vmbus_version=host.vmbus_version)
        try:
            vm.worker.start()
        except (WorkerError, Exception) as exc:   # the worker's fault is its VM's only
            self._fail(vm, str(exc))
        return vm

    def stop(self, name: str, *, force: bool = False, timeout_s: float = STOP_TIMEOUT_S,
             reason: int = 0x80000000, message: str = "") -> Vm:
        """Running/Paused -> Stopping -> Off. Graceful through the shutdown IC when the VM
        has one and ``force`` is false: the guest is asked with ``reason`` (a SHTDN_REASON
        code; planned by default), ``timeout_s`` and ``message`` (§5.5) and the VM is Off once
        it powers off. A guest without the IC, one that refuses or does not answer gets the
        hard stop after ``timeout_s`` (virtual), and :attr:`Vm.reason` says which.
        ``force`` stops hard at once. Starting -> Stopping -> Off at once (hard); Saved -> Off
        discards the saved state."""
        return self._stop(self.get(name), "shutdown", force=force, timeout_s=timeout_s,
                          reason=reason, message=message)

    def restart(self, name: str, *, force: bool = False, timeout_s: float = STOP_TIMEOUT_S,
                reason: int = 0x80000000, message: str = "") -> Vm:
        """Stop as :meth:`stop` does, but ask the guest to *reboot* (flags bit 1, §5.5), and
        start the VM again once it is Off: Running -> Stopping -> Off -> Starting -> Running,
        every step announced. A guest that refuses or lacks the IC is reset after
        ``timeout_s``; ``force`` resets at once. A VM whose stop fails stays as it ends."""
        vm = self.get(name)
        check_transition(vm.name, "restart", vm.state, S.OFF if vm.state is S.SAVED
                         else S.STOPPING)
        vm.restart_pending = True
        try:
            return self._stop(vm, "reboot", force=force, timeout_s=timeout_s, reason=reason,
                              message=message)
        except BaseException:
            vm.restart_pending = False
            raise

    def _stop(self, vm: Vm, kind: str, *, force: bool, timeout_s: float, reason: int,
              message: str) -> Vm:
        if vm.state is S.SAVED:
            # Nothing runs: turning a saved VM off discards its saved state (Saved -> Off).
            vm.reason = "saved state discarded"
            self._hard_stop(vm)
            return vm
        if vm.state is S.STARTING:
            self._set(vm, S.STOPPING, "stop")
            self._hard_stop(vm)
            return vm
        self._set(vm, S.STOPPING, "stop")
        worker = vm.worker
        assert worker is not None
        if self._host.scheduler.suspended and worker.partition is not None \
                and worker.partition.partition_id in self._host.scheduler.suspended:
            worker.set_suspended(False)   # a paused guest cannot answer
        shutdown = None if force else worker.ic_named("shutdown")
        vm.stop_why = "the guest did not shut down in time"
        if shutdown is None:
            if force:
                self._hard_stop(vm)
                return vm
            vm.stop_why = "the VM has no shutdown IC"
        else:
            try:
                shutdown.request(kind, reason=reason, timeout_s=int(timeout_s),
                                 force=False, message=message,
                                 callback=lambda result, v=vm: self._shutdown_answer(v, result))
            except Exception as exc:
                worker.errors.append(f"shutdown IC request failed: {exc}")
                vm.stop_why = f"the shutdown IC request failed ({exc})"
        vm.stop_timer = self._host.scheduler.call_later(
            int(timeout_s * 1e9), lambda v=vm, t=timeout_s: self._stop_timeout(v, t),
            name=f"stop {vm.name}")
        return vm

    def _shutdown_answer(self, vm: Vm, result: Any) -> None:
        accepted = getattr(result, "accepted", None)
        if accepted is False and vm.worker is not None:
            vm.worker.errors.append(f"the guest refused to shut down: {result}")
            vm.stop_why = "the guest refused to shut down"
        elif accepted is None and vm.state is S.STOPPING:
            # Timed out or abandoned (channel closed, no common version): say which.
            why = getattr(result, "reason", None) or type(result).__name__
            vm.stop_why = f"the shutdown IC did not answer ({why})"

    def _stop_timeout(self, vm: Vm, timeout_s: float) -> None:
        vm.stop_timer = None
        if vm.state is S.STOPPING:
            vm.reason = f"{vm.stop_why}: hard stop after {timeout_s:g} s"
            self._hard_stop(vm)

    def _hard_stop(self, vm: Vm) -> None:
        vm.stop_mode = vm.stop_mode or "hard"
        self._teardown(vm)
        self._set(vm, S.OFF, "stop")
        self._off(vm)

    def _off(self, vm: Vm) -> None:
        """The VM reached Off: a pending restart starts it again."""
        if vm.restart_pending:
            vm.restart_pending = False
            vm.restarts += 1
            why = vm.reason   # a hard restart keeps saying why it was hard
            self.start(vm.name)
            if why and vm.state is not S.FAILED:
                vm.reason = why

    def pause(self, name: str) -> Vm:
        """Running -> Pausing -> Paused: the VPs stop; pending interrupts wait."""
        vm = self.get(name)
        self._set(vm, S.PAUSING, "pause")
        try:
            assert vm.worker is not None
            vm.worker.set_suspended(True)
        except Exception as exc:
            self._fail(vm, f"pause failed: {exc}")
            return vm
        self._set(vm, S.PAUSED, "pause")
        return vm

    def resume(self, name: str) -> Vm:
        """Paused -> Resuming -> Running."""
        vm = self.get(name)
        if vm.state is not S.PAUSED:
            raise IllegalTransition(name, "resume", vm.state)
        return self._resume(vm, "resume")

    def _resume(self, vm: Vm, request: str) -> Vm:
        self._set(vm, S.RESUMING, request)
        try:
            assert vm.worker is not None
            vm.worker.set_suspended(False)
        except Exception as exc:
            self._fail(vm, f"resume failed: {exc}")
            return vm
        self._set(vm, S.RUNNING, request)
        return vm

    def save(self, name: str) -> Vm:
        """Running/Paused -> Saving -> Saved. The state is kept in memory (the partition stays
        suspended with its RAM and device state); ``start`` restores it."""
        vm = self.get(name)
        self._set(vm, S.SAVING, "save")
        try:
            assert vm.worker is not None
            if vm.history and vm.history[-1][1] is not S.PAUSED:
                vm.worker.set_suspended(True)
        except Exception as exc:
            self._fail(vm, f"save failed: {exc}")
            return vm
        self._set(vm, S.SAVED, "save")
        return vm

    def reset(self, name: str) -> Vm:
        """Failed -> Off, so the VM can be started again."""
        vm = self.get(name)
        if vm.state is not S.FAILED:
            raise IllegalTransition(name, "reset", vm.state)
        self._set(vm, S.OFF, "reset")
        return vm

    # -- progress ------------------------------------------------------------------------------

    def update(self) -> None:
        """Advance transitional states from what the workers report (call after running).
        A worker that reports a :attr:`~winhv.drivers.vmwp.Worker.failure` fails its VM
        (whatever its state) and only that VM."""
        for vm in list(self._vms.values()):
            worker = vm.worker
            if worker is None:
                continue
            try:
                if worker.failure is not None:
                    self._fail(vm, f"worker failed: {worker.failure}")
                elif vm.state is S.STARTING and worker.booted:
                    self._set(vm, S.RUNNING, "finish starting")
                elif vm.state in (S.STOPPING, S.RUNNING) and worker.powered_off:
                    if vm.state is S.RUNNING:
                        self._set(vm, S.STOPPING, "power off")
                    vm.stop_mode = "graceful"
                    self._teardown(vm)
                    self._set(vm, S.OFF, "power off")
                    self._off(vm)
            except Exception as exc:
                self._fail(vm, f"worker failed: {exc}")

    def inspect(self, name: str) -> dict[str, Any]:
        """Everything about a VM: state, history, partition, channels, devices, ICs (with
        the heartbeat ``health``), errors."""
        vm = self.get(name)
        details = vm.worker.inspect() if vm.worker is not None else {"name": name}
        details.setdefault("ics", self.ics(name))
        details.update(state=str(vm.state), reason=vm.reason, stop_mode=vm.stop_mode,
                       health=self.health(name),
                       history=[(t, str(a), str(b)) for t, a, b in vm.history])
        return details

    # -- integration components --------------------------------------------------------------

    def ics(self, name: str) -> dict[str, dict[str, Any]]:
        """The VM's ICs by name, each as its host side reports it (``open``, ``state``,
        negotiated versions, ``failure``; heartbeat ``health``, ...). A VM without a worker
        (Off, Failed) lists its configured ICs as closed."""
        vm = self.get(name)
        if vm.worker is not None:
            return vm.worker.ic_status()
        return {d.name: {"ic": d.type_name, "open": False} for d in vm.spec.devices
                if d.kind == "ic"}

    def health(self, name: str) -> str | None:
        """The heartbeat IC's view of the guest: ``"ok"``, ``"no-contact"`` (never answered)
        or ``"lost"`` (answered, then fell silent or its channel closed); ``None`` when the
        VM has no heartbeat IC or is not running (no worker)."""
        for status in self.ics(name).values():
            if status.get("ic") == "heartbeat" and "health" in status:
                return str(status["health"])
        return None

    def kvp_set(self, name: str, key: str, value: str | int, *,
                pool: int | str = "external") -> None:
        """Store ``key = value`` (a string or an integer) in the running guest's ``pool``
        (default EXTERNAL, the host's data for the guest, §5.7) and wait for its answer.

        Waiting runs the host's virtual clock (every VM runs meanwhile). Raises
        :class:`VmNotRunning`, :class:`VmmsError` (no KVP IC, the guest refused with a
        status, no answer in time, the channel closed) or ``ValueError`` for a key, value or
        pool the protocol cannot carry (before anything is sent)."""
        self._kvp_answer(name, "set a KVP item", key,
                         lambda kvp, done: kvp.set(pool, key, value, done))

    def kvp_get(self, name: str, key: str, *, pool: int | str = "external") -> str | int | None:
        """The value of ``key`` in the running guest's ``pool``, or ``None`` if the guest
        has no such key. Errors as :meth:`kvp_set`."""
        result = self._kvp_answer(name, "read a KVP item", key,
                                  lambda kvp, done: kvp.get(pool, key, done), absent_ok=True)
        return None if result is None else result.value

    def kvp_delete(self, name: str, key: str, *, pool: int | str = "external") -> bool:
        """Delete ``key`` from the running guest's ``pool``; ``False`` if it was not there.
        Errors as :meth:`kvp_set`."""
        result = self._kvp_answer(name, "delete a KVP item", key,
                                  lambda kvp, done: kvp.delete(pool, key, done),
                                  absent_ok=True)
        return result is not None

    def kvp_items(self, name: str, *,
                  pool: int | str = "external") -> builtins.list[tuple[str, Any]]:
        """Every ``(key, value)`` of the running guest's ``pool``, in the guest's order
        (an ENUMERATE walk, §5.7). Errors as :meth:`kvp_set`."""
        walk = self._kvp_wait(name, "list KVP items",
                              lambda kvp, done: kvp.enumerate(pool, done))
        if not getattr(walk, "complete", False):
            raise VmmsError(f"VM {name!r}: listing KVP pool {pool!r} ended early: "
                            f"{_outcome(walk)}" + self._state_note(name))
        return list(walk.items)

    def _kvp_answer(self, name: str, what: str, key: str,
                    submit: Callable[[Any, Callable[[Any], Any]], Any], *,
                    absent_ok: bool = False) -> Any:
        result = self._kvp_wait(name, what, submit)
        if getattr(result, "ok", False):
            return result
        if absent_ok and getattr(result, "absent", False):
            return None
        raise VmmsError(f"VM {name!r}: could not {what} {key!r}: {_outcome(result)}"
                        + self._state_note(name))

    def _state_note(self, name: str) -> str:
        vm = self.get(name)
        if vm.state is S.RUNNING:
            return ""
        return f" (the VM is {vm.state} now" + (f": {vm.reason})" if vm.reason else ")")

    def _kvp_wait(self, name: str, what: str,
                  submit: Callable[[Any, Callable[[Any], Any]], Any]) -> Any:
        vm = self.get(name)
        if vm.state is not S.RUNNING or vm.worker is None:
            raise VmNotRunning(name, what, vm.state)
        kvp = vm.worker.ic_named("kvp")
        if kvp is None:
            raise VmmsError(f"VM {name!r}: cannot {what}: it has no KVP IC")
        answers: list[Any] = []
        submit(kvp, answers.append)   # ValueError (KvpValueError) before anything is sent
        if not answers:
            self._host.run_for(KVP_WAIT_LIMIT_S * 1_000_000_000,
                               until=lambda: bool(answers) or vm.state is not S.RUNNING)
        if not answers:
            raise VmmsError(f"VM {name!r}: could not {what}: "
                            + (f"the VM is {vm.state} now" + (f" ({vm.reason})" if vm.reason
                                                              else "")
                               if vm.state is not S.RUNNING else
                               f"no answer within {KVP_WAIT_LIMIT_S} s"))
        return answers[0]


def _outcome(result: Any) -> str:
    """What settled a KVP request, for an error message."""
    if hasattr(result, "status_name"):
        return f"the guest answered {result.status_name}"
    reason = getattr(result, "reason", None)
    if reason is not None:
        return str(reason)
    return f"no answer in time ({type(result).__name__})"


def _reachable(state: VmState) -> frozenset[VmState]:
    from winhv.drivers.vmms._states import TRANSITIONS

    return TRANSITIONS[state]
