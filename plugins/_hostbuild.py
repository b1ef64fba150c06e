"""From a driver set to a running host: specs for VMMS, lifecycle hooks, VID services.

This is the seam between the plugin layer (descriptions, driver sets, pluggy) and the drivers
(VMMS, workers), which know nothing of plugins: descriptions become plain
:class:`~winhv.drivers.vmms.VmSpec` objects, and every VMMS/worker event is forwarded to the
matching lifecycle hook.
"""

from __future__ import annotations

from typing import Any

from winhv.drivers.vid import VidService
from winhv.drivers.vmms import DeviceSpec, Host, VmSpec

from ._discovery import DiscoveryResult
from ._driverset import DriverSet, VmConfig

__all__ = ["ROOT_OVERHEAD_MB", "boot_driver_set", "vm_spec"]

#: Root memory kept beyond the VMs' own (rings, SynIC and hypercall pages, pools).
ROOT_OVERHEAD_MB = 256


def vm_spec(vm: VmConfig) -> VmSpec:
    """The VMMS spec of one ``[[vm]]`` entry (already validated against the registry)."""
    devices: list[DeviceSpec] = []
    for device in vm.devices:
        pair = device.description
        devices.append(DeviceSpec(device.name, "device", pair.interface_id, pair.vsp,
                                  _guest_driver(pair.vsc, device.config),
                                  dict(device.config), pair.name))
    for ic in vm.ics:
        desc = ic.description
        devices.append(DeviceSpec(ic.name, "ic", desc.interface_id, desc.host,
                                  _guest_driver(desc.guest, ic.config), dict(ic.config),
                                  desc.name))
    overrides = {o.interface_id: o.vsc for o in vm.drivers}
    return VmSpec(vm.name, vm.memory_mb, vm.processors, tuple(devices), overrides)


def _guest_driver(vsc: Any, config: Any) -> Any:
    """The VSC class to bind: the bus builds a VSC from its device alone, so a driver that
    takes configuration offers ``configured(config) -> subclass`` to bind it."""
    configured = getattr(vsc, "configured", None)
    return configured(dict(config)) if callable(configured) else vsc


def _notifier(discovery: DiscoveryResult | None) -> Any:
    """Forward VMMS/worker events to the lifecycle hooks (docs/hooks.md)."""
    if discovery is None:
        return None

    def notify(event: str, **details: Any) -> None:
        vm = details.get("vm")
        if event == "vm_state_changed":
            discovery.notify("winhv_vm_state_changed", vm=vm, old=str(details["old"]),
                             new=str(details["new"]))
        elif event == "device_bound":
            discovery.notify("winhv_device_bound", vm=vm, device=details["device"])
        elif event == "device_unbound":
            discovery.notify("winhv_device_unbound", vm=vm, device=details["device"],
                             reason=details.get("reason"))
        elif event == "channel_opened":
            discovery.notify("winhv_channel_opened", vm=vm, channel=details)
        elif event == "channel_closed":
            discovery.notify("winhv_channel_closed", vm=vm, channel=details,
                             reason=details.get("reason"))

    return notify


def boot_driver_set(driver_set: DriverSet, discovery: DiscoveryResult | None = None, *,
                    bridge: Any = None, extra_notify: Any = None) -> Host:
    """A host configured by ``driver_set``, with every VM created (Off)."""
    services: list[VidService] = []
    for service in driver_set.host.services:
        instance = service.description.service(dict(service.config))
        services.append(instance)
    hook = _notifier(discovery)

    def notify(event: str, **details: Any) -> None:
        if hook is not None:
            hook(event, **details)
        if extra_notify is not None:
            extra_notify(event, **details)

    # The root's RAM is the machine's: every VM's memory comes out of it (sparse until used).
    needed = sum(vm.memory_mb for vm in driver_set.vms) + ROOT_OVERHEAD_MB
    host = Host(root_memory_mb=max(driver_set.host.root_memory_mb, needed),
                vmbus_version=driver_set.host.vmbus_version, bridge=bridge,
                services=services, notify=notify)
    for vm in driver_set.vms:
        host.vmms.create(vm_spec(vm))
    return host
