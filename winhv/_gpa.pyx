# cython: language_level=3
"""Guest physical address spaces: page-granular, bounds-checked, zero-copy.

A :class:`GpaSpace` maps a partition's guest physical page numbers (GPA >> 12) to host memory.
Backing memory comes from buffers added with :meth:`GpaSpace.add_region` (the root's RAM at
boot) or from pages of another space shared with :meth:`GpaSpace.map_from` (what
``HvCallMapGpaPages`` does: a child's RAM *is* some of the root's pages, so the root's VM worker
can reach guest memory without copying). A space can only ever reach the pages mapped into it.

Every view handed to Python is a slice of a ``memoryview`` over the backing buffer, so the
buffer stays alive as long as any view does: no dangling pointers even after an unmap.
"""

from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy, memset

import mmap

PAGE_SIZE = 4096
PAGE_SHIFT = 12


class GpaError(Exception):
    """A guest physical range is not mapped (or not contiguous) in this space."""


cdef class GpaSpace:
    """The guest physical address space of one partition.

    Invariants: ``pages[n]`` is NULL or points at 4096 bytes inside a buffer this space (or the
    space it was mapped from) keeps alive; the table never shrinks; no page number at or above
    ``max_pages`` can ever be mapped.
    """

    def __cinit__(self, name="", uint64_t max_pages=1 << 26):
        self.pages = NULL
        self.page_count = 0
        self.mapped_pages = 0
        self.max_pages = max_pages
        self._regions = []
        self.name = name

    def __dealloc__(self):
        PyMem_Free(self.pages)

    def __repr__(self):
        return f"<GpaSpace {self.name!r} mapped={self.mapped_pages} pages>"

    @property
    def mapped_page_count(self) -> int:
        """Number of mapped guest pages."""
        return self.mapped_pages

    @property
    def size_pages(self) -> int:
        """One past the highest page number the table covers."""
        return self.page_count

    cdef int _grow(self, uint64_t count) except -1:
        if count <= self.page_count:
            return 0
        if count > self.max_pages:
            raise GpaError(f"{self.name}: page {count - 1:#x} is beyond the address space "
                           f"({self.max_pages:#x} pages)")
        cdef uint64_t new_count = max(count, self.page_count * 2, 16)
        new_count = min(new_count, self.max_pages)
        cdef uint8_t** table = <uint8_t**> PyMem_Realloc(self.pages, new_count * sizeof(uint8_t*))
        if table == NULL:
            raise MemoryError()
        memset(&table[self.page_count], 0, (new_count - self.page_count) * sizeof(uint8_t*))
        self.pages = table
        self.page_count = new_count
        return 0

    def add_region(self, uint64_t first_page, buffer):
        """Back pages ``first_page ..`` with ``buffer`` (writable, length a multiple of 4096).

        Used for the root's RAM at boot. The pages must not be mapped already.
        """
        cdef memoryview mv = memoryview(buffer).cast("B")
        if mv.readonly:
            raise ValueError("region buffer must be writable")
        cdef uint64_t length = mv.nbytes
        if length == 0 or length % 4096:
            raise ValueError(f"region length {length:#x} is not a positive multiple of 4096")
        cdef uint64_t count = length >> 12
        cdef uint64_t i
        self._grow(first_page + count)
        for i in range(count):
            if self.pages[first_page + i] != NULL:
                raise GpaError(f"{self.name}: page {first_page + i:#x} is already mapped")
        cdef uint8_t[::1] typed = mv
        cdef uint8_t* base = &typed[0]
        self._regions.append((<uint64_t> base, length, mv))
        for i in range(count):
            self.pages[first_page + i] = base + (i << 12)
        self.mapped_pages += count

    cpdef bint is_mapped(self, uint64_t gpa, uint64_t size):
        """True when every byte of ``[gpa, gpa + size)`` is mapped."""
        if size == 0:
            return True
        cdef uint64_t first = gpa >> 12
        cdef uint64_t last = (gpa + size - 1) >> 12
        cdef uint64_t p
        if gpa + size < gpa or last >= self.page_count:
            return False
        for p in range(first, last + 1):
            if self.pages[p] == NULL:
                return False
        return True

    def page_pointer(self, uint64_t page):
        """Host address of guest page ``page`` (0 when unmapped); for diagnostics and tests."""
        if page >= self.page_count:
            return 0
        return <uint64_t> self.pages[page]

    def map_from(self, GpaSpace source, uint64_t source_page, uint64_t target_page,
                 uint64_t count=1):
        """Share ``count`` pages of ``source`` (from ``source_page``) at ``target_page`` here.

        Raises :class:`GpaError` when a source page is unmapped or a target page is taken;
        nothing is mapped in that case.
        """
        cdef uint64_t i
        if source_page + count > source.page_count or source_page + count < source_page:
            raise GpaError(f"{source.name}: pages {source_page:#x}+{count} are not mapped")
        for i in range(count):
            if source.pages[source_page + i] == NULL:
                raise GpaError(f"{source.name}: page {source_page + i:#x} is not mapped")
        if target_page + count < target_page:   # wraps: would index past the table
            raise GpaError(f"{self.name}: pages {target_page:#x}+{count} are beyond the "
                           f"address space ({self.max_pages:#x} pages)")
        self._grow(target_page + count)
        for i in range(count):
            if self.pages[target_page + i] != NULL:
                raise GpaError(f"{self.name}: page {target_page + i:#x} is already mapped")
        for i in range(count):
            self.pages[target_page + i] = source.pages[source_page + i]
        self.mapped_pages += count
        for region in source._regions:
            if region not in self._regions:
                self._regions.append(region)

    def unmap(self, uint64_t target_page, uint64_t count=1):
        """Unmap ``count`` pages from ``target_page``. Raises if any of them is not mapped."""
        cdef uint64_t i
        if target_page + count > self.page_count or target_page + count < target_page:
            raise GpaError(f"{self.name}: pages {target_page:#x}+{count} are not mapped")
        for i in range(count):
            if self.pages[target_page + i] == NULL:
                raise GpaError(f"{self.name}: page {target_page + i:#x} is not mapped")
        for i in range(count):
            self.pages[target_page + i] = NULL
        self.mapped_pages -= count

    cdef object _region_view(self, uint8_t* ptr, uint64_t size):
        cdef uint64_t start
        cdef uint64_t length
        for start, length, mv in self._regions:
            if start <= <uint64_t> ptr and <uint64_t> ptr + size <= start + length:
                return mv[<uint64_t> ptr - start: <uint64_t> ptr - start + size]
        raise GpaError(f"{self.name}: no backing region holds {size:#x} bytes at that page")

    cpdef object view(self, uint64_t gpa, uint64_t size):
        """A writable zero-copy ``memoryview`` of ``[gpa, gpa + size)``.

        The range may span pages as long as their backing is contiguous (the normal case: VID
        maps guest RAM in runs). Raises :class:`GpaError` when a page is unmapped or the
        backing is not contiguous.
        """
        if size == 0:
            return memoryview(b"")
        if not self.is_mapped(gpa, size):
            raise GpaError(f"{self.name}: GPA range {gpa:#x}+{size:#x} is not mapped")
        cdef uint64_t first = gpa >> 12
        cdef uint64_t last = (gpa + size - 1) >> 12
        cdef uint64_t p
        for p in range(first + 1, last + 1):
            if self.pages[p] != self.pages[p - 1] + 4096:
                raise GpaError(
                    f"{self.name}: GPA range {gpa:#x}+{size:#x} is not contiguous in host "
                    f"memory (page {p:#x})")
        return self._region_view(self.pages[first] + (gpa & 0xFFF), size)

    def contiguous(self, uint64_t gpa, uint64_t size) -> bool:
        """True when the range is mapped and its backing is one contiguous run."""
        if not self.is_mapped(gpa, size):
            return False
        cdef uint64_t p
        for p in range((gpa >> 12) + 1, ((gpa + size - 1) >> 12) + 1 if size else 0):
            if self.pages[p] != self.pages[p - 1] + 4096:
                return False
        return True

    def read(self, uint64_t gpa, uint64_t size) -> bytes:
        """Copy ``size`` bytes out of guest memory (any mapped range, contiguous or not)."""
        if not self.is_mapped(gpa, size):
            raise GpaError(f"{self.name}: GPA range {gpa:#x}+{size:#x} is not mapped")
        out = bytearray(size)
        cdef uint8_t[::1] dst = out
        cdef uint64_t done = 0
        cdef uint64_t chunk
        cdef uint64_t cur
        while done < size:
            cur = gpa + done
            chunk = min(4096 - (cur & 0xFFF), size - done)
            memcpy(&dst[done], self.pages[cur >> 12] + (cur & 0xFFF), chunk)
            done += chunk
        return bytes(out)

    def write(self, uint64_t gpa, data) -> None:
        """Copy ``data`` into guest memory (any mapped range)."""
        cdef const uint8_t[::1] src = memoryview(data).cast("B")
        cdef uint64_t size = src.shape[0]
        if not self.is_mapped(gpa, size):
            raise GpaError(f"{self.name}: GPA range {gpa:#x}+{size:#x} is not mapped")
        cdef uint64_t done = 0
        cdef uint64_t chunk
        cdef uint64_t cur
        while done < size:
            cur = gpa + done
            chunk = min(4096 - (cur & 0xFFF), size - done)
            memcpy(self.pages[cur >> 12] + (cur & 0xFFF), &src[done], chunk)
            done += chunk

    def discard(self, uint64_t gpa, uint64_t size) -> None:
        """Zero whole pages and give their backing back to the OS where it can (MADV_REMOVE).

        Used when RAM changes hands (a VM's memory freed for the next one): afterwards the
        pages read as zero either way, and untouched again they cost no memory.
        """
        if gpa & 0xFFF or size & 0xFFF:
            raise GpaError(f"{self.name}: discard needs whole pages ({gpa:#x}+{size:#x})")
        if not self.is_mapped(gpa, size):
            raise GpaError(f"{self.name}: GPA range {gpa:#x}+{size:#x} is not mapped")
        cdef uint64_t page = gpa >> 12
        cdef uint64_t end = (gpa + size) >> 12
        cdef uint64_t run
        cdef uint64_t start
        cdef uint64_t length
        while page < end:
            run = 1
            while page + run < end and self.pages[page + run] == self.pages[page] + (run << 12):
                run += 1
            if not self._release(self.pages[page], run << 12):
                memset(self.pages[page], 0, run << 12)
            page += run

    cdef bint _release(self, uint8_t* ptr, uint64_t size):
        cdef uint64_t start
        cdef uint64_t length
        madvise = getattr(mmap, "MADV_REMOVE", None)
        if madvise is None:
            return False
        for start, length, mv in self._regions:
            if start <= <uint64_t> ptr and <uint64_t> ptr + size <= start + length:
                owner = mv.obj
                if not isinstance(owner, mmap.mmap):
                    return False
                try:
                    owner.madvise(madvise, <uint64_t> ptr - start, size)
                except OSError:
                    return False
                return True
        return False

    def zero(self, uint64_t gpa, uint64_t size) -> None:
        """Fill a mapped range with zeros."""
        if not self.is_mapped(gpa, size):
            raise GpaError(f"{self.name}: GPA range {gpa:#x}+{size:#x} is not mapped")
        cdef uint64_t done = 0
        cdef uint64_t chunk
        cdef uint64_t cur
        while done < size:
            cur = gpa + done
            chunk = min(4096 - (cur & 0xFFF), size - done)
            memset(self.pages[cur >> 12] + (cur & 0xFFF), 0, chunk)
            done += chunk
