"""Host test support: VMs built from plain specs, a recording notifier, and helpers that move
the VMs through their states and packets through their channels.

The devices are the echo pair of :mod:`support.vmbus_io` (a request comes back as
``b"echo:" + data``); the shutdown IC is the real one (``winhv.vsp_vsc_pairs.ic``), so a
graceful stop goes over a real pipe-mode channel to the guest kernel's
``on_shutdown_request``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from support.vmbus_io import ECHO_IF, ECHO_PREFIX, EchoVsc, EchoVsp, frame, unframe
from winhv.drivers.vmbus._guest import DeviceState
from winhv.drivers.vmbus.device import Vsc, Vsp
from winhv.drivers.vmms import DeviceSpec, Host, VmSpec, VmState
from winhv.vsp_vsc_pairs.ic.drivers import ShutdownVsc, ShutdownVsp

__all__ = [
    "ECHO_PREFIX",
    "Recorder",
    "echo_device",
    "echo_driver",
    "echo_spec",
    "make_host",
    "ping",
    "shutdown_ic",
    "start_all",
    "states",
]

#: Every VM state change as ``(vm, old, new)`` is what the state tests compare.
Transition = tuple[str, VmState, VmState]


@dataclass
class Recorder:
    """A VMMS notifier that keeps every event as ``(event, details)``."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, event: str, **details: Any) -> None:
        self.events.append((event, details))

    def of(self, event: str) -> list[dict[str, Any]]:
        """The details of every ``event``, in order."""
        return [details for name, details in self.events if name == event]

    def transitions(self, vm: str | None = None) -> list[Transition]:
        """``(vm, old, new)`` of every ``vm_state_changed`` (of one VM if named)."""
        return [(d["vm"], d["old"], d["new"]) for d in self.of("vm_state_changed")
                if vm is None or d["vm"] == vm]

    def clear(self) -> None:
        self.events.clear()


def echo_device(name: str = "echo0", *, vsp: type[Vsp] = EchoVsp,
                vsc: type[Vsc] | None = EchoVsc, config: dict[str, Any] | None = None,
                ) -> DeviceSpec:
    """One echo device (or a variant of either half)."""
    return DeviceSpec(name, "device", ECHO_IF, vsp, vsc, dict(config or {}), "echo")


def shutdown_ic(name: str = "shutdown") -> DeviceSpec:
    """The real shutdown IC, as the plugin layer would describe it."""
    return DeviceSpec(name, "ic", ShutdownVsp.spec.interface_id, ShutdownVsp, ShutdownVsc,
                      {}, "shutdown")


def echo_spec(name: str, *, channels: int = 1, memory_mb: int = 16, shutdown: bool = False,
              extra: Iterable[DeviceSpec] = ()) -> VmSpec:
    """A VM with ``channels`` echo devices, optionally the shutdown IC, and ``extra``."""
    devices = [echo_device(f"echo{i}") for i in range(channels)]
    if shutdown:
        devices.append(shutdown_ic())
    devices.extend(extra)
    return VmSpec(name, memory_mb, 1, tuple(devices))


def make_host(*specs: VmSpec, recorder: Callable[..., Any] | None = None, **host: Any,
              ) -> Host:
    """A host with every VM of ``specs`` created (Off), ``recorder`` as VMMS's notifier.
    Root memory fits them all."""
    host.setdefault("root_memory_mb", sum(s.memory_mb for s in specs) + 256)
    made = Host(notify=recorder, **host)
    for spec in specs:
        made.vmms.create(spec)
    return made


def start_all(host: Host) -> None:
    """Start every VM and let them boot."""
    for vm in host.vmms.list():
        host.vmms.start(vm.name)
    host.settle()


def states(host: Host) -> dict[str, VmState]:
    return {vm.name: vm.state for vm in host.vmms.list()}


def echo_driver(host: Host, vm: str, device: int = 0) -> EchoVsc:
    """The guest's echo driver of the ``device``-th open echo channel of ``vm``."""
    worker = host.vmms.get(vm).worker
    if worker is None or worker.client is None:
        raise AssertionError(f"{vm} has no running guest")
    drivers = [d.driver for _, d in sorted(worker.client.devices.items())
               if d.state is DeviceState.OPEN and isinstance(d.driver, EchoVsc)]
    return drivers[device]


def ping(host: Host, vm: str, data: bytes, *, device: int = 0, run: bool = True,
         ) -> list[bytes]:
    """Send ``data`` as a request from ``vm``'s guest; returns the list the reply lands in
    (after running the host until idle when ``run``)."""
    replies: list[bytes] = []
    driver = echo_driver(host, vm, device)
    driver.channel.send_request(frame(data), lambda p: replies.append(unframe(p.payload)))
    if run:
        host.run_until_idle()
    return replies
