"""The example package ``examples/winhv-kvstore`` installs and passes its own tests the way an
outside user would run them, and winhv lists and validates it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "winhv-kvstore"


def test_example_installs_passes_its_tests_and_is_listed(tmp_path: Path, overlay) -> None:
    package = tmp_path / "winhv-kvstore"
    # a copy: an editable install writes *.egg-info next to the sources
    shutil.copytree(EXAMPLE, package, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    overlay.pip_install_editable(package)
    out = overlay.pytest(package, "-q")
    assert " passed" in out
    assert "failed" not in out
    listing = json.loads(overlay.winhv("plugins", "--json"))
    pair = next(p for p in listing["pairs"] if p["name"] == "kvstore")
    assert (pair["distribution"], pair["distribution_version"]) == ("winhv-kvstore", "1.0.0")
    assert pair["vsp"] == "winhv_kvstore.vsp:KvStoreVsp"
    assert "ok, 1 VM(s)" in overlay.winhv("check", str(package / "kvstore.toml"))
