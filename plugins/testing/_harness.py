"""The harness: one VSP and one VSC over a real channel, and a test's hands on both ends.

:func:`pair` offers a VSP in a fresh VM of a :class:`~._mock.MockHost` and lets the guest bind
a VSC to it: real GPADL, real rings in guest memory, real SynIC messages and signals. Either
half may be left out, and a *scripted fake* takes its place: :class:`FakeVsp` or
:class:`FakeVsc`, drivers that do nothing on their own but record what arrives and answer
what the test tells them to (:meth:`End.respond`). So a VSC is tested against a fake host that
plays the protocol by the test's script, a VSP against a fake guest, or both real ones
against each other.

Each side is an :class:`End`. Whatever driver owns it, an end can

* ``send``/``request``/``complete`` packets on its channel (as its driver would), and
* ``expect(...)`` a packet that arrived at it: the machine is run until it settles, the
  first matching packet that arrived and was not yet expected is taken and returned, and if
  none matches, :class:`ExpectationFailed` says what was expected, what did arrive, the
  channel's state and the recent trace.

Payloads in a VMBus ring are padded to 8 bytes (fact sheet §4.3), so ``payload=b"abc"``
matches a packet whose payload is ``b"abc"`` followed by up to 7 zero bytes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from winhv.drivers.vmbus._channel import Channel
from winhv.drivers.vmbus._guest import GuestDevice
from winhv.drivers.vmbus._ring import Packet, PacketType
from winhv.drivers.vmbus._server import HostDevice
from winhv.drivers.vmbus.device import Vsc, Vsp

from ._mock import MockError, MockHost, MockVm, open_device
from ._records import PacketRecord, payload_text

__all__ = [
    "End",
    "ExpectationFailed",
    "FakeVsc",
    "FakeVsp",
    "Pair",
    "pair",
    "payload_matches",
]

Reply = bytes | Callable[[PacketRecord], bytes | None]


class ExpectationFailed(AssertionError):
    """An :meth:`End.expect` found no matching packet; the message says what arrived."""

    __module__ = "winhv.plugins.testing"  # its public home, shown in tracebacks


def payload_matches(payload: bytes, expected: bytes) -> bool:
    """Whether a ring payload is ``expected`` plus the ring's zero padding (< 8 bytes)."""
    extra = len(payload) - len(expected)
    return (0 <= extra < 8 and payload.startswith(expected)
            and not any(payload[len(expected):]))


class FakeVsp(Vsp):
    """A scripted stand-in for a VSP: records what arrives, answers per :meth:`End.respond`."""

    def __init__(self, interface_id: uuid.UUID, config: dict[str, Any] | None = None) -> None:
        super().__init__(config or {})
        self.interface_id = interface_id  # type: ignore[misc]
        self.end: End | None = None
        self.channel: Channel | None = None

    def on_open(self, channel: Any) -> None:
        self.channel = channel

    def on_packet(self, channel: Any, packet: Any) -> None:
        if self.end is not None:
            self.end._script(packet)


class FakeVsc(Vsc):
    """A scripted stand-in for a VSC (subclassed per interface GUID by :func:`pair`)."""

    def __init__(self, device: Any) -> None:
        super().__init__(device)
        self.end: End | None = None
        self.channel: Channel | None = None

    def on_open(self, channel: Any) -> None:
        self.channel = channel

    def on_packet(self, channel: Any, packet: Any) -> None:
        if self.end is not None:
            self.end._script(packet)


@dataclass(eq=False)
class _Rule:
    match: Callable[[PacketRecord], bool]
    reply: Reply
    times: int | None


