"""The driver model: the base classes of the two halves of a synthetic device.

A *device pair* is a VSP (virtualization service provider) that runs in the root partition's VM
worker, and a VSC (virtualization service client) that runs inside the child partition. They
talk only over one VMBus channel (and its sub-channels): the VSP never sees the guest's objects
and the VSC never sees the host's. Both sides are plain Python classes; the framework calls them.

Lifecycle of a VSP (one instance per device instance in a VM):
    ``__init__(config)`` -> ``offer()`` read once -> per open channel ``on_open(channel)``,
    any number of ``on_packet(channel, packet)``, then ``on_close(channel)`` -> ``stop()``.

Lifecycle of a VSC (one instance per matched offer):
    ``__init__(device)`` -> ``probe()`` (raise to refuse the device) -> the framework opens the
    channel with ``ring_size`` bytes each way -> ``on_open(channel)`` -> ``on_packet`` ... ->
    ``remove()`` on rescind, unbind or VM stop.

Any exception a driver raises from these methods is caught by the framework at the driver
boundary: the driver is unbound, its channel closed, the error recorded with the driver's name,
and the VM and its other devices go on.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = ["DeviceContext", "OfferSpec", "Vsc", "Vsp"]


@dataclass(frozen=True, slots=True)
class DeviceContext:
    """What the framework gives a VSP about where it runs (set before ``offer()``).

    Time is the machine's virtual clock (nanoseconds); timers run on the deterministic
    scheduler, so a VSP never reads the wall clock.
    """

    #: The VM this device instance belongs to, and the device's name in the driver set.
    vm_name: str
    device_name: str
    #: ``now()`` -> virtual time in ns; ``call_later(delay_ns, callback)`` -> a cancellable timer.
    now: Any
    call_later: Any
    #: ``guest_view(gpa, size)`` -> zero-copy view of the guest's RAM (for GPA-direct data).
    guest_view: Any = None
    #: Free-form services the host offers (e.g. the VM's management hooks), by name.
    services: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OfferSpec:
    """What a VSP asks the VMBus server to put into its channel offer (fact sheet §3.3)."""

    #: 120 bytes at most; device-specific data the guest sees in the offer.
    user_defined: bytes = b""
    #: Named-pipe mode (ICs, hv_sock): offer flag 0x10 and pipe_mode in the user-defined area.
    pipe_mode: bool = False
    #: MMIO space the device wants, in MiB (``mmio_megabytes``).
    mmio_megabytes: int = 0
    #: Number of sub-channels the device may later offer (0 = none).
    max_sub_channels: int = 0
    #: Instance GUID; ``None`` lets the host derive a stable one from the VM and device name.
    instance_id: uuid.UUID | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


class Vsp:
    """Root-side half of a device pair. Subclass it and override the ``on_*`` methods."""

    #: Interface type GUID this VSP offers (the pair's ``interface_id``).
    interface_id: ClassVar[uuid.UUID]

    #: Set by the framework before ``offer()``; ``None`` for a VSP not (yet) in a VM.
    context: DeviceContext | None = None

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)

    def offer(self) -> OfferSpec:
        """Describe the channel offer. Called once, before the guest connects."""
        return OfferSpec()

    def on_open(self, channel: Any) -> None:
        """The guest opened ``channel``; packets may flow from now on."""

    def on_packet(self, channel: Any, packet: Any) -> None:
        """A packet arrived from the guest on ``channel``."""

    def on_close(self, channel: Any) -> None:
        """The channel closed (guest close, rescind, VM stop or a fault)."""

    def stop(self) -> None:
        """The VM is stopping; release backing resources (files, buffers)."""


class Vsc:
    """Child-side half of a device pair. Subclass it and override the ``on_*`` methods."""

    #: The interface type GUIDs this driver binds to (its ID table, as in Linux drivers).
    interface_ids: ClassVar[tuple[uuid.UUID, ...]] = ()
    #: Bytes of ring buffer each way, a multiple of 4096 including the 4 KiB control page.
    ring_size: ClassVar[int] = 4 * 4096

    def __init__(self, device: Any) -> None:
        self.device = device

    def probe(self) -> None:
        """Accept the device (return) or refuse it (raise). Called before the channel opens."""

    def on_open(self, channel: Any) -> None:
        """The channel is open; the driver may start its protocol."""

    def on_packet(self, channel: Any, packet: Any) -> None:
        """A packet arrived from the host on ``channel``."""

    def remove(self) -> None:
        """The device is going away (rescind, unbind, VM stop). Stop using the channel."""
