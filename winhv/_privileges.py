"""The 64-bit partition privilege mask (fact sheet §1.6).

Every partition carries a privilege mask fixed when it is created. A hypercall whose privilege
bit the caller lacks fails with ``HV_STATUS_ACCESS_DENIED``; an MSR whose access bit is clear
raises #GP. The guest reads its own mask from CPUID leaf 0x40000003: EAX holds bits 31:0 and EBX
bits 63:32 (:func:`cpuid_privilege_words`).

Bits the TLFS calls "Reserved" but OpenVMM, Mile.HyperV or the WDK name (12, 14, 15, 35, 45,
46, 47, 51, 54; §8 item 3) are members too, each marked "OVMM-only" below, so that a mask
read from a real host decodes without leftovers.
"""

from __future__ import annotations

import enum

__all__ = [
    "DEFAULT_CHILD_PRIVILEGES",
    "OVMM_ONLY_PRIVILEGES",
    "PRIVILEGE_MASK_BITS",
    "ROOT_PRIVILEGES",
    "Privilege",
    "cpuid_privilege_words",
    "privileges_from_cpuid",
]

#: Width of the mask in bits.
PRIVILEGE_MASK_BITS = 64
_WORD = 0xFFFF_FFFF


class Privilege(enum.IntFlag):
    """One bit of HV_PARTITION_PRIVILEGE_MASK (§1.6; TLFS, OVMM-hvdef, L-gdk, Mile)."""

    # --- EAX: access to synthetic MSRs ---
    ACCESS_VP_RUNTIME_REG = 1 << 0  #: MSR 0x40000010
    ACCESS_PARTITION_REFERENCE_COUNTER = 1 << 1  #: MSR 0x40000020
    ACCESS_SYNIC_REGS = 1 << 2  #: SCONTROL..EOM, SINT0-15
    ACCESS_SYNTHETIC_TIMER_REGS = 1 << 3  #: STIMER0-3
    ACCESS_INTR_CTRL_REGS = 1 << 4  #: EOI/ICR/TPR and VP assist page
    ACCESS_HYPERCALL_MSRS = 1 << 5  #: GUEST_OS_ID, HYPERCALL
    ACCESS_VP_INDEX = 1 << 6
    ACCESS_RESET_REG = 1 << 7
    ACCESS_STATS_REG = 1 << 8
    ACCESS_PARTITION_REFERENCE_TSC = 1 << 9
    ACCESS_GUEST_IDLE_REG = 1 << 10
    ACCESS_FREQUENCY_REGS = 1 << 11
    ACCESS_DEBUG_MSRS = 1 << 12  #: OVMM-only (TLFS: reserved)
    ACCESS_REENLIGHTENMENT_CONTROLS = 1 << 13
    ACCESS_ROOT_SCHEDULER_MSR = 1 << 14  #: OVMM-only (TLFS: reserved)
    ACCESS_TSC_INVARIANT_CONTROLS = 1 << 15  #: OVMM-only (TLFS: reserved)
    # --- EBX: hypercalls and features ---
    CREATE_PARTITIONS = 1 << 32
    ACCESS_PARTITION_ID = 1 << 33  #: HvCallGetPartitionId
    ACCESS_MEMORY_POOL = 1 << 34  #: Deposit/Withdraw/GetMemoryBalance
    ADJUST_MESSAGE_BUFFERS = 1 << 35  #: OVMM-only (TLFS: reserved)
    POST_MESSAGES = 1 << 36  #: HvCallPostMessage
    SIGNAL_EVENTS = 1 << 37  #: HvCallSignalEvent
    CREATE_PORT = 1 << 38
    CONNECT_PORT = 1 << 39
    ACCESS_STATS = 1 << 40  #: Map/UnmapStatsPage
    DEBUGGING = 1 << 43
    CPU_MANAGEMENT = 1 << 44
    CONFIGURE_PROFILER = 1 << 45  #: OVMM-only (TLFS: reserved)
    ACCESS_VP_EXIT_TRACING = 1 << 46  #: OVMM-only (TLFS: reserved)
    #: OVMM-only (TLFS: reserved)
    ENABLE_EXTENDED_GVA_RANGES_FOR_FLUSH_VIRTUAL_ADDRESS_LIST = 1 << 47
    ACCESS_VSM = 1 << 48
    ACCESS_VP_REGISTERS = 1 << 49  #: Get/SetVpRegisters
    FAST_HYPERCALL_OUTPUT = 1 << 51  #: OVMM-only (TLFS: reserved)
    ENABLE_EXTENDED_HYPERCALLS = 1 << 52  #: call codes >= 0x8000
    START_VIRTUAL_PROCESSOR = 1 << 53  #: HvCallStartVirtualProcessor
    ISOLATION = 1 << 54  #: OVMM-only (TLFS: reserved; L-gdk HV_ISOLATION)


