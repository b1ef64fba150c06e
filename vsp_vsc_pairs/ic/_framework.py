"""The sans-IO base of every IC: negotiation first, then one transaction at a time.

An IC is a pair of state machines, one per side, that never perform I/O and never read a
clock. Each public method takes what happened (a received packet payload, the current virtual
time ``now`` in nanoseconds) and returns an :class:`IcStep`: the packet payloads to send, in
order, and the events to report. The VMBus channel driver that wraps a machine sends the
payloads as in-band packets, forwards the events, calls :meth:`IcHostProtocol.tick` at
:meth:`IcHostProtocol.next_deadline`, and closes the channel when a method raises
:class:`IcProtocolError` (the peer broke the protocol; the message says how).

**Host** (:class:`IcHostProtocol`): :meth:`~IcHostProtocol.start` sends the NEGOTIATE request
(§5.2). Requests the IC submits before negotiation completes wait in a queue. The host keeps at
most one transaction outstanding (§5.7, OpenVMM's hosts): the next queued request goes out when
the response arrives or the transaction times out. Each request carries TRANSACTION|REQUEST and
a transaction id in ``ictransaction_id`` (0 for the negotiation, then counting up mod 256); the
Linux guest answers in place, so the id comes back and a late answer to a transaction that
already timed out is recognised and dropped (:class:`IcLateResponse`) instead of being taken
for the answer to a newer request. OpenVMM's hosts always send 0 there; any value is valid on
the wire. After negotiation every header carries the negotiated versions (§5.2 step 5).

**Guest** (:class:`IcGuestProtocol`): answers every request in place, as Linux does (§5.1):
the response is the received payload with ``status`` and ``icflags`` (TRANSACTION|RESPONSE)
rewritten and the body edited within its received length. Negotiation requests are answered
from the guest's preference lists; a message before negotiation or of another IC's type gets
E_FAIL.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar, Final, TypeVar

from ._icmsg import (
    IC_PREFIX_SIZE,
    ICMSG_HEADER_SIZE,
    IcFlags,
    IcHeader,
    IcMessageType,
    IcSpec,
    IcStatus,
    IcVersion,
    decode_message,
    encode_message,
)
from ._negotiate import (
    NEGOTIATE_RESPONSE_SIZE,
    NegotiatedVersions,
    NegotiateMessage,
    check_negotiate_response,
    choose_versions,
    negotiate_response_body,
)
from ._pipe import PIPE_HEADER, PIPE_HEADER_SIZE, IcProtocolError

__all__ = [
    "DEFAULT_RESPONSE_TIMEOUT_NS",
    "IcEvent",
    "IcGuestProtocol",
    "IcHostProtocol",
    "IcLateResponse",
    "IcNegotiated",
    "IcNegotiationFailed",
    "IcRequestAbandoned",
    "IcRequestRefused",
    "IcState",
    "IcStep",
    "IcTransaction",
    "IcTransactionTimedOut",
]

#: How long the host waits for an answer unless an IC says otherwise: 5 s, the time the Linux
#: KVP driver gives its daemon before answering the host with a failure (L-util hv_kvp.c).
DEFAULT_RESPONSE_TIMEOUT_NS: Final = 5_000_000_000
_REQUEST: Final = IcFlags.TRANSACTION | IcFlags.REQUEST
_RESPONSE: Final = IcFlags.TRANSACTION | IcFlags.RESPONSE
#: How many timed-out transactions the host remembers to recognise their late answers.
_LATE_MEMORY: Final = 8
_E = TypeVar("_E", bound="IcEvent")


class IcState(Enum):
    """Where an IC machine is: before negotiation, negotiating, ready, or failed for good."""

    IDLE = "idle"
    NEGOTIATING = "negotiating"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class IcEvent:
    """Base of every event an IC machine reports."""


@dataclass(frozen=True, slots=True)
class IcNegotiated(IcEvent):
    """Both sides agreed on these versions; the IC's own messages may flow."""

    versions: NegotiatedVersions


@dataclass(frozen=True, slots=True)
class IcNegotiationFailed(IcEvent):
    """No common version (or no answer): the IC cannot run; the channel should be closed."""

    reason: str


