"""Hypercall control and result words against fact sheet §1.2/§1.3: layout constants, words
computed by hand, field-width checks and Hypothesis round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from winhv.abi import (
    CONTROL_CODE_MASK,
    CONTROL_FAST,
    CONTROL_NESTED,
    CONTROL_REP_COUNT_MASK,
    CONTROL_REP_COUNT_SHIFT,
    CONTROL_REP_START_MASK,
    CONTROL_REP_START_SHIFT,
    CONTROL_RESERVED_MASK,
    CONTROL_VARHEAD_MASK,
    CONTROL_VARHEAD_SHIFT,
    RESULT_DEFINED_MASK,
    RESULT_REPS_MASK,
    RESULT_REPS_SHIFT,
    RESULT_RESERVED_MASK,
    RESULT_STATUS_MASK,
    HvStatus,
    HypercallControl,
    HypercallResult,
)

U64 = (1 << 64) - 1


def bits(high: int, low: int) -> int:
    """Mask of bits high..low inclusive, as the sheet's tables write them."""
    return ((1 << (high - low + 1)) - 1) << low


def test_control_layout_matches_sheet_1_2() -> None:
    assert bits(15, 0) == CONTROL_CODE_MASK
    assert bits(16, 16) == CONTROL_FAST
    assert CONTROL_VARHEAD_SHIFT == 17
    assert bits(26, 17) == CONTROL_VARHEAD_MASK
    assert bits(31, 31) == CONTROL_NESTED
    assert CONTROL_REP_COUNT_SHIFT == 32
    assert bits(43, 32) == CONTROL_REP_COUNT_MASK
    assert CONTROL_REP_START_SHIFT == 48
    assert bits(59, 48) == CONTROL_REP_START_MASK
    assert bits(30, 27) | bits(47, 44) | bits(63, 60) == CONTROL_RESERVED_MASK


def test_control_fields_tile_all_64_bits_without_overlap() -> None:
    fields = [
        CONTROL_CODE_MASK,
        CONTROL_FAST,
        CONTROL_VARHEAD_MASK,
        CONTROL_NESTED,
        CONTROL_REP_COUNT_MASK,
        CONTROL_REP_START_MASK,
        CONTROL_RESERVED_MASK,
    ]
    assert sum(fields) == U64
    for i, a in enumerate(fields):
        for b in fields[i + 1 :]:
            assert not a & b


def test_result_layout_matches_sheet_1_3() -> None:
    assert bits(15, 0) == RESULT_STATUS_MASK
    assert RESULT_REPS_SHIFT == 32
    assert bits(43, 32) == RESULT_REPS_MASK
    assert bits(31, 16) | bits(63, 44) == RESULT_RESERVED_MASK
    assert RESULT_DEFINED_MASK | RESULT_RESERVED_MASK == U64


def test_linux_fast_signal_event_control_word() -> None:
    # Linux: hv_do_fast_hypercall8(HVCALL_SIGNAL_EVENT, ...) -> 0x5D | HV_HYPERCALL_FAST_BIT.
    assert HypercallControl(code=0x5D, fast=True).encode() == 0x5D | 1 << 16 == 0x1005D


def test_hand_computed_control_words() -> None:
    assert HypercallControl(code=0x5C).encode() == 0x5C
    # GetVpRegisters for 3 registers: rep count 3 at bit 32.
    assert HypercallControl(code=0x50, rep_count=3).encode() == 0x0000_0003_0000_0050
    # Resumed rep call: rep start 2 at bit 48.
    word = HypercallControl(code=0x48, rep_count=5, rep_start=2).encode()
    assert word == 0x0002_0005_0000_0048
    # FlushVirtualAddressSpaceEx with a 2-QWORD variable header.
    assert HypercallControl(code=0x13, variable_header_qwords=2).encode() == 0x13 | 2 << 17
    assert HypercallControl(code=0x02, nested=True).encode() == 0x8000_0002


