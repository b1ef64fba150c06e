"""VMBus protocol test support: Hypothesis strategies derived from the ``MESSAGES`` table, the
recording notifiers both state machines are tested through, and ``ProtocolPair``, which wires a
``ServerProtocol`` and a ``ClientProtocol`` back to back in memory.
"""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from winhv.drivers.vmbus.protocol import (
    MESSAGES,
    USER_DATA_SIZE,
    ChannelMessage,
    ChannelMessageType,
    ClientProtocol,
    ConnectionInfo,
    Direction,
    FeatureFlag,
    Gpadl,
    GpadlBody,
    GpadlHeader,
    InitiateContact,
    OfferChannel,
    OfferParams,
    OpenChannel,
    OpenRequest,
    ProtocolError,
    ServerProtocol,
    TlConnectRequest,
    VersionResponse,
    VmbusVersion,
)

# --- strategies ------------------------------------------------------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
u64 = st.integers(0, 0xFFFF_FFFF_FFFF_FFFF)
i32 = st.integers(-(1 << 31), (1 << 31) - 1)
versions = st.sampled_from(list(VmbusVersion))
#: Relids and GPADL ids that often name something real in a small scenario.
relids = st.integers(0, 6) | u32
gpadl_ids = st.integers(0xE1E10, 0xE1E14) | u32

_CODES: dict[str, st.SearchStrategy[Any]] = {
    "B": u8, "H": u16, "I": u32, "Q": u64, "i": i32, "G": st.uuids(),
    f"{USER_DATA_SIZE}s": st.binary(max_size=USER_DATA_SIZE),
}
_FIELD_OVERRIDES: dict[str, st.SearchStrategy[Any]] = {
    "child_relid": relids, "gpadl_id": gpadl_ids, "ring_gpadl_id": gpadl_ids,
}


def _fixed(cls: type[ChannelMessage]) -> st.SearchStrategy[ChannelMessage]:
    kwargs = {
        name: _FIELD_OVERRIDES.get(name, _CODES[code])
        for name, code in cls._LAYOUT
        if name
    }
    return st.builds(cls, **kwargs)


def _words(max_words: int) -> st.SearchStrategy[tuple[int, ...]]:
    return st.lists(u64 | st.integers(0, 0xFFFF), max_size=max_words).map(tuple)


@st.composite
def _initiate_contact(draw: st.DrawFn) -> InitiateContact:
    version = draw(versions)
    monitors = draw(st.sampled_from([(0, 0), (0x1000, 0x2000)]))
    if version < VmbusVersion.WIN10_V5:
        return InitiateContact(version, draw(u32), interrupt_page=draw(u64),
                               monitor_page1=monitors[0], monitor_page2=monitors[1])
    features = draw(u32) if version >= VmbusVersion.WIN10_V6_0 else 0
    wants_id = version >= VmbusVersion.WIN10_V6_0 and features & FeatureFlag.CLIENT_ID
    return InitiateContact(
        version, draw(u32), msg_sint=draw(u8), msg_vtl=draw(u8), feature_flags=features,
        monitor_page1=monitors[0], monitor_page2=monitors[1],
        client_id=draw(st.uuids()) if wants_id else None,
    )


@st.composite
def _version_response(draw: st.DrawFn) -> VersionResponse:
    form = draw(st.sampled_from((16, 20, 40)))
    return VersionResponse(
        draw(st.integers(0, 1)), draw(st.integers(0, 2)), draw(u32),
        supported_features=draw(u32) if form >= 20 else None,
        parent_to_child_monitor_page_gpa=draw(u64) if form == 40 else None,
        child_to_parent_monitor_page_gpa=draw(u64) if form == 40 else None,
    )


@st.composite
def _open_channel(draw: st.DrawFn) -> OpenChannel:
    long_form = draw(st.booleans())
    return OpenChannel(
        draw(relids), draw(u32), draw(gpadl_ids), draw(u32), draw(st.integers(0, 8) | u32),
        draw(st.binary(max_size=USER_DATA_SIZE)),
        connection_id=draw(u32) if long_form else None,
        event_flag=draw(u16) if long_form else None,
        flags=draw(u16) if long_form else None,
    )


