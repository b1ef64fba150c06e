"""From a driver set to a running host: specs for VMMS, lifecycle hooks, VID services.

This is the seam between the plugin layer (descriptions, driver sets, pluggy) and the drivers
(VMMS, workers), which know nothing of plugins: descriptions become plain
:class:`~winhv.drivers.vmms.VmSpec` objects, and every VMMS/worker event is forwarded to the
matching lifecycle hook.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
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
    # An override binds in place of the pair's VSC, so it gets the same device configuration
    # (the first device or IC of that interface GUID, as the bus binds one VSC per GUID).
    configs: dict[uuid.UUID, Any] = {}
    for entry in (*vm.devices, *vm.ics):
        configs.setdefault(entry.description.interface_id, entry.config)
    overrides = {o.interface_id: _guest_driver(o.vsc, configs.get(o.interface_id, {}))
                 for o in vm.drivers}
    return VmSpec(vm.name, vm.memory_mb, vm.processors, tuple(devices), overrides)


def _guest_driver(vsc: Any, config: Any) -> Any:
    """The VSC class to bind: the bus builds a VSC from its device alone, so a driver that
    takes configuration offers ``configured(config) -> subclass`` to bind it."""
    configured = getattr(vsc, "configured", None)
    return configured(dict(config)) if callable(configured) else vsc


@dataclass(frozen=True, slots=True)
class _HookDevice:
    """The ``device`` argument of ``winhv_device_bound``/``winhv_device_unbound``."""

    name: str
    interface_id: uuid.UUID
    instance_id: uuid.UUID
    #: The guest's VSC instance bound to the device.
    driver: Any
    relid: int


@dataclass(frozen=True, slots=True)
class _HookChannel:
    """The ``channel`` argument of ``winhv_channel_opened``/``winhv_channel_closed``."""

    child_relid: int
    interface_id: uuid.UUID
    instance_id: uuid.UUID
    sub_channel_index: int
    #: The device's name in the driver set.
    name: str


def _hook_device(details: dict[str, Any]) -> _HookDevice:
    guest = details["guest_device"]
    return _HookDevice(details["name"], guest.interface_id, guest.instance_id,
                       details["driver"], guest.relid)


def _hook_channel(details: dict[str, Any]) -> _HookChannel:
    return _HookChannel(details["relid"], uuid.UUID(details["interface_id"]),
                        uuid.UUID(details["instance_id"]), details["sub_channel_index"],
                        details["name"])


def _notifier(discovery: DiscoveryResult | None, vm_named: Callable[[str], Any]) -> Any:
    """Forward VMMS/worker events to the lifecycle hooks with the arguments docs/hooks.md
    promises: ``vm`` is VMMS's record of the VM (``name``, ``state``), states are lower-case
    names (``"off"``, ``"running"``), devices and channels are objects with the documented
    attributes."""
    if discovery is None:
        return None

    def notify(event: str, **details: Any) -> None:
        if event not in _HOOK_OF:
            return
        vm = vm_named(details["vm"])
        hook = _HOOK_OF[event]
        if event == "vm_state_changed":
            discovery.notify(hook, vm=vm, old=details["old"].value.lower(),
                             new=details["new"].value.lower())
        elif event in ("device_bound", "device_unbound"):
            extra = {"reason": details["reason"]} if event == "device_unbound" else {}
            discovery.notify(hook, vm=vm, device=_hook_device(details), **extra)
        else:
            extra = {"reason": details["reason"]} if event == "channel_closed" else {}
            discovery.notify(hook, vm=vm, channel=_hook_channel(details), **extra)

    return notify


#: VMMS/worker event -> the lifecycle hook it is forwarded to.
_HOOK_OF = {
    "vm_state_changed": "winhv_vm_state_changed",
    "device_bound": "winhv_device_bound",
    "device_unbound": "winhv_device_unbound",
    "channel_opened": "winhv_channel_opened",
    "channel_closed": "winhv_channel_closed",
}


def boot_driver_set(driver_set: DriverSet, discovery: DiscoveryResult | None = None, *,
                    bridge: Any = None, extra_notify: Any = None) -> Host:
    """A host configured by ``driver_set``, with every VM created (Off)."""
    services: list[VidService] = []
    for service in driver_set.host.services:
        instance = service.description.service(dict(service.config))
        services.append(instance)
    booted: list[Host] = []   # the host, once made: hooks get VMMS's record of each VM
    hook = _notifier(discovery, lambda name: booted[0].vmms.get(name))

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
    booted.append(host)
    for vm in driver_set.vms:
        host.vmms.create(vm_spec(vm))
    return host
