"""The worker's door to the machine for its one partition, and the guest's timer.

A VM worker needs four things from the machine beyond the root's own WinHv handle (which VID
and the VMBus server use): a WinHv handle per guest VP (the guest's "CPU"), a line to deliver
the VP's interrupts to the guest kernel, the guest's timer, and the partition's counters for
``inspect``. :class:`PartitionPort` is exactly that, bound to one partition id, so the worker
and the guest never hold the hypervisor object, its partition table or its scheduler: what a
worker process would get from the hypervisor driver for its own VM, and nothing of the
others'. :class:`GuestTimer` is the guest's view of time (the reference counter and one-shot
timers), never the scheduler itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["GuestTimer", "PartitionPort"]


class GuestTimer:
    """The guest's timer hardware: ``now`` (virtual ns) and ``call_later`` (a one-shot
    timer; the returned handle has ``cancel()``). Nothing else of the scheduler."""

    __slots__ = ("_call_later", "_now")

    def __init__(self, now: Callable[[], int], call_later: Callable[..., Any]) -> None:
        self._now = now
        self._call_later = call_later

    @property
    def now(self) -> int:
        """Virtual time in ns (the partition reference counter is ``now // 100``)."""
        return self._now()

    def call_later(self, delay_ns: int, callback: Callable[[], Any], name: str = "") -> Any:
        """Run ``callback`` after ``delay_ns`` of virtual time; returns a cancellable timer."""
        return self._call_later(delay_ns, callback, name)


class PartitionPort:
    """One partition's door to the machine; see the module docstring."""

    __slots__ = ("_counters", "_handle", "_interrupts", "partition_id", "timer")

    def __init__(self, hypervisor: Any, partition_id: int) -> None:
        self.partition_id = partition_id
        scheduler = hypervisor.scheduler
        self.timer = GuestTimer(lambda: scheduler.now, scheduler.call_later)
        # Only bound methods and this partition's id are kept, never the hypervisor itself.
        self._handle = hypervisor.handle
        self._interrupts = hypervisor.set_interrupt_handler
        partitions = hypervisor.partitions
        self._counters = lambda: partitions.get(partition_id)

    def guest_handle(self, input_gpa: int, output_gpa: int, vp_index: int = 0) -> Any:
        """A WinHv handle for one of this partition's VPs (the guest's hypercall page)."""
        return self._handle(self.partition_id, input_gpa=input_gpa, output_gpa=output_gpa,
                            vp_index=vp_index)

    def connect_interrupts(self, vp_index: int, isr: Callable[[int], Any] | None) -> None:
        """Deliver the VP's interrupt vectors to ``isr`` (``None`` disconnects)."""
        self._interrupts(self.partition_id, vp_index, isr)

    def counters(self) -> dict[str, int]:
        """The partition's statistics, read-only (Hyper-V's per-partition statistics page):
        ``vps`` created and ``hypercalls`` made; zeros once the partition is gone."""
        partition = self._counters()
        if partition is None:
            return {"vps": 0, "hypercalls": 0}
        return {"vps": sum(1 for vp in partition.vps if vp is not None),
                "hypercalls": int(partition.calls)}
