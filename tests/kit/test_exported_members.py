"""``winhv.plugins.testing.__all__`` is sorted, unique, and exactly its public names."""

from __future__ import annotations

from support.exports import public_names

import winhv.plugins.testing as testing


def test_all_is_sorted_unique_and_complete() -> None:
    names = testing.__all__
    assert list(names) == sorted(names, key=lambda n: (not n.isupper(), n))
    assert len(set(names)) == len(names)
    assert public_names(testing) == set(names)
