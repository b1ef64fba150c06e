"""Memory through hypercalls (fact sheet §1.7): the partition pool (deposit, withdraw,
balance), MapGpaPages/UnmapGpaPages with zero-copy sharing, and a partition reaching only its
own memory."""

from __future__ import annotations

from support.hv import (
    CHILD_OUTPUT_GPA,
    CHILD_PAGES,
    POOL_PAGES_PER_CHILD,
    Machine,
    boot,
    control,
    ok,
)

from winhv.abi import HvCallCode, HvStatus

BAD = HvStatus.INVALID_PARAMETER


def balance(machine: Machine, pid: int) -> tuple[int, int]:
    status, value = machine.root.WinHvGetMemoryBalance(pid)
    ok(status)
    return value


def test_pool_balance_follows_deposit_initialize_and_vps(bridge_kind: str) -> None:
    machine = boot(bridge_kind, children=0)
    root = machine.root
    status, pid = root.WinHvCreatePartition()
    ok(status)
    assert balance(machine, pid) == (0, 0)
    ok(root.WinHvDepositMemory(pid, range(0x200, 0x208)))
    assert balance(machine, pid) == (8, 0)
    ok(root.WinHvInitializePartition(pid))
    assert balance(machine, pid) == (7, 1)
    ok(root.WinHvCreateVp(pid, 0))
    ok(root.WinHvCreateVp(pid, 1))
    assert balance(machine, pid) == (5, 3)
    ok(root.WinHvDeleteVp(pid, 1))
    assert balance(machine, pid) == (6, 2)


def test_deposited_pages_leave_the_depositor_until_withdrawn(machine: Machine) -> None:
    root_memory = machine.hv.root.memory
    pid = machine.guests[0].partition_id
    root_memory.write(0x300 << 12, b"mine")
    ok(machine.root.WinHvDepositMemory(pid, [0x300, 0x301]))
    assert not root_memory.is_mapped(0x300 << 12, 1)
    available, _ = balance(machine, pid)
    status, pages = machine.root.WinHvWithdrawMemory(pid, available)
    ok(status)
    assert len(set(pages)) == available
    for page in pages:
        assert root_memory.is_mapped(page << 12, 4096)
    # Pool pages are fungible: the ones kept back are the pages in use, still unmapped.
    deposited = [*range(0x100, 0x100 + POOL_PAGES_PER_CHILD), 0x300, 0x301]
    kept = [p for p in deposited if p not in pages]
    assert len(kept) == balance(machine, pid)[1]
    assert not any(root_memory.is_mapped(p << 12, 1) for p in kept)
    if 0x300 in pages:
        assert root_memory.read(0x300 << 12, 4) == b"mine"   # the same page comes back


def test_withdraw_never_takes_pages_in_use(machine: Machine) -> None:
    pid = machine.guests[0].partition_id
    available, in_use = balance(machine, pid)
    status, pages = machine.root.WinHvWithdrawMemory(pid, available + in_use)
    assert status == HvStatus.INSUFFICIENT_MEMORY
    assert len(pages) == available
    assert balance(machine, pid) == (0, in_use)
    assert machine.root.WinHvCreateVp(pid, 1) == HvStatus.INSUFFICIENT_MEMORY


def test_deposit_of_unmapped_or_duplicate_pages_is_invalid_parameter(machine: Machine) -> None:
    pid = machine.guests[0].partition_id
    before = balance(machine, pid)
    beyond = machine.hv.root.memory.size_pages + 10
    assert machine.root.WinHvDepositMemory(pid, [beyond]) == BAD
    assert machine.root.WinHvDepositMemory(pid, [0x100]) == BAD     # deposited at boot
    assert machine.root.WinHvDepositMemory(pid, [0x310, 0x310]) == BAD
    assert balance(machine, pid) == (before[0] + 1, before[1])     # the first 0x310 went in


