"""The bridge's handler contract: what a Python handler sees, that its exceptions become a
status and a logged traceback, fault injection and the call/status counters (issue #2 §4)."""

from __future__ import annotations

import logging
import struct
from typing import Any

import pytest
from support.hv import Machine, control, result_reps, result_status

from winhv._bridge import Caller
from winhv._gpa import GpaSpace
from winhv._select import BRIDGE_ENV, make_bridge
from winhv.abi import HvCallCode, HvRegisterName, HvStatus, Privilege

C = HvCallCode
IN, OUT = 0x1000, 0x2000


@pytest.fixture
def bridge(bridge_kind: str) -> Any:
    return make_bridge(bridge_kind)


@pytest.fixture
def caller() -> Caller:
    memory = GpaSpace("caller", 16)
    memory.add_region(0, bytearray(4 * 4096))
    return Caller(7, memory, int(Privilege.ACCESS_VP_REGISTERS | Privilege.ACCESS_PARTITION_ID))


def test_make_bridge_honours_the_kind_and_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                          bridge_kind: str) -> None:
    assert make_bridge(bridge_kind).kind == bridge_kind
    monkeypatch.setenv(BRIDGE_ENV, bridge_kind)
    assert make_bridge().kind == bridge_kind
    monkeypatch.delenv(BRIDGE_ENV)
    assert make_bridge().kind == "compiled"


def test_make_bridge_refuses_an_unknown_kind_instead_of_falling_back() -> None:
    with pytest.raises(ValueError, match=r"unknown bridge kind 'fast'.*from argument"):
        make_bridge("fast")


def test_unknown_kind_from_the_environment_names_the_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BRIDGE_ENV, "python")
    with pytest.raises(ValueError, match="WINHV_BRIDGE"):
        make_bridge()


def test_python_handler_sees_the_decoded_call_and_its_blocks(bridge: Any,
                                                             caller: Caller) -> None:
    seen: dict[str, Any] = {}

    def handler(frame: Any) -> int:
        seen.update(caller=frame.caller, code=frame.code, fast=frame.fast,
                    reps=(frame.rep_count, frame.rep_start, frame.rep_limit, frame.reps_done),
                    input=bytes(frame.input), readonly=frame.input.readonly,
                    output=len(frame.output))
        frame.output[0:16] = b"\x11" * 16
        frame.reps_done = frame.rep_limit
        return 0

    bridge.register(C.GET_VP_REGISTERS, handler)
    caller.memory.write(IN, struct.pack("<QIB3xIII", 1, 2, 0, 10, 11, 12))
    result = bridge.hypercall(caller, control(C.GET_VP_REGISTERS, rep_count=3, rep_start=1),
                              IN, OUT)
    assert result_status(result) == HvStatus.SUCCESS
    assert result_reps(result) == 3
    assert seen["caller"] is caller
    assert seen["code"] == C.GET_VP_REGISTERS
    assert seen["fast"] is False
    assert seen["reps"] == (3, 1, 3, 1)
    assert seen["input"] == struct.pack("<QIB3xIII", 1, 2, 0, 10, 11, 12) + bytes(4)  # padded
    assert seen["readonly"] is True
    assert seen["output"] == 48
    assert caller.memory.read(OUT, 16) == b"\x11" * 16


def test_fast_handler_gets_the_two_registers_as_input(bridge: Any, caller: Caller) -> None:
    seen = []
    caller.privileges |= int(Privilege.SIGNAL_EVENTS)
    bridge.register(C.SIGNAL_EVENT, lambda frame: seen.append(
        (frame.fast, bytes(frame.input), frame.output)) or 0)
    assert bridge.hypercall(caller, control(C.SIGNAL_EVENT, fast=True), 0x0102, 0x0304) == 0
    assert seen == [(True, struct.pack("<QQ", 0x0102, 0x0304), None)]


