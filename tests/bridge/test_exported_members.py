"""``winhv.__all__`` names exactly the package's public members, sorted as ruff sorts them
(httpx's ``test_exported_members``): nothing becomes public by accident."""

from __future__ import annotations
import __future__

import types

from support.hv import winhv_package


def _isort_key(name: str) -> tuple[int, str]:
    if name.upper() == name:
        return (0, name)
    if name[0].isupper():
        return (1, name)
    return (2, name)


def _public_names(module: types.ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, (types.ModuleType, __future__._Feature))
    }


def test_all_is_sorted_and_unique() -> None:
    exported = winhv_package().__all__
    assert sorted(exported, key=_isort_key) == exported
    assert len(set(exported)) == len(exported)


def test_all_names_exactly_the_public_members() -> None:
    package = winhv_package()
    assert set(package.__all__) == _public_names(package)


def test_every_exported_name_resolves() -> None:
    package = winhv_package()
    for name in package.__all__:
        assert getattr(package, name) is not None, name
