"""Malformed IC messages over real channels.

From a guest: any answer the host machine cannot accept closes that IC's channel with a reason
naming the IC and the field; no exception reaches the host, and the VM's other ICs keep running.
From the host: a malformed request gets the protocol's failure status from the guest (§5.1,
§5.7) and the guest keeps its channel.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.ic_io import boot_ic_vm, offer, run_for

from winhv.drivers.vmbus._guest import DeviceState
from winhv.vsp_vsc_pairs.ic import (
    IC_TABLE,
    IcFlags,
    IcHeader,
    IcStatus,
    IcVersion,
    decode_message,
    encode_message,
)
from winhv.vsp_vsc_pairs.ic._driver_table import IC_DRIVERS
from winhv.vsp_vsc_pairs.ic._heartbeat_drivers import HeartbeatVsc, HeartbeatVsp
from winhv.vsp_vsc_pairs.ic._kvp_drivers import KvpVsc, KvpVsp
from winhv.vsp_vsc_pairs.ic.heartbeat import HeartbeatHealth
from winhv.vsp_vsc_pairs.ic.kvp import KVP_HEADER, KVP_MESSAGE_SIZE, KVP_VALUE

MS = 1_000_000
_PIPE = struct.Struct("<II")
Mutate = Callable[[bytes], bytes]


def hostile(vsc_cls: Any, mutate: Mutate, *, after: int = 1) -> Any:
    """``vsc_cls`` whose answers from the ``after``-th on (0 = the negotiation) are
    ``mutate(answer)``, sent with the request's transaction id."""

    def on_packet(self: Any, channel: Any, packet: Any) -> None:
        protocol = self.protocol
        step = protocol.receive(bytes(packet.payload), self.now())
        for payload in step.send:
            count = self.__dict__.setdefault("answers", 0)
            self.answers = count + 1
            channel.send(mutate(payload) if count >= after else payload,
                         trans_id=packet.trans_id)

    return type(f"Hostile{vsc_cls.__name__}", (vsc_cls,), {"on_packet": on_packet})


def run_hostile(name: str, mutate: Mutate, *, after: int = 1,
                provoke: Callable[[Any], None] | None = None) -> tuple[Any, Any]:
    """A VM with a healthy heartbeat and a hostile ``name`` IC; returns (machine, host vsp)."""
    vsp_cls, vsc_cls = IC_DRIVERS[name]
    drivers = [hostile(vsc_cls, mutate, after=after)]
    if name != "heartbeat":
        drivers.append(HeartbeatVsc)
    loop = boot_ic_vm(drivers)
    beat = HeartbeatVsp({"period_ms": 100})
    if name != "heartbeat":
        offer(loop, "heartbeat", beat)
    config = {"sample_period_ms": 100} if name == "timesync" else {}
    device, _guest = offer(loop, name, vsp_cls(config))
    vsp = device.vsp
    if provoke is not None:
        provoke(vsp)
    elif name == "kvp":
        vsp.enumerate(0)
    elif name == "shutdown":
        vsp.request("hibernate")   # refused by the guest: the VM keeps running
    run_for(loop, 500 * MS)
    if name != "heartbeat":
        assert beat.health is HeartbeatHealth.OK   # the VM's other ICs are unaffected
    return loop, vsp


def assert_closed_with_reason(loop: Any, vsp: Any, *words: str) -> None:
    assert vsp.channel is None
    assert vsp.failure is not None
    assert vsp.failure.startswith(f"{vsp.spec.name}: ")
    for word in words:
        assert word in vsp.failure
    assert any(vsp.failure in error for error in loop.server.errors)
    assert loop.root.hv is not None   # the host is alive: the scheduler ran to the end


NAMES = [spec.name for spec in IC_TABLE]


def _truncate(size: int) -> Mutate:
    return lambda payload: payload[:size]


def _header_field(offset: int, fmt: str, value: int) -> Mutate:
    def mutate(payload: bytes) -> bytes:
        out = bytearray(payload)
        struct.pack_into(fmt, out, 8 + offset, value)
        return bytes(out)
    return mutate


