"""Ring throughput (issue #3): the compiled ring against the plain-Python baseline and a copy.

Run ``python -m benchmarks ring`` or ``python -m benchmarks.bench_ring`` from the repository
root, or ``python benchmarks/bench_ring.py``; ``--quick`` shortens every loop.
``run(quick)`` returns :class:`benchmarks._harness.Row` values like every other benchmark.
Each figure is a median of repeated runs (``time.perf_counter_ns``), and every ratio is taken
between workloads timed in the same process, because these machines are noisy.

"write+read" is one ``write()``, one ``read()`` that touches ``payload`` (materialising the
zero-copy view, as a consumer does) and one ``done()``. Targets: 64 KiB >= 50% of memcpy
bandwidth; 64 B >= 3 M packets/s batched and >= 1 M packets/s one at a time; >= 20x the
Python ring.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

if not __package__:  # run as a script: make ``benchmarks`` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import Row, median_ns, print_rows
from benchmarks._pyring import PyRing
from winhv.drivers.vmbus.ring import Ring, RingReader, RingWriter

__all__ = ["run"]

DATA_SIZE = 1 << 20
BATCH = 256
GROUP = "ring (issue #3)"


def _compiled_single(size: int, *, touch: bool = True) -> Callable[[int], object]:
    ring = Ring(bytearray(4096 + DATA_SIZE), initialize=True)
    writer, reader = RingWriter(ring), RingReader(ring)
    payload = bytes(size)
    write, read, done = writer.write, reader.read, reader.done

    def touched(n: int) -> None:
        for i in range(n):
            write(payload, trans_id=i)
            read().payload  # noqa: B018 - a consumer touches the payload view
            done()

    def untouched(n: int) -> None:
        for i in range(n):
            write(payload, trans_id=i)
            read()
            done()

    return touched if touch else untouched


def _compiled_batch(size: int) -> Callable[[int], object]:
    ring = Ring(bytearray(4096 + DATA_SIZE), initialize=True)
    writer, reader = RingWriter(ring), RingReader(ring)
    payloads = [bytes(size)] * BATCH

    def step(n: int) -> None:
        for _ in range(max(1, n // BATCH)):
            count, _signal = writer.write_many(payloads)
            for packet in reader.read_many(count):
                packet.payload  # noqa: B018
            reader.done()

    return step


def _python_single(size: int) -> Callable[[int], object]:
    ring = PyRing(bytearray(4096 + DATA_SIZE))
    payload = bytes(size)

    def step(n: int) -> None:
        for i in range(n):
            ring.write(payload, i)
            ring.read()
            ring.done()

    return step


def _python_batch(size: int) -> Callable[[int], object]:
    ring = PyRing(bytearray(4096 + DATA_SIZE))
    payloads = [bytes(size)] * BATCH

    def step(n: int) -> None:
        for _ in range(max(1, n // BATCH)):
            count, _signal = ring.write_many(payloads)
            ring.read_many(count)
            ring.done()

    return step


def _copy(size: int) -> Callable[[int], object]:
    src = memoryview(bytes(size))
    dst = memoryview(bytearray(size))

    def step(n: int) -> None:
        for _ in range(n):
            dst[:] = src

    return step


def run(quick: bool = False) -> list[Row]:
    """Time every workload and return the rows (figures, then ratios against the targets)."""
    scale = 0.1 if quick else 1.0

    def ns(factory: Callable[[int], object], count: int) -> float:
        return median_ns(factory, max(BATCH, int(count * scale)))

    rows: list[Row] = []
    compiled = {
        s: ns(_compiled_single(s), 200_000 if s < 4096 else 5_000) for s in (64, 1500, 65536)
    }
    python = {s: ns(_python_single(s), 20_000 if s < 4096 else 2_000) for s in (64, 1500, 65536)}
    copy = {s: ns(_copy(s), 200_000 if s < 4096 else 20_000) for s in (64, 1500, 65536)}
    untouched = ns(_compiled_single(64, touch=False), 200_000)
    compiled_batch = ns(_compiled_batch(64), 256_000)
    python_batch = ns(_python_batch(64), 25_600)

    for size in (64, 1500, 65536):
        target = {64: ">= 1 M pkt/s"}.get(size, "")
        rows.append(Row(GROUP, f"compiled write+read {size} B", compiled[size], "ns/pkt"))
        rows.append(Row(GROUP, "  = packets/s", 1e3 / compiled[size], "M pkt/s", target))
    rows.append(
        Row(
            GROUP,
            "compiled write+read 64 B, payload unused",
            untouched,
            "ns/pkt",
            note="(payload view is created lazily)",
        )
    )
    rows.append(Row(GROUP, "compiled write_many+read_many 64 B", compiled_batch, "ns/pkt"))
    rows.append(Row(GROUP, "  = packets/s", 1e3 / compiled_batch, "M pkt/s", ">= 3 M pkt/s"))
    for size in (64, 1500, 65536):
        rows.append(Row(GROUP, f"python ring write+read {size} B", python[size], "ns/pkt"))
    rows.append(Row(GROUP, "python ring batched 64 B", python_batch, "ns/pkt"))
    for size in (64, 1500, 65536):
        rows.append(Row(GROUP, f"memoryview copy {size} B", copy[size], "ns"))
    for size in (64, 1500, 65536):
        rows.append(
            Row(
                GROUP, f"  python / compiled, {size} B", python[size] / compiled[size], "x", ">= 20"
            )
        )
    rows.append(
        Row(GROUP, "  python / compiled, 64 B payload unused", python[64] / untouched, "x", ">= 20")
    )
    rows.append(Row(GROUP, "  python / compiled, batched 64 B", python_batch / compiled_batch, "x"))
    bandwidth = 65536 / compiled[65536]
    rows.append(Row(GROUP, "compiled 64 KiB bandwidth", bandwidth, "GB/s"))
    rows.append(Row(GROUP, "memoryview copy 64 KiB bandwidth", 65536 / copy[65536], "GB/s"))
    rows.append(
        Row(GROUP, "  compiled / copy bandwidth", 100 * copy[65536] / compiled[65536], "%", ">= 50")
    )
    return rows


if __name__ == "__main__":
    print_rows(run(quick="--quick" in sys.argv))
