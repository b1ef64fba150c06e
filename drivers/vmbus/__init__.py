"""VMBus: ring buffers, GPADLs, the channel-management protocol over SynIC messages, the root-side
server that offers channels and the child-side bus enumerator (Hyper-V's ``vmbus.sys`` and its
root-side twin ``vmbusr.sys``).

This namespace holds the I/O layer and the driver model; the sub-namespaces hold the rest:

* :mod:`winhv.drivers.vmbus.ring` — the ring buffer (compiled);
* :mod:`winhv.drivers.vmbus.protocol` — the channel-management messages and the sans-IO
  server/client state machines;
* :mod:`winhv.drivers.vmbus.device` — the VSP/VSC base classes;
* :mod:`winhv.drivers.vmbus.loopback` — a whole machine in one call, for tests and benchmarks.
"""

from __future__ import annotations

from winhv.drivers.vmbus._channel import Channel, ChannelClosedError, ChannelError
from winhv.drivers.vmbus._guest import DeviceState, GuestDevice, VmbusClient
from winhv.drivers.vmbus._host import VmbusHost
from winhv.drivers.vmbus._server import HostDevice, VmbusServer
from winhv.drivers.vmbus.device import DeviceContext, OfferSpec, Vsc, Vsp

__all__ = [
    "Channel",
    "ChannelClosedError",
    "ChannelError",
    "DeviceContext",
    "DeviceState",
    "GuestDevice",
    "HostDevice",
    "OfferSpec",
    "VmbusClient",
    "VmbusHost",
    "VmbusServer",
    "Vsc",
    "Vsp",
]
