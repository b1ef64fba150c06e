"""Run a documentation page: every console block's commands are executed in order in a fresh
folder and overlay venv, and their output must match what the page shows. So the page cannot
drift from the code.

Blocks:

* ```` ```console ````: lines ``$ command`` followed by the output it must print (stdout and
  stderr together). A line ``...`` stands for any number of lines, and ``...`` inside a line
  for any text (timings, paths). ``pip install`` gets ``--no-build-isolation --no-deps
  --no-index`` added, as the tests run offline.
* ```` ```python ```` or ```` ```toml ```` whose first line is ``# file: PATH``: written to
  PATH (relative to the current folder) before the next command; ``# excerpt: PATH``: must
  appear verbatim in that file. A python block needs one of the two markers; other blocks
  (and unmarked toml) are prose.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)


def blocks(text: str) -> list[tuple[str, str]]:
    """``[(language, body)]`` of the page's fenced blocks."""
    return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(text)]


def pattern(expected: str) -> re.Pattern[str]:
    """The regular expression a command's shown output stands for (see the module doc)."""
    parts = []
    for line in expected.splitlines():
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(".*?".join(re.escape(p) for p in line.split("...")) + r"[ \t]*\n")
    return re.compile("".join(parts), re.S)


def commands(block: str) -> list[tuple[str, str]]:
    """``[(command, expected output)]`` of a console block."""
    out: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        elif out:
            out[-1][1].append(line)
    return [(cmd, "\n".join(lines) + ("\n" if lines else "")) for cmd, lines in out]


class Session:
    """A shell of sorts: ``cd``, ``winhv``, ``pip`` and ``pytest`` in an overlay venv."""

    def __init__(self, overlay: Any, cwd: Path) -> None:
        self.overlay = overlay
        self.cwd = cwd

    def run(self, command: str) -> str:
        argv = shlex.split(command)
        tool, args = argv[0], argv[1:]
        if tool == "cd":
            self.cwd = (self.cwd / args[0]).resolve()
            return ""
        if tool == "winhv":
            return self.overlay.run(["-c", "from winhv.plugins.cli import main; main()", *args],
                                    cwd=self.cwd, check=False)
        if tool == "pip":
            return self.overlay.run(["-m", "pip", *args[:1], "--no-build-isolation",
                                     "--no-deps", "--no-index", "--disable-pip-version-check",
                                     *args[1:]], cwd=self.cwd)
        if tool == "pytest":
            return self.overlay.run(["-m", "pytest", "-p", "no:cacheprovider", *args],
                                    cwd=self.cwd, check=False)
        raise AssertionError(f"the page runs {tool!r}, which this test does not know")


def run_page(page: Path, overlay: Any, work: Path) -> int:
    """Run every block of ``page`` in ``work``; fail at the first mismatch. Returns the number
    of commands run."""
    name = page.name
    session = Session(overlay, work)
    ran = 0
    for kind, body in blocks(page.read_text(encoding="utf-8")):
        if kind == "console":
            for command, expected in commands(body):
                got = session.run(command)
                ran += 1
                if not pattern(expected).fullmatch(got):
                    pytest.fail(f"{name}: `$ {command}` printed:\n{got}\nthe page shows:\n"
                                f"{expected}", pytrace=False)
        elif kind in ("python", "toml"):
            first, _, code = body.partition("\n")
            marker, _, path = first.partition(": ")
            target = session.cwd / path
            if marker == "# excerpt":
                assert code in target.read_text(encoding="utf-8"), (
                    f"{name}: the excerpt of {path} is not in the file")
            elif marker == "# file":
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(code, encoding="utf-8")
            elif kind == "python":
                raise AssertionError(f"{name}: python block without a marker: {first!r}")
    return ran
