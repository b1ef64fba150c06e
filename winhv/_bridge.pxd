# cython: language_level=3
"""The compiled hypercall bridge: what the hypervisor core cimports to register C handlers."""

cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

from winhv._gpa cimport GpaSpace


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
