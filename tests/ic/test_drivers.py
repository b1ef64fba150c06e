"""The IC drivers end to end over real channels: a host VSP in the root, a guest VSC in a VM,
rings in guest memory, SynIC signals, virtual time (fact sheet §4.6, §5)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from support.ic_io import boot_ic_vm, connect_ic, now, offer, run_for

from winhv.drivers.vmbus._guest import DeviceState
from winhv.plugins.api import ConfigError, validate_config
from winhv.vsp_vsc_pairs import winhv_integration_components
from winhv.vsp_vsc_pairs.ic import (
    IC_TABLE,
    IcNegotiated,
    IcRequestAbandoned,
    IcState,
    IcStatus,
    IcVersion,
)
from winhv.vsp_vsc_pairs.ic._driver_table import IC_DRIVERS, ic_descriptions
from winhv.vsp_vsc_pairs.ic._heartbeat_drivers import HeartbeatVsc, HeartbeatVsp
from winhv.vsp_vsc_pairs.ic._kvp_drivers import KvpVsc, KvpVsp, parse_items
from winhv.vsp_vsc_pairs.ic._shutdown_drivers import ShutdownVsc, ShutdownVsp
from winhv.vsp_vsc_pairs.ic._timesync_drivers import TimesyncVsc, TimesyncVsp, reference_time
from winhv.vsp_vsc_pairs.ic.heartbeat import HeartbeatGuest, HeartbeatHealth
from winhv.vsp_vsc_pairs.ic.kvp import KvpEnumeration, KvpGuest, KvpResult, KvpValueError
from winhv.vsp_vsc_pairs.ic.kvp_pool import KVP_POOL_RECORD_SIZE, decode_pool
from winhv.vsp_vsc_pairs.ic.shutdown import (
    ShutdownAnswered,
    ShutdownGuest,
    ShutdownKind,
    ShutdownTimedOut,
)
from winhv.vsp_vsc_pairs.ic.timesync import TimesyncGuest

MS = 1_000_000
S = 1_000_000_000


# -- registration ------------------------------------------------------------------------------


def test_descriptions_are_derived_from_the_ic_table_and_the_drivers() -> None:
    descriptions = ic_descriptions()
    assert [d.name for d in descriptions] == [spec.name for spec in IC_TABLE]
    assert tuple(winhv_integration_components()) == descriptions
    for spec, description in zip(IC_TABLE, descriptions, strict=True):
        vsp, vsc = IC_DRIVERS[spec.name]
        assert (description.host, description.guest) == (vsp, vsc)
        assert description.interface_id == spec.interface_id == vsp.interface_id
        assert vsc.interface_ids == (spec.interface_id,)
        assert description.versions == spec.versions
        assert description.framework_versions == spec.framework_versions
        assert description.config == vsp.config_schema == vsc.config_schema


@pytest.mark.parametrize("name", [spec.name for spec in IC_TABLE])
def test_each_ic_is_offered_in_pipe_mode_with_its_table_guids(name: str) -> None:
    vsp_cls, vsc_cls = IC_DRIVERS[name]
    offer_spec = vsp_cls().offer()
    assert offer_spec.pipe_mode
    assert offer_spec.instance_id == vsp_cls.spec.instance_id
    _loop, device, guest = connect_ic(vsp_cls(), vsc_cls, name=name)
    assert guest.offer.interface_id == vsp_cls.spec.interface_id
    assert guest.offer.flags & 0x10   # pipe mode (§3.3)
    if vsp_cls.spec.instance_id is not None:
        assert guest.offer.instance_id == vsp_cls.spec.instance_id
    assert device.vsp.state is IcState.READY
    assert isinstance(device.vsp.events[0], IcNegotiated)


def test_config_defaults_and_bad_values_are_reported_with_their_key() -> None:
    assert HeartbeatVsp().config == {"period_ms": 2000, "lost_after": 3}
    assert HeartbeatVsp({"period_ms": 100, "lost_after": None}).config["lost_after"] == 3
    with pytest.raises(ConfigError, match=r"heartbeat\.config\.period_ms: found 0"):
        HeartbeatVsp({"period_ms": 0})
    with pytest.raises(ConfigError, match=r"kvp\.config\.pool_dirr: found an unknown key"):
        KvpVsc.configured({"pool_dirr": "/tmp"})
    # a mapping the driver-set loader validated (None for unset keys) is accepted as is
    validated = validate_config(KvpVsp.config_schema, {})
    assert KvpVsp(validated).config == validated


def test_parse_items() -> None:
    assert parse_items("A=1; B = two ;") == (("A", "1"), ("B", " two "))
    assert parse_items("") == ()
    for bad in ("novalue", "=x", "A=1;A=2"):
        with pytest.raises(ConfigError, match=r"kvp\.config\.items"):
            parse_items(bad)


def test_the_first_channel_of_a_vm_hears_the_host_even_if_it_signals_before_open() -> None:
    """Only one IC in a VM, nothing else registered on SINT 2: the host's negotiation arrives
    before the guest's channel exists."""
    loop = boot_ic_vm([HeartbeatVsc])
    device, _guest = offer(loop, "heartbeat", HeartbeatVsp({"period_ms": 100}))
    run_for(loop, 1 * S)
    assert device.vsp.health is HeartbeatHealth.OK


