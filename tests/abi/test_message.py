"""SynIC message layout and message types against fact sheet §2.3/§2.5."""

from __future__ import annotations

import ctypes

import pytest

from winhv.abi import (
    HV_EVENT_FLAGS_BYTES_PER_SINT,
    HV_EVENT_FLAGS_PER_SINT,
    HV_MESSAGE_HEADER,
    HV_MESSAGE_HEADER_SIZE,
    HV_MESSAGE_PAYLOAD_QWORD_COUNT,
    HV_MESSAGE_PAYLOAD_SIZE,
    HV_MESSAGE_SIZE,
    HV_MESSAGE_TYPE_HYPERVISOR_MASK,
    HV_SINT_COUNT,
    MESSAGE_FLAG_PENDING,
    TIMER_MESSAGE_PAYLOAD,
    HvMessage,
    HvMessageHeader,
    HvMessageType,
    TimerMessagePayload,
    is_guest_message_type,
)

# §2.3 message types by hand (the two disputed codes use the two-source names, §8 item 5).
SHEET_2_3 = {
    0x0000_0000: "NONE",
    0x0000_0001: "VMBUS",
    0x8000_0000: "UNMAPPED_GPA",
    0x8000_0001: "GPA_INTERCEPT",
    0x8000_0003: "UNACCEPTED_GPA",
    0x8000_0004: "GPA_ATTRIBUTE_INTERCEPT",
    0x8000_0005: "ENABLE_PARTITION_VTL_INTERCEPT",
    0x8000_0010: "TIMER_EXPIRED",
    0x8000_0020: "INVALID_VP_REGISTER_VALUE",
    0x8000_0021: "UNRECOVERABLE_EXCEPTION",
    0x8000_0022: "UNSUPPORTED_FEATURE",
    0x8000_0023: "TLB_PAGE_SIZE_MISMATCH",
    0x8000_0024: "IOMMU_FAULT",
    0x8000_003F: "OPAQUE_INTERCEPT",
    0x8000_0040: "EVENT_LOG_BUFFER_COMPLETE",
    0x8000_0050: "HYPERCALL_INTERCEPT",
    0x8000_0060: "SYNIC_EVENT_INTERCEPT",
    0x8000_0061: "SYNIC_SINT_INTERCEPT",
    0x8000_0062: "SYNIC_SINT_DELIVERABLE",
    0x8000_0070: "ASYNC_CALL_COMPLETION",
    0x8000_0071: "INSUFFICIENT_MEMORY",
    0x8000_0100: "SCHEDULER_VP_SIGNAL_BITSET",
    0x8000_0101: "SCHEDULER_VP_SIGNAL_PAIR",
    0x8001_0000: "X64_IO_PORT_INTERCEPT",
    0x8001_0001: "MSR_INTERCEPT",
    0x8001_0002: "X64_CPUID_INTERCEPT",
    0x8001_0003: "EXCEPTION_INTERCEPT",
    0x8001_0004: "X64_APIC_EOI",
    0x8001_0005: "X64_LEGACY_FP_ERROR",
    0x8001_0006: "REGISTER_INTERCEPT",
    0x8001_0007: "X64_HALT",
    0x8001_0008: "X64_INTERRUPTION_DELIVERABLE",
    0x8001_0009: "X64_SIPI_INTERCEPT",
    0x8001_000A: "X64_RDTSC_INTERCEPT",
    0x8001_000B: "X64_APIC_SMI_INTERCEPT",
    0x8001_000C: "ARM64_RESET_INTERCEPT",
    0x8001_000D: "X64_APIC_INIT_SIPI_INTERCEPT",
    0x8001_000E: "X64_APIC_WRITE_INTERCEPT",
    0x8001_000F: "X64_PROXY_INTERRUPT_INTERCEPT",
    0x8001_0010: "X64_ISOLATION_CTRL_REG_INTERCEPT",
    0x8001_0011: "X64_SNP_GUEST_REQUEST_INTERCEPT",
    0x8001_0012: "X64_EXCEPTION_TRAP_INTERCEPT",
    0x8001_0013: "X64_SEV_VMGEXIT_INTERCEPT",
    0x8001_0015: "X64_MSR_LIST_INTERCEPT",
}


def test_enum_holds_exactly_the_sheet_types() -> None:
    assert {member.value: member.name for member in HvMessageType} == SHEET_2_3


def test_only_none_and_vmbus_are_below_the_hypervisor_bit() -> None:
    guest = {m for m in HvMessageType if not m & HV_MESSAGE_TYPE_HYPERVISOR_MASK}
    assert guest == {HvMessageType.NONE, HvMessageType.VMBUS}


def test_constants_match_sheet() -> None:
    assert HV_MESSAGE_SIZE == 256
    assert HV_MESSAGE_HEADER_SIZE == 16
    assert HV_MESSAGE_PAYLOAD_SIZE == 240
    assert HV_MESSAGE_PAYLOAD_QWORD_COUNT * 8 == HV_MESSAGE_PAYLOAD_SIZE
    assert HV_SINT_COUNT == 16
    assert HV_EVENT_FLAGS_PER_SINT == 2048
    assert HV_EVENT_FLAGS_BYTES_PER_SINT == 256
    assert MESSAGE_FLAG_PENDING == 1
    assert HV_SINT_COUNT * HV_MESSAGE_SIZE == 4096  # a SIM page


def test_header_layout() -> None:
    assert ctypes.sizeof(HvMessageHeader) == 16
    assert HvMessageHeader.message_type.offset == 0
    assert HvMessageHeader.payload_size.offset == 4
    assert HvMessageHeader.message_flags.offset == 5
    assert HvMessageHeader.reserved.offset == 6
    assert HvMessageHeader.origination_id.offset == 8
    assert HV_MESSAGE_HEADER.size == 16


def test_message_layout() -> None:
    assert ctypes.sizeof(HvMessage) == 256
    assert HvMessage.header.offset == 0
    assert HvMessage.payload.offset == 16


def test_timer_payload_layout() -> None:
    assert ctypes.sizeof(TimerMessagePayload) == 24
    assert TimerMessagePayload.timer_index.offset == 0
    assert TimerMessagePayload.reserved.offset == 4
    assert TimerMessagePayload.expiration_time.offset == 8
    assert TimerMessagePayload.delivery_time.offset == 16
    assert TIMER_MESSAGE_PAYLOAD.size == 24


def test_header_codec_and_structure_agree() -> None:
    raw = HV_MESSAGE_HEADER.pack(HvMessageType.TIMER_EXPIRED, 24, MESSAGE_FLAG_PENDING, 0, 0)
    header = HvMessageHeader.from_buffer_copy(raw)
    assert header.message_type == 0x8000_0010
    assert header.payload_size == 24
    assert header.message_flags & MESSAGE_FLAG_PENDING
    assert header.origination_id == 0


def test_message_views_a_sim_slot_in_place() -> None:
    page = bytearray(4096)
    slot = HvMessage.from_buffer(page, 2 * HV_MESSAGE_SIZE)
    slot.header.message_type = HvMessageType.VMBUS
    slot.header.payload_size = 3
    slot.payload[0:3] = b"abc"
    assert page[512:516] == (1).to_bytes(4, "little")
    assert page[516] == 3
    assert page[528:531] == b"abc"


@pytest.mark.parametrize(
    ("message_type", "allowed"),
    [(0, False), (1, True), (0x7FFF_FFFF, True), (0x8000_0000, False), (0x8000_0010, False)],
)
def test_guest_may_post_only_nonzero_types_below_bit_31(message_type: int, allowed: bool) -> None:
    assert is_guest_message_type(message_type) is allowed
