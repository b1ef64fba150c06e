"""VID services: policies plugins add to VID (hook ``winhv_vid_services``).

A service sees every partition VID is asked to make, may refuse it (admission), and hears
when one is created or destroyed. VID asks every service in order; the first refusal wins and
nothing is created.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from winhv.drivers.vid._vid import Vid, VidPartition

__all__ = ["MemoryReserve", "VidService"]


class VidService:
    """Base class of a VID service. Override what the policy needs."""

    name: ClassVar[str] = ""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)

    def admit(self, vid: Vid, name: str, memory_mb: int, processors: int) -> str | None:
        """Return a reason to refuse creating this partition, or None to allow it."""
        return None

    def partition_created(self, vid: Vid, partition: VidPartition) -> None:
        """A partition is up (memory mapped, VPs created)."""

    def partition_destroyed(self, vid: Vid, partition: VidPartition) -> None:
        """A partition is gone and its memory back in the root's pool."""


class MemoryReserve(VidService):
    """Keep ``reserve_mb`` of the root's RAM free: refuse a VM that would eat into it.

    Without such a floor a host that overcommits runs the root out of pages for its own
    structures (rings, SynIC pages, hypercall pages) and fails in worse places.
    """

    name = "memory-reserve"

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self.reserve_mb = int(self.config.get("reserve_mb", 64))
        if self.reserve_mb < 0:
            raise ValueError(f"reserve_mb must be >= 0, got {self.reserve_mb}")
        self.refused: list[str] = []

    def admit(self, vid: Vid, name: str, memory_mb: int, processors: int) -> str | None:
        free_mb = vid.root.allocator.free_pages >> 8
        if free_mb - memory_mb < self.reserve_mb:
            reason = (f"{name}: {memory_mb} MiB would leave {free_mb - memory_mb} MiB of root "
                      f"memory free, below the {self.reserve_mb} MiB reserve")
            self.refused.append(reason)
            return reason
        return None
