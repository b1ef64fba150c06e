"""Hostile guests: random packets, random SRBs and random CDBs against a small disk. Every
input ends in a completion or a ``VstorProtocolError``; no access leaves the disk, the image
bytes past the disk's last block and the file's size never change, and guest memory outside
the request's buffer is never written."""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from winhv.vsp_vsc_pairs.storage import (
    COMMANDS,
    OPERATIONS,
    DataBuffer,
    FileBackingStore,
    Operation,
    ScsiDisk,
    ScsiRequest,
    ScsiResult,
    ScsiStatus,
    StorvspProtocol,
    VstorProtocolError,
    VstorVersion,
    build_packet,
)

BLOCKS = 128
BLOCK = 512
DISK_BYTES = BLOCKS * BLOCK
TAIL = b"\xa5" * 100  # bytes of the image past the disk's last whole block
GUARD = 0x5C


class BoundsCheckingStore:
    """A ``FileBackingStore`` proxy that fails the test on any access outside the disk."""

    def __init__(self, inner: FileBackingStore) -> None:
        self.inner = inner
        self.size = inner.size
        self.read_only = inner.read_only

    def _check(self, offset: int, length: int) -> None:
        assert offset >= 0, (offset, length)
        assert offset + length <= DISK_BYTES, (offset, length)

    def readinto(self, offset: int, buffers: Sequence[memoryview]) -> int:
        self._check(offset, sum(memoryview(b).nbytes for b in buffers))
        return self.inner.readinto(offset, buffers)

    def write(self, offset: int, buffers: Sequence[memoryview]) -> int:
        self._check(offset, sum(memoryview(b).nbytes for b in buffers))
        return self.inner.write(offset, buffers)

    def flush(self) -> None:
        self.inner.flush()

    def unmap(self, offset: int, length: int) -> None:
        self._check(offset, length)
        self.inner.unmap(offset, length)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "disk.img"
    path.write_bytes(bytes(DISK_BYTES) + TAIL)
    return path


@pytest.fixture(scope="module")
def disk(image: Path) -> Iterator[ScsiDisk]:
    with FileBackingStore(image) as store:
        yield ScsiDisk(BoundsCheckingStore(store), max_transfer_bytes=16 * BLOCK)  # type: ignore[arg-type]


def assert_image_bounds_intact(image: Path) -> None:
    raw = image.read_bytes()
    assert len(raw) == DISK_BYTES + len(TAIL)
    assert raw[DISK_BYTES:] == TAIL


# --- strategies ---------------------------------------------------------------------------------

_u32 = st.integers(0, 0xFFFF_FFFF)
_lba = st.one_of(
    st.integers(0, BLOCKS + 2),
    st.integers(0, BLOCKS - 1),
    st.integers(0, BLOCKS - 1),
    st.integers(BLOCKS - 20, BLOCKS + 20).filter(lambda v: v >= 0),
    st.integers(2**32 - 3, 2**32 + 3),
    st.integers(2**64 - 300, 2**64 - 1),
    st.integers(0, 2**64 - 1),
)
_count = st.one_of(st.integers(0, 20), st.integers(0, 20), st.integers(0, 0xFFFF), _u32)


