"""``winhv.vsp_vsc_pairs.ic.__all__`` names exactly its public members, sorted, and each IC
module's ``__all__`` its own public names (httpx's test)."""

from __future__ import annotations
import __future__

import types

import pytest

from winhv.vsp_vsc_pairs import ic
from winhv.vsp_vsc_pairs.ic import heartbeat, kvp, kvp_pool, shutdown, timesync


def _isort_key(name: str) -> tuple[int, str]:
    if name.upper() == name:
        return (0, name)
    if name[0].isupper():
        return (1, name)
    return (2, name)


def test_package_all_names_exactly_the_public_members() -> None:
    public = {
        name for name, value in vars(ic).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType | __future__._Feature)
    }
    assert sorted(ic.__all__, key=_isort_key) == ic.__all__
    assert set(ic.__all__) == public


@pytest.mark.parametrize("module", [heartbeat, kvp, kvp_pool, shutdown, timesync])
def test_module_all_names_what_the_module_defines(module: types.ModuleType) -> None:
    defined = {
        name for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    }
    assert sorted(module.__all__, key=_isort_key) == module.__all__
    assert defined <= set(module.__all__)
    assert all(hasattr(module, name) for name in module.__all__)
