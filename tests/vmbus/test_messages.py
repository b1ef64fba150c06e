"""The channel-message table, wire layouts (fact sheet §3.2, §3.3, §5.9) and parse_message."""

from __future__ import annotations

import pickle
import struct
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.vmbus_strategies import messages, messages_of

from winhv.drivers.vmbus.protocol import (
    MESSAGES,
    ChannelMessageType,
    CloseChannel,
    Direction,
    FeatureFlag,
    GpadlBody,
    GpadlHeader,
    InitiateContact,
    ModifyChannel,
    OfferChannel,
    OpenChannel,
    ProtocolError,
    RequestOffers,
    VersionResponse,
    VmbusVersion,
    parse_message,
)

T = ChannelMessageType
G2H = Direction.GUEST_TO_HOST
H2G = Direction.HOST_TO_GUEST
NEWEST = VmbusVersion.WIN10_V6_0

# §3.2 / §3.3: number -> (size of the smallest form, direction, min version or None)
EXPECTED = {
    1: (196, H2G, VmbusVersion.WS2008),
    2: (12, H2G, VmbusVersion.WS2008),
    3: (8, G2H, VmbusVersion.WS2008),
    4: (8, H2G, VmbusVersion.WS2008),
    5: (148, G2H, VmbusVersion.WS2008),
    6: (20, H2G, VmbusVersion.WS2008),
    7: (12, G2H, VmbusVersion.WS2008),
    8: (20, G2H, VmbusVersion.WS2008),
    9: (16, G2H, VmbusVersion.WS2008),
    10: (20, H2G, VmbusVersion.WS2008),
    11: (16, G2H, VmbusVersion.WS2008),
    12: (12, H2G, VmbusVersion.WS2008),
    13: (12, G2H, VmbusVersion.WS2008),
    14: (40, G2H, None),
    15: (16, H2G, None),
    16: (8, G2H, VmbusVersion.WS2008),
    17: (8, H2G, VmbusVersion.WIN7),
    18: (28, G2H, VmbusVersion.WIN10),
    19: (20, G2H, VmbusVersion.WS2008),
    20: (12, H2G, VmbusVersion.WIN10),
    21: (40, G2H, VmbusVersion.WIN10),
    22: (16, G2H, VmbusVersion.WIN10_V4_1),
    23: (44, H2G, VmbusVersion.WIN10_V4_1),
    24: (16, H2G, VmbusVersion.WIN10_V5_3),
    25: (24, G2H, VmbusVersion.WIN10_V6_0),
    26: (9, H2G, VmbusVersion.WIN10_V6_0),
    27: (8, G2H, VmbusVersion.WIN10_V6_0),
    28: (8, H2G, VmbusVersion.WIN10_V6_0),
    29: (8, G2H, VmbusVersion.WIN10_V6_0),
}

# §3.3 offsets of every fixed field, header included.
OFFSETS = {
    T.OFFER_CHANNEL: {
        "interface_id": 8, "instance_id": 24, "reserved1": 40, "reserved2": 48, "flags": 56,
        "mmio_megabytes": 58, "user_defined": 60, "sub_channel_index": 180,
        "mmio_megabytes_optional": 182, "child_relid": 184, "monitor_id": 188,
        "monitor_allocated": 189, "is_dedicated_interrupt": 190, "connection_id": 192,
    },
    T.RESCIND_CHANNEL_OFFER: {"child_relid": 8},
    T.OPEN_CHANNEL: {"child_relid": 8, "open_id": 12, "ring_gpadl_id": 16, "target_vp": 20,
                     "downstream_ring_page_offset": 24, "user_data": 28},
    T.OPEN_CHANNEL_RESULT: {"child_relid": 8, "open_id": 12, "status": 16},
    T.CLOSE_CHANNEL: {"child_relid": 8},
    T.GPADL_HEADER: {"child_relid": 8, "gpadl_id": 12, "range_buflen": 16, "rangecount": 18},
    T.GPADL_BODY: {"msgnumber": 8, "gpadl_id": 12},
    T.GPADL_CREATED: {"child_relid": 8, "gpadl_id": 12, "status": 16},
    T.GPADL_TEARDOWN: {"child_relid": 8, "gpadl_id": 12},
    T.GPADL_TORNDOWN: {"gpadl_id": 8},
    T.REL_ID_RELEASED: {"child_relid": 8},
    T.INITIATE_CONTACT: {"version_requested": 8, "target_vcpu": 12, "target_info": 16,
                         "monitor_page1": 24, "monitor_page2": 32},
    T.VERSION_RESPONSE: {"version_supported": 8, "connection_state": 9,
                         "selected_version_or_connection_id": 12},
    T.OPEN_RESERVED_CHANNEL: {"channel_id": 8, "target_vp": 12, "target_sint": 16,
                              "ring_gpadl_id": 20, "downstream_page_offset": 24},
    T.CLOSE_RESERVED_CHANNEL: {"channel_id": 8, "target_vp": 12, "target_sint": 16},
    T.CLOSE_RESERVED_RESPONSE: {"channel_id": 8},
    T.TL_CONNECT_REQUEST: {"guest_endpoint_id": 8, "host_service_id": 24},
    T.MODIFY_CHANNEL: {"child_relid": 8, "target_vp": 12},
    T.TL_CONNECT_RESULT: {"endpoint_id": 8, "service_id": 24, "status": 40},
    T.MODIFY_CHANNEL_RESPONSE: {"child_relid": 8, "status": 12},
    T.MODIFY_CONNECTION: {"parent_to_child_monitor_page_gpa": 8,
                          "child_to_parent_monitor_page_gpa": 16},
    T.MODIFY_CONNECTION_RESPONSE: {"connection_state": 8},
}