@st.composite
def cdbs(draw: st.DrawFn) -> bytes:
    """CDBs of supported commands with boundary LBAs and counts, or anything at all."""
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.binary(min_size=0, max_size=16))
    if kind == 5:  # a well-formed READ/WRITE, mostly inside the disk
        opcode = draw(st.sampled_from((0x28, 0x2A, 0x88, 0x8A)))
        lba, count = draw(_lba), draw(st.one_of(st.integers(0, 16), _count))
        if opcode < 0x80:
            return struct.pack(">BBIBHB", opcode, 0, lba & 0xFFFF_FFFF, 0, count & 0xFFFF, 0)
        return struct.pack(">BBQIBB", opcode, 0, lba, count, 0, 0)
    opcode = draw(st.sampled_from(sorted(COMMANDS)))
    length = COMMANDS[opcode].cdb_length
    cdb = bytearray(draw(st.binary(min_size=length, max_size=length)))
    cdb[0] = opcode
    if kind > 1:  # well-formed flags and control byte
        cdb[1] &= 0x08 if opcode != 0x9E else 0x1F
        cdb[length - 1] = 0
    if length == 10 and opcode not in (0x42, 0x5A, 0x25):
        struct.pack_into(">IBH", cdb, 2, draw(_lba) & 0xFFFF_FFFF, 0, draw(_count) & 0xFFFF)
    elif length == 16 and opcode != 0x9E:
        struct.pack_into(">QI", cdb, 2, draw(_lba), draw(_count))
    if kind == 1 and draw(st.booleans()):
        cdb = cdb[: draw(st.integers(1, length))]
    return bytes(cdb)


@st.composite
def unmap_lists(draw: st.DrawFn) -> bytes:
    extents = draw(st.lists(st.tuples(_lba, _count), max_size=4))
    body = b"".join(struct.pack(">QI4x", lba, n) for lba, n in extents)
    header = struct.pack(">HHI", draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFF)), 0)
    return header + body


