# cython: language_level=3
"""The compiled core of the WinHv calling layer and its C interface table.

:class:`HandleCore` is bound to one partition (a :class:`~winhv._bridge.Caller`), one virtual
processor and one bridge, compiled or reference. It owns two pages of the partition's *own*
memory (the per-processor hypercall input and output pages a Windows kernel keeps) and writes
hypercall parameters there, exactly as a guest does; it holds no other reference into the
hypervisor. The hot calls (``WinHvPostMessage``, ``WinHvSignalEvent``) are compiled end to end
when the bridge is. The same calls are exported as a versioned C table (``winhv.h``).
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

from winhv._bridge cimport Bridge, Caller, bridge_call
from winhv._cdefs cimport (
    CALL_GET_PARTITION_ID, CALL_POST_MESSAGE, CALL_SIGNAL_EVENT, CTL_FAST, CTL_REP_COUNT_SHIFT,
    CTL_REP_START_SHIFT, HV_MESSAGE_PAYLOAD_SIZE, ST_INVALID_ALIGNMENT, ST_INVALID_PARAMETER,
    ST_SUCCESS,
)
from winhv._gpa cimport GpaSpace, gpa_pointer, gpa_pointer_lent

from winhv._status import HvStatus

cdef extern from "winhv.h":
    ctypedef struct WINHV_INTERFACE:
        uint32_t Size
        uint32_t Version
        void* Context
        uint64_t (*Hypercall)(void*, uint64_t, uint64_t, uint64_t) noexcept
        uint16_t (*PostMessage)(void*, uint32_t, uint32_t, const void*, uint32_t) noexcept
        uint16_t (*SignalEvent)(void*, uint32_t, uint16_t) noexcept
        uint16_t (*GetPartitionId)(void*, uint64_t*) noexcept
    unsigned int WINHV_INTERFACE_VERSION

cdef list _STATUS = [None] * 0x100
for _member in HvStatus:
    if _member.value < 0x100:
        _STATUS[_member.value] = _member


cdef inline object _status(uint16_t value):
    """The HvStatus member for ``value`` (a plain int for values the ABI does not name)."""
    cdef void* member
    if value < 0x100:
        member = <void*> PyList_GET_ITEM(_STATUS, value)
        if member != <void*> None:
            return <object> member
    return _status_slow(value)


cdef object _status_slow(uint16_t value):
    try:
        return HvStatus(value)
    except ValueError:
        return value


cdef class HandleCore:
    """The compiled part of a WinHv handle. Use :class:`winhv.WinHv`, which extends it."""

    cdef Caller _caller
    cdef Bridge _cbridge
    cdef object _bridge
    cdef readonly uint32_t vp_index
    cdef readonly uint64_t input_gpa
    cdef readonly uint64_t output_gpa
    cdef WINHV_INTERFACE* _table

    def __cinit__(self, *args, **kwargs):
        self._table = NULL

    def __init__(self, bridge not None, Caller caller not None, uint64_t input_gpa,
                 uint64_t output_gpa, uint32_t vp_index=0):
        if input_gpa & 0xFFF or output_gpa & 0xFFF or input_gpa == output_gpa:
            raise ValueError("hypercall input and output pages must be two distinct "
                             f"page-aligned GPAs (got {input_gpa:#x}, {output_gpa:#x})")
        if gpa_pointer(caller.memory, input_gpa, 4096) == NULL or \
                gpa_pointer(caller.memory, output_gpa, 4096) == NULL:
            raise ValueError("hypercall pages must be mapped in the partition's own memory")
        self._caller = caller
        self._bridge = bridge
        self._cbridge = bridge if isinstance(bridge, Bridge) else None
        self.vp_index = vp_index
        self.input_gpa = input_gpa
        self.output_gpa = output_gpa

    def __dealloc__(self):
        PyMem_Free(self._table)

    @property
    def memory(self):
        """The partition's own guest physical memory (the only memory this handle reaches)."""
        return self._caller.memory

    @property
    def partition_id(self):
        """The partition this handle is bound to (what WinHvGetPartitionId answers)."""
        return self._caller.partition_id

    @property
    def bridge_kind(self):
        """``"compiled"`` or ``"reference"``: which bridge this handle's calls go through."""
        return self._bridge.kind

    @property
    def compiled(self):
        """True when calls go through the compiled bridge."""
        return self._cbridge is not None

    cdef inline uint8_t* _input_page(self) noexcept:
        return gpa_pointer_lent(<void*> self._caller.memory, self.input_gpa, 4096)

    cdef inline uint8_t* _output_page(self) noexcept:
        return gpa_pointer_lent(<void*> self._caller.memory, self.output_gpa, 4096)

    cdef uint64_t _hc(self, uint64_t control, uint64_t rdx, uint64_t r8) except? 0xFFFFFFFFFFFFFFFF:
        self._caller.current_vp = self.vp_index
        if self._cbridge is not None:
            return bridge_call(<void*> self._cbridge, <void*> self._caller,
                               control, rdx, r8)
        return self._bridge.hypercall(self._caller, control, rdx, r8)

    def hypercall(self, uint64_t control, uint64_t rdx=0, uint64_t r8=0):
        """Issue a raw hypercall on this handle's VP; returns the 64-bit result word."""
        return self._hc(control, rdx, r8)

    def WinHvSignalEvent(self, uint32_t connection_id, uint16_t flag_number):
        """Signal event flag ``flag_number`` of the port behind ``connection_id`` (fast call)."""
        cdef uint64_t rdx = connection_id | (<uint64_t> flag_number << 32)
        return _status(self._hc(CALL_SIGNAL_EVENT | CTL_FAST, rdx, 0) & 0xFFFF)

    def WinHvPostMessage(self, uint32_t connection_id, uint32_t message_type, payload):
        """Post a message of ``message_type`` carrying ``payload`` (bytes-like, <= 240 bytes)."""
        cdef Py_buffer view
        cdef uint16_t status
        if PyBytes_CheckExact(payload):
            return _status(_c_post(self, connection_id, message_type,
                                   PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload)))
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        try:
            status = _c_post(self, connection_id, message_type, view.buf, view.len)
        finally:
            PyBuffer_Release(&view)
        return _status(status)

    def WinHvGetPartitionId(self):
        """``(status, partition_id)`` of the calling partition."""
        cdef uint64_t result = self._hc(CALL_GET_PARTITION_ID, 0, self.output_gpa)
        cdef uint8_t* page = self._output_page()
        cdef uint16_t status = result & 0xFFFF
        if status != ST_SUCCESS or page == NULL:
            return _status(status), 0
        return _status(status), (<uint64_t*> page)[0]

    # -- the C interface table ----------------------------------------------------------------

    def interface_address(self):
        """Address of this handle's ``WINHV_INTERFACE`` (valid while the handle lives)."""
        if self._table == NULL:
            self._table = <WINHV_INTERFACE*> PyMem_Calloc(1, sizeof(WINHV_INTERFACE))
            if self._table == NULL:
                raise MemoryError()
            self._table.Size = sizeof(WINHV_INTERFACE)
            self._table.Version = WINHV_INTERFACE_VERSION
            self._table.Context = <void*> self
            self._table.Hypercall = _c_hypercall
            self._table.PostMessage = _c_post_message
            self._table.SignalEvent = _c_signal_event
            self._table.GetPartitionId = _c_get_partition_id
        return <size_t> self._table

    @staticmethod
    def interface_size():
        """``sizeof(WINHV_INTERFACE)`` as compiled."""
        return sizeof(WINHV_INTERFACE)


