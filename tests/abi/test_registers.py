"""Synthetic MSRs, register names and bit layouts against fact sheet §2.1/§2.2/§2.7."""

from __future__ import annotations

import pytest

from winhv.abi import (
    CRASH_CTL_NOTIFY,
    CRASH_CTL_NOTIFY_MSG,
    HV_STIMER_COUNT,
    HV_SYNIC_VERSION,
    HYPERCALL_ENABLE,
    HYPERCALL_LOCKED,
    NESTED_MSR_OFFSET,
    PAGE_MASK,
    PAGE_SHIFT,
    PAGE_SIZE,
    SCONTROL_ENABLE,
    SIEFP_ENABLE,
    SIMP_ENABLE,
    SINT_AS_INTERCEPT,
    SINT_AUTO_EOI,
    SINT_MASKED,
    SINT_POLLING,
    SINT_PROXY,
    SINT_RESET_VALUE,
    SINT_VECTOR_MASK,
    SINT_VECTOR_MIN,
    STIMER_AUTO_ENABLE,
    STIMER_DIRECT_MODE,
    STIMER_ENABLE,
    STIMER_LAZY,
    STIMER_PERIODIC,
    STIMER_SINT_MASK,
    STIMER_VECTOR_MASK,
    VMBUS_MESSAGE_SINT,
    HvRegisterName,
    SyntheticMsr,
    msr_for_register,
    overlay_page_number,
    register_for_msr,
)

# §2.1 by hand: MSR -> name (SINTn and STIMERt expanded; nested copies from L-gdk).
SHEET_MSRS = {
    0x4000_0000: "GUEST_OS_ID",
    0x4000_0001: "HYPERCALL",
    0x4000_0002: "VP_INDEX",
    0x4000_0003: "RESET",
    0x4000_0010: "VP_RUNTIME",
    0x4000_0020: "TIME_REF_COUNT",
    0x4000_0021: "REFERENCE_TSC",
    0x4000_0022: "TSC_FREQUENCY",
    0x4000_0023: "APIC_FREQUENCY",
    0x4000_0070: "EOI",
    0x4000_0071: "ICR",
    0x4000_0072: "TPR",
    0x4000_0073: "VP_ASSIST_PAGE",
    0x4000_0080: "SCONTROL",
    0x4000_0081: "SVERSION",
    0x4000_0082: "SIEFP",
    0x4000_0083: "SIMP",
    0x4000_0084: "EOM",
    0x4000_0085: "SIRBP",
    **{0x4000_0090 + n: f"SINT{n}" for n in range(16)},
    0x4000_00B0: "STIMER0_CONFIG",
    0x4000_00B1: "STIMER0_COUNT",
    0x4000_00B2: "STIMER1_CONFIG",
    0x4000_00B3: "STIMER1_COUNT",
    0x4000_00B4: "STIMER2_CONFIG",
    0x4000_00B5: "STIMER2_COUNT",
    0x4000_00B6: "STIMER3_CONFIG",
    0x4000_00B7: "STIMER3_COUNT",
    0x4000_00F0: "GUEST_IDLE",
    0x4000_0100: "CRASH_P0",
    0x4000_0101: "CRASH_P1",
    0x4000_0102: "CRASH_P2",
    0x4000_0103: "CRASH_P3",
    0x4000_0104: "CRASH_P4",
    0x4000_0105: "CRASH_CTL",
    0x4000_0106: "REENLIGHTENMENT_CONTROL",
    0x4000_0107: "TSC_EMULATION_CONTROL",
    0x4000_0108: "TSC_EMULATION_STATUS",
    0x4000_1080: "NESTED_SCONTROL",
    0x4000_1081: "NESTED_SVERSION",
    0x4000_1082: "NESTED_SIEFP",
    0x4000_1083: "NESTED_SIMP",
    0x4000_1084: "NESTED_EOM",
    **{0x4000_1090 + n: f"NESTED_SINT{n}" for n in range(16)},
}

# §2.1 register-name column, plus HYPERCALL and SYNTHETIC_EOI/ICR/TPR (Linux hvgdk_mini.h)
# and STIMER1..3 (OVMM-hvdef).
SHEET_REGISTERS = {
    0x0000_0210: "GUEST_CRASH_P0",
    0x0000_0211: "GUEST_CRASH_P1",
    0x0000_0212: "GUEST_CRASH_P2",
    0x0000_0213: "GUEST_CRASH_P3",
    0x0000_0214: "GUEST_CRASH_P4",
    0x0000_0215: "GUEST_CRASH_CTL",
    0x0009_0000: "VP_RUNTIME",
    0x0009_0001: "HYPERCALL",
    0x0009_0002: "GUEST_OS_ID",
    0x0009_0003: "VP_INDEX",
    0x0009_0004: "TIME_REF_COUNT",
    0x0009_0010: "SYNTHETIC_EOI",
    0x0009_0011: "SYNTHETIC_ICR",
    0x0009_0012: "SYNTHETIC_TPR",
    0x0009_0013: "VP_ASSIST_PAGE",
    0x0009_0017: "REFERENCE_TSC",
    **{0x000A_0000 + n: f"SINT{n}" for n in range(16)},
    0x000A_0010: "SCONTROL",
    0x000A_0011: "SVERSION",
    0x000A_0012: "SIEFP",
    0x000A_0013: "SIMP",
    0x000A_0014: "EOM",
    0x000A_0015: "SIRBP",
    0x000B_0000: "STIMER0_CONFIG",
    0x000B_0001: "STIMER0_COUNT",
    0x000B_0002: "STIMER1_CONFIG",
    0x000B_0003: "STIMER1_COUNT",
    0x000B_0004: "STIMER2_CONFIG",
    0x000B_0005: "STIMER2_COUNT",
    0x000B_0006: "STIMER3_CONFIG",
    0x000B_0007: "STIMER3_COUNT",
}

