"""The operating-system side of a partition, root or guest: what a kernel owns is its WinHv
handle, its own memory (with a page allocator) and its SynIC pages; it reaches the hypervisor
through nothing else. VMBus, VSPs, VSCs and ICs run on top of a :class:`Kernel`.
"""

from __future__ import annotations

from winhv.drivers.kernel._kernel import VMBUS_VECTOR, Kernel, KernelError
from winhv.drivers.kernel._pages import OutOfPages, PageAllocator

__all__ = ["VMBUS_VECTOR", "Kernel", "KernelError", "OutOfPages", "PageAllocator"]
