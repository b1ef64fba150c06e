"""``winhv.abi.__all__`` names exactly the public members, sorted (httpx's test, adapted to
ruff's isort-style order: constants, then classes, then functions)."""

from __future__ import annotations

from support.exports import isort_key, public_names

import winhv.abi


def test_all_names_exactly_the_public_members() -> None:
    public = public_names(winhv.abi)
    assert sorted(winhv.abi.__all__, key=isort_key) == winhv.abi.__all__
    assert len(set(winhv.abi.__all__)) == len(winhv.abi.__all__)
    assert set(winhv.abi.__all__) == set(public)


def test_every_private_module_is_fully_re_exported() -> None:
    from winhv import (
        _calls,
        _control,
        _message,
        _privileges,
        _properties,
        _registers,
        _status,
        _structs,
    )

    modules = (_calls, _control, _message, _privileges, _properties, _registers, _status, _structs)
    for module in modules:
        assert sorted(module.__all__, key=isort_key) == module.__all__, module.__name__
        for name in module.__all__:
            assert getattr(winhv.abi, name) is getattr(module, name), name
