"""The ``winhv`` pytest plugin (entry point ``pytest11``/``winhv``): fixtures for driver authors.

Fixtures (``docs/reference-fixtures.md``):

* ``winhv_mock``: a booted :class:`~winhv.plugins.testing.MockHost`, seeded by ``winhv_seed``;
* ``winhv_vm``: a VM of that host with its VMBus connected (options through indirect
  parametrization: ``@pytest.mark.parametrize("winhv_vm", [{"memory_mb": 32}], indirect=True)``);
* ``winhv_vm_factory``: ``winhv_vm_factory(drivers=(), **options)`` makes more VMs;
* ``winhv_harness``: ``winhv_harness(vsp=None, vsc=None, **options)`` pairs a VSP and a VSC
  (or a scripted fake of either) over real rings and returns a
  :class:`~winhv.plugins.testing.Pair` with ``send``/``expect`` on both ends;
* ``winhv_vmbus_version``: the VMBus version the test runs at (``None`` = newest).

Markers: ``winhv_vmbus_version("4.0", "5.3", ...)`` (or ``min=``/``max=``) runs the test once
per version, with ``winhv_vm`` and ``winhv_harness`` pinned to it; ``winhv_seed(n)`` fixes the
seed. Option: ``--winhv-seed N`` overrides every seed. A failing test that used the mock gets a
``winhv trace`` section in its report with the seed and the last records.

Kept light to import: the mock and the core load only when a fixture is used.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from winhv.drivers.vmbus._versions import VmbusVersion
    from winhv.plugins.testing import MockHost, MockVm, Pair

__all__ = [
    "pytest_addoption",
    "pytest_configure",
    "pytest_generate_tests",
    "pytest_runtest_makereport",
    "winhv_harness",
    "winhv_mock",
    "winhv_seed",
    "winhv_vm",
    "winhv_vm_factory",
    "winhv_vmbus_version",
]

_MOCK_KEY = pytest.StashKey["MockHost"]()
_TRACE_LINES = 40


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("winhv", "winhv mock hypervisor")
    group.addoption("--winhv-seed", type=int, default=None, metavar="N",
                    help="Seed every winhv mock with N (default: one derived from each test's "
                         "id, shown when a test fails).")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "winhv_vmbus_version(*versions, min=None, max=None): run the test once per VMBus "
        "protocol version ('5.0', 'WIN10_V5', ...); winhv_vm and winhv_harness connect at it.")
    config.addinivalue_line(
        "markers", "winhv_seed(n): seed the winhv mock of this test with n.")


def _versions(marker: pytest.Mark) -> list[VmbusVersion]:
    from winhv.drivers.vmbus._versions import VmbusVersion
    from winhv.plugins._driverset import parse_vmbus_version

    def parse(value: Any) -> VmbusVersion:
        if isinstance(value, str):
            try:
                return parse_vmbus_version(value)
            except ValueError:
                names = ", ".join(f"{v >> 16}.{v & 0xFFFF}" for v in VmbusVersion)
                pytest.fail(f"winhv_vmbus_version: unknown version {value!r}; known: {names}",
                            pytrace=False)
        return VmbusVersion(value)

    chosen = [parse(v) for v in marker.args]
    low, high = marker.kwargs.get("min"), marker.kwargs.get("max")
    if low is not None or high is not None:
        lo = parse(low) if low is not None else min(VmbusVersion)
        hi = parse(high) if high is not None else max(VmbusVersion)
        chosen += [v for v in VmbusVersion if lo <= v <= hi]
    if not chosen:
        pytest.fail("winhv_vmbus_version needs at least one version, or min=/max=", pytrace=False)
    return sorted(set(chosen), reverse=True)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("winhv_vmbus_version")
    if marker is None or "winhv_vmbus_version" not in metafunc.fixturenames:
        return
    versions = _versions(marker)
    metafunc.parametrize("winhv_vmbus_version", versions, indirect=True,
                         ids=[f"vmbus{v >> 16}.{v & 0xFFFF}" for v in versions])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None],
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    mock = item.stash.get(_MOCK_KEY, None)
    if mock is not None and report.failed:
        report.sections.append((f"winhv trace (seed {mock.seed}; replay: --winhv-seed "
                                f"{mock.seed})", mock.format_trace(_TRACE_LINES)))
    return report


@pytest.fixture
def winhv_seed(request: pytest.FixtureRequest) -> int:
    """The seed of this test's mock: ``--winhv-seed``, else the ``winhv_seed`` marker, else a
    stable number derived from the test's id (the same on every run)."""
    option = request.config.getoption("--winhv-seed", None)
    if option is not None:
        return int(option)
    marker = request.node.get_closest_marker("winhv_seed")
    if marker is not None:
        seed = marker.args[0] if len(marker.args) == 1 and not marker.kwargs else None
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            pytest.fail(f"winhv_seed: found {marker.args!r} {marker.kwargs or ''}".rstrip()
                        + ", expected one non-negative integer: @pytest.mark.winhv_seed(1234)",
                        pytrace=False)
        return seed
    return zlib.crc32(request.node.nodeid.encode())


@pytest.fixture
def winhv_vmbus_version(request: pytest.FixtureRequest) -> VmbusVersion | None:
    """The VMBus version this test runs at (from ``winhv_vmbus_version``), or ``None``."""
    return getattr(request, "param", None)


@pytest.fixture
def winhv_mock(request: pytest.FixtureRequest, winhv_seed: int) -> Iterator[MockHost]:
    """A booted mock host: the real hypervisor, root and VMBus host, recorded, seeded."""
    from winhv.plugins.testing import MockHost

    mock = MockHost(seed=winhv_seed)
    request.node.stash[_MOCK_KEY] = mock
    yield mock
    mock.close()


@pytest.fixture
def winhv_vm_factory(winhv_mock: MockHost, winhv_vmbus_version: VmbusVersion | None,
                     ) -> Callable[..., MockVm]:
    """``winhv_vm_factory(drivers=(), *, name=None, memory_mb=16, version=None)`` -> a new
    connected VM of ``winhv_mock`` (``version`` defaults to the marker's)."""

    def make(drivers: Any = (), **options: Any) -> MockVm:
        options.setdefault("version", winhv_vmbus_version)
        return winhv_mock.vm(drivers, **options)

    return make


@pytest.fixture
def winhv_vm(request: pytest.FixtureRequest, winhv_vm_factory: Callable[..., MockVm],
             ) -> MockVm:
    """A VM with its VMBus connected. Options by indirect parametrization (a dict of
    :meth:`~winhv.plugins.testing.MockHost.vm` arguments, ``drivers`` included)."""
    options = dict(getattr(request, "param", None) or {})
    return winhv_vm_factory(options.pop("drivers", ()), **options)


@pytest.fixture
def winhv_harness(winhv_mock: MockHost, winhv_vmbus_version: VmbusVersion | None,
                  ) -> Callable[..., Pair]:
    """``winhv_harness(vsp=None, vsc=None, *, interface_id=None, name="device", **vm_options)``
    -> a :class:`~winhv.plugins.testing.Pair`; a side left out is a scripted fake."""

    def make(vsp: Any = None, vsc: Any = None, **options: Any) -> Pair:
        if "vm" not in options:
            options.setdefault("version", winhv_vmbus_version)
        return winhv_mock.harness(vsp, vsc, **options)

    return make
