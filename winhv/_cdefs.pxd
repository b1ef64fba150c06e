# cython: language_level=3
"""C-level constants shared by the compiled modules (mirrors of the Python ABI tables).

The Python tables (``winhv.abi``) are the single source; ``tests/bridge/test_cdefs.py``
checks these mirrors against them so the two can never drift.
"""

cdef enum:
    HV_PAGE_SIZE = 4096
    HV_PAGE_SHIFT = 12
    HV_MESSAGE_SIZE = 256
    HV_MESSAGE_PAYLOAD_SIZE = 240
    HV_SINT_COUNT = 16
    HV_EVENT_FLAGS_PER_SINT = 2048

# HV_STATUS values used by compiled code (fact sheet §1.5).
cdef enum:
    ST_SUCCESS = 0x0000
    ST_INVALID_HYPERCALL_CODE = 0x0002
    ST_INVALID_HYPERCALL_INPUT = 0x0003
    ST_INVALID_ALIGNMENT = 0x0004
    ST_INVALID_PARAMETER = 0x0005
    ST_ACCESS_DENIED = 0x0006
    ST_INVALID_PARTITION_STATE = 0x0007
    ST_INVALID_PORT_ID = 0x0011
    ST_INVALID_CONNECTION_ID = 0x0012
    ST_INSUFFICIENT_BUFFERS = 0x0013
    ST_INVALID_VP_INDEX = 0x000E
    ST_INVALID_SYNIC_STATE = 0x0018
    ST_OPERATION_FAILED = 0x0071
    # Not a TLFS status: what a compiled handler returns to hand the call to the Python one.
    HV_DEFER_TO_PYTHON = 0xFFFF

# Hypercall control word (fact sheet §1.2).
cdef enum:
    CTL_FAST = 1 << 16
    CTL_VARHEAD_SHIFT = 17
    CTL_VARHEAD_MASK = 0x3FF
    CTL_REP_COUNT_SHIFT = 32
    CTL_REP_START_SHIFT = 48
    CTL_REP_MASK = 0xFFF

cdef extern from *:
    """
    #define WINHV_CTL_RESERVED_MASK 0xF000F00078000000ULL
    #define WINHV_CTL_NESTED 0x80000000ULL
    """
    unsigned long long WINHV_CTL_RESERVED_MASK
    unsigned long long CTL_NESTED "WINHV_CTL_NESTED"

# Call codes the compiled core handles itself.
cdef enum:
    CALL_POST_MESSAGE = 0x005C
    CALL_SIGNAL_EVENT = 0x005D
    CALL_GET_PARTITION_ID = 0x0046
    CALL_SET_VP_REGISTERS = 0x0051
    REGISTER_EOM = 0x000A0014

# SynIC register bits (fact sheet §2.2).
cdef enum:
    SINT_VECTOR_MASK = 0xFF
    SINT_MASKED = 1 << 16
    SINT_AUTO_EOI = 1 << 17
    SINT_POLLING = 1 << 18
    MESSAGE_FLAG_PENDING = 1
