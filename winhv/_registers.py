"""Synthetic MSRs, their register names, and their bit layouts (fact sheet §2.1, §2.2, §2.7).

A guest reaches the hypervisor's per-VP state two ways: with RDMSR/WRMSR on the synthetic MSRs
(:class:`SyntheticMsr`), or with HvCallGet/SetVpRegisters using register names
(:class:`HvRegisterName`). One table, ``_EQUIVALENTS``, pairs the two; :func:`msr_for_register`
and :func:`register_for_msr` are derived from it. MSRs whose register name the sheet and
sources do not give (RESET, TSC_FREQUENCY, ...) are simply absent from it.

Each VP has its own SynIC registers; HYPERCALL and GUEST_OS_ID are partition-wide (§2.1).
"""

from __future__ import annotations

import enum
import types
from collections.abc import Mapping

__all__ = [
    "CRASH_CTL_NOTIFY",
    "CRASH_CTL_NOTIFY_MSG",
    "FIRST_UNUSED_SINT",
    "HV_STIMER_COUNT",
    "HV_SYNIC_VERSION",
    "HYPERCALL_ENABLE",
    "HYPERCALL_LOCKED",
    "INTERCEPT_SINT",
    "IOMMU_FAULT_SINT",
    "NESTED_MSR_OFFSET",
    "OVERLAY_ENABLE",
    "PAGE_MASK",
    "PAGE_SHIFT",
    "PAGE_SIZE",
    "SCONTROL_ENABLE",
    "SIEFP_ENABLE",
    "SIMP_ENABLE",
    "SINT_AS_INTERCEPT",
    "SINT_AUTO_EOI",
    "SINT_MASKED",
    "SINT_POLLING",
    "SINT_PROXY",
    "SINT_RESET_VALUE",
    "SINT_VECTOR_MASK",
    "SINT_VECTOR_MIN",
    "STIMER_AUTO_ENABLE",
    "STIMER_DIRECT_MODE",
    "STIMER_ENABLE",
    "STIMER_LAZY",
    "STIMER_PERIODIC",
    "STIMER_SINT_MASK",
    "STIMER_SINT_SHIFT",
    "STIMER_VECTOR_MASK",
    "STIMER_VECTOR_SHIFT",
    "VMBUS_MESSAGE_SINT",
    "HvRegisterName",
    "SyntheticMsr",
    "msr_for_register",
    "overlay_page_number",
    "register_for_msr",
]

# --- pages (§1.1) ---
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
#: Bits 63:12 of an overlay register (HYPERCALL, SIMP, SIEFP, VP_ASSIST_PAGE, REFERENCE_TSC).
PAGE_MASK = ((1 << 64) - 1) & ~(PAGE_SIZE - 1)

# --- counts (§2.1) ---
HV_STIMER_COUNT = 4
#: Nested SynIC MSRs sit at the plain MSR + 0x1000 (§2.1).
NESTED_MSR_OFFSET = 0x1000

# --- bit layouts (§2.2) ---
#: Bit 0 of every overlay register (HYPERCALL, SIMP, SIEFP, VP_ASSIST_PAGE, REFERENCE_TSC).
OVERLAY_ENABLE = 1 << 0
HYPERCALL_ENABLE = 1 << 0
#: Stays set until system reset.
HYPERCALL_LOCKED = 1 << 1
SCONTROL_ENABLE = 1 << 0
SIMP_ENABLE = 1 << 0
SIEFP_ENABLE = 1 << 0
#: What SVERSION reads (``HV_SYNIC_VERSION_1``); writes raise #GP.
HV_SYNIC_VERSION = 1
SINT_VECTOR_MASK = 0xFF
#: Lowest valid SINT vector; 0..15 raise #GP.
SINT_VECTOR_MIN = 16
SINT_MASKED = 1 << 16
SINT_AUTO_EOI = 1 << 17
SINT_POLLING = 1 << 18
SINT_AS_INTERCEPT = 1 << 19  #: L-gdk
SINT_PROXY = 1 << 20  #: L-gdk
#: SINTx after reset: masked, vector 0.
SINT_RESET_VALUE = 0x0000_0000_0001_0000
STIMER_ENABLE = 1 << 0
STIMER_PERIODIC = 1 << 1
STIMER_LAZY = 1 << 2
STIMER_AUTO_ENABLE = 1 << 3
STIMER_VECTOR_SHIFT = 4
#: Bits 11:4, the APIC vector used in direct mode (in place).
STIMER_VECTOR_MASK = 0xFF << STIMER_VECTOR_SHIFT
STIMER_DIRECT_MODE = 1 << 12
STIMER_SINT_SHIFT = 16
#: Bits 19:16, the SINT a message-mode timer posts to (in place).
STIMER_SINT_MASK = 0xF << STIMER_SINT_SHIFT
CRASH_CTL_NOTIFY = 1 << 63
CRASH_CTL_NOTIFY_MSG = 1 << 62

