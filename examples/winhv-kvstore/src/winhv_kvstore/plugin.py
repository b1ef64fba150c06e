"""Registers the kvstore pair (entry point ``kvstore`` in the ``winhv`` group)."""

from __future__ import annotations

from winhv.plugins.api import ConfigField, PairDescription, hookimpl

from .protocol import INTERFACE_ID
from .vsc import KvStoreVsc
from .vsp import KvStoreVsp


@hookimpl
def winhv_vsp_vsc_pairs() -> list[PairDescription]:
    return [
        PairDescription(
            name="kvstore",
            interface_id=INTERFACE_ID,
            version="1.0",
            vsp=KvStoreVsp,
            vsc=KvStoreVsc,
            config=(ConfigField("capacity", int, default=64, minimum=1, maximum=1_000_000,
                                doc="Most entries the store holds."),),
            summary="A key-value store the guest reaches over VMBus.",
        )
    ]
