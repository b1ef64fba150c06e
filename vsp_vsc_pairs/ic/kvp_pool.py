"""The Linux KVP daemon's pool files: read and write them byte-compatibly (fact sheet §5.7).

``hv_kvp_daemon`` keeps each KVP pool in its own file, ``/var/lib/hyperv/.kvp_pool_<N>`` for
N = 0..4. A file is a flat array of fixed 2560-byte records with no header: ``key[512]`` then
``value[2048]``, each a UTF-8 string, NUL-terminated and NUL-padded. The daemon takes a POSIX
write lock on the whole file (``fcntl F_SETLKW``, ``F_WRLCK``) around every read or rewrite and
rewrites the whole array after a change: a set modifies a record in place or appends one, a
delete moves the following records up.

This module does the same, so a pool written here is read by the daemon and tools built on the
same format, and the other way round. Two details follow the daemon on purpose:

* reading stops at the last whole record (the daemon's ``fread`` ignores a partial tail);
* only the bytes before a field's first NUL count: the daemon's delete copies records with
  ``strcpy``, which can leave stale bytes after the terminator.

Locks are ``fcntl.lockf`` locks on one file descriptor kept open per pool; POSIX locks belong to
the process, so they order this process against the daemon and other processes, not threads.
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Final, Self

__all__ = [
    "DEFAULT_POOL_DIR",
    "KVP_POOL_COUNT",
    "KVP_POOL_KEY_SIZE",
    "KVP_POOL_RECORD",
    "KVP_POOL_RECORD_SIZE",
    "KVP_POOL_VALUE_SIZE",
    "KvpPoolError",
    "KvpPoolFile",
    "KvpPoolStore",
    "decode_pool",
    "decode_record",
    "encode_pool",
    "encode_record",
    "pool_file_name",
]

#: ``HV_KVP_EXCHANGE_MAX_KEY_SIZE`` / ``MAX_VALUE_SIZE``: the record's field sizes (§5.7).
KVP_POOL_KEY_SIZE: Final = 512
KVP_POOL_VALUE_SIZE: Final = 2048
#: ``struct kvp_record``: key[512], value[2048], no padding. Checked against Linux
#: ``tools/hv/hv_kvp_daemon.c``: ``struct kvp_record { char key[HV_KVP_EXCHANGE_MAX_KEY_SIZE];
#: char value[HV_KVP_EXCHANGE_MAX_VALUE_SIZE]; }``, written whole with ``fwrite(records,
#: sizeof(struct kvp_record), num_records)`` under an ``F_WRLCK``/``F_SETLKW`` lock
#: (``kvp_update_file``), read back with ``fread`` in blocks of ``ENTRIES_PER_BLOCK`` (50).
KVP_POOL_RECORD: Final = struct.Struct(f"{KVP_POOL_KEY_SIZE}s{KVP_POOL_VALUE_SIZE}s")
KVP_POOL_RECORD_SIZE: Final = KVP_POOL_RECORD.size
#: Pools 0..4 (Linux ``KVP_POOL_COUNT``).
KVP_POOL_COUNT: Final = 5
#: Where the daemon keeps the pool files.
DEFAULT_POOL_DIR: Final = "/var/lib/hyperv"


class KvpPoolError(ValueError):
    """A key or value that does not fit a pool record, or a record that is not valid UTF-8."""


def pool_file_name(pool: int) -> str:
    """``.kvp_pool_<pool>``, the daemon's file name for ``pool``."""
    if not 0 <= pool < KVP_POOL_COUNT:
        raise KvpPoolError(f"pool: found {pool}, expected 0..{KVP_POOL_COUNT - 1}")
    return f".kvp_pool_{pool}"


def _field(text: str, size: int, name: str) -> bytes:
    if "\0" in text:
        raise KvpPoolError(f"{name} {text[:40]!r}: contains NUL, which ends a pool string")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise KvpPoolError(f"{name} {text[:40]!r}: not encodable as UTF-8 ({exc.reason})") from None
    if len(data) + 1 > size:
        raise KvpPoolError(f"{name} {text[:40]!r}: {len(data)} UTF-8 bytes plus NUL, expected "
                           f"at most {size} bytes")
    return data


