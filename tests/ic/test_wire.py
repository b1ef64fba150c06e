"""Byte layouts of every IC structure against fact sheet §4.6 and §5 (sizes and offsets)."""

from __future__ import annotations

import struct
import uuid

import pytest

from winhv.vsp_vsc_pairs import ic
from winhv.vsp_vsc_pairs.ic import (
    IC_PREFIX_SIZE,
    IC_TABLE,
    ICMSG_HEADER_SIZE,
    IcFlags,
    IcHeader,
    IcMessageType,
    IcProtocolError,
    IcStatus,
    IcVersion,
    NegotiateMessage,
    decode_message,
    encode_message,
    heartbeat,
    kvp,
    pipe_frame,
    pipe_unframe,
    shutdown,
    timesync,
)


def test_pipe_header_is_type_then_length() -> None:
    packet = pipe_frame(b"abc")
    assert packet[:8] == struct.pack("<II", 1, 3)
    assert bytes(pipe_unframe(packet)) == b"abc"
    assert ic.MAX_PIPE_PAYLOAD == 16384
    assert [int(t) for t in ic.PipePacketType] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("packet", "field"),
    [
        (b"\x01\0\0", "size"),
        (struct.pack("<II", 2, 0), "packet_type"),
        (struct.pack("<II", 1, 9) + b"x" * 8, "len"),
        (struct.pack("<II", 1, 16385) + bytes(16385), "len"),
        (struct.pack("<II", 1, 0) + bytes(8), "len"),
    ],
)
def test_pipe_unframe_names_the_bad_field(packet: bytes, field: str) -> None:
    with pytest.raises(IcProtocolError) as info:
        pipe_unframe(packet)
    assert info.value.field == field
    assert str(info.value).startswith(f"pipe header: {field}: found ")


def test_pipe_unframe_accepts_vmbus_padding() -> None:
    assert bytes(pipe_unframe(struct.pack("<II", 1, 1) + b"z" + bytes(7))) == b"z"


def test_icmsg_header_offsets() -> None:
    header = IcHeader(message_type=0x0403, framework=IcVersion(0x0101, 0x0202),
                      message=IcVersion(0x0505, 0x0606), size=0x0707, status=0x0B0A0908,
                      transaction_id=0x0C, flags=0x0D, reserved=0x0F0E)
    raw = header.pack()
    assert ICMSG_HEADER_SIZE == len(raw) == 20
    assert raw == bytes([1, 1, 2, 2, 3, 4, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11, 12, 13, 14, 15])
    assert IcHeader.unpack(raw) == header
    assert IC_PREFIX_SIZE == 28


def test_icmsg_enums_match_the_sheet() -> None:
    assert [int(t) for t in IcMessageType] == list(range(9))
    assert (IcFlags.TRANSACTION, IcFlags.REQUEST, IcFlags.RESPONSE) == (1, 2, 4)
    assert {s.name: int(s) for s in IcStatus} == {
        "S_OK": 0, "E_FAIL": 0x80004005, "S_CONT": 0x80070103, "NOT_SUPPORTED": 0x80070032,
        "MACHINE_LOCKED": 0x800704F7, "DEVICE_NOT_CONNECTED": 0x8007048F,
        "INVALIDARG": 0x80070057, "GUID_NOT_FOUND": 0x80041002, "ALREADY_EXISTS": 0x80070050,
        "DISK_FULL": 0x80070070,
    }
    assert IcStatus.NO_MORE_ITEMS is IcStatus.S_CONT


def test_decode_message_checks_icmsgsize_against_the_bytes() -> None:
    packet = encode_message(IcHeader(IcMessageType.HEARTBEAT, size=4), b"abcd")
    header, body = decode_message(packet)
    assert header.size == 4
    assert bytes(body) == b"abcd"
    echoed = pipe_frame(IcHeader(IcMessageType.HEARTBEAT, size=4).pack() + b"abcd" + b"extra")
    assert bytes(decode_message(echoed)[1]) == b"abcd"
    short = pipe_frame(IcHeader(IcMessageType.HEARTBEAT, size=5).pack() + b"abcd")
    with pytest.raises(IcProtocolError, match="icmsgsize: found 5, expected at most the 4"):
        decode_message(short)
    with pytest.raises(IcProtocolError, match="icmsg header: size"):
        decode_message(pipe_frame(bytes(19)))


