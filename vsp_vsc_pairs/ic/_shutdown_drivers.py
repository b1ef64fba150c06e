"""The shutdown IC's drivers (fact sheet §5.5): the host asks, the guest OS decides.

:meth:`ShutdownVsp.request` sends a shutdown, reboot or hibernate request; its ``callback``
runs exactly once with the event that settled it: :class:`ShutdownAnswered` (``accepted`` or
refused, with the guest's status), :class:`ShutdownTimedOut` (no answer within the request's
``timeout_s``), or :class:`IcRequestAbandoned` (the channel closed or negotiation failed
first). Stopping the VM -- Stopping -> Off once the guest powers off, the hard stop after the
timeout -- is the VM manager's job; this driver only carries the question and the answer.

:class:`ShutdownVsc` asks the guest OS: the guest kernel's ``on_shutdown_request(kind,
reason, message)`` (``kind`` is ``"shutdown"``, ``"reboot"`` or ``"hibernate"``) if it has one
-- ``False`` refuses, anything else accepts, an exception refuses -- else it accepts.
Hibernate is refused as Linux does unless ``hibernate`` is configured.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar, Final

from winhv.plugins.api import ConfigField

from ._drivers import IcVsc, IcVsp, _Waiters
from ._framework import IcEvent, IcGuestProtocol, IcHostProtocol, IcRequestAbandoned
from ._icmsg import IC_BY_NAME, IcSpec
from .shutdown import (
    SHTDN_REASON_FLAG_PLANNED,
    ShutdownAnswered,
    ShutdownGuest,
    ShutdownHost,
    ShutdownKind,
    ShutdownRequest,
    ShutdownTimedOut,
)

__all__ = ["SHUTDOWN_CONFIG", "ShutdownCallback", "ShutdownVsc", "ShutdownVsp"]

_log = logging.getLogger("winhv.ic")

#: Receives what settled a request (see the module docstring).
ShutdownCallback = Callable[[ShutdownAnswered | ShutdownTimedOut | IcRequestAbandoned], Any]

#: The shutdown IC's configuration.
SHUTDOWN_CONFIG: Final = (
    ConfigField("timeout_s", "int", 60,
                "default timeout of a request: sent to the guest (timeout_seconds, §5.5) and "
                "how long the host waits for the answer", minimum=1, maximum=0xFFFFFFFF),
    ConfigField("hibernate", "bool", False,
                "guest side: accept hibernate requests (Linux refuses them by default)"),
)


class _ShutdownHost(ShutdownHost):
    """:class:`ShutdownHost` whose every request waits for its own ``timeout_s``."""

    def submit(self, request: ShutdownRequest, now: int) -> Any:
        return self._submit(request.pack(), request, now,
                            timeout_ns=max(1, request.timeout_s) * 1_000_000_000)


class ShutdownVsp(IcVsp):
    """Root side of the shutdown IC; see the module docstring."""

    spec: ClassVar[IcSpec] = IC_BY_NAME["shutdown"]
    config_schema = SHUTDOWN_CONFIG

    def __init__(self, config: Any = None) -> None:
        self._waiters = _Waiters()
        super().__init__(config)

    def _new_protocol(self) -> IcHostProtocol:
        return _ShutdownHost()

    @property
    def waiting(self) -> int:
        """Requests not yet settled."""
        return len(self._waiters)

    def status(self) -> dict[str, Any]:
        """The IC's status plus ``waiting``: requests not yet settled."""
        return {**super().status(), "waiting": self.waiting}

    def request(self, kind: ShutdownKind | str = "shutdown", *,
                reason: int = SHTDN_REASON_FLAG_PLANNED, timeout_s: int | None = None,
                force: bool = False, message: str = "",
                callback: ShutdownCallback | None = None) -> ShutdownRequest:
        """Ask the guest to shut down, reboot or hibernate; returns the request as sent.

        ``timeout_s`` (default: the configured one) goes to the guest and bounds the wait for
        its answer. Before the channel is open the request waits and goes out after version
        negotiation. If the IC already failed (the channel closed or no common version),
        ``callback`` gets :class:`IcRequestAbandoned` at once. Raises ``ValueError`` for a
        kind, number or message the protocol cannot carry.
        """
        seconds = self.config["timeout_s"] if timeout_s is None else timeout_s
        request = ShutdownRequest(ShutdownKind(kind), reason, seconds, force, message)
        request.pack()   # ValueError now, not when it is sent
        self._waiters.add(request, callback)
        if self.close_reason is not None and self.channel is None:
            self._waiters.settle(request, IcRequestAbandoned(
                request, f"the shutdown IC's channel is closed: {self.close_reason}"))
            return request
        host = self.protocol
        assert isinstance(host, _ShutdownHost)
        self._apply(host.submit(request, self.now()))
        return request

    def _on_event(self, event: IcEvent) -> None:
        if isinstance(event, ShutdownAnswered | ShutdownTimedOut | IcRequestAbandoned):
            self._waiters.settle(event.request, event)

    def _closed(self, reason: str) -> None:
        self._waiters.abandon_all(f"the shutdown IC's channel closed: {reason}")


class ShutdownVsc(IcVsc):
    """Guest side of the shutdown IC; asks the guest kernel's ``on_shutdown_request``."""

    spec: ClassVar[IcSpec] = IC_BY_NAME["shutdown"]
    config_schema = SHUTDOWN_CONFIG

    def _new_protocol(self) -> IcGuestProtocol:
        return ShutdownGuest(self._decide, hibernate_supported=self.settings["hibernate"])

    def _decide(self, request: ShutdownRequest) -> bool:
        decide = getattr(self.device.kernel, "on_shutdown_request", None)
        if decide is None:
            return True
        try:
            return decide(request.kind.value, request.reason, request.message) is not False
        except Exception:  # the guest OS's fault: refuse rather than break the channel
            _log.exception("%s: on_shutdown_request raised; refusing %r",
                           self.device.kernel, request)
            return False
