"""The guest side of the VMBus channel-management protocol, sans-IO (Linux ``vmbus`` driver's
``connection.c``/``channel_mgmt.c`` role).

``ClientProtocol`` negotiates a version (newest first, falling back on refusal, posting each
INITIATE_CONTACT on the connection id that version needs), requests offers, and then turns the
guest driver's calls (``create_gpadl``, ``open_channel``, ...) into messages and the host's
answers into notifier upcalls. Like the server it owns no I/O: it sends through
``notifier.send(message, connection_id)`` and is fed with ``receive(data)``.

The host is not trusted blindly either: an answer the client did not ask for (an unknown relid,
a GPADL_CREATED for no pending GPADL) becomes ``notifier.protocol_error`` and is otherwise
ignored. Misuse by the guest's own driver code (opening an unknown relid, unloading while
disconnected) raises ``ValueError``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from types import MappingProxyType
from typing import Protocol

from ._gpadl import GpaRange, gpadl_messages
from ._messages import (
    MESSAGE_CONNECTION_ID,
    MESSAGE_CONNECTION_ID_MULTICLIENT,
    AllOffersDelivered,
    ChannelMessage,
    ChannelMessageType,
    CloseChannel,
    Direction,
    GpadlCreated,
    GpadlTeardown,
    GpadlTorndown,
    InitiateContact,
    ModifyChannel,
    ModifyChannelResponse,
    OfferChannel,
    OpenChannel,
    OpenResult,
    ProtocolError,
    RelIdReleased,
    RequestOffers,
    RescindChannelOffer,
    Unload,
    UnloadComplete,
    VersionResponse,
    parse_message,
)
from ._versions import CLIENT_VERSIONS, FeatureFlag, VmbusVersion

__all__ = ["FIRST_GPADL_ID", "ClientNotifier", "ClientProtocol", "ClientState"]

#: Linux's first GPADL handle; later ones count up from it (§3.5(b)).
FIRST_GPADL_ID = 0xE1E10
#: The SINT the host delivers control messages on (VMBUS_MESSAGE_SINT, §3.1).
_MESSAGE_SINT = 2

_T = ChannelMessageType
_H2G = Direction.HOST_TO_GUEST


class ClientState(Enum):
    """The guest's view of its connection."""

    DISCONNECTED = "disconnected"
    #: INITIATE_CONTACT sent, waiting for VERSION_RESPONSE.
    CONNECTING = "connecting"
    #: A version was accepted; REQUESTOFFERS sent.
    CONNECTED = "connected"
    #: UNLOAD sent, waiting for UNLOAD_RESPONSE.
    UNLOADING = "unloading"


class ClientNotifier(Protocol):
    """What ``ClientProtocol`` needs from the guest's I/O layer and bus driver."""

    def send(self, message: ChannelMessage, connection_id: int) -> None:
        """Post ``message`` with HvPostMessage to ``connection_id``."""

    def connected(self, version: VmbusVersion) -> None:
        """The host accepted ``version``; REQUESTOFFERS follows at once."""

    def offer(self, offer: OfferChannel) -> None:
        """A channel was offered (at start-up or hot-added later)."""

    def all_offers_delivered(self) -> None:
        """Every channel present at connect time has been offered."""

    def rescinded(self, relid: int) -> None:
        """The host withdrew ``relid``: close it if open, then ``release_relid``. An open still
        waiting for its OPENCHANNEL_RESULT is dropped first (none will come)."""

    def open_result(self, relid: int, status: int) -> None:
        """The answer to ``open_channel`` (status 0 = open)."""

    def gpadl_created(self, relid: int, gpadl_id: int, status: int) -> None:
        """The answer to ``create_gpadl`` (status 0 = created)."""

    def gpadl_torn_down(self, gpadl_id: int) -> None:
        """The answer to ``teardown_gpadl``."""

    def modify_channel_response(self, relid: int, status: int) -> None:
        """The answer to ``modify_channel`` (5.3 and later only)."""

    def unloaded(self) -> None:
        """UNLOAD completed; ``connect`` may be called again."""

    def protocol_error(self, error: ProtocolError) -> None:
        """The host sent something invalid or unexpected (ignored), or every version was
        refused (then the client is disconnected again).
        """


