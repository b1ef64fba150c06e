"""The Integration Components as VMBus channel drivers: one VSP (host side) and one VSC (guest
side) per IC, over pipe-mode channels (fact sheet §4.6, §5), registered by the built-in plugin
through ``winhv_integration_components()``.

The VM worker and management tools use the host sides: :attr:`HeartbeatVsp.health`,
:meth:`ShutdownVsp.request`, :meth:`KvpVsp.set`/``get``/``delete``/``enumerate``,
:meth:`TimesyncVsp.sync`. See ``docs/ics.md``.
"""

from __future__ import annotations

from ._driver_table import IC_DRIVERS, ic_descriptions
from ._drivers import EVENT_HISTORY, IcObserver, IcVsc, IcVsp
from ._heartbeat_drivers import HEARTBEAT_CONFIG, HeartbeatVsc, HeartbeatVsp
from ._kvp_drivers import (
    DEFAULT_AUTO_ITEMS,
    KVP_CONFIG,
    KvpCallback,
    KvpVsc,
    KvpVsp,
    KvpWalkCallback,
    parse_items,
)
from ._shutdown_drivers import SHUTDOWN_CONFIG, ShutdownCallback, ShutdownVsc, ShutdownVsp
from ._timesync_drivers import TIMESYNC_CONFIG, TimesyncVsc, TimesyncVsp, reference_time

__all__ = [
    "DEFAULT_AUTO_ITEMS",
    "EVENT_HISTORY",
    "HEARTBEAT_CONFIG",
    "IC_DRIVERS",
    "KVP_CONFIG",
    "SHUTDOWN_CONFIG",
    "TIMESYNC_CONFIG",
    "HeartbeatVsc",
    "HeartbeatVsp",
    "IcObserver",
    "IcVsc",
    "IcVsp",
    "KvpCallback",
    "KvpVsc",
    "KvpVsp",
    "KvpWalkCallback",
    "ShutdownCallback",
    "ShutdownVsc",
    "ShutdownVsp",
    "TimesyncVsc",
    "TimesyncVsp",
    "ic_descriptions",
    "parse_items",
    "reference_time",
]
