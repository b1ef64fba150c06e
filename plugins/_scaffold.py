"""The device scaffold behind ``winhv new-device NAME``: a complete third-party package.

:func:`render` returns the files of a package ``winhv-NAME`` as ``{relative path: text}``;
:func:`write` puts them on disk. The package is what the tutorial (``docs/tutorial.md``) walks
through: its own ``pyproject.toml`` with the ``winhv`` entry point, a small example protocol
(``protocol.py``: one header struct and one table of operations), a VSP and a VSC speaking
it, the plugin module registering the pair, a driver set using it, and tests built on the
``winhv`` pytest fixtures. Installed with ``pip install -e``, its tests pass at once and
``winhv plugins`` lists it.

The interface GUID is derived from the name (``uuid5``), so the same name always scaffolds
the same package; pick a fresh random GUID before publishing a real device.
"""

from __future__ import annotations

import re
import string
import uuid
from pathlib import Path

__all__ = ["NAME_RULE", "ScaffoldError", "interface_id_for", "render", "write"]

#: Device names: lowercase words joined by ``-`` (the pair name; the package is ``winhv-NAME``).
NAME_RULE = "a lowercase name like 'sensor' or 'my-device' ([a-z][a-z0-9]*, words joined by -)"
_NAME_RE = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")


class ScaffoldError(ValueError):
    """The name is not usable or the target folder is in the way."""


def interface_id_for(name: str) -> uuid.UUID:
    """The interface GUID the scaffold gives device ``name`` (stable for a name)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"https://winhv.invalid/device/{name}")


_PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "winhv-$name"
version = "0.1.0"
description = "The $name synthetic device for winhv: a VSP, a VSC and their protocol."
requires-python = ">=3.11"
dependencies = ["winhv"]

# winhv finds the device through this entry point (group "winhv").
[project.entry-points.winhv]
$name = "$module.plugin"

[tool.setuptools.packages.find]
where = ["src"]

[tool.pytest.ini_options]
testpaths = ["tests"]
addopts = ["--strict-markers"]
"""

_README = """\
# winhv-$name

A synthetic device for winhv, scaffolded by `winhv new-device $name`.

* `src/$module/protocol.py`: the wire format (one header, one table of operations);
* `src/$module/vsp.py`: the root-partition half (VSP);
* `src/$module/vsc.py`: the guest half (VSC);
* `src/$module/plugin.py`: registers the pair with winhv (entry point `$name`);
* `$name.toml`: a driver set with one VM using the device (`winhv check $name.toml`);
* `tests/`: unit tests on winhv's mock hypervisor (`pytest`).

```sh
pip install -e .
pytest
winhv plugins
```
"""

_INIT = '''\
"""The $name synthetic device for winhv."""

from __future__ import annotations

from .protocol import INTERFACE_ID
from .vsc import ${cls}Vsc
from .vsp import ${cls}Vsp

__all__ = ["INTERFACE_ID", "${cls}Vsc", "${cls}Vsp"]
'''

_PROTOCOL = '''\
"""The $name protocol: what travels in the channel's packets.

Every packet's payload is one 8-byte header followed by ``length`` bytes of data:

    offset 0  u16  op        one of OPS below
    offset 2  u16  status    0 in requests; the result in completions
    offset 4  u32  length    bytes of data after the header

The length is needed because a VMBus ring pads every payload to 8 bytes. The guest asks, the
host answers with a completion of the same transaction id. The first request on a channel must
be VERSION (data: the u32 version); until it succeeded the host refuses ECHO.
"""

from __future__ import annotations

import struct
import uuid

#: The interface type GUID of the channel offer (made up for this device).
INTERFACE_ID = uuid.UUID("$guid")
#: The protocol version the two halves speak (major << 16 | minor).
VERSION = 0x0001_0000

HEADER = struct.Struct("<HHI")

#: The operations: one table, everything else derives from it.
OPS = {
    1: "VERSION",
    2: "ECHO",
}
OP_VERSION, OP_ECHO = 1, 2

STATUS_OK = 0
STATUS_BAD_VERSION = 1
STATUS_BAD_REQUEST = 2
STATUS_NOT_READY = 3


class ProtocolError(ValueError):
    """A payload that does not parse, or an answer the driver cannot accept."""


def pack(op: int, data: bytes = b"", status: int = STATUS_OK) -> bytes:
    """One packet payload: the header, then ``data``."""
    return HEADER.pack(op, status, len(data)) + data


def unpack(payload: bytes) -> tuple[int, int, bytes]:
    """``(op, status, data)`` of a payload; :class:`ProtocolError` if it is malformed."""
    raw = bytes(payload)
    if len(raw) < HEADER.size:
        raise ProtocolError(f"payload: found {len(raw)} bytes, expected at least {HEADER.size}")
    op, status, length = HEADER.unpack_from(raw)
    if op not in OPS:
        raise ProtocolError(f"op: found {op}, expected one of {sorted(OPS)}")
    if length > len(raw) - HEADER.size:
        raise ProtocolError(f"length: found {length}, expected at most {len(raw) - HEADER.size}")
    return op, status, raw[HEADER.size:HEADER.size + length]
'''

