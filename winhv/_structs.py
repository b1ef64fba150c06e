"""Hypercall input/output blocks as ctypes structures (fact sheet §1.7).

Every structure is little-endian and packed (``_pack_ = 1``, ``_layout_ = "ms"``), so its size
and offsets are the wire layout exactly; explicit ``reserved``/``padding`` fields stand where
the TLFS has RsvdZ bytes or where a block is padded to a multiple of 8 (§1.1). Use them with
``Struct.from_buffer(memory, offset)`` to view guest memory in place, or
``Struct.from_buffer_copy(data)`` to take a private copy (the host must copy anything it
validates from untrusted guest memory before acting on it).

Rep calls have a fixed header structure here; their elements are arrays that follow it: u64
page numbers for Deposit/Withdraw/MapGpaPages and FlushVirtualAddressList, u32 register names
(input) and :class:`HvRegisterValue` (output) for GetVpRegisters, and
:class:`SetVpRegistersElement` for SetVpRegisters.

ctypes field access costs hundreds of nanoseconds; the hot calls (PostMessage, SignalEvent)
also have precompiled :class:`struct.Struct` codecs.
"""

from __future__ import annotations

import ctypes
import enum
import struct

__all__ = [
    "DISCONNECT_PORT_IS_DOORBELL",
    "DOORBELL_FLAG_ANY_VALUE",
    "DOORBELL_TRIGGER_SIZE_MASK",
    "HV_ANY_VP",
    "HV_CONNECTION_ID_MASK",
    "HV_PARTITION_ID_INVALID",
    "HV_PARTITION_ID_SELF",
    "HV_PORT_ID_MASK",
    "HV_VP_INDEX_SELF",
    "PARTITION_ID",
    "POST_MESSAGE_HEADER",
    "PROXIMITY_INFO_VALID",
    "PROXIMITY_PREFERRED",
    "SIGNAL_EVENT",
    "ConnectPortInput",
    "CreatePartitionInput",
    "CreatePartitionOutput",
    "CreatePortInput",
    "CreateVpInput",
    "DeletePartitionInput",
    "DeletePortInput",
    "DeleteVpInput",
    "DepositMemoryInput",
    "DisconnectPortInput",
    "FinalizePartitionInput",
    "FlushVirtualAddressListInput",
    "FlushVirtualAddressSpaceInput",
    "GetMemoryBalanceInput",
    "GetMemoryBalanceOutput",
    "GetNextChildPartitionInput",
    "GetNextChildPartitionOutput",
    "GetPartitionIdOutput",
    "GetPartitionPropertyInput",
    "GetPartitionPropertyOutput",
    "GetVpRegistersInput",
    "HvConnectionInfo",
    "HvDoorbellConnectionInfo",
    "HvDoorbellTriggerSize",
    "HvEventPortInfo",
    "HvMessagePortInfo",
    "HvMonitorConnectionInfo",
    "HvMonitorPortInfo",
    "HvPortInfo",
    "HvPortType",
    "HvProximityDomainInfo",
    "HvRegisterValue",
    "InitializePartitionInput",
    "InstallInterceptInput",
    "MapGpaPagesInput",
    "PostMessageDirectInput",
    "PostMessageInput",
    "SendSyntheticClusterIpiInput",
    "SetPartitionPropertyInput",
    "SetVpRegistersElement",
    "SetVpRegistersInput",
    "SignalEventDirectInput",
    "SignalEventDirectOutput",
    "SignalEventInput",
    "TranslateVirtualAddressInput",
    "TranslateVirtualAddressOutput",
    "UnmapGpaPagesInput",
    "WithdrawMemoryInput",
]

_u8, _u16, _u32, _u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64