@dataclass(frozen=True, slots=True)
class IcTransactionTimedOut(IcEvent):
    """The guest did not answer ``request`` within its timeout; the host moved on."""

    message_type: int
    transaction_id: int
    request: object


@dataclass(frozen=True, slots=True)
class IcLateResponse(IcEvent):
    """An answer to a transaction that had already timed out arrived and was dropped."""

    message_type: int
    transaction_id: int
    status: int


@dataclass(frozen=True, slots=True)
class IcRequestAbandoned(IcEvent):
    """A queued or outstanding request that will never be answered (negotiation failed)."""

    request: object
    reason: str


@dataclass(frozen=True, slots=True)
class IcRequestRefused(IcEvent):
    """The guest answered a request with a failure ``status``; ``reason`` says why."""

    message_type: int
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class IcStep:
    """What one call of a machine produced: payloads to send (in order) and events."""

    send: tuple[bytes, ...] = ()
    events: tuple[IcEvent, ...] = ()

    def __add__(self, other: IcStep) -> IcStep:
        return IcStep(self.send + other.send, self.events + other.events)

    def events_of(self, kind: type[_E]) -> list[_E]:
        """The events of type ``kind``, in order."""
        return [e for e in self.events if isinstance(e, kind)]


@dataclass(slots=True)
class IcTransaction:
    """One host request: queued, then outstanding until answered or timed out.

    ``request`` is the IC's own description of it (what the events report back).
    """

    message_type: int
    body: bytes
    request: object
    timeout_ns: int | None
    transaction_id: int = 0
    deadline: int | None = None


def _versions(given: Iterable[IcVersion | str] | None,
              default: tuple[IcVersion, ...]) -> tuple[IcVersion, ...]:
    versions = default if given is None else tuple(IcVersion.parse(v) for v in given)
    if not versions:
        raise ValueError("an IC needs at least one version in each list")
    return versions


class _Outbox:
    """Collects what one public call produces."""

    __slots__ = ("events", "send")

    def __init__(self) -> None:
        self.send: list[bytes] = []
        self.events: list[IcEvent] = []

    def take(self) -> IcStep:
        step = IcStep(tuple(self.send), tuple(self.events))
        self.send.clear()
        self.events.clear()
        return step