def test_decode_splits_every_field() -> None:
    control = HypercallControl.decode(0x0002_0005_8005_0050 | 1 << 16)
    assert control == HypercallControl(
        code=0x50,
        fast=True,
        variable_header_qwords=2,
        nested=True,
        rep_count=5,
        rep_start=2,
    )
    assert control.is_rep


def test_decode_keeps_reserved_bits() -> None:
    control = HypercallControl.decode(0x5C | 1 << 27 | 1 << 44 | 1 << 63)
    assert control.code == 0x5C
    assert control.reserved == 1 << 27 | 1 << 44 | 1 << 63
    assert control.encode() == 0x5C | 1 << 27 | 1 << 44 | 1 << 63


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"code": 0x10000}, "control code: found 65536"),
        ({"code": -1}, "control code"),
        ({"code": 1, "variable_header_qwords": 1024}, "control variable_header_qwords"),
        ({"code": 1, "rep_count": 4096}, "control rep_count"),
        ({"code": 1, "rep_start": 4096}, "control rep_start"),
        ({"code": 1, "reserved": 1 << 16}, "control reserved: found 0x10000"),
    ],
)
def test_encode_rejects_fields_wider_than_their_bits(fields: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HypercallControl(**fields).encode()  # type: ignore[arg-type]


@pytest.mark.parametrize("word", [-1, 1 << 64])
def test_decode_rejects_non_u64(word: int) -> None:
    with pytest.raises(ValueError, match="control value"):
        HypercallControl.decode(word)
    with pytest.raises(ValueError, match="result value"):
        HypercallResult.decode(word)


@given(st.integers(min_value=0, max_value=U64))
def test_control_decode_encode_is_identity_on_every_word(word: int) -> None:
    assert HypercallControl.decode(word).encode() == word


controls = st.builds(
    HypercallControl,
    code=st.integers(0, 0xFFFF),
    fast=st.booleans(),
    variable_header_qwords=st.integers(0, 0x3FF),
    nested=st.booleans(),
    rep_count=st.integers(0, 0xFFF),
    rep_start=st.integers(0, 0xFFF),
    reserved=st.sampled_from([0, 1 << 27, 0xF << 44, 1 << 63, CONTROL_RESERVED_MASK]),
)


@given(controls)
def test_control_encode_decode_is_identity_on_every_value(control: HypercallControl) -> None:
    assert HypercallControl.decode(control.encode()) == control


def test_hand_computed_result_words() -> None:
    assert HypercallResult(HvStatus.SUCCESS).encode() == 0
    assert HypercallResult(HvStatus.ACCESS_DENIED).encode() == 6
    # Element error after 3 good elements.
    word = HypercallResult(HvStatus.INVALID_PARAMETER, reps_completed=3).encode()
    assert word == 0x0000_0003_0000_0005


def test_result_decode_ignores_reserved_bits_and_keeps_unknown_status() -> None:
    result = HypercallResult.decode(0xFFFF_F00A_FFFF_0013)
    assert result == HypercallResult(HvStatus.INSUFFICIENT_BUFFERS, reps_completed=0x00A)
    assert result.status is HvStatus.INSUFFICIENT_BUFFERS
    unknown = HypercallResult.decode(0x0001)
    assert unknown.status == 1
    assert not isinstance(unknown.status, HvStatus)
    assert not unknown.succeeded
    assert HypercallResult.decode(0).succeeded


@pytest.mark.parametrize(
    ("status", "reps", "message"),
    [(0x10000, 0, "result status"), (0, 0x1000, "result reps_completed"), (0, -1, "reps")],
)
def test_result_encode_rejects_wide_fields(status: int, reps: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HypercallResult(status, reps).encode()


@given(st.integers(min_value=0, max_value=U64))
def test_result_decode_encode_keeps_the_defined_bits(word: int) -> None:
    assert HypercallResult.decode(word).encode() == word & RESULT_DEFINED_MASK


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFF))
def test_result_encode_decode_is_identity(status: int, reps: int) -> None:
    result = HypercallResult(status, reps)
    assert HypercallResult.decode(result.encode()) == result
