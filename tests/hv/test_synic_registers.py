"""SynIC and partition registers through Get/SetVpRegisters (fact sheet §1.1, §2.1, §2.2)."""

from __future__ import annotations

import struct

from support.hv import CHILD_PAGES, CHILD_SIMP_GPA, Machine, boot, control, ok

from winhv.abi import DEFAULT_CHILD_PRIVILEGES, HvRegisterName, HvStatus, Privilege

R = HvRegisterName
SINTS = [R.SINT0 + n for n in range(16)]


def test_fresh_vp_reads_the_reset_values(bridge_kind: str) -> None:
    machine = boot(bridge_kind, synic=False)
    h = machine.guests[0].handle
    status, values = h.WinHvGetVpRegisters([R.SVERSION, R.SCONTROL, R.SIMP, R.SIEFP, R.EOM,
                                            R.VP_INDEX, R.GUEST_OS_ID, R.HYPERCALL, *SINTS])
    ok(status)
    assert values == [1, 0, 0, 0, 0, 0, 0, 0] + [0x10000] * 16


def test_programmed_registers_read_back(machine: Machine) -> None:
    h = machine.guests[0].handle
    assert h.WinHvGetVpRegisters([R.SCONTROL, R.SIMP, R.SIEFP, R.SINT2]) == (
        HvStatus.SUCCESS, [1, 0x2001, 0x3001, 0x50])
    ok(h.WinHvSetVpRegisters([(R.SINT7, 0x10000 | 1 << 17 | 0xF3)]))
    assert h.WinHvGetVpRegister(R.SINT7) == (HvStatus.SUCCESS, 0x300F3)


def test_eom_is_write_only_and_reads_zero(machine: Machine) -> None:
    h = machine.guests[0].handle
    ok(h.WinHvSetVpRegister(R.EOM, 0x1234))
    assert h.WinHvGetVpRegister(R.EOM) == (HvStatus.SUCCESS, 0)


def test_read_only_registers_refuse_writes(machine: Machine) -> None:
    h = machine.guests[0].handle
    for name in (R.SVERSION, R.VP_INDEX, R.TIME_REF_COUNT):
        assert h.WinHvSetVpRegister(name, 5) == HvStatus.INVALID_PARAMETER
    assert h.WinHvGetVpRegister(R.SVERSION) == (HvStatus.SUCCESS, 1)


def test_unmasked_sint_vector_below_16_is_refused(machine: Machine) -> None:
    h = machine.guests[0].handle
    for vector in (0, 1, 15):
        assert h.WinHvSetVpRegister(R.SINT4, vector) == HvStatus.INVALID_PARAMETER
    assert h.WinHvGetVpRegister(R.SINT4) == (HvStatus.SUCCESS, 0x10000)
    ok(h.WinHvSetVpRegister(R.SINT4, 0x10000 | 3))     # masked: the vector does not matter
    ok(h.WinHvSetVpRegister(R.SINT4, 16))
    assert h.WinHvGetVpRegister(R.SINT4) == (HvStatus.SUCCESS, 16)


def test_hypercall_enable_stays_clear_until_a_guest_os_id_is_set(machine: Machine) -> None:
    h = machine.guests[0].handle
    ok(h.WinHvSetVpRegister(R.HYPERCALL, 0x5000 | 1))
    assert h.WinHvGetVpRegister(R.HYPERCALL) == (HvStatus.SUCCESS, 0x5000)
    ok(h.WinHvSetVpRegister(R.GUEST_OS_ID, 0x8100 << 48 | 6 << 16))
    ok(h.WinHvSetVpRegister(R.HYPERCALL, 0x5000 | 1))
    assert h.WinHvGetVpRegister(R.HYPERCALL) == (HvStatus.SUCCESS, 0x5001)
    ok(h.WinHvSetVpRegister(R.GUEST_OS_ID, 0))          # zero disables the page again
    assert h.WinHvGetVpRegister(R.HYPERCALL) == (HvStatus.SUCCESS, 0x5000)


def test_enabling_the_message_page_zeroes_it(machine: Machine) -> None:
    guest = machine.guests[0]
    guest.memory.write(0x9000, b"\xFF" * 4096)
    ok(guest.handle.WinHvSetVpRegister(R.SIMP, 0x9000 | 1))
    assert guest.memory.read(0x9000, 4096) == bytes(4096)
    assert guest.handle.WinHvGetVpRegister(R.SIMP) == (HvStatus.SUCCESS, 0x9001)


def test_overlay_page_outside_the_partitions_memory_is_refused(machine: Machine) -> None:
    h = machine.guests[0].handle
    for gpa in (CHILD_PAGES << 12, (1 << 64) - 4096):
        assert h.WinHvSetVpRegister(R.SIEFP, gpa | 1) == HvStatus.INVALID_PARAMETER
    assert h.WinHvGetVpRegister(R.SIMP) == (HvStatus.SUCCESS, CHILD_SIMP_GPA | 1)


def test_unknown_register_name_is_refused(machine: Machine) -> None:
    h = machine.guests[0].handle
    assert h.WinHvGetVpRegister(0x12345) == (HvStatus.UNKNOWN_REGISTER_NAME, 0)
    assert h.WinHvSetVpRegister(0x12345, 0) == HvStatus.UNKNOWN_REGISTER_NAME


def test_register_value_wider_than_64_bits_is_invalid_parameter(machine: Machine) -> None:
    guest = machine.guests[0]
    guest.memory.write(0, struct.pack("<QIB3xI12xQQ", 2**64 - 1, 0xFFFF_FFFE, 0,
                                      R.SINT3, 0x20, 1))
    word = control(0x51, rep_count=1)
    assert guest.handle.hypercall(word, 0, 0) == HvStatus.INVALID_PARAMETER


def test_time_reference_count_is_the_virtual_clock_in_100ns(machine: Machine) -> None:
    machine.hv.scheduler.run_for(12_345_600)
    assert machine.guests[0].handle.WinHvGetVpRegister(R.TIME_REF_COUNT) == (
        HvStatus.SUCCESS, 123_456)


def test_synic_registers_need_the_synic_privilege(bridge_kind: str) -> None:
    machine = boot(bridge_kind, children=0)
    guest = machine.add_child(
        synic=False, privileges=int(DEFAULT_CHILD_PRIVILEGES & ~Privilege.ACCESS_SYNIC_REGS))
    assert guest.handle.WinHvSetVpRegister(R.SCONTROL, 1) == HvStatus.ACCESS_DENIED
    assert guest.handle.WinHvGetVpRegister(R.SIMP) == (HvStatus.ACCESS_DENIED, 0)
    # The parent may still program the child's SynIC.
    ok(machine.root.WinHvSetVpRegisters([(R.SCONTROL, 1)], partition_id=guest.partition_id,
                                        vp_index=0))
    assert guest.vp.scontrol == 1
