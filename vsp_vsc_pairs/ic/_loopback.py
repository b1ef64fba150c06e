"""A host machine and a guest machine wired back to back in memory, on one virtual clock.

:class:`IcLoopback` is the fake channel for testing an IC (ours or a third party's) without
VMBus: payloads a machine returns are delivered to the other after ``latency_ns``, the host is
ticked at its :meth:`~IcHostProtocol.next_deadline`, and every event is recorded per side.
Filters can drop or rewrite payloads in flight to play a hung or hostile peer. Everything runs in
virtual time; nothing sleeps.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Final, TypeAlias

from ._framework import IcEvent, IcGuestProtocol, IcHostProtocol, IcStep

__all__ = ["IcLoopback", "PayloadFilter"]

#: Rewrites a payload in flight; return ``None`` to drop it.
PayloadFilter: TypeAlias = Callable[[bytes], bytes | None]
_MAX_STEPS: Final = 1_000_000


class IcLoopback:
    """Drive ``host`` and ``guest`` against each other.

    ``to_guest``/``to_host`` filter payloads in each direction. ``host_events`` and
    ``guest_events`` collect every event in order; ``sent_to_guest``/``sent_to_host`` every
    payload as sent (before filtering).
    """

    def __init__(
        self,
        host: IcHostProtocol,
        guest: IcGuestProtocol,
        *,
        latency_ns: int = 0,
        now: int = 0,
        to_guest: PayloadFilter | None = None,
        to_host: PayloadFilter | None = None,
    ) -> None:
        self.host = host
        self.guest = guest
        self.latency_ns = latency_ns
        self.now = now
        self.to_guest = to_guest
        self.to_host = to_host
        self.host_events: list[IcEvent] = []
        self.guest_events: list[IcEvent] = []
        self.sent_to_guest: list[bytes] = []
        self.sent_to_host: list[bytes] = []
        self._wire: list[tuple[int, int, bool, bytes]] = []
        self._seq = itertools.count()

    def start(self) -> None:
        """Start the host (it sends its negotiation request) and deliver until quiet."""
        self.host_step(self.host.start(self.now))
        self.settle()

    def host_step(self, step: IcStep) -> None:
        """Route what a host method returned (``kvp.set(...)``, say) onto the wire."""
        self.host_events.extend(step.events)
        for payload in step.send:
            self.sent_to_guest.append(payload)
            self._put(payload, to_guest=True)

    def settle(self) -> None:
        """Deliver everything in flight, advancing the clock only as far as deliveries need
        (host timers due by then fire too)."""
        while self._wire:
            self.run_until(self._wire[0][0])

    def run_for(self, duration_ns: int) -> None:
        """Run the pair for ``duration_ns`` of virtual time."""
        self.run_until(self.now + duration_ns)

    def run_until(self, end: int) -> None:
        """Deliver payloads and fire host timers in time order up to ``end`` (inclusive)."""
        for _ in range(_MAX_STEPS):
            wire_at = self._wire[0][0] if self._wire else None
            tick_at = self.host.next_deadline()
            due = [t for t in (wire_at, tick_at) if t is not None and t <= end]
            if not due:
                self.now = max(self.now, end)
                return
            self.now = max(self.now, min(due))
            if wire_at is not None and wire_at <= self.now:
                _, _, to_guest, payload = heapq.heappop(self._wire)
                self._deliver(payload, to_guest)
            else:
                self.host_step(self.host.tick(self.now))
        raise RuntimeError(f"loopback did not settle within {_MAX_STEPS} steps")

    def _put(self, payload: bytes, *, to_guest: bool) -> None:
        heapq.heappush(self._wire, (self.now + self.latency_ns, next(self._seq), to_guest,
                                    payload))

    def _deliver(self, payload: bytes, to_guest: bool) -> None:
        if to_guest:
            filtered = self.to_guest(payload) if self.to_guest else payload
            if filtered is None:
                return
            step = self.guest.receive(filtered, self.now)
            self.guest_events.extend(step.events)
            for answer in step.send:
                self.sent_to_host.append(answer)
                self._put(answer, to_guest=False)
        else:
            filtered = self.to_host(payload) if self.to_host else payload
            if filtered is None:
                return
            self.host_step(self.host.receive(filtered, self.now))
