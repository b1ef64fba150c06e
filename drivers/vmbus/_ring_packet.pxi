# Included by _ring.pyx: the packet as read (§4.3) and the GPA-direct extension codec.

cdef struct _Desc:
    # A descriptor the reader has validated (§4.3), and where its packet starts.
    uint16_t type
    uint16_t off8
    uint16_t len8
    uint16_t flags
    uint64_t trans_id
    uint32_t start


cdef Py_ssize_t _ONE = 1         # the stride of an exported payload
cdef char *_FORMAT_B = b"B"      # and its format: unsigned bytes


@cython.auto_pickle(False)
@cython.no_gc
@cython.final
@cython.freelist(64)
cdef class Packet:
    """One packet as the reader found it (§4.3).

    ``payload`` is everything from ``offset8 * 8`` to ``len8 * 8``, padding included (the wire
    carries no finer length). When the packet does not wrap around the end of the data area it
    is a zero-copy, read-only ``memoryview`` into the ring: valid until ``RingReader.done()``
    hands the space back to the producer, who may then overwrite it (copy what must outlive
    that). It is made on first access and kept, so ``packet.payload is packet.payload``. When
    the packet wraps, ``payload`` and ``header`` are ``bytes`` cut from a copy of the packet
    taken when it was read. ``header`` is the type-specific extension between the
    descriptor and the payload. ``ranges`` is set for GPA-direct packets (type 9) only: a
    tuple of ``(byte_count, byte_offset, pfns)`` with ``pfns`` a tuple of ints.
    ``transfer_ranges`` is set for transfer-page packets (type 7) only: a tuple of
    ``(byte_count, byte_offset)`` into the transfer page set ``transfer_pageset_id``. (Two
    names, because consumers test ``ranges is not None`` to mean GPA-direct.) Both
    extensions are validated when the packet is read.

    A packet also exports its payload through the buffer protocol, read-only, so
    ``bytes(packet)`` copies the payload and ``memoryview(packet)`` is a view like ``payload``.

    Why the fields are few and the views lazy: a reader creates one of these per packet, so
    building it must cost a handful of stores. ``payload``, ``header`` and ``type`` are only
    materialised when asked for; ``type`` is a cached :class:`PacketType` member.
    """

    cdef readonly uint16_t flags
    cdef readonly uint16_t offset8
    cdef readonly uint16_t len8
    cdef readonly uint64_t trans_id
    cdef readonly uint32_t start
    cdef readonly object ranges
    cdef readonly object transfer_ranges
    cdef uint16_t _type
    cdef object _src           # what keeps _ptr valid: the Ring, or the bytes copy of a wrap
    cdef const uint8_t *_ptr   # the packet's first byte (descriptor) in that memory
    cdef Py_ssize_t _plen      # payload length, the exported buffer's shape
    cdef object _payload
    cdef object _header

    def __init__(self):
        raise TypeError("Packet objects are created by RingReader")

    @property
    def type(self):
        """The packet type as a :class:`PacketType` member."""
        return _TYPES[self._type]

    @property
    def completion_requested(self) -> bool:
        return bool(self.flags & 1)

    @property
    def transfer_pageset_id(self):
        """``xfer_pageset_id`` of a transfer-page packet (type 7, §4.3), else None."""
        if self._type != 7:
            return None
        return _u16(self._ptr + _DESC)

    @property
    def payload(self):
        # A view shares the ring's managed buffer, not this packet, so keeping it here makes
        # no reference cycle (this class is not tracked by the GC).
        if self._payload is None:
            if type(self._src) is bytes:
                self._payload = (<bytes>self._src)[self.offset8 * 8:self.len8 * 8]
            else:
                self._payload = (<Ring>self._src)._data_view(self.start + self.offset8 * 8,
                                                       self._plen)
        return self._payload

    @property
    def header(self):
        if self._header is None:
            if self.offset8 == 2:
                self._header = _EMPTY
            elif type(self._src) is bytes:
                self._header = (<bytes>self._src)[_DESC:self.offset8 * 8]
            else:
                self._header = (<Ring>self._src)._data_view(self.start + _DESC,
                                                      (self.offset8 - 2) * 8)
        return self._header

    def __getbuffer__(self, Py_buffer *view, int flags):
        if flags & PyBUF_WRITABLE:
            raise BufferError("a packet's payload is read-only (it is the producer's data)")
        view.buf = <void *>(self._ptr + self.offset8 * 8)
        view.obj = self
        view.len = self._plen
        view.readonly = 1
        view.itemsize = 1
        view.format = _FORMAT_B if flags & PyBUF_FORMAT else NULL
        view.ndim = 1
        view.shape = &self._plen if flags & PyBUF_ND else NULL
        view.strides = &_ONE if (flags & PyBUF_STRIDES) == PyBUF_STRIDES else NULL
        view.suboffsets = NULL
        view.internal = NULL

    def __releasebuffer__(self, Py_buffer *view):
        pass

    def __repr__(self):
        return (
            f"Packet(type={self.type!r}, flags={self.flags:#x}, trans_id={self.trans_id:#x}, "
            f"offset8={self.offset8}, len8={self.len8}, start={self.start:#x})"
        )


