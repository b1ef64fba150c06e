"""The channel API over real rings (fact sheet §4.3–§4.5): sends, requests and completions,
signalling only on the empty -> non-empty and pending-send-size transitions, the backlog when
the outbound ring is full, and faults that close the channel instead of escaping.

Most tests join two :class:`Channel` objects over two rings in plain memory, with each side's
signal queued and delivered by ``pump()``, so every interrupt is visible; the last ones run
the same flows through a whole machine.
"""

from __future__ import annotations

import mmap
import struct
import uuid
from typing import Any

import pytest
from support.vmbus_io import ECHO_PREFIX, echo_vm, frame, unframe

from winhv.drivers.vmbus._channel import (
    BACKLOG_LIMIT,
    Channel,
    ChannelClosedError,
    ChannelError,
)
from winhv.drivers.vmbus.ring import (
    FEATURE_PENDING_SEND_SIZE,
    READ_INDEX_OFFSET,
    WRITE_INDEX_OFFSET,
    PacketType,
    Ring,
)

IF = uuid.UUID("00000000-0000-4000-8000-0000000000c1")


class Pair:
    """Two channel ends, ``a`` (guest) and ``b`` (host), over two rings of ``pages`` pages."""

    def __init__(self, pages: int = 4) -> None:
        self.buffers = [mmap.mmap(-1, pages * 4096) for _ in range(2)]
        a_to_b, b_to_a = (Ring(memoryview(b), initialize=True) for b in self.buffers)
        self.queue: list[Channel] = []
        self.a = Channel(side="guest", relid=1, interface_id=IF, instance_id=IF,
                         outbound=a_to_b, inbound=b_to_a, signal=lambda: self.queue.append(self.b),
                         name="a")
        self.b = Channel(side="host", relid=1, interface_id=IF, instance_id=IF,
                         outbound=Ring(memoryview(self.buffers[1])),
                         inbound=Ring(memoryview(self.buffers[0])),
                         signal=lambda: self.queue.append(self.a), name="b")
        self.a_got: list[tuple[int, int, bytes]] = []
        self.b_got: list[tuple[int, int, bytes]] = []
        self.a.on_packet = lambda ch, p: self.a_got.append((p.type, p.trans_id, bytes(p.payload)))
        self.b.on_packet = lambda ch, p: self.b_got.append((p.type, p.trans_id, bytes(p.payload)))

    def pump(self) -> int:
        """Deliver queued signals until none is left; returns how many were delivered."""
        delivered = 0
        while self.queue:
            self.queue.pop(0).poll()
            delivered += 1
        return delivered

    def control(self, side: str) -> memoryview:
        """The control page of the ring ``side`` writes (``"a"`` or ``"b"``)."""
        return memoryview(self.buffers[0 if side == "a" else 1])[:4096]


def _u32(view: memoryview, offset: int) -> int:
    return struct.unpack_from("<I", view, offset)[0]


# -- sends and signals --------------------------------------------------------------------------


def test_a_burst_of_sends_signals_once_on_the_empty_to_non_empty_transition():
    pair = Pair()
    for i in range(3):
        pair.a.send(frame(b"%d" % i))
    assert pair.a.signals_sent == 1
    assert pair.queue == [pair.b]
    pair.pump()
    assert [unframe(p) for _, _, p in pair.b_got] == [b"0", b"1", b"2"]
    assert pair.a.packets_sent == 3
    assert pair.b.packets_received == 3
    # The ring is empty again: the next send signals again.
    pair.a.send(frame(b"3"))
    assert pair.a.signals_sent == 2


def test_no_signal_while_the_reader_masks_interrupts():
    pair = Pair()
    pair.a.outbound.interrupt_mask = 1
    pair.a.send(b"quiet")
    assert pair.a.signals_sent == 0
    assert pair.queue == []
    assert pair.b.poll() == 1


