"""``StorvscProtocol`` against ``StorvspProtocol`` through an in-memory loopback: the init
sequence and version fallback, and block I/O whose data reads back through the guest side and
directly from the image file. Also the guest side's checks of what the host sends."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from winhv.vsp_vsc_pairs.storage import (
    CLIENT_VERSIONS,
    INVALID_COMMAND_OPERATION_CODE,
    LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE,
    WRITE_PROTECTED,
    ChannelProperties,
    DataDirection,
    FileBackingStore,
    NtStatus,
    Operation,
    OutgoingPacket,
    ScsiCommandError,
    ScsiDisk,
    SrbCompletion,
    SrbRequest,
    StorvscProtocol,
    StorvspProtocol,
    VscState,
    VstorInitError,
    VstorProtocolError,
    VstorVersion,
    build_packet,
    parse_inquiry,
    parse_read_capacity_10,
    parse_read_capacity_16,
)

MIB = 1 << 20


@dataclass
class Loopback:
    """A guest and a host wired back to back; ``memory`` is the guest's RAM."""

    vsc: StorvscProtocol
    vsp: StorvspProtocol
    memory: bytearray = field(default_factory=lambda: bytearray(4 * MIB))
    trace: list[tuple[int, int]] = field(default_factory=list)  # (operation, status)

    def initialize(self) -> None:
        outgoing: OutgoingPacket | None = self.vsc.start()
        while outgoing is not None:
            reply = self.vsp.receive(outgoing.payload)
            self.trace.append((outgoing.payload[0], struct.unpack_from("<I", reply, 8)[0]))
            result = self.vsc.receive(outgoing.trans_id, reply)
            assert not isinstance(result, SrbCompletion)
            outgoing = result

    def run(self, request: SrbRequest, at: int = 0) -> SrbCompletion:
        view = memoryview(self.memory)[at : at + request.data_length]
        if request.parameter_data:
            view[: len(request.parameter_data)] = request.parameter_data
        ranges = [view] if request.data_length else []
        completion = self.vsc.receive(request.trans_id, self.vsp.receive(request.payload, ranges))
        assert isinstance(completion, SrbCompletion)
        return completion


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return tmp_path / "disk.img"


@pytest.fixture
def disk(image: Path) -> Iterator[ScsiDisk]:
    with FileBackingStore(image, 2) as store:
        yield ScsiDisk(store, serial="PAIR")


@pytest.fixture
def pair(disk: ScsiDisk) -> Loopback:
    loop = Loopback(StorvscProtocol(), StorvspProtocol(disk))
    loop.initialize()
    return loop


# --- initialization -----------------------------------------------------------------------------


def test_linux_guest_negotiates_6_0_with_the_default_host(disk: ScsiDisk) -> None:
    loop = Loopback(StorvscProtocol(), StorvspProtocol(disk))
    loop.initialize()
    assert CLIENT_VERSIONS == (VstorVersion.WIN10, VstorVersion.WIN8_1, VstorVersion.WIN8)
    assert loop.trace == [
        (Operation.BEGIN_INITIALIZATION, 0),
        (Operation.QUERY_PROTOCOL_VERSION, NtStatus.REVISION_MISMATCH),
        (Operation.QUERY_PROTOCOL_VERSION, 0),
        (Operation.QUERY_PROPERTIES, 0),
        (Operation.END_INITIALIZATION, 0),
    ]
    assert loop.vsc.state is VscState.READY
    assert loop.vsc.version is loop.vsp.version is VstorVersion.WIN8_1
    assert loop.vsc.properties == ChannelProperties(0, 1, 0x40000)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ((VstorVersion.WIN10,), VstorVersion.WIN10),
        ((VstorVersion.WIN8,), VstorVersion.WIN8),
        ((VstorVersion.WIN7, VstorVersion.WIN6), VstorVersion.WIN7),
        ((VstorVersion.WIN6,), VstorVersion.WIN6),
    ],
)
def test_negotiation_down_to_an_older_host(
    disk: ScsiDisk, host: tuple[VstorVersion, ...], expected: VstorVersion
) -> None:
    guest_versions = sorted(VstorVersion, reverse=True)
    loop = Loopback(StorvscProtocol(versions=guest_versions), StorvspProtocol(disk, versions=host))
    loop.initialize()
    assert loop.vsc.version is loop.vsp.version is expected
    completion = loop.run(loop.vsc.write(0, 1)).check()
    assert completion.transferred == 512
    assert len(loop.vsc.write(0, 1).payload) == 12 + expected.request_size


def test_no_common_version_is_an_init_error(disk: ScsiDisk) -> None:
    loop = Loopback(StorvscProtocol(versions=(VstorVersion.WIN10,)), StorvspProtocol(disk))
    with pytest.raises(
        VstorInitError, match=r"REVISION_MISMATCH, expected SUCCESS for one of 6\.2"
    ):
        loop.initialize()


