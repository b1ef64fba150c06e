"""The guest side of VMBus: the bus driver (``vmbus.sys``) and its enumerator.

:class:`VmbusClient` connects to the host over SynIC messages (newest version first, falling
back as fact sheet §3.5(a) says), requests offers, and turns each offer into a
:class:`GuestDevice`. A device binds the first VSC driver whose ID table names the offer's
interface GUID (a per-VM override can force another), is probed, gets its rings (one
contiguous allocation: the outbound ring, then the inbound one, §3.5(c)), one GPADL covering
both, and an open channel. Rescinds remove the device: the driver's ``remove()``, CLOSECHANNEL,
the ring GPADL torn down, the pages freed, then RELID_RELEASED (§3.5(f)).

Everything the client knows of the host arrives as messages and interrupts; it holds no
reference to any host object.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from winhv._status import HvStatus
from winhv.drivers.kernel import Kernel
from winhv.drivers.vmbus._channel import Channel
from winhv.drivers.vmbus._client_protocol import ClientProtocol
from winhv.drivers.vmbus._messages import ChannelMessage, InitiateContact, OfferChannel
from winhv.drivers.vmbus._outbox import Outbox
from winhv.drivers.vmbus._ring import Ring
from winhv.drivers.vmbus._versions import CLIENT_VERSIONS, VmbusVersion
from winhv.drivers.vmbus.device import Vsc

__all__ = ["DeviceState", "GuestDevice", "VmbusClient"]

_log = logging.getLogger("winhv.vmbus")

VMBUS_MESSAGE_TYPE = 1
VMBUS_SINT = 2


class DeviceState(Enum):
    OFFERED = "offered"        # no driver matched
    PROBING = "probing"
    OPENING = "opening"
    OPEN = "open"
    FAILED = "failed"          # the driver raised, or the host refused; see ``error``
    REMOVED = "removed"


@dataclass(eq=False)
class GuestDevice:
    """One offered channel as the guest's bus sees it (a node of ``winhv bus``)."""

    offer: OfferChannel
    driver_class: type[Vsc] | None = None
    driver: Vsc | None = None
    state: DeviceState = DeviceState.OFFERED
    channel: Channel | None = None
    error: str | None = None
    ring_gpa: int = 0
    ring_pages: int = 0
    gpadl_id: int | None = None
    client: VmbusClient | None = field(default=None, repr=False)

    @property
    def relid(self) -> int:
        return self.offer.child_relid

    @property
    def interface_id(self) -> uuid.UUID:
        return self.offer.interface_id

    @property
    def instance_id(self) -> uuid.UUID:
        return self.offer.instance_id

    @property
    def kernel(self) -> Kernel:
        """The guest kernel (its memory and allocator), for drivers that need pages."""
        assert self.client is not None
        return self.client.kernel

    def describe(self) -> dict[str, Any]:
        return {
            "relid": self.relid,
            "interface_id": str(self.interface_id),
            "instance_id": str(self.instance_id),
            "sub_channel_index": self.offer.sub_channel_index,
            "connection_id": self.offer.connection_id,
            "driver": self.driver_class.__qualname__ if self.driver_class else None,
            "state": self.state.value,
            "ring_size": (self.ring_pages << 12) // 2 if self.ring_pages else 0,
            "error": self.error,
        }