def test_raising_handler_gives_operation_failed_and_a_logged_traceback(
        bridge: Any, caller: Caller, caplog: pytest.LogCaptureFixture) -> None:
    def broken(frame: Any) -> int:
        raise KeyError("boom")

    bridge.register(C.GET_PARTITION_ID, broken)
    with caplog.at_level(logging.ERROR, logger="winhv.bridge"):
        result = bridge.hypercall(caller, control(C.GET_PARTITION_ID), 0, OUT)
    assert result == HvStatus.OPERATION_FAILED
    [record] = caplog.records
    assert record.name == "winhv.bridge"
    assert "0x0046" in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[0] is KeyError


@pytest.mark.parametrize("returned", [-1, 0x10000, "nope", None])
def test_handler_returning_a_non_status_gives_operation_failed(
        bridge: Any, caller: Caller, caplog: pytest.LogCaptureFixture, returned: Any) -> None:
    bridge.register(C.GET_PARTITION_ID, lambda frame: returned)
    with caplog.at_level(logging.ERROR, logger="winhv.bridge"):
        assert bridge.hypercall(caller, control(C.GET_PARTITION_ID), 0, OUT) == 0x71
    assert caplog.records


def test_rep_handler_claiming_impossible_progress_reports_rep_start(bridge: Any,
                                                                    caller: Caller) -> None:
    def liar(frame: Any) -> int:
        frame.reps_done = frame.rep_start - 1 if frame.rep_start else frame.rep_limit + 1
        return 0

    bridge.register(C.GET_VP_REGISTERS, liar)
    for start in (0, 2):
        result = bridge.hypercall(caller, control(C.GET_VP_REGISTERS, rep_count=4,
                                                  rep_start=start), IN, OUT)
        assert result == start << 32


def test_registration_api(bridge: Any) -> None:
    with pytest.raises(ValueError, match="0x0016"):
        bridge.register(0x0016, lambda frame: 0)
    with pytest.raises(TypeError, match="not callable"):
        bridge.register(C.GET_PARTITION_ID, 42)
    assert not bridge.handled(C.GET_PARTITION_ID)
    bridge.register(C.GET_PARTITION_ID, lambda frame: 0)
    assert bridge.handled(C.GET_PARTITION_ID)
    assert bridge.handled_codes() == [C.GET_PARTITION_ID]
    bridge.unregister(C.GET_PARTITION_ID)
    assert bridge.handled_codes() == []


def test_unregistered_code_answers_invalid_hypercall_code(bridge: Any, caller: Caller) -> None:
    bridge.register(C.GET_PARTITION_ID, lambda frame: 0)
    bridge.unregister(C.GET_PARTITION_ID)
    assert bridge.hypercall(caller, control(C.GET_PARTITION_ID), 0, OUT) == 2


def test_compiled_core_handles_the_hot_calls_in_c(machine: Machine) -> None:
    compiled = machine.hv.bridge.compiled_codes()
    if machine.kind == "compiled":
        # SetVpRegisters is a compiled fast path for EOM that defers the rest to Python.
        assert compiled == [C.GET_PARTITION_ID, C.SET_VP_REGISTERS, C.POST_MESSAGE,
                            C.SIGNAL_EVENT]
    else:
        assert compiled == []


def test_eom_fast_path_defers_other_registers_to_python(machine: Machine) -> None:
    guest = machine.guests[0].handle
    assert guest.WinHvSignalEom() == HvStatus.SUCCESS
    assert guest.WinHvSetVpRegister(HvRegisterName.SCONTROL, 1) == HvStatus.SUCCESS
    status, value = guest.WinHvGetVpRegister(HvRegisterName.SCONTROL)
    assert (status, value) == (HvStatus.SUCCESS, 1)


def test_injected_fault_fails_the_next_calls_then_clears(machine: Machine) -> None:
    bridge = machine.hv.bridge
    bridge.inject_fault(C.GET_PARTITION_ID, HvStatus.INSUFFICIENT_MEMORY, count=2)
    assert bridge.pending_faults() == {C.GET_PARTITION_ID: (HvStatus.INSUFFICIENT_MEMORY, 2)}
    assert machine.root.WinHvGetPartitionId() == (HvStatus.INSUFFICIENT_MEMORY, 0)
    assert bridge.pending_faults() == {C.GET_PARTITION_ID: (HvStatus.INSUFFICIENT_MEMORY, 1)}
    assert machine.root.WinHvGetPartitionId() == (HvStatus.INSUFFICIENT_MEMORY, 0)
    assert bridge.pending_faults() == {}
    assert machine.root.WinHvGetPartitionId() == (HvStatus.SUCCESS, 1)


