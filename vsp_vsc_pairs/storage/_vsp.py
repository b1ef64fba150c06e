"""storvsp as a VMBus channel driver: one raw-image SCSI disk per device (§6.1, issue #8).

:class:`StorVsp` opens its image (``FileBackingStore``) when the device is offered, runs the
sans-IO ``StorvspProtocol`` over the channel and answers every guest packet with a
``VM_PKT_COMP`` carrying the request's transaction id (§6.1 sequence step 2). Several disks in a
VM are several devices, each with its own channel, protocol and file; a channel has any number of
SRBs in flight (the guest's queue depth, bounded by the host's ``queue_depth``, below).

Data path (§6.1 step 4): an EXECUTE_SRB that moves data arrives as a GPA-direct packet (type 9)
whose ranges name guest pages. Each run of contiguous PFNs becomes one ``memoryview`` of guest
RAM through ``context.guest_view`` (which refuses anything outside the guest's RAM), and those
views go to ``os.preadv``/``os.pwritev``: the bytes move between the image file and guest memory
with no copy in between. Once the channel is READY at WIN8 or later, a plain READ/WRITE (10)
over one range of contiguous pages takes :class:`SrbFastPath` (``_fastpath.pyx``): checked in
place in the ring, one ``pread``/``pwrite``, the protocol's exact 64-byte answer; everything
else, and any of those it declines, takes ``StorvspProtocol``.

The guest is untrusted. What it can do wrong and what follows:

* a PFN outside its RAM, a range that does not cover the SRB's ``data_transfer_length``, a
  malformed or unknown vstor packet, a packet type other than in-band or GPA-direct: the channel
  is closed with the reason (``channel.fail``), as OpenVMM's storvsp does on a protocol error;
* a bad CDB, a CDB length of 0 or > 16, an LBA range past the end of the disk (including
  LBA + count overflowing 64 bits), a write to a read-only disk: the SRB completes with
  CHECK CONDITION and exact sense data, nothing is read or written, the channel stays open
  (``ScsiDisk`` checks every range before the system call);
* more than ``queue_depth`` completions the guest has not made room for (they wait in the
  channel's backlog because its inbound ring is full): each further SRB is not executed and
  completes at once with SRB status BUSY and SCSI status TASK SET FULL (SAM-5 5.3), the
  target's "queue full" answer; the guest retries once it has read its completions. A guest
  that reads nothing until even the channel's backlog limit is reached has its channel closed.

Configuration (:data:`STORAGE_CONFIG`, the pair's schema): ``path`` (the image),
``size_mb`` (used only when the image is created), ``read_only``, ``queue_depth``,
``max_transfer_bytes`` (reported by QUERY_PROPERTIES and enforced per SRB) and ``block_size``.
Where the image lives is decided by :func:`resolve_image_path`.
"""

from __future__ import annotations

import atexit
import shutil
import struct
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Final

from winhv.drivers.vmbus import ChannelError
from winhv.drivers.vmbus.device import OfferSpec, Vsp
from winhv.drivers.vmbus.ring import PacketType
from winhv.plugins.api import ConfigField, validate_config

from ._backing import FileBackingStore
from ._fastpath import SrbFastPath
from ._protocol import (
    _REQUEST,
    DEFAULT_MAX_TRANSFER_BYTES,
    PACKET_HEADER_SIZE,
    SCSI_INTERFACE_ID,
    SCSI_REQUEST_SIZE_V1,
    SCSI_REQUEST_SIZE_V2,
    NtStatus,
    Operation,
    SrbStatus,
    VstorProtocolError,
    VstorVersion,
    build_packet,
)
from ._scsi import ScsiDisk
from ._sense import ScsiStatus
from ._vsp_protocol import StorvspProtocol, VspState

__all__ = [
    "OFFER_PROPERTIES_SIZE",
    "STORAGE_CONFIG",
    "StorVsp",
    "resolve_image_path",
    "run_directory",
]

#: Size of the storage offer's user-defined ``OfferProperties`` (OpenVMM, §6.1).
OFFER_PROPERTIES_SIZE: Final = 24
# reserved u16, path_id u8, target_id u8, reserved u32, flags u32 (0x2 = IDE), reserved u32[3]
_OFFER_PROPERTIES = struct.Struct("<HBBII12x")
_PAGE_SHIFT = 12
_PAGE = 1 << _PAGE_SHIFT
_GPA_DIRECT = int(PacketType.DATA_USING_GPA_DIRECT)
_INBAND = int(PacketType.DATA_INBAND)