CASES: dict[str, tuple[Mutate, tuple[str, ...]]] = {
    "empty": (_truncate(0), ("pipe header",)),
    "short pipe header": (_truncate(6), ("pipe header", "len")),   # the ring pads it to 8
    "short icmsg header": (lambda p: _PIPE.pack(1, 12) + p[8:20], ("icmsg header", "size")),
    "pipe type PARTIAL": (lambda p: _PIPE.pack(2, _PIPE.unpack_from(p)[1]) + p[8:],
                          ("packet_type",)),
    "pipe len beyond the packet": (lambda p: _PIPE.pack(1, len(p)) + p[8:], ("len",)),
    "icmsgsize beyond the body": (_header_field(10, "<H", 0xFFFF), ("icmsgsize",)),
    "unknown icmsgtype": (_header_field(4, "<H", 99), ("icmsgtype",)),
    "REQUEST flag": (_header_field(17, "<B", int(IcFlags.TRANSACTION | IcFlags.REQUEST)),
                     ("icflags",)),
    "wrong transaction id": (_header_field(16, "<B", 0xEE), ("ictransaction_id",)),
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_malformed_answer_closes_that_ics_channel_with_the_reason(name: str,
                                                                     case: str) -> None:
    mutate, words = CASES[case]
    loop, vsp = run_hostile(name, mutate)
    assert_closed_with_reason(loop, vsp, *words)


@pytest.mark.parametrize("name", NAMES)
def test_a_malformed_negotiation_answer_closes_the_channel(name: str) -> None:
    def bad_counts(payload: bytes) -> bytes:
        out = bytearray(payload)
        struct.pack_into("<HH", out, 28, 2, 9)   # counts the 16-byte body cannot hold
        return bytes(out)
    loop, vsp = run_hostile(name, bad_counts, after=0)
    assert_closed_with_reason(loop, vsp, "icframe_vercnt/icmsg_vercnt")


def test_a_heartbeat_answer_with_the_wrong_sequence_closes_the_channel() -> None:
    loop, vsp = run_hostile("heartbeat", lambda p: p[:28] + struct.pack("<Q", 12345) + p[36:])
    assert_closed_with_reason(loop, vsp, "seq_num", "12345")


def _kvp_record(mutate_record: Callable[[bytearray], None]) -> Mutate:
    """Rewrite the value record of an ENUMERATE answer (at body offset 8)."""
    def mutate(payload: bytes) -> bytes:
        out = bytearray(payload)
        struct.pack_into("<IIII", out, 28 + 8 - 4, 0, 1, 2 * 2, 2)   # index 0, REG_SZ, "k"
        record = bytearray(out[36:36 + KVP_VALUE.size])
        record[12:16] = "k\0".encode("utf-16-le")
        record[524:526] = b"\0\0"
        mutate_record(record)
        out[36:36 + KVP_VALUE.size] = record
        struct.pack_into("<I", out, 8 + 12, 0)   # status S_OK
        return bytes(out)
    return mutate


def _set(offset: int, fmt: str, value: int) -> Callable[[bytearray], None]:
    return lambda record: struct.pack_into(fmt, record, offset, value)


def _bad_utf16_key(record: bytearray) -> None:
    record[12:16] = b"\x00\xd8\0\0"   # an unpaired high surrogate, then NUL


def _short_dword(record: bytearray) -> None:
    struct.pack_into("<I", record, 0, 4)
    struct.pack_into("<I", record, 8, 3)


KVP_CASES: dict[str, tuple[Callable[[bytearray], None], str]] = {
    "bad UTF-16 key": (_bad_utf16_key, "UTF-16"),
    "oversize key_size": (_set(4, "<I", 514), "514"),
    "odd key_size": (_set(4, "<I", 3), "3"),
    "unknown value type": (_set(0, "<I", 7), "value_type 7"),
    "DWORD of 3 bytes": (_short_dword, "REG_DWORD value_size 3"),
}


@pytest.mark.parametrize("case", sorted(KVP_CASES))
def test_a_malformed_kvp_record_from_the_guest_closes_the_channel(case: str) -> None:
    mutate_record, word = KVP_CASES[case]
    loop, vsp = run_hostile("kvp", _kvp_record(mutate_record))
    assert_closed_with_reason(loop, vsp, "value record", word)


def test_a_completion_packet_from_the_guest_closes_the_channel() -> None:
    def on_packet(self: Any, channel: Any, packet: Any) -> None:
        step = self.protocol.receive(bytes(packet.payload), self.now())
        for payload in step.send:
            if self.protocol.versions is None:
                channel.send(payload, trans_id=packet.trans_id)
            else:
                channel.complete(99, payload)
    vsc = type("CompletingHeartbeatVsc", (HeartbeatVsc,), {"on_packet": on_packet})
    loop = boot_ic_vm([vsc])
    device, _ = offer(loop, "heartbeat", HeartbeatVsp({"period_ms": 100}))
    run_for(loop, 200 * MS)
    assert_closed_with_reason(loop, device.vsp, "packet type 11")


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15, deadline=None)
@given(data=st.binary(max_size=96), keep=st.integers(0, 40))
def test_random_answers_never_raise_into_the_host(name: str, data: bytes, keep: int) -> None:
    loop, vsp = run_hostile(name, lambda payload: payload[:keep] + data)
    assert vsp.channel is None or vsp.failure is None
    if vsp.channel is None:
        assert_closed_with_reason(loop, vsp)


