"""Choosing the bridge: compiled by default, the reference one only when asked for."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["BRIDGE_ENV", "BRIDGE_KINDS", "make_bridge"]

#: Environment variable that selects the bridge kind when the code does not.
BRIDGE_ENV = "WINHV_BRIDGE"
BRIDGE_KINDS = ("compiled", "reference")


def make_bridge(kind: str | None = None) -> Any:
    """A new bridge of ``kind`` (``"compiled"`` or ``"reference"``).

    With ``kind=None`` the ``WINHV_BRIDGE`` environment variable decides, and ``"compiled"``
    when it is unset. An unknown kind is an error; there is no silent fallback from one kind
    to the other (a missing compiled extension raises ImportError).
    """
    source = "argument"
    if kind is None:
        source = BRIDGE_ENV
        kind = os.environ.get(BRIDGE_ENV, "").strip() or "compiled"
    if kind == "compiled":
        from winhv._bridge import Bridge

        return Bridge()
    if kind == "reference":
        from winhv._refbridge import ReferenceBridge

        return ReferenceBridge()
    raise ValueError(f"unknown bridge kind {kind!r}: expected one of {', '.join(BRIDGE_KINDS)}"
                     f" (from {source})")