#: The ``storage`` pair's configuration schema (both halves; the guest reads none of it).
STORAGE_CONFIG: Final[tuple[ConfigField, ...]] = (
    ConfigField("path", "path", None,
                "the raw image; created at size_mb if missing, never truncated if present. "
                "Relative paths in a driver-set file are taken from the file's folder; with no "
                "folder (the built-in default set, a config given in code) they are placed in "
                "this run's temporary directory, as is '<vm>-<device>.img' when path is unset"),
    ConfigField("size_mb", "int", 64, "size of a newly created image, in MiB",
                minimum=1, maximum=1 << 22),
    ConfigField("read_only", "bool", False,
                "open the image read-only: writes and UNMAP fail with DATA PROTECT"),
    ConfigField("queue_depth", "int", 64,
                "requests the guest keeps in flight (fewer if its ring holds fewer), and "
                "completions the host holds for a guest that does not read them before it "
                "answers further SRBs with TASK SET FULL", minimum=1, maximum=2048),
    ConfigField("max_transfer_bytes", "int", DEFAULT_MAX_TRANSFER_BYTES,
                "largest single transfer (QUERY_PROPERTIES; a multiple of 4096)",
                minimum=4096, maximum=64 << 20),
    ConfigField("block_size", "int", 512, "logical block size in bytes", choices=(512, 4096)),
)

_run_dir: Path | None = None


def run_directory() -> Path:
    """This process's temporary directory for images without a driver-set folder.

    Created on first use (``winhv-storage-*`` under the system temp dir) and deleted, with
    the images in it, when the interpreter exits: the built-in default driver set boots a
    fresh, empty disk on every run and leaves nothing behind.
    """
    global _run_dir
    if _run_dir is None or not _run_dir.is_dir():
        _run_dir = Path(tempfile.mkdtemp(prefix="winhv-storage-"))
        atexit.register(shutil.rmtree, str(_run_dir), True)
    return _run_dir


def resolve_image_path(path: str | Path | None, vm_name: str, device_name: str) -> Path:
    """Where a device's image lives.

    An absolute ``path`` is used as it is (a driver-set file's loader has already made its
    relative paths absolute, from the file's folder: docs/driver-sets.md). A relative one has
    no folder to be relative to -- it came from the built-in default set or from code -- and is
    placed under :func:`run_directory`; so is ``<vm>-<device>.img`` when ``path`` is ``None``.
    """
    if path is None:
        return run_directory() / f"{vm_name}-{device_name}.img"
    path = Path(path)
    return path if path.is_absolute() else run_directory() / path


def _checked(config: Mapping[str, Any] | None) -> dict[str, Any]:
    given = {key: value for key, value in (config or {}).items() if value is not None}
    checked: dict[str, Any] = dict(validate_config(STORAGE_CONFIG, given,
                                                   path="storage.config"))
    if checked["max_transfer_bytes"] % _PAGE:
        raise ValueError(f"storage.config.max_transfer_bytes: found "
                         f"{checked['max_transfer_bytes']}, expected a multiple of 4096")
    return checked


def _task_set_full(payload: Any) -> bytes:
    """The COMPLETE_IO of an EXECUTE_SRB that the host did not run: SRB status BUSY, SCSI
    status TASK SET FULL, nothing transferred, addressing echoed."""
    size = min(len(payload) - PACKET_HEADER_SIZE, SCSI_REQUEST_SIZE_V2)
    body = bytes(payload[PACKET_HEADER_SIZE:PACKET_HEADER_SIZE + size])
    fields = list(_REQUEST.unpack(body.ljust(SCSI_REQUEST_SIZE_V2, b"\0")))
    fields[1], fields[2], fields[8], fields[11] = (int(SrbStatus.BUSY),
                                                   int(ScsiStatus.TASK_SET_FULL), 0, 0)
    fields[12] = bytes(20)
    return build_packet(Operation.COMPLETE_IO, NtStatus.DEVICE_BUSY,
                        _REQUEST.pack(*fields)[:size], size)


