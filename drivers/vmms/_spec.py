"""What VMMS needs to build a VM: plain descriptions, free of plugin machinery.

The plugin layer turns a driver set into these (resolving pair names, validating
configuration); the worker only instantiates classes.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from winhv.drivers.vmbus.device import Vsc, Vsp

__all__ = ["DeviceSpec", "VmSpec"]


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One device (or IC) instance: a VSP class for the host, a VSC class for the guest."""

    name: str
    kind: str                      # "device" or "ic"
    interface_id: uuid.UUID
    vsp: type[Vsp]
    vsc: type[Vsc] | None
    config: Mapping[str, Any] = field(default_factory=dict)
    #: The pair or IC name in the registry (for reports).
    type_name: str = ""


@dataclass(frozen=True, slots=True)
class VmSpec:
    """A VM: memory, processors, devices and ICs, and guest driver overrides."""

    name: str
    memory_mb: int = 256
    processors: int = 1
    devices: tuple[DeviceSpec, ...] = ()
    #: interface GUID -> VSC class the guest binds instead (``None``: bind nothing).
    overrides: Mapping[uuid.UUID, type[Vsc] | None] = field(default_factory=dict)
