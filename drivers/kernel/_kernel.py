"""A partition's kernel: its WinHv handle, page allocator, SynIC pages and interrupt dispatch.

Set-up follows Linux's per-CPU SynIC enable order (fact sheet §2.7): SIMP, SIEFP, then the
VMBus SINT with its vector (0xF3, auto-EOI), then SCONTROL. All of it through
``WinHvSetVpRegisters`` on the kernel's own handle.

Interrupt handling follows the TLFS recommendation (§2.4 step 7, §2.5): for a message, copy it
out, clear the slot's type, and write EOM if MessagePending was set, then act on it; for event
flags, atomically take the set flags, then act on each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from winhv._message import HV_SINT_COUNT
from winhv._registers import SINT_AUTO_EOI, HvRegisterName
from winhv._status import HvStatus
from winhv.drivers.kernel._pages import PageAllocator
from winhv.drivers.kernel._synic import SynicDispatcher

__all__ = ["VMBUS_VECTOR", "Kernel", "KernelError"]

#: The x86 vector Linux uses for the VMBus SINT (HYPERVISOR_CALLBACK_VECTOR).
VMBUS_VECTOR = 0xF3
_PAGE = 4096
_log = logging.getLogger("winhv.kernel")

MessageHandler = Callable[[bytes], Any]
EventHandler = Callable[[], Any]
HandleFactory = Callable[[int, int, int], Any]


class KernelError(RuntimeError):
    """A kernel-level failure (a hypercall the kernel cannot do without failed)."""


class Kernel:
    """The OS of one partition (root or guest), single VP.

    ``open_handle(input_gpa, output_gpa, vp_index)`` is the "CPU": it returns the WinHv handle
    of this partition's VP; the kernel picks the two hypercall pages from its own allocator.
    """

    def __init__(self, open_handle: HandleFactory, allocator: PageAllocator, *,
                 name: str = "", vp_index: int = 0, clock: Any = None,
                 power_off: Callable[[], Any] | None = None) -> None:
        self.name = name
        #: The VM's power-off "hardware" (ACPI): what :meth:`power_off` pulls.
        self._power_off_line = power_off
        #: Run in reverse order by :meth:`shutdown` (drivers register their cleanup here).
        self.at_shutdown: list[Callable[[], Any]] = []
        self.shutting_down = False
        #: The VM's timer hardware: ``call_later(delay_ns, callback)`` and ``now``.
        self.clock = clock
        self.allocator = allocator
        self.vp_index = vp_index
        pages = allocator.alloc(2)
        self.hv = open_handle(pages << 12, (pages + 1) << 12, vp_index)
        self.memory = self.hv.memory
        self.partition_id = self.hv.partition_id
        self._synic: SynicDispatcher | None = None
        self._pending_messages: dict[int, MessageHandler | None] = {}
        self._pending_events: list[tuple[int, int, EventHandler | None]] = []
        #: Called as ``on_fault(where, exc)`` when a handler raises; default: log it.
        self.on_fault: Callable[[str, BaseException], Any] | None = None

    def __repr__(self) -> str:
        return f"<Kernel {self.name or self.partition_id} vp={self.vp_index}>"

    # -- memory --------------------------------------------------------------------------------

    def alloc_pages(self, count: int = 1, *, zero: bool = True) -> int:
        """GPA of ``count`` new contiguous pages of this partition's memory; with ``zero``
        they read zero (pages the allocator knows were never used are not written)."""
        page, stale = self.allocator.alloc_run(count)
        gpa = page << 12
        if zero and stale:
            self.memory.zero(gpa, stale * _PAGE)
        return gpa

    def free_pages(self, gpa: int, count: int = 1) -> None:
        self.allocator.free(gpa >> 12, count)

    def view(self, gpa: int, size: int) -> memoryview:
        """Zero-copy view of this partition's own memory."""
        return self.memory.view(gpa, size)

    # -- power -------------------------------------------------------------------------------

    #: Virtual ns between accepting a shutdown request and starting the shutdown sequence.
    SHUTDOWN_DELAY_NS = 1_000_000

    def on_shutdown_request(self, kind: str, reason: int, message: str = "") -> bool:
        """The shutdown IC's question: accept (True) or refuse. Accepting starts
        :meth:`shutdown` shortly after the answer is sent. Override to refuse."""
        if self.shutting_down:
            return True
        self.shutting_down = True
        self.call_later(self.SHUTDOWN_DELAY_NS, self.shutdown)
        return True

    def shutdown(self) -> None:
        """Run the shutdown sequence (drivers unload, VMBus disconnects) and power off."""
        self.shutting_down = True
        for step in reversed(self.at_shutdown):
            self._run("shutdown", step)
        self.power_off()

    def power_off(self) -> None:
        """Turn the VM off (the guest's last act). Without the line wired, nothing happens."""
        if self._power_off_line is not None:
            self._power_off_line()

    def call_later(self, delay_ns: int, callback: Callable[[], Any]) -> Any:
        """Run ``callback`` after ``delay_ns`` of virtual time (the VM's timer)."""
        if self.clock is None:
            raise KernelError(f"{self!r} has no timer")
        return self.clock.call_later(delay_ns, lambda: self._run("timer", callback))

    # -- SynIC ---------------------------------------------------------------------------------

    def enable_synic(self, sints: dict[int, int] | None = None) -> None:
        """Enable the SynIC with the SIM/SIEF pages in fresh pages of this partition's memory.

        ``sints`` maps SINT -> vector (default: the VMBus SINT 2 -> 0xF3).
        """
        sints = {2: VMBUS_VECTOR} if sints is None else sints
        simp = self.alloc_pages()
        siefp = self.alloc_pages()
        values = [(HvRegisterName.SIMP, simp | 1), (HvRegisterName.SIEFP, siefp | 1)]
        for sint, vector in sints.items():
            if not 0 <= sint < HV_SINT_COUNT or not 16 <= vector <= 255:
                raise ValueError(f"bad SINT {sint} or vector {vector:#x}")
            values.append((HvRegisterName.SINT0 + sint, vector | SINT_AUTO_EOI))
        values.append((HvRegisterName.SCONTROL, 1))
        status = self.hv.WinHvSetVpRegisters(values)
        if status != HvStatus.SUCCESS:
            raise KernelError(f"{self!r}: enabling the SynIC failed: {status}")
        self._synic = SynicDispatcher(self.view(simp, _PAGE), self.view(siefp, _PAGE),
                                      self.hv.WinHvSignalEom, self._fault)
        for sint, vector in sints.items():
            self._synic.route(sint, vector)
        for sint, handler in self._pending_messages.items():
            self._synic.on_message(sint, handler)
        for sint, flag, handler in self._pending_events:
            self._synic.on_event(sint, flag, handler)
        self._pending_messages.clear()
        self._pending_events.clear()

    def on_message(self, sint: int, handler: MessageHandler | None) -> None:
        """Call ``handler(message)`` (the 256-byte HV_MESSAGE, copied) for SINTn messages."""
        if not 0 <= sint < HV_SINT_COUNT:
            raise ValueError(f"SINT {sint} is outside 0..15")
        if self._synic is None:
            self._pending_messages[sint] = handler
        else:
            self._synic.on_message(sint, handler)

    def on_event(self, sint: int, flag: int, handler: EventHandler | None) -> None:
        """Call ``handler()`` when event flag ``flag`` of SINTn is found set."""
        if not 0 <= flag < 2048 or not 0 <= sint < HV_SINT_COUNT:
            raise ValueError(f"SINT {sint} / flag {flag} is outside 0..15 / 0..2047")
        if self._synic is None:
            self._pending_events.append((sint, flag, handler))
        else:
            self._synic.on_event(sint, flag, handler)

    def interrupt(self, vector: int) -> None:
        """The ISR: take the event flags, then the messages, of every SINT on ``vector``."""
        if self._synic is not None:
            self._synic.interrupt(vector)

    def poll(self) -> None:
        """Handle whatever is pending on every SINT, as if each had interrupted."""
        if self._synic is not None:
            for vector in self._synic.vectors():
                self._synic.interrupt(vector)

    @property
    def messages_received(self) -> int:
        return self._synic.messages_received if self._synic is not None else 0

    @property
    def events_received(self) -> int:
        return self._synic.events_received if self._synic is not None else 0

    def _fault(self, where: str, exc: BaseException) -> None:
        if self.on_fault is not None:
            self.on_fault(where, exc)
        else:
            _log.error("%r: %s handler raised", self, where, exc_info=exc)

    def _run(self, where: str, handler: Callable[..., Any], *args: Any) -> None:
        try:
            handler(*args)
        except Exception as exc:  # a handler's fault is its driver's; the kernel goes on
            if self.on_fault is not None:
                self.on_fault(where, exc)
            else:
                _log.exception("%r: %s handler %r raised", self, where, handler)
