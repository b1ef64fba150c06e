"""Partition, VP and guest-memory management for the root, through hypercalls only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from winhv._privileges import DEFAULT_CHILD_PRIVILEGES
from winhv._properties import PartitionProperty
from winhv._status import HvStatus
from winhv.drivers.kernel import Kernel
from winhv.drivers.vid._services import VidService

__all__ = ["MAP_BATCH", "Vid", "VidError", "VidPartition"]

#: Source pages per HvCallMapGpaPages: the 24-byte header plus 8 bytes a page fill one page.
MAP_BATCH = (4096 - 24) // 8
#: Pool pages deposited per partition: InitializePartition's page plus one per VP.
_POOL_BASE = 1


class VidError(RuntimeError):
    """A hypercall VID needed failed; the message names the call, partition and status."""


@dataclass(slots=True)
class VidPartition:
    """What VID knows of a partition it made."""

    partition_id: int
    name: str
    memory_pages: int
    processors: int
    #: First root page backing guest page 0 (the RAM is one contiguous run of root pages).
    root_ram_page: int
    pool_pages: list[int] = field(default_factory=list)

    @property
    def memory_bytes(self) -> int:
        return self.memory_pages << 12


class Vid:
    """Creates and destroys partitions on behalf of VMMS, through the root kernel's WinHv."""

    def __init__(self, root: Kernel, services: Sequence[VidService] = ()) -> None:
        self.root = root
        self.services: list[VidService] = list(services)
        self.partitions: dict[int, VidPartition] = {}

    def _check(self, status: object, what: str, partition_id: int | None = None) -> None:
        if status != HvStatus.SUCCESS:
            target = f" for partition {partition_id:#x}" if partition_id is not None else ""
            raise VidError(f"{what}{target} failed: {status}")

    def create_partition(self, name: str, *, memory_mb: int, processors: int = 1,
                         privileges: int = int(DEFAULT_CHILD_PRIVILEGES)) -> VidPartition:
        """Create, fund, initialize a partition, map its RAM at GPA 0 and create its VPs.

        On failure everything made so far is torn down again and :class:`VidError` raised.
        """
        if memory_mb <= 0 or processors <= 0:
            raise ValueError("memory_mb and processors must be positive")
        for service in self.services:
            reason = service.admit(self, name, memory_mb, processors)
            if reason:
                raise VidError(f"VID service {service.name or type(service).__name__} "
                               f"refused the partition: {reason}")
        hv = self.root.hv
        status, pid = hv.WinHvCreatePartition()
        self._check(status, "HvCallCreatePartition")
        part = VidPartition(pid, name, memory_mb << 8, processors, root_ram_page=-1)
        try:
            self._check(hv.WinHvSetPartitionProperty(
                pid, PartitionProperty.PRIVILEGE_FLAGS, privileges),
                "HvCallSetPartitionProperty(PrivilegeFlags)", pid)
            pool = self.root.allocator.alloc(_POOL_BASE + processors)
            part.pool_pages = list(range(pool, pool + _POOL_BASE + processors))
            self._check(hv.WinHvDepositMemory(pid, part.pool_pages), "HvCallDepositMemory", pid)
            self._check(hv.WinHvInitializePartition(pid), "HvCallInitializePartition", pid)
            part.root_ram_page, stale = self.root.allocator.alloc_run(part.memory_pages)
            if stale:
                # A new VM's RAM reads zero: nothing of an earlier owner (a VM, a withdrawn
                # pool page, the root itself) shows through. Its guest allocator relies on it.
                self.root.memory.discard(part.root_ram_page << 12, stale << 12)
            for offset in range(0, part.memory_pages, MAP_BATCH):
                count = min(MAP_BATCH, part.memory_pages - offset)
                source = range(part.root_ram_page + offset, part.root_ram_page + offset + count)
                self._check(hv.WinHvMapGpaPages(pid, offset, source), "HvCallMapGpaPages", pid)
            for vp in range(processors):
                self._check(hv.WinHvCreateVp(pid, vp), f"HvCallCreateVp({vp})", pid)
        except BaseException:
            self._teardown(part)
            raise
        self.partitions[pid] = part
        for service in self.services:
            service.partition_created(self, part)
        return part

    def destroy_partition(self, partition_id: int) -> None:
        """Finalize and delete a partition, withdraw its pool and free its RAM."""
        part = self.partitions.pop(partition_id)
        self._teardown(part)
        for service in self.services:
            service.partition_destroyed(self, part)

    def _teardown(self, part: VidPartition) -> None:
        hv = self.root.hv
        pid = part.partition_id
        hv.WinHvFinalizePartition(pid)
        status = hv.WinHvDeletePartition(pid)
        if status == HvStatus.SUCCESS and part.pool_pages:
            # DeletePartition returned the pool to us; the pages are ours to reuse again.
            self.root.allocator.free(part.pool_pages[0], len(part.pool_pages))
        if part.root_ram_page >= 0:
            # The next VM must not see this one's data: zero (and release) the RAM first.
            self.root.memory.discard(part.root_ram_page << 12, part.memory_bytes)
            self.root.allocator.free(part.root_ram_page, part.memory_pages)
