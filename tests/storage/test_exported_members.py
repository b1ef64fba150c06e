"""``winhv.vsp_vsc_pairs.storage.__all__`` names exactly the public members, sorted, and every
private module's names are re-exported (httpx's test, with ruff's isort-style order)."""

from __future__ import annotations

from support.exports import isort_key, public_names

import winhv.vsp_vsc_pairs.storage as storage


def test_all_names_exactly_the_public_members() -> None:
    public = public_names(storage)
    assert sorted(storage.__all__, key=isort_key) == storage.__all__
    assert len(set(storage.__all__)) == len(storage.__all__)
    assert set(storage.__all__) == set(public)


def test_every_private_module_is_fully_re_exported() -> None:
    from winhv.vsp_vsc_pairs.storage import (
        _backing,
        _buffer,
        _protocol,
        _scsi,
        _sense,
        _vsc_protocol,
        _vsp_protocol,
    )

    modules = (_backing, _buffer, _protocol, _scsi, _sense, _vsc_protocol, _vsp_protocol)
    for module in modules:
        assert sorted(module.__all__, key=isort_key) == module.__all__, module.__name__
        for name in module.__all__:
            assert getattr(storage, name) is getattr(module, name), name
