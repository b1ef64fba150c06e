"""The reference bridge: the compiled bridge's exact behaviour, written in plain Python.

It exists to be read and to be tested against: every bridge test runs on both, so the compiled
one can be trusted to be exactly this, only faster. Choose it explicitly — ``Hypervisor(
bridge="reference")`` or ``WINHV_BRIDGE=reference`` — it is never a silent fallback.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from winhv._calls import HYPERCALLS, CallClass, HypercallInfo
from winhv._control import (
    CONTROL_FAST,
    CONTROL_NESTED,
    CONTROL_REP_COUNT_SHIFT,
    CONTROL_REP_START_SHIFT,
    CONTROL_RESERVED_MASK,
    CONTROL_VARHEAD_SHIFT,
)
from winhv._status import HvStatus

__all__ = ["DEFAULT_REP_SLICE", "ReferenceBridge", "ReferenceFrame"]

DEFAULT_REP_SLICE = 512
_log = logging.getLogger("winhv.bridge")


@dataclass(slots=True)
class ReferenceFrame:
    """Same attributes as the compiled bridge's ``HypercallFrame``."""

    caller: Any
    code: int
    fast: bool
    varhead_qwords: int
    rep_count: int
    rep_start: int
    rep_limit: int
    reps_done: int
    input: memoryview
    output: memoryview | None


def _pad8(n: int) -> int:
    return (n + 7) & ~7


class ReferenceBridge:
    """Decode, validate, check privileges and dispatch, in Python (fact sheet §1.1–§1.3)."""

    kind = "reference"

    def __init__(self, table: Mapping[int, HypercallInfo] | None = None) -> None:
        self._table = dict(HYPERCALLS if table is None else table)
        self._handlers: dict[int, Callable[[Any], int]] = {}
        self._faults: dict[int, list[int]] = {}
        self._calls: Counter[int] = Counter()
        self._statuses: Counter[int] = Counter()
        self.rep_slice = DEFAULT_REP_SLICE
        self.tracer: Callable[..., Any] | None = None

    # -- registration, faults, counters (same API as the compiled bridge) ----------------------

    def _known(self, code: int) -> None:
        if code not in self._table:
            raise ValueError(f"call code {code:#06x} is not in the ABI table")

    def register(self, code: int, handler: Callable[[Any], int]) -> None:
        self._known(code)
        if not callable(handler):
            raise TypeError(f"handler for {code:#06x} is not callable: {handler!r}")
        self._handlers[code] = handler

    def unregister(self, code: int) -> None:
        self._handlers.pop(code, None)

    def handled(self, code: int) -> bool:
        return code in self._handlers

    def handled_codes(self) -> list[int]:
        return sorted(self._handlers)

    def compiled_codes(self) -> list[int]:
        return []

    def inject_fault(self, code: int, status: int, count: int = 1) -> None:
        self._known(code)
        if not 0 < status <= 0xFFFF:
            raise ValueError(f"fault status {status:#x} is not a failure HV_STATUS")
        self._faults[code] = [status, count]

    def pending_faults(self) -> dict[int, tuple[int, int]]:
        return {code: (s, n) for code, (s, n) in self._faults.items() if n}

    def counters(self) -> dict[int, int]:
        return dict(self._calls)

    def status_counters(self) -> dict[int, int]:
        return dict(self._statuses)

    def reset_counters(self) -> None:
        self._calls.clear()
        self._statuses.clear()

    # -- the entry ----------------------------------------------------------------------------

    def hypercall(self, caller: Any, control: int, rdx: int, r8: int) -> int:
        """Issue one hypercall as ``caller``; returns the 64-bit result word. Never raises."""
        control &= (1 << 64) - 1
        caller.calls += 1
        status, reps_done = self._dispatch(caller, control, rdx & ((1 << 64) - 1),
                                           r8 & ((1 << 64) - 1))
        self._statuses[status & 0xFF] += 1
        result = status | (reps_done << 32)
        if self.tracer is not None:
            try:
                self.tracer(caller.partition_id, control, rdx, r8, result)
            except Exception:
                _log.exception("hypercall tracer failed; tracing disabled")
                self.tracer = None
        return result

    def _dispatch(self, caller: Any, control: int, rdx: int, r8: int) -> tuple[int, int]:
        code = control & 0xFFFF
        info = self._table.get(code)
        handler = self._handlers.get(code)
        self._calls[code if info is not None else -1] += 1
        if info is None or handler is None:
            return HvStatus.INVALID_HYPERCALL_CODE, 0
        fast = bool(control & CONTROL_FAST)
        varhead = (control >> CONTROL_VARHEAD_SHIFT) & 0x3FF
        rep_count = (control >> CONTROL_REP_COUNT_SHIFT) & 0xFFF
        rep_start = (control >> CONTROL_REP_START_SHIFT) & 0xFFF
        rep = info.call_class is CallClass.REP
        if control & CONTROL_RESERVED_MASK or control & CONTROL_NESTED:
            return HvStatus.INVALID_HYPERCALL_INPUT, 0
        if rep:
            if rep_count == 0 or rep_start >= rep_count:
                return HvStatus.INVALID_HYPERCALL_INPUT, 0
        elif rep_count or rep_start:
            return HvStatus.INVALID_HYPERCALL_INPUT, 0
        if varhead and not info.variable_header:
            return HvStatus.INVALID_HYPERCALL_INPUT, 0
        privilege = int(info.privilege or 0)
        if caller.privileges & privilege != privilege:
            return HvStatus.ACCESS_DENIED, 0
        in_size = _pad8(info.input_size + varhead * 8 + rep_count * info.rep_input_size)
        out_size = _pad8(info.output_size + rep_count * info.rep_output_size)
        memory = caller.memory
        if fast:
            if not info.fast or in_size > 16 or out_size:
                return HvStatus.INVALID_HYPERCALL_INPUT, 0
            input_view = memoryview(rdx.to_bytes(8, "little") + r8.to_bytes(8, "little"))
            output_view = None
        else:
            input_view = memoryview(b"")
            output_view = None
            if in_size:
                if rdx & 7 or not self._in_one_page(memory, rdx, in_size):
                    return HvStatus.INVALID_ALIGNMENT, 0
                input_view = memory.view(rdx, in_size).toreadonly()
            if out_size:
                if r8 & 7 or not self._in_one_page(memory, r8, out_size):
                    return HvStatus.INVALID_ALIGNMENT, 0
                output_view = memory.view(r8, out_size)
        rep_limit = 0
        if rep:
            rep_limit = rep_count
            if self.rep_slice > 0 and rep_count - rep_start > self.rep_slice:
                rep_limit = rep_start + self.rep_slice
        fault = self._faults.get(code)
        if fault and fault[1]:
            fault[1] -= 1
            return fault[0], rep_start if rep else 0
        frame = ReferenceFrame(caller, code, fast, varhead, rep_count, rep_start, rep_limit,
                               rep_start, input_view, output_view)
        try:
            status = int(handler(frame))
            if not 0 <= status <= 0xFFFF:
                raise ValueError(f"handler returned {status!r}, not an HV_STATUS")
        except Exception:
            _log.exception("hypercall %#06x handler %r failed (caller partition %#x)",
                           code, handler, caller.partition_id)
            status = HvStatus.OPERATION_FAILED
        reps_done = 0
        if rep:
            reps_done = frame.reps_done
            if not rep_start <= reps_done <= rep_limit:
                reps_done = rep_start
        return status, reps_done

    @staticmethod
    def _in_one_page(memory: Any, gpa: int, size: int) -> bool:
        return (gpa & 0xFFF) + size <= 4096 and memory.is_mapped(gpa, size)
