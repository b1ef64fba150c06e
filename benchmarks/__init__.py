"""winhv's benchmarks. Run them all with ``python -m benchmarks`` (or name some:
``python -m benchmarks bridge ring``). Each prints medians and ratios against a baseline run in
the same process; none of them is a test."""
