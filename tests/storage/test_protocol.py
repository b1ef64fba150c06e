"""The vstor wire format against fact sheet §6.1: structure sizes and offsets, the operation,
version, NTSTATUS and SRB tables, and ``parse_packet``/``build_packet``."""

from __future__ import annotations

import ctypes

import pytest

from winhv.vsp_vsc_pairs.storage import (
    OPERATIONS,
    PACKET_SIZE_V1,
    PACKET_SIZE_V2,
    SCSI_REQUEST_SIZE_V1,
    SCSI_REQUEST_SIZE_V2,
    SRB_STATUSES,
    ChannelProperties,
    ChannelPropertiesStruct,
    DataDirection,
    NtStatus,
    Operation,
    ProtocolVersionStruct,
    ScsiRequest,
    SenderRole,
    SrbFlags,
    SrbStatus,
    VmscsiRequestStruct,
    VstorPacketHeaderStruct,
    VstorProtocolError,
    VstorVersion,
    build_packet,
    ntstatus_for_srb,
    parse_packet,
)


def _offsets(structure: type[ctypes.Structure]) -> dict[str, int]:
    return {name: getattr(structure, name).offset for name, *_ in structure._fields_}


def test_packet_header_is_three_u32() -> None:
    assert ctypes.sizeof(VstorPacketHeaderStruct) == 12
    assert _offsets(VstorPacketHeaderStruct) == {"operation": 0, "flags": 4, "status": 8}


def test_vmscsi_request_layout_matches_the_sheet() -> None:
    assert ctypes.sizeof(VmscsiRequestStruct) == 0x34 == SCSI_REQUEST_SIZE_V2
    assert SCSI_REQUEST_SIZE_V1 == 0x24
    assert _offsets(VmscsiRequestStruct) == {
        "length": 0, "srb_status": 2, "scsi_status": 3, "port_number": 4, "path_id": 5,
        "target_id": 6, "lun": 7, "cdb_length": 8, "sense_info_length": 9, "data_in": 10,
        "properties": 11, "data_transfer_length": 12, "cdb": 16, "reserve": 36,
        "queue_tag": 38, "queue_action": 39, "srb_flags": 40, "time_out_value": 44,
        "queue_sort_key": 48,
    }  # fmt: skip
    assert VmscsiRequestStruct.cdb.size == 0x14


def test_packet_sizes_are_64_and_48() -> None:
    assert PACKET_SIZE_V2 == 64
    assert PACKET_SIZE_V1 == 48


def test_channel_properties_layout() -> None:
    assert ctypes.sizeof(ChannelPropertiesStruct) == 24
    offsets = _offsets(ChannelPropertiesStruct)
    assert offsets["max_channel_count"] == 4
    assert offsets["flags"] == 8
    assert offsets["max_transfer_bytes"] == 12
    assert offsets["reserved3"] == 16
    packed = ChannelProperties(3, 1, 0x40000).pack()
    raw = ChannelPropertiesStruct.from_buffer_copy(packed)
    assert (raw.max_channel_count, raw.flags, raw.max_transfer_bytes) == (3, 1, 0x40000)
    assert ChannelProperties.unpack(packed) == ChannelProperties(3, 1, 0x40000)


def test_protocol_version_layout() -> None:
    assert ctypes.sizeof(ProtocolVersionStruct) == 4
    assert _offsets(ProtocolVersionStruct) == {"major_minor": 0, "revision": 2}


def test_scsi_request_pack_agrees_with_the_ctypes_layout() -> None:
    request = ScsiRequest(
        length=0x34, srb_status=1, scsi_status=2, port_number=3, path_id=4, target_id=5, lun=6,
        cdb_length=10, sense_info_length=0x14, data_in=1, properties=7,
        data_transfer_length=0x12345678, cdb_area=bytes(range(20)), reserve=0xABCD,
        queue_tag=0xFF, queue_action=0x20, srb_flags=0x40, time_out_value=60,
        queue_sort_key=0xDEADBEEF,
    )  # fmt: skip
    packed = request.pack()
    raw = VmscsiRequestStruct.from_buffer_copy(packed)
    for name, *_ in VmscsiRequestStruct._fields_:
        value = getattr(raw, name)
        expected = getattr(request, "cdb_area" if name == "cdb" else name)
        assert (bytes(value) if name == "cdb" else value) == expected, name
    assert ScsiRequest.unpack(packed) == request
    assert request.pack(SCSI_REQUEST_SIZE_V1) == packed[:0x24]
    assert request.cdb == bytes(range(10))


