"""The contract between the host's VMBus state machine and its I/O layer.

:class:`ServerNotifier` is what :class:`~winhv.drivers.vmbus.protocol.ServerProtocol` calls
(synchronously, from inside ``receive`` or a host API call); the values here are what those
calls carry: the host's offer (:class:`OfferParams`), a validated open (:class:`OpenRequest`),
an accepted connection (:class:`ConnectionInfo`), and where a channel stands
(:class:`ChannelState`). Kept apart from the state machine so the I/O layer and a test's fake
host depend on the contract, not on the machine.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from ._gpadl import Gpadl
from ._messages import ChannelMessage, ProtocolError
from ._versions import FeatureFlag, VmbusVersion

__all__ = ["ChannelState", "ConnectionInfo", "OfferParams", "OpenRequest", "ServerNotifier"]


class ChannelState(Enum):
    """Where a channel stands, seen from the host."""

    #: Offered (perhaps not yet to the guest) and not open.
    CLOSED = "closed"
    #: The guest sent OPENCHANNEL; the device has not answered yet.
    OPENING = "opening"
    #: Open: the device runs, interrupts flow.
    OPEN = "open"
    #: The host rescinded it; waiting for the guest's RELID_RELEASED.
    REVOKED = "revoked"
    #: The guest released the relid without a rescind; offered again on the next connection.
    CLIENT_RELEASED = "client released"


@dataclass(slots=True, frozen=True)
class OfferParams:
    """What the host offers: the fields of OFFERCHANNEL it chooses (§3.3)."""

    interface_id: uuid.UUID
    instance_id: uuid.UUID
    #: ``OfferFlag`` bits; 0x2/0x4/0x8 reach the guest only with the matching feature.
    flags: int = 0
    mmio_megabytes: int = 0
    #: Device-specific data, at most 120 bytes.
    user_defined: bytes = b""
    #: 0 for a primary channel, 1..n for sub-channels (same interface and instance ids).
    sub_channel_index: int = 0
    mmio_megabytes_optional: int = 0


@dataclass(slots=True, frozen=True)
class OpenRequest:
    """A validated OPENCHANNEL, handed to the host with the ring GPADL already resolved."""

    relid: int
    open_id: int
    #: The GPADL holding both rings: the guest->host ring first, then the host->guest one.
    gpadl: Gpadl
    target_vp: int
    #: Page offset of the host->guest ring inside ``gpadl`` (1 .. pages - 1).
    downstream_page_offset: int
    user_data: bytes
    #: OpenChannel2 (6.0) fields: ``None`` in the 148-byte form and where the feature that
    #: makes the field valid was not granted (guest_specified_signal_parameters for
    #: ``connection_id``/``event_flag``, channel_interrupt_redirection for ``flags``).
    connection_id: int | None = None
    event_flag: int | None = None
    flags: int | None = None


@dataclass(slots=True, frozen=True)
class ConnectionInfo:
    """What an accepted INITIATE_CONTACT established; the I/O layer needs it to deliver."""

    version: VmbusVersion
    #: Feature flags granted (always empty below 6.0).
    features: FeatureFlag
    #: VP that receives host control messages (honoured from 3.0; 0 before).
    target_vcpu: int
    #: SINT for host control messages: the guest's ``msg_sint`` from 5.0, else 2.
    message_sint: int
    #: Connection id the guest posts later messages to.
    message_connection_id: int
    #: Legacy interrupt page GPA (below 5.0), else 0.
    interrupt_page: int
    monitor_page1: int
    monitor_page2: int
    client_id: uuid.UUID | None = None


class ServerNotifier(Protocol):
    """What ``ServerProtocol`` needs from the host's I/O layer. Each method is called
    synchronously from inside ``receive`` or a host API call.
    """

    def send(self, message: ChannelMessage) -> None:
        """Post ``message`` to the guest (control messages: target_vcpu, message SINT)."""

    def connected(self, info: ConnectionInfo) -> None:
        """A version was accepted; called before the VERSION_RESPONSE is sent."""

    def gpadl_created(self, gpadl: Gpadl) -> int:
        """The guest described ``gpadl``; map it. Return 0, or a failure creation_status."""
        ...

    def gpadl_torn_down(self, relid: int, gpadl_id: int) -> None:
        """Forget a GPADL mapped earlier (teardown, release, unload or reconnect)."""

    def open_channel(self, relid: int, request: OpenRequest) -> int | None:
        """Open the device. Return a status now (0 = success) or ``None`` and later call
        ``ServerProtocol.open_result``.
        """
        ...

    def close_channel(self, relid: int) -> None:
        """Close the device of an open (or opening) channel."""

    def modify_channel(self, relid: int, target_vp: int) -> int:
        """Retarget the channel's interrupts to ``target_vp``; return a status (0 = success)."""
        ...

    def relid_released(self, relid: int) -> None:
        """A rescinded channel is gone for good; its relid may be reused."""

    def unloaded(self) -> None:
        """The connection ended (UNLOAD or a new INITIATE_CONTACT); everything was released."""

    def protocol_error(self, error: ProtocolError) -> None:
        """The guest sent something invalid; the state machine ignored it."""
