"""The VMBus channel-management messages: one declarative table, their wire forms and parsing.

Every control message is a little-endian, packed structure that starts with the 8-byte header
``msgtype u32, padding u32`` and travels as the payload of one SynIC message (at most 240 bytes,
fact sheet §3.1). This module holds:

* ``ChannelMessageType``: the message numbers 0..29 (§3.2);
* one frozen dataclass per message, each with ``pack() -> bytes`` (header included) and
  ``unpack(data) -> Self``; GUIDs are ``uuid.UUID`` on the Python side and the mixed-endian
  Windows encoding on the wire (§5.9, ``UUID.bytes_le``);
* ``MESSAGES``: the table (number, name, class, size, minimum version, direction, feature) that
  everything else derives from -- ``parse_message`` validation, the protocols' dispatch and the
  test strategies;
* ``parse_message``: the one entry point for bytes that came from the other side. It never trusts
  a length or a count it has not checked and raises ``ProtocolError`` naming the message, the
  field, what it found and what it expected.

Fixed-layout messages declare ``_LAYOUT`` (field name, ``struct`` code; ``"G"`` is a 16-byte
GUID) and inherit a generic codec; the variable forms (GPADL_HEADER/BODY, OPENCHANNEL 148/156,
INITIATE_CONTACT 40/56, VERSION_RESPONSE 16/20/40, TL_CONNECT_REQUEST 40/56) code their own.
"""

from __future__ import annotations

import builtins
import operator
import struct
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum, IntEnum, IntFlag
from types import MappingProxyType
from typing import Any, ClassVar, Self

from ._versions import FeatureFlag, VmbusVersion

__all__ = [
    "HEADER_SIZE",
    "INVALID_RELID",
    "MAX_MESSAGE_SIZE",
    "MESSAGES",
    "MESSAGE_CONNECTION_ID",
    "MESSAGE_CONNECTION_ID_MULTICLIENT",
    "USER_DATA_SIZE",
    "AllOffersDelivered",
    "ChannelMessage",
    "ChannelMessageType",
    "CloseChannel",
    "CloseReservedChannel",
    "CloseReservedChannelResponse",
    "Direction",
    "GpadlBody",
    "GpadlCreated",
    "GpadlHeader",
    "GpadlTeardown",
    "GpadlTorndown",
    "InitiateContact",
    "MessageSpec",
    "ModifyChannel",
    "ModifyChannelResponse",
    "ModifyConnection",
    "ModifyConnectionResponse",
    "OfferChannel",
    "OfferFlag",
    "OpenChannel",
    "OpenReservedChannel",
    "OpenResult",
    "Pause",
    "PauseResponse",
    "ProtocolError",
    "RelIdReleased",
    "RequestOffers",
    "RescindChannelOffer",
    "Resume",
    "TlConnectRequest",
    "TlConnectResult",
    "Unload",
    "UnloadComplete",
    "VersionResponse",
    "parse_message",
]

#: Size of the common header (msgtype u32 + padding u32), §3.2.
HEADER_SIZE = 8
#: ``MAX_SIZE_CHANNEL_MESSAGE``: a control message fits one SynIC payload (§3.1).
MAX_MESSAGE_SIZE = 240
#: Bytes of device-specific data in OFFERCHANNEL (@60) and OPENCHANNEL (@28), §3.3.
USER_DATA_SIZE = 120
#: ``INVALID_RELID`` (§3.1).
INVALID_RELID = 0xFFFF_FFFF
#: ``VMBUS_MESSAGE_CONNECTION_ID``: where a guest posts below 5.0 (and legacy contact), §3.1.
MESSAGE_CONNECTION_ID = 1
#: ``VMBUS_MESSAGE_CONNECTION_ID_4``: where INITIATE_CONTACT for 5.0 and later must go, §3.1.
MESSAGE_CONNECTION_ID_MULTICLIENT = 4

_HEADER = struct.Struct("<II")


class ChannelMessageType(IntEnum):
    """Channel message numbers (u32 at offset 0 of every message), §3.2; OpenVMM names."""

    INVALID = 0
    OFFER_CHANNEL = 1
    RESCIND_CHANNEL_OFFER = 2
    REQUEST_OFFERS = 3
    ALL_OFFERS_DELIVERED = 4
    OPEN_CHANNEL = 5
    OPEN_CHANNEL_RESULT = 6
    CLOSE_CHANNEL = 7
    GPADL_HEADER = 8
    GPADL_BODY = 9
    GPADL_CREATED = 10
    GPADL_TEARDOWN = 11
    GPADL_TORNDOWN = 12
    REL_ID_RELEASED = 13
    INITIATE_CONTACT = 14
    VERSION_RESPONSE = 15
    UNLOAD = 16
    UNLOAD_COMPLETE = 17
    OPEN_RESERVED_CHANNEL = 18
    CLOSE_RESERVED_CHANNEL = 19
    CLOSE_RESERVED_RESPONSE = 20
    TL_CONNECT_REQUEST = 21
    MODIFY_CHANNEL = 22
    TL_CONNECT_RESULT = 23
    MODIFY_CHANNEL_RESPONSE = 24
    MODIFY_CONNECTION = 25
    MODIFY_CONNECTION_RESPONSE = 26
    PAUSE = 27
    PAUSE_RESPONSE = 28
    RESUME = 29


class Direction(Enum):
    """Who may send a message: the host (root) to the guest, or the guest to the host."""

    HOST_TO_GUEST = "host->guest"
    GUEST_TO_HOST = "guest->host"


