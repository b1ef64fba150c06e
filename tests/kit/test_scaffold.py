"""``winhv new-device``: the files it writes, its errors, and the round trip a user makes:
scaffold, ``pip install -e``, the package's own tests pass, ``winhv plugins`` lists it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from winhv.plugins._scaffold import ScaffoldError, interface_id_for, render
from winhv.plugins.cli import cli


def test_render_names_everything_after_the_device() -> None:
    files = render("air-quality")
    assert sorted(files) == [
        "README.md", "air-quality.toml", "pyproject.toml",
        "src/winhv_air_quality/__init__.py", "src/winhv_air_quality/plugin.py",
        "src/winhv_air_quality/protocol.py", "src/winhv_air_quality/vsc.py",
        "src/winhv_air_quality/vsp.py", "tests/test_winhv_air_quality.py"]
    assert 'air-quality = "winhv_air_quality.plugin"' in files["pyproject.toml"]
    assert str(interface_id_for("air-quality")) in files["src/winhv_air_quality/protocol.py"]
    assert "class AirQualityVsp(Vsp)" in files["src/winhv_air_quality/vsp.py"]
    for path, text in files.items():
        if path.endswith(".py"):
            compile(text, path, "exec")


@pytest.mark.parametrize("name", ["Sensor", "1wire", "my_device", "a--b", "", "sensor-"])
def test_bad_names_are_refused_with_the_rule(name: str) -> None:
    with pytest.raises(ScaffoldError, match=r"device name: found .*, expected a lowercase name"):
        render(name)


def test_command_writes_the_package_and_refuses_to_overwrite(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["new-device", "thermo", "--dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["path"] == str(tmp_path / "winhv-thermo")
    assert (tmp_path / "winhv-thermo" / "src" / "winhv_thermo" / "vsp.py").is_file()
    again = runner.invoke(cli, ["new-device", "thermo", "--dir", str(tmp_path)])
    assert again.exit_code == 1
    assert "found an existing folder, expected a new or empty folder" in again.stderr


def test_a_pair_name_an_installed_plugin_registers_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["new-device", "storage", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: device name: found 'storage', a pair already registered by winhv 0.1.0 "
        "(entry point 'builtin'), expected a name no installed plugin uses (winhv plugins "
        "lists them)\n")
    assert not (tmp_path / "winhv-storage").exists()


def test_scaffolded_package_installs_passes_its_tests_and_is_listed(
        tmp_path: Path, overlay) -> None:
    out = overlay.winhv("new-device", "kit-probe", "--dir", str(tmp_path))
    assert out.startswith(f"created {tmp_path / 'winhv-kit-probe'}")
    package = tmp_path / "winhv-kit-probe"
    overlay.pip_install_editable(package)
    assert "passed" in overlay.pytest(package, "-q")
    listing = json.loads(overlay.winhv("plugins", "--json"))
    pairs = {p["name"]: p for p in listing["pairs"]}
    assert pairs["kit-probe"]["distribution"] == "winhv-kit-probe"
    assert pairs["kit-probe"]["interface_id"] == str(interface_id_for("kit-probe"))
    assert listing["failures"] == []
    assert "ok, 1 VM(s)" in overlay.winhv("check", str(package / "kit-probe.toml"))
