"""A hostile guest against the root's VMBus glue (``_server``, ``_host``): OPENCHANNELs the
host cannot honour, endless open/close cycles, a guest that stops taking its messages, and a
flood of bad messages.

The rule (architecture: "the guest is untrusted"): every OPENCHANNEL gets an OPENCHANNEL_RESULT
(fact sheet §3.5(c)); a refused open leaves the host's SIEF flags, port and connection ids and
routes exactly as it found them, so the same relid opens later; the ids an open takes come back
when it closes; what the host keeps per VM (errors, the outbox, open channels) is bounded; and
another VM on the same host keeps opening channels whatever the first one did.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from support.vmbus_io import (
    ECHO_IF,
    UNKNOWN_IF,
    EchoVsc,
    EchoVsp,
    assert_echo_works,
    frame,
)

from winhv._status import HvStatus
from winhv.drivers.vmbus._channel import ChannelError
from winhv.drivers.vmbus._guest import DeviceState
from winhv.drivers.vmbus._messages import InitiateContact, TlConnectRequest
from winhv.drivers.vmbus._server import HostDevice, VmbusServer
from winhv.drivers.vmbus._server_notifier import ChannelState
from winhv.drivers.vmbus._versions import VmbusVersion
from winhv.drivers.vmbus.loopback import Loopback, boot_host, boot_vm
from winhv.drivers.vmbus.ring import READ_INDEX_OFFSET, WRITE_INDEX_OFFSET

HV_ANY_VP = 0xFFFF_FFFF
RING_PAGES = 4   # two pages each way; the host->guest ring starts at page 2


# -- helpers ------------------------------------------------------------------------------------


def _manual_device(loop: Loopback, vsp: EchoVsp | None = None) -> int:
    """A device no guest driver binds, so the test drives the guest's protocol by hand."""
    return loop.offer("manual", vsp or EchoVsp(), UNKNOWN_IF).relid


def _record_open_results(loop: Loopback) -> list[tuple[int, int]]:
    """Every OPENCHANNEL_RESULT the guest receives, as ``(relid, status)``."""
    results: list[tuple[int, int]] = []
    forward = loop.client.open_result

    def record(relid: int, status: int) -> None:
        results.append((relid, status))
        forward(relid, status)

    loop.client.open_result = record   # type: ignore[method-assign]
    return results


def _ring_gpadl(loop: Loopback, relid: int) -> tuple[int, int]:
    """Guest pages for both rings and a GPADL over them; returns ``(gpadl_id, gpa)``."""
    gpa = loop.guest.alloc_pages(RING_PAGES)
    gpadl_id = loop.client.protocol.create_gpadl(
        relid, [(gpa >> 12) + i for i in range(RING_PAGES)])
    loop.run()
    return gpadl_id, gpa


def _open(loop: Loopback, relid: int, gpadl_id: int, target_vp: int = 0) -> None:
    loop.client.protocol.open_channel(relid, gpadl_id, RING_PAGES // 2, target_vp=target_vp)
    loop.run()


def _close(loop: Loopback, relid: int) -> None:
    loop.client.protocol.close_channel(relid)
    loop.run()


def _resources(loop: Loopback) -> dict[str, Any]:
    """Everything an open takes: the host's pools and routes, both partitions' ports and
    connections, the server's open channels."""
    host = loop.host
    root = loop.hv.partitions[loop.root.partition_id]
    guest = loop.hv.partitions[loop.partition.partition_id]
    return {
        "free flags": list(host._flags.free),
        "next flag": host._flags.next,
        "free ports": list(host._port_ids.free),
        "next port": host._port_ids.next,
        "free connections": list(host._connection_ids.free),
        "next connection": host._connection_ids.next,
        "routes": dict(host._routes),
        "root ports": sorted(root.ports),
        "root connections": sorted(root.connections),
        "guest ports": sorted(guest.ports),
        "guest connections": sorted(guest.connections),
        "open": sorted(loop.server._open),
    }


def _wiring(loop: Loopback) -> dict[str, Any]:
    """The hypervisor's side of :func:`_resources`: ports, connections and routes."""
    state = _resources(loop)
    return {k: v for k, v in state.items() if "free" not in k and "next" not in k}


class _FailingHandle:
    """The root's WinHv handle, failing the ``nth`` next call of ``method`` with ``status``."""

    def __init__(self, hv: Any, method: str, nth: int = 1,
                 status: HvStatus = HvStatus.INVALID_PARAMETER) -> None:
        self._hv = hv
        self._method = method
        self._left = nth
        self._status = status

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._hv, name)
        if name != self._method:
            return real

        def call(*args: Any, **kwargs: Any) -> Any:
            self._left -= 1
            if self._left == 0:
                return (self._status, []) if name == "WinHvGetVpRegisters" else self._status
            return real(*args, **kwargs)

        return call


