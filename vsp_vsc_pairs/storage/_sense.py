"""SCSI status bytes and sense data (SPC-4 §4.5), the form a disk reports an error in.

A command that fails ends with status CHECK CONDITION and *sense data*: a sense key (the class
of error) and an additional sense code and qualifier (ASC/ASCQ, the exact error). This disk
reports them in **fixed format** (SPC-4 §4.5.3), 18 bytes:

======  ====================================================================================
byte    field
======  ====================================================================================
0       VALID (bit 7, 0: no INFORMATION) | RESPONSE CODE 0x70 (current error)
2       SENSE KEY (bits 3:0)
3..6    INFORMATION (0)
7       ADDITIONAL SENSE LENGTH = 10 (bytes 8..17)
8..11   COMMAND-SPECIFIC INFORMATION (0)
12      ADDITIONAL SENSE CODE
13      ADDITIONAL SENSE CODE QUALIFIER
14..17  FRU code, sense-key specific (0)
======  ====================================================================================

``parse_sense`` also reads descriptor format (0x72/0x73, SPC-4 §4.5.2), as a guest must.
The named conditions below are the ones this disk reports.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Self

__all__ = [
    "FIXED_SENSE_SIZE",
    "INVALID_COMMAND_OPERATION_CODE",
    "INVALID_FIELD_IN_CDB",
    "INVALID_FIELD_IN_PARAMETER_LIST",
    "LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE",
    "NO_SENSE",
    "PARAMETER_LIST_LENGTH_ERROR",
    "SAVING_PARAMETERS_NOT_SUPPORTED",
    "SPACE_ALLOCATION_FAILED_WRITE_PROTECT",
    "UNRECOVERED_READ_ERROR",
    "WRITE_ERROR",
    "WRITE_PROTECTED",
    "ScsiStatus",
    "SenseData",
    "SenseKey",
    "parse_sense",
]

#: Size of fixed-format sense data with the standard additional length 10.
FIXED_SENSE_SIZE = 18

_FIXED = struct.Struct(">BBBIBIBBBBBB")


class ScsiStatus(IntEnum):
    """The SCSI status byte (SAM-5 §5.3.1); ``vmscsi_request.scsi_status`` (§6.1)."""

    GOOD = 0x00
    CHECK_CONDITION = 0x02
    CONDITION_MET = 0x04
    BUSY = 0x08
    RESERVATION_CONFLICT = 0x18
    TASK_SET_FULL = 0x28
    ACA_ACTIVE = 0x30
    TASK_ABORTED = 0x40


class SenseKey(IntEnum):
    """Sense keys (SPC-4 table 28)."""

    NO_SENSE = 0x0
    RECOVERED_ERROR = 0x1
    NOT_READY = 0x2
    MEDIUM_ERROR = 0x3
    HARDWARE_ERROR = 0x4
    ILLEGAL_REQUEST = 0x5
    UNIT_ATTENTION = 0x6
    DATA_PROTECT = 0x7
    BLANK_CHECK = 0x8
    VENDOR_SPECIFIC = 0x9
    COPY_ABORTED = 0xA
    ABORTED_COMMAND = 0xB
    VOLUME_OVERFLOW = 0xD
    MISCOMPARE = 0xE
    COMPLETED = 0xF


@dataclass(slots=True, frozen=True)
class SenseData:
    """A sense key with its ASC/ASCQ; ``pack`` gives the 18 bytes of fixed format."""

    key: int
    asc: int
    ascq: int

    def pack(self) -> bytes:
        """Fixed-format current-error sense data (response code 0x70), 18 bytes."""
        return _FIXED.pack(0x70, 0, self.key & 0x0F, 0, 10, 0, self.asc, self.ascq, 0, 0, 0, 0)

    @property
    def name(self) -> str:
        """The condition's name if it is one of the named ones, else the three numbers."""
        return _NAMES.get(self, f"{self.key:#x}/{self.asc:#04x}/{self.ascq:#04x}")

    def __str__(self) -> str:
        try:
            key = SenseKey(self.key).name
        except ValueError:
            key = f"{self.key:#x}"
        return f"{key} {self.name} (ASC {self.asc:#04x}, ASCQ {self.ascq:#04x})"

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> Self | None:
        """Same as ``parse_sense``."""
        parsed = parse_sense(data)
        return None if parsed is None else cls(parsed.key, parsed.asc, parsed.ascq)


def parse_sense(data: bytes | bytearray | memoryview) -> SenseData | None:
    """Read fixed (0x70/0x71) or descriptor (0x72/0x73) sense data; ``None`` when ``data`` is
    too short or carries another response code. Bytes the additional length leaves out are
    read as zero (a short fixed-format buffer still gives its key)."""
    data = bytes(data)
    if len(data) < 3:
        return None
    code = data[0] & 0x7F
    if code in (0x70, 0x71):
        padded = data[:FIXED_SENSE_SIZE].ljust(FIXED_SENSE_SIZE, b"\0")
        length = 8 + padded[7]
        asc = padded[12] if length > 12 else 0
        ascq = padded[13] if length > 13 else 0
        return SenseData(padded[2] & 0x0F, asc, ascq)
    if code in (0x72, 0x73):
        padded = data[:4].ljust(4, b"\0")
        return SenseData(padded[1] & 0x0F, padded[2], padded[3])
    return None


_K = SenseKey

#: SPC-4 annex D: the ASC/ASCQ this disk reports, with their sense keys.
NO_SENSE = SenseData(_K.NO_SENSE, 0x00, 0x00)
INVALID_COMMAND_OPERATION_CODE = SenseData(_K.ILLEGAL_REQUEST, 0x20, 0x00)
LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE = SenseData(_K.ILLEGAL_REQUEST, 0x21, 0x00)
INVALID_FIELD_IN_CDB = SenseData(_K.ILLEGAL_REQUEST, 0x24, 0x00)
INVALID_FIELD_IN_PARAMETER_LIST = SenseData(_K.ILLEGAL_REQUEST, 0x26, 0x00)
PARAMETER_LIST_LENGTH_ERROR = SenseData(_K.ILLEGAL_REQUEST, 0x1A, 0x00)
SAVING_PARAMETERS_NOT_SUPPORTED = SenseData(_K.ILLEGAL_REQUEST, 0x39, 0x00)
WRITE_PROTECTED = SenseData(_K.DATA_PROTECT, 0x27, 0x00)
SPACE_ALLOCATION_FAILED_WRITE_PROTECT = SenseData(_K.DATA_PROTECT, 0x27, 0x07)
UNRECOVERED_READ_ERROR = SenseData(_K.MEDIUM_ERROR, 0x11, 0x00)
WRITE_ERROR = SenseData(_K.MEDIUM_ERROR, 0x0C, 0x00)

_NAMES: dict[SenseData, str] = {
    value: name for name, value in list(globals().items()) if isinstance(value, SenseData)
}
