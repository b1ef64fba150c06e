"""Version negotiation (icmsgtype 0): the message and the algorithm of both sides (§5.2).

The host opens every IC with a NEGOTIATE request whose body is ``icframe_vercnt u16,
icmsg_vercnt u16, reserved u32`` followed by the framework versions and then the message
versions, each ``major u16, minor u16``. The guest walks its own preference lists and picks the
first framework version and the first message version the host offered; it answers with
``icmsgsize = 0x10`` and counts 1/1 (the two chosen versions) or 0/0 when there is no common
version. The host accepts only 1/1 and only versions it offered.

:func:`choose_versions` is the guest's algorithm; :func:`check_negotiate_response` is the host's
check, which returns a :class:`NegotiatedVersions` or a reason string for an
``IcNegotiationFailed`` event (a guest with nothing in common is not a protocol violation).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Self

from ._icmsg import IcVersion
from ._pipe import IcProtocolError

__all__ = [
    "NEGOTIATE_FIXED",
    "NEGOTIATE_RESPONSE_SIZE",
    "NEGOTIATE_VERSION",
    "NegotiateMessage",
    "NegotiatedVersions",
    "check_negotiate_response",
    "choose_versions",
    "negotiate_response_body",
]

#: icframe_vercnt u16, icmsg_vercnt u16, reserved u32 (§5.2).
NEGOTIATE_FIXED: Final = struct.Struct("<HHI")
#: One icversion_data entry: major u16, minor u16.
NEGOTIATE_VERSION: Final = struct.Struct("<HH")
#: The guest's answer always has icmsgsize 0x10: the fixed part and two version entries.
NEGOTIATE_RESPONSE_SIZE: Final = 0x10


@dataclass(frozen=True, slots=True)
class NegotiatedVersions:
    """The framework and message version both sides agreed on."""

    framework: IcVersion
    message: IcVersion


@dataclass(frozen=True, slots=True)
class NegotiateMessage:
    """An ``icmsg_negotiate`` body: version lists (a response carries one of each, or none)."""

    framework_versions: tuple[IcVersion, ...]
    message_versions: tuple[IcVersion, ...]
    reserved: int = 0

    def pack(self, *, min_size: int = 0) -> bytes:
        """``8 + 4 * (fw + msg)`` bytes, zero-padded to ``min_size``."""
        out = bytearray(NEGOTIATE_FIXED.pack(len(self.framework_versions),
                                             len(self.message_versions), self.reserved))
        for version in (*self.framework_versions, *self.message_versions):
            out += NEGOTIATE_VERSION.pack(version.major, version.minor)
        if len(out) < min_size:
            out += bytes(min_size - len(out))
        return bytes(out)

    @classmethod
    def unpack(cls, body: bytes | bytearray | memoryview, *, what: str) -> Self:
        """Parse a body, checking the counts against its size; ``what`` names it in errors."""
        if len(body) < NEGOTIATE_FIXED.size:
            raise IcProtocolError(what, "icmsgsize", len(body),
                                  f"at least {NEGOTIATE_FIXED.size} (§5.2)")
        fw_count, msg_count, reserved = NEGOTIATE_FIXED.unpack_from(body)
        needed = NEGOTIATE_FIXED.size + NEGOTIATE_VERSION.size * (fw_count + msg_count)
        if needed > len(body):
            raise IcProtocolError(
                what, "icframe_vercnt/icmsg_vercnt", f"{fw_count}/{msg_count}",
                f"counts whose {needed} bytes fit the {len(body)}-byte body (§5.2)")
        entries = [IcVersion(*NEGOTIATE_VERSION.unpack_from(body, NEGOTIATE_FIXED.size + 4 * i))
                   for i in range(fw_count + msg_count)]
        return cls(tuple(entries[:fw_count]), tuple(entries[fw_count:]), reserved)


def choose_versions(
    offer: NegotiateMessage,
    framework_preference: Sequence[IcVersion],
    message_preference: Sequence[IcVersion],
) -> NegotiatedVersions | None:
    """The guest's algorithm (Linux ``vmbus_prep_negotiate_resp``, §5.2).

    The first framework version in ``framework_preference`` that ``offer`` lists, and likewise
    for the message version; ``None`` if either has no match.
    """
    framework = next((v for v in framework_preference if v in offer.framework_versions), None)
    message = next((v for v in message_preference if v in offer.message_versions), None)
    if framework is None or message is None:
        return None
    return NegotiatedVersions(framework, message)


def negotiate_response_body(choice: NegotiatedVersions | None) -> bytes:
    """The guest's 16-byte answer: counts 1/1 with ``choice``, or 0/0 and zeros (§5.2)."""
    if choice is None:
        return NegotiateMessage((), ()).pack(min_size=NEGOTIATE_RESPONSE_SIZE)
    return NegotiateMessage((choice.framework,), (choice.message,)).pack()


def check_negotiate_response(
    body: bytes | bytearray | memoryview,
    offered_framework: Sequence[IcVersion],
    offered_message: Sequence[IcVersion],
) -> NegotiatedVersions | str:
    """The host's check of the guest's answer.

    Returns the agreed versions, or a reason (counts other than 1/1, or a version the host did
    not offer). Raises :class:`IcProtocolError` for a body too short for its counts.
    """
    answer = NegotiateMessage.unpack(body, what="negotiate response")
    counts = (len(answer.framework_versions), len(answer.message_versions))
    if counts != (1, 1):
        offered = (f"framework {_listing(offered_framework)}, "
                   f"message {_listing(offered_message)}")
        if counts == (0, 0):
            return f"the guest supports none of the offered versions ({offered})"
        return (f"the guest answered with version counts {counts[0]}/{counts[1]}, "
                f"expected 1/1 (§5.2); offered {offered}")
    framework, message = answer.framework_versions[0], answer.message_versions[0]
    if framework not in offered_framework:
        return (f"the guest chose framework version {framework}, which the host did not offer "
                f"({_listing(offered_framework)})")
    if message not in offered_message:
        return (f"the guest chose message version {message}, which the host did not offer "
                f"({_listing(offered_message)})")
    return NegotiatedVersions(framework, message)


def _listing(versions: Sequence[IcVersion]) -> str:
    return ", ".join(str(v) for v in versions) or "none"
