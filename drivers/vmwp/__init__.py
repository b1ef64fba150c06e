"""VMWP: one worker per running VM. It owns that VM's partition (through VID), its VMBus
server and device VSPs and IC host sides, and it brings up the guest: the child partition's
kernel, VMBus client and VSC drivers (Hyper-V's ``vmwp.exe``)."""

from __future__ import annotations

from winhv.drivers.vmwp._port import GuestTimer, PartitionPort
from winhv.drivers.vmwp._worker import Worker, WorkerError

__all__ = ["GuestTimer", "PartitionPort", "Worker", "WorkerError"]
