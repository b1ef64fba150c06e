"""The vstor wire protocol (fact sheet §6.1): versions, operations, status codes and packets.

Every vstor packet is a little-endian, packed ``vstor_packet``: ``operation u32, flags u32,
status u32`` (12 bytes) followed by a 52-byte union (Win8 and later: 64 bytes in all; before
Win8 the SRB is 16 bytes shorter, 48 in all). This module holds, each in one place:

* ``VstorVersion``: the protocol versions (u16 ``major << 8 | minor``) and, derived from them,
  the request and sense sizes each implies;
* ``OPERATIONS``: the one table of operations (number, name, who sends it, the bytes of union a
  receiver needs); the host's dispatch and the test strategies are derived from it;
* ``NtStatus`` and ``SRB_STATUSES``: the NTSTATUS values and the SRB status table (value,
  name, the NTSTATUS a completion carries for it -- OpenVMM's mapping, §6.1 sequence step 7);
* the wire structures as ctypes ``LittleEndianStructure`` (the layout of record, checked by
  tests against §6.1) and the precompiled ``struct.Struct`` codecs the hot path uses;
* ``ScsiRequest`` (``vmscsi_request``), ``ChannelProperties`` and ``VstorPacket``, frozen
  values with ``pack``/``unpack``, and ``parse_packet``, the one entry point for bytes that came
  from the other side. It never reads a byte it has not checked is there and raises
  ``VstorProtocolError`` naming the operation, the field, what it found and what it expected.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, IntEnum, IntFlag
from types import MappingProxyType
from typing import Any, Self

__all__ = [
    "AUTOSENSE_VALID",
    "CDB_MAX_LENGTH",
    "DEFAULT_MAX_TRANSFER_BYTES",
    "OPERATIONS",
    "PACKET_HEADER_SIZE",
    "PACKET_SIZE_V1",
    "PACKET_SIZE_V2",
    "QUEUE_FROZEN",
    "REQUEST_COMPLETION_FLAG",
    "SCSI_INTERFACE_ID",
    "SCSI_REQUEST_SIZE_V1",
    "SCSI_REQUEST_SIZE_V2",
    "SENSE_AREA_SIZE",
    "SRB_STATUSES",
    "STORAGE_CHANNEL_SUPPORTS_MULTI_CHANNEL",
    "UNION_SIZE",
    "ChannelProperties",
    "ChannelPropertiesStruct",
    "DataDirection",
    "NtStatus",
    "Operation",
    "OperationSpec",
    "ProtocolVersionStruct",
    "ScsiRequest",
    "SenderRole",
    "SrbFlags",
    "SrbStatus",
    "SrbStatusSpec",
    "VmscsiRequestStruct",
    "VstorPacket",
    "VstorPacketHeaderStruct",
    "VstorProtocolError",
    "VstorVersion",
    "build_packet",
    "ntstatus_for_srb",
    "parse_packet",
]

#: ``vmbus.ScsiInterface`` GUID a storvsp offers (OpenVMM ``SCSI_INTERFACE_ID``, §5.9).
SCSI_INTERFACE_ID = "ba6163d9-04a1-4d29-b605-72e2ffb1dc7f"
#: ``operation, flags, status``: three u32 before the union (§6.1).
PACKET_HEADER_SIZE = 12
#: The union after the header is as large as its largest member, the Win8+ SRB (§6.1).
UNION_SIZE = 52
#: ``vmscsi_request`` sizes: Win8 and later 0x34, before Win8 (V1) 0x24 (§6.1).
SCSI_REQUEST_SIZE_V2 = 0x34
SCSI_REQUEST_SIZE_V1 = 0x24
#: Whole packets: 64 bytes for Win8 and later, 48 before (§6.1).
PACKET_SIZE_V2 = PACKET_HEADER_SIZE + SCSI_REQUEST_SIZE_V2
PACKET_SIZE_V1 = PACKET_HEADER_SIZE + SCSI_REQUEST_SIZE_V1
#: ``flags`` bit a guest sets on requests (§6.1).
REQUEST_COMPLETION_FLAG = 0x1
#: The CDB occupies at most 16 of the 20 bytes at SRB offset 16 (§6.1).
CDB_MAX_LENGTH = 16
#: Bytes at SRB offset 16 that carry the CDB in a request and the sense data in a completion.
SENSE_AREA_SIZE = 0x14
#: ``max_transfer_bytes`` OpenVMM answers to QUERY_PROPERTIES (256 KiB, §6.1).
DEFAULT_MAX_TRANSFER_BYTES = 0x40000
#: ``vmstorage_channel_properties.flags`` bit: sub-channels may be created (§6.1).
STORAGE_CHANNEL_SUPPORTS_MULTI_CHANNEL = 0x1


class VstorProtocolError(Exception):
    """A vstor packet that is malformed or breaks the protocol: the channel must be closed.

    ``operation`` is the operation number when it could be read (``None`` otherwise); ``field``
    names the offending field (``"size"`` for a short packet, ``"operation"`` for an unknown or
    misdirected one); ``found`` and ``expected`` say what was there and what should have been.
    """

    def __init__(self, operation: int | None, field: str, found: object, expected: object):
        self.operation = operation
        self.field = field
        self.found = found
        self.expected = expected
        super().__init__(
            f"{_operation_name(operation)}.{field}: found {found}, expected {expected}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.operation, self.field, self.found, self.expected))


class VstorVersion(IntEnum):
    """Protocol versions, u16 ``major << 8 | minor`` (§6.1), named as Linux names them."""

    WIN6 = 0x0200  # 2.0
    WIN7 = 0x0402  # 4.2
    WIN8 = 0x0501  # 5.1
    WIN8_1 = 0x0600  # 6.0 (OpenVMM "Blue")
    WIN10 = 0x0602  # 6.2 (OpenVMM "Threshold")

    @property
    def request_size(self) -> int:
        """The ``vmscsi_request`` size this version implies: 0x34 from WIN8, else 0x24."""
        return SCSI_REQUEST_SIZE_V2 if self >= VstorVersion.WIN8 else SCSI_REQUEST_SIZE_V1

    @property
    def sense_buffer_size(self) -> int:
        """Sense bytes a completion may carry: 0x14 from WIN8, 0x12 before (§6.1)."""
        return SENSE_AREA_SIZE if self >= VstorVersion.WIN8 else 0x12


class Operation(IntEnum):
    """``vstor_packet.operation`` (u32 @0), §6.1."""

    COMPLETE_IO = 1
    REMOVE_DEVICE = 2
    EXECUTE_SRB = 3
    RESET_LUN = 4
    RESET_ADAPTER = 5
    RESET_BUS = 6
    BEGIN_INITIALIZATION = 7
    END_INITIALIZATION = 8
    QUERY_PROTOCOL_VERSION = 9
    QUERY_PROPERTIES = 10
    ENUMERATE_BUS = 11
    FCHBA_DATA = 12
    CREATE_SUB_CHANNELS = 13
    EVENT_NOTIFICATION = 14


class SenderRole(Enum):
    """Who sends an operation: the guest (storvsc) as a request, or the host (storvsp)."""

    GUEST = "guest->host"
    HOST = "host->guest"


@dataclass(slots=True, frozen=True)
class OperationSpec:
    """One row of ``OPERATIONS``.

    ``body_size`` is how many bytes of the union a receiver must find after the header
    (``EXECUTE_SRB``: the pre-Win8 SRB; ``QUERY_PROTOCOL_VERSION``: the version u16 and its
    reserved u16; ``CREATE_SUB_CHANNELS``: the count u16). ``host_accepts`` says whether the
    host's state machine handles it: OpenVMM treats every other operation from a guest as
    corruption (§6.1, [OVMM-stor]).
    """

    operation: Operation
    sender: SenderRole
    body_size: int
    host_accepts: bool


def _op(operation: Operation, sender: SenderRole, body: int, accepts: bool) -> OperationSpec:
    return OperationSpec(operation, sender, body, accepts)


_G, _H = SenderRole.GUEST, SenderRole.HOST

#: The vstor operations (§6.1): everything else here and in the host/guest state machines is
#: derived from this table.
OPERATIONS: Mapping[Operation, OperationSpec] = MappingProxyType(
    {
        spec.operation: spec
        for spec in (
            _op(Operation.COMPLETE_IO, _H, 0, False),
            _op(Operation.REMOVE_DEVICE, _H, 0, False),
            _op(Operation.EXECUTE_SRB, _G, SCSI_REQUEST_SIZE_V1, True),
            _op(Operation.RESET_LUN, _G, 0, True),
            _op(Operation.RESET_ADAPTER, _G, 0, True),
            _op(Operation.RESET_BUS, _G, 0, True),
            _op(Operation.BEGIN_INITIALIZATION, _G, 0, True),
            _op(Operation.END_INITIALIZATION, _G, 0, True),
            _op(Operation.QUERY_PROTOCOL_VERSION, _G, 4, True),
            _op(Operation.QUERY_PROPERTIES, _G, 0, True),
            _op(Operation.ENUMERATE_BUS, _H, 0, False),
            _op(Operation.FCHBA_DATA, _G, 0, False),
            _op(Operation.CREATE_SUB_CHANNELS, _G, 2, True),
            _op(Operation.EVENT_NOTIFICATION, _H, 0, False),
        )
    }
)


def _operation_name(operation: int | None) -> str:
    if operation is None:
        return "vstor_packet"
    try:
        return Operation(operation).name
    except ValueError:
        return f"operation {operation:#x}"


class NtStatus(IntEnum):
    """``vstor_packet.status`` values (u32) the host uses (§6.1, OpenVMM's set)."""

    SUCCESS = 0x0000_0000
    BUFFER_OVERFLOW = 0x8000_0005
    DEVICE_BUSY = 0x8000_0011
    UNSUCCESSFUL = 0xC000_0001
    INVALID_PARAMETER = 0xC000_000D
    INVALID_DEVICE_REQUEST = 0xC000_0010
    REVISION_MISMATCH = 0xC000_0059
    DEVICE_NOT_CONNECTED = 0xC000_009D
    IO_TIMEOUT = 0xC000_00B5
    DEVICE_DOES_NOT_EXIST = 0xC000_00C0
    CANCELLED = 0xC000_0120
    INVALID_DEVICE_STATE = 0xC000_0184
    IO_DEVICE_ERROR = 0xC000_0185


class SrbStatus(IntEnum):
    """``vmscsi_request.srb_status`` bits 5:0 (§6.1 lists the common ones; the rest are the
    Windows ``srb.h`` values OpenVMM's ``scsi_defs::srb`` also carries). Bits 7/6 are the
    ``AUTOSENSE_VALID``/``QUEUE_FROZEN`` flags, kept apart as module constants.
    """

    PENDING = 0x00
    SUCCESS = 0x01
    ABORTED = 0x02
    ABORT_FAILED = 0x03
    ERROR = 0x04
    BUSY = 0x05
    INVALID_REQUEST = 0x06
    INVALID_PATH_ID = 0x07
    NO_DEVICE = 0x08
    TIMEOUT = 0x09
    SELECTION_TIMEOUT = 0x0A
    COMMAND_TIMEOUT = 0x0B
    MESSAGE_REJECTED = 0x0D
    BUS_RESET = 0x0E
    PARITY_ERROR = 0x0F
    REQUEST_SENSE_FAILED = 0x10
    NO_HBA = 0x11
    DATA_OVERRUN = 0x12
    UNEXPECTED_BUS_FREE = 0x13
    PHASE_SEQUENCE_FAILURE = 0x14
    BAD_SRB_BLOCK_LENGTH = 0x15
    REQUEST_FLUSHED = 0x16
    INVALID_LUN = 0x20
    INVALID_TARGET_ID = 0x21
    BAD_FUNCTION = 0x22
    ERROR_RECOVERY = 0x23
    NOT_POWERED = 0x24
    LINK_DOWN = 0x25
    INTERNAL_ERROR = 0x30


#: ``srb_status`` flag bits (§6.1): sense data follows / the LU queue is frozen.
AUTOSENSE_VALID = 0x80
QUEUE_FROZEN = 0x40
_SRB_STATUS_MASK = 0x3F


@dataclass(slots=True, frozen=True)
class SrbStatusSpec:
    """One row of ``SRB_STATUSES``: an SRB status and the NTSTATUS its completion carries."""

    srb_status: SrbStatus
    ntstatus: NtStatus


def _srb(status: SrbStatus, nt: NtStatus) -> SrbStatusSpec:
    return SrbStatusSpec(status, nt)


_S, _N = SrbStatus, NtStatus

#: The SRB status table: each status and the NTSTATUS a COMPLETE_IO carries for it
#: (OpenVMM ``convert_srb_status_to_nt_status``; §6.1 sequence step 7). Statuses not listed
#: map to IO_DEVICE_ERROR, as there.
SRB_STATUSES: Mapping[SrbStatus, SrbStatusSpec] = MappingProxyType(
    {
        spec.srb_status: spec
        for spec in (
            _srb(_S.SUCCESS, _N.SUCCESS),
            _srb(_S.BUSY, _N.DEVICE_BUSY),
            _srb(_S.INVALID_LUN, _N.DEVICE_DOES_NOT_EXIST),
            _srb(_S.INVALID_TARGET_ID, _N.DEVICE_DOES_NOT_EXIST),
            _srb(_S.NO_DEVICE, _N.DEVICE_DOES_NOT_EXIST),
            _srb(_S.NO_HBA, _N.DEVICE_DOES_NOT_EXIST),
            _srb(_S.COMMAND_TIMEOUT, _N.IO_TIMEOUT),
            _srb(_S.TIMEOUT, _N.IO_TIMEOUT),
            _srb(_S.SELECTION_TIMEOUT, _N.DEVICE_NOT_CONNECTED),
            _srb(_S.BAD_FUNCTION, _N.INVALID_DEVICE_REQUEST),
            _srb(_S.BAD_SRB_BLOCK_LENGTH, _N.INVALID_DEVICE_REQUEST),
            _srb(_S.DATA_OVERRUN, _N.BUFFER_OVERFLOW),
            _srb(_S.REQUEST_FLUSHED, _N.UNSUCCESSFUL),
            _srb(_S.ABORTED, _N.CANCELLED),
        )
    }
)


_NTSTATUS_BY_SRB = {int(srb): spec.ntstatus for srb, spec in SRB_STATUSES.items()}


def ntstatus_for_srb(srb_status: int) -> NtStatus:
    """The NTSTATUS for an ``srb_status`` byte (flag bits ignored), from ``SRB_STATUSES``."""
    return _NTSTATUS_BY_SRB.get(srb_status & _SRB_STATUS_MASK, NtStatus.IO_DEVICE_ERROR)


class SrbFlags(IntFlag):
    """``vmscsi_request.srb_flags`` (u32 @40, Win8+), §6.1."""

    QUEUE_ACTION_ENABLE = 0x002
    DISABLE_DISCONNECT = 0x004
    DISABLE_SYNCH_TRANSFER = 0x008
    BYPASS_FROZEN_QUEUE = 0x010
    DISABLE_AUTOSENSE = 0x020
    DATA_IN = 0x040
    DATA_OUT = 0x080
    NO_QUEUE_FREEZE = 0x100
    ADAPTER_CACHE_ENABLE = 0x200
    FREE_SENSE_BUFFER = 0x400


class DataDirection(IntEnum):
    """``vmscsi_request.data_in`` (u8 @10), §6.1: which way the data buffer moves."""

    WRITE = 0  # data-out: guest memory -> device
    READ = 1  # data-in: device -> guest memory
    UNKNOWN = 2  # no data


# --- the layouts of record (ctypes) ---------------------------------------------------------


class VstorPacketHeaderStruct(ctypes.LittleEndianStructure):
    """``operation u32 @0, flags u32 @4, status u32 @8`` (§6.1)."""

    _pack_ = 1
    _layout_ = "ms"
    _fields_ = (
        ("operation", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("status", ctypes.c_uint32),
    )


class VmscsiRequestStruct(ctypes.LittleEndianStructure):
    """``vmscsi_request``, Win8+ form (0x34 bytes); the V1 form is its first 0x24 (§6.1)."""

    _pack_ = 1
    _layout_ = "ms"
    _fields_ = (
        ("length", ctypes.c_uint16),
        ("srb_status", ctypes.c_uint8),
        ("scsi_status", ctypes.c_uint8),
        ("port_number", ctypes.c_uint8),
        ("path_id", ctypes.c_uint8),
        ("target_id", ctypes.c_uint8),
        ("lun", ctypes.c_uint8),
        ("cdb_length", ctypes.c_uint8),
        ("sense_info_length", ctypes.c_uint8),
        ("data_in", ctypes.c_uint8),
        ("properties", ctypes.c_uint8),
        ("data_transfer_length", ctypes.c_uint32),
        ("cdb", ctypes.c_uint8 * SENSE_AREA_SIZE),
        ("reserve", ctypes.c_uint16),
        ("queue_tag", ctypes.c_uint8),
        ("queue_action", ctypes.c_uint8),
        ("srb_flags", ctypes.c_uint32),
        ("time_out_value", ctypes.c_uint32),
        ("queue_sort_key", ctypes.c_uint32),
    )


class ChannelPropertiesStruct(ctypes.LittleEndianStructure):
    """``vmstorage_channel_properties`` (24 bytes), §6.1."""

    _pack_ = 1
    _layout_ = "ms"
    _fields_ = (
        ("reserved", ctypes.c_uint32),
        ("max_channel_count", ctypes.c_uint16),
        ("reserved2", ctypes.c_uint16),
        ("flags", ctypes.c_uint32),
        ("max_transfer_bytes", ctypes.c_uint32),
        ("reserved3", ctypes.c_uint64),
    )


class ProtocolVersionStruct(ctypes.LittleEndianStructure):
    """``vmstorage_protocol_version``: ``major_minor u16, revision u16 = 0`` (§6.1)."""

    _pack_ = 1
    _layout_ = "ms"
    _fields_ = (("major_minor", ctypes.c_uint16), ("revision", ctypes.c_uint16))


# --- codecs (struct; the hot path) -----------------------------------------------------------

_HEADER = struct.Struct("<III")
_REQUEST = struct.Struct("<HBBBBBBBBBBI20sHBBIII")
_PACKET = struct.Struct("<III" + _REQUEST.format[1:])
_VERSION = struct.Struct("<HH")
_PROPERTIES = struct.Struct("<IHHIIQ")
_U16 = struct.Struct("<H")
_ZEROS = bytes(UNION_SIZE)


@dataclass(slots=True, frozen=True)
class ScsiRequest:
    """``vmscsi_request`` (§6.1) as a value. ``cdb_area`` is the 20 bytes at offset 16: the CDB
    in a request, the sense data in a completion. ``pack(size)`` gives the 0x34-byte form or its
    0x24-byte V1 prefix; ``unpack`` reads either (a V1 request has zero Win8 fields).
    """

    length: int = SCSI_REQUEST_SIZE_V2
    srb_status: int = 0
    scsi_status: int = 0
    port_number: int = 0
    path_id: int = 0
    target_id: int = 0
    lun: int = 0
    cdb_length: int = 0
    sense_info_length: int = 0
    data_in: int = DataDirection.UNKNOWN
    properties: int = 0
    data_transfer_length: int = 0
    cdb_area: bytes = bytes(SENSE_AREA_SIZE)
    reserve: int = 0
    queue_tag: int = 0
    queue_action: int = 0
    srb_flags: int = 0
    time_out_value: int = 0
    queue_sort_key: int = 0

    @property
    def cdb(self) -> bytes:
        """The CDB: the first ``cdb_length`` bytes of the area, at most 16."""
        return self.cdb_area[: min(self.cdb_length, CDB_MAX_LENGTH)]

    def pack(self, size: int = SCSI_REQUEST_SIZE_V2) -> bytes:
        """The request on the wire, ``size`` (0x24 or 0x34) bytes."""
        if size not in (SCSI_REQUEST_SIZE_V1, SCSI_REQUEST_SIZE_V2):
            raise ValueError(f"size: found {size}, expected 0x24 or 0x34")
        return _REQUEST.pack(
            self.length, self.srb_status, self.scsi_status, self.port_number, self.path_id,
            self.target_id, self.lun, self.cdb_length, self.sense_info_length, self.data_in,
            self.properties, self.data_transfer_length, bytes(self.cdb_area), self.reserve,
            self.queue_tag, self.queue_action, self.srb_flags, self.time_out_value,
            self.queue_sort_key,
        )[:size]  # fmt: skip

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> Self:
        """Decode at least 0x24 bytes (zero-extended to 0x34); raise ``VstorProtocolError``."""
        if len(data) < SCSI_REQUEST_SIZE_V1:
            raise VstorProtocolError(
                Operation.EXECUTE_SRB, "size", f"{len(data)} bytes of vmscsi_request",
                f"at least {SCSI_REQUEST_SIZE_V1}",
            )  # fmt: skip
        if len(data) < SCSI_REQUEST_SIZE_V2:
            data = bytes(data) + bytes(SCSI_REQUEST_SIZE_V2 - len(data))
        return cls(*_REQUEST.unpack_from(data))


@dataclass(slots=True, frozen=True)
class ChannelProperties:
    """``vmstorage_channel_properties`` (§6.1) as a value."""

    max_channel_count: int = 0
    flags: int = 0
    max_transfer_bytes: int = DEFAULT_MAX_TRANSFER_BYTES

    @property
    def multi_channel(self) -> bool:
        """Whether the host lets the guest create sub-channels."""
        return bool(self.flags & STORAGE_CHANNEL_SUPPORTS_MULTI_CHANNEL)

    def pack(self) -> bytes:
        """The 24 bytes of the union member."""
        return _PROPERTIES.pack(
            0, self.max_channel_count, 0, self.flags, self.max_transfer_bytes, 0
        )

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> Self:
        """Decode 24 bytes (reserved fields ignored); raise ``VstorProtocolError`` if short."""
        if len(data) < _PROPERTIES.size:
            raise VstorProtocolError(
                Operation.QUERY_PROPERTIES, "size", f"{len(data)} bytes of channel properties",
                f"at least {_PROPERTIES.size}",
            )  # fmt: skip
        _, count, _, flags, max_transfer, _ = _PROPERTIES.unpack_from(data)
        return cls(count, flags, max_transfer)


@dataclass(slots=True, frozen=True)
class VstorPacket:
    """A parsed ``vstor_packet``: header fields and the union bytes that came with it.

    ``body`` holds at most 52 bytes (anything past the union is ignored, as OpenVMM does);
    ``request_size`` is ``len(body)``, the size a reply to this packet echoes (§6.1 step 2:
    OpenVMM pads or truncates its answer to the size of the request).
    """

    operation: int
    flags: int
    status: int
    body: bytes

    @property
    def request_size(self) -> int:
        """Union bytes received (0..52): a completion of this packet has that many."""
        return len(self.body)

    @property
    def version(self) -> int:
        """``QUERY_PROTOCOL_VERSION``: the ``major_minor`` u16."""
        return int(_U16.unpack_from(self.body)[0])

    @property
    def sub_channel_count(self) -> int:
        """``CREATE_SUB_CHANNELS``: the count u16 at packet offset 12."""
        return int(_U16.unpack_from(self.body)[0])

    @property
    def srb(self) -> ScsiRequest:
        """``EXECUTE_SRB``/``COMPLETE_IO`` of an SRB: the ``vmscsi_request``."""
        return ScsiRequest.unpack(self.body)

    def pack(self, size: int | None = None) -> bytes:
        """The packet, its union zero-padded or truncated to ``size`` bytes (default: as is)."""
        return build_packet(self.operation, self.status, self.body, size, flags=self.flags)


def build_packet(
    operation: int,
    status: int,
    body: bytes | bytearray | memoryview = b"",
    size: int | None = None,
    *,
    flags: int = 0,
) -> bytes:
    """A vstor packet: header, then ``body`` zero-padded or truncated to ``size`` union bytes.

    ``size`` defaults to ``len(body)``; it may not exceed the 52-byte union.
    """
    if size is None:
        size = len(body)
    if not 0 <= size <= UNION_SIZE:
        raise ValueError(f"size: found {size}, expected 0..{UNION_SIZE} union bytes")
    body = bytes(body[:size])
    return _HEADER.pack(operation, flags, status) + body + _ZEROS[: size - len(body)]


def parse_packet(
    data: bytes | bytearray | memoryview, *, sender: SenderRole = SenderRole.GUEST
) -> VstorPacket:
    """Decode a vstor packet that ``sender`` sent; raise ``VstorProtocolError`` if it is short,
    names an unknown operation, an operation ``sender`` never sends, or lacks the union bytes
    its operation needs (``OPERATIONS[op].body_size``). For a guest's packets the host's state
    machine further requires ``host_accepts``; a host's COMPLETE_IO needs no body here.
    """
    if len(data) < PACKET_HEADER_SIZE:
        raise VstorProtocolError(
            None, "size", f"{len(data)} bytes", f"at least {PACKET_HEADER_SIZE} (the header)"
        )
    operation, flags, status = _HEADER.unpack_from(data)
    spec = OPERATIONS.get(operation)
    if spec is None:
        raise VstorProtocolError(operation, "operation", operation, "one of 1..14 (§6.1)")
    if spec.sender is not sender:
        raise VstorProtocolError(
            operation, "operation", f"sent by the {sender.name.lower()}",
            f"only sent by the {spec.sender.name.lower()}",
        )  # fmt: skip
    body = bytes(data[PACKET_HEADER_SIZE : PACKET_HEADER_SIZE + UNION_SIZE])
    if len(body) < spec.body_size:
        raise VstorProtocolError(
            operation, "size", f"{PACKET_HEADER_SIZE + len(body)} bytes",
            f"at least {PACKET_HEADER_SIZE + spec.body_size}",
        )  # fmt: skip
    return VstorPacket(Operation(operation), flags, status, body)
