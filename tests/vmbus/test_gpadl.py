"""GPADL splitting (guest) and assembly (host), fact sheet §3.3 and §3.5(b)."""

from __future__ import annotations

import pickle
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from winhv.drivers.vmbus.protocol import (
    BODY_MAX_WORDS,
    HEADER_MAX_WORDS,
    MAX_MESSAGE_SIZE,
    ChannelMessageType,
    Direction,
    GpadlAssembler,
    GpadlBody,
    GpadlError,
    GpadlHeader,
    GpaRange,
    ProtocolError,
    VmbusVersion,
    decode_ranges,
    gpadl_messages,
    parse_message,
    pfn_count,
)

ID = 0xE1E10


def pages(n: int, base: int = 0x1000) -> list[int]:
    return list(range(base, base + n))


def test_header_and_body_capacities_are_26_and_28_pfns():
    assert HEADER_MAX_WORDS - 1 == 26
    assert BODY_MAX_WORDS == 28


@pytest.mark.parametrize(
    ("count", "bodies"),
    [(1, []), (26, []), (27, [1]), (54, [28]), (55, [28, 1]), (100, [28, 28, 18])],
)
def test_single_range_splits_26_then_28_per_body(count, bodies):
    messages = gpadl_messages(3, ID, pages(count))
    header, rest = messages[0], messages[1:]
    assert isinstance(header, GpadlHeader)
    assert header.rangecount == 1
    assert header.range_buflen == 8 + 8 * count
    assert header.data[0] == count * 4096  # byte_count, byte_offset 0
    assert len(header.data) - 1 == min(count, 26)
    assert [len(b.data) for b in rest] == bodies
    assert [b.msgnumber for b in rest] == list(range(1, len(bodies) + 1))
    assert all(isinstance(b, GpadlBody) and b.gpadl_id == ID for b in rest)
    assert all(len(m.pack()) <= MAX_MESSAGE_SIZE for m in messages)
    assert len(header.pack()) == 20 + 8 * len(header.data)


def test_byte_count_and_offset_go_into_the_range_header_word():
    header = gpadl_messages(1, ID, pages(2), byte_count=5000, byte_offset=100)[0]
    assert header.data[0] == 5000 | 100 << 32


def test_range_invariants_are_checked():
    with pytest.raises(ValueError, match="pfns"):
        GpaRange(4097, 0, (1,))
    with pytest.raises(ValueError, match="byte_offset"):
        GpaRange(1, 4096, (1, 2))
    with pytest.raises(ValueError, match="byte_count"):
        GpaRange(0, 0, ())
    assert pfn_count(4096, 1) == 2
    assert pfn_count(1, 4095) == 1


ranges = st.builds(
    lambda n, off, base: GpaRange(n, off, tuple(pages(pfn_count(n, off), base))),
    st.integers(1, 70 * 4096), st.integers(0, 4095), st.integers(0, 1 << 40),
)


@given(st.lists(ranges, min_size=1, max_size=3), st.integers(0, 2047))
def test_assembler_rebuilds_what_gpadl_messages_split(range_list, relid):
    assembler = GpadlAssembler()
    messages = gpadl_messages(relid, ID, range_list)
    results = []
    for m in messages:
        parsed = parse_message(m.pack(), version=VmbusVersion.WIN10_V5_3,
                               direction=Direction.GUEST_TO_HOST)
        results.append(assembler.feed(parsed))
    assert results[:-1] == [None] * (len(messages) - 1)
    gpadl = results[-1]
    assert (gpadl.gpadl_id, gpadl.relid, gpadl.ranges) == (ID, relid, tuple(range_list))
    assert len(assembler) == 0


def test_duplicate_in_progress_id_is_refused_and_abandons_the_first():
    # One refusal answers for the id: were the first kept, it would complete and be answered
    # again, with success, for an id the guest was just told failed.
    assembler = GpadlAssembler()
    first, body = gpadl_messages(1, ID, pages(30))
    assert assembler.feed(first) is None
    with pytest.raises(GpadlError) as info:
        assembler.feed(gpadl_messages(2, ID, pages(30))[0])
    assert (info.value.field, info.value.relid, info.value.gpadl_id) == ("gpadl_id", 2, ID)
    assert (len(assembler), assembler.pending_pages) == (0, 0)
    with pytest.raises(GpadlError, match=r"GPADL_BODY\.gpadl_id"):
        assembler.feed(body)


def test_body_for_an_unknown_id_is_refused():
    with pytest.raises(GpadlError) as info:
        GpadlAssembler().feed(GpadlBody(1, 0x99, (1,)))
    assert info.value.relid is None
    assert "GPADL_BODY.gpadl_id: found 0x99" in str(info.value)


def test_overflowing_body_is_refused_and_drops_the_gpadl():
    assembler = GpadlAssembler()
    header, body = gpadl_messages(1, ID, pages(27))
    assembler.feed(header)
    with pytest.raises(GpadlError, match="overflows range_buflen"):
        assembler.feed(GpadlBody(1, ID, (*body.data, 7)))
    assert assembler.in_progress(ID) is None