# -- malformed requests from the host get the guest's failure status -----------------------------


def _kvp_request(operation: int, pool: int, record: bytes, *, tid: int = 7,
                 message_type: int = 2) -> bytes:
    body = KVP_HEADER.pack(operation, pool, 0) + record
    body += bytes(KVP_MESSAGE_SIZE - len(body)) if len(body) < KVP_MESSAGE_SIZE else b""
    header = IcHeader(message_type, IcVersion(3, 0), IcVersion(4, 0), len(body), 0, tid,
                      IcFlags.TRANSACTION | IcFlags.REQUEST)
    return encode_message(header, body)


def _key_record(key_bytes: bytes, key_size: int | None = None, value_type: int = 1) -> bytes:
    size = len(key_bytes) if key_size is None else key_size
    return KVP_VALUE.pack(value_type, size, 2, key_bytes, b"\0\0")


HOST_CASES: dict[str, tuple[bytes, int]] = {
    "bad UTF-16 key": (_kvp_request(1, 0, _key_record(b"\x00\xd8\0\0")), IcStatus.E_FAIL),
    "oversize key_size": (_kvp_request(0, 0, _key_record(b"k\0\0\0", 1000)), IcStatus.E_FAIL),
    "missing NUL": (_kvp_request(0, 0, _key_record(b"k\0k\0", 4)), IcStatus.E_FAIL),
    "unknown value type": (_kvp_request(1, 0, _key_record(b"k\0\0\0", value_type=3)),
                           IcStatus.E_FAIL),
    "unknown operation": (_kvp_request(9, 0, b""), IcStatus.NOT_SUPPORTED),
    "IP info": (_kvp_request(4, 0, b""), IcStatus.NOT_SUPPORTED),
    "pool 7": (_kvp_request(0, 7, _key_record(b"k\0\0\0")), IcStatus.INVALIDARG),
    "another IC's message type": (_kvp_request(0, 0, b"", message_type=1), IcStatus.E_FAIL),
    "unknown message type": (_kvp_request(0, 0, b"", message_type=42), IcStatus.E_FAIL),
}


@pytest.mark.parametrize("case", sorted(HOST_CASES))
def test_a_malformed_kvp_request_gets_the_protocols_failure_status(case: str,
                                                                    tmp_path: Any) -> None:
    request, status = HOST_CASES[case]
    loop = boot_ic_vm([KvpVsc.configured({"pool_dir": tmp_path})])
    device, guest = offer(loop, "kvp", KvpVsp())
    answers: list[tuple[int, bytes]] = []
    device.channel.on_packet = lambda channel, packet: answers.append(
        (packet.trans_id, bytes(packet.payload)))
    device.channel.send(request, trans_id=0x1234)
    run_for(loop, 1 * MS)
    [(trans_id, answer)] = answers
    assert trans_id == 0x1234        # answered with the request's trans_id (§5.1)
    header, _body = decode_message(answer)
    assert header.status == status
    assert header.transaction_id == 7
    assert header.flags == IcFlags.TRANSACTION | IcFlags.RESPONSE
    assert guest.state is DeviceState.OPEN
    assert list((tmp_path).glob(".kvp_pool_*")) in ([], [tmp_path / ".kvp_pool_0"])
