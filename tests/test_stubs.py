"""The ``.pyi`` stubs of the compiled modules match the modules (mypy's stubtest)."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest


def compiled_modules() -> list[str]:
    """Every extension module the installed winhv has (one per ``*.pyx``), found, not listed,
    so a new compiled module cannot go unchecked."""
    found = set()
    # The four layers by name: an editable install maps each to its own folder, so walking
    # ``winhv`` alone would not reach the others.
    for layer in ("winhv", "winhv.drivers", "winhv.plugins", "winhv.vsp_vsc_pairs"):
        package = importlib.import_module(layer)
        for info in pkgutil.walk_packages(package.__path__, f"{layer}."):
            spec = importlib.util.find_spec(info.name)
            if spec is not None and isinstance(spec.loader,
                                               importlib.machinery.ExtensionFileLoader):
                found.add(info.name)
    return sorted(found)


def test_every_compiled_module_is_found_and_has_a_stub() -> None:
    modules = compiled_modules()
    assert {"winhv._bridge", "winhv.drivers.vmbus._ring",
            "winhv.vsp_vsc_pairs.storage._fastpath"} <= set(modules)
    for name in modules:
        origin = importlib.util.find_spec(name).origin  # type: ignore[union-attr]
        stub = Path(origin).parent / (name.rsplit(".", 1)[1] + ".pyi")  # type: ignore[arg-type]
        assert stub.is_file(), f"{name} has no stub next to it ({stub})"


def test_stubs_of_compiled_modules_match_the_modules(tmp_path: Path) -> None:
    pytest.importorskip("mypy.stubtest", reason="mypy is not installed (pip install '.[test]')")
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", *compiled_modules(), "--ignore-missing-stub"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
