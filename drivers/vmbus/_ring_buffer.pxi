# Included by _ring.pyx: the Ring (control page and data area, fact sheet §4.1-§4.2).

@cython.auto_pickle(False)
@cython.no_gc
@cython.final
cdef class Ring:
    """One ring (control page + data area) over a writable buffer; never copies the buffer.

    ``buffer`` is any object exporting a writable, C-contiguous buffer (``bytearray``,
    ``mmap``, a ``memoryview`` slice of guest memory) of 4096 + D bytes, D a positive multiple
    of 4096, starting 8-byte aligned. ``initialize=True`` zeroes the control page and sets
    ``feature_bits = FEATURE_PENDING_SEND_SIZE``, as Linux does for the rings it creates.

    The control-field properties are raw single 4-byte accesses, meant for tests and fault
    injection; drivers use :class:`RingWriter` and :class:`RingReader`.
    """

    cdef Py_buffer _view
    cdef bint _held
    cdef uint8_t *_ctl
    cdef uint8_t *_data
    cdef uint32_t _size
    cdef object _mv          # memoryview over the data area, for zero-copy payload views
    cdef bint _has_writer
    cdef bint _has_reader

    def __cinit__(self, buffer, *, bint initialize=False):
        self._held = False
        mv = memoryview(buffer)
        if mv.readonly:
            raise TypeError(f"ring buffer must be writable, got a read-only {type(buffer).__name__}")
        if not mv.c_contiguous:
            raise TypeError("ring buffer must be C-contiguous")
        if mv.ndim != 1 or mv.format != "B":
            mv = mv.cast("B")
        cdef Py_ssize_t n = mv.nbytes
        if n < _CTL + _PAGE or (n - _CTL) % _PAGE != 0 or n - _CTL > 0x80000000:
            raise ValueError(
                f"ring buffer is {n:#x} bytes; expected 4096 (control page) + a positive "
                f"multiple of 4096 (data area, at most 2 GiB)"
            )
        PyObject_GetBuffer(mv, &self._view, PyBUF_SIMPLE | PyBUF_WRITABLE)
        self._held = True
        self._ctl = <uint8_t *>self._view.buf
        if (<size_t>self._ctl) & 7:
            raise ValueError("ring buffer must start 8-byte aligned (indices are aligned u32s)")
        self._data = self._ctl + _CTL
        self._size = <uint32_t>(n - _CTL)
        self._mv = mv[_CTL:].toreadonly()   # payload views must not write the producer's data
        if initialize:
            memset(self._ctl, 0, _CTL)
            winhv_ring_store32(self._ctl + _FEATURES, 1)
            winhv_ring_mb()

    def __dealloc__(self):
        if self._held:
            PyBuffer_Release(&self._view)
            self._held = False

    # -- raw control fields ---------------------------------------------------------------------
    @property
    def data_size(self) -> int:
        """D, the data area's size in bytes."""
        return self._size

    @property
    def write_index(self) -> int:
        return winhv_ring_load32(self._ctl + _W)

    @write_index.setter
    def write_index(self, uint32_t value):
        winhv_ring_store32(self._ctl + _W, value)

    @property
    def read_index(self) -> int:
        return winhv_ring_load32(self._ctl + _R)

    @read_index.setter
    def read_index(self, uint32_t value):
        winhv_ring_store32(self._ctl + _R, value)

    @property
    def interrupt_mask(self) -> int:
        return winhv_ring_load32(self._ctl + _MASK)

    @interrupt_mask.setter
    def interrupt_mask(self, uint32_t value):
        winhv_ring_store32(self._ctl + _MASK, value)

    @property
    def pending_send_size(self) -> int:
        return winhv_ring_load32(self._ctl + _PENDING)

    @pending_send_size.setter
    def pending_send_size(self, uint32_t value):
        winhv_ring_store32(self._ctl + _PENDING, value)

    @property
    def feature_bits(self) -> int:
        return winhv_ring_load32(self._ctl + _FEATURES)

    @feature_bits.setter
    def feature_bits(self, uint32_t value):
        winhv_ring_store32(self._ctl + _FEATURES, value)

    # -- §4.2 space accounting ------------------------------------------------------------------
    @property
    def bytes_to_read(self) -> int:
        """Published bytes between read_index and write_index (§4.2); validates both."""
        cdef uint32_t w = self._index(_W, "write_index")
        cdef uint32_t r = self._index(_R, "read_index")
        return _to_read(w, r, self._size)

    @property
    def bytes_to_write(self) -> int:
        """``D - bytes_to_read`` (§4.2); a write of ``n`` bytes needs ``bytes_to_write > n``."""
        cdef uint32_t w = self._index(_W, "write_index")
        cdef uint32_t r = self._index(_R, "read_index")
        return self._size - _to_read(w, r, self._size)

    @property
    def max_packet_size(self) -> int:
        """The largest packet, trailer included, an empty ring accepts: ``D - 8`` (§4.2).

        A packet's ``len8`` is also a u16, so for D > 512 KiB the bound is ``0xFFFF * 8 + 8``.
        """
        return self._max_total()

    cdef inline uint32_t _max_total(self) noexcept:
        cdef uint32_t m = self._size - _TRAILER
        if m > _MAX_LEN8 * 8 + _TRAILER:
            m = _MAX_LEN8 * 8 + _TRAILER
        return m

    cdef inline uint32_t _index(self, int off, str name) except? 0xFFFFFFFF:
        """Load a control index and check §4.1: ``< D`` and 8-byte aligned."""
        cdef uint32_t v = winhv_ring_load32(self._ctl + off)
        if v >= self._size or v & 7:
            self._bad_index(off, name, v)
            return 0xFFFFFFFF
        return v

    cdef int _bad_index(self, int off, str name, uint32_t v) except -1:
        if v >= self._size:
            raise RingCorruptError(name, v, f"< the data size", off, self._size)
        raise RingCorruptError(name, v, "8-byte aligned", off, self._size)

    # -- data-area copies; callers guarantee pos < D and n <= D ---------------------------------
    cdef inline void _put(self, uint32_t pos, const uint8_t *src, uint32_t n) noexcept nogil:
        cdef uint32_t first = self._size - pos
        if n <= first:
            memcpy(self._data + pos, src, n)
        else:
            memcpy(self._data + pos, src, first)
            memcpy(self._data, src + first, n - first)

    cdef inline void _zero(self, uint32_t pos, uint32_t n) noexcept nogil:
        cdef uint32_t first = self._size - pos
        if n <= first:
            memset(self._data + pos, 0, n)
        else:
            memset(self._data + pos, 0, first)
            memset(self._data, 0, n - first)

    cdef inline void _get(self, uint32_t pos, uint8_t *dst, uint32_t n) noexcept nogil:
        cdef uint32_t first = self._size - pos
        if n <= first:
            memcpy(dst, self._data + pos, n)
        else:
            memcpy(dst, self._data + pos, first)
            memcpy(dst + first, self._data, n - first)

    cdef object _data_view(self, uint32_t pos, Py_ssize_t n):
        """A read-only ``memoryview`` of ``n`` data-area bytes at ``pos``; callers guarantee
        ``pos + n <= D``.

        One allocation: a new view sharing ``_mv``'s managed buffer (so it keeps the exporter
        alive on its own, like any slice of ``_mv``), whose window is then narrowed in place,
        which is what CPython's own slicing does to a fresh view. Doing it here saves the
        slice object and the second allocation of ``PyMemoryView_FromObject`` on an exporter:
        about a third of what a consumer paid per packet to look at a payload.
        """
        cdef object v = PyMemoryView_FromObject(self._mv)
        cdef Py_buffer *b = PyMemoryView_GET_BUFFER(v)
        b.buf = <void *>(self._data + pos)
        b.len = n
        b.shape[0] = n          # 1-D, stride 1: still C- and F-contiguous at any length
        return v

    cdef inline uint32_t _wrap(self, uint64_t pos) noexcept nogil:
        """``pos mod D`` for ``pos < 2 * D`` (an index plus at most D), without a division."""
        return <uint32_t>(pos - self._size if pos >= self._size else pos)
