"""``FileBackingStore``: creation without truncation, read-only images, in-place transfers
through memoryviews, bounds checks that touch nothing, flush and unmap."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from winhv.vsp_vsc_pairs.storage import (
    BackingStore,
    BackingStoreRangeError,
    DataBuffer,
    FileBackingStore,
)

MIB = 1 << 20


def test_a_missing_image_is_created_sparse_at_the_configured_size(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    with FileBackingStore(path, 8) as store:
        assert store.size == 8 * MIB
        assert not store.read_only
        assert isinstance(store, BackingStore)
    assert path.stat().st_size == 8 * MIB
    assert path.stat().st_blocks * 512 < MIB  # sparse


def test_a_present_image_is_never_truncated_or_grown(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    path.write_bytes(b"\xaa" * (3 * MIB + 5))
    with FileBackingStore(path, 1) as store:
        assert store.size == 3 * MIB + 5
    with FileBackingStore(path, 64) as store:
        assert store.size == 3 * MIB + 5
    assert path.read_bytes() == b"\xaa" * (3 * MIB + 5)


def test_read_only_image(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(range(256)) * 16)
    with FileBackingStore(path, read_only=True) as store:
        assert store.read_only
        out = bytearray(16)
        assert store.readinto(256, [memoryview(out)]) == 16
        assert out == bytes(range(16))
        with pytest.raises(PermissionError, match="read-only"):
            store.write(0, [b"x"])
        with pytest.raises(PermissionError, match="read-only"):
            store.unmap(0, 512)
        store.flush()
    assert path.read_bytes() == bytes(range(256)) * 16


def test_read_only_image_must_exist(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="never created"):
        FileBackingStore(tmp_path / "missing.img", 1, read_only=True)
    assert not (tmp_path / "missing.img").exists()


@pytest.mark.parametrize("size_mb", [None, 0, -1, 1.5, True])
def test_creation_needs_a_whole_positive_size(tmp_path: Path, size_mb: object) -> None:
    with pytest.raises(ValueError, match="size_mb"):
        FileBackingStore(tmp_path / "new.img", size_mb)  # type: ignore[arg-type]
    assert not (tmp_path / "new.img").exists()


def test_only_regular_files(tmp_path: Path) -> None:
    with pytest.raises((ValueError, IsADirectoryError)):
        FileBackingStore(tmp_path, 1)


def test_scatter_gather_moves_data_in_place(tmp_path: Path) -> None:
    with FileBackingStore(tmp_path / "d.img", 1) as store:
        guest = bytearray(os.urandom(3 * 4096))
        pages = [memoryview(guest)[i * 4096 : (i + 1) * 4096] for i in range(3)]
        assert store.write(8192, [pages[2], pages[0], pages[1][:100]]) == 8292
        back = bytearray(8292)
        store.readinto(8192, [memoryview(back)])
        assert back == guest[8192:] + guest[:4096] + guest[4096:4196]
        target = bytearray(4096)
        store.readinto(8192, DataBuffer([target]).views)
        assert target == guest[8192:]
    raw = (tmp_path / "d.img").read_bytes()
    assert raw[8192 : 8192 + 8292] == bytes(back)


def test_more_views_than_iov_max_are_split(tmp_path: Path) -> None:
    with FileBackingStore(tmp_path / "d.img", 1) as store:
        data = bytearray(os.urandom(3000))
        store.write(1, [memoryview(data)[i : i + 1] for i in range(3000)])
        out = bytearray(3000)
        store.readinto(1, [memoryview(out)[i : i + 1] for i in range(3000)])
        assert out == data


@pytest.mark.parametrize(
    ("offset", "length"), [(-1, 1), (MIB, 1), (MIB - 1, 2), (0, MIB + 1), (2**63, 1)]
)
def test_out_of_range_accesses_touch_nothing(tmp_path: Path, offset: int, length: int) -> None:
    path = tmp_path / "d.img"
    with FileBackingStore(path, 1) as store:
        with pytest.raises(BackingStoreRangeError, match=r"expected a range inside 0\.\.1048576"):
            store.write(offset, [b"\xff" * length])
        with pytest.raises(BackingStoreRangeError):
            store.readinto(offset, [bytearray(length)])
        with pytest.raises(BackingStoreRangeError):
            store.unmap(offset, length)
    assert path.stat().st_size == MIB
    assert path.read_bytes() == bytes(MIB)


def test_the_last_byte_is_in_range(tmp_path: Path) -> None:
    with FileBackingStore(tmp_path / "d.img", 1) as store:
        store.write(MIB - 1, [b"\x01"])
        out = bytearray(1)
        store.readinto(MIB - 1, [out])
        assert out == b"\x01"
        assert store.write(MIB, []) == 0


def test_unmap_reads_back_zeros_and_keeps_the_size(tmp_path: Path) -> None:
    path = tmp_path / "d.img"
    with FileBackingStore(path, 1) as store:
        store.write(0, [b"\xee" * MIB])
        store.unmap(4096, 8192)
        store.unmap(100, 10)  # not block aligned
        store.unmap(0, 0)
        store.flush()
    raw = path.read_bytes()
    assert len(raw) == MIB
    assert raw[4096:12288] == bytes(8192)
    assert raw[100:110] == bytes(10)
    assert raw[:100] == b"\xee" * 100
    assert raw[110:4096] == b"\xee" * (4096 - 110)
    assert raw[12288:] == b"\xee" * (MIB - 12288)


def test_unmap_falls_back_to_zeros(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import winhv.vsp_vsc_pairs.storage._backing as backing

    monkeypatch.setattr(backing, "_FALLOCATE", None)
    path = tmp_path / "d.img"
    with FileBackingStore(path, 3) as store:
        store.write(0, [b"\x11" * (3 * MIB)])
        store.unmap(10, 2 * MIB + 7)
    raw = path.read_bytes()
    assert raw[10 : 2 * MIB + 17] == bytes(2 * MIB + 7)
    assert raw[:10] == b"\x11" * 10
    assert raw[2 * MIB + 17 :] == b"\x11" * (MIB - 17)


def test_a_shortened_file_is_an_io_error(tmp_path: Path) -> None:
    path = tmp_path / "d.img"
    with FileBackingStore(path, 1) as store:
        os.truncate(path, 4096)
        with pytest.raises(OSError, match="image ended at 4096"):
            store.readinto(0, [bytearray(8192)])


def test_close_is_idempotent_and_blocks_io(tmp_path: Path) -> None:
    store = FileBackingStore(tmp_path / "d.img", 1)
    assert "rw" in repr(store)
    store.close()
    store.close()
    assert store.closed
    with pytest.raises(ValueError, match="closed"):
        store.readinto(0, [bytearray(1)])
    with pytest.raises(ValueError, match="closed"):
        store.fileno()


def test_data_buffer_views_head_scatter_gather() -> None:
    a, b = bytearray(4), bytearray(6)
    buffer = DataBuffer([a, memoryview(b)])
    assert len(buffer) == 10
    assert buffer.writable
    assert buffer.scatter(b"0123456789abc") == 10
    assert (a, b) == (bytearray(b"0123"), bytearray(b"456789"))
    head = buffer.head(5)
    assert len(head) == 5
    assert head.gather() == b"01234"
    assert buffer.head(10) is buffer
    assert buffer.gather(0) == b""
    with pytest.raises(ValueError, match=r"expected 0\.\.10"):
        buffer.head(11)
    assert not DataBuffer([b"ro"]).writable
    assert len(DataBuffer.of(bytearray(3))) == 3
    assert DataBuffer.of(buffer) is buffer
    assert len(DataBuffer.of([b"a", b"bc"])) == 3
    wide = memoryview(bytearray(8)).cast("I")
    assert len(DataBuffer([wide])) == 8
    with pytest.raises(ValueError, match="non-contiguous"):
        DataBuffer([memoryview(bytearray(8))[::2]])
