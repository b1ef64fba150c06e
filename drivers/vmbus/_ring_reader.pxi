# Included by _ring.pyx: the consumer (§4.5).

@cython.auto_pickle(False)
@cython.no_gc
@cython.final
cdef class RingReader:
    """The consumer side of one ring (§4.5): peek/pop on a private index, ``done()`` publishes.

    Everything the producer wrote is validated before use: ``write_index`` (``< D``, aligned),
    each descriptor (known type, flags only bit 0, ``offset8 >= 2``, ``len8 >= offset8``,
    ``len8 * 8 + 8`` within the bytes available) and the range lists of GPA-direct and
    transfer-page packets. A violation raises
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

    # -- parsing: every field the producer wrote is checked before it is used ------------------
    cdef uint32_t _load_w(self) except? 0xFFFFFFFF:
        """The producer's write_index, validated, ordered before the packet bytes it covers."""
        cdef uint32_t w = self._ring._index(_W, "write_index")
        winhv_ring_rmb()          # write_index before the packet bytes (QEMU pair [C])
        return w

    cdef int _descriptor(self, uint32_t w, _Desc *d) except -1:
        """Validate the descriptor at the private read index against ``w`` (§4.3, §4.5 step 1).

        Returns 0 when nothing is left before ``w``, else 1 with ``d`` filled in. Raises
        :class:`RingCorruptError` without moving the read index.
        """
        cdef Ring ring = self._ring
        cdef uint32_t size = ring._size
        cdef uint32_t r = self._rd
        cdef uint32_t avail = _to_read(w, r, size)
        if avail == 0:
            return 0
        if avail < _DESC + _TRAILER:
            raise RingCorruptError(
                "write_index", w,
                f"at least 0x18 bytes past read index {r:#x} (a descriptor and trailer)",
                _W, size)
        cdef uint8_t desc[_DESC]
        ring._get(r, desc, _DESC)
        d.type = _u16(desc)
        d.off8 = _u16(desc + 2)
        d.len8 = _u16(desc + 4)
        d.flags = _u16(desc + 6)
        d.trans_id = _u64(desc + 8)
        d.start = r
        if d.type == 0 or d.type > _TYPE_MAX:
            raise RingCorruptError("type", d.type, "a §4.3 packet type (1..0xd)", _CTL + r, size)
        if d.flags & ~1:
            raise RingCorruptError("flags", d.flags, "0 or 1 (only COMPLETION_REQUESTED)",
                                   _CTL + ring._wrap(<uint64_t>r + 6), size)
        if d.off8 < 2:
            raise RingCorruptError("offset8", d.off8, ">= 2",
                                   _CTL + ring._wrap(<uint64_t>r + 2), size)
        if d.len8 < d.off8:
            raise RingCorruptError("len8", d.len8, f">= offset8 ({d.off8:#x})",
                                   _CTL + ring._wrap(<uint64_t>r + 4), size)
        if <uint64_t>d.len8 * 8 + _TRAILER > avail:
            raise RingCorruptError("len8", d.len8,
                                   f"within the {avail:#x} bytes available (len8 * 8 + 8)",
                                   _CTL + ring._wrap(<uint64_t>r + 4), size)
        return 1

    cdef Packet _packet(self, _Desc *d):
        """The Packet for a validated descriptor; decodes (and so validates) GPA-direct ranges."""
        cdef Ring ring = self._ring
        cdef uint32_t plen = <uint32_t>d.len8 * 8
        cdef bytes copy
        cdef Packet pkt
        if <uint64_t>d.start + plen <= ring._size:
            pkt = _new_packet(d, ring, ring._data + d.start)
        else:
            copy = PyBytes_FromStringAndSize(NULL, plen)
            ring._get(d.start, <uint8_t *>PyBytes_AS_STRING(copy), plen)
            pkt = _new_packet(d, copy, <const uint8_t *>PyBytes_AS_STRING(copy))
        if d.type == 9:
            pkt.ranges = _parse_gpa(pkt._ptr, d.off8, d.start, ring._size, True)
        elif d.type == 7:
            pkt.transfer_ranges = _parse_xfer(pkt._ptr, d.off8, d.start, ring._size, True)
        return pkt

    cdef Packet _next(self):
        """The peeked packet, or the next one parsed (None when the ring is empty)."""
        cdef _Desc d
        if self._peeked is not None:
            return self._peeked
        if not self._descriptor(self._load_w(), &d):
            return None
        return self._packet(&d)

    cdef inline void _advance(self, uint32_t start, uint16_t len8) noexcept:
        self._peeked = None
        self._rd = self._ring._wrap(<uint64_t>start + <uint64_t>len8 * 8 + _TRAILER)

    # -- public API -----------------------------------------------------------------------------
    def peek(self):
        """The next packet, or None when the ring is empty; does not move the read index."""
        self._peeked = self._next()
        return self._peeked

    def pop(self):
        """Move the private read index past the peeked (or next) packet and its trailer."""
        cdef Packet pkt = self._next()
        if pkt is None:
            raise RingError("pop() on an empty ring")
        self._advance(pkt.start, pkt.len8)

    def read(self):
        """``peek()`` then ``pop()``: the next packet, or None. Call ``done()`` afterwards."""
        cdef Packet pkt = self._next()
        if pkt is not None:
            self._advance(pkt.start, pkt.len8)
        return pkt

    def read_many(self, Py_ssize_t max_count):
        """Up to ``max_count`` packets (fewer when the ring runs dry); no publish.

        ``write_index`` is loaded once: the batch is what the producer had published when the
        call began. A corrupt packet raises :class:`RingCorruptError` and the packets before it
        in this batch are consumed (the channel is closed on that error anyway).
        """
        cdef list out = []
        cdef Packet pkt
        cdef _Desc d
        if max_count <= 0:
            return out
        if self._peeked is not None:
            pkt = self._peeked
            self._advance(pkt.start, pkt.len8)
            out.append(pkt)
        cdef uint32_t w = self._load_w()
        while len(out) < max_count and self._descriptor(w, &d):
            pkt = self._packet(&d)
            self._advance(d.start, d.len8)
            out.append(pkt)
        return out

    def read_payloads(self, Py_ssize_t max_count):
        """Up to ``max_count`` payloads as ``bytes`` copies, in order; no Packet objects, no
        publish.

        The batch path for consumers that only need the data (pipe-mode channels, benchmarks):
        one C loop validates each packet exactly as :meth:`read_many` does (range lists
        included) and copies its payload (``offset8 * 8`` to ``len8 * 8``, padding
        included, like ``Packet.payload``). Types, flags and transaction ids are not returned;
        use :meth:`read_many` when they matter. Since these are copies they stay valid after
        ``done()``. Errors behave as in :meth:`read_many`.
        """
        cdef list out = []
        cdef Ring ring = self._ring
        cdef _Desc d
        cdef uint32_t plen
        cdef const uint8_t *base
        cdef bytes copy
        if max_count <= 0:
            return out
        if self._peeked is not None:
            pkt = self._peeked
            out.append(bytes(pkt.payload))
            self._advance(pkt.start, pkt.len8)
        cdef uint32_t w = self._load_w()
        while len(out) < max_count and self._descriptor(w, &d):
            plen = <uint32_t>d.len8 * 8
            if <uint64_t>d.start + plen <= ring._size:
                base = ring._data + d.start
                if d.type == 9:
                    _parse_gpa(base, d.off8, d.start, ring._size, False)
                elif d.type == 7:
                    _parse_xfer(base, d.off8, d.start, ring._size, False)
                out.append(PyBytes_FromStringAndSize(<const char *>base + d.off8 * 8,
                                                     (<Py_ssize_t>d.len8 - d.off8) * 8))
            else:
                copy = PyBytes_FromStringAndSize(NULL, plen)
                ring._get(d.start, <uint8_t *>PyBytes_AS_STRING(copy), plen)
                if d.type == 9:
                    _parse_gpa(<const uint8_t *>PyBytes_AS_STRING(copy), d.off8, d.start,
                               ring._size, False)
                elif d.type == 7:
                    _parse_xfer(<const uint8_t *>PyBytes_AS_STRING(copy), d.off8, d.start,
                                ring._size, False)
                out.append(copy[d.off8 * 8:])
            self._advance(d.start, d.len8)
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
