"""The guest (storvsc) side of the vstor protocol, sans-IO.

``StorvscProtocol`` builds what a guest sends and reads what the host answers; the VMBus layer
moves the bytes. Every request it builds carries a transaction id the completion must echo:

* initialization (§6.1 step 3): ``start()`` gives BEGIN_INITIALIZATION; each completion passed
  to ``receive`` gives the next step -- QUERY_PROTOCOL_VERSION for each version in turn while
  the host answers non-zero (``versions``, newest first; Linux proposes 6.2, 6.0, 5.1),
  QUERY_PROPERTIES, CREATE_SUB_CHANNELS when asked for and offered, END_INITIALIZATION --
  and ``None`` once READY. Init packets are 64 bytes, as recent Linux sends them;
* I/O: ``read``/``write``/``flush``/``read_capacity``/``inquiry``/``unmap``/``execute``
  build an EXECUTE_SRB (``SrbRequest``) sized for the negotiated version; the VMBus layer
  sends it as a GPA-direct packet over ``data_length`` bytes of guest memory (in-band when 0).
  ``receive`` turns its completion into an ``SrbCompletion``, whose ``check()`` raises
  ``ScsiCommandError`` with the decoded sense data when the command failed.

The host is checked too: an answer that is short, is not COMPLETE_IO, or names a transaction id
that is not outstanding raises ``VstorProtocolError``; a failed init step raises
``VstorInitError``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Self

from ._protocol import (
    _REQUEST,
    AUTOSENSE_VALID,
    CDB_MAX_LENGTH,
    PACKET_HEADER_SIZE,
    PACKET_SIZE_V2,
    REQUEST_COMPLETION_FLAG,
    SCSI_REQUEST_SIZE_V1,
    SCSI_REQUEST_SIZE_V2,
    SENSE_AREA_SIZE,
    ChannelProperties,
    DataDirection,
    NtStatus,
    Operation,
    SenderRole,
    SrbStatus,
    VstorProtocolError,
    VstorVersion,
    build_packet,
    parse_packet,
)
from ._sense import ScsiStatus, SenseData, parse_sense

__all__ = [
    "CLIENT_VERSIONS",
    "Capacity",
    "InquiryData",
    "OutgoingPacket",
    "ScsiCommandError",
    "SrbCompletion",
    "SrbRequest",
    "StorvscProtocol",
    "VscState",
    "VstorInitError",
    "parse_inquiry",
    "parse_read_capacity_10",
    "parse_read_capacity_16",
]

#: What a guest proposes by default, newest first: Linux's list (§6.1).
CLIENT_VERSIONS: tuple[VstorVersion, ...] = (
    VstorVersion.WIN10,
    VstorVersion.WIN8_1,
    VstorVersion.WIN8,
)

_QUEUE_TAG_UNTAGGED = 0xFF  # SP_UNTAGGED (§6.1)
_QUEUE_ACTION_SIMPLE = 0x20  # SIMPLE_TAG
_TIMEOUT_SECONDS = 60  # Linux's time_out_value
_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")
_UNMAP_DESCRIPTOR = struct.Struct(">QI4x")


class VstorInitError(VstorProtocolError):
    """The host refused an initialization step (or every proposed version)."""


class VscState(Enum):
    """Where the guest is in the initialization sequence."""

    IDLE = "not started"
    BEGIN = "BEGIN_INITIALIZATION sent"
    QUERY_VERSION = "QUERY_PROTOCOL_VERSION sent"
    QUERY_PROPERTIES = "QUERY_PROPERTIES sent"
    CREATE_SUB_CHANNELS = "CREATE_SUB_CHANNELS sent"
    END_INITIALIZATION = "END_INITIALIZATION sent"
    READY = "ready for I/O"


@dataclass(slots=True, frozen=True)
class OutgoingPacket:
    """An in-band packet to send with COMPLETION_REQUESTED and ``trans_id``."""

    trans_id: int
    payload: bytes


@dataclass(slots=True, frozen=True)
class SrbRequest:
    """An EXECUTE_SRB to send. ``data_length`` bytes of guest memory go with it, described
    as one GPA-direct range (in-band when 0); ``direction`` says which way they move. For a
    data-out command with a parameter list (UNMAP), ``parameter_data`` must be placed at the
    start of that memory before sending."""

    trans_id: int
    payload: bytes
    cdb: bytes
    lun: int
    data_length: int
    direction: DataDirection
    parameter_data: bytes = b""


@dataclass(slots=True, frozen=True)
class SrbCompletion:
    """The host's answer to an ``SrbRequest``: NTSTATUS, SRB status (flags included), SCSI
    status, sense data (when AUTOSENSE_VALID and CHECK CONDITION) and bytes transferred."""

    request: SrbRequest
    status: int
    srb_status: int
    scsi_status: int
    sense: SenseData | None
    transferred: int

    @property
    def ok(self) -> bool:
        """SRB status SUCCESS and SCSI status GOOD."""
        return self.srb_status & 0x3F == SrbStatus.SUCCESS and self.scsi_status == ScsiStatus.GOOD

    def check(self) -> Self:
        """``self`` if ``ok``, else raise ``ScsiCommandError``."""
        if not self.ok:
            raise ScsiCommandError(self)
        return self


class ScsiCommandError(Exception):
    """A SCSI command that the host completed with an error. ``completion`` holds everything;
    ``sense`` is its decoded sense data, ``None`` when the host sent none."""

    def __init__(self, completion: SrbCompletion) -> None:
        self.completion = completion
        self.sense = completion.sense
        try:
            srb = SrbStatus(completion.srb_status & 0x3F).name
        except ValueError:
            srb = f"{completion.srb_status & 0x3F:#04x}"
        try:
            scsi = ScsiStatus(completion.scsi_status).name
        except ValueError:
            scsi = f"{completion.scsi_status:#04x}"
        opcode = completion.request.cdb[0] if completion.request.cdb else 0
        detail = f", sense {completion.sense}" if completion.sense is not None else ""
        super().__init__(
            f"SCSI opcode {opcode:#04x} on LUN {completion.request.lun}: "
            f"srb_status {srb}, scsi_status {scsi}{detail}"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.completion,))


@dataclass(slots=True, frozen=True)
class Capacity:
    """READ CAPACITY data: blocks, logical block size, and (16 only) the physical block size
    and whether the disk is thin-provisioned (LBPME) and unmapped blocks read zero (LBPRZ)."""

    block_count: int
    block_size: int
    physical_block_size: int | None = None
    thin_provisioned: bool = False
    unmapped_reads_zero: bool = False


@dataclass(slots=True, frozen=True)
class InquiryData:
    """Standard INQUIRY data: peripheral qualifier and device type, vendor, product,
    revision (trailing spaces removed)."""

    qualifier: int
    device_type: int
    vendor: str
    product: str
    revision: str


def _need(data: bytes | bytearray | memoryview, size: int, what: str) -> bytes:
    data = bytes(data)
    if len(data) < size:
        raise ValueError(f"{what}: found {len(data)} bytes, expected at least {size}")
    return data


def parse_read_capacity_10(data: bytes | bytearray | memoryview) -> Capacity:
    """Decode the 8 bytes of READ CAPACITY (10): last LBA + 1 blocks of the returned size."""
    data = _need(data, 8, "READ CAPACITY (10) data")
    return Capacity(_BE32.unpack_from(data)[0] + 1, _BE32.unpack_from(data, 4)[0])


def parse_read_capacity_16(data: bytes | bytearray | memoryview) -> Capacity:
    """Decode READ CAPACITY (16) data (at least its first 16 bytes)."""
    data = _need(data, 16, "READ CAPACITY (16) data")
    block_size = _BE32.unpack_from(data, 8)[0]
    return Capacity(
        _BE64.unpack_from(data)[0] + 1,
        block_size,
        block_size << (data[13] & 0x0F),
        bool(data[14] & 0x80),
        bool(data[14] & 0x40),
    )


def parse_inquiry(data: bytes | bytearray | memoryview) -> InquiryData:
    """Decode standard INQUIRY data (at least 36 bytes)."""
    data = _need(data, 36, "standard INQUIRY data")

    def text(raw: bytes) -> str:
        return raw.decode("ascii", "replace").rstrip(" \0")

    return InquiryData(
        data[0] >> 5, data[0] & 0x1F, text(data[8:16]), text(data[16:32]), text(data[32:36])
    )


class StorvscProtocol:
    """The guest state machine of one storvsc channel.

    ``versions`` are proposed newest first; ``sub_channels`` are requested after
    QUERY_PROPERTIES when the host supports multi-channel (capped at what it offers);
    ``path_id``/``target_id`` address the disks' target (LUNs vary per request).
    """

    __slots__ = (
        "_next_id",
        "_outstanding",
        "_path_id",
        "_pending_init",
        "_properties",
        "_proposals",
        "_state",
        "_sub_channels",
        "_sub_channels_requested",
        "_target_id",
        "_version",
        "_versions",
    )

    def __init__(
        self,
        *,
        versions: Sequence[VstorVersion] = CLIENT_VERSIONS,
        sub_channels: int = 0,
        path_id: int = 0,
        target_id: int = 0,
    ) -> None:
        if not versions:
            raise ValueError("versions: found none, expected at least one VstorVersion")
        self._versions = tuple(VstorVersion(v) for v in versions)
        if not 0 <= sub_channels <= 0xFFFF:
            raise ValueError(f"sub_channels: found {sub_channels}, expected a u16")
        self._sub_channels = sub_channels
        self._path_id, self._target_id = path_id, target_id
        self._state = VscState.IDLE
        self._version: VstorVersion | None = None
        self._properties: ChannelProperties | None = None
        self._proposals: list[VstorVersion] = []
        self._pending_init: int | None = None
        self._outstanding: dict[int, SrbRequest] = {}
        self._next_id = 1
        self._sub_channels_requested = 0

    # -- observation ------------------------------------------------------------------------

    @property
    def state(self) -> VscState:
        """The initialization state."""
        return self._state

    @property
    def version(self) -> VstorVersion | None:
        """The version the host accepted."""
        return self._version

    @property
    def properties(self) -> ChannelProperties | None:
        """The host's channel properties (after QUERY_PROPERTIES)."""
        return self._properties

    @property
    def sub_channel_count(self) -> int:
        """Sub-channels the host agreed to create."""
        return self._sub_channels_requested

    @property
    def outstanding(self) -> int:
        """SRBs sent and not yet completed."""
        return len(self._outstanding)

    # -- initialization ---------------------------------------------------------------------

    def start(self) -> OutgoingPacket:
        """Begin initialization (again, after a reset): BEGIN_INITIALIZATION."""
        self._state = VscState.BEGIN
        self._version = None
        self._properties = None
        self._proposals = list(self._versions)
        self._outstanding.clear()
        self._sub_channels_requested = 0
        return self._init_packet(Operation.BEGIN_INITIALIZATION)

    def _init_packet(self, operation: Operation, body: bytes = b"") -> OutgoingPacket:
        trans_id = self._allocate_id()
        self._pending_init = trans_id
        size = PACKET_SIZE_V2 - PACKET_HEADER_SIZE
        payload = build_packet(operation, 0, body, size, flags=REQUEST_COMPLETION_FLAG)
        return OutgoingPacket(trans_id, payload)

    def _allocate_id(self) -> int:
        trans_id = self._next_id
        self._next_id = trans_id + 1 if trans_id < 0xFFFF_FFFF_FFFF_FFFF else 1
        return trans_id

    def _propose(self) -> OutgoingPacket:
        version = self._proposals[0]
        self._state = VscState.QUERY_VERSION
        return self._init_packet(Operation.QUERY_PROTOCOL_VERSION, struct.pack("<HH", version, 0))

    def receive(
        self, trans_id: int, payload: bytes | bytearray | memoryview
    ) -> OutgoingPacket | SrbCompletion | None:
        """Handle a host completion: during initialization return the next packet to send
        (``None`` once READY); afterwards return the ``SrbCompletion`` of request
        ``trans_id``. Raises ``VstorProtocolError``/``VstorInitError``."""
        packet = parse_packet(payload, sender=SenderRole.HOST)
        if packet.operation != Operation.COMPLETE_IO:
            raise VstorProtocolError(
                packet.operation, "operation", Operation(packet.operation).name,
                "COMPLETE_IO (notifications go to receive_notification)",
            )  # fmt: skip
        if trans_id == self._pending_init and self._state not in (VscState.IDLE, VscState.READY):
            self._pending_init = None
            return self._init_step(packet.status, packet.body)
        request = self._outstanding.pop(trans_id, None)
        if request is None:
            raise VstorProtocolError(
                Operation.COMPLETE_IO, "trans_id", trans_id, "the id of an outstanding request"
            )
        return self._srb_completion(request, packet.status, packet.body)

    def receive_notification(self, payload: bytes | bytearray | memoryview) -> Operation:
        """Decode a host-initiated packet (ENUMERATE_BUS or REMOVE_DEVICE: rescan, §6.1
        step 6) and return its operation."""
        packet = parse_packet(payload, sender=SenderRole.HOST)
        if packet.operation not in (Operation.ENUMERATE_BUS, Operation.REMOVE_DEVICE):
            raise VstorProtocolError(
                packet.operation, "operation", Operation(packet.operation).name,
                "ENUMERATE_BUS or REMOVE_DEVICE",
            )  # fmt: skip
        return Operation(packet.operation)

    def _init_step(self, status: int, body: bytes) -> OutgoingPacket | None:
        state = self._state
        if state is VscState.QUERY_VERSION:
            if status != NtStatus.SUCCESS:
                tried = self._proposals.pop(0)
                if self._proposals:
                    return self._propose()
                raise VstorInitError(
                    Operation.QUERY_PROTOCOL_VERSION, "status", _status_name(status),
                    f"SUCCESS for one of {', '.join(_version_text(v) for v in self._versions)}"
                    f" (last tried {_version_text(tried)})",
                )  # fmt: skip
            self._version = self._proposals[0]
            self._state = VscState.QUERY_PROPERTIES
            return self._init_packet(Operation.QUERY_PROPERTIES)
        operation = _SENT_IN[state]
        if status != NtStatus.SUCCESS and state is not VscState.CREATE_SUB_CHANNELS:
            raise VstorInitError(operation, "status", _status_name(status), "SUCCESS")
        if state is VscState.BEGIN:
            return self._propose()
        if state is VscState.QUERY_PROPERTIES:
            self._properties = ChannelProperties.unpack(body)
            wanted = min(self._sub_channels, self._properties.max_channel_count)
            if wanted and self._properties.multi_channel:
                self._state = VscState.CREATE_SUB_CHANNELS
                self._sub_channels_requested = wanted
                return self._init_packet(Operation.CREATE_SUB_CHANNELS, struct.pack("<H", wanted))
            self._state = VscState.END_INITIALIZATION
            return self._init_packet(Operation.END_INITIALIZATION)
        if state is VscState.CREATE_SUB_CHANNELS:
            if status != NtStatus.SUCCESS:  # carry on with the primary channel alone
                self._sub_channels_requested = 0
            self._state = VscState.END_INITIALIZATION
            return self._init_packet(Operation.END_INITIALIZATION)
        self._state = VscState.READY
        return None

    # -- I/O --------------------------------------------------------------------------------

    def execute(
        self,
        cdb: bytes,
        *,
        data_length: int = 0,
        direction: DataDirection = DataDirection.UNKNOWN,
        lun: int = 0,
        parameter_data: bytes = b"",
    ) -> SrbRequest:
        """Build an EXECUTE_SRB for ``cdb`` (1..16 bytes) moving ``data_length`` bytes."""
        if self._state is not VscState.READY or self._version is None:
            raise RuntimeError(f"storvsc is {self._state.value}, expected ready for I/O")
        if not 1 <= len(cdb) <= CDB_MAX_LENGTH:
            raise ValueError(f"cdb: found {len(cdb)} bytes, expected 1..16")
        if not 0 <= data_length <= 0xFFFF_FFFF:
            raise ValueError(f"data_length: found {data_length}, expected a u32")
        if not 0 <= lun <= 0xFF:
            raise ValueError(f"lun: found {lun}, expected a u8")
        size = self._version.request_size
        trans_id = self._allocate_id()
        request = _REQUEST.pack(
            size, 0, 0, 0, self._path_id, self._target_id, lun, len(cdb),
            self._version.sense_buffer_size, direction if data_length else DataDirection.UNKNOWN,
            0, data_length, cdb.ljust(SENSE_AREA_SIZE, b"\0"), 0, _QUEUE_TAG_UNTAGGED,
            _QUEUE_ACTION_SIMPLE, 0, _TIMEOUT_SECONDS, 0,
        )[:size]  # fmt: skip
        payload = build_packet(
            Operation.EXECUTE_SRB, 0, request, size, flags=REQUEST_COMPLETION_FLAG
        )
        srb = SrbRequest(trans_id, payload, bytes(cdb), lun, data_length, direction, parameter_data)
        self._outstanding[trans_id] = srb
        return srb

    def read(
        self, lba: int, blocks: int, *, block_size: int = 512, lun: int = 0, fua: bool = False
    ) -> SrbRequest:
        """READ (10), or READ (16) when the LBA or count needs it."""
        return self.execute(
            _rw_cdb(0x28, 0x88, lba, blocks, fua),
            data_length=blocks * block_size, direction=DataDirection.READ, lun=lun,
        )  # fmt: skip

    def write(
        self, lba: int, blocks: int, *, block_size: int = 512, lun: int = 0, fua: bool = False
    ) -> SrbRequest:
        """WRITE (10), or WRITE (16) when the LBA or count needs it."""
        return self.execute(
            _rw_cdb(0x2A, 0x8A, lba, blocks, fua),
            data_length=blocks * block_size, direction=DataDirection.WRITE, lun=lun,
        )  # fmt: skip

    def flush(self, *, lun: int = 0) -> SrbRequest:
        """SYNCHRONIZE CACHE (10) of the whole disk."""
        return self.execute(bytes((0x35,)) + bytes(9), lun=lun)

    def read_capacity(self, *, lun: int = 0) -> SrbRequest:
        """READ CAPACITY (16), 32 bytes of data (decode with ``parse_read_capacity_16``)."""
        cdb = bytes((0x9E, 0x10)) + bytes(8) + _BE32.pack(32) + bytes(2)
        return self.execute(cdb, data_length=32, direction=DataDirection.READ, lun=lun)

    def inquiry(
        self, page: int | None = None, *, allocation_length: int = 255, lun: int = 0
    ) -> SrbRequest:
        """INQUIRY: standard data (``page=None``) or a VPD page."""
        evpd, code = (0, 0) if page is None else (1, page)
        cdb = bytes((0x12, evpd, code)) + allocation_length.to_bytes(2, "big") + b"\0"
        return self.execute(
            cdb, data_length=allocation_length, direction=DataDirection.READ, lun=lun
        )

    def unmap(self, extents: Iterable[tuple[int, int]], *, lun: int = 0) -> SrbRequest:
        """UNMAP the ``(lba, blocks)`` extents; the parameter list is ``parameter_data``."""
        descriptors = b"".join(_UNMAP_DESCRIPTOR.pack(lba, blocks) for lba, blocks in extents)
        parameters = struct.pack(">HHI", 6 + len(descriptors), len(descriptors), 0) + descriptors
        cdb = bytes((0x42, 0, 0, 0, 0, 0, 0)) + len(parameters).to_bytes(2, "big") + b"\0"
        return self.execute(
            cdb, data_length=len(parameters), direction=DataDirection.WRITE, lun=lun,
            parameter_data=parameters,
        )  # fmt: skip

    def _srb_completion(self, request: SrbRequest, status: int, body: bytes) -> SrbCompletion:
        if len(body) < SCSI_REQUEST_SIZE_V1:
            raise VstorProtocolError(
                Operation.COMPLETE_IO, "size", f"{PACKET_HEADER_SIZE + len(body)} bytes",
                f"at least {PACKET_HEADER_SIZE + SCSI_REQUEST_SIZE_V1} for an SRB completion",
            )  # fmt: skip
        fields = _REQUEST.unpack(body[:SCSI_REQUEST_SIZE_V2].ljust(SCSI_REQUEST_SIZE_V2, b"\0"))
        srb_status, scsi_status = fields[1], fields[2]
        sense = None
        if srb_status & AUTOSENSE_VALID and scsi_status == ScsiStatus.CHECK_CONDITION:
            length = min(fields[8], SENSE_AREA_SIZE)
            sense = parse_sense(fields[12][:length])
        transferred = fields[11]
        if transferred > request.data_length:
            raise VstorProtocolError(
                Operation.COMPLETE_IO, "data_transfer_length", transferred,
                f"at most the {request.data_length} bytes requested",
            )  # fmt: skip
        return SrbCompletion(request, status, srb_status, scsi_status, sense, transferred)