# -- heartbeat ---------------------------------------------------------------------------------


def test_heartbeat_health_is_ok_then_lost_when_the_guest_stops_answering() -> None:
    vsp = HeartbeatVsp({"period_ms": 100, "lost_after": 3})
    loop, _device, guest = connect_ic(vsp, HeartbeatVsc)
    run_for(loop, 1 * S)
    assert vsp.health is HeartbeatHealth.OK
    assert vsp.last_sequence is not None
    assert vsp.last_sequence >= 10
    assert guest.driver.answered == vsp.last_sequence
    # The guest hangs: its channel stays open but nothing answers.
    guest.channel.on_packet = lambda channel, packet: None
    last = vsp.last_answer_at
    run_for(loop, 250 * MS)
    assert vsp.health is HeartbeatHealth.OK    # not yet: lost_after periods
    run_for(loop, 100 * MS)
    assert vsp.health is HeartbeatHealth.LOST
    assert vsp.last_answer_at == last
    [change] = [e for e in vsp.events if getattr(e, "new", None) is HeartbeatHealth.LOST]
    assert change.at - last == 300 * MS
    assert vsp.channel is not None     # still open: lost is the guest's state, not the channel's


def test_heartbeat_is_lost_at_once_when_the_guest_driver_breaks() -> None:
    vsp = HeartbeatVsp({"period_ms": 100})
    loop, _device, guest = connect_ic(vsp, HeartbeatVsc)
    run_for(loop, 300 * MS)
    assert isinstance(guest.driver.protocol, HeartbeatGuest)

    def broken(*args: Any) -> Any:
        raise RuntimeError("guest driver bug")

    guest.driver.protocol.receive = broken  # type: ignore[method-assign]
    run_for(loop, 100 * MS)
    # the bus unbinds the driver and closes the channel; the host sees the close
    assert guest.state is DeviceState.FAILED
    assert vsp.health is HeartbeatHealth.LOST
    assert vsp.close_reason == "closed by the guest"


def test_heartbeat_is_lost_at_once_when_its_channel_closes() -> None:
    vsp = HeartbeatVsp({"period_ms": 100})
    loop, device, _guest = connect_ic(vsp, HeartbeatVsc)
    run_for(loop, 300 * MS)
    assert vsp.health is HeartbeatHealth.OK
    device.channel.fail("test: pulled")
    assert vsp.health is HeartbeatHealth.LOST
    assert vsp.close_reason == "test: pulled"
    run_for(loop, 1 * S)   # no timer left running on the dead channel
    assert loop.hv.scheduler.next_deadline() is None or vsp._timer is None


def test_heartbeat_without_a_guest_driver_stays_no_contact() -> None:
    loop = boot_ic_vm([])
    vsp = HeartbeatVsp({"period_ms": 100})
    offer(loop, "heartbeat", vsp)
    run_for(loop, 1 * S)
    assert vsp.health is HeartbeatHealth.NO_CONTACT
    assert vsp.state is IcState.IDLE


# -- shutdown ----------------------------------------------------------------------------------


def test_shutdown_accepted_by_the_guest_os() -> None:
    loop, _device, guest = connect_ic(ShutdownVsp(), ShutdownVsc)
    asked: list[tuple[str, int, str]] = []
    kernel = guest.kernel
    kernel.on_shutdown_request = lambda kind, reason, message="": asked.append(
        (kind, reason, message)) or True
    vsp = _vsp(loop)
    results: list[Any] = []
    request = vsp.request("reboot", reason=0x80000002, timeout_s=30, message="maintenance",
                          callback=results.append)
    run_for(loop, 1 * MS)
    assert asked == [("reboot", 0x80000002, "maintenance")]
    assert results == [ShutdownAnswered(request, 0, True)]
    assert request.kind is ShutdownKind.REBOOT
    assert request.timeout_s == 30
    assert vsp.waiting == 0


