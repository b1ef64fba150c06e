# cython: language_level=3, binding=False
"""The VMBus ring buffer: one producer, one consumer, in a shared byte buffer (fact sheet §4).

A ring is a 4096-byte control page followed by a data area of D bytes (D a positive multiple of
4096). The producer owns ``write_index`` and ``pending_send_sz``; the consumer owns
``read_index`` and ``interrupt_mask`` (§4.1). Packets are a 16-byte descriptor, an optional
type-specific extension, the payload padded to 8 bytes, and an 8-byte trailer holding
``start_index << 32`` (§4.3).

Design notes:

* The ring never copies its buffer. It holds one buffer export (so a ``bytearray`` cannot be
  resized under it) and works through raw pointers. Every data-area access either goes
  through the helpers that wrap at D or, when ``start + length <= D`` was checked first, is a
  plain copy at ``start``; every index is reduced to ``< D`` before use.
* Each side keeps private copies of the indices it owns and never trusts what it reads from the
  other side: the reader validates the producer's ``write_index`` and every descriptor field
  before it touches the bytes they describe, and raises :class:`RingCorruptError`.
* Index loads and stores are single aligned 4-byte accesses (``__atomic_load_n`` /
  ``__atomic_store_n``), never ``struct.pack_into`` (it zero-fills first, so another CPU could
  see a transient 0). Barriers are ``__atomic_thread_fence``, placed where §4.4/§4.5 (and
  Linux ``drivers/hv/ring_buffer.c``, QEMU ``hw/hyperv/vmbus.c`` barrier pairs) put them, each
  as strong as its ordering needs: full barriers for the two store-then-load pairs (§4.4 step
  7: write_index then interrupt_mask; §4.5 step 2.4: read_index then pending_send_sz), release
  before publishing an index, acquire after loading the other side's index.
* Per-packet cost matters (issue #3 asks for millions of packets per second from Python):
  descriptors are validated into a C struct, a :class:`Packet` is built only when asked for
  (``read_payloads`` copies payloads without one), its payload view is made lazily, and the
  batch reads load ``write_index`` once per call.
* Layout of the source: this file holds the constants, the errors and the byte helpers; the
  classes live in ``_ring_buffer.pxi`` (Ring), ``_ring_packet.pxi`` (Packet, GPA-direct
  codec), ``_ring_writer.pxi`` and ``_ring_reader.pxi``, included below.
* The writer is transactional like QEMU's reserve/send: ``begin()``, any number of
  ``write()``, ``commit()`` publishes the write index once and decides once whether to signal.
  The reader is QEMU/Linux peek/pop/done: ``done()`` publishes the read index once.
"""

cimport cython
from cpython.buffer cimport (
    PyBUF_FORMAT,
    PyBUF_ND,
    PyBUF_SIMPLE,
    PyBUF_STRIDES,
    PyBUF_WRITABLE,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.memoryview cimport PyMemoryView_FromObject, PyMemoryView_GET_BUFFER
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
    _XFER_HDR = 8         # xfer_pageset_id u16, sender_owns u8, reserved u8, range_cnt u32
    _XFER_RANGE = 8       # byte_count u32 + byte_offset u32 (into the transfer page set)
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


# The classes, one concept per include file (textual includes: cimports across modules are
# only set up for winhv/*.pxd).
include "_ring_buffer.pxi"
include "_ring_packet.pxi"
include "_ring_writer.pxi"
include "_ring_reader.pxi"