def test_request_ids_are_distinct_and_the_completion_runs_its_callback():
    pair = Pair()
    got: list[Any] = []
    ids = [pair.a.send_request(frame(b"q%d" % i), lambda p, i=i: got.append(
        (i, p.type, p.trans_id, unframe(p.payload)))) for i in range(4)]
    assert len(set(ids)) == 4
    assert 0 not in ids  # 0 is the unsolicited id (§4.7)
    assert pair.a.outstanding == 4
    pair.pump()
    assert [(t, tid) for t, tid, _ in pair.b_got] == [(PacketType.DATA_INBAND, i) for i in ids]
    for _, trans_id, payload in reversed(pair.b_got):   # complete out of order
        pair.b.complete(trans_id, frame(b"done " + unframe(payload)))
    pair.pump()
    assert got == [(i, PacketType.COMP, ids[i], b"done q%d" % i) for i in reversed(range(4))]
    assert pair.a.outstanding == 0
    assert pair.a_got == []   # completions of our requests do not reach on_packet


def test_a_completion_nobody_asked_for_goes_to_on_packet():
    pair = Pair()
    pair.b.complete(77, b"stray")
    pair.pump()
    assert pair.a_got == [(PacketType.COMP, 77, b"stray\0\0\0")]


def test_completion_requested_flag_and_trans_id_reach_the_reader():
    pair = Pair()
    flags: list[tuple[bool, int]] = []
    pair.b.on_packet = lambda ch, p: flags.append((p.completion_requested, p.trans_id))
    pair.a.send(b"x", trans_id=5, completion_requested=True)
    pair.a.send(b"y")
    pair.pump()
    assert flags == [(True, 5), (False, 0)]


def test_gpa_direct_packets_carry_their_ranges():
    pair = Pair()
    ranges: list[Any] = []
    pair.b.on_packet = lambda ch, p: ranges.append((p.type, p.completion_requested, p.ranges))
    pair.a.send_gpa_direct([(8192, 16, [5, 6, 7]), (10, 0, [9])], b"cmd")
    pair.pump()
    assert ranges == [(PacketType.DATA_USING_GPA_DIRECT, True,
                       ((8192, 16, (5, 6, 7)), (10, 0, (9,))))]


def test_taps_see_every_packet_both_ways():
    pair = Pair()
    seen: list[tuple[str, str, int, bytes]] = []
    pair.a.taps.append(lambda ch, d, t, tid, p: seen.append((ch.name, d, int(t), bytes(p))))
    pair.b.taps.append(lambda ch, d, t, tid, p: seen.append((ch.name, d, int(t), bytes(p))))
    trans_id = pair.a.send_request(b"12345678")
    pair.pump()
    pair.b.complete(trans_id, b"abcdefgh")
    pair.pump()
    assert seen == [("a", "out", 6, b"12345678"), ("b", "in", 6, b"12345678"),
                    ("b", "out", 0xB, b"abcdefgh"), ("a", "in", 0xB, b"abcdefgh")]


def test_occupancy_reports_bytes_waiting_each_way():
    pair = Pair()
    pair.a.send(bytes(100))
    occupancy = pair.a.occupancy()
    assert occupancy == {"outbound": 16 + 104 + 8, "inbound": 0, "ring_size": 4 * 4096}


def test_a_payload_larger_than_the_ring_is_refused_and_the_channel_stays_open():
    pair = Pair(pages=2)
    with pytest.raises(ChannelError, match=r"4120-byte packet .* at most 4088"):
        pair.a.send(bytes(4096))
    assert not pair.a.closed
    pair.a.send(b"small")
    assert pair.pump() == 1


def test_an_oversized_packet_is_refused_at_send_even_behind_a_backlog():
    pair = Pair(pages=2)
    _fill(pair.a, bytes(100))
    with pytest.raises(ChannelError, match="never fits"):
        pair.a.send_request(bytes(4096))
    assert pair.a.outstanding == 0
    pair.pump()
    assert not pair.a.closed
    assert pair.a.backlog == 0


def test_gpa_direct_ranges_are_checked_before_anything_is_sent():
    pair = Pair()
    with pytest.raises(ValueError, match=r"PFN|pfn|range"):
        pair.a.send_gpa_direct([(8192, 0, [1])], b"too few pfns")
    assert pair.a.outstanding == 0
    assert pair.a.packets_sent == 0


