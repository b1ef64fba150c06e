"""``winhv.__all__`` names exactly the package's public members, sorted as ruff sorts them
(httpx's ``test_exported_members``): nothing becomes public by accident."""

from __future__ import annotations

from support.exports import isort_key, public_names
from support.hv import winhv_package


def test_all_is_sorted_and_unique() -> None:
    exported = winhv_package().__all__
    assert sorted(exported, key=isort_key) == exported
    assert len(set(exported)) == len(exported)


def test_all_names_exactly_the_public_members() -> None:
    package = winhv_package()
    assert set(package.__all__) == public_names(package)


def test_every_exported_name_resolves() -> None:
    package = winhv_package()
    for name in package.__all__:
        assert getattr(package, name) is not None, name
