"""Stopping a VM: graceful through the shutdown IC when the guest accepts, a hard stop after
the timeout when it refuses or has no IC, an immediate hard stop with ``force``; a paused VM
can be stopped too. Times are virtual (the deterministic scheduler)."""

from __future__ import annotations

from typing import Any

import pytest
from support.hosts import echo_spec, make_host, ping

from winhv.drivers.vmms import STOP_TIMEOUT_S, Host, IllegalTransition, VmState

S = VmState
NS = 1_000_000_000


def running(*, shutdown: bool) -> Host:
    host = make_host(echo_spec("vm", shutdown=shutdown), echo_spec("other"))
    for name in ("vm", "other"):
        host.vmms.start(name)
    host.settle()
    assert host.vmms.get("vm").state is S.RUNNING
    return host


def asked(host: Host) -> list[tuple[str, int, str]]:
    """Record the shutdown requests the guest kernel of "vm" is asked from now on."""
    worker = host.vmms.get("vm").worker
    assert worker is not None
    guest = worker.guest
    assert guest is not None
    questions: list[tuple[str, int, str]] = []
    accept = guest.on_shutdown_request

    def decide(kind: str, reason: int, message: str = "") -> bool:
        questions.append((kind, reason, message))
        return accept(kind, reason, message)

    guest.on_shutdown_request = decide  # type: ignore[method-assign]
    return questions


def assert_off_and_gone(host: Host, mode: str) -> None:
    vm = host.vmms.get("vm")
    assert vm.state is S.OFF
    assert vm.stop_mode == mode
    assert vm.worker is None
    assert [p.name for p in host.vid.partitions.values()] == ["other"]
    # the other VM never noticed
    assert host.vmms.get("other").state is S.RUNNING
    assert ping(host, "other", b"still here") == [b"echo:still here"]
    # and this one starts again from Off
    host.vmms.start("vm")
    host.settle()
    assert vm.state is S.RUNNING
    assert ping(host, "vm", b"back") == [b"echo:back"]


def test_graceful_stop_goes_through_the_shutdown_ic_and_the_guest_powers_off() -> None:
    host = running(shutdown=True)
    questions = asked(host)
    start = host.scheduler.now
    host.vmms.stop("vm", reason=0x80000000)
    assert host.vmms.get("vm").state is S.STOPPING
    host.settle()
    vm = host.vmms.get("vm")
    assert questions == [("shutdown", 0x80000000, "")]
    assert [(old, new) for _, old, new in vm.history[-2:]] == [(S.RUNNING, S.STOPPING),
                                                               (S.STOPPING, S.OFF)]
    assert host.scheduler.now - start < NS      # long before the timeout
    assert vm.reason is None
    assert_off_and_gone(host, "graceful")


def test_a_refused_shutdown_is_a_hard_stop_after_the_timeout() -> None:
    host = running(shutdown=True)
    worker = host.vmms.get("vm").worker
    assert worker is not None
    assert worker.guest is not None
    worker.guest.on_shutdown_request = lambda *a: False  # type: ignore[method-assign]
    start = host.scheduler.now
    host.vmms.stop("vm", timeout_s=5)
    host.settle()
    vm = host.vmms.get("vm")
    assert vm.state is S.STOPPING
    assert any("refused to shut down" in e for e in worker.errors), worker.errors
    host.run_for(start + 5 * NS - 1 - host.scheduler.now)
    assert vm.state is S.STOPPING                # not one ns early
    host.run_for(1)
    assert vm.state is S.OFF
    assert vm.reason == "the guest refused to shut down: hard stop after 5 s"
    assert_off_and_gone(host, "hard")


def test_without_a_shutdown_ic_the_stop_is_hard_after_the_default_timeout() -> None:
    host = running(shutdown=False)
    start = host.scheduler.now
    host.vmms.stop("vm")
    host.run_for((STOP_TIMEOUT_S - 1) * NS)
    assert host.vmms.get("vm").state is S.STOPPING
    assert ping(host, "vm", b"alive while stopping") == [b"echo:alive while stopping"]
    host.run_for(start + STOP_TIMEOUT_S * NS - host.scheduler.now)
    assert host.vmms.get("vm").state is S.OFF
    assert host.vmms.get("vm").reason == (f"the VM has no shutdown IC: hard stop after "
                                          f"{STOP_TIMEOUT_S} s")
    assert_off_and_gone(host, "hard")


