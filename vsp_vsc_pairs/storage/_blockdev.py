"""The guest's block device: what a workload inside the VM reads and writes through storvsc.

A :class:`BlockDevice` is made by ``StorVsc`` once the vstor channel is initialized and the
disk's capacity is known. Every request is one EXECUTE_SRB (§6.1 step 4): its data lives in
guest pages that the device allocates from the guest kernel and reuses (one buffer per queue
slot, grown on demand, never freed while the device lives), named by a GPA-direct range; the
host reads or writes those pages in place. Requests complete through the channel, in the
guest's interrupt handler.

* ``read_async(lba, count, callback)``, ``write_async(lba, data, callback)``,
  ``flush_async(callback)``: ``callback(result, error)`` runs exactly once, with ``error``
  ``None`` on success. A read's ``result`` is a ``memoryview`` of the guest buffer, valid only
  during the callback (copy what you keep); a write's and a flush's is ``None``. ``error`` is a
  ``ScsiCommandError`` (sense data decoded) or a :class:`BlockDeviceError` (the channel went
  away). One request moves at most ``max_transfer_bytes`` (the host's QUERY_PROPERTIES).
* ``read``/``write``/``flush``: the same, waiting for the answer by running the machine
  (``wait``); they split transfers larger than ``max_transfer_bytes`` and raise the error.
* At most ``queue_depth`` requests are on the channel at once; more wait, in order, in the
  device and start as slots free up.

Queue depth: the vstor properties carry none, so the guest sizes it as Linux's storvsc does,
from its ring (``(ring_size - 4 KiB) / the largest request packet`` for the negotiated
``max_transfer_bytes``, per channel), capped by the driver's own ``queue_depth``.

Hot path: READ and WRITE are compiled (``BlockCore`` and ``Slot`` in ``_fastpath.pyx``, this
class's base): the checks, the slot, the SRB written into a per-device 64-byte template (the
CDB's fields and the length), the send, and the completion's clean-success check on the packet
bytes in the ring. Anything that is not a clean success takes the general path here, which
decodes sense data; every error message is raised from here. A test asserts that the
templates produce exactly the packets ``StorvscProtocol.read``/``write`` build.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from ._fastpath import BlockCore, Slot
from ._protocol import (
    _REQUEST,
    AUTOSENSE_VALID,
    PACKET_HEADER_SIZE,
    REQUEST_COMPLETION_FLAG,
    SCSI_REQUEST_SIZE_V1,
    SCSI_REQUEST_SIZE_V2,
    SENSE_AREA_SIZE,
    DataDirection,
    Operation,
    SenderRole,
    VstorProtocolError,
    VstorVersion,
    parse_packet,
)
from ._sense import ScsiStatus, parse_sense
from ._vsc_protocol import ScsiCommandError, SrbCompletion, SrbRequest, StorvscProtocol

__all__ = ["BlockCallback", "BlockDevice", "BlockDeviceError", "queue_depth_for_ring"]

#: ``callback(result, error)``: see the module docstring.
BlockCallback = Callable[[memoryview | None, BaseException | None], Any]

_PAGE = 4096
_HEADER = struct.Struct("<III")
_PREFIX = struct.Struct("<HBBBBBBBBBB")  # length .. properties (request bytes 0..11)
_TAIL_V2 = struct.Struct("<HBBIII").pack(0, 0xFF, 0x20, 0, 60, 0)  # untagged, SIMPLE, 60 s
# (operation, status, srb_status, scsi_status) of a clean COMPLETE_IO.
_MIN_REPLY = PACKET_HEADER_SIZE + SCSI_REQUEST_SIZE_V1
#: Bytes of a GPA-direct packet besides its PFNs: descriptor 16, range count and reserved 8,
#: range header 8, the 64-byte vstor packet, trailer 8 (§4.3).
_PACKET_OVERHEAD: Final = 16 + 8 + 8 + 64 + 8


class BlockDeviceError(RuntimeError):
    """The device cannot complete the request: its channel closed (the reason says why), or
    the host never answered."""


def queue_depth_for_ring(ring_size: int, max_transfer_bytes: int) -> int:
    """Requests of ``max_transfer_bytes`` that fit at once in a ring of ``ring_size`` bytes
    (control page included), at least 1 -- Linux's ``max_outstanding_req_per_channel``."""
    pfns = (max_transfer_bytes + 2 * _PAGE - 1) // _PAGE  # an unaligned buffer spans one more
    return max(1, (ring_size - _PAGE) // (_PACKET_OVERHEAD + 8 * pfns))


class BlockDevice(BlockCore):
    """A SCSI disk as the guest sees it (see the module docstring).

    Made by ``StorVsc``; ``channel`` is its open channel, ``kernel`` the guest kernel (pages),
    ``protocol`` the READY ``StorvscProtocol``; ``block_size``/``block_count`` come from
    READ CAPACITY (16); ``wait()`` runs the machine until idle (the sync forms use it).
    """

    def __init__(self, *, channel: Any, kernel: Any, protocol: StorvscProtocol,
                 block_size: int, block_count: int, queue_depth: int,
                 max_transfer_bytes: int, wait: Callable[[], Any] | None = None,
                 lun: int = 0) -> None:
        version = protocol.version
        if version is None:
            raise ValueError("protocol: found one not initialized, expected a READY storvsc")
        if queue_depth < 1:
            raise ValueError(f"queue_depth: found {queue_depth}, expected >= 1")
        self.channel = channel
        self.kernel = kernel
        self.protocol = protocol
        self.block_size = block_size
        self.block_count = block_count
        self.queue_depth = queue_depth
        self.max_transfer_bytes = max_transfer_bytes - max_transfer_bytes % block_size
        self.wait = wait
        self.lun = lun
        #: Why the device stopped working (``None`` while it works).
        self.closed_reason: str | None = None
        self._slots = tuple(Slot(self) for _ in range(queue_depth))
        #: Free slots; the last one freed is taken first.
        self._free = list(self._slots)
        self._waiting: deque[tuple[Any, ...]] = deque()
        self._shift = block_size.bit_length() - 1
        self._templates(version)

    def __repr__(self) -> str:
        state = f"closed: {self.closed_reason}" if self.closed_reason else "open"
        return (f"<BlockDevice {self.block_count} x {self.block_size} B, queue depth "
                f"{self.queue_depth} ({state})>")

    def _templates(self, version: VstorVersion) -> None:
        """The SRB packets READ/WRITE (10) and (16) start from: everything but the CDB's
        fields and the transfer length, which ``BlockCore`` writes in (a test compares the
        result with ``StorvscProtocol.read``/``write``)."""
        size = version.request_size
        sense = version.sense_buffer_size
        header = _HEADER.pack(Operation.EXECUTE_SRB, REQUEST_COMPLETION_FLAG, 0)
        path = target = 0
        tail = _TAIL_V2 if size == SCSI_REQUEST_SIZE_V2 else b""
        made = []
        for cdb_length in (10, 16):
            for write in (False, True):
                direction = DataDirection.WRITE if write else DataDirection.READ
                made.append(header + _PREFIX.pack(size, 0, 0, 0, path, target, self.lun,
                                                  cdb_length, sense, direction, 0)
                            + bytes(4 + SENSE_AREA_SIZE) + tail)
        self._set_templates(*made)

    # -- properties ------------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Bytes on the disk."""
        return self.block_count * self.block_size

    @property
    def outstanding(self) -> int:
        """Requests on the channel now."""
        return self.queue_depth - len(self._free)

    @property
    def waiting(self) -> int:
        """Requests queued in the device for a free slot."""
        return len(self._waiting)

    # -- asynchronous API --------------------------------------------------------------------------

    def flush_async(self, callback: BlockCallback) -> None:
        """SYNCHRONIZE CACHE of the whole disk; ``callback(None, error)``."""
        self.execute_async(self.protocol.flush, (), {"lun": self.lun}, callback)

    def execute_async(self, build: Callable[..., SrbRequest], args: tuple[Any, ...],
                      kwargs: dict[str, Any], callback: BlockCallback) -> None:
        """Any ``StorvscProtocol`` builder (``inquiry``, ``read_capacity``, ``unmap``, ...)
        called as ``build(*args, **kwargs)`` when a slot is free; a data-in result is the view
        of the bytes the host transferred."""
        self._ensure_open()
        if self._free:
            self._start_general(self._free.pop(), build, args, kwargs, callback)
        else:
            self._waiting.append((build, args, kwargs, callback))

    # -- synchronous API ---------------------------------------------------------------------------

    def read(self, lba: int, count: int) -> bytes:
        """Read ``count`` blocks at ``lba`` and return them (split into transfers the host
        accepts). Raises ``ScsiCommandError`` or :class:`BlockDeviceError`."""
        self._check(lba, count, limit=False)
        step = self.max_transfer_bytes >> self._shift
        out = bytearray(count << self._shift)
        results: list[BaseException | None] = []

        def chunk(at: int) -> BlockCallback:
            def done(view: memoryview | None, error: BaseException | None) -> None:
                if view is not None:
                    out[at: at + view.nbytes] = view
                results.append(error)
            return done

        parts = 0
        for first in range(lba, lba + count, step):
            self.read_async(first, min(step, lba + count - first),
                            chunk((first - lba) << self._shift))
            parts += 1
        self._wait_for(results, parts)
        return bytes(out)

    def write(self, lba: int, data: Any) -> None:
        """Write ``data`` (whole blocks) at ``lba``, split into transfers the host accepts."""
        view = memoryview(data).cast("B")
        count, rest = divmod(view.nbytes, self.block_size)
        if rest:
            raise ValueError(f"data: found {view.nbytes} bytes, expected a multiple of the "
                             f"{self.block_size}-byte block")
        self._check(lba, count, limit=False)
        step = self.max_transfer_bytes
        results: list[BaseException | None] = []
        parts = 0
        for at in range(0, view.nbytes, step):
            self.write_async(lba + (at >> self._shift), view[at: at + step],
                             lambda _v, error: results.append(error))
            parts += 1
        self._wait_for(results, parts)

    def flush(self) -> None:
        """SYNCHRONIZE CACHE; returns once the host made the writes durable."""
        results: list[BaseException | None] = []
        self.flush_async(lambda _v, error: results.append(error))
        self._wait_for(results, 1)

    def execute(self, build: Callable[..., SrbRequest], *args: Any, **kwargs: Any) -> bytes:
        """A ``StorvscProtocol`` builder's command, synchronously; returns the data-in bytes."""
        results: list[BaseException | None] = []
        data: list[bytes] = []

        def done(view: memoryview | None, error: BaseException | None) -> None:
            if view is not None:
                data.append(bytes(view))
            results.append(error)

        self.execute_async(build, args, kwargs, done)
        self._wait_for(results, 1)
        return data[0] if data else b""

    def _wait_for(self, results: list[BaseException | None], count: int) -> None:
        while len(results) < count:
            if self.closed_reason is not None:
                raise BlockDeviceError(f"the disk's channel closed: {self.closed_reason}")
            if self.wait is None or not self.wait():
                raise BlockDeviceError(
                    f"{count - len(results)} request(s) never completed: the machine is idle")
        for error in results:
            if error is not None:
                raise error

    # -- submission --------------------------------------------------------------------------------

    def _ensure_open(self) -> None:
        if self.closed_reason is not None:
            raise BlockDeviceError(f"the disk's channel closed: {self.closed_reason}")

    def _check(self, lba: int, count: int, *, limit: bool = True) -> int:
        self._ensure_open()
        if count < 1 or lba < 0 or lba + count > self.block_count:
            raise ValueError(f"lba, count: found {lba}, {count}, expected 1 or more blocks "
                             f"within 0..{self.block_count}")
        nbytes = count << self._shift
        if limit and nbytes > self.max_transfer_bytes:
            raise ValueError(f"count: found {count} blocks ({nbytes} bytes), expected at most "
                             f"{self.max_transfer_bytes} bytes per request")
        return nbytes

    def _start_general(self, slot: Slot, build: Callable[..., SrbRequest],
                       args: tuple[Any, ...], kwargs: dict[str, Any],
                       callback: BlockCallback) -> None:
        try:
            request = build(*args, **kwargs)
        except BaseException:
            self._done(slot)
            raise
        slot.request = request
        slot.callback = callback
        slot.nbytes = request.data_length
        slot.reading = request.direction == DataDirection.READ
        slot.complete = slot._complete_general
        if request.data_length:
            slot.reserve(request.data_length)
            ranges = slot.range_for(request.data_length)
            if request.parameter_data:
                slot.view[: len(request.parameter_data)] = request.parameter_data
            self._send(slot, ranges, request.payload)
        else:
            self._send(slot, None, request.payload)

    def _send(self, slot: Slot, ranges: Any, payload: bytes) -> None:
        try:
            if ranges is None:
                self.channel.send_request(payload, slot.complete)
            else:
                self.channel.send_gpa_direct(ranges, payload, slot.complete)
        except Exception as exc:
            self._send_failed(slot, exc)

    def _send_failed(self, slot: Slot, exc: Exception) -> None:
        """A send raised: free the slot, close the device and say why (``BlockCore`` too)."""
        self._done(slot)
        self.close(f"send failed: {exc}")
        raise BlockDeviceError(f"the disk's channel closed: {self.closed_reason}") from exc

    # -- completions -------------------------------------------------------------------------------

    def _complete_slow(self, slot: Slot, payload: Any) -> None:
        """A READ/WRITE that did not end cleanly: decode it fully (sense data included)."""
        sent = slot.payload
        cdb = bytes(sent[28: 28 + sent[20]])  # cdb_length at request byte 8, the CDB at 16
        request = SrbRequest(0, sent, cdb, self.lun, slot.nbytes,
                             DataDirection.READ if slot.reading else DataDirection.WRITE)
        self._finish(slot, request, payload, general=False)

    def _complete_general(self, slot: Slot, payload: Any) -> None:
        request = slot.request
        assert request is not None
        self._finish(slot, request, payload, general=True)

    def _finish(self, slot: Slot, request: SrbRequest, payload: Any, *, general: bool) -> None:
        callback = slot.callback
        try:
            if general:  # the protocol built it: it checks and forgets the request
                result = self.protocol.receive(request.trans_id, payload)
                if not isinstance(result, SrbCompletion):
                    raise VstorProtocolError(Operation.COMPLETE_IO, "trans_id",
                                             request.trans_id, "an SRB's completion")
                completion = result
            else:
                completion = _decode(request, payload)
        except (VstorProtocolError, ValueError) as exc:
            self.fail(f"storvsc: {exc}")   # fails this request too, with the others
            return
        try:
            if completion.ok and (completion.transferred == request.data_length
                                  or request.direction == DataDirection.READ
                                  or not request.data_length):
                data = slot.view[: completion.transferred] if slot.reading else None
                callback(data, None)  # type: ignore[misc]
            elif completion.ok:
                callback(None, BlockDeviceError(  # type: ignore[misc]
                    f"the host wrote {completion.transferred} of {request.data_length} bytes"))
            else:
                callback(None, ScsiCommandError(completion))  # type: ignore[misc]
        finally:
            self._done(slot)

    # -- closing -----------------------------------------------------------------------------------

    def fail(self, reason: str) -> None:
        """The host broke the protocol: close the channel, then fail every request."""
        channel = self.channel
        self.close(reason)
        if channel is not None and not channel.closed:
            channel.fail(reason)

    def close(self, reason: str) -> None:
        """Stop: every request on the channel or waiting fails with :class:`BlockDeviceError`
        (once); the guest buffers go back to the kernel."""
        if self.closed_reason is not None:
            return
        self.closed_reason = reason
        error = BlockDeviceError(f"the disk's channel closed: {reason}")
        callbacks = [slot.callback for slot in self._slots if slot.callback is not None]
        callbacks += [item[-1] for item in self._waiting]
        self._waiting.clear()
        for slot in self._slots:
            slot.callback = None
            slot.release()
        for callback in callbacks:
            callback(None, error)


def _decode(request: SrbRequest, payload: Any) -> SrbCompletion:
    """The full decode of an SRB completion (StorvscProtocol's rules for what the host sends)."""
    packet = parse_packet(payload, sender=SenderRole.HOST)
    if packet.operation != Operation.COMPLETE_IO:
        raise VstorProtocolError(packet.operation, "operation", packet.operation,
                                 "COMPLETE_IO for an SRB")
    body = bytes(packet.body)
    if len(body) < SCSI_REQUEST_SIZE_V1:
        raise VstorProtocolError(Operation.COMPLETE_IO, "size",
                                 f"{PACKET_HEADER_SIZE + len(body)} bytes",
                                 f"at least {_MIN_REPLY} for an SRB completion")
    fields = _REQUEST.unpack(body[:SCSI_REQUEST_SIZE_V2].ljust(SCSI_REQUEST_SIZE_V2, b"\0"))
    srb_status, scsi_status = fields[1], fields[2]
    sense = None
    if srb_status & AUTOSENSE_VALID and scsi_status == ScsiStatus.CHECK_CONDITION:
        sense = parse_sense(fields[12][: min(fields[8], SENSE_AREA_SIZE)])
    transferred = fields[11]
    if transferred > request.data_length:
        raise VstorProtocolError(Operation.COMPLETE_IO, "data_transfer_length", transferred,
                                 f"at most the {request.data_length} bytes requested")
    return SrbCompletion(request, packet.status, srb_status, scsi_status, sense, transferred)
