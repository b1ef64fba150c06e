"""The ``.pyi`` stubs of the compiled modules match the modules (mypy's stubtest)."""

from __future__ import annotations

import subprocess
import sys

import pytest

COMPILED = [
    "winhv._gpa",
    "winhv._bridge",
    "winhv._handle",
    "winhv.drivers.hv._core",
    "winhv.drivers.kernel._synic",
    "winhv.drivers.vmbus._ring",
]


def test_stubs_of_compiled_modules_match_the_modules(tmp_path) -> None:
    pytest.importorskip("mypy.stubtest", reason="mypy is not installed (pip install '.[test]')")
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", *COMPILED, "--ignore-missing-stub"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
