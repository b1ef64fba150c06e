# Included by _ring.pyx: the consumer (§4.5).

@cython.auto_pickle(False)
@cython.no_gc
@cython.final
cdef class RingReader:
    """The consumer side of one ring (§4.5): peek/pop on a private index, ``done()`` publishes.

    Everything the producer wrote is validated before use: ``write_index`` (``< D``, aligned),
    each descriptor (known type, flags only bit 0, ``offset8 >= 2``, ``len8 >= offset8``,
    ``len8 * 8 + 8`` within the bytes available) and GPA-direct range lists. A violation raises
    :class:`RingCorruptError`; the reader's position does not move, so the caller can close the
    channel with the error in hand.
    """

    cdef Ring _ring
    cdef uint32_t _rd       # private read index (past popped packets)
    cdef uint32_t _pub      # last published read index
    cdef Packet _peeked

    def __cinit__(self, Ring ring not None):
        self._ring = ring
        self._rd = ring._index(_R, "read_index")
        self._pub = self._rd
        self._peeked = None

    @property
    def ring(self) -> Ring:
        return self._ring

    @property
    def unpublished(self) -> int:
        """Bytes popped but not yet handed back with ``done()``."""
        return _to_read(self._rd, self._pub, self._ring._size)

    cdef Packet _parse(self):
        cdef Ring ring = self._ring
        cdef uint32_t size = ring._size
        cdef uint32_t w = ring._index(_W, "write_index")
        winhv_ring_rmb()          # write_index before the packet bytes (QEMU pair [C])
        cdef uint32_t r = self._rd
        cdef uint32_t avail = _to_read(w, r, size)
        if avail == 0:
            return None
        if avail < _DESC + _TRAILER:
            raise RingCorruptError(
                "write_index", w,
                f"at least 0x18 bytes past read index {r:#x} (a descriptor and trailer)",
                _W, size)
        cdef uint8_t desc[_DESC]
        ring._get(r, desc, _DESC)
        cdef uint16_t ptype = _u16(desc)
        cdef uint16_t off8 = _u16(desc + 2)
        cdef uint16_t len8 = _u16(desc + 4)
        cdef uint16_t flags = _u16(desc + 6)
        cdef uint32_t at = _CTL + r
        if ptype == 0 or ptype > _TYPE_MAX:
            raise RingCorruptError("type", ptype, "a §4.3 packet type (1..0xd)", at, size)
        if flags & ~1:
            raise RingCorruptError("flags", flags, "0 or 1 (only COMPLETION_REQUESTED)",
                                   _CTL + ring._wrap(<uint64_t>r + 6), size)
        if off8 < 2:
            raise RingCorruptError("offset8", off8, ">= 2", _CTL + ring._wrap(<uint64_t>r + 2),
                                   size)
        if len8 < off8:
            raise RingCorruptError("len8", len8, f">= offset8 ({off8:#x})",
                                   _CTL + ring._wrap(<uint64_t>r + 4), size)
        cdef uint32_t plen = <uint32_t>len8 * 8
        if <uint64_t>plen + _TRAILER > avail:
            raise RingCorruptError("len8", len8,
                                   f"within the {avail:#x} bytes available (len8 * 8 + 8)",
                                   _CTL + ring._wrap(<uint64_t>r + 4), size)
        cdef Packet pkt = _new_packet()
        pkt._type = ptype
        pkt.flags = flags
        pkt.offset8 = off8
        pkt.len8 = len8
        pkt.trans_id = _u64(desc + 8)
        pkt.start = r
        cdef bytes copy
        cdef const uint8_t *base
        if <uint64_t>r + plen <= size:
            pkt._src = ring._mv
            pkt._base = r
            base = ring._data + r
        else:
            copy = PyBytes_FromStringAndSize(NULL, plen)
            ring._get(r, <uint8_t *>PyBytes_AS_STRING(copy), plen)
            base = <const uint8_t *>PyBytes_AS_STRING(copy)
            pkt._src = copy
            pkt._base = 0
            pkt._payload = copy[off8 * 8:]
            pkt._header = copy[_DESC:off8 * 8]
        if ptype == 9:
            pkt.ranges = _parse_gpa(base, off8, r, size)
        return pkt

    def peek(self):
        """The next packet, or None when the ring is empty; does not move the read index."""
        if self._peeked is None:
            self._peeked = self._parse()
        return self._peeked

    def pop(self):
        """Move the private read index past the peeked (or next) packet and its trailer."""
        cdef Packet pkt = self._peeked
        if pkt is None:
            pkt = self._parse()
            if pkt is None:
                raise RingError("pop() on an empty ring")
        self._peeked = None
        self._rd = self._ring._wrap(<uint64_t>pkt.start + <uint64_t>pkt.len8 * 8 + _TRAILER)

    def read(self):
        """``peek()`` then ``pop()``: the next packet, or None. Call ``done()`` afterwards."""
        cdef Packet pkt = self._peeked
        if pkt is None:
            pkt = self._parse()
            if pkt is None:
                return None
        self._peeked = None
        self._rd = self._ring._wrap(<uint64_t>pkt.start + <uint64_t>pkt.len8 * 8 + _TRAILER)
        return pkt

    def read_many(self, Py_ssize_t max_count):
        """Up to ``max_count`` packets (fewer when the ring runs dry); no publish."""
        cdef list out = []
        cdef Packet pkt
        while len(out) < max_count:
            pkt = self._peeked
            if pkt is None:
                pkt = self._parse()
                if pkt is None:
                    break
            self._peeked = None
            self._rd = self._ring._wrap(<uint64_t>pkt.start + <uint64_t>pkt.len8 * 8 + _TRAILER)
            out.append(pkt)
        return out

    def done(self):
        """Publish ``read_index``; return True when the producer must be signalled (§4.5 step 2).

        That is: the ring has the pending-send-size feature bit, the producer set
        ``pending_send_sz``, and this publish moved free space from ``<= pending`` to
        ``> pending``. ``interrupt_mask`` is not consulted (§4.5, recent Linux and OVMM).
        """
        cdef Ring ring = self._ring
        cdef uint32_t size = ring._size
        cdef uint32_t start = self._pub
        if self._rd == start:
            return False
        winhv_ring_release()                              # 2.1: data reads before the index
        winhv_ring_store32(ring._ctl + _R, self._rd)      # 2.2
        self._pub = self._rd
        if not (winhv_ring_load32(ring._ctl + _FEATURES) & 1):
            return False                                  # 2.3
        winhv_ring_mb()                                   # 2.4
        cdef uint32_t pending = winhv_ring_load32(ring._ctl + _PENDING)
        if pending == 0:
            return False                                  # 2.5
        winhv_ring_rmb()                                  # 2.6
        cdef uint32_t w = ring._index(_W, "write_index")
        cdef int64_t cur_free = <int64_t>size - _to_read(w, self._rd, size)   # 2.7
        cdef int64_t bytes_read = _to_read(self._rd, start, size)
        if cur_free - bytes_read > pending:               # 2.8: was not blocked
            return False
        if cur_free <= pending:                           # still not enough
            return False
        return True

    def begin_read(self):
        """Mask producer interrupts while draining (§4.5 step 3, Linux ``hv_begin_read``)."""
        winhv_ring_store32(self._ring._ctl + _MASK, 1)
        winhv_ring_mb()

    def end_read(self):
        """Unmask, then re-check: True when data arrived meanwhile and draining must go on."""
        winhv_ring_store32(self._ring._ctl + _MASK, 0)
        winhv_ring_mb()
        return winhv_ring_load32(self._ring._ctl + _W) != self._rd