@pytest.mark.parametrize("shutdown", [True, False], ids=["with-ic", "without-ic"])
def test_force_stops_at_once_without_asking_the_guest(shutdown: bool) -> None:
    host = running(shutdown=shutdown)
    questions = asked(host)
    host.vmms.stop("vm", force=True)
    assert host.vmms.get("vm").state is S.OFF    # before any time runs
    host.settle()
    assert questions == []
    assert_off_and_gone(host, "hard")


@pytest.mark.parametrize(("shutdown", "force", "mode"), [
    (True, False, "graceful"), (False, True, "hard")], ids=["graceful", "force"])
def test_a_paused_vm_can_be_stopped(shutdown: bool, force: bool, mode: str) -> None:
    host = running(shutdown=shutdown)
    host.vmms.pause("vm")
    host.vmms.stop("vm", force=force)
    host.settle()
    assert [(old, new) for _, old, new in host.vmms.get("vm").history[-3:]] == [
        (S.PAUSING, S.PAUSED), (S.PAUSED, S.STOPPING), (S.STOPPING, S.OFF)]
    assert_off_and_gone(host, mode)


def test_a_guest_that_powers_off_by_itself_goes_off_gracefully() -> None:
    host = running(shutdown=False)
    worker: Any = host.vmms.get("vm").worker
    worker.guest.shutdown()
    host.run_until_idle()
    vm = host.vmms.get("vm")
    assert [(old, new) for _, old, new in vm.history[-2:]] == [(S.RUNNING, S.STOPPING),
                                                               (S.STOPPING, S.OFF)]
    assert_off_and_gone(host, "graceful")


def test_stopping_a_saved_vm_discards_its_state() -> None:
    host = running(shutdown=True)
    host.vmms.save("vm")
    host.vmms.stop("vm")
    vm = host.vmms.get("vm")
    assert vm.history[-1][1:] == (S.SAVED, S.OFF)
    assert vm.reason == "saved state discarded"
    assert_off_and_gone(host, "hard")


def test_restart_asks_the_guest_to_reboot_and_the_vm_comes_back_running() -> None:
    host = running(shutdown=True)
    questions = asked(host)
    host.vmms.restart("vm", message="patching")
    host.settle()
    vm = host.vmms.get("vm")
    assert questions == [("reboot", 0x80000000, "patching")]   # flags bit 1 on the wire
    assert [(old, new) for _, old, new in vm.history[-4:]] == [
        (S.RUNNING, S.STOPPING), (S.STOPPING, S.OFF), (S.OFF, S.STARTING),
        (S.STARTING, S.RUNNING)]
    assert (vm.restarts, vm.restart_pending, vm.reason) == (1, False, None)
    assert ping(host, "vm", b"rebooted") == [b"echo:rebooted"]
    assert host.vmms.get("other").state is S.RUNNING


def test_restart_without_a_shutdown_ic_is_a_reset_after_the_timeout() -> None:
    host = running(shutdown=False)
    start = host.scheduler.now
    host.vmms.restart("vm", timeout_s=5)
    host.run_for(5 * NS - 1)
    assert host.vmms.get("vm").state is S.STOPPING
    host.run_for(1)
    host.settle()
    vm = host.vmms.get("vm")
    assert vm.state is S.RUNNING
    assert vm.history[-3][0] == start + 5 * NS      # Stopping -> Off at the timeout
    assert vm.reason == "the VM has no shutdown IC: hard stop after 5 s"
    assert ping(host, "vm", b"reset") == [b"echo:reset"]


def test_a_forced_restart_resets_at_once_and_an_illegal_one_names_the_state() -> None:
    host = running(shutdown=True)
    questions = asked(host)
    host.vmms.restart("vm", force=True)
    host.settle()
    assert questions == []
    assert host.vmms.get("vm").state is S.RUNNING
    host.vmms.stop("vm", force=True)
    with pytest.raises(IllegalTransition, match="cannot restart while Off"):
        host.vmms.restart("vm")
    assert host.vmms.get("vm").restart_pending is False
