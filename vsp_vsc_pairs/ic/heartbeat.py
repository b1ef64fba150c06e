"""The heartbeat IC (icmsgtype 1, fact sheet §5.4): is the guest alive?

The host sends a heartbeat request every ``period_ns`` carrying a 64-bit sequence number; the
guest answers in place with the sequence number plus one. The host tracks the answers and keeps
a health state:

* ``NO_CONTACT`` -- the guest has never answered (the initial state);
* ``OK`` -- the last answer came within ``lost_after`` periods;
* ``LOST`` -- the guest answered before, but not for ``lost_after`` periods.

Each request times out after one period, so a guest that stops answering still sees a new
request (with a new transaction id and sequence number) every period, and a late answer to an
old one is dropped rather than counted.

Layouts (§5.4, ⚠ the sources differ): the host sends Linux's (= Windows') 40-byte body,
``seq_num u64`` then ``reserved u32[8]``. OpenVMM's 16-byte form puts ``application_state
u32`` at offset 8, where Linux has ``reserved[0]``; the host reads that word when it is present
and reports it (0, unknown, from a Linux guest). Like Linux, the guest needs only the first 8
bytes and leaves the rest as received.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import ClassVar, Final

from ._framework import (
    IcEvent,
    IcGuestProtocol,
    IcHostProtocol,
    IcTransaction,
)
from ._icmsg import IC_BY_NAME, IcHeader, IcSpec, IcStatus, IcVersion
from ._pipe import IcProtocolError

__all__ = [
    "DEFAULT_HEARTBEAT_PERIOD_NS",
    "HEARTBEAT_LINUX",
    "HEARTBEAT_LINUX_SIZE",
    "HEARTBEAT_OVMM",
    "HEARTBEAT_OVMM_SIZE",
    "ApplicationState",
    "HeartbeatAnswered",
    "HeartbeatGuest",
    "HeartbeatHealth",
    "HeartbeatHealthChanged",
    "HeartbeatHost",
]

#: Linux ``heartbeat_msg_data``: seq_num u64 @0, reserved u32[8] @8 (40 bytes; Linux
#: ``include/linux/hyperv.h``: ``struct heartbeat_msg_data { u64 seq_num; u32 reserved[8]; }
#: __packed``).
HEARTBEAT_LINUX: Final = struct.Struct("<Q8I")
HEARTBEAT_LINUX_SIZE: Final = HEARTBEAT_LINUX.size
#: OpenVMM ``HeartbeatMessage``: sequence_number u64 @0, application_state u32 @8, reserved[4].
HEARTBEAT_OVMM: Final = struct.Struct("<QI4x")
HEARTBEAT_OVMM_SIZE: Final = HEARTBEAT_OVMM.size
_SEQ: Final = struct.Struct("<Q")
_STATE: Final = struct.Struct("<I")
#: The Linux driver's comment: the host sends a heartbeat about every 2 s (§5.4).
DEFAULT_HEARTBEAT_PERIOD_NS: Final = 2_000_000_000
_MASK64: Final = (1 << 64) - 1


class HeartbeatHealth(Enum):
    """The host's view of the guest (see the module docstring)."""

    NO_CONTACT = "no-contact"
    OK = "ok"
    LOST = "lost"


class ApplicationState(IntEnum):
    """OpenVMM's ``application_state`` word (§5.4)."""

    UNKNOWN = 0
    HEALTHY = 1
    CRITICAL = 2
    STOPPED = 3


@dataclass(frozen=True, slots=True)
class HeartbeatAnswered(IcEvent):
    """The guest answered the heartbeat that carried ``sequence`` with ``sequence + 1``.

    ``application_state`` is the raw word at body offset 8 (``None`` if the body is shorter).
    """

    sequence: int
    application_state: int | None
    status: int
    at: int


@dataclass(frozen=True, slots=True)
class HeartbeatHealthChanged(IcEvent):
    """The health state changed from ``old`` to ``new`` at ``at`` (ns)."""

    old: HeartbeatHealth
    new: HeartbeatHealth
    at: int


