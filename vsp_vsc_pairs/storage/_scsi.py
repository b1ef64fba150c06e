"""A SCSI direct-access block device (SBC-3/SPC-4) over a ``BackingStore``, sans-IO.

``ScsiDisk.execute(cdb, data)`` runs one command: it parses the CDB, checks every field, moves
data between the request's ``DataBuffer`` (guest memory) and the store, and returns a
``ScsiResult``: SCSI status, SRB status (§6.1), fixed-format sense data on CHECK CONDITION and
the bytes transferred. A guest may send any CDB: every outcome is a ``ScsiResult``; no access
ever leaves the disk (the LBA range is checked with exact integers before any I/O, and the
store checks again).

``COMMANDS`` is the one table of supported commands (opcode, name, CDB length, data direction,
handler); dispatch, the VSP's direction check and the tests are derived from it. Anything not
in it ends with ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE (05/20/00).

Checks, in order, for every command: CDB length against the opcode's (SPC-4 §4.2.5, too
short: INVALID FIELD IN CDB); the CONTROL byte's NACA bit (unsupported: INVALID FIELD IN CDB);
then the command's own fields; for media access, transfer length against the maximum (INVALID
FIELD IN CDB), write protection (DATA PROTECT 07/27/00), the LBA range (05/21/00), and last
the data buffer: a READ/WRITE/UNMAP whose buffer is shorter than its CDB asks for completes
with SRB status DATA_OVERRUN and no transfer (the Windows SRB rule); commands with an
ALLOCATION LENGTH transfer ``min(allocation length, data available, buffer)`` bytes.

Errors map to SRB statuses as OpenVMM's storvsp does: ILLEGAL REQUEST -> INVALID_REQUEST,
other CHECK CONDITIONs (DATA PROTECT, MEDIUM ERROR) -> ERROR. A failing store becomes sense
data too: EIO and the like MEDIUM ERROR 03/11/00 (read) or 03/0C/00 (write), ENOSPC/EDQUOT
DATA PROTECT 07/27/07 (space allocation failed), EROFS/EACCES DATA PROTECT 07/27/00.
"""

from __future__ import annotations

import errno
import struct
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType

from ._backing import BackingStore, BackingStoreRangeError
from ._buffer import DataBuffer
from ._protocol import DEFAULT_MAX_TRANSFER_BYTES, DataDirection, SrbStatus
from ._sense import (
    INVALID_COMMAND_OPERATION_CODE,
    INVALID_FIELD_IN_CDB,
    INVALID_FIELD_IN_PARAMETER_LIST,
    LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE,
    NO_SENSE,
    PARAMETER_LIST_LENGTH_ERROR,
    SAVING_PARAMETERS_NOT_SUPPORTED,
    SPACE_ALLOCATION_FAILED_WRITE_PROTECT,
    UNRECOVERED_READ_ERROR,
    WRITE_ERROR,
    WRITE_PROTECTED,
    ScsiStatus,
    SenseData,
    SenseKey,
)

__all__ = [
    "COMMANDS",
    "MAX_UNMAP_DESCRIPTORS",
    "CommandSpec",
    "ScsiDisk",
    "ScsiOp",
    "ScsiResult",
    "check_condition",
    "report_luns",
]

#: Maximum UNMAP block descriptors per command (Block Limits VPD page).
MAX_UNMAP_DESCRIPTORS = 256
_MAX_UNMAP_LBA_COUNT = 0xFFFF_FFFF


class ScsiOp(IntEnum):
    """Operation codes this disk implements (SPC-4/SBC-3)."""

    TEST_UNIT_READY = 0x00
    REQUEST_SENSE = 0x03
    INQUIRY = 0x12
    MODE_SENSE_6 = 0x1A
    READ_CAPACITY_10 = 0x25
    READ_10 = 0x28
    WRITE_10 = 0x2A
    SYNCHRONIZE_CACHE_10 = 0x35
    UNMAP = 0x42
    MODE_SENSE_10 = 0x5A
    READ_16 = 0x88
    WRITE_16 = 0x8A
    SYNCHRONIZE_CACHE_16 = 0x91
    SERVICE_ACTION_IN_16 = 0x9E  # READ CAPACITY (16) is service action 0x10
    REPORT_LUNS = 0xA0


