"""Pause holds the guest's interrupts (a packet sent to a paused VM waits, then is handled on
resume); save keeps the VM's state in memory and start restores it."""

from __future__ import annotations

from typing import Any

from support.hosts import echo_driver, echo_spec, make_host, ping
from support.vmbus_io import frame

from winhv.drivers.vmms import Host, VmState

S = VmState
NS = 1_000_000_000


def booted() -> Host:
    host = make_host(echo_spec("vm", channels=2), echo_spec("other"))
    for name in ("vm", "other"):
        host.vmms.start(name)
    host.settle()
    return host


def host_sends(host: Host, data: bytes, device: str = "echo0") -> None:
    worker: Any = host.vmms.get("vm").worker
    worker.host_devices[device].vsp.channel.send(frame(data))


def test_a_packet_sent_to_a_paused_vm_waits_for_resume() -> None:
    host = booted()
    driver = echo_driver(host, "vm")
    host.vmms.pause("vm")
    assert host.vmms.get("vm").state is S.PAUSED
    host_sends(host, b"one")
    host_sends(host, b"two")
    host.run_for(2 * NS)
    assert driver.unsolicited == []
    # the other VM runs on meanwhile
    assert ping(host, "other", b"x") == [b"echo:x"]
    host.vmms.resume("vm")
    host.run_until_idle()
    assert driver.unsolicited == [b"one", b"two"]
    assert ping(host, "vm", b"after") == [b"echo:after"]


def test_a_request_from_a_paused_guest_is_answered_only_after_resume() -> None:
    host = booted()
    replies = ping(host, "vm", b"in flight", run=False)
    host.vmms.pause("vm")
    host.run_for(NS)
    # the VSP answered, but the answer's interrupt is held
    worker: Any = host.vmms.get("vm").worker
    assert worker.host_devices["echo0"].vsp.received[-1][2] == b"in flight"
    assert replies == []
    host.vmms.resume("vm")
    host.run_until_idle()
    assert replies == [b"echo:in flight"]


def test_save_then_start_restores_the_same_guest_with_its_channels_and_counters() -> None:
    host = booted()
    assert ping(host, "vm", b"before") == [b"echo:before"]
    before = host.vmms.inspect("vm")
    drivers = [echo_driver(host, "vm", i) for i in range(2)]
    host.vmms.save("vm")
    assert host.vmms.get("vm").state is S.SAVED
    host_sends(host, b"while saved", "echo1")
    host.run_for(NS)
    assert drivers[1].unsolicited == []
    host.vmms.start("vm")
    assert host.vmms.get("vm").history[-2:][0][1:] == (S.SAVED, S.RESUMING)
    assert host.vmms.get("vm").state is S.RUNNING
    host.run_until_idle()
    assert drivers[1].unsolicited == [b"while saved"]
    assert [echo_driver(host, "vm", i) for i in range(2)] == drivers
    after = host.vmms.inspect("vm")
    assert after["partition"]["id"] == before["partition"]["id"]
    assert [c["instance_id"] for c in after["channels"]] == \
        [c["instance_id"] for c in before["channels"]]
    assert after["channels"][0]["packets_in"] == before["channels"][0]["packets_in"]
    assert after["channels"][1]["packets_out"] == before["channels"][1]["packets_out"] + 1
    assert ping(host, "vm", b"restored", device=1) == [b"echo:restored"]


def test_saving_a_paused_vm_and_starting_it_runs_it_again() -> None:
    host = booted()
    host.vmms.pause("vm")
    host.vmms.save("vm")
    host_sends(host, b"held")
    host.vmms.start("vm")
    host.run_until_idle()
    assert echo_driver(host, "vm").unsolicited == [b"held"]
    assert host.vmms.inspect("vm")["errors"] == []
