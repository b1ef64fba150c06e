"""The code shown in docs/hooks.md and docs/howto-fault-injection.md runs as shown.

Each line of the fault how-to's blocks is one call; every one runs on a fresh mock with the
names the page uses (``winhv_mock``, ``pair``, ``vm``, ``MyVsc``), so a renamed method or
argument fails here. What the faults then do is tested in ``test_pytest_plugin.py``.
"""

from __future__ import annotations

import re
import types
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from winhv.plugins.api import PairDescription, Vsc, Vsp, discover
from winhv.plugins.testing import Fault, MockHost

DOCS = Path(__file__).resolve().parents[2] / "docs"
IFACE = uuid.UUID("0d3f4a52-6b7c-4d8e-9f01-a2b3c4d5e6f8")


def python_blocks(page: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", (DOCS / page).read_text(), flags=re.S | re.M)


class MyVsp(Vsp):
    interface_id = IFACE

    def on_packet(self, channel, packet):  # type: ignore[no-untyped-def]
        channel.complete(packet.trans_id, bytes(packet.payload))


class MyVsc(Vsc):
    interface_ids = (IFACE,)


def test_the_hooks_page_plugin_registers_through_the_same_checks() -> None:
    module = types.ModuleType("doc_echo")
    exec(python_blocks("hooks.md")[0], module.__dict__)
    plugins = discover(entry_points=[], plugins={"doc-echo": module})
    assert plugins.failures == []
    pair = plugins.registry.pair("echo")
    assert isinstance(pair, PairDescription)
    assert pair.config[0].name == "repeat"


FAULT_LINES = [line for block in python_blocks("howto-fault-injection.md")
               for line in block.splitlines() if line.strip()]


@pytest.fixture
def page_names() -> Iterator[dict[str, object]]:
    mock = MockHost(seed=1)
    pair = mock.harness(MyVsp({}), MyVsc)
    yield {"winhv_mock": mock, "pair": pair, "vm": pair.vm, "MyVsc": MyVsc}
    mock.close()


@pytest.mark.parametrize("line", FAULT_LINES)
def test_each_fault_call_the_how_to_shows_runs(line: str, page_names: dict[str, object]) -> None:
    result = eval(line, page_names)   # one call per line; a trailing comment is fine
    assert result is None or isinstance(result, Fault | int)


def test_the_fault_how_to_shows_every_kind() -> None:
    calls = {re.findall(r"^\w+\.(\w+)\(", line)[0] for line in FAULT_LINES}
    assert calls == {"fail_hypercall", "drop", "delay", "duplicate", "reorder", "rescind_at",
                     "corrupt_ring", "fill_ring", "crash"}
