"""Each IC driver module's ``__all__`` is sorted and names what the module defines."""

from __future__ import annotations

import types

import pytest

from winhv.vsp_vsc_pairs.ic import (
    _driver_table,
    _drivers,
    _heartbeat_drivers,
    _kvp_drivers,
    _shutdown_drivers,
    _timesync_drivers,
)

MODULES = [_driver_table, _drivers, _heartbeat_drivers, _kvp_drivers, _shutdown_drivers,
           _timesync_drivers]


def _isort_key(name: str) -> tuple[int, str]:
    if name.upper() == name:
        return (0, name)
    return (1, name) if name[0].isupper() else (2, name)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_module_all_names_what_the_module_defines(module: types.ModuleType) -> None:
    defined = {
        name for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    }
    assert sorted(module.__all__, key=_isort_key) == module.__all__
    assert defined <= set(module.__all__)
    assert all(hasattr(module, name) for name in module.__all__)


def test_drivers_namespace_exports_exactly_its_public_names() -> None:
    from support.exports import isort_key, public_names

    from winhv.vsp_vsc_pairs.ic import drivers

    assert sorted(drivers.__all__, key=isort_key) == drivers.__all__
    assert set(drivers.__all__) == public_names(drivers)