def test_shutdown_refused_reaches_the_callback_with_the_refusal() -> None:
    loop, _device, guest = connect_ic(ShutdownVsp(), ShutdownVsc)
    guest.kernel.on_shutdown_request = lambda kind, reason, message="": False
    results: list[Any] = []
    _vsp(loop).request(callback=results.append)
    run_for(loop, 1 * MS)
    [answer] = results
    assert isinstance(answer, ShutdownAnswered)
    assert not answer.accepted
    assert answer.status == IcStatus.E_FAIL


def test_shutdown_hibernate_is_refused_unless_configured() -> None:
    for config, accepted in (({}, False), ({"hibernate": True}, True)):
        loop, _device, _guest = connect_ic(ShutdownVsp(), ShutdownVsc.configured(config))
        results: list[Any] = []
        _vsp(loop).request("hibernate", callback=results.append)
        run_for(loop, 1 * MS)
        assert [r.accepted for r in results] == [accepted]


def test_shutdown_without_an_answer_times_out_after_timeout_s() -> None:
    loop, _device, guest = connect_ic(ShutdownVsp({"timeout_s": 7}), ShutdownVsc)
    guest.channel.on_packet = lambda channel, packet: None   # a hung guest
    results: list[Any] = []
    start = now(loop)
    request = _vsp(loop).request("shutdown", callback=results.append)
    run_for(loop, 7 * S - 1)
    assert results == []
    run_for(loop, 1)
    assert results == [ShutdownTimedOut(request)]
    assert now(loop) - start == 7 * S


def test_shutdown_requests_are_abandoned_when_the_channel_closes() -> None:
    loop, device, guest = connect_ic(ShutdownVsp(), ShutdownVsc)
    guest.channel.on_packet = lambda channel, packet: None
    results: list[Any] = []
    vsp = _vsp(loop)
    first = vsp.request(callback=results.append)
    second = vsp.request("reboot", callback=results.append)
    device.channel.fail("test: gone")
    third = vsp.request(callback=results.append)   # after the close: settled at once
    assert [type(r) for r in results] == [IcRequestAbandoned] * 3
    assert [r.request for r in results] == [first, second, third]
    assert "test: gone" in results[2].reason


def test_shutdown_requested_before_the_guest_connects_goes_out_after_negotiation() -> None:
    loop = boot_ic_vm([ShutdownVsc])
    vsp = ShutdownVsp()
    results: list[Any] = []
    vsp.request(callback=results.append)
    offer(loop, "shutdown", vsp)
    run_for(loop, 1 * MS)
    assert [r.accepted for r in results] == [True]


def _vsp(loop: Any) -> Any:
    [device] = loop.server.devices.values()
    return device.vsp


# -- timesync ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("offset_ms", "drift_ppm"), [(0, 0.0), (-3_600_000, 400.0),
                                                      (86_400_000, -250.0), (12, 1.5)])
def test_timesync_guest_clock_converges_to_host_time(offset_ms: int, drift_ppm: float) -> None:
    config = {"sample_period_ms": 1000, "offset_ms": 1_700_000_000_000,
              "guest_offset_ms": offset_ms, "guest_drift_ppm": drift_ppm}
    vsp = TimesyncVsp(config)
    loop, _device, guest = connect_ic(vsp, TimesyncVsc.configured(config))
    driver = guest.driver
    assert driver.protocol.versions.message == IcVersion(4, 0)
    # SYNC at once, then SAMPLEs each second; from the third sample on, within 1 us (10 units)
    run_for(loop, 2 * S + 1)
    for _ in range(40):
        run_for(loop, 137 * MS)
        assert abs(driver.read_clock() - vsp.host_time(now(loop))) <= 10


def test_timesync_offset_moves_the_host_clock() -> None:
    vsp = TimesyncVsp({"offset_ms": 1500})
    assert vsp.host_time(0) - TimesyncVsp().host_time(0) == 15_000_000


# -- KVP ---------------------------------------------------------------------------------------