_VSP = '''\
"""The root-partition half of $name: answers VERSION, then echoes data back with a prefix."""

from __future__ import annotations

import struct
from typing import Any

from winhv.plugins.api import Vsp

from . import protocol


class ${cls}Vsp(Vsp):
    """One instance per device in a VM. ``config["prefix"]`` is put before echoed data."""

    interface_id = protocol.INTERFACE_ID

    def on_open(self, channel: Any) -> None:
        self.ready = False

    def on_packet(self, channel: Any, packet: Any) -> None:
        if not packet.completion_requested:
            return                               # this protocol only has requests
        try:
            op, _status, data = protocol.unpack(packet.payload)
        except protocol.ProtocolError:
            channel.complete(packet.trans_id, protocol.pack(0, status=protocol.STATUS_BAD_REQUEST))
            return
        if op == protocol.OP_VERSION:
            self.ready = data == struct.pack("<I", protocol.VERSION)
            status = protocol.STATUS_OK if self.ready else protocol.STATUS_BAD_VERSION
            channel.complete(packet.trans_id, protocol.pack(op, status=status))
        elif not self.ready:
            channel.complete(packet.trans_id, protocol.pack(op, status=protocol.STATUS_NOT_READY))
        else:
            reply = self.config.get("prefix", "").encode() + data
            channel.complete(packet.trans_id, protocol.pack(op, reply))
'''

_VSC = '''\
"""The guest half of $name: negotiates the version on open, then offers ``echo``."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from winhv.plugins.api import Vsc

from . import protocol


class ${cls}Vsc(Vsc):
    """Binds to offers of :data:`~.protocol.INTERFACE_ID`."""

    interface_ids = (protocol.INTERFACE_ID,)

    def __init__(self, device: Any) -> None:
        super().__init__(device)
        self.channel: Any = None
        self.ready = False

    def on_open(self, channel: Any) -> None:
        self.channel = channel
        version = struct.pack("<I", protocol.VERSION)
        channel.send_request(protocol.pack(protocol.OP_VERSION, version), self._on_version)

    def _on_version(self, packet: Any) -> None:
        _op, status, _data = protocol.unpack(packet.payload)
        if status != protocol.STATUS_OK:
            # Raising here is how a driver gives up: the framework closes the channel.
            raise protocol.ProtocolError(f"the host refused version {protocol.VERSION:#x}: "
                                         f"status {status}")
        self.ready = True

    def echo(self, data: bytes, callback: Callable[[bytes], Any]) -> int:
        """Ask the host to echo ``data``; ``callback(reply)`` gets the answer's data."""
        if not self.ready:
            raise RuntimeError("the $name channel is not ready (version not negotiated)")

        def done(packet: Any) -> None:
            _op, status, reply = protocol.unpack(packet.payload)
            if status != protocol.STATUS_OK:
                raise protocol.ProtocolError(f"ECHO failed: status {status}")
            callback(reply)

        return self.channel.send_request(protocol.pack(protocol.OP_ECHO, data), done)
'''

_PLUGIN = '''\
"""Registers the $name pair with winhv (entry point ``$name`` in the ``winhv`` group)."""

from __future__ import annotations

from winhv.plugins.api import ConfigField, PairDescription, hookimpl

from .protocol import INTERFACE_ID
from .vsc import ${cls}Vsc
from .vsp import ${cls}Vsp


@hookimpl
def winhv_vsp_vsc_pairs() -> list[PairDescription]:
    return [
        PairDescription(
            name="$name",
            interface_id=INTERFACE_ID,
            version="0.1",
            vsp=${cls}Vsp,
            vsc=${cls}Vsc,
            config=(ConfigField("prefix", str, default="", doc="Put before echoed data."),),
            summary="Echoes data back (scaffolded by winhv new-device).",
        )
    ]
'''

