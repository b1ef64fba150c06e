"""A guest kernel on a real hypervisor: SynIC enable in the Linux order (fact sheet §2.7) read
back through WinHvGetVpRegisters, message dispatch with EOM when MessagePending is set (§2.4),
event-flag dispatch (§2.5), timers, and handler faults that go to ``on_fault`` without
stopping the ISR."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from winhv._registers import SINT_AUTO_EOI, SINT_MASKED, HvRegisterName
from winhv._status import HvStatus
from winhv._structs import HvPortType
from winhv.drivers.kernel import VMBUS_VECTOR, Kernel, KernelError, PageAllocator
from winhv.drivers.vmbus.loopback import boot_host

R = HvRegisterName
SINT = 3
VECTOR = 0x40


class Machine:
    """A root kernel and one guest kernel (not yet SynIC-enabled), with paths root -> guest."""

    def __init__(self, *, clock: bool = True) -> None:
        self.hv, self.root, _host, self.vid = boot_host(root_memory_mb=64)
        part = self.vid.create_partition("k", memory_mb=2)
        pid = self.pid = part.partition_id
        self.guest = Kernel(
            lambda i, o, vp: self.hv.handle(pid, input_gpa=i, output_gpa=o, vp_index=vp),
            PageAllocator(16, part.memory_pages - 16, name="k"), name="k",
            clock=self.hv.scheduler if clock else None)
        self.hv.set_interrupt_handler(pid, 0, self.guest.interrupt)
        self.faults: list[tuple[str, str]] = []
        self.guest.on_fault = lambda where, exc: self.faults.append((where, str(exc)))
        self._next = 0x700

    def message_path(self, sint: int = SINT) -> int:
        """A root connection id whose messages land in the guest's SINT ``sint``."""
        self._next += 1
        hv = self.root.hv
        assert hv.WinHvCreatePort(self.pid, self._next, HvPortType.MESSAGE,
                                  connection_partition_id=self.root.partition_id,
                                  target_sint=sint, target_vp=0) == HvStatus.SUCCESS
        assert hv.WinHvConnectPort(self.root.partition_id, self._next, self.pid, self._next,
                                   HvPortType.MESSAGE) == HvStatus.SUCCESS
        return self._next

    def event_path(self, base_flag: int, count: int, sint: int = SINT) -> int:
        """A root connection id that signals guest flags ``base_flag + n`` of SINT ``sint``."""
        self._next += 1
        hv = self.root.hv
        assert hv.WinHvCreatePort(self.pid, self._next, HvPortType.EVENT,
                                  connection_partition_id=self.root.partition_id,
                                  target_sint=sint, target_vp=0, base_flag=base_flag,
                                  flag_count=count) == HvStatus.SUCCESS
        assert hv.WinHvConnectPort(self.root.partition_id, self._next, self.pid, self._next,
                                   HvPortType.EVENT) == HvStatus.SUCCESS
        return self._next

    def post(self, connection: int, data: bytes, message_type: int = 7) -> Any:
        return self.root.hv.WinHvPostMessage(connection, message_type, data)

    def run(self) -> int:
        return self.hv.scheduler.run_until_idle()


# -- SynIC enable -------------------------------------------------------------------------------


def test_enable_synic_programs_the_registers_as_linux_does():
    m = Machine()
    free_before = m.guest.allocator.free_pages
    m.guest.enable_synic({2: VMBUS_VECTOR, SINT: VECTOR})
    status, (simp, siefp, sint2, sint3, sint4, scontrol) = m.guest.hv.WinHvGetVpRegisters(
        [R.SIMP, R.SIEFP, R.SINT0 + 2, R.SINT0 + SINT, R.SINT0 + 4, R.SCONTROL])
    assert status == HvStatus.SUCCESS
    assert simp & 1
    assert siefp & 1
    simp_gpa, siefp_gpa = simp & ~0xFFF, siefp & ~0xFFF
    assert simp_gpa != siefp_gpa
    # Both pages come from the kernel's own allocator and start zeroed.
    assert m.guest.allocator.free_pages == free_before - 2
    assert bytes(m.guest.view(simp_gpa, 4096)) == bytes(4096)
    assert bytes(m.guest.view(siefp_gpa, 4096)) == bytes(4096)
    assert sint2 == VMBUS_VECTOR | SINT_AUTO_EOI
    assert sint3 == VECTOR | SINT_AUTO_EOI
    assert sint4 & SINT_MASKED                # untouched SINTs stay masked (reset value)
    assert scontrol == 1


