"""A host: the machine (hypervisor), the root OS (kernel, VMBus host, VID) and VMMS."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from winhv.drivers.vid import VidService
from winhv.drivers.vmbus.loopback import boot_host
from winhv.drivers.vmms._vmms import Vmms

__all__ = ["Host"]


class Host:
    """Boots a hypervisor and the root, and runs VMs through :attr:`vmms`.

    Time is virtual: :meth:`run_for` advances the deterministic scheduler; nothing waits on
    the wall clock.
    """

    def __init__(self, *, root_memory_mb: int = 2048, vmbus_version: Any = None,
                 bridge: Any = None, services: Sequence[VidService] = (),
                 notify: Callable[..., Any] | None = None) -> None:
        self.hypervisor, self.root, self.vmbus, self.vid = boot_host(
            root_memory_mb=root_memory_mb, bridge=bridge)
        self.vid.services.extend(services)
        self.vmbus_version = vmbus_version
        self.scheduler = self.hypervisor.scheduler
        self.vmms = Vmms(self, notify=notify)

    def run_until_idle(self) -> int:
        """Deliver everything pending now; update VM states."""
        steps = self.scheduler.run_until_idle()
        self.vmms.update()
        return steps

    def run_for(self, duration_ns: int, *, until: Callable[[], bool] | None = None,
                progress: Callable[[int], Any] | None = None) -> int:
        """Advance virtual time by ``duration_ns`` (or until ``until()``), timer by timer,
        updating VM states after every step. ``progress(now)`` is called now and then."""
        scheduler = self.scheduler
        end = scheduler.now + duration_ns
        steps = self.run_until_idle()
        while until is None or not until():
            deadline = scheduler.next_deadline()
            if deadline is None or deadline > end:
                break
            steps += scheduler.run_until(deadline)
            self.vmms.update()
            if progress is not None:
                progress(scheduler.now)
        if until is None or not until():
            scheduler.now = max(scheduler.now, end)
        return steps

    def settle(self, max_ns: int = 50_000_000) -> int:
        """Run until nothing is due within ``max_ns`` (boot, shutdown sequences)."""
        scheduler = self.scheduler
        steps = self.run_until_idle()
        while True:
            deadline = scheduler.next_deadline()
            if deadline is None or deadline > scheduler.now + max_ns:
                # An update may have started something (a restart boots its VM again).
                more = self.run_until_idle()
                if not more:
                    return steps
                steps += more
                continue
            steps += scheduler.run_until(deadline)
            self.vmms.update()
