"""The mock hypervisor: the real core, booted for a test, recorded and open to faults.

:class:`MockHost` is not a fake. It boots the real hypervisor, root kernel, VMBus host and VID
(:func:`~winhv.drivers.vmbus.loopback.boot_host`); each :class:`MockVm` is a real child
partition made by VID through hypercalls, with a real guest kernel and VMBus client. What the
mock adds is observation and control, at the seams where the real pieces already meet:

* the bridge's tracer sees every hypercall with its caller and result (fact sheet §1.3);
* each VM's server and client are wrapped where they send and receive control messages (§3),
  which is where message faults (drop, delay, duplicate, reorder) and "rescind at this step"
  act;
* each channel gets a tap (every packet both ways, §4.3) and a wrapped signal (every interrupt,
  §4.4), which is where signal faults act;
* driver callbacks can be made to raise (:meth:`MockHost.crash`), ring control fields can be
  corrupted and rings filled.

Nothing runs on a thread or reads the wall clock: the scheduler's virtual clock orders
everything, and every random choice comes from ``MockHost.rng``, seeded by ``seed``. The same
test with the same seed makes the same hypercalls in the same order.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from winhv._status import HvStatus
from winhv.drivers.vmbus._channel import Channel
from winhv.drivers.vmbus._guest import DeviceState, GuestDevice
from winhv.drivers.vmbus._messages import MESSAGES, ChannelMessage, ChannelMessageType
from winhv.drivers.vmbus._ring import PacketType
from winhv.drivers.vmbus._server import HostDevice
from winhv.drivers.vmbus._versions import CLIENT_VERSIONS, VmbusVersion
from winhv.drivers.vmbus.device import Vsc, Vsp
from winhv.drivers.vmbus.loopback import Loopback, boot_host, boot_vm

from ._faults import Fault, Transport
from ._injection import FaultInjection, _code, _status
from ._records import (
    TO_GUEST,
    TO_HOST,
    HypercallRecord,
    MessageRecord,
    NoteRecord,
    PacketRecord,
    Record,
    SignalRecord,
    format_trace,
    message_type,
    select,
)

__all__ = ["MockError", "MockHost", "MockVm"]

_VMBUS_SINT = 2


class MockError(AssertionError):
    """The mock could not do what a test asked (a VM did not connect, a channel did not open).

    An ``AssertionError``, so pytest shows it as a test failure with its message, which ends
    with the recent trace.
    """

    __module__ = "winhv.plugins.testing"  # its public home, shown in tracebacks


def _direction(side: str, way: str) -> str:
    """Packet direction from a channel's side and the tap's ``"out"``/``"in"``."""
    host_sent = (side == "host") == (way == "out")
    return TO_GUEST if host_sent else TO_HOST


class MockVm:
    """One child partition with its VMBus, booted by :meth:`MockHost.vm`.

    ``loop`` is the underlying :class:`~winhv.drivers.vmbus.loopback.Loopback`; ``server`` and
    ``client`` are the root's VMBus server for this VM and the guest's VMBus client.
    """

    def __init__(self, mock: MockHost, loop: Loopback, name: str) -> None:
        self.mock = mock
        self.loop = loop
        self.name = name
        self.partition_id = loop.partition.partition_id
        self.server = loop.server
        self.client = loop.client
        self.guest = loop.guest

    def __repr__(self) -> str:
        return f"<MockVm {self.name} version={self.version!r}>"

    @property
    def version(self) -> VmbusVersion | None:
        """The negotiated VMBus version (fact sheet §3.4), ``None`` before connecting."""
        version = self.client.connected_version
        return VmbusVersion(version) if version is not None else None

    def add_driver(self, vsc: type[Vsc]) -> None:
        """Let the guest bind ``vsc`` to offers of its interface GUIDs from now on."""
        if vsc not in self.client.drivers:
            self.client.drivers.append(vsc)

    def offer(self, vsp: Vsp, *, name: str = "device",
              interface_id: uuid.UUID | None = None) -> HostDevice:
        """Offer ``vsp`` as device ``name`` (hot-add) and run until the bus settles."""
        interface = interface_id or getattr(vsp, "interface_id", None)
        if interface is None:
            raise ValueError(f"{type(vsp).__name__} has no interface_id: pass interface_id=")
        if any(d.name == name for d in self.server.devices.values()):
            raise ValueError(f"{self.name}: a device named {name!r} is already offered")
        device = self.server.add_device(name, vsp, interface)
        self.mock.settle()
        return device

    def host_device(self, name: str) -> HostDevice:
        """The root's view of device ``name`` (its VSP, offer and channel)."""
        for device in self.server.devices.values():
            if device.name == name:
                return device
        known = ", ".join(d.name for d in self.server.devices.values()) or "none"
        raise KeyError(f"{self.name}: no device named {name!r} (offered: {known})")

    def device(self, name: str | int) -> GuestDevice:
        """The guest's view of a device, by the name it was offered as or by relid."""
        relid = name if isinstance(name, int) else self.host_device(name).relid
        try:
            return self.client.devices[relid]
        except KeyError:
            raise KeyError(f"{self.name}: the guest has no device with relid {relid}") from None

    def rescind(self, name: str) -> None:
        """Rescind device ``name``'s offer now (hot remove) and run until the bus settles."""
        self.server.remove_device(self.host_device(name).relid)
        self.mock.settle()

    def rescind_at(self, step: str | int | type[ChannelMessage], *, device: str,
                   when: str = "before") -> Fault:
        """Rescind ``device`` when its channel reaches protocol step ``step``.

        ``step`` is a control message about that device (fact sheet §3.5): a guest->host one
        (``GPADL_HEADER``, ``OPENCHANNEL``, ``CLOSECHANNEL``, ...) fires when the host gets it,
        a host->guest one (``OFFERCHANNEL``, ``GPADL_CREATED``, ``OPENCHANNEL_RESULT``) when
        the guest gets it. ``when="before"`` rescinds before that side handles the message,
        ``"after"`` right after.
        """
        if when not in ("before", "after"):
            raise ValueError(f"when: found {when!r}, expected 'before' or 'after'")
        kind = message_type(step)

        def matches(record: MessageRecord) -> bool:
            if record.vm != self.name or record.type != kind or record.stage != "received":
                return False
            relid = record.relid
            return relid is not None and any(
                d.relid == relid and d.name == device for d in self.server.devices.values())

        spec = MESSAGES[kind]
        fault = Fault("rescind", f"{device} at {spec.name} ({when})", matches)
        self.mock._rescinds.append((fault, when, self))
        return fault

    def tree(self) -> list[dict[str, Any]]:
        """The guest's enumeration tree (``winhv bus``)."""
        return self.client.tree()

    def errors(self) -> list[str]:
        """Every error the server, the client and the devices recorded, in that order."""
        errors = [*self.server.errors, *self.client.errors]
        for device in self.server.devices.values():
            errors += [f"{self.name}/{device.name}: {e}" for e in device.errors]
        return errors