cdef Packet _new_packet(_Desc *d, object src, const uint8_t *ptr):
    """A Packet for the validated descriptor ``d`` whose bytes start at ``ptr`` in ``src``."""
    cdef Packet pkt = Packet.__new__(Packet)
    pkt._type = d.type
    pkt.flags = d.flags
    pkt.offset8 = d.off8
    pkt.len8 = d.len8
    pkt.trans_id = d.trans_id
    pkt.start = d.start
    pkt._src = src
    pkt._ptr = ptr
    pkt._plen = (<Py_ssize_t>d.len8 - d.off8) * 8
    return pkt


def encode_gpa_direct(ranges) -> bytes:
    """The type-9 extension for ``ranges``: reserved u32, range_cnt u32, then per range
    byte_count u32, byte_offset u32 and its u64 PFNs (fact sheet §4.3)."""
    cdef list rs = list(ranges)
    if not rs:
        raise ValueError("a GPA-direct packet needs at least one range")
    cdef Py_ssize_t n = _GPA_HDR
    cdef list norm = []
    cdef uint64_t need
    for item in rs:
        byte_count, byte_offset, pfns = item
        pfns = tuple(pfns)
        if not 0 <= byte_offset < _PAGE:
            raise ValueError(f"byte_offset={byte_offset}: expected 0..4095")
        if not 0 <= byte_count <= 0xFFFFFFFF:
            raise ValueError(f"byte_count={byte_count}: expected a u32")
        need = (<uint64_t>byte_offset + <uint64_t>byte_count + _PAGE - 1) // _PAGE
        if <uint64_t>len(pfns) != need:
            raise ValueError(
                f"range (byte_count={byte_count}, byte_offset={byte_offset}) needs {need} "
                f"PFNs, got {len(pfns)}"
            )
        norm.append((byte_count, byte_offset, pfns))
        n += _RANGE_HDR + 8 * len(pfns)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    cdef uint8_t *p = <uint8_t *>PyBytes_AS_STRING(out)
    _set32(p, 0)
    _set32(p + 4, <uint32_t>len(norm))
    p += _GPA_HDR
    for byte_count, byte_offset, pfns in norm:
        _set32(p, byte_count)
        _set32(p + 4, byte_offset)
        p += _RANGE_HDR
        for pfn in pfns:
            _set64(p, pfn)
            p += 8
    return out


def encode_transfer_pages(pageset_id, ranges, *, bint sender_owns=False) -> bytes:
    """The type-7 extension (§4.3, Linux ``vmtransfer_page_packet_header``):
    xfer_pageset_id u16, sender_owns_set u8, reserved u8, range_cnt u32, then per range
    byte_count u32 and byte_offset u32 (an offset into the transfer page set)."""
    if not 0 <= pageset_id <= 0xFFFF:
        raise ValueError(f"pageset_id={pageset_id}: expected a u16")
    cdef list rs = list(ranges)
    if len(rs) > 0xFFFFFFFF:
        raise ValueError("too many ranges")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, _XFER_HDR + _XFER_RANGE * len(rs))
    cdef uint8_t *p = <uint8_t *>PyBytes_AS_STRING(out)
    _set16(p, <uint16_t>pageset_id)
    p[2] = 1 if sender_owns else 0
    p[3] = 0
    _set32(p + 4, <uint32_t>len(rs))
    p += _XFER_HDR
    for item in rs:
        byte_count, byte_offset = item
        if not 0 <= byte_count <= 0xFFFFFFFF or not 0 <= byte_offset <= 0xFFFFFFFF:
            raise ValueError(f"range ({byte_count}, {byte_offset}): expected two u32s")
        _set32(p, byte_count)
        _set32(p + 4, byte_offset)
        p += _XFER_RANGE
    return out


