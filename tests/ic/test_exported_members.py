"""``winhv.vsp_vsc_pairs.ic.__all__`` names exactly its public members, sorted, and each IC
module's ``__all__`` its own public names (httpx's test)."""

from __future__ import annotations

import types

import pytest
from support.exports import isort_key, public_names

from winhv.vsp_vsc_pairs import ic
from winhv.vsp_vsc_pairs.ic import heartbeat, kvp, kvp_pool, shutdown, timesync


def test_package_all_names_exactly_the_public_members() -> None:
    public = public_names(ic)
    assert sorted(ic.__all__, key=isort_key) == ic.__all__
    assert set(ic.__all__) == public


@pytest.mark.parametrize("module", [heartbeat, kvp, kvp_pool, shutdown, timesync])
def test_module_all_names_what_the_module_defines(module: types.ModuleType) -> None:
    defined = {
        name for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    }
    assert sorted(module.__all__, key=isort_key) == module.__all__
    assert defined <= set(module.__all__)
    assert all(hasattr(module, name) for name in module.__all__)
