"""VID: the root's virtualization infrastructure driver. It creates partitions, their virtual
processors and their guest memory for VMMS and the VM workers — only through WinHv hypercalls
from the root, never by reaching into the hypervisor (Hyper-V's ``vid.sys``)."""

from __future__ import annotations

from winhv.drivers.vid._services import MemoryReserve, VidService
from winhv.drivers.vid._vid import MAP_BATCH, Vid, VidError, VidPartition

__all__ = ["MAP_BATCH", "MemoryReserve", "Vid", "VidError", "VidPartition", "VidService"]
