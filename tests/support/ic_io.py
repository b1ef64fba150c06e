"""IC driver test support: boot a VM whose guest binds IC drivers, offer IC VSPs over real
channels, and run virtual time.

``KERNEL_FIRST_CHANNEL_WORKAROUND``: the guest kernel's compiled SynIC dispatch
(``drivers/kernel/_synic.pyx``) skips the SIEF flags of a SINT until some event handler was
registered on it, so a flag set before the VM's *first* channel opened is never cleared, and
every later host signal on it is lost (an event interrupts only on 0 -> 1, fact sheet §2.5).
An IC host sends its negotiation the moment the guest opens the channel, which hits this for
the first channel of a VM. Until the kernel takes (and drops) flags without a handler,
:func:`boot_ic_vm` registers a no-op handler on SINT 2 flag 0 (no channel uses relid 0) so the
table exists. ``tests/ic/test_drivers.py::test_first_channel_of_a_vm_hears_the_host`` shows
the bug without the workaround (strict xfail: it fails loudly once the kernel is fixed).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from winhv.drivers.vmbus._guest import DeviceState, GuestDevice
from winhv.drivers.vmbus.device import Vsc, Vsp
from winhv.drivers.vmbus.loopback import Loopback, boot_vm

#: See the module docstring.
KERNEL_FIRST_CHANNEL_WORKAROUND = True
VMBUS_SINT = 2


def boot_ic_vm(drivers: Sequence[type[Vsc]], *,
               workaround: bool = KERNEL_FIRST_CHANNEL_WORKAROUND,
               **boot: Any) -> Loopback:
    """A booted VM whose guest binds ``drivers``."""
    loop = boot_vm(list(drivers), **boot)
    if workaround:
        loop.guest.on_event(VMBUS_SINT, 0, lambda: None)
    return loop


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
