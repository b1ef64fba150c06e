"""The kernel's page allocator: first fit over sorted free runs, coalescing on free, and
refusal of double frees and pages that are not its own."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from winhv.drivers.kernel import OutOfPages, PageAllocator


def _runs(allocator: PageAllocator) -> list[tuple[int, int]]:
    return [(start, end) for start, end in allocator._runs]


def test_alloc_is_first_fit_and_contiguous():
    pages = PageAllocator(16, 100, name="t")
    assert pages.alloc(4) == 16
    assert pages.alloc(1) == 20
    assert pages.alloc(10) == 21
    assert pages.free_pages == 85
    assert _runs(pages) == [(31, 116)]


def test_free_coalesces_with_both_neighbours():
    pages = PageAllocator(0, 30)
    a, b, c = pages.alloc(10), pages.alloc(10), pages.alloc(10)
    assert pages.free_pages == 0
    pages.free(a, 10)
    pages.free(c, 10)
    assert _runs(pages) == [(0, 10), (20, 30)]
    pages.free(b, 10)
    assert _runs(pages) == [(0, 30)]
    assert pages.alloc(30) == 0


def test_a_hole_too_small_is_skipped_then_reused():
    pages = PageAllocator(0, 64)
    first, middle, _last = pages.alloc(8), pages.alloc(4), pages.alloc(8)
    pages.free(middle, 4)
    assert pages.alloc(6) == 20       # does not fit in the 4-page hole
    assert pages.alloc(4) == middle   # the hole is used by what fits
    pages.free(first, 8)
    assert pages.alloc(1) == first


@pytest.mark.parametrize(("page", "count"), [(20, 1), (15, 15), (29, 1), (12, 5)])
def test_double_free_is_refused_and_changes_nothing(page, count):
    pages = PageAllocator(10, 20)
    pages.alloc(5)                   # pages 10..14 in use, 15..29 free
    before = _runs(pages)
    with pytest.raises(ValueError, match="already free"):
        pages.free(page, count)
    assert _runs(pages) == before


@pytest.mark.parametrize(("page", "count"), [(9, 1), (30, 1), (29, 2), (10, 0), (10, -1)])
def test_foreign_pages_are_refused(page, count):
    pages = PageAllocator(10, 20, name="mine")
    pages.alloc(20)
    with pytest.raises(ValueError, match="not this allocator's"):
        pages.free(page, count)
    assert pages.free_pages == 0


def test_out_of_pages_names_the_allocator_and_what_is_left():
    pages = PageAllocator(0, 10, name="small")
    pages.alloc(3)
    pages.alloc(3)
    pages.free(0, 3)
    with pytest.raises(OutOfPages, match=r"small: no run of 5 free pages \(7 free in total\)"):
        pages.alloc(5)
    assert issubclass(OutOfPages, MemoryError)


@pytest.mark.parametrize(("first", "count"), [(0, 0), (-1, 5), (3, -2)])
def test_a_bad_range_is_refused(first, count):
    with pytest.raises(ValueError, match="bad page range"):
        PageAllocator(first, count)


def test_a_non_positive_alloc_is_refused():
    with pytest.raises(ValueError, match="positive"):
        PageAllocator(0, 4).alloc(0)


@settings(max_examples=60)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 9), st.integers(0, 50)), max_size=40))
def test_random_allocs_and_frees_match_a_model(ops):
    pages = PageAllocator(100, 64)
    held: list[tuple[int, int]] = []
    used: set[int] = set()
    for alloc, count, pick in ops:
        if alloc or not held:
            try:
                start = pages.alloc(count)
            except OutOfPages:
                free = set(range(100, 164)) - used
                assert not any(all(p + i in free for i in range(count)) for p in free)
                continue
            run = set(range(start, start + count))
            assert not run & used
            assert run <= set(range(100, 164))
            used |= run
            held.append((start, count))
        else:
            start, count = held.pop(pick % len(held))
            pages.free(start, count)
            used -= set(range(start, start + count))
        assert pages.free_pages == 64 - len(used)
        runs = _runs(pages)
        # Sorted, disjoint, never adjacent (coalesced), and exactly the free pages.
        assert all(a_end < b_start for (_, a_end), (b_start, _) in itertools.pairwise(runs))
        assert {p for s, e in runs for p in range(s, e)} == set(range(100, 164)) - used


# -- pages known to read zero -----------------------------------------------------------------


def test_without_zeroed_every_page_handed_out_is_stale():
    pages = PageAllocator(16, 64)
    assert pages.alloc_run(8) == (16, 8)
    assert pages.alloc_run(1) == (24, 1)


def test_zeroed_pages_are_fresh_until_handed_out_once():
    pages = PageAllocator(16, 64, zeroed=True)
    assert pages.alloc_run(8) == (16, 0)
    assert pages.alloc_run(4) == (24, 0)
    pages.free(16, 8)
    assert pages.alloc_run(4) == (16, 4)      # reused: all stale
    pages.free(24, 4)                        # 20..27 free again, 28.. never used
    assert pages.alloc_run(12) == (20, 8)     # straddles: 20..27 stale, 28..31 fresh
    assert pages.alloc_run(2) == (32, 0)


@settings(max_examples=200)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 9)), max_size=60))
def test_a_page_called_fresh_was_never_handed_out_before(ops):
    # Model: the set of pages ever handed out. Whatever alloc_run calls fresh (the run past
    # its stale prefix) must be outside it; stale pages are a prefix of the run.
    pages = PageAllocator(0, 48, zeroed=True)
    ever: set[int] = set()
    live: list[tuple[int, int]] = []
    for do_alloc, n in ops:
        if do_alloc or not live:
            try:
                start, stale = pages.alloc_run(n)
            except OutOfPages:
                continue
            assert 0 <= stale <= n
            assert not ever & set(range(start + stale, start + n))
            ever |= set(range(start, start + n))
            live.append((start, n))
        else:
            pages.free(*live.pop(n % len(live)))
