"""A hostile producer: the reader returns only valid packets or raises RingCorruptError with a
precise message, and never touches memory outside the ring (fact sheet §4.1, §4.3, §4.5)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from winhv.drivers.vmbus.ring import (
    PacketType,
    Ring,
    RingCorruptError,
    RingReader,
    RingWriter,
)

D = 0x3000
KNOWN = {int(t) for t in PacketType} - {0}


index_values = st.one_of(
    st.integers(0, D // 8 - 1).map(lambda i: i * 8),  # mostly plausible
    st.integers(0, 2**32 - 1),  # anything
)


@given(
    control=st.binary(max_size=68),
    data=st.binary(max_size=256),
    w=index_values,
    r=index_values,
    descriptor=st.tuples(
        st.sampled_from([*KNOWN, 0, 0xE, 0xFFFF]),
        st.integers(0, 12),
        st.integers(0, 0x700),
        st.sampled_from([0, 1, 2, 0x8001]),
    ),
)
def test_reader_on_random_ring_only_yields_valid_packets_or_corrupt_errors(
    control: bytes, data: bytes, w: int, r: int, descriptor: tuple[int, int, int, int]
) -> None:
    # A small guard page each side: anything the reader wrote there would be out of bounds.
    # The data area repeats ``data``, so random descriptors show up all over the ring.
    area = (data * (D // len(data) + 1))[:D] if data else bytes(D)
    memory = bytearray(4096) + control.ljust(4096, b"\0") + area + bytearray(4096)
    struct.pack_into("<II", memory, 4096, w, r)
    if r < D and r % 8 == 0 and r + 8 <= D:  # a plausible descriptor where reading starts
        struct.pack_into("<4H", memory, 8192 + r, *descriptor)
    before = bytes(memory)
    ring = Ring(memoryview(memory)[4096 : 4096 + 4096 + D])
    failure: RingCorruptError | None = None
    try:
        reader = RingReader(ring)
    except RingCorruptError as error:
        failure = error
    if failure is not None:
        assert failure.field == "read_index"
        return
    seen = 0
    try:
        while (packet := reader.read()) is not None:
            seen += 1
            assert packet.type in KNOWN
            assert packet.flags in (0, 1)
            assert 2 <= packet.offset8 <= packet.len8
            assert len(packet.payload) == (packet.len8 - packet.offset8) * 8
            assert len(packet.header) == (packet.offset8 - 2) * 8
            if packet.type == PacketType.DATA_USING_GPA_DIRECT:
                assert packet.ranges
                for byte_count, byte_offset, pfns in packet.ranges:
                    assert byte_offset < 4096
                    assert len(pfns) == (byte_offset + byte_count + 4095) // 4096
            assert seen <= D // 24
        reader.done()
        reader.end_read()
    except RingCorruptError as error:
        failure = error
    if failure is not None:
        assert str(failure).startswith(f"ring corrupt: {failure.field}=")
        assert 0 <= failure.offset < 4096 + D
    after = bytes(memory)
    assert after[:4096] == before[:4096]
    assert after[-4096:] == before[-4096:]
    assert after[8192:] == before[8192:]  # the reader never writes the data area


# Every way to read validates the same fields the same way.
READS = [
    lambda reader: reader.read(),
    lambda reader: reader.read_many(4),
    lambda reader: reader.read_payloads(4),
]
READ_IDS = ["read", "read_many", "read_payloads"]


def corrupt_ring() -> tuple[bytearray, Ring]:
    buf = bytearray(4096 + D)
    ring = Ring(buf, initialize=True)
    RingWriter(ring).write(b"payload!", trans_id=1)
    return buf, ring


def set_desc(buf: bytearray, fmt: str, offset: int, value: int) -> None:
    struct.pack_into(fmt, buf, 4096 + offset, value)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda buf, ring: setattr(ring, "write_index", 0x3000),
            "ring corrupt: write_index=0x3000 is not < the data size "
            "(at buffer offset 0x0; data size 0x3000)",
        ),
        (
            lambda buf, ring: setattr(ring, "write_index", 0x21),
            "ring corrupt: write_index=0x21 is not 8-byte aligned "
            "(at buffer offset 0x0; data size 0x3000)",
        ),
        (
            lambda buf, ring: setattr(ring, "write_index", 0x8),
            "ring corrupt: write_index=0x8 is not at least 0x18 bytes past read index 0x0",
        ),
        (
            lambda buf, ring: set_desc(buf, "<H", 0, 0),
            "ring corrupt: type=0x0 is not a §4.3 packet type (1..0xd) (at buffer offset 0x1000",
        ),
        (
            lambda buf, ring: set_desc(buf, "<H", 0, 0xE),
            "ring corrupt: type=0xe is not a §4.3 packet type",
        ),
        (
            lambda buf, ring: set_desc(buf, "<H", 6, 2),
            "ring corrupt: flags=0x2 is not 0 or 1 (only COMPLETION_REQUESTED) "
            "(at buffer offset 0x1006",
        ),
        (
            lambda buf, ring: set_desc(buf, "<H", 2, 1),
            "ring corrupt: offset8=0x1 is not >= 2 (at buffer offset 0x1002",
        ),
        (
            lambda buf, ring: set_desc(buf, "<H", 4, 1),
            "ring corrupt: len8=0x1 is not >= offset8 (0x2) (at buffer offset 0x1004",
        ),
        (
            lambda buf, ring: set_desc(buf, "<H", 4, 4),
            "ring corrupt: len8=0x4 is not within the 0x20 bytes available (len8 * 8 + 8)",
        ),
    ],
)
@pytest.mark.parametrize("read", READS, ids=READ_IDS)
def test_each_corruption_is_named(mutate, message: str, read) -> None:
    buf, ring = corrupt_ring()
    mutate(buf, ring)
    reader = RingReader(ring)
    with pytest.raises(RingCorruptError) as info:
        read(reader)
    assert str(info.value).startswith(message)
    assert reader.peek is not None
    with pytest.raises(RingCorruptError):  # the position did not move: same error again
        read(reader)


def test_read_index_corruption_is_reported_when_the_reader_opens() -> None:
    _, ring = corrupt_ring()
    ring.read_index = 0x1003
    with pytest.raises(RingCorruptError) as info:
        RingReader(ring)
    error = info.value
    assert str(error) == (
        "ring corrupt: read_index=0x1003 is not 8-byte aligned "
        "(at buffer offset 0x4; data size 0x3000)"
    )
    assert (error.field, error.value, error.expected, error.offset) == (
        "read_index",
        0x1003,
        "8-byte aligned",
        4,
    )


def test_writer_validates_the_consumers_read_index() -> None:
    _, ring = corrupt_ring()
    writer = RingWriter(ring)
    ring.read_index = 0x5000
    with pytest.raises(RingCorruptError, match="read_index=0x5000 is not < the data size"):
        writer.write(b"x")


def gpa_ring(extension: bytes, payload: bytes = b"") -> Ring:
    buf = bytearray(4096 + D)
    ring = Ring(buf, initialize=True)
    RingWriter(ring).write(payload, packet_type=9, header=extension, flags=1)
    return ring


@pytest.mark.parametrize(
    ("extension", "message"),
    [
        (b"", "offset8=0x2 is not >= 3 for a GPA-direct packet"),
        (struct.pack("<II", 0, 0), "range_cnt=0x0 is not >= 1"),
        (struct.pack("<II", 0, 2) + struct.pack("<IIQ", 10, 0, 1), "range 1 starts past it"),
        (struct.pack("<IIIIQ", 0, 1, 10, 4096, 1), "byte_offset=0x1000 is not < 4096"),
        (struct.pack("<IIIIQ", 0, 1, 4097, 0, 1), "2 PFNs needed, 1 present"),
        (struct.pack("<IIIIQQ", 0, 1, 10, 0, 1, 2), "0x8 bytes left over"),
        (struct.pack("<IIII", 0, 1, 0xFFFFFFFF, 4095), "byte_count=0xffffffff"),
    ],
)
@pytest.mark.parametrize("read", READS, ids=READ_IDS)
def test_gpa_direct_range_lists_are_validated(extension: bytes, message: str, read) -> None:
    reader = RingReader(gpa_ring(extension))
    with pytest.raises(RingCorruptError, match=message):
        read(reader)


@pytest.mark.parametrize(
    ("extension", "message"),
    [
        (b"", "offset8=0x2 is not >= 3 for a transfer-page packet"),
        (struct.pack("<HBBI", 1, 0, 0, 1), r"range_cnt=0x1 is not 0 \(the ranges that fill"),
        (struct.pack("<HBBIII", 1, 0, 0, 2, 10, 0), "range_cnt=0x2 is not 1"),
        (struct.pack("<HBBIII", 1, 0, 0, 0xFFFFFFFF, 10, 0), "range_cnt=0xffffffff is not 1"),
    ],
)
@pytest.mark.parametrize("read", READS, ids=READ_IDS)
def test_transfer_page_range_lists_are_validated(extension: bytes, message: str, read) -> None:
    buf = bytearray(4096 + D)
    ring = Ring(buf, initialize=True)
    RingWriter(ring).write(b"", packet_type=7, header=extension, flags=1)
    with pytest.raises(RingCorruptError, match=message):
        read(RingReader(ring))


def test_zero_byte_gpa_range_needs_no_pfn() -> None:
    reader = RingReader(gpa_ring(struct.pack("<IIII", 0, 1, 0, 0)))
    packet = reader.read()
    assert packet is not None
    assert packet.ranges == ((0, 0, ()),)
