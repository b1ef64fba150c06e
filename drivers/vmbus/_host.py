"""The root side of VMBus: one :class:`VmbusHost` per root, one :class:`VmbusServer` per VM.

The host owns the root's VMBus resources: the SINT its control messages arrive on, and the SIEF
flags its channels' guest->host signals set. Each server wires one guest to it through
hypercalls made by the root kernel (fact sheet §3.1, §3.5):

* guest -> host control messages: the guest's connections 1 and 4 (the multiclient id of 5.0+)
  go to two root message ports; the origination id in each SynIC message (the port id) tells
  which VM and which connection a message came on;
* host -> guest control messages: a guest message port on the SINT and VP the guest named in
  INITIATE_CONTACT, and a root connection to it;
* per open channel: a root event port (one flag) that the guest's connection ``0x2000 + relid``
  (the id in the offer) signals, and a guest event port on SINT 2 with flag ``relid`` that the
  root signals (dedicated interrupts, Win8+).

A server drives a sans-IO :class:`ServerProtocol`; VSPs see only :class:`Channel` objects.
Guest memory is reached the way Hyper-V's worker reaches it: the guest's RAM is a run of root
pages (VID mapped it), so guest page ``p`` is root page ``root_ram_page + p``.
"""

from __future__ import annotations

import functools
import itertools
import logging
import struct
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from winhv._status import HvStatus
from winhv._structs import HvPortType
from winhv.drivers.kernel import Kernel
from winhv.drivers.vmbus._channel import Channel
from winhv.drivers.vmbus._gpadl import Gpadl
from winhv.drivers.vmbus._messages import (
    MESSAGE_CONNECTION_ID,
    MESSAGE_CONNECTION_ID_MULTICLIENT,
    ChannelMessage,
)
from winhv.drivers.vmbus._ring import Ring
from winhv.drivers.vmbus._server_protocol import (
    ConnectionInfo,
    OfferParams,
    OpenRequest,
    ServerProtocol,
)
from winhv.drivers.vmbus._versions import VmbusVersion
from winhv.drivers.vmbus.device import DeviceContext, OfferSpec, Vsp

__all__ = ["HostDevice", "VmbusHost", "VmbusServer"]

_log = logging.getLogger("winhv.vmbus")

#: SIM message type of every VMBus control message (fact sheet §3.1).
VMBUS_MESSAGE_TYPE = 1
#: SINT of the VMBus control plane and of channel interrupts (§3.1).
VMBUS_SINT = 2
#: Root SINTs whose SIEF flags carry guest->host channel signals (2047 channels each).
ROOT_EVENT_SINTS = (2, 3, 4, 5, 6, 7)
#: Channel connection ids in an offer: 0x2000 + relid (OpenVMM's VTL0/SINT2 scheme, §3.1).
CHANNEL_CONNECTION_BASE = 0x2000
#: NTSTATUS answered to an OPENCHANNEL the host cannot honour (STATUS_UNSUCCESSFUL).
STATUS_UNSUCCESSFUL = 0xC0000001
#: Host->guest message retries on INSUFFICIENT_BUFFERS, as Linux does (§1.7).
POST_RETRIES = 100
POST_RETRY_NS = 10_000

_ORIGIN = struct.Struct("<Q")
_FAILED = (HvStatus.INSUFFICIENT_BUFFERS, HvStatus.INSUFFICIENT_MEMORY)


