"""Lifecycle hooks reach a plugin registered with ``discover(plugins=...)``, with the
arguments docs/hooks.md promises: the VM record (``name``, ``state == new``), lower-case
state names, devices and channels with their documented attributes, unbind reasons."""

from __future__ import annotations

import importlib.metadata
import uuid
from typing import Any

from support.vmbus_io import ALT_IF, ECHO_IF, AltVsc, EchoVsc, EchoVsp

from winhv.plugins._hostbuild import boot_driver_set
from winhv.plugins.api import PairDescription, discover, hookimpl, load_driver_set

FAILING = type("AltVscFailing", (AltVsc,), {"fail_in": "on_packet"})
ALT_VSP = type("AltVsp", (EchoVsp,), {"interface_id": ALT_IF})


class Observer:
    """A plugin with the echo pairs and every lifecycle hook, recording what it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    @hookimpl
    def winhv_vsp_vsc_pairs(self) -> tuple[PairDescription, ...]:
        return (PairDescription("echo", ECHO_IF, "1.0", EchoVsp, EchoVsc),
                PairDescription("flaky", ALT_IF, "1.0", ALT_VSP, FAILING))

    @hookimpl
    def winhv_vm_state_changed(self, vm: Any, old: str, new: str) -> None:
        self.calls.append(("state", vm.name, vm.state.value.lower(), old, new))

    @hookimpl
    def winhv_device_bound(self, vm: Any, device: Any) -> None:
        self.calls.append(("bound", vm.name, device.name, device.interface_id,
                           device.instance_id, type(device.driver).__name__))

    @hookimpl
    def winhv_channel_opened(self, vm: Any, channel: Any) -> None:
        self.calls.append(("opened", vm.name, channel.child_relid, channel.interface_id,
                           channel.instance_id, channel.sub_channel_index))

    @hookimpl
    def winhv_device_unbound(self, vm: Any, device: Any, reason: str) -> None:
        self.calls.append(("unbound", vm.name, device.name, reason))

    @hookimpl
    def winhv_channel_closed(self, vm: Any, channel: Any, reason: str) -> None:
        self.calls.append(("closed", vm.name, channel.child_relid, reason))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [c[1:] for c in self.calls if c[0] == kind]


DRIVER_SET = """
[[vm]]
name = "vm"
memory_mb = 32
[[vm.device]]
pair = "echo"
name = "disk"
[[vm.device]]
pair = "flaky"
name = "flaky"
"""


def test_lifecycle_hooks_reach_a_plugin_with_the_documented_arguments(tmp_path: Any) -> None:
    observer = Observer()
    builtin = [ep for ep in importlib.metadata.entry_points(group="winhv")
               if ep.name == "builtin"]
    plugins = discover(entry_points=builtin, plugins={"observer": observer})
    assert plugins.failures == []
    path = tmp_path / "vms.toml"
    path.write_text(DRIVER_SET)
    host = boot_driver_set(load_driver_set(path, plugins.registry), plugins)
    host.vmms.start("vm")
    host.settle()
    worker: Any = host.vmms.get("vm").worker
    server = {d.name: d for d in worker.server.devices.values()}
    disk, flaky = server["disk"], server["flaky"]

    assert observer.of("state") == [("vm", "starting", "off", "starting"),
                                    ("vm", "running", "starting", "running")]
    assert sorted(observer.of("bound")) == [
        ("vm", "disk", ECHO_IF, disk.instance_id, "EchoVsc"),
        ("vm", "flaky", ALT_IF, flaky.instance_id, "AltVscFailing")]
    assert sorted(observer.of("opened")) == sorted([
        ("vm", disk.relid, ECHO_IF, disk.instance_id, 0),
        ("vm", flaky.relid, ALT_IF, flaky.instance_id, 0)])
    assert all(isinstance(c[3], uuid.UUID) for c in observer.of("opened"))
    # each device is bound before its channel is reported open
    order = [(c[0], c[2]) for c in observer.calls if c[0] in ("bound", "opened")]
    assert order.index(("bound", "disk")) < order.index(("opened", disk.relid))

    # the flaky guest driver raises on a packet: unbound as a fault, its channel closed
    flaky.vsp.channel.send(b"\x00" * 8)
    host.run_until_idle()
    [(vm, name, reason)] = observer.of("unbound")
    assert (vm, name) == ("vm", "flaky")
    assert reason.startswith("fault: ")
    assert "injected fault in AltVscFailing.on_packet" in reason
    assert observer.of("closed") == [("vm", flaky.relid, reason)]

    # a stop reports every device still bound as vm-stop, then the state changes, in order
    observer.calls.clear()
    host.vmms.stop("vm", force=True)
    assert observer.calls == [
        ("state", "vm", "stopping", "running", "stopping"),
        ("unbound", "vm", "disk", "vm-stop"),
        ("closed", "vm", disk.relid, "vm-stop"),
        ("state", "vm", "off", "stopping", "off"),
    ]
    assert plugins.hook_errors == []