IF_ID = uuid.UUID("0e0b6031-5213-4934-818b-38d90ced39db")
INSTANCE = uuid.UUID("b6650ff7-33bc-4840-8048-e0676786f393")


def test_table_lists_every_message_type_except_invalid_with_spec_size_direction_version():
    assert sorted(MESSAGES) == list(range(1, 30))
    for number, (size, direction, min_version) in EXPECTED.items():
        spec = MESSAGES[T(number)]
        assert spec.type == number
        assert number == spec.cls.TYPE
        assert (spec.size, spec.direction, spec.min_version) == (size, direction, min_version)
        assert spec.sizes[:1] in ((size,), ())


def test_table_marks_variable_forms_and_feature_gates():
    assert MESSAGES[T.OPEN_CHANNEL].sizes == (148, 156)
    assert MESSAGES[T.INITIATE_CONTACT].sizes == (40, 56)
    assert MESSAGES[T.VERSION_RESPONSE].sizes == (16, 20, 40)
    assert MESSAGES[T.TL_CONNECT_REQUEST].sizes == (40, 56)
    assert MESSAGES[T.GPADL_HEADER].variable
    assert MESSAGES[T.GPADL_BODY].variable
    assert not MESSAGES[T.OFFER_CHANNEL].variable
    assert MESSAGES[T.PAUSE].feature is FeatureFlag.PAUSE_RESUME
    assert MESSAGES[T.MODIFY_CONNECTION].feature is FeatureFlag.MODIFY_CONNECTION
    assert MESSAGES[T.OPEN_CHANNEL].feature is None


@pytest.mark.parametrize("message_type", sorted(OFFSETS))
def test_fixed_field_offsets_match_fact_sheet(message_type):
    assert dict(MESSAGES[message_type].cls.OFFSETS) == OFFSETS[message_type]


def test_guid_wire_encoding_is_mixed_endian_per_5_9():
    data = OfferChannel(IF_ID, INSTANCE, 1).pack()
    assert data[8:24] == bytes.fromhex("31600b0e1352344981 8b38d90ced39db".replace(" ", ""))


def test_offer_channel_is_196_bytes_with_every_field_at_its_offset():
    offer = OfferChannel(
        IF_ID, INSTANCE, child_relid=0x11223344, flags=0x2011, mmio_megabytes=0x55AA,
        user_defined=b"\x04\0\0\0pipe", sub_channel_index=0x0102, mmio_megabytes_optional=0x0304,
        monitor_id=0x7E, monitor_allocated=1, is_dedicated_interrupt=1, connection_id=0x2001,
        reserved1=0x0807060504030201, reserved2=0x1817161514131211,
    )
    data = offer.pack()
    assert len(data) == 196 == OfferChannel.SIZE
    assert struct.unpack_from("<II", data, 0) == (1, 0)
    assert uuid.UUID(bytes_le=data[8:24]) == IF_ID
    assert uuid.UUID(bytes_le=data[24:40]) == INSTANCE
    assert struct.unpack_from("<QQ", data, 40) == (0x0807060504030201, 0x1817161514131211)
    assert struct.unpack_from("<HH", data, 56) == (0x2011, 0x55AA)
    assert data[60:180] == b"\x04\0\0\0pipe".ljust(120, b"\0")
    assert struct.unpack_from("<HHI", data, 180) == (0x0102, 0x0304, 0x11223344)
    assert struct.unpack_from("<BBHI", data, 188) == (0x7E, 1, 1, 0x2001)
    assert OfferChannel.unpack(data) == offer


