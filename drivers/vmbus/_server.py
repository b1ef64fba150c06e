"""The root side of VMBus, per VM: one :class:`VmbusServer` per VM (``vmbusr``).

Each server wires one guest to the :class:`VmbusHost` through hypercalls made by the root
kernel (fact sheet §3.1, §3.5):

* guest -> host control messages: the guest's connections 1 and 4 (the multiclient id of 5.0+)
  go to two root message ports, routed to this server by port id;
* host -> guest control messages: a guest message port on the SINT and VP the guest named in
  INITIATE_CONTACT, and a root connection to it;
* per open channel: a root event port (one flag) that the guest's connection ``0x2000 + relid``
  (the id in the offer) signals, and a guest event port on SINT 2 with flag ``relid`` that the
  root signals (dedicated interrupts, Win8+).

A server drives a sans-IO :class:`ServerProtocol`; VSPs see only :class:`Channel` objects.
Guest memory is reached the way Hyper-V's worker reaches it: the guest's RAM is a run of root
pages (VID mapped it), so guest page ``p`` is root page ``root_ram_page + p``.

The guest is untrusted, and SIEF flags and port and connection ids are shared by every VM of the
host. So an OPENCHANNEL is a transaction: what can be checked is checked before anything is
taken, and an open that fails part way gives back what it took, exactly, and answers the
guest with a failure status. What a channel takes comes back when it closes, and ids when a
server shuts down. What one VM can hold is bounded: open channels (``max_open_channels``),
messages waiting for the guest (``outbox_limit``) and recorded errors (``ERRORS_KEPT``).
"""

from __future__ import annotations

import functools
import logging
import struct
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from winhv._registers import HvRegisterName
from winhv._status import HvStatus
from winhv._structs import HV_ANY_VP, HvPortType
from winhv.drivers.vmbus._channel import Channel
from winhv.drivers.vmbus._gpadl import Gpadl, PfnList
from winhv.drivers.vmbus._host import (
    CHANNEL_CONNECTION_BASE,
    MAX_VPS,
    STATUS_UNSUCCESSFUL,
    VMBUS_MESSAGE_TYPE,
    VMBUS_SINT,
    HostError,
    Undo,
    VmbusHost,
)
from winhv.drivers.vmbus._messages import (
    MESSAGE_CONNECTION_ID,
    MESSAGE_CONNECTION_ID_MULTICLIENT,
    ChannelMessage,
    ChannelMessageType,
)
from winhv.drivers.vmbus._outbox import Outbox
from winhv.drivers.vmbus._ring import Ring, RingError
from winhv.drivers.vmbus._server_notifier import ConnectionInfo, OfferParams, OpenRequest
from winhv.drivers.vmbus._server_protocol import ServerProtocol
from winhv.drivers.vmbus._versions import VmbusVersion
from winhv.drivers.vmbus.device import DeviceContext, OfferSpec, Vsp

__all__ = ["HostDevice", "VmbusServer"]

_log = logging.getLogger("winhv.vmbus")

_GONE_PORT = (HvStatus.SUCCESS, HvStatus.INVALID_PORT_ID)
_GONE_CONNECTION = (HvStatus.SUCCESS, HvStatus.INVALID_CONNECTION_ID)


