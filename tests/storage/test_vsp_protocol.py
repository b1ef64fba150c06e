"""``StorvspProtocol``: the §6.1 init sequence with exact completions, version negotiation,
properties, sub-channels, and EXECUTE_SRB -> COMPLETE_IO bytes for success and every SRB-level
error."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from winhv.vsp_vsc_pairs.storage import (
    INVALID_FIELD_IN_CDB,
    LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE,
    SERVER_VERSIONS,
    ChannelProperties,
    DataDirection,
    FileBackingStore,
    NtStatus,
    Operation,
    ScsiDisk,
    ScsiRequest,
    StorvspProtocol,
    VspState,
    VstorProtocolError,
    VstorVersion,
    build_packet,
)

MIB = 1 << 20


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[ScsiDisk]:
    with FileBackingStore(tmp_path / "d.img", 1) as store:
        yield ScsiDisk(store, serial="S")


def request(op: Operation, body: bytes = b"", size: int = 52) -> bytes:
    return build_packet(op, 0, body, size, flags=1)


def version_request(version: int, size: int = 52) -> bytes:
    return request(Operation.QUERY_PROTOCOL_VERSION, struct.pack("<HH", version, 0), size)


def completion(status: int, body: bytes = b"", size: int = 52) -> bytes:
    return build_packet(Operation.COMPLETE_IO, status, body, size)


def initialize(vsp: StorvspProtocol, version: int = VstorVersion.WIN8_1, size: int = 52) -> None:
    assert vsp.receive(request(Operation.BEGIN_INITIALIZATION, size=size)) == completion(
        0, b"", size
    )
    assert vsp.receive(version_request(version, size))[8:12] == b"\0\0\0\0"
    vsp.receive(request(Operation.QUERY_PROPERTIES, size=size))
    vsp.receive(request(Operation.END_INITIALIZATION, size=size))
    assert vsp.state is VspState.READY


def srb(
    cdb: bytes,
    *,
    length: int = 0,
    data_in: int = DataDirection.UNKNOWN,
    lun: int = 0,
    target: int = 0,
    size: int = 0x34,
    cdb_length: int | None = None,
) -> bytes:
    body = ScsiRequest(
        length=size, path_id=0, target_id=target, lun=lun,
        cdb_length=len(cdb) if cdb_length is None else cdb_length, sense_info_length=0x14,
        data_in=data_in, data_transfer_length=length, cdb_area=cdb.ljust(20, b"\0"),
        queue_tag=0xFF, queue_action=0x20, time_out_value=60,
    ).pack(size)  # fmt: skip
    return build_packet(Operation.EXECUTE_SRB, 0, body, flags=1)


def read10(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)


def write10(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBIBHB", 0x2A, 0, lba, 0, blocks, 0)


def test_init_sequence_exact_completions(disk: ScsiDisk) -> None:
    vsp = StorvspProtocol(disk, max_sub_channels=4)
    assert vsp.state is VspState.BEGIN
    assert vsp.receive(request(Operation.BEGIN_INITIALIZATION)) == completion(0)
    assert vsp.state is VspState.QUERY_VERSION
    assert vsp.receive(version_request(0x0600)) == completion(0, b"\x00\x06\0\0")
    assert (vsp.state, vsp.version) == (VspState.QUERY_PROPERTIES, VstorVersion.WIN8_1)
    properties = ChannelProperties(4, 1, 0x40000).pack()
    assert vsp.receive(request(Operation.QUERY_PROPERTIES)) == completion(0, properties)
    assert vsp.state is VspState.END_INITIALIZATION
    assert vsp.receive(request(Operation.END_INITIALIZATION)) == completion(0)
    assert vsp.state is VspState.READY
    reply = vsp.receive(request(Operation.BEGIN_INITIALIZATION))
    assert reply == completion(NtStatus.INVALID_DEVICE_STATE)


def test_version_6_2_is_refused_and_the_guest_falls_back(disk: ScsiDisk) -> None:
    vsp = StorvspProtocol(disk)
    vsp.receive(request(Operation.BEGIN_INITIALIZATION))
    reply = vsp.receive(version_request(0x0602))
    assert reply == completion(NtStatus.REVISION_MISMATCH, b"\x02\x06\0\0")
    assert reply[8:12] == bytes.fromhex("590000c0")
    assert vsp.state is VspState.QUERY_VERSION
    assert vsp.receive(version_request(0x0600))[8:12] == bytes(4)
    assert vsp.version is VstorVersion.WIN8_1


@pytest.mark.parametrize("version", [0x0000, 0x0100, 0x0601, 0xFFFF])
def test_unknown_versions_are_a_revision_mismatch(disk: ScsiDisk, version: int) -> None:
    vsp = StorvspProtocol(disk)
    vsp.receive(request(Operation.BEGIN_INITIALIZATION))
    reply = vsp.receive(version_request(version))
    assert reply[8:12] == struct.pack("<I", NtStatus.REVISION_MISMATCH)
    assert reply[12:14] == struct.pack("<H", version)


def test_default_versions_are_openvmms_and_6_2_can_be_enabled(disk: ScsiDisk) -> None:
    assert set(SERVER_VERSIONS) == {0x0200, 0x0402, 0x0501, 0x0600}
    vsp = StorvspProtocol(disk, versions=VstorVersion)
    vsp.receive(request(Operation.BEGIN_INITIALIZATION))
    assert vsp.receive(version_request(0x0602))[8:12] == bytes(4)
    assert vsp.version is VstorVersion.WIN10


@pytest.mark.parametrize("version", [VstorVersion.WIN6, VstorVersion.WIN7])
def test_pre_win8_versions_have_no_multi_channel(disk: ScsiDisk, version: VstorVersion) -> None:
    vsp = StorvspProtocol(disk, max_sub_channels=4)
    vsp.receive(request(Operation.BEGIN_INITIALIZATION, size=36))
    vsp.receive(version_request(version, 36))
    reply = vsp.receive(request(Operation.QUERY_PROPERTIES, size=36))
    assert len(reply) == 48
    assert ChannelProperties.unpack(reply[12:]) == ChannelProperties(0, 0, 0x40000)
    reply = vsp.receive(request(Operation.CREATE_SUB_CHANNELS, b"\x02\x00", 36))
    assert reply == completion(NtStatus.INVALID_DEVICE_STATE, b"", 36)


def test_completions_echo_the_request_size(disk: ScsiDisk) -> None:
    vsp = StorvspProtocol(disk)
    assert vsp.receive(request(Operation.BEGIN_INITIALIZATION, size=0)) == completion(0, b"", 0)
    assert len(vsp.receive(version_request(0x0501, 4))) == 16
    assert len(vsp.receive(request(Operation.QUERY_PROPERTIES, size=52) + bytes(40))) == 64


@pytest.mark.parametrize(
    "op",
    [
        Operation.END_INITIALIZATION,
        Operation.QUERY_PROPERTIES,
        Operation.QUERY_PROTOCOL_VERSION,
        Operation.EXECUTE_SRB,
        Operation.RESET_BUS,
        Operation.CREATE_SUB_CHANNELS,
    ],
)
def test_requests_out_of_order_are_invalid_device_state(disk: ScsiDisk, op: Operation) -> None:
    vsp = StorvspProtocol(disk)
    reply = vsp.receive(request(op, bytes(52)))
    assert reply == completion(NtStatus.INVALID_DEVICE_STATE)
    assert vsp.state is VspState.BEGIN


def test_resets_are_no_ops_when_ready(disk: ScsiDisk) -> None:
    vsp = StorvspProtocol(disk)
    initialize(vsp)
    for op in (Operation.RESET_LUN, Operation.RESET_ADAPTER, Operation.RESET_BUS):
        assert vsp.receive(request(op)) == completion(0)
    vsp.reset()
    assert (vsp.state, vsp.version) == (VspState.BEGIN, None)


def test_sub_channels(disk: ScsiDisk) -> None:
    asked: list[int] = []
    vsp = StorvspProtocol(
        disk, max_sub_channels=2, create_sub_channels=lambda n: asked.append(n) or n == 2
    )
    vsp.receive(request(Operation.BEGIN_INITIALIZATION))
    vsp.receive(version_request(0x0501))
    vsp.receive(request(Operation.QUERY_PROPERTIES))
    assert vsp.receive(request(Operation.CREATE_SUB_CHANNELS, b"\x03\x00")) == completion(
        NtStatus.INVALID_PARAMETER
    )
    assert vsp.receive(request(Operation.CREATE_SUB_CHANNELS, b"\x01\x00")) == completion(
        NtStatus.INVALID_PARAMETER
    )
    assert vsp.receive(request(Operation.CREATE_SUB_CHANNELS, b"\x02\x00")) == completion(0)
    assert (vsp.sub_channel_count, asked) == (2, [1, 2])
    reply = vsp.receive(request(Operation.CREATE_SUB_CHANNELS, b"\x02\x00"))
    assert reply == completion(NtStatus.INVALID_DEVICE_STATE)
    vsp.receive(request(Operation.END_INITIALIZATION))
    assert vsp.receive(request(Operation.CREATE_SUB_CHANNELS, b"\x02\x00")) == completion(0)


@pytest.mark.parametrize(
    "op", [Operation.FCHBA_DATA, Operation.COMPLETE_IO, Operation.ENUMERATE_BUS, 0, 15, 0x103]
)
def test_operations_a_storvsp_never_takes_are_protocol_errors(disk: ScsiDisk, op: int) -> None:
    vsp = StorvspProtocol(disk)
    with pytest.raises(VstorProtocolError, match="operation"):
        vsp.receive(request(op))  # type: ignore[arg-type]
    assert vsp.state is VspState.BEGIN


def test_rescan_packet(disk: ScsiDisk) -> None:
    vsp = StorvspProtocol(disk)
    assert vsp.rescan_packet() is None
    initialize(vsp)
    assert vsp.rescan_packet() == build_packet(Operation.ENUMERATE_BUS, 0, b"", 52)
    old = StorvspProtocol(disk)
    initialize(old, VstorVersion.WIN6, 36)
    assert old.rescan_packet() is None


def test_constructor_validation(disk: ScsiDisk) -> None:
    with pytest.raises(ValueError, match="disk address"):
        StorvspProtocol({(0, 0, 256): disk})
    with pytest.raises(ValueError, match="versions"):
        StorvspProtocol(disk, versions=())
    with pytest.raises(ValueError, match="max_transfer_bytes"):
        StorvspProtocol(disk, max_transfer_bytes=2**32)
    with pytest.raises(ValueError, match="max_sub_channels"):
        StorvspProtocol(disk, max_sub_channels=-1)
    assert StorvspProtocol(disk).disks == {(0, 0, 0): disk}


# --- EXECUTE_SRB -> COMPLETE_IO -----------------------------------------------------------------


@pytest.fixture
def ready(disk: ScsiDisk) -> StorvspProtocol:
    vsp = StorvspProtocol(disk)
    initialize(vsp)
    return vsp


def test_successful_write_completion_bytes(ready: StorvspProtocol, tmp_path: Path) -> None:
    guest = bytearray(b"\xab" * 4096)
    reply = ready.receive(srb(write10(8, 8), length=4096, data_in=0), [memoryview(guest)])
    assert len(reply) == 64
    assert reply[:12] == bytes(12)[:0] + struct.pack("<III", 1, 0, 0)
    done = ScsiRequest.unpack(reply[12:])
    assert (done.length, done.srb_status, done.scsi_status) == (0x34, 0x01, 0x00)
    assert (done.sense_info_length, done.data_transfer_length) == (0, 4096)
    assert done.cdb_area == bytes(20)
    assert (done.data_in, done.queue_tag, done.queue_action, done.time_out_value) == (
        0,
        0xFF,
        0x20,
        60,
    )
    assert (tmp_path / "d.img").read_bytes()[4096:8192] == bytes(guest)


def test_check_condition_completion_carries_fixed_sense(ready: StorvspProtocol) -> None:
    reply = ready.receive(srb(read10(2048, 1), length=512, data_in=1), [bytearray(512)])
    assert reply[8:12] == struct.pack("<I", NtStatus.IO_DEVICE_ERROR)
    done = ScsiRequest.unpack(reply[12:])
    assert (done.srb_status, done.scsi_status) == (0x80 | 0x06, 0x02)
    assert done.sense_info_length == 18
    assert done.cdb_area == LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE.pack() + b"\0\0"
    assert done.data_transfer_length == 0


def test_a_transfer_longer_than_the_gpa_range_closes_the_channel(ready: StorvspProtocol) -> None:
    with pytest.raises(VstorProtocolError, match=r"data_transfer_length: found 4097 bytes"):
        ready.receive(srb(read10(0, 8), length=4097, data_in=1), [bytearray(4096)])
    with pytest.raises(VstorProtocolError, match="at most the 0 bytes"):
        ready.receive(srb(read10(0, 1), length=512, data_in=1))


def test_a_range_longer_than_the_transfer_is_truncated(ready: StorvspProtocol) -> None:
    guest = bytearray(b"\xff" * 8192)
    reply = ready.receive(srb(read10(0, 16), length=4096, data_in=1), [guest])
    assert ScsiRequest.unpack(reply[12:]).srb_status == 0x12  # DATA_OVERRUN: buffer < blocks
    assert reply[8:12] == struct.pack("<I", NtStatus.BUFFER_OVERFLOW)
    assert guest == b"\xff" * 8192
    reply = ready.receive(srb(read10(0, 8), length=4096, data_in=1), [guest])
    assert ScsiRequest.unpack(reply[12:]).data_transfer_length == 4096
    assert guest == bytes(4096) + b"\xff" * 4096


def sense_of(reply: bytes) -> bytes:
    done = ScsiRequest.unpack(reply[12:])
    assert (done.srb_status, done.scsi_status) == (0x86, 0x02)
    return done.cdb_area[:18]


@pytest.mark.parametrize("cdb_length", [0, 17, 20, 255])
def test_bad_cdb_lengths_are_invalid_field(ready: StorvspProtocol, cdb_length: int) -> None:
    reply = ready.receive(srb(bytes(6), cdb_length=cdb_length))
    assert sense_of(reply) == INVALID_FIELD_IN_CDB.pack()


def test_a_cdb_length_shorter_than_the_opcode_is_invalid_field(ready: StorvspProtocol) -> None:
    reply = ready.receive(srb(read10(0, 1), length=512, data_in=1, cdb_length=6), [bytearray(512)])
    assert sense_of(reply) == INVALID_FIELD_IN_CDB.pack()


def test_transfers_beyond_max_transfer_bytes_are_invalid_field(disk: ScsiDisk) -> None:
    vsp = StorvspProtocol(disk, max_transfer_bytes=4096)
    initialize(vsp)
    reply = vsp.receive(srb(read10(0, 9), length=4608, data_in=1), [bytearray(4608)])
    assert sense_of(reply) == INVALID_FIELD_IN_CDB.pack()


@pytest.mark.parametrize(
    ("cdb", "data_in"), [(read10(0, 1), 0), (write10(0, 1), 1), (read10(0, 1), 3)]
)
def test_a_direction_that_contradicts_the_command_is_invalid_field(
    ready: StorvspProtocol, tmp_path: Path, cdb: bytes, data_in: int
) -> None:
    guest = bytearray(b"\x33" * 512)
    reply = ready.receive(srb(cdb, length=512, data_in=data_in), [guest])
    assert sense_of(reply) == INVALID_FIELD_IN_CDB.pack()
    assert guest == b"\x33" * 512
    assert (tmp_path / "d.img").read_bytes() == bytes(MIB)


def test_unknown_direction_is_accepted(ready: StorvspProtocol) -> None:
    reply = ready.receive(srb(read10(0, 1), length=512, data_in=2), [bytearray(512)])
    assert ScsiRequest.unpack(reply[12:]).srb_status == 1


def test_a_missing_lun(ready: StorvspProtocol) -> None:
    reply = ready.receive(srb(bytes(6), lun=1))
    done = ScsiRequest.unpack(reply[12:])
    assert (done.srb_status, done.scsi_status, done.sense_info_length) == (0x20, 0x02, 0)
    assert reply[8:12] == struct.pack("<I", NtStatus.DEVICE_DOES_NOT_EXIST)
    guest = bytearray(96)
    reply = ready.receive(srb(bytes((0x12, 0, 0, 0, 96, 0)), length=96, data_in=1, lun=1), [guest])
    assert ScsiRequest.unpack(reply[12:]).data_transfer_length == 36
    assert guest[:8] == bytes((0x7F, 0, 6, 0x12, 31, 0, 0, 2))
    assert guest[8:] == bytes(88)
    reply = ready.receive(
        srb(bytes((0x12, 1, 0x80, 0, 96, 0)), length=96, data_in=1, lun=1), [guest]
    )
    assert sense_of(reply) == INVALID_FIELD_IN_CDB.pack()


def test_report_luns_lists_the_target_s_disks(disk: ScsiDisk) -> None:
    vsp = StorvspProtocol({(0, 0, 0): disk, (0, 0, 5): disk, (0, 1, 2): disk})
    initialize(vsp)
    cdb = bytes((0xA0, 0, 0, 0, 0, 0)) + struct.pack(">I", 64) + bytes(2)
    guest = bytearray(64)
    reply = vsp.receive(srb(cdb, length=64, data_in=1, lun=9), [guest])
    assert ScsiRequest.unpack(reply[12:]).data_transfer_length == 24
    assert guest[:24] == bytes.fromhex("00000010 00000000 0000000000000000 0005000000000000")


def test_pre_win8_srbs_complete_in_48_bytes(disk: ScsiDisk) -> None:
    vsp = StorvspProtocol(disk)
    initialize(vsp, VstorVersion.WIN7, 36)
    reply = vsp.receive(srb(read10(0, 1), length=512, data_in=1, size=0x24), [bytearray(512)])
    assert len(reply) == 48
    done = ScsiRequest.unpack(reply[12:])
    assert (done.length, done.srb_status, done.data_transfer_length) == (0x24, 1, 512)
    reply = vsp.receive(srb(read10(4096, 1), length=512, data_in=1, size=0x24), [bytearray(512)])
    assert len(reply) == 48
    assert sense_of(reply) == LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE.pack()


def test_a_short_srb_is_a_protocol_error(ready: StorvspProtocol) -> None:
    with pytest.raises(VstorProtocolError, match=r"EXECUTE_SRB\.size: found 47 bytes"):
        ready.receive(srb(bytes(6))[:47])


def test_parsed_and_raw_paths_agree(ready: StorvspProtocol) -> None:
    from winhv.vsp_vsc_pairs.storage import parse_packet

    packet = srb(read10(3, 1), length=512, data_in=1)
    first, second = bytearray(512), bytearray(512)
    assert ready.receive(packet, [first]) == ready.handle(parse_packet(packet), [second])
    assert ready.receive(memoryview(packet), [first]) == ready.receive(packet, [second])