# C entry points: the GIL is held by the caller (see winhv.h). They never raise.

cdef inline uint64_t _c_call(HandleCore handle, uint64_t control, uint64_t rdx,
                             uint64_t r8) noexcept:
    if handle._cbridge is not None:
        # The compiled bridge cannot raise: no exception frame on the hot path; the handle
        # lends its own references to the call (it outlives the call).
        handle._caller.current_vp = handle.vp_index
        return bridge_call(<void*> handle._cbridge, <void*> handle._caller,
                           control, rdx, r8)
    return _c_call_reference(handle, control, rdx, r8)


cdef uint64_t _c_call_reference(HandleCore handle, uint64_t control, uint64_t rdx,
                                uint64_t r8) noexcept:
    try:
        return handle._hc(control, rdx, r8)
    except BaseException:
        return 0x71  # HV_STATUS_OPERATION_FAILED: the reference bridge raised (it must not)


cdef uint64_t _c_hypercall(void* ctx, uint64_t control, uint64_t rdx, uint64_t r8) noexcept:
    return _c_call(<HandleCore> ctx, control, rdx, r8)


cdef uint16_t _c_signal_event(void* ctx, uint32_t connection_id, uint16_t flag) noexcept:
    return _c_call(<HandleCore> ctx, CALL_SIGNAL_EVENT | CTL_FAST,
                   connection_id | (<uint64_t> flag << 32), 0) & 0xFFFF


cdef uint16_t _c_post_message(void* ctx, uint32_t connection_id, uint32_t message_type,
                              const void* payload, uint32_t size) noexcept:
    return _c_post(<HandleCore> ctx, connection_id, message_type, payload, size)


cdef uint16_t _c_post(HandleCore handle, uint32_t connection_id, uint32_t message_type,
                      const void* payload, Py_ssize_t size) noexcept:
    cdef uint8_t* page
    if size > HV_MESSAGE_PAYLOAD_SIZE or (size and payload == NULL):
        return ST_INVALID_PARAMETER
    page = handle._input_page()
    if page == NULL:
        return ST_INVALID_ALIGNMENT
    (<uint32_t*> page)[0] = connection_id
    (<uint32_t*> page)[1] = 0
    (<uint32_t*> page)[2] = message_type
    (<uint32_t*> page)[3] = size
    if size:
        memcpy(page + 16, payload, size)
    return _c_call(handle, CALL_POST_MESSAGE, handle.input_gpa, 0) & 0xFFFF


cdef uint16_t _c_get_partition_id(void* ctx, uint64_t* out) noexcept:
    cdef HandleCore handle = <HandleCore> ctx
    cdef uint64_t result = _c_call(handle, CALL_GET_PARTITION_ID, 0, handle.output_gpa)
    cdef uint8_t* page = handle._output_page()
    if (result & 0xFFFF) == ST_SUCCESS and page != NULL and out != NULL:
        out[0] = (<uint64_t*> page)[0]
    return result & 0xFFFF
