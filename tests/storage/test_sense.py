"""Fixed-format sense data byte for byte (SPC-4 §4.5.3) and parsing both formats."""

from __future__ import annotations

import pytest

from winhv.vsp_vsc_pairs.storage import (
    FIXED_SENSE_SIZE,
    INVALID_COMMAND_OPERATION_CODE,
    INVALID_FIELD_IN_CDB,
    LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE,
    WRITE_PROTECTED,
    ScsiStatus,
    SenseData,
    SenseKey,
    parse_sense,
)


def test_fixed_format_bytes() -> None:
    raw = LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE.pack()
    assert len(raw) == FIXED_SENSE_SIZE == 18
    assert raw == bytes.fromhex("70 00 05 00000000 0a 00000000 21 00 00 000000")


@pytest.mark.parametrize(
    ("sense", "key", "asc", "ascq"),
    [
        (INVALID_COMMAND_OPERATION_CODE, 0x05, 0x20, 0x00),
        (LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE, 0x05, 0x21, 0x00),
        (INVALID_FIELD_IN_CDB, 0x05, 0x24, 0x00),
        (WRITE_PROTECTED, 0x07, 0x27, 0x00),
    ],
)
def test_named_conditions(sense: SenseData, key: int, asc: int, ascq: int) -> None:
    raw = sense.pack()
    assert (raw[0], raw[2], raw[7], raw[12], raw[13]) == (0x70, key, 10, asc, ascq)
    assert parse_sense(raw) == sense


def test_parse_descriptor_format() -> None:
    assert parse_sense(bytes((0x72, 0x07, 0x27, 0x00, 0, 0, 0, 0))) == WRITE_PROTECTED


@pytest.mark.parametrize("raw", [b"", b"\x70\x00", bytes(18), b"\x7f" + bytes(17)])
def test_parse_rejects_what_is_not_sense(raw: bytes) -> None:
    assert parse_sense(raw) is None


def test_short_fixed_format_reads_missing_bytes_as_zero() -> None:
    assert parse_sense(bytes((0xF0, 0, 0x03, 0, 0, 0, 0, 0))) == SenseData(3, 0, 0)


def test_names_and_text() -> None:
    assert WRITE_PROTECTED.name == "WRITE_PROTECTED"
    assert str(INVALID_FIELD_IN_CDB) == (
        "ILLEGAL_REQUEST INVALID_FIELD_IN_CDB (ASC 0x24, ASCQ 0x00)"
    )
    assert SenseData(0x0C, 1, 2).name == "0xc/0x01/0x02"
    assert SenseData.unpack(WRITE_PROTECTED.pack()) == WRITE_PROTECTED
    assert ScsiStatus.CHECK_CONDITION == 2
    assert SenseKey.DATA_PROTECT == 7
