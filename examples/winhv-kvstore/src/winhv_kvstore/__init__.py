"""winhv-kvstore: a key-value store the guest reaches over VMBus (an example device)."""

from __future__ import annotations

from .protocol import INTERFACE_ID, KvError, Op, Status
from .vsc import KvStoreVsc
from .vsp import KvStoreVsp

__all__ = ["INTERFACE_ID", "KvError", "KvStoreVsc", "KvStoreVsp", "Op", "Status"]