def test_open_channel_short_and_open_channel2_forms():
    short = OpenChannel(7, 7, 0xE1E10, 3, 5, b"\x01" * 24)
    data = short.pack()
    assert len(data) == 148
    assert struct.unpack_from("<IIIII", data, 8) == (7, 7, 0xE1E10, 3, 5)
    assert data[28:148] == b"\x01" * 24 + bytes(96)
    long = OpenChannel(7, 7, 0xE1E10, 3, 5, connection_id=0x2007, event_flag=9, flags=1)
    data = long.pack()
    assert len(data) == 156
    assert struct.unpack_from("<IHH", data, 148) == (0x2007, 9, 1)
    assert parse_message(data, version=NEWEST, direction=G2H) == long
    # Below 6.0 the OpenChannel2 tail is not decoded.
    assert parse_message(data, version=VmbusVersion.WIN10_V5_3, direction=G2H) == short.__class__(
        7, 7, 0xE1E10, 3, 5)


@pytest.mark.parametrize(
    ("features", "long_form"),
    [(FeatureFlag(0), False), (FeatureFlag.CLIENT_ID | FeatureFlag.PAUSE_RESUME, False),
     (FeatureFlag.GUEST_SPECIFIED_SIGNAL_PARAMETERS, True),
     (FeatureFlag.CHANNEL_INTERRUPT_REDIRECTION, True), (None, True)],
)
def test_open_channel2_form_needs_one_of_its_features_when_features_are_given(features,
                                                                              long_form):
    # OpenVMM protocol.rs: OpenChannel2 Copper features:(guest_specified_signal_parameters |
    # channel_interrupt_redirection); features=None means "not checked" (as for 25..29).
    long = OpenChannel(7, 7, 0xE1E10, 3, 5, connection_id=0x2007, event_flag=9, flags=1)
    parsed = parse_message(long.pack(), version=NEWEST, direction=G2H, features=features)
    assert parsed == (long if long_form else OpenChannel(7, 7, 0xE1E10, 3, 5))
    assert MESSAGES[T.OPEN_CHANNEL].form_features == (
        (156, FeatureFlag.GUEST_SPECIFIED_SIGNAL_PARAMETERS
         | FeatureFlag.CHANNEL_INTERRUPT_REDIRECTION),)


def test_initiate_contact_union_below_and_from_5_0():
    legacy = InitiateContact(VmbusVersion.WIN8_1, 1, interrupt_page=0x12345000,
                             monitor_page1=0x1000, monitor_page2=0x2000)
    data = legacy.pack()
    assert len(data) == 40
    assert struct.unpack_from("<IIQQQ", data, 8) == (0x30000, 1, 0x12345000, 0x1000, 0x2000)
    modern = InitiateContact(VmbusVersion.WIN10_V6_0, 0, msg_sint=2, msg_vtl=1,
                             feature_flags=FeatureFlag.CLIENT_ID, client_id=INSTANCE)
    data = modern.pack()
    assert len(data) == 56
    assert struct.unpack_from("<BBHI", data, 16) == (2, 1, 0, 0x08)
    assert uuid.UUID(bytes_le=data[40:56]) == INSTANCE
    assert parse_message(data, version=None, direction=G2H) == modern


def test_initiate_contact_refuses_fields_of_the_other_form():
    with pytest.raises(ValueError, match="interrupt_page"):
        InitiateContact(VmbusVersion.WIN10_V5, interrupt_page=0x1000)
    with pytest.raises(ValueError, match="msg_sint"):
        InitiateContact(VmbusVersion.WIN8, msg_sint=2)


def test_version_response_three_forms():
    assert len(VersionResponse(1, 0, 1).pack()) == 16
    v2 = VersionResponse(1, 0, 1, supported_features=0x28)
    assert v2.pack()[16:] == struct.pack("<I", 0x28)
    v3 = VersionResponse(1, 0, 1, 0, 0xA000, 0xB000)
    data = v3.pack()
    assert data[16:] == struct.pack("<I4xQQ", 0, 0xA000, 0xB000)
    assert struct.unpack_from("<BBHI", data, 8) == (1, 0, 0, 1)
    assert parse_message(data, version=None, direction=H2G) == v3
    assert parse_message(data, version=VmbusVersion.WIN8, direction=H2G) == VersionResponse(1, 0, 1)


def test_gpadl_header_first_pfn_is_at_offset_28():
    data = GpadlHeader(1, 0xE1E10, 16, 1, (4096, 0x1234)).pack()
    assert len(data) == 36
    assert struct.unpack_from("<IIHHIIQ", data, 8) == (1, 0xE1E10, 16, 1, 4096, 0, 0x1234)


@given(messages())
def test_every_message_round_trips_through_pack_and_unpack(message):
    assert type(message).unpack(message.pack()) == message