class End:
    """One end of a harness channel: ``side`` is ``"host"`` or ``"guest"``.

    ``driver`` is the VSP or VSC instance on this side (a fake when ``fake`` is true);
    ``inbox`` holds the packets that arrived here and were not taken by :meth:`expect` yet.
    """

    def __init__(self, mock: MockHost, vm: MockVm, side: str, channel: Channel, driver: Any,
                 ) -> None:
        self.mock = mock
        self.vm = vm
        self.side = side
        self.channel = channel
        self.driver = driver
        self.fake = isinstance(driver, FakeVsp | FakeVsc)
        self._rules: list[_Rule] = []
        self.inbox: list[PacketRecord] = [
            r for r in mock.packets(vm=vm.name, relid=channel.relid, stage="received")
            if r.channel == channel.name]
        mock.listen(channel, self._arrived)
        if self.fake:
            driver.end = self

    def __repr__(self) -> str:
        return f"<End {self.side} {self.channel.name} inbox={len(self.inbox)}>"

    def _arrived(self, record: PacketRecord) -> None:
        if record.stage == "received":
            self.inbox.append(record)

    # -- sending --------------------------------------------------------------------------------

    def send(self, payload: bytes, *, trans_id: int = 0) -> None:
        """Send an in-band packet that asks for no completion."""
        self.channel.send(payload, trans_id=trans_id)

    def request(self, payload: bytes, callback: Callable[[Packet], Any] | None = None) -> int:
        """Send an in-band packet asking for a completion; returns its transaction id. The
        completion arrives in :attr:`inbox` (and goes to ``callback`` if given)."""
        return self.channel.send_request(payload, callback)

    def complete(self, request: int | PacketRecord, payload: bytes = b"") -> None:
        """Complete the other side's request (a transaction id or an arrived record)."""
        trans_id = request.trans_id if isinstance(request, PacketRecord) else request
        self.channel.complete(trans_id, payload)

    def respond(self, match: bytes | Callable[[PacketRecord], bool] | None, reply: Reply, *,
                times: int | None = None) -> None:
        """Script a fake: when a packet matching ``match`` arrives (a payload prefix, a
        predicate, or ``None`` for any), answer ``reply`` (bytes, or a function of the arrived
        packet returning bytes or ``None`` for no answer): a completion when the packet asked
        for one, an in-band packet otherwise. ``times`` limits how often the rule answers."""
        if not self.fake:
            raise TypeError(f"the {self.side} end runs a real driver "
                            f"({type(self.driver).__name__}); only a fake end is scripted")
        if match is None:
            test: Callable[[PacketRecord], bool] = lambda _record: True  # noqa: E731
        elif isinstance(match, bytes | bytearray):
            prefix = bytes(match)
            test = lambda record: record.payload.startswith(prefix)  # noqa: E731
        else:
            test = match
        self._rules.append(_Rule(test, reply, times))

    def _script(self, packet: Packet) -> None:
        record = self.inbox[-1] if self.inbox else None
        if record is None or record.trans_id != packet.trans_id:
            return
        for rule in self._rules:
            if rule.times == 0 or not rule.match(record):
                continue
            if rule.times is not None:
                rule.times -= 1
            answer = rule.reply(record) if callable(rule.reply) else rule.reply
            if answer is None:
                return
            if packet.completion_requested:
                self.channel.complete(packet.trans_id, answer)
            else:
                self.channel.send(answer)
            return

    # -- expecting ------------------------------------------------------------------------------

    def expect(self, payload: bytes | None = None, *, type: int | None = None,
               trans_id: int | None = None, prefix: bytes | None = None,
               match: Callable[[PacketRecord], bool] | None = None) -> PacketRecord:
        """Run the machine until it settles and take the first packet that arrived here and
        matches every condition given; raise :class:`ExpectationFailed` if none does.

        ``payload`` matches the whole payload (ring padding allowed), ``prefix`` its start,
        ``type`` the packet type (``PacketType.COMP`` for a completion), ``trans_id`` the
        transaction id and ``match`` is any predicate on the :class:`PacketRecord`.
        """
        __tracebackhide__ = True  # pytest: point at the caller's line
        self.mock.settle()

        def ok(record: PacketRecord) -> bool:
            return ((payload is None or payload_matches(record.payload, payload))
                    and (prefix is None or record.payload.startswith(prefix))
                    and (type is None or record.type == type)
                    and (trans_id is None or record.trans_id == trans_id)
                    and (match is None or match(record)))

        for index, record in enumerate(self.inbox):
            if ok(record):
                del self.inbox[index]
                return record
        wanted = ", ".join(
            f"{k}={v!r}" if k != "type" else f"type={PacketType(v).name}"
            for k, v in (("payload", payload), ("prefix", prefix), ("type", type),
                         ("trans_id", trans_id)) if v is not None)
        if match is not None:
            wanted += (", " if wanted else "") + f"match={getattr(match, '__name__', match)}"
        raise ExpectationFailed(self._explain(f"expected a packet with {wanted or 'anything'}"))

    def expect_nothing(self) -> None:
        """Run until settled; fail if any packet arrived here that was not expected yet."""
        __tracebackhide__ = True  # pytest: point at the caller's line
        self.mock.settle()
        if self.inbox:
            raise ExpectationFailed(self._explain("expected no further packet"))

    def _explain(self, what: str) -> str:
        arrived = "\n".join(
            f"    {r.type.name if isinstance(r.type, PacketType) else r.type} "
            f"tid={r.trans_id} payload={payload_text(r.payload, 48)}" for r in self.inbox)
        state = (f"closed: {self.channel.close_reason}" if self.channel.closed else "open")
        return (f"{self.side} end of {self.channel.name}: {what}\n"
                f"  arrived and not yet expected: {len(self.inbox)} packet(s)"
                + (f"\n{arrived}" if arrived else "") + f"\n  channel: {state}"
                + (f"\n  errors: {self.vm.errors()}" if self.vm.errors() else "")
                + "\n" + self.mock.format_trace(12))


