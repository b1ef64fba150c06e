"""SynIC message delivery (fact sheet §1.7 PostMessage, §2.3, §2.4): the SIM slot at the
programmed GPA, the pending flag and EOM redelivery in posting order, the 16-buffer port
limit, masked SINTs, disabled SynIC, and what port deletion and disconnection do."""

from __future__ import annotations

import struct

import pytest
from support.hv import (
    CHILD_SIMP_GPA,
    SINT,
    VECTOR,
    Guest,
    Machine,
    control,
    ok,
)

from winhv.abi import HvCallCode, HvRegisterName, HvStatus

R = HvRegisterName
PORT, CONN = 5, 7


@pytest.fixture
def wired(machine: Machine) -> Machine:
    """The root holds connection ``CONN`` to message port ``PORT`` of the child (SINT 2)."""
    machine.message_channel(machine.guests[0].partition_id, 1, port_id=PORT,
                            connection_id=CONN)
    return machine


def post(machine: Machine, payload: bytes, message_type: int = 1) -> HvStatus | int:
    return machine.root.WinHvPostMessage(CONN, message_type, payload)


def test_message_lands_in_the_sint_slot_with_the_exact_layout(wired: Machine) -> None:
    guest = wired.guests[0]
    payload = bytes(range(240))
    ok(post(wired, payload, message_type=0x1234))
    raw = guest.memory.read(CHILD_SIMP_GPA + 256 * SINT, 256)
    assert raw == struct.pack("<IBBHQ", 0x1234, 240, 0, 0, PORT) + payload
    assert guest.memory.read(CHILD_SIMP_GPA, 256 * SINT) == bytes(256 * SINT)  # other slots
    assert guest.interrupts == []
    wired.run()
    assert guest.interrupts == [VECTOR]


def test_short_message_delivers_its_payload_size(wired: Machine) -> None:
    guest = wired.guests[0]
    ok(post(wired, b""))
    assert guest.message() == (1, 0, 0, PORT, b"")
    guest.consume()
    ok(post(wired, b"abc"))
    assert guest.message() == (1, 3, 0, PORT, b"abc")


def test_queued_messages_set_pending_and_arrive_in_posting_order_on_eom(
        wired: Machine) -> None:
    guest = wired.guests[0]
    for n in range(4):
        ok(post(wired, bytes([n]) * 8))
    assert guest.message() == (1, 8, 1, PORT, b"\0" * 8)       # pending: more behind it
    assert guest.vp.queued_messages(SINT) == 3
    seen = []
    for _ in range(4):
        seen.append(guest.consume())   # clears the slot, EOMs when pending was set
    assert [m[4][0] for m in seen] == [0, 1, 2, 3]
    assert [m[2] for m in seen] == [1, 1, 1, 0]                  # the last one is alone
    assert guest.message()[0] == 0
    wired.run()
    assert guest.interrupts == [VECTOR]


def test_eom_with_the_slot_still_full_delivers_nothing(wired: Machine) -> None:
    guest = wired.guests[0]
    ok(post(wired, b"first"))
    ok(post(wired, b"second"))
    ok(guest.handle.WinHvSignalEom())
    assert guest.message()[4] == b"first"
    assert guest.vp.queued_messages(SINT) == 1


def test_port_has_16_buffers_freed_as_messages_are_delivered(wired: Machine) -> None:
    guest = wired.guests[0]
    ok(post(wired, b"in the slot"))              # delivered at once: its buffer is free again
    for n in range(16):
        ok(post(wired, bytes([n])))
    assert post(wired, b"17th") == HvStatus.INSUFFICIENT_BUFFERS
    assert guest.vp.queued_messages(SINT) == 16
    guest.consume()                               # one delivered from the queue
    ok(post(wired, b"fits again"))
    assert post(wired, b"no") == HvStatus.INSUFFICIENT_BUFFERS
    delivered = [guest.consume()[4] for _ in range(17)]
    assert delivered == [bytes([n]) for n in range(16)] + [b"fits again"]
    assert guest.partition.ports[PORT].free_buffers == 16


def test_masked_sint_keeps_the_message_and_loses_the_interrupt(wired: Machine) -> None:
    guest = wired.guests[0]
    ok(guest.handle.WinHvSetVpRegister(R.SINT2, 0x10000 | VECTOR))
    ok(post(wired, b"quiet"))
    assert guest.message()[4] == b"quiet"
    assert guest.vp.interrupts_lost == 1
    wired.run()
    assert guest.interrupts == []


@pytest.mark.parametrize("register", [R.SCONTROL, R.SIMP])
def test_disabled_synic_or_message_page_is_invalid_synic_state(wired: Machine,
                                                               register: int) -> None:
    guest = wired.guests[0]
    ok(guest.handle.WinHvSetVpRegister(register, 0))
    assert post(wired, b"x") == HvStatus.INVALID_SYNIC_STATE
    assert guest.partition.ports[PORT].free_buffers == 16


def test_enabling_the_synic_delivers_what_was_queued(wired: Machine) -> None:
    guest = wired.guests[0]
    ok(post(wired, b"one"))
    ok(post(wired, b"two"))
    ok(guest.handle.WinHvSetVpRegister(R.SCONTROL, 0))
    guest.memory.write(CHILD_SIMP_GPA + 256 * SINT, b"\0\0\0\0")
    ok(guest.handle.WinHvSetVpRegister(R.SCONTROL, 1))
    assert guest.message()[4] == b"two"


