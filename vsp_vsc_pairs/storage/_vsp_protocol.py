"""The host (storvsp) side of the vstor protocol for one storage device, sans-IO.

``StorvspProtocol`` is a synchronous state machine in the manner of OpenVMM's storvsp worker
(§6.1): the VMBus layer hands it each packet payload a guest sent, with the request's data
buffer (the memoryviews of the GPA-direct range, already validated against guest memory), and
sends back the bytes it returns as a ``VM_PKT_COMP`` with the request's transaction id. It owns
no ring, thread or memory.

Sequence (§6.1): BEGIN_INITIALIZATION, then QUERY_PROTOCOL_VERSION until a version is
accepted, QUERY_PROPERTIES, optionally CREATE_SUB_CHANNELS, END_INITIALIZATION; then
EXECUTE_SRB, each answered by a COMPLETE_IO carrying the SRB's outcome.

Version choice: the default accepted set is **2.0, 4.2, 5.1 and 6.0**, OpenVMM's (§6.1,
§8.14). 6.2 (WIN10) is answered REVISION_MISMATCH as OpenVMM answers it, so a Linux guest
falls back to 6.0. The sheet names no behaviour that 6.2 adds over 6.0, so accepting it would
be a promise without content; pass ``versions=`` to accept it (as a Windows host does).

What the guest may do wrong, and what follows:

* a malformed packet (too short for its operation, an unknown operation, one only a host
  sends, a data transfer length larger than the GPA range supplied) raises
  ``VstorProtocolError``: the VMBus layer closes the channel (OpenVMM does the same);
* a request out of order is completed with INVALID_DEVICE_STATE and changes nothing;
* a bad SRB field or CDB ends the SRB with CHECK CONDITION and exact sense data, a missing
  LUN with SRB status INVALID_LUN (as OpenVMM), and the channel stays open.

A completion echoes the request's size (union bytes, padded or truncated), as OpenVMM does
because Windows guests check it. An SRB completion echoes the request's addressing fields and
sets ``length`` (the negotiated SRB size), ``srb_status`` (with AUTOSENSE_VALID when sense
follows), ``scsi_status``, ``sense_info_length`` (18 when sense follows, else 0),
``data_transfer_length`` (bytes moved) and the 20-byte area (sense, zero-padded).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import Any, TypeAlias

from ._buffer import BufferLike, DataBuffer
from ._protocol import (
    _PACKET,
    _REQUEST,
    AUTOSENSE_VALID,
    CDB_MAX_LENGTH,
    DEFAULT_MAX_TRANSFER_BYTES,
    OPERATIONS,
    PACKET_HEADER_SIZE,
    SCSI_REQUEST_SIZE_V1,
    SCSI_REQUEST_SIZE_V2,
    SENSE_AREA_SIZE,
    STORAGE_CHANNEL_SUPPORTS_MULTI_CHANNEL,
    UNION_SIZE,
    ChannelProperties,
    DataDirection,
    NtStatus,
    Operation,
    SrbStatus,
    VstorPacket,
    VstorProtocolError,
    VstorVersion,
    build_packet,
    ntstatus_for_srb,
    parse_packet,
)
from ._scsi import COMMANDS, ScsiDisk, ScsiOp, ScsiResult, check_condition, report_luns
from ._sense import INVALID_FIELD_IN_CDB, ScsiStatus

__all__ = ["SERVER_VERSIONS", "DiskAddress", "StorvspProtocol", "VspState"]

#: The versions the host accepts by default: OpenVMM's set (§6.1); see the module docstring.
SERVER_VERSIONS: tuple[VstorVersion, ...] = (
    VstorVersion.WIN8_1,
    VstorVersion.WIN8,
    VstorVersion.WIN7,
    VstorVersion.WIN6,
)

#: ``(path_id, target_id, lun)``: where a disk sits on the synthetic SCSI controller.
DiskAddress: TypeAlias = tuple[int, int, int]

_EXECUTE_SRB = int(Operation.EXECUTE_SRB)
_COMPLETE_IO = int(Operation.COMPLETE_IO)
_FIELDS = len(_REQUEST.unpack(bytes(SCSI_REQUEST_SIZE_V2)))
_ZERO_AREA = bytes(SENSE_AREA_SIZE)
_INQUIRY = int(ScsiOp.INQUIRY)
_REPORT_LUNS = int(ScsiOp.REPORT_LUNS)
_INVALID_LUN = ScsiResult(ScsiStatus.CHECK_CONDITION, SrbStatus.INVALID_LUN)
_GUEST_OPERATIONS = frozenset(op for op, spec in OPERATIONS.items() if spec.host_accepts)
_DIRECTIONS = {int(op): int(spec.direction) for op, spec in COMMANDS.items()}
_NO_DATA = int(DataDirection.UNKNOWN)
# Standard INQUIRY data for an address with no disk: qualifier 011b, type 1Fh, ids blank.
_NO_LUN_INQUIRY = bytes((0x7F, 0x00, 0x06, 0x12, 31, 0x00, 0x00, 0x02)) + bytes(28)


class VspState(Enum):
    """Where the host is in the initialization sequence (§6.1 step 3)."""

    BEGIN = "waiting for BEGIN_INITIALIZATION"
    QUERY_VERSION = "waiting for QUERY_PROTOCOL_VERSION"
    QUERY_PROPERTIES = "waiting for QUERY_PROPERTIES"
    END_INITIALIZATION = "waiting for END_INITIALIZATION"
    READY = "ready for I/O"


_READY = VspState.READY


class StorvspProtocol:
    """The host state machine of one storvsp device (its primary channel and sub-channels).

    ``disks`` maps ``(path_id, target_id, lun)`` to a ``ScsiDisk``; a single disk sits at
    ``(0, 0, 0)``. ``versions`` are the versions accepted; ``max_transfer_bytes`` is reported
    by QUERY_PROPERTIES and enforced on every SRB; ``max_sub_channels`` is the sub-channel
    count offered from WIN8, and ``create_sub_channels(n)`` (default: accept) is asked to
    create ``n`` of them and returns whether it did.
    """

    __slots__ = (
        "_create_sub_channels",
        "_disks",
        "_luns",
        "_max_sub_channels",
        "_max_transfer_bytes",
        "_state",
        "_sub_channel_count",
        "_version",
        "_versions",
    )

    def __init__(
        self,
        disks: Mapping[DiskAddress, ScsiDisk] | ScsiDisk,
        *,
        versions: Iterable[VstorVersion] = SERVER_VERSIONS,
        max_transfer_bytes: int = DEFAULT_MAX_TRANSFER_BYTES,
        max_sub_channels: int = 0,
        create_sub_channels: Callable[[int], bool] | None = None,
    ) -> None:
        if isinstance(disks, ScsiDisk):
            disks = {(0, 0, 0): disks}
        for address in disks:
            if len(address) != 3 or not all(0 <= part <= 0xFF for part in address):
                raise ValueError(f"disk address: found {address!r}, expected three u8 values")
        self._disks: dict[DiskAddress, ScsiDisk] = dict(disks)
        self._luns: dict[tuple[int, int], tuple[int, ...]] = {}
        for path, target, lun in sorted(self._disks):
            self._luns[path, target] = (*self._luns.get((path, target), ()), lun)
        self._versions = frozenset(VstorVersion(v) for v in versions)
        if not self._versions:
            raise ValueError("versions: found none, expected at least one VstorVersion")
        if not 512 <= max_transfer_bytes <= 0xFFFF_FFFF:
            raise ValueError(f"max_transfer_bytes: found {max_transfer_bytes}, expected a u32")
        if not 0 <= max_sub_channels <= 0xFFFF:
            raise ValueError(f"max_sub_channels: found {max_sub_channels}, expected a u16")
        self._max_transfer_bytes = max_transfer_bytes
        self._max_sub_channels = max_sub_channels
        self._create_sub_channels = create_sub_channels
        self._state = VspState.BEGIN
        self._version: VstorVersion | None = None
        self._sub_channel_count = 0

    # -- observation ------------------------------------------------------------------------

    @property
    def state(self) -> VspState:
        """The initialization state."""
        return self._state

    @property
    def version(self) -> VstorVersion | None:
        """The negotiated version, once QUERY_PROTOCOL_VERSION succeeded."""
        return self._version

    @property
    def sub_channel_count(self) -> int:
        """Sub-channels the guest asked for and ``create_sub_channels`` accepted."""
        return self._sub_channel_count

    @property
    def disks(self) -> Mapping[DiskAddress, ScsiDisk]:
        """The disks by address."""
        return dict(self._disks)

    def properties(self) -> ChannelProperties:
        """What QUERY_PROPERTIES answers for the negotiated version: multi-channel (with the
        sub-channel maximum) from WIN8, as OpenVMM; ``max_transfer_bytes``."""
        multi = self._version is not None and self._version >= VstorVersion.WIN8
        return ChannelProperties(
            self._max_sub_channels if multi else 0,
            STORAGE_CHANNEL_SUPPORTS_MULTI_CHANNEL if multi else 0,
            self._max_transfer_bytes,
        )

    # -- input ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to BEGIN, as when the primary channel closes."""
        self._state = VspState.BEGIN
        self._version = None
        self._sub_channel_count = 0

    def receive(self, payload: BufferLike, data: DataBuffer | Iterable[BufferLike] = ()) -> bytes:
        """Handle one guest packet (its payload, after the VMBus descriptor) with its data
        buffer; return the completion payload. Raises ``VstorProtocolError`` only."""
        length = len(payload)
        if (
            self._state is _READY
            and length >= PACKET_HEADER_SIZE + SCSI_REQUEST_SIZE_V1
            and payload[0] == _EXECUTE_SRB
            and not any(payload[1:4])
        ):  # the hot path: the SRB is decoded straight from the payload
            size = min(length - PACKET_HEADER_SIZE, UNION_SIZE)
            return self._execute(payload, PACKET_HEADER_SIZE, size, data)
        return self.handle(parse_packet(payload), data)

    def handle(self, packet: VstorPacket, data: DataBuffer | Iterable[BufferLike] = ()) -> bytes:
        """Handle a parsed guest packet; return the completion payload."""
        operation = packet.operation
        state = self._state
        if operation == Operation.EXECUTE_SRB:
            if state is not VspState.READY:
                return self._refuse(packet)
            return self._execute(packet.body, 0, packet.request_size, data)
        if operation in (Operation.RESET_LUN, Operation.RESET_ADAPTER, Operation.RESET_BUS):
            if state is not VspState.READY:
                return self._refuse(packet)
            return build_packet(_COMPLETE_IO, NtStatus.SUCCESS, b"", packet.request_size)
        if operation == Operation.BEGIN_INITIALIZATION and state is VspState.BEGIN:
            self._state = VspState.QUERY_VERSION
            return build_packet(_COMPLETE_IO, NtStatus.SUCCESS, b"", packet.request_size)
        if operation == Operation.QUERY_PROTOCOL_VERSION and state is VspState.QUERY_VERSION:
            return self._query_version(packet)
        if operation == Operation.QUERY_PROPERTIES and state is VspState.QUERY_PROPERTIES:
            self._state = VspState.END_INITIALIZATION
            body = self.properties().pack()
            return build_packet(_COMPLETE_IO, NtStatus.SUCCESS, body, packet.request_size)
        if operation == Operation.CREATE_SUB_CHANNELS:
            return self._create(packet)
        if operation == Operation.END_INITIALIZATION and state is VspState.END_INITIALIZATION:
            self._state = VspState.READY
            return build_packet(_COMPLETE_IO, NtStatus.SUCCESS, b"", packet.request_size)
        if operation not in _GUEST_OPERATIONS:
            raise VstorProtocolError(
                operation, "operation", "not handled by a storvsp", "a guest request"
            )
        return self._refuse(packet)

    def rescan_packet(self) -> bytes | None:
        """The ENUMERATE_BUS packet that tells the guest to rescan after disks changed (sent
        in-band, trans_id 0, no completion); ``None`` before READY or below WIN7 (§6.1)."""
        if self._state is not VspState.READY or self._version is None:
            return None
        if self._version < VstorVersion.WIN7:
            return None
        return build_packet(
            Operation.ENUMERATE_BUS, NtStatus.SUCCESS, b"", self._version.request_size
        )

    # -- initialization ---------------------------------------------------------------------

    def _refuse(self, packet: VstorPacket) -> bytes:
        return build_packet(_COMPLETE_IO, NtStatus.INVALID_DEVICE_STATE, b"", packet.request_size)

    def _query_version(self, packet: VstorPacket) -> bytes:
        requested = packet.version
        body = packet.body[:2] + b"\0\0"  # echo major_minor, revision 0
        if requested in self._versions:
            self._version = VstorVersion(requested)
            self._state = VspState.QUERY_PROPERTIES
            return build_packet(_COMPLETE_IO, NtStatus.SUCCESS, body, packet.request_size)
        return build_packet(_COMPLETE_IO, NtStatus.REVISION_MISMATCH, body, packet.request_size)

    def _create(self, packet: VstorPacket) -> bytes:
        state = self._state
        allowed = (
            state is VspState.READY
            or (state is VspState.END_INITIALIZATION and not self._sub_channel_count)
        ) and self.properties().multi_channel
        if not allowed:
            return self._refuse(packet)
        count = packet.sub_channel_count
        accepted = 0 < count <= self._max_sub_channels and (
            self._create_sub_channels is None or bool(self._create_sub_channels(count))
        )
        if not accepted:
            return build_packet(_COMPLETE_IO, NtStatus.INVALID_PARAMETER, b"", packet.request_size)
        self._sub_channel_count = count
        return build_packet(_COMPLETE_IO, NtStatus.SUCCESS, b"", packet.request_size)

    # -- I/O --------------------------------------------------------------------------------

    def _execute(
        self,
        source: BufferLike,
        offset: int,
        request_size: int,
        data: DataBuffer | Iterable[BufferLike],
    ) -> bytes:
        """Run the SRB of ``request_size`` (36..52) bytes at ``source[offset:]``."""
        if request_size == SCSI_REQUEST_SIZE_V2:
            fields = list(_REQUEST.unpack_from(source, offset))
        else:  # a shorter SRB reads as zero-extended (OpenVMM does the same)
            body = bytes(source[offset : offset + request_size])
            fields = list(_REQUEST.unpack(body.ljust(SCSI_REQUEST_SIZE_V2, b"\0")))
        # fields: 0 length, 1 srb_status, 2 scsi_status, 3 port, 4 path, 5 target, 6 lun,
        # 7 cdb_length, 8 sense_info_length, 9 data_in, 10 properties, 11 transfer length,
        # 12 cdb area, 13.. Win8 extension.
        buffer = DataBuffer.of(data)
        transfer_length = fields[11]
        if transfer_length > len(buffer):
            raise VstorProtocolError(
                _EXECUTE_SRB, "data_transfer_length", f"{transfer_length} bytes",
                f"at most the {len(buffer)} bytes of the GPA range supplied",
            )  # fmt: skip
        result = self._run(fields, buffer, transfer_length)
        srb_status = int(result.srb_status)
        sense = result.sense
        if sense is not None:
            sense_bytes = sense.pack()
            fields[12] = sense_bytes + _ZERO_AREA[len(sense_bytes) :]
            fields[8] = len(sense_bytes)
            srb_status |= AUTOSENSE_VALID
        else:
            fields[12] = _ZERO_AREA
            fields[8] = 0
        version = self._version
        fields[0] = version.request_size if version is not None else request_size
        fields[1] = srb_status
        fields[2] = int(result.scsi_status)
        fields[11] = result.transferred
        status = ntstatus_for_srb(srb_status)
        packet = _PACKET.pack(_COMPLETE_IO, 0, status, *fields)
        if request_size == SCSI_REQUEST_SIZE_V2:
            return packet
        return packet[: PACKET_HEADER_SIZE + request_size]

    def _run(self, fields: list[Any], buffer: DataBuffer, transfer_length: int) -> ScsiResult:
        cdb_length = fields[7]
        data_in = fields[9]
        if (
            transfer_length > self._max_transfer_bytes
            or not 0 < cdb_length <= CDB_MAX_LENGTH
            or data_in > _NO_DATA
        ):
            return check_condition(INVALID_FIELD_IN_CDB)
        cdb = fields[12][:cdb_length]
        opcode = cdb[0]
        data = buffer.head(transfer_length)
        path, target, lun = fields[4], fields[5], fields[6]
        if opcode == _REPORT_LUNS:
            return report_luns(cdb, self._luns.get((path, target), ()), data)
        disk = self._disks.get((path, target, lun))
        if disk is None:
            return self._no_disk(cdb, data)
        if transfer_length and data_in != _NO_DATA:
            direction = _DIRECTIONS.get(opcode, _NO_DATA)
            if direction != _NO_DATA and direction != data_in:
                return check_condition(INVALID_FIELD_IN_CDB)
        return disk.execute(cdb, data)

    def _no_disk(self, cdb: bytes, data: DataBuffer) -> ScsiResult:
        """No disk at the address: a plain INQUIRY reports "not present" (so a bus scan
        moves on), anything else fails with SRB status INVALID_LUN (OpenVMM's answers)."""
        if cdb[0] != _INQUIRY:
            return _INVALID_LUN
        if len(cdb) < 6 or cdb[1] & 0xFF or cdb[2] or cdb[5] & 0x04:
            return check_condition(INVALID_FIELD_IN_CDB)
        allocation_length = int.from_bytes(cdb[3:5], "big")
        moved = data.scatter(_NO_LUN_INQUIRY[:allocation_length])
        return ScsiResult(ScsiStatus.GOOD, SrbStatus.SUCCESS, None, moved)