# --- special values (§1.7; L-gdk, OVMM) ---
#: "No partition".
HV_PARTITION_ID_INVALID = 0
#: The caller's own partition.
HV_PARTITION_ID_SELF = 0xFFFF_FFFF_FFFF_FFFF
#: The calling VP.
HV_VP_INDEX_SELF = 0xFFFF_FFFE
#: A port bound to any VP (no delivery-order guarantee, §2.4).
HV_ANY_VP = 0xFFFF_FFFF
#: HV_PORT_ID / HV_CONNECTION_ID: bits 23:0 are the id, bits 31:24 are reserved (zero).
HV_PORT_ID_MASK = 0x00FF_FFFF
HV_CONNECTION_ID_MASK = 0x00FF_FFFF

# HV_PROXIMITY_DOMAIN_INFO.Flags
PROXIMITY_PREFERRED = 1 << 0
PROXIMITY_INFO_VALID = 1 << 31

#: HvCallDisconnectPort flags bit 0 (Linux ``is_doorbell``).
DISCONNECT_PORT_IS_DOORBELL = 1 << 0

# Doorbell connection flags (§1.7).
DOORBELL_TRIGGER_SIZE_MASK = 0x7
DOORBELL_FLAG_ANY_VALUE = 0x8000_0000


class HvPortType(enum.IntEnum):
    """HV_PORT_TYPE (§1.7; L-hdk, Mile)."""

    MESSAGE = 1
    EVENT = 2
    MONITOR = 3
    DOORBELL = 4


class HvDoorbellTriggerSize(enum.IntEnum):
    """Bits 2:0 of a doorbell connection's flags: the width of the write that rings it."""

    ANY = 0
    BYTE = 1
    WORD = 2
    DWORD = 3
    QWORD = 4


class _Wire(ctypes.LittleEndianStructure):
    """Base of every wire structure: packed, MS layout, little-endian."""

    _pack_ = 1
    _layout_ = "ms"


class _WireUnion(ctypes.LittleEndianUnion):
    _pack_ = 1
    _layout_ = "ms"


class HvProximityDomainInfo(_Wire):
    """HV_PROXIMITY_DOMAIN_INFO, 8 bytes: NUMA domain id and flags
    (:data:`PROXIMITY_PREFERRED`, :data:`PROXIMITY_INFO_VALID`)."""

    _fields_ = (("domain_id", _u32), ("flags", _u32))


# --- HV_PORT_INFO: 24 bytes, port type + pad + 16-byte union ---
class HvMessagePortInfo(_Wire):
    _fields_ = (("target_sint", _u32), ("target_vp", _u32), ("reserved", _u64))


class HvEventPortInfo(_Wire):
    _fields_ = (
        ("target_sint", _u32),
        ("target_vp", _u32),
        ("base_flag_number", _u16),
        ("flag_count", _u16),
        ("reserved", _u32),
    )


class HvMonitorPortInfo(_Wire):
    _fields_ = (("monitor_address", _u64), ("reserved", _u64))


class _PortInfoUnion(_WireUnion):
    _fields_ = (
        ("message", HvMessagePortInfo),
        ("event", HvEventPortInfo),
        ("monitor", HvMonitorPortInfo),
        # A doorbell port has the message port's shape: target SINT, target VP, reserved.
        ("doorbell", HvMessagePortInfo),
    )


class HvPortInfo(_Wire):
    """HV_PORT_INFO, 24 bytes: ``port_type`` (:class:`HvPortType`) selects which member of
    the union at offset 8 is meaningful (``message``, ``event``, ``monitor``, ``doorbell``)."""

    _anonymous_ = ("info",)
    _fields_ = (("port_type", _u32), ("padding", _u32), ("info", _PortInfoUnion))


# --- HV_CONNECTION_INFO: 32 bytes, port type + pad + 24-byte union ---
class HvMonitorConnectionInfo(_Wire):
    _fields_ = (("monitor_address", _u64),)


class HvDoorbellConnectionInfo(_Wire):
    _fields_ = (("gpa", _u64), ("trigger_value", _u64), ("flags", _u64))


class _ConnectionInfoUnion(_WireUnion):
    _fields_ = (
        ("message", _u64),  # reserved
        ("event", _u64),  # reserved
        ("monitor", HvMonitorConnectionInfo),
        ("doorbell", HvDoorbellConnectionInfo),
    )


