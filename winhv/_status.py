"""HV_STATUS: the 16-bit result code of every hypercall (fact sheet §1.5).

A hypercall never raises; it answers one of these codes in bits 15:0 of its result value
(§1.3). The enum holds every value the sources define, named without the ``HV_STATUS_``
prefix, so ``HvStatus.ACCESS_DENIED == 6``. Values 0x0001 and 0x000F are not defined by any
source and therefore have no member.

``str(status)`` gives the TLFS spelling together with the number, which is what error
messages and logs should show: ``"HV_STATUS_ACCESS_DENIED (0x0006)"``. Format specs still see
the integer, so ``f"{status:#06x}"`` gives ``"0x0006"``.
"""

from __future__ import annotations

import enum

__all__ = ["HV_STATUS_MASK", "HvStatus", "describe_status"]

#: Width of an HV_STATUS in the result value: bits 15:0 (§1.3).
HV_STATUS_MASK = 0xFFFF


class HvStatus(enum.IntEnum):
    """Every HV_STATUS value of fact sheet §1.5 (OVMM ``hv_error!``, L-gdk, Mile, WDK)."""

    SUCCESS = 0x0000
    INVALID_HYPERCALL_CODE = 0x0002
    INVALID_HYPERCALL_INPUT = 0x0003
    INVALID_ALIGNMENT = 0x0004
    INVALID_PARAMETER = 0x0005
    ACCESS_DENIED = 0x0006
    INVALID_PARTITION_STATE = 0x0007
    OPERATION_DENIED = 0x0008
    UNKNOWN_PROPERTY = 0x0009
    PROPERTY_VALUE_OUT_OF_RANGE = 0x000A
    INSUFFICIENT_MEMORY = 0x000B
    PARTITION_TOO_DEEP = 0x000C
    INVALID_PARTITION_ID = 0x000D
    INVALID_VP_INDEX = 0x000E
    NOT_FOUND = 0x0010
    INVALID_PORT_ID = 0x0011
    INVALID_CONNECTION_ID = 0x0012
    INSUFFICIENT_BUFFERS = 0x0013
    NOT_ACKNOWLEDGED = 0x0014
    INVALID_VP_STATE = 0x0015
    ACKNOWLEDGED = 0x0016
    INVALID_SAVE_RESTORE_STATE = 0x0017
    INVALID_SYNIC_STATE = 0x0018
    OBJECT_IN_USE = 0x0019
    INVALID_PROXIMITY_DOMAIN_INFO = 0x001A
    NO_DATA = 0x001B
    INACTIVE = 0x001C
    NO_RESOURCES = 0x001D
    FEATURE_UNAVAILABLE = 0x001E
    PARTIAL_PACKET = 0x001F
    PROCESSOR_FEATURE_NOT_SUPPORTED = 0x0020
    PROCESSOR_CACHE_LINE_FLUSH_SIZE_INCOMPATIBLE = 0x0030
    INSUFFICIENT_BUFFER = 0x0033
    INCOMPATIBLE_PROCESSOR = 0x0037
    INSUFFICIENT_DEVICE_DOMAINS = 0x0038
    CPUID_FEATURE_VALIDATION_ERROR = 0x003C
    CPUID_XSAVE_FEATURE_VALIDATION_ERROR = 0x003D
    PROCESSOR_STARTUP_TIMEOUT = 0x003E
    SMX_ENABLED = 0x003F
    INVALID_LP_INDEX = 0x0041
    INVALID_REGISTER_VALUE = 0x0050
    INVALID_VTL_STATE = 0x0051
    NX_NOT_DETECTED = 0x0055
    INVALID_DEVICE_ID = 0x0057
    INVALID_DEVICE_STATE = 0x0058
    PENDING_PAGE_REQUESTS = 0x0059
    PAGE_REQUEST_INVALID = 0x0060
    KEY_ALREADY_EXISTS = 0x0065
    DEVICE_ALREADY_IN_DOMAIN = 0x0066
    INVALID_CPU_GROUP_ID = 0x006F
    INVALID_CPU_GROUP_STATE = 0x0070
    OPERATION_FAILED = 0x0071
    NOT_ALLOWED_WITH_NESTED_VIRT_ACTIVE = 0x0072
    INSUFFICIENT_ROOT_MEMORY = 0x0073
    EVENT_BUFFER_ALREADY_FREED = 0x0074
    TIME_OUT = 0x0078
    CALL_PENDING = 0x0079
    VTL_ALREADY_ENABLED = 0x0086
    UNKNOWN_REGISTER_NAME = 0x0087

    @property
    def tlfs_name(self) -> str:
        """The C spelling, e.g. ``"HV_STATUS_ACCESS_DENIED"``."""
        return f"HV_STATUS_{self.name}"

    def __str__(self) -> str:
        return f"{self.tlfs_name} (0x{self.value:04X})"

    def __format__(self, format_spec: str) -> str:
        # An empty spec means "as text" (what f"{status}" and messages want); any other spec
        # is a number format and applies to the integer value.
        if not format_spec:
            return str(self)
        return int.__format__(int(self), format_spec)


def describe_status(value: int) -> str:
    """Text for any 16-bit status, known or not.

    ``describe_status(6) == "HV_STATUS_ACCESS_DENIED (0x0006)"``; a value without a member gives
    ``"HV_STATUS_UNDEFINED (0x0001)"`` so that a message about a bad status never fails itself.
    """
    try:
        return str(HvStatus(value))
    except ValueError:
        return f"HV_STATUS_UNDEFINED (0x{value & HV_STATUS_MASK:04X})"