@dataclass(slots=True, frozen=True)
class ScsiResult:
    """The outcome of one command. ``sense`` is set exactly when ``scsi_status`` is CHECK
    CONDITION and sense data applies; ``transferred`` counts data bytes moved."""

    scsi_status: ScsiStatus
    srb_status: SrbStatus
    sense: SenseData | None = None
    transferred: int = 0

    @property
    def sense_bytes(self) -> bytes:
        """The sense data in fixed format, or ``b""``."""
        return b"" if self.sense is None else self.sense.pack()


# Results are immutable values, so the common ones are made once and shared: building a frozen
# dataclass costs more than the rest of a cached 4 KiB read. Both caches are bounded.
_CACHE_LIMIT = 4096
_CHECKS: dict[SenseData, ScsiResult] = {}
_GOOD: dict[int, ScsiResult] = {}


def check_condition(sense: SenseData) -> ScsiResult:
    """CHECK CONDITION with ``sense``; SRB status INVALID_REQUEST for ILLEGAL REQUEST, else
    ERROR."""
    result = _CHECKS.get(sense)
    if result is None:
        illegal = sense.key == SenseKey.ILLEGAL_REQUEST
        srb = SrbStatus.INVALID_REQUEST if illegal else SrbStatus.ERROR
        result = ScsiResult(ScsiStatus.CHECK_CONDITION, srb, sense)
        if len(_CHECKS) < _CACHE_LIMIT:
            _CHECKS[sense] = result
    return result


def _good(transferred: int) -> ScsiResult:
    result = _GOOD.get(transferred)
    if result is None:
        result = ScsiResult(ScsiStatus.GOOD, SrbStatus.SUCCESS, None, transferred)
        if len(_GOOD) < _CACHE_LIMIT:
            _GOOD[transferred] = result
    return result


_GOOD_EMPTY = _good(0)
_OVERRUN = ScsiResult(ScsiStatus.GOOD, SrbStatus.DATA_OVERRUN)


class _Check(Exception):
    """Raised inside a handler to end the command with CHECK CONDITION ``sense``."""

    def __init__(self, sense: SenseData) -> None:
        super().__init__(sense)
        self.sense = sense


@dataclass(slots=True, frozen=True)
class CommandSpec:
    """One row of ``COMMANDS``: ``direction`` is the data phase (``UNKNOWN``: none);
    ``handler`` names the ``ScsiDisk`` method that runs it."""

    opcode: ScsiOp
    cdb_length: int
    direction: DataDirection
    handler: str


_IN, _OUT, _NONE = DataDirection.READ, DataDirection.WRITE, DataDirection.UNKNOWN


def _cmd(op: ScsiOp, length: int, direction: DataDirection, handler: str) -> CommandSpec:
    return CommandSpec(op, length, direction, handler)


#: The supported commands (SPC-4 §4.2.5 CDB lengths: group 0 = 6, 1-2 = 10, 4 = 16, 5 = 12).
COMMANDS: Mapping[int, CommandSpec] = MappingProxyType(
    {
        spec.opcode: spec
        for spec in (
            _cmd(ScsiOp.TEST_UNIT_READY, 6, _NONE, "_test_unit_ready"),
            _cmd(ScsiOp.REQUEST_SENSE, 6, _IN, "_request_sense"),
            _cmd(ScsiOp.INQUIRY, 6, _IN, "_inquiry"),
            _cmd(ScsiOp.MODE_SENSE_6, 6, _IN, "_mode_sense"),
            _cmd(ScsiOp.READ_CAPACITY_10, 10, _IN, "_read_capacity_10"),
            _cmd(ScsiOp.READ_10, 10, _IN, "_read_write"),
            _cmd(ScsiOp.WRITE_10, 10, _OUT, "_read_write"),
            _cmd(ScsiOp.SYNCHRONIZE_CACHE_10, 10, _NONE, "_synchronize_cache"),
            _cmd(ScsiOp.UNMAP, 10, _OUT, "_unmap"),
            _cmd(ScsiOp.MODE_SENSE_10, 10, _IN, "_mode_sense"),
            _cmd(ScsiOp.READ_16, 16, _IN, "_read_write"),
            _cmd(ScsiOp.WRITE_16, 16, _OUT, "_read_write"),
            _cmd(ScsiOp.SYNCHRONIZE_CACHE_16, 16, _NONE, "_synchronize_cache"),
            _cmd(ScsiOp.SERVICE_ACTION_IN_16, 16, _IN, "_service_action_in"),
            _cmd(ScsiOp.REPORT_LUNS, 12, _IN, "_report_luns"),
        )
    }
)

