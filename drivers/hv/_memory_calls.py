"""GPA mapping hypercalls (fact sheet §1.7): MapGpaPages and UnmapGpaPages.

A child's RAM is pages of its parent mapped into the child's GPA space: the parent passes its
own GPA page numbers as rep elements. The child then reaches them at its GPAs, and the parent
keeps reaching them at its own (that is how the root's VM worker reads guest memory without
copying).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from winhv._gpa import GpaError
from winhv._status import HvStatus
from winhv.drivers.hv._calls_common import guarded, resolve
from winhv.drivers.hv._core import STATE_ACTIVE, STATE_CREATED

if TYPE_CHECKING:
    from winhv._bridge import HypercallFrame
    from winhv.drivers.hv.hypervisor import Hypervisor

_MAP_HEADER = struct.Struct("<QQI4x")

#: HV_MAP_GPA_* flags (readable, writable, kernel/user executable); only recorded.
MAP_GPA_FLAGS_MASK = 0xF


@guarded
def map_gpa_pages(hv: Hypervisor, frame: HypercallFrame) -> int:
    """HvCallMapGpaPages (rep): map caller page ``src[i]`` at child page ``base + i``."""
    caller = frame.caller
    partition_id, target_base, flags = _MAP_HEADER.unpack_from(frame.input, 0)
    target = resolve(hv, caller, partition_id, child_only=True)
    if target.state not in (STATE_CREATED, STATE_ACTIVE):
        return HvStatus.INVALID_PARTITION_STATE
    if flags & ~MAP_GPA_FLAGS_MASK:
        return HvStatus.INVALID_PARAMETER
    deposited = hv.deposited_pages.get(caller.partition_id, ())
    count = frame.rep_limit - frame.rep_start
    sources = struct.unpack_from(f"<{count}Q", frame.input, 24 + 8 * frame.rep_start)
    if count > 1 and sources[-1] - sources[0] == count - 1 \
            and sources == tuple(range(sources[0], sources[0] + count)):
        # The common case (VID maps RAM as one run): one step for the whole slice. Deposited
        # pages are unmapped from the caller, so map_from refuses them like any unmapped page.
        try:
            target.memory.map_from(caller.memory, sources[0], target_base + frame.rep_start,
                                   count)
        except (GpaError, OverflowError):
            pass
        else:
            frame.reps_done = frame.rep_limit
            return HvStatus.SUCCESS
    rep = frame.rep_start
    while rep < frame.rep_limit:
        # Map runs of consecutive source pages in one step (VID maps RAM in long runs); a
        # run that fails is retried page by page so reps_done counts exactly.
        first = sources[rep - frame.rep_start]
        run = 1
        while rep + run < frame.rep_limit and sources[rep + run - frame.rep_start] == first + run:
            run += 1
        if run > 1 and not any(first + i in deposited for i in range(run)):
            try:
                target.memory.map_from(caller.memory, first, target_base + rep, run)
            except (GpaError, OverflowError):
                run = 1
            else:
                rep += run
                frame.reps_done = rep
                continue
        if first in deposited:
            return HvStatus.INVALID_PARAMETER
        try:
            target.memory.map_from(caller.memory, first, target_base + rep, 1)
        except (GpaError, OverflowError):
            return HvStatus.INVALID_PARAMETER
        rep += 1
        frame.reps_done = rep
    return HvStatus.SUCCESS


@guarded
def unmap_gpa_pages(hv: Hypervisor, frame: HypercallFrame) -> int:
    """HvCallUnmapGpaPages (rep): unmap child pages ``base + i``; each must be mapped."""
    partition_id, target_base, _flags = _MAP_HEADER.unpack_from(frame.input, 0)
    target = resolve(hv, frame.caller, partition_id, child_only=True)
    for rep in range(frame.rep_start, frame.rep_limit):
        try:
            target.memory.unmap(target_base + rep, 1)
        except (GpaError, OverflowError):
            return HvStatus.INVALID_PARAMETER
        frame.reps_done = rep + 1
    return HvStatus.SUCCESS


HANDLERS = {0x004B: map_gpa_pages, 0x004C: unmap_gpa_pages}

__all__ = ["HANDLERS"]
