"""Fault injection: the part of :class:`~winhv.plugins.testing.MockHost` that breaks things.

Every fault acts at a seam where the real pieces of the core already meet, and is recorded as a
``fault`` note in the trace:

* hypercalls: the bridge's own fault injection fails the next calls of a code with a status;
* control messages and channel signals: :class:`~._faults.Transport` drops, delays, duplicates
  or reorders sends, one stream (VM and direction) at a time;
* rings: a control field of a ring in guest memory is overwritten, or a ring is filled;
* drivers: a VSP's or VSC's callback is made to raise.

Only probabilistic faults draw from ``MockHost.rng`` (seeded), so a failing test replays with
the same seed. :class:`FaultInjection` is a base of ``MockHost`` and uses its state (the
scheduler, the bridge, the transports and the channels the mock attached to).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from winhv._calls import HYPERCALLS, HvCallCode
from winhv._status import HvStatus
from winhv.drivers.vmbus._channel import Channel
from winhv.drivers.vmbus._messages import MESSAGES
from winhv.drivers.vmbus._ring import RingWriter
from winhv.drivers.vmbus.device import Vsc, Vsp

from ._faults import Fault, InjectedFault, Transport
from ._records import TO_GUEST, TO_HOST, MessageRecord, message_type

if TYPE_CHECKING:
    import random

    from ._mock import MockVm

__all__ = ["FILLER_TRANS_ID", "RING_FIELDS", "FaultInjection"]

#: Transaction id of the filler packets :meth:`MockHost.fill_ring` writes (never a driver's).
FILLER_TRANS_ID = 0xF111_F111_F111_F111
#: Ring control fields :meth:`MockHost.corrupt_ring` may change (fact sheet §4.1).
RING_FIELDS = ("write_index", "read_index", "interrupt_mask", "pending_send_size",
               "feature_bits")
#: The driver callbacks :meth:`MockHost.crash` can make raise, per side (device.py's lifecycles).
_VSP_CALLBACKS = ("offer", "on_open", "on_packet", "on_close", "stop")
_VSC_CALLBACKS = ("probe", "on_open", "on_packet", "remove")


def _callbacks(owner: type) -> tuple[str, ...]:
    """The callbacks a driver class has: a VSP's, a VSC's, or (another class) those of both
    that it defines."""
    if issubclass(owner, Vsp):
        return _VSP_CALLBACKS
    if issubclass(owner, Vsc):
        return _VSC_CALLBACKS
    both = dict.fromkeys(_VSP_CALLBACKS + _VSC_CALLBACKS)
    return tuple(name for name in both if callable(getattr(owner, name, None)))


def _code(value: int | str) -> int:
    if isinstance(value, int):
        return int(value)
    key = value.strip()
    for info in HYPERCALLS.values():
        if info.name.lower() == key.lower():
            return info.code
    try:
        return HvCallCode[key.upper()]
    except KeyError:
        raise ValueError(f"unknown hypercall {value!r}: expected a call code, a TLFS name "
                         "('HvCallPostMessage') or an HvCallCode name ('POST_MESSAGE')") from None


def _status(value: int | str) -> int:
    if isinstance(value, int):
        return int(value)
    try:
        return HvStatus[value.strip().upper().removeprefix("HV_STATUS_")]
    except KeyError:
        raise ValueError(f"unknown HV_STATUS {value!r}") from None


class FaultInjection:
    """The fault methods of :class:`~winhv.plugins.testing.MockHost` (see the module doc)."""

    # provided by MockHost
    rng: random.Random
    bridge: Any
    _messages: Transport
    _signals: Transport
    _crashes: list[Fault]
    _undo: list[Callable[[], None]]
    _channels: dict[int, tuple[MockVm, Channel]]

    if TYPE_CHECKING:
        def note(self, what: str, text: str) -> None: ...
        def run(self) -> int: ...
        def _later(self, delay_ns: int, callback: Callable[[], Any]) -> None: ...

    # -- hypercall faults -----------------------------------------------------------------------

    def fail_hypercall(self, code: int | str, status: int | str, count: int = 1) -> None:
        """Make the next ``count`` calls of ``code`` (by anyone) fail with ``status`` before
        dispatch, as the bridge's fault injection does (fact sheet §1.5 statuses)."""
        number, value = _code(code), _status(status)
        self.bridge.inject_fault(number, value, count)
        name = HYPERCALLS[number].name if number in HYPERCALLS else f"{number:#06x}"
        self.note("fault", f"armed: {name} fails with {HvStatus(value).name} x{count}")

    # -- transport faults -----------------------------------------------------------------------

    def _arm(self, action: str, on: str, *, type: Any = None,
             direction: str | None = None, vm: str | None = None, relid: int | None = None,
             count: int | None = 1, skip: int = 0, probability: float = 1.0,
             delay_ns: int = 0) -> Fault:
        if direction not in (None, TO_GUEST, TO_HOST):
            raise ValueError(f"direction: found {direction!r}, expected {TO_GUEST!r} or "
                             f"{TO_HOST!r}")
        if on == "message":
            kind = message_type(type) if type is not None else None

            def matches(record: MessageRecord) -> bool:
                return ((kind is None or record.type == kind)
                        and (direction is None or record.direction == direction)
                        and (vm is None or record.vm == vm)
                        and (relid is None or record.relid == relid))

            what = MESSAGES[kind].name if kind is not None else "any"
            transport = self._messages
        elif on == "signal":
            if type is not None:
                raise ValueError("type= applies to messages; select signals by relid=")

            def matches(event: tuple[MockVm, str, Channel]) -> bool:  # type: ignore[misc]
                target, way, channel = event
                return ((direction is None or way == direction)
                        and (vm is None or target.name == vm)
                        and (relid is None or channel.relid == relid))

            what = f"relid {relid}" if relid is not None else "any"
            transport = self._signals
        else:
            raise ValueError(f"on: found {on!r}, expected 'message' or 'signal'")
        where = "".join(f" {v}" for v in (direction, vm) if v)
        fault = Fault(action, f"{on} {what}{where}", matches, count=count, skip=skip,
                      probability=probability, delay_ns=delay_ns)
        transport.arm(fault)
        return fault

    def drop(self, on: str, **match: Any) -> Fault:
        """Drop matching control messages (``on="message"``) or channel signals
        (``on="signal"``). Match with ``type=``, ``direction=``, ``vm=``, ``relid=``; choose
        with ``count=`` (default 1, ``None`` = all), ``skip=`` and ``probability=``."""
        return self._arm("drop", on, **match)

    def delay(self, on: str, delay_ns: int, **match: Any) -> Fault:
        """Deliver matching messages or signals ``delay_ns`` of virtual time late."""
        return self._arm("delay", on, delay_ns=delay_ns, **match)

    def duplicate(self, on: str, **match: Any) -> Fault:
        """Deliver matching messages or signals twice."""
        return self._arm("duplicate", on, **match)

    def reorder(self, on: str, **match: Any) -> Fault:
        """Hold a matching message or signal back until the next one of its stream has gone
        (same VM and direction), so the two arrive swapped."""
        return self._arm("reorder", on, **match)

    # -- ring faults ----------------------------------------------------------------------------

    def peer(self, channel: Channel) -> Channel | None:
        """The other end of ``channel`` (``None`` when it is not open any more)."""
        for vm, known in self._channels.values():
            if known is channel:
                if channel.side == "host":
                    device = vm.client.devices.get(channel.relid)
                    return device.channel if device is not None else None
                return vm.server.channel(channel.relid)
        raise ValueError(f"{channel!r} is not a channel of this mock")

    def corrupt_ring(self, channel: Channel, field: str, value: int | None = None, *,
                     ring: str = "outbound", notify: bool = True) -> int:
        """Overwrite a control field of one of ``channel``'s rings (fact sheet §4.1).

        ``ring`` is ``"outbound"`` (the ring ``channel`` writes) or ``"inbound"``. ``value``
        ``None`` picks one from the seeded generator that breaks the ring's rules. With
        ``notify`` the ring's reader polls at once, as if signalled. Returns the value written.
        """
        if field not in RING_FIELDS:
            raise ValueError(f"field: found {field!r}, expected one of {', '.join(RING_FIELDS)}")
        if ring not in ("outbound", "inbound"):
            raise ValueError(f"ring: found {ring!r}, expected 'outbound' or 'inbound'")
        target = channel.outbound if ring == "outbound" else channel.inbound
        if value is None:
            size = target.data_size
            value = self.rng.choice((size + 8 * self.rng.randrange(1, 512),
                                     8 * self.rng.randrange(size // 8) + 4))
        setattr(target, field, value)
        self.note("fault", f"{channel.name} {ring} ring {field} := {value:#x}")
        if notify:
            reader = self.peer(channel) if ring == "outbound" else channel
            if reader is not None:
                self._later(0, reader.poll)
            self.run()
        return value

    def fill_ring(self, channel: Channel, *, leave: int = 0) -> int:
        """Fill ``channel``'s outbound ring with filler packets so the next send finds it full.

        The filler is real packets (transaction id :data:`FILLER_TRANS_ID`); the other end's
        driver never sees them (they are swallowed before its ``on_packet``), but they take
        ring space until the reader catches up, so the sender's backlog and
        ``pending_send_size`` path (fact sheet §4.4) is exercised. ``leave`` keeps that many
        bytes free besides what the rules keep. Returns the bytes written.
        """
        peer = self.peer(channel)
        if peer is None:
            raise ValueError(f"{channel!r} has no open peer to read the filler")
        self._swallow_filler(peer)
        ring, written = channel.outbound, 0
        while True:
            room = ring.bytes_to_write - 1 - leave   # §4.2: a full ring keeps 1 byte apart
            if room < RingWriter.packet_size(0):
                break
            payload = min(room - RingWriter.packet_size(0), ring.max_packet_size - 64, 4000)
            payload -= payload % 8
            channel.send(b"\xf1" * payload, trans_id=FILLER_TRANS_ID)
            written += RingWriter.packet_size(payload)
        self.note("fault", f"{channel.name}: outbound ring filled with {written} bytes")
        return written

    def _swallow_filler(self, channel: Channel) -> None:
        handler = channel.on_packet
        if getattr(handler, "_winhv_filler", False):
            return

        def swallow(ch: Channel, packet: Any) -> Any:
            if packet.trans_id == FILLER_TRANS_ID:
                return None
            return handler(ch, packet) if handler is not None else None

        swallow._winhv_filler = True  # type: ignore[attr-defined]
        channel.on_packet = swallow

    # -- driver faults --------------------------------------------------------------------------

    def crash(self, target: Any, method: str = "on_packet", *, after: int = 0, count: int = 1,
              error: BaseException | None = None, probability: float = 1.0) -> Fault:
        """Make a driver callback raise, as a buggy driver would.

        ``target`` is a driver instance or class (a VSP or VSC; a class affects every
        instance, and is restored by :meth:`close`). The first ``after`` calls of ``method``
        run normally; then ``count`` calls raise ``error`` (default :class:`InjectedFault`).
        The framework must contain it: unbind the driver, close its channel, record why.
        """
        owner = target if isinstance(target, type) else type(target)
        callbacks = _callbacks(owner)
        if method not in callbacks:
            raise ValueError(f"method: found {method!r}, expected a callback of "
                             f"{owner.__name__}: one of {', '.join(callbacks)}")
        label = f"{owner.__name__}.{method}"
        fault = Fault("crash", label, lambda _: True, count=count, skip=after,
                      probability=probability)
        original = getattr(target, method)
        mock = self

        @functools.wraps(original)   # logs and tracebacks name the driver's method
        def crashing(*args: Any, **kwargs: Any) -> Any:
            if fault.decide(None, mock.rng):
                mock.note("fault", f"crash in {label} (call {fault.seen})")
                raise error if error is not None else InjectedFault(f"injected crash in {label}")
            bound = original.__get__(args[0], owner) if isinstance(target, type) else original
            rest = args[1:] if isinstance(target, type) else args
            return bound(*rest, **kwargs)

        if isinstance(target, type):
            setattr(target, method, crashing)
            self._undo.append(lambda: setattr(target, method, original))
        else:
            setattr(target, method, crashing)
            if method == "on_packet":   # already bound to open channels: rebind those too
                for _vm, channel in self._channels.values():
                    if channel.on_packet == original:
                        channel.on_packet = crashing
        self._crashes.append(fault)
        return fault
