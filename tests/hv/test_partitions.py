"""Partition management through hypercalls (fact sheet §1.6, §1.7): the lifecycle create ->
set privileges -> deposit -> initialize -> finalize -> delete, every call in the wrong state,
isolation between partitions, child enumeration and properties."""

from __future__ import annotations

import pytest
from support.hv import Machine, boot, ok

from winhv.abi import (
    DEFAULT_CHILD_PRIVILEGES,
    HvPortType,
    HvRegisterName,
    HvStatus,
    PartitionProperty,
    Privilege,
)
from winhv.drivers.hv._core import STATE_ACTIVE, STATE_CREATED, STATE_FINALIZED

R = HvRegisterName
P = PartitionProperty
STATE = HvStatus.INVALID_PARTITION_STATE
SELF = 0xFFFF_FFFF_FFFF_FFFF


def wrong_state_calls(machine: Machine, pid: int) -> dict[str, HvStatus | int]:
    """Calls that are only valid in some states, by name, with their statuses now."""
    root = machine.root
    return {
        "initialize": root.WinHvInitializePartition(pid),
        "delete": root.WinHvDeletePartition(pid),
        "create_vp": root.WinHvCreateVp(pid, 7),
        "set_property": root.WinHvSetPartitionProperty(pid, P.CPU_WEIGHT, 5),
        "map": root.WinHvMapGpaPages(pid, 100, [0x3F0]),
        "create_port": root.WinHvCreatePort(pid, 99, HvPortType.MESSAGE,
                                            connection_partition_id=1, target_sint=2),
        "connect_port": root.WinHvConnectPort(pid, 99, 1, 1, HvPortType.MESSAGE),
    }


def test_lifecycle_through_hypercalls_only(bridge_kind: str) -> None:
    machine = boot(bridge_kind, children=0)
    root, hv = machine.root, machine.hv
    status, pid = root.WinHvCreatePartition()
    ok(status)
    assert pid == 2
    assert hv.partitions[pid].state == STATE_CREATED
    ok(root.WinHvSetPartitionProperty(pid, P.PRIVILEGE_FLAGS, int(DEFAULT_CHILD_PRIVILEGES)))
    assert root.WinHvInitializePartition(pid) == HvStatus.INSUFFICIENT_MEMORY  # no pool yet
    ok(root.WinHvDepositMemory(pid, range(0x100, 0x104)))
    ok(root.WinHvInitializePartition(pid))
    assert hv.partitions[pid].state == STATE_ACTIVE
    ok(root.WinHvFinalizePartition(pid))
    assert hv.partitions[pid].state == STATE_FINALIZED
    ok(root.WinHvDeletePartition(pid))
    assert pid not in hv.partitions
    status, second = root.WinHvCreatePartition()
    ok(status)
    assert second == 3                                # ids are never reused


def test_calls_in_the_created_state(machine: Machine) -> None:
    status, pid = machine.root.WinHvCreatePartition()
    ok(status)
    got = wrong_state_calls(machine, pid)
    assert got["initialize"] == HvStatus.INSUFFICIENT_MEMORY
    assert got["delete"] == STATE
    assert got["create_vp"] == STATE
    assert got["set_property"] == HvStatus.SUCCESS
    assert got["map"] == HvStatus.SUCCESS             # RAM may be mapped before init
    assert got["create_port"] == HvStatus.SUCCESS
    ok(machine.root.WinHvFinalizePartition(pid))      # a created partition can be torn down


def test_calls_in_the_active_state(machine: Machine) -> None:
    pid = machine.guests[0].partition_id
    got = wrong_state_calls(machine, pid)
    assert got["initialize"] == STATE
    assert got["delete"] == STATE
    assert machine.root.WinHvSetPartitionProperty(pid, P.PRIVILEGE_FLAGS, 0) == STATE


