"""The VM worker: builds, runs and tears down one VM.

Everything the worker does to the machine goes through the root kernel's WinHv handle (via
VID and the VMBus server); everything the guest does goes through the guest kernel's own
handle and memory. The worker is the only object holding both ends, as Hyper-V's worker
process is the only one that sees both the host's devices and the guest's memory — which is
what lets a later step move it into its own OS process.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from winhv._properties import PartitionProperty
from winhv._status import HvStatus
from winhv.drivers.kernel import Kernel, PageAllocator
from winhv.drivers.vid import Vid, VidPartition
from winhv.drivers.vmbus._guest import DeviceState, GuestDevice, VmbusClient
from winhv.drivers.vmbus._host import VmbusHost
from winhv.drivers.vmbus._server import HostDevice, VmbusServer
from winhv.drivers.vmms._spec import VmSpec
from winhv.drivers.vmwp._port import PartitionPort

__all__ = ["GUEST_FIRST_PAGE", "Worker", "WorkerError"]

_log = logging.getLogger("winhv.vmwp")

#: Guest pages below this are not handed out by the guest kernel's allocator.
GUEST_FIRST_PAGE = 16


class WorkerError(RuntimeError):
    """The worker could not build or run its VM; the message says which step and why."""


class Worker:
    """One VM's worker. ``notify(event, **details)`` reports device and channel events."""

    #: Errors a worker keeps (the oldest go first); its VMBus server rate-limits what it
    #: passes on, but guest faults arrive one by one.
    ERRORS_KEPT = 256

    def __init__(self, spec: VmSpec, *, hypervisor: Any, root: Kernel, vmbus: VmbusHost,
                 vid: Vid, notify: Callable[..., Any] | None = None,
                 vmbus_version: Any = None) -> None:
        self.spec = spec
        self.name = spec.name
        self._machine = hypervisor   # used once, to open this VM's PartitionPort
        self.port: PartitionPort | None = None
        self._root = root
        self._vmbus = vmbus
        self._vid = vid
        self._notify = notify
        self._vmbus_version = vmbus_version
        self.partition: VidPartition | None = None
        self.server: VmbusServer | None = None
        self.guest: Kernel | None = None
        self.client: VmbusClient | None = None
        self.host_devices: dict[str, HostDevice] = {}
        #: The worker's last ``ERRORS_KEPT`` errors (a guest decides how many there are).
        self.errors: deque[str] = deque(maxlen=self.ERRORS_KEPT)
        self.powered_off = False
        #: Why the worker (or its guest) failed; VMMS marks the VM FAILED on its next update.
        self.failure: str | None = None
        #: Guest devices bound and not yet reported unbound, by relid.
        self._bound: dict[int, GuestDevice] = {}

    def __repr__(self) -> str:
        return f"<Worker {self.name}>"

    def _event(self, event: str, **details: Any) -> None:
        if self._notify is not None:
            try:
                self._notify(event, vm=self.name, **details)
            except Exception:
                _log.exception("%s: event observer failed on %s", self.name, event)

    def _error(self, text: str) -> None:
        self.errors.append(text)

    def fail(self, reason: str) -> None:
        """Record a fault that ends this VM (the first reason wins). VMMS reads
        :attr:`failure` on its next update and fails only this VM."""
        if self.failure is None:
            self.failure = reason
            self.errors.append(f"worker failed: {reason}")
            self._event("worker_failed", reason=reason)

    # -- bring-up ------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the partition, offer the devices, boot the guest's bus. Raises WorkerError."""
        spec = self.spec
        try:
            self.partition = part = self._vid.create_partition(
                spec.name, memory_mb=spec.memory_mb, processors=spec.processors)
        except Exception as exc:
            raise WorkerError(f"VM {spec.name!r}: creating the partition failed: {exc}") from exc
        pid = part.partition_id
        self.server = VmbusServer(self._vmbus, pid, root_ram_page=part.root_ram_page,
                                  guest_pages=part.memory_pages, name=spec.name,
                                  max_version=self._vmbus_version, on_error=self._error)
        for device in spec.devices:
            try:
                vsp = device.vsp(device.config)
                self.host_devices[device.name] = self.server.add_device(
                    device.name, vsp, device.interface_id, services={"worker": self})
            except Exception as exc:
                # A VSP that cannot even be offered fails alone; the VM goes on without it.
                self._error(f"device {device.name!r}: {type(exc).__name__}: {exc}")
                self._event("device_failed", device=device.name, reason=str(exc))
        self._boot_guest(part)

    def _boot_guest(self, part: VidPartition) -> None:
        self.port = port = PartitionPort(self._machine, part.partition_id)
        self._machine = None   # from here on the worker holds only its partition's port
        guest = Kernel(port.guest_handle,
                       PageAllocator(GUEST_FIRST_PAGE, part.memory_pages - GUEST_FIRST_PAGE,
                                     name=self.name, zeroed=True),   # VID zeroed it
                       name=self.name, clock=port.timer, power_off=self._power_off)
        guest.on_fault = lambda where, exc: self._error(f"guest {where}: {exc}")
        interrupt = guest.interrupt

        def isr(vector: int) -> None:
            # The kernel contains its drivers' faults; one escaping its ISR is a guest crash.
            try:
                interrupt(vector)
            except Exception as exc:
                self.fail(f"the guest crashed in its interrupt handler (vector {vector:#x}): "
                          f"{type(exc).__name__}: {exc}")

        port.connect_interrupts(0, isr)
        guest.enable_synic()
        drivers = []
        for device in self.spec.devices:
            if device.vsc is not None and device.vsc not in drivers:
                drivers.append(device.vsc)
        self.guest = guest
        self.client = VmbusClient(guest, drivers, overrides=self.spec.overrides,
                                  on_change=self._device_changed)
        # Observers (a tracer) may attach to both ends before the guest connects and any
        # channel opens: the host devices (name -> HostDevice) and the guest's bus.
        self._event("bus_created", devices=dict(self.host_devices), client=self.client)
        self.client.connect()

    def _device_changed(self, event: str, device: GuestDevice) -> None:
        if event == "bound":
            self._bound[device.relid] = device
            self._event("device_bound", **self._device_details(device))
            self._event("channel_opened", **self._channel_details(device))
        elif event == "unbound" and self._bound.pop(device.relid, None) is not None:
            self._unbound(device, self._unbind_reason(device))

    def _unbound(self, device: GuestDevice, reason: str) -> None:
        self._event("device_unbound", reason=reason, **self._device_details(device))
        self._event("channel_closed", reason=reason, **self._channel_details(device))

    def _device_name(self, relid: int) -> str:
        host = self.server.devices.get(relid) if self.server is not None else None
        return host.name if host is not None else f"relid {relid}"

    def _device_details(self, device: GuestDevice) -> dict[str, Any]:
        return {"device": device.describe(), "name": self._device_name(device.relid),
                "guest_device": device, "driver": device.driver}

    def _channel_details(self, device: GuestDevice) -> dict[str, Any]:
        return {"relid": device.relid, "name": self._device_name(device.relid),
                "interface_id": str(device.interface_id),
                "instance_id": str(device.instance_id),
                "sub_channel_index": device.offer.sub_channel_index}

    def _unbind_reason(self, device: GuestDevice) -> str:
        """The hook vocabulary (docs/hooks.md): ``fault: ...``, ``rescind`` or ``vm-stop``."""
        if device.state is DeviceState.FAILED:
            return f"fault: {device.error}"
        if self.client is not None and device.relid in self.client.protocol.rescinded:
            return "rescind"
        return "vm-stop"

    @property
    def booted(self) -> bool:
        """True once the guest's bus is connected and every offer is open, failed or unbound."""
        client = self.client
        if client is None or client.connected_version is None or not client.offers_complete:
            return False
        return all(d.state not in (DeviceState.PROBING, DeviceState.OPENING)
                   for d in client.devices.values())

    # -- running -------------------------------------------------------------------------------

    def set_suspended(self, suspended: bool) -> None:
        """Pause or resume the VM's processors (HvPartitionPropertySuspend)."""
        assert self.partition is not None
        status = self._root.hv.WinHvSetPartitionProperty(
            self.partition.partition_id, PartitionProperty.SUSPEND, int(suspended))
        if status != HvStatus.SUCCESS:
            raise WorkerError(f"VM {self.name!r}: suspend={suspended} failed: {status}")

    def _power_off(self) -> None:
        """The guest turned itself off (its "ACPI" power-off)."""
        self.powered_off = True
        self._event("guest_power_off")

    def ic_named(self, type_name: str) -> Any:
        """The host side (VSP) of this VM's IC of that type (e.g. "shutdown"), or None."""
        for device in self.spec.devices:
            if device.kind == "ic" and device.type_name == type_name:
                host = self.host_devices.get(device.name)
                return host.vsp if host is not None else None
        return None

    def ic_status(self) -> dict[str, dict[str, Any]]:
        """Each IC of this VM by its driver-set name: what its host side reports through
        ``status()`` (heartbeat health, negotiated versions, ...), or ``{"ic": type, "open":
        False, "error": ...}`` for an IC whose host side could not be made or has no
        ``status``. The worker knows no IC: it only asks."""
        out: dict[str, dict[str, Any]] = {}
        for device in self.spec.devices:
            if device.kind != "ic":
                continue
            host = self.host_devices.get(device.name)
            status = getattr(host.vsp, "status", None) if host is not None else None
            entry: dict[str, Any] = {"ic": device.type_name, "open": False}
            if host is None:
                entry["error"] = "its host side failed to start"
            elif callable(status):
                try:
                    entry = {**entry, **dict(status()), "ic": device.type_name}
                except Exception as exc:   # a plugin IC's bug stays in its entry
                    entry["error"] = f"status() raised {type(exc).__name__}: {exc}"
            else:
                entry["open"] = host.channel is not None
            out[device.name] = entry
        return out

    def ic(self, kind: type) -> Any:
        """The host side of the first device whose VSP is a ``kind`` (e.g. ShutdownVsp)."""
        for device in self.host_devices.values():
            if isinstance(device.vsp, kind):
                return device.vsp
        return None

    # -- teardown ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Tear the VM down: close every channel, stop the VSPs, destroy the partition.
        Devices still bound are reported unbound (and their channels closed) as ``vm-stop``:
        the guest that would have unbound them is gone."""
        if self.server is not None:
            self.server.shutdown()
        bound, self._bound = self._bound, {}
        for device in bound.values():
            self._unbound(device, "vm-stop")
        if self.partition is not None:
            pid = self.partition.partition_id
            if self.port is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self.port.connect_interrupts(0, None)
            self._vid.destroy_partition(pid)
        self.partition = None
        self.port = None
        self.server = None
        self.client = None
        self.guest = None

    # -- inspection ----------------------------------------------------------------------------

    def inspect(self) -> dict[str, Any]:
        """Partitions, VPs, memory, channels, devices, ring occupancy and hypercall counts."""
        part = self.partition
        if part is None:
            return {"name": self.name, "partition": None, "errors": list(self.errors)}
        counters = self.port.counters() if self.port is not None else {"vps": 0,
                                                                        "hypercalls": 0}
        channels = []
        assert self.server is not None
        for relid, device in sorted(self.server.devices.items()):
            channel = device.channel
            channels.append({
                "relid": relid, "name": device.name, "interface_id": str(device.interface_id),
                "instance_id": str(device.instance_id), "open": channel is not None,
                "connection_id": 0x2000 | relid,
                "packets_in": channel.packets_received if channel else 0,
                "packets_out": channel.packets_sent if channel else 0,
                "rings": channel.occupancy() if channel else None,
                "errors": list(device.errors),
            })
        return {
            "name": self.name,
            "partition": {
                "id": part.partition_id,
                "memory_mb": part.memory_pages >> 8,
                "processors": part.processors,
                "vps": counters["vps"],
                "hypercalls": counters["hypercalls"],
            },
            "vmbus_version": (f"{self.client.connected_version >> 16}."
                              f"{self.client.connected_version & 0xFFFF}"
                              if self.client and self.client.connected_version else None),
            "channels": channels,
            "devices": self.client.tree() if self.client else [],
            "ics": self.ic_status(),
            "errors": self._all_errors(),
        }

    def _all_errors(self) -> list[str]:
        """The worker's errors (the VMBus server's arrive through ``on_error``), what each
        VSP's device recorded that is not said already, and the guest bus's errors."""
        errors = list(self.errors)
        for device in self.server.devices.values() if self.server is not None else ():
            for error in device.errors:
                if not any(error in known for known in errors):
                    errors.append(f"{self.name}: device {device.name!r}: {error}")
        return errors + (list(self.client.errors) if self.client is not None else [])
