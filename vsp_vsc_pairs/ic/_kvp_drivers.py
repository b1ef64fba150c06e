"""The KVP IC's drivers (fact sheet §5.7): key/value pairs between the host and guest pools.

:class:`KvpVsp` offers :meth:`~KvpVsp.get`, :meth:`~KvpVsp.set`, :meth:`~KvpVsp.delete` and
:meth:`~KvpVsp.enumerate`. Each takes an optional ``callback`` that runs exactly once with the
event that settled the request: the guest's :class:`KvpResult` (``ok``, ``status``, ``value``),
a :class:`KvpEnumeration` for a whole-pool walk, :class:`IcTransactionTimedOut` when the guest
did not answer in time, or :class:`IcRequestAbandoned` when the channel closed or negotiation
failed first. Requests go out one at a time in call order (§5.7).

:class:`KvpVsc` keeps the pools in the Linux KVP daemon's files (``.kvp_pool_0`` ..
``.kvp_pool_4``, byte-compatible, :mod:`~winhv.vsp_vsc_pairs.ic.kvp_pool`) under
``pool_dir``: by default a fresh temporary directory per driver instance, removed when the
device goes away; never ``/var/lib/hyperv`` unless configured. The AUTO pool (2) is served from
``items``, the guest's intrinsic items.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Final

from winhv.plugins.api import ConfigError, ConfigField

from ._drivers import IcVsc, IcVsp, _Waiters
from ._framework import (
    IcEvent,
    IcGuestProtocol,
    IcHostProtocol,
    IcRequestAbandoned,
    IcTransactionTimedOut,
)
from ._icmsg import IC_BY_NAME, IcSpec
from .kvp import (
    KvpEnumeration,
    KvpGuest,
    KvpHost,
    KvpPool,
    KvpResult,
    KvpValue,
    KvpValueType,
)

__all__ = [
    "DEFAULT_AUTO_ITEMS",
    "KVP_CONFIG",
    "KvpCallback",
    "KvpVsc",
    "KvpVsp",
    "KvpWalkCallback",
    "parse_items",
]

#: Receives what settled a GET, SET, DELETE or single-index ENUMERATE.
KvpCallback = Callable[[KvpResult | IcTransactionTimedOut | IcRequestAbandoned], Any]
#: Receives what settled a whole-pool enumeration.
KvpWalkCallback = Callable[[KvpEnumeration | IcRequestAbandoned], Any]

#: The AUTO pool's items when ``items`` is not configured: some of the keys the Linux daemon
#: serves at indices 0-9 (§5.7), ``{vm}`` replaced by the guest kernel's name.
DEFAULT_AUTO_ITEMS: Final = (
    ("FullyQualifiedDomainName", "{vm}"),
    ("IntegrationServicesVersion", "3.1"),
    ("OSName", "winhv guest"),
    ("ProcessorArchitecture", "x86_64"),
)

#: The KVP IC's configuration.
KVP_CONFIG: Final = (
    ConfigField("pool_dir", "path", None,
                "guest side: folder of the pool files (default: a fresh temporary folder)"),
    ConfigField("items", "str", None,
                "guest side: the AUTO pool's items as 'Key=Value;Key=Value' (default: "
                "FullyQualifiedDomainName, IntegrationServicesVersion, OSName, "
                "ProcessorArchitecture; '' for none)"),
    ConfigField("timeout_ms", "int", 5000,
                "how long the host waits for each answer (Linux gives its daemon 5 s)",
                minimum=1, maximum=3_600_000),
)

_SINGLE: Final = "single"
_WALK: Final = "walk"


def parse_items(text: str, *, path: str = "kvp.config.items") -> tuple[tuple[str, str], ...]:
    """``"A=1;B=two"`` -> ``(("A", "1"), ("B", "two"))``; ``""`` -> ``()``.

    Raises :class:`~winhv.plugins.api.ConfigError` for an entry without ``=``, an empty key or
    a repeated key.
    """
    items: list[tuple[str, str]] = []
    for index, entry in enumerate(part for part in text.split(";") if part.strip()):
        key, sep, value = entry.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(path, f"entry {index} {entry!r}", "'Key=Value' entries joined "
                              "by ';'")
        if any(key == k for k, _ in items):
            raise ConfigError(path, f"key {key!r} twice", "each key once")
        items.append((key, value))
    return tuple(items)


class KvpVsp(IcVsp):
    """Root side of the KVP IC; see the module docstring."""

    spec: ClassVar[IcSpec] = IC_BY_NAME["kvp"]
    config_schema = KVP_CONFIG

    def __init__(self, config: Any = None) -> None:
        self._waiters = _Waiters()
        super().__init__(config)

    def _new_protocol(self) -> IcHostProtocol:
        return KvpHost(response_timeout_ns=self.config["timeout_ms"] * 1_000_000)

    @property
    def host(self) -> KvpHost:
        """The current host machine."""
        assert isinstance(self.protocol, KvpHost)
        return self.protocol

    @property
    def waiting(self) -> int:
        """Requests not yet settled."""
        return len(self._waiters)

    def status(self) -> dict[str, Any]:
        """The IC's status plus ``waiting``: requests not yet settled."""
        return {**super().status(), "waiting": self.waiting}

    # -- requests ----------------------------------------------------------------------------

    def get(self, pool: KvpPool | int | str, key: str, callback: KvpCallback | None = None) -> None:
        """Read ``key`` from the guest's ``pool`` (S_CONT if absent)."""
        self._request(_SINGLE, callback, lambda now: self.host.get(pool, key, now))

    def set(self, pool: KvpPool | int | str, key: str, value: KvpValue,
            callback: KvpCallback | None = None, *,
            value_type: KvpValueType | None = None) -> None:
        """Store ``value`` (a string or an integer) under ``key`` in the guest's ``pool``.

        Raises :class:`~winhv.vsp_vsc_pairs.ic.kvp.KvpValueError` at once for a key or value
        the protocol cannot carry (too long, NUL inside, out of range).
        """
        self._request(_SINGLE, callback,
                      lambda now: self.host.set(pool, key, value, now, value_type=value_type))

    def delete(self, pool: KvpPool | int | str, key: str,
               callback: KvpCallback | None = None) -> None:
        """Delete ``key`` from the guest's ``pool`` (S_CONT if absent)."""
        self._request(_SINGLE, callback, lambda now: self.host.delete(pool, key, now))

    def enumerate(self, pool: KvpPool | int | str,
                  callback: KvpWalkCallback | KvpCallback | None = None, *,
                  index: int | None = None) -> None:
        """Without ``index``: walk the whole ``pool`` (the callback gets a
        :class:`KvpEnumeration`). With ``index``: read that one item (a :class:`KvpResult`)."""
        if index is None:
            self._request(_WALK, callback, lambda now: self.host.enumerate_all(pool, now))
        else:
            self._request(_SINGLE, callback,
                          lambda now: self.host.enumerate(pool, index, now))

    def _request(self, kind: str, callback: Callable[[Any], Any] | None,
                 submit: Callable[[int], Any]) -> None:
        if self.close_reason is not None and self.channel is None:
            _settle_now(callback, f"the KVP IC's channel is closed: {self.close_reason}")
            return
        step = submit(self.now())   # KvpValueError before anything is queued
        self._waiters.add(kind, callback)
        self._apply(step)

    # -- settling ----------------------------------------------------------------------------

    def _on_event(self, event: IcEvent) -> None:
        head = self._waiters.head()
        if head is None:
            return
        settles = {_SINGLE: (KvpResult, IcTransactionTimedOut, IcRequestAbandoned),
                   _WALK: (KvpEnumeration, IcRequestAbandoned)}[str(head)]
        if isinstance(event, settles):
            self._waiters.settle_first(event)

    def _closed(self, reason: str) -> None:
        self._waiters.abandon_all(f"the KVP IC's channel closed: {reason}")


