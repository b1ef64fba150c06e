"""Faults stay where they start: a driver that raises while its VM boots fails only that
device (the VM runs, the fault is in ``inspect()`` and the run report); a worker that fails
fails only its VM, and the other VMs go on round-tripping packets."""

from __future__ import annotations

from typing import Any

import pytest
from support.hosts import echo_device, echo_spec, make_host, ping, start_all
from support.vmbus_io import ALT_IF, AltVsc, EchoVsp

from winhv.drivers.vid import MemoryReserve
from winhv.drivers.vmbus.device import Vsc, Vsp
from winhv.drivers.vmms import DeviceSpec, VmSpec, VmState
from winhv.drivers.vmwp import Worker
from winhv.plugins._cli_run import vm_report

S = VmState


class VspFailingInInit(EchoVsp):
    def __init__(self, config: Any = None) -> None:
        raise RuntimeError("injected fault in EchoVsp.__init__")


def bad(*, vsp: type[Vsp] = EchoVsp, vsc: type[Vsc] = AltVsc, **config: Any) -> DeviceSpec:
    """The faulty device: its own interface (the guest binds one driver per interface)."""
    return DeviceSpec("bad", "device", ALT_IF, vsp, vsc, config, "alt")


def alt_failing(where: str) -> type[Vsc]:
    return type(f"AltVscFailing_{where}", (AltVsc,), {"fail_in": where})


FAULTS = {
    "vsp-init": bad(vsp=VspFailingInInit),
    "vsp-on_open": bad(fail_in="on_open"),
    "vsc-probe": bad(vsc=alt_failing("probe")),
    "vsc-on_open": bad(vsc=alt_failing("on_open")),
}


@pytest.mark.parametrize("where", sorted(FAULTS))
def test_a_driver_raising_during_boot_fails_only_its_device(where: str) -> None:
    # the faulty device comes first, so the good one is bound after it
    spec = VmSpec("vm", 16, 1, (FAULTS[where], echo_device("good")))
    host = make_host(spec, echo_spec("other"))
    start_all(host)
    vm = host.vmms.get("vm")
    assert vm.state is S.RUNNING
    assert vm.reason is None
    details = host.vmms.inspect("vm")
    assert any("injected fault" in e for e in details["errors"]), details["errors"]
    assert len(set(details["errors"])) == len(details["errors"])   # each said once
    report = vm_report(host, vm)
    assert report["state"] == "Running"
    assert any("injected fault" in e for e in report["errors"])
    assert [d["driver"] for d in report["bound"]] == ["EchoVsc"]
    channels = {c["name"]: c for c in details["channels"]}
    assert channels["good"]["open"]
    if where == "vsp-init":
        assert "bad" not in channels              # never offered
        assert any("device 'bad': RuntimeError" in e for e in details["errors"])
    else:
        assert not channels["bad"]["open"]
        [bad] = [d for d in details["devices"] if d["relid"] == channels["bad"]["relid"]]
        assert bad["state"] == "failed"
        assert bad["error"]
    assert ping(host, "vm", b"good") == [b"echo:good"]
    assert ping(host, "other", b"other") == [b"echo:other"]


def test_vid_refusing_a_vm_fails_only_that_vm() -> None:
    reserve = MemoryReserve({"reserve_mb": 64})
    host = make_host(echo_spec("small"), echo_spec("big", memory_mb=4096),
                     echo_spec("after"), services=[reserve], root_memory_mb=512)
    start_all(host)
    big = host.vmms.get("big")
    assert big.state is S.FAILED
    assert big.reason is not None
    assert "VID service memory-reserve refused the partition" in big.reason
    assert "below the 64 MiB reserve" in big.reason
    assert len(reserve.refused) == 1
    assert big.worker is None
    assert sorted(p.name for p in host.vid.partitions.values()) == ["after", "small"]
    for name in ("small", "after"):
        assert host.vmms.get(name).state is S.RUNNING
        assert ping(host, name, name.encode()) == [b"echo:" + name.encode()]
    assert host.vmms.inspect("big")["state"] == "Failed"


def test_an_exception_in_worker_start_fails_only_its_vm_and_frees_its_partition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    boot = Worker._boot_guest

    def boot_or_break(self: Worker, part: Any) -> None:
        if self.name == "bad":
            raise RuntimeError("injected fault in Worker.start")
        boot(self, part)

    monkeypatch.setattr(Worker, "_boot_guest", boot_or_break)
    host = make_host(echo_spec("good"), echo_spec("bad"))
    start_all(host)
    bad = host.vmms.get("bad")
    assert bad.state is S.FAILED
    assert bad.reason == "injected fault in Worker.start"
    assert [p.name for p in host.vid.partitions.values()] == ["good"]
    assert host.vmms.get("good").state is S.RUNNING
    assert ping(host, "good", b"fine") == [b"echo:fine"]
    # fixed, the VM starts again from Off
    monkeypatch.setattr(Worker, "_boot_guest", boot)
    host.vmms.reset("bad")
    host.vmms.start("bad")
    host.settle()
    assert bad.state is S.RUNNING
    assert ping(host, "bad", b"recovered") == [b"echo:recovered"]


def test_a_guest_crash_fails_only_its_vm() -> None:
    host = make_host(echo_spec("crash"), echo_spec("calm"))
    start_all(host)

    class Crashing:
        def interrupt(self, vector: int) -> None:
            raise RuntimeError("bugcheck")

    worker: Any = host.vmms.get("crash").worker
    worker.guest._synic = Crashing()
    replies = ping(host, "calm", b"calm", run=False)
    ping(host, "crash", b"boom", run=False)
    host.run_until_idle()
    crash = host.vmms.get("crash")
    assert crash.state is S.FAILED
    assert crash.reason is not None
    assert "worker failed: the guest crashed in its interrupt handler" in crash.reason
    assert host.vmms.get("calm").state is S.RUNNING
    assert replies == [b"echo:calm"]
    assert ping(host, "calm", b"again") == [b"echo:again"]


def test_a_guest_faulting_without_end_leaves_a_bounded_record() -> None:
    # Guest faults reach the worker one by one (the VMBus server rate-limits its own): the
    # worker keeps the last ERRORS_KEPT, and the VM runs on.
    host = make_host(echo_spec("noisy"))
    start_all(host)
    worker: Any = host.vmms.get("noisy").worker
    for i in range(3 * Worker.ERRORS_KEPT):
        worker.guest.on_fault("timer", RuntimeError(f"fault {i}"))
    assert len(worker.errors) == Worker.ERRORS_KEPT
    assert worker.errors[-1].endswith(f"fault {3 * Worker.ERRORS_KEPT - 1}")
    assert ping(host, "noisy", b"still") == [b"echo:still"]
