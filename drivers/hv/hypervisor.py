"""The hypervisor: boots the root partition and owns every partition, port and VP.

Only hypercalls change it from the outside. The root partition exists at boot with every
privilege, its RAM backed by one shared anonymous mapping (sparse: untouched pages cost
nothing). Children are created, configured and destroyed by the root through hypercalls; their
RAM is root pages mapped into their GPA space. Guests and the root talk to the hypervisor
through WinHv handles (:meth:`Hypervisor.handle`), which carry a partition identity, not a
reference to anything here.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from functools import partial
from typing import Any

from winhv._gpa import GpaError, GpaSpace
from winhv._privileges import ROOT_PRIVILEGES
from winhv._select import make_bridge
from winhv._status import HvStatus
from winhv._winhv import WinHv
from winhv.drivers.hv import (
    _memory_calls,
    _message_calls,
    _partition_calls,
    _port_calls,
    _vp_calls,
)
from winhv.drivers.hv._core import (
    STATE_ACTIVE,
    STATE_DELETED,
    STATE_FINALIZED,
    Partition,
    Port,
    Vp,
    install_compiled_handlers,
)
from winhv.drivers.hv.scheduler import Scheduler

__all__ = ["ROOT_PARTITION_ID", "Hypervisor"]

#: The root partition's id (children are numbered from 2 and never reused).
ROOT_PARTITION_ID = 1
#: Guest page-table limit of a child: 64 GiB of GPA space.
CHILD_MAX_PAGES = 1 << 24
#: Most live child partitions at once.
MAX_CHILDREN = 4096

_PY_HANDLERS = {
    **_partition_calls.HANDLERS,
    **_memory_calls.HANDLERS,
    **_vp_calls.HANDLERS,
    **_port_calls.HANDLERS,
}


class Hypervisor:
    """One simulated machine: the hypervisor, its bridge, scheduler and partitions.

    ``bridge`` is ``"compiled"``, ``"reference"``, ``None`` (``WINHV_BRIDGE`` or compiled), or a
    bridge object. ``root_memory_mb`` sizes the root's RAM (the machine's RAM: every VM's memory
    comes out of it).
    """

    def __init__(self, *, root_memory_mb: int = 1024, root_vps: int = 1,
                 bridge: Any = None, rep_slice: int | None = None,
                 scheduler: Scheduler | None = None) -> None:
        if root_memory_mb <= 0 or root_vps <= 0:
            raise ValueError("root_memory_mb and root_vps must be positive")
        self.bridge = bridge if bridge is not None and not isinstance(bridge, str) \
            else make_bridge(bridge)
        if rep_slice is not None:
            self.bridge.rep_slice = rep_slice
        self.scheduler = scheduler or Scheduler()
        self.partitions: dict[int, Partition] = {}
        #: Pages each partition deposited, by partition id: {page: pool slot}.
        self.deposited_pages: dict[int, dict[int, int]] = {}
        #: HvCallCreatePartition flags of each live child, for inspection.
        self.creation_flags: dict[int, int] = {}
        self._pool = GpaSpace("hypervisor pool", 1 << 40)
        self._free_pool_slots: list[int] = []
        self._next_pool_slot = 0
        self._next_partition_id = ROOT_PARTITION_ID + 1
        #: Called as ``observer(partition)`` when a partition changes state.
        self.observers: list[Callable[[Partition], None]] = []
        self._install_handlers()
        self.root = self._boot_root(root_memory_mb, root_vps)

    # -- boot ---------------------------------------------------------------------------------

    def _install_handlers(self) -> None:
        handlers = dict(_PY_HANDLERS)
        if self.bridge.kind == "compiled":
            install_compiled_handlers(self.bridge)
        else:
            handlers.update(_message_calls.HANDLERS)
        for code, handler in handlers.items():
            self.bridge.register(code, partial(handler, self))

    def _boot_root(self, memory_mb: int, vps: int) -> Partition:
        size = memory_mb << 20
        ram = mmap.mmap(-1, size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS
                        | getattr(mmap, "MAP_NORESERVE", 0))
        memory = GpaSpace("root", (size >> 12) + 1)
        memory.add_region(0, ram)
        root = Partition(ROOT_PARTITION_ID, memory, int(ROOT_PRIVILEGES), name="root")
        root.state = STATE_ACTIVE
        self.partitions[root.partition_id] = root
        for index in range(vps):
            self._create_vp(root, index)
        return root

    @property
    def root_memory_bytes(self) -> int:
        return self.root.memory.size_pages << 12

    # -- handles ------------------------------------------------------------------------------

    def handle(self, partition_id: int, *, input_gpa: int, output_gpa: int,
               vp_index: int = 0) -> WinHv:
        """A WinHv handle for a VP of an active partition (what its "CPU" calls through).

        The hypercall input/output pages are two pages of the partition's own memory.
        """
        partition = self.partitions.get(partition_id)
        if partition is None or partition.state != STATE_ACTIVE:
            raise ValueError(f"partition {partition_id:#x} is not active")
        if partition.vp(vp_index) is None:
            raise ValueError(f"partition {partition_id:#x} has no VP {vp_index}")
        return WinHv(self.bridge, partition, input_gpa, output_gpa, vp_index)

    def set_interrupt_handler(self, partition_id: int, vp_index: int,
                              handler: Callable[[int], Any] | None) -> None:
        """Install the ISR a VP runs for every interrupt vector (its IDT, in one callable)."""
        vp = self.partitions[partition_id].vp(vp_index)
        if vp is None:
            raise ValueError(f"partition {partition_id:#x} has no VP {vp_index}")
        vp.interrupt_handler = handler

    # -- state changes used by the handlers ----------------------------------------------------

    def _partition_state_changed(self, partition: Partition) -> None:
        for observer in list(self.observers):
            observer(partition)

    def _new_child(self, parent: Partition, *, flags: int) -> Partition:
        from winhv.drivers.hv._calls_common import HypercallFailed

        children = sum(1 for p in self.partitions.values() if p.parent is not None)
        if children >= MAX_CHILDREN:
            raise HypercallFailed(HvStatus.INSUFFICIENT_MEMORY)
        partition_id = self._next_partition_id
        self._next_partition_id += 1
        memory = GpaSpace(f"partition {partition_id:#x}", CHILD_MAX_PAGES)
        child = Partition(partition_id, memory, 0, parent=parent)
        self.creation_flags[partition_id] = flags
        self.partitions[partition_id] = child
        self._partition_state_changed(child)
        return child

    def _suspend(self, partition: Partition, suspend: bool) -> None:
        if suspend:
            self.scheduler.suspend(partition.partition_id)
        else:
            self.scheduler.resume(partition.partition_id)
        self._partition_state_changed(partition)

    def _finalize(self, partition: Partition) -> None:
        self.scheduler.resume(partition.partition_id)
        for vp in partition.vps:
            if vp is not None:
                vp.reset()
        for port in list(partition.ports.values()):
            self._delete_port(port)
        partition.ports.clear()
        partition.clear_connections()
        partition.state = STATE_FINALIZED
        self._partition_state_changed(partition)

    def _delete(self, partition: Partition) -> None:
        for slot_key in list(partition.pool_pages):
            origin_id, origin_page, slot = slot_key
            self._return_pool_page(origin_id, origin_page, slot)
        partition.pool_pages.clear()
        partition.pool_in_use = 0
        partition.vps = []
        partition.state = STATE_DELETED
        del self.partitions[partition.partition_id]
        self.creation_flags.pop(partition.partition_id, None)
        self._partition_state_changed(partition)

    def _create_vp(self, partition: Partition, index: int) -> int:
        if partition.parent is not None:
            free = len(partition.pool_pages) - partition.pool_in_use
            if free < _partition_calls.VP_POOL_PAGES:
                return HvStatus.INSUFFICIENT_MEMORY
            partition.pool_in_use += _partition_calls.VP_POOL_PAGES
        while len(partition.vps) <= index:
            partition.vps.append(None)
        partition.vps[index] = Vp(partition, index, self.scheduler.ready)
        return HvStatus.SUCCESS

    def _delete_vp(self, partition: Partition, index: int) -> None:
        vp = partition.vps[index]
        vp.reset()
        partition.vps[index] = None
        if partition.parent is not None:
            partition.pool_in_use -= _partition_calls.VP_POOL_PAGES

    def _delete_port(self, port: Port) -> None:
        port.deleted = True
        for vp in port.partition.vps:
            if vp is not None:
                vp.drop_port(port)

    # -- the memory pool ----------------------------------------------------------------------

    def _deposit(self, caller: Partition, target: Partition, page: int) -> int:
        deposited = self.deposited_pages.setdefault(caller.partition_id, {})
        if page in deposited or not caller.memory.is_mapped(page << 12, 4096):
            return HvStatus.INVALID_PARAMETER
        if self._free_pool_slots:
            slot = self._free_pool_slots.pop()
        else:
            slot = self._next_pool_slot
            self._next_pool_slot += 1
        try:
            self._pool.map_from(caller.memory, page, slot, 1)
        except GpaError:
            self._free_pool_slots.append(slot)
            return HvStatus.INVALID_PARAMETER
        caller.memory.unmap(page, 1)
        deposited[page] = slot
        target.pool_pages.add((caller.partition_id, page, slot))
        return HvStatus.SUCCESS

    def _withdraw(self, caller: Partition, target: Partition) -> int | None:
        if len(target.pool_pages) - target.pool_in_use <= 0:
            return None
        mine = sorted(key for key in target.pool_pages if key[0] == caller.partition_id)
        if not mine:
            return None
        key = mine[0]
        target.pool_pages.discard(key)
        self._return_pool_page(*key)
        return key[1]

    def _return_pool_page(self, origin_id: int, page: int, slot: int) -> None:
        origin = self.partitions.get(origin_id)
        if origin is not None:
            origin.memory.map_from(self._pool, slot, page, 1)
            self.deposited_pages[origin_id].pop(page, None)
        self._pool.unmap(slot, 1)
        self._free_pool_slots.append(slot)