# -- OPENCHANNEL the host cannot honour ---------------------------------------------------------


@pytest.mark.parametrize("target_vp", [1, 5000, HV_ANY_VP - 1])
def test_an_open_naming_a_vp_the_vm_lacks_is_refused_and_leaves_no_trace(target_vp):
    loop = boot_vm()
    relid = _manual_device(loop)
    results = _record_open_results(loop)
    gpadl_id, _ = _ring_gpadl(loop, relid)
    before = _resources(loop)
    _open(loop, relid, gpadl_id, target_vp)
    assert results == [(relid, 0xC0000001)]
    assert loop.server.protocol.channel_state(relid) is ChannelState.CLOSED
    assert _resources(loop) == before
    [error] = loop.server.errors
    assert error.startswith(f"vm: relid {relid} (manual): OPEN_CHANNEL.target_vp: "
                            f"found {target_vp}, expected")
    # The guest may try again, with a VP it has.
    _open(loop, relid, gpadl_id, 0)
    assert results[-1] == (relid, 0)
    assert loop.server.channel(relid) is not None


def test_an_open_to_any_vp_is_accepted():
    loop = boot_vm()
    relid = _manual_device(loop)
    results = _record_open_results(loop)
    gpadl_id, _ = _ring_gpadl(loop, relid)
    _open(loop, relid, gpadl_id, HV_ANY_VP)
    assert results == [(relid, 0)]
    assert loop.server.errors == []


