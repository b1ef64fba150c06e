"""What the mock hypervisor records: one ordered log of typed records, and its queries.

Every record has a sequence number (``seq``, its place in the whole log) and the virtual time
it happened at (``time_ns``, the scheduler's clock), so a test can ask not only *what* happened
but in which order. Records are frozen values; payloads are copied when recorded (a ring payload
is a view that is only valid during the callback).

Record kinds and where each is taken:

* :class:`HypercallRecord`: every hypercall through the bridge, with its caller and status
  (the bridge's tracer hook, fact sheet §1.2/§1.3 for the control and result words);
* :class:`MessageRecord`: every VMBus control message (fact sheet §3.2), when a side's protocol
  sends it (``stage="sent"``) and when the other side's VMBus driver gets it
  (``stage="received"``); a fault applied to it is named in ``fault``;
* :class:`SignalRecord`: every channel interrupt a side raises (``WinHvSignalEvent``, §4.4);
* :class:`PacketRecord`: every ring packet a channel writes or reads (§4.3);
* :class:`NoteRecord`: faults firing and framework errors, so the trace tells the whole story.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

from winhv._calls import HYPERCALLS
from winhv._status import HvStatus
from winhv.drivers.vmbus._messages import MESSAGES, ChannelMessage, ChannelMessageType
from winhv.drivers.vmbus._ring import PacketType

__all__ = [
    "TO_GUEST",
    "TO_HOST",
    "HypercallRecord",
    "MessageRecord",
    "NoteRecord",
    "PacketRecord",
    "Record",
    "SignalRecord",
    "format_trace",
    "message_type",
    "payload_text",
]

#: Direction of a message, signal or packet sent by the host (root) to the guest.
TO_GUEST = "to_guest"
#: Direction of a message, signal or packet sent by the guest to the host.
TO_HOST = "to_host"
_ARROW = {TO_GUEST: "host->guest", TO_HOST: "guest->host"}
#: Bytes of a payload shown in a trace line.
_SHOWN = 24


def payload_text(data: bytes, limit: int = _SHOWN) -> str:
    """A short printable form of ``data``: ``b'abc'`` up to ``limit`` bytes, then ``+N``."""
    text = repr(bytes(data[:limit]))
    return text if len(data) <= limit else f"{text}+{len(data) - limit}"


def message_type(value: str | int | type[ChannelMessage] | ChannelMessage) -> ChannelMessageType:
    """The channel message type named by ``value``.

    Accepts a :class:`ChannelMessageType`, its number, its enum name (``"OPEN_CHANNEL"``), the
    fact sheet's Linux name (``"OPENCHANNEL"``, §3.2), or a message class or instance.
    """
    if isinstance(value, ChannelMessage) or (isinstance(value, type)
                                             and issubclass(value, ChannelMessage)):
        return value.TYPE
    if isinstance(value, int):
        return ChannelMessageType(value)
    key = value.strip().upper()
    if key in ChannelMessageType.__members__:
        return ChannelMessageType[key]
    for spec in MESSAGES.values():
        if spec.name == key:
            return spec.type
    names = ", ".join(spec.name for spec in MESSAGES.values())
    raise ValueError(f"unknown VMBus message type {value!r}: expected one of {names}")


@dataclass(frozen=True, slots=True)
class HypercallRecord:
    """One hypercall: who made it, the call and its result (fact sheet §1.2–§1.5)."""

    seq: int
    time_ns: int
    #: ``"root"`` or the VM's name; ``partition_id`` is the caller's partition id.
    caller: str
    partition_id: int
    code: int
    fast: bool
    rep_count: int
    #: The result status (an :class:`~winhv.HvStatus` when the ABI names it).
    status: HvStatus | int
    reps_done: int
    kind = "hypercall"

    @property
    def name(self) -> str:
        """The TLFS name (``HvCallPostMessage``), or the code in hex if the ABI has none."""
        info = HYPERCALLS.get(self.code)
        return info.name if info is not None else f"HvCall{self.code:#06x}"

    def line(self) -> str:
        status = self.status.name if isinstance(self.status, HvStatus) else f"{self.status:#x}"
        reps = f" reps {self.reps_done}/{self.rep_count}" if self.rep_count else ""
        return f"hypercall {self.name}({self.code:#06x}) by {self.caller} -> {status}{reps}"


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One VMBus control message on one VM's bus, as sent or as received."""

    seq: int
    time_ns: int
    vm: str
    #: :data:`TO_GUEST` or :data:`TO_HOST`.
    direction: str
    #: ``"sent"`` (the protocol emitted it) or ``"received"`` (the other side's bus got it).
    stage: str
    type: ChannelMessageType
    #: The decoded message (``None`` for received bytes that did not decode).
    message: ChannelMessage | None
    #: The fault applied to it: ``"dropped"``, ``"delayed"``, ``"duplicated"``, ``"reordered"``.
    fault: str | None = None
    kind = "message"

    @property
    def name(self) -> str:
        """The fact sheet's name of the type (``"OPENCHANNEL"``)."""
        spec = MESSAGES.get(self.type)
        return spec.name if spec is not None else self.type.name

    @property
    def relid(self) -> int | None:
        """The channel the message is about, if it names one (``child_relid``)."""
        return getattr(self.message, "child_relid", None)

    def line(self) -> str:
        relid = f" relid={self.relid}" if self.relid is not None else ""
        fault = f" [{self.fault}]" if self.fault else ""
        return f"message {self.vm} {_ARROW[self.direction]} {self.stage} {self.name}{relid}{fault}"


