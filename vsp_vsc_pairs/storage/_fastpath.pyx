# cython: language_level=3
"""The compiled per-request path of the ``storage`` pair: plain READ/WRITE on both sides.

Issue #8 asks for 100,000 4 KiB IOPS through the whole path. In Python each request cost
about twenty calls in the storage drivers alone (checks, slot bookkeeping, template joins,
unpacks, the completion check, the host's view building and its reply join); here the same
steps are C over the packet bytes, and what is left are the calls that must stay Python: the
channel's send and complete, ``guest_view`` (the host's authority on guest RAM), the
workload's callback.

* :class:`SrbFastPath` (host) answers READ (10) / WRITE (10) of whole blocks at LUN 0, plain
  flags, over one GPA range of contiguous pages that is exactly the transfer, once the channel
  is READY at WIN8 or later: the SRB is checked in place in the ring, the data moves with one
  ``pread``/``pwrite`` straight into or out of guest RAM, and the completion is the 64 bytes
  ``StorvspProtocol`` answers (a Hypothesis test compares the two). Anything else -- another
  command, a range that is not exactly the transfer, a short or failed transfer, completions
  already waiting for a guest that does not read them (TASK SET FULL is the protocol's answer)
  -- is declined with no side effect and takes ``StorvspProtocol``.
* :class:`BlockCore` (guest) is the base of ``BlockDevice``: ``read_async``/``write_async``
  check, take a slot, encode the SRB from a per-device 64-byte template and send it;
  :class:`Slot` checks a completion with a handful of byte compares and recycles itself into
  the next waiting request. Anything that is not a clean success goes to the Python decode
  (``BlockDevice._complete_slow``), which also owns every error message.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from posix.types cimport off_t
from posix.unistd cimport pread, pwrite

import struct

from ._protocol import SCSI_REQUEST_SIZE_V2, Operation, SrbStatus
from ._sense import ScsiStatus

__all__ = ["BlockCore", "Slot", "SrbFastPath"]

DEF _PAGE = 4096

cdef uint32_t _EXECUTE_SRB = Operation.EXECUTE_SRB
cdef uint32_t _COMPLETE_IO = Operation.COMPLETE_IO
cdef uint8_t _SRB_SUCCESS = SrbStatus.SUCCESS
cdef uint8_t _GOOD = ScsiStatus.GOOD
# A clean COMPLETE_IO's first 16 bytes: operation, flags 0, status SUCCESS, then the request's
# length 0x34, SRB SUCCESS, SCSI GOOD.
cdef bytes _REPLY_HEAD = struct.pack("<IIIHBB", int(Operation.COMPLETE_IO), 0, 0,
                                     SCSI_REQUEST_SIZE_V2, int(SrbStatus.SUCCESS),
                                     int(ScsiStatus.GOOD))
# Offsets in a vstor packet (12-byte header, then the vmscsi request, §6.1).
DEF _PORT = 16          # port, path, target, lun, cdb_length, sense_info_length, data_in
DEF _CDB_LENGTH = 20
DEF _DATA_IN = 22
DEF _TRANSFER = 24      # data_transfer_length, u32
DEF _CDB = 28
DEF _TAIL = 48          # the v2 tail (reserved, queue tag, action, srb flags, timeout, ...)
DEF _PACKET_V2 = 64
DEF _MIN_REPLY = 48     # header + SCSI_REQUEST_SIZE_V1


cdef inline uint32_t _u32(const uint8_t *p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline uint32_t _be32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline void _put_u32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF
    p[3] = v >> 24


cdef inline void _put_be(uint8_t *p, uint64_t v, int n) noexcept nogil:
    cdef int i
    for i in range(n):
        p[n - 1 - i] = (v >> (8 * i)) & 0xFF


# -- host ------------------------------------------------------------------------------------------

@cython.final
cdef class SrbFastPath:
    """The host's READ/WRITE (10) fast path for one open, READY channel (module docstring).

    ``fd`` is the image, ``block_shift`` log2 of the block size, ``block_count`` the disk's
    blocks, ``max_transfer`` the largest transfer, ``writable`` whether writes are allowed,
    ``queue_depth`` the completions that may wait unread before the protocol answers TASK SET
    FULL, ``guest_view(gpa, size)`` the host's view of guest RAM (ValueError outside it).
    ``served`` counts the SRBs answered here.
    """

    cdef int _fd
    cdef int _shift
    cdef uint64_t _block_count
    cdef uint64_t _max_transfer
    cdef bint _writable
    cdef Py_ssize_t _queue_depth
    cdef object _guest_view
    cdef public unsigned long long served

    def __init__(self, int fd, int block_shift, unsigned long long block_count,
                 unsigned long long max_transfer, bint writable, Py_ssize_t queue_depth,
                 guest_view):
        self._fd = fd
        self._shift = block_shift
        self._block_count = block_count
        self._max_transfer = max_transfer
        self._writable = writable
        self._queue_depth = queue_depth
        self._guest_view = guest_view
        self.served = 0

    cdef int _accept(self, const uint8_t *p, Py_ssize_t n, uint64_t count) noexcept:
        """0 to decline, 1 for a READ, 2 for a WRITE the fast path may run over ``count``
        bytes of guest RAM."""
        cdef uint32_t transfer, blocks
        cdef uint64_t lba
        cdef uint8_t opcode
        if n < _PACKET_V2 or _u32(p) != _EXECUTE_SRB or p[_CDB_LENGTH] != 10:
            return 0
        if p[_PORT] | p[_PORT + 1] | p[_PORT + 2] | p[_PORT + 3]:
            return 0
        transfer = _u32(p + _TRANSFER)
        if count != transfer or transfer > self._max_transfer or transfer == 0:
            return 0
        opcode = p[_CDB]
        lba = _be32(p + _CDB + 2)
        blocks = (<uint32_t>p[_CDB + 7] << 8) | p[_CDB + 8]
        if p[_CDB + 1] or (<uint64_t>blocks << self._shift) != transfer or \
                lba + blocks > self._block_count:
            return 0
        if opcode == 0x28 and p[_DATA_IN] == 1:
            return 1
        if opcode == 0x2A and p[_DATA_IN] == 0 and self._writable:
            return 2
        return 0

    cdef object _move(self, const uint8_t *p, int kind, object view):
        """Run the accepted transfer through ``view``; the reply, or None if it was short."""
        cdef Py_buffer vb
        cdef Py_ssize_t done
        cdef uint32_t transfer = _u32(p + _TRANSFER)
        cdef off_t offset = <off_t>(<uint64_t>_be32(p + _CDB + 2) << self._shift)
        PyObject_GetBuffer(view, &vb, PyBUF_WRITABLE if kind == 1 else PyBUF_SIMPLE)
        try:
            if vb.len != transfer:
                return None
            with nogil:
                if kind == 1:
                    done = pread(self._fd, vb.buf, transfer, offset)
                else:
                    done = pwrite(self._fd, vb.buf, transfer, offset)
        finally:
            PyBuffer_Release(&vb)
        if done != transfer:
            return None
        cdef bytes reply = PyBytes_FromStringAndSize(NULL, _PACKET_V2)
        cdef uint8_t *r = <uint8_t *>PyBytes_AS_STRING(reply)
        memcpy(r, PyBytes_AS_STRING(_REPLY_HEAD), 16)
        memcpy(r + 16, p + 16, 5)       # port, path, target, lun, cdb_length
        r[21] = 0                       # sense_info_length: no sense
        memcpy(r + 22, p + 22, 6)       # data_in, properties, data_transfer_length
        memset(r + _CDB, 0, 20)         # the CDB/sense union
        memcpy(r + _TAIL, p + _TAIL, 16)
        self.served += 1
        return reply

    def reply(self, payload, views):
        """The fast path over a payload and its views (one view, exactly the transfer): the
        completion bytes, or ``None`` when it declines (then nothing was read or written)."""
        cdef Py_buffer pb
        cdef int kind
        if len(views) != 1:
            return None
        view = views[0]
        PyObject_GetBuffer(payload, &pb, PyBUF_SIMPLE)
        try:
            kind = self._accept(<const uint8_t *>pb.buf, pb.len, memoryview(view).nbytes)
            if not kind:
                return None
            return self._move(<const uint8_t *>pb.buf, kind, view)
        finally:
            PyBuffer_Release(&pb)

    def serve(self, channel, packet):
        """Answer ``packet`` on ``channel`` if the fast path takes it; True if it did.

        Declines (False, nothing done) unless the packet is GPA-direct with one range of
        contiguous pages and the channel's backlog is below ``queue_depth``. ``guest_view``'s
        ValueError (a page outside guest RAM) propagates, as does the channel's error when
        even its backlog is full.
        """
        cdef Py_buffer pb
        cdef int kind
        cdef tuple rng, pfns
        cdef Py_ssize_t i, npfn
        cdef uint64_t count, offset, first
        ranges = packet.ranges
        if ranges is None or len(ranges) != 1:
            return False
        rng = ranges[0]
        if len(rng) != 3:      # indexed unchecked below: only a GPA-direct range will do
            return False
        count = rng[0]
        offset = rng[1]
        pfns = rng[2]
        npfn = len(pfns)
        if npfn == 0 or offset >= _PAGE:
            return False
        first = pfns[0]
        if first >= (<uint64_t>1 << 40):
            return False
        for i in range(1, npfn):
            if <uint64_t>pfns[i] != first + <uint64_t>i:
                return False
        PyObject_GetBuffer(packet, &pb, PyBUF_SIMPLE)
        try:
            kind = self._accept(<const uint8_t *>pb.buf, pb.len, count)
            if not kind or channel.backlog >= self._queue_depth:
                return False
            reply = self._move(<const uint8_t *>pb.buf, kind,
                               self._guest_view((first << 12) + offset, count))
        finally:
            PyBuffer_Release(&pb)
        if reply is None:
            return False
        channel.complete(packet.trans_id, reply)
        return True


# -- guest -----------------------------------------------------------------------------------------

@cython.final
cdef class Slot:
    """One queue slot of a ``BlockDevice``: its guest buffer (``gpa``, ``pages``, ``pfns``,
    ``view``; the GPA ranges and views cut for each transfer size) and, while busy, the
    request it carries (``callback``, ``payload``, ``nbytes``, ``reading``, ``request``) and
    the completion the channel calls (``complete``)."""

    cdef public BlockCore device
    cdef public object gpa
    cdef public Py_ssize_t pages
    cdef public tuple pfns
    cdef public object view
    cdef public dict ranges
    cdef public dict views
    cdef public object callback
    cdef public object payload
    cdef public Py_ssize_t nbytes
    cdef public bint reading
    cdef public object request
    cdef public object complete
    cdef object _rw

    def __init__(self, BlockCore device):
        self.device = device
        self.gpa = 0
        self.pages = 0
        self.pfns = ()
        self.view = memoryview(b"")
        self.ranges = {}
        self.views = {}
        self.callback = None
        self.payload = b""
        self.nbytes = 0
        self.reading = False
        self.request = None
        self._rw = self._complete_rw
        self.complete = self._rw

    def reserve(self, Py_ssize_t nbytes):
        """Make the buffer at least ``nbytes`` (whole pages, physically contiguous)."""
        cdef Py_ssize_t pages = (nbytes + _PAGE - 1) // _PAGE
        if pages <= self.pages:
            return
        kernel = self.device.kernel
        gpa = kernel.alloc_pages(pages, zero=False)
        if self.pages:
            kernel.free_pages(self.gpa, self.pages)
        self.gpa, self.pages = gpa, pages
        first = gpa >> 12
        self.pfns = tuple(range(first, first + pages))
        self.view = kernel.view(gpa, pages * _PAGE)
        self.ranges.clear()
        self.views.clear()

    def range_for(self, Py_ssize_t nbytes):
        """The GPA ranges (one) and the view of the first ``nbytes`` of the buffer."""
        ranges = self.ranges.get(nbytes)
        if ranges is None:
            ranges = ((nbytes, 0, self.pfns[: (nbytes + _PAGE - 1) // _PAGE]),)
            self.ranges[nbytes] = ranges
            self.views[nbytes] = self.view[:nbytes]
        return ranges

    def release(self):
        """Give the buffer back to the guest kernel."""
        if self.pages:
            self.device.kernel.free_pages(self.gpa, self.pages)
            self.pages = 0

    def _complete_rw(self, packet):
        """A READ/WRITE completion: clean (COMPLETE_IO, SUCCESS, SRB SUCCESS, GOOD, the whole
        transfer) runs the callback; anything else takes the device's full decode."""
        cdef Py_buffer pb
        cdef const uint8_t *p
        cdef bint clean
        PyObject_GetBuffer(packet, &pb, PyBUF_SIMPLE)
        p = <const uint8_t *>pb.buf
        clean = pb.len >= _MIN_REPLY and _u32(p) == _COMPLETE_IO and _u32(p + 8) == 0 and \
            p[14] == _SRB_SUCCESS and p[15] == _GOOD and _u32(p + _TRANSFER) == self.nbytes
        PyBuffer_Release(&pb)
        device = self.device
        if not clean:
            device._complete_slow(self, packet.payload)
            return
        callback = self.callback
        try:
            callback(self.views[self.nbytes] if self.reading else None, None)
        finally:
            device._done(self)

    def _complete_general(self, packet):
        self.device._complete_general(self, packet.payload)