class MockHost(FaultInjection):
    """A booted host for tests: deterministic, recording, with faults on demand.

    ``seed`` seeds :attr:`rng`, the only source of randomness of the faults. ``bridge`` picks
    the hypercall bridge (``"compiled"``, ``"reference"`` or ``None`` for the default).
    """

    def __init__(self, *, seed: int = 0, root_memory_mb: int = 256, bridge: Any = None) -> None:
        self.seed = seed
        #: The seeded generator every probabilistic fault draws from.
        self.rng = random.Random(seed)
        self.hv, self.root, self.host, self.vid = boot_host(root_memory_mb=root_memory_mb,
                                                            bridge=bridge)
        self.scheduler = self.hv.scheduler
        self.bridge = self.hv.bridge
        #: Every record, in order (see :mod:`winhv.plugins.testing`'s record types).
        self.log: list[Record] = []
        self.vms: dict[str, MockVm] = {}
        self._names: dict[int, str] = {self.root.partition_id: "root"}
        self._messages = Transport(self.rng, self._later)
        self._signals = Transport(self.rng, self._later)
        self._rescinds: list[tuple[Fault, str, MockVm]] = []
        self._crashes: list[Fault] = []
        self._undo: list[Callable[[], None]] = []
        self._channels: dict[int, tuple[MockVm, Channel]] = {}
        self._listeners: dict[int, list[Callable[[PacketRecord], Any]]] = {}
        self._closed = False
        self.bridge.tracer = self._on_hypercall
        self.scheduler.on_error = self._on_scheduler_error
        self.root.on_fault = lambda where, exc: self.note("error", f"root {where}: {exc!r}")

    def __repr__(self) -> str:
        return f"<MockHost seed={self.seed} vms={list(self.vms)} records={len(self.log)}>"

    # -- running ------------------------------------------------------------------------------

    @property
    def now(self) -> int:
        """Virtual time in nanoseconds."""
        return self.scheduler.now

    def run(self) -> int:
        """Deliver every pending interrupt and due timer; the clock does not move."""
        return self.scheduler.run_until_idle()

    def settle(self, max_ns: int = 10_000_000) -> int:
        """Run, advancing virtual time timer by timer, until nothing is due within
        ``max_ns`` (message retries, delayed faults, device timers)."""
        steps = self.scheduler.run_until_idle()
        while True:
            deadline = self.scheduler.next_deadline()
            if deadline is None or deadline > self.scheduler.now + max_ns:
                return steps
            steps += self.scheduler.run_until(deadline)

    def advance(self, ns: int) -> int:
        """Move virtual time ``ns`` forward, running whatever falls due on the way."""
        return self.scheduler.run_for(ns)

    def _later(self, delay_ns: int, callback: Callable[[], Any]) -> None:
        self.scheduler.call_later(delay_ns, callback, name="winhv mock fault")

    def close(self) -> None:
        """Undo every patch the mock made (crash faults on classes), stop tracing."""
        if self._closed:
            return
        self._closed = True
        while self._undo:
            self._undo.pop()()
        if self.bridge.tracer == self._on_hypercall:
            self.bridge.tracer = None

    # -- VMs ----------------------------------------------------------------------------------

    def vm(self, drivers: Iterable[type[Vsc]] = (), *, name: str | None = None,
           memory_mb: int = 16, version: VmbusVersion | str | None = None,
           guest_versions: Sequence[VmbusVersion] | None = None,
           connect: bool = True) -> MockVm:
        """Create and start a VM whose guest binds ``drivers``; connect its VMBus.

        ``version`` pins the negotiated VMBus version (fact sheet §3.4): the host accepts
        nothing newer and the guest proposes it among its usual list, so connecting ends at
        exactly that version or fails with :class:`MockError`. ``guest_versions`` overrides
        what the guest proposes.
        """
        __tracebackhide__ = True  # pytest: point at the caller's line
        name = name or f"vm{len(self.vms)}"
        if name in self.vms:
            raise ValueError(f"a VM named {name!r} already exists")
        pinned = _version(version) if version is not None else None
        proposals = tuple(guest_versions) if guest_versions is not None else CLIENT_VERSIONS
        if pinned is not None and guest_versions is None:
            proposals = tuple(sorted({*CLIENT_VERSIONS, pinned}, reverse=True))
        loop = boot_vm(list(drivers), name=name, memory_mb=memory_mb, host_version=pinned,
                       guest_versions=proposals, machine=(self.hv, self.root, self.host,
                                                          self.vid), connect=False)
        vm = MockVm(self, loop, name)
        self.vms[name] = vm
        self._names[vm.partition_id] = name
        self._instrument(vm)
        if connect:
            vm.client.connect()
            self.settle()
            if vm.version is None or (pinned is not None and vm.version != pinned):
                raise MockError(f"{name}: VMBus did not connect"
                                + (f" at {pinned.name}" if pinned is not None else "")
                                + f" (negotiated: {vm.version!r}); errors: {vm.errors()}\n"
                                + self.format_trace())
        return vm

    def harness(self, vsp: Vsp | None = None, vsc: type[Vsc] | None = None, **options: Any,
                ) -> Any:
        """Pair a VSP and a VSC over real rings in a new VM; see :func:`~._harness.pair`."""
        from ._harness import pair

        return pair(self, vsp, vsc, **options)

    # -- instrumentation ------------------------------------------------------------------------

    def _instrument(self, vm: MockVm) -> None:
        server, client, guest = vm.server, vm.client, vm.guest
        server_send, server_receive = server.send, server.receive
        client_send, client_message = client.send, client._on_message
        add_device = server.add_device

        def host_send(message: ChannelMessage) -> None:
            self._send_message(vm, TO_GUEST, message, lambda: server_send(message))

        def guest_send(message: ChannelMessage, connection_id: int) -> None:
            self._send_message(vm, TO_HOST, message,
                               lambda: client_send(message, connection_id))

        def host_receive(payload: bytes, connection_id: int) -> None:
            self._receive_message(vm, TO_HOST, bytes(payload),
                                  lambda: server_receive(payload, connection_id))

        def guest_receive(raw: bytes) -> None:
            if int.from_bytes(raw[0:4], "little") != 1:   # not a VMBus message (§3.1)
                client_message(raw)
                return
            payload = bytes(raw[16:16 + min(raw[4], 240)])
            self._receive_message(vm, TO_GUEST, payload, lambda: client_message(raw))

        def guest_on_event(sint: int, flag: int, handler: Any) -> None:
            channel = getattr(handler, "__self__", None)
            if isinstance(channel, Channel):
                self._attach(vm, channel)
            guest_on_event_real(sint, flag, handler)

        def offer(name: str, vsp: Vsp, *args: Any, **kwargs: Any) -> HostDevice:
            self._watch_vsp(vm, vsp)
            return add_device(name, vsp, *args, **kwargs)

        server.send = host_send  # type: ignore[method-assign]
        server.receive = host_receive  # type: ignore[method-assign]
        server.add_device = offer  # type: ignore[method-assign]
        client.send = guest_send  # type: ignore[method-assign]
        guest.on_message(_VMBUS_SINT, guest_receive)
        guest_on_event_real = guest.on_event
        guest.on_event = guest_on_event  # type: ignore[method-assign]
        guest.on_fault = lambda where, exc: self.note("error", f"{vm.name} {where}: {exc!r}")

    def _watch_vsp(self, vm: MockVm, vsp: Vsp) -> None:
        """Attach to the host channel before the VSP's ``on_open`` can send on it."""
        on_open = vsp.on_open

        def watched(channel: Any) -> Any:
            if isinstance(channel, Channel):
                self._attach(vm, channel)
            return on_open(channel)

        vsp.on_open = watched  # type: ignore[method-assign]

    def _attach(self, vm: MockVm, channel: Channel) -> None:
        if id(channel) in self._channels:
            return
        self._channels[id(channel)] = (vm, channel)
        channel.taps.append(lambda ch, way, ptype, trans_id, payload:
                            self._on_packet(vm, ch, way, ptype, trans_id, payload))
        signal = channel._signal
        direction = TO_GUEST if channel.side == "host" else TO_HOST

        def wrapped() -> None:
            fault = self._signals.decide((vm, direction, channel))
            self._record(SignalRecord, vm=vm.name, direction=direction, relid=channel.relid,
                         channel=channel.name, fault=self._signals.past(fault))
            self._signals.send((vm.name, direction), fault, signal)

        channel._signal = wrapped

    # -- recording ----------------------------------------------------------------------------

    def _record(self, kind: type[Any], **fields: Any) -> Any:
        record = kind(seq=len(self.log), time_ns=self.scheduler.now, **fields)
        self.log.append(record)
        return record

    def note(self, what: str, text: str) -> None:
        """Put a line into the trace (``what`` is a short tag such as ``"fault"``)."""
        self._record(NoteRecord, what=what, text=text)

    def _on_hypercall(self, partition_id: int, control: int, rdx: int, r8: int,
                      result: int) -> None:
        value = result & 0xFFFF
        try:
            status: HvStatus | int = HvStatus(value)
        except ValueError:
            status = value
        self._record(HypercallRecord, caller=self._names.get(partition_id, f"{partition_id:#x}"),
                     partition_id=partition_id, code=control & 0xFFFF,
                     fast=bool(control >> 16 & 1), rep_count=control >> 32 & 0xFFF,
                     status=status, reps_done=result >> 32 & 0xFFF)

    def _on_scheduler_error(self, where: Any, vector: int, exc: BaseException) -> None:
        self.note("error", f"{where!r} vector {vector:#x}: {exc!r}")

    def _send_message(self, vm: MockVm, direction: str, message: ChannelMessage,
                      send: Callable[[], Any]) -> None:
        probe = MessageRecord(-1, self.now, vm.name, direction, "sent", message.TYPE, message)
        fault = self._messages.decide(probe)
        self._record(MessageRecord, vm=vm.name, direction=direction, stage="sent",
                     type=message.TYPE, message=message, fault=self._messages.past(fault))
        self._messages.send((vm.name, direction), fault, send)

    def _receive_message(self, vm: MockVm, direction: str, payload: bytes,
                         deliver: Callable[[], Any]) -> None:
        raw_type = int.from_bytes(payload[0:4], "little")
        try:
            kind = ChannelMessageType(raw_type)
            message: ChannelMessage | None = MESSAGES[kind].cls.unpack(payload)
        except Exception:  # hostile or truncated bytes: record what can be said about them
            kind, message = ChannelMessageType.INVALID, None
        record = self._record(MessageRecord, vm=vm.name, direction=direction, stage="received",
                              type=kind, message=message)
        after: list[tuple[Fault, MockVm]] = []
        for fault, when, target in self._rescinds:
            if fault.decide(record, self.rng):
                self.note("fault", f"rescind {fault.description}")
                if when == "before":
                    self._rescind(target, record)
                else:
                    after.append((fault, target))
        deliver()
        for _fault, target in after:
            self._rescind(target, record)

    @staticmethod
    def _rescind(vm: MockVm, record: MessageRecord) -> None:
        if record.relid is not None:
            vm.server.remove_device(record.relid)

    def _on_packet(self, vm: MockVm, channel: Channel, way: str, ptype: int, trans_id: int,
                   payload: Any) -> None:
        try:
            kind: PacketType | int = PacketType(ptype)
        except ValueError:
            kind = ptype
        record = self._record(PacketRecord, vm=vm.name, direction=_direction(channel.side, way),
                              stage="sent" if way == "out" else "received", relid=channel.relid,
                              channel=channel.name, type=kind, trans_id=trans_id,
                              payload=bytes(payload))
        for listener in self._listeners.get(id(channel), ()):
            listener(record)

    def listen(self, channel: Channel, listener: Callable[[PacketRecord], Any]) -> None:
        """Call ``listener(record)`` for every packet ``channel`` writes or reads from now on."""
        self._listeners.setdefault(id(channel), []).append(listener)

    # -- queries ------------------------------------------------------------------------------

    def calls(self, code: int | str | None = None, *, caller: str | None = None,
              status: int | str | None = None) -> list[HypercallRecord]:
        """Hypercalls, optionally of one ``code`` (number or name), ``caller`` (``"root"`` or a
        VM name) or result ``status``."""
        return select(self.log, HypercallRecord,
                      code=_code(code) if code is not None else None, caller=caller,
                      status=_status(status) if status is not None else None)

    def messages(self, type: Any = None, *, direction: str | None = None,
                 vm: str | None = None, stage: str | None = "sent",
                 relid: int | None = None) -> list[MessageRecord]:
        """Control messages (by default as sent; ``stage="received"`` or ``None`` for both).

        ``type`` is anything :func:`~._records.message_type` accepts (``"OPENCHANNEL"``).
        """
        return select(self.log, MessageRecord,
                      type=message_type(type) if type is not None else None,
                      direction=direction, vm=vm, stage=stage, relid=relid)

    def signals(self, *, direction: str | None = None, vm: str | None = None,
                relid: int | None = None) -> list[SignalRecord]:
        """Channel interrupts raised (dropped ones included, with ``fault="dropped"``)."""
        return select(self.log, SignalRecord, direction=direction, vm=vm, relid=relid)

    def packets(self, *, direction: str | None = None, vm: str | None = None,
                relid: int | None = None, type: int | None = None,
                trans_id: int | None = None, stage: str | None = "sent",
                ) -> list[PacketRecord]:
        """Ring packets (by default as written; ``stage="received"`` or ``None`` for both)."""
        return select(self.log, PacketRecord, direction=direction, vm=vm, relid=relid,
                      type=type, trans_id=trans_id, stage=stage)

    def notes(self, what: str | None = None) -> list[NoteRecord]:
        """Faults that fired and errors the framework reported."""
        return select(self.log, NoteRecord, what=what)

    def format_trace(self, last: int | None = 40, *, hypercalls: bool = False) -> str:
        """The recent trace as text (see :func:`~._records.format_trace`)."""
        header = f"recent winhv trace (seed {self.seed}, t={self.now} ns):"
        return header + "\n" + format_trace(self.log, last=last, hypercalls=hypercalls)

    def errors(self) -> list[str]:
        """Every error any VM's server, client or devices recorded."""
        return [e for vm in self.vms.values() for e in vm.errors()]

    def assert_no_errors(self) -> None:
        """Fail (with the errors and the recent trace) if anything recorded an error."""
        __tracebackhide__ = True  # pytest: point at the caller's line
        errors = self.errors() + [n.text for n in self.notes("error")]
        if errors:
            listing = "\n".join(f"  {e}" for e in errors)
            raise MockError(f"expected no errors, found {len(errors)}:\n{listing}\n"
                            + self.format_trace())

    def expect_message(self, type: Any, *, direction: str | None = None,
                       vm: str | None = None, stage: str | None = "sent",
                       relid: int | None = None) -> MessageRecord:
        """The first matching control message; fail with the trace if there is none."""
        __tracebackhide__ = True  # pytest: point at the caller's line
        found = self.messages(type, direction=direction, vm=vm, stage=stage, relid=relid)
        if found:
            return found[0]
        wanted = message_type(type)
        raise MockError(f"expected a {MESSAGES[wanted].name} message"
                        + (f" {direction}" if direction else "")
                        + (f" on {vm}" if vm else "") + (f" relid={relid}" if relid else "")
                        + f", none was {stage or 'recorded'}\n" + self.format_trace())


def _version(value: VmbusVersion | str | int) -> VmbusVersion:
    from winhv.plugins._driverset import parse_vmbus_version

    if isinstance(value, str):
        return parse_vmbus_version(value)
    return VmbusVersion(value)


def open_device(vm: MockVm, name: str) -> tuple[HostDevice, GuestDevice]:
    """The host and guest sides of device ``name``, or :class:`MockError` if not open."""
    __tracebackhide__ = True  # pytest: point at the caller's line
    host = vm.host_device(name)
    guest = vm.client.devices.get(host.relid)
    if host.channel is None or guest is None or guest.state != DeviceState.OPEN:
        state = guest.state.value if guest is not None else "not offered to the guest"
        raise MockError(f"{vm.name}/{name}: the channel did not open (guest state: {state}); "
                        f"errors: {vm.errors() or 'none'}\n" + vm.mock.format_trace())
    return host, guest
