"""SynIC messages: the 256-byte HV_MESSAGE, its header and the message types (fact sheet §2.3).

A SIM page holds 16 message slots, one per SINT (slot n at offset n x 256). A slot whose
message type is :attr:`HvMessageType.NONE` is empty; the hypervisor fills an empty slot and the
guest empties it by writing ``NONE`` back, then writes EOM if
:data:`MESSAGE_FLAG_PENDING` was set (§2.4). The SIEF page has the same 16 x 256-byte shape,
each slot an array of :data:`HV_EVENT_FLAGS_PER_SINT` flags (§2.5).

Message types with bit 31 set are reserved for the hypervisor; a guest may post only non-zero
types below 0x80000000 (HvCallPostMessage answers INVALID_PARAMETER otherwise, §1.7).
"""

from __future__ import annotations

import ctypes
import enum
import struct

__all__ = [
    "HV_EVENT_FLAGS_BYTES_PER_SINT",
    "HV_EVENT_FLAGS_PER_SINT",
    "HV_MESSAGE_HEADER",
    "HV_MESSAGE_HEADER_SIZE",
    "HV_MESSAGE_PAYLOAD_QWORD_COUNT",
    "HV_MESSAGE_PAYLOAD_SIZE",
    "HV_MESSAGE_SIZE",
    "HV_MESSAGE_TYPE_HYPERVISOR_MASK",
    "HV_SINT_COUNT",
    "MESSAGE_FLAG_PENDING",
    "TIMER_MESSAGE_PAYLOAD",
    "HvMessage",
    "HvMessageHeader",
    "HvMessageType",
    "TimerMessagePayload",
    "is_guest_message_type",
]

#: Bytes of one message slot.
HV_MESSAGE_SIZE = 256
#: Bytes of the header in front of the payload.
HV_MESSAGE_HEADER_SIZE = 16
#: Largest payload.
HV_MESSAGE_PAYLOAD_SIZE = 240
HV_MESSAGE_PAYLOAD_QWORD_COUNT = 30
#: SINTs per VP, so slots per SIM page and flag arrays per SIEF page.
HV_SINT_COUNT = 16
#: Event flags per SINT in the SIEF page (256 bytes x 8); flag f is byte f // 8, bit f % 8.
HV_EVENT_FLAGS_PER_SINT = 2048
HV_EVENT_FLAGS_BYTES_PER_SINT = HV_EVENT_FLAGS_PER_SINT // 8
#: MessageFlags bit 0: more messages are queued behind this slot; write EOM after emptying it.
MESSAGE_FLAG_PENDING = 1 << 0
#: Message types with this bit are hypervisor-only.
HV_MESSAGE_TYPE_HYPERVISOR_MASK = 0x8000_0000


