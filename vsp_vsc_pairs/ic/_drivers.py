"""The Integration Components as VMBus channel drivers: the two bases every IC driver uses.

The sans-IO machines of :mod:`winhv.vsp_vsc_pairs.ic` decide what to send; the classes here
move their payloads over a real pipe-mode channel (fact sheet §4.6, §5.1):

* :class:`IcVsp` (root side) offers the IC's interface and instance GUIDs from
  :data:`~winhv.vsp_vsc_pairs.ic.IC_TABLE` with ``pipe_mode=True``, starts version
  negotiation when the guest opens the channel, feeds every in-band payload to its
  :class:`~winhv.vsp_vsc_pairs.ic.IcHostProtocol`, sends what the machine returns as in-band
  packets with transaction id 0 and no completion (OpenVMM's host ICs, §4.6, §5.1), and keeps
  one virtual-time timer armed at the machine's :meth:`~IcHostProtocol.next_deadline`;
* :class:`IcVsc` (guest side) binds by the IC's interface GUID and answers every request
  in-band with the request's transaction id, as Linux does (§5.1).

The guest is untrusted: a payload the host machine refuses (:class:`IcProtocolError`), a packet
of the wrong VMBus type, or a failed negotiation closes the host's channel with the reason
(``channel.fail``), recorded in :attr:`IcVsp.failure`; nothing a guest sends escapes as an
exception. Both sides keep the machine's events (the last :data:`EVENT_HISTORY` of them) in
``events`` and pass each one to the callables in ``observers``.

Configuration: each IC declares one schema (``config_schema``, a tuple of
:class:`~winhv.plugins.api.ConfigField`) shared by both halves; each half reads the keys it
needs. A VSP gets its configuration in ``__init__`` like any VSP; a VSC is constructed by the
guest's bus with only its device, so the VM worker binds configuration to the class first:
``vsc = KvpVsc.configured(config)``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final, Self

from winhv.drivers.vmbus.device import OfferSpec, Vsc, Vsp
from winhv.drivers.vmbus.ring import PacketType
from winhv.plugins.api import ConfigField, validate_config

from ._framework import (
    IcEvent,
    IcGuestProtocol,
    IcHostProtocol,
    IcNegotiationFailed,
    IcRequestAbandoned,
    IcState,
    IcStep,
)
from ._icmsg import IcSpec
from ._pipe import IcProtocolError

__all__ = ["EVENT_HISTORY", "IcObserver", "IcVsc", "IcVsp"]

_log = logging.getLogger("winhv.ic")

#: How many events each driver keeps in ``events`` (older ones are dropped): a heartbeat
#: every 2 s fills it in about half an hour; observers see every event.
EVENT_HISTORY: Final = 1024

#: ``observer(driver, event)``: called for every event a driver's machine reports.
IcObserver = Callable[[Any, IcEvent], Any]


def _checked_config(schema: tuple[ConfigField, ...], config: Mapping[str, Any] | None,
                    owner: str) -> dict[str, Any]:
    """``config`` checked against ``schema`` with defaults applied.

    ``None`` values count as absent, so a mapping already validated (and defaulted) by the
    driver-set loader passes through unchanged. Raises ``winhv.plugins.api.ConfigError``.
    """
    given = {key: value for key, value in (config or {}).items() if value is not None}
    return validate_config(schema, given, path=f"{owner}.config")


class _EventLog:
    """Keeps a driver's recent events and calls its observers, containing their faults."""

    def _init_events(self) -> None:
        self.events: deque[IcEvent] = deque(maxlen=EVENT_HISTORY)
        self.observers: list[IcObserver] = []

    def _record(self, events: tuple[IcEvent, ...]) -> None:
        for event in events:
            self.events.append(event)
            self._on_event(event)
            for observer in list(self.observers):
                try:
                    observer(self, event)
                except Exception:  # an observer's bug must not break the IC
                    _log.exception("%r: observer %r raised on %r", self, observer, event)

    def _on_event(self, event: IcEvent) -> None:
        """A subclass hook run for each event before the observers."""