@given(messages())
def test_parse_message_decodes_what_pack_wrote_at_the_newest_version(message):
    spec = MESSAGES[message.TYPE]
    data = message.pack()
    try:
        parsed = parse_message(data, version=NEWEST, direction=spec.direction)
    except ProtocolError as e:  # random GPADL counts may be inconsistent: then it says which
        error = e
    else:
        assert parsed == message
        return
    assert error.message_type in (T.GPADL_HEADER, T.GPADL_BODY)


@given(st.binary(max_size=300), st.sampled_from([*VmbusVersion, None]),
       st.sampled_from(list(Direction)))
def test_parse_message_only_ever_raises_protocol_error(data, version, direction):
    try:
        parse_message(data, version=version, direction=direction)
    except ProtocolError as e:
        error = e
    else:
        return
    assert str(error).startswith(error.message_type.name if error.message_type else "channel")


@pytest.mark.parametrize(
    ("data", "kwargs", "field", "text"),
    [
        (b"\1\0\0", {}, "size", "channel message.size: found 3 bytes, expected at least 8"),
        (struct.pack("<II", 0, 0), {}, "msgtype", "found 0, expected a channel message type"),
        (struct.pack("<II", 30, 0), {}, "msgtype", "found 30"),
        (RequestOffers().pack(), {"direction": H2G}, "direction",
         "REQUEST_OFFERS.direction: found host->guest, expected guest->host"),
        (RequestOffers().pack(), {"version": None}, "version",
         "REQUEST_OFFERS.version: found not connected"),
        (ModifyChannel(1, 0).pack(), {"version": VmbusVersion.WIN10}, "version",
         "MODIFY_CHANNEL.version: found WIN10, expected WIN10_V4_1 or newer"),
        (CloseChannel(1).pack()[:10], {}, "size",
         "CLOSE_CHANNEL.size: found 10 bytes, expected at least 12"),
        (CloseChannel(1).pack() + bytes(240), {}, "size", "expected at most 240"),
        (struct.pack("<II", 27, 0), {"features": FeatureFlag(0)}, "feature", "PAUSE.feature"),
        (OpenChannel(1, 1, 1, 0, 1).pack()[:147], {}, "size", "expected at least 148"),
    ],
)
def test_parse_message_errors_name_message_field_found_and_expected(data, kwargs, field, text):
    args = {"version": NEWEST, "direction": G2H, **kwargs}
    with pytest.raises(ProtocolError) as info:
        parse_message(data, **args)
    assert info.value.field == field
    assert text in str(info.value)


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (GpadlHeader(1, 2, 16, 0, (4096, 1)), "rangecount"),
        (GpadlHeader(1, 2, 12, 1, (4096,)), "range_buflen"),
        (GpadlHeader(1, 2, 8, 1, (4096, 1)), "size"),
        (GpadlBody(0, 2, ()), "size"),
    ],
)
def test_parse_message_checks_gpadl_counts(message, field):
    with pytest.raises(ProtocolError) as info:
        parse_message(message.pack(), version=NEWEST, direction=G2H)
    assert info.value.field == field


def test_parse_message_rejects_gpadl_bytes_that_are_not_whole_words():
    data = GpadlBody(0, 2, (1,)).pack() + b"\0\0\0"
    with pytest.raises(ProtocolError, match="multiple of 8"):
        parse_message(data, version=NEWEST, direction=G2H)


def test_initiate_contact_with_client_id_flag_must_carry_the_id():
    data = InitiateContact(NEWEST, feature_flags=FeatureFlag.CLIENT_ID).pack()
    with pytest.raises(ProtocolError, match="client_id"):
        parse_message(data, version=None, direction=G2H)


def test_unpack_refuses_another_message_type():
    with pytest.raises(ProtocolError, match="msgtype"):
        CloseChannel.unpack(RequestOffers().pack() + bytes(4))


def test_user_data_longer_than_120_bytes_is_refused():
    with pytest.raises(ValueError, match="user_data"):
        OpenChannel(1, 1, 1, 0, 1, bytes(121))


def test_protocol_error_pickles_with_its_fields():
    error = ProtocolError(T.OPEN_CHANNEL, "state", "open", "closed")
    again = pickle.loads(pickle.dumps(error))
    assert (again.message_type, again.field, again.found, again.expected) == (
        T.OPEN_CHANNEL, "state", "open", "closed")
    assert str(again) == "OPEN_CHANNEL.state: found open, expected closed"


@given(messages_of(T.OFFER_CHANNEL))
def test_offer_channel_always_packs_to_196_bytes(offer):
    assert len(offer.pack()) == 196
