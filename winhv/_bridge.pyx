# cython: language_level=3
"""The hypercall bridge, compiled: decode, validate, check privileges, dispatch, encode.

This is the simulated hypercall page. :meth:`Bridge.hypercall` takes what a guest puts in
registers (the control word in RCX; RDX and R8 are the input and output GPAs of a memory call,
or the register input of a fast call) and returns what the guest finds in RAX (the result word,
fact sheet §1.3). Everything on the way is C: the control-word checks of §1.2/§1.3, the
privilege check against the call's entry in the ABI table, resolving and bounds-checking the
parameter pages in the caller's own memory, and the jump through a table of C function
pointers. Handlers the hypervisor core registers in C (PostMessage, SignalEvent) therefore run
without touching the Python interpreter beyond reference counting; handlers written in Python
are called with a :class:`HypercallFrame`. A handler that raises yields
``HV_STATUS_OPERATION_FAILED`` and a logged traceback, never an exception in the caller.
"""

import logging

from cpython.mem cimport PyMem_Calloc, PyMem_Free
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

from winhv._cdefs cimport (
    CTL_FAST, CTL_NESTED, CTL_REP_COUNT_SHIFT, CTL_REP_MASK, CTL_REP_START_SHIFT,
    CTL_VARHEAD_MASK, CTL_VARHEAD_SHIFT, HV_DEFER_TO_PYTHON, ST_ACCESS_DENIED, ST_INVALID_ALIGNMENT,
    ST_INVALID_HYPERCALL_CODE, ST_INVALID_HYPERCALL_INPUT, ST_OPERATION_FAILED, ST_SUCCESS,
    WINHV_CTL_RESERVED_MASK,
)
from winhv._gpa cimport GpaSpace, gpa_pointer

DEF N_CODES = 65536
DEF N_STATUS = 256

#: Reps a rep hypercall processes before it returns to the caller to be continued (the TLFS
#: lets the hypervisor return after ~50 us; continuation is transparent to WinHv callers).
DEFAULT_REP_SLICE = 512


cdef class Caller:
    """The calling partition as the bridge sees it.

    ``partition_id`` and ``memory`` are fixed for the caller's lifetime; ``privileges`` (the
    partition privilege mask of fact sheet §1.6) and ``current_vp`` (the VP issuing calls) are
    set by the hypervisor core.
    """

    def __init__(self, uint64_t partition_id, GpaSpace memory not None,
                 uint64_t privileges=0, uint32_t current_vp=0):
        self.partition_id = partition_id
        self.memory = memory
        self.privileges = privileges
        self.current_vp = current_vp

    def __repr__(self):
        return f"<Caller partition={self.partition_id:#x} privileges={self.privileges:#x}>"


cdef class HypercallFrame:
    """One hypercall as a Python handler sees it (valid only during the handler call).

    ``input`` is a read-only view of the caller's input block (fixed header, variable header,
    rep elements) or of the 16 register bytes of a fast call; ``output`` a writable view of the
    output block or ``None``. A rep handler processes elements ``rep_start .. rep_limit - 1``
    and sets ``reps_done`` to the index of the first element it did not complete.
    """

    cdef readonly object caller
    cdef readonly uint16_t code
    cdef readonly bint fast
    cdef readonly uint16_t varhead_qwords
    cdef readonly uint16_t rep_count
    cdef readonly uint16_t rep_start
    cdef readonly uint16_t rep_limit
    cdef public uint16_t reps_done
    cdef readonly object input
    cdef readonly object output

    def __repr__(self):
        return (f"<HypercallFrame code={self.code:#06x} fast={self.fast} "
                f"reps={self.rep_start}..{self.rep_limit}/{self.rep_count}>")


cdef inline uint32_t _pad8(uint32_t n) noexcept nogil:
    return (n + 7) & ~(<uint32_t> 7)


