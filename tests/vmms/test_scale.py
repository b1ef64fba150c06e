"""One host runs 100 VMs with 8 channels each (correctness only: every VM Running, every
channel open, identities unique; the benchmark measures the time)."""

from __future__ import annotations

from support.hosts import echo_spec, make_host, ping, start_all

from winhv.drivers.vmms import VmState

VMS, CHANNELS = 100, 8


def test_a_hundred_vms_with_eight_channels_each_reach_running() -> None:
    host = make_host(*(echo_spec(f"vm{i}", channels=CHANNELS, memory_mb=8)
                       for i in range(VMS)))
    start_all(host)
    details = [host.vmms.inspect(vm.name) for vm in host.vmms.list()]
    assert [d["state"] for d in details] == ["Running"] * VMS
    assert all(vm.state is VmState.RUNNING for vm in host.vmms.list())
    assert all(d["errors"] == [] for d in details)
    partitions = [d["partition"]["id"] for d in details]
    assert len(set(partitions)) == VMS
    channels = [(d["partition"]["id"], c["relid"], c["instance_id"])
                for d in details for c in d["channels"]]
    assert len(channels) == VMS * CHANNELS
    assert all(c["open"] for d in details for c in d["channels"])
    assert len({(p, relid) for p, relid, _ in channels}) == VMS * CHANNELS
    assert len({instance for _, _, instance in channels}) == VMS * CHANNELS
    assert all(len(d["devices"]) == CHANNELS for d in details)
    for name, device in (("vm0", 0), ("vm57", 7), ("vm99", 3)):
        assert ping(host, name, name.encode(), device=device) == [b"echo:" + name.encode()]
