"""WinHv's compiled calls and its C table enter the compiled bridge through an inlined copy of
its common case (``bridge_call`` in ``_bridge.pxd``). These prove it is the same bridge as
``Bridge.hypercall``: the counters move the same, and an armed fault, a tracer, a Python
handler that replaced the compiled one, or a caller without the call's privilege each take
effect on calls made through the handle and through the table. Every test runs on both
bridges, so the reference bridge is held to the same answers."""

from __future__ import annotations

import ctypes
from typing import Any

import pytest
from support.hv import CHILD_INPUT_GPA, ROOT_SIEFP_GPA, ROOT_SIMP_GPA, SINT, Machine

from winhv import Privilege
from winhv._calls import HvCallCode as C
from winhv.abi import HvStatus

MESSAGE_CONNECTION, EVENT_CONNECTION = 7, 8
BASE_FLAG = 10
FAST = 1 << 16

_u16, _u32, _u64, _ptr = ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_void_p


class _Table(ctypes.Structure):
    """The two entries of ``WINHV_INTERFACE`` used here (see test_interface_table.py)."""

    _fields_ = [
        ("Size", _u32), ("Version", _u32), ("Context", _ptr),
        ("Hypercall", ctypes.PYFUNCTYPE(_u64, _ptr, _u64, _u64, _u64)),
        ("PostMessage", ctypes.PYFUNCTYPE(_u16, _ptr, _u32, _u32, _ptr, _u32)),
        ("SignalEvent", ctypes.PYFUNCTYPE(_u16, _ptr, _u32, _u16)),
    ]


@pytest.fixture
def wired(machine: Machine) -> Machine:
    machine.enable_root_synic()
    child = machine.guests[0].partition_id
    machine.message_channel(1, child, port_id=5, connection_id=MESSAGE_CONNECTION)
    machine.event_channel(1, child, port_id=6, connection_id=EVENT_CONNECTION,
                          base_flag=BASE_FLAG, flag_count=4)
    return machine


def _table(machine: Machine) -> _Table:
    return _Table.from_address(machine.guests[0].handle.interface_address())


def _signal_both(machine: Machine, flag: int) -> tuple[Any, int]:
    """SignalEvent once through the handle (flag) and once through the table (flag + 1)."""
    table = _table(machine)
    return (machine.guests[0].handle.WinHvSignalEvent(EVENT_CONNECTION, flag),
            table.SignalEvent(table.Context, EVENT_CONNECTION, flag + 1))


def _post_both(machine: Machine) -> tuple[Any, int]:
    table = _table(machine)
    payload = ctypes.create_string_buffer(b"from C", 6)
    return (machine.guests[0].handle.WinHvPostMessage(MESSAGE_CONNECTION, 1, b"from Python"),
            table.PostMessage(table.Context, MESSAGE_CONNECTION, 1, payload, 6))


def _root_flags(machine: Machine) -> int:
    return int.from_bytes(machine.hv.root.memory.read(ROOT_SIEFP_GPA + 256 * SINT, 256),
                          "little")


def test_handle_and_table_calls_move_every_counter_once(wired: Machine) -> None:
    bridge = wired.hv.bridge
    partition = wired.guests[0].partition
    bridge.reset_counters()
    calls = partition.calls
    assert _signal_both(wired, 0) == (HvStatus.SUCCESS, HvStatus.SUCCESS)
    assert _post_both(wired)[0] == HvStatus.SUCCESS
    assert wired.guests[0].handle.hypercall(C.SIGNAL_EVENT | FAST, EVENT_CONNECTION | 9 << 32) \
        == HvStatus.INVALID_PARAMETER   # flag 9 of a port with 4
    assert bridge.counters() == {C.SIGNAL_EVENT: 3, C.POST_MESSAGE: 2}
    # The second post found the first in the slot: queued, still a success.
    assert bridge.status_counters() == {0: 4, HvStatus.INVALID_PARAMETER: 1}
    assert partition.calls == calls + 5


