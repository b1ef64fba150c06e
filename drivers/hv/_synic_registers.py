"""The synthetic registers a VP exposes through Get/SetVpRegisters (fact sheet §2.1, §2.2).

Partition-wide: GUEST_OS_ID and HYPERCALL. Per VP: VP_INDEX (read-only), TIME_REF_COUNT
(read-only, the virtual clock in 100 ns), SCONTROL, SVERSION (read-only, 1), SIEFP, SIMP, EOM
(write-only trigger, reads 0) and SINT0-15.

The SIM and SIEF pages live in the partition's own memory. Enabling one (or moving it) zeroes
the page, as the TLFS overlay page reads zero when it appears; the GPA must be mapped in the
partition, otherwise the write fails with INVALID_PARAMETER (a real overlay needs no RAM
behind it; ours does, and says so).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from winhv._privileges import Privilege
from winhv._registers import (
    HV_SYNIC_VERSION,
    HYPERCALL_ENABLE,
    HYPERCALL_LOCKED,
    SINT_MASKED,
    SINT_VECTOR_MASK,
    SINT_VECTOR_MIN,
    HvRegisterName,
)
from winhv._status import HvStatus

if TYPE_CHECKING:
    from winhv.drivers.hv._core import Partition, Vp
    from winhv.drivers.hv.hypervisor import Hypervisor

R = HvRegisterName
_SINT0 = int(R.SINT0)
_PAGE_MASK = ~0xFFF & ((1 << 64) - 1)
#: Bits of SIMP/SIEFP/HYPERCALL the hypervisor keeps (enable, locked, page number); the
#: RsvdP bits in between read back as zero here.
_OVERLAY_KEEP = _PAGE_MASK | 1

#: The privilege a partition needs to touch a register of its own (§1.6).
_REGISTER_PRIVILEGE: dict[int, Privilege] = {
    R.GUEST_OS_ID: Privilege.ACCESS_HYPERCALL_MSRS,
    R.HYPERCALL: Privilege.ACCESS_HYPERCALL_MSRS,
    R.VP_INDEX: Privilege.ACCESS_VP_INDEX,
    R.TIME_REF_COUNT: Privilege.ACCESS_PARTITION_REFERENCE_COUNTER,
    **{r: Privilege.ACCESS_SYNIC_REGS for r in (R.SCONTROL, R.SVERSION, R.SIEFP, R.SIMP, R.EOM)},
    **{_SINT0 + n: Privilege.ACCESS_SYNIC_REGS for n in range(16)},
}

SUPPORTED_REGISTERS = frozenset(_REGISTER_PRIVILEGE)


def _allowed(caller: Partition, target: Partition, name: int) -> HvStatus | None:
    privilege = _REGISTER_PRIVILEGE.get(name)
    if privilege is None:
        return HvStatus.UNKNOWN_REGISTER_NAME
    if caller is target and not caller.privileges & privilege:
        return HvStatus.ACCESS_DENIED
    return None


def read_register(hv: Hypervisor, caller: Partition, target: Partition, vp: Vp,
                  name: int) -> tuple[HvStatus, int]:
    """``(status, value)`` of register ``name`` of ``vp``."""
    denied = _allowed(caller, target, name)
    if denied is not None:
        return denied, 0
    if name == R.GUEST_OS_ID:
        return HvStatus.SUCCESS, target.guest_os_id
    if name == R.HYPERCALL:
        return HvStatus.SUCCESS, target.hypercall_msr
    if name == R.VP_INDEX:
        return HvStatus.SUCCESS, vp.index
    if name == R.TIME_REF_COUNT:
        return HvStatus.SUCCESS, hv.scheduler.reference_time
    if name == R.SCONTROL:
        return HvStatus.SUCCESS, vp.scontrol
    if name == R.SVERSION:
        return HvStatus.SUCCESS, HV_SYNIC_VERSION
    if name == R.SIEFP:
        return HvStatus.SUCCESS, vp.siefp
    if name == R.SIMP:
        return HvStatus.SUCCESS, vp.simp
    if name == R.EOM:
        return HvStatus.SUCCESS, 0
    return HvStatus.SUCCESS, vp.get_sint(name - _SINT0)


def write_register(hv: Hypervisor, caller: Partition, target: Partition, vp: Vp, name: int,
                   value: int) -> HvStatus:
    """Write register ``name`` of ``vp``; read-only registers answer INVALID_PARAMETER."""
    denied = _allowed(caller, target, name)
    if denied is not None:
        return denied
    if name == R.GUEST_OS_ID:
        target.guest_os_id = value
        if value == 0:  # writing zero disables the hypercall page (§1.1)
            target.hypercall_msr &= ~HYPERCALL_ENABLE
        return HvStatus.SUCCESS
    if name == R.HYPERCALL:
        if target.hypercall_msr & HYPERCALL_LOCKED:
            return HvStatus.SUCCESS  # locked until reset: the write is ignored
        value &= _PAGE_MASK | HYPERCALL_ENABLE | HYPERCALL_LOCKED
        if target.guest_os_id == 0:
            value &= ~HYPERCALL_ENABLE  # silently stays disabled (§1.1)
        target.hypercall_msr = value
        return HvStatus.SUCCESS
    if name in (R.VP_INDEX, R.TIME_REF_COUNT, R.SVERSION):
        return HvStatus.INVALID_PARAMETER
    if name == R.SCONTROL:
        vp.scontrol = value & 1
        if value & 1:
            vp.eom()
        return HvStatus.SUCCESS
    if name in (R.SIMP, R.SIEFP):
        return _write_overlay(target, vp, name, value)
    if name == R.EOM:
        vp.eom()
        return HvStatus.SUCCESS
    sint = name - _SINT0
    if not value & SINT_MASKED and (value & SINT_VECTOR_MASK) < SINT_VECTOR_MIN:
        return HvStatus.INVALID_PARAMETER
    vp.set_sint(sint, value & ((1 << 21) - 1))
    return HvStatus.SUCCESS


def _write_overlay(target: Partition, vp: Vp, name: int, value: int) -> HvStatus:
    value &= _OVERLAY_KEEP
    old = vp.simp if name == R.SIMP else vp.siefp
    if value & 1:
        page = value & _PAGE_MASK
        if not target.memory.is_mapped(page, 4096):
            return HvStatus.INVALID_PARAMETER
        if not old & 1 or (old & _PAGE_MASK) != page:
            target.memory.zero(page, 4096)
    if name == R.SIMP:
        vp.simp = value
        if value & 1:
            vp.eom()
    else:
        vp.siefp = value
    return HvStatus.SUCCESS
