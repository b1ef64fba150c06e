"""KVP (§5.7) end to end: pools, value types, limits, enumeration and malformed records."""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from winhv.vsp_vsc_pairs.ic import (
    IcFlags,
    IcHeader,
    IcLoopback,
    IcMessageType,
    IcProtocolError,
    IcRequestRefused,
    IcStatus,
    IcVersion,
    decode_message,
    encode_message,
)
from winhv.vsp_vsc_pairs.ic.kvp import (
    KVP_MESSAGE_SIZE,
    KVP_VALUE,
    KvpDeleted,
    KvpEnumeration,
    KvpGuest,
    KvpHost,
    KvpOperation,
    KvpPool,
    KvpResult,
    KvpStored,
    KvpValueError,
    KvpValueType,
)

REQ = IcFlags.TRANSACTION | IcFlags.REQUEST


@pytest.fixture
def pair() -> Iterator[tuple[IcLoopback, KvpHost, KvpGuest, Path]]:
    with tempfile.TemporaryDirectory() as path:
        host = KvpHost()
        guest = KvpGuest(path, auto_items=[("OSName", "winhv"), ("OSVersion", "1.0")])
        loop = IcLoopback(host, guest, latency_ns=500)
        loop.start()
        yield loop, host, guest, Path(path)
        guest.close()


def results(loop: IcLoopback) -> list[KvpResult]:
    return [e for e in loop.host_events if isinstance(e, KvpResult)]


def run(loop: IcLoopback, *steps: object) -> None:
    for step in steps:
        loop.host_step(step)  # type: ignore[arg-type]
    loop.settle()


def test_set_get_delete_round_trip(pair: tuple[IcLoopback, KvpHost, KvpGuest, Path]) -> None:
    loop, host, _, _ = pair
    run(loop, host.set(KvpPool.EXTERNAL, "VirtualMachineName", "vm-ü", loop.now),
        host.get(KvpPool.EXTERNAL, "VirtualMachineName", loop.now),
        host.delete(KvpPool.EXTERNAL, "VirtualMachineName", loop.now),
        host.get(KvpPool.EXTERNAL, "VirtualMachineName", loop.now),
        host.delete(KvpPool.EXTERNAL, "VirtualMachineName", loop.now))
    got = [(r.operation, r.status, r.value) for r in results(loop)]
    assert got == [
        (KvpOperation.SET, IcStatus.S_OK, None),
        (KvpOperation.GET, IcStatus.S_OK, "vm-ü"),
        (KvpOperation.DELETE, IcStatus.S_OK, None),
        (KvpOperation.GET, IcStatus.S_CONT, None),
        (KvpOperation.DELETE, IcStatus.NO_MORE_ITEMS, None),
    ]
    guest_events = [e for e in loop.guest_events if isinstance(e, KvpStored | KvpDeleted)]
    assert guest_events == [KvpStored(0, "VirtualMachineName", "vm-ü"),
                            KvpDeleted(0, "VirtualMachineName")]


def test_integer_values_are_stored_as_decimal_strings(
        pair: tuple[IcLoopback, KvpHost, KvpGuest, Path]) -> None:
    loop, host, guest, _ = pair
    run(loop, host.set(0, "a", 7, loop.now), host.set(0, "b", 2**40, loop.now),
        host.set(0, "c", 5, loop.now, value_type=KvpValueType.QWORD))
    requests = [decode_message(p)[1] for p in loop.sent_to_guest[1:]]
    types = [KVP_VALUE.unpack_from(body, 4)[0] for body in requests]
    assert types == [KvpValueType.U32, KvpValueType.U64, KvpValueType.QWORD]
    assert [KVP_VALUE.unpack_from(body, 4)[2] for body in requests] == [4, 8, 8]
    assert guest.store.pool(0).read() == [("a", "7"), ("b", str(2**40)), ("c", "5")]


def test_wire_encoding_is_utf16_with_nul_counted(
        pair: tuple[IcLoopback, KvpHost, KvpGuest, Path]) -> None:
    loop, host, _, _ = pair
    run(loop, host.set(1, "Key", "Välue", loop.now))
    header, body = decode_message(loop.sent_to_guest[-1])
    assert header.size == KVP_MESSAGE_SIZE == 2580
    assert body[:4] == bytes([KvpOperation.SET, KvpPool.GUEST, 0, 0])
    vtype, key_size, value_size, key, value = KVP_VALUE.unpack_from(body, 4)
    assert (vtype, key_size, value_size) == (1, 8, 12)
    assert key[:8] == "Key\0".encode("utf-16-le")
    assert value[:12] == "Välue\0".encode("utf-16-le")