class HeartbeatHost(IcHostProtocol):
    """Host side: periodic requests and the health state.

    ``period_ns``: time between requests (also each request's timeout). ``lost_after``: how
    many periods without an answer make an answering guest LOST. ``first_sequence``: the
    sequence number of the first request.
    """

    spec: ClassVar[IcSpec] = IC_BY_NAME["heartbeat"]

    def __init__(
        self,
        *,
        period_ns: int = DEFAULT_HEARTBEAT_PERIOD_NS,
        lost_after: int = 3,
        first_sequence: int = 0,
        framework_versions: tuple[IcVersion | str, ...] | None = None,
        message_versions: tuple[IcVersion | str, ...] | None = None,
    ) -> None:
        if period_ns <= 0:
            raise ValueError(f"heartbeat period_ns: found {period_ns}, expected > 0")
        if lost_after < 1:
            raise ValueError(f"heartbeat lost_after: found {lost_after}, expected >= 1")
        super().__init__(framework_versions=framework_versions,
                         message_versions=message_versions, response_timeout_ns=period_ns)
        self.period_ns = period_ns
        self.lost_after = lost_after
        self.health = HeartbeatHealth.NO_CONTACT
        #: Virtual time of the last valid answer, and the sequence number it carried.
        self.last_answer_at: int | None = None
        self.last_sequence: int | None = None
        self._next_sequence = first_sequence & _MASK64
        self._next_send: int | None = None

    def _on_ready(self, now: int) -> None:
        self._next_send = now

    def _poll(self, now: int) -> None:
        self._update_health(now)
        if self._next_send is not None and now >= self._next_send and self.pending is None:
            sequence = self._next_sequence
            self._next_sequence = (sequence + 1) & _MASK64
            self._next_send = now + self.period_ns
            self._enqueue(HEARTBEAT_LINUX.pack(sequence, *([0] * 8)), sequence)

    def _wakeup(self) -> int | None:
        times = [t for t in (self._next_send, self._lost_at()) if t is not None]
        return min(times) if times else None

    def _on_response(self, txn: IcTransaction, header: IcHeader, body: memoryview,
                     now: int) -> None:
        if len(body) < _SEQ.size:
            raise IcProtocolError("heartbeat response", "icmsgsize", len(body),
                                  f"at least {_SEQ.size} (seq_num u64, §5.4)")
        (answer,) = _SEQ.unpack_from(body)
        sent = txn.request
        assert isinstance(sent, int)
        expected = (sent + 1) & _MASK64
        if header.status == IcStatus.S_OK and answer != expected:
            raise IcProtocolError("heartbeat response", "seq_num", answer,
                                  f"{expected} (the request's {sent} + 1, §5.4)")
        state = (_STATE.unpack_from(body, 8)[0] if len(body) >= HEARTBEAT_OVMM_SIZE else None)
        self._emit(HeartbeatAnswered(sent, state, header.status, now))
        if header.status == IcStatus.S_OK:
            self.last_answer_at = now
            self.last_sequence = answer
            self._set_health(HeartbeatHealth.OK, now)

    def _lost_at(self) -> int | None:
        if self.health is HeartbeatHealth.OK and self.last_answer_at is not None:
            return self.last_answer_at + self.lost_after * self.period_ns
        return None

    def _update_health(self, now: int) -> None:
        lost_at = self._lost_at()
        if lost_at is not None and now >= lost_at:
            self._set_health(HeartbeatHealth.LOST, now)

    def _set_health(self, new: HeartbeatHealth, now: int) -> None:
        if new is not self.health:
            old, self.health = self.health, new
            self._emit(HeartbeatHealthChanged(old, new, now))


class HeartbeatGuest(IcGuestProtocol):
    """Guest side: answer with the sequence number plus one, in place (§5.4)."""

    spec: ClassVar[IcSpec] = IC_BY_NAME["heartbeat"]

    def __init__(self, *, framework_versions: tuple[IcVersion | str, ...] | None = None,
                 message_versions: tuple[IcVersion | str, ...] | None = None) -> None:
        super().__init__(framework_versions=framework_versions,
                         message_versions=message_versions)
        #: Number of heartbeats answered.
        self.answered = 0

    def _on_request(self, header: IcHeader, body: memoryview, now: int) -> int:
        if len(body) < _SEQ.size:
            return self._refuse(header, IcStatus.E_FAIL,
                                f"heartbeat body of {len(body)} bytes, expected at least 8")
        (sequence,) = _SEQ.unpack_from(body)
        _SEQ.pack_into(body, 0, (sequence + 1) & _MASK64)
        self.answered += 1
        return int(IcStatus.S_OK)