cdef class BlockCore:
    """The per-request core of ``BlockDevice`` (module docstring); the Python subclass holds
    everything else. ``_set_templates`` gives it the four 64-byte (or 48-byte, before WIN8)
    SRB templates; ``_start_rw`` starts a READ/WRITE in a slot; ``_done`` frees a slot into
    the oldest waiting request."""

    cdef public object channel
    cdef public object kernel
    cdef public object protocol
    cdef public object closed_reason
    cdef public unsigned long long block_count
    cdef public Py_ssize_t block_size
    cdef public Py_ssize_t max_transfer_bytes
    cdef public list _free
    cdef public object _waiting
    cdef public int _shift
    cdef bytes _r10, _w10, _r16, _w16

    def _set_templates(self, bytes read10, bytes write10, bytes read16, bytes write16):
        """Whole SRB packets, CDB and transfer length zero, for READ/WRITE (10) and (16)."""
        self._r10, self._w10, self._r16, self._w16 = read10, write10, read16, write16

    cdef bint _fits(self, lba, count, uint64_t *l, uint64_t *c) except -1:
        """Whether ``lba``/``count`` are a request the fast checks accept (else the Python
        ``_check`` raises the precise error)."""
        try:
            l[0] = lba
            c[0] = count
        except (OverflowError, TypeError):
            return False
        return self.closed_reason is None and c[0] >= 1 and l[0] <= self.block_count and \
            c[0] <= self.block_count - l[0] and \
            c[0] <= <uint64_t>(self.max_transfer_bytes >> self._shift)

    def read_async(self, lba, count, callback):
        """Read ``count`` blocks at ``lba``; ``callback(view, error)`` (module docstring)."""
        cdef uint64_t l, c
        if not self._fits(lba, count, &l, &c):
            self._check(lba, count)     # raises the error for what _fits refused
            l = lba
            c = count
        self._submit(False, l, c, None, callback)

    def write_async(self, lba, data, callback):
        """Write ``data`` (whole blocks) at ``lba``; ``callback(None, error)``. ``data`` is
        copied into a guest buffer when the request starts: keep it unchanged until then."""
        cdef uint64_t l, c
        view = memoryview(data).cast("B")
        cdef Py_ssize_t size = view.nbytes
        if size % self.block_size:
            raise ValueError(f"data: found {size} bytes, expected a multiple of the "
                             f"{self.block_size}-byte block")
        count = size >> self._shift
        if not self._fits(lba, count, &l, &c):
            self._check(lba, count)
            l = lba
            c = count
        self._submit(True, l, c, view, callback)

    cdef int _submit(self, bint write, uint64_t lba, uint64_t count, object data,
                     object callback) except -1:
        cdef Py_ssize_t nbytes = <Py_ssize_t>(count << self._shift)
        if self._free:
            self._start(<Slot>self._free.pop(), write, lba, count, nbytes, data, callback)
        else:
            self._waiting.append((write, lba, count, nbytes, data, callback))
        return 0

    def _start_rw(self, Slot slot, bint write, unsigned long long lba, unsigned long long count,
                  Py_ssize_t nbytes, data, callback):
        """Start a READ/WRITE in ``slot`` (checked already)."""
        self._start(slot, write, lba, count, nbytes, data, callback)

    cdef int _start(self, Slot slot, bint write, uint64_t lba, uint64_t count,
                    Py_ssize_t nbytes, object data, object callback) except -1:
        cdef bytes template
        cdef uint8_t *p
        if nbytes > slot.pages * _PAGE:
            slot.reserve(nbytes)
        ranges = slot.ranges.get(nbytes)
        if ranges is None:
            ranges = slot.range_for(nbytes)
        cdef bint short = lba <= 0xFFFF_FFFF and count <= 0xFFFF
        if short:
            template = self._w10 if write else self._r10
        else:
            template = self._w16 if write else self._r16
        cdef bytes payload = PyBytes_FromStringAndSize(PyBytes_AS_STRING(template),
                                                       len(template))
        p = <uint8_t *>PyBytes_AS_STRING(payload)
        _put_u32(p + _TRANSFER, <uint32_t>nbytes)
        if short:   # opcode, flags, LBA (4), group, blocks (2), control
            p[_CDB] = 0x2A if write else 0x28
            _put_be(p + _CDB + 2, lba, 4)
            _put_be(p + _CDB + 7, count, 2)
        else:       # opcode, flags, LBA (8), blocks (4), group, control
            p[_CDB] = 0x8A if write else 0x88
            _put_be(p + _CDB + 2, lba, 8)
            _put_be(p + _CDB + 10, count, 4)
        if data is not None:
            slot.view[:nbytes] = data
        slot.callback = callback
        slot.payload = payload
        slot.nbytes = nbytes
        slot.reading = not write
        slot.complete = slot._rw
        try:
            self.channel.send_gpa_direct(ranges, payload, slot._rw)
        except Exception as exc:
            self._send_failed(slot, exc)
        return 0

    cpdef _done(self, Slot slot):
        """The slot is free: start the oldest waiting request in it, or park it (last in,
        first out: a buffer just used is the one reused, so few slots ever grow)."""
        slot.callback = None
        slot.request = None
        if self._waiting and self.closed_reason is None:
            item = self._waiting.popleft()
            if len(item) == 6:
                self._start(slot, item[0], item[1], item[2], item[3], item[4], item[5])
            else:
                self._start_general(slot, *item)
        else:
            self._free.append(slot)