def test_armed_fault_fails_handle_and_table_calls_before_they_act(wired: Machine) -> None:
    wired.hv.bridge.inject_fault(C.SIGNAL_EVENT, HvStatus.INSUFFICIENT_MEMORY, count=2)
    assert _signal_both(wired, 0) == (HvStatus.INSUFFICIENT_MEMORY,
                                      HvStatus.INSUFFICIENT_MEMORY)
    assert _root_flags(wired) == 0
    assert _signal_both(wired, 2) == (HvStatus.SUCCESS, HvStatus.SUCCESS)
    assert _root_flags(wired) == 0b11 << (BASE_FLAG + 2)
    wired.hv.bridge.inject_fault(C.POST_MESSAGE, HvStatus.INSUFFICIENT_BUFFERS)
    assert _post_both(wired) == (HvStatus.INSUFFICIENT_BUFFERS, HvStatus.SUCCESS)
    assert wired.hv.root.memory.read(ROOT_SIMP_GPA + 256 * SINT + 16, 6) == b"from C"


def test_tracer_sees_handle_and_table_calls(wired: Machine) -> None:
    trace: list[tuple[int, ...]] = []
    wired.hv.bridge.tracer = lambda *args: trace.append(args)
    child = wired.guests[0].partition_id
    _signal_both(wired, 0)
    _post_both(wired)
    signal = C.SIGNAL_EVENT | FAST
    assert trace == [
        (child, signal, EVENT_CONNECTION, 0, 0),
        (child, signal, EVENT_CONNECTION | 1 << 32, 0, 0),
        (child, C.POST_MESSAGE, CHILD_INPUT_GPA, 0, 0),
        (child, C.POST_MESSAGE, CHILD_INPUT_GPA, 0, 0),
    ]


def test_python_handler_that_replaced_the_compiled_one_gets_handle_and_table_calls(
        wired: Machine) -> None:
    seen: list[bytes] = []

    def handler(frame: Any) -> int:
        seen.append(bytes(frame.input[:8]))
        return HvStatus.INSUFFICIENT_BUFFERS

    wired.hv.bridge.register(C.SIGNAL_EVENT, handler)
    assert _signal_both(wired, 0) == (HvStatus.INSUFFICIENT_BUFFERS,
                                      HvStatus.INSUFFICIENT_BUFFERS)
    assert seen == [EVENT_CONNECTION.to_bytes(4, "little") + bytes(4),
                    EVENT_CONNECTION.to_bytes(4, "little") + b"\x01\0\0\0"]
    assert _root_flags(wired) == 0
    wired.hv.bridge.unregister(C.SIGNAL_EVENT)
    assert _signal_both(wired, 0) == (HvStatus.INVALID_HYPERCALL_CODE,
                                      HvStatus.INVALID_HYPERCALL_CODE)


def test_caller_without_the_privilege_is_denied_through_handle_and_table(
        wired: Machine) -> None:
    partition = wired.guests[0].partition
    partition.privileges &= ~int(Privilege.SIGNAL_EVENTS | Privilege.POST_MESSAGES)
    assert _signal_both(wired, 0) == (HvStatus.ACCESS_DENIED, HvStatus.ACCESS_DENIED)
    assert _post_both(wired) == (HvStatus.ACCESS_DENIED, HvStatus.ACCESS_DENIED)
    assert _root_flags(wired) == 0
    assert wired.hv.root.memory.read(ROOT_SIMP_GPA + 256 * SINT, 4) == bytes(4)


@pytest.mark.parametrize(("word", "rdx", "expected"), [
    (C.POST_MESSAGE, CHILD_INPUT_GPA + 4, HvStatus.INVALID_ALIGNMENT),
    (C.POST_MESSAGE, 1 << 40, HvStatus.INVALID_ALIGNMENT),
    (C.POST_MESSAGE | FAST, 0, HvStatus.INVALID_HYPERCALL_INPUT),
    (C.SIGNAL_EVENT | FAST | 1 << 17, EVENT_CONNECTION, HvStatus.INVALID_HYPERCALL_INPUT),
    (C.SIGNAL_EVENT | FAST | 1 << 32, EVENT_CONNECTION, HvStatus.INVALID_HYPERCALL_INPUT),
    (C.SIGNAL_EVENT | 1 << 31, EVENT_CONNECTION, HvStatus.INVALID_HYPERCALL_INPUT),
])
def test_malformed_calls_through_the_table_fail_as_the_tlfs_says(
        wired: Machine, word: int, rdx: int, expected: HvStatus) -> None:
    table = _table(wired)
    assert table.Hypercall(table.Context, word, rdx, 0) & 0xFFFF == expected
    assert _root_flags(wired) == 0