def test_enable_synic_defaults_to_the_vmbus_sint_only():
    m = Machine()
    m.guest.enable_synic()
    _, (sint2, sint3) = m.guest.hv.WinHvGetVpRegisters([R.SINT0 + 2, R.SINT0 + 3])
    assert sint2 == 0xF3 | SINT_AUTO_EOI
    assert sint3 & SINT_MASKED


@pytest.mark.parametrize("sints", [{16: VECTOR}, {-1: VECTOR}, {2: 15}, {2: 256}])
def test_enable_synic_refuses_bad_sints_and_vectors(sints):
    m = Machine()
    with pytest.raises(ValueError, match="bad SINT"):
        m.guest.enable_synic(sints)


def test_enable_synic_failure_is_a_kernel_error():
    m = Machine()
    m.hv.bridge.inject_fault(0x0051, HvStatus.ACCESS_DENIED)   # HvCallSetVpRegisters
    with pytest.raises(KernelError, match="enabling the SynIC failed"):
        m.guest.enable_synic()


@pytest.mark.parametrize(("sint", "flag"), [(16, 0), (2, 2048), (-1, 0), (2, -1)])
def test_handler_registration_checks_its_sint_and_flag(sint, flag):
    m = Machine()
    with pytest.raises(ValueError, match="outside"):
        m.guest.on_event(sint, flag, lambda: None)
    if flag == 0:
        with pytest.raises(ValueError, match="outside"):
            m.guest.on_message(sint, lambda message: None)


# -- messages -----------------------------------------------------------------------------------


def test_messages_are_dispatched_in_order_with_eom_for_the_pending_ones():
    m = Machine()
    got: list[tuple[int, int, bytes]] = []
    # Registered before the SynIC exists: kept and installed by enable_synic.
    m.guest.on_message(SINT, lambda msg: got.append((msg[0], msg[4], bytes(msg[16:16 + msg[4]]))))
    m.guest.enable_synic({SINT: VECTOR})
    connection = m.message_path()
    statuses = [m.post(connection, b"message %d" % i) for i in range(5)]
    assert statuses == [HvStatus.SUCCESS] * 5
    assert got == []                  # nothing runs until the VP takes its interrupt
    m.run()
    assert got == [(7, 9, b"message %d" % i) for i in range(5)]
    assert m.guest.messages_received == 5
    # Four messages waited behind a busy slot; each was redelivered by an EOM.
    status, simp = m.guest.hv.WinHvGetVpRegister(R.SIMP)
    assert status == HvStatus.SUCCESS
    slot = m.guest.view((simp & ~0xFFF) + SINT * 256, 256)
    assert struct.unpack_from("<I", slot)[0] == 0        # slot free again
    assert slot[5] & 1 == 0                              # MessagePending clear
    assert m.faults == []


def test_more_messages_than_the_buffers_hold_are_refused_then_accepted_after_the_isr():
    m = Machine()
    got: list[bytes] = []
    m.guest.on_message(SINT, lambda msg: got.append(bytes(msg[16:20])))
    m.guest.enable_synic({SINT: VECTOR})
    connection = m.message_path()
    statuses = [m.post(connection, struct.pack("<I", i)) for i in range(40)]
    accepted = statuses.count(HvStatus.SUCCESS)
    assert HvStatus.INSUFFICIENT_BUFFERS in statuses
    assert statuses[:accepted] == [HvStatus.SUCCESS] * accepted
    m.run()
    assert got == [struct.pack("<I", i) for i in range(accepted)]
    assert m.post(connection, b"more") == HvStatus.SUCCESS


