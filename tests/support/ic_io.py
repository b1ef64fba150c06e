"""IC driver test support: boot a VM whose guest binds IC drivers, offer IC VSPs over real
channels, and run virtual time.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from winhv.drivers.vmbus._guest import DeviceState, GuestDevice
from winhv.drivers.vmbus.device import Vsc, Vsp
from winhv.drivers.vmbus.loopback import Loopback, boot_vm


def boot_ic_vm(drivers: Sequence[type[Vsc]], **boot: Any) -> Loopback:
    """A booted VM whose guest binds ``drivers``."""
    return boot_vm(list(drivers), **boot)


def offer(loop: Loopback, name: str, vsp: Vsp,
          interface_id: uuid.UUID | None = None) -> tuple[Any, GuestDevice | None]:
    """Offer ``vsp``; returns (host device, guest device or ``None`` if none was made)."""
    device = loop.offer(name, vsp, interface_id or type(vsp).interface_id)
    return device, loop.client.devices.get(device.relid)


def connect_ic(vsp: Vsp, vsc: type[Vsc], *, name: str = "ic",
               **boot: Any) -> tuple[Loopback, Any, GuestDevice]:
    """Boot a VM binding ``vsc``, offer ``vsp``; returns (machine, host device, guest device)
    and checks the channel opened."""
    loop = boot_ic_vm([vsc], **boot)
    device, guest = offer(loop, name, vsp)
    assert guest is not None, (loop.server.errors, loop.client.errors)
    assert guest.state == DeviceState.OPEN, (loop.server.errors, loop.client.errors, guest.error)
    return loop, device, guest


def run_for(loop: Loopback, duration_ns: int) -> None:
    """Advance virtual time by ``duration_ns``, delivering everything due on the way."""
    scheduler = loop.hv.scheduler
    scheduler.run_until(scheduler.now + duration_ns)


def now(loop: Loopback) -> int:
    return int(loop.hv.scheduler.now)