def test_finalized_partition_refuses_everything_but_delete(machine: Machine) -> None:
    pid = machine.guests[0].partition_id
    ok(machine.root.WinHvFinalizePartition(pid))
    root = machine.root
    assert root.WinHvFinalizePartition(pid) == STATE
    assert root.WinHvInitializePartition(pid) == STATE
    assert root.WinHvCreateVp(pid, 1) == STATE
    assert root.WinHvSetPartitionProperty(pid, P.CPU_WEIGHT, 1) == STATE
    assert root.WinHvMapGpaPages(pid, 200, [0x3F0]) == STATE
    assert root.WinHvCreatePort(pid, 50, HvPortType.MESSAGE, connection_partition_id=1,
                                target_sint=2) == STATE
    assert root.WinHvConnectPort(pid, 50, 1, 1, HvPortType.MESSAGE) == STATE
    with pytest.raises(ValueError, match="not active"):
        machine.hv.handle(pid, input_gpa=0, output_gpa=0x1000)
    ok(root.WinHvDeletePartition(pid))


def test_deleted_partition_is_an_invalid_partition_id(machine: Machine) -> None:
    pid = machine.guests[0].partition_id
    ok(machine.root.WinHvFinalizePartition(pid))
    ok(machine.root.WinHvDeletePartition(pid))
    for status in (machine.root.WinHvDeletePartition(pid),
                   machine.root.WinHvFinalizePartition(pid),
                   machine.root.WinHvGetPartitionProperty(pid, P.PRIVILEGE_FLAGS)[0],
                   machine.root.WinHvGetMemoryBalance(pid)[0]):
        assert status == HvStatus.INVALID_PARTITION_ID


def test_finalize_resets_vps_and_deletes_ports(machine: Machine) -> None:
    guest = machine.guests[0]
    machine.message_channel(guest.partition_id, 1, port_id=5, connection_id=7)
    ok(machine.root.WinHvFinalizePartition(guest.partition_id))
    assert guest.partition.ports == {}
    assert guest.vp.scontrol == 0
    assert machine.root.WinHvPostMessage(7, 1, b"x") == HvStatus.INVALID_PORT_ID


def test_root_cannot_manage_itself_as_a_child(machine: Machine) -> None:
    for target in (SELF, 1):
        assert machine.root.WinHvFinalizePartition(target) == HvStatus.ACCESS_DENIED
        assert machine.root.WinHvDeletePartition(target) == HvStatus.ACCESS_DENIED


@pytest.fixture
def managers(bridge_kind: str) -> Machine:
    """Two children that may manage partitions of their own (a nested parent's rights)."""
    machine = boot(bridge_kind, children=0)
    rights = int(DEFAULT_CHILD_PRIVILEGES | Privilege.CREATE_PARTITIONS
                 | Privilege.ACCESS_MEMORY_POOL | Privilege.CREATE_PORT | Privilege.CONNECT_PORT)
    machine.add_child(privileges=rights)
    machine.add_child(privileges=rights)
    return machine


def test_child_cannot_touch_a_sibling_or_an_unknown_partition(managers: Machine) -> None:
    first, second = managers.guests
    h = first.handle
    sibling = second.partition_id
    assert h.WinHvFinalizePartition(sibling) == HvStatus.ACCESS_DENIED
    assert h.WinHvSetPartitionProperty(sibling, P.CPU_WEIGHT, 1) == HvStatus.ACCESS_DENIED
    assert h.WinHvGetMemoryBalance(sibling)[0] == HvStatus.ACCESS_DENIED
    assert h.WinHvGetVpRegisters([R.SIMP], partition_id=sibling)[0] == HvStatus.ACCESS_DENIED
    assert h.WinHvSetVpRegisters([(R.SCONTROL, 0)], partition_id=sibling) == \
        HvStatus.ACCESS_DENIED
    assert h.WinHvGetVpRegisters([R.SIMP], partition_id=1)[0] == HvStatus.ACCESS_DENIED
    assert h.WinHvCreatePort(sibling, 1, HvPortType.MESSAGE, connection_partition_id=1,
                             target_sint=2) == HvStatus.ACCESS_DENIED
    assert h.WinHvFinalizePartition(0x999) == HvStatus.INVALID_PARTITION_ID
    assert h.WinHvGetNextChildPartition(1) == (HvStatus.ACCESS_DENIED, 0)
    assert second.vp.scontrol == 1
    assert second.partition.state == STATE_ACTIVE


def test_child_cannot_manage_itself(managers: Machine) -> None:
    h = managers.guests[0].handle
    for target in (SELF, managers.guests[0].partition_id):
        assert h.WinHvFinalizePartition(target) == HvStatus.ACCESS_DENIED
        assert h.WinHvSetPartitionProperty(target, P.PRIVILEGE_FLAGS, 2**64 - 1) == \
            HvStatus.ACCESS_DENIED


