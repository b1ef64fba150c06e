"""Ring throughput: the compiled ring against the plain-Python baseline and a memoryview copy.

Run ``python -m benchmarks.bench_ring`` from the repository root (or
``python benchmarks/bench_ring.py``). ``run(report)`` returns the rows so a future
``benchmarks`` command can fold this in; ``report`` receives one printable line per result.
Every figure is the median of several repeats timed with ``time.perf_counter_ns``.

Targets (issue #3): 64 KiB >= 50% of memcpy bandwidth; 64 B >= 3 M packets/s batched and
>= 1 M packets/s one at a time; >= 20x the Python ring.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

try:
    from benchmarks._pyring import PyRing
except ModuleNotFoundError:  # run as a script: benchmarks/ itself is on sys.path
    from _pyring import PyRing  # type: ignore[no-redef]

from winhv.drivers.vmbus.ring import Ring, RingReader, RingWriter

__all__ = ["Row", "main", "run"]

DATA_SIZE = 1 << 20
REPEATS = 7
BATCH = 256


@dataclass(frozen=True, slots=True)
class Row:
    """One measured workload: median nanoseconds per packet (or per copy) and derived rates."""

    name: str
    size: int
    ns_per_packet: float

    @property
    def packets_per_s(self) -> float:
        return 1e9 / self.ns_per_packet

    @property
    def bytes_per_s(self) -> float:
        return self.size * self.packets_per_s

    def line(self) -> str:
        return (
            f"{self.name:<34} {self.size:>6} B  {self.ns_per_packet:>9.1f} ns/pkt  "
            f"{self.packets_per_s / 1e6:>7.2f} M pkt/s  {self.bytes_per_s / 1e9:>7.2f} GB/s"
        )


def _median_ns(step: Callable[[int], int], iterations: int) -> float:
    """Median over REPEATS of (elapsed / packets) for ``step(iterations)`` (returns packets)."""
    samples = []
    for _ in range(REPEATS):
        t0 = time.perf_counter_ns()
        packets = step(iterations)
        samples.append((time.perf_counter_ns() - t0) / packets)
    return statistics.median(samples)


def _cython_single(size: int) -> Callable[[int], int]:
    ring = Ring(bytearray(4096 + DATA_SIZE), initialize=True)
    writer, reader = RingWriter(ring), RingReader(ring)
    payload = bytes(size)

    def step(n: int) -> int:
        write, read, done = writer.write, reader.read, reader.done
        for i in range(n):
            write(payload, trans_id=i)
            read().payload  # noqa: B018 - a reader would touch the payload view
            done()
        return n

    return step


def _cython_batch(size: int) -> Callable[[int], int]:
    ring = Ring(bytearray(4096 + DATA_SIZE), initialize=True)
    writer, reader = RingWriter(ring), RingReader(ring)
    payloads = [bytes(size)] * BATCH

    def step(n: int) -> int:
        total = 0
        for _ in range(n):
            count, _signal = writer.write_many(payloads)
            for packet in reader.read_many(count):
                packet.payload  # noqa: B018
            reader.done()
            total += count
        return total

    return step


def _python_single(size: int) -> Callable[[int], int]:
    ring = PyRing(bytearray(4096 + DATA_SIZE))
    payload = bytes(size)

    def step(n: int) -> int:
        for i in range(n):
            ring.write(payload, i)
            ring.read()
            ring.done()
        return n

    return step


def _python_batch(size: int) -> Callable[[int], int]:
    ring = PyRing(bytearray(4096 + DATA_SIZE))
    payloads = [bytes(size)] * BATCH

    def step(n: int) -> int:
        total = 0
        for _ in range(n):
            count, _signal = ring.write_many(payloads)
            ring.read_many(count)
            ring.done()
            total += count
        return total

    return step


def _memcpy(size: int) -> Callable[[int], int]:
    src = memoryview(bytes(size))
    dst = memoryview(bytearray(size))

    def step(n: int) -> int:
        for _ in range(n):
            dst[:] = src
        return n

    return step


def run(report: Callable[[str], object] = print, *, scale: float = 1.0) -> list[Row]:
    """Measure every workload, ``report`` a line for each and the ratios; return the rows."""
    plan = [
        ("cython ring, one at a time", _cython_single, 64, 200_000),
        ("cython ring, one at a time", _cython_single, 1500, 100_000),
        ("cython ring, one at a time", _cython_single, 65536, 5_000),
        ("cython ring, batched", _cython_batch, 64, 1_000),
        ("python ring, one at a time", _python_single, 64, 20_000),
        ("python ring, one at a time", _python_single, 1500, 20_000),
        ("python ring, one at a time", _python_single, 65536, 2_000),
        ("python ring, batched", _python_batch, 64, 100),
        ("memoryview copy", _memcpy, 64, 200_000),
        ("memoryview copy", _memcpy, 1500, 200_000),
        ("memoryview copy", _memcpy, 65536, 20_000),
    ]
    rows: list[Row] = []
    for name, factory, size, iterations in plan:
        ns = _median_ns(factory(size), max(1, int(iterations * scale)))
        row = Row(name, size, ns)
        rows.append(row)
        report(row.line())
    by = {(r.name, r.size): r for r in rows}
    for size in (64, 1500, 65536):
        speedup = (
            by[("python ring, one at a time", size)].ns_per_packet
            / by[("cython ring, one at a time", size)].ns_per_packet
        )
        report(f"cython vs python ring, one at a time, {size} B: {speedup:.1f}x")
    batched = (
        by[("python ring, batched", 64)].ns_per_packet
        / by[("cython ring, batched", 64)].ns_per_packet
    )
    report(f"cython vs python ring, batched, 64 B: {batched:.1f}x")
    share = (
        by[("cython ring, one at a time", 65536)].bytes_per_s
        / by[("memoryview copy", 65536)].bytes_per_s
    )
    report(f"64 KiB ring bandwidth as a share of memoryview-copy bandwidth: {share:.0%}")
    return rows


def main() -> None:
    run(print)


if __name__ == "__main__":
    main()
