"""The key-value pair exchange IC (icmsgtype 2, fact sheet §5.7).

**Wire.** A KVP body starts with ``operation u8, pool u8, pad u16`` and continues by operation:

* GET / SET: a value record (2572 bytes): ``value_type u32, key_size u32, value_size u32,
  key[512], value[2048]``;
* DELETE: ``key_size u32, key[512]`` (516 bytes);
* ENUMERATE: ``index u32`` then a value record (2576 bytes).

Keys and string values are UTF-16LE with a terminating NUL counted in the size (``key_size =
2 * (characters + 1)``), at most 512 and 2048 bytes. Integer values are REG_DWORD (type 4,
4 bytes) or a 64-bit type, which Linux calls REG_U64 = 8 and OpenVMM QWORD = 11 (⚠ §8.12): the
host sends 8 unless told otherwise; the guest accepts both. Like OpenVMM, the host always sends
the 2580-byte ENUMERATE-sized body, whatever the operation; the guest answers in place.

**Statuses.** The guest answers S_OK; S_CONT (= NO_MORE_ITEMS) when a key is not found, an
enumeration index is past the end, or a key or value does not fit a pool record once converted
to UTF-8 (the Linux daemon's answer to oversize data); E_FAIL for a malformed record (odd or
oversize sizes, a missing NUL, bad UTF-16, an unknown value type, a body too short for its
operation); INVALIDARG for a pool number outside 0..4; NOT_SUPPORTED for the IP-info operations
(4, 5), which this implementation does not carry, and unknown operations.

**Host** (:class:`KvpHost`): :meth:`~KvpHost.get`, :meth:`~KvpHost.set`,
:meth:`~KvpHost.delete`, :meth:`~KvpHost.enumerate` and :meth:`~KvpHost.enumerate_all` (which
walks index 0, 1, ... until the guest ends it with a non-S_OK status). One transaction is
outstanding at a time; each call's result arrives as a :class:`KvpResult` (and
:class:`KvpEnumeration` for a walk). A malformed answer raises
:class:`~winhv.vsp_vsc_pairs.ic.IcProtocolError`.

**Guest** (:class:`KvpGuest`): keeps the pools in the Linux daemon's files
(:mod:`~winhv.vsp_vsc_pairs.ic.kvp_pool`), one per pool. As in Linux, everything is stored as a
UTF-8 string (integers as their decimal text) and returned as REG_SZ, and the AUTO pool (2) is
enumerated from intrinsic items the guest is given rather than from its file.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Final

from ._framework import IcEvent, IcGuestProtocol, IcHostProtocol, IcStep, IcTransaction
from ._icmsg import IC_BY_NAME, IcHeader, IcSpec, IcStatus, IcVersion
from ._pipe import IcProtocolError
from .kvp_pool import KvpPoolError, KvpPoolStore, encode_record

__all__ = [
    "KVP_DELETE",
    "KVP_DELETE_BODY_SIZE",
    "KVP_ENUMERATE_BODY_SIZE",
    "KVP_GET_SET_BODY_SIZE",
    "KVP_HEADER",
    "KVP_MAX_KEY_SIZE",
    "KVP_MAX_VALUE_SIZE",
    "KVP_MESSAGE_SIZE",
    "KVP_VALUE",
    "KVP_VALUE_SIZE",
    "KvpDeleted",
    "KvpEnumeration",
    "KvpGuest",
    "KvpHost",
    "KvpOperation",
    "KvpPool",
    "KvpResult",
    "KvpStored",
    "KvpValue",
    "KvpValueError",
    "KvpValueType",
    "kvp_pool",
]

#: operation u8, pool u8, pad u16 (Linux ``include/uapi/linux/hyperv.h``: ``struct hv_kvp_hdr
#: { __u8 operation; __u8 pool; __u16 pad; } __attribute__((packed))``; OpenVMM's 2-byte
#: header plus data has the same totals for the non-IP messages, §8.11).
KVP_HEADER: Final = struct.Struct("<BBH")
#: value_type, key_size, value_size u32; key[512]; value[2048] (``hv_kvp_exchg_msg_value``).
KVP_VALUE: Final = struct.Struct("<III512s2048s")
KVP_VALUE_SIZE: Final = KVP_VALUE.size
#: key_size u32, key[512] (``hv_kvp_msg_delete``).
KVP_DELETE: Final = struct.Struct("<I512s")
_INDEX: Final = struct.Struct("<I")
_U32: Final = struct.Struct("<I")
_U64: Final = struct.Struct("<Q")
KVP_MAX_KEY_SIZE: Final = 512
KVP_MAX_VALUE_SIZE: Final = 2048
#: Minimum body per operation, header included (§5.7).
KVP_GET_SET_BODY_SIZE: Final = KVP_HEADER.size + KVP_VALUE_SIZE
KVP_DELETE_BODY_SIZE: Final = KVP_HEADER.size + KVP_DELETE.size
KVP_ENUMERATE_BODY_SIZE: Final = KVP_HEADER.size + _INDEX.size + KVP_VALUE_SIZE
#: What the host sends for every operation (the largest non-IP body, as OpenVMM).
KVP_MESSAGE_SIZE: Final = KVP_ENUMERATE_BODY_SIZE
#: Offsets of the record (GET/SET/ENUMERATE) and of the index (ENUMERATE) in a body.
_RECORD_AT: Final = KVP_HEADER.size
_ENUM_RECORD_AT: Final = KVP_HEADER.size + _INDEX.size
#: Longest strings the Linux guest sends back, in UTF-16 code units (``MAX / 2 - 2``).
_GUEST_KEY_UNITS: Final = KVP_MAX_KEY_SIZE // 2 - 2
_GUEST_VALUE_UNITS: Final = KVP_MAX_VALUE_SIZE // 2 - 2


class KvpOperation(IntEnum):
    """``operation`` (§5.7)."""

    GET = 0
    SET = 1
    DELETE = 2
    ENUMERATE = 3
    GET_IP_INFO = 4
    SET_IP_INFO = 5


class KvpPool(IntEnum):
    """``pool`` (§5.7)."""

    EXTERNAL = 0
    GUEST = 1
    AUTO = 2
    AUTO_EXTERNAL = 3
    AUTO_INTERNAL = 4


class KvpValueType(IntEnum):
    """``value_type`` (§5.7); U64 is Linux's 64-bit type, QWORD OpenVMM's.

    The sheet flags the 64-bit code as unsure (§8.12); Linux ``include/uapi/linux/hyperv.h``
    defines ``REG_SZ 1``, ``REG_U32 4``, ``REG_U64 8``, while 11 is Windows' ``REG_QWORD``
    that OpenVMM sends: the guest accepts both, the host sends ``U64`` unless told.
    """

    STRING = 1
    EXPAND_STRING = 2
    U32 = 4
    U64 = 8
    QWORD = 11


#: A KVP value as the host API takes and reports it.
KvpValue = str | int


class KvpValueError(ValueError):
    """A key or value the host was asked to send that the protocol cannot carry."""


@dataclass(frozen=True, slots=True)
class KvpResult(IcEvent):
    """The guest's answer to one host request.

    ``value`` is set for a successful GET or ENUMERATE (``key`` is the enumerated key then);
    ``index`` for ENUMERATE. ``ok`` is ``status == S_OK``.
    """

    operation: KvpOperation
    pool: int
    status: int
    key: str | None = None
    value: KvpValue | None = None
    index: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == IcStatus.S_OK

    @property
    def absent(self) -> bool:
        """The guest has no such key or index (it answered S_CONT / NO_MORE_ITEMS)."""
        return self.status == IcStatus.S_CONT

    @property
    def status_name(self) -> str:
        """The status as the sheet names it (``S_OK``, ``E_FAIL``, ...) or its hex value."""
        return _status_name(self.status)


@dataclass(frozen=True, slots=True)
class KvpEnumeration(IcEvent):
    """An :meth:`KvpHost.enumerate_all` walk ended: every item, and the status that ended it
    (S_CONT / NO_MORE_ITEMS normally)."""

    pool: int
    items: tuple[tuple[str, KvpValue], ...]
    status: int

    @property
    def complete(self) -> bool:
        """The walk reached the end of the pool (S_CONT) rather than failing midway."""
        return self.status == IcStatus.S_CONT

    @property
    def status_name(self) -> str:
        """The status that ended the walk, named as in :attr:`KvpResult.status_name`."""
        return _status_name(self.status)


def _status_name(status: int) -> str:
    try:
        return IcStatus(status).name
    except ValueError:
        return f"{status:#010x}"


def kvp_pool(pool: KvpPool | int | str) -> KvpPool | int:
    """A pool given as :class:`KvpPool`, its number, or its name in any case (``"external"``,
    ``"auto-external"``, ``"2"``): the number to send. Raises :class:`KvpValueError` naming
    the pools for anything else."""
    if isinstance(pool, str):
        text = pool.strip().upper().replace("-", "_")
        if text.isdigit():
            return _pool(int(text))
        try:
            return KvpPool[text]
        except KeyError:
            names = ", ".join(f"{p.name.lower().replace('_', '-')} ({p.value})"
                              for p in KvpPool)
            raise KvpValueError(f"KVP pool: found {pool!r}, expected one of {names} "
                                "(§5.7)") from None
    return _pool(pool)


@dataclass(frozen=True, slots=True)
class KvpStored(IcEvent):
    """Guest side: the host set ``key`` to ``value`` (as stored: a string) in ``pool``."""

    pool: int
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class KvpDeleted(IcEvent):
    """Guest side: the host deleted ``key`` from ``pool``."""

    pool: int
    key: str


@dataclass(slots=True)
class _Request:
    operation: KvpOperation
    pool: int
    key: str | None = None
    index: int | None = None
    walk: list[tuple[str, KvpValue]] | None = None


def _utf16(text: str, limit: int, what: str) -> bytes:
    """UTF-16LE of ``text`` plus NUL; :class:`KvpValueError` beyond ``limit`` bytes."""
    if "\0" in text:
        raise KvpValueError(f"KVP {what} {text[:40]!r}: contains NUL")
    try:
        data = text.encode("utf-16-le") + b"\0\0"
    except UnicodeEncodeError as exc:
        raise KvpValueError(f"KVP {what} {text[:40]!r}: not encodable as UTF-16 "
                            f"({exc.reason})") from None
    if len(data) > limit:
        raise KvpValueError(f"KVP {what} {text[:40]!r}: {len(data)} bytes as UTF-16 with NUL, "
                            f"expected at most {limit} (§5.7)")
    return data


def _decode_utf16(field: bytes, size: int, limit: int, what: str) -> str:
    """The string a record field holds; ``ValueError`` naming the problem."""
    if size % 2 or size < 2 or size > limit:
        raise ValueError(f"{what} size {size}: expected an even number of bytes, 2..{limit}")
    if field[size - 2:size] != b"\0\0":
        raise ValueError(f"{what}: no NUL terminator at the end of its {size} bytes")
    try:
        text = field[:size - 2].decode("utf-16-le")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what}: bad UTF-16 ({exc.reason} at byte {exc.start})") from None
    if "\0" in text:
        raise ValueError(f"{what}: NUL inside the string")
    return text


def _decode_value(value_type: int, size: int, field: bytes) -> KvpValue:
    if value_type in (KvpValueType.STRING, KvpValueType.EXPAND_STRING):
        return _decode_utf16(field, size, KVP_MAX_VALUE_SIZE, "value")
    if value_type == KvpValueType.U32:
        if size != 4:
            raise ValueError(f"REG_DWORD value_size {size}: expected 4")
        return int(_U32.unpack_from(field)[0])
    if value_type in (KvpValueType.U64, KvpValueType.QWORD):
        if size != 8:
            raise ValueError(f"64-bit value_size {size}: expected 8")
        return int(_U64.unpack_from(field)[0])
    raise ValueError(f"value_type {value_type}: expected 1, 2, 4, 8 or 11 (§5.7)")


def _cut_utf16(text: str, units: int) -> bytes:
    """UTF-16LE of ``text`` cut to ``units`` code units (never splitting a pair) plus NUL."""
    data = text.encode("utf-16-le", errors="surrogatepass")[:2 * units]
    if data and 0xD800 <= int.from_bytes(data[-2:], "little") <= 0xDBFF:
        data = data[:-2]
    return data + b"\0\0"


class KvpHost(IcHostProtocol):
    """Host side of KVP; see the module docstring. ``qword_type`` is the value type used for
    integers that do not fit 32 bits (Linux's 8 by default, OpenVMM's 11 on request)."""

    spec: ClassVar[IcSpec] = IC_BY_NAME["kvp"]

    def __init__(
        self,
        *,
        qword_type: KvpValueType = KvpValueType.U64,
        framework_versions: tuple[IcVersion | str, ...] | None = None,
        message_versions: tuple[IcVersion | str, ...] | None = None,
        response_timeout_ns: int | None = 5_000_000_000,
    ) -> None:
        if qword_type not in (KvpValueType.U64, KvpValueType.QWORD):
            raise ValueError(f"qword_type: found {qword_type!r}, expected U64 (8) or QWORD (11)")
        super().__init__(framework_versions=framework_versions,
                         message_versions=message_versions,
                         response_timeout_ns=response_timeout_ns)
        self.qword_type = qword_type

    # -- requests ----------------------------------------------------------------------------

    def get(self, pool: KvpPool | int | str, key: str, now: int) -> IcStep:
        """Ask for ``key`` in ``pool``; answered by a :class:`KvpResult` (value or S_CONT)."""
        pool = _pool(pool)
        key_size, key_field = _key_field(key)
        record = KVP_VALUE.pack(0, key_size, 0, key_field, b"")
        return self._send(_Request(KvpOperation.GET, pool, key), record, now)

    def set(self, pool: KvpPool | int | str, key: str, value: KvpValue, now: int, *,
            value_type: KvpValueType | None = None) -> IcStep:
        """Store ``value`` under ``key`` in ``pool``.

        Strings go as REG_SZ (or ``value_type=EXPAND_STRING``); integers as REG_DWORD when they
        fit 32 bits, else the 64-bit type (force one with ``value_type``). Raises
        :class:`KvpValueError` for a key or value the protocol cannot carry.
        """
        pool = _pool(pool)
        key_size, key_field = _key_field(key)
        vtype, data = self._value_field(value, value_type)
        record = KVP_VALUE.pack(vtype, key_size, len(data), key_field, data)
        return self._send(_Request(KvpOperation.SET, pool, key), record, now)

    def delete(self, pool: KvpPool | int | str, key: str, now: int) -> IcStep:
        """Delete ``key`` from ``pool`` (S_CONT if it was not there)."""
        pool = _pool(pool)
        return self._send(_Request(KvpOperation.DELETE, pool, key),
                          KVP_DELETE.pack(*_key_field(key)), now)

    def enumerate(self, pool: KvpPool | int | str, index: int, now: int) -> IcStep:
        """Ask for item ``index`` of ``pool`` (S_CONT past the end)."""
        return self._enumerate(_Request(KvpOperation.ENUMERATE, _pool(pool), index=index), now)

    def enumerate_all(self, pool: KvpPool | int | str, now: int) -> IcStep:
        """Walk ``pool`` from index 0 until the guest answers non-S_OK; the walk ends with one
        :class:`KvpEnumeration` (each step also reports its :class:`KvpResult`)."""
        request = _Request(KvpOperation.ENUMERATE, _pool(pool), index=0, walk=[])
        return self._enumerate(request, now)

    # -- internals ---------------------------------------------------------------------------

    def _enumerate(self, request: _Request, now: int) -> IcStep:
        index = request.index or 0
        if not 0 <= index <= 0xFFFFFFFF:
            raise KvpValueError(f"KVP enumerate index: found {index}, expected a u32")
        return self._send(request, _INDEX.pack(index) + bytes(KVP_VALUE_SIZE), now)

    def _send(self, request: _Request, payload: bytes, now: int) -> IcStep:
        return self._submit(self._body(request, payload), request, now)

    @staticmethod
    def _body(request: _Request, payload: bytes) -> bytes:
        body = KVP_HEADER.pack(request.operation, request.pool, 0) + payload
        return body + bytes(KVP_MESSAGE_SIZE - len(body))

    def _value_field(self, value: KvpValue,
                     value_type: KvpValueType | None) -> tuple[int, bytes]:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise KvpValueError(f"KVP value {value!r}: expected a str or an int")
        if isinstance(value, str):
            vtype = value_type or KvpValueType.STRING
            if vtype not in (KvpValueType.STRING, KvpValueType.EXPAND_STRING):
                raise KvpValueError(f"KVP value {value[:40]!r}: a string cannot be {vtype.name}")
            return vtype, _utf16(value, KVP_MAX_VALUE_SIZE, "value")
        vtype = value_type or (KvpValueType.U32 if 0 <= value <= 0xFFFFFFFF else self.qword_type)
        if vtype == KvpValueType.U32 and 0 <= value <= 0xFFFFFFFF:
            return vtype, _U32.pack(value)
        if vtype in (KvpValueType.U64, KvpValueType.QWORD) and 0 <= value < 1 << 64:
            return vtype, _U64.pack(value)
        raise KvpValueError(f"KVP value {value}: does not fit value type {vtype!r} (u32 "
                            "0..4294967295 or u64 0..2**64-1)")

    def _on_response(self, txn: IcTransaction, header: IcHeader, body: memoryview,
                     now: int) -> None:
        request = txn.request
        assert isinstance(request, _Request)
        status = header.status
        if status != IcStatus.S_OK or request.operation in (KvpOperation.SET,
                                                            KvpOperation.DELETE):
            self._emit(KvpResult(request.operation, request.pool, status, request.key,
                                 index=request.index))
            self._end_walk(request, status)
            return
        at = _ENUM_RECORD_AT if request.operation == KvpOperation.ENUMERATE else _RECORD_AT
        if len(body) < at + KVP_VALUE_SIZE:
            raise IcProtocolError(f"kvp {request.operation.name} response", "icmsgsize",
                                  len(body), f"at least {at + KVP_VALUE_SIZE} (§5.7)")
        vtype, key_size, value_size, key_field, value_field = KVP_VALUE.unpack_from(body, at)
        try:
            key = (request.key if request.operation == KvpOperation.GET else
                   _decode_utf16(key_field, key_size, KVP_MAX_KEY_SIZE, "key"))
            value = _decode_value(vtype, value_size, value_field)
        except ValueError as exc:
            raise IcProtocolError(f"kvp {request.operation.name} response", "value record",
                                  str(exc), "a well-formed record (§5.7)") from None
        self._emit(KvpResult(request.operation, request.pool, status, key, value, request.index))
        if request.walk is not None:
            assert key is not None
            assert request.index is not None
            request.walk.append((key, value))
            if request.index == 0xFFFFFFFF:
                self._end_walk(request, status)
            else:
                following = _Request(KvpOperation.ENUMERATE, request.pool,
                                     index=request.index + 1, walk=request.walk)
                payload = _INDEX.pack(request.index + 1) + bytes(KVP_VALUE_SIZE)
                self._enqueue(self._body(following, payload), following,
                              timeout_ns=txn.timeout_ns, first=True)

    def _on_timeout(self, txn: IcTransaction, now: int) -> None:
        request = txn.request
        assert isinstance(request, _Request)
        self._end_walk(request, int(IcStatus.E_FAIL))

    def _end_walk(self, request: _Request, status: int) -> None:
        if request.walk is not None:
            self._emit(KvpEnumeration(request.pool, tuple(request.walk), status))


def _pool(pool: KvpPool | int | str) -> int:
    if isinstance(pool, str):
        return int(kvp_pool(pool))
    if isinstance(pool, bool) or not isinstance(pool, int) or not 0 <= pool <= 0xFF:
        raise KvpValueError(f"KVP pool: found {pool!r}, expected 0..4 (§5.7)")
    return int(pool)


def _key_field(key: str) -> tuple[int, bytes]:
    data = _utf16(key, KVP_MAX_KEY_SIZE, "key")
    return len(data), data


class KvpGuest(IcGuestProtocol):
    """Guest side of KVP: pools in the daemon's files under ``pool_dir``.

    ``auto_items`` are the AUTO pool's intrinsic ``(key, value)`` pairs, served by index like
    the daemon's FullyQualifiedDomainName, OSName, ... (§5.7). Call :meth:`close` (or use the
    ``store``'s context) to close the files.
    """

    spec: ClassVar[IcSpec] = IC_BY_NAME["kvp"]

    def __init__(
        self,
        pool_dir: str | os.PathLike[str],
        *,
        auto_items: Sequence[tuple[str, str]] = (),
        framework_versions: tuple[IcVersion | str, ...] | None = None,
        message_versions: tuple[IcVersion | str, ...] | None = None,
    ) -> None:
        super().__init__(framework_versions=framework_versions,
                         message_versions=message_versions)
        self.store = KvpPoolStore(pool_dir)
        self.auto_items = tuple(auto_items)

    def close(self) -> None:
        """Close the pool files."""
        self.store.close()

    def _on_request(self, header: IcHeader, body: memoryview, now: int) -> int:
        if len(body) < KVP_HEADER.size:
            return self._refuse(header, IcStatus.E_FAIL,
                                f"KVP body of {len(body)} bytes, expected at least 4")
        operation, pool, _pad = KVP_HEADER.unpack_from(body)
        handler = _HANDLERS.get(operation)
        if handler is None:
            return self._refuse(header, IcStatus.NOT_SUPPORTED,
                                f"KVP operation {operation} is not supported")
        if pool >= len(KvpPool):
            return self._refuse(header, IcStatus.INVALIDARG,
                                f"KVP pool {pool}, expected 0..{len(KvpPool) - 1}")
        need = _NEEDS[operation]
        if len(body) < need:
            return self._refuse(header, IcStatus.E_FAIL,
                                f"KVP {KvpOperation(operation).name} body of {len(body)} bytes, "
                                f"expected at least {need} (§5.7)")
        try:
            status, reason = handler(self, pool, body)
        except ValueError as exc:
            return self._refuse(header, IcStatus.E_FAIL, f"KVP {KvpOperation(operation).name}: "
                                f"{exc}")
        if status != IcStatus.S_OK:
            return self._refuse(header, status, reason)
        return int(status)

    # Each handler returns (status, reason for a non-S_OK status); ValueError means E_FAIL.

    def _get(self, pool: int, body: memoryview) -> tuple[IcStatus, str]:
        _vtype, key_size, _vsize, key_field, _value = KVP_VALUE.unpack_from(body, _RECORD_AT)
        key = _decode_utf16(key_field, key_size, KVP_MAX_KEY_SIZE, "key")
        value = self.store.pool(pool).get(key)
        if value is None:
            return IcStatus.S_CONT, f"key {key[:40]!r} not in pool {pool}"
        self._write_record(body, _RECORD_AT, None, value)
        return IcStatus.S_OK, ""

    def _set(self, pool: int, body: memoryview) -> tuple[IcStatus, str]:
        vtype, key_size, value_size, key_field, value_field = KVP_VALUE.unpack_from(
            body, _RECORD_AT)
        key = _decode_utf16(key_field, key_size, KVP_MAX_KEY_SIZE, "key")
        value = _decode_value(vtype, value_size, value_field)
        text = value if isinstance(value, str) else str(value)
        try:
            encode_record(key, text)
        except KvpPoolError as exc:
            return IcStatus.S_CONT, f"does not fit a pool record: {exc}"
        self.store.pool(pool).set(key, text)
        self._emit(KvpStored(pool, key, text))
        return IcStatus.S_OK, ""

    def _delete(self, pool: int, body: memoryview) -> tuple[IcStatus, str]:
        key_size, key_field = KVP_DELETE.unpack_from(body, KVP_HEADER.size)
        key = _decode_utf16(key_field, key_size, KVP_MAX_KEY_SIZE, "key")
        if not self.store.pool(pool).delete(key):
            return IcStatus.S_CONT, f"key {key[:40]!r} not in pool {pool}"
        self._emit(KvpDeleted(pool, key))
        return IcStatus.S_OK, ""

    def _enumerate(self, pool: int, body: memoryview) -> tuple[IcStatus, str]:
        (index,) = _INDEX.unpack_from(body, KVP_HEADER.size)
        items = (list(self.auto_items) if pool == KvpPool.AUTO and self.auto_items
                 else self.store.pool(pool).read())
        if index >= len(items):
            return IcStatus.S_CONT, f"index {index} is past the {len(items)} items of pool {pool}"
        key, value = items[index]
        self._write_record(body, _ENUM_RECORD_AT, key, value)
        return IcStatus.S_OK, ""

    @staticmethod
    def _write_record(body: memoryview, at: int, key: str | None, value: str) -> None:
        """Fill a value record in place as Linux does: REG_SZ, UTF-16LE, sizes with the NUL."""
        value_data = _cut_utf16(value, _GUEST_VALUE_UNITS)
        _U32.pack_into(body, at, KvpValueType.STRING)
        if key is not None:
            key_data = _cut_utf16(key, _GUEST_KEY_UNITS)
            _U32.pack_into(body, at + 4, len(key_data))
            body[at + 12:at + 12 + KVP_MAX_KEY_SIZE] = key_data.ljust(KVP_MAX_KEY_SIZE, b"\0")
        _U32.pack_into(body, at + 8, len(value_data))
        start = at + 12 + KVP_MAX_KEY_SIZE
        body[start:start + KVP_MAX_VALUE_SIZE] = value_data.ljust(KVP_MAX_VALUE_SIZE, b"\0")


_HANDLERS: Final = {
    KvpOperation.GET: KvpGuest._get,
    KvpOperation.SET: KvpGuest._set,
    KvpOperation.DELETE: KvpGuest._delete,
    KvpOperation.ENUMERATE: KvpGuest._enumerate,
}
_NEEDS: Final = {
    KvpOperation.GET: KVP_GET_SET_BODY_SIZE,
    KvpOperation.SET: KVP_GET_SET_BODY_SIZE,
    KvpOperation.DELETE: KVP_DELETE_BODY_SIZE,
    KvpOperation.ENUMERATE: KVP_ENUMERATE_BODY_SIZE,
}