#: The bits the TLFS leaves reserved but OpenVMM/Mile/WDK name (§8 item 3).
OVMM_ONLY_PRIVILEGES = (
    Privilege.ACCESS_DEBUG_MSRS
    | Privilege.ACCESS_ROOT_SCHEDULER_MSR
    | Privilege.ACCESS_TSC_INVARIANT_CONTROLS
    | Privilege.ADJUST_MESSAGE_BUFFERS
    | Privilege.CONFIGURE_PROFILER
    | Privilege.ACCESS_VP_EXIT_TRACING
    | Privilege.ENABLE_EXTENDED_GVA_RANGES_FOR_FLUSH_VIRTUAL_ADDRESS_LIST
    | Privilege.FAST_HYPERCALL_OUTPUT
    | Privilege.ISOLATION
)

#: What the root partition holds: every defined bit.
ROOT_PRIVILEGES = Privilege(sum(member.value for member in Privilege))

#: What an ordinary child partition (a guest) holds: the synthetic-MSR access bits 0-11 and
#: 13, its own partition id, and the hypercalls a VMBus guest needs (PostMessage, SignalEvent,
#: Get/SetVpRegisters). It cannot create partitions, touch the memory pool or create ports.
DEFAULT_CHILD_PRIVILEGES = (
    Privilege.ACCESS_VP_RUNTIME_REG
    | Privilege.ACCESS_PARTITION_REFERENCE_COUNTER
    | Privilege.ACCESS_SYNIC_REGS
    | Privilege.ACCESS_SYNTHETIC_TIMER_REGS
    | Privilege.ACCESS_INTR_CTRL_REGS
    | Privilege.ACCESS_HYPERCALL_MSRS
    | Privilege.ACCESS_VP_INDEX
    | Privilege.ACCESS_RESET_REG
    | Privilege.ACCESS_STATS_REG
    | Privilege.ACCESS_PARTITION_REFERENCE_TSC
    | Privilege.ACCESS_GUEST_IDLE_REG
    | Privilege.ACCESS_FREQUENCY_REGS
    | Privilege.ACCESS_REENLIGHTENMENT_CONTROLS
    | Privilege.ACCESS_PARTITION_ID
    | Privilege.POST_MESSAGES
    | Privilege.SIGNAL_EVENTS
    | Privilege.ACCESS_VP_REGISTERS
)


def cpuid_privilege_words(mask: int) -> tuple[int, int]:
    """Split a privilege mask into CPUID 0x40000003 ``(eax, ebx)``: bits 31:0 and 63:32.

    Raises :class:`ValueError` when ``mask`` does not fit in 64 unsigned bits.
    """
    mask = int(mask)
    if not 0 <= mask < 1 << PRIVILEGE_MASK_BITS:
        raise ValueError(f"privilege mask: found {mask:#x}, expected an unsigned 64-bit value")
    return mask & _WORD, mask >> 32


def privileges_from_cpuid(eax: int, ebx: int) -> Privilege:
    """Join CPUID 0x40000003 EAX/EBX back into a mask (the inverse of
    :func:`cpuid_privilege_words`). Bits without a member are kept, not dropped."""
    for register, word in (("eax", eax), ("ebx", ebx)):
        if not 0 <= word <= _WORD:
            raise ValueError(f"cpuid {register}: found {word:#x}, expected a 32-bit value")
    return Privilege(eax | ebx << 32)