class HvConnectionInfo(_Wire):
    """HV_CONNECTION_INFO, 32 bytes: message and event connections carry only reserved
    bytes; monitor connections a monitor page address; doorbell connections a GPA, trigger
    value and flags."""

    _anonymous_ = ("info",)
    _fields_ = (("port_type", _u32), ("padding", _u32), ("info", _ConnectionInfoUnion))


# --- messages and events ---
class PostMessageInput(_Wire):
    """HvCallPostMessage input, 256 bytes. ``message_type`` must be non-zero with bit 31
    clear and ``payload_size`` at most 240 (else INVALID_PARAMETER); VMBus uses type 1."""

    _fields_ = (
        ("connection_id", _u32),
        ("reserved", _u32),
        ("message_type", _u32),
        ("payload_size", _u32),
        ("payload", _u8 * 240),
    )


class SignalEventInput(_Wire):
    """HvCallSignalEvent input, 8 bytes; also sent fast in RDX as
    ``connection_id | flag_number << 32``."""

    _fields_ = (("connection_id", _u32), ("flag_number", _u16), ("reserved", _u16))


class SignalEventDirectInput(_Wire):
    """HvCallSignalEventDirect input, 16 bytes (TLFS = OVMM)."""

    _fields_ = (
        ("target_partition", _u64),
        ("target_vp", _u32),
        ("target_vtl", _u8),
        ("target_sint", _u8),
        ("flag_number", _u16),
    )


class SignalEventDirectOutput(_Wire):
    """HvCallSignalEventDirect output, 8 bytes: whether the flag went from 0 to 1."""

    _fields_ = (("newly_signaled", _u8), ("reserved", _u8 * 7))


class PostMessageDirectInput(_Wire):
    """HvCallPostMessageDirect input in OpenVMM's layout, 280 bytes.

    The TLFS table (SINT at 13, message at 16) disagrees with OpenVMM (§8 item 6); OpenVMM's is
    used because it is what a working VMM sends. ``message`` is a whole 256-byte HV_MESSAGE.
    """

    _fields_ = (
        ("partition_id", _u64),
        ("vp_index", _u32),
        ("vtl", _u8),
        ("padding0", _u8 * 3),
        ("sint", _u8),
        ("padding1", _u8 * 3),
        ("message", _u8 * 256),
        ("padding2", _u32),
    )


# --- partition management ---
class CreatePartitionInput(_Wire):
    """HvCallCreatePartition input, 56 bytes (x64)."""

    _fields_ = (
        ("flags", _u64),
        ("proximity_domain_info", HvProximityDomainInfo),
        ("compatibility_version", _u32),
        ("padding", _u32),
        ("disabled_processor_features", _u64 * 2),
        ("disabled_processor_xsave_features", _u64),
        ("isolation_properties", _u64),
    )


class CreatePartitionOutput(_Wire):
    """HvCallCreatePartition output, 8 bytes."""

    _fields_ = (("partition_id", _u64),)


class InitializePartitionInput(_Wire):
    """HvCallInitializePartition input, 8 bytes."""

    _fields_ = (("partition_id", _u64),)


class FinalizePartitionInput(_Wire):
    """HvCallFinalizePartition input, 8 bytes."""

    _fields_ = (("partition_id", _u64),)


class DeletePartitionInput(_Wire):
    """HvCallDeletePartition input, 8 bytes."""

    _fields_ = (("partition_id", _u64),)


class GetPartitionPropertyInput(_Wire):
    """HvCallGetPartitionProperty input, 16 bytes."""

    _fields_ = (("partition_id", _u64), ("property_code", _u32), ("reserved", _u32))


class GetPartitionPropertyOutput(_Wire):
    """HvCallGetPartitionProperty output, 8 bytes."""

    _fields_ = (("property_value", _u64),)


class SetPartitionPropertyInput(_Wire):
    """HvCallSetPartitionProperty input, 24 bytes."""

    _fields_ = (
        ("partition_id", _u64),
        ("property_code", _u32),
        ("padding", _u32),
        ("property_value", _u64),
    )


