"""ServerProtocol, the root side, driven message by message through a recording notifier."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.vmbus_strategies import RecordingServerNotifier, messages

from winhv.drivers.vmbus.protocol import (
    GPADL_STATUS_UNSUCCESSFUL,
    AllOffersDelivered,
    ChannelMessageType,
    ChannelState,
    CloseChannel,
    Direction,
    FeatureFlag,
    GpadlBody,
    GpadlCreated,
    GpadlTeardown,
    GpadlTorndown,
    InitiateContact,
    ModifyChannel,
    ModifyChannelResponse,
    OfferChannel,
    OfferFlag,
    OfferParams,
    OpenChannel,
    OpenReservedChannel,
    OpenResult,
    ProtocolError,
    RelIdReleased,
    RequestOffers,
    RescindChannelOffer,
    ServerProtocol,
    TlConnectRequest,
    TlConnectResult,
    Unload,
    UnloadComplete,
    VersionResponse,
    VmbusVersion,
    gpadl_messages,
)

V = VmbusVersion
T = ChannelMessageType
ID = 0xE1E10


def params(n: int, interface: int | None = None, **kwargs) -> OfferParams:
    return OfferParams(uuid.UUID(int=interface if interface is not None else n),
                       uuid.UUID(int=1000 + n), **kwargs)


def make(**kwargs) -> tuple[ServerProtocol, RecordingServerNotifier]:
    notifier = RecordingServerNotifier()
    return ServerProtocol(notifier=notifier, **kwargs), notifier


def contact(server: ServerProtocol, version: V = V.WIN10_V5_3, **kwargs) -> None:
    conn = 4 if version >= V.WIN10_V5 else 1
    if version >= V.WIN10_V5:
        kwargs.setdefault("msg_sint", 2)
    server.receive(InitiateContact(version, **kwargs).pack(), conn)


def connected(version: V = V.WIN10_V5_3, offers: int = 1, **kwargs):
    server, notifier = make(**kwargs)
    relids = [server.offer(params(i)) for i in range(offers)]
    contact(server, version)
    server.receive(RequestOffers().pack())
    notifier.take()
    notifier.events.clear()
    return server, notifier, relids


def send_gpadl(server: ServerProtocol, relid: int, gpadl_id: int = ID, count: int = 4) -> None:
    for m in gpadl_messages(relid, gpadl_id, list(range(0x100, 0x100 + count))):
        server.receive(m.pack())


def opened(version: V = V.WIN10_V5_3, **kwargs):
    server, notifier, (relid,) = connected(version, **kwargs)
    send_gpadl(server, relid)
    server.receive(OpenChannel(relid, relid, ID, 0, 2).pack())
    notifier.take()
    notifier.events.clear()
    return server, notifier, relid


# --- (a) connect and offers ---------------------------------------------------------------


def test_contact_from_5_0_on_connection_4_answers_message_connection_id_1():
    server, notifier = make()
    contact(server, V.WIN10_V5_3, target_vcpu=3)
    assert notifier.take() == [VersionResponse(1, 0, 1)]
    assert server.version is V.WIN10_V5_3
    assert notifier.info.target_vcpu == 3
    assert notifier.info.message_sint == 2
    assert notifier.info.message_connection_id == 1


def test_contact_below_5_0_on_connection_1_answers_the_selected_version():
    server, notifier = make()
    contact(server, V.WIN8_1, interrupt_page=0x5000)
    assert notifier.take() == [VersionResponse(1, 0, int(V.WIN8_1))]
    assert notifier.info.interrupt_page == 0x5000


def test_contact_for_5_0_on_connection_1_is_refused_with_a_precise_error():
    server, notifier = make()
    server.receive(InitiateContact(V.WIN10_V5, msg_sint=2).pack(), 1)
    assert notifier.take() == [VersionResponse(1, 2)]
    assert server.version is None
    assert str(notifier.errors[0]) == (
        "INITIATE_CONTACT.connection_id: found 1, expected 4 for version WIN10_V5"
    )


@pytest.mark.parametrize("requested", [int(V.WIN10_V6_0), 0x00070000, 0x00020003])
def test_contact_above_max_or_unknown_is_unsupported_not_an_error(requested):
    server, notifier = make(max_version=V.WIN10_V5_3)
    server.receive(InitiateContact(requested, msg_sint=2 if requested > 0x50000 else 0).pack(), 4
                   if requested >= V.WIN10_V5 else 1)
    assert notifier.take() == [VersionResponse(0)]
    assert notifier.errors == []
    assert server.version is None


def test_contact_with_one_monitor_page_is_refused():
    server, notifier = make()
    contact(server, V.WIN8, monitor_page1=0x1000)
    assert notifier.take() == [VersionResponse(1, 2)]
    assert notifier.errors[0].field == "monitor_page1/monitor_page2"


def test_contact_below_win8_reports_failure_as_unsupported():
    server, notifier = make(min_version=V.WS2008)
    contact(server, V.WIN7, monitor_page2=0x1000)
    assert notifier.take() == [VersionResponse(0)]


def test_copper_contact_grants_requested_and_supported_features_in_version_response2():
    server, notifier = make(features=FeatureFlag.CLIENT_ID | FeatureFlag.PAUSE_RESUME)
    cid = uuid.uuid4()
    contact(server, V.WIN10_V6_0,
            feature_flags=FeatureFlag.CLIENT_ID | FeatureFlag.MODIFY_CONNECTION, client_id=cid)
    (response,) = notifier.take()
    assert response == VersionResponse(1, 0, 1, supported_features=FeatureFlag.CLIENT_ID)
    assert len(response.pack()) == 20
    assert server.features == FeatureFlag.CLIENT_ID
    assert notifier.info.client_id == cid


def test_request_offers_sends_sorted_offers_then_all_offers_delivered():
    server, notifier = make()
    b = server.offer(params(1, interface=2))
    a2 = server.offer(params(2, interface=1))
    a1 = server.offer(params(3, interface=1))
    assert (b, a2, a1) == (1, 2, 3)
    contact(server)
    notifier.take()
    server.receive(RequestOffers().pack())
    sent = notifier.take()
    assert [m.child_relid for m in sent[:-1]] == [a2, a1, b]  # interface, then offer order
    assert sent[-1] == AllOffersDelivered()
    offer = sent[0]
    assert isinstance(offer, OfferChannel)
    assert (offer.connection_id, offer.monitor_id, offer.monitor_allocated) == (0x2002, 0xFF, 0)
    assert offer.is_dedicated_interrupt == 1
    assert offer.interface_id == uuid.UUID(int=1)


def test_second_request_offers_is_a_protocol_error():
    server, notifier, _ = connected()
    server.receive(RequestOffers().pack())
    assert notifier.take() == []
    assert notifier.errors[0].field == "state"


def test_offer_after_request_offers_is_hot_added_at_once():
    server, notifier, _ = connected()
    relid = server.offer(params(9))
    assert relid == 2
    assert [m.TYPE for m in notifier.take()] == [T.OFFER_CHANNEL]


def test_confidential_offer_flags_need_the_feature():
    server, notifier, _ = connected()
    server.offer(params(9, flags=OfferFlag.CONFIDENTIAL_RING_BUFFER | OfferFlag.NAMED_PIPE_MODE))
    assert notifier.take()[0].flags == OfferFlag.NAMED_PIPE_MODE


def test_messages_before_contact_are_errors_and_change_nothing():
    server, notifier = make()
    server.offer(params(1))
    server.receive(RequestOffers().pack())
    assert notifier.take() == []
    assert "REQUEST_OFFERS.version: found not connected" in str(notifier.errors[0])
    assert not server.offers_requested


# --- (b) GPADLs -----------------------------------------------------------------------------


def test_gpadl_header_and_bodies_create_one_gpadl_answered_once():
    server, notifier, (relid,) = connected()
    send_gpadl(server, relid, count=60)
    assert notifier.take() == [GpadlCreated(relid, ID, 0)]
    assert notifier.events == [("gpadl_created", relid, ID)]
    assert len(server.gpadl(relid, ID).pfns) == 60


def test_gpadl_refused_by_the_host_is_not_kept():
    server, notifier, (relid,) = connected()
    notifier.gpadl_status = 0xC0000001
    send_gpadl(server, relid)
    assert notifier.take() == [GpadlCreated(relid, ID, 0xC0000001)]
    with pytest.raises(ValueError, match="gpadl_id"):
        server.gpadl(relid, ID)


def test_gpadl_with_bad_pfns_fails_with_unsuccessful_status():
    server, notifier, (relid,) = connected(validate_pfns=lambda pfns: "not guest memory")
    send_gpadl(server, relid)
    assert notifier.take() == [GpadlCreated(relid, ID, GPADL_STATUS_UNSUCCESSFUL)]
    assert notifier.errors[0].found == "not guest memory"


def test_gpadl_id_already_created_on_the_channel_fails():
    server, notifier, (relid,) = connected()
    send_gpadl(server, relid)
    notifier.take()
    send_gpadl(server, relid)
    assert notifier.take() == [GpadlCreated(relid, ID, GPADL_STATUS_UNSUCCESSFUL)]
    assert notifier.errors[0].field == "gpadl_id"


def test_gpadl_for_an_unknown_relid_is_an_error():
    server, notifier, _ = connected()
    send_gpadl(server, 77)
    assert notifier.take() == []
    assert str(notifier.errors[0]) == (
        "GPADL_HEADER.child_relid: found 77, expected the relid of a channel offered to it"
    )


def test_body_overflow_fails_the_gpadl():
    server, notifier, (relid,) = connected()
    header, body = gpadl_messages(relid, ID, list(range(30)))
    server.receive(header.pack())
    server.receive(GpadlBody(1, ID, (*body.data, 1)).pack())
    assert notifier.take() == [GpadlCreated(relid, ID, GPADL_STATUS_UNSUCCESSFUL)]


# --- (c) open, (e) close --------------------------------------------------------------------


def test_open_channel_hands_the_ring_gpadl_to_the_host_and_answers():
    server, notifier, (relid,) = connected()
    send_gpadl(server, relid)
    notifier.take()
    server.receive(OpenChannel(relid, 42, ID, 1, 2, b"\x07").pack())
    assert notifier.take() == [OpenResult(relid, 42, 0)]
    (_, _, request), = [e for e in notifier.events if e[0] == "open_channel"]
    assert (request.gpadl.gpadl_id, request.target_vp, request.downstream_page_offset) == (ID, 1, 2)
    assert request.user_data[:1] == b"\x07"
    assert server.channel_state(relid) is ChannelState.OPEN


@pytest.mark.parametrize(
    ("gpadl_id", "offset", "field"),
    [(ID + 1, 2, "ring_gpadl_id"), (ID, 0, "downstream_ring_page_offset"),
     (ID, 4, "downstream_ring_page_offset")],
)
def test_open_with_a_bad_gpadl_or_offset_fails_and_says_why(gpadl_id, offset, field):
    server, notifier, (relid,) = connected()
    send_gpadl(server, relid)
    notifier.take()
    server.receive(OpenChannel(relid, relid, gpadl_id, 0, offset).pack())
    assert notifier.take() == [OpenResult(relid, relid, 0xC0000001)]
    assert notifier.errors[0].field == field
    assert server.channel_state(relid) is ChannelState.CLOSED


def test_open_of_an_open_channel_is_an_error_without_reply():
    server, notifier, relid = opened()
    server.receive(OpenChannel(relid, relid, ID, 0, 2).pack())
    assert notifier.take() == []
    assert str(notifier.errors[0]) == "OPEN_CHANNEL.state: found open, expected closed"


def test_asynchronous_open_completes_through_open_result():
    server, notifier, (relid,) = connected()
    notifier.open_status = None
    send_gpadl(server, relid)
    notifier.take()
    server.receive(OpenChannel(relid, 5, ID, 0, 2).pack())
    assert notifier.take() == []
    assert server.channel_state(relid) is ChannelState.OPENING
    assert server.open_result(relid, 0)
    assert notifier.take() == [OpenResult(relid, 5, 0)]
    assert not server.open_result(relid, 0)


def test_failed_open_leaves_the_channel_closed():
    server, notifier, (relid,) = connected()
    notifier.open_status = 0xC0000001
    send_gpadl(server, relid)
    server.receive(OpenChannel(relid, relid, ID, 0, 2).pack())
    assert notifier.take()[-1] == OpenResult(relid, relid, 0xC0000001)
    assert server.channel_state(relid) is ChannelState.CLOSED


def test_close_has_no_reply_and_closes_the_device():
    server, notifier, relid = opened()
    server.receive(CloseChannel(relid).pack())
    assert notifier.take() == []
    assert notifier.events == [("close_channel", relid)]
    server.receive(CloseChannel(relid).pack())
    assert notifier.errors[0].field == "state"


def test_teardown_of_the_ring_gpadl_while_open_is_answered_at_close():
    server, notifier, relid = opened()
    server.receive(GpadlTeardown(relid, ID).pack())
    assert notifier.take() == []
    server.receive(CloseChannel(relid).pack())
    assert notifier.take() == [GpadlTorndown(ID)]
    assert ("gpadl_torn_down", relid, ID) in notifier.events


def test_teardown_of_an_unknown_gpadl_is_an_error():
    server, notifier, (relid,) = connected()
    server.receive(GpadlTeardown(relid, ID).pack())
    assert notifier.errors[0].field == "gpadl_id"


# --- (f) rescind ------------------------------------------------------------------------------


def test_rescind_of_an_open_channel_closes_it_then_waits_for_release():
    server, notifier, relid = opened()
    server.rescind(relid)
    assert notifier.take() == [RescindChannelOffer(relid)]
    assert notifier.events == [("close_channel", relid)]
    assert server.channel_state(relid) is ChannelState.REVOKED
    server.receive(CloseChannel(relid).pack())  # accepted silently
    server.receive(GpadlTeardown(relid, ID).pack())  # answered at once
    assert notifier.take() == [GpadlTorndown(ID)]
    server.receive(RelIdReleased(relid).pack())
    assert notifier.events[-1] == ("relid_released", relid)
    assert server.channels() == ()
    assert notifier.errors == []
    assert server.offer(params(5)) == relid  # the relid is free again


def test_rescind_before_the_guest_saw_the_offer_removes_at_once():
    server, notifier = make()
    relid = server.offer(params(1))
    server.rescind(relid)
    assert notifier.take() == []
    assert notifier.events == [("relid_released", relid)]


def test_relid_released_while_open_is_refused():
    server, notifier, relid = opened()
    server.receive(RelIdReleased(relid).pack())
    assert str(notifier.errors[0]) == (
        "REL_ID_RELEASED.state: found open, expected closed or revoked (§3.5(f))"
    )
    assert server.channel_state(relid) is ChannelState.OPEN


def test_release_without_rescind_hides_the_channel_until_reconnect():
    server, notifier, (relid,) = connected()
    server.receive(RelIdReleased(relid).pack())
    assert server.channel_state(relid) is ChannelState.CLIENT_RELEASED
    send_gpadl(server, relid)
    assert notifier.errors[0].field == "child_relid"
    server.receive(Unload().pack())
    contact(server)
    server.receive(RequestOffers().pack())
    assert T.OFFER_CHANNEL in [m.TYPE for m in notifier.take()]


def test_double_rescind_is_a_host_error():
    server, _, (relid,) = connected()
    server.rescind(relid)
    with pytest.raises(ValueError, match="revoked"):
        server.rescind(relid)


# --- (g) unload, reconnect ---------------------------------------------------------------------


def test_unload_releases_everything_then_answers():
    server, notifier, relid = opened()
    server.rescind(server.offer(params(7)))
    notifier.take()
    notifier.events.clear()
    server.receive(Unload().pack())
    assert notifier.take() == [UnloadComplete()]
    assert notifier.events == [("close_channel", relid), ("gpadl_torn_down", relid, ID),
                               ("relid_released", 2), ("unloaded",)]
    assert server.version is None
    assert server.channels() == (relid,)
    assert server.channel_state(relid) is ChannelState.CLOSED


def test_unload_at_ws2008_has_no_response_message():
    server, notifier, _ = connected(V.WS2008, min_version=V.WS2008)
    server.receive(Unload().pack())
    assert notifier.take() == []
    assert notifier.events[-1] == ("unloaded",)


def test_contact_while_connected_forces_a_disconnect_first():
    server, notifier, relid = opened()
    contact(server, V.WIN10_V5_2)
    assert notifier.take() == [VersionResponse(1, 0, 1)]
    assert ("close_channel", relid) in notifier.events
    assert server.version is V.WIN10_V5_2
    assert not server.offers_requested


# --- (h) modify, the rest ---------------------------------------------------------------------


def test_modify_channel_answers_from_5_3():
    server, notifier, relid = opened(V.WIN10_V5_3)
    server.receive(ModifyChannel(relid, 3).pack())
    assert notifier.take() == [ModifyChannelResponse(relid, 0)]
    assert notifier.events == [("modify_channel", relid, 3)]


def test_modify_channel_before_5_3_has_no_answer():
    server, notifier, relid = opened(V.WIN10_V5)
    server.receive(ModifyChannel(relid, 3).pack())
    assert notifier.take() == []
    assert notifier.events == [("modify_channel", relid, 3)]


def test_modify_channel_of_a_closed_channel_fails():
    server, notifier, (relid,) = connected()
    server.receive(ModifyChannel(relid, 1).pack())
    assert notifier.take() == [ModifyChannelResponse(relid, 0x8000FFFF - (1 << 32))]
    assert notifier.errors[0].field == "state"


def test_modify_channel_below_4_1_is_a_version_error():
    server, notifier, relid = opened(V.WIN10)
    server.receive(ModifyChannel(relid, 1).pack())
    assert notifier.errors[0].field == "version"


def test_hv_sock_connect_is_refused():
    server, notifier, _ = connected()
    a, b = uuid.uuid4(), uuid.uuid4()
    server.receive(TlConnectRequest(a, b).pack())
    assert notifier.take() == [TlConnectResult(a, b, 0xC0000236 - (1 << 32))]


def test_reserved_channels_are_not_implemented():
    server, notifier, _ = connected()
    server.receive(OpenReservedChannel(1, 0, 2, ID, 1).pack())
    assert "OPEN_RESERVED_CHANNEL.msgtype" in str(notifier.errors[0])


def test_host_api_misuse_raises_value_error():
    server, _ = make()
    server.offer(params(1))
    with pytest.raises(ValueError, match="second offer"):
        server.offer(params(1))
    with pytest.raises(ValueError, match="user_defined"):
        server.offer(params(2, user_defined=bytes(121)))
    with pytest.raises(ValueError, match="relid: found 9"):
        server.rescind(9)


# --- the guest is untrusted ----------------------------------------------------------------


@settings(max_examples=150)
@given(st.lists(st.binary(max_size=250), max_size=10))
def test_random_bytes_never_raise_and_end_as_errors(blobs):
    server, notifier, _ = opened()
    for data in blobs:
        server.receive(data, 4)
    assert len(notifier.errors) <= len(blobs)
    assert all(str(e) for e in notifier.errors)


def _snapshot(server: ServerProtocol, relid: int):
    channel = server._channels[relid]
    return (channel.state, channel.visible, channel.ring_gpadl_id, dict(channel.gpadls),
            set(channel.teardown_pending))


_GLOBAL = {T.INITIATE_CONTACT, T.UNLOAD}


@settings(max_examples=200)
@given(st.lists(messages(Direction.GUEST_TO_HOST), max_size=12), st.sampled_from([1, 4]))
def test_random_guest_messages_never_raise_nor_touch_channels_they_do_not_name(msgs, conn):
    server, notifier, _ = opened()
    bystander = server.offer(params(50))
    send_gpadl(server, bystander, gpadl_id=0x77)
    notifier.take()
    for message in msgs:
        before = _snapshot(server, bystander)
        errors = len(notifier.errors)
        server.receive(message.pack(), conn)
        if message.TYPE in _GLOBAL or server.version is None:
            return  # a new contact or an unload legitimately resets every channel
        named = {getattr(message, "child_relid", None)}
        if message.TYPE is T.GPADL_BODY:
            named.add(server._assembler.in_progress(message.gpadl_id))
            named.add(bystander)  # a completing body may belong to any channel
        if bystander not in named or len(notifier.errors) > errors:
            assert _snapshot(server, bystander) == before
        for sent in notifier.take():
            assert sent.pack()  # everything the server says is well formed


def test_offers_take_the_lowest_free_relid_and_a_withdrawn_key_may_be_offered_again():
    # The relid and duplicate-key indexes must follow removals exactly as a scan would.
    server, _ = make()
    assert [server.offer(params(n)) for n in range(1, 6)] == [1, 2, 3, 4, 5]
    server.rescind(2)   # never offered to a guest: it goes at once
    server.rescind(4)
    assert server.channels() == (1, 3, 5)
    assert server.offer(params(4)) == 2      # the same key as relid 4 had, now free again
    assert server.offer(params(6)) == 4
    assert server.offer(params(7)) == 6
    with pytest.raises(ValueError, match="second offer"):
        server.offer(params(4))
    assert server.offer(params(2)) == 7


# --- audit fixes: every open is answered, replies only where the version has them ---------------


class _RaisingOpenNotifier(RecordingServerNotifier):
    """A host whose open_channel fails by raising (a hypercall or ring error in real glue)."""

    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc

    def open_channel(self, relid, request):
        super().open_channel(relid, request)
        raise self.exc


@pytest.mark.parametrize("exc", [RuntimeError("could not create the guest event port"),
                                 KeyError("boom"),
                                 ProtocolError(T.OPEN_CHANNEL, "target_vp", 5000, "a VP")])
def test_an_open_the_host_raises_on_is_still_answered_with_a_failure_and_reported(exc):
    notifier = _RaisingOpenNotifier(exc)
    server = ServerProtocol(notifier=notifier)
    relid = server.offer(params(1))
    contact(server)
    server.receive(RequestOffers().pack())
    send_gpadl(server, relid)
    notifier.take()
    server.receive(OpenChannel(relid, 9, ID, 5000, 2).pack())
    assert notifier.take() == [OpenResult(relid, 9, 0xC0000001)]
    assert server.channel_state(relid) is ChannelState.CLOSED
    assert ("close_channel", relid) in notifier.events   # the host may undo a half-done open
    (error,) = notifier.errors
    assert type(exc).__name__ in str(error) or error is exc
    # The ring GPADL is free again: the guest can tear it down or open again.
    server.receive(GpadlTeardown(relid, ID).pack())
    assert notifier.take() == [GpadlTorndown(ID)]


def test_an_open_of_a_channel_rescinded_meanwhile_is_ignored_silently():
    # The guest sent OPENCHANNEL before it saw the rescind: OpenVMM ignores the open on a
    # revoked channel (channels.rs handle_open_channel: Revoked | Reoffered => {}).
    server, notifier, (relid,) = connected()
    send_gpadl(server, relid)
    server.rescind(relid)
    notifier.take()
    server.receive(OpenChannel(relid, relid, ID, 0, 2).pack())
    assert notifier.take() == []
    assert notifier.errors == []
    assert server.channel_state(relid) is ChannelState.REVOKED


def test_hv_sock_connect_at_4_0_gets_no_result_the_version_lacks_it():
    # TL_CONNECT_RESULT exists from 4.1 (§3.2); OpenVMM's send_tl_connect_result checks
    # Win10Rs3_0 before sending.
    server, notifier, _ = connected(V.WIN10)
    server.receive(TlConnectRequest(uuid.uuid4(), uuid.uuid4()).pack())
    assert notifier.take() == []
    assert notifier.errors == []


@pytest.mark.parametrize("relid", [1, 77])
def test_modify_channel_from_5_3_always_answers_a_refusal_with_status_unsuccessful(relid):
    # OpenVMM handle_modify_channel: any error -> MODIFYCHANNEL_RESPONSE(STATUS_UNSUCCESSFUL
    # 0x8000FFFF), an unknown channel included.
    server, notifier, _ = connected(V.WIN10_V5_3)   # relid 1 offered, not open; 77 unknown
    server.receive(ModifyChannel(relid, 1).pack())
    assert notifier.take() == [ModifyChannelResponse(relid, 0x8000FFFF - (1 << 32))]
    assert notifier.errors[0].field in ("state", "child_relid")


def test_modify_channel_of_an_unknown_channel_before_5_3_has_no_answer():
    server, notifier, _ = connected(V.WIN10_V5_2)
    server.receive(ModifyChannel(77, 1).pack())
    assert notifier.take() == []
    assert notifier.errors[0].field == "child_relid"


def _open2(relid: int) -> bytes:
    return OpenChannel(relid, relid, ID, 0, 2, connection_id=0x4321, event_flag=7,
                       flags=1).pack()


@pytest.mark.parametrize(
    ("granted", "expected"),
    [(FeatureFlag(0), (None, None, None)),
     (FeatureFlag.GUEST_SPECIFIED_SIGNAL_PARAMETERS, (0x4321, 7, None)),
     (FeatureFlag.CHANNEL_INTERRUPT_REDIRECTION, (None, None, 1)),
     (FeatureFlag.GUEST_SPECIFIED_SIGNAL_PARAMETERS | FeatureFlag.CHANNEL_INTERRUPT_REDIRECTION,
      (0x4321, 7, 1))],
)
def test_open_channel2_fields_count_only_with_the_feature_that_makes_them_valid(granted, expected):
    # §3.3: connection_id/event_flag are valid with guest_specified_signal_parameters, flags
    # with channel_interrupt_redirection; OpenVMM's handle_open_channel ignores the others.
    server, notifier = make(features=granted)
    relid = server.offer(params(1))
    contact(server, V.WIN10_V6_0, feature_flags=int(granted))
    server.receive(RequestOffers().pack())
    send_gpadl(server, relid)
    server.receive(_open2(relid))
    (_, _, request), = [e for e in notifier.events if e[0] == "open_channel"]
    assert (request.connection_id, request.event_flag, request.flags) == expected
    assert notifier.errors == []


def test_contact_below_win8_is_refused_by_default_as_unsupported():
    # §3.5(d): WS2008/Win7 need the interrupt page (and connection 2 at WS2008), which the
    # host does not implement; version_supported=0 lets a guest fall back to Win8.
    for version in (V.WS2008, V.WIN7):
        server, notifier = make()
        contact(server, version)
        assert notifier.take() == [VersionResponse(0)]
        assert server.version is None
        assert notifier.errors == []
    contact(server, V.WIN8)
    assert server.version is V.WIN8


def test_min_version_option_keeps_legacy_negotiation_but_ignores_target_vp_below_win8():
    server, notifier, (relid,) = connected(V.WIN7, min_version=V.WS2008)
    assert server.version is V.WIN7
    send_gpadl(server, relid)
    server.receive(OpenChannel(relid, relid, ID, 3, 2).pack())
    (_, _, request), = [e for e in notifier.events if e[0] == "open_channel"]
    assert request.target_vp == 0      # §3.4: target_vp is honoured from Win8 on


def test_a_host_capped_below_win8_still_negotiates_its_cap():
    # An explicit legacy cap (driver set vmbus_version = "0.13") keeps working as before.
    server, notifier = make(max_version=V.WS2008)
    contact(server, V.WS2008)
    assert notifier.take() == [VersionResponse(1, 0, int(V.WS2008))]


def test_min_version_above_max_version_is_a_host_error():
    with pytest.raises(ValueError, match="min_version"):
        make(min_version=V.WIN10, max_version=V.WIN8)