def test_enumerate_all_ends_with_no_more_items(
        pair: tuple[IcLoopback, KvpHost, KvpGuest, Path]) -> None:
    loop, host, _, _ = pair
    run(loop, *(host.set(0, f"k{i}", f"v{i}", loop.now) for i in range(3)),
        host.enumerate_all(0, loop.now), host.enumerate_all(KvpPool.AUTO, loop.now),
        host.enumerate_all(KvpPool.GUEST, loop.now))
    walks = [e for e in loop.host_events if isinstance(e, KvpEnumeration)]
    assert walks == [
        KvpEnumeration(0, (("k0", "v0"), ("k1", "v1"), ("k2", "v2")), IcStatus.S_CONT),
        KvpEnumeration(2, (("OSName", "winhv"), ("OSVersion", "1.0")), IcStatus.S_CONT),
        KvpEnumeration(1, (), IcStatus.S_CONT),
    ]
    indexes = [r.index for r in results(loop) if r.operation == KvpOperation.ENUMERATE]
    assert indexes == [0, 1, 2, 3, 0, 1, 2, 0]


def test_single_enumerate(pair: tuple[IcLoopback, KvpHost, KvpGuest, Path]) -> None:
    loop, host, _, _ = pair
    run(loop, host.set(0, "x", "y", loop.now), host.enumerate(0, 0, loop.now),
        host.enumerate(0, 5, loop.now))
    got = [(r.key, r.value, r.status) for r in results(loop)][1:]
    assert got == [("x", "y", IcStatus.S_OK), (None, None, IcStatus.S_CONT)]


def test_host_refuses_values_the_protocol_cannot_carry() -> None:
    host = KvpHost()
    with pytest.raises(KvpValueError, match=r"514 bytes as UTF-16 with NUL, expected at most 512"):
        host.set(0, "k" * 256, "v", 0)
    host.set(0, "k" * 255, "v" * 1023, 0)
    with pytest.raises(KvpValueError, match="expected at most 2048"):
        host.set(0, "k", "v" * 1024, 0)
    with pytest.raises(KvpValueError, match="does not fit value type"):
        host.set(0, "k", -1, 0)
    with pytest.raises(KvpValueError, match="does not fit value type"):
        host.set(0, "k", 2**32, 0, value_type=KvpValueType.U32)
    with pytest.raises(KvpValueError, match="contains NUL"):
        host.get(0, "a\0b", 0)
    with pytest.raises(KvpValueError, match="not encodable as UTF-16"):
        host.get(0, "\ud800", 0)
    with pytest.raises(KvpValueError, match="expected a str or an int"):
        host.set(0, "k", True, 0)


def test_guest_answers_s_cont_for_data_too_big_for_a_pool_record(
        pair: tuple[IcLoopback, KvpHost, KvpGuest, Path]) -> None:
    loop, host, guest, _ = pair
    run(loop, host.set(0, "€" * 200, "v", loop.now))  # 400 wire bytes, 601 UTF-8 bytes
    assert results(loop)[-1].status == IcStatus.S_CONT
    assert guest.store.pool(0).read() == []


def guest_request(guest: KvpGuest, body: bytes) -> tuple[int, list[IcRequestRefused]]:
    header = IcHeader(IcMessageType.KVP_EXCHANGE, IcVersion(3, 0), IcVersion(4, 0), len(body),
                      flags=REQ)
    step = guest.receive(encode_message(header, body), 0)
    return decode_message(step.send[0])[0].status, step.events_of(IcRequestRefused)


