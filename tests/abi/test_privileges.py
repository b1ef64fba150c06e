"""The partition privilege mask against fact sheet §1.6, and its CPUID split."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from winhv.abi import (
    DEFAULT_CHILD_PRIVILEGES,
    OVMM_ONLY_PRIVILEGES,
    ROOT_PRIVILEGES,
    Privilege,
    cpuid_privilege_words,
    privileges_from_cpuid,
)

# Fact sheet §1.6 by hand: bit -> name (upper snake; OVMM/Mile/WDK names for TLFS-reserved bits).
SHEET_1_6 = {
    0: "ACCESS_VP_RUNTIME_REG",
    1: "ACCESS_PARTITION_REFERENCE_COUNTER",
    2: "ACCESS_SYNIC_REGS",
    3: "ACCESS_SYNTHETIC_TIMER_REGS",
    4: "ACCESS_INTR_CTRL_REGS",
    5: "ACCESS_HYPERCALL_MSRS",
    6: "ACCESS_VP_INDEX",
    7: "ACCESS_RESET_REG",
    8: "ACCESS_STATS_REG",
    9: "ACCESS_PARTITION_REFERENCE_TSC",
    10: "ACCESS_GUEST_IDLE_REG",
    11: "ACCESS_FREQUENCY_REGS",
    12: "ACCESS_DEBUG_MSRS",
    13: "ACCESS_REENLIGHTENMENT_CONTROLS",
    14: "ACCESS_ROOT_SCHEDULER_MSR",
    15: "ACCESS_TSC_INVARIANT_CONTROLS",
    32: "CREATE_PARTITIONS",
    33: "ACCESS_PARTITION_ID",
    34: "ACCESS_MEMORY_POOL",
    35: "ADJUST_MESSAGE_BUFFERS",
    36: "POST_MESSAGES",
    37: "SIGNAL_EVENTS",
    38: "CREATE_PORT",
    39: "CONNECT_PORT",
    40: "ACCESS_STATS",
    43: "DEBUGGING",
    44: "CPU_MANAGEMENT",
    45: "CONFIGURE_PROFILER",
    46: "ACCESS_VP_EXIT_TRACING",
    47: "ENABLE_EXTENDED_GVA_RANGES_FOR_FLUSH_VIRTUAL_ADDRESS_LIST",
    48: "ACCESS_VSM",
    49: "ACCESS_VP_REGISTERS",
    51: "FAST_HYPERCALL_OUTPUT",
    52: "ENABLE_EXTENDED_HYPERCALLS",
    53: "START_VIRTUAL_PROCESSOR",
    54: "ISOLATION",
}
# Bits the TLFS calls reserved but other sources name (§8 item 3).
SHEET_OVMM_ONLY_BITS = {12, 14, 15, 35, 45, 46, 47, 51, 54}


def test_every_member_is_the_sheet_bit() -> None:
    assert {member.value.bit_length() - 1: member.name for member in Privilege} == SHEET_1_6
    assert all(member.value.bit_count() == 1 for member in Privilege)


def test_ovmm_only_bits_are_exactly_the_tlfs_reserved_named_bits() -> None:
    assert sum(1 << bit for bit in SHEET_OVMM_ONLY_BITS) == OVMM_ONLY_PRIVILEGES


def test_root_holds_every_defined_bit() -> None:
    assert sum(1 << bit for bit in SHEET_1_6) == ROOT_PRIVILEGES


def test_default_child_holds_guest_bits_only() -> None:
    expected = sum(1 << bit for bit in [*range(12), 13, 33, 36, 37, 49])
    assert expected == DEFAULT_CHILD_PRIVILEGES
    for denied in (
        Privilege.CREATE_PARTITIONS,
        Privilege.ACCESS_MEMORY_POOL,
        Privilege.CREATE_PORT,
        Privilege.CONNECT_PORT,
    ):
        assert not DEFAULT_CHILD_PRIVILEGES & denied


def test_cpuid_words_split_eax_low_ebx_high() -> None:
    assert cpuid_privilege_words(Privilege.POST_MESSAGES | Privilege.ACCESS_SYNIC_REGS) == (
        0b100,
        1 << 4,
    )
    assert cpuid_privilege_words(DEFAULT_CHILD_PRIVILEGES) == (0x2FFF, 0x0002_0032)


@pytest.mark.parametrize("mask", [-1, 1 << 64])
def test_cpuid_words_reject_values_outside_64_bits(mask: int) -> None:
    with pytest.raises(ValueError, match="privilege mask: found"):
        cpuid_privilege_words(mask)


def test_privileges_from_cpuid_rejects_wide_words() -> None:
    with pytest.raises(ValueError, match="cpuid ebx"):
        privileges_from_cpuid(0, 1 << 32)


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_cpuid_words_round_trip(mask: int) -> None:
    eax, ebx = cpuid_privilege_words(mask)
    assert 0 <= eax < 1 << 32
    assert 0 <= ebx < 1 << 32
    assert privileges_from_cpuid(eax, ebx) == mask
