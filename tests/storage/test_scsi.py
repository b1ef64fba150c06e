"""``ScsiDisk``: every supported command and every error path, with exact bytes."""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from winhv.vsp_vsc_pairs.storage import (
    COMMANDS,
    INVALID_COMMAND_OPERATION_CODE,
    INVALID_FIELD_IN_CDB,
    INVALID_FIELD_IN_PARAMETER_LIST,
    LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE,
    MAX_UNMAP_DESCRIPTORS,
    PARAMETER_LIST_LENGTH_ERROR,
    SAVING_PARAMETERS_NOT_SUPPORTED,
    SPACE_ALLOCATION_FAILED_WRITE_PROTECT,
    UNRECOVERED_READ_ERROR,
    WRITE_ERROR,
    WRITE_PROTECTED,
    DataBuffer,
    DataDirection,
    FileBackingStore,
    ScsiDisk,
    ScsiOp,
    ScsiResult,
    ScsiStatus,
    SenseData,
    SrbStatus,
)

MIB = 1 << 20
BLOCKS = 2048  # a 1 MiB disk of 512-byte blocks
DISK_ID = uuid.UUID("12345678-9abc-def0-1122-334455667788")


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return tmp_path / "disk.img"


@pytest.fixture
def disk(image: Path) -> Iterator[ScsiDisk]:
    with FileBackingStore(image, 1) as store:
        yield ScsiDisk(store, serial="SERIAL0001", disk_id=DISK_ID)


