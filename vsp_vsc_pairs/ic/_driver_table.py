"""Which drivers run each row of the IC table, and the plugin descriptions derived from it."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from winhv.plugins.api import IcDescription

from ._drivers import IcVsc, IcVsp
from ._heartbeat_drivers import HeartbeatVsc, HeartbeatVsp
from ._icmsg import IC_TABLE
from ._kvp_drivers import KvpVsc, KvpVsp
from ._shutdown_drivers import ShutdownVsc, ShutdownVsp
from ._timesync_drivers import TimesyncVsc, TimesyncVsp

__all__ = ["IC_DRIVERS", "ic_descriptions"]

#: IC name -> (root-side driver, guest-side driver), for every row of ``IC_TABLE``.
IC_DRIVERS: Final[Mapping[str, tuple[type[IcVsp], type[IcVsc]]]] = MappingProxyType({
    "heartbeat": (HeartbeatVsp, HeartbeatVsc),
    "kvp": (KvpVsp, KvpVsc),
    "shutdown": (ShutdownVsp, ShutdownVsc),
    "timesync": (TimesyncVsp, TimesyncVsc),
})


def ic_descriptions() -> tuple[IcDescription, ...]:
    """One :class:`~winhv.plugins.api.IcDescription` per row of ``IC_TABLE``, in table order:
    GUID, versions, summary from the row; classes and configuration from :data:`IC_DRIVERS`."""
    out = []
    for spec in IC_TABLE:
        vsp, vsc = IC_DRIVERS[spec.name]
        out.append(IcDescription(
            name=spec.name, interface_id=spec.interface_id, host=vsp, guest=vsc,
            versions=spec.versions, framework_versions=spec.framework_versions,
            config=vsp.config_schema, summary=spec.summary))
    return tuple(out)