@st.composite
def _gpadl_header(draw: st.DrawFn) -> GpadlHeader:
    data = draw(_words(27))
    return GpadlHeader(draw(relids), draw(gpadl_ids),
                       draw(st.sampled_from([8 * len(data), 8 * (len(data) + 3)]) | u16),
                       draw(st.integers(1, 2) | u16), data)


_VARIABLE: dict[ChannelMessageType, st.SearchStrategy[Any]] = {
    ChannelMessageType.INITIATE_CONTACT: _initiate_contact(),
    ChannelMessageType.VERSION_RESPONSE: _version_response(),
    ChannelMessageType.OPEN_CHANNEL: _open_channel(),
    ChannelMessageType.GPADL_HEADER: _gpadl_header(),
    ChannelMessageType.GPADL_BODY: st.builds(GpadlBody, u32, gpadl_ids, _words(28)),
    ChannelMessageType.TL_CONNECT_REQUEST: st.builds(
        TlConnectRequest, st.uuids(), st.uuids(), st.none() | st.uuids()
    ),
}


def messages_of(message_type: ChannelMessageType) -> st.SearchStrategy[ChannelMessage]:
    """Well-formed instances of one message type (fields random, sizes valid)."""
    spec = MESSAGES[message_type]
    if message_type in _VARIABLE:
        return _VARIABLE[message_type]
    return _fixed(spec.cls)


def messages(direction: Direction | None = None) -> st.SearchStrategy[ChannelMessage]:
    """Well-formed instances of every message type in the table (optionally one direction)."""
    return st.one_of(
        [messages_of(t) for t, spec in MESSAGES.items()
         if direction is None or spec.direction is direction]
    )


def offer_params() -> st.SearchStrategy[OfferParams]:
    return st.builds(OfferParams, st.uuids(), st.uuids(), u16, u16,
                     st.binary(max_size=USER_DATA_SIZE), st.integers(0, 3), u16)


# --- recording notifiers --------------------------------------------------------------------


@dataclass
class RecordingServerNotifier:
    """A ``ServerNotifier`` that records everything and answers with configurable statuses."""

    open_status: int | None = 0
    gpadl_status: int = 0
    modify_status: int = 0
    sent: list[ChannelMessage] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    errors: list[ProtocolError] = field(default_factory=list)
    info: ConnectionInfo | None = None

    def take(self) -> list[ChannelMessage]:
        out, self.sent = self.sent, []
        return out

    def send(self, message: ChannelMessage) -> None:
        self.sent.append(message)

    def connected(self, info: ConnectionInfo) -> None:
        self.info = info
        self.events.append(("connected", info.version))

    def gpadl_created(self, gpadl: Gpadl) -> int:
        self.events.append(("gpadl_created", gpadl.relid, gpadl.gpadl_id))
        return self.gpadl_status

    def gpadl_torn_down(self, relid: int, gpadl_id: int) -> None:
        self.events.append(("gpadl_torn_down", relid, gpadl_id))

    def open_channel(self, relid: int, request: OpenRequest) -> int | None:
        self.events.append(("open_channel", relid, request))
        return self.open_status

    def close_channel(self, relid: int) -> None:
        self.events.append(("close_channel", relid))

    def modify_channel(self, relid: int, target_vp: int) -> int:
        self.events.append(("modify_channel", relid, target_vp))
        return self.modify_status

    def relid_released(self, relid: int) -> None:
        self.events.append(("relid_released", relid))

    def unloaded(self) -> None:
        self.events.append(("unloaded",))

    def protocol_error(self, error: ProtocolError) -> None:
        self.errors.append(error)