class VmbusHost:
    """The root's VMBus: SINT dispatch and resource ids shared by every VM's server."""

    def __init__(self, root: Kernel) -> None:
        self.root = root
        self._routes: dict[int, tuple[VmbusServer, int]] = {}   # root port id -> server, conn
        self._next_port = 0x100
        self._next_connection = 0x10000
        self._free_flags: list[tuple[int, int]] = []     # returned flags, reused first
        self._next_flag = 0                               # flags never handed out start here
        self.servers: dict[int, VmbusServer] = {}
        root.on_message(VMBUS_SINT, self._on_message)

    @staticmethod
    def synic_sints(vector: int) -> dict[int, int]:
        """The SINT -> vector map the root kernel must enable for VMBus."""
        return {sint: vector for sint in ROOT_EVENT_SINTS}

    def new_port_id(self) -> int:
        self._next_port += 1
        return self._next_port

    def new_connection_id(self) -> int:
        self._next_connection += 1
        return self._next_connection

    def take_flag(self) -> tuple[int, int]:
        """A free (root SINT, flag) pair for one channel's guest->host signal (flag 0 is
        never a channel, as on Hyper-V)."""
        if self._free_flags:
            return self._free_flags.pop()
        if self._next_flag >= len(ROOT_EVENT_SINTS) * 2047:
            raise RuntimeError("the root has no SIEF flag left for another channel "
                               f"({len(ROOT_EVENT_SINTS) * 2047} channels are open)")
        sint, flag = divmod(self._next_flag, 2047)
        self._next_flag += 1
        return ROOT_EVENT_SINTS[sint], flag + 1

    def give_flag(self, flag: tuple[int, int]) -> None:
        self._free_flags.append(flag)

    def route(self, port_id: int, server: VmbusServer, connection_id: int) -> None:
        self._routes[port_id] = (server, connection_id)

    def unroute(self, port_id: int) -> None:
        self._routes.pop(port_id, None)

    def _on_message(self, message: bytes) -> None:
        port_id = _ORIGIN.unpack_from(message, 8)[0] & 0xFF_FFFF
        route = self._routes.get(port_id)
        if route is None:
            _log.warning("root: VMBus message from unknown port %#x dropped", port_id)
            return
        server, connection_id = route
        size = message[4]
        server.receive(message[16:16 + min(size, 240)], connection_id)


@dataclass(eq=False)
class HostDevice:
    """One device instance a server offers: its VSP, offer and (when open) channel."""

    name: str
    vsp: Vsp
    interface_id: uuid.UUID
    instance_id: uuid.UUID
    offer: OfferSpec
    relid: int = 0
    channel: Channel | None = None
    errors: list[str] = field(default_factory=list)
    opens: int = 0


@dataclass(eq=False)
class _OpenChannel:
    device: HostDevice
    channel: Channel
    root_port: int
    root_flag: tuple[int, int]
    guest_port: int
    root_connection: int


