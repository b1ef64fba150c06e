# cython: language_level=3
"""The VMBus ring buffer: one producer, one consumer, in a shared byte buffer (fact sheet §4).

A ring is a 4096-byte control page followed by a data area of D bytes (D a positive multiple of
4096). The producer owns ``write_index`` and ``pending_send_sz``; the consumer owns
``read_index`` and ``interrupt_mask`` (§4.1). Packets are a 16-byte descriptor, an optional
type-specific extension, the payload padded to 8 bytes, and an 8-byte trailer holding
``start_index << 32`` (§4.3).

Design notes:

* The ring never copies its buffer. It holds one buffer export (so a ``bytearray`` cannot be
  resized under it) and works through raw pointers; every data-area access goes through two
  helpers that wrap at D, and every index they get is first reduced to ``< D``.
* Each side keeps private copies of the indices it owns and never trusts what it reads from the
  other side: the reader validates the producer's ``write_index`` and every descriptor field
  before it touches the bytes they describe, and raises :class:`RingCorruptError`.
* Index loads and stores are single aligned 4-byte accesses (``__atomic_load_n`` /
  ``__atomic_store_n``), never ``struct.pack_into`` (it zero-fills first, so another CPU could
  see a transient 0). Barriers are ``__atomic_thread_fence``, placed where §4.4/§4.5 (and
  Linux ``drivers/hv/ring_buffer.c``, QEMU ``hw/hyperv/vmbus.c`` barrier pairs) put them.
* The writer is transactional like QEMU's reserve/send: ``begin()``, any number of
  ``write()``, ``commit()`` publishes the write index once and decides once whether to signal.
  The reader is QEMU/Linux peek/pop/done: ``done()`` publishes the read index once.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

from enum import IntEnum

cdef extern from *:
    """
    #include <stdint.h>
    /* One aligned 4-byte load/store each: another CPU never sees a torn or transient value. */
    static inline uint32_t winhv_ring_load32(const uint8_t *p) {
        return __atomic_load_n((const uint32_t *)p, __ATOMIC_RELAXED);
    }
    static inline void winhv_ring_store32(uint8_t *p, uint32_t v) {
        __atomic_store_n((uint32_t *)p, v, __ATOMIC_RELAXED);
    }
    /* Full barrier (Linux virt_mb), read barrier (virt_rmb), write/release barrier. */
    static inline void winhv_ring_mb(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
    static inline void winhv_ring_rmb(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
    static inline void winhv_ring_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
    """
    uint32_t winhv_ring_load32(const uint8_t *p) nogil
    void winhv_ring_store32(uint8_t *p, uint32_t v) nogil
    void winhv_ring_mb() nogil
    void winhv_ring_rmb() nogil
    void winhv_ring_release() nogil

# --- §4.1 control page ---------------------------------------------------------------------------
CONTROL_PAGE_SIZE = 4096
WRITE_INDEX_OFFSET = 0
READ_INDEX_OFFSET = 4
INTERRUPT_MASK_OFFSET = 8
PENDING_SEND_SIZE_OFFSET = 12
FEATURE_BITS_OFFSET = 64
FEATURE_PENDING_SEND_SIZE = 1
# --- §4.3 packet format --------------------------------------------------------------------------
DESCRIPTOR_SIZE = 16
TRAILER_SIZE = 8
PACKET_FLAG_COMPLETION_REQUESTED = 1

cdef enum:
    _CTL = 4096
    _W = 0
    _R = 4
    _MASK = 8
    _PENDING = 12
    _FEATURES = 64
    _DESC = 16
    _TRAILER = 8
    _GPA_HDR = 8          # reserved u32 + range_cnt u32 (§4.3 GPA direct, @16 and @20)
    _RANGE_HDR = 8        # byte_count u32 + byte_offset u32
    _PAGE = 4096
    _MAX_LEN8 = 0xFFFF    # len8 is a u16 (§4.3)
    _TYPE_MAX = 0xD


class PacketType(IntEnum):
    """``enum vmbus_packet_type`` (fact sheet §4.3)."""

    INVALID = 0x0
    SYNCH = 0x1
    ADD_XFER_PAGESET = 0x2
    RM_XFER_PAGESET = 0x3
    ESTABLISH_GPADL = 0x4
    TEARDOWN_GPADL = 0x5
    DATA_INBAND = 0x6
    DATA_USING_XFER_PAGES = 0x7
    DATA_USING_GPADL = 0x8
    DATA_USING_GPA_DIRECT = 0x9
    CANCEL_REQUEST = 0xA
    COMP = 0xB
    DATA_USING_ADDITIONAL_PKT = 0xC
    ADDITIONAL_DATA = 0xD


# Indexed by the wire value; the reader hands out these members.
cdef tuple _TYPES = tuple(PacketType)


class RingError(Exception):
    """Base of every error the ring raises."""


class RingCorruptError(RingError):
    """The other side wrote something the protocol forbids (§4.1-§4.3).

    Attributes: ``field`` (its name), ``value`` (what was found), ``expected`` (the rule it
    breaks, as text), ``offset`` (byte offset of the field in the ring buffer, control page
    included). The ring has not read or written anything outside its buffer.
    """

    def __init__(self, field, value, expected, offset, data_size):
        self.field = field
        self.value = value
        self.expected = expected
        self.offset = offset
        self.data_size = data_size
        super().__init__(
            f"ring corrupt: {field}={value:#x} is not {expected} "
            f"(at buffer offset {offset:#x}; data size {data_size:#x})"
        )


class RingFullError(RingError):
    """The packet does not fit now; it will once the consumer frees space (§4.2, §4.4 step 1).

    ``needed`` is the packet's size with its trailer, ``available`` the current
    ``bytes_to_write`` (a write needs ``available > needed``: 8 bytes always stay unused).
    """

    def __init__(self, needed, available):
        self.needed = needed
        self.available = available
        super().__init__(
            f"ring full: packet needs {needed:#x} bytes with trailer, "
            f"bytes_to_write is {available:#x} and must stay > the packet size"
        )


class PacketTooLargeError(RingError):
    """The packet can never fit in this ring, even empty (§4.2 maximum packet size)."""

    def __init__(self, needed, maximum):
        self.needed = needed
        self.maximum = maximum
        super().__init__(
            f"packet too large: {needed:#x} bytes with trailer, max_packet_size is {maximum:#x}"
        )


cdef inline uint32_t _align8(uint64_t n) noexcept nogil:
    return <uint32_t>((n + 7) & ~(<uint64_t>7))


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

    cdef uint32_t _index(self, int off, str name) except? 0xFFFFFFFF:
        """Load a control index and check §4.1: ``< D`` and 8-byte aligned."""
        cdef uint32_t v = winhv_ring_load32(self._ctl + off)
        if v >= self._size:
            raise RingCorruptError(name, v, f"< the data size", off, self._size)
        if v & 7:
            raise RingCorruptError(name, v, "8-byte aligned", off, self._size)
        return v

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

    cdef inline uint32_t _wrap(self, uint64_t pos) noexcept nogil:
        return <uint32_t>(pos % self._size)


cdef inline uint32_t _to_read(uint32_t w, uint32_t r, uint32_t size) noexcept nogil:
    return w - r if w >= r else size - r + w


cdef inline uint16_t _u16(const uint8_t *p) noexcept nogil:
    return <uint16_t>(p[0] | (<uint16_t>p[1] << 8))


cdef inline uint32_t _u32(const uint8_t *p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline uint64_t _u64(const uint8_t *p) noexcept nogil:
    return _u32(p) | (<uint64_t>_u32(p + 4) << 32)


cdef inline void _set16(uint8_t *p, uint16_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = v >> 8


cdef inline void _set32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF
    p[3] = v >> 24


cdef inline void _set64(uint8_t *p, uint64_t v) noexcept nogil:
    _set32(p, <uint32_t>v)
    _set32(p + 4, <uint32_t>(v >> 32))


cdef bytes _EMPTY = b""


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
    that). When the packet wraps, ``payload``
    and ``header`` are ``bytes`` copies taken at ``peek()``. ``header`` is the type-specific
    extension between the descriptor and the payload. ``ranges`` is set for GPA-direct packets
    (type 9): a tuple of ``(byte_count, byte_offset, pfns)`` with ``pfns`` a tuple of ints.
    """

    cdef readonly uint16_t flags
    cdef readonly uint16_t offset8
    cdef readonly uint16_t len8
    cdef readonly uint64_t trans_id
    cdef readonly uint32_t start
    cdef readonly object ranges
    cdef uint16_t _type
    cdef object _src          # memoryview of the data area, or the bytes copy of a wrapped packet
    cdef uint32_t _base       # packet start within _src
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
    def payload(self):
        if self._payload is None:
            self._payload = self._src[self._base + self.offset8 * 8:self._base + self.len8 * 8]
        return self._payload

    @property
    def header(self):
        if self._header is None:
            if self.offset8 == 2:
                self._header = _EMPTY
            else:
                self._header = self._src[self._base + _DESC:self._base + self.offset8 * 8]
        return self._header

    def __repr__(self):
        return (
            f"Packet(type={self.type!r}, flags={self.flags:#x}, trans_id={self.trans_id:#x}, "
            f"offset8={self.offset8}, len8={self.len8}, start={self.start:#x})"
        )


cdef inline Packet _new_packet():
    return Packet.__new__(Packet)


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
        winhv_ring_mb()  # read_index before the data writes (QEMU barrier pair [B])
        cdef uint32_t s = self._stage
        cdef uint32_t free = r - s if r > s else size - s + r
        if free <= total:
            raise RingFullError(total, free)
        cdef uint8_t desc[_DESC]
        _set16(desc, <uint16_t>ptype)
        _set16(desc + 2, <uint16_t>((_DESC + hlen) >> 3))
        _set16(desc + 4, <uint16_t>(padded >> 3))
        _set16(desc + 6, <uint16_t>flags)
        _set64(desc + 8, trans_id)
        cdef uint8_t trailer[_TRAILER]
        _set64(trailer, (<uint64_t>s) << 32)
        cdef uint32_t pos = s
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
        winhv_ring_mb()                                   # step 5: data before the index
        winhv_ring_store32(ring._ctl + _W, self._stage)   # step 6
        self._wr = self._stage
        winhv_ring_mb()                                   # index before reading the mask
        if winhv_ring_load32(ring._ctl + _MASK) != 0:
            return False
        winhv_ring_rmb()                                  # mask before read_index
        return winhv_ring_load32(ring._ctl + _R) == old   # empty -> non-empty

    # -- public API -----------------------------------------------------------------------------
    def write(self, payload, *, int packet_type=6, uint64_t trans_id=0, int flags=0,
              header=_EMPTY):
        """Write one packet; return True when the consumer must be signalled (§4.4 rule 7).

        Outside a transaction the packet is published at once. Inside ``begin()``/``commit()``
        it is only staged (invisible to the reader) and this returns False; ``commit()`` makes
        the signalling decision. Raises :class:`RingFullError` when the packet does not fit
        now (nothing is written) and :class:`PacketTooLargeError` when it never can.
        """
        self._stage_obj(payload, packet_type, flags, trans_id, header)
        if self._txn:
            return False
        return self._publish()

    def write_completion(self, uint64_t trans_id, payload):
        """Write a completion packet (type 0xB) echoing ``trans_id`` (§4.3, §4.7)."""
        return self.write(payload, packet_type=0xB, trans_id=trans_id)

    def write_gpa_direct(self, ranges, payload, *, uint64_t trans_id,
                         int flags=PACKET_FLAG_COMPLETION_REQUESTED):
        """Write a GPA-direct packet (type 9) describing guest pages (§4.3).

        ``ranges`` is a sequence of ``(byte_count, byte_offset, pfns)``; each range needs
        exactly ceil((byte_offset + byte_count) / 4096) PFNs and ``byte_offset < 4096``.
        """
        return self.write(payload, packet_type=9, trans_id=trans_id, flags=flags,
                          header=encode_gpa_direct(ranges))

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
        staged are dropped.
        """
        cdef uint32_t mark = self._stage
        cdef Py_ssize_t count = 0
        try:
            for payload in payloads:
                try:
                    self._stage_obj(payload, packet_type, flags, trans_id_base + count, _EMPTY)
                except RingFullError:
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


cdef tuple _parse_gpa(const uint8_t *pkt, uint16_t off8, uint32_t start, uint32_t size):
    """Validate and decode a GPA-direct extension (§4.3) from a contiguous packet image."""
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
        pfns = []
        for k in range(<uint32_t>npfn):
            pfns.append(_u64(p + pos + 8 * k))
        pos += <uint32_t>npfn * 8
        out.append((byte_count, byte_offset, tuple(pfns)))
    if pos != ext:
        raise RingCorruptError(
            "range_cnt", count, f"consistent with the {ext:#x}-byte extension "
            f"({ext - pos:#x} bytes left over)", _CTL + (start + 20) % size, size)
    return tuple(out)