# --- statically assigned SINTs (§2.7; L-gdk) ---
INTERCEPT_SINT = 0
IOMMU_FAULT_SINT = 1
VMBUS_MESSAGE_SINT = 2
FIRST_UNUSED_SINT = 5


class SyntheticMsr(enum.IntEnum):
    """x64 synthetic MSR numbers of §2.1 (TLFS, L-gdk, OVMM-hvdef)."""

    GUEST_OS_ID = 0x4000_0000
    HYPERCALL = 0x4000_0001
    VP_INDEX = 0x4000_0002
    RESET = 0x4000_0003
    VP_RUNTIME = 0x4000_0010
    TIME_REF_COUNT = 0x4000_0020
    REFERENCE_TSC = 0x4000_0021
    TSC_FREQUENCY = 0x4000_0022
    APIC_FREQUENCY = 0x4000_0023
    EOI = 0x4000_0070
    ICR = 0x4000_0071
    TPR = 0x4000_0072
    VP_ASSIST_PAGE = 0x4000_0073
    SCONTROL = 0x4000_0080
    SVERSION = 0x4000_0081
    SIEFP = 0x4000_0082
    SIMP = 0x4000_0083
    EOM = 0x4000_0084
    SIRBP = 0x4000_0085
    SINT0 = 0x4000_0090
    SINT1 = 0x4000_0091
    SINT2 = 0x4000_0092
    SINT3 = 0x4000_0093
    SINT4 = 0x4000_0094
    SINT5 = 0x4000_0095
    SINT6 = 0x4000_0096
    SINT7 = 0x4000_0097
    SINT8 = 0x4000_0098
    SINT9 = 0x4000_0099
    SINT10 = 0x4000_009A
    SINT11 = 0x4000_009B
    SINT12 = 0x4000_009C
    SINT13 = 0x4000_009D
    SINT14 = 0x4000_009E
    SINT15 = 0x4000_009F
    STIMER0_CONFIG = 0x4000_00B0
    STIMER0_COUNT = 0x4000_00B1
    STIMER1_CONFIG = 0x4000_00B2
    STIMER1_COUNT = 0x4000_00B3
    STIMER2_CONFIG = 0x4000_00B4
    STIMER2_COUNT = 0x4000_00B5
    STIMER3_CONFIG = 0x4000_00B6
    STIMER3_COUNT = 0x4000_00B7
    GUEST_IDLE = 0x4000_00F0
    CRASH_P0 = 0x4000_0100
    CRASH_P1 = 0x4000_0101
    CRASH_P2 = 0x4000_0102
    CRASH_P3 = 0x4000_0103
    CRASH_P4 = 0x4000_0104
    CRASH_CTL = 0x4000_0105
    REENLIGHTENMENT_CONTROL = 0x4000_0106
    TSC_EMULATION_CONTROL = 0x4000_0107
    TSC_EMULATION_STATUS = 0x4000_0108
    # Nested copies of the SynIC MSRs (plain MSR + NESTED_MSR_OFFSET; L-gdk).
    NESTED_SCONTROL = 0x4000_1080
    NESTED_SVERSION = 0x4000_1081
    NESTED_SIEFP = 0x4000_1082
    NESTED_SIMP = 0x4000_1083
    NESTED_EOM = 0x4000_1084
    NESTED_SINT0 = 0x4000_1090
    NESTED_SINT1 = 0x4000_1091
    NESTED_SINT2 = 0x4000_1092
    NESTED_SINT3 = 0x4000_1093
    NESTED_SINT4 = 0x4000_1094
    NESTED_SINT5 = 0x4000_1095
    NESTED_SINT6 = 0x4000_1096
    NESTED_SINT7 = 0x4000_1097
    NESTED_SINT8 = 0x4000_1098
    NESTED_SINT9 = 0x4000_1099
    NESTED_SINT10 = 0x4000_109A
    NESTED_SINT11 = 0x4000_109B
    NESTED_SINT12 = 0x4000_109C
    NESTED_SINT13 = 0x4000_109D
    NESTED_SINT14 = 0x4000_109E
    NESTED_SINT15 = 0x4000_109F