class StorVsp(Vsp):
    """Root side of the ``storage`` pair: one SCSI disk (LUN 0 of target 0 on path 0) backed
    by a raw image, over one channel.

    ``StorVsp(config)`` checks ``config`` against :data:`STORAGE_CONFIG`; the image is opened
    (or created) in :meth:`offer`, when the VM and device names are known, and closed by
    :meth:`stop`. ``failure`` holds why this driver last closed its channel (``None`` if it
    never did); ``disk``/``protocol`` are the sans-IO core, for inspection.
    """

    interface_id: ClassVar[uuid.UUID] = uuid.UUID(SCSI_INTERFACE_ID)
    config_schema: ClassVar[tuple[ConfigField, ...]] = STORAGE_CONFIG

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(_checked(config))
        self.image_path: Path | None = None
        self.store: FileBackingStore | None = None
        self.disk: ScsiDisk | None = None
        self.protocol: StorvspProtocol | None = None
        self.channel: Any = None
        self.failure: str | None = None
        #: SRBs answered TASK SET FULL because the guest was not reading its completions.
        self.busy_answers = 0
        self._queue_depth = int(self.config["queue_depth"])
        self._guest_view: Any = None
        #: The compiled READ/WRITE (10) path, once the channel is READY at WIN8 or later.
        self.fast_path: SrbFastPath | None = None
        self._fd = -1
        self._block_shift = 9
        self._block_count = 0
        self._max_transfer = 0
        self._writable = False

    def __repr__(self) -> str:
        where = self.context.vm_name if self.context is not None else "no VM"
        return f"<StorVsp {where} {self.image_path}>"

    # -- lifecycle -----------------------------------------------------------------------------

    def offer(self) -> OfferSpec:
        """Open (or create) the image, build the disk and protocol, and describe the offer:
        OpenVMM's 24-byte ``OfferProperties`` (path 0, target 0, not IDE)."""
        context = self.context
        vm = context.vm_name if context is not None else "vm"
        name = context.device_name if context is not None else "storage"
        config = self.config
        self.image_path = resolve_image_path(config["path"], vm, name)
        self.image_path.parent.mkdir(parents=True, exist_ok=True)
        self.store = FileBackingStore(self.image_path, config["size_mb"], config["read_only"])
        limit = int(config["max_transfer_bytes"])
        self.disk = ScsiDisk(self.store, block_size=config["block_size"],
                             max_transfer_bytes=limit)
        self.protocol = StorvspProtocol(self.disk, max_transfer_bytes=limit)
        self._fd = self.store.fileno()
        self._block_shift = self.disk.block_size.bit_length() - 1
        self._block_count = self.disk.block_count
        self._max_transfer = limit
        self._writable = not self.store.read_only
        self._guest_view = context.guest_view if context is not None else None
        return OfferSpec(user_defined=_OFFER_PROPERTIES.pack(0, 0, 0, 0, 0))

    def on_open(self, channel: Any) -> None:
        if self.protocol is None:
            raise RuntimeError("StorVsp: channel opened before offer()")
        self.protocol.reset()
        self.fast_path = None
        self.channel = channel
        self._guest_view = getattr(channel, "guest_view", None) or self._guest_view

    def on_close(self, channel: Any) -> None:
        if channel is self.channel:
            self.channel = None
            self.fast_path = None
            if self.protocol is not None:
                self.protocol.reset()

    def stop(self) -> None:
        """Close the image (idempotent)."""
        if self.store is not None:
            self.store.close()

    # -- packets -------------------------------------------------------------------------------

    def on_packet(self, channel: Any, packet: Any) -> None:
        """Run one guest packet and send its completion (same transaction id)."""
        fast = self.fast_path
        try:
            if fast is not None and fast.serve(channel, packet):
                return
            protocol = self.protocol
            assert protocol is not None
            ranges = packet.ranges
            if ranges is not None:
                views = self._views(ranges)
            elif packet.type == _INBAND:
                views = []
            else:
                self._fail(channel, f"packet type {int(packet.type)}: expected in-band (6) or "
                                    "GPA-direct (9)")
                return
            payload = packet.payload
            if channel.backlog >= self._queue_depth and len(payload) >= \
                    PACKET_HEADER_SIZE + SCSI_REQUEST_SIZE_V1 and payload[0] == 3:
                self.busy_answers += 1
                reply = _task_set_full(payload)
            else:
                reply = protocol.receive(payload, views)
                if fast is None and protocol.state is VspState.READY:
                    self._start_fast_path(channel)
        except VstorProtocolError as exc:
            self._fail(channel, f"vstor: {exc}")
            return
        except ValueError as exc:  # guest_view: a PFN outside the guest's RAM
            self._fail(channel, f"GPA range: {exc}")
            return
        except ChannelError as exc:  # the backlog limit: the guest reads nothing at all
            self._fail(channel, f"completions: {exc}")
            return
        try:
            channel.complete(packet.trans_id, reply)
        except ChannelError as exc:
            self._fail(channel, f"completions: {exc}")

    def _start_fast_path(self, channel: Any) -> None:
        """The channel is READY: at WIN8 or later (64-byte SRBs), plain READ/WRITE (10) go
        through ``SrbFastPath`` from now on (``_fastpath.pyx``)."""
        version = self.protocol.version if self.protocol is not None else None
        if version is None or version < VstorVersion.WIN8 or self._guest_view is None:
            return
        self.fast_path = SrbFastPath(self._fd, self._block_shift, self._block_count,
                                     self._max_transfer, self._writable, self._queue_depth,
                                     self._guest_view)

    def _views(self, ranges: Any) -> list[memoryview]:
        """One view of guest RAM per run of contiguous PFNs, in order (ValueError if any page
        lies outside the guest's RAM)."""
        view = self._guest_view
        out = []
        for count, offset, pfns in ranges:
            if len(pfns) == 1:
                out.append(view((pfns[0] << _PAGE_SHIFT) + offset, count))
                continue
            start = pfns[0]
            run = 1
            for pfn in pfns[1:]:
                if pfn == start + run:
                    run += 1
                    continue
                size = (run << _PAGE_SHIFT) - offset
                out.append(view((start << _PAGE_SHIFT) + offset, min(size, count)))
                count -= size
                offset = 0
                start, run = pfn, 1
            out.append(view((start << _PAGE_SHIFT) + offset, count))
        return out

    def _fail(self, channel: Any, reason: str) -> None:
        self.failure = reason
        channel.fail(reason)