@dataclass(frozen=True, slots=True)
class SignalRecord:
    """One channel interrupt raised by one side (``WinHvSignalEvent``, fact sheet §2.5, §4.4)."""

    seq: int
    time_ns: int
    vm: str
    direction: str
    relid: int
    channel: str
    fault: str | None = None
    kind = "signal"

    def line(self) -> str:
        fault = f" [{self.fault}]" if self.fault else ""
        return f"signal  {self.vm} {_ARROW[self.direction]} relid={self.relid}{fault}"


@dataclass(frozen=True, slots=True)
class PacketRecord:
    """One ring packet (fact sheet §4.3), when written (``stage="sent"``) or read."""

    seq: int
    time_ns: int
    vm: str
    direction: str
    stage: str
    relid: int
    channel: str
    type: PacketType
    trans_id: int
    #: The payload as the ring carries it (padded to 8 bytes when read).
    payload: bytes
    kind = "packet"

    def line(self) -> str:
        kind = self.type.name if isinstance(self.type, enum.Enum) else str(self.type)
        return (f"packet  {self.vm} {_ARROW[self.direction]} {self.stage} relid={self.relid} "
                f"{kind} tid={self.trans_id} {payload_text(self.payload)}")


@dataclass(frozen=True, slots=True)
class NoteRecord:
    """A fault that fired, or an error the framework reported (``what`` says which)."""

    seq: int
    time_ns: int
    what: str
    text: str
    kind = "note"

    def line(self) -> str:
        return f"{self.what:<7} {self.text}"


#: Any record of the log.
Record: TypeAlias = HypercallRecord | MessageRecord | SignalRecord | PacketRecord | NoteRecord
R = TypeVar("R")


def select(records: Iterable[Any], kind: type[R], **where: Any) -> list[R]:
    """The records of ``kind`` whose attributes equal every ``where`` value that is not None
    (a callable value is a predicate on the attribute)."""
    tests: list[tuple[str, Callable[[Any], bool]]] = []
    for key, want in where.items():
        if want is None:
            continue
        if callable(want) and not isinstance(want, enum.Enum | type):
            tests.append((key, want))
        else:
            tests.append((key, lambda value, want=want: value == want))
    return [r for r in records if isinstance(r, kind)
            and all(test(getattr(r, key)) for key, test in tests)]


def format_trace(records: Iterable[Record], *, last: int | None = 40,
                 hypercalls: bool = False) -> str:
    """The trace as text, one line per record: ``seq``, virtual time in µs, what happened.

    Hypercalls are left out unless ``hypercalls`` (every message and signal is one, so they
    would drown the rest); the last ``last`` lines are kept (``None`` keeps all).
    """
    lines = [f"{r.seq:>6} {r.time_ns / 1000:>10.3f}us  {r.line()}" for r in records
             if hypercalls or not isinstance(r, HypercallRecord)]
    if last is not None and len(lines) > last:
        lines = [f"   ... {len(lines) - last} earlier line(s)", *lines[-last:]]
    return "\n".join(lines) if lines else "   (nothing recorded)"