def set_body(key_size: int, key: bytes, vtype: int = 1, value_size: int = 4,
             value: bytes = "a\0".encode("utf-16-le"), pool: int = 0) -> bytes:
    body = bytes([1, pool, 0, 0]) + KVP_VALUE.pack(vtype, key_size, value_size, key, value)
    return body + bytes(KVP_MESSAGE_SIZE - len(body))


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (set_body(3, b"a\0\0"), IcStatus.E_FAIL, "key size 3"),
        (set_body(600, b"a\0"), IcStatus.E_FAIL, "key size 600"),
        (set_body(4, b"a\0b\0"), IcStatus.E_FAIL, "no NUL terminator"),
        (set_body(4, b"\x00\xd8\0\0"), IcStatus.E_FAIL, "bad UTF-16"),
        (set_body(4, "a\0".encode("utf-16-le"), value_size=3000), IcStatus.E_FAIL,
         "value size 3000"),
        (set_body(4, "a\0".encode("utf-16-le"), vtype=3), IcStatus.E_FAIL, "value_type 3"),
        (set_body(4, "a\0".encode("utf-16-le"), vtype=4, value_size=8), IcStatus.E_FAIL,
         "REG_DWORD value_size 8"),
        (set_body(4, "a\0".encode("utf-16-le"), pool=9), IcStatus.INVALIDARG, "KVP pool 9"),
        (bytes([1, 0, 0, 0]) + bytes(100), IcStatus.E_FAIL, "SET body of 104 bytes"),
        (bytes([2, 0, 0, 0]) + bytes(10), IcStatus.E_FAIL, "DELETE body of 14 bytes"),
        (bytes([3, 0, 0, 0]) + bytes(2572), IcStatus.E_FAIL, "ENUMERATE body of 2576 bytes"),
        (bytes([4, 0, 0, 0]) + bytes(7426), IcStatus.NOT_SUPPORTED, "operation 4"),
        (bytes([77, 0, 0, 0]), IcStatus.NOT_SUPPORTED, "operation 77"),
        (bytes(3), IcStatus.E_FAIL, "KVP body of 3 bytes"),
    ],
)
def test_guest_answers_malformed_requests_with_the_protocol_status(
        pair: tuple[IcLoopback, KvpHost, KvpGuest, Path], body: bytes, status: int,
        reason: str) -> None:
    _, _, guest, _ = pair
    got, refused = guest_request(guest, body)
    assert got == status
    assert reason in refused[0].reason


def test_guest_accepts_both_64_bit_value_types(
        pair: tuple[IcLoopback, KvpHost, KvpGuest, Path]) -> None:
    _, _, guest, _ = pair
    for vtype in (8, 11):
        body = set_body(4, "q\0".encode("utf-16-le"), vtype=vtype, value_size=8,
                        value=struct.pack("<Q", 2**63 + vtype))
        assert guest_request(guest, body)[0] == IcStatus.S_OK
    assert guest.store.pool(0).get("q") == str(2**63 + 11)


def host_answer(host: KvpHost, body: bytes, status: int = 0) -> None:
    txn = host.pending
    assert txn is not None
    header = IcHeader(IcMessageType.KVP_EXCHANGE, IcVersion(3, 0), IcVersion(4, 0), len(body),
                      status, txn.transaction_id, IcFlags.TRANSACTION | IcFlags.RESPONSE)
    host.receive(encode_message(header, body), 0)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (KVP_VALUE.pack(1, 3, 4, b"a\0\0", "a\0".encode("utf-16-le")), "key size 3"),
        (KVP_VALUE.pack(1, 4, 4, b"\x00\xdc\0\0", "a\0".encode("utf-16-le")), "bad UTF-16"),
        (KVP_VALUE.pack(1, 4, 4000, "a\0".encode("utf-16-le"), b""), "value size 4000"),
        (KVP_VALUE.pack(9, 4, 4, "a\0".encode("utf-16-le"), b""), "value_type 9"),
    ],
)
def test_host_raises_a_precise_error_for_a_malformed_guest_answer(
        pair: tuple[IcLoopback, KvpHost, KvpGuest, Path], record: bytes, message: str) -> None:
    loop, host, _, _ = pair
    loop.to_guest = lambda payload: None
    loop.host_step(host.enumerate(0, 0, loop.now))
    body = bytes([3, 0, 0, 0]) + struct.pack("<I", 0) + record
    with pytest.raises(IcProtocolError, match=message):
        host_answer(host, body)
    with pytest.raises(IcProtocolError, match="icmsgsize: found 12, expected at least 2580"):
        host_answer(host, bytes(12))
