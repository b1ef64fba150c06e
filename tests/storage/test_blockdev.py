"""The guest's BlockDevice: callbacks run once with the data or the error, requests beyond the
queue depth wait in order, buffers are reused guest pages, a closed channel fails everything in
flight, and argument errors are refused before anything is sent."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from winhv.drivers.vmbus.loopback import connect_pair
from winhv.vsp_vsc_pairs.storage import (
    LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE,
    BlockDevice,
    BlockDeviceError,
    ScsiCommandError,
    StorVsc,
    StorVsp,
)


class Small(StorVsc):
    queue_depth = 4


@pytest.fixture
def machine(tmp_path: Path) -> tuple[Any, StorVsp, StorVsc, BlockDevice]:
    vsp = StorVsp({"path": str(tmp_path / "d.img"), "size_mb": 1})
    loop, _, device = connect_pair(vsp, Small, memory_mb=16)
    driver = device.driver
    assert driver.block_device is not None
    return loop, vsp, driver, driver.block_device


def test_read_callback_gets_a_view_of_the_guest_buffer_once(machine: Any) -> None:
    loop, _, _, disk = machine
    disk.write(0, b"\x11" * 4096)
    calls: list[tuple[bytes, Any]] = []
    disk.read_async(0, 8, lambda view, error: calls.append((bytes(view), error)))
    assert calls == []            # nothing completes until the machine runs
    loop.run()
    assert calls == [(b"\x11" * 4096, None)]
    loop.run()
    assert len(calls) == 1


def test_requests_beyond_the_queue_depth_wait_and_start_in_order(machine: Any) -> None:
    loop, vsp, _, disk = machine
    assert disk.queue_depth == 4
    order: list[int] = []
    for lba in range(10):
        disk.write_async(lba, bytes([lba]) * 512, lambda _v, e, lba=lba: order.append(lba))
    assert (disk.outstanding, disk.waiting) == (4, 6)
    loop.run()
    assert order == list(range(10))
    assert (disk.outstanding, disk.waiting) == (0, 0)
    assert vsp.image_path is not None
    data = vsp.image_path.read_bytes()
    assert [data[lba * 512] for lba in range(10)] == list(range(10))


def test_buffers_are_reused_guest_pages(machine: Any) -> None:
    _, _, driver, disk = machine
    kernel = driver.device.kernel
    disk.read(0, 8)
    free = kernel.allocator.free_pages
    for _ in range(20):
        disk.read(0, 8)
        disk.write(8, bytes(4096))
    assert kernel.allocator.free_pages == free


def test_a_scsi_error_goes_to_the_callback_and_the_next_request_still_runs(
        machine: Any) -> None:
    loop, _, driver, disk = machine
    results: list[Any] = []
    disk.execute_async(driver.protocol.read, (1 << 33, 1), {},
                       lambda v, e: results.append(e))
    disk.read_async(0, 1, lambda v, e: results.append(bytes(v)))
    loop.run()
    assert isinstance(results[0], ScsiCommandError)
    assert results[0].sense == LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE
    assert results[1] == bytes(512)


def test_argument_errors_are_refused_before_sending(machine: Any) -> None:
    _, _, _, disk = machine
    with pytest.raises(ValueError, match="multiple of the 512-byte block"):
        disk.write(0, b"abc")
    with pytest.raises(ValueError, match="expected 1 or more blocks"):
        disk.read_async(0, 0, lambda v, e: None)
    with pytest.raises(ValueError, match="expected 1 or more blocks"):
        disk.read_async(-1, 1, lambda v, e: None)
    assert disk.outstanding == 0


def test_removal_fails_every_request_in_flight_and_waiting_once(machine: Any) -> None:
    loop, _, driver, disk = machine
    errors: list[Any] = []
    for lba in range(6):
        disk.read_async(lba, 1, lambda v, e: errors.append(e))
    loop.server.remove_device(driver.device.relid)   # hot remove (rescind)
    loop.settle()
    assert len(errors) == 6
    assert all(isinstance(e, BlockDeviceError) for e in errors)
    assert not driver.ready
    with pytest.raises(BlockDeviceError, match="closed"):
        disk.read(0, 1)


def test_a_host_that_never_answers_times_out_the_sync_form(machine: Any) -> None:
    loop, vsp, _, disk = machine
    vsp.on_packet = lambda channel, packet: None   # the host swallows every request
    loop.server.devices[disk.channel.relid].channel.on_packet = vsp.on_packet
    with pytest.raises(BlockDeviceError, match="never completed"):
        disk.read(0, 1)


def test_sync_reads_and_writes_of_many_transfers(machine: Any) -> None:
    _, _, _, disk = machine
    data = os.urandom(disk.max_transfer_bytes * 3 + 1024)
    disk.write(4, data)
    assert disk.read(4, len(data) // 512) == data


def test_a_host_that_breaks_the_protocol_closes_the_channel_from_the_guest(
        machine: Any) -> None:
    loop, _, driver, disk = machine
    host = loop.server.devices[disk.channel.relid].channel

    def bad(channel: Any, packet: Any) -> None:
        channel.complete(packet.trans_id, b"\x07" + bytes(63))   # not COMPLETE_IO

    host.on_packet = bad
    errors: list[Any] = []
    disk.read_async(0, 1, lambda v, e: errors.append(e))
    loop.run()
    assert len(errors) == 1
    assert isinstance(errors[0], BlockDeviceError)
    assert driver.channel is None or driver.channel.closed or disk.closed_reason
    assert "storvsc" in (disk.closed_reason or "")
