"""``docs/tutorial.md``, ``docs/cli.md`` and ``docs/howto-write-an-ic.md`` run: every command
they show is executed in a fresh folder and overlay venv and must print what the page shows
(``docrun`` says how blocks are read), so the pages cannot drift from the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kit.docrun import commands, pattern, run_page

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_tutorial_blocks_run_and_match(tmp_path: Path, fresh_overlay: Any) -> None:
    work = tmp_path / "work"
    work.mkdir()
    assert run_page(DOCS / "tutorial.md", fresh_overlay, work) >= 8


def test_cli_reference_examples_run_and_match(tmp_path: Path, fresh_overlay: Any) -> None:
    work = tmp_path / "work"
    work.mkdir()
    assert run_page(DOCS / "cli.md", fresh_overlay, work) >= 6


def test_the_ic_how_to_runs_and_its_tests_pass(tmp_path: Path, fresh_overlay: Any) -> None:
    work = tmp_path / "work"
    work.mkdir()
    assert run_page(DOCS / "howto-write-an-ic.md", fresh_overlay, work) == 1


def test_pattern_matching_rules() -> None:
    assert pattern("a\n...\nd\n").fullmatch("a\nb\nc\nd\n")
    assert pattern("a\n...\nd\n").fullmatch("a\nd\n")
    assert pattern("8 passed in ...s\n").fullmatch("8 passed in 0.85s\n")
    assert not pattern("a\nd\n").fullmatch("a\nb\nd\n")
    assert not pattern("a\n").fullmatch("a\nb\n")


def test_console_blocks_split_into_commands_and_outputs() -> None:
    assert commands("$ a\nout\n$ b\n") == [("a", "out\n"), ("b", "")]
