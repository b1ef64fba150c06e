"""Virtual processor hypercalls (fact sheet §1.7): CreateVp, DeleteVp, Get/SetVpRegisters."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from winhv._status import HvStatus
from winhv.drivers.hv._calls_common import U32, guarded, resolve
from winhv.drivers.hv._core import STATE_ACTIVE
from winhv.drivers.hv._synic_registers import read_register, write_register

if TYPE_CHECKING:
    from winhv._bridge import HypercallFrame
    from winhv.drivers.hv.hypervisor import Hypervisor

_VP_HEADER = struct.Struct("<QIB3x")
_SET_ELEMENT = struct.Struct("<I12xQQ")
_VALUE = struct.Struct("<QQ")

#: Highest number of VPs per partition (HV_MAXIMUM_PROCESSORS on x64).
MAX_VPS = 2048


@guarded
def create_vp(hv: Hypervisor, frame: HypercallFrame) -> int:
    """HvCallCreateVp: a new VP (SynIC reset, SINTs masked) in an ACTIVE child."""
    partition_id, index, _vtl = _VP_HEADER.unpack_from(frame.input, 0)
    target = resolve(hv, frame.caller, partition_id, child_only=True)
    if target.state != STATE_ACTIVE:
        return HvStatus.INVALID_PARTITION_STATE
    if index >= MAX_VPS:
        return HvStatus.INVALID_VP_INDEX
    if index < len(target.vps) and target.vps[index] is not None:
        return HvStatus.INVALID_VP_STATE
    return hv._create_vp(target, index)


@guarded
def delete_vp(hv: Hypervisor, frame: HypercallFrame) -> int:
    """HvCallDeleteVp: remove a VP; queued messages for it are dropped."""
    partition_id, index, _vtl = _VP_HEADER.unpack_from(frame.input, 0)
    target = resolve(hv, frame.caller, partition_id, child_only=True)
    if index >= len(target.vps) or target.vps[index] is None:
        return HvStatus.INVALID_VP_INDEX
    hv._delete_vp(target, index)
    return HvStatus.SUCCESS


def _target_vp(hv: Hypervisor, frame: HypercallFrame):
    partition_id, index, vtl = _VP_HEADER.unpack_from(frame.input, 0)
    target = resolve(hv, frame.caller, partition_id)
    if vtl != 0:
        return target, None, HvStatus.INVALID_PARAMETER  # only VTL0 exists here
    vp = target.vp(index)
    if vp is None:
        return target, None, HvStatus.INVALID_VP_INDEX
    return target, vp, HvStatus.SUCCESS


@guarded
def get_vp_registers(hv: Hypervisor, frame: HypercallFrame) -> int:
    """HvCallGetVpRegisters (rep): one 16-byte value per 4-byte register name."""
    target, vp, status = _target_vp(hv, frame)
    if status:
        return status
    for rep in range(frame.rep_start, frame.rep_limit):
        name = U32.unpack_from(frame.input, 16 + 4 * rep)[0]
        status, value = read_register(hv, frame.caller, target, vp, name)
        if status:
            return status
        _VALUE.pack_into(frame.output, 16 * rep, value, 0)
        frame.reps_done = rep + 1
    return HvStatus.SUCCESS


@guarded
def set_vp_registers(hv: Hypervisor, frame: HypercallFrame) -> int:
    """HvCallSetVpRegisters (rep): 32-byte elements (name, reserved, 16-byte value)."""
    target, vp, status = _target_vp(hv, frame)
    if status:
        return status
    for rep in range(frame.rep_start, frame.rep_limit):
        name, low, high = _SET_ELEMENT.unpack_from(frame.input, 16 + 32 * rep)
        if high:
            return HvStatus.INVALID_PARAMETER  # every register here is 64 bits wide
        status = write_register(hv, frame.caller, target, vp, name, low)
        if status:
            return status
        frame.reps_done = rep + 1
    return HvStatus.SUCCESS


HANDLERS = {
    0x004E: create_vp,
    0x004F: delete_vp,
    0x0050: get_vp_registers,
    0x0051: set_vp_registers,
}

__all__ = ["HANDLERS", "MAX_VPS"]