def test_negotiate_message_layout() -> None:
    message = NegotiateMessage((IcVersion(1, 0), IcVersion(3, 0)),
                               (IcVersion(3, 2), IcVersion(4, 0), IcVersion(1, 5)))
    raw = message.pack()
    assert len(raw) == 8 + 4 * 5
    assert raw[:8] == struct.pack("<HHI", 2, 3, 0)
    # entries are major u16 then minor u16 (§5.2 warning)
    assert raw[8:12] == b"\x01\0\0\0"
    assert raw[16:20] == b"\x03\0\x02\0"
    assert raw[24:28] == b"\x01\0\x05\0"
    assert NegotiateMessage.unpack(raw, what="t") == message
    assert ic.NEGOTIATE_RESPONSE_SIZE == 0x10
    assert len(ic.negotiate_response_body(None)) == 0x10
    assert ic.negotiate_response_body(None)[:4] == b"\0\0\0\0"


def test_heartbeat_layouts() -> None:
    assert heartbeat.HEARTBEAT_LINUX_SIZE == 40
    assert heartbeat.HEARTBEAT_OVMM_SIZE == 16
    raw = heartbeat.HEARTBEAT_OVMM.pack(0x0807060504030201, 2)
    assert raw[:8] == bytes(range(1, 9))
    assert raw[8:12] == b"\x02\0\0\0"


def test_shutdown_layout() -> None:
    assert shutdown.SHUTDOWN_BODY_SIZE == 2060
    request = shutdown.ShutdownRequest(shutdown.ShutdownKind.REBOOT, reason=0x11223344,
                                       timeout_s=30, force=True, message="hi")
    raw = request.pack()
    assert len(raw) == 2060
    assert raw[0:4] == struct.pack("<I", 0x11223344)
    assert raw[4:8] == struct.pack("<I", 30)
    assert raw[8:12] == struct.pack("<I", 3)
    assert raw[12:18] == "hi".encode("utf-16-le") + b"\0\0"
    assert shutdown.SHTDN_REASON_FLAG_PLANNED == 0x80000000
    flags = {k: shutdown.ShutdownRequest(k).flags for k in shutdown.ShutdownKind}
    assert flags == {shutdown.ShutdownKind.SHUTDOWN: 0, shutdown.ShutdownKind.REBOOT: 2,
                     shutdown.ShutdownKind.HIBERNATE: 4}


def test_shutdown_message_limits() -> None:
    shutdown.ShutdownRequest(shutdown.ShutdownKind.SHUTDOWN, message="x" * 1023).pack()
    with pytest.raises(ValueError, match="1024 UTF-16 code units, expected at most 1023"):
        shutdown.ShutdownRequest(shutdown.ShutdownKind.SHUTDOWN, message="x" * 1024).pack()


def test_timesync_layouts() -> None:
    assert timesync.WLTIMEDELTA == 116444736000000000
    assert timesync.TIMESYNC_V1_DATA_SIZE == 28
    assert timesync.TIMESYNC_V1_DATA_LINUX_SIZE == 25
    assert timesync.TIMESYNC_REF_DATA_SIZE == 24
    assert timesync.TIMESYNC_REF_DATA_LINUX_SIZE == 22
    v1 = timesync.TIMESYNC_V1_DATA.pack(1, 2, 3, 4)
    assert struct.unpack_from("<QQQB", v1) == (1, 2, 3, 4)
    ref = timesync.TIMESYNC_REF_DATA.pack(1, 2, 3, 4, 5)
    assert struct.unpack_from("<QQBBB", ref) == (1, 2, 3, 4, 5)
    assert (timesync.TimesyncFlags.PROBE, timesync.TimesyncFlags.SYNC,
            timesync.TimesyncFlags.SAMPLE) == (0, 1, 2)