class GetPartitionIdOutput(_Wire):
    """HvCallGetPartitionId output, 8 bytes (the call has no input)."""

    _fields_ = (("partition_id", _u64),)


class GetNextChildPartitionInput(_Wire):
    """HvCallGetNextChildPartition input, 16 bytes; previous child 0 starts the walk."""

    _fields_ = (("parent_partition_id", _u64), ("previous_child_partition_id", _u64))


class GetNextChildPartitionOutput(_Wire):
    """HvCallGetNextChildPartition output, 8 bytes; 0 ends the walk."""

    _fields_ = (("next_child_partition_id", _u64),)


# --- memory ---
class DepositMemoryInput(_Wire):
    """HvCallDepositMemory header, 8 bytes; u64 GPA page numbers follow as rep elements."""

    _fields_ = (("partition_id", _u64),)


class WithdrawMemoryInput(_Wire):
    """HvCallWithdrawMemory input, 16 bytes; u64 page numbers come back as rep output."""

    _fields_ = (("partition_id", _u64), ("proximity_domain_info", HvProximityDomainInfo))


class GetMemoryBalanceInput(_Wire):
    """HvCallGetMemoryBalance input, 16 bytes."""

    _fields_ = (("partition_id", _u64), ("proximity_domain_info", HvProximityDomainInfo))


class GetMemoryBalanceOutput(_Wire):
    """HvCallGetMemoryBalance output, 16 bytes."""

    _fields_ = (("pages_available", _u64), ("pages_in_use", _u64))


class MapGpaPagesInput(_Wire):
    """HvCallMapGpaPages header, 24 bytes (map flags u32 + pad, as Linux); u64 source page
    numbers follow as rep elements."""

    _fields_ = (
        ("target_partition_id", _u64),
        ("target_gpa_base", _u64),
        ("map_flags", _u32),
        ("padding", _u32),
    )


class UnmapGpaPagesInput(_Wire):
    """HvCallUnmapGpaPages input: 20 bytes of fields padded to 24 (blocks are 8-byte
    multiples, §1.1). The rep count is the number of pages; there are no rep elements."""

    _fields_ = (
        ("target_partition_id", _u64),
        ("target_gpa_base", _u64),
        ("unmap_flags", _u32),
        ("padding", _u32),
    )


class InstallInterceptInput(_Wire):
    """HvCallInstallIntercept input, 24 bytes."""

    _fields_ = (
        ("partition_id", _u64),
        ("access_type", _u32),
        ("intercept_type", _u32),
        ("intercept_parameter", _u64),
    )


# --- virtual processors and registers ---
class CreateVpInput(_Wire):
    """HvCallCreateVp input, 40 bytes."""

    _fields_ = (
        ("partition_id", _u64),
        ("vp_index", _u32),
        ("reserved", _u8 * 3),
        ("subnode_type", _u8),
        ("subnode_id", _u64),
        ("proximity_domain_info", HvProximityDomainInfo),
        ("flags", _u64),
    )


class DeleteVpInput(_Wire):
    """HvCallDeleteVp input, 16 bytes."""

    _fields_ = (("partition_id", _u64), ("vp_index", _u32), ("reserved", _u32))


class GetVpRegistersInput(_Wire):
    """HvCallGetVpRegisters header, 16 bytes; u32 register names follow as rep elements and
    16-byte :class:`HvRegisterValue` s come back."""

    _fields_ = (
        ("partition_id", _u64),
        ("vp_index", _u32),
        ("target_vtl", _u8),
        ("reserved", _u8 * 3),
    )


class SetVpRegistersInput(_Wire):
    """HvCallSetVpRegisters header, 16 bytes (same layout as GetVpRegisters); 32-byte
    :class:`SetVpRegistersElement` s follow."""

    _fields_ = (
        ("partition_id", _u64),
        ("vp_index", _u32),
        ("target_vtl", _u8),
        ("reserved", _u8 * 3),
    )


class HvRegisterValue(_Wire):
    """HV_REGISTER_VALUE, 16 bytes: a 128-bit value as two u64 halves (64-bit registers use
    ``low``); the rep output element of HvCallGetVpRegisters."""

    _fields_ = (("low", _u64), ("high", _u64))


