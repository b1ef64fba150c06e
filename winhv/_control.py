"""The hypercall control value and result value (fact sheet §1.2 and §1.3).

A guest issues a hypercall with a 64-bit *control* value (RCX on x64) and receives a 64-bit
*result* value (RAX). This module holds their bit layouts as constants and two frozen values
that encode and decode them exactly.

Control value, TLFS layout (§1.2; OpenVMM ``hypercall::Control`` agrees)::

    63:60 RsvdZ | 59:48 rep start | 47:44 RsvdZ | 43:32 rep count | 31 nested |
    30:27 RsvdZ | 26:17 variable header size (QWORDs) | 16 fast | 15:0 call code

Other sources disagree on bits 17-31 (§8 item 1); the TLFS layout is the one used here.
Mask constants are *in place* (already shifted), e.g. ``CONTROL_VARHEAD_MASK == 0x3FF << 17``.

Result value (§1.3)::

    63:44 reserved | 43:32 reps completed (total, not relative to rep start) |
    31:16 reserved | 15:0 HV_STATUS

Decoding a control value keeps its reserved bits (:attr:`HypercallControl.reserved`) because a
non-zero RsvdZ field is an input error the hypervisor must report
(``HV_STATUS_INVALID_HYPERCALL_INPUT``), not something to drop. The result's reserved bits
are documented as "ignore", so :meth:`HypercallResult.decode` ignores them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from ._status import HvStatus

__all__ = [
    "CONTROL_CODE_MASK",
    "CONTROL_EXTENDED_CODE_BASE",
    "CONTROL_FAST",
    "CONTROL_NESTED",
    "CONTROL_REP_COUNT_MASK",
    "CONTROL_REP_COUNT_MAX",
    "CONTROL_REP_COUNT_SHIFT",
    "CONTROL_REP_START_MASK",
    "CONTROL_REP_START_SHIFT",
    "CONTROL_RESERVED_MASK",
    "CONTROL_VARHEAD_MASK",
    "CONTROL_VARHEAD_MAX",
    "CONTROL_VARHEAD_SHIFT",
    "RESULT_DEFINED_MASK",
    "RESULT_REPS_MASK",
    "RESULT_REPS_MAX",
    "RESULT_REPS_SHIFT",
    "RESULT_RESERVED_MASK",
    "RESULT_STATUS_MASK",
    "HypercallControl",
    "HypercallResult",
]

_U64 = (1 << 64) - 1

# --- control value (§1.2) ---
#: Bits 15:0: the call code.
CONTROL_CODE_MASK = 0xFFFF
#: Call codes from here on are extended hypercalls (§1.1), same convention.
CONTROL_EXTENDED_CODE_BASE = 0x8000
#: Bit 16: register-based ("fast") call.
CONTROL_FAST = 1 << 16
#: Bits 26:17: size of the variable header in QWORDs.
CONTROL_VARHEAD_SHIFT = 17
CONTROL_VARHEAD_MAX = (1 << 10) - 1
CONTROL_VARHEAD_MASK = CONTROL_VARHEAD_MAX << CONTROL_VARHEAD_SHIFT
#: Bit 31: route to the L0 hypervisor when nested.
CONTROL_NESTED = 1 << 31
#: Bits 43:32: rep count.
CONTROL_REP_COUNT_SHIFT = 32
CONTROL_REP_COUNT_MAX = (1 << 12) - 1
CONTROL_REP_COUNT_MASK = CONTROL_REP_COUNT_MAX << CONTROL_REP_COUNT_SHIFT
#: Bits 59:48: rep start index.
CONTROL_REP_START_SHIFT = 48
CONTROL_REP_START_MASK = CONTROL_REP_COUNT_MAX << CONTROL_REP_START_SHIFT
#: RsvdZ bits 30:27, 47:44 and 63:60.
CONTROL_RESERVED_MASK = (0xF << 27) | (0xF << 44) | (0xF << 60)

# --- result value (§1.3) ---
#: Bits 15:0: the HV_STATUS.
RESULT_STATUS_MASK = 0xFFFF
#: Bits 43:32: total reps completed.
RESULT_REPS_SHIFT = 32
RESULT_REPS_MAX = (1 << 12) - 1
RESULT_REPS_MASK = RESULT_REPS_MAX << RESULT_REPS_SHIFT
#: Every bit with a meaning; the rest (31:16, 63:44) is reserved and ignored.
RESULT_DEFINED_MASK = RESULT_STATUS_MASK | RESULT_REPS_MASK
RESULT_RESERVED_MASK = _U64 & ~RESULT_DEFINED_MASK


def _check_width(field: str, value: int, maximum: int) -> None:
    if not 0 <= value <= maximum:
        raise ValueError(f"{field}: found {value!r}, expected 0..{maximum:#x}")


def _check_u64(what: str, value: int) -> None:
    if not 0 <= value <= _U64:
        raise ValueError(f"{what}: found {value:#x}, expected an unsigned 64-bit value")


@dataclass(frozen=True, slots=True)
class HypercallControl:
    """A decoded hypercall control value (§1.2).

    Field widths are checked by :meth:`encode`, not by the constructor, so a value can be built
    field by field and validated once. ``reserved`` holds the RsvdZ bits *in place*; it must
    be a subset of :data:`CONTROL_RESERVED_MASK`. ``decode(x).encode() == x`` for every 64-bit
    ``x``. Whether the fields make sense for the call (rep count versus call class, rep start
    below rep count, reserved bits zero) is the bridge's policy, not this codec's.
    """

    code: int
    fast: bool = False
    variable_header_qwords: int = 0
    nested: bool = False
    rep_count: int = 0
    rep_start: int = 0
    reserved: int = 0

    @property
    def is_rep(self) -> bool:
        """True when the rep count is non-zero (the caller claims a rep call)."""
        return self.rep_count != 0

    def encode(self) -> int:
        """The 64-bit control value. Raises :class:`ValueError` naming the field that does
        not fit its width."""
        _check_width("control code", self.code, CONTROL_CODE_MASK)
        _check_width("control variable_header_qwords", self.variable_header_qwords,
                     CONTROL_VARHEAD_MAX)
        _check_width("control rep_count", self.rep_count, CONTROL_REP_COUNT_MAX)
        _check_width("control rep_start", self.rep_start, CONTROL_REP_COUNT_MAX)
        if self.reserved & ~CONTROL_RESERVED_MASK or self.reserved < 0:
            raise ValueError(
                f"control reserved: found {self.reserved:#x}, expected a subset of "
                f"{CONTROL_RESERVED_MASK:#x}"
            )
        return (
            self.code
            | (CONTROL_FAST if self.fast else 0)
            | self.variable_header_qwords << CONTROL_VARHEAD_SHIFT
            | (CONTROL_NESTED if self.nested else 0)
            | self.rep_count << CONTROL_REP_COUNT_SHIFT
            | self.rep_start << CONTROL_REP_START_SHIFT
            | self.reserved
        )

    @classmethod
    def decode(cls, value: int) -> Self:
        """Split a 64-bit control value into its fields; every bit lands in some field."""
        _check_u64("control value", value)
        return cls(
            code=value & CONTROL_CODE_MASK,
            fast=bool(value & CONTROL_FAST),
            variable_header_qwords=(value & CONTROL_VARHEAD_MASK) >> CONTROL_VARHEAD_SHIFT,
            nested=bool(value & CONTROL_NESTED),
            rep_count=(value & CONTROL_REP_COUNT_MASK) >> CONTROL_REP_COUNT_SHIFT,
            rep_start=(value & CONTROL_REP_START_MASK) >> CONTROL_REP_START_SHIFT,
            reserved=value & CONTROL_RESERVED_MASK,
        )


@dataclass(frozen=True, slots=True)
class HypercallResult:
    """A decoded hypercall result value (§1.3).

    ``status`` is an :class:`HvStatus` when the code is defined and a plain ``int`` otherwise
    (a result word from a newer hypervisor still decodes). ``reps_completed`` is the total
    number of elements done, counted from element 0, not from the rep start index.
    """

    status: HvStatus | int
    reps_completed: int = 0

    @property
    def succeeded(self) -> bool:
        """True for ``HV_STATUS_SUCCESS``."""
        return self.status == HvStatus.SUCCESS

    def encode(self) -> int:
        """The 64-bit result value (reserved bits zero). Raises :class:`ValueError` when a
        field does not fit its width."""
        _check_width("result status", int(self.status), RESULT_STATUS_MASK)
        _check_width("result reps_completed", self.reps_completed, RESULT_REPS_MAX)
        return int(self.status) | self.reps_completed << RESULT_REPS_SHIFT

    @classmethod
    def decode(cls, value: int) -> Self:
        """Read status and reps completed from a 64-bit result; reserved bits are ignored, as
        §1.3 says they must be."""
        _check_u64("result value", value)
        code = value & RESULT_STATUS_MASK
        status: HvStatus | int
        try:
            status = HvStatus(code)
        except ValueError:
            status = code
        return cls(status=status, reps_completed=(value & RESULT_REPS_MASK) >> RESULT_REPS_SHIFT)
