"""An independent VMBus ring reader/writer written straight from fact sheet §4, for interop tests.

It shares no code with ``winhv.drivers.vmbus._ring``: plain ``struct`` on the raw buffer,
byte-by-byte wrap-around, no transactions, no validation beyond what the sheet's algorithms
need. Single-threaded use only (it publishes indices with ``struct.pack_into``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["SpecPacket", "SpecRing"]

CONTROL = 4096  # §4.1: one control page before the data area
U32 = struct.Struct("<I")
DESCRIPTOR = struct.Struct("<HHHHQ")  # §4.3: type, offset8, len8, flags, trans_id
TRAILER = struct.Struct("<Q")  # §4.3: start_write_index << 32


@dataclass(frozen=True, slots=True)
class SpecPacket:
    """A packet as §4.3 lays it out; ``payload`` includes the padding to 8 bytes."""

    type: int
    offset8: int
    len8: int
    flags: int
    trans_id: int
    extension: bytes
    payload: bytes
    start: int
    trailer: int


class SpecRing:
    """Both sides of one ring over ``buf`` (4096 + D bytes)."""

    def __init__(self, buf: bytearray | memoryview, *, initialize: bool = False) -> None:
        self.buf = memoryview(buf).cast("B") if not isinstance(buf, bytearray) else buf
        self.size = len(self.buf) - CONTROL
        if initialize:
            self.buf[:CONTROL] = bytes(CONTROL)
            U32.pack_into(self.buf, 64, 1)  # feat_pending_send_sz

    # -- control page (§4.1) ---------------------------------------------------------------------
    def _get32(self, off: int) -> int:
        return U32.unpack_from(self.buf, off)[0]

    def _set32(self, off: int, value: int) -> None:
        U32.pack_into(self.buf, off, value)

    write_index = property(lambda self: self._get32(0), lambda self, v: self._set32(0, v))
    read_index = property(lambda self: self._get32(4), lambda self, v: self._set32(4, v))
    interrupt_mask = property(lambda self: self._get32(8), lambda self, v: self._set32(8, v))
    pending_send_sz = property(lambda self: self._get32(12), lambda self, v: self._set32(12, v))

    # -- circular data area (§4.1) ---------------------------------------------------------------
    def _copy_in(self, index: int, data: bytes) -> int:
        for byte in data:
            self.buf[CONTROL + index] = byte
            index = (index + 1) % self.size
        return index

    def _copy_out(self, index: int, n: int) -> bytes:
        return bytes(self.buf[CONTROL + (index + i) % self.size] for i in range(n))

    # -- §4.2 --------------------------------------------------------------------------------------
    def bytes_to_read(self) -> int:
        w, r = self.write_index, self.read_index
        return w - r if w >= r else self.size - r + w

    def bytes_to_write(self) -> int:
        w, r = self.write_index, self.read_index
        return self.size - (w - r) if w >= r else r - w

    # -- §4.4 producer -----------------------------------------------------------------------------
    def write(
        self,
        payload: bytes,
        *,
        packet_type: int = 6,
        flags: int = 0,
        trans_id: int = 0,
        extension: bytes = b"",
    ) -> bool | None:
        """Write one packet. None when it does not fit (§4.4 step 1); else the signal decision."""
        offset8 = (16 + len(extension)) // 8
        unpadded = 16 + len(extension) + len(payload)
        padded = (unpadded + 7) // 8 * 8
        total = padded + 8
        if self.bytes_to_write() <= total:
            return None
        old_w = self.write_index
        image = (
            DESCRIPTOR.pack(packet_type, offset8, padded // 8, flags, trans_id)
            + extension
            + payload
            + bytes(padded - unpadded)
            + TRAILER.pack(old_w << 32)
        )
        new_w = self._copy_in(old_w, image)
        self.write_index = new_w
        return self.interrupt_mask == 0 and self.read_index == old_w

    # -- §4.5 consumer -----------------------------------------------------------------------------
    def read(self) -> SpecPacket | None:
        """Read and consume one packet (publishing read_index at once), or None when empty."""
        if self.bytes_to_read() < 16:
            return None
        r = self.read_index
        ptype, offset8, len8, flags, trans_id = DESCRIPTOR.unpack(self._copy_out(r, 16))
        body = self._copy_out(r, len8 * 8)
        (trailer,) = TRAILER.unpack(self._copy_out((r + len8 * 8) % self.size, 8))
        self.read_index = (r + len8 * 8 + 8) % self.size
        return SpecPacket(
            type=ptype,
            offset8=offset8,
            len8=len8,
            flags=flags,
            trans_id=trans_id,
            extension=body[16 : offset8 * 8],
            payload=body[offset8 * 8 :],
            start=r,
            trailer=trailer,
        )

    @staticmethod
    def transfer_pages_extension(pageset_id: int, ranges: list[tuple[int, int]],
                                 sender_owns: int = 0) -> bytes:
        """§4.3 type 7: xfer_pageset_id u16, sender_owns_set u8, reserved u8, range_cnt u32,
        then {byte_count u32, byte_offset u32} per range."""
        out = struct.pack("<HBBI", pageset_id, sender_owns, 0, len(ranges))
        for byte_count, byte_offset in ranges:
            out += struct.pack("<II", byte_count, byte_offset)
        return out

    @staticmethod
    def gpa_direct_extension(ranges: list[tuple[int, int, list[int]]]) -> bytes:
        """§4.3 type 9: reserved u32, range_cnt u32, then {byte_count, byte_offset, pfns...}."""
        out = struct.pack("<II", 0, len(ranges))
        for byte_count, byte_offset, pfns in ranges:
            out += struct.pack("<II", byte_count, byte_offset)
            out += struct.pack(f"<{len(pfns)}Q", *pfns)
        return out
