"""The management API's view of the Integration Components: every IC's status, the heartbeat
health (ok, no contact, lost) and KVP items of a running VM read and written through VMMS, with
each refusal naming why. The ICs are the real ones over real channels."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.hosts import echo_spec, make_host

from winhv.drivers.vmms import Host, VmmsError, VmNotRunning, VmSpec, VmState
from winhv.drivers.vmms._spec import DeviceSpec
from winhv.vsp_vsc_pairs.ic.drivers import HeartbeatVsc, HeartbeatVsp, KvpVsc, KvpVsp
from winhv.vsp_vsc_pairs.ic.kvp_pool import decode_pool, pool_file_name

S = VmState
NS = 1_000_000_000
HEARTBEAT_IF = HeartbeatVsp.spec.interface_id


def ic(name: str, vsp: Any, vsc: Any, config: dict[str, Any] | None = None) -> DeviceSpec:
    config = dict(config or {})
    return DeviceSpec(name, "ic", vsp.spec.interface_id, vsp, vsc.configured(config), config,
                      name)


def booted(*, heartbeat: bool = True, kvp: bool = True, guest_heartbeat: bool = True,
           kvp_config: dict[str, Any] | None = None) -> Host:
    extra = []
    if heartbeat:
        extra.append(ic("heartbeat", HeartbeatVsp, HeartbeatVsc, {"period_ms": 1000}))
    if kvp:
        extra.append(ic("kvp", KvpVsp, KvpVsc, kvp_config))
    spec = echo_spec("vm", extra=extra)
    if not guest_heartbeat:   # the guest has no heartbeat driver: nobody answers
        spec = VmSpec(spec.name, spec.memory_mb, spec.processors, spec.devices,
                      {HEARTBEAT_IF: None})
    host = make_host(spec, echo_spec("other"))
    for name in ("vm", "other"):
        host.vmms.start(name)
    host.settle()
    assert host.vmms.get("vm").state is S.RUNNING
    return host


def guest_driver(host: Host, kind: type) -> Any:
    worker = host.vmms.get("vm").worker
    assert worker is not None
    assert worker.client is not None
    [driver] = [d.driver for d in worker.client.devices.values() if isinstance(d.driver, kind)]
    return driver


# -- IC status and heartbeat health ---------------------------------------------------------


def test_every_ic_reports_its_negotiated_versions_through_inspect() -> None:
    host = booted()
    details = host.vmms.inspect("vm")
    assert set(details["ics"]) == {"heartbeat", "kvp"}
    for status in details["ics"].values():
        assert status["open"] is True
        assert status["state"] == "ready"
        assert status["failure"] is None
    assert (details["ics"]["heartbeat"]["framework"], details["ics"]["heartbeat"]["message"]) \
        == ("3.0", "3.0")
    assert details["ics"]["kvp"]["message"] == "4.0"   # Linux's newest, §5.3
    assert details["health"] == "ok"


def test_an_off_vm_lists_its_ics_closed_and_has_no_health() -> None:
    host = booted()
    host.vmms.stop("vm", force=True)
    assert host.vmms.ics("vm") == {"heartbeat": {"ic": "heartbeat", "open": False},
                                   "kvp": {"ic": "kvp", "open": False}}
    assert host.vmms.health("vm") is None
    assert host.vmms.inspect("vm")["health"] is None


def test_health_is_none_without_a_heartbeat_ic() -> None:
    assert booted(heartbeat=False).vmms.health("vm") is None


def test_health_is_no_contact_while_the_guest_never_answers() -> None:
    host = booted(guest_heartbeat=False)
    host.run_for(10 * NS)
    assert host.vmms.health("vm") == "no-contact"
    assert host.vmms.inspect("vm")["ics"]["heartbeat"]["last_sequence"] is None


def test_health_goes_ok_then_lost_when_the_guest_falls_silent_then_ok_again() -> None:
    host = booted()
    host.run_for(2 * NS)
    assert host.vmms.health("vm") == "ok"
    status = host.vmms.ics("vm")["heartbeat"]
    assert status["last_sequence"] >= 1
    channel = guest_driver(host, HeartbeatVsc).channel
    answer = channel.on_packet
    channel.on_packet = lambda channel, packet: None   # the guest hangs, its channel open
    host.run_for(4 * NS)                               # lost_after = 3 periods of 1 s
    assert host.vmms.health("vm") == "lost"
    assert host.vmms.get("vm").state is S.RUNNING      # health is a report, not a state
    channel.on_packet = answer
    host.run_for(2 * NS)
    assert host.vmms.health("vm") == "ok"


# -- KVP through the management API ---------------------------------------------------------


def test_kvp_set_get_list_delete_of_a_running_vm(tmp_path: Any) -> None:
    host = booted(kvp_config={"pool_dir": str(tmp_path)})
    vmms = host.vmms
    vmms.kvp_set("vm", "Color", "blue")
    vmms.kvp_set("vm", "Count", 42)
    vmms.kvp_set("vm", "Big", 1 << 40)
    assert vmms.kvp_get("vm", "Color") == "blue"
    assert str(vmms.kvp_get("vm", "Count")) == "42"
    assert str(vmms.kvp_get("vm", "Big")) == str(1 << 40)
    assert vmms.kvp_get("vm", "Missing") is None
    assert vmms.kvp_items("vm") == [("Color", "blue"), ("Count", "42"),
                                    ("Big", str(1 << 40))]
    # the guest keeps them in the Linux daemon's file of pool 0 (EXTERNAL)
    records = decode_pool((tmp_path / pool_file_name(0)).read_bytes())
    assert [(r[0], r[1]) for r in records] == vmms.kvp_items("vm")
    assert vmms.kvp_delete("vm", "Color") is True
    assert vmms.kvp_delete("vm", "Color") is False
    assert vmms.kvp_get("vm", "Color") is None
    assert [key for key, _ in vmms.kvp_items("vm")] == ["Count", "Big"]


def test_kvp_pools_by_name_or_number_and_the_guests_intrinsic_items() -> None:
    host = booted()
    vmms = host.vmms
    auto = dict(vmms.kvp_items("vm", pool="auto"))
    assert auto["FullyQualifiedDomainName"] == "vm"
    assert vmms.kvp_items("vm", pool=2) == vmms.kvp_items("vm", pool="AUTO")
    vmms.kvp_set("vm", "k", "guest pool", pool="guest")
    assert vmms.kvp_get("vm", "k", pool=1) == "guest pool"
    assert vmms.kvp_get("vm", "k") is None             # EXTERNAL is another pool


@pytest.mark.parametrize("state", ["Off", "Paused", "Saved"])
def test_kvp_needs_a_running_vm_and_says_the_state(state: str) -> None:
    host = booted()
    {"Off": lambda: host.vmms.stop("vm", force=True), "Paused": lambda: host.vmms.pause("vm"),
     "Saved": lambda: host.vmms.save("vm")}[state]()
    with pytest.raises(VmNotRunning, match=f"cannot set a KVP item while {state} "
                                           r"\(the VM must be Running\)"):
        host.vmms.kvp_set("vm", "k", "v")


def test_kvp_without_the_ic_is_refused_naming_it() -> None:
    host = booted(kvp=False)
    with pytest.raises(VmmsError, match="'vm': cannot read a KVP item: it has no KVP IC"):
        host.vmms.kvp_get("vm", "k")


@pytest.mark.parametrize(("key", "value", "pool", "match"), [
    ("k" * 256, "v", "external", "expected at most 512"),
    ("k", "v" * 1024, "external", "expected at most 2048"),
    ("k\0", "v", "external", "contains NUL"),
    ("k", "v", "nowhere", "expected one of external"),
    ("k", -1, "external", "-1"),
])
def test_kvp_values_the_protocol_cannot_carry_fail_before_sending(
    key: str, value: Any, pool: str, match: str,
) -> None:
    host = booted()
    with pytest.raises(ValueError, match=match):
        host.vmms.kvp_set("vm", key, value, pool=pool)
    kvp = host.vmms.get("vm").worker.ic_named("kvp")   # type: ignore[union-attr]
    assert kvp.waiting == 0
    assert host.vmms.kvp_items("vm") == []


def test_a_guest_that_does_not_answer_is_an_error_after_the_ics_timeout() -> None:
    host = booted(kvp_config={"timeout_ms": 2000})
    guest_driver(host, KvpVsc).channel.on_packet = lambda channel, packet: None
    start = host.scheduler.now
    with pytest.raises(VmmsError, match="could not set a KVP item 'k': no answer in time"):
        host.vmms.kvp_set("vm", "k", "v")
    assert host.scheduler.now - start == 2 * NS
    assert host.vmms.get("other").state is S.RUNNING


def test_a_kvp_request_while_the_vm_fails_reports_the_failure() -> None:
    host = booted()
    worker = host.vmms.get("vm").worker
    assert worker is not None
    guest_driver(host, KvpVsc).channel.on_packet = (
        lambda channel, packet: worker.fail("injected worker fault"))
    with pytest.raises(VmmsError, match=r"could not read a KVP item 'k': .*"
                                          r"\(the VM is Failed now: worker failed: injected "
                                          r"worker fault\)"):
        host.vmms.kvp_get("vm", "k")
    assert host.vmms.get("other").state is S.RUNNING


_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                min_size=1, max_size=100)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(st.tuples(_TEXT, _TEXT | st.integers(0, (1 << 64) - 1)),
                      min_size=1, max_size=4))
def test_any_text_or_integer_round_trips_through_the_management_api(
    items: list[tuple[str, str | int]],
) -> None:
    host = _shared_host()
    vmms = host.vmms
    for key, _ in vmms.kvp_items("vm"):
        vmms.kvp_delete("vm", key)
    expected: dict[str, str] = {}
    for key, value in items:
        vmms.kvp_set("vm", key, value)
        expected[key] = str(value)
    for key, value in expected.items():
        assert str(vmms.kvp_get("vm", key)) == value
    assert dict(vmms.kvp_items("vm")) == expected


_SHARED: list[Host] = []


def _shared_host() -> Host:
    """One running VM for every Hypothesis example (a boot per example would be slow)."""
    if not _SHARED:
        _SHARED.append(booted(heartbeat=False))
    return _SHARED[0]


def test_an_ic_with_no_common_version_is_failed_with_its_reason_and_the_vm_runs_on() -> None:
    from winhv.vsp_vsc_pairs.ic import HeartbeatGuest

    class FutureHeartbeatVsc(HeartbeatVsc):
        def _new_protocol(self) -> Any:
            return HeartbeatGuest(framework_versions=("3.0",), message_versions=("9.9",))

    spec = echo_spec("vm", extra=[DeviceSpec("heartbeat", "ic", HEARTBEAT_IF, HeartbeatVsp,
                                             FutureHeartbeatVsc, {}, "heartbeat")])
    host = make_host(spec)
    host.vmms.start("vm")
    host.settle()
    assert host.vmms.get("vm").state is S.RUNNING
    status = host.vmms.ics("vm")["heartbeat"]
    assert (status["open"], status["state"]) == (False, "failed")
    assert "version negotiation failed" in status["failure"]
    assert status["close_reason"] == status["failure"]
    assert host.vmms.health("vm") == "no-contact"
    assert any(status["failure"] in e for e in host.vmms.inspect("vm")["errors"])


@pytest.mark.parametrize(("offset", "value"), [
    (40, 0xFFFF),          # value_size beyond the 2048-byte field (§5.7)
    (40, 3),               # value_size odd: not UTF-16
    (12, 9),               # icmsgtype: an IC message type the host did not ask for
], ids=["oversize-value", "odd-value-size", "unknown-type"])
def test_a_malformed_kvp_answer_closes_the_channel_and_the_request_says_why(
    offset: int, value: int,
) -> None:
    host = booted()
    vmms = host.vmms
    vmms.kvp_set("vm", "k", "v")
    channel = guest_driver(host, KvpVsc).channel
    send = channel.send

    def corrupt(payload: Any, **kwargs: Any) -> Any:
        data = bytearray(payload)
        size = 4 if offset >= 32 else 2
        data[offset:offset + size] = value.to_bytes(size, "little")
        return send(bytes(data), **kwargs)

    channel.send = corrupt
    with pytest.raises(VmmsError, match="could not read a KVP item 'k': the KVP IC's channel "
                                        "closed: kvp: "):
        vmms.kvp_get("vm", "k")
    status = vmms.ics("vm")["kvp"]
    assert status["open"] is False
    assert status["failure"].startswith("kvp: ")
    assert vmms.get("vm").state is S.RUNNING          # only that IC's channel is gone
    assert vmms.health("vm") == "ok"
    with pytest.raises(VmmsError, match="channel is closed"):
        vmms.kvp_get("vm", "k")
