"""What every Python hypercall handler shares: resolving partitions and reading inputs."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from winhv._status import HvStatus
from winhv._structs import HV_PARTITION_ID_SELF

if TYPE_CHECKING:
    from winhv.drivers.hv._core import Partition
    from winhv.drivers.hv.hypervisor import Hypervisor

U64 = struct.Struct("<Q")
U32 = struct.Struct("<I")


class HypercallFailed(Exception):
    """Raised inside a handler to return ``status``; the handler wrapper converts it."""

    def __init__(self, status: HvStatus) -> None:
        super().__init__(status)
        self.status = status


def resolve(hv: Hypervisor, caller: Partition, partition_id: int, *, child_only: bool = False,
            allow_self: bool = True) -> Partition:
    """The partition ``partition_id`` names, as ``caller`` may address it.

    ``HV_PARTITION_ID_SELF`` and the caller's own id name the caller (when ``allow_self``);
    any other id must be a live child of the caller (ACCESS_DENIED for someone else's
    partition, INVALID_PARTITION_ID for an id that does not exist).
    """
    if partition_id in (HV_PARTITION_ID_SELF, caller.partition_id):
        if not allow_self or child_only:
            raise HypercallFailed(HvStatus.ACCESS_DENIED)
        return caller
    target = hv.partitions.get(partition_id)
    if target is None:
        raise HypercallFailed(HvStatus.INVALID_PARTITION_ID)
    if target.parent is not caller:
        raise HypercallFailed(HvStatus.ACCESS_DENIED)
    return target


def guarded(handler):
    """Wrap ``handler(hv, frame)`` so that :class:`HypercallFailed` becomes its status."""

    def run(hv, frame):
        try:
            return handler(hv, frame)
        except HypercallFailed as failed:
            return failed.status

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    run.__wrapped__ = handler
    return run