# -- flow control -------------------------------------------------------------------------------


def _fill(channel: Channel, payload: bytes = bytes(200)) -> int:
    """Send until the channel starts to backlog; returns the packets that went into the ring."""
    sent = 0
    while channel.backlog == 0:
        channel.send(frame(struct.pack("<I", sent) + payload))
        sent += 1
    return sent - 1


def test_a_full_ring_backlogs_sends_and_sets_pending_send_size():
    pair = Pair()
    in_ring = _fill(pair.a)
    assert in_ring > 10
    assert pair.a.backlog == 1
    control = pair.control("a")
    assert _u32(control, 64) & FEATURE_PENDING_SEND_SIZE   # the writer promises §4.1
    pending = pair.a.outbound.pending_send_size
    assert pending >= 16 + 208 + 8
    assert pending % 8 == 0
    # A later small send that would fit still waits behind the backlog (order is kept).
    pair.a.send(frame(b"tiny"))
    assert pair.a.backlog == 2


def test_the_reader_drains_and_the_backlog_flushes_in_order_without_loss():
    pair = Pair()
    in_ring = _fill(pair.a)
    for i in range(in_ring + 1, in_ring + 200):
        pair.a.send(frame(struct.pack("<I", i) + bytes(200)))
    total = in_ring + 200
    pair.pump()
    numbers = [struct.unpack_from("<I", unframe(p))[0] for _, _, p in pair.b_got]
    assert numbers == list(range(total))
    assert pair.a.backlog == 0
    assert pair.a.outbound.pending_send_size == 0
    assert pair.a.outbound.bytes_to_read == 0
    # The reader signalled the writer only on pending-size transitions, not per packet.
    assert pair.b.signals_sent < total // 10


def test_the_backlog_limit_raises_a_precise_error():
    pair = Pair()
    _fill(pair.a)
    for _ in range(BACKLOG_LIMIT - 1):
        pair.a.send(b"wait")
    assert pair.a.backlog == BACKLOG_LIMIT
    with pytest.raises(ChannelError, match=rf"{BACKLOG_LIMIT} packets already waiting"):
        pair.a.send(b"one too many")
    assert pair.a.backlog == BACKLOG_LIMIT
    assert not pair.a.closed


def test_completions_backlog_too_when_the_requester_does_not_read():
    pair = Pair()
    pair.b.on_packet = lambda ch, p: ch.complete(p.trans_id, bytes(200))
    done: list[int] = []
    for i in range(300):
        pair.a.send_request(b"r", lambda p, i=i: done.append(i))
        if pair.queue:
            pair.queue.pop(0).poll()   # b reads and answers; a's own signals are dropped
            pair.queue.clear()
    assert pair.b.backlog > 0
    pair.a.poll()
    pair.pump()
    assert done == list(range(300))
    assert pair.b.backlog == 0


# -- closing and faults -------------------------------------------------------------------------


def test_a_closed_channel_refuses_sends_with_its_reason_and_drops_outstanding_requests():
    pair = Pair()
    called: list[Any] = []
    pair.a.send_request(b"never answered", called.append)
    pair.a.close("test over")
    with pytest.raises(ChannelClosedError, match="a is closed: test over"):
        pair.a.send(b"late")
    assert pair.a.outstanding == 0
    pair.b.poll()
    pair.b.complete(1, b"too late")
    assert pair.a.poll() == 0
    assert called == []
    assert repr(pair.a) == "<Channel a (closed: test over)>"


def test_a_raising_driver_closes_its_channel_and_on_fault_hears_once():
    pair = Pair()
    faults: list[str] = []
    pair.b.on_fault = lambda ch, reason: faults.append(reason)

    def broken(channel: Channel, packet: Any) -> None:
        raise KeyError("boom")

    pair.b.on_packet = broken
    pair.a.send(b"1")
    pair.a.send(b"2")
    pair.pump()
    assert pair.b.closed
    assert pair.b.close_reason == "driver raised KeyError: 'boom'"
    assert faults == [pair.b.close_reason]
    assert pair.b.packets_received == 1


