"""A model-based check of one ring with a writer and a reader (fact sheet §4.2, §4.4, §4.5).

The model knows only packets and their sizes, never ring indices. It predicts every outcome:
which packet each read returns (none lost, none duplicated, order kept), when a write is full
or too large, and every signal decision. The consumer signal must come exactly on the
empty -> non-empty transition with the interrupt mask clear; the producer signal exactly when a
``done()`` moves free space across ``pending_send_sz``. Two liveness invariants check there is
no missed wakeup: a consumer that went to sleep (``end_read()`` returned False with everything
published) has been signalled whenever data waits, and a producer waiting on
``pending_send_sz`` has been signalled whenever the space it asked for is free.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from winhv.drivers.vmbus.ring import (
    PacketTooLargeError,
    Ring,
    RingFullError,
    RingReader,
    RingWriter,
)

D = 4096
# Sizes whose totals are multiples of 64 make the free space land exactly on pending_send_sz
# often, so the boundaries of the transition rule get exercised; the rest is variety.
aligned_sizes = st.integers(1, 8).map(lambda k: 64 * k - 24)
sizes = st.one_of(
    aligned_sizes, aligned_sizes, st.integers(0, 64), st.integers(0, 1500), st.integers(3900, 4200)
)


def total_of(n: int) -> int:
    return (16 + n + 7) // 8 * 8 + 8


def payload_of(tid: int, n: int) -> bytes:
    return (tid.to_bytes(8, "little") * (n // 8 + 1))[:n]


@dataclass
class Item:
    tid: int
    size: int

    @property
    def total(self) -> int:
        return total_of(self.size)


class RingModel(RuleBasedStateMachine):
    @initialize(start=st.integers(0, D // 8 - 1))
    def setup(self, start: int) -> None:
        self.buf = bytearray(4096 + D)
        self.ring = Ring(self.buf, initialize=True)
        self.ring.write_index = self.ring.read_index = start * 8
        self.writer = RingWriter(self.ring)
        self.reader = RingReader(self.ring)
        self.committed: list[Item] = []  # published, not yet popped
        self.popped: list[Item] = []  # popped, not yet handed back with done()
        self.staged: list[Item] = []
        self.in_txn = False
        self.mask = False
        self.pending = 0
        self.next_tid = 1
        self.consumer_asleep = False
        self.consumer_woken = False
        self.producer_waiting = False
        self.producer_woken = False

    # -- model helpers -----------------------------------------------------------------------------
    def used(self) -> int:
        """Bytes between the published read and write indices."""
        return sum(i.total for i in self.committed) + sum(i.total for i in self.popped)

    def free_for_write(self) -> int:
        return D - self.used() - sum(i.total for i in self.staged)

    def expect_consumer_signal(self, old_used: int, wrote: bool) -> bool:
        return wrote and not self.mask and old_used == 0

    def new_item(self, size: int) -> Item:
        item = Item(self.next_tid, size)
        self.next_tid += 1
        return item

    def attempt(self, size: int) -> tuple[str, Item]:
        """What writing ``size`` bytes now must do: 'ok', 'full' or 'too large'."""
        item = Item(self.next_tid, size)
        if item.total > D - 8:
            return "too large", item
        if self.free_for_write() <= item.total:
            return "full", item
        return "ok", item

    def on_consumer_signal(self, signal: bool) -> None:
        if signal:
            self.consumer_woken = True

    # -- producer rules ----------------------------------------------------------------------------
    @precondition(lambda self: not self.in_txn)
    @rule(size=sizes)
    def write(self, size: int) -> None:
        outcome, item = self.attempt(size)
        payload = payload_of(item.tid, size)
        if outcome == "too large":
            with pytest.raises(PacketTooLargeError):
                self.writer.write(payload, trans_id=item.tid)
        elif outcome == "full":
            with pytest.raises(RingFullError) as info:
                self.writer.write(payload, trans_id=item.tid)
            assert (info.value.needed, info.value.available) == (item.total, self.free_for_write())
        else:
            old_used = self.used()
            signal = self.writer.write(payload, trans_id=item.tid)
            self.next_tid += 1
            self.committed.append(item)
            assert signal == self.expect_consumer_signal(old_used, True)
            self.on_consumer_signal(signal)

    @precondition(lambda self: not self.in_txn)
    @rule()
    def begin(self) -> None:
        self.writer.begin()
        self.in_txn = True

    @precondition(lambda self: self.in_txn)
    @rule(size=sizes)
    def stage(self, size: int) -> None:
        outcome, item = self.attempt(size)
        payload = payload_of(item.tid, size)
        if outcome == "ok":
            assert self.writer.write(payload, trans_id=item.tid) is False
            self.next_tid += 1
            self.staged.append(item)
        else:
            error = PacketTooLargeError if outcome == "too large" else RingFullError
            with pytest.raises(error):
                self.writer.write(payload, trans_id=item.tid)

    @precondition(lambda self: self.in_txn)
    @rule()
    def commit(self) -> None:
        old_used = self.used()
        signal = self.writer.commit()
        assert signal == self.expect_consumer_signal(old_used, bool(self.staged))
        self.on_consumer_signal(signal)
        self.committed.extend(self.staged)
        self.staged.clear()
        self.in_txn = False

    @precondition(lambda self: self.in_txn)
    @rule()
    def abort(self) -> None:
        self.writer.abort()
        self.staged.clear()
        self.in_txn = False

    @precondition(lambda self: not self.in_txn)
    @rule(batch=st.lists(st.one_of(aligned_sizes, st.integers(0, 300)), max_size=20))
    def write_many(self, batch: list[int]) -> None:
        old_used = self.used()
        base = self.next_tid
        payloads = [payload_of(base + i, n) for i, n in enumerate(batch)]
        count, signal = self.writer.write_many(payloads, trans_id_base=base)
        expected = 0
        for n in batch:
            if self.attempt(n)[0] != "ok":
                break
            self.committed.append(self.new_item(n))
            expected += 1
        assert count == expected
        assert signal == self.expect_consumer_signal(old_used, count > 0)
        self.on_consumer_signal(signal)
        self.next_tid = base + len(batch)

    @precondition(lambda self: not self.in_txn and self.pending == 0)
    @rule(extra=st.sampled_from([0, 0, 1, 2, 3, 5, 8]))
    def block_on_full(self, extra: int) -> None:
        """A write that just does not fit (short by ``64 * extra`` bytes) sets pending_send_sz
        and waits (§4.5 step 4); sizing it from the free space makes the consumer's frees land
        exactly on the pending boundary often."""
        size = self.free_for_write() + 64 * extra - 24
        outcome, item = self.attempt(size)
        if outcome != "full":
            return
        with pytest.raises(RingFullError) as info:
            self.writer.write(payload_of(item.tid, size), trans_id=item.tid)
        needed = info.value.needed
        want = (needed + 7) // 8 * 8
        ready = self.writer.set_pending_send_size(needed)
        assert self.ring.pending_send_size == want
        assert ready == (self.free_for_write() > want)
        self.pending = want
        self.producer_waiting = not ready
        self.producer_woken = False

    @precondition(lambda self: self.pending != 0)
    @rule()
    def clear_pending(self) -> None:
        self.writer.clear_pending_send_size()
        assert self.ring.pending_send_size == 0
        self.pending = 0
        self.producer_waiting = False

    # -- consumer rules ----------------------------------------------------------------------------
    def check_packet(self, packet: object) -> None:
        if not self.committed:
            assert packet is None
            return
        item = self.committed.pop(0)
        assert packet is not None
        assert packet.trans_id == item.tid  # type: ignore[attr-defined]
        assert packet.len8 * 8 + 8 == item.total  # type: ignore[attr-defined]
        data = bytes(packet.payload)  # type: ignore[attr-defined]
        assert data == payload_of(item.tid, item.size) + bytes(len(data) - item.size)
        self.popped.append(item)

    @rule()
    def read(self) -> None:
        self.consumer_asleep = False
        self.check_packet(self.reader.read())

    @rule()
    def peek_then_pop(self) -> None:
        self.consumer_asleep = False
        first = self.reader.peek()
        assert self.reader.peek() is first
        if first is not None:
            self.reader.pop()
        self.check_packet(first)

    @rule(n=st.integers(0, 8))
    def read_many(self, n: int) -> None:
        self.consumer_asleep = False
        got = self.reader.read_many(n)
        assert len(got) == min(n, len(self.committed))
        for packet in got:
            self.check_packet(packet)

    @rule()
    def done(self) -> None:
        bytes_read = sum(i.total for i in self.popped)
        self.popped.clear()
        cur_free = D - self.used()
        prev_free = cur_free - bytes_read
        expected = bytes_read > 0 and self.pending != 0 and prev_free <= self.pending < cur_free
        signal = self.reader.done()
        assert signal == expected
        assert self.reader.unpublished == 0
        if signal:
            self.producer_woken = True

    @rule()
    def begin_read(self) -> None:
        self.reader.begin_read()
        self.mask = True
        self.consumer_asleep = False
        assert self.ring.interrupt_mask == 1

    @rule()
    def end_read(self) -> None:
        more = self.reader.end_read()
        self.mask = False
        assert more == bool(self.committed)
        if not more and not self.popped:
            self.consumer_asleep = True
            self.consumer_woken = False

    # -- invariants ------------------------------------------------------------------------------
    @invariant()
    def indices_agree_with_model(self) -> None:
        if hasattr(self, "ring"):
            assert self.ring.bytes_to_read == self.used()
            assert self.ring.bytes_to_write == D - self.used()

    @invariant()
    def no_missed_consumer_wakeup(self) -> None:
        if getattr(self, "consumer_asleep", False) and self.committed:
            assert self.consumer_woken

    @invariant()
    def no_missed_producer_wakeup(self) -> None:
        if getattr(self, "producer_waiting", False) and D - self.used() > self.pending:
            assert self.producer_woken

    def teardown(self) -> None:
        if not hasattr(self, "reader"):
            return
        if self.in_txn:
            self.commit()
        while self.committed:
            self.check_packet(self.reader.read())
        assert self.reader.read() is None
        self.done()


RingModel.TestCase.settings = settings(RingModel.TestCase.settings, stateful_step_count=60)
TestRingModel = RingModel.TestCase
