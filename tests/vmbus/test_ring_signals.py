"""Signal decisions at their exact boundaries (fact sheet §4.4 rule 7, §4.5 steps 2-4)."""

from __future__ import annotations

import pytest

from winhv.drivers.vmbus.ring import Ring, RingFullError, RingReader, RingWriter

D = 4096


@pytest.fixture
def pair() -> tuple[Ring, RingWriter, RingReader]:
    ring = Ring(bytearray(4096 + D), initialize=True)
    return ring, RingWriter(ring), RingReader(ring)


def fill_with_64_byte_packets(writer: RingWriter, count: int) -> None:
    for _ in range(count):
        writer.write(bytes(40))  # 16 + 40 + 8 trailer = 64 bytes


def test_consumer_signalled_only_on_empty_to_non_empty(pair) -> None:
    _, writer, reader = pair
    assert writer.write(b"1") is True
    assert writer.write(b"2") is False  # not empty before: no signal
    reader.read()
    assert writer.write(b"3") is False  # popped but not published: the ring is not empty
    reader.read_many(5)
    reader.done()
    assert writer.write(b"4") is True  # published empty -> non-empty


def test_consumer_not_signalled_while_masked(pair) -> None:
    _, writer, reader = pair
    reader.begin_read()
    assert writer.write(b"x") is False
    assert reader.end_read() is True  # data arrived while masked: keep draining
    reader.read()
    reader.done()
    assert reader.end_read() is False
    assert writer.write(b"y") is True


def test_producer_signal_exactly_when_free_space_crosses_pending(pair) -> None:
    ring, writer, reader = pair
    fill_with_64_byte_packets(writer, D // 64 - 1)  # free = 64
    with pytest.raises(RingFullError) as info:
        writer.write(bytes(40 + 64))  # needs 128
    assert info.value.needed == 128
    assert writer.set_pending_send_size(info.value.needed) is False
    reader.read()
    assert reader.done() is False  # free 128 == pending: a 128-byte write still cannot fit
    reader.read()
    assert reader.done() is True  # free 192 > pending: now it fits
    reader.read()
    assert reader.done() is False  # already past the transition
    writer.write(bytes(40 + 64))
    writer.clear_pending_send_size()
    assert ring.pending_send_size == 0


def test_producer_signal_when_a_single_done_jumps_past_pending(pair) -> None:
    _, writer, reader = pair
    fill_with_64_byte_packets(writer, D // 64 - 1)
    writer.set_pending_send_size(128)  # free is 64 <= 128
    reader.read_many(3)
    assert reader.done() is True  # 64 -> 256 in one publish


def test_no_producer_signal_when_it_was_not_blocked(pair) -> None:
    _, writer, reader = pair
    fill_with_64_byte_packets(writer, 10)
    assert writer.set_pending_send_size(64) is True  # already enough: retry at once
    reader.read()
    assert reader.done() is False  # free was already > pending before this publish


def test_no_producer_signal_without_the_feature_bit(pair) -> None:
    ring, writer, reader = pair
    ring.feature_bits = 0
    fill_with_64_byte_packets(writer, D // 64 - 1)
    writer.set_pending_send_size(128)
    reader.read_many(3)
    assert reader.done() is False


def test_producer_signal_ignores_the_interrupt_mask(pair) -> None:
    _, writer, reader = pair
    fill_with_64_byte_packets(writer, D // 64 - 1)
    writer.set_pending_send_size(128)
    reader.begin_read()
    reader.read_many(3)
    assert reader.done() is True


def test_pending_send_size_rounds_up_to_8(pair) -> None:
    ring, writer, _ = pair
    writer.set_pending_send_size(61)
    assert ring.pending_send_size == 64
    with pytest.raises(ValueError, match="nbytes=0"):
        writer.set_pending_send_size(0)


def test_batch_commit_decides_once(pair) -> None:
    _, writer, reader = pair
    writer.begin()
    for i in range(5):
        writer.write(bytes([i]))
    assert writer.commit() is True
    writer.begin()
    assert writer.commit() is False  # empty transaction: nothing published, no signal
    assert len(reader.read_many(10)) == 5
