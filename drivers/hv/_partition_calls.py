"""Partition management hypercalls (fact sheet §1.7): create, initialize, finalize, delete,
properties, ids and the memory pool (deposit, withdraw, balance)."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from winhv._properties import PartitionProperty
from winhv._status import HvStatus
from winhv.drivers.hv._calls_common import U64, HypercallFailed, guarded, resolve
from winhv.drivers.hv._core import STATE_ACTIVE, STATE_CREATED, STATE_FINALIZED

if TYPE_CHECKING:
    from winhv._bridge import HypercallFrame
    from winhv.drivers.hv.hypervisor import Hypervisor

_ID_AND_CODE = struct.Struct("<QI4x")
_SET_PROPERTY = struct.Struct("<QI4xQ")
_TWO_IDS = struct.Struct("<QQ")

#: Pages of a partition's pool that InitializePartition consumes (its hypervisor state).
INITIALIZE_POOL_PAGES = 1
#: Pages of a partition's pool that one virtual processor consumes.
VP_POOL_PAGES = 1

_KNOWN_PROPERTIES = frozenset(int(p) for p in PartitionProperty)


def _caller(frame: HypercallFrame):
    return frame.caller


@guarded
def create_partition(hv: Hypervisor, frame: HypercallFrame) -> int:
    """HvCallCreatePartition: a new child of the caller, in the CREATED state."""
    flags = U64.unpack_from(frame.input, 0)[0]
    partition = hv._new_child(_caller(frame), flags=flags)
    U64.pack_into(frame.output, 0, partition.partition_id)
    return HvStatus.SUCCESS


@guarded
def initialize_partition(hv: Hypervisor, frame: HypercallFrame) -> int:
    """HvCallInitializePartition: CREATED -> ACTIVE; needs pool pages deposited first."""
    target = resolve(hv, _caller(frame), U64.unpack_from(frame.input, 0)[0], child_only=True)
    if target.state != STATE_CREATED:
        return HvStatus.INVALID_PARTITION_STATE
    if len(target.pool_pages) - target.pool_in_use < INITIALIZE_POOL_PAGES:
        return HvStatus.INSUFFICIENT_MEMORY
    target.pool_in_use += INITIALIZE_POOL_PAGES
    target.state = STATE_ACTIVE
    hv._partition_state_changed(target)
    return HvStatus.SUCCESS


@guarded
def finalize_partition(hv: Hypervisor, frame: HypercallFrame) -> int:
    """HvCallFinalizePartition: stop the partition for good; only DeletePartition remains."""
    target = resolve(hv, _caller(frame), U64.unpack_from(frame.input, 0)[0], child_only=True)
    if target.state not in (STATE_CREATED, STATE_ACTIVE):
        return HvStatus.INVALID_PARTITION_STATE
    hv._finalize(target)
    return HvStatus.SUCCESS


@guarded
def delete_partition(hv: Hypervisor, frame: HypercallFrame) -> int:
    """HvCallDeletePartition: a finalized child goes away; its pool returns to the parent."""
    target = resolve(hv, _caller(frame), U64.unpack_from(frame.input, 0)[0], child_only=True)
    if target.state != STATE_FINALIZED:
        return HvStatus.INVALID_PARTITION_STATE
    hv._delete(target)
    return HvStatus.SUCCESS


@guarded
def get_partition_property(hv: Hypervisor, frame: HypercallFrame) -> int:
    """HvCallGetPartitionProperty: PRIVILEGE_FLAGS and any property set before."""
    partition_id, code = _ID_AND_CODE.unpack_from(frame.input, 0)
    target = resolve(hv, _caller(frame), partition_id)
    if code not in _KNOWN_PROPERTIES:
        return HvStatus.UNKNOWN_PROPERTY
    if code == PartitionProperty.PRIVILEGE_FLAGS:
        value = target.privileges
    else:
        value = target.properties.get(code, 0)
    U64.pack_into(frame.output, 0, value)
    return HvStatus.SUCCESS


@guarded
def set_partition_property(hv: Hypervisor, frame: HypercallFrame) -> int:
    """HvCallSetPartitionProperty on a child. PRIVILEGE_FLAGS only before initialization and
    never beyond the parent's own privileges."""
    partition_id, code, value = _SET_PROPERTY.unpack_from(frame.input, 0)
    caller = _caller(frame)
    target = resolve(hv, caller, partition_id, child_only=True)
    if code not in _KNOWN_PROPERTIES:
        return HvStatus.UNKNOWN_PROPERTY
    if target.state not in (STATE_CREATED, STATE_ACTIVE):
        return HvStatus.INVALID_PARTITION_STATE
    if code == PartitionProperty.PRIVILEGE_FLAGS:
        if target.state != STATE_CREATED:
            return HvStatus.INVALID_PARTITION_STATE
        if value & ~caller.privileges:
            return HvStatus.ACCESS_DENIED
        target.privileges = value
    elif code == PartitionProperty.SUSPEND:
        if value not in (0, 1):
            return HvStatus.PROPERTY_VALUE_OUT_OF_RANGE
        target.properties[code] = value
        hv._suspend(target, bool(value))
    else:
        target.properties[code] = value
    return HvStatus.SUCCESS