def test_a_sint_without_a_handler_still_frees_its_slot():
    m = Machine()
    m.guest.enable_synic({SINT: VECTOR})
    connection = m.message_path()
    for _ in range(3):
        m.post(connection, b"nobody listens")
    m.run()
    assert m.guest.messages_received == 3
    m.guest.on_message(SINT, lambda msg: None)
    assert m.post(connection, b"x") == HvStatus.SUCCESS


def test_a_raising_message_handler_goes_to_on_fault_and_the_isr_goes_on():
    m = Machine()
    got: list[bytes] = []

    def handler(message: bytes) -> None:
        got.append(bytes(message[16:19]))
        if len(got) == 1:
            raise RuntimeError("first message is bad")

    m.guest.on_message(SINT, handler)
    m.guest.enable_synic({SINT: VECTOR})
    connection = m.message_path()
    for i in range(3):
        m.post(connection, b"m%d " % i)
    m.run()
    assert got == [b"m0 ", b"m1 ", b"m2 "]
    assert m.faults == [("message", "first message is bad")]


def test_poll_handles_what_is_pending_without_an_interrupt():
    m = Machine()
    got: list[bytes] = []
    m.guest.on_message(SINT, lambda msg: got.append(bytes(msg[16:18])))
    m.guest.enable_synic({SINT: VECTOR})
    m.post(m.message_path(), b"hi")
    m.guest.poll()
    assert got == [b"hi"]


# -- events -------------------------------------------------------------------------------------


def test_event_flags_call_their_handlers_once_and_are_cleared():
    m = Machine()
    m.guest.enable_synic({SINT: VECTOR})
    calls: list[int] = []
    for flag in (100, 101, 102):
        m.guest.on_event(SINT, flag, lambda flag=flag: calls.append(flag))
    connection = m.event_path(100, 3)
    assert m.root.hv.WinHvSignalEvent(connection, 2) == HvStatus.SUCCESS
    assert m.root.hv.WinHvSignalEvent(connection, 0) == HvStatus.SUCCESS
    m.run()
    assert sorted(calls) == [100, 102]
    assert m.guest.events_received == 2
    status, siefp = m.guest.hv.WinHvGetVpRegister(R.SIEFP)
    assert status == HvStatus.SUCCESS
    assert bytes(m.guest.view((siefp & ~0xFFF) + SINT * 256, 256)) == bytes(256)
    m.run()
    assert len(calls) == 2                       # taken once: no second call


def test_a_flag_without_a_handler_is_cleared_silently():
    m = Machine()
    m.guest.enable_synic({SINT: VECTOR})
    calls: list[int] = []
    m.guest.on_event(SINT, 7, lambda: calls.append(7))
    connection = m.event_path(5, 4)
    m.root.hv.WinHvSignalEvent(connection, 0)    # flag 5: nobody
    m.root.hv.WinHvSignalEvent(connection, 2)    # flag 7
    m.run()
    assert calls == [7]
    assert m.guest.events_received == 1
    m.guest.on_event(SINT, 7, None)              # unregistered: no longer called
    m.root.hv.WinHvSignalEvent(connection, 2)
    m.run()
    assert calls == [7]


def test_a_raising_event_handler_goes_to_on_fault_and_the_others_still_run():
    m = Machine()
    m.guest.enable_synic({SINT: VECTOR})
    calls: list[int] = []

    def bad() -> None:
        calls.append(1)
        raise ValueError("bad flag handler")

    m.guest.on_event(SINT, 1, bad)
    m.guest.on_event(SINT, 2, lambda: calls.append(2))
    m.guest.on_event(SINT, 1000, lambda: calls.append(1000))
    connection = m.event_path(1, 1000)
    for flag in (0, 1, 999):
        m.root.hv.WinHvSignalEvent(connection, flag)
    m.run()
    assert calls == [1, 2, 1000]
    assert m.faults == [("event", "bad flag handler")]


