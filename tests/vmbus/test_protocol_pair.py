"""A ServerProtocol and a ClientProtocol back to back: the §3.5 sequences end to end."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st
from support.exports import public_names
from support.vmbus_strategies import ProtocolPair

from winhv.drivers.vmbus.protocol import (
    ChannelMessageType,
    ChannelState,
    ClientState,
    Direction,
    FeatureFlag,
    OfferChannel,
    VmbusVersion,
)

T = ChannelMessageType
V = VmbusVersion
G2H = Direction.GUEST_TO_HOST


def connected_pair(**kwargs) -> ProtocolPair:
    pair = ProtocolPair(**kwargs)
    pair.offer("storage")
    pair.offer("net")
    pair.connect()
    return pair


def test_a_connect_negotiates_5_3_and_delivers_every_offer():
    pair = connected_pair()
    assert pair.types() == [T.INITIATE_CONTACT, T.VERSION_RESPONSE, T.REQUEST_OFFERS,
                            T.OFFER_CHANNEL, T.OFFER_CHANNEL, T.ALL_OFFERS_DELIVERED]
    assert pair.transcript[0][2] == 4  # 5.x contact goes to connection 4
    assert pair.transcript[2][2] == 1  # then the connection id the host returned
    assert pair.client.version is pair.server.version is V.WIN10_V5_3
    assert sorted(pair.client.offers) == [1, 2]
    assert pair.client_notifier.events[-1] == ("all_offers_delivered",)
    pair.assert_clean()


def test_a_version_fallback_against_a_win8_1_host():
    pair = connected_pair(server={"max_version": V.WIN8_1})
    contacts = [(m.version_requested, conn) for d, m, conn in pair.transcript
                if m.TYPE is T.INITIATE_CONTACT]
    assert contacts == [(V.WIN10_V5_3, 4), (V.WIN10_V5_2, 4), (V.WIN10_V5_1, 4), (V.WIN10_V5, 4),
                        (V.WIN10_V4_1, 1), (V.WIN10, 1), (V.WIN8_1, 1)]
    assert pair.client.version is V.WIN8_1
    assert pair.client.message_connection_id == 1
    assert len(pair.client.offers) == 2
    pair.assert_clean()


def test_a_copper_connection_negotiates_features():
    pair = connected_pair(
        server={"features": FeatureFlag.CLIENT_ID | FeatureFlag.CONFIDENTIAL_CHANNELS},
        client={"versions": [V.WIN10_V6_0], "features": FeatureFlag.CLIENT_ID,
                "client_id": uuid.UUID(int=7)},
    )
    assert pair.client.version is V.WIN10_V6_0
    assert pair.client.features == pair.server.features == FeatureFlag.CLIENT_ID
    assert pair.server_notifier.info.client_id == uuid.UUID(int=7)
    pair.assert_clean()


def test_b_c_d_gpadl_and_open_over_60_pages():
    pair = connected_pair()
    mark = len(pair.transcript)
    gpadl_id = pair.open(1, pages=60, downstream=30)
    assert pair.types(mark) == [T.GPADL_HEADER, T.GPADL_BODY, T.GPADL_BODY, T.GPADL_CREATED,
                                T.OPEN_CHANNEL, T.OPEN_CHANNEL_RESULT]
    assert pair.client_notifier.events[-2:] == [("gpadl_created", 1, gpadl_id, 0),
                                                ("open_result", 1, 0)]
    assert pair.server.channel_state(1) is ChannelState.OPEN
    assert pair.client.is_open(1)
    # (d): the guest signals the host on the offer's dedicated connection id.
    offer = pair.client.offers[1]
    assert isinstance(offer, OfferChannel)
    assert (offer.connection_id, offer.is_dedicated_interrupt) == (0x2001, 1)
    pair.assert_clean()


def test_e_close_then_teardown():
    pair = connected_pair()
    gpadl_id = pair.open(2)
    mark = len(pair.transcript)
    pair.client.close_channel(2)
    pair.client.teardown_gpadl(2, gpadl_id)
    pair.pump()
    assert pair.types(mark) == [T.CLOSE_CHANNEL, T.GPADL_TEARDOWN, T.GPADL_TORNDOWN]
    assert ("close_channel", 2) in pair.server_notifier.events
    assert pair.server.channel_state(2) is ChannelState.CLOSED
    pair.assert_clean()


def test_f_rescind_of_an_open_channel_and_release():
    pair = connected_pair()
    gpadl_id = pair.open(1)
    mark = len(pair.transcript)
    pair.server.rescind(1)
    pair.pump()
    assert pair.client_notifier.events[-1] == ("rescinded", 1)
    pair.client.close_channel(1)
    pair.client.teardown_gpadl(1, gpadl_id)
    pair.pump()
    pair.client.release_relid(1)
    pair.pump()
    assert pair.types(mark) == [T.RESCIND_CHANNEL_OFFER, T.CLOSE_CHANNEL, T.GPADL_TEARDOWN,
                                T.GPADL_TORNDOWN, T.REL_ID_RELEASED]
    assert pair.server.channels() == (2,)
    assert pair.server_notifier.events[-1] == ("relid_released", 1)
    pair.assert_clean()


def test_hot_add_while_connected_reuses_the_released_relid():
    pair = connected_pair()
    pair.server.rescind(2)
    pair.pump()
    pair.client.release_relid(2)
    pair.pump()
    relid = pair.offer("keyboard")
    assert relid == 2
    assert pair.client_notifier.events[-1] == ("offer", 2)
    assert pair.client.offers[2].interface_id != pair.client.offers[1].interface_id
    pair.assert_clean()


def test_g_unload_and_reconnect():
    pair = connected_pair()
    pair.open(1)
    mark = len(pair.transcript)
    pair.client.unload()
    pair.pump()
    assert pair.types(mark) == [T.UNLOAD, T.UNLOAD_COMPLETE]
    assert pair.client.state is ClientState.DISCONNECTED
    assert pair.server.version is None
    assert ("close_channel", 1) in pair.server_notifier.events
    pair.connect()
    assert pair.client.version is V.WIN10_V5_3
    assert sorted(pair.client.offers) == [1, 2]
    pair.open(1)
    assert pair.client.is_open(1)
    pair.assert_clean()


def test_h_modify_channel_at_5_3_and_at_5_0():
    for version, answered in ((V.WIN10_V5_3, True), (V.WIN10_V5, False)):
        pair = connected_pair(client={"versions": [version]})
        pair.open(1)
        mark = len(pair.transcript)
        pair.client.modify_channel(1, 1)
        pair.pump()
        expected = [T.MODIFY_CHANNEL] + ([T.MODIFY_CHANNEL_RESPONSE] if answered else [])
        assert pair.types(mark) == expected
        assert pair.server_notifier.events[-1] == ("modify_channel", 1, 1)
        pair.assert_clean()


def test_every_message_the_pair_exchanges_is_within_240_bytes():
    pair = connected_pair()
    pair.open(1, pages=200, downstream=100)
    assert all(len(m.pack()) <= 240 for _, m, _ in pair.transcript)


@settings(max_examples=60)
@given(st.lists(st.sampled_from(["open", "close", "rescind", "offer", "unload"]), max_size=10))
def test_random_host_and_guest_operations_keep_both_sides_in_step(ops):
    pair = connected_pair()
    gpadls: dict[int, int] = {}
    for n, op in enumerate(ops):
        live = [r for r in pair.client.offers if r not in pair.client.rescinded]
        if op == "offer":
            pair.offer(f"hot{n}")
        elif op == "unload" and pair.client.state is ClientState.CONNECTED:
            pair.client.unload()
            pair.pump()
            gpadls.clear()
            pair.connect()
        elif op == "open" and live and not pair.client.is_open(live[0]):
            gpadls[live[0]] = pair.open(live[0])
        elif op == "close" and any(pair.client.is_open(r) for r in live):
            relid = next(r for r in live if pair.client.is_open(r))
            pair.client.close_channel(relid)
            pair.client.teardown_gpadl(relid, gpadls.pop(relid))
            pair.pump()
        elif op == "rescind" and live:
            relid = live[-1]
            pair.server.rescind(relid)
            pair.pump()
            if pair.client.is_open(relid):
                pair.client.close_channel(relid)
            if relid in gpadls:
                pair.client.teardown_gpadl(relid, gpadls.pop(relid))
            pair.client.release_relid(relid)
            pair.pump()
        pair.assert_clean()
        assert sorted(pair.client.offers) == list(pair.server.channels())
        for relid in pair.client.offers:
            assert pair.client.is_open(relid) == (
                pair.server.channel_state(relid) is ChannelState.OPEN)


def test_protocol_namespace_exports_exactly_the_public_names_of_its_modules():
    from winhv.drivers.vmbus import (
        _client_protocol,
        _gpadl,
        _messages,
        _server_notifier,
        _server_protocol,
        _versions,
        protocol,
    )

    modules = (_versions, _messages, _gpadl, _server_notifier, _server_protocol, _client_protocol)
    expected = {name for module in modules for name in module.__all__}
    assert len(protocol.__all__) == len(set(protocol.__all__)) == len(expected)
    assert set(protocol.__all__) == expected
    public = public_names(protocol)
    assert public == expected