def test_a_raising_completion_callback_closes_the_channel():
    pair = Pair()
    pair.a.send_request(b"x", lambda p: 1 / 0)
    pair.pump()
    pair.b.complete(1)
    pair.pump()
    assert pair.a.closed
    assert "ZeroDivisionError" in pair.a.close_reason


@pytest.mark.parametrize(("offset", "value", "field"), [
    (WRITE_INDEX_OFFSET, 4, "write_index"),          # not 8-byte aligned
    (WRITE_INDEX_OFFSET, 3 * 4096, "write_index"),   # not below the data size
])
def test_a_corrupt_inbound_ring_closes_the_channel_with_the_reason(offset, value, field):
    pair = Pair()
    pair.a.send(b"x")
    struct.pack_into("<I", pair.control("a"), offset, value)
    assert pair.b.poll() == 0
    assert pair.b.closed
    assert pair.b.close_reason.startswith("inbound ring:")
    assert field in pair.b.close_reason


def test_a_corrupt_descriptor_closes_the_channel():
    pair = Pair()
    pair.a.send(b"x")
    data = memoryview(pair.buffers[0])[4096:]
    struct.pack_into("<H", data, 4, 1)   # len8 = 1 < offset8 = 2
    pair.b.poll()
    assert pair.b.closed
    assert "len8" in pair.b.close_reason


def test_a_corrupt_read_index_while_flushing_closes_the_channel_instead_of_raising():
    pair = Pair()
    _fill(pair.a)
    pair.b.on_packet = lambda ch, p: None
    struct.pack_into("<I", pair.control("a"), READ_INDEX_OFFSET, 12)   # b "published" garbage
    pair.a.poll()        # a flushes its backlog on any signal: it must not raise
    assert pair.a.closed
    assert "read_index" in pair.a.close_reason


def test_a_corrupt_read_index_on_send_closes_the_channel():
    pair = Pair()
    struct.pack_into("<I", pair.control("a"), READ_INDEX_OFFSET, 12)
    with pytest.raises(ChannelClosedError, match="read_index"):
        pair.a.send(b"x")
    assert pair.a.closed
    assert pair.a.close_reason.startswith("outbound ring:")


def test_a_corrupt_read_index_after_a_full_ring_closes_the_channel():
    pair = Pair()
    _fill(pair.a)
    pair.a.flush()
    struct.pack_into("<I", pair.control("a"), READ_INDEX_OFFSET, 4 * 4096)
    pair.a.flush()
    assert pair.a.closed
    assert "read_index" in pair.a.close_reason


def test_a_failed_request_leaves_no_outstanding_entry():
    pair = Pair()
    _fill(pair.a)
    for _ in range(BACKLOG_LIMIT - 1):
        pair.a.send(b"wait")
    with pytest.raises(ChannelError):
        pair.a.send_request(b"x", lambda p: None)
    assert pair.a.outstanding == 0


# -- through a whole machine --------------------------------------------------------------------


def test_flow_control_end_to_end_every_request_completes_in_order():
    loop, vsp, device = echo_vm()
    channel = device.channel
    host = vsp.channel
    replies: list[bytes] = []
    for i in range(600):
        channel.send_request(frame(struct.pack("<I", i) + bytes(300)),
                             lambda p: replies.append(unframe(p.payload)))
    assert channel.backlog > 0
    assert channel.outbound.pending_send_size > 0
    loop.run()
    assert [struct.unpack_from("<I", r, len(ECHO_PREFIX))[0] for r in replies] == list(range(600))
    assert channel.backlog == host.backlog == 0
    assert channel.outbound.pending_send_size == host.outbound.pending_send_size == 0
    assert channel.outstanding == 0
    assert not channel.closed
    assert not host.closed


def test_backlog_limit_end_to_end_when_the_host_never_runs():
    _loop, _vsp, device = echo_vm()
    channel = device.channel
    _fill(channel, bytes(500))
    for _ in range(BACKLOG_LIMIT - 1):
        channel.send(frame(bytes(500)))
    with pytest.raises(ChannelError, match="not reading"):
        channel.send(frame(bytes(500)))
    assert channel.backlog == BACKLOG_LIMIT