@st.composite
def srb_packets(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """An EXECUTE_SRB packet (any size from 36 union bytes) and the sizes of its GPA views."""
    cdb = draw(cdbs())
    views = draw(st.lists(st.integers(0, 3000), max_size=4))
    if len(cdb) >= 10 and cdb[0] in (0x28, 0x2A, 0x88, 0x8A) and draw(st.booleans()):
        blocks = cdb[7] << 8 | cdb[8] if cdb[0] < 0x80 else int.from_bytes(cdb[10:14], "big")
        if blocks <= 32:  # GPA ranges that fit the transfer, split at random points
            cuts = sorted(draw(st.lists(st.integers(0, blocks * BLOCK), max_size=2)))
            edges = [0, *cuts, blocks * BLOCK]
            views = [b - a for a, b in itertools.pairwise(edges)]
            lba = draw(st.integers(0, BLOCKS - blocks))  # and an LBA inside the disk
            cdb = bytearray(cdb)
            if cdb[0] < 0x80:
                struct.pack_into(">I", cdb, 2, lba)
            else:
                struct.pack_into(">Q", cdb, 2, lba)
            cdb = bytes(cdb)
    total = sum(views)
    transfer = draw(st.one_of(st.just(total), st.just(total), st.integers(0, total + 600), _u32))
    cdb_length = draw(st.one_of(st.just(len(cdb)), st.just(len(cdb)), st.integers(0, 255)))
    spec = COMMANDS.get(cdb[0]) if cdb else None
    natural = int(spec.direction) if spec is not None else 2
    request = ScsiRequest(
        length=draw(st.integers(0, 0xFFFF)), srb_status=draw(st.integers(0, 255)),
        scsi_status=draw(st.integers(0, 255)), path_id=draw(st.sampled_from((0, 0, 0, 0, 1, 255))),
        target_id=draw(st.sampled_from((0, 0, 0, 2))), lun=draw(st.sampled_from((0, 0, 0, 1, 7))),
        cdb_length=cdb_length, sense_info_length=draw(st.integers(0, 255)),
        data_in=draw(st.sampled_from((natural, natural, natural, 0, 1, 2, 3, 255))),
        data_transfer_length=transfer,
        cdb_area=cdb.ljust(20, b"\0"), srb_flags=draw(_u32),
    )  # fmt: skip
    size = draw(st.integers(36, 60))
    body = request.pack()[: min(size, 52)].ljust(size, b"\0")
    flags = draw(st.sampled_from((0, 1, 0xFFFF_FFFF)))
    return build_packet(Operation.EXECUTE_SRB, 0, body[:52], min(size, 52), flags=flags), views


def guest_memory(sizes: list[int], fill: bytes = b"") -> tuple[bytearray, list[memoryview]]:
    """Guest RAM with guard bytes around each view."""
    memory = bytearray([GUARD]) * (sum(sizes) + 16 * (len(sizes) + 1))
    views, at = [], 16
    for size in sizes:
        view = memoryview(memory)[at : at + size]
        view[:] = (fill * (size // max(len(fill), 1) + 1))[:size] if fill else bytes(size)
        views.append(view)
        at += size + 16
    return memory, views


def guards_intact(memory: bytearray, sizes: list[int]) -> bool:
    at = 0
    for size in [*sizes, 0]:
        if memory[at : at + 16] != bytes([GUARD]) * 16:
            return False
        at += 16 + size
    return True


def ready_vsp(disk: ScsiDisk, version: int = VstorVersion.WIN8_1) -> StorvspProtocol:
    vsp = StorvspProtocol({(0, 0, 0): disk, (0, 0, 1): disk}, max_transfer_bytes=16 * 1024)
    for packet in (
        build_packet(Operation.BEGIN_INITIALIZATION, 0, b"", 52),
        build_packet(Operation.QUERY_PROTOCOL_VERSION, 0, struct.pack("<HH", version, 0), 52),
        build_packet(Operation.QUERY_PROPERTIES, 0, b"", 52),
        build_packet(Operation.END_INITIALIZATION, 0, b"", 52),
    ):
        vsp.receive(packet)
    return vsp


def check_completion(reply: bytes, request_size: int) -> ScsiRequest:
    assert len(reply) == 12 + request_size
    assert reply[:4] == b"\x01\0\0\0"
    done = ScsiRequest.unpack(reply[12:])
    if done.srb_status & 0x80:
        assert done.scsi_status == ScsiStatus.CHECK_CONDITION
        assert done.sense_info_length == 18
        assert done.cdb_area[0] == 0x70
        assert done.cdb_area[7] == 10
    return done


# --- properties ---------------------------------------------------------------------------------


@given(cdb=cdbs(), sizes=st.lists(st.integers(0, 9000), max_size=3), fill=st.binary(max_size=600))
def test_random_cdbs_never_escape_the_disk(
    disk: ScsiDisk, image: Path, cdb: bytes, sizes: list[int], fill: bytes
) -> None:
    if cdb[:1] == b"\x42":
        fill = fill or b"\0"
    memory, views = guest_memory(sizes, fill)
    result = disk.execute(cdb, DataBuffer(views))
    assert isinstance(result, ScsiResult)
    event(f"{result.srb_status.name}, {result.sense.name if result.sense else 'no sense'}")
    assert result.transferred <= sum(sizes)
    assert (result.sense is not None) == (result.scsi_status == ScsiStatus.CHECK_CONDITION) or (
        result.srb_status == 0x20
    )
    assert guards_intact(memory, sizes)
    assert_image_bounds_intact(image)


@given(parameters=unmap_lists(), length=st.integers(0, 0xFFFF))
def test_random_unmap_lists_never_escape_the_disk(
    disk: ScsiDisk, image: Path, parameters: bytes, length: int
) -> None:
    cdb = bytes((0x42, 0, 0, 0, 0, 0, 0)) + struct.pack(">H", length) + b"\0"
    result = disk.execute(cdb, DataBuffer([bytearray(parameters)]))
    assert isinstance(result, ScsiResult)
    assert_image_bounds_intact(image)


@given(packet=srb_packets(), version=st.sampled_from(list(VstorVersion)[:4]))
def test_random_srbs_complete_or_close_the_channel(
    disk: ScsiDisk, image: Path, packet: tuple[bytes, list[int]], version: int
) -> None:
    raw, sizes = packet
    vsp = ready_vsp(disk, version)
    memory, views = guest_memory(sizes, b"\x11\x22")
    transfer = struct.unpack_from("<I", raw, 12 + 12)[0]
    if transfer > sum(sizes):
        with pytest.raises(VstorProtocolError, match="data_transfer_length"):
            vsp.receive(raw, views)
        event("closed: data_transfer_length")
    else:
        reply = vsp.receive(raw, views)
        done = check_completion(reply, len(raw) - 12)
        assert done.data_transfer_length <= sum(sizes)
        event(f"srb_status {done.srb_status:#04x}, moved data: {done.data_transfer_length > 0}")
    assert guards_intact(memory, sizes)
    assert_image_bounds_intact(image)


_operations = st.one_of(st.sampled_from(sorted(OPERATIONS)), st.integers(0, 20), _u32)


@given(
    steps=st.lists(
        st.tuples(_operations, st.binary(max_size=64), st.lists(st.integers(0, 600), max_size=2)),
        max_size=12,
    ),
    begin_ready=st.booleans(),
)
def test_random_packet_sequences(
    disk: ScsiDisk,
    image: Path,
    steps: list[tuple[int, bytes, list[int]]],
    begin_ready: bool,
) -> None:
    vsp = ready_vsp(disk) if begin_ready else StorvspProtocol(disk)
    for operation, body, sizes in steps:
        raw = struct.pack("<III", operation, 1, 0) + body
        memory, views = guest_memory(sizes)
        state = vsp.state
        try:
            reply = vsp.receive(raw, views)
        except VstorProtocolError:
            assert vsp.state is state
            continue
        assert 12 <= len(reply) <= 64
        assert reply[:4] == b"\x01\0\0\0"
        assert len(reply) == 12 + min(len(body), 52)
        assert guards_intact(memory, sizes)
    assert_image_bounds_intact(image)


@given(raw=st.binary(max_size=80))
def test_random_bytes(disk: ScsiDisk, image: Path, raw: bytes) -> None:
    for vsp in (StorvspProtocol(disk), ready_vsp(disk)):
        try:
            reply = vsp.receive(raw, [bytearray(4096)])
        except VstorProtocolError:
            continue
        assert 12 <= len(reply) <= 64
    assert_image_bounds_intact(image)


_io = st.tuples(
    st.sampled_from((0x28, 0x2A, 0x88, 0x8A)),
    st.integers(0, BLOCKS - 1),
    st.integers(0, 16),
    st.lists(st.integers(0, 16 * BLOCK), max_size=2),
    st.binary(min_size=1, max_size=8),
)


@given(ops=st.lists(_io, min_size=1, max_size=8))
def test_well_formed_io_through_the_vsp_matches_a_model(
    disk: ScsiDisk, image: Path, ops: list[tuple[int, int, int, list[int], bytes]]
) -> None:
    vsp = ready_vsp(disk)
    model = bytearray(image.read_bytes()[:DISK_BYTES])
    for opcode, lba, blocks, cuts, pattern in ops:
        blocks = min(blocks, BLOCKS - lba)
        length = blocks * BLOCK
        edges = [0, *sorted(min(c, length) for c in cuts), length]
        sizes = [b - a for a, b in itertools.pairwise(edges)]
        memory, views = guest_memory(sizes, pattern)
        write = opcode in (0x2A, 0x8A)
        if opcode < 0x80:
            cdb = struct.pack(">BBIBHB", opcode, 0, lba, 0, blocks, 0)
        else:
            cdb = struct.pack(">BBQIBB", opcode, 0, lba, blocks, 0, 0)
        body = ScsiRequest(
            cdb_length=len(cdb), data_in=0 if write else 1, data_transfer_length=length,
            cdb_area=cdb.ljust(20, b"\0"),
        ).pack()  # fmt: skip
        reply = vsp.receive(build_packet(Operation.EXECUTE_SRB, 0, body, flags=1), views)
        done = check_completion(reply, 52)
        assert (done.srb_status, done.data_transfer_length) == (1, length)
        moved = b"".join(bytes(view) for view in views)
        start = lba * BLOCK
        if write:
            model[start : start + length] = moved
        else:
            assert moved == model[start : start + length]
        assert guards_intact(memory, sizes)
    assert image.read_bytes()[:DISK_BYTES] == model
    assert_image_bounds_intact(image)