@pytest.fixture
def ro_disk(image: Path) -> Iterator[ScsiDisk]:
    image.write_bytes(bytes(range(256)) * (MIB // 256))
    with FileBackingStore(image, read_only=True) as store:
        yield ScsiDisk(store, serial="RO")


def run(disk: ScsiDisk, cdb: bytes, length: int = 0, out: bytes = b"") -> tuple[ScsiResult, bytes]:
    buffer = bytearray(out.ljust(length, b"\0")[:length])
    result = disk.execute(cdb, DataBuffer([buffer]))
    return result, bytes(buffer[: result.transferred])


def good(result: ScsiResult, transferred: int) -> None:
    assert result == ScsiResult(ScsiStatus.GOOD, SrbStatus.SUCCESS, None, transferred)


def failed(result: ScsiResult, sense: SenseData) -> None:
    srb = SrbStatus.INVALID_REQUEST if sense.key == 5 else SrbStatus.ERROR
    assert result == ScsiResult(ScsiStatus.CHECK_CONDITION, srb, sense, 0)
    assert result.sense_bytes == sense.pack()


def read10(lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBIBHB", 0x28, flags, lba, 0, blocks, 0)


def write10(lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBIBHB", 0x2A, flags, lba, 0, blocks, 0)


def read16(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBQIBB", 0x88, 0, lba, blocks, 0, 0)


def write16(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBQIBB", 0x8A, 0, lba, blocks, 0, 0)


# --- the command table -----------------------------------------------------------------------


def test_command_table_lengths_follow_the_opcode_group() -> None:
    group_length = {0: 6, 1: 10, 2: 10, 4: 16, 5: 12}
    for opcode, spec in COMMANDS.items():
        assert spec.opcode == opcode
        assert spec.cdb_length == group_length[opcode >> 5], spec.opcode.name
    assert {op.name for op in ScsiOp} == {spec.opcode.name for spec in COMMANDS.values()}
    assert COMMANDS[ScsiOp.READ_10].direction is DataDirection.READ
    assert COMMANDS[ScsiOp.WRITE_16].direction is DataDirection.WRITE
    assert COMMANDS[ScsiOp.TEST_UNIT_READY].direction is DataDirection.UNKNOWN


def test_unknown_opcodes_are_invalid_command_operation_code(disk: ScsiDisk) -> None:
    for opcode in range(256):
        if opcode in COMMANDS:
            continue
        result, _ = run(disk, bytes((opcode,)) + bytes(15), 512)
        failed(result, INVALID_COMMAND_OPERATION_CODE)
    assert INVALID_COMMAND_OPERATION_CODE.pack()[12:14] == b"\x20\x00"


@pytest.mark.parametrize("spec", list(COMMANDS.values()), ids=lambda s: s.opcode.name)
def test_a_cdb_shorter_than_its_opcode_is_invalid_field(disk: ScsiDisk, spec: object) -> None:
    length = spec.cdb_length  # type: ignore[attr-defined]
    opcode = spec.opcode  # type: ignore[attr-defined]
    result, _ = run(disk, bytes((opcode,)) + bytes(length - 2), 512)
    failed(result, INVALID_FIELD_IN_CDB)


@pytest.mark.parametrize("spec", list(COMMANDS.values()), ids=lambda s: s.opcode.name)
def test_naca_in_the_control_byte_is_invalid_field(disk: ScsiDisk, spec: object) -> None:
    length = spec.cdb_length  # type: ignore[attr-defined]
    cdb = bytearray(16)
    cdb[0] = spec.opcode  # type: ignore[attr-defined]
    cdb[length - 1] = 0x04
    result, _ = run(disk, bytes(cdb[:length]), 512)
    failed(result, INVALID_FIELD_IN_CDB)


def test_empty_cdb_is_invalid_field(disk: ScsiDisk) -> None:
    failed(run(disk, b"")[0], INVALID_FIELD_IN_CDB)


# --- TEST UNIT READY, REQUEST SENSE, REPORT LUNS ----------------------------------------------


def test_test_unit_ready(disk: ScsiDisk) -> None:
    good(run(disk, bytes(6))[0], 0)


def test_request_sense_reports_no_sense_in_fixed_format(disk: ScsiDisk) -> None:
    result, data = run(disk, bytes((0x03, 0, 0, 0, 252, 0)), 252)
    good(result, 18)
    assert data == bytes.fromhex("70 00 00 00000000 0a 00000000 00 00 00 000000")
    result, data = run(disk, bytes((0x03, 1, 0, 0, 8, 0)), 252)  # DESC=1, short allocation
    good(result, 8)
    assert data == bytes.fromhex("70 00 00 00000000 0a")


def test_report_luns(disk: ScsiDisk) -> None:
    cdb = bytes((0xA0, 0, 0, 0, 0, 0)) + struct.pack(">I", 64) + bytes(2)
    result, data = run(disk, cdb, 64)
    good(result, 16)
    assert data == bytes.fromhex("00000008 00000000 0000000000000000")


@pytest.mark.parametrize(
    "cdb",
    [
        bytes((0xA0, 0, 3, 0, 0, 0)) + struct.pack(">I", 64) + bytes(2),  # SELECT REPORT 3
        bytes((0xA0, 0, 0, 0, 0, 0)) + struct.pack(">I", 15) + bytes(2),  # allocation < 16
    ],
)
def test_report_luns_invalid_fields(disk: ScsiDisk, cdb: bytes) -> None:
    failed(run(disk, cdb, 64)[0], INVALID_FIELD_IN_CDB)


# --- INQUIRY ----------------------------------------------------------------------------------


def test_standard_inquiry(disk: ScsiDisk) -> None:
    result, data = run(disk, bytes((0x12, 0, 0, 0, 96, 0)), 96)
    good(result, 36)
    assert data == (
        bytes((0x00, 0x00, 0x06, 0x12, 31, 0x00, 0x00, 0x02))
        + b"Msft    "
        + b"Virtual Disk    "
        + b"1.0 "
    )


def test_inquiry_truncates_to_allocation_length_and_buffer(disk: ScsiDisk) -> None:
    result, data = run(disk, bytes((0x12, 0, 0, 0, 5, 0)), 96)
    good(result, 5)
    assert data == bytes((0, 0, 6, 0x12, 31))
    result, data = run(disk, bytes((0x12, 0, 0, 0, 96, 0)), 10)
    good(result, 10)
    good(run(disk, bytes((0x12, 0, 0, 0, 0, 0)), 96)[0], 0)


def test_vpd_supported_pages(disk: ScsiDisk) -> None:
    result, data = run(disk, bytes((0x12, 1, 0x00, 0, 255, 0)), 255)
    good(result, 9)
    assert data == bytes((0, 0x00, 0, 5, 0x00, 0x80, 0x83, 0xB0, 0xB2))


def test_vpd_unit_serial_number(disk: ScsiDisk) -> None:
    result, data = run(disk, bytes((0x12, 1, 0x80, 0, 255, 0)), 255)
    good(result, 14)
    assert data == bytes((0, 0x80, 0, 10)) + b"SERIAL0001"


def test_vpd_device_identification(disk: ScsiDisk) -> None:
    result, data = run(disk, bytes((0x12, 1, 0x83, 0, 255, 0)), 255)
    naa = bytes((0x62,)) + DISK_ID.bytes[1:]
    t10 = b"Msft    SERIAL0001"
    body = bytes((0x01, 0x03, 0x00, 16)) + naa + bytes((0x02, 0x01, 0x00, len(t10))) + t10
    assert data == bytes((0, 0x83)) + struct.pack(">H", len(body)) + body
    good(result, len(data))


def test_vpd_block_limits_and_provisioning(disk: ScsiDisk) -> None:
    result, data = run(disk, bytes((0x12, 1, 0xB0, 0, 255, 0)), 255)
    good(result, 64)
    assert data[:4] == bytes((0, 0xB0, 0, 0x3C))
    assert struct.unpack_from(">H", data, 6)[0] == 8  # 4096 / 512
    assert struct.unpack_from(">I", data, 8)[0] == 0x40000 // 512  # maximum transfer length
    assert struct.unpack_from(">I", data, 20)[0] == 0xFFFFFFFF
    assert struct.unpack_from(">I", data, 24)[0] == MAX_UNMAP_DESCRIPTORS
    result, data = run(disk, bytes((0x12, 1, 0xB2, 0, 255, 0)), 255)
    good(result, 8)
    assert data == bytes((0, 0xB2, 0, 4, 0x00, 0x84, 0x02, 0x00))


@pytest.mark.parametrize(
    "cdb",
    [
        bytes((0x12, 0, 0x80, 0, 255, 0)),  # page code without EVPD
        bytes((0x12, 1, 0x81, 0, 255, 0)),  # unsupported VPD page
        bytes((0x12, 2, 0, 0, 255, 0)),  # CMDDT (obsolete)
    ],
)
def test_inquiry_invalid_fields(disk: ScsiDisk, cdb: bytes) -> None:
    failed(run(disk, cdb, 255)[0], INVALID_FIELD_IN_CDB)


# --- READ CAPACITY ------------------------------------------------------------------------------


def test_read_capacity_10(disk: ScsiDisk) -> None:
    result, data = run(disk, bytes((0x25,)) + bytes(9), 8)
    good(result, 8)
    assert data == struct.pack(">II", BLOCKS - 1, 512)


def test_read_capacity_10_with_lba_and_no_pmi_is_invalid(disk: ScsiDisk) -> None:
    cdb = bytes((0x25, 0)) + struct.pack(">I", 5) + bytes(4)
    failed(run(disk, cdb, 8)[0], INVALID_FIELD_IN_CDB)
    cdb = bytes((0x25, 0)) + struct.pack(">I", 5) + bytes((0, 0, 1, 0))  # PMI=1
    good(run(disk, cdb, 8)[0], 8)


def test_read_capacity_10_caps_huge_disks(tmp_path: Path) -> None:
    class Huge:
        size = 3 << 41  # 6 TiB: more than 2**32 blocks of 512
        read_only = True

    big = ScsiDisk(Huge())  # type: ignore[arg-type]
    assert run(big, bytes((0x25,)) + bytes(9), 8)[1] == struct.pack(">II", 0xFFFFFFFF, 512)
    data = run(big, bytes((0x9E, 0x10)) + bytes(8) + struct.pack(">I", 32) + bytes(2), 32)[1]
    assert struct.unpack_from(">Q", data)[0] == (3 << 41) // 512 - 1


def test_read_capacity_16(disk: ScsiDisk) -> None:
    cdb = bytes((0x9E, 0x10)) + bytes(8) + struct.pack(">I", 32) + bytes(2)
    result, data = run(disk, cdb, 32)
    good(result, 32)
    assert data == struct.pack(">QI", BLOCKS - 1, 512) + bytes((0, 3, 0xC0, 0)) + bytes(16)
    result, data = run(disk, cdb[:10] + struct.pack(">I", 12) + bytes(2), 32)
    good(result, 12)


@pytest.mark.parametrize(
    "cdb",
    [
        bytes((0x9E, 0x11)) + bytes(8) + struct.pack(">I", 32) + bytes(2),  # other service action
        bytes((0x9E, 0x10)) + struct.pack(">Q", 1) + struct.pack(">I", 32) + bytes(2),  # LBA
    ],
)
def test_service_action_in_invalid_fields(disk: ScsiDisk, cdb: bytes) -> None:
    failed(run(disk, cdb, 32)[0], INVALID_FIELD_IN_CDB)


# --- READ / WRITE -------------------------------------------------------------------------------


@pytest.mark.parametrize(("read", "write"), [(read10, write10), (read16, write16)])
def test_written_data_reads_back_and_is_in_the_image(
    disk: ScsiDisk, image: Path, read: object, write: object
) -> None:
    payload = os.urandom(8 * 512)
    result, _ = run(disk, write(100, 8), 8 * 512, payload)  # type: ignore[operator]
    good(result, 4096)
    result, data = run(disk, read(100, 8), 8 * 512)  # type: ignore[operator]
    good(result, 4096)
    assert data == payload
    assert image.read_bytes()[100 * 512 : 108 * 512] == payload


def test_last_block_is_in_range_and_the_next_is_not(disk: ScsiDisk) -> None:
    good(run(disk, read10(BLOCKS - 1, 1), 512)[0], 512)
    failed(run(disk, read10(BLOCKS - 1, 2), 1024)[0], LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE)
    failed(run(disk, read10(BLOCKS, 1), 512)[0], LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE)
    good(run(disk, read10(BLOCKS, 0), 512)[0], 0)
    failed(run(disk, read10(BLOCKS + 1, 0), 512)[0], LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE)


@pytest.mark.parametrize("lba", [2**64 - 1, 2**64 - 8, 2**63, 2**32])
def test_64_bit_lba_overflow_is_out_of_range(disk: ScsiDisk, image: Path, lba: int) -> None:
    failed(run(disk, read16(lba, 8), 4096)[0], LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE)
    failed(run(disk, write16(lba, 8), 4096, b"\xff" * 4096)[0], LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE)
    assert image.read_bytes() == bytes(MIB)


def test_zero_length_transfers_move_nothing(disk: ScsiDisk) -> None:
    good(run(disk, read10(5, 0), 512)[0], 0)
    good(run(disk, write16(5, 0), 512, b"\xff" * 512)[0], 0)


def test_a_buffer_shorter_than_the_transfer_is_data_overrun(disk: ScsiDisk, image: Path) -> None:
    overrun = ScsiResult(ScsiStatus.GOOD, SrbStatus.DATA_OVERRUN)
    assert run(disk, read10(0, 8), 4095)[0] == overrun
    assert run(disk, write10(0, 8), 4095, b"\xff" * 4095)[0] == overrun
    assert image.read_bytes() == bytes(MIB)


def test_a_longer_buffer_transfers_only_the_blocks(disk: ScsiDisk) -> None:
    result, _ = run(disk, write10(0, 1), 4096, b"\x5a" * 4096)
    good(result, 512)
    assert run(disk, read10(0, 2), 1024)[1] == b"\x5a" * 512 + bytes(512)


def test_transfers_beyond_max_transfer_bytes_are_invalid(image: Path) -> None:
    with FileBackingStore(image, 1) as store:
        disk = ScsiDisk(store, max_transfer_bytes=4096)
        good(run(disk, read10(0, 8), 4096)[0], 4096)
        failed(run(disk, read10(0, 9), 8192)[0], INVALID_FIELD_IN_CDB)
        failed(run(disk, write16(0, 9), 8192)[0], INVALID_FIELD_IN_CDB)


@pytest.mark.parametrize("flags", [0x20, 0x40, 0x80, 0xE0])
def test_protection_fields_are_invalid(disk: ScsiDisk, flags: int) -> None:
    failed(run(disk, read10(0, 1, flags), 512)[0], INVALID_FIELD_IN_CDB)
    failed(run(disk, write10(0, 1, flags), 512)[0], INVALID_FIELD_IN_CDB)


def test_fua_write_flushes(disk: ScsiDisk, monkeypatch: pytest.MonkeyPatch) -> None:
    flushes: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: flushes.append(fd))
    good(run(disk, write10(0, 1, 0x08), 512, b"x" * 512)[0], 512)
    assert len(flushes) == 1
    good(run(disk, read10(0, 1, 0x08), 512)[0], 512)
    assert len(flushes) == 1


def test_writes_to_a_read_only_disk_are_data_protect(ro_disk: ScsiDisk, image: Path) -> None:
    before = image.read_bytes()
    failed(run(ro_disk, write10(0, 1), 512, b"\xff" * 512)[0], WRITE_PROTECTED)
    failed(run(ro_disk, write16(0, 1), 512, b"\xff" * 512)[0], WRITE_PROTECTED)
    assert WRITE_PROTECTED.pack()[2] == 0x07
    assert WRITE_PROTECTED.pack()[12:14] == b"\x27\x00"
    result, data = run(ro_disk, read10(1, 1), 512)
    good(result, 512)
    assert data == before[512:1024]
    assert image.read_bytes() == before


class FailingStore:
    """A store whose device accesses fail with ``error``."""

    def __init__(self, error: OSError, read_only: bool = False) -> None:
        self.error = error
        self.size = MIB
        self.read_only = read_only

    def readinto(self, offset: int, buffers: object) -> int:
        raise self.error

    def write(self, offset: int, buffers: object) -> int:
        raise self.error

    def flush(self) -> None:
        raise self.error

    def unmap(self, offset: int, length: int) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("error", "read_sense", "write_sense"),
    [
        (OSError(5, "EIO"), UNRECOVERED_READ_ERROR, WRITE_ERROR),
        (OSError(28, "ENOSPC"), SPACE_ALLOCATION_FAILED_WRITE_PROTECT, None),
        (OSError(30, "EROFS"), WRITE_PROTECTED, None),
        (PermissionError(13, "EACCES"), WRITE_PROTECTED, None),
    ],
)
def test_device_errors_become_sense(
    error: OSError, read_sense: SenseData, write_sense: SenseData | None
) -> None:
    disk = ScsiDisk(FailingStore(error))  # type: ignore[arg-type]
    failed(run(disk, read10(0, 1), 512)[0], read_sense)
    failed(run(disk, write10(0, 1), 512)[0], write_sense or read_sense)
    failed(run(disk, bytes((0x35,)) + bytes(9))[0], write_sense or read_sense)
    assert UNRECOVERED_READ_ERROR.pack()[2] == 0x03


# --- SYNCHRONIZE CACHE ---------------------------------------------------------------------------


def test_synchronize_cache_flushes(disk: ScsiDisk, monkeypatch: pytest.MonkeyPatch) -> None:
    flushes: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: flushes.append(fd))
    good(run(disk, bytes((0x35,)) + bytes(9))[0], 0)
    good(run(disk, bytes((0x91, 0x02)) + bytes(14))[0], 0)  # IMMED
    assert len(flushes) == 2


def test_synchronize_cache_range_is_checked(disk: ScsiDisk) -> None:
    cdb = bytes((0x35, 0)) + struct.pack(">I", BLOCKS + 1) + bytes(4)
    failed(run(disk, cdb)[0], LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE)
    cdb = bytes((0x91, 0)) + struct.pack(">QI", BLOCKS - 1, 2) + bytes(2)
    failed(run(disk, cdb)[0], LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE)


def test_synchronize_cache_on_read_only_disk_is_good(ro_disk: ScsiDisk) -> None:
    good(run(ro_disk, bytes((0x35,)) + bytes(9))[0], 0)


# --- MODE SENSE ---------------------------------------------------------------------------------

CACHING = bytes((0x08, 0x12, 0x04)) + bytes(17)
CONTROL = bytes((0x0A, 0x0A, 0x00, 0x10)) + bytes(8)


def test_mode_sense_6_caching_page_with_block_descriptor(disk: ScsiDisk) -> None:
    result, data = run(disk, bytes((0x1A, 0, 0x08, 0, 255, 0)), 255)
    descriptor = struct.pack(">I", BLOCKS) + b"\0" + (512).to_bytes(3, "big")
    assert data == bytes((3 + 8 + 20, 0, 0x10, 8)) + descriptor + CACHING
    good(result, len(data))


def test_mode_sense_6_all_pages_without_descriptor(disk: ScsiDisk) -> None:
    result, data = run(disk, bytes((0x1A, 0x08, 0x3F, 0, 255, 0)), 255)
    assert data == bytes((3 + 32, 0, 0x10, 0)) + CACHING + CONTROL
    good(result, 36)
    result, data = run(disk, bytes((0x1A, 0x08, 0x3F, 0xFF, 255, 0)), 255)
    assert data[4:] == CACHING + CONTROL


def test_mode_sense_10_long_lba_descriptor(disk: ScsiDisk) -> None:
    cdb = bytes((0x5A, 0x10, 0x0A, 0, 0, 0, 0)) + struct.pack(">H", 255) + b"\0"
    result, data = run(disk, cdb, 255)
    descriptor = struct.pack(">Q", BLOCKS) + bytes(4) + struct.pack(">I", 512)
    header = struct.pack(">H", 6 + 16 + 12) + bytes((0, 0x10, 0x01, 0)) + struct.pack(">H", 16)
    assert data == header + descriptor + CONTROL
    good(result, len(data))


def test_mode_sense_10_short_descriptor_and_allocation_length(disk: ScsiDisk) -> None:
    cdb = bytes((0x5A, 0, 0x08, 0, 0, 0, 0)) + struct.pack(">H", 10) + b"\0"
    result, data = run(disk, cdb, 255)
    good(result, 10)
    header = struct.pack(">H", 6 + 8 + 20) + bytes((0, 0x10, 0, 0)) + struct.pack(">H", 8)
    assert data == header + b"\0\0"  # and the first bytes of the block descriptor


def test_mode_sense_changeable_values_are_zero(disk: ScsiDisk) -> None:
    _, data = run(disk, bytes((0x1A, 0x08, 0x48, 0, 255, 0)), 255)  # PC=01, page 8
    assert data[4:] == bytes((0x08, 0x12)) + bytes(18)


def test_mode_sense_reports_write_protect(ro_disk: ScsiDisk) -> None:
    _, data = run(ro_disk, bytes((0x1A, 0x08, 0x08, 0, 255, 0)), 255)
    assert data[2] == 0x90


@pytest.mark.parametrize(
    ("cdb", "sense"),
    [
        (bytes((0x1A, 0, 0xC8, 0, 255, 0)), SAVING_PARAMETERS_NOT_SUPPORTED),  # PC=11 saved
        (bytes((0x1A, 0, 0x01, 0, 255, 0)), INVALID_FIELD_IN_CDB),  # unsupported page
        (bytes((0x1A, 0, 0x08, 0x01, 255, 0)), INVALID_FIELD_IN_CDB),  # subpage
        (bytes((0x5A, 0, 0x1C, 0, 0, 0, 0, 0, 255, 0)), INVALID_FIELD_IN_CDB),
    ],
)
def test_mode_sense_errors(disk: ScsiDisk, cdb: bytes, sense: SenseData) -> None:
    failed(run(disk, cdb, 255)[0], sense)
    assert SAVING_PARAMETERS_NOT_SUPPORTED.pack()[12] == 0x39


# --- UNMAP --------------------------------------------------------------------------------------


def unmap_cdb(length: int, anchor: bool = False) -> bytes:
    return bytes((0x42, int(anchor), 0, 0, 0, 0, 0)) + struct.pack(">H", length) + b"\0"


def unmap_list(*extents: tuple[int, int], descriptor_length: int | None = None) -> bytes:
    body = b"".join(struct.pack(">QI4x", lba, blocks) for lba, blocks in extents)
    length = len(body) if descriptor_length is None else descriptor_length
    return struct.pack(">HHI", 6 + len(body), length, 0) + body


def test_unmap_zeroes_the_extents_in_the_image(disk: ScsiDisk, image: Path) -> None:
    run(disk, write10(0, 32), 32 * 512, b"\xcc" * 32 * 512)
    parameters = unmap_list((2, 3), (20, 1), (30, 0))
    result, _ = run(disk, unmap_cdb(len(parameters)), len(parameters), parameters)
    good(result, len(parameters))
    raw = image.read_bytes()
    assert len(raw) == MIB
    assert raw[2 * 512 : 5 * 512] == bytes(3 * 512)
    assert raw[20 * 512 : 21 * 512] == bytes(512)
    assert raw[: 2 * 512] == b"\xcc" * 1024
    assert raw[5 * 512 : 20 * 512] == b"\xcc" * 15 * 512
    assert raw[21 * 512 : 32 * 512] == b"\xcc" * 11 * 512


def test_unmap_checks_every_extent_before_unmapping(disk: ScsiDisk, image: Path) -> None:
    run(disk, write10(0, 8), 8 * 512, b"\xcc" * 8 * 512)
    parameters = unmap_list((0, 4), (BLOCKS - 1, 2))
    result, _ = run(disk, unmap_cdb(len(parameters)), len(parameters), parameters)
    failed(result, LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE)
    assert image.read_bytes()[:4096] == b"\xcc" * 4096
    parameters = unmap_list((2**64 - 1, 0xFFFFFFFF))
    failed(run(disk, unmap_cdb(24), 24, parameters)[0], LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE)


def test_unmap_ignores_a_partial_descriptor(disk: ScsiDisk, image: Path) -> None:
    run(disk, write10(0, 8), 8 * 512, b"\xcc" * 8 * 512)
    parameters = unmap_list((0, 1), (1, 1), descriptor_length=31)
    good(run(disk, unmap_cdb(len(parameters)), len(parameters), parameters)[0], 40)
    raw = image.read_bytes()
    assert raw[:512] == bytes(512)
    assert raw[512:1024] == b"\xcc" * 512


def test_unmap_error_paths(disk: ScsiDisk, ro_disk: ScsiDisk) -> None:
    good(run(disk, unmap_cdb(0))[0], 0)
    failed(run(disk, unmap_cdb(7), 7)[0], PARAMETER_LIST_LENGTH_ERROR)
    failed(run(disk, unmap_cdb(24, anchor=True), 24, unmap_list((0, 1)))[0], INVALID_FIELD_IN_CDB)
    overrun = ScsiResult(ScsiStatus.GOOD, SrbStatus.DATA_OVERRUN)
    assert run(disk, unmap_cdb(24), 16, unmap_list((0, 1)))[0] == overrun
    many = unmap_list(*[(i, 1) for i in range(MAX_UNMAP_DESCRIPTORS + 1)])
    failed(run(disk, unmap_cdb(len(many)), len(many), many)[0], INVALID_FIELD_IN_PARAMETER_LIST)
    failed(run(ro_disk, unmap_cdb(24), 24, unmap_list((0, 1)))[0], WRITE_PROTECTED)


# --- construction -------------------------------------------------------------------------------


def test_disk_geometry_and_validation(image: Path) -> None:
    with FileBackingStore(image, 1) as store:
        disk = ScsiDisk(store, block_size=4096, physical_block_size=4096)
        assert (disk.block_count, disk.block_size, disk.read_only) == (256, 4096, False)
        assert disk.store is store
        assert len(disk.serial) == 20
        assert disk.max_transfer_bytes == 0x40000
        _, data = run(disk, bytes((0x9E, 0x10)) + bytes(8) + struct.pack(">I", 32) + bytes(2), 32)
        assert data[8:14] == struct.pack(">I", 4096) + bytes((0, 0))
        with pytest.raises(ValueError, match="block_size"):
            ScsiDisk(store, block_size=1024)
        with pytest.raises(ValueError, match="physical_block_size"):
            ScsiDisk(store, physical_block_size=256)
        with pytest.raises(ValueError, match="max_transfer_bytes"):
            ScsiDisk(store, max_transfer_bytes=100)


def test_a_partial_last_block_is_not_part_of_the_disk(tmp_path: Path) -> None:
    path = tmp_path / "odd.img"
    path.write_bytes(b"\x77" * (MIB + 100))
    with FileBackingStore(path) as store:
        disk = ScsiDisk(store)
        assert disk.block_count == BLOCKS
        result, _ = run(disk, write10(BLOCKS, 1), 512, bytes(512))
        failed(result, LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE)
    assert path.read_bytes()[MIB:] == b"\x77" * 100