def encode_record(key: str, value: str) -> bytes:
    """One 2560-byte record. :class:`KvpPoolError` if either string does not fit (with its
    NUL) or contains NUL."""
    return KVP_POOL_RECORD.pack(_field(key, KVP_POOL_KEY_SIZE, "key"),
                                _field(value, KVP_POOL_VALUE_SIZE, "value"))


def _text(raw: bytes, name: str, index: int) -> str:
    end = raw.find(b"\0")
    try:
        return raw[: end if end >= 0 else len(raw)].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KvpPoolError(f"record {index}: {name}: not valid UTF-8 ({exc.reason} at byte "
                           f"{exc.start})") from None


def decode_record(data: bytes | bytearray | memoryview, index: int = 0) -> tuple[str, str]:
    """``(key, value)`` from one record; ``index`` only names it in errors."""
    key, value = KVP_POOL_RECORD.unpack_from(data)
    return _text(key, "key", index), _text(value, "value", index)


def decode_pool(data: bytes | bytearray | memoryview) -> list[tuple[str, str]]:
    """Every whole record of a pool file's contents, in file order."""
    count = len(data) // KVP_POOL_RECORD_SIZE
    return [decode_record(memoryview(data)[i * KVP_POOL_RECORD_SIZE:], i) for i in range(count)]


def encode_pool(items: Iterable[tuple[str, str]]) -> bytes:
    """A pool file's contents for ``items`` in order."""
    return b"".join(encode_record(k, v) for k, v in items)


class KvpPoolFile:
    """One pool file, opened (and created, mode 0644, if ``create``) for reading and writing.

    Every public method takes the whole-file lock for its duration; :meth:`set` and
    :meth:`delete` read, change and rewrite under one lock. Close it (or use ``with``).
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        self._fd: int | None = os.open(self.path, flags, 0o644)

    def close(self) -> None:
        """Close the file (releasing any lock); idempotent."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def fd(self) -> int:
        """The open descriptor (``ValueError`` once closed)."""
        if self._fd is None:
            raise ValueError(f"KVP pool file {self.path} is closed")
        return self._fd

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the daemon's lock: a POSIX write lock on the whole file."""
        fd = self.fd
        fcntl.lockf(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)

    def _read_unlocked(self) -> list[tuple[str, str]]:
        size = os.fstat(self.fd).st_size
        return decode_pool(os.pread(self.fd, size, 0))

    def _write_unlocked(self, items: Iterable[tuple[str, str]]) -> None:
        data = encode_pool(items)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def read(self) -> list[tuple[str, str]]:
        """All ``(key, value)`` records in file order."""
        with self.locked():
            return self._read_unlocked()

    def write(self, items: Iterable[tuple[str, str]]) -> None:
        """Replace the file's contents with ``items`` (validated before anything is written)."""
        data = list(items)
        encode_pool(data)
        with self.locked():
            self._write_unlocked(data)

    def get(self, key: str) -> str | None:
        """The value stored for ``key``, or ``None``."""
        return dict(self.read()).get(key)

    def set(self, key: str, value: str) -> None:
        """Store ``value`` for ``key``: in place if present, else appended (like the daemon)."""
        encode_record(key, value)
        with self.locked():
            items = self._read_unlocked()
            for index, (existing, _) in enumerate(items):
                if existing == key:
                    items[index] = (key, value)
                    break
            else:
                items.append((key, value))
            self._write_unlocked(items)

    def delete(self, key: str) -> bool:
        """Remove ``key``, moving later records up; ``False`` if it was not there."""
        with self.locked():
            items = self._read_unlocked()
            index = next((i for i, (existing, _) in enumerate(items) if existing == key), None)
            if index is None:
                return False
            del items[index]
            self._write_unlocked(items)
            return True


class KvpPoolStore:
    """The five pool files of one guest in ``directory`` (created 0755 if missing)."""

    def __init__(self, directory: str | os.PathLike[str] = DEFAULT_POOL_DIR) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        self._files: dict[int, KvpPoolFile] = {}

    def pool(self, pool: int) -> KvpPoolFile:
        """The file of ``pool`` (0..4), opened on first use."""
        name = pool_file_name(pool)
        if pool not in self._files:
            self._files[pool] = KvpPoolFile(self.directory / name)
        return self._files[pool]

    def close(self) -> None:
        """Close every open pool file."""
        for file in self._files.values():
            file.close()
        self._files.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
