"""Backing stores: where a SCSI disk's blocks live.

``BackingStore`` is the protocol a ``ScsiDisk`` needs; ``FileBackingStore`` keeps the blocks
in a raw image file (issue #8, deliverable 3):

* created at ``size_mb`` MiB (sparse, by ``ftruncate``) if the file is missing, and never
  truncated or grown if it is present -- then its own size is the disk's size;
* opened read-only or read-write;
* ``readinto``/``write`` take the request's memoryviews and hand them straight to
  ``os.preadv``/``os.pwritev``, so data moves between guest memory and the file without an
  intermediate copy; short transfers are resumed until done;
* every access is bounds-checked before the system call: nothing is ever read or written
  outside ``0..size``, and the file's size never changes;
* ``flush`` is ``fsync``; ``unmap`` punches a hole (``fallocate(PUNCH_HOLE | KEEP_SIZE)``)
  where the file system can, else writes zeros, so unmapped blocks read back as zeros.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat
from collections.abc import Sequence
from typing import Protocol, Self, runtime_checkable

from ._buffer import BufferLike

__all__ = ["BackingStore", "BackingStoreRangeError", "FileBackingStore"]

_MIB = 1 << 20
_IOV_MAX = 1024
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_ZERO_CHUNK = bytes(_MIB)


class BackingStoreRangeError(ValueError):
    """An access that would fall outside the store: nothing was read or written."""


@runtime_checkable
class BackingStore(Protocol):
    """The byte store under a ``ScsiDisk``. Offsets and sizes are in bytes.

    Implementations raise ``BackingStoreRangeError`` for an access outside ``0..size`` (before
    touching anything), ``PermissionError`` for a write to a read-only store, and ``OSError``
    for a failed device access; the disk turns each into SCSI sense data.
    """

    @property
    def size(self) -> int:
        """Bytes in the store; fixed for its lifetime."""
        ...

    @property
    def read_only(self) -> bool:
        """Whether writes and unmaps are refused."""
        ...

    def readinto(self, offset: int, buffers: Sequence[BufferLike]) -> int:
        """Fill ``buffers`` in order from ``offset``; return the bytes read (all of them)."""
        ...

    def write(self, offset: int, buffers: Sequence[BufferLike]) -> int:
        """Write ``buffers`` in order at ``offset``; return the bytes written (all of them)."""
        ...

    def flush(self) -> None:
        """Make every completed write durable."""
        ...

    def unmap(self, offset: int, length: int) -> None:
        """Deallocate ``length`` bytes at ``offset``; they read back as zeros afterwards."""
        ...


def _fallocate() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        function = libc.fallocate
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    function.restype = ctypes.c_int
    return function


_FALLOCATE = _fallocate()


def _advance(views: list[memoryview], done: int) -> list[memoryview]:
    """The views left after the first ``done`` bytes."""
    while done and views:
        first = views[0]
        if done >= first.nbytes:
            done -= first.nbytes
            views = views[1:]
        else:
            views = [first[done:], *views[1:]]
            done = 0
    return views


class FileBackingStore:
    """A raw disk image file.

    ``FileBackingStore(path, size_mb, read_only)``: if ``path`` is missing it is created as a
    sparse file of ``size_mb`` MiB (``size_mb`` is then required, and ``read_only`` must be
    false); if present it is opened as it is, never truncated or extended, and ``size_mb`` is
    ignored. Only regular files are accepted. Use as a context manager or call ``close``.
    """

    __slots__ = ("_fd", "_path", "_read_only", "_size")

    def __init__(
        self, path: str | os.PathLike[str], size_mb: int | None = None, read_only: bool = False
    ) -> None:
        self._path = os.fspath(path)
        self._read_only = bool(read_only)
        self._fd = -1
        flags = (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC
        try:
            fd = os.open(self._path, flags)
        except FileNotFoundError:
            fd = self._create(size_mb)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ValueError(f"{self._path}: found a non-regular file, expected a raw image")
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._size = info.st_size

    def _create(self, size_mb: int | None) -> int:
        if self._read_only:
            raise FileNotFoundError(
                errno.ENOENT, "a read-only disk image must exist (it is never created)", self._path
            )
        if size_mb is None or isinstance(size_mb, bool) or not isinstance(size_mb, int):
            raise ValueError(f"size_mb: found {size_mb!r}, expected a whole number of MiB")
        if size_mb <= 0:
            raise ValueError(
                f"size_mb: found {size_mb}, expected at least 1 to create {self._path}"
            )
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.ftruncate(fd, size_mb * _MIB)
        except BaseException:
            os.close(fd)
            os.unlink(self._path)
            raise
        return fd

    # -- properties ------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The image file's path."""
        return self._path

    @property
    def size(self) -> int:
        """The image's size in bytes, fixed when it was opened."""
        return self._size

    @property
    def read_only(self) -> bool:
        """Whether the image was opened read-only."""
        return self._read_only

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called."""
        return self._fd < 0

    def fileno(self) -> int:
        """The open file descriptor."""
        self._check_open()
        return self._fd

    # -- I/O --------------------------------------------------------------------------------

    def readinto(self, offset: int, buffers: Sequence[BufferLike]) -> int:
        """Fill ``buffers`` from the image at ``offset`` with ``os.preadv``, resuming short
        reads; raise ``BackingStoreRangeError`` if the range leaves the image and ``OSError``
        (EIO) if the file ends early (it was shortened behind our back)."""
        views, total = self._prepare(offset, buffers)
        done = 0
        while views:
            batch = views if len(views) <= _IOV_MAX else views[:_IOV_MAX]
            count = os.preadv(self._fd, batch, offset + done)
            done += count
            if done == total:
                break
            if count == 0:
                raise OSError(errno.EIO, f"{self._path}: image ended at {offset + done}")
            views = _advance(views, count)
        return total

    def write(self, offset: int, buffers: Sequence[BufferLike]) -> int:
        """Write ``buffers`` at ``offset`` with ``os.pwritev``, resuming short writes; raise
        ``PermissionError`` (EROFS) if read-only, ``BackingStoreRangeError`` out of range."""
        if self._read_only or self._fd < 0:
            self._check_writable()
        views, total = self._prepare(offset, buffers)
        done = 0
        while views:
            batch = views if len(views) <= _IOV_MAX else views[:_IOV_MAX]
            count = os.pwritev(self._fd, batch, offset + done)
            done += count
            if done == total:
                break
            views = _advance(views, count)
        return total

    def flush(self) -> None:
        """``fsync`` the image (a read-only image has nothing to flush)."""
        self._check_open()
        if not self._read_only:
            os.fsync(self._fd)

    def unmap(self, offset: int, length: int) -> None:
        """Deallocate ``length`` bytes at ``offset``: punch a hole keeping the size, or write
        zeros where the file system cannot. The range reads back as zeros."""
        self._check_writable()
        self._check_range(offset, length)
        if length == 0:
            return
        if _FALLOCATE is not None:
            flags = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
            if _FALLOCATE(self._fd, flags, offset, length) == 0:
                return
        end = offset + length
        while offset < end:
            chunk = min(end - offset, _MIB)
            offset += os.pwrite(self._fd, _ZERO_CHUNK[:chunk], offset)

    def close(self) -> None:
        """Close the image; idempotent."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "ro" if self._read_only else "rw"
        return f"FileBackingStore({self._path!r}, {self._size} bytes, {mode})"

    # -- checks -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._fd < 0:
            raise ValueError(f"{self._path}: the image is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._read_only:
            raise PermissionError(errno.EROFS, "the disk image is read-only", self._path)

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self._size:
            raise BackingStoreRangeError(
                f"{self._path}: bytes {offset}..{offset + length} found, "
                f"expected a range inside 0..{self._size}"
            )

    def _prepare(self, offset: int, buffers: Sequence[BufferLike]) -> tuple[list[memoryview], int]:
        if self._fd < 0:
            self._check_open()
        views: list[memoryview] = []
        total = 0
        for buffer in buffers:
            if type(buffer) is memoryview and buffer.format == "B" and buffer.c_contiguous:
                view = buffer
            else:
                view = memoryview(buffer).cast("B")
            if view.nbytes:
                views.append(view)
                total += view.nbytes
        if offset < 0 or offset + total > self._size:
            self._check_range(offset, total)
        return views, total
