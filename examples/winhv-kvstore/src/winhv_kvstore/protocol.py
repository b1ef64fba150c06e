"""The kvstore wire format.

Request (guest -> host, always with COMPLETION_REQUESTED)::

    offset 0  u8   op          Op below
    offset 1  u8   reserved    0
    offset 2  u16  key_len     1..MAX_KEY
    offset 4  u32  value_len   0..MAX_VALUE (PUT only; 0 otherwise)
    offset 8       key bytes, then value bytes

Completion (host -> guest)::

    offset 0  u32  status      Status below
    offset 4  u32  value_len   bytes of value that follow (GET only)
    offset 8       value bytes

Both carry explicit lengths because the ring pads every payload to 8 bytes.
"""

from __future__ import annotations

import enum
import struct
import uuid

#: The interface type GUID of the offer (made up for this example).
INTERFACE_ID = uuid.UUID("c0ffee00-6b76-4e73-8a1f-6b7673746f72")
MAX_KEY = 256
MAX_VALUE = 2048

REQUEST = struct.Struct("<BBHI")
REPLY = struct.Struct("<II")


class Op(enum.IntEnum):
    GET = 1
    PUT = 2
    DELETE = 3


class Status(enum.IntEnum):
    OK = 0
    NOT_FOUND = 1
    FULL = 2
    BAD_REQUEST = 3


class KvError(Exception):
    """A request the host answered with a status other than OK, or a malformed payload."""

    def __init__(self, status: Status | int, what: str) -> None:
        self.status = status
        name = Status(status).name if status in Status._value2member_map_ else str(status)
        super().__init__(f"{what}: {name}")


def request(op: Op, key: bytes, value: bytes = b"") -> bytes:
    return REQUEST.pack(op, 0, len(key), len(value)) + key + value


def parse_request(payload: bytes) -> tuple[Op, bytes, bytes]:
    """``(op, key, value)``; :class:`KvError` with BAD_REQUEST for anything malformed."""
    raw = bytes(payload)
    if len(raw) < REQUEST.size:
        raise KvError(Status.BAD_REQUEST, f"request of {len(raw)} bytes")
    op, reserved, key_len, value_len = REQUEST.unpack_from(raw)
    if op not in Op._value2member_map_ or reserved:
        raise KvError(Status.BAD_REQUEST, f"op {op} / reserved {reserved}")
    if not 1 <= key_len <= MAX_KEY or value_len > MAX_VALUE:
        raise KvError(Status.BAD_REQUEST, f"key_len {key_len} / value_len {value_len}")
    if REQUEST.size + key_len + value_len > len(raw):
        raise KvError(Status.BAD_REQUEST, "lengths exceed the payload")
    key = raw[REQUEST.size:REQUEST.size + key_len]
    return Op(op), key, raw[REQUEST.size + key_len:REQUEST.size + key_len + value_len]


def reply(status: Status, value: bytes = b"") -> bytes:
    return REPLY.pack(status, len(value)) + value


def parse_reply(payload: bytes) -> tuple[Status, bytes]:
    raw = bytes(payload)
    if len(raw) < REPLY.size:
        raise KvError(Status.BAD_REQUEST, f"reply of {len(raw)} bytes")
    status, value_len = REPLY.unpack_from(raw)
    if status not in Status._value2member_map_ or value_len > len(raw) - REPLY.size:
        raise KvError(Status.BAD_REQUEST, f"reply status {status} / value_len {value_len}")
    return Status(status), raw[REPLY.size:REPLY.size + value_len]
