"""PostMessage, SignalEvent and GetPartitionId written in Python.

The compiled bridge never calls these: the C versions in ``_core.pyx`` are registered there.
They serve the reference bridge, so that the same hypervisor runs end to end without compiled
dispatch, and the two implementations are tested against each other. Routing and validation are
written out here; the final write into the target's SIM slot or SIEF page goes through the VP's
delivery primitive (the "hardware"), shared by both paths.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from winhv._message import HV_MESSAGE_PAYLOAD_SIZE
from winhv._status import HvStatus
from winhv._structs import HvPortType
from winhv.drivers.hv._calls_common import U64
from winhv.drivers.hv._core import STATE_ACTIVE

if TYPE_CHECKING:
    from winhv._bridge import HypercallFrame
    from winhv.drivers.hv.hypervisor import Hypervisor

_POST = struct.Struct("<IIII")
_SIGNAL = struct.Struct("<IHH")


def _route(caller, connection_id: int, port_type: int):
    if connection_id & 0xFF00_0000:
        return None, HvStatus.INVALID_CONNECTION_ID
    connection = caller.connections.get(connection_id)
    if connection is None:
        return None, HvStatus.INVALID_CONNECTION_ID
    port = connection.port
    if port.deleted or port.port_type != port_type or port.partition.state != STATE_ACTIVE:
        return None, HvStatus.INVALID_PORT_ID
    return port, HvStatus.SUCCESS


def _vp_of(port):
    partition = port.partition
    if port.target_vp == 0xFFFF_FFFF:
        return next((vp for vp in partition.vps if vp is not None and vp.scontrol & 1), None)
    return partition.vp(port.target_vp) if port.target_vp < len(partition.vps) else None


def post_message(hv: Hypervisor, frame: HypercallFrame) -> int:
    """HvCallPostMessage (§1.7)."""
    connection_id, reserved, message_type, size = _POST.unpack_from(frame.input, 0)
    if reserved or message_type == 0 or message_type & 0x8000_0000 \
            or size > HV_MESSAGE_PAYLOAD_SIZE:
        return HvStatus.INVALID_PARAMETER
    port, status = _route(frame.caller, connection_id, HvPortType.MESSAGE)
    if status:
        return status
    vp = _vp_of(port)
    if vp is None:
        return HvStatus.INVALID_VP_INDEX
    return vp.post_message(port.target_sint, port, message_type, frame.input[16:16 + size])


def signal_event(hv: Hypervisor, frame: HypercallFrame) -> int:
    """HvCallSignalEvent (§1.7)."""
    connection_id, flag, reserved = _SIGNAL.unpack_from(frame.input, 0)
    if reserved:
        return HvStatus.INVALID_PARAMETER
    port, status = _route(frame.caller, connection_id, HvPortType.EVENT)
    if status:
        return status
    if flag >= port.flag_count:
        return HvStatus.INVALID_PARAMETER
    vp = _vp_of(port)
    if vp is None:
        return HvStatus.INVALID_VP_INDEX
    port.signals += 1
    return vp.signal_flag(port.target_sint, port.base_flag + flag)


def get_partition_id(hv: Hypervisor, frame: HypercallFrame) -> int:
    """HvCallGetPartitionId: the caller's own id."""
    U64.pack_into(frame.output, 0, frame.caller.partition_id)
    return HvStatus.SUCCESS


HANDLERS = {0x005C: post_message, 0x005D: signal_event, 0x0046: get_partition_id}

__all__ = ["HANDLERS"]