class OfferFlag(IntFlag):
    """OFFERCHANNEL ``chn_flags`` (u16 @56), §3.3. Bits 0x2/0x4 carry the newer meanings
    (older Linux called them SERVER_SUPPORTS_TRANSFER_PAGES / SERVER_SUPPORTS_GPADLS, §8.7).
    """

    ENUMERATE_DEVICE_INTERFACE = 0x0001
    CONFIDENTIAL_RING_BUFFER = 0x0002
    CONFIDENTIAL_EXTERNAL_MEMORY = 0x0004
    REQUIRE_PINNED_EXTERNAL_MEMORY = 0x0008
    NAMED_PIPE_MODE = 0x0010
    LOOPBACK_OFFER = 0x0100
    PARENT_OFFER = 0x0200
    REQUEST_MONITORED_NOTIFICATION = 0x0400
    TLNPI_PROVIDER_OFFER = 0x2000


class ProtocolError(Exception):
    """A channel message that is malformed, out of place, or not allowed now.

    ``message_type`` is ``None`` when not even the type could be read. ``field`` names the
    offending field (``"size"``, ``"version"``, ``"direction"``, ``"state"`` for whole-message
    problems); ``found`` and ``expected`` say what was there and what should have been.
    """

    def __init__(
        self,
        message_type: ChannelMessageType | None,
        field: str,
        found: object,
        expected: object,
    ) -> None:
        self.message_type = message_type
        self.field = field
        self.found = found
        self.expected = expected
        name = message_type.name if message_type is not None else "channel message"
        super().__init__(f"{name}.{field}: found {found}, expected {expected}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message_type, self.field, self.found, self.expected))


def _struct_code(code: str) -> str:
    return "16s" if code == "G" else code


class ChannelMessage:
    """Base of every message dataclass: the generic codec for fixed layouts.

    Subclasses set ``TYPE`` and either ``_LAYOUT`` (then ``pack``/``unpack`` come for free) or
    override ``pack`` and ``unpack``. ``SIZE`` is the size of the smallest form, header included;
    ``OFFSETS`` maps each field of the fixed part to its byte offset in the message.
    """

    __slots__ = ()

    TYPE: ClassVar[ChannelMessageType]
    SIZE: ClassVar[int] = HEADER_SIZE
    OFFSETS: ClassVar[Mapping[str, int]] = MappingProxyType({})
    _LAYOUT: ClassVar[tuple[tuple[str, str], ...]] = ()
    _BODY: ClassVar[struct.Struct] = struct.Struct("<")
    # Derived from _LAYOUT once per class, so that a message costs one struct call each way:
    # the named fields in wire order, which of them are GUIDs, a getter for all of them, and
    # the header and body as one Struct.
    _NAMES: ClassVar[tuple[str, ...]] = ()
    _GUIDS: ClassVar[tuple[int, ...]] = ()
    _GET: ClassVar[Callable[[Any], tuple[Any, ...]]] = staticmethod(lambda obj: ())
    _WIRE: ClassVar[struct.Struct] = _HEADER

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        layout = cls.__dict__.get("_LAYOUT")
        if layout is None:
            return
        offsets: dict[str, int] = {}
        fmt = "<"
        for name, code in layout:
            if name:
                offsets[name] = HEADER_SIZE + struct.calcsize(fmt)
            fmt += _struct_code(code)
        cls._BODY = struct.Struct(fmt)
        cls.SIZE = HEADER_SIZE + cls._BODY.size
        cls.OFFSETS = MappingProxyType(offsets)
        named = [(name, code) for name, code in layout if name]
        cls._NAMES = tuple(name for name, _code in named)
        cls._GUIDS = tuple(i for i, (_name, code) in enumerate(named) if code == "G")
        cls._WIRE = struct.Struct("<II" + fmt[1:])
        if len(named) > 1:
            cls._GET = staticmethod(operator.attrgetter(*cls._NAMES))
        elif named:
            one = operator.attrgetter(named[0][0])
            cls._GET = staticmethod(lambda obj: (one(obj),))

    def pack(self) -> bytes:
        """The message on the wire, header included."""
        values = self._GET(self)
        if self._GUIDS:
            values = list(values)
            for i in self._GUIDS:
                values[i] = values[i].bytes_le
        return self._WIRE.pack(self.TYPE, 0, *values)

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> Self:
        """Decode ``data`` (header included); bytes past the form's size are ignored.

        Raises ``ProtocolError`` if the header names another message or ``data`` is short.
        Semantic checks (version, direction, counts) are ``parse_message``'s job.
        """
        return cls(**cls._fields(data))

    @classmethod
    def _fields(cls, data: bytes | bytearray | memoryview) -> dict[str, Any]:
        _check_frame(cls, data, cls.SIZE)
        values: Any = cls._BODY.unpack_from(data, HEADER_SIZE)
        if cls._GUIDS:
            values = list(values)
            for i in cls._GUIDS:
                values[i] = _guid(values[i])
        return dict(zip(cls._NAMES, values, strict=True))


#: GUIDs already decoded (a channel's interface id recurs in every offer and open). Bounded:
#: the other side chooses these bytes.
_GUID_CACHE: dict[bytes, uuid.UUID] = {}
_GUID_CACHE_MAX = 1024


def _guid(raw: bytes) -> uuid.UUID:
    """``uuid.UUID(bytes_le=raw)``, shared when seen before (UUIDs are immutable)."""
    guid = _GUID_CACHE.get(raw)
    if guid is None:
        if len(_GUID_CACHE) >= _GUID_CACHE_MAX:
            _GUID_CACHE.clear()
        guid = _GUID_CACHE[raw] = uuid.UUID(bytes_le=raw)
    return guid


def _check_frame(
    cls: type[ChannelMessage], data: bytes | bytearray | memoryview, size: int
) -> None:
    if len(data) < HEADER_SIZE:
        raise ProtocolError(cls.TYPE, "size", f"{len(data)} bytes", f"at least {size} bytes")
    msgtype = _HEADER.unpack_from(data)[0]
    if msgtype != cls.TYPE:
        raise ProtocolError(cls.TYPE, "msgtype", msgtype, f"{int(cls.TYPE)}")
    if len(data) < size:
        raise ProtocolError(cls.TYPE, "size", f"{len(data)} bytes", f"at least {size} bytes")


def _pad_user_data(obj: object, name: str, message_type: ChannelMessageType) -> None:
    data = getattr(obj, name)
    if type(data) is bytes and len(data) == USER_DATA_SIZE:
        return  # already the wire form (every decoded message)
    data = bytes(data)
    if len(data) > USER_DATA_SIZE:
        raise ValueError(
            f"{message_type.name}.{name}: found {len(data)} bytes, "
            f"expected at most {USER_DATA_SIZE}"
        )
    object.__setattr__(obj, name, data.ljust(USER_DATA_SIZE, b"\0"))


# --- fixed-layout messages (§3.3) ---------------------------------------------------------


@dataclass(slots=True, frozen=True)
class OfferChannel(ChannelMessage):
    """OFFERCHANNEL (1), host->guest, exactly 196 bytes. ``user_defined`` is always the full 120
    bytes (shorter input is zero-padded). ``monitor_id`` 0xFF means none (OpenVMM).
    """

    TYPE: ClassVar = ChannelMessageType.OFFER_CHANNEL
    _LAYOUT: ClassVar = (
        ("interface_id", "G"),
        ("instance_id", "G"),
        ("reserved1", "Q"),
        ("reserved2", "Q"),
        ("flags", "H"),
        ("mmio_megabytes", "H"),
        ("user_defined", f"{USER_DATA_SIZE}s"),
        ("sub_channel_index", "H"),
        ("mmio_megabytes_optional", "H"),
        ("child_relid", "I"),
        ("monitor_id", "B"),
        ("monitor_allocated", "B"),
        ("is_dedicated_interrupt", "H"),
        ("connection_id", "I"),
    )

    interface_id: uuid.UUID
    instance_id: uuid.UUID
    child_relid: int
    flags: int = 0
    mmio_megabytes: int = 0
    user_defined: bytes = b""
    sub_channel_index: int = 0
    mmio_megabytes_optional: int = 0
    monitor_id: int = 0xFF
    monitor_allocated: int = 0
    is_dedicated_interrupt: int = 1
    connection_id: int = 0
    reserved1: int = 0
    reserved2: int = 0

    def __post_init__(self) -> None:
        _pad_user_data(self, "user_defined", self.TYPE)


@dataclass(slots=True, frozen=True)
class RescindChannelOffer(ChannelMessage):
    """RESCIND_CHANNELOFFER (2), host->guest, 12 bytes."""

    TYPE: ClassVar = ChannelMessageType.RESCIND_CHANNEL_OFFER
    _LAYOUT: ClassVar = (("child_relid", "I"),)
    child_relid: int


@dataclass(slots=True, frozen=True)
class RequestOffers(ChannelMessage):
    """REQUESTOFFERS (3), guest->host, header only."""

    TYPE: ClassVar = ChannelMessageType.REQUEST_OFFERS
    _LAYOUT: ClassVar = ()


@dataclass(slots=True, frozen=True)
class AllOffersDelivered(ChannelMessage):
    """ALLOFFERS_DELIVERED (4), host->guest, header only."""

    TYPE: ClassVar = ChannelMessageType.ALL_OFFERS_DELIVERED
    _LAYOUT: ClassVar = ()


@dataclass(slots=True, frozen=True)
class OpenResult(ChannelMessage):
    """OPENCHANNEL_RESULT (6), host->guest, 20 bytes; ``status`` 0 = success."""

    TYPE: ClassVar = ChannelMessageType.OPEN_CHANNEL_RESULT
    _LAYOUT: ClassVar = (("child_relid", "I"), ("open_id", "I"), ("status", "I"))
    child_relid: int
    open_id: int
    status: int


@dataclass(slots=True, frozen=True)
class CloseChannel(ChannelMessage):
    """CLOSECHANNEL (7), guest->host, 12 bytes. There is no reply (§3.5(e))."""

    TYPE: ClassVar = ChannelMessageType.CLOSE_CHANNEL
    _LAYOUT: ClassVar = (("child_relid", "I"),)
    child_relid: int


@dataclass(slots=True, frozen=True)
class GpadlCreated(ChannelMessage):
    """GPADL_CREATED (10), host->guest, 20 bytes; ``status`` 0 = success."""

    TYPE: ClassVar = ChannelMessageType.GPADL_CREATED
    _LAYOUT: ClassVar = (("child_relid", "I"), ("gpadl_id", "I"), ("status", "I"))
    child_relid: int
    gpadl_id: int
    status: int


@dataclass(slots=True, frozen=True)
class GpadlTeardown(ChannelMessage):
    """GPADL_TEARDOWN (11), guest->host, 16 bytes."""

    TYPE: ClassVar = ChannelMessageType.GPADL_TEARDOWN
    _LAYOUT: ClassVar = (("child_relid", "I"), ("gpadl_id", "I"))
    child_relid: int
    gpadl_id: int


@dataclass(slots=True, frozen=True)
class GpadlTorndown(ChannelMessage):
    """GPADL_TORNDOWN (12), host->guest, 12 bytes; matched by the guest on the gpadl id."""

    TYPE: ClassVar = ChannelMessageType.GPADL_TORNDOWN
    _LAYOUT: ClassVar = (("gpadl_id", "I"),)
    gpadl_id: int


@dataclass(slots=True, frozen=True)
class RelIdReleased(ChannelMessage):
    """RELID_RELEASED (13), guest->host, 12 bytes (§3.5(f))."""

    TYPE: ClassVar = ChannelMessageType.REL_ID_RELEASED
    _LAYOUT: ClassVar = (("child_relid", "I"),)
    child_relid: int


@dataclass(slots=True, frozen=True)
class Unload(ChannelMessage):
    """UNLOAD (16), guest->host, header only."""

    TYPE: ClassVar = ChannelMessageType.UNLOAD
    _LAYOUT: ClassVar = ()


@dataclass(slots=True, frozen=True)
class UnloadComplete(ChannelMessage):
    """UNLOAD_RESPONSE (17; OpenVMM UNLOAD_COMPLETE), host->guest, header only, from Win7."""

    TYPE: ClassVar = ChannelMessageType.UNLOAD_COMPLETE
    _LAYOUT: ClassVar = ()


@dataclass(slots=True, frozen=True)
class OpenReservedChannel(ChannelMessage):
    """OPEN_RESERVED_CHANNEL (18), guest->host, 28 bytes (Win10)."""

    TYPE: ClassVar = ChannelMessageType.OPEN_RESERVED_CHANNEL
    _LAYOUT: ClassVar = (
        ("channel_id", "I"),
        ("target_vp", "I"),
        ("target_sint", "I"),
        ("ring_gpadl_id", "I"),
        ("downstream_page_offset", "I"),
    )
    channel_id: int
    target_vp: int
    target_sint: int
    ring_gpadl_id: int
    downstream_page_offset: int


@dataclass(slots=True, frozen=True)
class CloseReservedChannel(ChannelMessage):
    """CLOSE_RESERVED_CHANNEL (19), guest->host, 20 bytes."""

    TYPE: ClassVar = ChannelMessageType.CLOSE_RESERVED_CHANNEL
    _LAYOUT: ClassVar = (("channel_id", "I"), ("target_vp", "I"), ("target_sint", "I"))
    channel_id: int
    target_vp: int
    target_sint: int


@dataclass(slots=True, frozen=True)
class CloseReservedChannelResponse(ChannelMessage):
    """CLOSE_RESERVED_RESPONSE (20), host->guest, 12 bytes."""

    TYPE: ClassVar = ChannelMessageType.CLOSE_RESERVED_RESPONSE
    _LAYOUT: ClassVar = (("channel_id", "I"),)
    channel_id: int


@dataclass(slots=True, frozen=True)
class ModifyChannel(ChannelMessage):
    """MODIFYCHANNEL (22), guest->host, 16 bytes, from 4.1 (§3.5(h))."""

    TYPE: ClassVar = ChannelMessageType.MODIFY_CHANNEL
    _LAYOUT: ClassVar = (("child_relid", "I"), ("target_vp", "I"))
    child_relid: int
    target_vp: int


@dataclass(slots=True, frozen=True)
class TlConnectResult(ChannelMessage):
    """TL_CONNECT_RESULT (23), host->guest, 44 bytes; ``status`` is a signed NTSTATUS."""

    TYPE: ClassVar = ChannelMessageType.TL_CONNECT_RESULT
    _LAYOUT: ClassVar = (("endpoint_id", "G"), ("service_id", "G"), ("status", "i"))
    endpoint_id: uuid.UUID
    service_id: uuid.UUID
    status: int


@dataclass(slots=True, frozen=True)
class ModifyChannelResponse(ChannelMessage):
    """MODIFYCHANNEL_RESPONSE (24), host->guest, 16 bytes, from 5.3; ``status`` is signed."""

    TYPE: ClassVar = ChannelMessageType.MODIFY_CHANNEL_RESPONSE
    _LAYOUT: ClassVar = (("child_relid", "I"), ("status", "i"))
    child_relid: int
    status: int


@dataclass(slots=True, frozen=True)
class ModifyConnection(ChannelMessage):
    """MODIFY_CONNECTION (25), guest->host, 24 bytes (6.0 + feature ``modify_connection``)."""

    TYPE: ClassVar = ChannelMessageType.MODIFY_CONNECTION
    _LAYOUT: ClassVar = (
        ("parent_to_child_monitor_page_gpa", "Q"),
        ("child_to_parent_monitor_page_gpa", "Q"),
    )
    parent_to_child_monitor_page_gpa: int
    child_to_parent_monitor_page_gpa: int


@dataclass(slots=True, frozen=True)
class ModifyConnectionResponse(ChannelMessage):
    """MODIFY_CONNECTION_RESPONSE (26), host->guest, 9 bytes."""

    TYPE: ClassVar = ChannelMessageType.MODIFY_CONNECTION_RESPONSE
    _LAYOUT: ClassVar = (("connection_state", "B"),)
    connection_state: int


@dataclass(slots=True, frozen=True)
class Pause(ChannelMessage):
    """PAUSE (27), guest->host, header only (6.0 + feature ``pause_resume``)."""

    TYPE: ClassVar = ChannelMessageType.PAUSE
    _LAYOUT: ClassVar = ()


@dataclass(slots=True, frozen=True)
class PauseResponse(ChannelMessage):
    """PAUSE_RESPONSE (28), host->guest, header only."""

    TYPE: ClassVar = ChannelMessageType.PAUSE_RESPONSE
    _LAYOUT: ClassVar = ()


@dataclass(slots=True, frozen=True)
class Resume(ChannelMessage):
    """RESUME (29), guest->host, header only."""

    TYPE: ClassVar = ChannelMessageType.RESUME
    _LAYOUT: ClassVar = ()


# --- messages with more than one form (§3.3) ----------------------------------------------

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_OPEN2 = struct.Struct("<IHH")
_VERSION_RESPONSE3 = struct.Struct("<4xQQ")  # padding @20, monitor pages @24, @32


def _words(data: bytes | bytearray | memoryview, offset: int) -> tuple[int, ...]:
    count = (len(data) - offset) // 8
    return struct.unpack_from(f"<{count}Q", data, offset)


@dataclass(slots=True, frozen=True)
class OpenChannel(ChannelMessage):
    """OPENCHANNEL (5), guest->host: 148 bytes, or 156 in the OpenChannel2 form (6.0) that adds
    ``connection_id`` u32 @148, ``event_flag`` u16 @152 and ``flags`` u16 @154. The three are
    ``None`` in the short form; setting ``connection_id`` selects the long one.
    ``downstream_ring_page_offset`` is the page offset of the host->guest ring in the GPADL.
    """

    TYPE: ClassVar = ChannelMessageType.OPEN_CHANNEL
    EXTENDED_SIZE: ClassVar[int] = 156
    _LAYOUT: ClassVar = (
        ("child_relid", "I"),
        ("open_id", "I"),
        ("ring_gpadl_id", "I"),
        ("target_vp", "I"),
        ("downstream_ring_page_offset", "I"),
        ("user_data", f"{USER_DATA_SIZE}s"),
    )

    child_relid: int
    open_id: int
    ring_gpadl_id: int
    target_vp: int
    downstream_ring_page_offset: int
    user_data: bytes = b""
    connection_id: int | None = None
    event_flag: int | None = None
    flags: int | None = None

    def __post_init__(self) -> None:
        _pad_user_data(self, "user_data", self.TYPE)

    def pack(self) -> bytes:
        base = ChannelMessage.pack(self)
        if self.connection_id is None:
            return base
        return base + _OPEN2.pack(self.connection_id, self.event_flag or 0, self.flags or 0)

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> Self:
        fields = cls._fields(data)
        if len(data) >= cls.EXTENDED_SIZE:
            extra = _OPEN2.unpack_from(data, cls.SIZE)
            fields.update(zip(("connection_id", "event_flag", "flags"), extra, strict=True))
        return cls(**fields)


@dataclass(slots=True, frozen=True)
class InitiateContact(ChannelMessage):
    """INITIATE_CONTACT (14), guest->host: 40 bytes, or 56 with ``client_id`` @40 (6.0 and
    feature ``client_id``).

    Bytes 16..24 are a union chosen by ``version_requested``: below 5.0 the legacy
    ``interrupt_page`` GPA (u64); from 5.0 ``msg_sint`` u8 @16, ``msg_vtl`` u8 @17, reserved u16,
    ``feature_flags`` u32 @20. Fields of the form not in use must stay 0.
    """

    TYPE: ClassVar = ChannelMessageType.INITIATE_CONTACT
    EXTENDED_SIZE: ClassVar[int] = 56
    _LAYOUT: ClassVar = (
        ("version_requested", "I"),
        ("target_vcpu", "I"),
        ("target_info", "Q"),
        ("monitor_page1", "Q"),
        ("monitor_page2", "Q"),
    )

    version_requested: int
    target_vcpu: int = 0
    interrupt_page: int = 0
    msg_sint: int = 0
    msg_vtl: int = 0
    feature_flags: int = 0
    monitor_page1: int = 0
    monitor_page2: int = 0
    client_id: uuid.UUID | None = None

    def __post_init__(self) -> None:
        if self.version_requested >= VmbusVersion.WIN10_V5:
            if self.interrupt_page:
                raise ValueError(
                    "INITIATE_CONTACT.interrupt_page: found a GPA, expected 0 from 5.0 on "
                    "(bytes 16..24 carry msg_sint/msg_vtl/feature_flags)"
                )
        elif self.msg_sint or self.msg_vtl or self.feature_flags:
            raise ValueError(
                "INITIATE_CONTACT.msg_sint/msg_vtl/feature_flags: found non-zero, expected 0 "
                "below 5.0 (bytes 16..24 are the interrupt page)"
            )

    @property
    def target_info(self) -> int:
        """Bytes 16..24 as one u64, whichever form is in use."""
        if self.version_requested >= VmbusVersion.WIN10_V5:
            return self.msg_sint | self.msg_vtl << 8 | self.feature_flags << 32
        return self.interrupt_page

    def pack(self) -> bytes:
        base = ChannelMessage.pack(self)
        return base if self.client_id is None else base + self.client_id.bytes_le

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> Self:
        fields = cls._fields(data)
        info = fields.pop("target_info")
        if fields["version_requested"] >= VmbusVersion.WIN10_V5:
            fields.update(msg_sint=info & 0xFF, msg_vtl=info >> 8 & 0xFF, feature_flags=info >> 32)
        else:
            fields["interrupt_page"] = info
        if len(data) >= cls.EXTENDED_SIZE:
            fields["client_id"] = uuid.UUID(bytes_le=bytes(data[cls.SIZE : cls.EXTENDED_SIZE]))
        return cls(**fields)


@dataclass(slots=True, frozen=True)
class VersionResponse(ChannelMessage):
    """VERSION_RESPONSE (15), host->guest: 16 bytes; 20 (VersionResponse2, 6.0) adds
    ``supported_features`` u32 @16; 40 (VersionResponse3) adds padding and the server-chosen
    monitor page GPAs @24 and @32. Optional fields are ``None`` when their form is not used.

    ``selected_version_or_connection_id`` (@12) is the selected version below 5.0 and the
    message connection id the guest must post to from 5.0 on.
    """

    TYPE: ClassVar = ChannelMessageType.VERSION_RESPONSE
    SIZE2: ClassVar[int] = 20
    SIZE3: ClassVar[int] = 40
    _LAYOUT: ClassVar = (
        ("version_supported", "B"),
        ("connection_state", "B"),
        ("", "2x"),
        ("selected_version_or_connection_id", "I"),
    )

    version_supported: int
    connection_state: int = 0
    selected_version_or_connection_id: int = 0
    supported_features: int | None = None
    parent_to_child_monitor_page_gpa: int | None = None
    child_to_parent_monitor_page_gpa: int | None = None

    def pack(self) -> bytes:
        data = ChannelMessage.pack(self)
        if self.supported_features is None and self.parent_to_child_monitor_page_gpa is None:
            return data
        data += _U32.pack(self.supported_features or 0)
        if self.parent_to_child_monitor_page_gpa is None:
            return data
        return data + _VERSION_RESPONSE3.pack(
            self.parent_to_child_monitor_page_gpa, self.child_to_parent_monitor_page_gpa or 0
        )

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> Self:
        fields = cls._fields(data)
        if len(data) >= cls.SIZE2:
            fields["supported_features"] = _U32.unpack_from(data, cls.SIZE)[0]
        if len(data) >= cls.SIZE3:
            p2c, c2p = _VERSION_RESPONSE3.unpack_from(data, cls.SIZE2)
            fields.update(
                parent_to_child_monitor_page_gpa=p2c, child_to_parent_monitor_page_gpa=c2p
            )
        return cls(**fields)


@dataclass(slots=True, frozen=True)
class TlConnectRequest(ChannelMessage):
    """TL_CONNECT_REQUEST (21), guest->host: 40 bytes, or 56 with ``silo_id`` @40 (5.2)."""

    TYPE: ClassVar = ChannelMessageType.TL_CONNECT_REQUEST
    EXTENDED_SIZE: ClassVar[int] = 56
    _LAYOUT: ClassVar = (("guest_endpoint_id", "G"), ("host_service_id", "G"))

    guest_endpoint_id: uuid.UUID
    host_service_id: uuid.UUID
    silo_id: uuid.UUID | None = None

    def pack(self) -> bytes:
        base = ChannelMessage.pack(self)
        return base if self.silo_id is None else base + self.silo_id.bytes_le

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> Self:
        fields = cls._fields(data)
        if len(data) >= cls.EXTENDED_SIZE:
            fields["silo_id"] = uuid.UUID(bytes_le=bytes(data[cls.SIZE : cls.EXTENDED_SIZE]))
        return cls(**fields)


@dataclass(slots=True, frozen=True)
class GpadlHeader(ChannelMessage):
    """GPADL_HEADER (8), guest->host, 20 bytes plus u64 words, at most 240 bytes.

    ``data`` is the first part of the GPA range buffer: for each range one word
    ``byte_count | byte_offset << 32`` followed by its PFNs. ``range_buflen`` is the byte
    size of that whole buffer across the header and every body (§3.3, §3.5(b)).
    """

    TYPE: ClassVar = ChannelMessageType.GPADL_HEADER
    _LAYOUT: ClassVar = (
        ("child_relid", "I"),
        ("gpadl_id", "I"),
        ("range_buflen", "H"),
        ("rangecount", "H"),
    )

    child_relid: int
    gpadl_id: int
    range_buflen: int
    rangecount: int
    data: tuple[int, ...] = ()

    def pack(self) -> bytes:
        return ChannelMessage.pack(self) + struct.pack(f"<{len(self.data)}Q", *self.data)

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> Self:
        return cls(**cls._fields(data), data=_words(data, cls.SIZE))


@dataclass(slots=True, frozen=True)
class GpadlBody(ChannelMessage):
    """GPADL_BODY (9), guest->host, 16 bytes plus u64 words: the next part of the range buffer
    of GPADL ``gpadl_id``. ``msgnumber`` (@8) is Linux's sequence number; hosts ignore it.
    """

    TYPE: ClassVar = ChannelMessageType.GPADL_BODY
    _LAYOUT: ClassVar = (("msgnumber", "I"), ("gpadl_id", "I"))

    msgnumber: int
    gpadl_id: int
    data: tuple[int, ...] = ()

    def pack(self) -> bytes:
        return ChannelMessage.pack(self) + struct.pack(f"<{len(self.data)}Q", *self.data)

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> Self:
        return cls(**cls._fields(data), data=_words(data, cls.SIZE))


# --- the table -----------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class MessageSpec:
    """One row of ``MESSAGES``: everything the protocols know about a message type."""

    #: The message number.
    type: ChannelMessageType
    #: Linux's name (``CHANNELMSG_`` dropped); OpenVMM's for 25..29, which Linux lacks.
    name: str
    #: The dataclass that packs and unpacks it.
    cls: builtins.type[ChannelMessage]
    #: Smallest valid size, header included.
    size: int
    #: The sizes of its fixed forms, smallest first; empty for the PFN-carrying GPADL messages.
    sizes: tuple[int, ...]
    #: Lowest negotiated version that allows it; ``None`` = allowed while disconnected too.
    min_version: VmbusVersion | None
    #: Who may send it.
    direction: Direction
    #: A feature flag that must also have been granted (6.0 messages), else ``None``.
    feature: FeatureFlag | None = None
    #: ``(size, features)`` of the forms that need, besides a 6.0 connection, at least one of
    #: ``features`` granted; without, the bytes past the smaller form are ignored.
    form_features: tuple[tuple[int, FeatureFlag], ...] = ()

    @property
    def variable(self) -> bool:
        """Whether the message has more than one valid size."""
        return len(self.sizes) != 1


_H2G = Direction.HOST_TO_GUEST
_G2H = Direction.GUEST_TO_HOST
_V = VmbusVersion

_ROWS: tuple[tuple[type[ChannelMessage], str, Direction, VmbusVersion | None, tuple[int, ...],
                   FeatureFlag | None], ...] = (
    (OfferChannel, "OFFERCHANNEL", _H2G, _V.WS2008, (196,), None),
    (RescindChannelOffer, "RESCIND_CHANNELOFFER", _H2G, _V.WS2008, (12,), None),
    (RequestOffers, "REQUESTOFFERS", _G2H, _V.WS2008, (8,), None),
    (AllOffersDelivered, "ALLOFFERS_DELIVERED", _H2G, _V.WS2008, (8,), None),
    (OpenChannel, "OPENCHANNEL", _G2H, _V.WS2008, (148, 156), None),
    (OpenResult, "OPENCHANNEL_RESULT", _H2G, _V.WS2008, (20,), None),
    (CloseChannel, "CLOSECHANNEL", _G2H, _V.WS2008, (12,), None),
    (GpadlHeader, "GPADL_HEADER", _G2H, _V.WS2008, (), None),
    (GpadlBody, "GPADL_BODY", _G2H, _V.WS2008, (), None),
    (GpadlCreated, "GPADL_CREATED", _H2G, _V.WS2008, (20,), None),
    (GpadlTeardown, "GPADL_TEARDOWN", _G2H, _V.WS2008, (16,), None),
    (GpadlTorndown, "GPADL_TORNDOWN", _H2G, _V.WS2008, (12,), None),
    (RelIdReleased, "RELID_RELEASED", _G2H, _V.WS2008, (12,), None),
    (InitiateContact, "INITIATE_CONTACT", _G2H, None, (40, 56), None),
    (VersionResponse, "VERSION_RESPONSE", _H2G, None, (16, 20, 40), None),
    (Unload, "UNLOAD", _G2H, _V.WS2008, (8,), None),
    (UnloadComplete, "UNLOAD_RESPONSE", _H2G, _V.WIN7, (8,), None),
    (OpenReservedChannel, "OPEN_RESERVED_CHANNEL", _G2H, _V.WIN10, (28,), None),
    (CloseReservedChannel, "CLOSE_RESERVED_CHANNEL", _G2H, _V.WS2008, (20,), None),
    (CloseReservedChannelResponse, "CLOSE_RESERVED_RESPONSE", _H2G, _V.WIN10, (12,), None),
    (TlConnectRequest, "TL_CONNECT_REQUEST", _G2H, _V.WIN10, (40, 56), None),
    (ModifyChannel, "MODIFYCHANNEL", _G2H, _V.WIN10_V4_1, (16,), None),
    (TlConnectResult, "TL_CONNECT_RESULT", _H2G, _V.WIN10_V4_1, (44,), None),
    (ModifyChannelResponse, "MODIFYCHANNEL_RESPONSE", _H2G, _V.WIN10_V5_3, (16,), None),
    (ModifyConnection, "MODIFY_CONNECTION", _G2H, _V.WIN10_V6_0, (24,),
     FeatureFlag.MODIFY_CONNECTION),
    (ModifyConnectionResponse, "MODIFY_CONNECTION_RESPONSE", _H2G, _V.WIN10_V6_0, (9,),
     FeatureFlag.MODIFY_CONNECTION),
    (Pause, "PAUSE", _G2H, _V.WIN10_V6_0, (8,), FeatureFlag.PAUSE_RESUME),
    (PauseResponse, "PAUSE_RESPONSE", _H2G, _V.WIN10_V6_0, (8,), FeatureFlag.PAUSE_RESUME),
    (Resume, "RESUME", _G2H, _V.WIN10_V6_0, (8,), FeatureFlag.PAUSE_RESUME),
)

#: Forms a feature unlocks (§3.2, §3.3): OpenChannel2 (156 bytes) is OpenVMM's parse choice only
#: for ``Copper features:(guest_specified_signal_parameters | channel_interrupt_redirection)``
#: (vmbus_core protocol.rs).
_FORM_FEATURES: dict[ChannelMessageType, tuple[tuple[int, FeatureFlag], ...]] = {
    ChannelMessageType.OPEN_CHANNEL: (
        (OpenChannel.EXTENDED_SIZE,
         FeatureFlag.GUEST_SPECIFIED_SIGNAL_PARAMETERS | FeatureFlag.CHANNEL_INTERRUPT_REDIRECTION),
    ),
}

#: Every channel message type except INVALID (0), by number (§3.2). MODIFYCHANNEL's 4.1 minimum
#: is from §3.4. CLOSE_RESERVED_CHANNEL's OpenVMM minimum is 0, which in OpenVMM's table means
#: "may be received while disconnected" (vmbus_core protocol.rs), not "any connected version";
#: here it needs a connection (WS2008). Reserved channels are not implemented, so the message is
#: refused either way; revisit this row if they are.
MESSAGES: Mapping[ChannelMessageType, MessageSpec] = MappingProxyType(
    {
        cls.TYPE: MessageSpec(cls.TYPE, name, cls, cls.SIZE, sizes, min_version, direction, feature,
                              _FORM_FEATURES.get(cls.TYPE, ()))
        for cls, name, direction, min_version, sizes, feature in _ROWS
    }
)
#: ``MESSAGES`` by the plain wire number: parse_message's lookup without an enum call.
_SPECS: dict[int, MessageSpec] = {int(t): spec for t, spec in MESSAGES.items()}


def _form_size(
    spec: MessageSpec, data: bytes, version: VmbusVersion | None, features: FeatureFlag | None
) -> int:
    """How many bytes of ``data`` the form in use covers (the rest is ignored, as OpenVMM does)."""
    t, n = spec.type, len(data)
    newest = version is None or version >= VmbusVersion.WIN10_V6_0
    if t is ChannelMessageType.OPEN_CHANNEL:
        if version is None or not newest:
            return spec.size
        return max((size for size, needs in spec.form_features
                    if n >= size and (features is None or features & needs)),
                   default=spec.size)
    if t is ChannelMessageType.VERSION_RESPONSE:
        return max((s for s in spec.sizes if s <= n and (newest or s == 16)), default=16)
    if t is ChannelMessageType.TL_CONNECT_REQUEST:
        silo = version is not None and version >= VmbusVersion.WIN10_V5_2
        return 56 if silo and n >= 56 else 40
    if t is ChannelMessageType.INITIATE_CONTACT:
        requested, info = struct.unpack_from("<I4xQ", data, HEADER_SIZE)
        wants_id = requested >= VmbusVersion.WIN10_V6_0 and info >> 32 & FeatureFlag.CLIENT_ID
        if wants_id and n < 56:
            raise ProtocolError(t, "size", f"{n} bytes", "56 bytes (feature client_id is set)")
        return 56 if wants_id else 40
    return n


def _check_gpadl(spec: MessageSpec, data: bytes) -> None:
    t, n = spec.type, len(data)
    extra = n - spec.size
    if extra % 8:
        raise ProtocolError(
            t, "size", f"{n} bytes", f"{spec.size} + a multiple of 8 bytes (u64 PFN words)"
        )
    if t is ChannelMessageType.GPADL_BODY:
        if not extra:
            raise ProtocolError(t, "size", f"{n} bytes", f"at least {spec.size + 8} (one PFN)")
        return
    range_buflen, rangecount = struct.unpack_from("<HH", data, 16)
    if rangecount == 0:
        raise ProtocolError(t, "rangecount", 0, "at least 1")
    if range_buflen % 8 or range_buflen < 8 * rangecount:
        raise ProtocolError(
            t, "range_buflen", range_buflen, f"a multiple of 8, at least {8 * rangecount}"
        )
    if extra > range_buflen:
        raise ProtocolError(
            t, "size", f"{n} bytes", f"at most {spec.size + range_buflen} (range_buflen)"
        )


def parse_message(
    data: bytes | bytearray | memoryview,
    *,
    version: VmbusVersion | None,
    direction: Direction,
    features: FeatureFlag | None = None,
) -> ChannelMessage:
    """Validate and decode one channel message received from the other side.

    ``version`` is the negotiated version, or ``None`` while disconnected (a guest passes the
    version it is proposing while it waits for VERSION_RESPONSE). ``direction`` is the direction
    the message travelled. ``features``, if given, are the granted feature flags, checked for
    the 6.0 messages that need one. Checks, in order: header present, size at most 240, known
    type, direction, version (INITIATE_CONTACT and VERSION_RESPONSE are allowed at any time),
    feature, minimum size, and for GPADL messages that the PFN words fit ``range_buflen`` and
    ``rangecount``. Forms are told apart by length; the 6.0 extensions are decoded only when
    ``version`` allows them, and a form that needs a feature (``MessageSpec.form_features``:
    OpenChannel2) only when ``features`` grants one of them (or is ``None``, unchecked).
    Raises ``ProtocolError``; never anything else.
    """
    if type(data) is not bytes:
        data = bytes(data)
    n = len(data)
    if n < HEADER_SIZE:
        raise ProtocolError(None, "size", f"{n} bytes", f"at least {HEADER_SIZE} (the header)")
    raw_type = _U32.unpack_from(data)[0]
    spec = _SPECS.get(raw_type)
    if spec is None:
        raise ProtocolError(None, "msgtype", raw_type, "a channel message type 1..29")
    t = spec.type
    if n > MAX_MESSAGE_SIZE:
        raise ProtocolError(t, "size", f"{n} bytes", f"at most {MAX_MESSAGE_SIZE}")
    if spec.direction is not direction:
        raise ProtocolError(t, "direction", direction.value, spec.direction.value)
    if spec.min_version is not None:
        if version is None:
            raise ProtocolError(t, "version", "not connected", "a negotiated version")
        if version < spec.min_version:
            raise ProtocolError(
                t, "version", VmbusVersion(version).name, f"{spec.min_version.name} or newer"
            )
    if spec.feature is not None and features is not None and not features & spec.feature:
        raise ProtocolError(t, "feature", f"{features!r}", f"{spec.feature!r} granted")
    if n < spec.size:
        raise ProtocolError(t, "size", f"{n} bytes", f"at least {spec.size}")
    if not spec.sizes:
        _check_gpadl(spec, data)
        return spec.cls.unpack(data)
    return spec.cls.unpack(data[: _form_size(spec, data, version, features)])
