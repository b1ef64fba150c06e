"""A hostile guest: random bytes into every host machine raise IcProtocolError or are handled;
never any other exception. Also well-framed answers with random bodies and statuses."""

from __future__ import annotations

import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from winhv.vsp_vsc_pairs.ic import (
    IC_PROTOCOLS,
    IC_TABLE,
    IcFlags,
    IcHeader,
    IcHostProtocol,
    IcLoopback,
    IcProtocolError,
    encode_message,
)
from winhv.vsp_vsc_pairs.ic.kvp import KvpGuest, KvpHost
from winhv.vsp_vsc_pairs.ic.shutdown import ShutdownHost

NAMES = [spec.name for spec in IC_TABLE]


def ready_host(name: str) -> IcHostProtocol:
    """A host of IC ``name`` that negotiated and has one request outstanding."""
    host = IC_PROTOCOLS[name][0]()
    with tempfile.TemporaryDirectory() as path:
        guest_cls = IC_PROTOCOLS[name][1]
        guest = KvpGuest(path) if guest_cls is KvpGuest else guest_cls()
        pair = IcLoopback(host, guest)
        pair.start()
        pair.to_guest = lambda payload: None
        if isinstance(host, KvpHost):
            pair.host_step(host.enumerate_all(0, pair.now))
        elif isinstance(host, ShutdownHost):
            pair.host_step(host.request("reboot", pair.now))
        else:
            deadline = host.next_deadline()
            assert deadline is not None
            pair.run_until(deadline)
        if isinstance(guest, KvpGuest):
            guest.close()
    assert host.pending is not None
    return host


def feed(host: IcHostProtocol, payload: bytes) -> None:
    try:
        host.receive(payload, 10**9)
        host.tick(10**10)
    except IcProtocolError:
        pass


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=60, deadline=None)
@given(payload=st.binary(max_size=3000))
def test_random_bytes_into_a_negotiating_host(name: str, payload: bytes) -> None:
    host = IC_PROTOCOLS[name][0]()
    host.start(0)
    feed(host, payload)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=60, deadline=None)
@given(payload=st.binary(max_size=3000))
def test_random_bytes_into_a_ready_host(name: str, payload: bytes) -> None:
    feed(ready_host(name), payload)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=60, deadline=None)
@given(body=st.binary(max_size=2700), status=st.sampled_from([0, 0x80004005, 0x80070103, 7]),
       data=st.data())
def test_well_framed_answers_with_random_bodies(name: str, body: bytes, status: int,
                                                data: st.DataObject) -> None:
    host = ready_host(name)
    txn = host.pending
    assert txn is not None
    versions = host.versions
    assert versions is not None
    size = data.draw(st.integers(0, len(body)))
    header = IcHeader(txn.message_type, versions.framework, versions.message, size, status,
                      txn.transaction_id, IcFlags.TRANSACTION | IcFlags.RESPONSE)
    feed(host, encode_message(header, body[:size]))


@settings(max_examples=60, deadline=None)
@given(record=st.binary(min_size=2572, max_size=2572), status=st.just(0))
def test_kvp_enumerate_answers_with_random_records(record: bytes, status: int) -> None:
    host = ready_host("kvp")
    txn = host.pending
    assert txn is not None
    versions = host.versions
    assert versions is not None
    body = bytes([3, 0, 0, 0, 0, 0, 0, 0]) + record
    header = IcHeader(txn.message_type, versions.framework, versions.message, len(body), status,
                      txn.transaction_id, IcFlags.TRANSACTION | IcFlags.RESPONSE)
    feed(host, encode_message(header, body))
