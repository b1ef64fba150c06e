"""A whole machine in one call, for tests and benchmarks: a hypervisor, the root kernel with
its VMBus host, one VM (made by VID through hypercalls) whose guest kernel runs a VMBus client,
and a VMBus server for that VM. :func:`connect_pair` offers one VSP and binds one VSC over real
rings, SynIC messages and event signals, and returns both ends.

Nothing here is a shortcut: every step is the real protocol, driven by the deterministic
scheduler (:meth:`Loopback.run`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from winhv.drivers.hv.hypervisor import Hypervisor
from winhv.drivers.kernel import VMBUS_VECTOR, Kernel, PageAllocator
from winhv.drivers.vid import Vid, VidPartition
from winhv.drivers.vmbus._channel import Channel
from winhv.drivers.vmbus._guest import DeviceState, GuestDevice, VmbusClient
from winhv.drivers.vmbus._host import VmbusHost
from winhv.drivers.vmbus._server import HostDevice, VmbusServer
from winhv.drivers.vmbus._versions import CLIENT_VERSIONS, VmbusVersion
from winhv.drivers.vmbus.device import Vsc, Vsp

__all__ = ["ROOT_FIRST_PAGE", "Loopback", "boot_host", "boot_vm", "connect_pair"]

#: Root pages below this stay unused (page 0 is never handed out).
ROOT_FIRST_PAGE = 16
#: Guest pages below this stay unused by the guest's allocator.
GUEST_FIRST_PAGE = 16


@dataclass(eq=False)
class Loopback:
    """The machine :func:`boot_vm` built. ``run()`` steps it until nothing is pending."""

    hv: Hypervisor
    root: Kernel
    host: VmbusHost
    vid: Vid
    partition: VidPartition
    guest: Kernel
    server: VmbusServer
    client: VmbusClient

    def run(self) -> int:
        """Deliver every pending interrupt and due timer; returns the steps taken.

        Virtual time does not move; see :meth:`settle` for work that waits on timers (message
        retries after INSUFFICIENT_BUFFERS, IC periods).
        """
        return self.hv.scheduler.run_until_idle()

    def settle(self, max_ns: int = 10_000_000) -> int:
        """Run, advancing virtual time through timers, until nothing is due within
        ``max_ns`` of the last activity."""
        scheduler = self.hv.scheduler
        steps = scheduler.run_until_idle()
        while True:
            deadline = scheduler.next_deadline()
            if deadline is None or deadline > scheduler.now + max_ns:
                return steps
            steps += scheduler.run_until(deadline)

    def offer(self, name: str, vsp: Vsp, interface_id: uuid.UUID) -> HostDevice:
        """Offer a device (hot-add when the guest is connected) and run until it settles."""
        device = self.server.add_device(name, vsp, interface_id)
        self.settle()
        return device

    def guest_device(self, relid: int) -> GuestDevice:
        return self.client.devices[relid]


def boot_host(*, root_memory_mb: int = 256, bridge: Any = None) -> tuple[Hypervisor, Kernel,
                                                                          VmbusHost, Vid]:
    """A hypervisor, the root kernel with its SynIC enabled, the VMBus host and VID."""
    hv = Hypervisor(root_memory_mb=root_memory_mb, bridge=bridge)
    root_id = hv.root.partition_id
    root = Kernel(lambda i, o, vp: hv.handle(root_id, input_gpa=i, output_gpa=o, vp_index=vp),
                  PageAllocator(ROOT_FIRST_PAGE, (root_memory_mb << 8) - ROOT_FIRST_PAGE,
                                name="root", zeroed=True),   # fresh anonymous memory
                  name="root", clock=hv.scheduler)
    hv.set_interrupt_handler(root_id, 0, root.interrupt)
    root.enable_synic(VmbusHost.synic_sints(VMBUS_VECTOR))
    return hv, root, VmbusHost(root), Vid(root)


def boot_vm(drivers: Sequence[type[Vsc]] = (), *, name: str = "vm", memory_mb: int = 16,
            bridge: Any = None, host_version: VmbusVersion | None = None,
            guest_versions: Sequence[VmbusVersion] = CLIENT_VERSIONS,
            machine: tuple[Hypervisor, Kernel, VmbusHost, Vid] | None = None,
            connect: bool = True) -> Loopback:
    """Boot (or reuse ``machine``) and start one VM whose guest binds ``drivers``."""
    hv, root, host, vid = machine or boot_host(bridge=bridge)
    part = vid.create_partition(name, memory_mb=memory_mb)
    pid = part.partition_id
    server = VmbusServer(host, pid, root_ram_page=part.root_ram_page,
                         guest_pages=part.memory_pages, name=name, max_version=host_version)
    guest = Kernel(lambda i, o, vp: hv.handle(pid, input_gpa=i, output_gpa=o, vp_index=vp),
                   PageAllocator(GUEST_FIRST_PAGE, part.memory_pages - GUEST_FIRST_PAGE,
                                 name=name, zeroed=True),   # VID hands RAM over zeroed
                   name=name, clock=hv.scheduler)
    hv.set_interrupt_handler(pid, 0, guest.interrupt)
    guest.enable_synic()
    client = VmbusClient(guest, drivers, versions=guest_versions)
    loop = Loopback(hv, root, host, vid, part, guest, server, client)
    if connect:
        client.connect()
        loop.settle()
    return loop


def connect_pair(vsp: Vsp, vsc: type[Vsc], *, interface_id: uuid.UUID | None = None,
                 name: str = "device", **boot: Any) -> tuple[Loopback, Channel, GuestDevice]:
    """Offer ``vsp`` and bind ``vsc`` to it over real rings; returns (machine, host channel,
    guest device). Raises RuntimeError with the reason when the channel did not open."""
    interface = interface_id or getattr(type(vsp), "interface_id", None) or \
        (vsc.interface_ids[0] if vsc.interface_ids else None)
    if interface is None:
        raise ValueError("no interface GUID: pass interface_id or set Vsc.interface_ids")
    loop = boot_vm([vsc], **boot)
    device = loop.offer(name, vsp, interface)
    guest = loop.client.devices.get(device.relid)
    if device.channel is None or guest is None or guest.state != DeviceState.OPEN:
        errors = loop.server.errors + loop.client.errors + \
            ([guest.error] if guest and guest.error else [])
        raise RuntimeError(f"{name}: the channel did not open: {'; '.join(map(str, errors))}")
    return loop, device.channel, guest
