"""Port and connection hypercalls (fact sheet §1.7, §2.6): CreatePort, DeletePort,
ConnectPort, DisconnectPort.

A port belongs to the receiving partition and fixes the target VP and SINT; a connection
belongs to the sender and binds one of its connection ids to a port. Message and event ports
are implemented; monitor and doorbell ports answer INVALID_PARAMETER.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from winhv._status import HvStatus
from winhv._structs import HV_ANY_VP, HvPortType
from winhv.drivers.hv._calls_common import guarded, resolve
from winhv.drivers.hv._core import STATE_ACTIVE, STATE_CREATED, Connection, Port
from winhv.drivers.hv._vp_calls import MAX_VPS

if TYPE_CHECKING:
    from winhv._bridge import HypercallFrame
    from winhv.drivers.hv.hypervisor import Hypervisor

_CREATE_PORT = struct.Struct("<QIBBHQ")          # header up to PortInfo @24
_PORT_INFO = struct.Struct("<I4xIIHHI")          # type, sint, vp, base flag, flag count, rsvd
_CONNECT_PORT = struct.Struct("<QIB3xQI4xI")     # ... + ConnectionInfo.PortType @32
_DELETE_PORT = struct.Struct("<QI4x")
_ID_MASK = 0x00FF_FFFF
_LIVE = (STATE_CREATED, STATE_ACTIVE)


@guarded
def create_port(hv: Hypervisor, frame: HypercallFrame) -> int:
    """HvCallCreatePort: a message or event port in the caller or one of its children."""
    port_pid, port_id, vtl, min_vtl, _rsvd, conn_pid = _CREATE_PORT.unpack_from(frame.input, 0)
    ptype, sint, vp, base, count, _ = _PORT_INFO.unpack_from(frame.input, 24)
    owner = resolve(hv, frame.caller, port_pid)
    if owner.state not in _LIVE:
        return HvStatus.INVALID_PARTITION_STATE
    if port_id & ~_ID_MASK or port_id in owner.ports:
        return HvStatus.INVALID_PORT_ID
    if vtl or min_vtl:
        return HvStatus.INVALID_PARAMETER
    if sint >= 16 or (vp != HV_ANY_VP and vp >= MAX_VPS):
        return HvStatus.INVALID_PARAMETER
    if ptype == HvPortType.MESSAGE:
        port = Port(owner, port_id, ptype, sint, vp)
    elif ptype == HvPortType.EVENT:
        if count == 0 or base + count > 2048:
            return HvStatus.INVALID_PARAMETER
        port = Port(owner, port_id, ptype, sint, vp, base, count)
    else:
        return HvStatus.INVALID_PARAMETER
    port.connection_partition = conn_pid
    owner.ports[port_id] = port
    return HvStatus.SUCCESS


@guarded
def delete_port(hv: Hypervisor, frame: HypercallFrame) -> int:
    """HvCallDeletePort: the port's queued messages and buffers are freed (§2.4.8)."""
    port_pid, port_id = _DELETE_PORT.unpack_from(frame.input, 0)
    owner = resolve(hv, frame.caller, port_pid)
    port = owner.ports.pop(port_id, None)
    if port is None:
        return HvStatus.INVALID_PORT_ID
    hv._delete_port(port)
    return HvStatus.SUCCESS


@guarded
def connect_port(hv: Hypervisor, frame: HypercallFrame) -> int:
    """HvCallConnectPort: bind a connection id of the sender to an existing port."""
    conn_pid, conn_id, vtl, port_pid, port_id, info_type = _CONNECT_PORT.unpack_from(
        frame.input, 0)
    sender = resolve(hv, frame.caller, conn_pid)
    if sender.state not in _LIVE:
        return HvStatus.INVALID_PARTITION_STATE
    if vtl:
        return HvStatus.INVALID_PARAMETER
    if conn_id & ~_ID_MASK or conn_id in sender.connections:
        return HvStatus.INVALID_CONNECTION_ID
    owner = hv.partitions.get(port_pid)
    port = owner.ports.get(port_id) if owner is not None else None
    if port is None or port.deleted:
        return HvStatus.INVALID_PORT_ID
    if port.connection_partition not in (sender.partition_id, 0):
        return HvStatus.ACCESS_DENIED
    if info_type != port.port_type:
        return HvStatus.INVALID_PARAMETER
    sender.add_connection(Connection(sender, conn_id, port))
    return HvStatus.SUCCESS


@guarded
def disconnect_port(hv: Hypervisor, frame: HypercallFrame) -> int:
    """HvCallDisconnectPort: forget a connection; queued messages stay queued (§2.4.8)."""
    conn_pid, conn_id = _DELETE_PORT.unpack_from(frame.input, 0)
    sender = resolve(hv, frame.caller, conn_pid)
    if sender.remove_connection(conn_id) is None:
        return HvStatus.INVALID_CONNECTION_ID
    return HvStatus.SUCCESS


HANDLERS = {
    0x0095: create_port,
    0x0058: delete_port,
    0x0096: connect_port,
    0x005B: disconnect_port,
}

__all__ = ["HANDLERS"]
