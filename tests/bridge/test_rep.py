"""Rep hypercalls (fact sheet §1.3): partial completion with the total reps completed in the
result word, transparent continuation by WinHv, and element failures that report how many
elements succeeded."""

from __future__ import annotations

import struct

import pytest
from support.hv import (
    POOL_PAGES_PER_CHILD,
    ROOT_INPUT_GPA,
    Machine,
    boot,
    control,
    result_reps,
    result_status,
)

from winhv.abi import HvCallCode, HvRegisterName, HvStatus

C = HvCallCode
R = HvRegisterName
SELF = 0xFFFF_FFFF_FFFF_FFFF


@pytest.fixture
def sliced(bridge_kind: str) -> Machine:
    """A machine whose rep calls return after every single element."""
    return boot(bridge_kind, rep_slice=1)


def test_raw_rep_call_returns_after_one_slice_with_reps_completed(sliced: Machine) -> None:
    child = sliced.guests[0].partition_id
    sliced.hv.root.memory.write(ROOT_INPUT_GPA, struct.pack("<4Q", child, 0x300, 0x301, 0x302))
    for start in range(3):
        word = control(C.DEPOSIT_MEMORY, rep_count=3, rep_start=start)
        result = sliced.root.hypercall(word, ROOT_INPUT_GPA, 0)
        assert result_status(result) == HvStatus.SUCCESS
        assert result_reps(result) == start + 1          # total, not relative to rep start
    assert sliced.root.WinHvGetMemoryBalance(child)[1][0] == POOL_PAGES_PER_CHILD - 2 + 3


def test_winhv_continues_a_sliced_deposit_to_the_end(sliced: Machine) -> None:
    child = sliced.guests[0].partition_id
    starts: list[int] = []
    sliced.hv.bridge.tracer = lambda pid, word, rdx, r8, result: starts.append(
        (word >> 48) & 0xFFF)
    pages = range(0x400, 0x400 + 40)
    assert sliced.root.WinHvDepositMemory(child, pages) == HvStatus.SUCCESS
    assert starts == list(range(40))
    assert sliced.root.WinHvGetMemoryBalance(child) == (
        HvStatus.SUCCESS, (POOL_PAGES_PER_CHILD - 2 + 40, 2))


def test_winhv_continues_sliced_register_reads_and_writes(sliced: Machine) -> None:
    guest = sliced.guests[0]
    values = [(R.SINT0 + n, 0x10000 | (0x20 + n)) for n in range(16)]
    assert guest.handle.WinHvSetVpRegisters(values) == HvStatus.SUCCESS
    names = [name for name, _ in values] + [R.SVERSION, R.SIMP, R.EOM]
    status, read = guest.handle.WinHvGetVpRegisters(names)
    assert status == HvStatus.SUCCESS
    assert read == [v for _, v in values] + [1, 0x2001, 0]


def test_sliced_and_unsliced_machines_agree(bridge_kind: str) -> None:
    results = []
    for rep_slice in (1, 3, None):
        machine = boot(bridge_kind, rep_slice=rep_slice)
        child = machine.guests[0].partition_id
        machine.root.WinHvDepositMemory(child, range(0x400, 0x410))
        results.append((machine.root.WinHvGetMemoryBalance(child),
                        machine.root.WinHvWithdrawMemory(child, 5),
                        machine.guests[0].handle.WinHvGetVpRegisters(
                            [R.SINT0 + n for n in range(16)])))
    assert results[0] == results[1] == results[2]


def test_element_failure_returns_its_status_and_the_successful_count(machine: Machine) -> None:
    child = machine.guests[0].partition_id
    bad = 1 << 30                                       # beyond the root's RAM
    pages = (child, 0x300, 0x301, bad, 0x302)
    machine.hv.root.memory.write(ROOT_INPUT_GPA, struct.pack("<5Q", *pages))
    result = machine.root.hypercall(control(C.DEPOSIT_MEMORY, rep_count=4),
                                    ROOT_INPUT_GPA, 0)
    assert result_status(result) == HvStatus.INVALID_PARAMETER
    assert result_reps(result) == 2
    assert machine.root.WinHvGetMemoryBalance(child)[1][0] == POOL_PAGES_PER_CHILD - 2 + 2
    # Continuing past the bad element deposits the rest.
    result = machine.root.hypercall(control(C.DEPOSIT_MEMORY, rep_count=4, rep_start=3),
                                    ROOT_INPUT_GPA, 0)
    assert result == HvStatus.SUCCESS | 4 << 32


def test_element_failure_after_a_continuation_counts_from_element_zero(
        sliced: Machine) -> None:
    guest = sliced.guests[0]
    names = [R.SVERSION, R.SIMP, 0x12345678, R.EOM]
    status, values = guest.handle.WinHvGetVpRegisters(names)
    assert status == HvStatus.UNKNOWN_REGISTER_NAME
    assert values == [1, 0x2001]
    raw = struct.pack("<QIB3x4I", SELF, 0xFFFF_FFFE, 0, *names)
    guest.memory.write(0, raw)
    result = guest.handle.hypercall(control(C.GET_VP_REGISTERS, rep_count=4, rep_start=2),
                                    0, 0x1000)
    assert result == HvStatus.UNKNOWN_REGISTER_NAME | 2 << 32


def test_set_registers_stop_at_the_first_failure(machine: Machine) -> None:
    guest = machine.guests[0]
    status = guest.handle.WinHvSetVpRegisters([(R.SINT3, 0x10033), (R.SINT4, 0x05),
                                               (R.SINT5, 0x10055)])
    assert status == HvStatus.INVALID_PARAMETER
    assert guest.handle.WinHvGetVpRegisters([R.SINT3, R.SINT4, R.SINT5]) == (
        HvStatus.SUCCESS, [0x10033, 0x10000, 0x10000])


def test_withdraw_reports_pages_withdrawn_before_the_pool_ran_dry(machine: Machine) -> None:
    child = machine.guests[0].partition_id
    status, (available, _) = machine.root.WinHvGetMemoryBalance(child)
    status, pages = machine.root.WinHvWithdrawMemory(child, available + 3)
    assert status == HvStatus.INSUFFICIENT_MEMORY
    assert len(pages) == available


def test_rep_call_with_an_empty_list_is_not_issued(machine: Machine) -> None:
    machine.hv.bridge.reset_counters()
    assert machine.root.WinHvDepositMemory(machine.guests[0].partition_id, []) == 0
    assert machine.hv.bridge.counters() == {}


def test_output_block_of_a_rep_call_is_per_element(machine: Machine) -> None:
    guest = machine.guests[0]
    raw = struct.pack("<QIB3x2I", SELF, 0, 0, R.SVERSION, R.VP_INDEX)
    guest.memory.write(0, raw)
    guest.memory.write(0x1000, b"\xAA" * 64)
    result = guest.handle.hypercall(control(C.GET_VP_REGISTERS, rep_count=2), 0, 0x1000)
    assert result == 2 << 32
    assert guest.memory.read(0x1000, 64) == struct.pack("<4Q", 1, 0, 0, 0) + b"\xAA" * 32
