"""Ring layout against fact sheet §4.1-§4.3: offsets, descriptor, trailer, padding, byte images,
space accounting, and the API's argument checks."""

from __future__ import annotations

import mmap
import struct

import pytest
from support.exports import public_names

from winhv.drivers.vmbus import ring as ring_ns
from winhv.drivers.vmbus.ring import (
    CONTROL_PAGE_SIZE,
    DESCRIPTOR_SIZE,
    FEATURE_BITS_OFFSET,
    FEATURE_PENDING_SEND_SIZE,
    INTERRUPT_MASK_OFFSET,
    PACKET_FLAG_COMPLETION_REQUESTED,
    PENDING_SEND_SIZE_OFFSET,
    READ_INDEX_OFFSET,
    TRAILER_SIZE,
    WRITE_INDEX_OFFSET,
    Packet,
    PacketTooLargeError,
    PacketType,
    Ring,
    RingError,
    RingFullError,
    RingReader,
    RingWriter,
)

D = 0x2000


def new_ring(data_size: int = D) -> tuple[bytearray, Ring, RingWriter, RingReader]:
    buf = bytearray(CONTROL_PAGE_SIZE + data_size)
    ring = Ring(buf, initialize=True)
    return buf, ring, RingWriter(ring), RingReader(ring)


def test_public_names_are_exactly_all() -> None:
    public = public_names(ring_ns)
    assert set(ring_ns.__all__) == public


def test_control_page_offsets_match_fact_sheet_4_1() -> None:
    assert CONTROL_PAGE_SIZE == 4096
    assert (WRITE_INDEX_OFFSET, READ_INDEX_OFFSET) == (0, 4)
    assert (INTERRUPT_MASK_OFFSET, PENDING_SEND_SIZE_OFFSET) == (8, 12)
    assert FEATURE_BITS_OFFSET == 64
    assert FEATURE_PENDING_SEND_SIZE == 1
    assert (DESCRIPTOR_SIZE, TRAILER_SIZE) == (16, 8)
    assert PACKET_FLAG_COMPLETION_REQUESTED == 1


def test_packet_types_are_the_4_3_enum() -> None:
    assert [(t.name, t.value) for t in PacketType] == [
        ("INVALID", 0x0),
        ("SYNCH", 0x1),
        ("ADD_XFER_PAGESET", 0x2),
        ("RM_XFER_PAGESET", 0x3),
        ("ESTABLISH_GPADL", 0x4),
        ("TEARDOWN_GPADL", 0x5),
        ("DATA_INBAND", 0x6),
        ("DATA_USING_XFER_PAGES", 0x7),
        ("DATA_USING_GPADL", 0x8),
        ("DATA_USING_GPA_DIRECT", 0x9),
        ("CANCEL_REQUEST", 0xA),
        ("COMP", 0xB),
        ("DATA_USING_ADDITIONAL_PKT", 0xC),
        ("ADDITIONAL_DATA", 0xD),
    ]


def test_control_fields_are_single_u32s_at_their_offsets() -> None:
    buf, ring, _, _ = new_ring()
    ring.write_index, ring.read_index = 0x18, 0x30
    ring.interrupt_mask, ring.pending_send_size = 1, 0x48
    assert struct.unpack_from("<4I", buf, 0) == (0x18, 0x30, 1, 0x48)
    assert struct.unpack_from("<I", buf, 64) == (1,)
    struct.pack_into("<I", buf, 64, 0)
    assert ring.feature_bits == 0
    assert ring.data_size == D


def test_initialize_zeroes_control_page_and_sets_feature_bit() -> None:
    buf = bytearray(b"\xff" * (CONTROL_PAGE_SIZE + D))
    Ring(buf, initialize=True)
    expected = bytearray(CONTROL_PAGE_SIZE)
    expected[64] = 1
    assert buf[:CONTROL_PAGE_SIZE] == expected
    assert buf[CONTROL_PAGE_SIZE:] == b"\xff" * D  # the data area is left alone


def test_without_initialize_the_control_page_is_untouched() -> None:
    buf = bytearray(CONTROL_PAGE_SIZE + D)
    struct.pack_into("<4I", buf, 0, 0x40, 0x20, 1, 0)
    ring = Ring(buf)
    assert (ring.write_index, ring.read_index, ring.interrupt_mask) == (0x40, 0x20, 1)
    assert ring.bytes_to_read == 0x20