@pytest.mark.parametrize(("fields", "expected"), [
    ((CONN, 0, 0, 4), HvStatus.INVALID_PARAMETER),              # type 0
    ((CONN, 0, 0x80000010, 4), HvStatus.INVALID_PARAMETER),     # hypervisor-only type
    ((CONN, 0, 1, 241), HvStatus.INVALID_PARAMETER),            # payload too long
    ((CONN, 1, 1, 4), HvStatus.INVALID_PARAMETER),              # RsvdZ
    ((CONN | 1 << 24, 0, 1, 4), HvStatus.INVALID_CONNECTION_ID),
    ((CONN + 1, 0, 1, 4), HvStatus.INVALID_CONNECTION_ID),
])
def test_post_message_input_checks(wired: Machine, fields: tuple[int, ...],
                                   expected: HvStatus) -> None:
    wired.hv.root.memory.write(0x1000, struct.pack("<4I", *fields) + b"data")
    assert wired.root.hypercall(control(HvCallCode.POST_MESSAGE), 0x1000, 0) == expected
    assert wired.guests[0].message()[0] == 0


def test_winhv_post_message_refuses_a_long_payload(wired: Machine) -> None:
    assert post(wired, bytes(241)) == HvStatus.INVALID_PARAMETER


def test_posting_to_an_event_port_is_invalid_port_id(wired: Machine) -> None:
    wired.event_channel(wired.guests[0].partition_id, 1, port_id=6, connection_id=8)
    assert wired.root.WinHvPostMessage(8, 1, b"x") == HvStatus.INVALID_PORT_ID


def test_deleted_port_is_invalid_port_id_and_its_queued_buffers_are_freed(
        wired: Machine) -> None:
    guest = wired.guests[0]
    for n in range(5):
        ok(post(wired, bytes([n])))
    port = guest.partition.ports[PORT]
    assert port.free_buffers == 12
    ok(wired.root.WinHvDeletePort(guest.partition_id, PORT))
    assert guest.vp.queued_messages(SINT) == 0
    assert port.free_buffers == 16
    assert post(wired, b"late") == HvStatus.INVALID_PORT_ID
    assert wired.root.WinHvDeletePort(guest.partition_id, PORT) == HvStatus.INVALID_PORT_ID


def test_disconnect_keeps_queued_messages(wired: Machine) -> None:
    guest = wired.guests[0]
    for n in range(3):
        ok(post(wired, bytes([n])))
    ok(wired.root.WinHvDisconnectPort(1, CONN))
    assert post(wired, b"x") == HvStatus.INVALID_CONNECTION_ID
    assert [guest.consume()[4] for _ in range(3)] == [b"\0", b"\1", b"\2"]


def test_deleted_target_vp_is_invalid_vp_index(wired: Machine) -> None:
    guest = wired.guests[0]
    ok(post(wired, b"queued"))
    ok(post(wired, b"behind"))
    ok(wired.root.WinHvDeleteVp(guest.partition_id, 0))
    assert post(wired, b"x") == HvStatus.INVALID_VP_INDEX
    assert guest.partition.ports[PORT].free_buffers == 16


def test_child_posts_to_the_root_and_each_direction_uses_its_own_slot(
        machine: Machine) -> None:
    machine.enable_root_synic()
    guest: Guest = machine.guests[0]
    machine.message_channel(1, guest.partition_id, port_id=9, connection_id=3)
    ok(guest.handle.WinHvPostMessage(3, 1, b"up"))
    root_slot = machine.hv.root.memory.read(0x3000 + 256 * SINT, 24)
    assert root_slot == struct.pack("<IBBHQ", 1, 2, 0, 0, 9) + b"up" + bytes(6)
    assert guest.message()[0] == 0
    machine.run()
    assert machine.root_interrupts == [VECTOR]
    assert guest.handle.WinHvPostMessage(7, 1, b"x") == HvStatus.INVALID_CONNECTION_ID


def test_port_and_connection_ids_are_checked(wired: Machine) -> None:
    pid = wired.guests[0].partition_id
    root = wired.root
    assert root.WinHvCreatePort(pid, PORT, 1, connection_partition_id=1, target_sint=2) == \
        HvStatus.INVALID_PORT_ID                                  # exists
    assert root.WinHvCreatePort(pid, 1 << 24, 1, connection_partition_id=1,
                                target_sint=2) == HvStatus.INVALID_PORT_ID
    assert root.WinHvCreatePort(pid, 11, 1, connection_partition_id=1, target_sint=16) == \
        HvStatus.INVALID_PARAMETER
    assert root.WinHvCreatePort(pid, 11, 3, connection_partition_id=1, target_sint=2) == \
        HvStatus.INVALID_PARAMETER                                # monitor ports: not here
    assert root.WinHvConnectPort(1, CONN, pid, PORT, 1) == HvStatus.INVALID_CONNECTION_ID
    assert root.WinHvConnectPort(1, 12, pid, 404, 1) == HvStatus.INVALID_PORT_ID
    assert root.WinHvConnectPort(1, 12, pid, PORT, 2) == HvStatus.INVALID_PARAMETER
    ok(root.WinHvCreatePort(pid, 13, 1, connection_partition_id=pid, target_sint=2))
    assert root.WinHvConnectPort(1, 12, pid, 13, 1) == HvStatus.ACCESS_DENIED