@dataclass(eq=False)
class HostDevice:
    """One device instance a server offers: its VSP, offer and (when open) channel.

    ``errors`` keeps the device's last ``DEVICE_ERRORS_KEPT`` faults (a guest can make a VSP
    fail on every open)."""

    name: str
    vsp: Vsp
    interface_id: uuid.UUID
    instance_id: uuid.UUID
    offer: OfferSpec
    relid: int = 0
    channel: Channel | None = None
    errors: list[str] = field(default_factory=list)
    opens: int = 0

    #: Faults ``errors`` keeps (the oldest go first).
    DEVICE_ERRORS_KEPT = 64

    def note(self, error: str) -> None:
        """Record one fault of the device, keeping the last ``DEVICE_ERRORS_KEPT``."""
        if len(self.errors) >= self.DEVICE_ERRORS_KEPT:
            del self.errors[0]
        self.errors.append(error)


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

    What the VM's guest can make the server hold is bounded:

    * ``max_open_channels`` (default ``MAX_OPEN_CHANNELS``, 256): channels open at once, each
      holding one of the host's ``6 x 2047`` root SIEF flags. One more open is refused with
      OPENCHANNEL_RESULT ``STATUS_UNSUCCESSFUL``.
    * ``outbox_limit`` (default ``OUTBOX_LIMIT``, 4096: two messages per relid the VM can have
      and some): control messages waiting for the guest to free its SINT's message slot. Past
      it a new message is dropped, counted in ``outbox_dropped``, and reported.
    * ``errors``: the last ``ERRORS_KEPT`` (256) errors; ``errors_total`` counts them all. The
      first ``ERRORS_LOGGED`` (20) are logged (and passed to ``on_error``) one by one, then one
      summary line per ``ERRORS_SUMMARY_EVERY`` (1000).
    """

    #: Default per-VM quota of open channels (root SIEF flags); see the class docstring.
    MAX_OPEN_CHANNELS = 256
    #: Default per-VM cap on host->guest control messages waiting to be posted.
    OUTBOX_LIMIT = 4096
    #: Errors kept in ``errors`` (the oldest go first; ``errors_total`` counts every one).
    ERRORS_KEPT = 256
    #: Errors logged and passed to ``on_error`` one by one before the summaries start.
    ERRORS_LOGGED = 20
    #: After the first ``ERRORS_LOGGED``, one summary line per this many errors.
    ERRORS_SUMMARY_EVERY = 1000

    def __init__(self, host: VmbusHost, partition_id: int, *, root_ram_page: int,
                 guest_pages: int, name: str = "", max_version: VmbusVersion | None = None,
                 on_error: Callable[[str], Any] | None = None,
                 max_open_channels: int | None = None,
                 outbox_limit: int | None = None) -> None:
        self.host = host
        self.root = host.root
        self.partition_id = partition_id
        self.name = name or f"vm {partition_id:#x}"
        self.root_ram_page = root_ram_page
        self.guest_pages = guest_pages
        self.on_error = on_error
        self.max_open_channels = (self.MAX_OPEN_CHANNELS if max_open_channels is None
                                  else max_open_channels)
        self.devices: dict[int, HostDevice] = {}
        self._errors: deque[str] = deque(maxlen=self.ERRORS_KEPT)
        #: Every error this server recorded (``errors`` keeps only the last ones).
        self.errors_total = 0
        #: Host->guest messages dropped because ``outbox_limit`` were already waiting.
        self.outbox_dropped = 0
        self.connection: ConnectionInfo | None = None
        self._open: dict[int, _OpenChannel] = {}
        self._to_guest: int | None = None   # root connection id to the guest's message port
        self._guest_message_port = 1
        self._path: tuple[int, int] | None = None   # (SINT, VP) of the guest's message port
        #: (type, message) for the guest, posted in order, retried while its SINT is full.
        self._outbox: Outbox[tuple[ChannelMessageType, bytes]] = Outbox(
            self._post, call_later=self.root.call_later if self.root.clock is not None else None,
            on_failure=self._post_failed,
            limit=self.OUTBOX_LIMIT if outbox_limit is None else outbox_limit)
        self._ports: list[int] = []
        self._shut_down = False
        kwargs: dict[str, Any] = {}
        if max_version is not None:
            kwargs["max_version"] = max_version
        self.protocol = ServerProtocol(notifier=self, validate_pfns=self._validate_pfns,
                                       **kwargs)
        hv = self.root.hv
        root_id = self.root.partition_id
        with Undo() as undo:
            for connection_id in (MESSAGE_CONNECTION_ID, MESSAGE_CONNECTION_ID_MULTICLIENT):
                port = self._create_root_port(undo, "create the root message port",
                                              HvPortType.MESSAGE, message=True,
                                              target_sint=VMBUS_SINT, target_vp=0)
                self._check(hv.WinHvConnectPort(partition_id, connection_id, root_id, port,
                                                HvPortType.MESSAGE),
                            f"connect guest connection {connection_id}")
                undo.callback(hv.WinHvDisconnectPort, partition_id, connection_id)
                host.route(port, self, connection_id)
                undo.callback(host.unroute, port)
                self._ports.append(port)
            self._path_to_guest(VMBUS_SINT, 0)
            undo.commit()
        host.servers[partition_id] = self

    def __repr__(self) -> str:
        return f"<VmbusServer {self.name} devices={len(self.devices)} open={len(self._open)}>"

    @property
    def outbox_limit(self) -> int | None:
        """How many control messages may wait for the guest (see the class docstring)."""
        return self._outbox.limit

    @outbox_limit.setter
    def outbox_limit(self, limit: int | None) -> None:
        self._outbox.limit = limit

    @property
    def errors(self) -> list[str]:
        """The last ``ERRORS_KEPT`` errors, oldest first (a copy; see ``errors_total``)."""
        return list(self._errors)

    def _check(self, status: Any, what: str) -> None:
        if status != HvStatus.SUCCESS:
            raise HostError(f"{self.name}: could not {what}: {status}")

    def _error(self, text: str, exc: BaseException | None = None) -> None:
        """Record an error (``errors``), log it and pass it to ``on_error``, with ``exc``'s
        traceback in the log.

        A guest decides how many errors there are: the first ``ERRORS_LOGGED`` are logged and
        passed on one by one, then one summary per ``ERRORS_SUMMARY_EVERY``. Counted, not
        timed, so the log is the same on every run.
        """
        message = f"{self.name}: {text}"
        self._errors.append(message)
        self.errors_total += 1
        total = self.errors_total
        if total > self.ERRORS_LOGGED:
            if (total - self.ERRORS_LOGGED) % self.ERRORS_SUMMARY_EVERY:
                return
            message = (f"{self.name}: {self.ERRORS_SUMMARY_EVERY} more errors since the last "
                       f"one logged ({total} in all); the latest: {text}")
        _log.warning("%s", message, exc_info=exc)
        if self.on_error is not None:
            self.on_error(message)

    # -- root ports and connections ------------------------------------------------------------

    def _create_root_port(self, undo: Undo, what: str, port_type: int, *,
                          message: bool = False, flag: tuple[int, int] | None = None,
                          **info: int) -> int:
        """A new root port the guest's connections may reach; deleted again by ``undo``.
        ``flag`` is the root SIEF flag an event port sets (see :meth:`_delete_root_port`)."""
        port = self.host.new_port_id(undo)
        status = self.root.hv.WinHvCreatePort(self.root.partition_id, port, port_type,
                                              connection_partition_id=self.partition_id, **info)
        if status == HvStatus.INVALID_PORT_ID:
            self.host.retire_port_id(port)   # a port not made here has that id: never hand it out
        self._check(status, what)
        undo.callback(self._delete_root_port, port, message=message, recycle=False, flag=flag)
        return port

    def _delete_root_port(self, port: int, *, message: bool = False, recycle: bool = True,
                          flag: tuple[int, int] | None = None) -> None:
        """Delete a root port; its id goes back to the host (``recycle``; an undone open's
        id is given back by the pool's own undo) unless the hypervisor still has the port.
        Then the port still sets its ``flag``, which is retired too: a flag given back would
        let this port's signals reach whichever channel, of any VM, got it next."""
        status = self.root.hv.WinHvDeletePort(self.root.partition_id, port)
        if status not in _GONE_PORT:
            self.host.retire_port_id(port)
            if flag is not None:
                self.host.retire_flag(flag)
            self._error(f"could not delete root port {port:#x}: {status}; its id "
                        f"{'and its flag are' if flag is not None else 'is'} not reused")
        elif recycle:
            self.host.free_port_id(port, message=message)

    def _disconnect_root(self, connection: int) -> None:
        status = self.root.hv.WinHvDisconnectPort(self.root.partition_id, connection)
        if status in _GONE_CONNECTION:
            self.host.free_connection_id(connection)
        else:
            self.host.retire_connection_id(connection)
            self._error(f"could not disconnect root connection {connection:#x}: {status}; "
                        "its id is not reused")

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
            self._error(f"internal error handling a guest message: {exc}", exc)

    # -- ServerNotifier ------------------------------------------------------------------------

    def send(self, message: ChannelMessage) -> None:
        kind = message.TYPE   # named only in an error: Enum.name is a Python property
        if self._to_guest is None:
            self._error(f"cannot send {kind.name}: the guest is not connected")
            return
        if not self._outbox.put((kind, message.pack())):
            # The guest is not taking its messages (it never frees its SINT's slot) but keeps
            # asking: what it asks for now is lost, not the host's memory.
            self.outbox_dropped += 1
            self._error(f"{kind.name} to the guest dropped: {len(self._outbox)} control messages "
                        f"already wait for its SINT {self._path[0] if self._path else '?'} "
                        f"(at most {self.outbox_limit})")

    def _post(self, item: tuple[ChannelMessageType, bytes]) -> Any:
        if self._to_guest is None:
            return None   # no path to the guest now: the message waits
        return self.root.hv.WinHvPostMessage(self._to_guest, VMBUS_MESSAGE_TYPE, item[1])

    def _post_failed(self, item: tuple[ChannelMessageType, bytes], status: Any) -> None:
        self._error(f"posting {item[0].name} to the guest failed: {status}; dropped")

    def connected(self, info: ConnectionInfo) -> None:
        self.connection = info
        sint, vp = info.message_sint, info.target_vcpu
        reason = self._missing_vp("INITIATE_CONTACT.target_vcpu", vp)
        if reason is None:
            try:
                self._path_to_guest(sint, vp)
                return
            except HostError as exc:
                reason = str(exc)
        # A target the hypervisor refuses (a bad msg_sint or VP from the guest): answer on the
        # static VMBus SINT of VP 0 instead, so the guest still hears back.
        self._error(f"INITIATE_CONTACT named an unreachable target (SINT {sint}, VP {vp}): "
                    f"{reason}; answering on SINT {VMBUS_SINT} of VP 0")
        try:
            self._path_to_guest(VMBUS_SINT, 0)
        except HostError as again:
            self._error(f"no message path to the guest: {again}; what the host sends is "
                        "dropped until its next INITIATE_CONTACT")

    def _path_to_guest(self, sint: int, vp: int) -> None:
        """(Re)build the root's message path to the guest's SINT ``sint`` on VP ``vp``.

        Built at once for the static VMBus SINT 2 of VP 0 (§2.7), so that a VERSION_RESPONSE
        refusing a version reaches the guest before any version was agreed (§3.5(a) step 3.5);
        rebuilt when INITIATE_CONTACT names another target. On failure there is no path
        (``HostError``), and nothing of the failed attempt is left.
        """
        if self._path == (sint, vp):
            return
        hv = self.root.hv
        pid = self.partition_id
        if self._to_guest is not None:
            self._disconnect_root(self._to_guest)
            hv.WinHvDeletePort(pid, self._guest_message_port)
            self._to_guest = self._path = None
        with Undo() as undo:
            self._check(hv.WinHvCreatePort(pid, self._guest_message_port, HvPortType.MESSAGE,
                                           connection_partition_id=self.root.partition_id,
                                           target_sint=sint, target_vp=vp),
                        f"create the guest's message port on SINT {sint} of VP {vp}")
            undo.callback(hv.WinHvDeletePort, pid, self._guest_message_port)
            connection = self.host.new_connection_id(undo)
            status = hv.WinHvConnectPort(self.root.partition_id, connection, pid,
                                         self._guest_message_port, HvPortType.MESSAGE)
            if status == HvStatus.INVALID_CONNECTION_ID:
                self.host.retire_connection_id(connection)   # someone else has it
            self._check(status, "connect to the guest's message port")
            undo.commit()
        self._to_guest = connection
        self._path = (sint, vp)

    def _validate_pfns(self, pfns: Sequence[int]) -> str | None:
        # A guest chooses up to 8190 PFNs per GPADL: a PfnList knows its highest in O(1) for
        # a run and one C pass for an array; the culprit is looked for only if there is one.
        top = pfns.highest if type(pfns) is PfnList else max(pfns, default=-1)
        if top < self.guest_pages:
            return None
        bad = next(p for p in pfns if p >= self.guest_pages)
        return f"PFN {bad:#x} is outside the guest's {self.guest_pages:#x} pages"

    def gpadl_created(self, gpadl: Gpadl) -> int:
        # The protocol keeps the GPADLs (its PFNs were checked by _validate_pfns); the host
        # maps a ring GPADL only when it is opened (_rings).
        return 0

    def gpadl_torn_down(self, relid: int, gpadl_id: int) -> None:
        pass

    def guest_view(self, guest_gpa: int, size: int) -> memoryview:
        """Zero-copy view of guest memory (raises ValueError outside the guest's RAM)."""
        if size < 0 or guest_gpa < 0 or guest_gpa + size > self.guest_pages << 12:
            raise ValueError(f"guest range {guest_gpa:#x}+{size:#x} is outside the guest's RAM")
        return self.root.memory.view((self.root_ram_page << 12) + guest_gpa, size)

    def open_channel(self, relid: int, request: OpenRequest) -> int | None:
        """Open the device of ``relid`` over the guest's rings; 0, or ``STATUS_UNSUCCESSFUL``
        with the reason reported. Never raises for anything the guest sent.

        A transaction: the request (target VP, quota, ring GPADL) is checked before anything
        is taken; the ring control pages when the channel is built, and a bad one, or a
        hypercall that fails part way, undoes what was done (ports, connections, the flag and
        the ids go back exactly as they were).
        """
        device = self.devices.get(relid)
        if device is None:
            self._error(f"OPENCHANNEL for relid {relid}, which offers no device")
            return STATUS_UNSUCCESSFUL
        where = f"relid {relid} ({device.name})"
        reason = self._refuse_open(request)
        if reason is not None:
            self._error(f"{where}: {reason}")
            return STATUS_UNSUCCESSFUL
        try:
            inbound, outbound = self._rings(request)
        except (ValueError, RingError) as exc:
            self._error(f"{where}: ring GPADL refused: {exc}")
            return STATUS_UNSUCCESSFUL
        try:
            opened = self._wire(device, request, inbound, outbound)
        except RingError as exc:   # the guest's ring control pages: indices out of range
            self._error(f"{where}: ring control page refused: {exc}")
            return STATUS_UNSUCCESSFUL
        except HostError as exc:
            self._error(f"{where}: OPENCHANNEL failed and was undone: {exc}")
            return STATUS_UNSUCCESSFUL
        channel = opened.channel
        channel.guest_view = self.guest_view  # type: ignore[attr-defined]
        channel.on_fault = lambda ch, reason, d=device: self._channel_fault(d, reason)
        self._open[relid] = opened
        device.channel = channel
        device.opens += 1
        try:
            device.vsp.on_open(channel)
        except Exception as exc:
            # The VSP's fault, but the guest can repeat it at will: reported like its errors.
            self._error(f"{where}: {type(device.vsp).__name__}.on_open raised "
                        f"{type(exc).__name__}: {exc}", exc)
            self._close(relid, f"VSP on_open raised {type(exc).__name__}: {exc}")
            device.note(f"on_open: {exc}")
            return STATUS_UNSUCCESSFUL
        if self._open.get(relid) is not opened or channel.closed:
            # The channel failed inside on_open (a ring fault closes it and withdraws the
            # offer): it must not be polled, nor reported open.
            if self._open.get(relid) is opened:
                self._error(f"{where}: {type(device.vsp).__name__}.on_open closed the "
                            f"channel: {channel.close_reason}")
                self._close(relid, channel.close_reason or "closed in on_open")
            return STATUS_UNSUCCESSFUL
        channel.on_packet = device.vsp.on_packet
        self.root.on_event(*opened.root_flag, channel.poll)
        return 0

    def _refuse_open(self, request: OpenRequest) -> str | None:
        """Why an OPENCHANNEL cannot be honoured before anything is taken, or ``None``."""
        if len(self._open) >= self.max_open_channels:
            return (f"OPEN_CHANNEL: found {len(self._open)} channels open, expected at most "
                    f"{self.max_open_channels} per VM (VmbusServer.max_open_channels)")
        return self._missing_vp("OPEN_CHANNEL.target_vp", request.target_vp)

    def _missing_vp(self, where: str, vp: int) -> str | None:
        """Why ``vp``, which the guest named in ``where``, is not a VP of the VM, or ``None``.
        ``HV_ANY_VP`` is accepted: no particular VP (OpenVMM: interrupts go nowhere in
        particular). Any other index but 0 costs one HvCallGetVpRegisters: the hypervisor
        knows the VM's VPs (no VM has more than ``MAX_VPS``)."""
        if vp in (0, HV_ANY_VP):
            return None   # VP 0 is every VM's boot VP (VID makes VPs 0..n-1): no need to ask
        if vp >= MAX_VPS:
            found = f"no VM has more than {MAX_VPS} VPs"
        else:
            # The VM's VPs are the hypervisor's to know: ask it whether this one exists.
            status, _ = self.root.hv.WinHvGetVpRegisters([HvRegisterName.VP_INDEX],
                                                         partition_id=self.partition_id,
                                                         vp_index=vp)
            if status == HvStatus.SUCCESS:
                return None
            found = (f"the VM has no VP {vp}" if status == HvStatus.INVALID_VP_INDEX
                     else f"VP {vp} could not be checked: {status}")
        return f"{where}: found {vp}, expected a VP of the VM or {HV_ANY_VP:#x} (any VP); {found}"

    def _rings(self, request: OpenRequest) -> tuple[Ring, Ring]:
        ranges = request.gpadl.ranges
        if len(ranges) != 1 or ranges[0].byte_offset != 0:
            raise ValueError("expected one range starting at offset 0")
        pfns = ranges[0].pfns
        if pfns.run is None and len(pfns) > 1:   # a PfnList knows whether it is one run
            raise ValueError("ring pages are not contiguous guest pages")
        split = request.downstream_page_offset
        if not 2 <= split <= len(pfns) - 2:
            raise ValueError(f"downstream page offset {split} leaves a ring under 2 pages "
                             f"({len(pfns)} pages in all)")
        base = pfns[0] << 12
        inbound = Ring(self.guest_view(base, split << 12))
        outbound = Ring(self.guest_view(base + (split << 12), (len(pfns) - split) << 12))
        return inbound, outbound

    def _wire(self, device: HostDevice, request: OpenRequest, inbound: Ring,
              outbound: Ring) -> _OpenChannel:
        """Build the channel, then wire its two signals; all or nothing (``RingError`` or
        ``HostError``). The ring control pages are checked as the channel is built, with only
        the root connection id taken so far (its undo gives it back)."""
        hv = self.root.hv
        root_id = self.root.partition_id
        pid = self.partition_id
        relid = request.relid
        with Undo() as undo:
            # An id is all the channel needs to signal; the connection is made last.
            root_connection = self.host.new_connection_id(undo)
            channel = Channel(side="host", relid=relid, interface_id=device.interface_id,
                              instance_id=device.instance_id, outbound=outbound, inbound=inbound,
                              signal=functools.partial(hv.WinHvSignalEvent, root_connection, 0),
                              name=f"{self.name}/{device.name}",
                              connection_id=CHANNEL_CONNECTION_BASE | relid)
            # The guest's connection 0x2000 + relid signals a root event port (one flag).
            flag = self.host.take_flag(undo)
            root_port = self._create_root_port(
                undo, f"create the root event port of relid {relid}", HvPortType.EVENT,
                flag=flag, target_sint=flag[0], target_vp=0, base_flag=flag[1], flag_count=1)
            self._check(hv.WinHvConnectPort(pid, CHANNEL_CONNECTION_BASE | relid, root_id,
                                            root_port, HvPortType.EVENT),
                        f"connect the guest's signal of relid {relid}")
            undo.callback(hv.WinHvDisconnectPort, pid, CHANNEL_CONNECTION_BASE | relid)
            # The root's connection signals a guest event port: SINT 2, flag relid.
            guest_port = 0x1000 + relid
            self._check(hv.WinHvCreatePort(pid, guest_port, HvPortType.EVENT,
                                           connection_partition_id=root_id,
                                           target_sint=VMBUS_SINT, target_vp=request.target_vp,
                                           base_flag=relid, flag_count=1),
                        f"create the guest event port of relid {relid}")
            undo.callback(hv.WinHvDeletePort, pid, guest_port)
            status = hv.WinHvConnectPort(root_id, root_connection, pid, guest_port,
                                         HvPortType.EVENT)
            if status == HvStatus.INVALID_CONNECTION_ID:
                self.host.retire_connection_id(root_connection)   # someone else has it
            self._check(status, f"connect the root's signal of relid {relid}")
            undo.commit()
        return _OpenChannel(device, channel, root_port, flag, guest_port, root_connection)

    def close_channel(self, relid: int) -> None:
        self._close(relid, "closed by the guest")

    def _close(self, relid: int, reason: str) -> None:
        opened = self._open.pop(relid, None)
        if opened is None:
            return
        hv = self.root.hv
        pid = self.partition_id
        self.root.on_event(*opened.root_flag, None)
        status = hv.WinHvDisconnectPort(pid, CHANNEL_CONNECTION_BASE | relid)
        if status not in _GONE_CONNECTION:
            self._error(f"relid {relid}: could not disconnect the guest's connection "
                        f"{CHANNEL_CONNECTION_BASE | relid:#x}: {status}; the relid cannot be "
                        "opened again")
        self._delete_root_port(opened.root_port, flag=opened.root_flag)
        self._disconnect_root(opened.root_connection)
        status = hv.WinHvDeletePort(pid, opened.guest_port)
        if status not in _GONE_PORT:
            self._error(f"relid {relid}: could not delete the guest's event port "
                        f"{opened.guest_port:#x}: {status}")
        self.host.give_flag(opened.root_flag)   # dropped instead if its port could not go
        channel = opened.channel
        was_open = not channel.closed
        channel.close(reason)
        if was_open:
            try:
                opened.device.vsp.on_close(channel)
            except Exception as exc:
                self._error(f"relid {relid} ({opened.device.name}): "
                            f"{type(opened.device.vsp).__name__}.on_close raised "
                            f"{type(exc).__name__}: {exc}", exc)
                opened.device.note(f"on_close: {exc}")
        opened.device.channel = None

    def _channel_fault(self, device: HostDevice, reason: str) -> None:
        device.note(reason)
        self._error(f"{device.name}: channel closed: {reason}")
        try:
            device.vsp.on_close(device.channel)
        except Exception as exc:
            device.note(f"on_close: {exc}")
        # The guest must learn the device is gone, or its requests would wait forever:
        # withdraw the offer (hot remove). The guest closes, tears down and releases it.
        if device.relid in self.devices:
            try:
                self.protocol.rescind(device.relid)
            except ValueError as exc:
                device.note(f"rescind: {exc}")

    def modify_channel(self, relid: int, target_vp: int) -> int:
        # Retargeting interrupts is not supported (documented). MODIFYCHANNEL_RESPONSE carries
        # the NTSTATUS as a signed 32-bit field (§3.3), unlike OPENCHANNEL_RESULT's u32.
        return STATUS_UNSUCCESSFUL - (1 << 32)

    def relid_released(self, relid: int) -> None:
        self.devices.pop(relid, None)

    def unloaded(self) -> None:
        # The protocol closed every open channel through close_channel already; this only
        # catches one that a device's own callbacks left behind.
        for relid in list(self._open):
            self._close(relid, "guest unloaded VMBus")

    def protocol_error(self, error: Exception) -> None:
        # An open the host itself failed arrives with the host's exception as the cause: log
        # its traceback too (it is a host bug or a host limit, not only the guest's doing).
        self._error(f"protocol error from the guest: {error}", error.__cause__)

    # -- teardown ------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Close every channel, stop every VSP, stop routing this VM's messages and give the
        root's ports and connections for it back (VM stop). A second call does nothing."""
        if self._shut_down:
            return
        self._shut_down = True
        for relid in list(self._open):
            self._close(relid, "VM stopped")
        for device in self.devices.values():
            try:
                device.vsp.stop()
            except Exception as exc:
                device.note(f"stop: {exc}")
        hv = self.root.hv
        for port, connection_id in zip(self._ports, (MESSAGE_CONNECTION_ID,
                                                     MESSAGE_CONNECTION_ID_MULTICLIENT),
                                       strict=True):
            self.host.unroute(port)
            hv.WinHvDisconnectPort(self.partition_id, connection_id)
            self._delete_root_port(port, message=True)
        self._ports.clear()
        if self._to_guest is not None:
            self._disconnect_root(self._to_guest)
            hv.WinHvDeletePort(self.partition_id, self._guest_message_port)
            self._to_guest = self._path = None
        self._outbox.clear()
        self.host.servers.pop(self.partition_id, None)
