"""The hypervisor core: partitions, guest physical memory, virtual processors, the SynIC, ports
and connections, the hypercall handlers and the deterministic scheduler (Hyper-V's ``hvix64``).

:class:`Hypervisor` boots the root partition; everything else happens through hypercalls made on
WinHv handles (:meth:`Hypervisor.handle`). :class:`Scheduler` is the virtual clock that orders
interrupt delivery and timers.
"""

from __future__ import annotations

from winhv.drivers.hv.calls import IMPLEMENTED_HYPERCALLS
from winhv.drivers.hv.hypervisor import ROOT_PARTITION_ID, Hypervisor
from winhv.drivers.hv.scheduler import Scheduler, SchedulerError, Timer

__all__ = [
    "IMPLEMENTED_HYPERCALLS",
    "ROOT_PARTITION_ID",
    "Hypervisor",
    "Scheduler",
    "SchedulerError",
    "Timer",
]