class VmbusClient:
    """The guest's VMBus driver and bus enumerator (a :class:`ClientNotifier`)."""

    def __init__(self, kernel: Kernel, drivers: Sequence[type[Vsc]] = (), *,
                 overrides: Mapping[uuid.UUID, type[Vsc] | None] | None = None,
                 versions: Sequence[VmbusVersion] = CLIENT_VERSIONS,
                 on_change: Callable[[str, GuestDevice], Any] | None = None) -> None:
        self.kernel = kernel
        self.drivers = list(drivers)
        self.overrides = dict(overrides or {})
        self.on_change = on_change
        self.devices: dict[int, GuestDevice] = {}
        self.errors: list[str] = []
        self.connected_version: VmbusVersion | None = None
        self.offers_complete = False
        #: (message, connection id, is INITIATE_CONTACT), posted in order, retried while the
        #: host's SINT is full.
        self._outbox: Outbox[tuple[bytes, int, bool]] = Outbox(
            self._post, call_later=kernel.call_later if kernel.clock is not None else None,
            on_failure=self._post_failed)
        self.protocol = ClientProtocol(notifier=self, versions=versions,
                                       target_vcpu=kernel.vp_index)
        kernel.on_message(VMBUS_SINT, self._on_message)
        kernel.at_shutdown.append(self.unload)

    def __repr__(self) -> str:
        return f"<VmbusClient {self.kernel.name} devices={len(self.devices)}>"

    def connect(self) -> None:
        """Start INITIATE_CONTACT; the rest happens as messages arrive."""
        self.protocol.connect()

    def unload(self) -> None:
        """Remove every device and send UNLOAD (VM shutdown)."""
        for device in list(self.devices.values()):
            self._remove(device, "unload", release=False)
        if self.connected_version is not None:
            self.protocol.unload()

    def _error(self, text: str) -> None:
        message = f"{self.kernel.name}: {text}"
        _log.warning("%s", message)
        self.errors.append(message)

    def _changed(self, event: str, device: GuestDevice) -> None:
        if self.on_change is not None:
            try:
                self.on_change(event, device)
            except Exception:
                _log.exception("%s: on_change(%s) raised", self, event)

    # -- messages ------------------------------------------------------------------------------

    def _on_message(self, message: bytes) -> None:
        if int.from_bytes(message[0:4], "little") != VMBUS_MESSAGE_TYPE:
            return
        self.protocol.receive(message[16:16 + min(message[4], 240)])

    def send(self, message: ChannelMessage, connection_id: int) -> None:
        self._outbox.put((message.pack(), connection_id, isinstance(message, InitiateContact)))

    def _post(self, item: tuple[bytes, int, bool]) -> Any:
        return self.kernel.hv.WinHvPostMessage(item[1], VMBUS_MESSAGE_TYPE, item[0])

    def _post_failed(self, item: tuple[bytes, int, bool], status: Any) -> None:
        _data, connection_id, contact = item
        if status == HvStatus.INVALID_CONNECTION_ID and contact:
            self.protocol.contact_rejected()   # an older host: try the next version
        else:
            self._error(f"posting a VMBus message to connection {connection_id} "
                        f"failed: {status}")

    # -- ClientNotifier ------------------------------------------------------------------------

    def connected(self, version: VmbusVersion) -> None:
        self.connected_version = version

    def offer(self, offer: OfferChannel) -> None:
        device = GuestDevice(offer, client=self)
        self.devices[offer.child_relid] = device
        self._changed("offered", device)
        driver = self._match(offer.interface_id)
        if driver is not None:
            self._bind(device, driver)

    def all_offers_delivered(self) -> None:
        self.offers_complete = True

    def _match(self, interface_id: uuid.UUID) -> type[Vsc] | None:
        if interface_id in self.overrides:
            return self.overrides[interface_id]
        for driver in self.drivers:
            if interface_id in getattr(driver, "interface_ids", ()):
                return driver
        return None

    def _bind(self, device: GuestDevice, driver_class: type[Vsc]) -> None:
        device.driver_class = driver_class
        device.state = DeviceState.PROBING
        try:
            device.driver = driver_class(device)
            device.driver.probe()
            ring_size = int(driver_class.ring_size)
            if ring_size < 2 * 4096 or ring_size % 4096:
                raise ValueError(f"ring_size {ring_size} is not a multiple of 4096 >= 8192")
        except Exception as exc:
            self._fail(device, f"probe failed: {type(exc).__name__}: {exc}")
            return
        pages = 2 * (ring_size >> 12)
        try:
            gpa = self.kernel.alloc_pages(pages)
        except MemoryError as exc:
            self._fail(device, f"no memory for rings: {exc}")
            return
        device.ring_gpa, device.ring_pages = gpa, pages
        half = ring_size
        Ring(self.kernel.view(gpa, half), initialize=True)
        Ring(self.kernel.view(gpa + half, half), initialize=True)
        device.state = DeviceState.OPENING
        first = gpa >> 12
        device.gpadl_id = self.protocol.create_gpadl(device.relid,
                                                     list(range(first, first + pages)))

    def gpadl_created(self, relid: int, gpadl_id: int, status: int) -> None:
        device = self.devices.get(relid)
        if device is None or device.gpadl_id != gpadl_id or device.state != DeviceState.OPENING:
            return
        if status != 0:
            self._fail(device, f"the host refused the ring GPADL (status {status:#x})")
            return
        self.protocol.open_channel(relid, gpadl_id, device.ring_pages // 2,
                                   target_vp=self.kernel.vp_index)

    def open_result(self, relid: int, status: int) -> None:
        device = self.devices.get(relid)
        if device is None or device.state != DeviceState.OPENING:
            return
        if status != 0:
            self._fail(device, f"the host refused OPENCHANNEL (status {status:#x})")
            return
        half = device.ring_pages << 11
        hv = self.kernel.hv
        connection_id = device.offer.connection_id
        channel = Channel(side="guest", relid=relid, interface_id=device.interface_id,
                          instance_id=device.instance_id,
                          outbound=Ring(self.kernel.view(device.ring_gpa, half)),
                          inbound=Ring(self.kernel.view(device.ring_gpa + half, half)),
                          signal=functools.partial(hv.WinHvSignalEvent, connection_id, 0),
                          name=f"{self.kernel.name}/relid {relid}",
                          sub_channel_index=device.offer.sub_channel_index,
                          connection_id=connection_id)
        channel.on_fault = lambda ch, reason: self._fail(device, f"channel: {reason}")
        device.channel = channel
        device.state = DeviceState.OPEN
        self.kernel.on_event(VMBUS_SINT, relid, channel.poll)
        driver = device.driver
        assert driver is not None
        try:
            driver.on_open(channel)
        except Exception as exc:
            self._fail(device, f"on_open raised {type(exc).__name__}: {exc}")
            return
        channel.on_packet = driver.on_packet
        self._changed("bound", device)
        channel.poll()

    def _fail(self, device: GuestDevice, reason: str) -> None:
        if device.state in (DeviceState.FAILED, DeviceState.REMOVED):
            return
        driver = device.driver_class.__qualname__ if device.driver_class else "no driver"
        self._error(f"device relid {device.relid} ({driver}): {reason}")
        was_bound = device.state == DeviceState.OPEN
        self._teardown(device, reason)
        device.state = DeviceState.FAILED
        device.error = reason
        if was_bound:
            self._changed("unbound", device)

    def _teardown(self, device: GuestDevice, reason: str) -> None:
        if device.driver is not None and device.state in (DeviceState.OPEN,
                                                          DeviceState.OPENING):
            try:
                device.driver.remove()
            except Exception as exc:
                self._error(f"device relid {device.relid}: remove() raised {exc}")
        if device.channel is not None:
            device.channel.close(reason)
            self.kernel.on_event(VMBUS_SINT, device.relid, None)
        if self.protocol.is_open(device.relid):
            self.protocol.close_channel(device.relid)
        if device.gpadl_id is not None and device.state in (DeviceState.OPEN,
                                                             DeviceState.OPENING):
            try:
                self.protocol.teardown_gpadl(device.relid, device.gpadl_id)
            except ValueError:
                self._free_rings(device)
        elif device.ring_pages:
            self._free_rings(device)

    def _free_rings(self, device: GuestDevice) -> None:
        if device.ring_pages:
            self.kernel.free_pages(device.ring_gpa, device.ring_pages)
            device.ring_pages = 0
        device.gpadl_id = None

    def gpadl_torn_down(self, gpadl_id: int) -> None:
        for device in self.devices.values():
            if device.gpadl_id == gpadl_id:
                self._free_rings(device)
                # Only a rescinded relid is released (§3.5(f)); on unload the host lets go of
                # every relid itself (§3.5(g)) and RELID_RELEASED would be out of place.
                if device.state == DeviceState.REMOVED and \
                        device.relid in self.protocol.rescinded:
                    self._release(device)
                return

    def rescinded(self, relid: int) -> None:
        device = self.devices.get(relid)
        if device is None:
            self.protocol.release_relid(relid)
            return
        self._remove(device, "rescinded by the host", release=True)

    def _remove(self, device: GuestDevice, reason: str, *, release: bool) -> None:
        was_bound = device.state == DeviceState.OPEN
        self._teardown(device, reason)
        device.state = DeviceState.REMOVED
        if was_bound:
            self._changed("unbound", device)
        self._changed("removed", device)
        if release and device.gpadl_id is None:
            self._release(device)

    def _release(self, device: GuestDevice) -> None:
        self.devices.pop(device.relid, None)
        try:
            self.protocol.release_relid(device.relid)
        except ValueError as exc:
            self._error(f"relid {device.relid}: {exc}")

    def modify_channel_response(self, relid: int, status: int) -> None:
        pass

    def unloaded(self) -> None:
        """UNLOAD_RESPONSE: the host released every channel and GPADL (§3.5(g)), so the rings
        of removed devices are ours again and the offers are gone with the connection."""
        self.connected_version = None
        self.offers_complete = False
        for device in list(self.devices.values()):
            if device.state == DeviceState.REMOVED:
                self._free_rings(device)
                del self.devices[device.relid]

    def protocol_error(self, error: Exception) -> None:
        self._error(f"protocol error from the host: {error}")

    # -- inspection ----------------------------------------------------------------------------

    def tree(self) -> list[dict[str, Any]]:
        """The enumeration tree: one entry per offered device, by relid."""
        return [self.devices[r].describe() for r in sorted(self.devices)]
