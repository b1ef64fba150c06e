"""The icmsg header, its flags, status codes and message types, and THE table of ICs.

Every IC message is ``pipe header (8) | icmsg header (20) | body (icmsgsize bytes)`` (fact sheet
§5.1). This module holds the header codec (:class:`IcHeader`), the enums of §5.1, the protocol
version value :class:`IcVersion` (§5.2), and :data:`IC_TABLE`: one :class:`IcSpec` row per
Integration Component with its name, message type, interface and instance GUIDs (§5.9) and the
versions each side offers (§5.3). Everything else -- the negotiation lists of the host and guest
machines, the plugin descriptions the lead derives (``IcDescription``), the tests -- is read
from that table.

:func:`encode_message` and :func:`decode_message` frame and unframe a whole IC packet payload;
decoding never trusts ``icmsgsize`` it has not checked against the bytes received.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from types import MappingProxyType
from typing import Final, Self

from ._pipe import PIPE_HEADER_SIZE, IcProtocolError, pipe_frame, pipe_unframe

__all__ = [
    "ICMSG_HEADER",
    "ICMSG_HEADER_SIZE",
    "IC_BY_NAME",
    "IC_BY_TYPE",
    "IC_PREFIX_SIZE",
    "IC_TABLE",
    "MAX_IC_MESSAGE_SIZE",
    "IcFlags",
    "IcHeader",
    "IcMessageType",
    "IcSpec",
    "IcStatus",
    "IcVersion",
    "decode_message",
    "encode_message",
]

#: framework major/minor, icmsgtype, message major/minor, icmsgsize u16 x6; status u32;
#: ictransaction_id u8; icflags u8; reserved u16 (§5.1).
ICMSG_HEADER: Final = struct.Struct("<HHHHHHIBBH")
ICMSG_HEADER_SIZE: Final = ICMSG_HEADER.size
#: Pipe header plus icmsg header: where an IC body starts in a packet payload (ICMSG_HDR, §5.1).
IC_PREFIX_SIZE: Final = PIPE_HEADER_SIZE + ICMSG_HEADER_SIZE
#: Largest IC packet OpenVMM's IC devices accept (``MAX_MESSAGE_SIZE``, OVMM-ic); every
#: message in §5 fits (the largest, a KVP IP-info message, is 28 + 7430 bytes).
MAX_IC_MESSAGE_SIZE: Final = 13312


class IcMessageType(IntEnum):
    """``icmsgtype`` (§5.1). Names follow OpenVMM where Linux has none."""

    NEGOTIATE = 0
    HEARTBEAT = 1
    KVP_EXCHANGE = 2
    SHUTDOWN = 3
    TIMESYNC = 4
    VSS = 5
    RDV = 6
    FCOPY = 7
    VM_SESSION = 8


class IcFlags(IntFlag):
    """``icflags`` (§5.1): the host sends TRANSACTION|REQUEST, the guest TRANSACTION|RESPONSE."""

    TRANSACTION = 0x1
    REQUEST = 0x2
    RESPONSE = 0x4


class IcStatus(IntEnum):
    """The HRESULT-style ``status`` values ICs use (§5.1)."""

    S_OK = 0x00000000
    E_FAIL = 0x80004005
    #: Linux HV_S_CONT, OpenVMM NO_MORE_ITEMS: ends a KVP enumeration; also "not found".
    S_CONT = 0x80070103
    NOT_SUPPORTED = 0x80070032
    MACHINE_LOCKED = 0x800704F7
    DEVICE_NOT_CONNECTED = 0x8007048F
    INVALIDARG = 0x80070057
    GUID_NOT_FOUND = 0x80041002
    ALREADY_EXISTS = 0x80070050
    DISK_FULL = 0x80070070

    #: OpenVMM's name for :attr:`S_CONT`.
    NO_MORE_ITEMS = 0x80070103


@dataclass(frozen=True, slots=True, order=True)
class IcVersion:
    """A framework or message version, ``major.minor`` with u16 parts (§5.2).

    On the wire an entry is ``major u16`` then ``minor u16``; ordering compares major first.
    """

    major: int
    minor: int

    def __post_init__(self) -> None:
        for name in ("major", "minor"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
                raise ValueError(f"IcVersion.{name}: found {value!r}, expected 0..65535")

    @classmethod
    def parse(cls, text: str | IcVersion) -> IcVersion:
        """``"3.0"`` -> ``IcVersion(3, 0)``; an ``IcVersion`` is returned as is."""
        if isinstance(text, IcVersion):
            return text
        major, sep, minor = text.partition(".")
        if not sep or not major.isdigit() or not minor.isdigit():
            raise ValueError(f"IC version: found {text!r}, expected 'major.minor'")
        return cls(int(major), int(minor))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


_V = IcVersion.parse


@dataclass(frozen=True, slots=True)
class IcHeader:
    """The 20-byte icmsg header (§5.1). ``pack``/``unpack`` are exact inverses."""

    message_type: int
    framework: IcVersion = IcVersion(0, 0)
    message: IcVersion = IcVersion(0, 0)
    size: int = 0
    status: int = IcStatus.S_OK
    transaction_id: int = 0
    flags: int = 0
    reserved: int = 0

    def pack(self) -> bytes:
        """The header's 20 bytes."""
        return ICMSG_HEADER.pack(
            self.framework.major, self.framework.minor, self.message_type,
            self.message.major, self.message.minor, self.size, self.status,
            self.transaction_id, self.flags, self.reserved,
        )

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> Self:
        """Read a header from the first 20 bytes of ``data`` (which must hold them)."""
        fw_major, fw_minor, mtype, msg_major, msg_minor, size, status, tid, flags, reserved = (
            ICMSG_HEADER.unpack_from(data))
        return cls(mtype, IcVersion(fw_major, fw_minor), IcVersion(msg_major, msg_minor), size,
                   status, tid, flags, reserved)


