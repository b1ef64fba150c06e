"""Which hypercalls this hypervisor implements (every other code of the ABI table answers
``HV_STATUS_INVALID_HYPERCALL_CODE``)."""

from __future__ import annotations

__all__ = ["IMPLEMENTED_HYPERCALLS"]

#: Call codes with a handler: partition management, memory, VPs and registers, ports,
#: messages and events (issue #2 scope).
IMPLEMENTED_HYPERCALLS: frozenset[int] = frozenset(
    {
        0x0040,  # HvCallCreatePartition
        0x0041,  # HvCallInitializePartition
        0x0042,  # HvCallFinalizePartition
        0x0043,  # HvCallDeletePartition
        0x0044,  # HvCallGetPartitionProperty
        0x0045,  # HvCallSetPartitionProperty
        0x0046,  # HvCallGetPartitionId
        0x0047,  # HvCallGetNextChildPartition
        0x0048,  # HvCallDepositMemory
        0x0049,  # HvCallWithdrawMemory
        0x004A,  # HvCallGetMemoryBalance
        0x004B,  # HvCallMapGpaPages
        0x004C,  # HvCallUnmapGpaPages
        0x004E,  # HvCallCreateVp
        0x004F,  # HvCallDeleteVp
        0x0050,  # HvCallGetVpRegisters
        0x0051,  # HvCallSetVpRegisters
        0x0058,  # HvCallDeletePort
        0x005B,  # HvCallDisconnectPort
        0x005C,  # HvCallPostMessage
        0x005D,  # HvCallSignalEvent
        0x0095,  # HvCallCreatePort
        0x0096,  # HvCallConnectPort
    }
)