@pytest.mark.parametrize(("ring_page", "offset", "field"), [
    (RING_PAGES // 2, WRITE_INDEX_OFFSET, "write_index"),   # host->guest: the host writes
    (0, READ_INDEX_OFFSET, "read_index"),                    # guest->host: the host reads
])
def test_an_open_over_a_corrupt_ring_control_page_is_refused_and_leaves_no_trace(
        ring_page, offset, field):
    loop = boot_vm()
    relid = _manual_device(loop)
    results = _record_open_results(loop)
    gpadl_id, gpa = _ring_gpadl(loop, relid)
    control = loop.guest.view(gpa + ring_page * 4096, 8)
    struct.pack_into("<I", control, offset, 12)   # not 8-byte aligned
    before = _resources(loop)
    _open(loop, relid, gpadl_id)
    assert results == [(relid, 0xC0000001)]
    assert _resources(loop) == before
    assert not [e for e in loop.server.errors if "internal error" in e]
    [error] = loop.server.errors
    assert error.startswith(f"vm: relid {relid} (manual): ring control page refused: ")
    assert field in error
    struct.pack_into("<I", control, offset, 0)
    _open(loop, relid, gpadl_id)
    assert results[-1] == (relid, 0)


def test_the_vps_a_guest_may_name_are_those_of_its_vm():
    machine = boot_host()
    _hv, _root, host, vid = machine
    part = vid.create_partition("two", memory_mb=16, processors=2)
    server = VmbusServer(host, part.partition_id, root_ram_page=part.root_ram_page,
                         guest_pages=part.memory_pages, name="two")
    assert [server._missing_vp("target_vp", vp) for vp in (0, 1, HV_ANY_VP)] == [None] * 3
    for vp, why in [(2, "the VM has no VP 2"), (2048, "no VM has more than 2048 VPs"),
                    (0xFFFF_FFFE, "no VM has more than 2048 VPs")]:
        assert server._missing_vp("target_vp", vp) == (
            f"target_vp: found {vp}, expected a VP of the VM or 0xffffffff (any VP); {why}")


def test_an_open_naming_a_vp_the_hypervisor_cannot_check_is_refused():
    loop = boot_vm()
    relid = _manual_device(loop)
    results = _record_open_results(loop)
    gpadl_id, _ = _ring_gpadl(loop, relid)
    real = loop.root.hv
    loop.root.hv = _FailingHandle(real, "WinHvGetVpRegisters", status=HvStatus.ACCESS_DENIED)
    _open(loop, relid, gpadl_id, 1)
    loop.root.hv = real
    assert results == [(relid, 0xC0000001)]
    [error] = loop.server.errors
    assert error.endswith("; VP 1 could not be checked: HV_STATUS_ACCESS_DENIED (0x0006)")


@pytest.mark.parametrize(("method", "nth", "what"), [
    ("WinHvCreatePort", 1, "create the root event port"),
    ("WinHvConnectPort", 1, "connect the guest's signal"),
    ("WinHvCreatePort", 2, "create the guest event port"),
    ("WinHvConnectPort", 2, "connect the root's signal"),
])
def test_a_hypercall_failing_part_way_through_an_open_is_undone(method, nth, what):
    loop = boot_vm()
    relid = _manual_device(loop)
    results = _record_open_results(loop)
    gpadl_id, _ = _ring_gpadl(loop, relid)
    before = _resources(loop)
    real = loop.root.hv
    loop.root.hv = _FailingHandle(real, method, nth)
    _open(loop, relid, gpadl_id)
    loop.root.hv = real
    assert results == [(relid, 0xC0000001)]
    assert _resources(loop) == before
    [error] = loop.server.errors
    assert what in error
    assert f"relid {relid}" in error
    _open(loop, relid, gpadl_id)
    assert results[-1] == (relid, 0)


class _GreetingVsp(EchoVsp):
    """Sends a greeting from ``on_open``, as many VSPs do (and copes with a failed send)."""

    def on_open(self, channel: Any) -> None:
        super().on_open(channel)
        with contextlib.suppress(ChannelError):
            channel.send(frame(b"hello"))


def test_a_channel_faulted_during_on_open_is_neither_wired_nor_reported_open():
    loop = boot_vm()
    relid = _manual_device(loop, _GreetingVsp())
    results = _record_open_results(loop)
    gpadl_id, gpa = _ring_gpadl(loop, relid)
    # The guest's read index of the host->guest ring is broken: the greeting faults the channel.
    struct.pack_into("<I", loop.guest.view(gpa + 2 * 4096, 8), READ_INDEX_OFFSET, 12)
    handlers: list[tuple[int, int, Callable[[], Any] | None]] = []
    register = loop.root.on_event
    loop.root.on_event = lambda sint, flag, handler: (   # type: ignore[method-assign]
        handlers.append((sint, flag, handler)), register(sint, flag, handler))
    statuses: list[int | None] = []
    open_channel = loop.server.open_channel
    loop.server.open_channel = lambda *args: statuses.append(   # type: ignore[method-assign]
        open_channel(*args)) or statuses[-1]
    before = _wiring(loop)
    _open(loop, relid, gpadl_id)
    assert statuses == [0xC0000001]
    assert [h for h in handlers if h[2] is not None] == []
    # The fault withdrew the offer (§3.5(f)): the guest got a rescind, not a success, and
    # released the relid.
    assert (relid, 0) not in results
    assert relid not in loop.server.protocol.channels()
    assert any("channel closed: outbound ring" in e for e in loop.server.errors)
    assert _wiring(loop) == before
    assert loop.host._flags.free == [(2, 1)]   # the flag it held is free again


# -- ids and flags come back --------------------------------------------------------------------


def test_endless_open_close_cycles_reuse_the_same_ids_and_flag():
    loop = boot_vm()
    relid = _manual_device(loop)
    gpadl_id, _ = _ring_gpadl(loop, relid)
    _open(loop, relid, gpadl_id)
    _close(loop, relid)
    after_one = _resources(loop)
    for _ in range(200):
        _open(loop, relid, gpadl_id)
        _close(loop, relid)
    assert _resources(loop) == after_one
    assert loop.server.errors == []


@pytest.mark.parametrize("pool", ["_port_ids", "_connection_ids", "flags"])
def test_an_exhausted_host_pool_fails_only_that_open_with_a_status(pool):
    loop = boot_vm()
    relid = _manual_device(loop)
    results = _record_open_results(loop)
    gpadl_id, _ = _ring_gpadl(loop, relid)
    host = loop.host
    if pool == "flags":
        host._flags.next = host._flags.count
    else:
        ids = getattr(host, pool)
        ids.next = ids.count
    before = _resources(loop)
    _open(loop, relid, gpadl_id)
    assert results == [(relid, 0xC0000001)]
    assert _resources(loop) == before
    [error] = loop.server.errors
    assert f"relid {relid}" in error
    assert "left" in error


def test_a_vm_at_its_channel_quota_gets_a_failure_status_for_one_more():
    loop = boot_vm([EchoVsc], connect=False)
    loop.server.max_open_channels = 2
    devices = [loop.server.add_device(f"echo{i}", EchoVsp(), ECHO_IF) for i in range(3)]
    loop.client.connect()
    loop.settle()
    states = [loop.client.devices[d.relid].state for d in devices]
    assert states.count(DeviceState.OPEN) == 2
    assert states.count(DeviceState.FAILED) == 1
    assert len(loop.server._open) == 2
    [error] = loop.server.errors
    assert "OPEN_CHANNEL: found 2 channels open, expected at most 2 per VM" in error


# -- bounded state ------------------------------------------------------------------------------


def test_errors_are_bounded_counted_and_their_log_rate_limited(caplog):
    loop = boot_vm()
    forwarded: list[str] = []
    loop.server.on_error = forwarded.append
    junk = struct.pack("<II", 0x1F, 0)   # no such message type
    posts = VmbusServer.ERRORS_KEPT + 1500
    with caplog.at_level(logging.WARNING, logger="winhv.vmbus"):
        for i in range(posts):
            loop.guest.hv.WinHvPostMessage(1, 1, junk)
            if i % 8 == 7:
                loop.run()
        loop.run()
    server = loop.server
    assert server.errors_total == posts
    assert len(server.errors) == VmbusServer.ERRORS_KEPT
    assert all("msgtype" in e for e in server.errors)
    logged = [r for r in caplog.records if r.name == "winhv.vmbus"]
    summaries = (posts - VmbusServer.ERRORS_LOGGED) // VmbusServer.ERRORS_SUMMARY_EVERY
    assert len(logged) == VmbusServer.ERRORS_LOGGED + summaries
    assert f"{VmbusServer.ERRORS_SUMMARY_EVERY} more errors since the last" in logged[-1].message
    assert len(forwarded) == len(logged)


def test_the_outbox_is_bounded_per_vm_and_drains_once_the_guest_reads_again():
    loop = boot_vm()
    loop.server.outbox_limit = 8
    pid = loop.partition.partition_id
    loop.hv.set_interrupt_handler(pid, 0, lambda vector: None)   # the guest stops reading
    request = TlConnectRequest(uuid.uuid4(), uuid.uuid4()).pack()
    posts = 60
    for i in range(posts):
        loop.guest.hv.WinHvPostMessage(1, 1, request)
        if i % 8 == 7:
            loop.run()
    loop.run()
    server = loop.server
    assert len(server._outbox) == 8
    assert server.outbox_dropped > 0
    assert any(e.startswith("vm: TL_CONNECT_RESULT to the guest dropped: 8 control messages")
               for e in server.errors)
    # The guest reads again: the pending retry posts what waits, in order.
    received = loop.guest.messages_received
    loop.hv.set_interrupt_handler(pid, 0, loop.guest.interrupt)
    loop.guest.poll()
    loop.settle(max_ns=1 << 40)
    assert len(server._outbox) == 0
    assert not server._outbox.retry_pending
    assert loop.guest.messages_received - received == posts - server.outbox_dropped


def test_a_vsp_failing_every_open_keeps_a_bounded_record(caplog):
    loop = boot_vm()
    relid = _manual_device(loop, EchoVsp({"fail_in": "on_open"}))
    results = _record_open_results(loop)
    gpadl_id, _ = _ring_gpadl(loop, relid)
    opens = HostDevice.DEVICE_ERRORS_KEPT + VmbusServer.ERRORS_LOGGED + 10
    with caplog.at_level(logging.WARNING, logger="winhv.vmbus"):
        for _ in range(opens):
            _open(loop, relid, gpadl_id)
    assert results == [(relid, 0xC0000001)] * opens
    device = loop.server.devices[relid]
    assert device.errors == ["on_open: injected fault in EchoVsp.on_open"] * \
        HostDevice.DEVICE_ERRORS_KEPT
    assert loop.server.errors_total == opens
    assert len([r for r in caplog.records if r.exc_info]) == VmbusServer.ERRORS_LOGGED
    assert loop.host._flags.free == [(2, 1)]


# -- the rest of the host -----------------------------------------------------------------------


def test_a_contact_whose_every_path_fails_is_contained_and_the_next_contact_works():
    loop = boot_vm([EchoVsc], connect=False)
    device = loop.server.add_device("echo", EchoVsp(), ECHO_IF)
    real = loop.root.hv
    # msg_sint 200 does not exist, and the fallback to SINT 2 of VP 0 fails as well.
    loop.root.hv = _FailingHandle(real, "WinHvCreatePort", 2)
    contact = InitiateContact(VmbusVersion.WIN10_V5_3, msg_sint=200).pack()
    loop.guest.hv.WinHvPostMessage(4, 1, contact)
    loop.settle()
    loop.root.hv = real
    errors = loop.server.errors
    assert not [e for e in errors if "internal error" in e]
    assert any("no message path to the guest" in e for e in errors)
    loop.client.connect()
    loop.settle()
    assert loop.client.devices[device.relid].state is DeviceState.OPEN
    assert_echo_works(loop, device.relid)


def test_a_contact_naming_a_vp_the_vm_lacks_is_answered_on_vp_0():
    loop = boot_vm(connect=False)
    received = loop.guest.messages_received
    contact = InitiateContact(VmbusVersion.WIN10_V5_3, msg_sint=2, target_vcpu=7).pack()
    loop.guest.hv.WinHvPostMessage(4, 1, contact)
    loop.settle()
    [error] = loop.server.errors
    assert error.startswith("vm: INITIATE_CONTACT named an unreachable target (SINT 2, VP 7): "
                            "INITIATE_CONTACT.target_vcpu: found 7, expected a VP of the VM")
    assert loop.server._path == (2, 0)
    assert loop.guest.messages_received == received + 1   # the VERSION_RESPONSE


def test_a_second_vm_opens_its_channels_after_the_first_ran_the_hostile_sequence():
    machine = boot_host()
    hostile = boot_vm(name="hostile", machine=machine)
    relid = _manual_device(hostile)
    gpadl_id, gpa = _ring_gpadl(hostile, relid)
    control = hostile.guest.view(gpa + 2 * 4096, 8)
    host = hostile.host
    flags_before = (host._flags.next, list(host._flags.free))
    for _ in range(100):
        _open(hostile, relid, gpadl_id, 5000)                 # no such VP
        struct.pack_into("<I", control, WRITE_INDEX_OFFSET, 12)
        _open(hostile, relid, gpadl_id)                       # corrupt control page
        struct.pack_into("<I", control, WRITE_INDEX_OFFSET, 0)
        _open(hostile, relid, gpadl_id)                       # fine: open, then close
        _close(hostile, relid)
    assert (host._flags.next, host._flags.free) == (flags_before[0] + 1, [(2, 1)])
    assert hostile.server.errors_total == 200
    victim = boot_vm([EchoVsc], name="victim", machine=machine, connect=False)
    devices = [victim.server.add_device(f"echo{i}", EchoVsp(), ECHO_IF) for i in range(3)]
    victim.client.connect()
    victim.settle()
    for device in devices:
        assert_echo_works(victim, device.relid)
    assert victim.server.errors == []


# -- the hypervisor refusing to let go ----------------------------------------------------------


@pytest.mark.parametrize("when", ["close", "undo"])
def test_a_root_event_port_that_cannot_be_deleted_keeps_its_flag_from_every_other_channel(when):
    # The port still sets its flag: handed to another channel (of any VM), that channel would
    # get this one's signals. Its id and its flag are retired instead.
    machine = boot_host()
    a = boot_vm([EchoVsc], name="a", machine=machine)
    real = a.root.hv
    if when == "close":
        relid = a.offer("echo", EchoVsp(), ECHO_IF).relid
        flag = a.server._open[relid].root_flag
        a.root.hv = _FailingHandle(real, "WinHvDeletePort")
        a.server.remove_device(relid)
    else:
        relid = _manual_device(a)
        gpadl_id, _ = _ring_gpadl(a, relid)
        flag = a.host._flags.make(a.host._flags.next)   # the flag this open will take
        # The open fails at its last step; undoing it (newest first: the guest's event port,
        # then the root's), the root event port cannot be deleted.
        a.root.hv = _FailingHandle(_FailingHandle(real, "WinHvConnectPort", 2),
                                   "WinHvDeletePort", 2)
        _open(a, relid, gpadl_id)
    a.root.hv = real
    a.settle()
    assert any("its id and its flag are not reused" in e for e in a.server.errors)
    assert flag not in a.host._flags.free
    b = boot_vm([EchoVsc], name="b", machine=machine)
    flags = [b.server._open[b.offer(f"echo{i}", EchoVsp(), ECHO_IF).relid].root_flag
             for i in range(4)]
    assert flag not in flags
    assert_echo_works(b, 1)