class IcVsp(_EventLog, Vsp):
    """Root-side driver of one IC: a host machine over a pipe-mode channel.

    Subclasses set :attr:`spec`, :attr:`config_schema` and implement :meth:`_new_protocol`.
    One machine runs per channel open: a guest that closes and reopens the channel
    negotiates afresh. Requests made before the channel opens wait in the machine and go out
    once negotiation succeeds.
    """

    #: The IC's row of ``IC_TABLE``; ``interface_id`` is derived from it.
    spec: ClassVar[IcSpec]
    #: The configuration keys of this IC (both halves).
    config_schema: ClassVar[tuple[ConfigField, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "spec" in cls.__dict__:
            cls.interface_id = cls.spec.interface_id

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(_checked_config(self.config_schema, config, self.spec.name))
        self._init_events()
        self.protocol: IcHostProtocol = self._new_protocol()
        #: The open channel, or ``None``.
        self.channel: Any = None
        #: Why this driver closed its channel (the guest broke the protocol, or negotiation
        #: failed); ``None`` if it never did.
        self.failure: str | None = None
        #: Why the channel last closed, for any reason (``None`` while it never closed).
        self.close_reason: str | None = None
        self._timer: Any = None
        self._timer_at: int | None = None

    def __repr__(self) -> str:
        where = self.context.vm_name if self.context is not None else "no VM"
        return f"<{type(self).__name__} {where} {self.protocol.state.value}>"

    # -- what subclasses provide ---------------------------------------------------------------

    def _new_protocol(self) -> IcHostProtocol:
        """A fresh host machine configured from :attr:`config`."""
        raise NotImplementedError

    # -- public state ----------------------------------------------------------------------------

    @property
    def state(self) -> IcState:
        """The machine's state (READY once negotiation succeeded)."""
        return self.protocol.state

    @property
    def ready(self) -> bool:
        """The channel is open and the versions are agreed: requests go out at once."""
        return self.channel is not None and self.protocol.state is IcState.READY

    def now(self) -> int:
        """The machine's virtual time in ns (0 before the VSP is placed in a VM)."""
        return int(self.context.now()) if self.context is not None else 0

    def status(self) -> dict[str, Any]:
        """This IC as the management API reports it (plain JSON-able values): ``ic`` (its
        name), ``open``, ``state`` (idle, negotiating, ready, failed), the negotiated
        ``framework``/``message`` versions (``None`` until agreed), ``failure`` (why this side
        closed the channel) and ``close_reason``. Subclasses add their own keys (heartbeat
        health, ...). The VM worker calls it for every IC (duck-typed: it knows no ICs)."""
        versions = self.protocol.versions
        return {
            "ic": self.spec.name,
            "open": self.channel is not None,
            "state": self.protocol.state.value,
            "framework": str(versions.framework) if versions else None,
            "message": str(versions.message) if versions else None,
            "failure": self.failure or self.protocol.failure_reason,
            "close_reason": self.close_reason,
        }

    # -- the Vsp interface -----------------------------------------------------------------------

    def offer(self) -> OfferSpec:
        """A pipe-mode offer with the IC's instance GUID (§4.6, §5.9)."""
        return OfferSpec(pipe_mode=True, instance_id=self.spec.instance_id)

    def on_open(self, channel: Any) -> None:
        """Start version negotiation on the new channel (§5.2)."""
        if self.protocol.state is not IcState.IDLE:
            self.protocol = self._new_protocol()
        self.channel = channel
        self._apply(self.protocol.start(self.now()))

    def on_packet(self, channel: Any, packet: Any) -> None:
        """Feed one guest packet to the machine; close the channel if it breaks the protocol."""
        if channel is not self.channel:
            return
        if packet.type != PacketType.DATA_INBAND:
            self._fail(channel, f"{self.spec.name}: packet type {int(packet.type)}: expected "
                       f"{int(PacketType.DATA_INBAND)} (in-band data, §4.6)")
            return
        try:
            step = self.protocol.receive(bytes(packet.payload), self.now())
        except IcProtocolError as exc:
            self._fail(channel, f"{self.spec.name}: {exc}")
            return
        self._apply(step)

    def on_close(self, channel: Any) -> None:
        """The channel is gone: stop the timer and settle every request still waiting."""
        if channel is None or channel is not self.channel:
            return
        reason = getattr(channel, "close_reason", None) or "channel closed"
        self.channel = None
        self.close_reason = reason
        self._cancel_timer()
        self._closed(reason)

    def stop(self) -> None:
        """The VM is stopping: no more timers."""
        self._cancel_timer()

    # -- subclass helpers ------------------------------------------------------------------------

    def _closed(self, reason: str) -> None:
        """The channel closed with ``reason``: settle waiting requests (subclass hook)."""

    def _apply(self, step: IcStep) -> None:
        """Send ``step``'s payloads, record its events, close on failed negotiation, re-arm."""
        channel = self.channel
        if channel is not None:
            for payload in step.send:
                try:
                    channel.send(payload)
                except Exception as exc:  # a closed channel or a full backlog: stop cleanly
                    self._fail(channel, f"{self.spec.name}: sending failed: {exc}")
                    break
        self._record(step.events)
        failed = next((e for e in step.events if isinstance(e, IcNegotiationFailed)), None)
        if failed is not None and self.channel is not None:
            self._fail(self.channel, f"{self.spec.name}: version negotiation failed: "
                       f"{failed.reason}")
            return
        self._arm()

    def _fail(self, channel: Any, reason: str) -> None:
        self.failure = reason
        self._cancel_timer()
        channel.fail(reason)
        if self.channel is channel:   # the framework did not call on_close: do it here
            self.on_close(channel)

    def _arm(self) -> None:
        deadline = self.protocol.next_deadline() if self.channel is not None else None
        if deadline == self._timer_at and (deadline is None or self._timer is not None):
            return
        self._cancel_timer()
        if deadline is None or self.context is None:
            return
        self._timer_at = deadline
        self._timer = self.context.call_later(max(0, deadline - self.now()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self.channel is None:
            return
        self._apply(self.protocol.tick(self.now()))

    def _cancel_timer(self) -> None:
        timer, self._timer, self._timer_at = self._timer, None, None
        if timer is not None:
            timer.cancel()


class _Waiters:
    """Callbacks of requests in submission order; the host machine answers in that order
    (one transaction at a time, FIFO, §5.7)."""

    __slots__ = ("_queue",)

    def __init__(self) -> None:
        self._queue: deque[tuple[object, Callable[[Any], Any] | None]] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, tag: object, callback: Callable[[Any], Any] | None) -> None:
        self._queue.append((tag, callback))

    def head(self) -> object | None:
        return self._queue[0][0] if self._queue else None

    def settle_first(self, result: object) -> None:
        if self._queue:
            _, callback = self._queue.popleft()
            _call(callback, result)

    def settle(self, tag: object, result: object) -> bool:
        """Settle the waiter registered with ``tag`` (by identity); ``False`` if none."""
        for index, (waiting, callback) in enumerate(self._queue):
            if waiting is tag:
                del self._queue[index]
                _call(callback, result)
                return True
        return False

    def abandon_all(self, reason: str) -> None:
        while self._queue:
            tag, callback = self._queue.popleft()
            _call(callback, IcRequestAbandoned(tag, reason))


def _call(callback: Callable[[Any], Any] | None, result: object) -> None:
    if callback is None:
        return
    try:
        callback(result)
    except Exception:  # the caller's bug must not break the IC
        _log.exception("IC request callback %r raised on %r", callback, result)


class IcVsc(_EventLog, Vsc):
    """Guest-side driver of one IC: a guest machine answering over the channel.

    Subclasses set :attr:`spec` and implement :meth:`_new_protocol`; ``interface_ids`` is
    derived from the spec. ``config`` is the class's bound configuration (see
    :meth:`configured`), checked against :attr:`config_schema` per instance.
    """

    spec: ClassVar[IcSpec]
    config_schema: ClassVar[tuple[ConfigField, ...]] = ()
    #: Configuration bound by :meth:`configured` (empty: the schema's defaults).
    config: ClassVar[Mapping[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "spec" in cls.__dict__:
            cls.interface_ids = (cls.spec.interface_id,)

    @classmethod
    def configured(cls, config: Mapping[str, Any] | None) -> type[Self]:
        """A subclass of this driver bound to ``config`` (checked now, so a bad value fails
        here rather than in the guest). The VM worker hands the result to the guest's bus."""
        checked = _checked_config(cls.config_schema, config, cls.spec.name)
        return type(cls.__name__, (cls,), {"config": checked, "__module__": cls.__module__,
                                           "__qualname__": cls.__qualname__})

    def __init__(self, device: Any) -> None:
        super().__init__(device)
        self._init_events()
        #: This instance's configuration, defaults applied.
        self.settings: dict[str, Any] = _checked_config(self.config_schema, type(self).config,
                                                        self.spec.name)
        self.protocol: IcGuestProtocol | None = None
        self.channel: Any = None
        #: Why this side closed its channel (``None`` if it did not).
        self.failure: str | None = None

    def _new_protocol(self) -> IcGuestProtocol:
        """A fresh guest machine configured from :attr:`settings`."""
        raise NotImplementedError

    def now(self) -> int:
        """The guest's virtual time in ns (its kernel's timer hardware)."""
        clock = getattr(self.device.kernel, "clock", None)
        return int(clock.now) if clock is not None else 0

    def on_open(self, channel: Any) -> None:
        """A fresh machine per open channel: the host negotiates again."""
        self._release_protocol()
        self.protocol = self._new_protocol()
        self.channel = channel

    def on_packet(self, channel: Any, packet: Any) -> None:
        """Answer one host request in-band with its transaction id (§5.1)."""
        protocol = self.protocol
        if protocol is None or channel is not self.channel:
            return
        if packet.type != PacketType.DATA_INBAND:
            self._fail(channel, f"{self.spec.name}: packet type {int(packet.type)}: expected "
                       f"{int(PacketType.DATA_INBAND)} (in-band data, §4.6)")
            return
        try:
            step = protocol.receive(bytes(packet.payload), self.now())
        except IcProtocolError as exc:
            self._fail(channel, f"{self.spec.name}: {exc}")
            return
        for payload in step.send:
            channel.send(payload, trans_id=packet.trans_id)
        self._record(step.events)

    def remove(self) -> None:
        """The device is going away: release what the machine holds."""
        self.channel = None
        self._release_protocol()

    def _release_protocol(self) -> None:
        """Subclass hook: release the old machine's resources (files)."""

    def _fail(self, channel: Any, reason: str) -> None:
        self.failure = reason
        channel.fail(reason)
