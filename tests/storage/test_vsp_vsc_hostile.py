"""Hostile guests against StorVsp over real channels: raw packets crafted on the guest's end of
the channel (``send_gpa_direct``/``send``/the ring writer) instead of going through StorVsc.

Bad CDB lengths, LBA ranges past the end (and overflowing 64 bits) and unknown opcodes end in
CHECK CONDITION with exact sense data and the channel stays open; a data length the GPA range
does not cover, a PFN outside guest RAM, a malformed vstor packet or a wrong packet type close
the channel. In every case the image file keeps its size and its bytes (nothing is written
outside the disk, nothing at all when the request is refused)."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from winhv.drivers.vmbus.loopback import connect_pair
from winhv.vsp_vsc_pairs.storage import (
    INVALID_COMMAND_OPERATION_CODE,
    INVALID_FIELD_IN_CDB,
    LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE,
    BlockDeviceError,
    DataDirection,
    ScsiRequest,
    ScsiStatus,
    SenderRole,
    SrbStatus,
    StorVsc,
    StorVsp,
    parse_packet,
    parse_sense,
)

MIB = 1 << 20
BLOCKS = 2048  # a 1 MiB disk of 512-byte blocks


class Guest:
    """One machine with a 1 MiB disk; ``srb`` sends a hand-made EXECUTE_SRB."""

    def __init__(self, image: Path) -> None:
        self.image = image
        self.vsp = StorVsp({"path": str(image), "size_mb": 1})
        self.loop, self.host, device = connect_pair(self.vsp, StorVsc, memory_mb=16)
        self.driver: StorVsc = device.driver
        self.channel: Any = self.driver.channel
        self.disk = self.driver.block_device
        assert self.disk is not None
        self.disk.write(0, bytes(range(256)) * 2 * BLOCKS)   # a known pattern everywhere
        self.digest = self.image_digest()
        self.gpa = self.driver.device.kernel.alloc_pages(4)
        self.pfn = self.gpa >> 12

    def image_digest(self) -> tuple[int, str]:
        data = self.image.read_bytes()
        return len(data), hashlib.sha256(data).hexdigest()

    def payload(self, cdb: bytes, *, data_length: int, direction: DataDirection,
                cdb_length: int | None = None) -> bytearray:
        request = self.driver.protocol.execute(cdb[:16] or b"\0", data_length=data_length,
                                               direction=direction)
        payload = bytearray(request.payload)
        payload[12 + 16: 12 + 32] = cdb[:16].ljust(16, b"\0")
        payload[12 + 8] = len(cdb) if cdb_length is None else cdb_length
        return payload

    def send(self, payload: bytes, ranges: Any = None) -> list[Any]:
        answers: list[Any] = []

        def done(packet: Any) -> None:
            answers.append(bytes(packet.payload))

        if ranges is None:
            self.channel.send_request(bytes(payload), done)
        else:
            self.channel.send_gpa_direct(ranges, bytes(payload), done)
        self.loop.run()
        return answers

    def srb(self, cdb: bytes, *, data_length: int = 0,
            direction: DataDirection = DataDirection.READ, cdb_length: int | None = None,
            range_bytes: int | None = None) -> ScsiRequest:
        """Send the SRB (over ``range_bytes`` of the 4-page buffer) and return its completion."""
        payload = self.payload(cdb, data_length=data_length, direction=direction,
                               cdb_length=cdb_length)
        size = data_length if range_bytes is None else range_bytes
        ranges = [(size, 0, tuple(range(self.pfn, self.pfn + (size + 4095) // 4096)))] \
            if size else None
        (answer,) = self.send(payload, ranges)
        packet = parse_packet(answer, sender=SenderRole.HOST)
        return ScsiRequest.unpack(packet.body)

    def assert_open_and_untouched(self) -> None:
        assert not self.host.closed, self.host.close_reason
        assert self.vsp.failure is None
        assert self.image_digest() == self.digest

    def assert_closed(self, reason: str) -> None:
        assert self.host.closed
        assert self.vsp.failure is not None
        assert reason in self.vsp.failure
        assert self.image_digest() == self.digest
        self.loop.settle()
        with pytest.raises(BlockDeviceError):
            self.disk.read(0, 1)


@pytest.fixture
def guest(tmp_path: Path) -> Guest:
    return Guest(tmp_path / "disk.img")


def check(reply: ScsiRequest, sense: Any) -> None:
    assert reply.scsi_status == ScsiStatus.CHECK_CONDITION
    assert reply.srb_status & 0x3F in (SrbStatus.ERROR, SrbStatus.INVALID_REQUEST)
    assert reply.srb_status & 0x80   # AUTOSENSE_VALID
    assert parse_sense(reply.cdb_area[: reply.sense_info_length]) == sense
    assert reply.data_transfer_length == 0


def write10(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBIBHB", 0x2A, 0, lba, 0, blocks, 0)


def write16(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBQIBB", 0x8A, 0, lba, blocks, 0, 0)


@pytest.mark.parametrize("cdb_length", [0, 17, 20, 255])
def test_a_bad_cdb_length_is_invalid_field_in_cdb(guest: Guest, cdb_length: int) -> None:
    reply = guest.srb(write10(0, 8), data_length=4096, direction=DataDirection.WRITE,
                      cdb_length=cdb_length)
    check(reply, INVALID_FIELD_IN_CDB)
    guest.assert_open_and_untouched()


def test_a_cdb_shorter_than_its_opcode_needs_is_refused(guest: Guest) -> None:
    reply = guest.srb(write10(0, 8), data_length=4096, direction=DataDirection.WRITE,
                      cdb_length=6)
    assert reply.scsi_status == ScsiStatus.CHECK_CONDITION
    guest.assert_open_and_untouched()


@pytest.mark.parametrize(("cdb", "name"), [
    (write10(BLOCKS - 7, 8), "last block + 1"),
    (write10(0xFFFF_FFFF, 8), "u32 LBA far past the end"),
    (write16(BLOCKS, 8), "first block past the end"),
    (write16((1 << 64) - 1, 8), "LBA + count overflows 64 bits"),
    (write16((1 << 64) - 8, 8), "LBA + count wraps to exactly 0"),
])
def test_a_write_outside_the_disk_is_lba_out_of_range_and_writes_nothing(
        guest: Guest, cdb: bytes, name: str) -> None:
    reply = guest.srb(cdb, data_length=4096, direction=DataDirection.WRITE)
    check(reply, LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE)
    guest.assert_open_and_untouched()


def test_an_unknown_opcode_is_invalid_command_operation_code(guest: Guest) -> None:
    check(guest.srb(bytes((0xC7,)) + bytes(9)), INVALID_COMMAND_OPERATION_CODE)
    guest.assert_open_and_untouched()


def test_a_transfer_length_disagreeing_with_the_cdb_moves_nothing(guest: Guest) -> None:
    # WRITE (10) of 8 blocks (4096 bytes) but only 512 bytes declared and supplied.
    reply = guest.srb(write10(0, 8), data_length=512, direction=DataDirection.WRITE)
    assert reply.srb_status & 0x3F == SrbStatus.DATA_OVERRUN
    assert reply.data_transfer_length == 0
    guest.assert_open_and_untouched()


def test_a_data_length_longer_than_the_gpa_range_closes_the_channel(guest: Guest) -> None:
    payload = guest.payload(write10(0, 16), data_length=8192, direction=DataDirection.WRITE)
    assert guest.send(payload, [(4096, 0, (guest.pfn,))]) == []
    guest.assert_closed("data_transfer_length")


def test_a_data_srb_sent_in_band_closes_the_channel(guest: Guest) -> None:
    payload = guest.payload(write10(0, 8), data_length=4096, direction=DataDirection.WRITE)
    assert guest.send(payload) == []
    guest.assert_closed("data_transfer_length")


@pytest.mark.parametrize("pfn", [4096, (1 << 40) - 1, (1 << 52) - 1])
def test_a_pfn_outside_guest_ram_closes_the_channel(guest: Guest, pfn: int) -> None:
    payload = guest.payload(write10(0, 8), data_length=4096, direction=DataDirection.WRITE)
    assert guest.send(payload, [(4096, 0, (pfn,))]) == []
    guest.assert_closed("outside the guest's RAM")


def test_a_range_running_off_the_end_of_guest_ram_closes_the_channel(guest: Guest) -> None:
    last = (16 * MIB >> 12) - 1   # the guest's last page: the second page is not RAM
    payload = guest.payload(struct.pack(">BBIBHB", 0x28, 0, 0, 0, 16, 0), data_length=8192,
                            direction=DataDirection.READ)
    assert guest.send(payload, [(8192, 0, (last, last + 1))]) == []
    guest.assert_closed("outside the guest's RAM")


def test_a_read_into_scattered_guest_pages_fills_each_in_order(guest: Guest) -> None:
    payload = guest.payload(struct.pack(">BBIBHB", 0x28, 0, 0, 0, 16, 0), data_length=8192,
                            direction=DataDirection.READ)
    pages = (guest.pfn + 3, guest.pfn + 1)
    assert len(guest.send(payload, [(8192, 0, pages)])) == 1

    def view(pfn: int) -> bytes:
        return bytes(guest.driver.device.kernel.view(pfn << 12, 4096))

    expected = bytes(range(256)) * 32
    assert view(pages[0]) + view(pages[1]) == expected
    guest.assert_open_and_untouched()


def test_a_malformed_vstor_packet_closes_the_channel(guest: Guest) -> None:
    assert guest.send(struct.pack("<III", 0x7777, 1, 0) + bytes(52)) == []
    guest.assert_closed("vstor")


def test_a_short_srb_packet_closes_the_channel(guest: Guest) -> None:
    assert guest.send(struct.pack("<III", 3, 1, 0) + bytes(8)) == []
    guest.assert_closed("vstor")


def test_a_packet_of_another_type_closes_the_channel(guest: Guest) -> None:
    guest.channel._writer.write_transfer_pages(0, [(64, 0)], bytes(64), trans_id=5)
    guest.channel._do_signal()
    guest.loop.run()
    guest.assert_closed("packet type")


@settings(max_examples=60, deadline=None)
@given(opcode=st.sampled_from([0x28, 0x2A, 0x88, 0x8A, 0x2F, 0x35, 0x42, 0x12, 0x00, 0x25,
                               0x9E, 0xA0, 0x1A, 0x5A, 0x03]) | st.integers(0, 255),
       body=st.binary(min_size=15, max_size=15), cdb_length=st.integers(0, 255),
       data_length=st.integers(0, 4 * 4096), direction=st.sampled_from(list(DataDirection)))
def test_random_srbs_inside_the_range_never_close_the_channel_or_grow_the_image(
        tmp_path_factory: pytest.TempPathFactory, opcode: int, body: bytes, cdb_length: int,
        data_length: int, direction: DataDirection) -> None:
    guest = _shared_guest(tmp_path_factory)
    size = guest.image.stat().st_size
    reply = guest.srb(bytes((opcode,)) + body, data_length=data_length, direction=direction,
                      cdb_length=cdb_length)
    assert reply.data_transfer_length <= data_length
    assert not guest.host.closed, guest.host.close_reason
    assert guest.image.stat().st_size == size


_GUESTS: dict[str, Guest] = {}


def _shared_guest(factory: pytest.TempPathFactory) -> Guest:
    """One machine for every example (booting one per example would dominate the run)."""
    guest = _GUESTS.get("g")
    if guest is None or guest.host.closed:
        guest = _GUESTS["g"] = Guest(factory.mktemp("hostile") / "disk.img")
    return guest
