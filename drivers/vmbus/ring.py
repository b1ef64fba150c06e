"""The VMBus ring buffer (fact sheet §4): the public namespace over the compiled ``_ring``.

A :class:`Ring` wraps a writable buffer of 4096 + D bytes (control page + data area) without
copying it. One :class:`RingWriter` produces into it and one :class:`RingReader` consumes from
it; each returns a boolean whenever the protocol says the other side must be signalled, and the
caller turns that into ``WinHvSignalEvent``. The ring itself never signals and never blocks.

Producer::

    writer = RingWriter(ring)
    try:
        if writer.write(payload, trans_id=7, flags=PACKET_FLAG_COMPLETION_REQUESTED):
            signal_consumer()
    except RingFullError as full:
        if writer.set_pending_send_size(full.needed):
            ...  # space appeared meanwhile: retry now
        # otherwise wait for the consumer's signal, retry, then clear_pending_send_size()

Consumer::

    reader = RingReader(ring)
    reader.begin_read()
    while True:
        while (packet := reader.read()) is not None:
            handle(packet.type, packet.trans_id, packet.payload)
        if reader.done():
            signal_producer()
        if not reader.end_read():
            break

Batches: ``writer.write_many(payloads)`` stages a list of buffers in one C loop and publishes
once (one signal decision); ``reader.read_many(n)`` returns Packets, and
``reader.read_payloads(n)`` returns just the payloads as ``bytes`` copies, without building a
Packet per packet, for consumers that need only the data. Both validate every packet. From
Python, ``writer.write(payload, trans_id, flags)`` (positional) is the cheapest single write;
``writer.write_packet(payload, trans_id, flags, packet_type, header)`` is the same with every
argument by position, for a caller that writes several packet types through one call.
``write_gpa_direct`` and ``write_transfer_pages`` build the two extended descriptors (§4.3),
and the reader decodes and checks them into ``Packet.ranges`` and ``Packet.transfer_ranges``.

Why the reader never trusts the ring: the other side is another partition. Every index and
descriptor field is checked before it is used, and a violation raises
:class:`RingCorruptError` naming the field, the value, the rule and the buffer offset; the
channel owner closes the channel with that message.
"""

from __future__ import annotations

from ._ring import (
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
    RingCorruptError,
    RingError,
    RingFullError,
    RingReader,
    RingWriter,
    encode_gpa_direct,
    encode_transfer_pages,
)

__all__ = [
    "CONTROL_PAGE_SIZE",
    "DESCRIPTOR_SIZE",
    "FEATURE_BITS_OFFSET",
    "FEATURE_PENDING_SEND_SIZE",
    "INTERRUPT_MASK_OFFSET",
    "PACKET_FLAG_COMPLETION_REQUESTED",
    "PENDING_SEND_SIZE_OFFSET",
    "READ_INDEX_OFFSET",
    "TRAILER_SIZE",
    "WRITE_INDEX_OFFSET",
    "Packet",
    "PacketTooLargeError",
    "PacketType",
    "Ring",
    "RingCorruptError",
    "RingError",
    "RingFullError",
    "RingReader",
    "RingWriter",
    "encode_gpa_direct",
    "encode_transfer_pages",
]