def test_sub_channels_are_requested_when_offered(disk: ScsiDisk) -> None:
    loop = Loopback(StorvscProtocol(sub_channels=8), StorvspProtocol(disk, max_sub_channels=3))
    loop.initialize()
    assert Operation.CREATE_SUB_CHANNELS in [op for op, _ in loop.trace]
    assert loop.vsc.sub_channel_count == loop.vsp.sub_channel_count == 3


def test_a_refused_sub_channel_request_continues_on_the_primary(disk: ScsiDisk) -> None:
    vsp = StorvspProtocol(disk, max_sub_channels=3, create_sub_channels=lambda n: False)
    loop = Loopback(StorvscProtocol(sub_channels=2), vsp)
    loop.initialize()
    assert (Operation.CREATE_SUB_CHANNELS, NtStatus.INVALID_PARAMETER) in loop.trace
    assert loop.vsc.state is VscState.READY
    assert loop.vsc.sub_channel_count == 0


def test_init_packets_are_64_bytes_with_completion_requested() -> None:
    vsc = StorvscProtocol()
    begin = vsc.start()
    assert begin.payload == build_packet(Operation.BEGIN_INITIALIZATION, 0, b"", 52, flags=1)
    version = vsc.receive(begin.trans_id, build_packet(Operation.COMPLETE_IO, 0, b"", 52))
    assert isinstance(version, OutgoingPacket)
    assert version.payload[:16] == struct.pack("<IIIHH", 9, 1, 0, 0x0602, 0)
    assert version.trans_id != begin.trans_id


def test_a_failed_init_step_is_an_init_error() -> None:
    vsc = StorvscProtocol()
    begin = vsc.start()
    failure = build_packet(Operation.COMPLETE_IO, NtStatus.INVALID_DEVICE_STATE, b"", 52)
    with pytest.raises(VstorInitError, match=r"BEGIN_INITIALIZATION\.status: found INVALID_DEV"):
        vsc.receive(begin.trans_id, failure)


# --- I/O ----------------------------------------------------------------------------------------


def test_written_data_reads_back_and_matches_the_image(pair: Loopback, image: Path) -> None:
    payload = os.urandom(64 * 1024)
    pair.memory[: len(payload)] = payload
    assert pair.run(pair.vsc.write(100, 128)).check().transferred == 65536
    assert pair.run(pair.vsc.flush()).ok
    assert pair.run(pair.vsc.read(100, 128), at=MIB).check().transferred == 65536
    assert pair.memory[MIB : MIB + 65536] == payload
    assert image.read_bytes()[100 * 512 : 100 * 512 + 65536] == payload


def test_read_16_and_write_16_are_used_past_the_10_byte_limits(pair: Loopback) -> None:
    request = pair.vsc.read(2**32, 1)
    assert request.cdb[0] == 0x88
    with pytest.raises(ScsiCommandError) as caught:
        pair.run(request).check()
    assert caught.value.sense == LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE
    assert pair.vsc.write(0, 0x10000).cdb[0] == 0x8A
    assert pair.vsc.read(5, 0xFFFF).cdb[0] == 0x28


def test_capacity_and_inquiry(pair: Loopback) -> None:
    completion = pair.run(pair.vsc.read_capacity()).check()
    capacity = parse_read_capacity_16(pair.memory[: completion.transferred])
    assert (capacity.block_count, capacity.block_size, capacity.physical_block_size) == (
        4096, 512, 4096,
    )  # fmt: skip
    assert capacity.thin_provisioned
    assert capacity.unmapped_reads_zero
    completion = pair.run(pair.vsc.inquiry()).check()
    inquiry = parse_inquiry(pair.memory[: completion.transferred])
    assert (inquiry.qualifier, inquiry.device_type) == (0, 0)
    assert (inquiry.vendor, inquiry.product, inquiry.revision) == ("Msft", "Virtual Disk", "1.0")
    completion = pair.run(pair.vsc.inquiry(0x80)).check()
    assert bytes(pair.memory[4 : completion.transferred]) == b"PAIR"
    rc10 = pair.run(pair.vsc.execute(bytes((0x25,)) + bytes(9), data_length=8, direction=1))
    assert parse_read_capacity_10(pair.memory[:8]) == type(capacity)(4096, 512)
    assert rc10.ok


def test_unmap_through_the_pair(pair: Loopback, image: Path) -> None:
    pair.memory[:4096] = b"\x99" * 4096
    pair.run(pair.vsc.write(0, 8)).check()
    request = pair.vsc.unmap([(1, 2), (6, 1)])
    assert request.direction is DataDirection.WRITE
    pair.run(request, at=2 * MIB).check()
    raw = image.read_bytes()
    assert raw[:512] == b"\x99" * 512
    assert raw[512:1536] == bytes(1024)
    assert raw[3072:3584] == bytes(512)


