"""The data buffer of one SCSI request: a scatter list of memoryviews over guest memory.

A GPA-direct packet (§4.3, type 9) names the guest pages of one byte range; the VMBus layer
validates the PFNs and turns the range into memoryviews of guest memory. ``DataBuffer`` holds
those views in order and never copies them: the backing store reads into them and writes from
them with ``os.preadv``/``os.pwritev`` (zero copy between guest memory and the file), and only
the small replies (INQUIRY data, sense, capacity) are scattered into them byte by byte.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeAlias

__all__ = ["BufferLike", "DataBuffer"]

#: Anything ``memoryview()`` accepts.
BufferLike: TypeAlias = bytes | bytearray | memoryview


def _byte_view(buffer: BufferLike) -> memoryview:
    view = memoryview(buffer)
    if not view.c_contiguous:
        raise ValueError(f"buffer: found a non-contiguous {view.format!r} view, expected bytes")
    if view.format == "B" and view.ndim == 1:
        return view
    return view.cast("B")


class DataBuffer:
    """An ordered list of byte views that behaves as one buffer of ``len(self)`` bytes.

    Invariants: every view is a 1-D ``"B"`` memoryview; ``len`` is the sum of their sizes;
    slicing with ``head`` shares memory with the original views.
    """

    __slots__ = ("_length", "_views")

    _views: tuple[memoryview, ...]
    _length: int

    def __init__(self, views: Iterable[BufferLike] = ()) -> None:
        out: list[memoryview] = []
        total = 0
        for view in views:
            if not (
                type(view) is memoryview
                and view.format == "B"
                and view.ndim == 1
                and view.c_contiguous
            ):
                view = _byte_view(view)
            out.append(view)
            total += view.nbytes
        self._views = tuple(out)
        self._length = total

    @classmethod
    def of(cls, data: DataBuffer | Iterable[BufferLike] | BufferLike) -> DataBuffer:
        """``data`` itself if it is a ``DataBuffer``, one view if it is a single buffer, else a
        ``DataBuffer`` of the views ``data`` yields."""
        if isinstance(data, DataBuffer):
            return data
        if isinstance(data, (bytes, bytearray, memoryview)):
            return cls((data,))
        return cls(data)

    def __len__(self) -> int:
        return self._length

    def __repr__(self) -> str:
        return f"DataBuffer({len(self._views)} views, {self._length} bytes)"

    @property
    def views(self) -> tuple[memoryview, ...]:
        """The views, in order (for ``os.preadv``/``os.pwritev``)."""
        return self._views

    @property
    def writable(self) -> bool:
        """Whether every view may be written (a data-in buffer must be)."""
        return not any(view.readonly for view in self._views)

    def head(self, length: int) -> DataBuffer:
        """The first ``length`` bytes, sharing memory; ``length`` must be ``0..len(self)``."""
        if length == self._length:
            return self
        if not 0 <= length <= self._length:
            raise ValueError(f"length: found {length}, expected 0..{self._length}")
        out: list[memoryview] = []
        left = length
        for view in self._views:
            if left == 0:
                break
            take = min(left, view.nbytes)
            out.append(view[:take])
            left -= take
        return DataBuffer(out)

    def scatter(self, data: BufferLike) -> int:
        """Copy ``data`` into the views in order; return the bytes copied (at most ``len``)."""
        source = _byte_view(data)
        done = 0
        total = min(source.nbytes, self._length)
        for view in self._views:
            if done == total:
                break
            take = min(view.nbytes, total - done)
            view[:take] = source[done : done + take]
            done += take
        return done

    def gather(self, length: int | None = None) -> bytes:
        """A copy of the first ``length`` bytes (default all)."""
        if length is None:
            length = self._length
        return b"".join(bytes(view) for view in self.head(length).views)
