"""HV_STATUS values against fact sheet §1.5, and how statuses print."""

from __future__ import annotations

import pytest

from winhv.abi import HvStatus, describe_status

# Fact sheet §1.5, copied by hand: (value, name without the HV_STATUS_ prefix).
SHEET_1_5 = {
    0x0000: "SUCCESS",
    0x0002: "INVALID_HYPERCALL_CODE",
    0x0003: "INVALID_HYPERCALL_INPUT",
    0x0004: "INVALID_ALIGNMENT",
    0x0005: "INVALID_PARAMETER",
    0x0006: "ACCESS_DENIED",
    0x0007: "INVALID_PARTITION_STATE",
    0x0008: "OPERATION_DENIED",
    0x0009: "UNKNOWN_PROPERTY",
    0x000A: "PROPERTY_VALUE_OUT_OF_RANGE",
    0x000B: "INSUFFICIENT_MEMORY",
    0x000C: "PARTITION_TOO_DEEP",
    0x000D: "INVALID_PARTITION_ID",
    0x000E: "INVALID_VP_INDEX",
    0x0010: "NOT_FOUND",
    0x0011: "INVALID_PORT_ID",
    0x0012: "INVALID_CONNECTION_ID",
    0x0013: "INSUFFICIENT_BUFFERS",
    0x0014: "NOT_ACKNOWLEDGED",
    0x0015: "INVALID_VP_STATE",
    0x0016: "ACKNOWLEDGED",
    0x0017: "INVALID_SAVE_RESTORE_STATE",
    0x0018: "INVALID_SYNIC_STATE",
    0x0019: "OBJECT_IN_USE",
    0x001A: "INVALID_PROXIMITY_DOMAIN_INFO",
    0x001B: "NO_DATA",
    0x001C: "INACTIVE",
    0x001D: "NO_RESOURCES",
    0x001E: "FEATURE_UNAVAILABLE",
    0x001F: "PARTIAL_PACKET",
    0x0020: "PROCESSOR_FEATURE_NOT_SUPPORTED",
    0x0030: "PROCESSOR_CACHE_LINE_FLUSH_SIZE_INCOMPATIBLE",
    0x0033: "INSUFFICIENT_BUFFER",
    0x0037: "INCOMPATIBLE_PROCESSOR",
    0x0038: "INSUFFICIENT_DEVICE_DOMAINS",
    0x003C: "CPUID_FEATURE_VALIDATION_ERROR",
    0x003D: "CPUID_XSAVE_FEATURE_VALIDATION_ERROR",
    0x003E: "PROCESSOR_STARTUP_TIMEOUT",
    0x003F: "SMX_ENABLED",
    0x0041: "INVALID_LP_INDEX",
    0x0050: "INVALID_REGISTER_VALUE",
    0x0051: "INVALID_VTL_STATE",
    0x0055: "NX_NOT_DETECTED",
    0x0057: "INVALID_DEVICE_ID",
    0x0058: "INVALID_DEVICE_STATE",
    0x0059: "PENDING_PAGE_REQUESTS",
    0x0060: "PAGE_REQUEST_INVALID",
    0x0065: "KEY_ALREADY_EXISTS",
    0x0066: "DEVICE_ALREADY_IN_DOMAIN",
    0x006F: "INVALID_CPU_GROUP_ID",
    0x0070: "INVALID_CPU_GROUP_STATE",
    0x0071: "OPERATION_FAILED",
    0x0072: "NOT_ALLOWED_WITH_NESTED_VIRT_ACTIVE",
    0x0073: "INSUFFICIENT_ROOT_MEMORY",
    0x0074: "EVENT_BUFFER_ALREADY_FREED",
    0x0078: "TIME_OUT",
    0x0079: "CALL_PENDING",
    0x0086: "VTL_ALREADY_ENABLED",
    0x0087: "UNKNOWN_REGISTER_NAME",
}


def test_enum_holds_exactly_the_sheet_values() -> None:
    assert {member.value: member.name for member in HvStatus} == SHEET_1_5


@pytest.mark.parametrize("value", [0x0001, 0x000F])
def test_undefined_values_have_no_member(value: int) -> None:
    with pytest.raises(ValueError, match="is not a valid HvStatus"):
        HvStatus(value)


def test_every_status_fits_in_16_bits() -> None:
    assert all(0 <= member <= 0xFFFF for member in HvStatus)


def test_str_gives_tlfs_name_and_hex_value() -> None:
    assert str(HvStatus.ACCESS_DENIED) == "HV_STATUS_ACCESS_DENIED (0x0006)"
    assert str(HvStatus.INSUFFICIENT_BUFFERS) == "HV_STATUS_INSUFFICIENT_BUFFERS (0x0013)"
    assert HvStatus.SUCCESS.tlfs_name == "HV_STATUS_SUCCESS"


def test_fstring_without_spec_is_text_and_with_spec_is_number() -> None:
    status = HvStatus.INVALID_SYNIC_STATE
    assert f"{status}" == "HV_STATUS_INVALID_SYNIC_STATE (0x0018)"
    assert f"{status:#06x}" == "0x0018"
    assert f"{status:d}" == "24"


def test_status_compares_as_an_int() -> None:
    assert HvStatus.INVALID_HYPERCALL_CODE == 2
    assert int(HvStatus.INVALID_HYPERCALL_INPUT) == 3


def test_describe_status_handles_known_and_unknown_values() -> None:
    assert describe_status(6) == "HV_STATUS_ACCESS_DENIED (0x0006)"
    assert describe_status(0x0001) == "HV_STATUS_UNDEFINED (0x0001)"
    assert describe_status(0xBEEF) == "HV_STATUS_UNDEFINED (0xBEEF)"
