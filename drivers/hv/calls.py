"""Which hypercalls this hypervisor implements: derived from the handler tables, so the CLI
listing (``winhv hypercalls``) can never disagree with what the bridge dispatches. Every other
code of the ABI table answers ``HV_STATUS_INVALID_HYPERCALL_CODE``."""

from __future__ import annotations

from winhv.drivers.hv import (
    _memory_calls,
    _message_calls,
    _partition_calls,
    _port_calls,
    _vp_calls,
)

__all__ = ["IMPLEMENTED_HYPERCALLS"]

#: Call codes with a handler (each has a Python handler; the hot ones are also compiled).
IMPLEMENTED_HYPERCALLS: frozenset[int] = frozenset(
    code
    for module in (_partition_calls, _memory_calls, _vp_calls, _port_calls, _message_calls)
    for code in module.HANDLERS
)