class SetVpRegistersElement(_Wire):
    """HV_REGISTER_ASSOC, 32 bytes: register name, 12 reserved bytes, 16-byte value."""

    _fields_ = (
        ("name", _u32),
        ("reserved1", _u32),
        ("reserved2", _u64),
        ("value", HvRegisterValue),
    )


class TranslateVirtualAddressInput(_Wire):
    """HvCallTranslateVirtualAddress input, 32 bytes."""

    _fields_ = (
        ("partition_id", _u64),
        ("vp_index", _u32),
        ("padding", _u32),
        ("control_flags", _u64),
        ("gva_page", _u64),
    )


class TranslateVirtualAddressOutput(_Wire):
    """HvCallTranslateVirtualAddress output, 16 bytes."""

    _fields_ = (("translation_result", _u64), ("gpa_page", _u64))


# --- address spaces and IPIs ---
class FlushVirtualAddressSpaceInput(_Wire):
    """HvCallFlushVirtualAddressSpace input, 24 bytes."""

    _fields_ = (("address_space", _u64), ("flags", _u64), ("processor_mask", _u64))


class FlushVirtualAddressListInput(_Wire):
    """HvCallFlushVirtualAddressList header, 24 bytes; u64 GVA ranges follow as rep
    elements."""

    _fields_ = (("address_space", _u64), ("flags", _u64), ("processor_mask", _u64))


class SendSyntheticClusterIpiInput(_Wire):
    """HvCallSendSyntheticClusterIpi input, 16 bytes; vector 0x10..0xFF."""

    _fields_ = (
        ("vector", _u32),
        ("target_vtl", _u8),
        ("padding", _u8 * 3),
        ("processor_mask", _u64),
    )


# --- ports and connections ---
class CreatePortInput(_Wire):
    """HvCallCreatePort input, 56 bytes. The port belongs to ``port_partition`` (the
    receiver); ``connection_partition`` is the partition allowed to connect to it."""

    _fields_ = (
        ("port_partition", _u64),
        ("port_id", _u32),
        ("port_vtl", _u8),
        ("min_connection_vtl", _u8),
        ("reserved", _u16),
        ("connection_partition", _u64),
        ("port_info", HvPortInfo),
        ("proximity_domain_info", HvProximityDomainInfo),
    )


class ConnectPortInput(_Wire):
    """HvCallConnectPort input, 72 bytes. The connection belongs to
    ``connection_partition`` (the sender) and is bound to ``port_partition``/``port_id``."""

    _fields_ = (
        ("connection_partition", _u64),
        ("connection_id", _u32),
        ("connection_vtl", _u8),
        ("reserved1", _u8 * 3),
        ("port_partition", _u64),
        ("port_id", _u32),
        ("reserved2", _u32),
        ("connection_info", HvConnectionInfo),
        ("proximity_domain_info", HvProximityDomainInfo),
    )


class DeletePortInput(_Wire):
    """HvCallDeletePort input, 16 bytes."""

    _fields_ = (("port_partition", _u64), ("port_id", _u32), ("reserved", _u32))


class DisconnectPortInput(_Wire):
    """HvCallDisconnectPort input, 16 bytes; ``flags`` bit 0 is
    :data:`DISCONNECT_PORT_IS_DOORBELL` (Linux)."""

    _fields_ = (("connection_partition", _u64), ("connection_id", _u32), ("flags", _u32))


# --- precompiled codecs for the hot paths ---
#: PostMessage input header: connection id, reserved, message type, payload size (16 bytes;
#: the payload follows at offset 16).
POST_MESSAGE_HEADER = struct.Struct("<IIII")
#: SignalEvent input: connection id, flag number, reserved (8 bytes).
SIGNAL_EVENT = struct.Struct("<IHH")
#: A lone u64 partition id (Initialize/Finalize/DeletePartition input, GetPartitionId output).
PARTITION_ID = struct.Struct("<Q")