def test_injected_fault_is_not_consumed_by_a_malformed_call(machine: Machine) -> None:
    bridge = machine.hv.bridge
    bridge.inject_fault(C.GET_PARTITION_ID, HvStatus.ACCESS_DENIED)
    word = control(C.GET_PARTITION_ID, nested=True)
    assert machine.root.hypercall(word, 0, 0x2000) == HvStatus.INVALID_HYPERCALL_INPUT
    assert bridge.pending_faults() == {C.GET_PARTITION_ID: (HvStatus.ACCESS_DENIED, 1)}


def test_injected_fault_on_a_rep_call_reports_rep_start_and_does_nothing(
        machine: Machine) -> None:
    bridge = machine.hv.bridge
    bridge.inject_fault(C.DEPOSIT_MEMORY, HvStatus.INSUFFICIENT_MEMORY)
    child = machine.guests[0].partition_id
    before = machine.root.WinHvGetMemoryBalance(child)
    machine.hv.root.memory.write(0x1000, struct.pack("<QQQQ", child, 0x300, 0x301, 0x302))
    result = machine.root.hypercall(control(C.DEPOSIT_MEMORY, rep_count=3, rep_start=1),
                                    0x1000, 0)
    assert result == HvStatus.INSUFFICIENT_MEMORY | 1 << 32
    assert machine.root.WinHvGetMemoryBalance(child) == before


def test_inject_fault_refuses_bad_arguments(bridge: Any) -> None:
    with pytest.raises(ValueError, match="not in the ABI table"):
        bridge.inject_fault(0x0016, HvStatus.ACCESS_DENIED)
    for status in (0, 0x10000):
        with pytest.raises(ValueError, match="not a failure HV_STATUS"):
            bridge.inject_fault(C.GET_PARTITION_ID, status)


def test_counters_count_calls_by_code_and_results_by_status(machine: Machine) -> None:
    bridge = machine.hv.bridge
    bridge.reset_counters()
    assert bridge.counters() == {}
    assert bridge.status_counters() == {}
    machine.root.WinHvGetPartitionId()
    machine.root.WinHvGetPartitionId()
    machine.root.hypercall(0x0016, 0, 0)            # unknown: counted under -1
    machine.root.hypercall(C.PERF_NOP, 0, 0)        # known, unimplemented: under its code
    machine.guests[0].handle.WinHvCreatePartition()  # denied
    assert bridge.counters() == {C.GET_PARTITION_ID: 2, -1: 1, C.PERF_NOP: 1,
                                 C.CREATE_PARTITION: 1}
    assert bridge.status_counters() == {0: 2, HvStatus.INVALID_HYPERCALL_CODE: 2,
                                        HvStatus.ACCESS_DENIED: 1}


def test_tracer_sees_every_call_and_a_failing_tracer_is_disabled(
        machine: Machine, caplog: pytest.LogCaptureFixture) -> None:
    bridge = machine.hv.bridge
    trace: list[tuple[int, ...]] = []
    bridge.tracer = lambda *args: trace.append(args)
    machine.root.hypercall(C.GET_PARTITION_ID, 0, 0x2000)
    assert trace == [(1, C.GET_PARTITION_ID, 0, 0x2000, 0)]

    def broken(*args: Any) -> None:
        raise RuntimeError("tracer bug")

    bridge.tracer = broken
    with caplog.at_level(logging.ERROR, logger="winhv.bridge"):
        assert machine.root.WinHvGetPartitionId() == (HvStatus.SUCCESS, 1)
    assert bridge.tracer is None
    assert "tracing disabled" in caplog.text
