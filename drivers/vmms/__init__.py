"""VMMS: the management service of a host — every VM's state machine, the management API, and
the host object that boots the machine and the root (Hyper-V's ``vmms.exe``)."""

from __future__ import annotations

from winhv.drivers.vmms._host import Host
from winhv.drivers.vmms._spec import DeviceSpec, VmSpec
from winhv.drivers.vmms._states import TRANSITIONS, IllegalTransition, VmState
from winhv.drivers.vmms._vmms import (
    KVP_WAIT_LIMIT_S,
    STOP_TIMEOUT_S,
    Vm,
    Vmms,
    VmmsError,
    VmNotRunning,
)

__all__ = [
    "KVP_WAIT_LIMIT_S",
    "STOP_TIMEOUT_S",
    "TRANSITIONS",
    "DeviceSpec",
    "Host",
    "IllegalTransition",
    "Vm",
    "VmNotRunning",
    "VmSpec",
    "VmState",
    "Vmms",
    "VmmsError",
]
