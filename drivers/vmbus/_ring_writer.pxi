# Included by _ring.pyx: the producer (§4.4).

@cython.auto_pickle(False)
@cython.no_gc
@cython.final
cdef class RingWriter:
    """The producer side of one ring (§4.4).

    The writer keeps its own copy of ``write_index`` (the producer owns it) and reads only
    ``read_index`` and ``interrupt_mask`` from the consumer, validating ``read_index``.
    """

    cdef Ring _ring
    cdef uint32_t _wr        # published write index
    cdef uint32_t _stage     # write index after the staged (unpublished) packets
    cdef bint _txn
    cdef uint32_t _need      # why the last _stage_packet found the ring full: packet size
    cdef uint32_t _free      # ... and bytes_to_write then

    def __cinit__(self, Ring ring not None):
        self._ring = ring
        self._wr = ring._index(_W, "write_index")
        self._stage = self._wr
        self._txn = False

    @property
    def ring(self) -> Ring:
        return self._ring

    @property
    def in_transaction(self) -> bool:
        return self._txn

    @staticmethod
    def packet_size(Py_ssize_t payload_len, Py_ssize_t header_len=0) -> int:
        """Bytes one packet takes in the ring, trailer included (§4.3)."""
        if payload_len < 0 or header_len < 0:
            raise ValueError("lengths must be >= 0")
        return _align8(_DESC + header_len + payload_len) + _TRAILER

    # -- staging --------------------------------------------------------------------------------
    cdef int _stage_packet(self, int ptype, int flags, uint64_t trans_id,
                           const uint8_t *hdr, Py_ssize_t hlen,
                           const uint8_t *pay, Py_ssize_t plen) except -1:
        """Stage one packet after the staged ones (§4.4 steps 1-4); publish nothing.

        Returns 0 when staged, 1 when it does not fit now (nothing written; ``_need`` and
        ``_free`` say why, for :class:`RingFullError`). Raises for arguments that can never
        make a valid packet and for a corrupt ``read_index``.
        """
        cdef Ring ring = self._ring
        cdef uint32_t size = ring._size
        if ptype <= 0 or ptype > _TYPE_MAX:
            raise ValueError(f"packet_type={ptype:#x} is not a §4.3 packet type (1..0xd)")
        if flags & ~1:
            raise ValueError(f"flags={flags:#x}: only bit 0 (COMPLETION_REQUESTED) is defined")
        if hlen & 7:
            raise ValueError(f"header is {hlen} bytes; it must be a multiple of 8")
        cdef uint64_t body = <uint64_t>_DESC + <uint64_t>hlen + <uint64_t>plen
        cdef uint64_t padded = (body + 7) & ~(<uint64_t>7)
        cdef uint64_t total = padded + _TRAILER
        if total > ring._max_total():
            raise PacketTooLargeError(total, ring._max_total())
        # §4.4 step 1: bytes_to_write measured from the staged position must stay > total.
        cdef uint32_t r = ring._index(_R, "read_index")
        # read_index before the data stores into the space it frees (QEMU barrier pair [B]).
        # Only earlier loads must be ordered before later stores: an acquire fence does that
        # (on x86 it costs nothing; a full barrier here cost one per packet).
        winhv_ring_rmb()
        cdef uint32_t s = self._stage
        cdef uint32_t free = r - s if r > s else size - s + r
        if free <= total:
            self._need = <uint32_t>total
            self._free = free
            return 1
        cdef uint8_t *p
        cdef uint8_t desc[_DESC]
        cdef uint8_t trailer[_TRAILER]
        cdef uint32_t pos
        if <uint64_t>s + total <= size:
            # The common case: the packet does not wrap. Write it in place, in order.
            p = ring._data + s
            _set16(p, <uint16_t>ptype)                                    # §4.4 step 3
            _set16(p + 2, <uint16_t>((_DESC + hlen) >> 3))
            _set16(p + 4, <uint16_t>(padded >> 3))
            _set16(p + 6, <uint16_t>flags)
            _set64(p + 8, trans_id)
            if hlen:
                memcpy(p + _DESC, hdr, <size_t>hlen)
            if plen:
                memcpy(p + _DESC + hlen, pay, <size_t>plen)
            if padded != body:
                memset(p + body, 0, <size_t>(padded - body))
            _set64(p + padded, (<uint64_t>s) << 32)                       # §4.4 step 4
            self._stage = ring._wrap(<uint64_t>s + total)
            return 0
        _set16(desc, <uint16_t>ptype)
        _set16(desc + 2, <uint16_t>((_DESC + hlen) >> 3))
        _set16(desc + 4, <uint16_t>(padded >> 3))
        _set16(desc + 6, <uint16_t>flags)
        _set64(desc + 8, trans_id)
        _set64(trailer, (<uint64_t>s) << 32)
        pos = s
        ring._put(pos, desc, _DESC)                      # §4.4 step 3
        pos = ring._wrap(<uint64_t>pos + _DESC)
        if hlen:
            ring._put(pos, hdr, <uint32_t>hlen)
            pos = ring._wrap(<uint64_t>pos + hlen)
        if plen:
            ring._put(pos, pay, <uint32_t>plen)
            pos = ring._wrap(<uint64_t>pos + plen)
        if padded != body:
            ring._zero(pos, <uint32_t>(padded - body))
            pos = ring._wrap(<uint64_t>pos + (padded - body))
        ring._put(pos, trailer, _TRAILER)                # §4.4 step 4
        self._stage = ring._wrap(<uint64_t>pos + _TRAILER)
        return 0

    cdef int _stage_obj(self, object payload, int ptype, int flags, uint64_t trans_id,
                        object header) except -1:
        """``_stage_packet`` for Python buffers; ``bytes`` without a header skips the export."""
        cdef Py_buffer pb
        cdef Py_buffer hb
        if type(payload) is bytes:
            if header is _EMPTY or (type(header) is bytes and len(<bytes>header) == 0):
                return self._stage_packet(ptype, flags, trans_id, NULL, 0,
                                          <const uint8_t *>PyBytes_AS_STRING(payload),
                                          len(<bytes>payload))
        PyObject_GetBuffer(payload, &pb, PyBUF_SIMPLE)
        try:
            PyObject_GetBuffer(header, &hb, PyBUF_SIMPLE)
            try:
                return self._stage_packet(ptype, flags, trans_id,
                                          <const uint8_t *>hb.buf, hb.len,
                                          <const uint8_t *>pb.buf, pb.len)
            finally:
                PyBuffer_Release(&hb)
        finally:
            PyBuffer_Release(&pb)

    cdef bint _publish(self) noexcept:
        """§4.4 steps 5-7: barrier, publish write_index, decide once whether to signal."""
        cdef Ring ring = self._ring
        cdef uint32_t old = self._wr
        if self._stage == old:
            return False
        # Step 5: the packet bytes before the index. Only earlier accesses must be ordered
        # before this one store, which is what a release fence guarantees (Linux's virt_mb()
        # is stronger than needed here; on x86 stores are not reordered with stores).
        winhv_ring_release()
        winhv_ring_store32(ring._ctl + _W, self._stage)   # step 6
        self._wr = self._stage
        winhv_ring_mb()              # step 7: the index store before the mask load (store->load)
        if winhv_ring_load32(ring._ctl + _MASK) != 0:
            return False
        winhv_ring_rmb()                                  # mask before read_index
        return winhv_ring_load32(ring._ctl + _R) == old   # empty -> non-empty

    # -- public API -----------------------------------------------------------------------------
    def write(self, payload, uint64_t trans_id=0, int flags=0, *, int packet_type=6,
              header=_EMPTY):
        """Write one packet; return True when the consumer must be signalled (§4.4 rule 7).

        ``trans_id`` and ``flags`` may be passed by position: ``write(payload, trans_id)``
        skips keyword parsing, the cheapest call from Python. Outside a transaction the packet
        is published at once. Inside ``begin()``/``commit()`` it is only staged (invisible to
        the reader) and this returns False; ``commit()`` makes the signalling decision. Raises
        :class:`RingFullError` when the packet does not fit now (nothing is written) and
        :class:`PacketTooLargeError` when it never can.
        """
        return self._write1(payload, packet_type, flags, trans_id, header)

    cdef bint _write1(self, object payload, int ptype, int flags, uint64_t trans_id,
                      object header) except -1:
        """``write()`` without Python argument parsing, for the typed entry points."""
        if self._stage_obj(payload, ptype, flags, trans_id, header):
            raise RingFullError(self._need, self._free)
        if self._txn:
            return False
        return self._publish()

    def write_packet(self, payload, uint64_t trans_id, int flags, int packet_type, header):
        """``write()`` with every argument by position (no keyword parsing): for a caller that
        writes packets of several types through one call, like a channel."""
        return self._write1(payload, packet_type, flags, trans_id, header)

    def write_completion(self, uint64_t trans_id, payload):
        """Write a completion packet (type 0xB) echoing ``trans_id`` (§4.3, §4.7)."""
        return self._write1(payload, 0xB, 0, trans_id, _EMPTY)

    def write_gpa_direct(self, ranges, payload, *, uint64_t trans_id,
                         int flags=PACKET_FLAG_COMPLETION_REQUESTED):
        """Write a GPA-direct packet (type 9) describing guest pages (§4.3).

        ``ranges`` is a sequence of ``(byte_count, byte_offset, pfns)``; each range needs
        exactly ceil((byte_offset + byte_count) / 4096) PFNs and ``byte_offset < 4096``.
        """
        return self._write1(payload, 9, flags, trans_id, encode_gpa_direct(ranges))

    def write_transfer_pages(self, Py_ssize_t pageset_id, ranges, payload=b"", *,
                             uint64_t trans_id, int flags=PACKET_FLAG_COMPLETION_REQUESTED,
                             bint sender_owns=False):
        """Write a transfer-page packet (type 7) naming ``(byte_count, byte_offset)`` ranges
        of transfer page set ``pageset_id`` (§4.3; what a NetVSP sends for received data).
        The consumer completes it to hand the ranges back, so completion is requested by
        default."""
        return self._write1(payload, 7, flags, trans_id,
                            encode_transfer_pages(pageset_id, ranges, sender_owns=sender_owns))

    def begin(self):
        """Start a transaction: later writes are staged until ``commit()``."""
        if self._txn:
            raise RingError("begin() inside a transaction; commit() or abort() first")
        self._txn = True

    def commit(self):
        """Publish every staged packet with one index store; return the one signal decision."""
        if not self._txn:
            raise RingError("commit() without begin()")
        self._txn = False
        return self._publish()

    def abort(self):
        """Drop the staged packets; the ring's published state is unchanged."""
        if not self._txn:
            raise RingError("abort() without begin()")
        self._txn = False
        self._stage = self._wr

    def write_many(self, payloads, *, int packet_type=6, uint64_t trans_id_base=0,
                   int flags=0):
        """Write as many ``payloads`` as fit, in order, with one publish.

        Packet ``i`` gets ``trans_id_base + i``. Returns ``(count written, signal)``. Inside a
        transaction the packets join it and ``signal`` is False (``commit()`` decides). If a
        payload can never fit, :class:`PacketTooLargeError` is raised and the packets this call
        staged are dropped. A ``list`` of ``bytes`` is the fast path: one C loop, no iterator
        and no buffer export per packet; any iterable of buffers works.
        """
        cdef uint32_t mark = self._stage
        cdef Py_ssize_t count = 0
        cdef object payload
        try:
            if type(payloads) is list:
                while count < len(<list>payloads):     # re-checked: the list may change size
                    payload = (<list>payloads)[count]
                    if self._stage_obj(payload, packet_type, flags, trans_id_base + count,
                                       _EMPTY):
                        break
                    count += 1
            else:
                for payload in payloads:
                    if self._stage_obj(payload, packet_type, flags, trans_id_base + count,
                                       _EMPTY):
                        break
                    count += 1
        except BaseException:
            self._stage = mark
            raise
        if self._txn:
            return count, False
        return count, self._publish()

    def set_pending_send_size(self, Py_ssize_t nbytes):
        """Ask the consumer to signal once more than ``nbytes`` are free (§4.5 step 4).

        ``nbytes`` is the blocked packet's size with trailer (``RingFullError.needed``); it is
        rounded up to 8. Returns True when that much space is already free after the barrier,
        in which case the caller should retry at once instead of waiting.
        """
        if nbytes <= 0 or nbytes > self._ring._size:
            raise ValueError(f"nbytes={nbytes}: expected 1..data size ({self._ring._size})")
        cdef Ring ring = self._ring
        cdef uint32_t want = _align8(<uint64_t>nbytes)
        winhv_ring_store32(ring._ctl + _PENDING, want)
        winhv_ring_mb()       # pending before re-reading read_index (QEMU barrier pair [A])
        cdef uint32_t r = ring._index(_R, "read_index")
        cdef uint32_t s = self._stage
        cdef uint32_t free = r - s if r > s else ring._size - s + r
        return free > want

    def clear_pending_send_size(self):
        """Withdraw the request once the blocked write has succeeded (§4.5 step 4)."""
        winhv_ring_store32(self._ring._ctl + _PENDING, 0)