class HvMessageType(enum.IntEnum):
    """HV_MESSAGE_TYPE values of §2.3 (TLFS, L-gdk, OVMM-hvdef).

    Two codes differ between sources (§8 item 5): 0x80010005 is X64LegacyFpError in L-gdk and
    Mile (OVMM: X64IommuPrq) and 0x80010006 is RegisterIntercept in TLFS and OVMM (L-gdk:
    X64_IOMMU_PRQ); the names with two sources are used.
    """

    NONE = 0x0000_0000
    #: Guest-defined: the VMBus channel message type, used in both directions (Linux and
    #: OVMM's ``VMBUS_MESSAGE_TYPE``). Not a hypervisor type.
    VMBUS = 0x0000_0001
    UNMAPPED_GPA = 0x8000_0000
    GPA_INTERCEPT = 0x8000_0001
    UNACCEPTED_GPA = 0x8000_0003
    GPA_ATTRIBUTE_INTERCEPT = 0x8000_0004
    ENABLE_PARTITION_VTL_INTERCEPT = 0x8000_0005
    TIMER_EXPIRED = 0x8000_0010
    INVALID_VP_REGISTER_VALUE = 0x8000_0020
    UNRECOVERABLE_EXCEPTION = 0x8000_0021
    UNSUPPORTED_FEATURE = 0x8000_0022
    TLB_PAGE_SIZE_MISMATCH = 0x8000_0023
    IOMMU_FAULT = 0x8000_0024
    OPAQUE_INTERCEPT = 0x8000_003F
    EVENT_LOG_BUFFER_COMPLETE = 0x8000_0040
    HYPERCALL_INTERCEPT = 0x8000_0050
    SYNIC_EVENT_INTERCEPT = 0x8000_0060
    SYNIC_SINT_INTERCEPT = 0x8000_0061
    SYNIC_SINT_DELIVERABLE = 0x8000_0062
    ASYNC_CALL_COMPLETION = 0x8000_0070
    INSUFFICIENT_MEMORY = 0x8000_0071
    SCHEDULER_VP_SIGNAL_BITSET = 0x8000_0100
    SCHEDULER_VP_SIGNAL_PAIR = 0x8000_0101
    X64_IO_PORT_INTERCEPT = 0x8001_0000
    MSR_INTERCEPT = 0x8001_0001
    X64_CPUID_INTERCEPT = 0x8001_0002
    EXCEPTION_INTERCEPT = 0x8001_0003
    X64_APIC_EOI = 0x8001_0004
    X64_LEGACY_FP_ERROR = 0x8001_0005
    REGISTER_INTERCEPT = 0x8001_0006
    X64_HALT = 0x8001_0007
    X64_INTERRUPTION_DELIVERABLE = 0x8001_0008
    X64_SIPI_INTERCEPT = 0x8001_0009
    X64_RDTSC_INTERCEPT = 0x8001_000A
    X64_APIC_SMI_INTERCEPT = 0x8001_000B
    ARM64_RESET_INTERCEPT = 0x8001_000C
    X64_APIC_INIT_SIPI_INTERCEPT = 0x8001_000D
    X64_APIC_WRITE_INTERCEPT = 0x8001_000E
    X64_PROXY_INTERRUPT_INTERCEPT = 0x8001_000F
    X64_ISOLATION_CTRL_REG_INTERCEPT = 0x8001_0010
    X64_SNP_GUEST_REQUEST_INTERCEPT = 0x8001_0011
    X64_EXCEPTION_TRAP_INTERCEPT = 0x8001_0012
    X64_SEV_VMGEXIT_INTERCEPT = 0x8001_0013
    X64_MSR_LIST_INTERCEPT = 0x8001_0015


def is_guest_message_type(message_type: int) -> bool:
    """True when a guest may post ``message_type``: non-zero, bit 31 clear, fits in u32."""
    return 0 < message_type < HV_MESSAGE_TYPE_HYPERVISOR_MASK


class HvMessageHeader(ctypes.LittleEndianStructure):
    """HV_MESSAGE_HEADER, 16 bytes.

    ``origination_id`` is a union on the wire: the port id (low 24 bits) for guest-posted
    messages, the sender partition id for intercepts, 0 for timer messages.
    """

    _pack_ = 1
    _layout_ = "ms"
    _fields_ = (
        ("message_type", ctypes.c_uint32),
        ("payload_size", ctypes.c_uint8),
        ("message_flags", ctypes.c_uint8),
        ("reserved", ctypes.c_uint16),
        ("origination_id", ctypes.c_uint64),
    )


class HvMessage(ctypes.LittleEndianStructure):
    """HV_MESSAGE, 256 bytes: header plus 240-byte payload (one SIM slot)."""

    _pack_ = 1
    _layout_ = "ms"
    _fields_ = (
        ("header", HvMessageHeader),
        ("payload", ctypes.c_uint8 * HV_MESSAGE_PAYLOAD_SIZE),
    )


class TimerMessagePayload(ctypes.LittleEndianStructure):
    """HV_TIMER_MESSAGE_PAYLOAD, 24 bytes: the payload of a TIMER_EXPIRED message (times in
    100 ns units of reference time)."""

    _pack_ = 1
    _layout_ = "ms"
    _fields_ = (
        ("timer_index", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("expiration_time", ctypes.c_uint64),
        ("delivery_time", ctypes.c_uint64),
    )


#: Header codec: message type, payload size, flags, reserved, origination id.
HV_MESSAGE_HEADER = struct.Struct("<IBBHQ")
#: Timer payload codec: timer index, reserved, expiration time, delivery time.
TIMER_MESSAGE_PAYLOAD = struct.Struct("<IIQQ")
