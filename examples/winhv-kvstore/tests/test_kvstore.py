"""winhv-kvstore's tests, on winhv's mock hypervisor through the ``winhv`` pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from winhv_kvstore import KvStoreVsc, KvStoreVsp, Op, Status
from winhv_kvstore import protocol as kv

from winhv.plugins.api import discover, load_driver_set


class Answers(list):
    def __call__(self, status, value):
        self.append((status, value))


@pytest.fixture
def store(winhv_harness):
    return winhv_harness(KvStoreVsp({"capacity": 2}), KvStoreVsc, name="settings")


def test_put_get_delete(store):
    answers = Answers()
    store.vsc.put(b"colour", b"blue", answers)
    store.vsc.get(b"colour", answers)
    store.vsc.delete(b"colour", answers)
    store.vsc.get(b"colour", answers)
    store.settle()
    assert answers == [(Status.OK, b""), (Status.OK, b"blue"), (Status.OK, b""),
                       (Status.NOT_FOUND, b"")]


def test_capacity_is_enforced(store):
    answers = Answers()
    for key in (b"a", b"b", b"c"):
        store.vsc.put(key, b"1", answers)
    store.vsc.put(b"a", b"2", answers)              # replacing is always allowed
    store.settle()
    assert [s for s, _ in answers] == [Status.OK, Status.OK, Status.FULL, Status.OK]


@pytest.mark.winhv_vmbus_version(min="4.0")
def test_every_vmbus_version_from_4_0(winhv_harness, winhv_vmbus_version):
    pair = winhv_harness(KvStoreVsp({}), KvStoreVsc)
    assert pair.vm.version == winhv_vmbus_version
    answers = Answers()
    pair.vsc.put(b"k", b"v" * 2000, answers)
    pair.settle()
    assert answers == [(Status.OK, b"")]


def test_driver_against_a_scripted_host(winhv_harness):
    pair = winhv_harness(vsc=KvStoreVsc)          # the host side is a fake
    pair.host.respond(kv.request(Op.GET, b"x")[:1], kv.reply(Status.OK, b"from the script"))
    answers = Answers()
    pair.vsc.get(b"x", answers)
    pair.settle()
    assert answers == [(Status.OK, b"from the script")]
    assert pair.host.expect(payload=kv.request(Op.GET, b"x"))


@pytest.mark.parametrize("payload", [b"", b"\x09\x00\x01\x00\x00\x00\x00\x00k",
                                     kv.request(Op.GET, b"")[:8],
                                     b"\x01\x00\xff\xff\x00\x00\x00\x00"])
def test_host_answers_hostile_requests_with_bad_request(winhv_harness, payload):
    pair = winhv_harness(KvStoreVsp({}))          # the guest side is a fake
    pair.guest.request(payload)
    status, _ = kv.parse_reply(pair.guest.expect(type=0xB).payload)
    assert status is Status.BAD_REQUEST
    assert not pair.host.channel.closed


def test_rescind_while_a_request_is_in_flight(store, winhv_mock):
    winhv_mock.drop("signal", direction="to_host")   # the request sits in the ring
    answers = Answers()
    device = store.device
    store.vsc.put(b"k", b"v", answers)
    store.rescind()
    assert answers == []
    assert device.state.value == "removed"
    assert store.vm.tree() == []                    # the relid was released
    assert store.vsc.channel is None
    winhv_mock.expect_message("RELID_RELEASED")


def test_a_crashing_host_closes_only_this_device(store, winhv_harness, winhv_mock):
    other = winhv_harness(KvStoreVsp({}), KvStoreVsc, vm=store.vm, name="other")
    winhv_mock.crash(store.vsp, "on_packet")
    store.vsc.get(b"k", Answers())
    store.settle()
    assert store.host.channel.closed
    answers = Answers()
    other.vsc.put(b"still", b"fine", answers)
    other.settle()
    assert answers == [(Status.OK, b"")]


def test_registered_and_driver_set_valid():
    discovery = discover()
    assert discovery.registry.pair("kvstore").vsp is KvStoreVsp
    driver_set = load_driver_set(Path(__file__).parents[1] / "kvstore.toml", discovery.registry)
    assert driver_set.vms[0].devices[0].config["capacity"] == 128