def test_v1_request_unpacks_with_zero_win8_fields() -> None:
    full = ScsiRequest(lun=3, srb_flags=0x40, queue_tag=0xFF)
    v1 = ScsiRequest.unpack(full.pack(SCSI_REQUEST_SIZE_V1))
    assert v1.lun == 3
    assert (v1.srb_flags, v1.queue_tag) == (0, 0)


def test_short_request_is_a_protocol_error() -> None:
    with pytest.raises(VstorProtocolError, match=r"EXECUTE_SRB\.size: found 35 bytes"):
        ScsiRequest.unpack(bytes(35))
    with pytest.raises(ValueError, match="0x24 or 0x34"):
        ScsiRequest().pack(40)


def test_versions_and_their_sizes() -> None:
    assert [int(v) for v in VstorVersion] == [0x0200, 0x0402, 0x0501, 0x0600, 0x0602]
    assert [v.request_size for v in VstorVersion] == [0x24, 0x24, 0x34, 0x34, 0x34]
    assert [v.sense_buffer_size for v in VstorVersion] == [0x12, 0x12, 0x14, 0x14, 0x14]


def test_operation_table_matches_the_sheet() -> None:
    assert {int(op): op.name for op in Operation} == {
        1: "COMPLETE_IO", 2: "REMOVE_DEVICE", 3: "EXECUTE_SRB", 4: "RESET_LUN",
        5: "RESET_ADAPTER", 6: "RESET_BUS", 7: "BEGIN_INITIALIZATION",
        8: "END_INITIALIZATION", 9: "QUERY_PROTOCOL_VERSION", 10: "QUERY_PROPERTIES",
        11: "ENUMERATE_BUS", 12: "FCHBA_DATA", 13: "CREATE_SUB_CHANNELS",
        14: "EVENT_NOTIFICATION",
    }  # fmt: skip
    assert set(OPERATIONS) == set(Operation)
    host_sent = {op for op, spec in OPERATIONS.items() if spec.sender is SenderRole.HOST}
    assert host_sent == {
        Operation.COMPLETE_IO, Operation.REMOVE_DEVICE, Operation.ENUMERATE_BUS,
        Operation.EVENT_NOTIFICATION,
    }  # fmt: skip
    assert not any(spec.host_accepts for op, spec in OPERATIONS.items() if op in host_sent)
    assert not OPERATIONS[Operation.FCHBA_DATA].host_accepts


def test_ntstatus_values_match_the_sheet() -> None:
    assert {s.name: int(s) for s in NtStatus} == {
        "SUCCESS": 0, "BUFFER_OVERFLOW": 0x80000005, "DEVICE_BUSY": 0x80000011,
        "UNSUCCESSFUL": 0xC0000001, "INVALID_PARAMETER": 0xC000000D,
        "INVALID_DEVICE_REQUEST": 0xC0000010, "REVISION_MISMATCH": 0xC0000059,
        "DEVICE_NOT_CONNECTED": 0xC000009D, "IO_TIMEOUT": 0xC00000B5,
        "DEVICE_DOES_NOT_EXIST": 0xC00000C0, "CANCELLED": 0xC0000120,
        "INVALID_DEVICE_STATE": 0xC0000184, "IO_DEVICE_ERROR": 0xC0000185,
    }  # fmt: skip


def test_srb_status_values_and_flags_from_the_sheet() -> None:
    assert SrbStatus.SUCCESS == 0x01
    assert SrbStatus.ABORTED == 0x02
    assert SrbStatus.ERROR == 0x04
    assert SrbStatus.INVALID_REQUEST == 0x06
    assert SrbStatus.DATA_OVERRUN == 0x12
    assert SrbStatus.INVALID_LUN == 0x20
    assert SrbStatus.INTERNAL_ERROR == 0x30
    assert int(SrbFlags.DATA_IN) == 0x40
    assert int(SrbFlags.DATA_OUT) == 0x80
    assert int(SrbFlags.FREE_SENSE_BUFFER) == 0x400
    assert [int(d) for d in DataDirection] == [0, 1, 2]


