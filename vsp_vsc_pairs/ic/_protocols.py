"""Which host and guest classes implement each row of the IC table."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from ._framework import IcGuestProtocol, IcHostProtocol
from .heartbeat import HeartbeatGuest, HeartbeatHost
from .kvp import KvpGuest, KvpHost
from .shutdown import ShutdownGuest, ShutdownHost
from .timesync import TimesyncGuest, TimesyncHost

__all__ = ["IC_PROTOCOLS"]

#: IC name -> (host class, guest class), for every row of ``IC_TABLE``.
IC_PROTOCOLS: Final[Mapping[str, tuple[type[IcHostProtocol], type[IcGuestProtocol]]]] = (
    MappingProxyType({
        "heartbeat": (HeartbeatHost, HeartbeatGuest),
        "kvp": (KvpHost, KvpGuest),
        "shutdown": (ShutdownHost, ShutdownGuest),
        "timesync": (TimesyncHost, TimesyncGuest),
    }))
