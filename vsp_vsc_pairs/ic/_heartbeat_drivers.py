"""The heartbeat IC's drivers (fact sheet §5.4): the host watches the guest's health.

:class:`HeartbeatVsp` sends a heartbeat every ``period_ms`` and exposes :attr:`~HeartbeatVsp.
health` (NO_CONTACT, OK, LOST) and the last sequence number the guest answered with; the VM
worker reports these through the management API, ``winhv run`` and ``winhv bus``. A channel
that closes after the guest answered at least once makes the guest LOST at once: no more
answers can come. :class:`HeartbeatVsc` answers with the sequence number plus one.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from winhv.plugins.api import ConfigField

from ._drivers import IcVsc, IcVsp
from ._framework import IcEvent, IcGuestProtocol, IcHostProtocol
from ._icmsg import IC_BY_NAME, IcSpec
from .heartbeat import (
    DEFAULT_HEARTBEAT_PERIOD_NS,
    HeartbeatGuest,
    HeartbeatHealth,
    HeartbeatHealthChanged,
    HeartbeatHost,
)

__all__ = ["HEARTBEAT_CONFIG", "HeartbeatVsc", "HeartbeatVsp"]

#: The heartbeat IC's configuration (driver-set ``[[vm.ic]] config``).
HEARTBEAT_CONFIG: Final = (
    ConfigField("period_ms", "int", DEFAULT_HEARTBEAT_PERIOD_NS // 1_000_000,
                "time between heartbeat requests, also each request's timeout (Linux: about "
                "2 s, §5.4)", minimum=1, maximum=3_600_000),
    ConfigField("lost_after", "int", 3,
                "periods without an answer after which an answering guest is LOST",
                minimum=1, maximum=1000),
)


class HeartbeatVsp(IcVsp):
    """Root side of the heartbeat IC. Read :attr:`health` and :attr:`last_sequence`."""

    spec: ClassVar[IcSpec] = IC_BY_NAME["heartbeat"]
    config_schema = HEARTBEAT_CONFIG

    def __init__(self, config: Any = None) -> None:
        self._lost_by_close = False
        super().__init__(config)

    def _new_protocol(self) -> IcHostProtocol:
        return HeartbeatHost(period_ns=self.config["period_ms"] * 1_000_000,
                             lost_after=self.config["lost_after"])

    @property
    def host(self) -> HeartbeatHost:
        """The current host machine."""
        assert isinstance(self.protocol, HeartbeatHost)
        return self.protocol

    @property
    def health(self) -> HeartbeatHealth:
        """NO_CONTACT until the first answer, OK while answers come, LOST after
        ``lost_after`` silent periods or once the channel closed after contact."""
        if self._lost_by_close:
            return HeartbeatHealth.LOST
        return self.host.health

    @property
    def last_sequence(self) -> int | None:
        """The sequence number of the guest's last valid answer (request's + 1)."""
        return self.host.last_sequence

    @property
    def last_answer_at(self) -> int | None:
        """Virtual time (ns) of the guest's last valid answer."""
        return self.host.last_answer_at

    def status(self) -> dict[str, Any]:
        """The IC's status plus ``health`` (ok, no-contact, lost), ``last_sequence`` and
        ``last_answer_at`` (virtual ns) of the guest's last valid answer."""
        return {**super().status(), "health": self.health.value,
                "last_sequence": self.last_sequence, "last_answer_at": self.last_answer_at}

    def on_open(self, channel: Any) -> None:
        self._lost_by_close = False
        super().on_open(channel)

    def _closed(self, reason: str) -> None:
        old = self.host.health
        if old is HeartbeatHealth.OK:
            self._lost_by_close = True
            self._record((HeartbeatHealthChanged(old, HeartbeatHealth.LOST, self.now()),))

    def _on_event(self, event: IcEvent) -> None:
        if isinstance(event, HeartbeatHealthChanged) and event.new is HeartbeatHealth.OK:
            self._lost_by_close = False


class HeartbeatVsc(IcVsc):
    """Guest side of the heartbeat IC: answers every heartbeat (``answered`` counts them)."""

    spec: ClassVar[IcSpec] = IC_BY_NAME["heartbeat"]
    config_schema = HEARTBEAT_CONFIG

    def _new_protocol(self) -> IcGuestProtocol:
        return HeartbeatGuest()

    @property
    def answered(self) -> int:
        """Heartbeats answered on the current channel."""
        protocol = self.protocol
        return protocol.answered if isinstance(protocol, HeartbeatGuest) else 0
