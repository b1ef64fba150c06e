"""The ring's fast paths: ``read_payloads`` (one C loop, copies, full validation), ``write_many``
over lists and other iterables, positional ``write``, and the payload a Packet exports through
the buffer protocol (fact sheet §4.3-§4.5)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.specring import SpecRing

from winhv.drivers.vmbus.ring import (
    CONTROL_PAGE_SIZE,
    PacketType,
    Ring,
    RingCorruptError,
    RingReader,
    RingWriter,
)

D = 4096  # one data page: packets wrap often


def new_ring(data_size: int = D) -> tuple[bytearray, Ring, RingWriter, RingReader]:
    buf = bytearray(CONTROL_PAGE_SIZE + data_size)
    ring = Ring(buf, initialize=True)
    return buf, ring, RingWriter(ring), RingReader(ring)


def padded(payload: bytes) -> bytes:
    return payload + bytes(-len(payload) % 8)


start_indices = st.integers(0, D // 8 - 1).map(lambda i: i * 8)


@st.composite
def gpa_direct(draw: st.DrawFn) -> bytes:
    """A valid §4.3 GPA-direct extension: 1-2 ranges, each with exactly its PFNs."""
    ranges = []
    for _ in range(draw(st.integers(1, 2))):
        byte_offset, byte_count = draw(st.integers(0, 4095)), draw(st.integers(0, 9000))
        npfn = (byte_offset + byte_count + 4095) // 4096
        pfns = draw(st.lists(st.integers(0, 2**64 - 1), min_size=npfn, max_size=npfn))
        ranges.append((byte_count, byte_offset, pfns))
    return SpecRing.gpa_direct_extension(ranges)


packets = st.one_of(
    st.tuples(st.just(6), st.just(b""), st.binary(max_size=300)),
    st.tuples(st.just(0xB), st.just(b""), st.binary(max_size=64)),
    st.tuples(st.just(9), gpa_direct(), st.binary(max_size=100)),
)


@given(start=start_indices, specs=st.lists(packets, max_size=30), chunk=st.integers(1, 8))
def test_read_payloads_matches_what_a_spec_writer_wrote_across_wraps(
    start: int, specs: list[tuple[int, bytes, bytes]], chunk: int
) -> None:
    buf = bytearray(CONTROL_PAGE_SIZE + D)
    spec = SpecRing(buf, initialize=True)
    spec.write_index = spec.read_index = start
    reader = RingReader(Ring(buf))
    pending = list(specs)
    while pending:
        wrote = []
        while (
            pending
            and spec.write(pending[0][2], packet_type=pending[0][0], extension=pending[0][1])
            is not None
        ):
            wrote.append(pending.pop(0))
        assert wrote, "a single packet of this size must fit an empty ring"
        got: list[bytes] = []
        while len(got) < len(wrote):
            batch = reader.read_payloads(chunk)
            assert batch, "read_payloads stopped before the published packets ran out"
            assert len(batch) <= chunk
            got += batch
        assert reader.read_payloads(chunk) == []
        assert all(type(p) is bytes for p in got)
        assert got == [padded(payload) for _, _, payload in wrote]
        reader.done()
        assert spec.bytes_to_read() == 0


@given(start=start_indices, payloads=st.lists(st.binary(max_size=200), max_size=30))
def test_read_payloads_equals_read_many_payloads(start: int, payloads: list[bytes]) -> None:
    buf = bytearray(CONTROL_PAGE_SIZE + D)
    ring = Ring(buf, initialize=True)
    ring.write_index = ring.read_index = start
    count, _ = RingWriter(ring).write_many(payloads)
    twin = bytearray(buf)
    by_packet = [bytes(p.payload) for p in RingReader(Ring(twin)).read_many(count + 1)]
    assert RingReader(ring).read_payloads(count + 1) == by_packet
    assert by_packet == [padded(p) for p in payloads[:count]]


def test_read_payloads_starts_with_the_peeked_packet_and_honours_max_count() -> None:
    _, _, writer, reader = new_ring()
    writer.write_many([b"one", b"two", b"three"])
    peeked = reader.peek()
    assert peeked is not None
    assert reader.read_payloads(0) == []
    assert reader.read_payloads(-1) == []
    assert reader.peek() is peeked  # nothing consumed by an empty request
    assert reader.read_payloads(2) == [padded(b"one"), padded(b"two")]
    assert reader.read_payloads(5) == [padded(b"three")]
    assert reader.read() is None


def test_read_payloads_are_copies_that_outlive_done() -> None:
    buf, _, writer, reader = new_ring()
    writer.write(b"original")
    (payload,) = reader.read_payloads(1)
    assert reader.done() is False
    buf[CONTROL_PAGE_SIZE : CONTROL_PAGE_SIZE + D] = b"\xff" * D  # the producer reuses the space
    assert payload == b"original"


def test_read_payloads_does_not_publish() -> None:
    _, ring, writer, reader = new_ring()
    writer.write_many([b"a" * 8, b"b" * 8])
    reader.read_payloads(2)
    assert ring.read_index == 0
    assert reader.unpublished == 2 * 32
    reader.done()
    assert ring.read_index == 64


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (0, 0xE, "type=0xe is not a §4.3 packet type"),
        (6, 2, "flags=0x2 is not 0 or 1"),
        (2, 1, "offset8=0x1 is not >= 2"),
        (4, 0x200, "len8=0x200 is not within"),
    ],
)
def test_read_payloads_validates_like_read(offset: int, value: int, message: str) -> None:
    buf, _, writer, reader = new_ring()
    writer.write_many([b"good one", b"bad one!"])
    struct.pack_into("<H", buf, CONTROL_PAGE_SIZE + 32 + offset, value)  # the second packet
    with pytest.raises(RingCorruptError, match=message):
        reader.read_payloads(5)
    with pytest.raises(RingCorruptError, match=message):  # stopped at the corrupt packet
        reader.read_payloads(5)
    assert reader.unpublished == 32  # the good packet before it was consumed


def test_read_payloads_validates_gpa_direct_ranges_without_decoding() -> None:
    _, _, writer, reader = new_ring()
    bad = struct.pack("<IIIIQ", 0, 1, 4097, 0, 1)  # 2 PFNs needed, 1 present
    writer.write(b"data", packet_type=PacketType.DATA_USING_GPA_DIRECT, header=bad, flags=1)
    with pytest.raises(RingCorruptError, match="2 PFNs needed, 1 present"):
        reader.read_payloads(1)


def test_read_payloads_reads_a_wrapping_gpa_direct_packet() -> None:
    _, ring, writer, reader = new_ring()
    ring.write_index = ring.read_index = D - 24
    writer, reader = RingWriter(ring), RingReader(ring)
    writer.write_gpa_direct([(100, 8, [7])], b"wrapped payload", trans_id=3)
    assert reader.read_payloads(1) == [padded(b"wrapped payload")]


# -- write_many and write ----------------------------------------------------------------------


@given(start=start_indices, payloads=st.lists(st.binary(max_size=200), max_size=30))
def test_write_many_writes_the_same_bytes_from_a_list_a_tuple_or_a_generator(
    start: int, payloads: list[bytes]
) -> None:
    images = []
    results = []
    for source in (list, tuple, lambda ps: (p for p in ps), lambda ps: [bytearray(p) for p in ps]):
        buf = bytearray(CONTROL_PAGE_SIZE + D)
        ring = Ring(buf, initialize=True)
        ring.write_index = ring.read_index = start
        results.append(RingWriter(ring).write_many(source(payloads), trans_id_base=5))
        images.append(bytes(buf))
    assert all(image == images[0] for image in images)
    assert all(result == results[0] for result in results)


def test_write_many_stops_pulling_from_a_generator_at_the_first_packet_that_does_not_fit() -> None:
    _, _, writer, _ = new_ring()
    pulled = []

    def payloads():
        for i in range(100):
            pulled.append(i)
            yield bytes(1000)

    count, signal = writer.write_many(payloads())
    assert (count, signal) == (3, True)  # 3 x 1024 bytes fit in 4096 - 8
    assert pulled == [0, 1, 2, 3]


def test_write_many_rolls_back_when_an_item_is_not_a_buffer() -> None:
    _, ring, writer, _ = new_ring()
    with pytest.raises(TypeError):
        writer.write_many([b"fine", "not bytes"])
    assert ring.write_index == 0
    assert writer.write_many([b"fine"]) == (1, True)
    assert ring.write_index == 32


def test_write_takes_trans_id_and_flags_by_position_or_keyword() -> None:
    images = []
    for call in (
        lambda w: w.write(b"payload", 0x1234, 1),
        lambda w: w.write(b"payload", trans_id=0x1234, flags=1),
        lambda w: w.write(b"payload", 0x1234, flags=1),
    ):
        buf, _, writer, _ = new_ring()
        assert call(writer) is True
        images.append(bytes(buf))
    assert images[0] == images[1] == images[2]
    assert struct.unpack_from("<HHHHQ", images[0], CONTROL_PAGE_SIZE) == (6, 2, 3, 1, 0x1234)


@given(spec=packets, trans_id=st.integers(0, 2**64 - 1), flags=st.sampled_from([0, 1]))
def test_write_packet_writes_what_write_writes(spec: tuple[int, bytes, bytes], trans_id: int,
                                               flags: int) -> None:
    ptype, header, payload = spec
    images = []
    for call in (
        lambda w: w.write(payload, trans_id, flags, packet_type=ptype, header=header),
        lambda w: w.write_packet(payload, trans_id, flags, ptype, header),
    ):
        buf, _, writer, reader = new_ring()
        assert call(writer) is True
        assert bytes(reader.read().payload) == padded(payload)
        images.append(bytes(buf))
    assert images[0] == images[1]


# -- the payload exported by a Packet --------------------------------------------------------


def test_a_packet_exports_its_payload_read_only() -> None:
    buf, _, writer, reader = new_ring()
    writer.write(b"12345678abc", trans_id=1)
    packet = reader.read()
    assert packet is not None
    assert bytes(packet) == padded(b"12345678abc")
    view = memoryview(packet)
    assert (view.readonly, view.format, view.shape, view.strides) == (True, "B", (16,), (1,))
    with pytest.raises(TypeError, match="read-write"):
        struct.pack_into("<B", packet, 0, 1)  # a writable export is refused
    with pytest.raises(TypeError, match="read-only"):
        view[0] = 1
    buf[CONTROL_PAGE_SIZE + 16] = ord("X")
    assert bytes(view[:2]) == b"X2"  # zero-copy: a view of the ring's bytes
    assert bytes(packet.payload[:2]) == b"X2"


def test_payload_views_keep_the_ring_alive_and_leak_nothing() -> None:
    buf = bytearray(CONTROL_PAGE_SIZE + D)
    ring = Ring(buf, initialize=True)
    RingWriter(ring).write(b"kept alive")
    packet = RingReader(ring).read()
    assert packet is not None
    payload = packet.payload
    del ring, packet
    assert bytes(payload) == padded(b"kept alive")
    with pytest.raises(BufferError):
        buf.extend(b"x")  # the view still holds the ring, which holds the export
    del payload
    buf.extend(b"x")  # no cycle left behind: the export is gone without a GC pass


def test_the_payload_view_is_made_once_and_kept() -> None:
    _, _, writer, reader = new_ring()
    writer.write(b"same bytes")
    packet = reader.read()
    assert packet is not None
    assert packet.payload is packet.payload


@pytest.mark.parametrize(
    ("header", "payload"),
    [(b"", b""), (b"", b"x" * 13), (b"h" * 8, b"y" * 40), (b"h" * 24, b"")],
)
def test_payload_and_header_views_are_exact_read_only_windows(
    header: bytes, payload: bytes
) -> None:
    # Every view the reader makes is a plain 1-D byte view: the right length, shape and
    # flags, sliceable, and a window on the ring's own bytes.
    buf, ring, writer, reader = new_ring()
    writer.write(b"filler", 1)  # not at offset 0, so a wrong base pointer shows
    writer.write(payload, 2, header=header)
    reader.read()
    packet = reader.read()
    assert packet is not None
    for view, expected, start in (
        (packet.payload, padded(payload), packet.start + packet.offset8 * 8),
        (packet.header, header, packet.start + 16),
    ):
        if view is packet.header and not header:
            assert view == b""  # no extension: the shared empty bytes, not a view
            continue
        assert isinstance(view, memoryview)
        assert (view.readonly, view.format, view.ndim, view.itemsize) == (True, "B", 1, 1)
        assert (len(view), view.nbytes, view.shape, view.strides) == (
            len(expected), len(expected), (len(expected),), (1,))
        assert view.c_contiguous
        assert view.f_contiguous
        assert view.tobytes() == expected
        assert bytes(view[1:3]) == expected[1:3]
        if expected:
            buf[CONTROL_PAGE_SIZE + start] ^= 0xFF  # zero-copy: the ring's bytes, at start
            assert view[0] == expected[0] ^ 0xFF
            buf[CONTROL_PAGE_SIZE + start] ^= 0xFF
    assert ring.data_size == D


def test_a_payload_ending_exactly_at_the_end_of_the_data_area_is_a_view() -> None:
    # The last non-wrapping position: the view's window ends at D, the trailer wraps to 0.
    _, ring, writer, reader = new_ring()
    body = 64
    total = 16 + body + 8
    ring.write_index = ring.read_index = D - (16 + body)
    writer, reader = RingWriter(ring), RingReader(ring)
    writer.write(b"\xab" * body, 7)
    packet = reader.read()
    assert packet is not None
    assert packet.start + packet.len8 * 8 == D
    assert isinstance(packet.payload, memoryview)
    assert bytes(packet.payload) == b"\xab" * body
    assert ring.write_index == (D - (16 + body) + total) % D


@given(
    w=st.integers(0, 2**32 - 1) | start_indices,
    r=start_indices,
    data=st.binary(min_size=8, max_size=256),
    max_count=st.integers(1, 600),
)
def test_read_payloads_on_random_ring_contents_returns_or_raises_corrupt(
    w: int, r: int, data: bytes, max_count: int
) -> None:
    # Guard pages each side; the data area repeats ``data`` so descriptors are everywhere.
    memory = bytearray(4096) + bytearray(4096) + (data * (D // len(data) + 1))[:D] + bytearray(4096)
    struct.pack_into("<II", memory, 4096, w, r)
    before = bytes(memory)
    reader = RingReader(Ring(memoryview(memory)[4096 : 2 * 4096 + D]))
    failure: RingCorruptError | None = None
    payloads: list[bytes] = []
    try:
        payloads = reader.read_payloads(max_count)
    except RingCorruptError as error:
        failure = error
    if failure is not None:
        assert 0 <= failure.offset < 4096 + D
    assert len(payloads) <= max_count
    assert sum(len(p) + 24 for p in payloads) <= D  # each one a validated packet
    assert bytes(memory) == before  # read_payloads wrote nothing, inside the ring or out
