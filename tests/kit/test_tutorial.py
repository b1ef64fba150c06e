"""``docs/tutorial.md`` runs: every console block's commands are executed in order in a fresh
folder and overlay venv, and their output must match what the page shows; every Python block
marked ``# excerpt: PATH`` must appear verbatim in that scaffolded file, and every one marked
``# file: PATH`` is written before the next command. So the tutorial cannot drift.

Matching: a line ``...`` stands for any number of lines, and ``...`` inside a line for any
text (timings, paths). ``pip install`` gets ``--no-build-isolation --no-deps --no-index``
added, as the tests run offline.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)


def blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(text)]


def pattern(expected: str) -> re.Pattern[str]:
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
        raise AssertionError(f"the tutorial runs {tool!r}, which this test does not know")


def test_tutorial_blocks_run_and_match(tmp_path: Path, fresh_overlay: Any) -> None:
    text = TUTORIAL.read_text(encoding="utf-8")
    found = blocks(text)
    assert sum(kind == "console" for kind, _ in found) >= 3
    work = tmp_path / "work"
    work.mkdir()
    session = Session(fresh_overlay, work)
    for kind, body in found:
        if kind == "console":
            for command, expected in commands(body):
                got = session.run(command)
                if not pattern(expected).fullmatch(got):
                    pytest.fail(f"tutorial: `$ {command}` printed:\n{got}\nthe page shows:\n"
                                f"{expected}", pytrace=False)
        elif kind == "python":
            first, _, code = body.partition("\n")
            marker, _, path = first.partition(": ")
            target = session.cwd / path
            if marker == "# excerpt":
                assert code in target.read_text(encoding="utf-8"), (
                    f"tutorial: the excerpt of {path} is not in the scaffolded file")
            elif marker == "# file":
                target.write_text(code, encoding="utf-8")
            else:
                raise AssertionError(f"tutorial python block without a marker: {first!r}")


def test_pattern_matching_rules() -> None:
    assert pattern("a\n...\nd\n").fullmatch("a\nb\nc\nd\n")
    assert pattern("a\n...\nd\n").fullmatch("a\nd\n")
    assert pattern("8 passed in ...s\n").fullmatch("8 passed in 0.85s\n")
    assert not pattern("a\nd\n").fullmatch("a\nb\nd\n")