def test_exact_byte_image_of_a_small_packet_at_a_known_index() -> None:
    """Hand-computed from §4.3: 5-byte payload at write index 0x40."""
    buf, ring, _, _ = new_ring()
    ring.write_index = ring.read_index = 0x40
    writer = RingWriter(ring)
    writer.write(b"ABCDE", trans_id=0x1122334455667788, flags=1)
    image = bytes(buf[CONTROL_PAGE_SIZE + 0x40 : CONTROL_PAGE_SIZE + 0x40 + 32])
    assert image == bytes.fromhex(
        "0600"  # type = VM_PKT_DATA_INBAND
        "0200"  # offset8 = 2 (16 bytes)
        "0300"  # len8 = align8(16 + 5) / 8 = 3
        "0100"  # flags = COMPLETION_REQUESTED
        "8877665544332211"  # trans_id
        "4142434445000000"  # payload + 3 zero padding bytes
        "0000000040000000"  # trailer: u32 0, u32 start index 0x40 (= 0x40 << 32)
    )
    assert ring.write_index == 0x40 + 32
    assert struct.unpack_from("<Q", buf, CONTROL_PAGE_SIZE + 0x40 + 24)[0] == 0x40 << 32


def test_padding_is_zeroed_even_over_stale_bytes() -> None:
    buf, _, writer, reader = new_ring()
    buf[CONTROL_PAGE_SIZE:] = b"\xee" * D
    writer.write(b"\x01")
    assert bytes(buf[CONTROL_PAGE_SIZE + 16 : CONTROL_PAGE_SIZE + 24]) == b"\x01" + bytes(7)
    packet = reader.read()
    assert packet is not None
    assert bytes(packet.payload) == b"\x01" + bytes(7)


def test_packet_with_extension_header_sets_offset8() -> None:
    buf, _, writer, reader = new_ring()
    header = struct.pack("<II", 0x1234, 0)  # DATA_USING_GPADL: gpadl u32, reserved u32
    writer.write(b"xyz", packet_type=PacketType.DATA_USING_GPADL, header=header)
    ptype, offset8, len8 = struct.unpack_from("<3H", buf, CONTROL_PAGE_SIZE)
    assert (ptype, offset8, len8) == (8, 3, 4)
    packet = reader.read()
    assert packet is not None
    assert packet.type is PacketType.DATA_USING_GPADL
    assert bytes(packet.header) == header
    assert bytes(packet.payload) == b"xyz" + bytes(5)
    assert (packet.ranges, packet.transfer_ranges, packet.transfer_pageset_id) == (None,) * 3


