"""Fixtures for the plugin tests: real distributions that ``importlib.metadata`` finds.

* ``echo_site``: the third-party plugin under ``thirdparty/`` installed once per session with
  ``pip install --no-deps --no-build-isolation --target`` into a temporary folder.
* ``echo_installed``: that folder on ``sys.path`` for one test (the plugin's modules are
  forgotten again afterwards, so each test imports it fresh).
* ``make_distribution``: builds a small distribution (modules + ``*.dist-info`` with
  ``METADATA`` and ``entry_points.txt``) in ``tmp_path`` and puts it on ``sys.path``; used for
  the broken plugins.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
THIRDPARTY = HERE / "thirdparty"


def _forget_modules(prefixes: tuple[str, ...]) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] in prefixes]:
        del sys.modules[name]


@pytest.fixture(scope="session")
def echo_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding winhv-echo installed by pip exactly as a user would install it."""
    source = tmp_path_factory.mktemp("echo-src") / "winhv-echo"
    shutil.copytree(THIRDPARTY, source)  # build in a copy: keep build/ out of the repository
    target = tmp_path_factory.mktemp("echo-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--disable-pip-version-check", "--target", str(target),
         str(source)],
        check=True,
        capture_output=True,
    )
    return target


@pytest.fixture
def echo_installed(echo_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """winhv-echo importable and visible to ``importlib.metadata`` for this test."""
    monkeypatch.syspath_prepend(str(echo_site))
    yield echo_site
    _forget_modules(("winhv_echo",))
    importlib.invalidate_caches()


MakeDistribution = Callable[..., Path]


@pytest.fixture
def make_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MakeDistribution]:
    """``make_distribution(name, version, modules={"mod": "source"}, entry_points={"ep":
    "mod"})`` -> the folder now on ``sys.path`` holding the distribution."""
    created: list[str] = []

    def make(
        name: str,
        version: str = "0.1",
        *,
        modules: dict[str, str],
        entry_points: dict[str, str],
    ) -> Path:
        root = tmp_path / f"site-{name}"
        root.mkdir()
        for module, source in modules.items():
            (root / f"{module}.py").write_text(textwrap.dedent(source))
            created.append(module)
        dist_info = root / f"{name.replace('-', '_')}-{version}.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        lines = "".join(f"{ep} = {target}\n" for ep, target in entry_points.items())
        (dist_info / "entry_points.txt").write_text(f"[winhv]\n{lines}")
        monkeypatch.syspath_prepend(str(root))
        return root

    yield make
    _forget_modules(tuple(created))
    importlib.invalidate_caches()


def winhv_entry_points(*distributions: str) -> list[importlib.metadata.EntryPoint]:
    """The ``winhv`` entry points of the named distributions (all of them if none named)."""
    eps = importlib.metadata.entry_points(group="winhv")
    return [ep for ep in eps if not distributions or (ep.dist and ep.dist.name in distributions)]


@pytest.fixture
def entry_points_of() -> Callable[..., list[importlib.metadata.EntryPoint]]:
    return winhv_entry_points