class ClientProtocol:
    """The guest's half of the VMBus connection (see the module docstring).

    ``versions`` are proposed in order (newest first). ``target_vcpu`` receives host control
    messages; ``interrupt_page`` is the legacy page GPA sent below 5.0; ``monitor_page1``/
    ``monitor_page2`` are the parent->child and child->parent monitor page GPAs (both or
    neither); ``features`` and ``client_id`` are proposed from 6.0.
    """

    def __init__(
        self,
        *,
        notifier: ClientNotifier,
        versions: Sequence[VmbusVersion] = CLIENT_VERSIONS,
        target_vcpu: int = 0,
        interrupt_page: int = 0,
        monitor_page1: int = 0,
        monitor_page2: int = 0,
        features: FeatureFlag = FeatureFlag(0),  # noqa: B008 (an immutable flag value)
        client_id: uuid.UUID | None = None,
    ) -> None:
        if not versions:
            raise ValueError("versions: found none, expected at least one version to propose")
        if FeatureFlag.CLIENT_ID in FeatureFlag(features) and client_id is None:
            raise ValueError("client_id: found None, expected a GUID (feature CLIENT_ID is set)")
        self._notifier = notifier
        self._versions = tuple(VmbusVersion(v) for v in versions)
        self._target_vcpu = target_vcpu
        self._interrupt_page = interrupt_page
        self._monitor_pages = (monitor_page1, monitor_page2)
        self._proposed_features = FeatureFlag(features)
        self._client_id = client_id
        self._next_gpadl_id = FIRST_GPADL_ID
        self._handlers: dict[ChannelMessageType, Callable[[ChannelMessage], None]] = {
            _T.VERSION_RESPONSE: self._on_version_response,  # type: ignore[dict-item]
            _T.OFFER_CHANNEL: self._on_offer,  # type: ignore[dict-item]
            _T.ALL_OFFERS_DELIVERED: self._on_all_offers,  # type: ignore[dict-item]
            _T.RESCIND_CHANNEL_OFFER: self._on_rescind,  # type: ignore[dict-item]
            _T.OPEN_CHANNEL_RESULT: self._on_open_result,  # type: ignore[dict-item]
            _T.GPADL_CREATED: self._on_gpadl_created,  # type: ignore[dict-item]
            _T.GPADL_TORNDOWN: self._on_gpadl_torndown,  # type: ignore[dict-item]
            _T.UNLOAD_COMPLETE: self._on_unload_complete,  # type: ignore[dict-item]
            _T.MODIFY_CHANNEL_RESPONSE: self._on_modify_response,  # type: ignore[dict-item]
        }
        self._reset()

    def _reset(self) -> None:
        self._state = ClientState.DISCONNECTED
        self._attempt = 0
        self._version: VmbusVersion | None = None
        self._features = FeatureFlag(0)
        self._message_connection_id = MESSAGE_CONNECTION_ID
        self._all_offers = False
        self._offers: dict[int, OfferChannel] = {}
        self._rescinded: set[int] = set()
        self._opening: dict[int, int] = {}
        self._open: set[int] = set()
        self._gpadls_pending: dict[int, int] = {}
        self._gpadls: dict[int, int] = {}
        self._teardowns: set[int] = set()
        self._modifying: set[int] = set()

    # --- state -----------------------------------------------------------------------------

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def version(self) -> VmbusVersion | None:
        """The negotiated version, ``None`` until a VERSION_RESPONSE accepted one."""
        return self._version

    @property
    def features(self) -> FeatureFlag:
        """Feature flags the host granted (6.0 and later)."""
        return self._features

    @property
    def message_connection_id(self) -> int:
        """Where messages after INITIATE_CONTACT go: 1 below 5.0, the host's answer from 5.0."""
        return self._message_connection_id

    @property
    def offers(self) -> Mapping[int, OfferChannel]:
        """The offers received and not yet released, by relid (read-only view)."""
        return MappingProxyType(self._offers)

    @property
    def rescinded(self) -> frozenset[int]:
        """Relids the host rescinded that the guest has not released yet."""
        return frozenset(self._rescinded)

    def is_open(self, relid: int) -> bool:
        """Whether ``relid`` is open (OPENCHANNEL_RESULT said success, no close since)."""
        return relid in self._open

    # --- connection ------------------------------------------------------------------------

    def connect(self) -> None:
        """Send INITIATE_CONTACT for the newest version; fallbacks follow by themselves."""
        if self._state is not ClientState.DISCONNECTED:
            raise ValueError(f"connect: state found {self._state.value}, expected disconnected")
        self._state = ClientState.CONNECTING
        self._attempt = 0
        self._send_contact()

    def contact_rejected(self) -> None:
        """Tell the client that posting the last INITIATE_CONTACT failed (an old host refuses
        connection 4 with HV_STATUS_INVALID_CONNECTION_ID): try the next lower version.
        """
        if self._state is not ClientState.CONNECTING:
            raise ValueError(f"contact_rejected: state found {self._state.value}, "
                             "expected connecting")
        try:
            self._next_version()
        except ProtocolError as error:
            self._notifier.protocol_error(error)

    def unload(self) -> None:
        """Send UNLOAD. Below Win7 no UNLOAD_RESPONSE exists, so that case completes at once."""
        self._require_connected("unload")
        version = self._version
        self._post(Unload())
        self._state = ClientState.UNLOADING
        if version is not None and version < VmbusVersion.WIN7:
            self._finish_unload()

    # --- channels --------------------------------------------------------------------------

    def create_gpadl(
        self,
        relid: int,
        pfns: Sequence[int] | Sequence[GpaRange],
        byte_count: int | None = None,
        byte_offset: int = 0,
    ) -> int:
        """Describe guest pages to the host; returns the new GPADL id (from 0xE1E10 up).
        The answer arrives as ``notifier.gpadl_created``.
        """
        self._offered(relid, "create_gpadl")
        gpadl_id = self._next_gpadl_id
        messages = gpadl_messages(relid, gpadl_id, pfns, byte_count, byte_offset)
        self._next_gpadl_id = (gpadl_id + 1) & 0xFFFF_FFFF
        self._gpadls_pending[gpadl_id] = relid
        for message in messages:
            self._post(message)
        return gpadl_id

    def open_channel(
        self,
        relid: int,
        gpadl_id: int,
        downstream_page_offset: int,
        target_vp: int = 0,
        user_data: bytes = b"",
    ) -> None:
        """Send OPENCHANNEL with ``openid = relid`` as Linux does (§3.5(c))."""
        self._offered(relid, "open_channel")
        if relid in self._opening or relid in self._open:
            raise ValueError(f"open_channel: relid {relid} found open, expected closed")
        if self._gpadls.get(gpadl_id) != relid:
            raise ValueError(f"open_channel: gpadl_id {gpadl_id:#x} found not created on "
                             f"relid {relid}, expected a created GPADL")
        self._opening[relid] = relid
        self._post(OpenChannel(relid, relid, gpadl_id, target_vp, downstream_page_offset,
                               user_data))

    def close_channel(self, relid: int) -> None:
        """Send CLOSECHANNEL; there is no reply (§3.5(e))."""
        if relid not in self._open and relid not in self._opening:
            raise ValueError(f"close_channel: relid {relid} found not open, expected open")
        self._open.discard(relid)
        self._opening.pop(relid, None)
        self._post(CloseChannel(relid))

    def teardown_gpadl(self, relid: int, gpadl_id: int) -> None:
        """Send GPADL_TEARDOWN; the answer arrives as ``notifier.gpadl_torn_down``."""
        self._require_connected("teardown_gpadl")
        if self._gpadls.get(gpadl_id) != relid or gpadl_id in self._teardowns:
            raise ValueError(f"teardown_gpadl: gpadl_id {gpadl_id:#x} found not a live GPADL "
                             f"of relid {relid}, expected one")
        self._teardowns.add(gpadl_id)
        self._post(GpadlTeardown(relid, gpadl_id))

    def release_relid(self, relid: int) -> None:
        """Send RELID_RELEASED and forget the offer (after a rescind, §3.5(f))."""
        self._require_connected("release_relid")
        if relid not in self._offers:
            raise ValueError(f"release_relid: relid {relid} found unknown, expected an offer")
        if relid in self._open or relid in self._opening:
            raise ValueError(f"release_relid: relid {relid} found open, expected closed")
        del self._offers[relid]
        self._rescinded.discard(relid)
        self._post(RelIdReleased(relid))

    def modify_channel(self, relid: int, target_vp: int) -> None:
        """Send MODIFYCHANNEL (4.1 and later); from 5.3 an answer follows (§3.5(h))."""
        self._require_connected("modify_channel")
        assert self._version is not None
        if self._version < VmbusVersion.WIN10_V4_1:
            raise ValueError(f"modify_channel: version found {self._version.name}, "
                             "expected WIN10_V4_1 or newer")
        if relid not in self._open:
            raise ValueError(f"modify_channel: relid {relid} found not open, expected open")
        if self._version >= VmbusVersion.WIN10_V5_3:
            self._modifying.add(relid)
        self._post(ModifyChannel(relid, target_vp))

    # --- host input ------------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Handle one message from the host. Never raises for bad input."""
        version = self._version
        if self._state is ClientState.CONNECTING:
            version = self._versions[self._attempt]
        try:
            message = parse_message(data, version=version, direction=_H2G,
                                    features=self._features if self._version else None)
            handler = self._handlers.get(message.TYPE)
            if handler is None:
                raise ProtocolError(message.TYPE, "msgtype", message.TYPE.name,
                                    "a message this client asked for")
            if message.TYPE is not _T.VERSION_RESPONSE and self._version is None:
                raise ProtocolError(message.TYPE, "state", self._state.value, "connected")
            handler(message)
        except ProtocolError as error:
            self._notifier.protocol_error(error)

    def _on_version_response(self, msg: VersionResponse) -> None:
        t = _T.VERSION_RESPONSE
        if self._state is not ClientState.CONNECTING:
            raise ProtocolError(t, "state", self._state.value, "connecting")
        if not msg.version_supported:
            self._next_version()
            return
        if msg.connection_state != 0:
            self._reset()
            raise ProtocolError(t, "connection_state", msg.connection_state, "0 (successful)")
        version = self._versions[self._attempt]
        self._version = version
        self._state = ClientState.CONNECTED
        if version >= VmbusVersion.WIN10_V5:
            self._message_connection_id = msg.selected_version_or_connection_id
        if version >= VmbusVersion.WIN10_V6_0:
            self._features = FeatureFlag(msg.supported_features or 0) & self._proposed_features
        self._notifier.connected(version)
        self._post(RequestOffers())

    def _on_offer(self, msg: OfferChannel) -> None:
        if msg.child_relid in self._offers:
            raise ProtocolError(_T.OFFER_CHANNEL, "child_relid", msg.child_relid,
                                "a relid not already offered")
        self._offers[msg.child_relid] = msg
        self._notifier.offer(msg)

    def _on_all_offers(self, msg: AllOffersDelivered) -> None:
        if self._all_offers:
            raise ProtocolError(_T.ALL_OFFERS_DELIVERED, "state", "already delivered",
                                "once per connection")
        self._all_offers = True
        self._notifier.all_offers_delivered()

    def _on_rescind(self, msg: RescindChannelOffer) -> None:
        relid = msg.child_relid
        if relid not in self._offers or relid in self._rescinded:
            raise ProtocolError(_T.RESCIND_CHANNEL_OFFER, "child_relid", relid,
                                "an offered relid not already rescinded")
        self._rescinded.add(relid)
        # An open still in flight is over: the host does not answer an OPENCHANNEL on a revoked
        # channel (OpenVMM channels.rs handle_open_channel, Revoked => {}), and Linux completes
        # the open's waiter on rescind (channel_mgmt.c vmbus_onoffer_rescind; from memory). So
        # the channel is closed as far as the guest knows: no CLOSECHANNEL is due, and
        # release_relid may follow once its GPADLs are torn down (§3.5(f)).
        self._opening.pop(relid, None)
        self._notifier.rescinded(relid)

    def _on_open_result(self, msg: OpenResult) -> None:
        if self._opening.get(msg.child_relid) != msg.open_id:
            raise ProtocolError(_T.OPEN_CHANNEL_RESULT, "child_relid/open_id",
                                (msg.child_relid, msg.open_id), "a channel being opened")
        del self._opening[msg.child_relid]
        if msg.status == 0:
            self._open.add(msg.child_relid)
        self._notifier.open_result(msg.child_relid, msg.status)

    def _on_gpadl_created(self, msg: GpadlCreated) -> None:
        if self._gpadls_pending.get(msg.gpadl_id) != msg.child_relid:
            raise ProtocolError(_T.GPADL_CREATED, "child_relid/gpadl_id",
                                (msg.child_relid, hex(msg.gpadl_id)), "a GPADL being created")
        del self._gpadls_pending[msg.gpadl_id]
        if msg.status == 0:
            self._gpadls[msg.gpadl_id] = msg.child_relid
        self._notifier.gpadl_created(msg.child_relid, msg.gpadl_id, msg.status)

    def _on_gpadl_torndown(self, msg: GpadlTorndown) -> None:
        if msg.gpadl_id not in self._teardowns:
            raise ProtocolError(_T.GPADL_TORNDOWN, "gpadl_id", hex(msg.gpadl_id),
                                "a GPADL being torn down")
        self._teardowns.discard(msg.gpadl_id)
        del self._gpadls[msg.gpadl_id]
        self._notifier.gpadl_torn_down(msg.gpadl_id)

    def _on_unload_complete(self, msg: UnloadComplete) -> None:
        if self._state is not ClientState.UNLOADING:
            raise ProtocolError(_T.UNLOAD_COMPLETE, "state", self._state.value, "unloading")
        self._finish_unload()

    def _on_modify_response(self, msg: ModifyChannelResponse) -> None:
        if msg.child_relid not in self._modifying:
            raise ProtocolError(_T.MODIFY_CHANNEL_RESPONSE, "child_relid", msg.child_relid,
                                "a channel being modified")
        self._modifying.discard(msg.child_relid)
        self._notifier.modify_channel_response(msg.child_relid, msg.status)

    # --- helpers ---------------------------------------------------------------------------

    def _send_contact(self) -> None:
        version = self._versions[self._attempt]
        multiclient = version >= VmbusVersion.WIN10_V5
        copper = version >= VmbusVersion.WIN10_V6_0
        features = self._proposed_features if copper else FeatureFlag(0)
        contact = InitiateContact(
            version_requested=version,
            target_vcpu=self._target_vcpu,
            interrupt_page=0 if multiclient else self._interrupt_page,
            msg_sint=_MESSAGE_SINT if multiclient else 0,
            feature_flags=int(features),
            monitor_page1=self._monitor_pages[0],
            monitor_page2=self._monitor_pages[1],
            client_id=self._client_id if FeatureFlag.CLIENT_ID in features else None,
        )
        conn = MESSAGE_CONNECTION_ID_MULTICLIENT if multiclient else MESSAGE_CONNECTION_ID
        self._notifier.send(contact, conn)

    def _next_version(self) -> None:
        self._attempt += 1
        if self._attempt < len(self._versions):
            self._send_contact()
            return
        tried = ", ".join(v.name for v in self._versions)
        self._reset()
        raise ProtocolError(_T.VERSION_RESPONSE, "version_supported", 0,
                            f"one of {tried} accepted")

    def _finish_unload(self) -> None:
        self._reset()
        self._notifier.unloaded()

    def _post(self, message: ChannelMessage) -> None:
        self._notifier.send(message, self._message_connection_id)

    def _require_connected(self, what: str) -> None:
        if self._state is not ClientState.CONNECTED:
            raise ValueError(f"{what}: state found {self._state.value}, expected connected")

    def _offered(self, relid: int, what: str) -> None:
        self._require_connected(what)
        if relid not in self._offers or relid in self._rescinded:
            raise ValueError(f"{what}: relid {relid} found not offered (or rescinded), "
                             "expected a live offer")
