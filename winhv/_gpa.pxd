# cython: language_level=3
"""Guest physical address spaces (the second-level address translation of one partition)."""

from libc.stdint cimport uint8_t, uint64_t


cdef class GpaSpace:
    cdef uint8_t** pages          # GPA page number -> host pointer (NULL = unmapped)
    cdef uint64_t page_count      # entries in ``pages``
    cdef uint64_t mapped_pages
    cdef readonly uint64_t max_pages
    cdef list _regions            # backing buffers, kept alive: [(start_ptr, length, memoryview)]
    cdef readonly object name

    cdef int _grow(self, uint64_t count) except -1
    cdef object _region_view(self, uint8_t* ptr, uint64_t size)
    cdef bint _release(self, uint8_t* ptr, uint64_t size)
    cpdef object view(self, uint64_t gpa, uint64_t size)
    cpdef bint is_mapped(self, uint64_t gpa, uint64_t size)


cdef inline uint8_t* gpa_pointer(GpaSpace space, uint64_t gpa, uint64_t size) noexcept nogil:
    """Host pointer for ``size`` bytes at ``gpa`` that stay inside one page, or NULL.

    NULL means: outside the table, unmapped, or the range crosses a page boundary.
    """
    cdef uint64_t page = gpa >> 12
    cdef uint64_t offset = gpa & 0xFFF
    if page >= space.page_count or offset + size > 4096:
        return NULL
    cdef uint8_t* base = space.pages[page]
    if base == NULL:
        return NULL
    return base + offset


cdef inline uint8_t* gpa_pointer_lent(void* space, uint64_t gpa, uint64_t size) noexcept nogil:
    """:func:`gpa_pointer` on a GpaSpace lent by the caller (a borrowed ``<void*>``), for hot
    paths that must not take a reference."""
    cdef uint64_t page = gpa >> 12
    cdef uint64_t offset = gpa & 0xFFF
    if page >= (<GpaSpace> space).page_count or offset + size > 4096:
        return NULL
    cdef uint8_t* base = (<GpaSpace> space).pages[page]
    if base == NULL:
        return NULL
    return base + offset