def encode_message(header: IcHeader, body: bytes | bytearray | memoryview) -> bytes:
    """A whole IC packet payload: pipe header, ``header`` and ``body``.

    ``header.size`` must equal ``len(body)`` (``ValueError`` otherwise: a local bug).
    """
    if header.size != len(body):
        raise ValueError(f"icmsgsize {header.size} does not match a body of {len(body)} bytes")
    return pipe_frame(header.pack() + bytes(body))


def decode_message(packet: bytes | bytearray | memoryview) -> tuple[IcHeader, memoryview]:
    """Check the pipe and icmsg headers of a received packet; return the header and body view.

    The body is exactly ``icmsgsize`` bytes; bytes after it (a responder that echoed a longer
    buffer, §5.1) are ignored. Raises :class:`IcProtocolError` for a bad pipe header, fewer than
    20 bytes of icmsg header, or an ``icmsgsize`` beyond the bytes received.
    """
    framed = pipe_unframe(packet)
    if len(framed) < ICMSG_HEADER_SIZE:
        raise IcProtocolError("icmsg header", "size", f"{len(framed)} bytes after the pipe header",
                              f"at least {ICMSG_HEADER_SIZE} bytes (§5.1)")
    header = IcHeader.unpack(framed)
    available = len(framed) - ICMSG_HEADER_SIZE
    if header.size > available:
        raise IcProtocolError("icmsg header", "icmsgsize", header.size,
                              f"at most the {available} body bytes received")
    return header, framed[ICMSG_HEADER_SIZE:ICMSG_HEADER_SIZE + header.size]


@dataclass(frozen=True, slots=True)
class IcSpec:
    """One row of :data:`IC_TABLE`: what defines an Integration Component on the wire.

    ``host_*`` lists are what the host offers in its negotiation request, in wire order (§5.2,
    §5.3). ``guest_*`` lists are the guest's preference order, newest first: the guest picks the
    first of its own list that the host offered. :attr:`versions` and
    :attr:`framework_versions` are the union of both sides, newest first, as strings: the form
    ``winhv.plugins.IcDescription`` takes.
    """

    #: Plugin name (``IcDescription.name``).
    name: str
    message_type: IcMessageType
    #: Offer ``if_type`` (§5.9).
    interface_id: uuid.UUID
    #: OpenVMM's fixed instance GUID, or ``None`` (the host derives one).
    instance_id: uuid.UUID | None
    host_framework_versions: tuple[IcVersion, ...]
    host_message_versions: tuple[IcVersion, ...]
    guest_framework_versions: tuple[IcVersion, ...]
    guest_message_versions: tuple[IcVersion, ...]
    summary: str

    @property
    def versions(self) -> tuple[str, ...]:
        """Every message version either side speaks, newest first (``IcDescription.versions``)."""
        both = set(self.host_message_versions) | set(self.guest_message_versions)
        return tuple(str(v) for v in sorted(both, reverse=True))

    @property
    def framework_versions(self) -> tuple[str, ...]:
        """Every framework version either side speaks, newest first."""
        both = set(self.host_framework_versions) | set(self.guest_framework_versions)
        return tuple(str(v) for v in sorted(both, reverse=True))


