"""Interop with an independent reading of fact sheet §4 (``support.specring``), both ways,
across wrap-around and for every packet type the ring writes and reads."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st
from support.specring import SpecRing

from winhv.drivers.vmbus.ring import PacketType, Ring, RingFullError, RingReader, RingWriter

D = 4096  # one data page: packets wrap often


@dataclass(frozen=True)
class Spec:
    type: int
    flags: int
    trans_id: int
    extension: bytes
    payload: bytes
    ranges: tuple | None = None
    transfer: tuple[int, tuple[tuple[int, int], ...]] | None = None  # pageset id, ranges


@st.composite
def gpa_ranges(draw: st.DrawFn) -> tuple:
    out = []
    for _ in range(draw(st.integers(1, 3))):
        byte_offset = draw(st.integers(0, 4095))
        byte_count = draw(st.integers(0, 9000))
        npfn = (byte_offset + byte_count + 4095) // 4096
        pfns = tuple(draw(st.lists(st.integers(0, 2**64 - 1), min_size=npfn, max_size=npfn)))
        out.append((byte_count, byte_offset, pfns))
    return tuple(out)


@st.composite
def packets(draw: st.DrawFn) -> Spec:
    ptype = draw(st.sampled_from([t for t in PacketType if t != PacketType.INVALID]))
    payload = draw(st.binary(max_size=300))
    flags = draw(st.integers(0, 1))
    trans_id = draw(st.integers(0, 2**64 - 1))
    if ptype == PacketType.DATA_USING_GPA_DIRECT:
        ranges = draw(gpa_ranges())
        ext = SpecRing.gpa_direct_extension([(c, o, list(p)) for c, o, p in ranges])
        return Spec(ptype, flags, trans_id, ext, payload, ranges)
    if ptype == PacketType.DATA_USING_XFER_PAGES:
        u32 = st.integers(0, 2**32 - 1)
        pageset = draw(st.integers(0, 0xFFFF))
        xfer = tuple(draw(st.lists(st.tuples(u32, u32), max_size=4)))
        ext = SpecRing.transfer_pages_extension(pageset, list(xfer))
        return Spec(ptype, flags, trans_id, ext, payload, transfer=(pageset, xfer))
    ext = draw(st.binary(max_size=40).map(lambda b: b[: len(b) // 8 * 8]))
    return Spec(ptype, flags, trans_id, ext, payload)


def padded(payload: bytes) -> bytes:
    return payload + bytes(-len(payload) % 8)


start_indices = st.integers(0, D // 8 - 1).map(lambda i: i * 8)


@given(start=start_indices, specs=st.lists(packets(), max_size=40))
def test_spec_writer_to_ring_reader(start: int, specs: list[Spec]) -> None:
    buf = bytearray(4096 + D)
    spec = SpecRing(buf, initialize=True)
    spec.write_index = spec.read_index = start
    reader = RingReader(Ring(buf))
    pending = list(specs)
    while pending:
        wrote = []
        while pending:
            p = pending[0]
            signal = spec.write(
                p.payload,
                packet_type=p.type,
                flags=p.flags,
                trans_id=p.trans_id,
                extension=p.extension,
            )
            if signal is None:
                break
            wrote.append(pending.pop(0))
        assert wrote, "a single packet of this size must fit an empty ring"
        got = reader.read_many(len(wrote) + 5)
        reader.done()
        assert len(got) == len(wrote)
        for p, g in zip(wrote, got, strict=True):
            assert (g.type, g.flags, g.trans_id) == (p.type, p.flags, p.trans_id)
            assert bytes(g.header) == p.extension
            assert bytes(g.payload) == padded(p.payload)
            assert g.ranges == p.ranges
            assert (g.transfer_pageset_id, g.transfer_ranges) == (p.transfer or (None, None))
        assert spec.bytes_to_read() == 0


@given(start=start_indices, specs=st.lists(packets(), max_size=40))
def test_ring_writer_to_spec_reader(start: int, specs: list[Spec]) -> None:
    buf = bytearray(4096 + D)
    spec = SpecRing(buf, initialize=True)
    spec.write_index = spec.read_index = start
    writer = RingWriter(Ring(buf))
    pending = list(specs)
    while pending:
        wrote = []
        while pending:
            p = pending[0]
            try:
                if p.ranges is not None:
                    writer.write_gpa_direct(p.ranges, p.payload, trans_id=p.trans_id, flags=p.flags)
                elif p.transfer is not None:
                    writer.write_transfer_pages(*p.transfer, p.payload, trans_id=p.trans_id,
                                                flags=p.flags)
                else:
                    writer.write(
                        p.payload,
                        packet_type=p.type,
                        flags=p.flags,
                        trans_id=p.trans_id,
                        header=p.extension,
                    )
            except RingFullError:
                break
            wrote.append(pending.pop(0))
        assert wrote
        for p in wrote:
            g = spec.read()
            assert g is not None
            assert (g.type, g.flags, g.trans_id) == (p.type, p.flags, p.trans_id)
            assert g.offset8 == 2 + len(p.extension) // 8
            assert g.extension == p.extension
            assert g.payload == padded(p.payload)
            assert g.trailer == g.start << 32
        assert spec.read() is None


@given(start=start_indices, payloads=st.lists(st.binary(max_size=200), max_size=30))
def test_batched_ring_writes_read_back_by_spec_reader(start: int, payloads: list[bytes]) -> None:
    buf = bytearray(4096 + D)
    spec = SpecRing(buf, initialize=True)
    spec.write_index = spec.read_index = start
    writer = RingWriter(Ring(buf))
    count, signal = writer.write_many(payloads, trans_id_base=1000)
    assert signal == (count > 0)
    for i in range(count):
        g = spec.read()
        assert g is not None
        assert (g.type, g.trans_id, g.payload) == (6, 1000 + i, padded(payloads[i]))
    assert spec.read() is None