def test_parent_cannot_grant_privileges_it_lacks(managers: Machine) -> None:
    h = managers.guests[0].handle
    status, grandchild = h.WinHvCreatePartition()
    ok(status)
    assert h.WinHvSetPartitionProperty(grandchild, P.PRIVILEGE_FLAGS,
                                       int(Privilege.ACCESS_STATS)) == HvStatus.ACCESS_DENIED
    ok(h.WinHvSetPartitionProperty(grandchild, P.PRIVILEGE_FLAGS,
                                   int(Privilege.ACCESS_PARTITION_ID)))
    assert h.WinHvGetPartitionProperty(grandchild, P.PRIVILEGE_FLAGS) == (
        HvStatus.SUCCESS, int(Privilege.ACCESS_PARTITION_ID))
    # The root is not the grandchild's parent.
    assert managers.root.WinHvFinalizePartition(grandchild) == HvStatus.ACCESS_DENIED


def test_get_next_child_partition_walks_children_in_id_order(bridge_kind: str) -> None:
    machine = boot(bridge_kind, children=3)
    ids = [g.partition_id for g in machine.guests]
    walked, previous = [], 0
    while True:
        status, previous = machine.root.WinHvGetNextChildPartition(SELF, previous)
        ok(status)
        if previous == 0:
            break
        walked.append(previous)
    assert walked == ids
    ok(machine.root.WinHvFinalizePartition(ids[1]))
    ok(machine.root.WinHvDeletePartition(ids[1]))
    assert machine.root.WinHvGetNextChildPartition(1, ids[0]) == (HvStatus.SUCCESS, ids[2])
    assert machine.root.WinHvGetNextChildPartition(1, ids[2]) == (HvStatus.SUCCESS, 0)
    assert machine.guests[0].handle.WinHvGetNextChildPartition() == (HvStatus.SUCCESS, 0)


def test_properties_read_back_and_unknown_codes_are_refused(machine: Machine) -> None:
    root, pid = machine.root, machine.guests[0].partition_id
    assert root.WinHvGetPartitionProperty(pid, P.PRIVILEGE_FLAGS) == (
        HvStatus.SUCCESS, int(DEFAULT_CHILD_PRIVILEGES))
    assert root.WinHvGetPartitionProperty(pid, P.CPU_WEIGHT) == (HvStatus.SUCCESS, 0)
    ok(root.WinHvSetPartitionProperty(pid, P.CPU_WEIGHT, 250))
    assert root.WinHvGetPartitionProperty(pid, P.CPU_WEIGHT) == (HvStatus.SUCCESS, 250)
    assert root.WinHvGetPartitionProperty(pid, 0x0001_FFFF) == (HvStatus.UNKNOWN_PROPERTY, 0)
    assert root.WinHvSetPartitionProperty(pid, 0x0001_FFFF, 1) == HvStatus.UNKNOWN_PROPERTY
    assert root.WinHvSetPartitionProperty(pid, P.SUSPEND, 2) == \
        HvStatus.PROPERTY_VALUE_OUT_OF_RANGE
    ok(root.WinHvSetPartitionProperty(pid, P.SUSPEND, 1))
    assert root.WinHvGetPartitionProperty(SELF, P.PRIVILEGE_FLAGS)[1] == \
        machine.hv.root.privileges


def test_create_vp_checks_index_and_duplicates(machine: Machine) -> None:
    root, pid = machine.root, machine.guests[0].partition_id
    assert root.WinHvCreateVp(pid, 0) == HvStatus.INVALID_VP_STATE
    assert root.WinHvCreateVp(pid, 2048) == HvStatus.INVALID_VP_INDEX
    ok(root.WinHvCreateVp(pid, 3))
    assert machine.hv.partitions[pid].vp(3).get_sint(0) == 0x10000
    ok(root.WinHvDeleteVp(pid, 3))
    assert root.WinHvDeleteVp(pid, 3) == HvStatus.INVALID_VP_INDEX
    assert root.WinHvDeleteVp(pid, 4000) == HvStatus.INVALID_VP_INDEX
