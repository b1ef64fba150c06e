"""The root side of the VMBus channel-management protocol, for one guest connection, sans-IO.

``ServerProtocol`` is a synchronous state machine in the manner of OpenVMM's
``vmbus_server/src/channels.rs``: the I/O layer hands it each control message the guest posted
(``receive``) and the host's own decisions (``offer``, ``rescind``, ``open_result``); it answers
through a ``ServerNotifier`` -- ``send`` to post a message to the guest, and upcalls that let
the host map GPADLs, open and close devices. It owns no threads, memory or SynIC.

Sequences follow fact sheet §3.5: (a) connect, offers, ALLOFFERS_DELIVERED; (b) GPADLs;
(c) open; (e) close without a reply; (f) rescind then RELID_RELEASED; (g) unload; (h) modify.

The guest is untrusted: ``receive`` never raises for anything the guest sent. A malformed or
out-of-state message becomes ``notifier.protocol_error(ProtocolError)`` and changes nothing
else (handlers check everything before they mutate); where the guest would otherwise wait
forever for an answer (GPADL_CREATED, OPENCHANNEL_RESULT, MODIFYCHANNEL_RESPONSE), a failure
status is sent as well -- also when the notifier's ``open_channel`` raises. Replies go out only
at the versions the ``MESSAGES`` table allows them. Mistakes in the *host's* calls raise
``ValueError``.

What one guest can make the host hold is bounded per connection (per VM): GPADLs in progress,
GPADLs created, and the pages they name (:class:`GpadlLimits`). Past a limit the GPADL is
refused like any other, with GPADL_CREATED 0x8000FFFF, and the reason is reported. Versions
below Win8 are refused unless ``min_version`` allows them: their legacy signalling (§3.5(d))
is not implemented.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ._gpadl import GPADL_STATUS_UNSUCCESSFUL, Gpadl, GpadlAssembler, GpadlError, GpadlLimits
from ._messages import (
    MESSAGE_CONNECTION_ID,
    MESSAGE_CONNECTION_ID_MULTICLIENT,
    MESSAGES,
    USER_DATA_SIZE,
    AllOffersDelivered,
    ChannelMessage,
    ChannelMessageType,
    CloseChannel,
    Direction,
    GpadlBody,
    GpadlCreated,
    GpadlHeader,
    GpadlTeardown,
    GpadlTorndown,
    InitiateContact,
    MessageSpec,
    ModifyChannel,
    ModifyChannelResponse,
    OfferChannel,
    OfferFlag,
    OpenChannel,
    OpenResult,
    ProtocolError,
    RelIdReleased,
    RequestOffers,
    RescindChannelOffer,
    TlConnectRequest,
    TlConnectResult,
    Unload,
    UnloadComplete,
    VersionResponse,
    parse_message,
)
from ._server_notifier import ChannelState, ConnectionInfo, OfferParams, OpenRequest, ServerNotifier
from ._versions import FeatureFlag, VmbusVersion

__all__ = [
    "CHANNEL_CONNECTION_ID_BASE",
    "MAX_CHANNELS",
    "ServerProtocol",
]

#: OpenVMM's channel connection id for VTL0/SINT2 is ``0x2000 | relid`` (§3.1).
CHANNEL_CONNECTION_ID_BASE = 0x2000
#: Relids 1..2047: SIEF bit 0 is reserved (OpenVMM ``MAX_CHANNELS``, §3.1).
MAX_CHANNELS = 2047

_STATUS_UNSUCCESSFUL = 0xC0000001  # NTSTATUS, §6.1 table
#: MODIFYCHANNEL_RESPONSE's refusal: OpenVMM's protocol::STATUS_UNSUCCESSFUL, 0x8000FFFF (the
#: value §3.3 gives for GPADL_CREATED), as a signed i32 (channels.rs handle_modify_channel).
_MODIFY_STATUS_UNSUCCESSFUL = GPADL_STATUS_UNSUCCESSFUL - (1 << 32)
_STATUS_CONNECTION_REFUSED = 0xC0000236 - (1 << 32)  # TL_CONNECT_RESULT, §3.3
_CONNECTION_FAILED_UNKNOWN = 2  # VERSION_RESPONSE connection_state, §3.3
#: Offer flags a guest only sees when it negotiated the matching feature (OpenVMM, §3.3).
_GATED_FLAGS = (
    (OfferFlag.CONFIDENTIAL_RING_BUFFER | OfferFlag.CONFIDENTIAL_EXTERNAL_MEMORY,
     FeatureFlag.CONFIDENTIAL_CHANNELS),
    (OfferFlag.REQUIRE_PINNED_EXTERNAL_MEMORY, FeatureFlag.GPA_PINNING),
)
#: The OpenChannel2 fields (§3.3) and the feature that makes each valid; OpenVMM's
#: handle_open_channel ignores a field whose feature was not granted.
_OPEN2_FIELDS = (
    ("connection_id", FeatureFlag.GUEST_SPECIFIED_SIGNAL_PARAMETERS),
    ("event_flag", FeatureFlag.GUEST_SPECIFIED_SIGNAL_PARAMETERS),
    ("flags", FeatureFlag.CHANNEL_INTERRUPT_REDIRECTION),
)

#: The oldest version accepted by default: below Win8 a guest signals through the interrupt
#: page (and connection 2 at WS2008, §3.5(d)), which this host does not implement. A host
#: explicitly capped lower (max_version) accepts down to its cap.
_DEFAULT_MIN_VERSION = VmbusVersion.WIN8


@dataclass(slots=True, eq=False)
class _Channel:
    relid: int
    params: OfferParams
    order: int
    state: ChannelState = ChannelState.CLOSED
    visible: bool = False
    ring_gpadl_id: int | None = None
    open_id: int = 0
    gpadls: dict[int, Gpadl] = field(default_factory=dict)
    teardown_pending: set[int] = field(default_factory=set)


_G2H = Direction.GUEST_TO_HOST
_T = ChannelMessageType


class ServerProtocol:
    """The host's half of one guest's VMBus connection (see the module docstring).

    ``max_version`` caps what the host accepts and ``min_version`` is the oldest it accepts.
    By default that is Win8: WS2008 and Win7 get ``version_supported=0``, because their legacy
    signalling (§3.5(d): the interrupt page, connection 2 at WS2008) is not implemented. A host
    capped below Win8 (``max_version``) accepts down to its cap, as does one given
    ``min_version=VmbusVersion.WS2008``; channels then still use Win8 dedicated interrupts.
    ``features`` are the 6.0 feature flags it may grant;
    ``validate_pfns`` checks a completed GPADL's PFNs against guest memory (return an error
    reason, or ``None`` to accept).

    ``gpadl_limits`` bound the GPADLs the guest may make the host hold (by default 64 in
    progress, 8192 in all and 2**20 pages; see :class:`GpadlLimits`): a GPADL over a limit is
    refused with GPADL_CREATED 0x8000FFFF and a ``protocol_error`` that names the limit, the
    relid and the GPADL id. A host that knows the guest's RAM should pass a page budget in
    proportion to it.
    """

    def __init__(
        self,
        *,
        notifier: ServerNotifier,
        max_version: VmbusVersion = VmbusVersion.WIN10_V6_0,
        min_version: VmbusVersion | None = None,
        features: FeatureFlag = FeatureFlag(0),  # noqa: B008 (an immutable flag value)
        validate_pfns: Callable[[Sequence[int]], str | None] | None = None,
        gpadl_limits: GpadlLimits = GpadlLimits(),  # noqa: B008 (frozen)
    ) -> None:
        if min_version is None:
            min_version = min(_DEFAULT_MIN_VERSION, VmbusVersion(max_version))
        if VmbusVersion(min_version) > VmbusVersion(max_version):
            raise ValueError(f"min_version: found {VmbusVersion(min_version).name}, expected "
                             f"at most max_version {VmbusVersion(max_version).name}")
        self._notifier = notifier
        self._max_version = VmbusVersion(max_version)
        self._min_version = VmbusVersion(min_version)
        self._gpadl_limits = gpadl_limits
        self._gpadl_count = 0   # GPADLs created, on every channel
        self._gpadl_pages = 0   # the PFNs they name
        self._supported_features = FeatureFlag(features)
        self._assembler = GpadlAssembler(validate_pfns)
        self._channels: dict[int, _Channel] = {}
        # Indexes over _channels, so an offer costs O(1) rather than a scan of every channel:
        # the offers' (interface, instance, sub-channel) keys, and a relid below which every
        # relid is taken (the lowest free one is at or above it).
        self._keys: dict[tuple[uuid.UUID, uuid.UUID, int], int] = {}
        self._relid_floor = 1
        self._order = 0
        self._version: VmbusVersion | None = None
        self._features = FeatureFlag(0)
        self._offers_requested = False
        self._handlers: dict[ChannelMessageType, Callable[[ChannelMessage, int], None]] = {
            _T.INITIATE_CONTACT: self._on_initiate_contact,  # type: ignore[dict-item]
            _T.REQUEST_OFFERS: self._on_request_offers,  # type: ignore[dict-item]
            _T.OPEN_CHANNEL: self._on_open_channel,  # type: ignore[dict-item]
            _T.CLOSE_CHANNEL: self._on_close_channel,  # type: ignore[dict-item]
            _T.GPADL_HEADER: self._on_gpadl,  # type: ignore[dict-item]
            _T.GPADL_BODY: self._on_gpadl,  # type: ignore[dict-item]
            _T.GPADL_TEARDOWN: self._on_gpadl_teardown,  # type: ignore[dict-item]
            _T.REL_ID_RELEASED: self._on_relid_released,  # type: ignore[dict-item]
            _T.UNLOAD: self._on_unload,  # type: ignore[dict-item]
            _T.MODIFY_CHANNEL: self._on_modify_channel,  # type: ignore[dict-item]
            _T.TL_CONNECT_REQUEST: self._on_tl_connect,  # type: ignore[dict-item]
        }

    # --- state queries ---------------------------------------------------------------------

    @property
    def version(self) -> VmbusVersion | None:
        """The negotiated version, ``None`` while disconnected."""
        return self._version

    @property
    def features(self) -> FeatureFlag:
        """The feature flags granted to the connected guest."""
        return self._features

    @property
    def offers_requested(self) -> bool:
        """Whether the guest sent REQUESTOFFERS on this connection."""
        return self._offers_requested

    @property
    def gpadl_limits(self) -> GpadlLimits:
        """What this guest may make the host hold in GPADLs."""
        return self._gpadl_limits

    @property
    def in_progress_gpadls(self) -> int:
        """GPADLs whose header arrived and whose bodies have not all arrived."""
        return len(self._assembler)

    @property
    def gpadl_pages(self) -> int:
        """PFNs named by the GPADLs created on every channel."""
        return self._gpadl_pages

    def channels(self) -> tuple[int, ...]:
        """The relids of every channel the host currently offers, ascending."""
        return tuple(sorted(self._channels))

    def channel_state(self, relid: int) -> ChannelState:
        """The state of channel ``relid``; ``ValueError`` if there is none."""
        return self._host_channel(relid).state

    def gpadl(self, relid: int, gpadl_id: int) -> Gpadl:
        """A GPADL created on channel ``relid``; ``ValueError`` if there is none."""
        found = self._host_channel(relid).gpadls.get(gpadl_id)
        if found is None:
            raise ValueError(f"gpadl_id: found {gpadl_id:#x}, expected a GPADL of relid {relid}")
        return found

    # --- host API --------------------------------------------------------------------------

    def offer(self, params: OfferParams) -> int:
        """Offer a channel; returns its relid (the lowest free, from 1). If the guest has
        already requested offers, the OFFERCHANNEL goes out at once (hot-add).
        """
        if len(params.user_defined) > USER_DATA_SIZE:
            raise ValueError(
                f"OfferParams.user_defined: found {len(params.user_defined)} bytes, "
                f"expected at most {USER_DATA_SIZE}"
            )
        key = (params.interface_id, params.instance_id, params.sub_channel_index)
        if key in self._keys:
            raise ValueError(f"offer: found a second offer of {key}, expected unique ids")
        relid = self._relid_floor
        while relid in self._channels:
            relid += 1
        if relid > MAX_CHANNELS:
            raise ValueError(f"offer: found {MAX_CHANNELS} channels, expected a free relid")
        self._relid_floor = relid + 1
        self._order += 1
        channel = _Channel(relid, params, self._order)
        self._channels[relid] = channel
        self._keys[key] = relid
        if self._offers_requested:
            self._send_offer(channel)
        return relid

    def rescind(self, relid: int) -> None:
        """Withdraw channel ``relid``. A guest that saw the offer gets RESCIND_CHANNELOFFER and
        the relid stays taken until its RELID_RELEASED; otherwise the channel goes at once.
        An open channel's device is closed first.
        """
        channel = self._host_channel(relid)
        state = channel.state
        if state is ChannelState.REVOKED:
            raise ValueError(f"rescind: relid {relid} found revoked, expected a live channel")
        if not channel.visible or state is ChannelState.CLIENT_RELEASED:
            self._remove(channel)   # neither state can be open: the guest never saw it
            return
        # Revoked before the upcall: closing runs VSP code, and a rescind from there must find
        # the channel revoked (it raises) instead of sending RESCIND a second time.
        channel.state = ChannelState.REVOKED
        if state in (ChannelState.OPEN, ChannelState.OPENING):
            self._notifier.close_channel(relid)
            self._release_ring(channel)
        self._notifier.send(RescindChannelOffer(relid))

    def open_result(self, relid: int, status: int) -> bool:
        """Finish an open the notifier left pending. Returns ``False`` (and sends nothing) if
        the channel stopped opening meanwhile (guest close, rescind, unload).
        """
        channel = self._channels.get(relid)
        if channel is None or channel.state is not ChannelState.OPENING:
            return False
        self._finish_open(channel, status)
        return True

    # --- guest input -----------------------------------------------------------------------

    def receive(self, data: bytes, connection_id: int = MESSAGE_CONNECTION_ID) -> None:
        """Handle one message the guest posted to ``connection_id``. Never raises for bad
        input: see the module docstring.
        """
        try:
            message = parse_message(
                data,
                version=self._version,
                direction=_G2H,
                features=self._features if self._version is not None else None,
            )
            handler = self._handlers.get(message.TYPE)
            if handler is None:
                raise ProtocolError(message.TYPE, "msgtype", message.TYPE.name,
                                    "a message this server implements")
            handler(message, connection_id)
        except ProtocolError as error:
            self._notifier.protocol_error(error)

    # --- handlers --------------------------------------------------------------------------

    def _on_initiate_contact(self, msg: InitiateContact, connection_id: int) -> None:
        requested = msg.version_requested
        multiclient = requested >= VmbusVersion.WIN10_V5
        want = MESSAGE_CONNECTION_ID_MULTICLIENT if multiclient else MESSAGE_CONNECTION_ID
        if self._version is not None:
            self._disconnect()  # §3.5(g): a contact while connected forces a disconnect first
        if (
            requested not in VmbusVersion._value2member_map_
            or not self._min_version <= requested <= self._max_version
        ):
            self._notifier.send(VersionResponse(0))   # "try an older one" (§3.5(a) step 3.5)
            return
        version = VmbusVersion(requested)
        error: ProtocolError | None = None
        if connection_id != want:
            error = ProtocolError(_T.INITIATE_CONTACT, "connection_id", connection_id,
                                  f"{want} for version {version.name}")
        elif bool(msg.monitor_page1) != bool(msg.monitor_page2):
            error = ProtocolError(_T.INITIATE_CONTACT, "monitor_page1/monitor_page2",
                                  "exactly one non-zero", "both or neither")
        if error is not None:
            # Before Win8 a failure can only be told as "unsupported" (OpenVMM, §3.3).
            if version >= VmbusVersion.WIN8:
                self._notifier.send(VersionResponse(1, _CONNECTION_FAILED_UNKNOWN))
            else:
                self._notifier.send(VersionResponse(0))
            raise error
        copper = version >= VmbusVersion.WIN10_V6_0
        granted = FeatureFlag(msg.feature_flags) & self._supported_features if copper else None
        self._version = version
        self._features = granted or FeatureFlag(0)
        info = ConnectionInfo(
            version=version,
            features=self._features,
            target_vcpu=msg.target_vcpu if version >= VmbusVersion.WIN8_1 else 0,
            message_sint=msg.msg_sint if multiclient else 2,
            message_connection_id=MESSAGE_CONNECTION_ID,
            interrupt_page=msg.interrupt_page,
            monitor_page1=msg.monitor_page1,
            monitor_page2=msg.monitor_page2,
            client_id=msg.client_id if FeatureFlag.CLIENT_ID in self._features else None,
        )
        self._notifier.connected(info)
        # From 5.0 bytes 12..16 carry the message connection id, before that the version.
        self._notifier.send(VersionResponse(
            1, 0, MESSAGE_CONNECTION_ID if multiclient else int(version),
            supported_features=int(granted) if granted is not None else None,
        ))

    def _on_request_offers(self, msg: RequestOffers, connection_id: int) -> None:
        if self._offers_requested:
            raise ProtocolError(_T.REQUEST_OFFERS, "state", "offers already requested",
                                "one REQUESTOFFERS per connection")
        self._offers_requested = True
        # OpenVMM delivers offers sorted by (interface id, offer order, instance id), §3.5(a).
        pending = sorted(
            (ch for ch in self._channels.values() if not ch.visible),
            key=lambda ch: (ch.params.interface_id.int, ch.order, ch.params.instance_id.int),
        )
        for channel in pending:
            self._send_offer(channel)
        self._notifier.send(AllOffersDelivered())

    def _on_open_channel(self, msg: OpenChannel, connection_id: int) -> None:
        t = _T.OPEN_CHANNEL
        channel = self._guest_channel(t, msg.child_relid)
        if channel.state is ChannelState.REVOKED:
            # The guest opened before it saw the rescind: no answer, as OpenVMM's
            # handle_open_channel (Revoked => {}); the guest drops the open when the rescind
            # arrives, then releases the relid (§3.5(f)).
            return
        if channel.state is not ChannelState.CLOSED:
            raise ProtocolError(t, "state", channel.state.value, "closed")
        gpadl = channel.gpadls.get(msg.ring_gpadl_id)
        error = None
        if gpadl is None or msg.ring_gpadl_id in channel.teardown_pending:
            error = ProtocolError(t, "ring_gpadl_id", f"{msg.ring_gpadl_id:#x}",
                                  "a GPADL created on this channel")
        elif not 0 < msg.downstream_ring_page_offset < gpadl.page_count:
            error = ProtocolError(t, "downstream_ring_page_offset",
                                  msg.downstream_ring_page_offset, f"1..{gpadl.page_count - 1}")
        if error is not None:
            self._notifier.send(OpenResult(msg.child_relid, msg.open_id, _STATUS_UNSUCCESSFUL))
            raise error
        assert gpadl is not None
        assert self._version is not None
        channel.state = ChannelState.OPENING
        channel.ring_gpadl_id = msg.ring_gpadl_id
        channel.open_id = msg.open_id
        open2 = {name: getattr(msg, name) if feature in self._features else None
                 for name, feature in _OPEN2_FIELDS} if msg.connection_id is not None else {}
        request = OpenRequest(
            msg.child_relid, msg.open_id, gpadl,
            # §3.4: OPENCHANNEL's target_vp is honoured from Win8; older hosts use 0.
            msg.target_vp if self._version >= VmbusVersion.WIN8 else 0,
            msg.downstream_ring_page_offset, msg.user_data, **open2,
        )
        try:
            status = self._notifier.open_channel(channel.relid, request)
        except Exception as exc:  # the guest must hear back whatever the host's open did
            self._open_raised(channel, exc)
            return
        if status is not None and channel.state is ChannelState.OPENING:
            self._finish_open(channel, status)

    def _open_raised(self, channel: _Channel, exc: Exception) -> None:
        """``notifier.open_channel`` raised: fail the open (§3.5(c) step 4 wants a reply), let
        the host undo whatever it had set up, and report the error."""
        if channel.state is not ChannelState.OPENING:
            # The notifier moved the channel on before raising (a rescind, say): whoever did
            # that answered or silenced the guest already.
            self._notifier.protocol_error(self._open_error(channel, exc))
            return
        try:
            self._notifier.close_channel(channel.relid)   # still OPENING: within its contract
        except Exception as close_exc:
            exc = RuntimeError(f"{type(exc).__name__}: {exc}; then close_channel raised "
                               f"{type(close_exc).__name__}: {close_exc}")
        self._finish_open(channel, _STATUS_UNSUCCESSFUL)
        self._notifier.protocol_error(self._open_error(channel, exc))

    @staticmethod
    def _open_error(channel: _Channel, exc: Exception) -> ProtocolError:
        if isinstance(exc, ProtocolError):
            return exc
        error = ProtocolError(
            _T.OPEN_CHANNEL, "child_relid",
            f"relid {channel.relid}, whose open raised in the host: {type(exc).__name__}: {exc}",
            f"an open the host answers (OPENCHANNEL_RESULT {_STATUS_UNSUCCESSFUL:#x} was sent)",
        )
        error.__cause__ = exc
        return error

    def _on_close_channel(self, msg: CloseChannel, connection_id: int) -> None:
        channel = self._guest_channel(_T.CLOSE_CHANNEL, msg.child_relid)
        if channel.state is ChannelState.REVOKED:
            return  # the host already closed it when it rescinded; nothing to do (§3.5(f))
        if channel.state is ChannelState.CLOSED:
            raise ProtocolError(_T.CLOSE_CHANNEL, "state", "closed", "open or opening")
        # Closed before the upcall: closing runs VSP code, and a rescind it makes (a device
        # unplugged when the guest lets go) must not be overwritten afterwards.
        channel.state = ChannelState.CLOSED
        self._notifier.close_channel(channel.relid)
        self._release_ring(channel)

    def _on_gpadl(self, msg: GpadlHeader | GpadlBody, connection_id: int) -> None:
        if isinstance(msg, GpadlHeader):
            t = _T.GPADL_HEADER
            channel = self._guest_channel(t, msg.child_relid)
            if channel.state is ChannelState.REVOKED or msg.gpadl_id in channel.gpadls:
                self._assembler.abandon(msg.gpadl_id)   # this refusal answers for the id
                self._notifier.send(
                    GpadlCreated(msg.child_relid, msg.gpadl_id, GPADL_STATUS_UNSUCCESSFUL)
                )
                reason = ("a channel that is not revoked" if channel.state is
                          ChannelState.REVOKED else "an id not already in use on this channel")
                raise ProtocolError(t, "gpadl_id", f"{msg.gpadl_id:#x}", reason)
            over = self._gpadl_limits.refusal(
                msg, pending=len(self._assembler), pending_pages=self._assembler.pending_pages,
                created=self._gpadl_count, created_pages=self._gpadl_pages)
            if over is not None:
                self._assembler.abandon(msg.gpadl_id)   # this refusal answers for the id
                self._notifier.send(
                    GpadlCreated(msg.child_relid, msg.gpadl_id, GPADL_STATUS_UNSUCCESSFUL)
                )
                raise over
        try:
            gpadl = self._assembler.feed(msg)
        except GpadlError as error:
            if error.relid in self._channels and self._channels[error.relid].visible:
                self._notifier.send(
                    GpadlCreated(error.relid, error.gpadl_id, GPADL_STATUS_UNSUCCESSFUL)
                )
            raise
        if gpadl is None:
            return
        owner = self._channels.get(gpadl.relid)
        if owner is None or owner.state is ChannelState.REVOKED or not owner.visible:
            self._notifier.send(GpadlCreated(gpadl.relid, gpadl.gpadl_id,
                                             GPADL_STATUS_UNSUCCESSFUL))
            raise ProtocolError(_T.GPADL_BODY, "child_relid", gpadl.relid,
                                "a channel that is still offered when the GPADL completes")
        if gpadl.gpadl_id in owner.gpadls:
            self._notifier.send(GpadlCreated(gpadl.relid, gpadl.gpadl_id,
                                             GPADL_STATUS_UNSUCCESSFUL))
            raise ProtocolError(_T.GPADL_BODY, "gpadl_id", f"{gpadl.gpadl_id:#x}",
                                "an id not already in use on this channel")
        status = self._notifier.gpadl_created(gpadl)
        if status == 0:
            owner.gpadls[gpadl.gpadl_id] = gpadl
            self._gpadl_count += 1
            self._gpadl_pages += gpadl.page_count
        self._notifier.send(GpadlCreated(gpadl.relid, gpadl.gpadl_id, status))

    def _on_gpadl_teardown(self, msg: GpadlTeardown, connection_id: int) -> None:
        t = _T.GPADL_TEARDOWN
        channel = self._guest_channel(t, msg.child_relid)
        if msg.gpadl_id not in channel.gpadls or msg.gpadl_id in channel.teardown_pending:
            raise ProtocolError(t, "gpadl_id", f"{msg.gpadl_id:#x}",
                                "a created GPADL of this channel not already being torn down")
        in_use = channel.ring_gpadl_id == msg.gpadl_id and channel.state in (
            ChannelState.OPEN, ChannelState.OPENING)
        if in_use:
            channel.teardown_pending.add(msg.gpadl_id)  # answered when the channel closes
            return
        self._tear_down(channel, msg.gpadl_id)

    def _on_relid_released(self, msg: RelIdReleased, connection_id: int) -> None:
        t = _T.REL_ID_RELEASED
        channel = self._guest_channel(t, msg.child_relid)
        if channel.state is ChannelState.REVOKED:
            self._remove(channel)
        elif channel.state is ChannelState.CLOSED:
            for gpadl_id in list(channel.gpadls):
                self._drop_gpadl(channel, gpadl_id)
            self._assembler.discard(channel.relid)
            channel.state = ChannelState.CLIENT_RELEASED
        else:
            raise ProtocolError(t, "state", channel.state.value, "closed or revoked (§3.5(f))")

    def _on_unload(self, msg: Unload, connection_id: int) -> None:
        answer = self._may_send(_T.UNLOAD_COMPLETE)   # from Win7 (§3.2)
        self._release_all()
        if answer:
            self._notifier.send(UnloadComplete())
        self._reset_connection()
        self._notifier.unloaded()

    def _on_modify_channel(self, msg: ModifyChannel, connection_id: int) -> None:
        # From 5.3 every MODIFYCHANNEL is answered, a refusal with STATUS_UNSUCCESSFUL
        # 0x8000FFFF whatever went wrong, an unknown channel included (OpenVMM channels.rs
        # handle_modify_channel / send_modify_channel_response).
        t = _T.MODIFY_CHANNEL
        respond = self._may_send(_T.MODIFY_CHANNEL_RESPONSE)
        try:
            channel = self._guest_channel(t, msg.child_relid)
            if channel.state is not ChannelState.OPEN:
                raise ProtocolError(t, "state", channel.state.value, "open")
        except ProtocolError:
            if respond:
                self._notifier.send(
                    ModifyChannelResponse(msg.child_relid, _MODIFY_STATUS_UNSUCCESSFUL)
                )
            raise
        status = self._notifier.modify_channel(channel.relid, msg.target_vp)
        if respond:
            self._notifier.send(ModifyChannelResponse(msg.child_relid, status))

    def _on_tl_connect(self, msg: TlConnectRequest, connection_id: int) -> None:
        # hv_sock (§3.5(i)) has no provider here: refuse as OpenVMM does on failure, which it
        # can only say where TL_CONNECT_RESULT exists, from 4.1 (send_tl_connect_result); at
        # 4.0 the request goes unanswered.
        if self._may_send(_T.TL_CONNECT_RESULT):
            self._notifier.send(TlConnectResult(msg.guest_endpoint_id, msg.host_service_id,
                                                _STATUS_CONNECTION_REFUSED))

    # --- helpers ---------------------------------------------------------------------------

    def _may_send(self, message_type: ChannelMessageType) -> bool:
        """Whether the connection's version (and features) allow sending ``message_type``,
        by its row of the ``MESSAGES`` table."""
        spec: MessageSpec = MESSAGES[message_type]
        if spec.min_version is not None and (
            self._version is None or self._version < spec.min_version
        ):
            return False
        return spec.feature is None or spec.feature in self._features

    def _host_channel(self, relid: int) -> _Channel:
        channel = self._channels.get(relid)
        if channel is None:
            raise ValueError(f"relid: found {relid}, expected one of {self.channels()}")
        return channel

    def _guest_channel(self, t: ChannelMessageType, relid: int) -> _Channel:
        channel = self._channels.get(relid)
        if (
            channel is None
            or not channel.visible
            or channel.state is ChannelState.CLIENT_RELEASED
        ):
            raise ProtocolError(t, "child_relid", relid, "the relid of a channel offered to it")
        return channel

    def _send_offer(self, channel: _Channel) -> None:
        p = channel.params
        flags = p.flags
        for bits, feature in _GATED_FLAGS:
            if feature not in self._features:
                flags &= ~bits
        channel.visible = True
        self._notifier.send(OfferChannel(
            interface_id=p.interface_id,
            instance_id=p.instance_id,
            child_relid=channel.relid,
            flags=flags,
            mmio_megabytes=p.mmio_megabytes,
            user_defined=p.user_defined,
            sub_channel_index=p.sub_channel_index,
            mmio_megabytes_optional=p.mmio_megabytes_optional,
            monitor_id=0xFF,
            monitor_allocated=0,
            is_dedicated_interrupt=1,
            connection_id=CHANNEL_CONNECTION_ID_BASE | channel.relid,
        ))

    def _finish_open(self, channel: _Channel, status: int) -> None:
        if status == 0:
            channel.state = ChannelState.OPEN
        else:
            channel.state = ChannelState.CLOSED
            self._release_ring(channel)
        self._notifier.send(OpenResult(channel.relid, channel.open_id, status))

    def _release_ring(self, channel: _Channel) -> None:
        """The ring GPADL is free again; answer a teardown the guest sent while it was open."""
        ring, channel.ring_gpadl_id = channel.ring_gpadl_id, None
        if ring is not None and ring in channel.teardown_pending:
            self._tear_down(channel, ring)

    def _tear_down(self, channel: _Channel, gpadl_id: int) -> None:
        self._drop_gpadl(channel, gpadl_id)
        self._notifier.send(GpadlTorndown(gpadl_id))

    def _drop_gpadl(self, channel: _Channel, gpadl_id: int) -> None:
        channel.teardown_pending.discard(gpadl_id)
        gpadl = channel.gpadls.pop(gpadl_id)
        self._gpadl_count -= 1
        self._gpadl_pages -= gpadl.page_count
        self._notifier.gpadl_torn_down(channel.relid, gpadl_id)

    def _remove(self, channel: _Channel) -> None:
        for gpadl_id in list(channel.gpadls):
            self._drop_gpadl(channel, gpadl_id)
        self._assembler.discard(channel.relid)
        del self._channels[channel.relid]
        p = channel.params
        del self._keys[(p.interface_id, p.instance_id, p.sub_channel_index)]
        self._relid_floor = min(self._relid_floor, channel.relid)
        self._notifier.relid_released(channel.relid)

    def _release_all(self) -> None:
        """The implicit close of §3.5(g): every device, GPADL and revoked relid goes."""
        for channel in list(self._channels.values()):
            state = channel.state
            # Closed and no longer offered before the upcall, which runs VSP code: a rescind
            # from there then removes the channel at once instead of sending RESCIND to a
            # guest that is disconnecting.
            channel.state = ChannelState.CLOSED
            channel.visible = False
            channel.ring_gpadl_id = None
            if state in (ChannelState.OPEN, ChannelState.OPENING):
                self._notifier.close_channel(channel.relid)
            if self._channels.get(channel.relid) is not channel:
                continue   # removed by a rescind from the device's on_close
            if state is ChannelState.REVOKED:
                self._remove(channel)
                continue
            for gpadl_id in list(channel.gpadls):
                self._drop_gpadl(channel, gpadl_id)
        self._assembler.discard()

    def _reset_connection(self) -> None:
        self._version = None
        self._features = FeatureFlag(0)
        self._offers_requested = False

    def _disconnect(self) -> None:
        self._release_all()
        self._reset_connection()
        self._notifier.unloaded()