_BE16 = struct.Struct(">H")
_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")
_RW10 = struct.Struct(">BBIBH")  # opcode, flags, LBA, group, transfer length
_RW16 = struct.Struct(">BBQI")  # opcode, flags, LBA, transfer length
_UNMAP_HEADER = struct.Struct(">HHI")
_UNMAP_DESCRIPTOR = struct.Struct(">QI4x")
_WRITES = frozenset({int(ScsiOp.WRITE_10), int(ScsiOp.WRITE_16)})

_DEVICE_TYPE_DISK = 0x00
_LUN_NOT_PRESENT = 0x7F  # peripheral qualifier 011b, device type 1Fh (SPC-4 §6.6.2)
_VPD_PAGES = (0x00, 0x80, 0x83, 0xB0, 0xB2)


def _ascii(text: str, width: int) -> bytes:
    return text.encode("ascii", "replace")[:width].ljust(width, b" ")


def _transfer(data: DataBuffer, payload: bytes, allocation_length: int) -> ScsiResult:
    """Send ``payload`` truncated to the allocation length and the buffer."""
    return _good(data.scatter(payload[:allocation_length]))


def report_luns(cdb: bytes, luns: Iterable[int], data: DataBuffer) -> ScsiResult:
    """REPORT LUNS (SPC-4 §6.33) for a target whose logical units are ``luns`` (0..255,
    single-level peripheral addressing). SELECT REPORT 0..2 are accepted (all report the same
    disks); ALLOCATION LENGTH below 16 is INVALID FIELD IN CDB."""
    if len(cdb) < 12:
        return check_condition(INVALID_FIELD_IN_CDB)
    allocation_length = _BE32.unpack_from(cdb, 6)[0]
    if cdb[2] > 2 or allocation_length < 16 or cdb[11] & 0x04:
        return check_condition(INVALID_FIELD_IN_CDB)
    ordered = sorted(set(luns))
    payload = _BE32.pack(8 * len(ordered)) + bytes(4)
    payload += b"".join(bytes((0, lun)) + bytes(6) for lun in ordered)
    return _transfer(data, payload, allocation_length)


