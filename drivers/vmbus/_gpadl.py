"""GPADLs on the wire: splitting a buffer description into GPADL_HEADER + GPADL_BODY messages
(the guest's job) and putting them back together (the host's), fact sheet §3.3 and §3.5(b).

A GPADL (guest physical address descriptor list) names guest pages the host may map, usually
the two rings of a channel. Its description is a *range buffer*: for each range one u64 word
``byte_count | byte_offset << 32`` followed by ``ceil((byte_offset + byte_count) / 4096)``
PFNs. The header carries the first 27 words (one range header + 26 PFNs for the usual single
range) and each body up to 28 more, all sent back to back; the host answers once, with
GPADL_CREATED, after the last word arrived.

The host side stays sans-IO: checking that the PFNs really are the guest's is a callback
(``validate_pfns``) the caller supplies.

The guest chooses how many PFNs the host keeps (up to 8190 per GPADL), so they are kept
compactly: a ``PfnList`` is a contiguous run ``(first, count)`` -- every ring GPADL -- or a
u64 ``array``, 8 bytes a PFN rather than a Python int each.
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, final, overload

from ._messages import (
    MAX_MESSAGE_SIZE,
    ChannelMessageType,
    GpadlBody,
    GpadlHeader,
    ProtocolError,
)

__all__ = [
    "BODY_MAX_WORDS",
    "GPADL_STATUS_UNSUCCESSFUL",
    "HEADER_MAX_WORDS",
    "PAGE_SIZE",
    "GpaRange",
    "Gpadl",
    "GpadlAssembler",
    "GpadlError",
    "GpadlLimits",
    "PfnList",
    "decode_ranges",
    "gpadl_messages",
    "pfn_count",
]

#: Hyper-V pages are 4 KiB whatever the guest's page size (§1.1).
PAGE_SIZE = 4096
#: u64 words after GPADL_HEADER's 20 bytes: (240 - 20) / 8 = 27, i.e. 26 PFNs + a range header.
HEADER_MAX_WORDS = (MAX_MESSAGE_SIZE - GpadlHeader.SIZE) // 8
#: u64 words after GPADL_BODY's 16 bytes: (240 - 16) / 8 = 28.
BODY_MAX_WORDS = (MAX_MESSAGE_SIZE - GpadlBody.SIZE) // 8
#: The creation_status OpenVMM sends when a GPADL is refused (§3.3, GPADL_CREATED).
GPADL_STATUS_UNSUCCESSFUL = 0x8000FFFF
#: A PFN names a 4 KiB page of a 64-bit GPA space.
_MAX_PFN = (1 << 52) - 1


def pfn_count(byte_count: int, byte_offset: int) -> int:
    """PFNs a range of ``byte_count`` bytes starting ``byte_offset`` into its first page spans."""
    return -(-(byte_offset + byte_count) // PAGE_SIZE)


@final
class PfnList(Sequence[int]):
    """An immutable sequence of PFNs (u64), stored compactly: a contiguous run as
    ``(first, count)``, anything else as an ``array('Q')``.

    It reads like the tuple it replaces: indexing, slicing (a ``PfnList``), iteration, and
    ``==``/``hash`` with any sequence of the same PFNs, a tuple included. ``run`` tells a
    contiguous list in O(1).
    """

    __slots__ = ("_array", "_count", "_first")

    _array: array[int] | None
    _first: int
    _count: int

    def __init__(self, pfns: Iterable[int] = ()) -> None:
        # type() checks: PfnList is final, and isinstance against a Sequence ABC costs ~1 us.
        if type(pfns) is PfnList:
            self._array, self._first, self._count = pfns._array, pfns._first, pfns._count
            return
        if type(pfns) is range and pfns.step == 1 and len(pfns) and pfns.start >= 0:
            if pfns.stop - 1 > 0xFFFF_FFFF_FFFF_FFFF:
                raise OverflowError("PfnList: a PFN above 2**64 - 1")
            self._array, self._first, self._count = None, pfns.start, len(pfns)
            return
        values = array("Q", pfns)    # OverflowError for a negative or over-64-bit value
        n = len(values)
        first = values[0] if n else 0
        # A run when the last is first + n - 1 and the whole list equals that range (memcmp).
        if n and values[-1] - first == n - 1 and values == array("Q", range(first, first + n)):
            self._array, self._first, self._count = None, first, n
        else:
            self._array, self._first, self._count = values, 0, n

    @property
    def run(self) -> tuple[int, int] | None:
        """``(first PFN, count)`` if the PFNs are contiguous and ascending, else ``None``."""
        return (self._first, self._count) if self._array is None and self._count else None

    @property
    def highest(self) -> int:
        """The highest PFN (-1 when empty): O(1) for a run, one pass for an array. (No PFN
        is below 0: the values are u64s.)"""
        if self._array is not None:
            return max(self._array, default=-1)
        return self._first + self._count - 1

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> PfnList: ...
    def __getitem__(self, index: int | slice) -> int | PfnList:
        if self._array is not None:
            item = self._array[index]
            return PfnList(item) if isinstance(item, array) else item
        positions = range(self._first, self._first + self._count)[index]
        return PfnList(positions) if isinstance(positions, range) else positions

    def __iter__(self) -> Iterator[int]:
        if self._array is not None:
            return iter(self._array)
        return iter(range(self._first, self._first + self._count))

    def __contains__(self, value: object) -> bool:
        if self._array is None:
            return value in range(self._first, self._first + self._count)
        return value in self._array

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PfnList):
            if self._array is None and other._array is None:
                return (self._first, self._count) == (other._first, other._count)
            return len(self) == len(other) and self._as_array() == other._as_array()
        if isinstance(other, Sequence) and not isinstance(other, str | bytes | bytearray):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other,
                                                                          strict=True))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))    # equal to a tuple of the same PFNs, so hashed like one

    def __repr__(self) -> str:
        if self._array is None:
            return f"PfnList(range({self._first:#x}, {self._first + self._count:#x}))"
        return f"PfnList([{', '.join(f'{p:#x}' for p in self._array)}])"

    def __reduce__(self) -> tuple[Any, ...]:
        if self._array is None:
            return (PfnList, (range(self._first, self._first + self._count),))
        return (PfnList, (self._array,))

    def _as_array(self) -> array[int]:
        if self._array is not None:
            return self._array
        return array("Q", range(self._first, self._first + self._count))


@dataclass(slots=True, frozen=True)
class GpaRange:
    """One range of a GPADL: ``byte_count`` bytes starting ``byte_offset`` bytes into the first
    of ``pfns``. Invariants: ``0 < byte_count < 2**32``, ``0 <= byte_offset < 4096``, and
    ``len(pfns) == pfn_count(byte_count, byte_offset)``. ``pfns`` may be given as any sequence
    of ints and is kept as a ``PfnList``.
    """

    byte_count: int
    byte_offset: int
    pfns: Sequence[int]

    def __post_init__(self) -> None:
        if not 0 < self.byte_count <= 0xFFFF_FFFF:
            raise ValueError(f"GpaRange.byte_count: found {self.byte_count}, expected 1..2**32-1")
        if not 0 <= self.byte_offset < PAGE_SIZE:
            raise ValueError(f"GpaRange.byte_offset: found {self.byte_offset}, expected 0..4095")
        want = pfn_count(self.byte_count, self.byte_offset)
        if len(self.pfns) != want:
            raise ValueError(f"GpaRange.pfns: found {len(self.pfns)} PFNs, expected {want}")
        pfns = self.pfns
        if type(pfns) is not PfnList:
            try:
                pfns = PfnList(pfns)
            except OverflowError:   # negative or over 64 bits: named below
                pfns = None
        if pfns is None or pfns.highest > _MAX_PFN:   # find the culprit only if there is one
            pfn = next(p for p in self.pfns if not 0 <= p <= _MAX_PFN)
            raise ValueError(f"GpaRange.pfns: found {pfn:#x}, expected a 52-bit PFN")
        object.__setattr__(self, "pfns", pfns)

    def words(self) -> tuple[int, ...]:
        """This range as range-buffer words: its header word, then its PFNs."""
        return (self.byte_count | self.byte_offset << 32, *self.pfns)


@dataclass(slots=True, frozen=True)
class Gpadl:
    """A completed GPADL: id chosen by the guest, the channel it belongs to, its ranges."""

    gpadl_id: int
    relid: int
    ranges: tuple[GpaRange, ...]

    @property
    def pfns(self) -> Sequence[int]:
        """Every PFN of every range, in order (a ``PfnList``)."""
        if len(self.ranges) == 1:
            return self.ranges[0].pfns
        return PfnList(itertools.chain.from_iterable(r.pfns for r in self.ranges))

    @property
    def page_count(self) -> int:
        """How many PFNs the GPADL names (a page named twice counts twice)."""
        return sum(len(r.pfns) for r in self.ranges)


class GpadlError(ProtocolError):
    """A GPADL that cannot be created. ``relid`` and ``gpadl_id`` say which GPADL_CREATED to
    fail; ``relid`` is ``None`` when the message named no GPADL in progress.
    """

    def __init__(
        self,
        message_type: ChannelMessageType,
        field: str,
        found: object,
        expected: object,
        *,
        relid: int | None,
        gpadl_id: int,
    ) -> None:
        super().__init__(message_type, field, found, expected)
        self.relid = relid
        self.gpadl_id = gpadl_id

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.message_type, self.field, self.found, self.expected)
        return (_rebuild_gpadl_error, (*args, self.relid, self.gpadl_id))


def _rebuild_gpadl_error(*args: Any) -> GpadlError:
    *head, relid, gpadl_id = args
    return GpadlError(*head, relid=relid, gpadl_id=gpadl_id)


def gpadl_messages(
    relid: int,
    gpadl_id: int,
    ranges: Sequence[GpaRange] | Sequence[int],
    byte_count: int | None = None,
    byte_offset: int = 0,
) -> list[GpadlHeader | GpadlBody]:
    """The header and bodies that describe a GPADL, in sending order (§3.5(b)).

    ``ranges`` is either a sequence of ``GpaRange`` or, as Linux does, a flat list of PFNs for
    one range of ``byte_count`` bytes (default: every page, less ``byte_offset``).
    ``range_buflen`` is ``8 * (ranges + PFNs)``: 8 + 8 x pagecount for a single range.
    Bodies carry ``msgnumber`` 1, 2, ... like Linux.
    """
    if ranges and not isinstance(ranges[0], GpaRange):
        pfns = tuple(int(p) for p in ranges)  # type: ignore[arg-type]
        if byte_count is None:
            byte_count = len(pfns) * PAGE_SIZE - byte_offset
        range_list: tuple[GpaRange, ...] = (GpaRange(byte_count, byte_offset, pfns),)
    else:
        range_list = tuple(ranges)  # type: ignore[arg-type]
    if not range_list:
        raise ValueError("gpadl_messages: found no range, expected at least one")
    words = [w for r in range_list for w in r.words()]
    range_buflen = 8 * len(words)
    if range_buflen > 0xFFFF:
        raise ValueError(
            f"gpadl_messages: range_buflen found {range_buflen}, expected at most 65535 (u16)"
        )
    messages: list[GpadlHeader | GpadlBody] = [
        GpadlHeader(relid, gpadl_id, range_buflen, len(range_list), tuple(words[:HEADER_MAX_WORDS]))
    ]
    for number, start in enumerate(range(HEADER_MAX_WORDS, len(words), BODY_MAX_WORDS), 1):
        messages.append(GpadlBody(number, gpadl_id, tuple(words[start : start + BODY_MAX_WORDS])))
    return messages


def decode_ranges(words: Sequence[int], rangecount: int) -> tuple[GpaRange, ...]:
    """Parse a complete range buffer into ``rangecount`` ranges that use every word.

    Raises ``ProtocolError`` (on GPADL_HEADER, which announced the layout) naming the range.
    """
    t = ChannelMessageType.GPADL_HEADER
    ranges = []
    pos = 0
    for index in range(rangecount):
        if pos >= len(words):
            raise ProtocolError(t, "range_buflen", f"{8 * len(words)} bytes",
                                f"room for {rangecount} ranges (range {index} missing)")
        count, offset = words[pos] & 0xFFFF_FFFF, words[pos] >> 32
        if count == 0:
            raise ProtocolError(t, f"range[{index}].byte_count", 0, "at least 1")
        if offset >= PAGE_SIZE:
            raise ProtocolError(t, f"range[{index}].byte_offset", offset, "0..4095")
        n = pfn_count(count, offset)
        pfns = words[pos + 1 : pos + 1 + n]
        if len(pfns) != n:
            raise ProtocolError(t, f"range[{index}].pfns", f"{len(pfns)} PFNs",
                                f"{n} for byte_count {count} and byte_offset {offset}")
        if pfns and max(pfns) > _MAX_PFN:
            raise ProtocolError(t, f"range[{index}].pfns", "a PFN above 2**52", "52-bit PFNs")
        ranges.append(GpaRange(count, offset, pfns))
        pos += 1 + n
    if pos != len(words):
        raise ProtocolError(t, "range_buflen", f"{8 * len(words)} bytes",
                            f"{8 * pos} bytes for {rangecount} ranges")
    return tuple(ranges)


@dataclass(slots=True)
class _Pending:
    relid: int
    rangecount: int
    total_words: int
    words: array[int]

    @property
    def pages(self) -> int:
        """The most PFNs the announced ``range_buflen`` can hold (one word per range header)."""
        return max(0, self.total_words - self.rangecount)


@final
@dataclass(frozen=True, slots=True)
class GpadlLimits:
    """What one guest (one VM's connection) may make the host hold in GPADLs.

    A guest chooses how many GPADLs it describes and how large they are; the host keeps each
    one, so each is checked against these at its GPADL_HEADER, from what ``range_buflen``
    announces, before any body is stored (:meth:`refusal`).
    """

    #: GPADL_HEADERs whose bodies have not all arrived. A guest sends a GPADL's header and
    #: bodies back to back, so a well-behaved one has about one in progress per CPU sending.
    max_pending: int = 64
    #: GPADLs created or in progress: four for each of the 2047 relids a VM can have.
    max_gpadls: int = 8192
    #: PFNs named by GPADLs created or in progress (a page named twice counts twice): 4 GiB
    #: described, at most 8 MiB of host memory as PfnLists.
    max_pages: int = 1 << 20

    def __post_init__(self) -> None:
        for name in ("max_pending", "max_gpadls", "max_pages"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: found {getattr(self, name)}, expected at least 1")

    def refusal(self, header: GpadlHeader, *, pending: int, pending_pages: int, created: int,
                created_pages: int) -> ProtocolError | None:
        """Why the GPADL ``header`` starts must be refused (the error to report, naming the
        limit, the relid and the GPADL id), or ``None``."""
        t = ChannelMessageType.GPADL_HEADER
        which = f"GPADL {header.gpadl_id:#x} of relid {header.child_relid}"
        if pending >= self.max_pending:
            return ProtocolError(t, "gpadl_id", f"{which} with {pending} GPADLs in progress",
                                 f"at most {self.max_pending} in progress per VM "
                                 "(GpadlLimits.max_pending)")
        if created + pending >= self.max_gpadls:
            return ProtocolError(t, "gpadl_id", f"{which} with {created + pending} GPADLs "
                                 "created or in progress",
                                 f"at most {self.max_gpadls} per VM (GpadlLimits.max_gpadls)")
        pages = max(0, header.range_buflen // 8 - header.rangecount)
        used = created_pages + pending_pages
        if used + pages > self.max_pages:
            return ProtocolError(t, "range_buflen",
                                 f"{header.range_buflen} ({which}: up to {pages} pages, "
                                 f"{used} pages already described)",
                                 f"at most {self.max_pages} GPADL pages per VM "
                                 "(GpadlLimits.max_pages)")
        return None


class GpadlAssembler:
    """The host's GPADLs in progress: feed it every GPADL_HEADER and GPADL_BODY in arrival order.

    Bodies are matched to their header by gpadl id alone, as OpenVMM does, so an id may be in
    progress only once (§3.3). ``feed`` returns the ``Gpadl`` once its last word arrived (and
    ``validate_pfns`` accepted its PFNs), ``None`` while more bodies are due, and raises
    ``GpadlError`` for a duplicate id, a body for an id not in progress, a body that overflows
    the announced ``range_buflen``, a range buffer that does not decode into exactly
    ``rangecount`` ranges (underflow), or PFNs the callback refused. A failed GPADL is dropped.

    It sets no limit itself: ``len()`` and ``pending_pages`` let the owner cap what a guest
    may leave in progress (``ServerProtocol`` does, per VM).
    """

    def __init__(self, validate_pfns: Callable[[Sequence[int]], str | None] | None = None) -> None:
        self._validate_pfns = validate_pfns
        self._pending: dict[int, _Pending] = {}
        self._pending_pages = 0

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def pending_pages(self) -> int:
        """PFNs the headers in progress announced (``range_buflen`` / 8 less one word a range)."""
        return self._pending_pages

    def in_progress(self, gpadl_id: int) -> int | None:
        """The relid of GPADL ``gpadl_id`` if it is still being assembled, else ``None``."""
        pending = self._pending.get(gpadl_id)
        return None if pending is None else pending.relid

    def discard(self, relid: int | None = None) -> list[int]:
        """Forget the GPADLs in progress on channel ``relid`` (every channel if ``None``);
        returns their ids.
        """
        gone = [g for g, p in self._pending.items() if relid is None or p.relid == relid]
        for gpadl_id in gone:
            self._drop(gpadl_id)
        return gone

    def abandon(self, gpadl_id: int) -> bool:
        """Forget GPADL ``gpadl_id`` if it is in progress (True if it was): a header reusing
        its id is refused, and that one refusal answers for the id, so the first GPADL must
        not complete and be answered again."""
        if gpadl_id not in self._pending:
            return False
        self._drop(gpadl_id)
        return True

    def _drop(self, gpadl_id: int) -> None:
        self._pending_pages -= self._pending.pop(gpadl_id).pages

    def feed(self, message: GpadlHeader | GpadlBody) -> Gpadl | None:
        """Take one GPADL message; see the class docstring for results and errors."""
        if isinstance(message, GpadlHeader):
            t = ChannelMessageType.GPADL_HEADER
            if self.abandon(message.gpadl_id):   # one refusal answers for the id
                raise GpadlError(t, "gpadl_id", f"{message.gpadl_id:#x}",
                                 "an id not already in progress",
                                 relid=message.child_relid, gpadl_id=message.gpadl_id)
            pending = _Pending(message.child_relid, message.rangecount,
                               message.range_buflen // 8, array("Q", message.data))
            if len(pending.words) > pending.total_words:
                raise GpadlError(t, "size", f"{len(pending.words)} words",
                                 f"at most {pending.total_words} (range_buflen)",
                                 relid=message.child_relid, gpadl_id=message.gpadl_id)
            self._pending[message.gpadl_id] = pending
            self._pending_pages += pending.pages
        else:
            t = ChannelMessageType.GPADL_BODY
            found = self._pending.get(message.gpadl_id)
            if found is None:
                raise GpadlError(t, "gpadl_id", f"{message.gpadl_id:#x}",
                                 "the id of a GPADL_HEADER in progress",
                                 relid=None, gpadl_id=message.gpadl_id)
            pending = found
            room = pending.total_words - len(pending.words)
            if len(message.data) > room:
                self._drop(message.gpadl_id)
                raise GpadlError(t, "size", f"{len(message.data)} words",
                                 f"at most {room} (overflows range_buflen)",
                                 relid=pending.relid, gpadl_id=message.gpadl_id)
            pending.words.extend(message.data)
        if len(pending.words) < pending.total_words:
            return None
        self._drop(message.gpadl_id)
        return self._complete(message.gpadl_id, pending)

    def _complete(self, gpadl_id: int, pending: _Pending) -> Gpadl:
        try:
            ranges = decode_ranges(pending.words, pending.rangecount)
        except ProtocolError as e:
            raise GpadlError(e.message_type or ChannelMessageType.GPADL_HEADER, e.field,
                             e.found, e.expected, relid=pending.relid, gpadl_id=gpadl_id) from e
        gpadl = Gpadl(gpadl_id, pending.relid, ranges)
        if self._validate_pfns is not None:
            reason = self._validate_pfns(gpadl.pfns)
            if reason is not None:
                raise GpadlError(ChannelMessageType.GPADL_HEADER, "pfns", reason,
                                 "pages of the guest's memory",
                                 relid=pending.relid, gpadl_id=gpadl_id)
        return gpadl