def _versions(*texts: str) -> tuple[IcVersion, ...]:
    return tuple(_V(t) for t in texts)


#: Framework versions: the OpenVMM host offers 1.0, 3.0; Linux prefers 3.0, then 1.0 (§5.3).
_HOST_FW: Final = _versions("1.0", "3.0")
_GUEST_FW: Final = _versions("3.0", "1.0")

#: THE table of ICs (§5.3 versions, §5.9 GUIDs). Host lists follow OpenVMM where it has a host
#: implementation; heartbeat has none there, so its host offers the versions Linux accepts, and
#: the timesync host adds 1.0 and 3.0 to OpenVMM's 4.0 so the pre-4.0 layout stays reachable.
IC_TABLE: Final[tuple[IcSpec, ...]] = (
    IcSpec(
        name="heartbeat",
        message_type=IcMessageType.HEARTBEAT,
        interface_id=uuid.UUID("57164f39-9115-4e78-ab55-382f3bd5422d"),
        instance_id=None,
        host_framework_versions=_HOST_FW,
        host_message_versions=_versions("1.0", "3.0"),
        guest_framework_versions=_GUEST_FW,
        guest_message_versions=_versions("3.0", "1.0"),
        summary="Heartbeat: the host checks the guest is alive (sequence number + 1).",
    ),
    IcSpec(
        name="kvp",
        message_type=IcMessageType.KVP_EXCHANGE,
        interface_id=uuid.UUID("a9a0f4e7-5a45-4d96-b827-8a841e8c03e6"),
        instance_id=uuid.UUID("242ff919-07db-4180-9c2e-b86cb68c8c55"),
        host_framework_versions=_HOST_FW,
        host_message_versions=_versions("3.0", "4.0", "5.0"),
        guest_framework_versions=_GUEST_FW,
        guest_message_versions=_versions("4.0", "3.0", "1.0"),
        summary="Key-value pair exchange between host and guest pools.",
    ),
    IcSpec(
        name="shutdown",
        message_type=IcMessageType.SHUTDOWN,
        interface_id=uuid.UUID("0e0b6031-5213-4934-818b-38d90ced39db"),
        instance_id=uuid.UUID("b6650ff7-33bc-4840-8048-e0676786f393"),
        host_framework_versions=_HOST_FW,
        host_message_versions=_versions("1.0", "3.0", "3.1", "3.2"),
        guest_framework_versions=_GUEST_FW,
        guest_message_versions=_versions("3.2", "3.1", "3.0", "1.0"),
        summary="Guest shutdown, reboot or hibernate requested by the host.",
    ),
    IcSpec(
        name="timesync",
        message_type=IcMessageType.TIMESYNC,
        interface_id=uuid.UUID("9527e630-d0ae-497b-adce-e80ab0175caf"),
        instance_id=uuid.UUID("2dd1ce17-079e-403c-b352-a1921ee207ee"),
        host_framework_versions=_HOST_FW,
        host_message_versions=_versions("1.0", "3.0", "4.0"),
        guest_framework_versions=_GUEST_FW,
        guest_message_versions=_versions("4.0", "3.0", "1.0"),
        summary="Time synchronization: host time samples keep the guest clock in step.",
    ),
)

#: :data:`IC_TABLE` by name and by message type.
IC_BY_NAME: Final[Mapping[str, IcSpec]] = MappingProxyType({s.name: s for s in IC_TABLE})
IC_BY_TYPE: Final[Mapping[IcMessageType, IcSpec]] = MappingProxyType(
    {s.message_type: s for s in IC_TABLE})