def test_messages_and_events_on_one_vector_are_both_handled():
    m = Machine()
    m.guest.enable_synic({SINT: VECTOR, 4: VECTOR})
    seen: list[str] = []
    m.guest.on_message(4, lambda msg: seen.append("message"))
    m.guest.on_event(SINT, 3, lambda: seen.append("event"))
    m.post(m.message_path(4), b"m")
    m.root.hv.WinHvSignalEvent(m.event_path(3, 1), 0)
    m.run()
    assert sorted(seen) == ["event", "message"]


def test_without_a_fault_hook_a_raising_handler_is_logged(caplog):
    m = Machine()
    m.guest.on_fault = None
    m.guest.enable_synic({SINT: VECTOR})
    m.guest.on_event(SINT, 9, lambda: 1 / 0)
    m.root.hv.WinHvSignalEvent(m.event_path(9, 1), 0)
    m.run()
    assert "event handler raised" in caplog.text


# -- memory and timers --------------------------------------------------------------------------


def test_alloc_pages_zeroes_and_free_pages_returns_them():
    m = Machine()
    free_before = m.guest.allocator.free_pages
    gpa = m.guest.alloc_pages(2)
    m.guest.view(gpa, 8192)[:] = b"\xff" * 8192
    m.guest.free_pages(gpa, 2)
    assert m.guest.allocator.free_pages == free_before
    again = m.guest.alloc_pages(2)
    assert again == gpa
    assert bytes(m.guest.view(gpa, 8192)) == bytes(8192)


def test_alloc_pages_over_zeroed_ram_clears_only_what_was_used_and_reads_zero():
    m = Machine()
    part = m.vid.partitions[m.pid]
    kernel = Kernel(lambda i, o, vp: m.hv.handle(m.pid, input_gpa=i, output_gpa=o, vp_index=vp),
                    PageAllocator(16, part.memory_pages - 16, name="z", zeroed=True), name="z")
    zeroed: list[tuple[int, int]] = []
    real_zero = kernel.memory.zero
    kernel.memory = _Spy(kernel.memory, lambda gpa, size: (zeroed.append((gpa, size)),
                                                            real_zero(gpa, size)))
    gpa = kernel.alloc_pages(2)
    assert zeroed == []                       # never used: VID handed the RAM over zeroed
    kernel.view(gpa, 8192)[:] = b"\xff" * 8192
    kernel.free_pages(gpa, 2)
    again = kernel.alloc_pages(3)             # two used pages, then one never used
    assert again == gpa
    assert zeroed == [(gpa, 8192)]
    assert bytes(kernel.view(gpa, 3 * 4096)) == bytes(3 * 4096)


class _Spy:
    """``memory`` with ``zero`` replaced (GpaSpace is compiled: its methods cannot be)."""

    def __init__(self, memory: Any, zero: Any) -> None:
        self._memory = memory
        self.zero = zero

    def __getattr__(self, name: str) -> Any:
        return getattr(self._memory, name)


def test_call_later_runs_on_virtual_time_and_contains_faults():
    m = Machine()
    ran: list[int] = []
    m.guest.call_later(1000, lambda: ran.append(m.hv.scheduler.now))
    m.guest.call_later(500, lambda: 1 / 0)
    m.hv.scheduler.run_for(2000)
    assert ran == [1000]
    assert m.faults == [("timer", "division by zero")]


def test_call_later_without_a_clock_is_a_kernel_error():
    m = Machine(clock=False)
    with pytest.raises(KernelError, match="has no timer"):
        m.guest.call_later(1, lambda: None)