@dataclass(eq=False)
class Pair:
    """What :func:`pair` returns: both ends, the VM and the devices behind them.

    ``host_device`` and ``device`` are the device the pair was made with, also after it went
    away: a test asks a device that a fault closed or a rescind removed what happened to it
    (``pair.device.state``, ``pair.device.error``, ``pair.host_device.errors``).
    """

    mock: MockHost
    vm: MockVm
    name: str
    host: End
    guest: End
    _host_device: HostDevice | None = field(default=None, repr=False)
    _device: GuestDevice | None = field(default=None, repr=False)

    @property
    def host_device(self) -> HostDevice:
        """The root's device (its VSP, offer, channel and errors)."""
        if self._host_device is None:
            self._host_device = self.vm.host_device(self.name)
        return self._host_device

    @property
    def device(self) -> GuestDevice:
        """The guest's device node (state, driver, error)."""
        if self._device is None:
            self._device = self.vm.device(self.name)
        return self._device

    @property
    def vsp(self) -> Any:
        return self.host.driver

    @property
    def vsc(self) -> Any:
        return self.guest.driver

    def run(self) -> int:
        """Deliver everything pending (the clock does not move)."""
        return self.mock.run()

    def settle(self) -> int:
        """Run, moving virtual time through due timers, until quiet."""
        return self.mock.settle()

    def rescind(self) -> None:
        """Hot-remove the device: the host rescinds the offer."""
        self.vm.rescind(self.name)


def pair(mock: MockHost, vsp: Vsp | None = None, vsc: type[Vsc] | None = None, *,
         interface_id: uuid.UUID | None = None, name: str = "device", vm: MockVm | None = None,
         **vm_options: Any) -> Pair:
    """Pair ``vsp`` (an instance) and ``vsc`` (a class) over one channel in a new VM.

    Leave either out for a scripted fake (then ``interface_id`` is needed unless the other
    side names it). ``vm`` reuses a VM; otherwise ``vm_options`` go to :meth:`MockHost.vm`
    (``version="5.0"``, ``memory_mb=``, ``name=``). Raises :class:`~._mock.MockError` with the
    errors and the trace when the channel does not open.
    """
    __tracebackhide__ = True  # pytest: point at the caller's line
    if vsp is None and vsc is None and interface_id is None:
        raise ValueError("give a VSP, a VSC or interface_id: two fakes need an interface GUID")
    interface = (interface_id or getattr(vsp, "interface_id", None)
                 or (vsc.interface_ids[0] if vsc is not None and vsc.interface_ids else None))
    if interface is None:
        raise ValueError("no interface GUID: pass interface_id= or set Vsp.interface_id")
    if vsp is None:
        vsp = FakeVsp(interface)
    if vsc is None:
        vsc = type("FakeVsc", (FakeVsc,), {"interface_ids": (interface,)})
    if vm is None:
        vm = mock.vm([vsc], **vm_options)
    else:
        vm.add_driver(vsc)
    vm.offer(vsp, name=name, interface_id=interface)
    host_device, guest_device = open_device(vm, name)
    assert host_device.channel is not None
    assert guest_device.channel is not None
    if guest_device.driver_class is not vsc:
        raise MockError(f"{vm.name}/{name}: the guest bound {guest_device.driver_class!r}, "
                        f"not {vsc!r}")
    host = End(mock, vm, "host", host_device.channel, vsp)
    guest = End(mock, vm, "guest", guest_device.channel, guest_device.driver)
    return Pair(mock, vm, name, host, guest, host_device, guest_device)
