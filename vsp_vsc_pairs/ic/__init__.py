"""Integration Components: heartbeat, shutdown, timesync and KVP, both sides, without I/O.

An IC is a pipe-mode VMBus channel carrying ``pipe header | icmsg header | body`` messages
(fact sheet §4.6, §5). This package holds the wire formats and the protocol state machines of
the host and the guest side of each IC; the VMBus channel drivers wrap them.

* wire: :func:`pipe_frame`/:func:`pipe_unframe` (§4.6), :class:`IcHeader`,
  :func:`encode_message`/:func:`decode_message`, the enums :class:`IcMessageType`,
  :class:`IcFlags`, :class:`IcStatus`, and :class:`IcVersion`;
* :data:`IC_TABLE`: the one table of ICs (name, message type, interface and instance GUIDs,
  versions each side offers) that descriptions and negotiation lists derive from;
  :data:`IC_PROTOCOLS` pairs each row's name with its host and guest classes;
* negotiation (§5.2): :class:`NegotiateMessage`, :func:`choose_versions` (guest),
  :func:`check_negotiate_response` (host);
* the machines: :class:`IcHostProtocol` and :class:`IcGuestProtocol` are the bases; each call
  takes a payload or the time and returns an :class:`IcStep` (payloads to send, events).
  A peer that breaks the protocol raises :class:`IcProtocolError`: close the channel;
* the ICs: :mod:`.heartbeat`, :mod:`.shutdown`, :mod:`.timesync`, :mod:`.kvp`, and the Linux
  KVP daemon's pool files in :mod:`.kvp_pool`;
* :class:`IcLoopback`: a host and a guest machine back to back in memory, for tests.

Time is always an argument (virtual nanoseconds, as the scheduler's clock); nothing here reads
the wall clock, sleeps or touches a ring.
"""

from __future__ import annotations

from ._framework import (
    DEFAULT_RESPONSE_TIMEOUT_NS,
    IcEvent,
    IcGuestProtocol,
    IcHostProtocol,
    IcLateResponse,
    IcNegotiated,
    IcNegotiationFailed,
    IcRequestAbandoned,
    IcRequestRefused,
    IcState,
    IcStep,
    IcTransaction,
    IcTransactionTimedOut,
)
from ._icmsg import (
    IC_BY_NAME,
    IC_BY_TYPE,
    IC_PREFIX_SIZE,
    IC_TABLE,
    ICMSG_HEADER,
    ICMSG_HEADER_SIZE,
    MAX_IC_MESSAGE_SIZE,
    IcFlags,
    IcHeader,
    IcMessageType,
    IcSpec,
    IcStatus,
    IcVersion,
    decode_message,
    encode_message,
)
from ._loopback import IcLoopback, PayloadFilter
from ._negotiate import (
    NEGOTIATE_FIXED,
    NEGOTIATE_RESPONSE_SIZE,
    NEGOTIATE_VERSION,
    NegotiatedVersions,
    NegotiateMessage,
    check_negotiate_response,
    choose_versions,
    negotiate_response_body,
)
from ._pipe import (
    MAX_PIPE_PAYLOAD,
    PIPE_HEADER,
    PIPE_HEADER_SIZE,
    IcProtocolError,
    PipePacketType,
    pipe_frame,
    pipe_unframe,
)
from ._protocols import IC_PROTOCOLS
from .heartbeat import HeartbeatGuest, HeartbeatHost
from .kvp import KvpGuest, KvpHost
from .shutdown import ShutdownGuest, ShutdownHost
from .timesync import TimesyncGuest, TimesyncHost

__all__ = [
    "DEFAULT_RESPONSE_TIMEOUT_NS",
    "ICMSG_HEADER",
    "ICMSG_HEADER_SIZE",
    "IC_BY_NAME",
    "IC_BY_TYPE",
    "IC_PREFIX_SIZE",
    "IC_PROTOCOLS",
    "IC_TABLE",
    "MAX_IC_MESSAGE_SIZE",
    "MAX_PIPE_PAYLOAD",
    "NEGOTIATE_FIXED",
    "NEGOTIATE_RESPONSE_SIZE",
    "NEGOTIATE_VERSION",
    "PIPE_HEADER",
    "PIPE_HEADER_SIZE",
    "HeartbeatGuest",
    "HeartbeatHost",
    "IcEvent",
    "IcFlags",
    "IcGuestProtocol",
    "IcHeader",
    "IcHostProtocol",
    "IcLateResponse",
    "IcLoopback",
    "IcMessageType",
    "IcNegotiated",
    "IcNegotiationFailed",
    "IcProtocolError",
    "IcRequestAbandoned",
    "IcRequestRefused",
    "IcSpec",
    "IcState",
    "IcStatus",
    "IcStep",
    "IcTransaction",
    "IcTransactionTimedOut",
    "IcVersion",
    "KvpGuest",
    "KvpHost",
    "NegotiateMessage",
    "NegotiatedVersions",
    "PayloadFilter",
    "PipePacketType",
    "ShutdownGuest",
    "ShutdownHost",
    "TimesyncGuest",
    "TimesyncHost",
    "check_negotiate_response",
    "choose_versions",
    "decode_message",
    "encode_message",
    "negotiate_response_body",
    "pipe_frame",
    "pipe_unframe",
]