@guarded
def get_next_child_partition(hv: Hypervisor, frame: HypercallFrame) -> int:
    """HvCallGetNextChildPartition: children of a partition in id order; 0 ends the list."""
    parent_id, previous = _TWO_IDS.unpack_from(frame.input, 0)
    parent = resolve(hv, _caller(frame), parent_id)
    children = sorted(p.partition_id for p in hv.partitions.values() if p.parent is parent)
    following = [c for c in children if c > previous]
    U64.pack_into(frame.output, 0, following[0] if following else 0)
    return HvStatus.SUCCESS


@guarded
def deposit_memory(hv: Hypervisor, frame: HypercallFrame) -> int:
    """HvCallDepositMemory (rep): give pages of the caller's memory to a partition's pool.

    A page must be mapped in the caller and not deposited already (INVALID_PARAMETER);
    deposited pages leave the caller's address space until withdrawn.
    """
    caller = _caller(frame)
    target = resolve(hv, caller, U64.unpack_from(frame.input, 0)[0])
    for rep in range(frame.rep_start, frame.rep_limit):
        page = U64.unpack_from(frame.input, 8 + 8 * rep)[0]
        status = hv._deposit(caller, target, page)
        if status:
            return status
        frame.reps_done = rep + 1
    return HvStatus.SUCCESS


@guarded
def withdraw_memory(hv: Hypervisor, frame: HypercallFrame) -> int:
    """HvCallWithdrawMemory (rep): take unused pool pages back; each rep outputs a page number.

    When the pool has no unused page left the call stops with INSUFFICIENT_MEMORY and the
    number of pages withdrawn so far (a success with fewer reps would mean "continue").
    """
    caller = _caller(frame)
    target = resolve(hv, caller, U64.unpack_from(frame.input, 0)[0])
    for rep in range(frame.rep_start, frame.rep_limit):
        page = hv._withdraw(caller, target)
        if page is None:
            return HvStatus.INSUFFICIENT_MEMORY
        U64.pack_into(frame.output, 8 * rep, page)
        frame.reps_done = rep + 1
    return HvStatus.SUCCESS


@guarded
def get_memory_balance(hv: Hypervisor, frame: HypercallFrame) -> int:
    """HvCallGetMemoryBalance: (pages available, pages in use) of a partition's pool."""
    target = resolve(hv, _caller(frame), U64.unpack_from(frame.input, 0)[0])
    in_use = target.pool_in_use
    struct.pack_into("<QQ", frame.output, 0, len(target.pool_pages) - in_use, in_use)
    return HvStatus.SUCCESS



HANDLERS = {
    0x0040: create_partition,
    0x0041: initialize_partition,
    0x0042: finalize_partition,
    0x0043: delete_partition,
    0x0044: get_partition_property,
    0x0045: set_partition_property,
    0x0047: get_next_child_partition,
    0x0048: deposit_memory,
    0x0049: withdraw_memory,
    0x004A: get_memory_balance,
}

__all__ = ["HANDLERS", "INITIALIZE_POOL_PAGES", "VP_POOL_PAGES", "HypercallFailed"]
