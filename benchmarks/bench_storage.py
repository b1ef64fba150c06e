"""Storage benchmark (issue #8): the guest's BlockDevice through the whole path -- template
SRB, GPA-direct packet into the ring, signal, the host's ISR and channel poll, StorVsp, the
sans-IO storvsp, ``os.preadv`` into guest RAM, the completion packet, the guest's interrupt and
callback -- against a page-cached image, with the same reads done directly with ``os.preadv``
on the file in the same run printed beside it as a ratio.

* 4 KiB random reads at queue depth 32: IOPS (bar >= 100,000);
* 1 MiB sequential reads at queue depth 32: GB/s (bar >= 1 GB/s).

Each figure is the median of several timed runs of a closed loop: every completion callback
issues the next read, so 32 stay in flight. The garbage collector is off while a run is timed,
as ``timeit`` does; the machine is shared, so expect run-to-run noise of 10-30 %.
Run: ``python -m benchmarks storage``.
"""

from __future__ import annotations

import gc
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import Row, print_rows
from winhv.drivers.vmbus.loopback import connect_pair
from winhv.vsp_vsc_pairs.storage import BlockDevice, StorVsc, StorVsp

MIB = 1 << 20
IMAGE_MB = 256
QUEUE_DEPTH = 32


class BenchVsc(StorVsc):
    queue_depth = QUEUE_DEPTH


def _machine(image: Path) -> tuple[Any, BlockDevice, StorVsp]:
    vsp = StorVsp({"path": str(image), "size_mb": IMAGE_MB, "max_transfer_bytes": MIB,
                   "queue_depth": 1024})
    loop, _, device = connect_pair(vsp, BenchVsc, memory_mb=128)
    disk = device.driver.block_device
    if disk is None or disk.queue_depth != QUEUE_DEPTH:
        raise RuntimeError(f"the disk did not come up at queue depth {QUEUE_DEPTH}: {disk}")
    return loop, disk, vsp


def _closed_loop(loop: Any, disk: BlockDevice, lbas: list[int], blocks: int) -> float:
    """Seconds to read every LBA of ``lbas`` (``blocks`` each) at the disk's queue depth."""
    count = len(lbas)
    state = [0, 0]   # issued, completed
    read_async = disk.read_async

    def done(view: Any, error: BaseException | None) -> None:
        if error is not None:
            raise error
        state[1] += 1
        issued = state[0]
        if issued < count:
            state[0] = issued + 1
            read_async(lbas[issued], blocks, done)

    collect = gc.isenabled()
    gc.disable()   # as timeit does: a collection pass is not part of the data path
    start = time.perf_counter()
    for lba in lbas[:disk.queue_depth]:
        state[0] += 1
        read_async(lba, blocks, done)
    run = loop.run
    while state[1] < count:
        if not run():
            raise RuntimeError(f"stalled after {state[1]} of {count} reads")
    elapsed = time.perf_counter() - start
    if collect:
        gc.enable()
    return elapsed


def _direct(fd: int, offsets: list[int], size: int) -> float:
    buffer = memoryview(bytearray(size))
    preadv = os.preadv
    views = [buffer]
    start = time.perf_counter()
    for offset in offsets:
        preadv(fd, views, offset)
    return time.perf_counter() - start


def measure(quick: bool = False) -> dict[str, float]:
    """The raw figures (per-second rates), for the report and for profiling."""
    repeats = 3 if quick else 7
    with tempfile.TemporaryDirectory(prefix="winhv-bench-storage-") as folder:
        image = Path(folder) / "bench.img"
        with image.open("wb") as f:   # real data, then read once: the page cache holds it
            chunk = os.urandom(MIB)
            for _ in range(IMAGE_MB):
                f.write(chunk)
        loop, disk, vsp = _machine(image)
        assert vsp.store is not None
        fd = vsp.store.fileno()
        rng = random.Random(8)
        pages = IMAGE_MB * MIB // 4096
        n4k = 20_000 if quick else 100_000
        lbas = [rng.randrange(pages) * 8 for _ in range(n4k)]
        offsets = [lba * 512 for lba in lbas]
        seq_count = 256 if quick else 1024
        seq = [(i % IMAGE_MB) * 2048 for i in range(seq_count)]
        seq_offsets = [lba * 512 for lba in seq]
        _closed_loop(loop, disk, seq[:IMAGE_MB], 2048)   # warm the cache and the slots
        _closed_loop(loop, disk, lbas[: n4k // 10], 8)
        t4k = statistics.median(_closed_loop(loop, disk, lbas, 8) for _ in range(repeats))
        d4k = statistics.median(_direct(fd, offsets, 4096) for _ in range(repeats))
        tseq = statistics.median(_closed_loop(loop, disk, seq, 2048) for _ in range(repeats))
        dseq = statistics.median(_direct(fd, seq_offsets, MIB) for _ in range(repeats))
        vsp.stop()
    return {
        "iops_4k": n4k / t4k, "direct_iops_4k": n4k / d4k,
        "gbps_seq": seq_count * MIB / tseq / 1e9, "direct_gbps_seq": seq_count * MIB / dseq / 1e9,
    }


def run(quick: bool = False) -> list[Row]:
    g = "storage (issue #8)"
    m = measure(quick)
    return [
        Row(g, "4 KiB random reads, QD 32, guest API", m["iops_4k"], "IOPS", ">= 100,000",
            f"direct os.preadv {m['direct_iops_4k']:,.0f} IOPS, "
            f"ratio {m['iops_4k'] / m['direct_iops_4k']:.2f}"),
        Row(g, "1 MiB sequential reads, QD 32, guest API", m["gbps_seq"], "GB/s", ">= 1",
            f"direct os.preadv {m['direct_gbps_seq']:.2f} GB/s, "
            f"ratio {m['gbps_seq'] / m['direct_gbps_seq']:.2f}"),
    ]


if __name__ == "__main__":
    print_rows(run(quick="--quick" in sys.argv))