def test_underflow_announced_length_too_long_for_the_ranges_is_refused():
    assembler = GpadlAssembler()
    with pytest.raises(GpadlError) as info:
        assembler.feed(GpadlHeader(1, ID, 24, 1, (4096, 5, 6)))
    assert info.value.field == "range_buflen"
    assert info.value.relid == 1


def test_range_header_promising_more_pfns_than_sent_is_refused():
    with pytest.raises(ProtocolError, match=r"range\[0\]\.pfns"):
        decode_ranges((3 * 4096, 1, 2), 1)


def test_rangecount_larger_than_the_buffer_is_refused():
    with pytest.raises(ProtocolError, match="range 1 missing"):
        decode_ranges((4096, 1), 2)


def test_validate_pfns_callback_can_refuse_with_a_reason():
    seen = []

    def validate(pfns):
        seen.append(tuple(pfns))
        return "PFN 0x1001 is outside guest memory"

    assembler = GpadlAssembler(validate)
    with pytest.raises(GpadlError) as info:
        assembler.feed(gpadl_messages(4, ID, pages(2))[0])
    assert seen == [(0x1000, 0x1001)]
    assert info.value.found == "PFN 0x1001 is outside guest memory"
    assert info.value.message_type is ChannelMessageType.GPADL_HEADER


def test_discard_forgets_in_progress_gpadls_of_one_channel():
    assembler = GpadlAssembler()
    assembler.feed(gpadl_messages(1, ID, pages(30))[0])
    assembler.feed(gpadl_messages(2, ID + 1, pages(30))[0])
    assert assembler.discard(1) == [ID]
    assert assembler.in_progress(ID + 1) == 2
    assert assembler.discard() == [ID + 1]


# --- compact PFN storage (audit 3b) ------------------------------------------------------------


def test_a_contiguous_range_is_stored_as_a_run_and_still_reads_as_its_pfns():
    from winhv.drivers.vmbus._gpadl import PfnList

    pfns = GpaRange(8190 * 4096, 0, tuple(pages(8190))).pfns
    assert isinstance(pfns, PfnList)
    assert pfns.run == (0x1000, 8190)
    assert sys.getsizeof(pfns) < 100          # not 8190 Python ints
    assert len(pfns) == 8190
    assert (pfns[0], pfns[-1], pfns[5:7]) == (0x1000, 0x1000 + 8189, (0x1005, 0x1006))
    assert pfns == tuple(pages(8190)) == pfns   # equal to the tuple, both ways
    assert hash(pfns) == hash(tuple(pages(8190)))
    assert list(pfns) == pages(8190)


def test_scattered_pfns_are_stored_as_u64_array_not_python_ints():
    from winhv.drivers.vmbus._gpadl import PfnList

    scattered = [0x1000 + 7 * i for i in range(8190)]
    pfns = PfnList(scattered)
    assert pfns.run is None
    assert sys.getsizeof(pfns) + sys.getsizeof(pfns._array) < 8 * 8190 + 200
    assert pfns == scattered
    assert pfns != scattered[:-1]
    assert pickle.loads(pickle.dumps(pfns)) == pfns


def test_assembled_gpadl_pfns_are_compact_and_the_range_equals_its_tuple_form():
    assembler = GpadlAssembler()
    messages = gpadl_messages(1, ID, pages(300))
    for m in messages[:-1]:
        assert assembler.feed(m) is None
    assert assembler.pending_pages == 300
    gpadl = assembler.feed(messages[-1])
    assert assembler.pending_pages == 0
    assert gpadl.ranges[0].pfns.run == (0x1000, 300)
    assert gpadl.ranges == (GpaRange(300 * 4096, 0, tuple(pages(300))),)
    assert gpadl.page_count == 300


def test_pending_pages_count_what_each_header_announces_until_it_completes_or_is_dropped():
    assembler = GpadlAssembler()
    assembler.feed(gpadl_messages(1, ID, pages(30))[0])
    assembler.feed(gpadl_messages(2, ID + 1, pages(100))[0])
    assert assembler.pending_pages == 130
    assembler.discard(1)
    assert assembler.pending_pages == 100
    with pytest.raises(GpadlError):
        assembler.feed(GpadlBody(1, ID + 1, tuple(range(80))))   # overflows: dropped
    assert (len(assembler), assembler.pending_pages) == (0, 0)


def test_a_pfn_list_knows_its_highest_pfn_as_a_run_and_as_an_array():
    from winhv.drivers.vmbus._gpadl import PfnList

    assert PfnList(range(7, 107)).highest == 106
    assert PfnList([9, 2**52 - 1, 3]).highest == 2**52 - 1
    assert PfnList().highest == -1


def test_a_run_of_pages_past_guest_ram_is_refused_like_a_scattered_one():
    from support.vmbus_io import UNKNOWN_IF, EchoVsp

    from winhv.drivers.vmbus.loopback import boot_vm

    loop = boot_vm()
    relid = loop.offer("manual", EchoVsp(), UNKNOWN_IF).relid
    last = loop.server.guest_pages - 1
    loop.client.protocol.create_gpadl(relid, list(range(last - 2, last + 2)))   # one past
    loop.run()
    assert any(f"PFN {last + 1:#x} is outside" in e for e in loop.server.errors)
    assert loop.server.protocol.gpadl_pages == 0