cdef class Bridge:
    """The compiled bridge. One per hypervisor; handlers are registered by the core.

    ``table`` maps call codes to ``winhv.abi.HypercallInfo`` (default: the full ABI table).
    Known codes without a handler answer ``HV_STATUS_INVALID_HYPERCALL_CODE`` like unknown ones.
    """

    def __cinit__(self, table=None):
        self.meta = NULL
        self.slot_of_code = <uint16_t*> PyMem_Calloc(N_CODES, sizeof(uint16_t))
        if self.slot_of_code == NULL:
            raise MemoryError()

    def __init__(self, table=None):
        if table is None:
            from winhv._calls import HYPERCALLS as table
        infos = sorted(table.values(), key=lambda info: info.code)
        self.n_slots = len(infos) + 1                # slot 0 = "unknown code"
        self.meta = <CallMeta*> PyMem_Calloc(self.n_slots, sizeof(CallMeta))
        self.c_handlers = <HvHandler*> PyMem_Calloc(self.n_slots, sizeof(HvHandler))
        self.c_context_ptrs = <void**> PyMem_Calloc(self.n_slots, sizeof(void*))
        self.c_defers = <uint8_t*> PyMem_Calloc(self.n_slots, sizeof(uint8_t))
        self.call_counts = <uint64_t*> PyMem_Calloc(self.n_slots, sizeof(uint64_t))
        self.status_counts = <uint64_t*> PyMem_Calloc(N_STATUS, sizeof(uint64_t))
        self.fault_counts = <uint32_t*> PyMem_Calloc(self.n_slots, sizeof(uint32_t))
        self.fault_status = <uint16_t*> PyMem_Calloc(self.n_slots, sizeof(uint16_t))
        if (self.meta == NULL or self.c_handlers == NULL or self.c_context_ptrs == NULL
                or self.c_defers == NULL
                or self.call_counts == NULL
                or self.status_counts == NULL or self.fault_counts == NULL
                or self.fault_status == NULL):
            raise MemoryError()
        self.c_contexts = [None] * self.n_slots
        self.py_handlers = [None] * self.n_slots
        cdef int slot = 1
        for info in infos:
            code = int(info.code)
            if not 0 <= code < N_CODES:
                raise ValueError(f"call code {code:#x} does not fit 16 bits")
            self.slot_of_code[code] = slot
            self.meta[slot].code = code
            self.meta[slot].rep = info.call_class.name == "REP"
            self.meta[slot].fast_ok = bool(info.fast)
            self.meta[slot].varhead_ok = bool(info.variable_header)
            self.meta[slot].privilege = int(info.privilege or 0)
            self.meta[slot].input_size = info.input_size
            self.meta[slot].output_size = info.output_size
            self.meta[slot].rep_input_size = info.rep_input_size
            self.meta[slot].rep_output_size = info.rep_output_size
            self.meta[slot].fast_simple = (not self.meta[slot].rep and self.meta[slot].fast_ok
                                           and _pad8(info.input_size) <= 16
                                           and info.output_size == 0)
            slot += 1
        self.rep_slice = DEFAULT_REP_SLICE
        self.tracer = None
        self._logger = logging.getLogger("winhv.bridge")

    def __dealloc__(self):
        PyMem_Free(self.meta)
        PyMem_Free(self.slot_of_code)
        PyMem_Free(self.c_handlers)
        PyMem_Free(self.c_context_ptrs)
        PyMem_Free(self.c_defers)
        PyMem_Free(self.call_counts)
        PyMem_Free(self.status_counts)
        PyMem_Free(self.fault_counts)
        PyMem_Free(self.fault_status)

    kind = "compiled"

    # -- registration -------------------------------------------------------------------------

    cdef int set_c_handler(self, uint16_t code, HvHandler handler, object context,
                           bint defers=False) except -1:
        cdef uint16_t slot = self.slot_of_code[code]
        if slot == 0:
            raise ValueError(f"call code {code:#06x} is not in the ABI table")
        self.c_defers[slot] = defers
        if not defers:
            self.py_handlers[slot] = None
        self.c_handlers[slot] = handler
        self.c_contexts[slot] = context
        self.c_context_ptrs[slot] = <void*> context
        return 0

    def register(self, code, handler):
        """Handle ``code`` with ``handler(frame) -> int`` (an HV_STATUS).

        This replaces a compiled handler of the same code, except a compiled *fast path*
        (registered with ``defers=True``), which keeps running first and hands the calls it
        does not take to this handler.
        """
        cdef uint16_t slot = self.slot_of_code[<uint16_t> code] if 0 <= code < N_CODES else 0
        if slot == 0:
            raise ValueError(f"call code {code:#06x} is not in the ABI table")
        if not callable(handler):
            raise TypeError(f"handler for {code:#06x} is not callable: {handler!r}")
        if not self.c_defers[slot]:
            self.c_handlers[slot] = NULL
            self.c_contexts[slot] = None
            self.c_context_ptrs[slot] = NULL
        self.py_handlers[slot] = handler

    def unregister(self, code):
        """Remove the handler of ``code``; the call then answers INVALID_HYPERCALL_CODE."""
        cdef uint16_t slot = self.slot_of_code[<uint16_t> code] if 0 <= code < N_CODES else 0
        if slot:
            self.c_handlers[slot] = NULL
            self.c_contexts[slot] = None
            self.c_context_ptrs[slot] = NULL
            self.c_defers[slot] = False
            self.py_handlers[slot] = None

    def handled(self, code) -> bool:
        """True when ``code`` has a handler."""
        cdef uint16_t slot = self.slot_of_code[<uint16_t> code] if 0 <= code < N_CODES else 0
        return slot != 0 and (self.c_handlers[slot] != NULL or self.py_handlers[slot] is not None)

    def handled_codes(self):
        """The call codes that have a handler, sorted."""
        return [self.meta[s].code for s in range(1, self.n_slots)
                if self.c_handlers[s] != NULL or self.py_handlers[s] is not None]

    def compiled_codes(self):
        """The call codes handled in compiled code (some with a Python fallback), sorted."""
        return [self.meta[s].code for s in range(1, self.n_slots) if self.c_handlers[s] != NULL]

    # -- fault injection and counters ----------------------------------------------------------

    def inject_fault(self, code, status, count=1):
        """Make the next ``count`` calls of ``code`` fail with ``status`` before dispatch."""
        cdef uint16_t slot = self.slot_of_code[<uint16_t> code] if 0 <= code < N_CODES else 0
        if slot == 0:
            raise ValueError(f"call code {code:#06x} is not in the ABI table")
        if not 0 < status <= 0xFFFF:
            raise ValueError(f"fault status {status:#x} is not a failure HV_STATUS")
        self.fault_counts[slot] = count
        self.fault_status[slot] = status

    def pending_faults(self):
        """``{code: (status, remaining)}`` for every armed fault."""
        return {self.meta[s].code: (self.fault_status[s], self.fault_counts[s])
                for s in range(1, self.n_slots) if self.fault_counts[s]}

    def counters(self):
        """``{code: calls}`` for every code called at least once (unknown codes under -1)."""
        out = {self.meta[s].code: self.call_counts[s]
               for s in range(1, self.n_slots) if self.call_counts[s]}
        if self.call_counts[0]:
            out[-1] = self.call_counts[0]
        return out

    def status_counters(self):
        """``{status: count}`` of every result status returned so far (low 8 bits of status)."""
        return {s: self.status_counts[s] for s in range(N_STATUS) if self.status_counts[s]}

    def reset_counters(self):
        cdef int s
        for s in range(self.n_slots):
            self.call_counts[s] = 0
        for s in range(N_STATUS):
            self.status_counts[s] = 0

    # -- the entry ------------------------------------------------------------------------------

    cpdef uint64_t hypercall(self, Caller caller, uint64_t control, uint64_t rdx,
                             uint64_t r8) noexcept:
        """Issue one hypercall as ``caller``; returns the 64-bit result word (§1.3).

        Never raises for any input: every failure is an HV_STATUS in the result.
        """
        cdef uint16_t reps_done = 0
        cdef uint16_t status
        caller.calls += 1
        status = self._dispatch(caller, control, rdx, r8, &reps_done)
        self.status_counts[status & 0xFF] += 1
        cdef uint64_t result = status | ((<uint64_t> reps_done) << 32)
        if self.tracer is not None:
            try:
                self.tracer(caller.partition_id, control, rdx, r8, result)
            except Exception:
                self._logger.exception("hypercall tracer failed; tracing disabled")
                self.tracer = None
        return result

    cdef uint16_t _dispatch(self, Caller caller, uint64_t control, uint64_t rdx, uint64_t r8,
                            uint16_t* reps_done) noexcept:
        cdef uint16_t code = control & 0xFFFF
        cdef uint16_t slot = self.slot_of_code[code]
        cdef CallMeta* m = &self.meta[slot]
        cdef HvCall call
        cdef uint32_t in_size
        cdef uint32_t out_size
        cdef uint16_t status
        self.call_counts[slot] += 1
        if (control >> 17) == 0 and control & CTL_FAST and m.fast_simple \
                and self.c_handlers[slot] != NULL and self.fault_counts[slot] == 0 \
                and (caller.privileges & m.privilege) == m.privilege:
            # The hot path: a fast simple call with nothing else in the control word (so every
            # §1.3 check holds) to a compiled handler.
            call.control = control
            call.code = code
            call.fast = True
            call.varhead_qwords = 0
            call.rep_count = call.rep_start = call.rep_limit = call.reps_done = 0
            call.fast_regs[0] = rdx
            call.fast_regs[1] = r8
            call.input = <const uint8_t*> call.fast_regs
            call.input_size = 16
            call.output = NULL
            call.output_size = 0
            return self.c_handlers[slot](self.c_context_ptrs[slot], caller, &call)
        if slot == 0 or (self.c_handlers[slot] == NULL and self.py_handlers[slot] is None):
            return ST_INVALID_HYPERCALL_CODE
        call.control = control
        call.code = code
        call.fast = (control & CTL_FAST) != 0
        call.varhead_qwords = (control >> CTL_VARHEAD_SHIFT) & CTL_VARHEAD_MASK
        call.rep_count = (control >> CTL_REP_COUNT_SHIFT) & CTL_REP_MASK
        call.rep_start = (control >> CTL_REP_START_SHIFT) & CTL_REP_MASK
        # §1.3 common checks: reserved bits, nesting (this hypervisor is not nested), the rep
        # fields against the call's class, the variable header, the fast form.
        if control & WINHV_CTL_RESERVED_MASK or control & CTL_NESTED:
            return ST_INVALID_HYPERCALL_INPUT
        if m.rep:
            if call.rep_count == 0 or call.rep_start >= call.rep_count:
                return ST_INVALID_HYPERCALL_INPUT
        elif call.rep_count != 0 or call.rep_start != 0:
            return ST_INVALID_HYPERCALL_INPUT
        if call.varhead_qwords and not m.varhead_ok:
            return ST_INVALID_HYPERCALL_INPUT
        if (caller.privileges & m.privilege) != m.privilege:
            return ST_ACCESS_DENIED
        in_size = _pad8(m.input_size + call.varhead_qwords * 8
                        + call.rep_count * m.rep_input_size)
        out_size = _pad8(m.output_size + call.rep_count * m.rep_output_size)
        if call.fast:
            if not m.fast_ok or in_size > 16 or out_size != 0:
                return ST_INVALID_HYPERCALL_INPUT
            call.fast_regs[0] = rdx
            call.fast_regs[1] = r8
            call.input = <const uint8_t*> call.fast_regs
            call.input_size = 16
            call.output = NULL
            call.output_size = 0
        else:
            # §1.1: 8-byte aligned blocks that neither cross a page nor leave the GPA space.
            call.input = NULL
            call.output = NULL
            call.in_gpa = rdx
            call.out_gpa = r8
            if in_size:
                if rdx & 7:
                    return ST_INVALID_ALIGNMENT
                call.input = gpa_pointer(caller.memory, rdx, in_size)
                if call.input == NULL:
                    return ST_INVALID_ALIGNMENT
            if out_size:
                if r8 & 7:
                    return ST_INVALID_ALIGNMENT
                call.output = gpa_pointer(caller.memory, r8, out_size)
                if call.output == NULL:
                    return ST_INVALID_ALIGNMENT
            call.input_size = in_size
            call.output_size = out_size
        if m.rep:
            call.rep_limit = call.rep_count
            if call.rep_limit - call.rep_start > self.rep_slice > 0:
                call.rep_limit = call.rep_start + self.rep_slice
        else:
            call.rep_limit = 0
        call.reps_done = call.rep_start
        if self.fault_counts[slot]:
            self.fault_counts[slot] -= 1
            status = self.fault_status[slot]
            reps_done[0] = call.rep_start
            return status
        if self.c_handlers[slot] != NULL:
            status = self.c_handlers[slot](self.c_context_ptrs[slot], caller, &call)
            if status == HV_DEFER_TO_PYTHON:
                # A compiled fast path that declined this call: the Python handler does it.
                call.reps_done = call.rep_start
                status = (self._call_python(slot, caller, &call)
                          if self.py_handlers[slot] is not None else ST_INVALID_HYPERCALL_CODE)
        else:
            status = self._call_python(slot, caller, &call)
        if m.rep:
            if call.reps_done < call.rep_start or call.reps_done > call.rep_limit:
                call.reps_done = call.rep_start
            reps_done[0] = call.reps_done
        return status

    cdef uint16_t _call_python(self, int slot, Caller caller, HvCall* call) noexcept:
        cdef HypercallFrame frame = HypercallFrame.__new__(HypercallFrame)
        frame.caller = caller
        frame.code = call.code
        frame.fast = call.fast
        frame.varhead_qwords = call.varhead_qwords
        frame.rep_count = call.rep_count
        frame.rep_start = call.rep_start
        frame.rep_limit = call.rep_limit
        frame.reps_done = call.rep_start
        handler = self.py_handlers[slot]
        try:
            if call.fast:
                frame.input = memoryview((<char*> call.fast_regs)[:16])
                frame.output = None
            else:
                frame.input = (caller.memory.view(call.in_gpa, call.input_size)
                               .toreadonly() if call.input_size else memoryview(b""))
                frame.output = (caller.memory.view(call.out_gpa, call.output_size)
                                if call.output_size else None)
            status = handler(frame)
            status = int(status)
            if not 0 <= status <= 0xFFFF:
                raise ValueError(f"handler returned {status!r}, not an HV_STATUS")
        except Exception:
            self._logger.exception("hypercall %#06x handler %r failed (caller partition %#x)",
                                   call.code, handler, caller.partition_id)
            return ST_OPERATION_FAILED
        finally:
            call.reps_done = frame.reps_done
            frame.input = None
            frame.output = None
        return status