def _rw_cdb(op10: int, op16: int, lba: int, blocks: int, fua: bool) -> bytes:
    if lba < 0 or blocks < 0:
        raise ValueError(f"lba, blocks: found {lba}, {blocks}, expected non-negative values")
    flags = 0x08 if fua else 0x00
    if lba <= 0xFFFF_FFFF and blocks <= 0xFFFF:
        return struct.pack(">BBIBHB", op10, flags, lba, 0, blocks, 0)
    if lba > 0xFFFF_FFFF_FFFF_FFFF or blocks > 0xFFFF_FFFF:
        raise ValueError(f"lba, blocks: found {lba}, {blocks}, expected a u64 and a u32")
    return struct.pack(">BBQIBB", op16, flags, lba, blocks, 0, 0)


_SENT_IN = {
    VscState.BEGIN: Operation.BEGIN_INITIALIZATION,
    VscState.QUERY_VERSION: Operation.QUERY_PROTOCOL_VERSION,
    VscState.QUERY_PROPERTIES: Operation.QUERY_PROPERTIES,
    VscState.CREATE_SUB_CHANNELS: Operation.CREATE_SUB_CHANNELS,
    VscState.END_INITIALIZATION: Operation.END_INITIALIZATION,
}


def _status_name(status: int) -> str:
    try:
        return NtStatus(status).name
    except ValueError:
        return f"{status:#010x}"


def _version_text(version: int) -> str:
    return f"{version >> 8}.{version & 0xFF}"