class ScsiDisk:
    """A direct-access block device on ``store``.

    ``block_size`` is the logical block (512 or 4096); the disk has ``store.size //
    block_size`` blocks. ``physical_block_size`` is reported in READ CAPACITY (16).
    ``serial`` (VPD 0x80) and ``disk_id`` (the NAA identifier in VPD 0x83) default to values
    derived from a fresh ``uuid4``. ``max_transfer_bytes`` bounds one READ/WRITE (Block Limits
    VPD). The cache is reported write-back (WCE=1) with FUA support: WRITE with FUA and
    SYNCHRONIZE CACHE reach the store's ``flush``.
    """

    __slots__ = (
        "_block_count",
        "_block_shift",
        "_block_size",
        "_disk_id",
        "_handlers",
        "_max_transfer_bytes",
        "_physical_block_size",
        "_product",
        "_read_only",
        "_revision",
        "_serial",
        "_store",
        "_vendor",
    )

    def __init__(
        self,
        store: BackingStore,
        *,
        block_size: int = 512,
        physical_block_size: int = 4096,
        serial: str | None = None,
        disk_id: uuid.UUID | None = None,
        vendor: str = "Msft",
        product: str = "Virtual Disk",
        revision: str = "1.0",
        max_transfer_bytes: int = DEFAULT_MAX_TRANSFER_BYTES,
    ) -> None:
        if block_size not in (512, 4096):
            raise ValueError(f"block_size: found {block_size}, expected 512 or 4096")
        if physical_block_size < block_size or physical_block_size & (physical_block_size - 1):
            raise ValueError(
                f"physical_block_size: found {physical_block_size}, "
                f"expected a power of two >= {block_size}"
            )
        if max_transfer_bytes < block_size:
            raise ValueError(
                f"max_transfer_bytes: found {max_transfer_bytes}, expected >= {block_size}"
            )
        self._store = store
        self._read_only = bool(store.read_only)
        self._block_size = block_size
        self._block_shift = block_size.bit_length() - 1
        self._physical_block_size = physical_block_size
        self._block_count = store.size // block_size
        self._disk_id = disk_id if disk_id is not None else uuid.uuid4()
        self._serial = serial if serial is not None else self._disk_id.hex[:20].upper()
        self._vendor, self._product, self._revision = vendor, product, revision
        self._max_transfer_bytes = max_transfer_bytes
        self._handlers: dict[int, tuple[int, Callable[[bytes, DataBuffer], ScsiResult]]] = {
            int(op): (spec.cdb_length, getattr(self, spec.handler)) for op, spec in COMMANDS.items()
        }

    # -- properties ------------------------------------------------------------------------

    @property
    def store(self) -> BackingStore:
        """The backing store."""
        return self._store

    @property
    def block_size(self) -> int:
        """Bytes per logical block."""
        return self._block_size

    @property
    def block_count(self) -> int:
        """Logical blocks on the disk."""
        return self._block_count

    @property
    def read_only(self) -> bool:
        """Whether writes are refused with DATA PROTECT."""
        return self._read_only

    @property
    def serial(self) -> str:
        """The unit serial number (VPD page 0x80)."""
        return self._serial

    @property
    def max_transfer_bytes(self) -> int:
        """The largest READ/WRITE accepted, in bytes."""
        return self._max_transfer_bytes

    # -- entry point ------------------------------------------------------------------------

    def execute(self, cdb: bytes, data: DataBuffer) -> ScsiResult:
        """Run the command in ``cdb`` (1..16 bytes) with ``data``, the request's buffer of
        exactly the SRB's data transfer length; never raises for any ``cdb``. A data-in
        buffer must be writable (a host-side contract; ``TypeError`` otherwise)."""
        if not cdb:
            return check_condition(INVALID_FIELD_IN_CDB)
        entry = self._handlers.get(cdb[0])
        if entry is None:
            return check_condition(INVALID_COMMAND_OPERATION_CODE)
        length, handler = entry
        if len(cdb) < length or cdb[length - 1] & 0x04:  # short, or NACA set
            return check_condition(INVALID_FIELD_IN_CDB)
        try:
            return handler(cdb, data)
        except _Check as check:
            return check_condition(check.sense)

    # -- media access -----------------------------------------------------------------------

    def _check_range(self, lba: int, blocks: int) -> None:
        if lba > self._block_count or blocks > self._block_count - lba:
            raise _Check(LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE)

    def _read_write(self, cdb: bytes, data: DataBuffer) -> ScsiResult:
        opcode = cdb[0]
        if opcode < 0x80:
            _, flags, lba, _, blocks = _RW10.unpack_from(cdb)
        else:
            _, flags, lba, blocks = _RW16.unpack_from(cdb)
        if flags & 0xE0:  # RDPROTECT/WRPROTECT: no protection information here
            raise _Check(INVALID_FIELD_IN_CDB)
        length = blocks << self._block_shift
        if length > self._max_transfer_bytes:
            raise _Check(INVALID_FIELD_IN_CDB)
        write = opcode in _WRITES
        if write and self._read_only:
            raise _Check(WRITE_PROTECTED)
        self._check_range(lba, blocks)
        if length > len(data):
            return _OVERRUN
        if length == 0:
            return _GOOD_EMPTY
        views = data.head(length).views
        offset = lba << self._block_shift
        try:
            if write:
                self._store.write(offset, views)
                if flags & 0x08:  # FUA
                    self._store.flush()
            else:
                self._store.readinto(offset, views)
        except BackingStoreRangeError:
            raise _Check(LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE) from None
        except PermissionError:
            raise _Check(WRITE_PROTECTED) from None
        except OSError as error:
            raise _Check(_media_error(error, write)) from None
        return _good(length)

    def _synchronize_cache(self, cdb: bytes, data: DataBuffer) -> ScsiResult:
        if cdb[0] == ScsiOp.SYNCHRONIZE_CACHE_10:
            _, _, lba, _, blocks = _RW10.unpack_from(cdb)
        else:
            _, _, lba, blocks = _RW16.unpack_from(cdb)
        self._check_range(lba, blocks)
        try:
            self._store.flush()
        except OSError as error:
            raise _Check(_media_error(error, True)) from None
        return _GOOD_EMPTY

    def _unmap(self, cdb: bytes, data: DataBuffer) -> ScsiResult:
        if cdb[1] & 0x01:  # ANCHOR: anchored LBAs are not supported
            raise _Check(INVALID_FIELD_IN_CDB)
        list_length = _BE16.unpack_from(cdb, 7)[0]
        if self._read_only:
            raise _Check(WRITE_PROTECTED)
        if list_length == 0:
            return _GOOD_EMPTY
        if list_length < 8:
            raise _Check(PARAMETER_LIST_LENGTH_ERROR)
        if list_length > len(data):
            return _OVERRUN
        parameters = data.gather(list_length)
        _, descriptor_length, _ = _UNMAP_HEADER.unpack_from(parameters)
        count = min(descriptor_length, list_length - 8) // 16  # a partial descriptor is ignored
        if count > MAX_UNMAP_DESCRIPTORS:
            raise _Check(INVALID_FIELD_IN_PARAMETER_LIST)
        extents = [_UNMAP_DESCRIPTOR.unpack_from(parameters, 8 + 16 * i) for i in range(count)]
        for lba, blocks in extents:  # every descriptor is checked before anything is unmapped
            self._check_range(lba, blocks)
        try:
            for lba, blocks in extents:
                if blocks:
                    self._store.unmap(lba << self._block_shift, blocks << self._block_shift)
        except OSError as error:
            raise _Check(_media_error(error, True)) from None
        return _good(list_length)

    # -- status and identification ----------------------------------------------------------

    def _test_unit_ready(self, cdb: bytes, data: DataBuffer) -> ScsiResult:
        return _GOOD_EMPTY

    def _request_sense(self, cdb: bytes, data: DataBuffer) -> ScsiResult:
        # Sense is delivered with each failing command (autosense), so none is pending; a
        # DESC=1 request still gets fixed format, as SPC-4 allows a device that lacks it.
        return _transfer(data, NO_SENSE.pack(), cdb[4])

    def _report_luns(self, cdb: bytes, data: DataBuffer) -> ScsiResult:
        return report_luns(cdb, (0,), data)

    def _inquiry(self, cdb: bytes, data: DataBuffer) -> ScsiResult:
        evpd, page = cdb[1] & 0x01, cdb[2]
        allocation_length = _BE16.unpack_from(cdb, 3)[0]
        if cdb[1] & 0xFE or (not evpd and page):
            raise _Check(INVALID_FIELD_IN_CDB)
        if not evpd:
            return _transfer(data, self.standard_inquiry(), allocation_length)
        payload = self._vpd_page(page)
        if payload is None:
            raise _Check(INVALID_FIELD_IN_CDB)
        return _transfer(data, payload, allocation_length)

    def standard_inquiry(self, peripheral: int = _DEVICE_TYPE_DISK) -> bytes:
        """Standard INQUIRY data, 36 bytes (SPC-4 §6.4.2): SPC-4, HiSup, format 2, CmdQue."""
        return (
            bytes((peripheral, 0x00, 0x06, 0x12, 31, 0x00, 0x00, 0x02))
            + _ascii(self._vendor, 8)
            + _ascii(self._product, 16)
            + _ascii(self._revision, 4)
        )

    def _vpd_page(self, page: int) -> bytes | None:
        if page == 0x00:
            body = bytes(_VPD_PAGES)
        elif page == 0x80:
            body = self._serial.encode("ascii", "replace")
        elif page == 0x83:
            naa = bytes((0x60 | (self._disk_id.bytes[0] & 0x0F),)) + self._disk_id.bytes[1:]
            t10 = _ascii(self._vendor, 8) + self._serial.encode("ascii", "replace")
            body = bytes((0x01, 0x03, 0x00, len(naa))) + naa + bytes((0x02, 0x01, 0x00, len(t10)))
            body += t10
        elif page == 0xB0:
            blocks = self._max_transfer_bytes >> self._block_shift
            granularity = self._physical_block_size >> self._block_shift
            limits = bytearray(0x3C)
            limits[2:4] = _BE16.pack(granularity)  # OPTIMAL TRANSFER LENGTH GRANULARITY
            limits[4:8] = _BE32.pack(blocks)  # MAXIMUM TRANSFER LENGTH
            limits[8:12] = _BE32.pack(blocks)  # OPTIMAL TRANSFER LENGTH
            limits[16:20] = _BE32.pack(_MAX_UNMAP_LBA_COUNT)
            limits[20:24] = _BE32.pack(MAX_UNMAP_DESCRIPTORS)
            limits[24:28] = _BE32.pack(granularity)  # OPTIMAL UNMAP GRANULARITY
            body = bytes(limits)
        elif page == 0xB2:
            body = bytes((0x00, 0x84, 0x02, 0x00))  # LBPU, LBPRZ; provisioning type: thin
        else:
            return None
        return bytes((_DEVICE_TYPE_DISK, page)) + _BE16.pack(len(body)) + body

    def _read_capacity_10(self, cdb: bytes, data: DataBuffer) -> ScsiResult:
        if not cdb[8] & 0x01 and _BE32.unpack_from(cdb, 2)[0]:  # PMI = 0 needs LBA = 0
            raise _Check(INVALID_FIELD_IN_CDB)
        last = min(self._block_count - 1, 0xFFFF_FFFF) if self._block_count else 0
        return _transfer(data, _BE32.pack(last) + _BE32.pack(self._block_size), 8)

    def _service_action_in(self, cdb: bytes, data: DataBuffer) -> ScsiResult:
        if cdb[1] & 0x1F != 0x10:  # only READ CAPACITY (16)
            raise _Check(INVALID_FIELD_IN_CDB)
        if not cdb[14] & 0x01 and _BE64.unpack_from(cdb, 2)[0]:
            raise _Check(INVALID_FIELD_IN_CDB)
        exponent = (self._physical_block_size // self._block_size).bit_length() - 1
        payload = (
            _BE64.pack(max(self._block_count - 1, 0))
            + _BE32.pack(self._block_size)
            + bytes((0x00, exponent, 0xC0, 0x00))  # LBPME | LBPRZ, lowest aligned LBA 0
            + bytes(16)
        )
        return _transfer(data, payload, _BE32.unpack_from(cdb, 10)[0])

    def _mode_sense(self, cdb: bytes, data: DataBuffer) -> ScsiResult:
        six = cdb[0] == ScsiOp.MODE_SENSE_6
        dbd, llbaa = cdb[1] & 0x08, (not six) and cdb[1] & 0x10
        control, page, subpage = cdb[2] >> 6, cdb[2] & 0x3F, cdb[3]
        allocation_length = cdb[4] if six else _BE16.unpack_from(cdb, 7)[0]
        if control == 3:
            raise _Check(SAVING_PARAMETERS_NOT_SUPPORTED)
        if not (subpage == 0 or (page == 0x3F and subpage == 0xFF)):
            raise _Check(INVALID_FIELD_IN_CDB)
        pages = self._mode_pages(changeable=control == 1)
        if page == 0x3F:
            body = b"".join(pages.values())
        elif page in pages:
            body = pages[page]
        else:
            raise _Check(INVALID_FIELD_IN_CDB)
        if dbd:
            descriptor = b""
        elif llbaa:
            descriptor = _BE64.pack(self._block_count) + bytes(4) + _BE32.pack(self._block_size)
        else:
            descriptor = (
                _BE32.pack(min(self._block_count, 0xFFFF_FFFF))
                + b"\0"
                + _BE32.pack(self._block_size)[1:]
            )
        device_specific = (0x80 if self._read_only else 0x00) | 0x10  # WP | DPOFUA
        if six:
            length = 4 + len(descriptor) + len(body)
            header = bytes((min(length - 1, 0xFF), 0x00, device_specific, len(descriptor)))
        else:
            length = 8 + len(descriptor) + len(body)
            header = (
                _BE16.pack(length - 2)
                + bytes((0x00, device_specific, 0x01 if llbaa and descriptor else 0x00, 0x00))
                + _BE16.pack(len(descriptor))
            )
        return _transfer(data, header + descriptor + body, allocation_length)

    def _mode_pages(self, *, changeable: bool) -> dict[int, bytes]:
        """Caching (0x08: WCE=1) and Control (0x0A: unrestricted reordering) pages; for
        CHANGEABLE values every bit is 0 (nothing can be changed)."""
        caching = bytearray(20)
        control = bytearray(12)
        if not changeable:
            caching[2] = 0x04  # WCE
            control[3] = 0x10  # QUEUE ALGORITHM MODIFIER = 1
        caching[0:2] = (0x08, 0x12)
        control[0:2] = (0x0A, 0x0A)
        return {0x08: bytes(caching), 0x0A: bytes(control)}


def _media_error(error: OSError, write: bool) -> SenseData:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return SPACE_ALLOCATION_FAILED_WRITE_PROTECT
    if isinstance(error, PermissionError) or error.errno == errno.EROFS:
        return WRITE_PROTECTED
    return WRITE_ERROR if write else UNRECOVERED_READ_ERROR
