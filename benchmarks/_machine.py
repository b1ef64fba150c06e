"""A small machine for benchmarks: a hypervisor, the root kernel, and one child with its
SynIC enabled, built through the same calls VID and a guest kernel make."""

from __future__ import annotations

from dataclasses import dataclass

from winhv._structs import HvPortType
from winhv.drivers.hv.hypervisor import Hypervisor
from winhv.drivers.kernel import Kernel, PageAllocator
from winhv.drivers.vid import Vid

#: Root pages below this are left alone (page 0 stays unused, as on real machines).
ROOT_FIRST_PAGE = 16


@dataclass
class Machine:
    hv: Hypervisor
    root: Kernel
    guest: Kernel
    vid: Vid
    child_id: int


def boot(*, bridge: str = "compiled", root_memory_mb: int = 256, guest_memory_mb: int = 16,
         ) -> Machine:
    """Boot a hypervisor with one running child whose SynIC (SINT2) is enabled."""
    hv = Hypervisor(root_memory_mb=root_memory_mb, bridge=bridge)
    root_pages = (root_memory_mb << 8) - ROOT_FIRST_PAGE
    root = Kernel(lambda i, o, vp: hv.handle(1, input_gpa=i, output_gpa=o, vp_index=vp),
                  PageAllocator(ROOT_FIRST_PAGE, root_pages, name="root"), name="root")
    hv.set_interrupt_handler(1, 0, root.interrupt)
    root.enable_synic()
    vid = Vid(root)
    part = vid.create_partition("bench", memory_mb=guest_memory_mb)
    pid = part.partition_id
    guest = Kernel(lambda i, o, vp: hv.handle(pid, input_gpa=i, output_gpa=o, vp_index=vp),
                   PageAllocator(16, part.memory_pages - 16, name="guest"), name="guest")
    hv.set_interrupt_handler(pid, 0, guest.interrupt)
    guest.enable_synic()
    return Machine(hv, root, guest, vid, pid)


def connect_root_to_guest(m: Machine, *, message_connection: int = 0x100,
                          event_connection: int = 0x101, flag: int = 5) -> None:
    """Ports in the guest (SINT2, VP 0) and root connections to them."""
    hv = m.root.hv
    statuses = [
        hv.WinHvCreatePort(m.child_id, 0x10, HvPortType.MESSAGE, connection_partition_id=1,
                           target_sint=2, target_vp=0),
        hv.WinHvCreatePort(m.child_id, 0x11, HvPortType.EVENT, connection_partition_id=1,
                           target_sint=2, target_vp=0, base_flag=flag, flag_count=1),
        hv.WinHvConnectPort(1, message_connection, m.child_id, 0x10, HvPortType.MESSAGE),
        hv.WinHvConnectPort(1, event_connection, m.child_id, 0x11, HvPortType.EVENT),
    ]
    if any(statuses):
        raise RuntimeError(f"wiring the benchmark ports failed: {statuses}")