class IcHostProtocol:
    """The host side of one IC on one channel. Subclasses set :attr:`spec` and implement the
    ``_on_*`` hooks; see the module docstring for the contract.

    ``framework_versions``/``message_versions`` override what the host offers (default: the
    :data:`~winhv.vsp_vsc_pairs.ic.IC_TABLE` row); ``response_timeout_ns`` bounds every
    transaction that does not set its own (``None``: wait for ever).
    """

    spec: ClassVar[IcSpec]

    def __init__(
        self,
        *,
        framework_versions: Iterable[IcVersion | str] | None = None,
        message_versions: Iterable[IcVersion | str] | None = None,
        response_timeout_ns: int | None = DEFAULT_RESPONSE_TIMEOUT_NS,
    ) -> None:
        self.offered_framework_versions = _versions(framework_versions,
                                                    self.spec.host_framework_versions)
        self.offered_message_versions = _versions(message_versions,
                                                  self.spec.host_message_versions)
        self.response_timeout_ns = response_timeout_ns
        self.state = IcState.IDLE
        #: The agreed versions once :attr:`state` is READY.
        self.versions: NegotiatedVersions | None = None
        #: Why negotiation failed, once :attr:`state` is FAILED.
        self.failure_reason: str | None = None
        self._queue: deque[IcTransaction] = deque()
        self._pending: IcTransaction | None = None
        self._late: deque[tuple[int, int]] = deque(maxlen=_LATE_MEMORY)
        self._next_tid = 0
        self._out = _Outbox()

    # -- public driving API ------------------------------------------------------------------

    @property
    def pending(self) -> IcTransaction | None:
        """The outstanding transaction, if any."""
        return self._pending

    @property
    def queued(self) -> int:
        """How many requests wait behind the outstanding one."""
        return len(self._queue)

    def start(self, now: int) -> IcStep:
        """Send the NEGOTIATE request (call once, when the channel opens)."""
        if self.state is not IcState.IDLE:
            raise RuntimeError(f"{self.spec.name} host already started (state {self.state.value})")
        self.state = IcState.NEGOTIATING
        body = NegotiateMessage(self.offered_framework_versions,
                                self.offered_message_versions).pack()
        txn = IcTransaction(IcMessageType.NEGOTIATE, body, "negotiate", self.response_timeout_ns)
        self._transmit(txn, now)
        return self._out.take()

    def receive(self, payload: bytes | bytearray | memoryview, now: int) -> IcStep:
        """Handle one packet payload from the guest.

        Raises :class:`IcProtocolError` for anything the guest may not send: bad framing, a
        request or a packet without TRANSACTION|RESPONSE, an answer nothing is waiting for, or
        a body the IC cannot parse. The machine's state is unchanged when it raises.
        """
        self._out.take()
        header, body = decode_message(payload)
        what = f"{self.spec.name} response"
        if header.flags & _RESPONSE != _RESPONSE or header.flags & IcFlags.REQUEST:
            raise IcProtocolError(what, "icflags", f"{header.flags:#x}",
                                  f"TRANSACTION|RESPONSE ({int(_RESPONSE):#x}) without REQUEST "
                                  "(§5.1)")
        pending = self._pending
        key = (header.message_type, header.transaction_id)
        if pending is None or key != (pending.message_type, pending.transaction_id):
            if key in self._late:
                self._late.remove(key)
                self._out.events.append(IcLateResponse(*key, header.status))
                self._pump(now)
                return self._out.take()
            expected = ("no response (nothing outstanding)" if pending is None else
                        f"icmsgtype {pending.message_type}, "
                        f"transaction id {pending.transaction_id}")
            raise IcProtocolError(what, "icmsgtype/ictransaction_id",
                                  f"{header.message_type}/{header.transaction_id}", expected)
        if header.message_type == IcMessageType.NEGOTIATE:
            self._negotiated(body, now)
        else:
            self._on_response(pending, header, body, now)
        self._pending = None
        self._pump(now)
        return self._out.take()

    def tick(self, now: int) -> IcStep:
        """Advance time to ``now``: time out the outstanding transaction if due, let the IC
        send what is due (periodic requests), and send the next queued request."""
        self._out.take()
        pending = self._pending
        if pending is not None and pending.deadline is not None and now >= pending.deadline:
            self._pending = None
            self._late.append((pending.message_type, pending.transaction_id))
            if pending.message_type == IcMessageType.NEGOTIATE:
                seconds = (pending.timeout_ns or 0) / 1e9
                self._fail(f"no answer to version negotiation within {seconds:g} s")
            else:
                self._out.events.append(IcTransactionTimedOut(
                    pending.message_type, pending.transaction_id, pending.request))
                self._on_timeout(pending, now)
        self._pump(now)
        return self._out.take()

    def next_deadline(self) -> int | None:
        """When :meth:`tick` next has something to do (``None``: only on input)."""
        times = [t for t in (self._pending.deadline if self._pending else None,
                             self._wakeup() if self.state is IcState.READY else None)
                 if t is not None]
        return min(times) if times else None

    # -- for subclasses ----------------------------------------------------------------------

    def _submit(self, body: bytes, request: object, now: int, *,
                timeout_ns: int | bool | None = True) -> IcStep:
        """Queue a request of this IC's type and send it when the channel is free.

        ``timeout_ns=True`` means the machine's default. Raises ``RuntimeError`` when the IC
        has failed (the caller's mistake: check :attr:`state`).
        """
        if self.state is IcState.FAILED:
            raise RuntimeError(f"{self.spec.name} IC failed: {self.failure_reason}")
        self._out.take()
        self._enqueue(body, request, timeout_ns=timeout_ns)
        self._pump(now)
        return self._out.take()

    def _enqueue(self, body: bytes, request: object, *,
                 timeout_ns: int | bool | None = True, first: bool = False) -> None:
        """Queue a request from inside a hook (:meth:`_poll`, :meth:`_on_response`); it goes
        out when the channel is free, within the same call. ``first`` puts it ahead of the
        queue (the next step of a multi-transaction operation)."""
        timeout = self.response_timeout_ns if timeout_ns is True else timeout_ns
        assert not isinstance(timeout, bool)
        txn = IcTransaction(self.spec.message_type, body, request, timeout)
        if first:
            self._queue.appendleft(txn)
        else:
            self._queue.append(txn)

    def _emit(self, event: IcEvent) -> None:
        self._out.events.append(event)

    def _on_ready(self, now: int) -> None:
        """Negotiation succeeded (:attr:`versions` is set)."""

    def _prepare(self, txn: IcTransaction, now: int) -> bytes:
        """The body to send for ``txn`` at ``now`` (default: as queued). An IC whose body
        depends on the moment it leaves (a time sample) builds it here."""
        return txn.body

    def _on_response(self, txn: IcTransaction, header: IcHeader, body: memoryview,
                     now: int) -> None:
        """The guest answered ``txn``. Parse first, then change state; raise
        :class:`IcProtocolError` for a body the IC cannot accept."""
        raise NotImplementedError

    def _on_timeout(self, txn: IcTransaction, now: int) -> None:
        """``txn`` timed out (an :class:`IcTransactionTimedOut` was already emitted)."""

    def _poll(self, now: int) -> None:
        """Called whenever the machine runs while READY: submit what is due."""

    def _wakeup(self) -> int | None:
        """When :meth:`_poll` next wants to run (``None``: no timer)."""
        return None

    # -- internals ---------------------------------------------------------------------------

    def _negotiated(self, body: memoryview, now: int) -> None:
        result = check_negotiate_response(body, self.offered_framework_versions,
                                          self.offered_message_versions)
        if isinstance(result, str):
            self._fail(result)
            return
        self.versions = result
        self.state = IcState.READY
        self._out.events.append(IcNegotiated(result))
        self._on_ready(now)

    def _fail(self, reason: str) -> None:
        self.state = IcState.FAILED
        self.failure_reason = reason
        self._out.events.append(IcNegotiationFailed(reason))
        while self._queue:
            self._out.events.append(IcRequestAbandoned(self._queue.popleft().request, reason))

    def _pump(self, now: int) -> None:
        if self.state is not IcState.READY:
            return
        self._poll(now)
        if self._pending is None and self._queue:
            self._transmit(self._queue.popleft(), now)

    def _transmit(self, txn: IcTransaction, now: int) -> None:
        txn.transaction_id = self._next_tid
        self._next_tid = (self._next_tid + 1) & 0xFF
        txn.deadline = None if txn.timeout_ns is None else now + txn.timeout_ns
        if txn.message_type != IcMessageType.NEGOTIATE:
            txn.body = self._prepare(txn, now)
        versions = self.versions
        header = IcHeader(
            message_type=txn.message_type,
            framework=versions.framework if versions else IcVersion(0, 0),
            message=versions.message if versions else IcVersion(0, 0),
            size=len(txn.body),
            transaction_id=txn.transaction_id,
            flags=_REQUEST,
        )
        self._pending = txn
        self._out.send.append(encode_message(header, txn.body))


