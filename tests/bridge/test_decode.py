"""The bridge's decoding and common checks (fact sheet §1.1-§1.3): every malformed control word
or parameter block is refused with the TLFS status, before any handler runs, on both bridges."""

from __future__ import annotations

import pytest
from support.hv import (
    CHILD_OUTPUT_GPA,
    CHILD_PAGES,
    ROOT_INPUT_GPA,
    ROOT_OUTPUT_GPA,
    Machine,
    control,
    result_reps,
    result_status,
)

from winhv.abi import CONTROL_RESERVED_MASK, HYPERCALLS, HvCallCode, HvStatus
from winhv.drivers.hv.calls import IMPLEMENTED_HYPERCALLS

C = HvCallCode
INPUT = HvStatus.INVALID_HYPERCALL_INPUT
ALIGN = HvStatus.INVALID_ALIGNMENT


def root_call(machine: Machine, word: int, rdx: int = ROOT_INPUT_GPA,
              r8: int = ROOT_OUTPUT_GPA) -> int:
    return machine.root.hypercall(word, rdx, r8)


def test_handled_codes_are_exactly_the_implemented_set(machine: Machine) -> None:
    assert machine.hv.bridge.handled_codes() == sorted(IMPLEMENTED_HYPERCALLS)


@pytest.mark.parametrize("code", [0x0000, 0x0016, 0x003F, 0x0098, 0x7FFF, 0xFFFF])
def test_unknown_code_answers_invalid_hypercall_code(machine: Machine, code: int) -> None:
    assert code not in HYPERCALLS
    assert root_call(machine, code) == HvStatus.INVALID_HYPERCALL_CODE


def test_every_known_but_unimplemented_code_answers_invalid_hypercall_code(
        machine: Machine) -> None:
    for code, info in HYPERCALLS.items():
        if code in IMPLEMENTED_HYPERCALLS:
            continue
        word = control(code, rep_count=1 if info.is_rep else 0)
        assert root_call(machine, word) == HvStatus.INVALID_HYPERCALL_CODE, hex(code)


def test_invalid_code_wins_over_every_other_check(machine: Machine) -> None:
    word = control(0x0016, fast=True, nested=True, rep_count=5, rep_start=9,
                   reserved=CONTROL_RESERVED_MASK)
    assert root_call(machine, word, 3, 5) == HvStatus.INVALID_HYPERCALL_CODE


@pytest.mark.parametrize("bit", [b for b in range(64) if CONTROL_RESERVED_MASK >> b & 1])
def test_each_reserved_control_bit_is_invalid_input(machine: Machine, bit: int) -> None:
    assert root_call(machine, control(C.GET_PARTITION_ID, reserved=1 << bit)) == INPUT


def test_nested_bit_is_invalid_input_on_a_non_nested_hypervisor(machine: Machine) -> None:
    assert root_call(machine, control(C.GET_PARTITION_ID, nested=True)) == INPUT


def test_rep_count_zero_on_a_rep_call_is_invalid_input(machine: Machine) -> None:
    assert root_call(machine, control(C.DEPOSIT_MEMORY)) == INPUT


@pytest.mark.parametrize(("rep_count", "rep_start"), [(1, 0), (0, 1), (0xFFF, 0)])
def test_rep_fields_on_a_simple_call_are_invalid_input(machine: Machine, rep_count: int,
                                                       rep_start: int) -> None:
    word = control(C.GET_PARTITION_ID, rep_count=rep_count, rep_start=rep_start)
    assert root_call(machine, word) == INPUT


@pytest.mark.parametrize(("rep_count", "rep_start"), [(1, 1), (3, 3), (3, 4), (1, 0xFFF)])
def test_rep_start_at_or_beyond_rep_count_is_invalid_input(machine: Machine, rep_count: int,
                                                           rep_start: int) -> None:
    word = control(C.GET_VP_REGISTERS, rep_count=rep_count, rep_start=rep_start)
    result = root_call(machine, word)
    assert result_status(result) == INPUT
    assert result_reps(result) == 0


def test_variable_header_on_a_call_that_takes_none_is_invalid_input(machine: Machine) -> None:
    assert not HYPERCALLS[C.GET_PARTITION_ID].variable_header
    assert root_call(machine, control(C.GET_PARTITION_ID, varhead=1)) == INPUT


@pytest.mark.parametrize("code", [C.GET_PARTITION_ID, C.CREATE_PARTITION, C.POST_MESSAGE,
                                  C.GET_VP_REGISTERS])
def test_fast_bit_on_a_call_that_cannot_be_fast_is_invalid_input(machine: Machine,
                                                                 code: int) -> None:
    info = HYPERCALLS[code]
    assert not info.fast
    word = control(code, fast=True, rep_count=1 if info.is_rep else 0)
    assert root_call(machine, word) == INPUT


