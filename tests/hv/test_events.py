"""SynIC event flags (fact sheet §1.7 SignalEvent, §2.5): bit base + flag of the SINT's array
in the SIEF page, an interrupt only on a 0 -> 1 transition, and the error statuses."""

from __future__ import annotations

import struct

import pytest
from support.hv import CHILD_SIEFP_GPA, SINT, VECTOR, Machine, control, ok

from winhv.abi import HvCallCode, HvRegisterName, HvStatus

R = HvRegisterName
PORT, CONN, BASE, COUNT = 6, 8, 100, 4


@pytest.fixture
def wired(machine: Machine) -> Machine:
    """The root holds connection ``CONN`` to event port ``PORT`` (flags 100..103, SINT 2)."""
    machine.event_channel(machine.guests[0].partition_id, 1, port_id=PORT, connection_id=CONN,
                          base_flag=BASE, flag_count=COUNT)
    return machine


def test_signal_sets_bit_base_plus_flag_in_the_sints_array(wired: Machine) -> None:
    guest = wired.guests[0]
    ok(wired.root.WinHvSignalEvent(CONN, 3))
    page = guest.memory.read(CHILD_SIEFP_GPA, 4096)
    expected = bytearray(4096)
    expected[256 * SINT + (BASE + 3) // 8] = 1 << ((BASE + 3) % 8)
    assert page == bytes(expected)
    wired.run()
    assert guest.interrupts == [VECTOR]


def test_interrupt_only_on_a_zero_to_one_transition(wired: Machine) -> None:
    guest = wired.guests[0]
    ok(wired.root.WinHvSignalEvent(CONN, 0))
    wired.run()
    ok(wired.root.WinHvSignalEvent(CONN, 0))        # already set: no edge
    wired.run()
    assert guest.interrupts == [VECTOR]
    assert guest.vp.interrupts_raised == 1
    ok(wired.root.WinHvSignalEvent(CONN, 1))        # another flag: an edge
    wired.run()
    assert guest.interrupts == [VECTOR, VECTOR]
    byte = CHILD_SIEFP_GPA + 256 * SINT + BASE // 8
    guest.memory.write(byte, b"\0")                 # the guest clears its flags
    ok(wired.root.WinHvSignalEvent(CONN, 0))
    wired.run()
    assert guest.interrupts == [VECTOR] * 3


def test_fast_and_memory_forms_are_the_same_call(wired: Machine) -> None:
    guest = wired.guests[0]
    wired.hv.root.memory.write(0x1000, struct.pack("<IHH", CONN, 2, 0))
    assert wired.root.hypercall(control(HvCallCode.SIGNAL_EVENT), 0x1000, 0) == 0
    assert guest.flag_set(BASE + 2)
    word = control(HvCallCode.SIGNAL_EVENT, fast=True)
    assert wired.root.hypercall(word, CONN | 1 << 32, 0) == 0
    assert guest.flag_set(BASE + 1)
    assert wired.root.hypercall(word, CONN | 1 << 48, 0) == HvStatus.INVALID_PARAMETER  # RsvdZ


def test_flag_at_or_beyond_the_flag_count_is_invalid_parameter(wired: Machine) -> None:
    guest = wired.guests[0]
    for flag in (COUNT, COUNT + 1, 0xFFFF):
        assert wired.root.WinHvSignalEvent(CONN, flag) == HvStatus.INVALID_PARAMETER
    assert guest.flags() == bytes(256)


def test_masked_sint_is_invalid_synic_state(wired: Machine) -> None:
    guest = wired.guests[0]
    ok(guest.handle.WinHvSetVpRegister(R.SINT2, 0x10000 | VECTOR))
    assert wired.root.WinHvSignalEvent(CONN, 0) == HvStatus.INVALID_SYNIC_STATE
    assert guest.flags() == bytes(256)


@pytest.mark.parametrize("register", [R.SCONTROL, R.SIEFP])
def test_disabled_synic_or_event_page_is_invalid_synic_state(wired: Machine,
                                                             register: int) -> None:
    ok(wired.guests[0].handle.WinHvSetVpRegister(register, 0))
    assert wired.root.WinHvSignalEvent(CONN, 0) == HvStatus.INVALID_SYNIC_STATE


def test_deleted_port_is_invalid_port_id(wired: Machine) -> None:
    ok(wired.root.WinHvDeletePort(wired.guests[0].partition_id, PORT))
    assert wired.root.WinHvSignalEvent(CONN, 0) == HvStatus.INVALID_PORT_ID


def test_signalling_a_message_port_or_nothing_fails(wired: Machine) -> None:
    wired.message_channel(wired.guests[0].partition_id, 1, port_id=5, connection_id=7)
    assert wired.root.WinHvSignalEvent(7, 0) == HvStatus.INVALID_PORT_ID
    assert wired.root.WinHvSignalEvent(99, 0) == HvStatus.INVALID_CONNECTION_ID
    assert wired.root.WinHvSignalEvent(CONN | 1 << 24, 0) == HvStatus.INVALID_CONNECTION_ID


def test_event_port_flag_range_is_checked_at_creation(machine: Machine) -> None:
    pid = machine.guests[0].partition_id
    for base, count in ((0, 0), (2047, 2), (2048, 1)):
        assert machine.root.WinHvCreatePort(pid, 20, 2, connection_partition_id=1,
                                            target_sint=2, base_flag=base,
                                            flag_count=count) == HvStatus.INVALID_PARAMETER
    ok(machine.root.WinHvCreatePort(pid, 20, 2, connection_partition_id=1, target_sint=2,
                                    base_flag=2047, flag_count=1))


def test_last_flag_of_the_array_is_the_top_bit_of_its_last_byte(machine: Machine) -> None:
    guest = machine.guests[0]
    machine.event_channel(guest.partition_id, 1, port_id=20, connection_id=21,
                          base_flag=2040, flag_count=8)
    ok(machine.root.WinHvSignalEvent(21, 7))
    assert guest.flags()[255] == 0x80
    assert guest.memory.read(CHILD_SIEFP_GPA + 256 * (SINT + 1), 1) == b"\0"