class IcGuestProtocol:
    """The guest side of one IC on one channel. Subclasses set :attr:`spec` and implement
    :meth:`_on_request`; see the module docstring for the contract.

    ``framework_versions``/``message_versions`` override the guest's preference lists, newest
    first (default: the :data:`~winhv.vsp_vsc_pairs.ic.IC_TABLE` row).
    """

    spec: ClassVar[IcSpec]

    def __init__(
        self,
        *,
        framework_versions: Iterable[IcVersion | str] | None = None,
        message_versions: Iterable[IcVersion | str] | None = None,
    ) -> None:
        self.framework_preference = _versions(framework_versions,
                                              self.spec.guest_framework_versions)
        self.message_preference = _versions(message_versions, self.spec.guest_message_versions)
        self.state = IcState.IDLE
        self.versions: NegotiatedVersions | None = None
        self.failure_reason: str | None = None
        self._out = _Outbox()

    def receive(self, payload: bytes | bytearray | memoryview, now: int) -> IcStep:
        """Answer one request from the host (always exactly one payload to send).

        Raises :class:`IcProtocolError` for bad framing, a response flag (the host only sends
        requests) or a malformed negotiation request.
        """
        self._out.take()
        header, body = decode_message(payload)
        if header.flags & IcFlags.RESPONSE:
            raise IcProtocolError(f"{self.spec.name} request", "icflags", f"{header.flags:#x}",
                                  "a request (RESPONSE is for the guest to set, §5.1)")
        framed_length = PIPE_HEADER_SIZE + ICMSG_HEADER_SIZE + header.size
        response = bytearray(payload)
        if header.message_type == IcMessageType.NEGOTIATE:
            offer = NegotiateMessage.unpack(body, what=f"{self.spec.name} negotiate request")
            choice = choose_versions(offer, self.framework_preference, self.message_preference)
            self._negotiate_result(choice, offer)
            answer = negotiate_response_body(choice)
            if len(response) < IC_PREFIX_SIZE + NEGOTIATE_RESPONSE_SIZE:
                response.extend(bytes(IC_PREFIX_SIZE + NEGOTIATE_RESPONSE_SIZE - len(response)))
                PIPE_HEADER.pack_into(response, 0, 1, ICMSG_HEADER_SIZE + NEGOTIATE_RESPONSE_SIZE)
            response[IC_PREFIX_SIZE:IC_PREFIX_SIZE + NEGOTIATE_RESPONSE_SIZE] = answer
            status = int(IcStatus.S_OK)
            size = NEGOTIATE_RESPONSE_SIZE
        else:
            size = header.size
            if header.message_type != self.spec.message_type:
                status = self._refuse(header, IcStatus.E_FAIL,
                                      f"icmsgtype {header.message_type} is not "
                                      f"{self.spec.name}'s ({int(self.spec.message_type)})")
            elif self.state is not IcState.READY:
                status = self._refuse(header, IcStatus.E_FAIL,
                                      "request before a successful version negotiation")
            else:
                view = memoryview(response)[IC_PREFIX_SIZE:framed_length]
                try:
                    status = int(self._on_request(header, view, now))
                finally:
                    view.release()
        answered = IcHeader(header.message_type, header.framework, header.message, size,
                            status, header.transaction_id, _RESPONSE, header.reserved)
        response[PIPE_HEADER_SIZE:IC_PREFIX_SIZE] = answered.pack()
        self._out.send.append(bytes(response))
        return self._out.take()

    # -- for subclasses ----------------------------------------------------------------------

    def _emit(self, event: IcEvent) -> None:
        self._out.events.append(event)

    def _refuse(self, header: IcHeader, status: IcStatus, reason: str) -> int:
        """Emit :class:`IcRequestRefused` and return ``status`` for the response."""
        self._out.events.append(IcRequestRefused(header.message_type, int(status), reason))
        return int(status)

    def _on_request(self, header: IcHeader, body: memoryview, now: int) -> int:
        """Handle a request of this IC's type; edit ``body`` in place (its length is fixed)
        and return the status for the response."""
        raise NotImplementedError

    def _on_negotiated(self, versions: NegotiatedVersions) -> None:
        """Negotiation chose ``versions`` (also called again on a re-negotiation)."""

    # -- internals ---------------------------------------------------------------------------

    def _negotiate_result(self, choice: NegotiatedVersions | None,
                          offer: NegotiateMessage) -> None:
        if choice is None:
            reason = (f"no common version: host offered framework "
                      f"{_listing(offer.framework_versions)} and message "
                      f"{_listing(offer.message_versions)}; guest speaks framework "
                      f"{_listing(self.framework_preference)} and message "
                      f"{_listing(self.message_preference)}")
            self.state = IcState.FAILED
            self.versions = None
            self.failure_reason = reason
            self._out.events.append(IcNegotiationFailed(reason))
            return
        self.state = IcState.READY
        self.versions = choice
        self.failure_reason = None
        self._out.events.append(IcNegotiated(choice))
        self._on_negotiated(choice)


def _listing(versions: Sequence[IcVersion]) -> str:
    return ", ".join(str(v) for v in versions) or "none"
