"""Partition property codes for HvCallGet/SetPartitionProperty (fact sheet §1.7).

A property code is a u32 whose high 16 bits name a group (1 = privileges and features,
2 = scheduling, 3 = time, 4 = debugging, 5 = resources, 6 = processor compatibility,
7 = guest OS, 9 = VMM) and whose low 16 bits number the property inside it. The enum holds the
codes the fact sheet selects from OVMM-hvdef and L-hdk; an unknown code is answered with
``HV_STATUS_UNKNOWN_PROPERTY``.
"""

from __future__ import annotations

import enum

__all__ = ["PartitionProperty", "property_group"]


class PartitionProperty(enum.IntEnum):
    """HV_PARTITION_PROPERTY_CODE values of §1.7."""

    PRIVILEGE_FLAGS = 0x00010000
    SYNTHETIC_PROC_FEATURES = 0x00010001
    SUSPEND = 0x00020000
    CPU_RESERVE = 0x00020001
    CPU_CAP = 0x00020002
    CPU_WEIGHT = 0x00020003
    TIME_FREEZE = 0x00030003
    APIC_FREQUENCY = 0x00030004
    REFERENCE_TIME = 0x00030005
    DEBUG_CHANNEL_ID = 0x00040000
    VIRTUAL_TLB_PAGE_COUNT = 0x00050000
    VSM_CONFIG = 0x00050001
    ZERO_MEMORY_ON_RESET = 0x00050002
    PROCESSORS_PER_SOCKET = 0x00050003
    NESTED_TLB_SIZE = 0x00050004
    GPA_PAGE_ACCESS_TRACKING = 0x00050005
    UNIMPLEMENTED_MSR_ACTION = 0x00050017
    PROCESSOR_VENDOR = 0x00060000
    PROCESSOR_FEATURES_DEPRECATED = 0x00060001
    PROCESSOR_XSAVE_FEATURES = 0x00060002
    PROCESSOR_CL_FLUSH_SIZE = 0x00060003
    PROCESSOR_CLOCK_FREQUENCY = 0x00060009
    GUEST_OS_ID = 0x00070000
    VMM_CAPABILITIES = 0x00090007


def property_group(code: int) -> int:
    """The group number of a property code: its bits 31:16."""
    return (int(code) >> 16) & 0xFFFF
