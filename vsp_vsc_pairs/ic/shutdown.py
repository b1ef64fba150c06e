"""The shutdown IC (icmsgtype 3, fact sheet §5.5): the host asks the guest to shut down.

The body (2060 bytes) is ``reason_code u32, timeout_seconds u32, flags u32, display message
[2048]``. Flags: bit 0 force, bit 1 restart, bit 2 hibernate, so 0 = shutdown, 2 = reboot,
4 = hibernate, plus 1 for force. The guest answers S_OK when it will comply, E_FAIL for an
invalid request, for hibernate when it does not support it, or when its application refuses.

The host side only asks and reports the answer (or a timeout); making the VM go Stopping -> Off,
and the hard stop after ``timeout_s``, is the VM manager's job. The guest side asks an
application callback and reports a :class:`ShutdownRequested` event; acting on it is the guest
OS's job.

The display message is written as UTF-16LE, NUL-terminated and NUL-padded (a Windows WCHAR
string of at most 1023 characters). The sources give the field only as 2048 bytes and OpenVMM
always sends zeros, so that encoding is this project's choice; the guest accepts any bytes
there and decodes what it can.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntFlag
from typing import ClassVar, Final

from ._framework import (
    IcEvent,
    IcGuestProtocol,
    IcHostProtocol,
    IcStep,
    IcTransaction,
)
from ._icmsg import IC_BY_NAME, IcHeader, IcSpec, IcStatus, IcVersion

__all__ = [
    "SHTDN_REASON_FLAG_PLANNED",
    "SHUTDOWN_BODY",
    "SHUTDOWN_BODY_SIZE",
    "SHUTDOWN_FIXED",
    "SHUTDOWN_MESSAGE_SIZE",
    "ShutdownAnswered",
    "ShutdownFlags",
    "ShutdownGuest",
    "ShutdownHost",
    "ShutdownKind",
    "ShutdownRequest",
    "ShutdownRequested",
    "ShutdownTimedOut",
]

#: reason_code u32, timeout_seconds u32, flags u32 (§5.5).
SHUTDOWN_FIXED: Final = struct.Struct("<III")
SHUTDOWN_MESSAGE_SIZE: Final = 2048
SHUTDOWN_BODY: Final = struct.Struct(f"<III{SHUTDOWN_MESSAGE_SIZE}s")
SHUTDOWN_BODY_SIZE: Final = SHUTDOWN_BODY.size
#: The reason OpenVMM sends (Windows SDK ``SHTDN_REASON_FLAG_PLANNED``, §5.5).
SHTDN_REASON_FLAG_PLANNED: Final = 0x80000000


class ShutdownFlags(IntFlag):
    """The ``flags`` word (§5.5)."""

    FORCE = 0x1
    RESTART = 0x2
    HIBERNATE = 0x4


class ShutdownKind(Enum):
    """What the host asks for."""

    SHUTDOWN = "shutdown"
    REBOOT = "reboot"
    HIBERNATE = "hibernate"


_KIND_FLAGS: Final = {
    ShutdownKind.SHUTDOWN: ShutdownFlags(0),
    ShutdownKind.REBOOT: ShutdownFlags.RESTART,
    ShutdownKind.HIBERNATE: ShutdownFlags.HIBERNATE,
}
_FLAG_KINDS: Final = {int(v): k for k, v in _KIND_FLAGS.items()}


@dataclass(frozen=True, slots=True)
class ShutdownRequest:
    """One shutdown request, as the host sends it and the guest reads it."""

    kind: ShutdownKind
    reason: int = SHTDN_REASON_FLAG_PLANNED
    timeout_s: int = 0
    force: bool = False
    message: str = ""

    @property
    def flags(self) -> int:
        """The wire ``flags`` word."""
        return int(_KIND_FLAGS[self.kind] | (ShutdownFlags.FORCE if self.force else 0))

    def pack(self) -> bytes:
        """The 2060-byte body. ``ValueError`` for out-of-range numbers or a message longer
        than 1023 UTF-16 code units."""
        for name, value in (("reason", self.reason), ("timeout_s", self.timeout_s)):
            if not 0 <= value <= 0xFFFFFFFF:
                raise ValueError(f"shutdown {name}: found {value}, expected a u32")
        text = self.message.encode("utf-16-le")
        if len(text) + 2 > SHUTDOWN_MESSAGE_SIZE:
            raise ValueError(f"shutdown message: found {len(text) // 2} UTF-16 code units, "
                             f"expected at most {SHUTDOWN_MESSAGE_SIZE // 2 - 1}")
        return SHUTDOWN_BODY.pack(self.reason, self.timeout_s, self.flags, text)


@dataclass(frozen=True, slots=True)
class ShutdownAnswered(IcEvent):
    """The guest answered ``request``; ``accepted`` is ``status == S_OK``."""

    request: ShutdownRequest
    status: int
    accepted: bool


@dataclass(frozen=True, slots=True)
class ShutdownTimedOut(IcEvent):
    """The guest did not answer ``request`` in time (the VM manager may now stop it hard)."""

    request: ShutdownRequest


@dataclass(frozen=True, slots=True)
class ShutdownRequested(IcEvent):
    """Guest side: the host asked for ``request``; ``accepted`` is what the guest answered."""

    request: ShutdownRequest
    accepted: bool


class ShutdownHost(IcHostProtocol):
    """Host side: :meth:`request` a shutdown, reboot or hibernate; see the answer as an event.

    Requests made before negotiation completes are sent once it does; a second request waits
    for the first to be answered. ``response_timeout_ns`` bounds the wait for the answer.
    """

    spec: ClassVar[IcSpec] = IC_BY_NAME["shutdown"]

    def request(self, kind: ShutdownKind | str, now: int, *,
                reason: int = SHTDN_REASON_FLAG_PLANNED, timeout_s: int = 0,
                force: bool = False, message: str = "") -> IcStep:
        """Ask the guest for ``kind`` (``"shutdown"``, ``"reboot"`` or ``"hibernate"``)."""
        request = ShutdownRequest(ShutdownKind(kind), reason, timeout_s, force, message)
        return self._submit(request.pack(), request, now)

    def _on_response(self, txn: IcTransaction, header: IcHeader, body: memoryview,
                     now: int) -> None:
        assert isinstance(txn.request, ShutdownRequest)
        self._emit(ShutdownAnswered(txn.request, header.status,
                                    header.status == IcStatus.S_OK))

    def _on_timeout(self, txn: IcTransaction, now: int) -> None:
        assert isinstance(txn.request, ShutdownRequest)
        self._emit(ShutdownTimedOut(txn.request))


class ShutdownGuest(IcGuestProtocol):
    """Guest side: validate the request, ask ``decide`` (default: accept), answer.

    ``hibernate_supported=False`` (Linux's default) answers E_FAIL to hibernate requests.
    """

    spec: ClassVar[IcSpec] = IC_BY_NAME["shutdown"]

    def __init__(
        self,
        decide: Callable[[ShutdownRequest], bool] | None = None,
        *,
        hibernate_supported: bool = False,
        framework_versions: tuple[IcVersion | str, ...] | None = None,
        message_versions: tuple[IcVersion | str, ...] | None = None,
    ) -> None:
        super().__init__(framework_versions=framework_versions,
                         message_versions=message_versions)
        self.decide = decide
        self.hibernate_supported = hibernate_supported

    def _on_request(self, header: IcHeader, body: memoryview, now: int) -> int:
        if len(body) < SHUTDOWN_FIXED.size:
            return self._refuse(header, IcStatus.E_FAIL,
                                f"shutdown body of {len(body)} bytes, expected at least "
                                f"{SHUTDOWN_FIXED.size}")
        reason, timeout_s, flags = SHUTDOWN_FIXED.unpack_from(body)
        kind = _FLAG_KINDS.get(flags & ~int(ShutdownFlags.FORCE))
        if kind is None:
            return self._refuse(header, IcStatus.E_FAIL,
                                f"shutdown flags {flags:#x}, expected 0..5 (§5.5)")
        raw = bytes(body[SHUTDOWN_FIXED.size:SHUTDOWN_FIXED.size + SHUTDOWN_MESSAGE_SIZE])
        raw = raw[:len(raw) & ~1]
        end = next((i for i in range(0, len(raw), 2) if raw[i:i + 2] == b"\0\0"), len(raw))
        message = raw[:end].decode("utf-16-le", errors="replace")
        request = ShutdownRequest(kind, reason, timeout_s, bool(flags & ShutdownFlags.FORCE),
                                  message)
        if kind is ShutdownKind.HIBERNATE and not self.hibernate_supported:
            self._emit(ShutdownRequested(request, False))
            return self._refuse(header, IcStatus.E_FAIL, "hibernate is not supported")
        accepted = True if self.decide is None else bool(self.decide(request))
        self._emit(ShutdownRequested(request, accepted))
        if not accepted:
            return self._refuse(header, IcStatus.E_FAIL, "the guest application refused")
        return int(IcStatus.S_OK)