_DRIVER_SET = """\
# A driver set with one VM using the $name device: `winhv check $name.toml`.
[[vm]]
name = "demo"
memory_mb = 64

[[vm.device]]
pair = "$name"
name = "${name}0"
config = { prefix = "echo: " }
"""

_TESTS = '''\
"""Tests of the $name device on winhv's mock hypervisor (the ``winhv`` pytest plugin)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from winhv.plugins.api import discover, load_driver_set

from $module import INTERFACE_ID, ${cls}Vsc, ${cls}Vsp, protocol


def echo(pair, data: bytes) -> list[bytes]:
    replies: list[bytes] = []
    pair.vsc.echo(data, replies.append)
    pair.settle()
    return replies


def test_echo_round_trip(winhv_harness):
    pair = winhv_harness(${cls}Vsp({"prefix": ">"}), ${cls}Vsc)
    assert pair.vsc.ready
    assert echo(pair, b"hello") == [b">hello"]


@pytest.mark.winhv_vmbus_version("4.0", "5.0", "5.3")
def test_works_on_every_vmbus_version(winhv_harness, winhv_vmbus_version):
    pair = winhv_harness(${cls}Vsp({}), ${cls}Vsc)
    assert pair.vm.version == winhv_vmbus_version
    assert echo(pair, b"x" * 100) == [b"x" * 100]


def test_vsc_gives_up_when_the_host_refuses_its_version(winhv_harness):
    pair = winhv_harness(vsc=${cls}Vsc)           # the host is a scripted fake
    request = pair.host.expect(prefix=struct.pack("<H", protocol.OP_VERSION))
    pair.host.complete(request, protocol.pack(protocol.OP_VERSION,
                                              status=protocol.STATUS_BAD_VERSION))
    pair.settle()
    assert pair.device.state.value == "failed"
    assert "refused version" in pair.device.error


def test_vsp_refuses_garbage_and_echo_before_version(winhv_harness):
    pair = winhv_harness(${cls}Vsp({}))           # the guest is a scripted fake
    pair.guest.request(b"\\x07")
    _op, status, _length = protocol.HEADER.unpack_from(pair.guest.expect().payload)
    assert status == protocol.STATUS_BAD_REQUEST
    pair.guest.request(protocol.pack(protocol.OP_ECHO, b"too early"))
    assert protocol.unpack(pair.guest.expect().payload)[1] == protocol.STATUS_NOT_READY


def test_a_lost_interrupt_stalls_the_request(winhv_harness, winhv_mock):
    pair = winhv_harness(${cls}Vsp({}), ${cls}Vsc)
    winhv_mock.drop("signal", direction="to_host")
    assert echo(pair, b"lost") == []
    assert winhv_mock.signals(direction="to_host")[-1].fault == "dropped"


def test_the_plugin_registers_the_pair_and_the_driver_set_is_valid():
    discovery = discover()
    assert not discovery.failures, discovery.failures
    assert discovery.registry.pair("$name").interface_id == INTERFACE_ID
    driver_set = load_driver_set(Path(__file__).parent.parent / "$name.toml",
                                 discovery.registry)
    assert [d.pair for d in driver_set.vms[0].devices] == ["$name"]
'''

_FILES = {
    "pyproject.toml": _PYPROJECT,
    "README.md": _README,
    "$name.toml": _DRIVER_SET,
    "src/$module/__init__.py": _INIT,
    "src/$module/protocol.py": _PROTOCOL,
    "src/$module/vsp.py": _VSP,
    "src/$module/vsc.py": _VSC,
    "src/$module/plugin.py": _PLUGIN,
    "tests/test_$module.py": _TESTS,
}


def render(name: str) -> dict[str, str]:
    """The files of package ``winhv-NAME``, ``{path relative to the package folder: text}``."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ScaffoldError(f"device name: found {name!r}, expected {NAME_RULE}")
    values = {
        "name": name,
        "module": "winhv_" + name.replace("-", "_"),
        "cls": "".join(part.capitalize() for part in name.split("-")),
        "guid": str(interface_id_for(name)),
    }
    return {string.Template(path).substitute(values): string.Template(text).substitute(values)
            for path, text in _FILES.items()}


def write(name: str, directory: str | Path = ".") -> tuple[Path, list[str]]:
    """Write package ``winhv-NAME`` into ``directory``; returns (its folder, files written).

    Refuses (:class:`ScaffoldError`) if the folder exists and is not empty.
    """
    files = render(name)
    root = Path(directory) / f"winhv-{name}"
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ScaffoldError(f"{root}: found an existing {'folder' if root.is_dir() else 'file'}"
                            ", expected a new or empty folder")
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root, sorted(files)
