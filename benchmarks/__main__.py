"""``python -m benchmarks [--quick] [NAME ...]``: run the benchmarks and print one report."""

from __future__ import annotations

import importlib
import sys

from benchmarks._harness import print_rows

#: name -> module; each module has ``run(quick: bool) -> list[Row]``.
BENCHMARKS = {
    "bridge": "benchmarks.bench_bridge",
    "ring": "benchmarks.bench_ring",
    "vmbus": "benchmarks.bench_vmbus",
    "host": "benchmarks.bench_host",
    "storage": "benchmarks.bench_storage",
}


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    names = [a for a in argv if not a.startswith("-")] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}",
              file=sys.stderr)
        return 2
    for name in names:
        module = importlib.import_module(BENCHMARKS[name])
        print_rows(module.run(quick=quick))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
