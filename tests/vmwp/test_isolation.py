"""A worker and its guest hold only their partition's port: a WinHv handle per guest VP, the
VP's interrupt line, a guest timer and read-only counters. None of them keeps the hypervisor
object, its partition table or its scheduler as an attribute (in one process the port's entry
points still lead there; the point is that nothing else does, which is what lets a worker move
into its own process behind the same four entry points)."""

from __future__ import annotations

from typing import Any

from support.hosts import echo_spec, make_host, ping, start_all

from winhv.drivers.vmwp import GuestTimer, PartitionPort


def _attributes(obj: Any) -> list[Any]:
    values = list(vars(obj).values()) if hasattr(obj, "__dict__") else []
    for name in getattr(type(obj), "__slots__", ()):
        if hasattr(obj, name):
            values.append(getattr(obj, name))
    return values


def test_the_worker_and_its_guest_hold_no_hypervisor_object() -> None:
    host = make_host(echo_spec("vm"), echo_spec("other"))
    start_all(host)
    hv = host.hypervisor
    forbidden = {id(hv), id(hv.scheduler), id(hv.partitions)}
    worker = host.vmms.get("vm").worker
    assert worker is not None
    assert worker.guest is not None
    assert worker.client is not None
    for holder in (worker, worker.guest, worker.client, worker.port, worker.guest.clock):
        held = [type(v).__name__ for v in _attributes(holder) if id(v) in forbidden]
        assert held == [], f"{type(holder).__name__} holds {held}"
    assert isinstance(worker.port, PartitionPort)
    assert isinstance(worker.guest.clock, GuestTimer)
    assert [n for n in dir(worker.guest.clock) if not n.startswith("_")] == ["call_later", "now"]
    assert worker.guest.clock.now == hv.scheduler.now
    assert ping(host, "vm", b"still works") == [b"echo:still works"]


def test_the_port_opens_handles_for_its_own_partition_and_counts_what_it_did() -> None:
    host = make_host(echo_spec("vm"), echo_spec("other"))
    start_all(host)
    worker = host.vmms.get("vm").worker
    assert worker is not None
    port = worker.port
    assert port is not None
    pid = port.partition_id
    assert pid == worker.partition.partition_id   # type: ignore[union-attr]
    status, seen = port.guest_handle(0, 0x1000).WinHvGetPartitionId()
    assert (int(status), seen) == (0, pid)
    counters = port.counters()
    partition = host.hypervisor.partitions[pid]
    assert counters == {"vps": 1, "hypercalls": partition.calls}
    assert host.vmms.inspect("vm")["partition"]["hypercalls"] == partition.calls
    host.vmms.stop("vm", force=True)
    assert port.counters() == {"vps": 0, "hypercalls": 0}    # the partition is gone
