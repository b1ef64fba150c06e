"""The storage pair's compiled module has a stub that matches it (mypy's stubtest), as the
framework's compiled modules do (tests/test_stubs.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_the_fast_path_stub_matches_the_compiled_module(tmp_path) -> None:
    pytest.importorskip("mypy.stubtest", reason="mypy is not installed (pip install '.[test]')")
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "winhv.vsp_vsc_pairs.storage._fastpath"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