def test_delete_partition_returns_its_pool_to_the_root(machine: Machine) -> None:
    pid = machine.guests[0].partition_id
    root_memory = machine.hv.root.memory
    pool = range(0x100, 0x100 + POOL_PAGES_PER_CHILD)
    assert not any(root_memory.is_mapped(p << 12, 1) for p in pool)
    ok(machine.root.WinHvFinalizePartition(pid))
    ok(machine.root.WinHvDeletePartition(pid))
    assert all(root_memory.is_mapped(p << 12, 4096) for p in pool)
    ok(machine.root.WinHvDepositMemory(SELF_ROOT, [0x100]))        # usable again


SELF_ROOT = 0xFFFF_FFFF_FFFF_FFFF


def test_mapped_pages_are_shared_without_copying(machine: Machine) -> None:
    guest = machine.guests[0]
    root_memory = machine.hv.root.memory
    root_page = guest.root_ram_page + 10
    root_memory.write(root_page << 12, b"from the root")
    assert guest.memory.read(10 << 12, 13) == b"from the root"
    guest.memory.view((10 << 12) + 100, 5)[:] = b"guest"
    assert root_memory.read((root_page << 12) + 100, 5) == b"guest"
    assert guest.memory.page_pointer(10) == root_memory.page_pointer(root_page)


def test_unmapped_pages_are_gone_for_the_child_only(machine: Machine) -> None:
    guest = machine.guests[0]
    ok(machine.root.WinHvUnmapGpaPages(guest.partition_id, 10, 2))
    assert not guest.memory.is_mapped(10 << 12, 1)
    assert not guest.memory.is_mapped(11 << 12, 1)
    assert guest.memory.is_mapped(12 << 12, 4096)
    assert machine.hv.root.memory.is_mapped((guest.root_ram_page + 10) << 12, 4096)
    word = control(HvCallCode.GET_PARTITION_ID)
    assert guest.handle.hypercall(word, 0, 10 << 12) == HvStatus.INVALID_ALIGNMENT
    assert machine.root.WinHvUnmapGpaPages(guest.partition_id, 10, 1) == BAD


def test_map_refuses_taken_targets_deposited_sources_and_bad_flags(machine: Machine) -> None:
    guest = machine.guests[0]
    root, pid = machine.root, guest.partition_id
    assert root.WinHvMapGpaPages(pid, CHILD_PAGES - 1, [0x3F0, 0x3F1]) == BAD   # page taken
    assert not guest.memory.is_mapped(CHILD_PAGES << 12, 1)
    assert root.WinHvMapGpaPages(pid, 200, [0x100]) == BAD            # in the pool
    assert root.WinHvMapGpaPages(pid, 200, [0x3F0], flags=0x10) == BAD
    ok(root.WinHvMapGpaPages(pid, 200, [0x3F0, 0x3F1]))
    assert guest.memory.is_mapped(200 << 12, 2 * 4096)


def test_map_beyond_the_childs_address_space_is_invalid_parameter(machine: Machine) -> None:
    # Target page 2**64 - 1 used to wrap inside GpaSpace.map_from and crash the process.
    pid = machine.guests[0].partition_id
    for target in ((1 << 64) - 1, (1 << 64) - 2, 1 << 24, 1 << 40):
        assert machine.root.WinHvMapGpaPages(pid, target, [0x3F0, 0x3F1]) == BAD
    assert machine.root.WinHvUnmapGpaPages(pid, (1 << 64) - 1, 2) == BAD


def test_a_partition_reaches_only_its_own_memory(bridge_kind: str) -> None:
    machine = boot(bridge_kind, children=2)
    first, second = machine.guests
    second.memory.write(0x5000, b"secret")
    first_page_of_second = second.root_ram_page << 12
    word = control(HvCallCode.GET_PARTITION_ID)
    # The sibling's pages are root GPAs, which mean nothing (or the child's own) to a child.
    for gpa in (first_page_of_second + 0x5000, CHILD_PAGES << 12):
        assert first.handle.hypercall(word, 0, gpa) == HvStatus.INVALID_ALIGNMENT
    assert first.handle.hypercall(word, 0, CHILD_OUTPUT_GPA) == HvStatus.SUCCESS
    assert second.memory.read(0x5000, 6) == b"secret"
    assert {first.memory.page_pointer(p) for p in range(CHILD_PAGES)}.isdisjoint(
        {second.memory.page_pointer(p) for p in range(CHILD_PAGES)})
