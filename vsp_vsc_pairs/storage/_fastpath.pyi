"""Type stub for the compiled storage fast path (``_fastpath.pyx``)."""

from __future__ import annotations

from collections import deque
from collections.abc import Buffer, Callable, Sequence
from typing import Any, final

__all__ = ["BlockCore", "Slot", "SrbFastPath"]

@final
class SrbFastPath:
    served: int
    def __init__(
        self,
        fd: int,
        block_shift: int,
        block_count: int,
        max_transfer: int,
        writable: bool,
        queue_depth: int,
        guest_view: Callable[[int, int], memoryview] | None,
    ) -> None: ...
    def reply(self, payload: Buffer, views: Sequence[Buffer]) -> bytes | None: ...
    def serve(self, channel: Any, packet: Any) -> bool: ...

@final
class Slot:
    device: BlockCore
    gpa: int
    pages: int
    pfns: tuple[int, ...]
    view: memoryview
    ranges: dict[int, tuple[tuple[int, int, tuple[int, ...]], ...]]
    views: dict[int, memoryview]
    callback: Callable[[memoryview | None, BaseException | None], Any] | None
    payload: bytes
    nbytes: int
    reading: bool
    request: Any
    complete: Callable[[Any], None]
    def __init__(self, device: BlockCore) -> None: ...
    def reserve(self, nbytes: int) -> None: ...
    def range_for(self, nbytes: int) -> tuple[tuple[int, int, tuple[int, ...]], ...]: ...
    def release(self) -> None: ...
    def _complete_rw(self, packet: Any) -> None: ...
    def _complete_general(self, packet: Any) -> None: ...

class BlockCore:
    channel: Any
    kernel: Any
    protocol: Any
    closed_reason: str | None
    block_count: int
    block_size: int
    max_transfer_bytes: int
    _free: list[Slot]
    _waiting: deque[tuple[Any, ...]]
    _shift: int
    def _set_templates(
        self, read10: bytes, write10: bytes, read16: bytes, write16: bytes
    ) -> None: ...
    def read_async(
        self,
        lba: int,
        count: int,
        callback: Callable[[memoryview | None, BaseException | None], Any],
    ) -> None: ...
    def write_async(
        self,
        lba: int,
        data: Buffer,
        callback: Callable[[memoryview | None, BaseException | None], Any],
    ) -> None: ...
    def _start_rw(
        self,
        slot: Slot,
        write: bool,
        lba: int,
        count: int,
        nbytes: int,
        data: memoryview | None,
        callback: Callable[[memoryview | None, BaseException | None], Any],
    ) -> None: ...
    def _done(self, slot: Slot) -> None: ...