# MSR -> register name pairs the sheet gives (the "—" rows are absent).
SHEET_EQUIVALENTS = {
    0x4000_0000: 0x0009_0002,
    0x4000_0001: 0x0009_0001,
    0x4000_0002: 0x0009_0003,
    0x4000_0010: 0x0009_0000,
    0x4000_0020: 0x0009_0004,
    0x4000_0021: 0x0009_0017,
    0x4000_0070: 0x0009_0010,
    0x4000_0071: 0x0009_0011,
    0x4000_0072: 0x0009_0012,
    0x4000_0073: 0x0009_0013,
    0x4000_0080: 0x000A_0010,
    0x4000_0081: 0x000A_0011,
    0x4000_0082: 0x000A_0012,
    0x4000_0083: 0x000A_0013,
    0x4000_0084: 0x000A_0014,
    0x4000_0085: 0x000A_0015,
    **{0x4000_0090 + n: 0x000A_0000 + n for n in range(16)},
    **{0x4000_00B0 + i: 0x000B_0000 + i for i in range(8)},
    **{0x4000_0100 + n: 0x0000_0210 + n for n in range(6)},
}


def test_msr_enum_matches_sheet() -> None:
    assert {m.value: m.name for m in SyntheticMsr} == SHEET_MSRS


def test_register_name_enum_matches_sheet() -> None:
    assert {r.value: r.name for r in HvRegisterName} == SHEET_REGISTERS


def test_named_register_values_from_the_brief() -> None:
    assert HvRegisterName.GUEST_OS_ID == 0x0009_0002
    assert HvRegisterName.VP_INDEX == 0x0009_0003
    assert HvRegisterName.TIME_REF_COUNT == 0x0009_0004
    assert HvRegisterName.SINT0 == 0x000A_0000
    assert HvRegisterName.SINT15 == 0x000A_000F
    assert HvRegisterName.SCONTROL == 0x000A_0010
    assert HvRegisterName.EOM == 0x000A_0014
    assert HvRegisterName.HYPERCALL == 0x0009_0001


def test_equivalence_table_matches_sheet_both_ways() -> None:
    for msr in SyntheticMsr:
        assert register_for_msr(msr) == SHEET_EQUIVALENTS.get(msr.value), msr.name
    reverse = {name: msr for msr, name in SHEET_EQUIVALENTS.items()}
    for name in HvRegisterName:
        assert msr_for_register(name) == reverse.get(name.value), name.name


@pytest.mark.parametrize("msr", [SyntheticMsr.RESET, SyntheticMsr.TSC_FREQUENCY, 0x1234])
def test_msrs_without_a_register_name_map_to_none(msr: int) -> None:
    assert register_for_msr(msr) is None


def test_lookups_return_enum_members() -> None:
    assert register_for_msr(0x4000_0092) is HvRegisterName.SINT2
    assert msr_for_register(0x000A_0014) is SyntheticMsr.EOM


def test_nested_msrs_sit_at_base_plus_offset() -> None:
    for msr in SyntheticMsr:
        if msr.name.startswith("NESTED_"):
            plain = SyntheticMsr[msr.name.removeprefix("NESTED_")]
            assert msr == plain + NESTED_MSR_OFFSET


def test_bit_layouts_match_sheet_2_2() -> None:
    assert (HYPERCALL_ENABLE, HYPERCALL_LOCKED) == (1, 2)
    assert SCONTROL_ENABLE == SIMP_ENABLE == SIEFP_ENABLE == 1
    assert HV_SYNIC_VERSION == 1
    assert SINT_VECTOR_MASK == 0xFF
    assert SINT_VECTOR_MIN == 16
    assert SINT_MASKED == 1 << 16
    assert SINT_AUTO_EOI == 1 << 17
    assert SINT_POLLING == 1 << 18
    assert SINT_AS_INTERCEPT == 1 << 19
    assert SINT_PROXY == 1 << 20
    assert SINT_RESET_VALUE == 0x10000 == SINT_MASKED
    assert (STIMER_ENABLE, STIMER_PERIODIC, STIMER_LAZY, STIMER_AUTO_ENABLE) == (1, 2, 4, 8)
    assert STIMER_VECTOR_MASK == 0xFF0
    assert STIMER_DIRECT_MODE == 1 << 12
    assert STIMER_SINT_MASK == 0xF0000
    assert CRASH_CTL_NOTIFY == 1 << 63
    assert CRASH_CTL_NOTIFY_MSG == 1 << 62
    assert HV_STIMER_COUNT == 4


def test_pages_and_static_sints() -> None:
    assert PAGE_SHIFT == 12
    assert PAGE_SIZE == 4096
    assert PAGE_MASK == 0xFFFF_FFFF_FFFF_F000
    assert VMBUS_MESSAGE_SINT == 2


def test_overlay_page_number_ignores_enable_and_reserved_bits() -> None:
    assert overlay_page_number(0x0000_0001_2345_6001) == 0x12345_6
    assert overlay_page_number(0xFFF) == 0