class VmbusServer:
    """The root side of one VM's VMBus (``vmbusr``): offers channels, opens them for VSPs.

    ``guest_pages``/``root_ram_page`` describe the VM's RAM as VID mapped it.
    """

    def __init__(self, host: VmbusHost, partition_id: int, *, root_ram_page: int,
                 guest_pages: int, name: str = "", max_version: VmbusVersion | None = None,
                 on_error: Callable[[str], Any] | None = None) -> None:
        self.host = host
        self.root = host.root
        self.partition_id = partition_id
        self.name = name or f"vm {partition_id:#x}"
        self.root_ram_page = root_ram_page
        self.guest_pages = guest_pages
        self.on_error = on_error
        self.devices: dict[int, HostDevice] = {}
        self.errors: list[str] = []
        self.connection: ConnectionInfo | None = None
        self._open: dict[int, _OpenChannel] = {}
        self._gpadls: dict[tuple[int, int], Gpadl] = {}
        self._to_guest: int | None = None   # root connection id to the guest's message port
        self._guest_message_port = 1
        self._path: tuple[int, int] | None = None   # (SINT, VP) of the guest's message port
        self._outbox: deque[bytes] = deque()
        self._retries = 0
        self._retry_pending = False   # a retry timer is set: it, not send(), drains next
        self._ports: list[int] = []
        kwargs: dict[str, Any] = {}
        if max_version is not None:
            kwargs["max_version"] = max_version
        self.protocol = ServerProtocol(notifier=self, validate_pfns=self._validate_pfns,
                                       **kwargs)
        hv = self.root.hv
        for connection_id in (MESSAGE_CONNECTION_ID, MESSAGE_CONNECTION_ID_MULTICLIENT):
            port = host.new_port_id()
            self._check(hv.WinHvCreatePort(self.root.partition_id, port, HvPortType.MESSAGE,
                                           connection_partition_id=partition_id,
                                           target_sint=VMBUS_SINT, target_vp=0),
                        "create the root message port")
            self._check(hv.WinHvConnectPort(partition_id, connection_id,
                                            self.root.partition_id, port, HvPortType.MESSAGE),
                        f"connect guest connection {connection_id}")
            host.route(port, self, connection_id)
            self._ports.append(port)
        self._path_to_guest(VMBUS_SINT, 0)
        host.servers[partition_id] = self

    def __repr__(self) -> str:
        return f"<VmbusServer {self.name} devices={len(self.devices)} open={len(self._open)}>"

    def _check(self, status: Any, what: str) -> None:
        if status != HvStatus.SUCCESS:
            raise RuntimeError(f"{self.name}: could not {what}: {status}")

    def _error(self, text: str) -> None:
        message = f"{self.name}: {text}"
        _log.warning("%s", message)
        self.errors.append(message)
        if self.on_error is not None:
            self.on_error(message)

    # -- devices -------------------------------------------------------------------------------

    def add_device(self, name: str, vsp: Vsp, interface_id: uuid.UUID,
                   instance_id: uuid.UUID | None = None,
                   services: dict[str, Any] | None = None) -> HostDevice:
        """Offer a device; hot-added at once when the guest is already connected."""
        clock = self.root.clock
        vsp.context = DeviceContext(
            vm_name=self.name, device_name=name,
            now=(lambda: clock.now) if clock is not None else (lambda: 0),
            call_later=self.root.call_later, guest_view=self.guest_view,
            services=dict(services or {}))
        offer = vsp.offer()
        if not isinstance(offer, OfferSpec):
            raise TypeError(f"{name}: {type(vsp).__name__}.offer() returned {offer!r}, "
                            "expected an OfferSpec")
        instance = offer.instance_id or instance_id or uuid.uuid5(
            uuid.NAMESPACE_URL, f"winhv:{self.partition_id}:{name}")
        flags = 0x1 | (0x10 if offer.pipe_mode else 0)   # ENUMERATE_DEVICE_INTERFACE, pipe
        user = offer.user_defined
        if offer.pipe_mode:
            user = struct.pack("<I", 4) + user   # pipe_mode = MESSAGE (4) in user data (§3.3)
        device = HostDevice(name, vsp, interface_id, instance, offer)
        device.relid = self.protocol.offer(OfferParams(
            interface_id=interface_id, instance_id=instance, flags=flags,
            mmio_megabytes=offer.mmio_megabytes, user_defined=user[:120]))
        self.devices[device.relid] = device
        return device

    def remove_device(self, relid: int) -> None:
        """Rescind a device's offer (hot remove); the guest closes and releases it."""
        self.protocol.rescind(relid)

    def channel(self, relid: int) -> Channel | None:
        opened = self._open.get(relid)
        return opened.channel if opened else None

    # -- the guest's messages ------------------------------------------------------------------

    def receive(self, payload: bytes, connection_id: int) -> None:
        try:
            self.protocol.receive(payload, connection_id)
        except Exception as exc:  # the state machine must not raise; if it does, contain it
            _log.exception("%s: VMBus server failed on a guest message", self.name)
            self._error(f"internal error handling a guest message: {exc}")

    # -- ServerNotifier ------------------------------------------------------------------------

    def send(self, message: ChannelMessage) -> None:
        if self._to_guest is None:
            self._error(f"cannot send {type(message).__name__}: the guest is not connected")
            return
        self._outbox.append(message.pack())
        if not self._retry_pending:
            self._drain()
        # else: the port's buffers were full a moment ago; the message waits its turn behind
        # the head, which the one pending retry reposts. Posting it now would only fail again
        # (and each failure used to set one more retry timer).

    def _retry(self) -> None:
        self._retry_pending = False
        self._drain()

    def _drain(self) -> None:
        hv = self.root.hv
        while self._outbox and self._to_guest is not None:
            status = hv.WinHvPostMessage(self._to_guest, VMBUS_MESSAGE_TYPE, self._outbox[0])
            if status in _FAILED and self._retries < POST_RETRIES:
                self._retries += 1
                self._retry_pending = True
                self.root.call_later(POST_RETRY_NS << min(self._retries, 10), self._retry)
                return
            if status != HvStatus.SUCCESS:
                self._error(f"posting a control message failed: {status}; dropped")
            self._retries = 0
            self._outbox.popleft()

    def connected(self, info: ConnectionInfo) -> None:
        self.connection = info
        try:
            self._path_to_guest(info.message_sint, info.target_vcpu)
        except RuntimeError as exc:
            # A target the hypervisor refuses (a bad msg_sint or VP from the guest): answer on
            # the static VMBus SINT of VP 0 instead, so the guest still hears back.
            self._error(f"INITIATE_CONTACT named an unreachable target: {exc}")
            self._path_to_guest(VMBUS_SINT, 0)

    def _path_to_guest(self, sint: int, vp: int) -> None:
        """(Re)build the root's message path to the guest's SINT ``sint`` on VP ``vp``.

        Built at once for the static VMBus SINT 2 of VP 0 (§2.7), so that a VERSION_RESPONSE
        refusing a version reaches the guest before any version was agreed (§3.5(a) step 3.5);
        rebuilt when INITIATE_CONTACT names another target.
        """
        if self._path == (sint, vp):
            return
        hv = self.root.hv
        pid = self.partition_id
        if self._to_guest is not None:
            hv.WinHvDisconnectPort(self.root.partition_id, self._to_guest)
            hv.WinHvDeletePort(pid, self._guest_message_port)
            self._to_guest = self._path = None
        self._check(hv.WinHvCreatePort(pid, self._guest_message_port, HvPortType.MESSAGE,
                                       connection_partition_id=self.root.partition_id,
                                       target_sint=sint, target_vp=vp),
                    "create the guest's message port")
        connection = self.host.new_connection_id()
        status = hv.WinHvConnectPort(self.root.partition_id, connection, pid,
                                     self._guest_message_port, HvPortType.MESSAGE)
        if status != HvStatus.SUCCESS:
            hv.WinHvDeletePort(pid, self._guest_message_port)
            self._check(status, "connect to the guest's message port")
        self._to_guest = connection
        self._path = (sint, vp)

    def _validate_pfns(self, pfns: Sequence[int]) -> str | None:
        bad = next((p for p in pfns if p >= self.guest_pages), None)
        if bad is not None:
            return f"PFN {bad:#x} is outside the guest's {self.guest_pages:#x} pages"
        return None

    def gpadl_created(self, gpadl: Gpadl) -> int:
        self._gpadls[(gpadl.relid, gpadl.gpadl_id)] = gpadl
        return 0

    def gpadl_torn_down(self, relid: int, gpadl_id: int) -> None:
        self._gpadls.pop((relid, gpadl_id), None)

    def guest_view(self, guest_gpa: int, size: int) -> memoryview:
        """Zero-copy view of guest memory (raises ValueError outside the guest's RAM)."""
        if size < 0 or guest_gpa < 0 or guest_gpa + size > self.guest_pages << 12:
            raise ValueError(f"guest range {guest_gpa:#x}+{size:#x} is outside the guest's RAM")
        return self.root.memory.view((self.root_ram_page << 12) + guest_gpa, size)

    def open_channel(self, relid: int, request: OpenRequest) -> int | None:
        device = self.devices.get(relid)
        if device is None:
            self._error(f"OPENCHANNEL for relid {relid}, which offers no device")
            return STATUS_UNSUCCESSFUL
        try:
            inbound, outbound = self._rings(request)
        except ValueError as exc:
            self._error(f"relid {relid}: ring GPADL refused: {exc}")
            return STATUS_UNSUCCESSFUL
        opened = self._wire_events(relid, request.target_vp)
        channel = Channel(side="host", relid=relid, interface_id=device.interface_id,
                          instance_id=device.instance_id, outbound=outbound, inbound=inbound,
                          signal=functools.partial(self.root.hv.WinHvSignalEvent,
                                                   opened.root_connection, 0),
                          name=f"{self.name}/{device.name}",
                          connection_id=CHANNEL_CONNECTION_BASE | relid)
        channel.guest_view = self.guest_view  # type: ignore[attr-defined]
        opened.device = device
        opened.channel = channel
        channel.on_fault = lambda ch, reason, d=device: self._channel_fault(d, reason)
        self._open[relid] = opened
        device.channel = channel
        device.opens += 1
        try:
            device.vsp.on_open(channel)
        except Exception as exc:
            _log.exception("%s: %s.on_open raised", self.name, type(device.vsp).__name__)
            self._close(relid, f"VSP on_open raised {type(exc).__name__}: {exc}")
            device.errors.append(f"on_open: {exc}")
            return STATUS_UNSUCCESSFUL
        channel.on_packet = device.vsp.on_packet
        self.root.on_event(*opened.root_flag, channel.poll)
        return 0

    def _rings(self, request: OpenRequest) -> tuple[Ring, Ring]:
        ranges = request.gpadl.ranges
        if len(ranges) != 1 or ranges[0].byte_offset != 0:
            raise ValueError("expected one range starting at offset 0")
        pfns = ranges[0].pfns
        if any(b != a + 1 for a, b in itertools.pairwise(pfns)):
            raise ValueError("ring pages are not contiguous guest pages")
        split = request.downstream_page_offset
        if not 2 <= split <= len(pfns) - 2:
            raise ValueError(f"downstream page offset {split} leaves a ring under 2 pages "
                             f"({len(pfns)} pages in all)")
        base = pfns[0] << 12
        inbound = Ring(self.guest_view(base, split << 12))
        outbound = Ring(self.guest_view(base + (split << 12), (len(pfns) - split) << 12))
        return inbound, outbound

    def _wire_events(self, relid: int, target_vp: int) -> _OpenChannel:
        hv = self.root.hv
        root_id = self.root.partition_id
        pid = self.partition_id
        flag = self.host.take_flag()
        root_port = self.host.new_port_id()
        self._check(hv.WinHvCreatePort(root_id, root_port, HvPortType.EVENT,
                                       connection_partition_id=pid, target_sint=flag[0],
                                       target_vp=0, base_flag=flag[1], flag_count=1),
                    f"create the root event port of relid {relid}")
        self._check(hv.WinHvConnectPort(pid, CHANNEL_CONNECTION_BASE | relid, root_id,
                                        root_port, HvPortType.EVENT),
                    f"connect the guest's signal of relid {relid}")
        guest_port = 0x1000 + relid
        self._check(hv.WinHvCreatePort(pid, guest_port, HvPortType.EVENT,
                                       connection_partition_id=root_id, target_sint=VMBUS_SINT,
                                       target_vp=target_vp, base_flag=relid, flag_count=1),
                    f"create the guest event port of relid {relid}")
        root_connection = self.host.new_connection_id()
        self._check(hv.WinHvConnectPort(root_id, root_connection, pid, guest_port,
                                        HvPortType.EVENT),
                    f"connect the root's signal of relid {relid}")
        return _OpenChannel(None, None, root_port, flag, guest_port,  # type: ignore[arg-type]
                            root_connection)

    def close_channel(self, relid: int) -> None:
        self._close(relid, "closed by the guest")

    def _close(self, relid: int, reason: str) -> None:
        opened = self._open.pop(relid, None)
        if opened is None:
            return
        hv = self.root.hv
        self.root.on_event(*opened.root_flag, None)
        hv.WinHvDisconnectPort(self.partition_id, CHANNEL_CONNECTION_BASE | relid)
        hv.WinHvDeletePort(self.root.partition_id, opened.root_port)
        hv.WinHvDisconnectPort(self.root.partition_id, opened.root_connection)
        hv.WinHvDeletePort(self.partition_id, opened.guest_port)
        self.host.give_flag(opened.root_flag)
        channel = opened.channel
        if channel is not None:
            was_open = not channel.closed
            channel.close(reason)
            if was_open and opened.device is not None:
                try:
                    opened.device.vsp.on_close(channel)
                except Exception as exc:
                    _log.exception("%s: VSP on_close raised", self.name)
                    opened.device.errors.append(f"on_close: {exc}")
        if opened.device is not None:
            opened.device.channel = None

    def _channel_fault(self, device: HostDevice, reason: str) -> None:
        device.errors.append(reason)
        self._error(f"{device.name}: channel closed: {reason}")
        try:
            device.vsp.on_close(device.channel)
        except Exception as exc:
            device.errors.append(f"on_close: {exc}")
        # The guest must learn the device is gone, or its requests would wait forever:
        # withdraw the offer (hot remove). The guest closes, tears down and releases it.
        if device.relid in self.devices:
            try:
                self.protocol.rescind(device.relid)
            except ValueError as exc:
                device.errors.append(f"rescind: {exc}")

    def modify_channel(self, relid: int, target_vp: int) -> int:
        # Retargeting interrupts is not supported (documented). MODIFYCHANNEL_RESPONSE carries
        # the NTSTATUS as a signed 32-bit field (§3.3), unlike OPENCHANNEL_RESULT's u32.
        return STATUS_UNSUCCESSFUL - (1 << 32)

    def relid_released(self, relid: int) -> None:
        self.devices.pop(relid, None)

    def unloaded(self) -> None:
        for relid in list(self._open):
            self._close(relid, "guest unloaded VMBus")
        self._gpadls.clear()

    def protocol_error(self, error: Exception) -> None:
        self._error(f"protocol error from the guest: {error}")

    # -- teardown ------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Close every channel and stop routing this VM's messages (VM stop)."""
        for relid in list(self._open):
            self._close(relid, "VM stopped")
        for device in self.devices.values():
            try:
                device.vsp.stop()
            except Exception as exc:
                device.errors.append(f"stop: {exc}")
        for port in self._ports:
            self.host.unroute(port)
        self.host.servers.pop(self.partition_id, None)