def test_transfer_page_packets_have_the_linux_layout() -> None:
    # vmtransfer_page_packet_header (§4.3): xfer_pageset_id u16 @16, sender_owns_set u8 @18,
    # reserved u8 @19, range_cnt u32 @20, then {byte_count u32, byte_offset u32} from @24.
    buf, _, writer, reader = new_ring()
    writer.write_transfer_pages(0xCAFE, [(1500, 0), (60, 4096 * 3 + 8)], b"", trans_id=9,
                                sender_owns=True)
    at = CONTROL_PAGE_SIZE
    assert struct.unpack_from("<HHHHQ", buf, at) == (7, (24 + 16) // 8, (24 + 16) // 8, 1, 9)
    assert struct.unpack_from("<HBBI", buf, at + 16) == (0xCAFE, 1, 0, 2)
    assert struct.unpack_from("<4I", buf, at + 24) == (1500, 0, 60, 4096 * 3 + 8)
    packet = reader.read()
    assert packet is not None
    assert packet.type is PacketType.DATA_USING_XFER_PAGES
    assert packet.completion_requested
    assert packet.transfer_pageset_id == 0xCAFE
    assert packet.transfer_ranges == ((1500, 0), (60, 4096 * 3 + 8))
    assert packet.ranges is None  # GPA-direct only: consumers test it to mean type 9
    assert bytes(packet.payload) == b""


def test_zero_byte_payload_is_a_descriptor_and_trailer() -> None:
    _, ring, writer, reader = new_ring()
    writer.write(b"", trans_id=3)
    assert ring.write_index == 24
    packet = reader.read()
    assert packet is not None
    assert (packet.len8, packet.trans_id, bytes(packet.payload)) == (2, 3, b"")


def test_completion_and_gpa_direct_builders() -> None:
    buf, _, writer, reader = new_ring()
    writer.write_gpa_direct([(4096, 16, [0x1234, 0x5678]), (10, 0, [9])], b"req", trans_id=77)
    writer.write_completion(77, b"ok")
    # GPA direct: reserved, range_cnt=2, {4096, 16, pfn, pfn}, {10, 0, pfn} -> 8+24+16 = 48 bytes
    assert struct.unpack_from("<3H", buf, CONTROL_PAGE_SIZE) == (9, (16 + 48) // 8, 9)
    assert struct.unpack_from("<II", buf, CONTROL_PAGE_SIZE + 16) == (0, 2)
    first, second = reader.read_many(10)
    assert first.type is PacketType.DATA_USING_GPA_DIRECT
    assert first.completion_requested
    assert first.ranges == ((4096, 16, (0x1234, 0x5678)), (10, 0, (9,)))
    assert bytes(first.payload) == b"req" + bytes(5)
    assert second.type is PacketType.COMP
    assert (second.trans_id, second.flags, second.ranges) == (77, 0, None)


@pytest.mark.parametrize(
    ("ranges", "message"),
    [
        ([], "at least one range"),
        ([(10, 4096, [1])], "byte_offset=4096"),
        ([(4097, 0, [1])], "needs 2 PFNs, got 1"),
    ],
)
def test_gpa_direct_builder_rejects_inconsistent_ranges(ranges: list, message: str) -> None:
    _, _, writer, _ = new_ring()
    with pytest.raises(ValueError, match=message):
        writer.write_gpa_direct(ranges, b"", trans_id=1)


def test_payload_accepts_any_buffer_and_is_zero_copy_when_not_wrapping() -> None:
    buf, _, writer, reader = new_ring()
    writer.write(memoryview(bytearray(b"12345678")))
    packet = reader.read()
    assert packet is not None
    assert isinstance(packet.payload, memoryview)
    assert packet.payload.readonly
    buf[CONTROL_PAGE_SIZE + 16] = ord("X")  # the view sees the ring's bytes
    assert bytes(packet.payload) == b"X2345678"


def test_wrapping_packet_is_a_bytes_copy_with_correct_contents() -> None:
    _, ring, writer, reader = new_ring()
    ring.write_index = ring.read_index = D - 24
    writer, reader = RingWriter(ring), RingReader(ring)
    payload = bytes(range(40))
    writer.write(payload, trans_id=5)
    assert ring.write_index == (D - 24 + 16 + 40 + 8) % D
    packet = reader.read()
    assert packet is not None
    assert isinstance(packet.payload, bytes)
    assert packet.payload == payload
    assert packet.start == D - 24


def test_max_packet_size_is_d_minus_8_and_is_honoured() -> None:
    _, ring, writer, reader = new_ring()
    assert ring.max_packet_size == D - 8
    biggest = D - 8 - 16 - 8  # payload that makes the packet + trailer exactly D - 8
    with pytest.raises(PacketTooLargeError, match="max_packet_size is 0x1ff8"):
        writer.write(bytes(biggest + 1))
    assert writer.write(bytes(biggest))
    assert ring.bytes_to_write == 8  # the 8 bytes that always stay unused
    assert reader.read() is not None


def test_max_packet_size_is_capped_by_the_u16_len8() -> None:
    _, ring, writer, _ = new_ring(0x100000)
    assert ring.max_packet_size == 0xFFFF * 8 + 8
    with pytest.raises(PacketTooLargeError):
        writer.write(bytes(0xFFFF * 8))


def test_ring_never_fills_completely() -> None:
    _, ring, writer, _ = new_ring()
    for _ in range(D // 64 - 1):
        writer.write(bytes(40))  # 64 bytes each with trailer; D / 64 of them would fill exactly
    with pytest.raises(RingFullError) as info:
        writer.write(bytes(40))
    assert ring.bytes_to_write == 64
    assert (info.value.needed, info.value.available) == (64, 64)
    writer.write(bytes(32))  # 56 bytes < 64 free: fits, leaving exactly 8 unused
    assert ring.bytes_to_write == 8


def test_transaction_stages_then_publishes_once() -> None:
    _, ring, writer, reader = new_ring()
    writer.begin()
    assert writer.write(b"a") is False
    assert writer.write(b"b") is False
    assert ring.write_index == 0
    assert reader.read() is None
    assert writer.commit() is True
    assert [bytes(p.payload[:1]) for p in reader.read_many(5)] == [b"a", b"b"]


def test_abort_drops_staged_packets() -> None:
    _, ring, writer, reader = new_ring()
    writer.begin()
    writer.write(b"gone")
    writer.abort()
    assert ring.write_index == 0
    assert writer.write(b"kept") is True
    packet = reader.read()
    assert packet is not None
    assert bytes(packet.payload[:4]) == b"kept"


def test_transaction_misuse_is_an_error() -> None:
    _, _, writer, reader = new_ring()
    with pytest.raises(RingError, match="without begin"):
        writer.commit()
    with pytest.raises(RingError, match="without begin"):
        writer.abort()
    writer.begin()
    with pytest.raises(RingError, match="inside a transaction"):
        writer.begin()
    with pytest.raises(RingError, match="empty ring"):
        reader.pop()


def test_write_many_writes_what_fits_with_one_publish() -> None:
    _, _, writer, reader = new_ring()
    count, signal = writer.write_many([bytes(40)] * 1000, trans_id_base=100)
    assert (count, signal) == (D // 64 - 1, True)
    packets = reader.read_many(1000)
    assert [p.trans_id for p in packets] == list(range(100, 100 + count))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"packet_type": 0}, "packet_type=0x0"),
        ({"packet_type": 0xE}, "packet_type=0xe"),
        ({"flags": 2}, "flags=0x2"),
        ({"header": b"1234"}, "multiple of 8"),
    ],
)
def test_writer_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    _, ring, writer, _ = new_ring()
    with pytest.raises(ValueError, match=message):
        writer.write(b"", **kwargs)
    assert ring.write_index == 0


