"""A plain-Python VMBus ring with the compiled ring's semantics: the benchmark baseline.

Same layout (fact sheet §4.1-§4.3), same space rule (8 bytes always free), same signal
decisions (§4.4 rule 7, §4.5 step 2), same validation of descriptors; indices are published
with ``memoryview.cast("I")`` stores (a single 4-byte store, never ``pack_into``). No
transactions beyond a batch write; this is a baseline, not an alternative implementation.
"""

from __future__ import annotations

import struct

__all__ = ["PyRing"]

_DESC = struct.Struct("<HHHHQ")
_TRAILER = struct.Struct("<Q")


class PyRing:
    """Writer and reader of one ring over ``buffer`` (4096 + D bytes)."""

    def __init__(self, buffer: bytearray) -> None:
        mv = memoryview(buffer)
        self.ctl = mv[:68].cast("I")
        self.data = mv[4096:]
        self.size = len(self.data)
        self.ctl[0] = self.ctl[1] = self.ctl[2] = self.ctl[3] = 0
        self.ctl[16] = 1  # feat_pending_send_sz, as Ring(initialize=True) sets it
        self.wr = 0
        self.rd = 0
        self.pub = 0

    def write(self, payload: bytes, trans_id: int = 0, ptype: int = 6, flags: int = 0) -> bool:
        return self.write_many([payload], trans_id, ptype, flags)[1]

    def write_many(
        self, payloads: list[bytes], trans_id: int = 0, ptype: int = 6, flags: int = 0
    ) -> tuple[int, bool]:
        size, data = self.size, self.data
        old = w = self.wr
        count = 0
        for payload in payloads:
            n = len(payload)
            padded = (16 + n + 7) & ~7
            total = padded + 8
            if total > size - 8:
                raise ValueError("packet too large")
            r = self.ctl[1]
            if r >= size or r & 7:
                raise ValueError("corrupt read_index")
            free = r - w if r > w else size - w + r
            if free <= total:
                break
            image = (
                _DESC.pack(ptype, 2, padded >> 3, flags, trans_id + count)
                + payload
                + bytes(padded - 16 - n)
                + _TRAILER.pack(w << 32)
            )
            end = w + total
            if end <= size:
                data[w:end] = image
            else:
                first = size - w
                data[w:] = image[:first]
                data[: total - first] = image[first:]
            w = end % size
            count += 1
        if w == old:
            return count, False
        self.ctl[0] = w
        self.wr = w
        return count, self.ctl[2] == 0 and self.ctl[1] == old

    def read(self) -> tuple[int, int, int, memoryview | bytes] | None:
        size = self.size
        w = self.ctl[0]
        if w >= size or w & 7:
            raise ValueError("corrupt write_index")
        r = self.rd
        avail = w - r if w >= r else size - r + w
        if avail == 0:
            return None
        if avail < 24:
            raise ValueError("corrupt write_index")
        if r + 16 <= size:
            ptype, off8, len8, flags, tid = _DESC.unpack_from(self.data, r)
        else:
            ptype, off8, len8, flags, tid = _DESC.unpack(
                bytes(self.data[r:]) + bytes(self.data[: r + 16 - size])
            )
        if not 0 < ptype <= 0xD or flags & ~1 or off8 < 2 or len8 < off8:
            raise ValueError("corrupt descriptor")
        if len8 * 8 + 8 > avail:
            raise ValueError("corrupt len8")
        end = r + len8 * 8
        if end <= size:
            payload: memoryview | bytes = self.data[r + off8 * 8 : end]
        else:
            whole = bytes(self.data[r:]) + bytes(self.data[: end - size])
            payload = whole[off8 * 8 :]
        self.rd = (end + 8) % size
        return ptype, flags, tid, payload

    def read_many(self, max_count: int) -> list[tuple[int, int, int, memoryview | bytes]]:
        out = []
        while len(out) < max_count and (packet := self.read()) is not None:
            out.append(packet)
        return out

    def done(self) -> bool:
        start, size = self.pub, self.size
        if self.rd == start:
            return False
        self.ctl[1] = self.pub = self.rd
        pending = self.ctl[3]
        if not self.ctl[16] & 1 or pending == 0:
            return False
        w = self.ctl[0]
        cur_free = size - (w - self.rd if w >= self.rd else size - self.rd + w)
        bytes_read = self.rd - start if self.rd >= start else size - start + self.rd
        return cur_free - bytes_read <= pending < cur_free
