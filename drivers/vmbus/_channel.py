"""An open VMBus channel, as either side's driver sees it: the channel API (issue #3 item 5).

A :class:`Channel` joins one outbound ring (this side writes) and one inbound ring (this side
reads), plus the two ways to interrupt the other side. Drivers call :meth:`Channel.send`,
:meth:`Channel.send_request` (completion callback by transaction id),
:meth:`Channel.send_gpa_direct` and :meth:`Channel.complete`; packets that arrive go to the
driver's ``on_packet(channel, packet)``, completions of our requests to their callbacks.

Signalling follows the ring's rules exactly (fact sheet §4.4–§4.5): a write signals the other
side only on the empty -> non-empty transition with its interrupt mask clear; a read signals
the producer only on the pending-send-size transition. When the outbound ring is full, sends
wait in order in a bounded backlog, the ring's ``pending_send_sz`` is set, and the backlog is
flushed when the reader frees space (its signal arrives as an interrupt like any other).

A packet's ``payload`` is a view into the ring: valid only during ``on_packet``; copy what you
keep. Anything the other side wrote that does not parse (a corrupt ring) closes the channel
with the reason; it never escapes as an exception into the kernel or the other channels.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from winhv.drivers.vmbus._ring import (
    PACKET_FLAG_COMPLETION_REQUESTED,
    Packet,
    PacketType,
    Ring,
    RingError,
    RingFullError,
    RingReader,
    RingWriter,
    encode_gpa_direct,
)

__all__ = ["Channel", "ChannelClosedError", "ChannelError"]

_log = logging.getLogger("winhv.vmbus")

#: Packets a channel holds back while its outbound ring is full before sends fail.
BACKLOG_LIMIT = 4096
#: Packets read per batch before the read index is published.
READ_BATCH = 64

Completion = Callable[[Packet], Any]

# A send, for the write and the backlog, is (payload, trans_id, flags, packet type, header):
# the positional arguments of RingWriter.write_packet.
_INBAND = int(PacketType.DATA_INBAND)
_COMP = int(PacketType.COMP)
_GPA = int(PacketType.DATA_USING_GPA_DIRECT)
_EMPTY = b""
_COMP_TYPE = PacketType.COMP      # Packet.type is always the cached member: ``is`` suffices
_NOT_PENDING = object()


class ChannelError(RuntimeError):
    """A send the channel cannot accept (backlog full, payload too large)."""


class ChannelClosedError(ChannelError):
    """The channel is closed; ``reason`` says why."""


class Channel:
    """One end of an open channel. Made by the framework; drivers only use it."""

    def __init__(self, *, side: str, relid: int, interface_id: uuid.UUID,
                 instance_id: uuid.UUID, outbound: Ring, inbound: Ring,
                 signal: Callable[[], Any], name: str = "", sub_channel_index: int = 0,
                 connection_id: int = 0) -> None:
        self.side = side
        self.relid = relid
        self.interface_id = interface_id
        self.instance_id = instance_id
        self.sub_channel_index = sub_channel_index
        self.connection_id = connection_id
        self.name = name or f"{side} relid {relid}"
        self.outbound = outbound
        self.inbound = inbound
        self._writer = RingWriter(outbound)
        #: Largest payload + extension: descriptor + body padded to 8 + trailer <= the ring's
        #: maximum (§4.2), which is a multiple of 8, so no padding arithmetic is needed.
        self._max_body = outbound.max_packet_size - 16 - 8
        self._reader = RingReader(inbound)
        self._signal = signal
        self._backlog: deque[tuple[Any, ...]] = deque()
        self._pending: dict[int, Completion | None] = {}
        self._next_trans_id = 1
        self.closed = False
        self.close_reason: str | None = None
        #: ``on_packet(channel, packet)``: set by the framework to the driver's method.
        self.on_packet: Callable[[Channel, Packet], Any] | None = None
        #: ``on_fault(channel, reason)``: called once when the channel closes on a fault.
        self.on_fault: Callable[[Channel, str], Any] | None = None
        self.packets_sent = 0
        self.packets_received = 0
        self.signals_sent = 0
        self.bytes_sent = 0
        #: Observers of every packet, ``tap(channel, direction, type, trans_id, payload)``.
        self.taps: list[Callable[..., Any]] = []

    def __repr__(self) -> str:
        state = f"closed: {self.close_reason}" if self.closed else "open"
        return f"<Channel {self.name} ({state})>"

    # -- sending -------------------------------------------------------------------------------

    def send(self, payload: Any, *, trans_id: int = 0, completion_requested: bool = False,
             ) -> None:
        """Send one in-band packet (type 6)."""
        flags = PACKET_FLAG_COMPLETION_REQUESTED if completion_requested else 0
        self._send(payload, trans_id, flags, _INBAND, _EMPTY)

    def send_request(self, payload: Any, callback: Completion | None = None) -> int:
        """Send an in-band packet asking for a completion; returns its transaction id.

        ``callback(packet)`` runs when the completion (same transaction id) arrives.
        """
        trans_id = self._new_trans_id(callback)
        try:
            self._send(payload, trans_id, PACKET_FLAG_COMPLETION_REQUESTED, _INBAND, _EMPTY)
        except ChannelError:
            self._pending.pop(trans_id, None)
            raise
        return trans_id

    def send_gpa_direct(self, ranges: Sequence[tuple[int, int, Sequence[int]]], payload: Any,
                        callback: Completion | None = None) -> int:
        """Send a GPA-direct packet (type 9) naming guest pages; returns its transaction id.

        ``ranges`` are ``(byte_count, byte_offset, pfns)``; the other side reads or writes
        those guest pages in place.
        """
        header = encode_gpa_direct(ranges)   # validates the ranges before anything is sent
        trans_id = self._new_trans_id(callback)
        try:
            self._send(payload, trans_id, PACKET_FLAG_COMPLETION_REQUESTED, _GPA, header)
        except ChannelError:
            self._pending.pop(trans_id, None)
            raise
        return trans_id

    def complete(self, trans_id: int, payload: Any = b"") -> None:
        """Send the completion (type 0xB) of the other side's request ``trans_id``."""
        self._send(payload, trans_id, 0, _COMP, _EMPTY)

    def _new_trans_id(self, callback: Completion | None) -> int:
        trans_id = self._next_trans_id
        self._next_trans_id = trans_id + 1 if trans_id < (1 << 63) else 1
        self._pending[trans_id] = callback
        return trans_id

    @property
    def outstanding(self) -> int:
        """Requests sent whose completion has not arrived."""
        return len(self._pending)

    @property
    def backlog(self) -> int:
        """Packets waiting for room in the outbound ring."""
        return len(self._backlog)

    def _send(self, payload: Any, trans_id: int, flags: int, ptype: int, header: Any) -> None:
        """Write one packet now, or queue it behind the backlog (the arguments are those of
        ``RingWriter.write_packet``; ``header`` is a GPA-direct packet's range header)."""
        if self.closed:
            raise ChannelClosedError(f"{self.name} is closed: {self.close_reason}")
        if len(payload) + len(header) > self._max_body:
            # Checked before queueing: a backlogged packet must never fail for its own size.
            size = RingWriter.packet_size(len(payload), len(header))
            raise ChannelError(f"{self.name}: a {size}-byte packet (trailer included) never "
                               f"fits; the ring takes at most {self.outbound.max_packet_size}")
        if self._backlog:
            self._enqueue((payload, trans_id, flags, ptype, header))
            return
        try:
            signal = self._write(payload, trans_id, flags, ptype, header)
        except RingFullError as full:
            self._enqueue((payload, trans_id, flags, ptype, header))
            try:
                retry = self._writer.set_pending_send_size(full.needed)
            except RingError as exc:
                self._corrupt(exc)
                raise ChannelClosedError(f"{self.name} is closed: {self.close_reason}") from exc
            if retry:
                self.flush()  # space appeared meanwhile: do not wait for a signal
            return
        except RingError as exc:
            self._corrupt(exc)
            raise ChannelClosedError(f"{self.name} is closed: {self.close_reason}") from exc
        if signal:
            self.signals_sent += 1
            self._signal()

    def _corrupt(self, exc: RingError) -> None:
        """The other side broke the outbound ring's control page (its read_index): close."""
        self.fail(f"outbound ring: {exc}")

    def _enqueue(self, item: tuple[Any, ...]) -> None:
        if len(self._backlog) >= BACKLOG_LIMIT:
            raise ChannelError(f"{self.name}: outbound ring full and {BACKLOG_LIMIT} packets "
                               "already waiting; the other side is not reading")
        self._backlog.append(item)

    def _write(self, payload: Any, trans_id: int, flags: int, ptype: int, header: Any) -> bool:
        """One packet into the ring (positional: keyword parsing cost more than the ring
        work); True when the other side must be signalled."""
        signal = self._writer.write_packet(payload, trans_id, flags, ptype, header)
        self.packets_sent += 1
        self.bytes_sent += len(payload)
        if self.taps:
            packet_type = PacketType(ptype)
            for tap in self.taps:
                tap(self, "out", packet_type, trans_id, payload)
        return signal

    def flush(self) -> None:
        """Write as much of the backlog as fits now (in order); signal once if needed."""
        signal = False
        try:
            while self._backlog and not self.closed:
                try:
                    signal |= self._write(*self._backlog[0])
                except RingFullError as full:
                    if self._writer.set_pending_send_size(full.needed):
                        continue
                    break
                self._backlog.popleft()
        except RingError as exc:   # never raised by our own packets: sizes were checked
            self._corrupt(exc)
            return
        if not self._backlog and not self.closed:
            self._writer.clear_pending_send_size()
        if signal:
            self._do_signal()

    def _do_signal(self) -> None:
        self.signals_sent += 1
        self._signal()

    # -- receiving -----------------------------------------------------------------------------

    def poll(self) -> int:
        """Handle every packet waiting in the inbound ring; returns how many.

        The framework calls this when the other side signals. Never raises.
        """
        if self.closed:
            return 0
        handled = 0
        reader = self._reader
        pending = self._pending
        try:
            while True:
                packets = reader.read_many(READ_BATCH)
                if not packets:
                    break
                for packet in packets:
                    # The dispatch, inline (one Python frame per packet less): a completion
                    # of one of our requests goes to its callback, anything else to on_packet.
                    handled += 1
                    self.packets_received += 1
                    if self.taps:
                        for tap in self.taps:
                            tap(self, "in", packet.type, packet.trans_id, packet.payload)
                    if packet.type is _COMP_TYPE:
                        callback = pending.pop(packet.trans_id, _NOT_PENDING)
                        if callback is not _NOT_PENDING:
                            if callback is not None:
                                try:
                                    callback(packet)
                                except Exception as exc:
                                    self._driver_raised(callback, exc)
                            if self.closed:
                                return handled
                            continue
                    handler = self.on_packet
                    if handler is not None:
                        try:
                            handler(self, packet)
                        except Exception as exc:
                            self._driver_raised(handler, exc)
                    if self.closed:
                        return handled
                if reader.done():
                    self._do_signal()
        except RingError as exc:
            self.fail(f"inbound ring: {exc}")
            return handled
        if self._backlog:
            self.flush()
        return handled

    def _driver_raised(self, fn: Callable[..., Any], exc: Exception) -> None:
        """A driver callback raised: the driver's fault. Unbind it, keep everything else
        going."""
        _log.exception("%s: driver callback %r raised", self.name, fn, exc_info=exc)
        self.fail(f"driver raised {type(exc).__name__}: {exc}")

    # -- closing -------------------------------------------------------------------------------

    def fail(self, reason: str) -> None:
        """Close the channel because of a fault; tells ``on_fault`` once."""
        if self.closed:
            return
        _log.warning("%s: closing: %s", self.name, reason)
        self.close(reason)
        if self.on_fault is not None:
            try:
                self.on_fault(self, reason)
            except Exception:
                _log.exception("%s: on_fault handler raised", self.name)

    def close(self, reason: str = "closed") -> None:
        """Stop using the rings. Outstanding requests are dropped (their callbacks never run)."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._backlog.clear()
        self._pending.clear()

    # -- inspection ----------------------------------------------------------------------------

    def occupancy(self) -> dict[str, int]:
        """Bytes waiting in each ring (for ``winhv vm inspect``)."""
        return {"outbound": self.outbound.bytes_to_read, "inbound": self.inbound.bytes_to_read,
                "ring_size": self.outbound.data_size + 4096}
