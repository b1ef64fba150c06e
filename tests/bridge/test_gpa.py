"""Guest physical address spaces (``GpaSpace``): page-granular, bounds-checked, zero-copy
(fact sheet §1.1: 4096-byte pages, a GPA outside the space is an error, never a crash)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from winhv._gpa import GpaError, GpaSpace

PAGE = 4096


def space(pages: int = 8, name: str = "s", max_pages: int = 64) -> tuple[GpaSpace, bytearray]:
    backing = bytearray(pages * PAGE)
    memory = GpaSpace(name, max_pages)
    memory.add_region(0, backing)
    return memory, backing


def test_views_are_zero_copy_both_ways() -> None:
    memory, backing = space()
    view = memory.view(0x1010, 4)
    view[:] = b"abcd"
    assert backing[0x1010:0x1014] == b"abcd"
    backing[0x1010] = ord("z")
    assert bytes(memory.view(0x1010, 1)) == b"z"
    assert memory.read(0x1010, 4) == b"zbcd"


def test_is_mapped_is_bounds_checked_without_overflow() -> None:
    memory, _ = space(2)
    assert memory.is_mapped(0, 2 * PAGE)
    assert not memory.is_mapped(0, 2 * PAGE + 1)
    assert not memory.is_mapped((1 << 64) - 8, 16)      # wraps past 2**64
    assert not memory.is_mapped((1 << 64) - PAGE, PAGE)
    assert memory.is_mapped(123, 0)


@pytest.mark.parametrize("gpa", [2 * PAGE, (1 << 64) - 8, (1 << 63)])
def test_access_outside_the_space_raises_gpa_error(gpa: int) -> None:
    memory, _ = space(2)
    for access in (lambda: memory.view(gpa, 8), lambda: memory.read(gpa, 8),
                   lambda: memory.write(gpa, b"x" * 8), lambda: memory.zero(gpa, 8)):
        with pytest.raises(GpaError, match="not mapped"):
            access()


def test_map_from_shares_pages_and_unmap_removes_only_the_mapping() -> None:
    source, backing = space(4, "root")
    child = GpaSpace("child", 64)
    child.map_from(source, 2, 10, 2)
    assert child.mapped_page_count == 2
    child.write(10 * PAGE, b"shared")
    assert backing[2 * PAGE:2 * PAGE + 6] == b"shared"
    old_view = child.view(10 * PAGE, 6)
    child.unmap(10, 2)
    assert not child.is_mapped(10 * PAGE, 1)
    assert bytes(old_view) == b"shared"          # the backing outlives the mapping
    assert source.read(2 * PAGE, 6) == b"shared"


def test_map_from_is_all_or_nothing() -> None:
    source, _ = space(4, "root")
    child = GpaSpace("child", 64)
    child.map_from(source, 0, 5)
    with pytest.raises(GpaError, match="already mapped"):
        child.map_from(source, 1, 4, 2)              # page 5 is taken
    assert not child.is_mapped(4 * PAGE, 1)
    with pytest.raises(GpaError, match="not mapped"):
        child.map_from(source, 3, 20, 2)             # source page 4 does not exist
    assert not child.is_mapped(20 * PAGE, 1)
    assert child.mapped_page_count == 1


@pytest.mark.parametrize("target", [(1 << 64) - 1, (1 << 64) - 2, 64, 1 << 40])
def test_map_from_beyond_the_address_space_is_refused(target: int) -> None:
    # (1 << 64) - 1 used to wrap target + count to 0 and write far past the page table.
    source, _ = space(4, "root")
    child = GpaSpace("child", 64)
    with pytest.raises(GpaError, match="beyond the address space"):
        child.map_from(source, 0, target, 2)
    assert child.mapped_page_count == 0


def test_view_across_pages_needs_contiguous_backing() -> None:
    source, _ = space(4, "root")
    child = GpaSpace("child", 64)
    child.map_from(source, 0, 0, 2)                  # contiguous run
    child.map_from(source, 3, 2)                     # page 2 <- root page 3: a gap
    assert len(child.view(PAGE - 4, 8)) == 8
    assert child.contiguous(0, 2 * PAGE)
    assert not child.contiguous(PAGE, 2 * PAGE)
    with pytest.raises(GpaError, match="not contiguous"):
        child.view(2 * PAGE - 4, 8)
    child.write(2 * PAGE - 4, b"12345678")           # copies work across the gap
    assert child.read(2 * PAGE - 4, 8) == b"12345678"
    assert source.read(3 * PAGE, 4) == b"5678"


def test_add_region_refuses_bad_buffers_and_overlaps() -> None:
    memory = GpaSpace("s", 16)
    with pytest.raises(ValueError, match="multiple of 4096"):
        memory.add_region(0, bytearray(100))
    with pytest.raises(ValueError, match="writable"):
        memory.add_region(0, bytes(PAGE))
    memory.add_region(0, bytearray(PAGE))
    with pytest.raises(GpaError, match="already mapped"):
        memory.add_region(0, bytearray(PAGE))
    with pytest.raises(GpaError, match="beyond the address space"):
        memory.add_region(16, bytearray(PAGE))


@settings(max_examples=50, deadline=None)
@given(st.integers(0, (1 << 64) - 1), st.integers(0, 3 * PAGE))
def test_any_range_is_either_fully_accessible_or_refused(gpa: int, size: int) -> None:
    memory, backing = space(2)
    inside = gpa + size <= 2 * PAGE
    assert memory.is_mapped(gpa, size) == (inside or size == 0)
    if inside:
        assert memory.read(gpa, size) == bytes(backing[gpa:gpa + size])
    elif size:
        with pytest.raises(GpaError):
            memory.read(gpa, size)