def test_fast_call_whose_input_exceeds_two_registers_is_invalid_input(machine: Machine) -> None:
    # SignalEvent's 8 bytes plus a 16-byte variable header would not fit RDX:R8 (§1.1).
    assert HYPERCALLS[C.SIGNAL_EVENT].fast
    assert root_call(machine, control(C.SIGNAL_EVENT, fast=True, varhead=2), 0, 0) == INPUT


@pytest.mark.parametrize("offset", [1, 4, 7])
def test_misaligned_input_gpa_is_invalid_alignment(machine: Machine, offset: int) -> None:
    assert root_call(machine, control(C.CREATE_PARTITION), ROOT_INPUT_GPA + offset) == ALIGN
    assert machine.hv.partitions.keys() == {1, machine.guests[0].partition_id}


def test_misaligned_output_gpa_is_invalid_alignment(machine: Machine) -> None:
    assert root_call(machine, control(C.GET_PARTITION_ID), 0, ROOT_OUTPUT_GPA + 4) == ALIGN


def test_parameter_block_ending_on_the_page_boundary_is_accepted(machine: Machine) -> None:
    # GetPartitionId's 8-byte output in the last 8 bytes of a page.
    gpa = ROOT_OUTPUT_GPA + 4096 - 8
    assert root_call(machine, control(C.GET_PARTITION_ID), 0, gpa) == HvStatus.SUCCESS
    assert machine.hv.root.memory.read(gpa, 8) == (1).to_bytes(8, "little")


@pytest.mark.parametrize(("code", "gpa"), [
    (C.CREATE_PARTITION, ROOT_INPUT_GPA + 4096 - 48),   # 56-byte input, 8 bytes over
    (C.POST_MESSAGE, ROOT_INPUT_GPA + 4096 - 8),        # 256-byte input
])
def test_input_block_crossing_a_page_is_invalid_alignment(machine: Machine, code: int,
                                                          gpa: int) -> None:
    assert root_call(machine, control(code), gpa) == ALIGN


def test_rep_list_crossing_a_page_is_invalid_alignment(machine: Machine) -> None:
    # Two reps: a 16-byte header + two 4-byte names in, two 16-byte values out.
    word = control(C.GET_VP_REGISTERS, rep_count=2)
    assert root_call(machine, word, ROOT_INPUT_GPA + 4096 - 16, ROOT_OUTPUT_GPA) == ALIGN
    assert root_call(machine, word, ROOT_INPUT_GPA, ROOT_OUTPUT_GPA + 4096 - 16) == ALIGN


@pytest.mark.parametrize("gpa", [CHILD_PAGES << 12, (1 << 52) - 8, (1 << 64) - 8])
def test_gpa_outside_the_callers_memory_is_invalid_alignment(machine: Machine,
                                                             gpa: int) -> None:
    child = machine.guests[0].handle
    assert child.hypercall(control(C.GET_PARTITION_ID), 0, gpa) == ALIGN
    assert child.hypercall(control(C.GET_PARTITION_ID), 0, CHILD_OUTPUT_GPA) == HvStatus.SUCCESS


def test_unused_gpas_are_not_checked(machine: Machine) -> None:
    # GetPartitionId has no input block: garbage in RDX is ignored.
    assert root_call(machine, control(C.GET_PARTITION_ID), 0xDEAD_BEEF_0001) == HvStatus.SUCCESS


@pytest.mark.parametrize("code", [C.CREATE_PARTITION, C.CREATE_PORT, C.DEPOSIT_MEMORY,
                                  C.CONNECT_PORT, C.MAP_GPA_PAGES, C.GET_MEMORY_BALANCE])
def test_child_calling_a_root_only_call_is_access_denied(machine: Machine, code: int) -> None:
    child = machine.guests[0]
    before = sorted(machine.hv.partitions)
    word = control(code, rep_count=1 if HYPERCALLS[code].is_rep else 0)
    assert child.handle.hypercall(word, 0, CHILD_OUTPUT_GPA) == HvStatus.ACCESS_DENIED
    assert sorted(machine.hv.partitions) == before


def test_winhv_functions_of_a_child_return_access_denied(machine: Machine) -> None:
    child = machine.guests[0].handle
    assert child.WinHvCreatePartition() == (HvStatus.ACCESS_DENIED, 0)
    assert child.WinHvDepositMemory(child.partition_id, [1]) == HvStatus.ACCESS_DENIED
    assert child.WinHvCreatePort(child.partition_id, 1, 1, connection_partition_id=1,
                                 target_sint=2) == HvStatus.ACCESS_DENIED


def test_result_word_reserved_bits_are_zero(machine: Machine) -> None:
    for word in (control(C.GET_PARTITION_ID), control(0x16), control(C.DEPOSIT_MEMORY)):
        assert root_call(machine, word) & ~((0xFFF << 32) | 0xFFFF) == 0