@pytest.mark.parametrize(
    ("size", "error"),
    [(4096, ValueError), (4096 + 100, ValueError), (0x3000, None)],
)
def test_ring_checks_the_buffer_size(size: int, error: type[Exception] | None) -> None:
    if error is None:
        assert Ring(bytearray(size)).data_size == size - 4096
    else:
        with pytest.raises(error, match="positive multiple of 4096"):
            Ring(bytearray(size))


def test_ring_rejects_read_only_and_misaligned_buffers() -> None:
    with pytest.raises(TypeError, match="writable"):
        Ring(bytes(0x2000))
    with pytest.raises(ValueError, match="8-byte aligned"):
        Ring(memoryview(bytearray(0x2000 + 4))[4:])


def test_ring_works_over_mmap_and_guest_memory_slices() -> None:
    with mmap.mmap(-1, 3 * 4096) as mem:
        ring = Ring(mem, initialize=True)
        writer, reader = RingWriter(ring), RingReader(ring)
        writer.write(b"hello")
        packet = reader.read()
        assert packet is not None
        assert bytes(packet.payload[:5]) == b"hello"
        del packet, reader, writer, ring
    guest = bytearray(8 * 4096)
    ring = Ring(memoryview(guest)[4096 : 4096 * 4], initialize=True)
    RingWriter(ring).write(b"in guest")
    assert guest[2 * 4096 + 16 : 2 * 4096 + 24] == b"in guest"


def test_ring_holds_the_buffer_export() -> None:
    buf = bytearray(0x2000)
    ring = Ring(buf)
    with pytest.raises(BufferError):
        buf.extend(b"x")
    del ring
    buf.extend(b"x")


def test_packets_are_not_constructible_from_python() -> None:
    with pytest.raises(TypeError):
        Packet()


def test_packet_size_helper() -> None:
    assert RingWriter.packet_size(0) == 24
    assert RingWriter.packet_size(5) == 32
    assert RingWriter.packet_size(8, 16) == 48


def test_write_many_drops_its_packets_when_one_can_never_fit() -> None:
    _, ring, writer, reader = new_ring()
    with pytest.raises(PacketTooLargeError):
        writer.write_many([b"a", b"b", bytes(D)])
    assert ring.write_index == 0
    assert reader.read() is None


def test_write_many_inside_a_transaction_joins_it() -> None:
    _, ring, writer, reader = new_ring()
    writer.begin()
    assert writer.write_many([b"a", b"b"]) == (2, False)
    assert ring.write_index == 0
    assert writer.commit() is True
    assert len(reader.read_many(5)) == 2
