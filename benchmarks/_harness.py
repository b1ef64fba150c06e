"""Timing helpers shared by the benchmarks: medians of repeated runs, printed side by side.

These machines are noisy; absolute times drift between runs, ratios measured in the same
process hold. So every benchmark times its baseline in the same run and prints the ratio.
Nothing here is a test: no time is ever asserted.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Row", "interleaved_ns", "median_ns", "print_rows"]


@dataclass(frozen=True, slots=True)
class Row:
    """One measured figure: ``value`` in ``unit``, with an optional target to compare with."""

    group: str
    name: str
    value: float
    unit: str
    target: str = ""
    note: str = ""


def median_ns(run: Callable[[int], object], count: int, repeats: int = 7) -> float:
    """Median nanoseconds per operation of ``run(count)`` over ``repeats`` timed runs.

    ``run`` performs ``count`` operations; one untimed warm-up run comes first.
    """
    run(max(1, count // 10))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        run(count)
        samples.append((time.perf_counter_ns() - start) / count)
    return statistics.median(samples)


def interleaved_ns(
    runs: Sequence[tuple[Callable[[int], object], int]], repeats: int = 7
) -> list[float]:
    """Median nanoseconds per operation of each ``(run, count)``, timed in turns.

    Each round times one run of every workload, one after the other, so a slow patch of the
    machine (another job, a frequency change) falls on all of them alike and the ratios
    between them hold; timing one workload's repeats back to back lets such a patch land on
    one side of a ratio only. Each workload gets one untimed warm-up run first.
    """
    for run, count in runs:
        run(max(1, count // 10))
    samples: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for taken, (run, count) in zip(samples, runs, strict=True):
            start = time.perf_counter_ns()
            run(count)
            taken.append((time.perf_counter_ns() - start) / count)
    return [statistics.median(taken) for taken in samples]


def print_rows(rows: list[Row], *, file=None) -> None:
    """Print rows grouped, aligned, with targets beside the measured values."""
    width = max((len(r.name) for r in rows), default=10)
    group = None
    for row in rows:
        if row.group != group:
            group = row.group
            print(f"\n== {group}", file=file)
        value = f"{row.value:,.2f}" if row.value < 100 else f"{row.value:,.0f}"
        target = f"  (target {row.target})" if row.target else ""
        note = f"  {row.note}" if row.note else ""
        print(f"  {row.name:<{width}}  {value:>14} {row.unit:<8}{target}{note}", file=file)