def test_errors_raise_with_decoded_sense(pair: Loopback) -> None:
    completion = pair.run(pair.vsc.execute(bytes((0xFF,)) + bytes(5)))
    assert not completion.ok
    with pytest.raises(ScsiCommandError, match=r"opcode 0xff on LUN 0: srb_status INVALID_REQ"):
        completion.check()
    assert completion.sense == INVALID_COMMAND_OPERATION_CODE
    assert completion.status == NtStatus.IO_DEVICE_ERROR


def test_write_to_a_read_only_disk(image: Path) -> None:
    image.write_bytes(bytes(MIB))
    with FileBackingStore(image, read_only=True) as store:
        loop = Loopback(StorvscProtocol(), StorvspProtocol(ScsiDisk(store)))
        loop.initialize()
        with pytest.raises(ScsiCommandError) as caught:
            loop.run(loop.vsc.write(0, 1)).check()
        assert caught.value.sense == WRITE_PROTECTED
        assert caught.value.completion.srb_status == 0x84
    assert image.read_bytes() == bytes(MIB)


def test_many_outstanding_requests_complete_in_any_order(pair: Loopback) -> None:
    requests = [pair.vsc.read(i * 8, 8) for i in range(32)]
    assert pair.vsc.outstanding == 32
    for request in reversed(requests):
        pair.run(request).check()
    assert pair.vsc.outstanding == 0


def test_missing_lun_is_reported(pair: Loopback) -> None:
    completion = pair.run(pair.vsc.execute(bytes(6), lun=3))
    assert completion.srb_status == 0x20
    with pytest.raises(ScsiCommandError, match="INVALID_LUN"):
        completion.check()


# --- the guest checks the host ------------------------------------------------------------------


def test_completion_for_an_unknown_request_is_a_protocol_error(pair: Loopback) -> None:
    with pytest.raises(VstorProtocolError, match=r"COMPLETE_IO\.trans_id: found 999"):
        pair.vsc.receive(999, build_packet(Operation.COMPLETE_IO, 0, bytes(52)))


def test_short_or_wrong_completions_are_protocol_errors(pair: Loopback) -> None:
    request = pair.vsc.read(0, 1)
    with pytest.raises(VstorProtocolError, match=r"COMPLETE_IO\.size"):
        pair.vsc.receive(request.trans_id, build_packet(Operation.COMPLETE_IO, 0, bytes(20)))
    request = pair.vsc.read(0, 1)
    with pytest.raises(VstorProtocolError, match="operation"):
        pair.vsc.receive(request.trans_id, build_packet(Operation.ENUMERATE_BUS, 0, bytes(52)))
    request = pair.vsc.read(0, 1)
    bad = bytearray(pair.vsp.receive(request.payload, [bytearray(512)]))
    bad[12 + 12 : 12 + 16] = struct.pack("<I", 513)
    with pytest.raises(VstorProtocolError, match="data_transfer_length: found 513"):
        pair.vsc.receive(request.trans_id, bytes(bad))


def test_notifications(pair: Loopback) -> None:
    rescan = pair.vsp.rescan_packet()
    assert rescan is not None
    assert pair.vsc.receive_notification(rescan) is Operation.ENUMERATE_BUS
    removal = build_packet(Operation.REMOVE_DEVICE, 0, b"", 52)
    assert pair.vsc.receive_notification(removal) is Operation.REMOVE_DEVICE
    with pytest.raises(VstorProtocolError, match="ENUMERATE_BUS or REMOVE_DEVICE"):
        pair.vsc.receive_notification(build_packet(Operation.COMPLETE_IO, 0, b"", 52))


def test_builder_validation(pair: Loopback) -> None:
    with pytest.raises(RuntimeError, match="not started"):
        StorvscProtocol().read(0, 1)
    with pytest.raises(ValueError, match="cdb"):
        pair.vsc.execute(bytes(17))
    with pytest.raises(ValueError, match="lun"):
        pair.vsc.execute(bytes(6), lun=256)
    with pytest.raises(ValueError, match="data_length"):
        pair.vsc.execute(bytes(6), data_length=-1)
    with pytest.raises(ValueError, match="non-negative"):
        pair.vsc.read(-1, 1)
    with pytest.raises(ValueError, match="u64"):
        pair.vsc.read(2**64, 1)
    with pytest.raises(ValueError, match="versions"):
        StorvscProtocol(versions=())
    with pytest.raises(ValueError, match="sub_channels"):
        StorvscProtocol(sub_channels=-1)
    with pytest.raises(ValueError, match="READ CAPACITY"):
        parse_read_capacity_16(bytes(8))
