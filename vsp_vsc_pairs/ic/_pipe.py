"""Pipe-mode framing: the 8-byte header in front of every IC packet (fact sheet §4.6, §5.1).

Integration Components talk over message-mode named-pipe channels. Each in-band VMBus packet
payload starts with ``packet_type u32, len u32`` (Linux: ``vmbuspipe_hdr {flags, msgsize}``),
where ``len`` counts the bytes that follow. Only DATA packets (type 1) carry IC messages; the
other types are reader-local or belong to GPA-direct pipes and are refused here.

This module also defines :class:`IcProtocolError`, the one exception every IC parser raises for
bytes that came from the other side: the I/O layer that owns the channel catches it and closes
the channel with its message as the reason.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Final

__all__ = [
    "MAX_PIPE_PAYLOAD",
    "PIPE_HEADER",
    "PIPE_HEADER_SIZE",
    "IcProtocolError",
    "PipePacketType",
    "pipe_frame",
    "pipe_unframe",
]

#: ``packet_type u32, len u32`` (§4.6).
PIPE_HEADER: Final = struct.Struct("<II")
PIPE_HEADER_SIZE: Final = PIPE_HEADER.size
#: Largest payload one pipe packet may carry (§4.6).
MAX_PIPE_PAYLOAD: Final = 16384
#: VMBus in-band payloads are padded to 8 bytes; a packet may carry up to 7 bytes past ``len``.
_MAX_PADDING: Final = 7


class PipePacketType(IntEnum):
    """The pipe header's ``packet_type`` (§4.6)."""

    DATA = 1
    PARTIAL = 2
    SETUP_GPA_DIRECT = 3
    TEARDOWN_GPA_DIRECT = 4


class IcProtocolError(Exception):
    """Bytes from the peer that break the IC protocol; the channel should be closed.

    ``what`` names the message or layer (``"pipe header"``, ``"kvp response"``), ``field`` the
    offending field, ``found`` what was there and ``expected`` what the protocol wants. The
    message reads ``"<what>: <field>: found <found>, expected <expected>"``.
    """

    def __init__(self, what: str, field: str, found: object, expected: object) -> None:
        self.what = what
        self.field = field
        self.found = found
        self.expected = expected
        super().__init__(f"{what}: {field}: found {found}, expected {expected}")


def pipe_frame(payload: bytes | bytearray | memoryview) -> bytes:
    """Prefix ``payload`` with a DATA pipe header; the result is one in-band packet payload.

    Raises ``ValueError`` if ``payload`` exceeds :data:`MAX_PIPE_PAYLOAD` (a local bug, not a
    peer's fault).
    """
    if len(payload) > MAX_PIPE_PAYLOAD:
        raise ValueError(f"pipe payload of {len(payload)} bytes exceeds {MAX_PIPE_PAYLOAD}")
    return PIPE_HEADER.pack(PipePacketType.DATA, len(payload)) + bytes(payload)


def pipe_unframe(packet: bytes | bytearray | memoryview) -> memoryview:
    """Check a received packet's pipe header and return a view of the ``len`` bytes it frames.

    Accepts up to 7 bytes of VMBus padding after the framed bytes. Raises
    :class:`IcProtocolError` for a short packet, a packet type other than DATA, a length beyond
    the packet or :data:`MAX_PIPE_PAYLOAD`, or trailing bytes that cannot be padding.
    """
    view = memoryview(packet).cast("B")
    if len(view) < PIPE_HEADER_SIZE:
        raise IcProtocolError("pipe header", "size", f"{len(view)} bytes",
                              f"at least {PIPE_HEADER_SIZE} bytes (§4.6)")
    packet_type, length = PIPE_HEADER.unpack_from(view)
    if packet_type != PipePacketType.DATA:
        raise IcProtocolError("pipe header", "packet_type", packet_type,
                              f"{int(PipePacketType.DATA)} (DATA, §4.6)")
    available = len(view) - PIPE_HEADER_SIZE
    if length > MAX_PIPE_PAYLOAD:
        raise IcProtocolError("pipe header", "len", length,
                              f"at most {MAX_PIPE_PAYLOAD} (§4.6)")
    if length > available:
        raise IcProtocolError("pipe header", "len", length,
                              f"at most the {available} bytes the packet carries")
    if available - length > _MAX_PADDING:
        raise IcProtocolError("pipe header", "len", length,
                              f"{available - _MAX_PADDING}..{available} (the packet carries "
                              f"{available} bytes; only 8-byte padding may follow)")
    return view[PIPE_HEADER_SIZE:PIPE_HEADER_SIZE + length]