def _settle_now(callback: Callable[[Any], Any] | None, reason: str) -> None:
    waiters = _Waiters()
    waiters.add(None, callback)
    waiters.abandon_all(reason)


class KvpVsc(IcVsc):
    """Guest side of the KVP IC: pool files under :attr:`pool_dir`."""

    spec: ClassVar[IcSpec] = IC_BY_NAME["kvp"]
    config_schema = KVP_CONFIG

    def __init__(self, device: Any) -> None:
        super().__init__(device)
        configured = self.settings["pool_dir"]
        #: The folder holding ``.kvp_pool_0`` .. ``.kvp_pool_4``.
        self.pool_dir = Path(configured) if configured is not None else Path(
            tempfile.mkdtemp(prefix="winhv-kvp-"))
        self._cleanup = (weakref.finalize(self, shutil.rmtree, str(self.pool_dir), True)
                         if configured is None else None)
        items = self.settings["items"]
        name = str(getattr(device.kernel, "name", "") or "guest")
        #: The AUTO pool's intrinsic items.
        self.auto_items = (parse_items(items) if items is not None else
                           tuple((k, v.replace("{vm}", name)) for k, v in DEFAULT_AUTO_ITEMS))

    def _new_protocol(self) -> IcGuestProtocol:
        return KvpGuest(self.pool_dir, auto_items=self.auto_items)

    @property
    def guest(self) -> KvpGuest | None:
        """The current guest machine (its ``store`` holds the open pool files)."""
        return self.protocol if isinstance(self.protocol, KvpGuest) else None

    def _release_protocol(self) -> None:
        if isinstance(self.protocol, KvpGuest):
            self.protocol.close()

    def remove(self) -> None:
        """Close the pool files; a temporary ``pool_dir`` is deleted."""
        super().remove()
        if self._cleanup is not None:
            self._cleanup()