def test_kvp_set_get_delete_enumerate_with_pool_files_on_disk(tmp_path: Path) -> None:
    vsc = KvpVsc.configured({"pool_dir": tmp_path, "items": "OSName=test os;Role=web"})
    loop, _device, guest = connect_ic(KvpVsp(), vsc)
    vsp = _vsp(loop)
    got: list[Any] = []
    vsp.set(0, "colour", "blue", got.append)
    vsp.set(0, "count", 42, got.append)
    vsp.set(1, "ключ", "значение", got.append)
    vsp.get(0, "colour", got.append)
    vsp.get(0, "missing", got.append)
    vsp.enumerate(0, got.append)
    vsp.enumerate(2, got.append)
    vsp.enumerate(0, got.append, index=1)
    run_for(loop, 1 * MS)
    assert [r.ok for r in got[:3]] == [True] * 3
    assert got[3] == KvpResult(got[3].operation, 0, 0, "colour", "blue")
    assert got[4].status == IcStatus.S_CONT
    assert got[4].value is None
    assert got[5] == KvpEnumeration(0, (("colour", "blue"), ("count", "42")), IcStatus.S_CONT)
    assert got[6].items == (("OSName", "test os"), ("Role", "web"))
    assert (got[7].key, got[7].value, got[7].index) == ("count", "42", 1)
    # the daemon's files: fixed 2560-byte UTF-8 records, in set order
    pool0 = (tmp_path / ".kvp_pool_0").read_bytes()
    assert len(pool0) == 2 * KVP_POOL_RECORD_SIZE
    assert decode_pool(pool0) == [("colour", "blue"), ("count", "42")]
    assert decode_pool((tmp_path / ".kvp_pool_1").read_bytes()) == [("ключ", "значение")]
    got.clear()
    vsp.delete(0, "colour", got.append)
    vsp.delete(0, "colour", got.append)
    run_for(loop, 1 * MS)
    assert [r.status for r in got] == [IcStatus.S_OK, IcStatus.S_CONT]
    assert decode_pool((tmp_path / ".kvp_pool_0").read_bytes()) == [("count", "42")]
    assert isinstance(guest.driver.guest, KvpGuest)


def test_kvp_host_reads_what_the_guest_wrote(tmp_path: Path) -> None:
    from winhv.vsp_vsc_pairs.ic.kvp_pool import encode_pool
    (tmp_path / ".kvp_pool_1").write_bytes(encode_pool([("GuestKey", "from the daemon")]))
    loop, _device, _guest = connect_ic(KvpVsp(), KvpVsc.configured({"pool_dir": tmp_path}))
    got: list[Any] = []
    _vsp(loop).get(1, "GuestKey", got.append)
    run_for(loop, 1 * MS)
    assert got[0].value == "from the daemon"


def test_kvp_default_pool_dir_is_a_fresh_temporary_folder_removed_with_the_device() -> None:
    loop, _device, guest = connect_ic(KvpVsp(), KvpVsc)
    pool_dir = guest.driver.pool_dir
    assert pool_dir.is_dir()
    assert "winhv-kvp-" in pool_dir.name
    assert not str(pool_dir).startswith("/var/lib/hyperv")
    got: list[Any] = []
    _vsp(loop).set(0, "k", "v", got.append)
    _vsp(loop).enumerate(2, got.append)
    run_for(loop, 1 * MS)
    assert (pool_dir / ".kvp_pool_0").exists()
    assert dict(got[1].items)["FullyQualifiedDomainName"] == "vm"   # the VM's name
    loop.client.unload()
    run_for(loop, 1 * MS)
    assert not pool_dir.exists()


def test_kvp_oversize_values_fail_before_sending_and_oversize_records_get_s_cont(
        tmp_path: Path) -> None:
    loop, _device, _guest = connect_ic(KvpVsp(), KvpVsc.configured({"pool_dir": tmp_path}))
    vsp = _vsp(loop)
    with pytest.raises(KvpValueError):
        vsp.set(0, "k" * 256, "v")          # 256 characters + NUL > 512 bytes of UTF-16
    assert vsp.waiting == 0
    got: list[Any] = []
    # fits UTF-16 (1020 characters) but not the pool file's 2048 UTF-8 bytes
    vsp.set(0, "wide", "€" * 1000, got.append)
    run_for(loop, 1 * MS)
    assert got[0].status == IcStatus.S_CONT


def test_kvp_requests_time_out_and_are_abandoned_on_close(tmp_path: Path) -> None:
    config = {"pool_dir": tmp_path, "timeout_ms": 50}
    loop, device, guest = connect_ic(KvpVsp(config), KvpVsc.configured(config))
    guest.channel.on_packet = lambda channel, packet: None
    vsp = _vsp(loop)
    got: list[Any] = []
    vsp.get(0, "a", got.append)
    vsp.enumerate(0, got.append)
    vsp.get(0, "b", got.append)
    run_for(loop, 100 * MS)
    assert type(got[0]).__name__ == "IcTransactionTimedOut"
    assert isinstance(got[1], KvpEnumeration)
    assert got[1].status == IcStatus.E_FAIL
    device.channel.fail("test: closed")
    assert isinstance(got[2], IcRequestAbandoned)
    vsp.get(0, "c", got.append)
    assert isinstance(got[3], IcRequestAbandoned)


