"""Fault rules: seeded, counted decisions about which event a fault acts on.

A :class:`Fault` is armed on a :class:`~winhv.plugins.testing.MockHost` with a predicate that
selects the events it may act on (a control message of some type and direction, a channel
signal, a driver callback, ...). Each matching event is *seen*; the first ``skip`` seen events
pass untouched, then the fault acts on at most ``count`` of them (``None``: on every one). With
``probability`` below 1 each candidate is decided by the mock's seeded ``random.Random``, so a
failing test replays exactly with the same seed. Only probabilistic faults draw from that
generator: arming a deterministic fault never shifts the random stream of the others.

:class:`Transport` applies the four transport actions to a stream of sends (control messages
of one VM in one direction, or channel signals of one VM in one direction):

* ``drop``: the send never happens (the sender believes it did, as with a lost interrupt);
* ``delay``: the send happens ``delay_ns`` of virtual time later, on the scheduler;
* ``duplicate``: the send happens twice, back to back;
* ``reorder``: the send is held and happens right after the next send of the same stream
  (or after ``delay_ns`` if no other send comes), so the two arrive swapped.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ACTIONS", "Fault", "InjectedFault", "Transport"]

#: The transport actions a message or signal fault can take.
ACTIONS = ("drop", "delay", "duplicate", "reorder")
_PAST = {"drop": "dropped", "delay": "delayed", "duplicate": "duplicated",
         "reorder": "reordered"}


class InjectedFault(RuntimeError):
    """The exception a crash fault raises inside a driver callback (unless told another)."""

    __module__ = "winhv.plugins.testing"  # its public home, shown in tracebacks


@dataclass(eq=False)
class Fault:
    """One armed fault. ``fired`` counts the events it acted on, ``seen`` the ones it matched.

    Call :meth:`cancel` to disarm it; an exhausted fault (``count`` reached) disarms itself.
    """

    #: ``drop``/``delay``/``duplicate``/``reorder``, ``rescind``, ``crash``, ...
    action: str
    #: What it was armed on, for the trace and for messages (``"message OPENCHANNEL to_host"``).
    description: str
    matches: Callable[[Any], bool] = field(repr=False)
    count: int | None = 1
    skip: int = 0
    probability: float = 1.0
    delay_ns: int = 0
    fired: int = 0
    seen: int = 0
    active: bool = True

    def __post_init__(self) -> None:
        if self.count is not None and self.count < 1:
            raise ValueError(f"count: found {self.count}, expected an integer >= 1 or None")
        if self.skip < 0:
            raise ValueError(f"skip: found {self.skip}, expected an integer >= 0")
        if not 0.0 < self.probability <= 1.0:
            raise ValueError(f"probability: found {self.probability}, expected 0 < p <= 1")
        if self.delay_ns < 0:
            raise ValueError(f"delay_ns: found {self.delay_ns}, expected >= 0")

    def cancel(self) -> None:
        """Disarm the fault (idempotent)."""
        self.active = False

    def decide(self, event: Any, rng: random.Random) -> bool:
        """Whether the fault acts on ``event`` (updates ``seen``/``fired``)."""
        if not self.active or not self.matches(event):
            return False
        self.seen += 1
        if self.seen <= self.skip:
            return False
        if self.probability < 1.0 and rng.random() >= self.probability:
            return False
        self.fired += 1
        if self.count is not None and self.fired >= self.count:
            self.active = False
        return True

    def __str__(self) -> str:
        state = "armed" if self.active else "spent"
        return f"{self.action} {self.description} ({state}, fired {self.fired}x)"


Send = Callable[[], Any]
Later = Callable[[int, Send], Any]


class Transport:
    """Applies transport faults to sends, stream by stream (see the module docstring)."""

    def __init__(self, rng: random.Random, call_later: Later) -> None:
        self._rng = rng
        self._call_later = call_later
        self.faults: list[Fault] = []
        self._held: dict[Any, list[Send]] = {}

    def arm(self, fault: Fault) -> Fault:
        if fault.action not in ACTIONS:
            raise ValueError(f"action: found {fault.action!r}, expected one of {ACTIONS}")
        self.faults.append(fault)
        return fault

    def decide(self, event: Any) -> Fault | None:
        """The first armed fault (in arming order) that acts on ``event``, if any."""
        for fault in self.faults:
            if fault.decide(event, self._rng):
                return fault
        return None

    @staticmethod
    def past(fault: Fault | None) -> str | None:
        """``"dropped"`` for a drop, ... (the ``fault`` field of a record)."""
        return _PAST[fault.action] if fault is not None else None

    def send(self, stream: Any, fault: Fault | None, send: Send) -> None:
        """Do ``send`` as ``fault`` says (``None``: at once), then release what ``stream``
        held back for a reorder."""
        if fault is None:
            send()
        elif fault.action == "drop":
            return
        elif fault.action == "delay":
            self._call_later(fault.delay_ns, send)
            return
        elif fault.action == "duplicate":
            send()
            send()
        else:  # reorder: hold it until the next send of this stream (or a timeout)
            held = self._held.setdefault(stream, [])
            held.append(send)
            self._call_later(fault.delay_ns or 1_000_000,
                             lambda: self._release_one(stream, send))
            return
        self.release(stream)

    def release(self, stream: Any) -> None:
        """Do every send ``stream`` holds back, in order."""
        held = self._held.pop(stream, [])
        for send in held:
            send()

    def _release_one(self, stream: Any, send: Send) -> None:
        held = self._held.get(stream)
        if held and send in held:
            held.remove(send)
            send()