@dataclass
class RecordingClientNotifier:
    """A ``ClientNotifier`` that records everything."""

    sent: list[tuple[ChannelMessage, int]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    errors: list[ProtocolError] = field(default_factory=list)

    def take(self) -> list[tuple[ChannelMessage, int]]:
        out, self.sent = self.sent, []
        return out

    def send(self, message: ChannelMessage, connection_id: int) -> None:
        self.sent.append((message, connection_id))

    def connected(self, version: VmbusVersion) -> None:
        self.events.append(("connected", version))

    def offer(self, offer: OfferChannel) -> None:
        self.events.append(("offer", offer.child_relid))

    def all_offers_delivered(self) -> None:
        self.events.append(("all_offers_delivered",))

    def rescinded(self, relid: int) -> None:
        self.events.append(("rescinded", relid))

    def open_result(self, relid: int, status: int) -> None:
        self.events.append(("open_result", relid, status))

    def gpadl_created(self, relid: int, gpadl_id: int, status: int) -> None:
        self.events.append(("gpadl_created", relid, gpadl_id, status))

    def gpadl_torn_down(self, gpadl_id: int) -> None:
        self.events.append(("gpadl_torn_down", gpadl_id))

    def modify_channel_response(self, relid: int, status: int) -> None:
        self.events.append(("modify_channel_response", relid, status))

    def unloaded(self) -> None:
        self.events.append(("unloaded",))

    def protocol_error(self, error: ProtocolError) -> None:
        self.errors.append(error)


# --- a server and a client back to back -----------------------------------------------------


class ProtocolPair:
    """A server and a client joined by two in-memory queues of packed bytes.

    ``pump()`` delivers until both queues are empty; ``transcript`` keeps every message as
    ``(direction, message, connection_id)`` (connection id ``None`` host->guest).
    """

    def __init__(self, *, server: dict[str, Any] | None = None,
                 client: dict[str, Any] | None = None) -> None:
        self.server_notifier = RecordingServerNotifier()
        self.client_notifier = RecordingClientNotifier()
        self.server = ServerProtocol(notifier=self.server_notifier, **(server or {}))
        self.client = ClientProtocol(notifier=self.client_notifier, **(client or {}))
        self.transcript: list[tuple[Direction, ChannelMessage, int | None]] = []
        self.to_host: deque[tuple[bytes, int]] = deque()

    def pump(self) -> None:
        while True:
            for message, conn in self.client_notifier.take():
                self.transcript.append((Direction.GUEST_TO_HOST, message, conn))
                self.to_host.append((message.pack(), conn))
            to_guest = self.server_notifier.take()
            for message in to_guest:
                self.transcript.append((Direction.HOST_TO_GUEST, message, None))
            if not self.to_host and not to_guest:
                return
            while self.to_host:
                data, conn = self.to_host.popleft()
                self.server.receive(data, conn)
            for message in to_guest:
                self.client.receive(message.pack())

    def types(self, since: int = 0) -> list[ChannelMessageType]:
        """The message types of the transcript from index ``since`` on."""
        return [m.TYPE for _, m, _ in self.transcript[since:]]

    def offer(self, name: str = "dev", **kwargs: Any) -> int:
        """Offer a channel with a deterministic interface/instance GUID derived from ``name``."""
        params = OfferParams(uuid.uuid5(uuid.NAMESPACE_DNS, f"if-{name}"),
                             uuid.uuid5(uuid.NAMESPACE_DNS, f"inst-{name}"), **kwargs)
        relid = self.server.offer(params)
        self.pump()
        return relid

    def connect(self) -> None:
        self.client.connect()
        self.pump()

    def open(self, relid: int, pages: int = 4, downstream: int = 2) -> int:
        """Create a ring GPADL of ``pages`` pages on ``relid`` and open the channel with it."""
        gpadl_id = self.client.create_gpadl(relid, list(range(0x100, 0x100 + pages)))
        self.pump()
        self.client.open_channel(relid, gpadl_id, downstream)
        self.pump()
        return gpadl_id

    def assert_clean(self) -> None:
        assert self.server_notifier.errors == []
        assert self.client_notifier.errors == []
