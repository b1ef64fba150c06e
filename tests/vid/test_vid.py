"""VID: partitions made and destroyed by the root through hypercalls only (fact sheet §1.4,
§1.7): privileges, pool deposit, initialize, RAM mapped at GPA 0, VPs; RAM zeroed before the
next VM gets it; a failure midway undoes everything made so far."""

from __future__ import annotations

import pytest

from winhv._calls import HvCallCode
from winhv._privileges import DEFAULT_CHILD_PRIVILEGES
from winhv._properties import PartitionProperty
from winhv._status import HvStatus
from winhv.drivers.vid import MAP_BATCH, VidError
from winhv.drivers.vmbus.loopback import boot_host


@pytest.fixture
def machine():
    hv, root, _host, vid = boot_host(root_memory_mb=64)
    return hv, root, vid


def _children(hv) -> list[int]:
    return [pid for pid, p in hv.partitions.items() if p.parent is not None]


def test_create_makes_an_active_partition_with_ram_and_vps(machine):
    hv, root, vid = machine
    free_before = root.allocator.free_pages
    part = vid.create_partition("vm", memory_mb=3, processors=2)
    assert part.name == "vm"
    assert part.memory_pages == 3 * 256
    assert part.memory_bytes == 3 << 20
    assert vid.partitions == {part.partition_id: part}
    assert _children(hv) == [part.partition_id]
    # Pool (one page plus one per VP) and RAM both came out of the root's allocator.
    assert len(part.pool_pages) == 1 + 2
    assert root.allocator.free_pages == free_before - 3 - part.memory_pages
    status, privileges = root.hv.WinHvGetPartitionProperty(
        part.partition_id, PartitionProperty.PRIVILEGE_FLAGS)
    assert status == HvStatus.SUCCESS
    assert privileges == int(DEFAULT_CHILD_PRIVILEGES)
    for vp in (0, 1):
        hv.handle(part.partition_id, input_gpa=0, output_gpa=0x1000, vp_index=vp)
    with pytest.raises(ValueError, match="no VP 2"):
        hv.handle(part.partition_id, input_gpa=0, output_gpa=0x1000, vp_index=2)


def test_guest_ram_is_the_root_pages_vid_mapped(machine):
    hv, root, vid = machine
    part = vid.create_partition("vm", memory_mb=4)
    assert part.memory_pages > MAP_BATCH            # several MapGpaPages calls
    guest = hv.handle(part.partition_id, input_gpa=0, output_gpa=0x1000)
    last = part.memory_bytes - 8
    guest.memory.write(last, b"last8byt")
    guest.memory.write(0x5000, b"guest")
    base = part.root_ram_page << 12
    assert root.memory.read(base + last, 8) == b"last8byt"
    assert root.memory.read(base + 0x5000, 5) == b"guest"
    root.memory.write(base + 0x9000, b"root")
    assert guest.memory.read(0x9000, 4) == b"root"
    assert not guest.memory.is_mapped(part.memory_bytes, 1)


def test_destroy_returns_every_page_and_the_partition_is_gone(machine):
    hv, root, vid = machine
    free_before = root.allocator.free_pages
    part = vid.create_partition("vm", memory_mb=2)
    vid.destroy_partition(part.partition_id)
    assert vid.partitions == {}
    assert _children(hv) == []
    assert root.allocator.free_pages == free_before
    # The pool pages are the root's RAM again.
    assert root.memory.is_mapped(part.pool_pages[0] << 12, len(part.pool_pages) << 12)


def test_the_next_vm_gets_zeroed_ram(machine):
    hv, _root, vid = machine
    first = vid.create_partition("first", memory_mb=2)
    guest = hv.handle(first.partition_id, input_gpa=0, output_gpa=0x1000)
    guest.memory.write(0x3000, b"secret" * 100)
    guest.memory.write(first.memory_bytes - 6, b"secret")
    vid.destroy_partition(first.partition_id)
    second = vid.create_partition("second", memory_mb=2)
    assert second.root_ram_page == first.root_ram_page   # first fit: the very same pages
    guest = hv.handle(second.partition_id, input_gpa=0, output_gpa=0x1000)
    assert guest.memory.read(0, second.memory_bytes) == bytes(second.memory_bytes)


def test_a_new_vm_never_sees_what_the_root_left_in_pages_it_freed(machine):
    # Pages the root used and freed join the free tail the next VM's RAM is cut from: VID
    # clears them (its guest's allocator counts on RAM it has never handed out reading zero).
    hv, root, vid = machine
    gpa = root.alloc_pages(4)
    root.memory.write(gpa, b"root data" * 1000)
    root.free_pages(gpa, 4)
    part = vid.create_partition("vm", memory_mb=2)
    assert part.root_ram_page < (gpa >> 12) + 4     # RAM starts among those pages
    guest = hv.handle(part.partition_id, input_gpa=0, output_gpa=0x1000)
    assert guest.memory.read(0, part.memory_bytes) == bytes(part.memory_bytes)


