"""storvsc as a VMBus channel driver: the guest side of the ``storage`` pair (§6.1).

:class:`StorVsc` binds to the SCSI interface GUID, opens the channel with 128 KiB rings (Linux's
size, §6.1 step 1) and, in ``on_open``, runs the init sequence of ``StorvscProtocol``:
BEGIN_INITIALIZATION, QUERY_PROTOCOL_VERSION from the newest version down until the host
accepts one, QUERY_PROPERTIES, END_INITIALIZATION -- each an in-band packet with
COMPLETION_REQUESTED whose ``VM_PKT_COMP`` answer drives the next step. It then reads the
disk's capacity (READ CAPACITY (16)) and exposes the disk as :attr:`StorVsc.block_device`
(``BlockDevice``); ``on_ready`` callbacks run at that point.

Host-initiated ENUMERATE_BUS / REMOVE_DEVICE packets (§6.1 step 6) make the driver read the
capacity again. A host that breaks the protocol (an init step refused, a malformed answer)
closes the channel: :attr:`StorVsc.failure` says why and every request in flight fails with
``BlockDeviceError``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, ClassVar, Self

from winhv.drivers.vmbus.device import Vsc

from ._blockdev import BlockDevice, queue_depth_for_ring
from ._protocol import SCSI_INTERFACE_ID, VstorProtocolError, VstorVersion
from ._vsc_protocol import (
    CLIENT_VERSIONS,
    OutgoingPacket,
    SrbCompletion,
    StorvscProtocol,
    parse_read_capacity_16,
)

__all__ = ["StorVsc"]


class StorVsc(Vsc):
    """Guest side of the ``storage`` pair: one disk (LUN 0) per channel.

    Class attributes a subclass may change: ``versions`` (proposed newest first),
    ``queue_depth`` (the most requests this driver keeps on the channel; the ring may allow
    fewer, see ``queue_depth_for_ring``; a driver set's ``queue_depth`` sets it through
    :meth:`configured`) and ``ring_size``.
    """

    interface_ids: ClassVar[tuple[uuid.UUID, ...]] = (uuid.UUID(SCSI_INTERFACE_ID),)
    #: 128 KiB each way, control page included (Linux's storvsc_ringbuffer_size, §6.1).
    ring_size: ClassVar[int] = 128 * 1024
    versions: ClassVar[tuple[VstorVersion, ...]] = CLIENT_VERSIONS
    queue_depth: ClassVar[int] = 64

    @classmethod
    def configured(cls, config: Mapping[str, Any] | None) -> type[Self]:
        """A subclass bound to a device's configuration (the VM worker calls this: the bus
        builds a VSC from its device alone). The guest reads one key, ``queue_depth``."""
        depth = (config or {}).get("queue_depth")
        if depth is None:
            return cls
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"storage.config.queue_depth: found {depth!r}, expected an int >= 1")
        return type(cls.__name__, (cls,), {"queue_depth": depth, "__module__": cls.__module__,
                                           "__qualname__": cls.__qualname__})

    def __init__(self, device: Any) -> None:
        super().__init__(device)
        self.protocol = StorvscProtocol(versions=self.versions)
        self.channel: Any = None
        #: The disk, once initialization and READ CAPACITY are done.
        self.block_device: BlockDevice | None = None
        #: Why this driver closed its channel or stopped (``None`` while it works).
        self.failure: str | None = None
        #: ``callback(block_device)`` for each, when the disk becomes usable.
        self.on_ready: list[Callable[[BlockDevice], Any]] = []

    def __repr__(self) -> str:
        state = "ready" if self.block_device is not None else self.protocol.state.value
        return f"<StorVsc {state}>"

    @property
    def ready(self) -> bool:
        """Whether :attr:`block_device` is usable."""
        return self.block_device is not None and self.block_device.closed_reason is None

    # -- lifecycle -------------------------------------------------------------------------------

    def on_open(self, channel: Any) -> None:
        self.channel = channel
        self._send_init(self.protocol.start())

    def on_packet(self, channel: Any, packet: Any) -> None:
        """A host-initiated packet: ENUMERATE_BUS or REMOVE_DEVICE -> read the capacity again."""
        try:
            self.protocol.receive_notification(packet.payload)
        except VstorProtocolError as exc:
            self._fail(f"storvsc: {exc}")
            return
        if self.block_device is not None and self.block_device.closed_reason is None:
            self.block_device.execute_async(self.protocol.read_capacity, (), {},
                                            self._capacity_again)

    def remove(self) -> None:
        """The device is going away: fail what is in flight, give the buffers back."""
        if self.block_device is not None:
            self.block_device.close(self.failure or "the device was removed")
        self.channel = None

    # -- initialization --------------------------------------------------------------------------

    def _send_init(self, outgoing: OutgoingPacket) -> None:
        self.channel.send_request(outgoing.payload, partial(self._init_answer, outgoing.trans_id))

    def _init_answer(self, trans_id: int, packet: Any) -> None:
        try:
            step = self.protocol.receive(trans_id, packet.payload)
        except VstorProtocolError as exc:  # VstorInitError included
            self._fail(f"storvsc initialization: {exc}")
            return
        if isinstance(step, OutgoingPacket):
            self._send_init(step)
        elif step is None:
            self._read_capacity()
        else:  # an SRB completion during initialization
            self._fail("storvsc initialization: an SRB completion before READY")

    def _read_capacity(self) -> None:
        request = self.protocol.read_capacity()
        kernel = self.device.kernel
        gpa = kernel.alloc_pages(1)
        pfn = gpa >> 12
        self.channel.send_gpa_direct(((request.data_length, 0, (pfn,)),), request.payload,
                                     partial(self._capacity_answer, request.trans_id, gpa))

    def _capacity_answer(self, trans_id: int, gpa: int, packet: Any) -> None:
        kernel = self.device.kernel
        try:
            completion = self.protocol.receive(trans_id, packet.payload)
            if not isinstance(completion, SrbCompletion):
                raise VstorProtocolError(1, "trans_id", trans_id, "READ CAPACITY's completion")
            completion.check()
            capacity = parse_read_capacity_16(bytes(kernel.view(gpa, completion.transferred)))
        except Exception as exc:  # a refused or malformed READ CAPACITY: this disk is unusable
            self._fail(f"storvsc READ CAPACITY (16): {type(exc).__name__}: {exc}")
            return
        finally:
            kernel.free_pages(gpa, 1)
        properties = self.protocol.properties
        assert properties is not None
        limit = min(properties.max_transfer_bytes, 1 << 30)
        depth = min(self.queue_depth, queue_depth_for_ring(self.ring_size, limit))
        clock = getattr(kernel, "clock", None)
        self.block_device = BlockDevice(
            channel=self.channel, kernel=kernel, protocol=self.protocol,
            block_size=capacity.block_size, block_count=capacity.block_count,
            queue_depth=depth, max_transfer_bytes=limit,
            wait=getattr(clock, "run_until_idle", None))
        for callback in list(self.on_ready):
            callback(self.block_device)

    def _capacity_again(self, view: memoryview | None, error: BaseException | None) -> None:
        device = self.block_device
        if device is None or error is not None or view is None:
            return
        capacity = parse_read_capacity_16(bytes(view))
        device.block_count = capacity.block_count

    def _fail(self, reason: str) -> None:
        self.failure = reason
        if self.block_device is not None:
            self.block_device.fail(reason)
        elif self.channel is not None:
            self.channel.fail(reason)

