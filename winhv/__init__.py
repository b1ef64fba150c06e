"""winhv: the Hyper-V hypercall ABI, the hypercall bridge and the WinHv calling layer.

This package is the bottom layer of winhv (see ``docs/architecture.md``):

* the TLFS tables and wire structures (all of them in :mod:`winhv.abi`; the most used are
  re-exported here),
* the bridge, which turns a control word and parameter GPAs into a result word — compiled
  (:class:`Bridge`) or plain Python (:class:`ReferenceBridge`), chosen with
  :func:`make_bridge`, never by silent fallback,
* :class:`WinHv`, the ``WinHv*`` functions bound to one partition and VP, also exported to C as
  the ``WINHV_INTERFACE`` table declared in ``winhv/include/winhv.h`` (:func:`get_include`).

The hypervisor itself (partitions, SynIC, VMBus) lives in :mod:`winhv.drivers`.
"""

from __future__ import annotations

from winhv._bridge import Bridge, Caller, HypercallFrame
from winhv._calls import HYPERCALLS, CallClass, HvCallCode, HypercallInfo, hypercall_info
from winhv._control import HypercallControl, HypercallResult
from winhv._gpa import GpaError, GpaSpace
from winhv._message import HvMessageType
from winhv._privileges import DEFAULT_CHILD_PRIVILEGES, ROOT_PRIVILEGES, Privilege
from winhv._properties import PartitionProperty
from winhv._refbridge import ReferenceBridge, ReferenceFrame
from winhv._registers import HvRegisterName, SyntheticMsr
from winhv._select import BRIDGE_ENV, BRIDGE_KINDS, make_bridge
from winhv._status import HvStatus
from winhv._winhv import WinHv

__all__ = [
    "BRIDGE_ENV",
    "BRIDGE_KINDS",
    "DEFAULT_CHILD_PRIVILEGES",
    "HYPERCALLS",
    "ROOT_PRIVILEGES",
    "Bridge",
    "CallClass",
    "Caller",
    "GpaError",
    "GpaSpace",
    "HvCallCode",
    "HvMessageType",
    "HvRegisterName",
    "HvStatus",
    "HypercallControl",
    "HypercallFrame",
    "HypercallInfo",
    "HypercallResult",
    "PartitionProperty",
    "Privilege",
    "ReferenceBridge",
    "ReferenceFrame",
    "SyntheticMsr",
    "WinHv",
    "get_include",
    "hypercall_info",
    "make_bridge",
]

__version__ = "0.1.0"


def get_include() -> str:
    """Directory holding ``winhv.h``, for compiling C drivers against the interface table."""
    from pathlib import Path

    return str(Path(__file__).with_name("include"))