def test_kvp_layouts() -> None:
    assert kvp.KVP_HEADER.size == 4
    assert kvp.KVP_VALUE_SIZE == 2572
    assert kvp.KVP_DELETE.size == 516
    assert kvp.KVP_GET_SET_BODY_SIZE == 4 + 2572
    assert kvp.KVP_DELETE_BODY_SIZE == 4 + 516
    assert kvp.KVP_ENUMERATE_BODY_SIZE == 4 + 2576
    assert kvp.KVP_MESSAGE_SIZE == 2580
    raw = kvp.KVP_VALUE.pack(1, 2, 3, b"k", b"v")
    assert raw[0:12] == struct.pack("<III", 1, 2, 3)
    assert raw[12:13] == b"k"
    assert raw[524:525] == b"v"
    assert [int(o) for o in kvp.KvpOperation] == [0, 1, 2, 3, 4, 5]
    assert [int(p) for p in kvp.KvpPool] == [0, 1, 2, 3, 4]
    assert {t.name: int(t) for t in kvp.KvpValueType} == {
        "STRING": 1, "EXPAND_STRING": 2, "U32": 4, "U64": 8, "QWORD": 11}


def test_ic_table_guids_and_versions() -> None:
    by_name = {s.name: s for s in IC_TABLE}
    assert set(by_name) == set(ic.IC_PROTOCOLS)
    assert by_name["heartbeat"].interface_id == uuid.UUID("57164f39-9115-4e78-ab55-382f3bd5422d")
    assert by_name["shutdown"].interface_id == uuid.UUID("0e0b6031-5213-4934-818b-38d90ced39db")
    assert by_name["shutdown"].interface_id.bytes_le == bytes.fromhex(
        "31600b0e135234498 18b38d90ced39db".replace(" ", ""))
    assert by_name["timesync"].interface_id == uuid.UUID("9527e630-d0ae-497b-adce-e80ab0175caf")
    assert by_name["kvp"].interface_id == uuid.UUID("a9a0f4e7-5a45-4d96-b827-8a841e8c03e6")
    assert by_name["kvp"].instance_id == uuid.UUID("242ff919-07db-4180-9c2e-b86cb68c8c55")
    assert by_name["shutdown"].versions == ("3.2", "3.1", "3.0", "1.0")
    assert by_name["timesync"].guest_message_versions[0] == IcVersion(4, 0)
    assert by_name["kvp"].framework_versions == ("3.0", "1.0")
    for spec in IC_TABLE:
        host, guest = ic.IC_PROTOCOLS[spec.name]
        assert host.spec is spec
        assert guest.spec is spec
        assert ic.IC_BY_TYPE[spec.message_type] is spec


def test_ic_table_derives_plugin_descriptions() -> None:
    from winhv.plugins.api import IcDescription
    from winhv.vsp_vsc_pairs.ic._driver_table import IC_DRIVERS

    for spec in IC_TABLE:
        host, guest = IC_DRIVERS[spec.name]   # an IC's halves are its VSP and VSC classes
        description = IcDescription(name=spec.name, interface_id=spec.interface_id, host=host,
                                    guest=guest, versions=spec.versions,
                                    framework_versions=spec.framework_versions,
                                    summary=spec.summary)
        assert description.versions[0] == str(max(spec.host_message_versions
                                                  + spec.guest_message_versions))


def test_version_parse_and_order() -> None:
    assert IcVersion.parse("3.10") == IcVersion(3, 10)
    assert IcVersion(3, 2) < IcVersion(4, 0)
    assert str(IcVersion(4, 0)) == "4.0"
    with pytest.raises(ValueError, match=r"expected 'major\.minor'"):
        IcVersion.parse("3")
    with pytest.raises(ValueError, match=r"expected 0\.\.65535"):
        IcVersion(70000, 0)
