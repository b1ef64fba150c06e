"""The public names of a module, for the ``__all__`` tests (httpx style)."""

from __future__ import annotations
import __future__

import types


def public_names(module: types.ModuleType) -> set[str]:
    """Names ``module`` makes public.

    Left out: ``_``-prefixed names, submodules (a package gains them as attributes when they
    are imported), ``from __future__`` features, and pytest's assertion-rewriting helpers
    (``@py_builtins``, ``@pytest_ar``), which pytest injects into every module of a
    distribution that registers a ``pytest11`` plugin — winhv itself, once installed.
    """
    return {
        name for name, value in vars(module).items()
        if not name.startswith(("_", "@"))
        and not isinstance(value, types.ModuleType | __future__._Feature)
    }


def isort_key(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 keeps ``__all__`` in: CONSTANTS, then Classes, then functions."""
    if name.isupper():
        return (0, name)
    if name[0].isupper():
        return (1, name)
    return (2, name)
