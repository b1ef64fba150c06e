"""``docs/howto-c-interface.md`` is true: its table is the shipped header's, and its driver
builds with the command it shows and posts its message through a handle's table."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
from support.hv import ROOT_SIMP_GPA, SINT, boot

import winhv

HOWTO = Path(__file__).resolve().parents[2] / "docs" / "howto-c-interface.md"
CONNECTION = 7


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", HOWTO.read_text(), flags=re.S | re.M)


def _declarations(c: str) -> list[str]:
    """The statements of C source, comments and layout removed."""
    c = re.sub(r"/\*.*?\*/", "", c, flags=re.S)
    return [" ".join(s.split()) for s in c.split(";") if s.strip()]


def test_the_table_shown_is_the_shipped_header_s() -> None:
    shown = _blocks("c")[0]
    header = Path(winhv.get_include(), "winhv.h").read_text()
    start = header.index("typedef struct WINHV_INTERFACE {")
    shipped = header[start:header.index("} WINHV_INTERFACE;", start) + len("} WINHV_INTERFACE;")]
    assert _declarations(shown) == _declarations(shipped)


def test_the_driver_shown_builds_and_posts_through_the_table(tmp_path: Path) -> None:
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    if shutil.which(cc[0]) is None:
        pytest.skip("no C compiler")
    (tmp_path / "driver.c").write_text(_blocks("c")[1])
    command = _blocks("sh")[0].replace("\\\n", " ")
    argv = shlex.split(command.replace("$(python -c 'import winhv; print(winhv.get_include())')",
                                       winhv.get_include()))
    assert argv[0] == "cc"
    subprocess.run([*cc, *argv[1:]], cwd=tmp_path, check=True, capture_output=True)

    machine = boot("compiled")
    machine.enable_root_synic()
    guest = machine.guests[0]
    machine.message_channel(1, guest.partition_id, port_id=5, connection_id=CONNECTION)
    namespace = {"handle": guest.handle, "connection_id": CONNECTION}  # the page's names
    python = _blocks("python")[0].replace('"./driver.so"', repr(str(tmp_path / "driver.so")))
    exec(python, namespace)
    assert namespace["status"] == 0
    slot = machine.hv.root.memory.read(ROOT_SIMP_GPA + 256 * SINT, 256)
    assert slot[16:28] == b"hello from C"
