"""A physical page allocator: first fit over free runs of page numbers.

Each kernel allocates from its own guest physical pages (the root from the machine's RAM,
where VID also takes VM memory from; a guest from the RAM VID mapped for it). Allocations are
runs of contiguous page numbers, which is what rings and SynIC pages need.

An allocator made over pages known to read zero (``zeroed=True``: fresh machine RAM, or a
VM's RAM, which VID hands over zeroed) also knows which pages it has never handed out: they
still read zero, so whoever needs zeroed pages can skip clearing them
(:meth:`PageAllocator.alloc_run`). Writing every page of a new VM's rings just to zero them
was a sixth of a VM's bring-up, nearly all of it first-touch page faults.
"""

from __future__ import annotations

import bisect

__all__ = ["OutOfPages", "PageAllocator"]


class OutOfPages(MemoryError):
    """No free run of the requested length."""


class PageAllocator:
    """Free-list allocator over pages ``[first, first + count)``.

    Invariants: ``_runs`` is a sorted list of disjoint, non-adjacent ``[start, end)`` runs;
    every page at or above ``_fresh`` is free and has read zero since the allocator was made
    (``zeroed=True``; without it ``_fresh`` is past the last page, so no page is known zero).
    """

    def __init__(self, first: int, count: int, *, name: str = "",
                 zeroed: bool = False) -> None:
        if count <= 0 or first < 0:
            raise ValueError(f"bad page range {first:#x}+{count}")
        self.name = name
        self.first = first
        self.count = count
        self._runs: list[list[int]] = [[first, first + count]]
        self._fresh = first if zeroed else first + count

    @property
    def free_pages(self) -> int:
        return sum(end - start for start, end in self._runs)

    def alloc(self, count: int = 1) -> int:
        """First page of a new run of ``count`` contiguous pages."""
        return self.alloc_run(count)[0]

    def alloc_run(self, count: int = 1) -> tuple[int, int]:
        """Allocate as :meth:`alloc` does; return ``(first page, stale)``.

        The run's first ``stale`` pages may hold what an earlier owner left (they were handed
        out before); the rest were never handed out by an allocator made with ``zeroed=True``
        and read zero. Without ``zeroed``, ``stale == count``.
        """
        if count <= 0:
            raise ValueError(f"page count must be positive, got {count}")
        for i, (start, end) in enumerate(self._runs):
            if end - start >= count:
                if end - start == count:
                    del self._runs[i]
                else:
                    self._runs[i][0] = start + count
                stale = min(count, max(0, self._fresh - start))
                self._fresh = max(self._fresh, start + count)
                return start, stale
        raise OutOfPages(f"{self.name or 'allocator'}: no run of {count} free pages "
                         f"({self.free_pages} free in total)")

    def free(self, page: int, count: int = 1) -> None:
        """Return a run; double frees and foreign pages raise ValueError."""
        end = page + count
        if count <= 0 or page < self.first or end > self.first + self.count:
            raise ValueError(f"{self.name}: pages {page:#x}+{count} are not this allocator's")
        starts = [run[0] for run in self._runs]
        i = bisect.bisect_left(starts, page)
        if (i > 0 and self._runs[i - 1][1] > page) or (i < len(self._runs)
                                                      and self._runs[i][0] < end):
            raise ValueError(f"{self.name}: pages {page:#x}+{count} are already free")
        self._runs.insert(i, [page, end])
        if i + 1 < len(self._runs) and self._runs[i + 1][0] == end:
            self._runs[i][1] = self._runs[i + 1][1]
            del self._runs[i + 1]
        if i > 0 and self._runs[i - 1][1] == page:
            self._runs[i - 1][1] = self._runs[i][1]
            del self._runs[i]
