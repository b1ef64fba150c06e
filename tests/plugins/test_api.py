"""``winhv.plugins.api`` exports exactly its public names, sorted (as httpx tests its own)."""

from __future__ import annotations

from support.exports import public_names

from winhv.plugins import api


def test_all_equals_the_public_names_without_repeats() -> None:
    public = public_names(api)
    assert len(set(api.__all__)) == len(api.__all__)  # ruff's RUF022 keeps it sorted
    assert set(api.__all__) == public