# -- version matrices --------------------------------------------------------------------------


def _guest_speaking(vsc_cls: Any, guest_cls: Any, framework: tuple[str, ...],
                    message: tuple[str, ...]) -> Any:
    def make(self: Any) -> Any:
        kwargs = {"framework_versions": framework, "message_versions": message}
        if guest_cls is KvpGuest:
            return KvpGuest(self.pool_dir, **kwargs)
        if guest_cls is TimesyncGuest:
            return TimesyncGuest(self.clock, reference_time=reference_time, **kwargs)
        return guest_cls(**kwargs)
    return type(f"Old{vsc_cls.__name__}", (vsc_cls,), {"_new_protocol": make})


_GUESTS = {"heartbeat": HeartbeatGuest, "kvp": KvpGuest, "shutdown": ShutdownGuest,
           "timesync": TimesyncGuest}


@pytest.mark.parametrize("name", sorted(_GUESTS))
def test_an_older_guest_negotiates_its_newest_common_version(name: str) -> None:
    vsp_cls, vsc_cls = IC_DRIVERS[name]
    oldest = min(vsp_cls.spec.host_message_versions)
    guest = _guest_speaking(vsc_cls, _GUESTS[name], ("1.0",), (str(oldest),))
    loop, device, _guest = connect_ic(vsp_cls(), guest, name=name)
    assert device.vsp.state is IcState.READY
    assert device.vsp.protocol.versions.framework == IcVersion(1, 0)
    assert device.vsp.protocol.versions.message == oldest
    run_for(loop, 6 * S)
    assert device.channel is not None
    assert device.vsp.failure is None


@pytest.mark.parametrize("name", sorted(_GUESTS))
def test_a_guest_with_no_common_version_gets_its_channel_closed_with_the_reason(
        name: str) -> None:
    vsp_cls, vsc_cls = IC_DRIVERS[name]
    guest = _guest_speaking(vsc_cls, _GUESTS[name], ("3.0", "1.0"), ("9.9",))
    loop = boot_ic_vm([guest])
    device, _guest = offer(loop, name, vsp_cls())
    vsp = device.vsp
    assert vsp.state is IcState.FAILED
    assert vsp.channel is None
    assert vsp.close_reason == vsp.failure
    # the host withdrew the offer: the guest removed and released the device
    assert device.relid not in loop.client.devices
    assert device.relid not in loop.server.devices
    assert vsp.failure is not None
    assert "version negotiation failed" in vsp.failure
    assert "none of the offered versions" in vsp.failure
    assert vsp.failure in device.errors
    assert any(vsp.failure in e for e in loop.server.errors)


def test_timesync_with_a_pre_4_0_guest_uses_the_old_layout_and_still_syncs() -> None:
    config = {"sample_period_ms": 500, "guest_offset_ms": 99_000}
    guest = _guest_speaking(TimesyncVsc.configured(config), TimesyncGuest, ("3.0",), ("3.0",))
    vsp = TimesyncVsp(config)
    loop, _device, guest_device = connect_ic(vsp, guest)
    assert vsp.protocol.versions.message == IcVersion(3, 0)
    run_for(loop, 3 * S)
    # delivery takes no virtual time here, so even the < 4.0 layout is exact to rounding
    assert abs(guest_device.driver.read_clock() - vsp.host_time(now(loop))) <= 10


def test_heartbeat_body_sent_is_the_linux_layout() -> None:
    vsp = HeartbeatVsp({"period_ms": 100})
    loop, device, _guest = connect_ic(vsp, HeartbeatVsc)
    seen: list[bytes] = []
    device.channel.taps.append(lambda ch, d, t, tid, payload: seen.append(
        (d, tid, bytes(payload))))
    run_for(loop, 100 * MS)
    out = [(tid, p) for d, tid, p in seen if d == "out"]
    assert out
    assert all(tid == 0 for tid, _ in out)
    _, payload = out[0]
    packet_type, length = struct.unpack_from("<II", payload)
    assert (packet_type, length) == (1, 20 + 40)   # DATA; icmsg header + 40-byte body (§5.4)
    answers = [(tid, p) for d, tid, p in seen if d == "in"]
    assert answers
    assert all(tid == 0 for tid, _ in answers)
