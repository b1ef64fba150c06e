"""The public namespace for plugin authors and tools built on winhv's plugin machinery.

Everything a third-party device package needs is here: the hook marker, the description types
and their configuration schema, the driver-model base classes (``Vsp`` and ``Vsc`` for a device
pair and for each half of an IC, ``VidService`` for a VID service), and the registry, discovery and
driver-set entry points that tools and tests use. The modules behind these names are private;
import from here (``from winhv.plugins.api import hookimpl, PairDescription, Vsp, Vsc``).

Hooks are documented in ``docs/hooks.md`` and in :mod:`winhv.plugins._hookspecs`.
"""

from __future__ import annotations

from winhv.drivers.vid import VidService
from winhv.drivers.vmbus.device import OfferSpec, Vsc, Vsp

from ._descriptions import (
    ConfigError,
    ConfigField,
    Description,
    DescriptionError,
    IcDescription,
    PairDescription,
    VidServiceDescription,
    validate_config,
)
from ._discovery import DiscoveryResult, HookError, LoadedPlugin, PluginFailure, discover
from ._driverset import (
    DeviceConfig,
    DriverOverride,
    DriverSet,
    DriverSetError,
    HostConfig,
    IcConfig,
    ServiceConfig,
    VmConfig,
    load_default_driver_set,
    load_driver_set,
    parse_driver_set,
)
from ._hookspecs import PROJECT_NAME, hookimpl, hookspec
from ._registry import ConflictError, Entry, Registry, Source, UnknownNameError

__all__ = [
    "PROJECT_NAME",
    "ConfigError",
    "ConfigField",
    "ConflictError",
    "Description",
    "DescriptionError",
    "DeviceConfig",
    "DiscoveryResult",
    "DriverOverride",
    "DriverSet",
    "DriverSetError",
    "Entry",
    "HookError",
    "HostConfig",
    "IcConfig",
    "IcDescription",
    "LoadedPlugin",
    "OfferSpec",
    "PairDescription",
    "PluginFailure",
    "Registry",
    "ServiceConfig",
    "Source",
    "UnknownNameError",
    "VidService",
    "VidServiceDescription",
    "VmConfig",
    "Vsc",
    "Vsp",
    "discover",
    "hookimpl",
    "hookspec",
    "load_default_driver_set",
    "load_driver_set",
    "parse_driver_set",
    "validate_config",
]
