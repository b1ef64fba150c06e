"""Fixtures for the kit's install tests: an *overlay* virtual environment.

Installing a scaffolded package into the environment running the tests would leave it behind
for every other test run on the machine (and break them once its folder is deleted). So each
session makes a fresh venv whose ``site-packages`` chains to this interpreter's through a
``.pth`` file: it sees winhv, pip, setuptools and pytest exactly as installed here, while
``pip install -e`` writes only into the overlay. This works the same in the dev venv and in the
fresh venv of ``.ci/run``.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import venv
from collections.abc import Sequence
from pathlib import Path

import pytest


class Overlay:
    """A venv layered over the running interpreter's packages."""

    def __init__(self, root: Path) -> None:
        self.root = root
        venv.create(root, with_pip=False)
        self.python = root / "bin" / "python"
        purelib = self.run(["-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
        parents = [*site.getsitepackages(), site.getusersitepackages()]
        lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in parents
                        if Path(p).is_dir())
        Path(purelib.strip(), "_winhv_parent.pth").write_text(lines)

    def run(self, args: Sequence[str], *, cwd: Path | None = None, check: bool = True,
            ) -> str:
        """Run the overlay's python with ``args``; stdout+stderr as text."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHON"))}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        # Never import from the working directory: at the top of a source checkout that is the
        # uncompiled ``winhv/`` folder, which would shadow the installed package.
        env["PYTHONSAFEPATH"] = "1"
        done = subprocess.run([str(self.python), *args], cwd=cwd, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}")
        return done.stdout

    def pip_install_editable(self, path: Path) -> str:
        return self.run(["-m", "pip", "install", "--no-build-isolation", "--no-deps",
                         "--disable-pip-version-check", "--no-index", "-e", str(path)])

    def winhv(self, *args: str, cwd: Path | None = None) -> str:
        """The ``winhv`` command line, as the console script runs it."""
        return self.run(["-c", "from winhv.plugins.cli import main; main()", *args], cwd=cwd)

    def pytest(self, cwd: Path, *args: str) -> str:
        return self.run(["-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd)


@pytest.fixture(scope="session")
def overlay(tmp_path_factory: pytest.TempPathFactory) -> Overlay:
    if sys.prefix == sys.base_prefix:
        pytest.skip("the install tests need to run inside a virtual environment")
    return Overlay(tmp_path_factory.mktemp("overlay") / "venv")


@pytest.fixture
def fresh_overlay(tmp_path: Path) -> Overlay:
    """An overlay of its own, for a test that must see no other installed device package."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("the install tests need to run inside a virtual environment")
    return Overlay(tmp_path / "venv")