class HvRegisterName(enum.IntEnum):
    """HV_REGISTER_NAME values for the synthetic registers (§2.1).

    Sources beyond the sheet: HYPERCALL = 0x00090001 and SYNTHETIC_EOI/ICR/TPR =
    0x00090010..12 are from Linux ``include/hyperv/hvgdk_mini.h`` (``HV_X64_REGISTER_HYPERCALL``,
    ``HV_X64_REGISTER_SYNTHETIC_*``); STIMER1..3 follow the 0x000B0000 + 2t / + 2t + 1 pattern
    of OVMM-hvdef ``HvAllArchRegisterName`` (Stimer1Config = 0x000B0002 ... Stimer3Count =
    0x000B0007).
    """

    GUEST_CRASH_P0 = 0x0000_0210
    GUEST_CRASH_P1 = 0x0000_0211
    GUEST_CRASH_P2 = 0x0000_0212
    GUEST_CRASH_P3 = 0x0000_0213
    GUEST_CRASH_P4 = 0x0000_0214
    GUEST_CRASH_CTL = 0x0000_0215
    VP_RUNTIME = 0x0009_0000
    HYPERCALL = 0x0009_0001
    GUEST_OS_ID = 0x0009_0002
    VP_INDEX = 0x0009_0003
    TIME_REF_COUNT = 0x0009_0004
    SYNTHETIC_EOI = 0x0009_0010
    SYNTHETIC_ICR = 0x0009_0011
    SYNTHETIC_TPR = 0x0009_0012
    VP_ASSIST_PAGE = 0x0009_0013
    REFERENCE_TSC = 0x0009_0017
    SINT0 = 0x000A_0000
    SINT1 = 0x000A_0001
    SINT2 = 0x000A_0002
    SINT3 = 0x000A_0003
    SINT4 = 0x000A_0004
    SINT5 = 0x000A_0005
    SINT6 = 0x000A_0006
    SINT7 = 0x000A_0007
    SINT8 = 0x000A_0008
    SINT9 = 0x000A_0009
    SINT10 = 0x000A_000A
    SINT11 = 0x000A_000B
    SINT12 = 0x000A_000C
    SINT13 = 0x000A_000D
    SINT14 = 0x000A_000E
    SINT15 = 0x000A_000F
    SCONTROL = 0x000A_0010
    SVERSION = 0x000A_0011
    SIEFP = 0x000A_0012
    SIMP = 0x000A_0013
    EOM = 0x000A_0014
    SIRBP = 0x000A_0015
    STIMER0_CONFIG = 0x000B_0000
    STIMER0_COUNT = 0x000B_0001
    STIMER1_CONFIG = 0x000B_0002
    STIMER1_COUNT = 0x000B_0003
    STIMER2_CONFIG = 0x000B_0004
    STIMER2_COUNT = 0x000B_0005
    STIMER3_CONFIG = 0x000B_0006
    STIMER3_COUNT = 0x000B_0007


_M, _N = SyntheticMsr, HvRegisterName

# The one MSR <-> register-name table.
_EQUIVALENTS: tuple[tuple[SyntheticMsr, HvRegisterName], ...] = (
    (_M.GUEST_OS_ID, _N.GUEST_OS_ID),
    (_M.HYPERCALL, _N.HYPERCALL),
    (_M.VP_INDEX, _N.VP_INDEX),
    (_M.VP_RUNTIME, _N.VP_RUNTIME),
    (_M.TIME_REF_COUNT, _N.TIME_REF_COUNT),
    (_M.REFERENCE_TSC, _N.REFERENCE_TSC),
    (_M.EOI, _N.SYNTHETIC_EOI),
    (_M.ICR, _N.SYNTHETIC_ICR),
    (_M.TPR, _N.SYNTHETIC_TPR),
    (_M.VP_ASSIST_PAGE, _N.VP_ASSIST_PAGE),
    (_M.SCONTROL, _N.SCONTROL),
    (_M.SVERSION, _N.SVERSION),
    (_M.SIEFP, _N.SIEFP),
    (_M.SIMP, _N.SIMP),
    (_M.EOM, _N.EOM),
    (_M.SIRBP, _N.SIRBP),
    *((_M[f"SINT{n}"], _N[f"SINT{n}"]) for n in range(16)),
    *(
        (_M[f"STIMER{t}_{kind}"], _N[f"STIMER{t}_{kind}"])
        for t in range(HV_STIMER_COUNT)
        for kind in ("CONFIG", "COUNT")
    ),
    *((_M[f"CRASH_P{n}"], _N[f"GUEST_CRASH_P{n}"]) for n in range(5)),
    (_M.CRASH_CTL, _N.GUEST_CRASH_CTL),
)

_MSR_TO_REGISTER: Mapping[int, HvRegisterName] = types.MappingProxyType(
    {int(msr): name for msr, name in _EQUIVALENTS}
)
_REGISTER_TO_MSR: Mapping[int, SyntheticMsr] = types.MappingProxyType(
    {int(name): msr for msr, name in _EQUIVALENTS}
)


def register_for_msr(msr: int) -> int | None:
    """The :class:`HvRegisterName` for a synthetic MSR, or ``None`` when it has none."""
    return _MSR_TO_REGISTER.get(msr)


def msr_for_register(name: int) -> int | None:
    """The :class:`SyntheticMsr` for a register name, or ``None`` when it has no MSR."""
    return _REGISTER_TO_MSR.get(name)


def overlay_page_number(value: int) -> int:
    """The GPA page number (bits 63:12) held by an overlay register value."""
    return (value & PAGE_MASK) >> PAGE_SHIFT