def test_vms_are_isolated_from_each_other(machine):
    hv, _root, vid = machine
    a = vid.create_partition("a", memory_mb=1)
    b = vid.create_partition("b", memory_mb=1)
    assert a.root_ram_page + a.memory_pages <= b.root_ram_page
    ha = hv.handle(a.partition_id, input_gpa=0, output_gpa=0x1000)
    hb = hv.handle(b.partition_id, input_gpa=0, output_gpa=0x1000)
    ha.memory.write(0x2000, b"only a")
    assert hb.memory.read(0x2000, 6) == bytes(6)


@pytest.mark.parametrize("code", [
    HvCallCode.SET_PARTITION_PROPERTY,
    HvCallCode.DEPOSIT_MEMORY,
    HvCallCode.INITIALIZE_PARTITION,
    HvCallCode.MAP_GPA_PAGES,
    HvCallCode.CREATE_VP,
])
def test_a_failure_midway_tears_everything_down(machine, code):
    hv, root, vid = machine
    free_before = root.allocator.free_pages
    hv.bridge.inject_fault(code, HvStatus.INSUFFICIENT_MEMORY)
    with pytest.raises(VidError, match=r"failed: .*INSUFFICIENT_MEMORY") as info:
        vid.create_partition("doomed", memory_mb=2)
    assert "for partition 0x" in str(info.value)
    assert vid.partitions == {}
    assert _children(hv) == []
    assert root.allocator.free_pages == free_before
    # Nothing was left half-made: the next create works and gets the same pages.
    part = vid.create_partition("fine", memory_mb=2)
    assert _children(hv) == [part.partition_id]


def test_a_failed_second_vp_tears_down_the_first(machine):
    hv, root, vid = machine
    free_before = root.allocator.free_pages
    hv.bridge.inject_fault(HvCallCode.CREATE_VP, HvStatus.INVALID_PARAMETER, count=1)
    with pytest.raises(VidError, match=r"HvCallCreateVp\(0\)"):
        vid.create_partition("doomed", memory_mb=1, processors=3)
    assert _children(hv) == []
    assert root.allocator.free_pages == free_before


def test_create_partition_failing_first_needs_no_teardown(machine):
    hv, root, vid = machine
    free_before = root.allocator.free_pages
    hv.bridge.inject_fault(HvCallCode.CREATE_PARTITION, HvStatus.ACCESS_DENIED)
    with pytest.raises(VidError, match="HvCallCreatePartition failed"):
        vid.create_partition("doomed", memory_mb=1)
    assert root.allocator.free_pages == free_before


def test_running_out_of_root_memory_tears_down(machine):
    hv, root, vid = machine
    free_before = root.allocator.free_pages
    with pytest.raises(MemoryError, match="no run of"):
        vid.create_partition("huge", memory_mb=1024)
    assert _children(hv) == []
    assert root.allocator.free_pages == free_before


@pytest.mark.parametrize(("memory_mb", "processors"), [(0, 1), (-1, 1), (1, 0)])
def test_bad_sizes_are_refused_before_any_hypercall(machine, memory_mb, processors):
    hv, _root, vid = machine
    with pytest.raises(ValueError, match="must be positive"):
        vid.create_partition("bad", memory_mb=memory_mb, processors=processors)
    assert _children(hv) == []


def test_vid_works_only_through_the_roots_hypercalls(machine):
    """Every change VID makes to the hypervisor is a hypercall the root made through its WinHv
    handle, in the TLFS order (§1.7), each one succeeding: nothing reaches into the
    hypervisor's objects around the bridge."""
    hv, root, vid = machine
    assert type(root.hv).__name__ == "WinHv"      # VID's only door: the root's handle
    calls: list[tuple[int, str, int]] = []
    hv.bridge.tracer = lambda pid, control, _rdx, _r8, result: calls.append(
        (pid, HvCallCode(control & 0xFFFF).name, result & 0xFFFF))
    part = vid.create_partition("vm", memory_mb=3, processors=2)
    maps = -(-part.memory_pages // MAP_BATCH)
    assert calls == [(root.partition_id, name, HvStatus.SUCCESS) for name in (
        ["CREATE_PARTITION", "SET_PARTITION_PROPERTY", "DEPOSIT_MEMORY",
         "INITIALIZE_PARTITION"] + ["MAP_GPA_PAGES"] * maps + ["CREATE_VP"] * 2)]
    calls.clear()
    vid.destroy_partition(part.partition_id)
    assert calls == [(root.partition_id, "FINALIZE_PARTITION", HvStatus.SUCCESS),
                     (root.partition_id, "DELETE_PARTITION", HvStatus.SUCCESS)]
