"""Partition property codes against fact sheet §1.7."""

from __future__ import annotations

from winhv.abi import PartitionProperty, property_group

# Fact sheet §1.7 "Selected partition property codes", by hand.
SHEET_PROPERTIES = {
    0x00010000: "PRIVILEGE_FLAGS",
    0x00010001: "SYNTHETIC_PROC_FEATURES",
    0x00020000: "SUSPEND",
    0x00020001: "CPU_RESERVE",
    0x00020002: "CPU_CAP",
    0x00020003: "CPU_WEIGHT",
    0x00030003: "TIME_FREEZE",
    0x00030004: "APIC_FREQUENCY",
    0x00030005: "REFERENCE_TIME",
    0x00040000: "DEBUG_CHANNEL_ID",
    0x00050000: "VIRTUAL_TLB_PAGE_COUNT",
    0x00050001: "VSM_CONFIG",
    0x00050002: "ZERO_MEMORY_ON_RESET",
    0x00050003: "PROCESSORS_PER_SOCKET",
    0x00050004: "NESTED_TLB_SIZE",
    0x00050005: "GPA_PAGE_ACCESS_TRACKING",
    0x00050017: "UNIMPLEMENTED_MSR_ACTION",
    0x00060000: "PROCESSOR_VENDOR",
    0x00060001: "PROCESSOR_FEATURES_DEPRECATED",
    0x00060002: "PROCESSOR_XSAVE_FEATURES",
    0x00060003: "PROCESSOR_CL_FLUSH_SIZE",
    0x00060009: "PROCESSOR_CLOCK_FREQUENCY",
    0x00070000: "GUEST_OS_ID",
    0x00090007: "VMM_CAPABILITIES",
}


def test_enum_holds_exactly_the_sheet_codes() -> None:
    assert {member.value: member.name for member in PartitionProperty} == SHEET_PROPERTIES


def test_property_group_is_the_high_half() -> None:
    assert property_group(PartitionProperty.PRIVILEGE_FLAGS) == 1
    assert property_group(PartitionProperty.VMM_CAPABILITIES) == 9
