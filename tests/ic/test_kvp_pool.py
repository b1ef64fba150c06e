"""The daemon's pool files (§5.7) against an independent reader and writer written from the
sheet: 2560-byte records, key[512] then value[2048], UTF-8, NUL-terminated and NUL-padded."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from winhv.vsp_vsc_pairs.ic import IcLoopback
from winhv.vsp_vsc_pairs.ic.kvp import KvpGuest, KvpHost
from winhv.vsp_vsc_pairs.ic.kvp_pool import (
    KVP_POOL_RECORD_SIZE,
    KvpPoolError,
    KvpPoolFile,
    KvpPoolStore,
    pool_file_name,
)


def sheet_read(data: bytes) -> list[tuple[str, str]]:
    """Read a pool file as §5.7 describes it, independently of the module under test."""
    out = []
    for at in range(0, len(data) - len(data) % 2560, 2560):
        key = data[at:at + 512].split(b"\0", 1)[0].decode("utf-8")
        value = data[at + 512:at + 2560].split(b"\0", 1)[0].decode("utf-8")
        out.append((key, value))
    return out


def sheet_write(items: list[tuple[str, str]]) -> bytes:
    out = b""
    for key, value in items:
        out += key.encode().ljust(512, b"\0") + value.encode().ljust(2048, b"\0")
    return out


@pytest.fixture
def directory() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as path:
        yield Path(path)


texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                max_size=40)


@settings(max_examples=30, deadline=None)
@given(items=st.lists(st.tuples(texts, texts), max_size=6))
def test_written_here_reads_back_with_the_sheet_reader_and_back(
        items: list[tuple[str, str]]) -> None:
    with tempfile.TemporaryDirectory() as path, \
            KvpPoolFile(Path(path) / pool_file_name(0)) as pool:
        pool.write(items)
        data = (Path(path) / ".kvp_pool_0").read_bytes()
        assert len(data) == KVP_POOL_RECORD_SIZE * len(items)
        assert data == sheet_write(items)
        assert sheet_read(data) == items
        (Path(path) / ".kvp_pool_0").write_bytes(sheet_write(items[::-1]))
        assert pool.read() == items[::-1]


def test_record_layout_and_limits(directory: Path) -> None:
    assert KVP_POOL_RECORD_SIZE == 2560
    with KvpPoolFile(directory / ".kvp_pool_1") as pool:
        pool.set("k" * 511, "v" * 2047)
        with pytest.raises(KvpPoolError, match="512 UTF-8 bytes plus NUL, expected at most 512"):
            pool.set("k" * 512, "v")
        with pytest.raises(KvpPoolError, match="2048 UTF-8 bytes plus NUL"):
            pool.set("k", "v" * 2048)
        with pytest.raises(KvpPoolError, match="contains NUL"):
            pool.set("a\0", "v")
    data = (directory / ".kvp_pool_1").read_bytes()
    assert data[511] == 0
    assert data[512:512 + 2047] == b"v" * 2047
    assert data[2559] == 0


def test_set_modifies_in_place_and_delete_moves_records_up(directory: Path) -> None:
    path = directory / ".kvp_pool_0"
    path.write_bytes(sheet_write([("a", "1"), ("b", "2"), ("c", "3")]))
    with KvpPoolFile(path) as pool:
        pool.set("b", "two")
        pool.set("d", "4")
        assert sheet_read(path.read_bytes()) == [("a", "1"), ("b", "two"), ("c", "3"),
                                                 ("d", "4")]
        assert pool.delete("a")
        assert not pool.delete("zz")
        assert sheet_read(path.read_bytes()) == [("b", "two"), ("c", "3"), ("d", "4")]
        assert pool.get("c") == "3"
        assert pool.get("a") is None


def test_stale_bytes_after_nul_and_partial_tail_are_ignored(directory: Path) -> None:
    path = directory / ".kvp_pool_3"
    record = bytearray(sheet_write([("key", "value")]))
    record[4:8] = b"junk"
    record[512 + 6:512 + 10] = b"junk"
    path.write_bytes(bytes(record) + b"partial")
    with KvpPoolFile(path) as pool:
        assert pool.read() == [("key", "value")]


def test_invalid_utf8_names_the_record(directory: Path) -> None:
    path = directory / ".kvp_pool_0"
    path.write_bytes(sheet_write([("ok", "ok")]) + b"\xff".ljust(2560, b"\0"))
    with KvpPoolFile(path) as pool, pytest.raises(KvpPoolError, match="record 1: key"):
        pool.read()


def test_lock_is_a_posix_whole_file_lock_seen_by_other_processes(directory: Path) -> None:
    path = directory / ".kvp_pool_0"
    probe = ("import fcntl, os, sys\n"
             "fd = os.open(sys.argv[1], os.O_RDWR)\n"
             "try:\n    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
             "except OSError:\n    sys.exit(3)\n")
    with KvpPoolFile(path) as pool:
        with pool.locked():
            held = subprocess.run([sys.executable, "-c", probe, str(path)], check=False)
        free = subprocess.run([sys.executable, "-c", probe, str(path)], check=False)
    assert (held.returncode, free.returncode) == (3, 0)


def test_store_uses_the_daemon_file_names(directory: Path) -> None:
    with KvpPoolStore(directory / "hyperv") as store:
        for pool in range(5):
            store.pool(pool).set("k", str(pool))
        with pytest.raises(KvpPoolError, match=r"expected 0\.\.4"):
            store.pool(5)
    names = sorted(p.name for p in (directory / "hyperv").iterdir())
    assert names == [f".kvp_pool_{n}" for n in range(5)]


def test_guest_pool_written_over_kvp_reads_with_the_sheet_reader(directory: Path) -> None:
    (directory / ".kvp_pool_0").write_bytes(sheet_write([("preexisting", "from daemon")]))
    host, guest = KvpHost(), KvpGuest(directory)
    pair = IcLoopback(host, guest)
    pair.start()
    pair.host_step(host.set(0, "HostName", "hyper-v-01", pair.now))
    pair.host_step(host.set(0, "Count", 12, pair.now))
    pair.host_step(host.enumerate_all(0, pair.now))
    pair.settle()
    guest.close()
    assert sheet_read((directory / ".kvp_pool_0").read_bytes()) == [
        ("preexisting", "from daemon"), ("HostName", "hyper-v-01"), ("Count", "12")]