@pytest.mark.parametrize(
    ("srb", "nt"),
    [
        (SrbStatus.SUCCESS, NtStatus.SUCCESS),
        (SrbStatus.SUCCESS | 0x80, NtStatus.SUCCESS),
        (SrbStatus.BUSY, NtStatus.DEVICE_BUSY),
        (SrbStatus.DATA_OVERRUN, NtStatus.BUFFER_OVERFLOW),
        (SrbStatus.SELECTION_TIMEOUT, NtStatus.DEVICE_NOT_CONNECTED),
        (SrbStatus.INVALID_LUN, NtStatus.DEVICE_DOES_NOT_EXIST),
        (SrbStatus.ABORTED, NtStatus.CANCELLED),
        (SrbStatus.INVALID_REQUEST | 0x80, NtStatus.IO_DEVICE_ERROR),
        (SrbStatus.ERROR, NtStatus.IO_DEVICE_ERROR),
        (0x3F, NtStatus.IO_DEVICE_ERROR),
    ],
)
def test_srb_status_maps_to_ntstatus_through_the_table(srb: int, nt: NtStatus) -> None:
    assert ntstatus_for_srb(srb) is nt


def test_srb_table_rows_are_consistent() -> None:
    for status, spec in SRB_STATUSES.items():
        assert spec.srb_status is status


def test_build_packet_pads_and_truncates_the_union() -> None:
    packet = build_packet(Operation.COMPLETE_IO, NtStatus.REVISION_MISMATCH, b"\x02\x06", 52)
    assert len(packet) == 64
    assert packet[:12] == bytes.fromhex("01000000 00000000 590000c0")
    assert packet[12:16] == b"\x02\x06\0\0"
    assert build_packet(1, 0, bytes(range(60)), 36)[12:] == bytes(range(36))
    with pytest.raises(ValueError, match=r"0\.\.52"):
        build_packet(1, 0, b"", 53)


def test_parse_packet_reads_a_query_version() -> None:
    raw = build_packet(Operation.QUERY_PROTOCOL_VERSION, 0, b"\x02\x06\0\0", 52, flags=1)
    packet = parse_packet(raw)
    assert packet.operation is Operation.QUERY_PROTOCOL_VERSION
    assert (packet.flags, packet.status, packet.version) == (1, 0, 0x0602)
    assert packet.request_size == 52
    assert packet.pack() == raw


def test_parse_packet_ignores_bytes_past_the_union() -> None:
    packet = parse_packet(build_packet(Operation.BEGIN_INITIALIZATION, 0, b"", 52) + b"junk")
    assert packet.request_size == 52


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x07\0\0", r"vstor_packet\.size: found 3 bytes, expected at least 12"),
        (build_packet(0, 0), r"operation 0x0\.operation: found 0"),
        (build_packet(15, 0), r"operation 0xf\.operation: found 15"),
        (build_packet(0xFFFFFFFF, 0), r"operation: found 4294967295"),
        (build_packet(Operation.COMPLETE_IO, 0), r"COMPLETE_IO\.operation: found sent by the gu"),
        (build_packet(Operation.ENUMERATE_BUS, 0), r"ENUMERATE_BUS\.operation"),
        (build_packet(Operation.QUERY_PROTOCOL_VERSION, 0, b"\x02"), r"size: found 13 bytes"),
        (build_packet(Operation.EXECUTE_SRB, 0, bytes(35)), r"EXECUTE_SRB\.size: found 47 bytes"),
        (build_packet(Operation.CREATE_SUB_CHANNELS, 0, b"\x01"), r"CREATE_SUB_CHANNELS\.size"),
    ],
)
def test_parse_packet_rejects_malformed_guest_packets(raw: bytes, message: str) -> None:
    with pytest.raises(VstorProtocolError, match=message):
        parse_packet(raw)


def test_parse_packet_for_host_senders() -> None:
    packet = parse_packet(build_packet(Operation.COMPLETE_IO, 0), sender=SenderRole.HOST)
    assert packet.operation is Operation.COMPLETE_IO
    with pytest.raises(VstorProtocolError, match="only sent by the guest"):
        parse_packet(build_packet(Operation.EXECUTE_SRB, 0, bytes(52)), sender=SenderRole.HOST)


def test_protocol_error_pickles_with_its_fields() -> None:
    import pickle

    error = VstorProtocolError(3, "size", "1 bytes", "more")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.operation, copy.field, copy.found, copy.expected) == (3, "size", "1 bytes", "more")
    assert str(copy) == "EXECUTE_SRB.size: found 1 bytes, expected more"
