# cython: language_level=3
"""The compiled hypercall bridge: what the hypervisor core cimports to register C handlers."""

cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

from winhv._cdefs cimport CTL_FAST
from winhv._gpa cimport GpaSpace, gpa_pointer_lent


cdef struct HvCall:
    uint64_t control
    uint16_t code
    bint fast
    uint16_t varhead_qwords
    uint16_t rep_count
    uint16_t rep_start
    uint16_t rep_limit        # a rep handler processes elements [rep_start, rep_limit)
    uint16_t reps_done        # set by a rep handler: absolute index of the first unprocessed rep
    const uint8_t* input      # fixed header, then the variable header, then the rep elements
    uint32_t input_size
    uint8_t* output           # NULL when the call has no output (always NULL when fast)
    uint32_t output_size
    uint64_t fast_regs[2]     # the register input of a fast call (RDX, R8)
    uint64_t in_gpa           # the GPAs of a memory call (RDX, R8)
    uint64_t out_gpa


cdef class Caller:
    """The calling partition as the bridge sees it: identity, privileges, memory, current VP."""
    cdef readonly uint64_t partition_id
    cdef public uint64_t privileges
    cdef public uint32_t current_vp
    cdef public uint64_t calls        # hypercalls this partition issued
    cdef readonly GpaSpace memory


# A compiled handler: returns an HV_STATUS; never raises.
ctypedef uint16_t (*HvHandler)(void* context, Caller caller, HvCall* call) noexcept


cdef struct CallMeta:
    uint16_t code
    uint8_t rep
    uint8_t fast_ok
    uint8_t varhead_ok
    uint8_t fast_simple      # a simple call whose whole input fits the two fast registers
    uint64_t privilege
    uint32_t input_size
    uint32_t output_size
    uint32_t rep_input_size
    uint32_t rep_output_size


@cython.final
cdef class Bridge:
    cdef CallMeta* meta
    cdef uint16_t* slot_of_code
    cdef int n_slots
    cdef HvHandler* c_handlers
    cdef list c_contexts          # owns the context objects; c_context_ptrs borrows them
    cdef void** c_context_ptrs
    cdef uint8_t* c_defers            # 1: the C handler may return HV_DEFER_TO_PYTHON
    cdef list py_handlers
    cdef uint64_t* call_counts
    cdef uint64_t* status_counts
    cdef uint32_t* fault_counts
    cdef uint16_t* fault_status
    cdef public uint16_t rep_slice
    cdef public object tracer
    cdef object _logger

    cpdef uint64_t hypercall(self, Caller caller, uint64_t control, uint64_t rdx,
                             uint64_t r8) noexcept
    cdef uint16_t _dispatch(self, Caller caller, uint64_t control, uint64_t rdx, uint64_t r8,
                            uint16_t* reps_done) noexcept
    cdef uint16_t _call_python(self, int slot, Caller caller, HvCall* call) noexcept
    cdef int set_c_handler(self, uint16_t code, HvHandler handler, object context,
                           bint defers=*) except -1


cdef inline uint64_t bridge_call(void* bridge_ref, void* caller_ref, uint64_t control,
                                 uint64_t rdx, uint64_t r8) noexcept:
    """``bridge.hypercall(caller, control, rdx, r8)``, with its common case compiled into the
    calling module (the WinHv handle and its C table), so it costs no call through the bridge.

    ``bridge_ref`` and ``caller_ref`` are a :class:`Bridge` and a :class:`Caller` lent by the
    caller for the call (borrowed: the hot path takes no references).

    The inline path takes a call only when every §1.3 check holds by construction and nothing
    observes the call from Python: a compiled handler that never defers, no armed fault, no
    tracer, the caller holds the call's privileges, and the control word is the bare code of a
    simple call, either fast (its input fits the two registers) or a memory call whose blocks
    are 8-byte aligned and mapped. Everything else, every failure included, goes through
    :meth:`Bridge.hypercall` unchanged. The counters move exactly as there.
    """
    cdef uint16_t code = control & 0xFFFF
    cdef uint16_t slot = (<Bridge> bridge_ref).slot_of_code[code]
    cdef CallMeta* m = &(<Bridge> bridge_ref).meta[slot]
    cdef HvHandler handler = (<Bridge> bridge_ref).c_handlers[slot]
    cdef HvCall call
    cdef uint32_t in_size
    cdef uint32_t out_size
    cdef uint16_t status
    cdef void* tracer = <void*> (<Bridge> bridge_ref).tracer
    cdef uint64_t* call_counts = (<Bridge> bridge_ref).call_counts
    cdef uint64_t* status_counts = (<Bridge> bridge_ref).status_counts
    if handler == NULL or m.rep or (<Bridge> bridge_ref).c_defers[slot] \
            or (<Bridge> bridge_ref).fault_counts[slot] or tracer != <void*> None \
            or ((<Caller> caller_ref).privileges & m.privilege) != m.privilege:
        return _bridge_call_full(bridge_ref, caller_ref, control, rdx, r8)
    if control == (code | CTL_FAST):
        if not m.fast_simple:
            return _bridge_call_full(bridge_ref, caller_ref, control, rdx, r8)
        call.fast = True
        call.fast_regs[0] = rdx
        call.fast_regs[1] = r8
        call.input = <const uint8_t*> call.fast_regs
        call.input_size = 16
        call.output = NULL
        call.output_size = 0
    elif control == code:
        in_size = (m.input_size + 7) & ~(<uint32_t> 7)
        out_size = (m.output_size + 7) & ~(<uint32_t> 7)
        call.fast = False
        call.input = NULL
        call.output = NULL
        if in_size:
            if rdx & 7:
                return _bridge_call_full(bridge_ref, caller_ref, control, rdx, r8)
            call.input = gpa_pointer_lent(<void*> (<Caller> caller_ref).memory, rdx, in_size)
            if call.input == NULL:
                return _bridge_call_full(bridge_ref, caller_ref, control, rdx, r8)
        if out_size:
            if r8 & 7:
                return _bridge_call_full(bridge_ref, caller_ref, control, rdx, r8)
            call.output = gpa_pointer_lent(<void*> (<Caller> caller_ref).memory, r8, out_size)
            if call.output == NULL:
                return _bridge_call_full(bridge_ref, caller_ref, control, rdx, r8)
        call.in_gpa = rdx
        call.out_gpa = r8
        call.input_size = in_size
        call.output_size = out_size
    else:
        return _bridge_call_full(bridge_ref, caller_ref, control, rdx, r8)
    call.control = control
    call.code = code
    call.varhead_qwords = 0
    call.rep_count = call.rep_start = call.rep_limit = call.reps_done = 0
    (<Caller> caller_ref).calls = (<Caller> caller_ref).calls + 1
    call_counts[slot] += 1
    status = handler((<Bridge> bridge_ref).c_context_ptrs[slot], <Caller> caller_ref, &call)
    status_counts[status & 0xFF] += 1
    return status


cdef inline uint64_t _bridge_call_full(void* bridge_ref, void* caller_ref, uint64_t control,
                                       uint64_t rdx, uint64_t r8) noexcept:
    return (<Bridge> bridge_ref).hypercall(<Caller> caller_ref, control, rdx, r8)