cdef tuple _parse_xfer(const uint8_t *pkt, uint16_t off8, uint32_t start, uint32_t size,
                       bint build):
    """Validate a transfer-page extension (§4.3) from a contiguous packet image: the range
    list must fill the extension exactly, as every sender lays it out. Decode it when
    ``build`` (a tuple of ``(byte_count, byte_offset)``), else return None."""
    cdef uint32_t ext = (<uint32_t>off8 - 2) * 8
    cdef const uint8_t *p = pkt + _DESC
    if ext < _XFER_HDR:
        raise RingCorruptError("offset8", off8,
                               ">= 3 for a transfer-page packet (its 8-byte header)",
                               _CTL + (start + 2) % size, size)
    cdef uint32_t count = _u32(p + 4)
    if <uint64_t>count * _XFER_RANGE != ext - _XFER_HDR:
        raise RingCorruptError(
            "range_cnt", count, f"{(ext - _XFER_HDR) // _XFER_RANGE} (the ranges that fill the "
            f"{ext:#x}-byte extension)", _CTL + (start + 20) % size, size)
    if not build:
        return None
    cdef uint32_t i
    cdef list out = []
    p += _XFER_HDR
    for i in range(count):
        out.append((_u32(p + i * _XFER_RANGE), _u32(p + i * _XFER_RANGE + 4)))
    return tuple(out)


cdef tuple _parse_gpa(const uint8_t *pkt, uint16_t off8, uint32_t start, uint32_t size,
                      bint build):
    """Validate a GPA-direct extension (§4.3) from a contiguous packet image, and decode it
    when ``build`` (else return None: the batch payload reads validate without decoding)."""
    cdef uint32_t ext = (<uint32_t>off8 - 2) * 8
    cdef const uint8_t *p = pkt + _DESC
    if ext < _GPA_HDR:
        raise RingCorruptError("offset8", off8, ">= 3 for a GPA-direct packet (range header)",
                               _CTL + (start + 2) % size, size)
    cdef uint32_t count = _u32(p + 4)
    if count == 0:
        raise RingCorruptError("range_cnt", count, ">= 1", _CTL + (start + 20) % size, size)
    cdef uint32_t pos = _GPA_HDR
    cdef uint32_t i, k, byte_count, byte_offset
    cdef uint64_t npfn
    cdef list out = []
    cdef list pfns
    for i in range(count):
        if pos + _RANGE_HDR > ext:
            raise RingCorruptError(
                "range_cnt", count, f"consistent with the {ext:#x}-byte extension "
                f"(range {i} starts past it)", _CTL + (start + 20) % size, size)
        byte_count = _u32(p + pos)
        byte_offset = _u32(p + pos + 4)
        if byte_offset >= _PAGE:
            raise RingCorruptError("byte_offset", byte_offset, "< 4096 (offset in first page)",
                                   _CTL + (start + _DESC + pos + 4) % size, size)
        npfn = (<uint64_t>byte_count + byte_offset + _PAGE - 1) // _PAGE
        if pos + _RANGE_HDR + npfn * 8 > ext:
            raise RingCorruptError(
                "byte_count", byte_count,
                f"covered by the extension ({npfn} PFNs needed, "
                f"{(ext - pos - _RANGE_HDR) // 8} present)",
                _CTL + (start + _DESC + pos) % size, size)
        pos += _RANGE_HDR
        if build:
            pfns = []
            for k in range(<uint32_t>npfn):
                pfns.append(_u64(p + pos + 8 * k))
            out.append((byte_count, byte_offset, tuple(pfns)))
        pos += <uint32_t>npfn * 8
    if pos != ext:
        raise RingCorruptError(
            "range_cnt", count, f"consistent with the {ext:#x}-byte extension "
            f"({ext - pos:#x} bytes left over)", _CTL + (start + 20) % size, size)
    return tuple(out) if build else None
