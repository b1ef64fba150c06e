"""ClientProtocol, the guest side, fed host messages by hand through a recording notifier."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.vmbus_strategies import RecordingClientNotifier, messages

from winhv.drivers.vmbus.protocol import (
    FIRST_GPADL_ID,
    AllOffersDelivered,
    ChannelMessageType,
    ClientProtocol,
    ClientState,
    CloseChannel,
    Direction,
    FeatureFlag,
    GpadlBody,
    GpadlCreated,
    GpadlHeader,
    GpadlTeardown,
    GpadlTorndown,
    InitiateContact,
    ModifyChannel,
    ModifyChannelResponse,
    OfferChannel,
    OpenChannel,
    OpenResult,
    RelIdReleased,
    RequestOffers,
    RescindChannelOffer,
    Unload,
    UnloadComplete,
    VersionResponse,
    VmbusVersion,
)

V = VmbusVersion
T = ChannelMessageType


def make(**kwargs) -> tuple[ClientProtocol, RecordingClientNotifier]:
    notifier = RecordingClientNotifier()
    return ClientProtocol(notifier=notifier, **kwargs), notifier


def offer(relid: int) -> OfferChannel:
    return OfferChannel(uuid.UUID(int=relid), uuid.UUID(int=100 + relid), relid,
                        connection_id=0x2000 + relid)


def connected(version: V = V.WIN10_V5_3, relids=(1,)):
    client, notifier = make(versions=[version])
    client.connect()
    client.receive(VersionResponse(1, 0, 1 if version >= V.WIN10_V5 else int(version)).pack())
    for relid in relids:
        client.receive(offer(relid).pack())
    client.receive(AllOffersDelivered().pack())
    notifier.take()
    notifier.events.clear()
    return client, notifier


def with_gpadl(client, notifier, relid=1, pages=4):
    gpadl_id = client.create_gpadl(relid, list(range(pages)))
    client.receive(GpadlCreated(relid, gpadl_id, 0).pack())
    notifier.take()
    return gpadl_id


def test_connect_proposes_newest_first_on_the_right_connection_ids():
    client, notifier = make()
    client.connect()
    (contact, conn), = notifier.take()
    assert (contact.version_requested, conn, contact.msg_sint) == (V.WIN10_V5_3, 4, 2)
    for expected in (V.WIN10_V5_2, V.WIN10_V5_1, V.WIN10_V5, V.WIN10_V4_1, V.WIN10, V.WIN8_1):
        client.receive(VersionResponse(0).pack())
        (contact, conn), = notifier.take()
        assert contact.version_requested == expected
        assert conn == (4 if expected >= V.WIN10_V5 else 1)
    assert contact.interrupt_page == 0
    assert contact.msg_sint == 0


def test_accepted_version_stores_the_connection_id_and_requests_offers():
    client, notifier = make()
    client.connect()
    notifier.take()
    client.receive(VersionResponse(1, 0, 7).pack())
    assert client.version is V.WIN10_V5_3
    assert client.message_connection_id == 7
    assert notifier.take() == [(RequestOffers(), 7)]
    assert notifier.events == [("connected", V.WIN10_V5_3)]


def test_below_5_0_messages_go_to_connection_1():
    client, notifier = make(versions=[V.WIN8], interrupt_page=0x9000)
    client.connect()
    (contact, conn), = notifier.take()
    assert (contact.interrupt_page, conn) == (0x9000, 1)
    client.receive(VersionResponse(1, 0, int(V.WIN8)).pack())
    assert notifier.take() == [(RequestOffers(), 1)]


def test_every_version_refused_reports_and_disconnects():
    client, notifier = make(versions=[V.WIN10, V.WIN8])
    client.connect()
    client.receive(VersionResponse(0).pack())
    client.receive(VersionResponse(0).pack())
    assert client.state is ClientState.DISCONNECTED
    assert str(notifier.errors[0]) == (
        "VERSION_RESPONSE.version_supported: found 0, expected one of WIN10, WIN8 accepted"
    )


def test_failed_connection_state_stops_negotiation():
    client, notifier = make()
    client.connect()
    client.receive(VersionResponse(1, 2).pack())
    assert client.state is ClientState.DISCONNECTED
    assert notifier.errors[0].field == "connection_state"


def test_contact_rejected_by_the_hypervisor_falls_back():
    client, notifier = make(versions=[V.WIN10_V5, V.WIN8_1])
    client.connect()
    notifier.take()
    client.contact_rejected()
    (contact, conn), = notifier.take()
    assert (contact.version_requested, conn) == (V.WIN8_1, 1)
    client.contact_rejected()
    assert notifier.errors[0].field == "version_supported"


def test_copper_proposes_features_and_keeps_only_those_granted():
    cid = uuid.uuid4()
    client, notifier = make(versions=[V.WIN10_V6_0],
                            features=FeatureFlag.CLIENT_ID | FeatureFlag.PAUSE_RESUME,
                            client_id=cid)
    client.connect()
    (contact, _), = notifier.take()
    assert isinstance(contact, InitiateContact)
    assert contact.client_id == cid
    assert len(contact.pack()) == 56
    client.receive(VersionResponse(1, 0, 1, supported_features=0xFF).pack())
    assert client.features == FeatureFlag.CLIENT_ID | FeatureFlag.PAUSE_RESUME


def test_offers_rescinds_and_release():
    client, notifier = connected(relids=(1, 2))
    assert sorted(client.offers) == [1, 2]
    client.receive(RescindChannelOffer(2).pack())
    assert notifier.events == [("rescinded", 2)]
    assert client.rescinded == {2}
    client.release_relid(2)
    assert notifier.take() == [(RelIdReleased(2), 1)]
    assert sorted(client.offers) == [1]


def test_rescind_while_an_open_is_in_flight_drops_it_so_the_relid_can_be_released():
    # The host never answers an OPENCHANNEL on a revoked channel (OpenVMM handle_open_channel:
    # Revoked => {}); Linux completes the waiter on rescind and releases the relid (§3.5(f)).
    client, notifier = connected()
    gpadl_id = with_gpadl(client, notifier)
    client.open_channel(1, gpadl_id, 2)
    notifier.take()
    client.receive(RescindChannelOffer(1).pack())
    assert not client.is_open(1)
    client.teardown_gpadl(1, gpadl_id)
    client.receive(GpadlTorndown(gpadl_id).pack())
    client.release_relid(1)
    assert notifier.take() == [(GpadlTeardown(1, gpadl_id), 1), (RelIdReleased(1), 1)]
    assert notifier.errors == []
    assert 1 not in client.offers


def test_duplicate_offer_and_unknown_rescind_are_errors():
    client, notifier = connected()
    client.receive(offer(1).pack())
    client.receive(RescindChannelOffer(9).pack())
    assert [e.field for e in notifier.errors] == ["child_relid", "child_relid"]


def test_create_gpadl_numbers_from_0xe1e10_and_sends_header_and_bodies():
    client, notifier = connected()
    first = client.create_gpadl(1, list(range(60)))
    second = client.create_gpadl(1, [5])
    assert (first, second) == (FIRST_GPADL_ID, FIRST_GPADL_ID + 1)
    sent = [m for m, _ in notifier.take()]
    assert [type(m) for m in sent] == [GpadlHeader, GpadlBody, GpadlBody, GpadlHeader]
    client.receive(GpadlCreated(1, first, 0).pack())
    assert notifier.events == [("gpadl_created", 1, first, 0)]


def test_unexpected_gpadl_created_is_an_error():
    client, notifier = connected()
    client.receive(GpadlCreated(1, 0x1234, 0).pack())
    assert notifier.errors[0].field == "child_relid/gpadl_id"


def test_open_uses_relid_as_openid_and_reports_the_result():
    client, notifier = connected()
    gpadl_id = with_gpadl(client, notifier)
    client.open_channel(1, gpadl_id, 2, target_vp=1, user_data=bytes(24))
    assert notifier.take() == [(OpenChannel(1, 1, gpadl_id, 1, 2, bytes(24)), 1)]
    client.receive(OpenResult(1, 1, 0).pack())
    assert notifier.events[-1] == ("open_result", 1, 0)
    assert client.is_open(1)


def test_open_needs_a_created_gpadl_of_that_channel():
    client, _ = connected()
    with pytest.raises(ValueError, match="gpadl_id"):
        client.open_channel(1, FIRST_GPADL_ID, 1)


def test_close_teardown_and_torndown():
    client, notifier = connected()
    gpadl_id = with_gpadl(client, notifier)
    client.open_channel(1, gpadl_id, 2)
    client.receive(OpenResult(1, 1, 0).pack())
    client.close_channel(1)
    client.teardown_gpadl(1, gpadl_id)
    assert [m for m, _ in notifier.take()][1:] == [CloseChannel(1), GpadlTeardown(1, gpadl_id)]
    client.receive(GpadlTorndown(gpadl_id).pack())
    assert notifier.events[-1] == ("gpadl_torn_down", gpadl_id)
    assert not client.is_open(1)


def test_modify_channel_needs_4_1_and_gets_an_answer_from_5_3():
    client, notifier = connected(V.WIN10_V5_3)
    gpadl_id = with_gpadl(client, notifier)
    client.open_channel(1, gpadl_id, 2)
    client.receive(OpenResult(1, 1, 0).pack())
    client.modify_channel(1, 3)
    assert notifier.take()[-1] == (ModifyChannel(1, 3), 1)
    client.receive(ModifyChannelResponse(1, 0).pack())
    assert notifier.events[-1] == ("modify_channel_response", 1, 0)
    old, _ = connected(V.WIN10)
    with pytest.raises(ValueError, match="WIN10_V4_1"):
        old.modify_channel(1, 3)


def test_unload_waits_for_unload_response_then_can_reconnect():
    client, notifier = connected()
    client.unload()
    assert notifier.take() == [(Unload(), 1)]
    assert client.state is ClientState.UNLOADING
    client.receive(UnloadComplete().pack())
    assert client.state is ClientState.DISCONNECTED
    assert notifier.events == [("unloaded",)]
    assert dict(client.offers) == {}
    client.connect()
    assert notifier.take()[0][0].TYPE is T.INITIATE_CONTACT


def test_guest_driver_misuse_raises():
    with pytest.raises(ValueError, match="client_id"):
        make(versions=[V.WIN10_V6_0], features=FeatureFlag.CLIENT_ID)
    client, _ = make()
    with pytest.raises(ValueError, match="expected connected"):
        client.create_gpadl(1, [1])
    client.connect()
    with pytest.raises(ValueError, match="expected disconnected"):
        client.connect()


def test_host_messages_while_connecting_are_errors():
    client, notifier = make()
    client.connect()
    client.receive(offer(1).pack())
    assert notifier.errors[0].field == "state"
    assert dict(client.offers) == {}


@settings(max_examples=150)
@given(st.lists(messages(Direction.HOST_TO_GUEST) | st.binary(max_size=64), max_size=12))
def test_random_host_input_never_raises(inputs):
    client, notifier = connected()
    for item in inputs:
        client.receive(item if isinstance(item, bytes) else item.pack())
    assert all(str(e) for e in notifier.errors)
