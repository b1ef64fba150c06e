"""StorVsp and StorVsc over real VMBus channels (a whole machine from ``connect_pair``): the init
sequence and version fallback, data written through the guest API read back through it and
straight from the image file, several disks and many I/Os in flight, read-only images,
configuration and image paths, the fast READ/WRITE templates against the protocol's own
builders, TASK SET FULL for a guest that stops reading, and the plugin registration."""

from __future__ import annotations

import os
import struct
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from winhv.drivers.vmbus.loopback import boot_host, connect_pair
from winhv.plugins.api import ConfigError
from winhv.vsp_vsc_pairs import winhv_vsp_vsc_pairs
from winhv.vsp_vsc_pairs.storage import (
    LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE,
    SCSI_INTERFACE_ID,
    STORAGE_CONFIG,
    WRITE_PROTECTED,
    BlockDevice,
    FileBackingStore,
    ScsiCommandError,
    ScsiDisk,
    ScsiStatus,
    SrbCompletion,
    SrbStatus,
    StorVsc,
    StorvscProtocol,
    StorVsp,
    StorvspProtocol,
    VstorVersion,
    parse_inquiry,
    queue_depth_for_ring,
    resolve_image_path,
    run_directory,
)
from winhv.vsp_vsc_pairs.storage._vsp import _task_set_full

MIB = 1 << 20


def start(config: dict[str, Any], vsc: type[StorVsc] = StorVsc, **boot: Any) -> tuple[
        Any, Any, StorVsp, StorVsc, BlockDevice]:
    vsp = StorVsp(config)
    loop, host_channel, guest = connect_pair(vsp, vsc, memory_mb=boot.pop("memory_mb", 32),
                                             **boot)
    driver = guest.driver
    assert isinstance(driver, StorVsc)
    assert driver.failure is None, driver.failure
    assert driver.block_device is not None
    return loop, host_channel, vsp, driver, driver.block_device


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return tmp_path / "disk.img"


def test_guest_initializes_reads_capacity_and_exposes_the_disk(image: Path) -> None:
    _loop, _, vsp, driver, disk = start({"path": str(image), "size_mb": 4})
    assert driver.protocol.version == VstorVersion.WIN8_1  # 6.2 refused, fell back (§6.1)
    assert vsp.protocol is not None
    assert vsp.protocol.version == VstorVersion.WIN8_1
    assert (disk.block_size, disk.block_count, disk.capacity) == (512, 8192, 4 * MIB)
    assert image.stat().st_size == 4 * MIB
    assert driver.ready
    assert repr(disk).startswith("<BlockDevice 8192 x 512 B")


def test_written_data_reads_back_through_the_guest_and_from_the_image(image: Path) -> None:
    _loop, _, _vsp, _, disk = start({"path": str(image), "size_mb": 4})
    data = os.urandom(64 * 1024)
    disk.write(100, data)
    disk.flush()
    assert disk.read(100, 128) == data
    with image.open("rb") as f:
        f.seek(100 * 512)
        assert f.read(len(data)) == data
    assert disk.read(0, 1) == bytes(512)   # untouched blocks read zero


def test_transfers_larger_than_the_host_maximum_are_split(image: Path) -> None:
    _, _, _, _, disk = start({"path": str(image), "size_mb": 4, "max_transfer_bytes": 8192})
    assert disk.max_transfer_bytes == 8192
    data = os.urandom(40 * 1024 + 512)
    disk.write(3, data)
    assert disk.read(3, len(data) // 512) == data
    with pytest.raises(ValueError, match="at most 8192 bytes per request"):
        disk.read_async(0, 17, lambda v, e: None)


def test_many_requests_in_flight_complete_in_any_order_with_the_right_data(image: Path) -> None:
    loop, _, _, _, disk = start({"path": str(image), "size_mb": 4})
    blocks = {lba: os.urandom(4096) for lba in range(0, 8 * 200, 8)}
    errors: list[BaseException | None] = []
    for lba, data in blocks.items():
        disk.write_async(lba, data, lambda _v, e: errors.append(e))
    assert disk.outstanding == disk.queue_depth
    assert disk.waiting == 200 - disk.queue_depth
    loop.run()
    assert errors == [None] * 200
    assert disk.outstanding == 0
    got: dict[int, bytes] = {}
    for lba in blocks:
        disk.read_async(lba, 8, lambda v, e, lba=lba: got.__setitem__(lba, bytes(v)))
    loop.run()
    assert got == blocks


def test_two_disks_in_one_vm_are_separate_devices_with_their_own_images(tmp_path: Path) -> None:
    machine = boot_host()
    first, second = StorVsp({"path": str(tmp_path / "a.img"), "size_mb": 1}), \
        StorVsp({"path": str(tmp_path / "b.img"), "size_mb": 2})
    loop, _, guest_a = connect_pair(first, StorVsc, machine=machine, memory_mb=32, name="a")
    device_b = loop.offer("b", second, uuid.UUID(SCSI_INTERFACE_ID))
    guest_b = loop.client.devices[device_b.relid]
    disk_a = guest_a.driver.block_device
    disk_b = guest_b.driver.block_device
    assert (disk_a.capacity, disk_b.capacity) == (MIB, 2 * MIB)
    disk_a.write(0, b"a" * 512)
    disk_b.write(0, b"b" * 512)
    assert (tmp_path / "a.img").read_bytes()[:1] == b"a"
    assert (tmp_path / "b.img").read_bytes()[:1] == b"b"


def test_an_older_guest_negotiates_win7_with_36_byte_srbs(image: Path) -> None:
    class Win7Vsc(StorVsc):
        versions = (VstorVersion.WIN7,)

    _, _, _vsp, driver, disk = start({"path": str(image), "size_mb": 1}, Win7Vsc)
    assert driver.protocol.version == VstorVersion.WIN7
    disk.write(5, b"x" * 1024)
    assert disk.read(5, 2) == b"x" * 1024


def test_a_read_only_image_refuses_writes_with_data_protect(image: Path) -> None:
    image.write_bytes(b"\x5a" * MIB)
    _, _, _, _, disk = start({"path": str(image), "read_only": True})
    assert disk.read(0, 1) == b"\x5a" * 512
    with pytest.raises(ScsiCommandError) as info:
        disk.write(0, bytes(512))
    assert info.value.sense == WRITE_PROTECTED
    assert image.read_bytes() == b"\x5a" * MIB


def test_a_read_past_the_end_from_the_guest_api_is_refused_before_sending(image: Path) -> None:
    _, host, _, _, disk = start({"path": str(image), "size_mb": 1})
    sent = host.packets_received
    with pytest.raises(ValueError, match=r"within 0\.\.2048"):
        disk.read(2047, 2)
    assert host.packets_received == sent


def test_scsi_errors_reach_the_caller_with_sense_data(image: Path) -> None:
    _, _, _, driver, disk = start({"path": str(image), "size_mb": 1})
    # READ (16) far past the end, built by the protocol itself: the host's answer, not ours.
    with pytest.raises(ScsiCommandError) as info:
        disk.execute(driver.protocol.read, 1 << 40, 1)
    assert info.value.sense == LOGICAL_BLOCK_ADDRESS_OUT_OF_RANGE
    inquiry = parse_inquiry(disk.execute(driver.protocol.inquiry))
    assert (inquiry.vendor, inquiry.product) == ("Msft", "Virtual Disk")
    assert disk.read(0, 1) == bytes(512)  # the channel is still good


@pytest.mark.parametrize("version", [VstorVersion.WIN8_1, VstorVersion.WIN7])
def test_templates_encode_exactly_what_the_protocol_builds(image: Path,
                                                           version: VstorVersion) -> None:
    protocol = ready_protocol(image, version)
    device = BlockDevice(channel=None, kernel=None, protocol=protocol, block_size=512,
                         block_count=1 << 40, queue_depth=1, max_transfer_bytes=1 << 20)
    for lba, count in ((0, 1), (77, 8), (0xFFFF_FFFF, 0xFFFF), (1 << 32, 1), (5, 1 << 16)):
        for write in (False, True):
            expected = (protocol.write if write else protocol.read)(lba, count).payload
            channel = _RecordingChannel()
            device.channel = channel
            slot = device._free.pop()
            slot.pages = 1 << 20   # no guest memory here: pretend the buffer is big enough
            slot.pfns = tuple(range(1 << 20))
            device._start_rw(slot, write, lba, count, count * 512, None, lambda v, e: None)
            device._free.append(slot)
            assert channel.sent == [expected], (lba, count, write)


class _RecordingChannel:
    """Records what a BlockDevice sends (payloads only)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_gpa_direct(self, _ranges: Any, payload: bytes, _callback: Any) -> int:
        self.sent.append(bytes(payload))
        return len(self.sent)


def test_a_guest_that_stops_reading_completions_gets_task_set_full(image: Path) -> None:
    loop, host, vsp, driver, _ = start({"path": str(image), "size_mb": 1, "queue_depth": 4})
    guest = driver.channel
    loop.guest.on_event(2, guest.relid, lambda: 0)   # the guest's ISR stops reading the ring
    answers: list[int] = []
    for _ in range(3000):   # TEST UNIT READY, in-band: ~1,400 completions fill the ring
        request = driver.protocol.execute(bytes(6))
        guest.send_request(request.payload, lambda p: answers.append(p.payload[15]))
        loop.run()
        if vsp.busy_answers > 20:
            break
    loop.run()
    assert host.backlog >= 4
    assert vsp.busy_answers > 0
    loop.guest.on_event(2, guest.relid, guest.poll)
    while guest.poll() or host.backlog:
        loop.run()
    assert answers.count(ScsiStatus.TASK_SET_FULL) == vsp.busy_answers
    assert set(answers) == {ScsiStatus.GOOD, ScsiStatus.TASK_SET_FULL}
    assert not host.closed


def test_task_set_full_holds_for_reads_the_fast_path_would_serve(image: Path) -> None:
    """READ (10) over one exact range is the compiled path's; with completions waiting unread
    it must still not run the SRB but answer TASK SET FULL, as for any other SRB."""
    loop, host, vsp, driver, _ = start({"path": str(image), "size_mb": 1, "queue_depth": 4})
    guest = driver.channel
    gpa = loop.guest.alloc_pages(1)
    loop.guest.on_event(2, guest.relid, lambda: 0)   # the guest's ISR stops reading the ring
    assert vsp.fast_path is not None
    answers: list[int] = []
    for _ in range(3000):   # ~1,400 completions fill the guest's inbound ring
        request = driver.protocol.read(0, 8)
        guest.send_gpa_direct(((4096, 0, (gpa >> 12,)),), request.payload,
                              lambda p: answers.append(p.payload[15]))
        loop.run()
        if vsp.busy_answers > 20:
            break
    loop.run()
    assert vsp.busy_answers > 0
    assert host.backlog >= 4
    served = vsp.fast_path.served
    loop.guest.on_event(2, guest.relid, guest.poll)
    while guest.poll() or host.backlog:
        loop.run()
    assert answers.count(ScsiStatus.TASK_SET_FULL) == vsp.busy_answers
    assert answers.count(ScsiStatus.GOOD) == served
    assert not host.closed


def test_queue_depth_comes_from_the_ring_and_the_driver_cap(image: Path) -> None:
    assert queue_depth_for_ring(128 * 1024, 0x40000) == 124 * 1024 // (104 + 8 * 65)
    _, _, _, _, disk = start({"path": str(image), "size_mb": 1, "max_transfer_bytes": 4 << 20})
    assert disk.queue_depth == queue_depth_for_ring(StorVsc.ring_size, 4 << 20)
    _, _, _, _, disk = start({"path": str(image), "size_mb": 1})
    assert disk.queue_depth == StorVsc.queue_depth


def test_bad_configuration_is_refused_with_the_key() -> None:
    with pytest.raises(ConfigError, match="queue_depth"):
        StorVsp({"queue_depth": 0})
    with pytest.raises(ConfigError, match="block_size"):
        StorVsp({"block_size": 1000})
    with pytest.raises(ValueError, match="max_transfer_bytes: found 5000"):
        StorVsp({"max_transfer_bytes": 5000})


def test_image_paths_relative_ones_go_to_the_run_directory(tmp_path: Path) -> None:
    assert resolve_image_path(tmp_path / "x.img", "vm", "d") == tmp_path / "x.img"
    assert resolve_image_path("x.img", "vm", "d") == run_directory() / "x.img"
    assert resolve_image_path(None, "vm", "disk0") == run_directory() / "vm-disk0.img"
    assert run_directory().is_dir()
    assert run_directory().name.startswith("winhv-storage-")


def test_an_unset_path_creates_a_fresh_image_named_after_vm_and_device() -> None:
    _, _, vsp, _, disk = start({"size_mb": 1}, name=f"t{uuid.uuid4().hex[:8]}")
    assert vsp.image_path is not None
    assert vsp.image_path.parent == run_directory()
    assert vsp.image_path.name.startswith("vm-t")
    assert disk.capacity == MIB
    vsp.stop()
    assert vsp.store is not None
    assert vsp.store.closed
    vsp.image_path.unlink()


def test_the_pair_is_registered_as_storage() -> None:
    (pair,) = [p for p in winhv_vsp_vsc_pairs() if p.name == "storage"]
    assert pair.interface_id == uuid.UUID(SCSI_INTERFACE_ID)
    assert (pair.vsp, pair.vsc, pair.config) == (StorVsp, StorVsc, STORAGE_CONFIG)
    assert {f.name for f in pair.config} >= {"path", "size_mb", "read_only", "queue_depth"}


def ready_protocol(image: Path, version: VstorVersion) -> StorvscProtocol:
    protocol = StorvscProtocol(versions=(version,))
    out = protocol.start()
    with FileBackingStore(image, 1) as store:
        host = StorvspProtocol(ScsiDisk(store))
        while out is not None:
            step = protocol.receive(out.trans_id, host.receive(out.payload))
            assert not isinstance(step, SrbCompletion)
            out = step
    return protocol


def test_task_set_full_completion_layout(image: Path) -> None:
    protocol = ready_protocol(image, VstorVersion.WIN8_1)
    request = protocol.read(9, 1)
    reply = _task_set_full(request.payload)
    assert len(reply) == 64
    assert reply[0] == 1
    assert (reply[14], reply[15]) == (SrbStatus.BUSY, ScsiStatus.TASK_SET_FULL)
    assert reply[12 + 12: 12 + 16] == bytes(4)   # nothing transferred
    completion = protocol.receive(request.trans_id, reply)
    assert isinstance(completion, SrbCompletion)
    assert not completion.ok
    assert completion.scsi_status == ScsiStatus.TASK_SET_FULL


class _Direct:
    """A StorVsp driven without a machine: ``offer`` opens the image, the init sequence runs
    straight through its protocol, and READ/WRITE payloads go to both of its paths."""

    def __init__(self, image: Path) -> None:
        self.vsp = StorVsp({"path": str(image), "size_mb": 1})
        self.vsp.offer()
        assert self.vsp.protocol is not None
        self.guest = StorvscProtocol()
        out = self.guest.start()
        while out is not None:
            step = self.guest.receive(out.trans_id, self.vsp.protocol.receive(out.payload))
            assert not isinstance(step, SrbCompletion)
            out = step
        self.vsp._guest_view = lambda gpa, size: memoryview(bytearray(size))
        self.vsp._start_fast_path(None)
        assert self.vsp.fast_path is not None


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> _Direct:
    return _Direct(tmp_path_factory.mktemp("fast") / "disk.img")


#: At most one field broken per example, so both paths are exercised often.
_BREAKS = {"flags": (12, 0x08), "lun": (19, 1), "cdb_length": (20, 12), "data_in": (22, 2)}


@settings(max_examples=150, deadline=None)
@given(write=st.booleans(),
       lba=st.one_of(st.integers(0, 2000), st.integers(0, 2100), st.integers(0, (1 << 32) - 1)),
       blocks=st.integers(1, 40) | st.just(0), extra=st.sampled_from([0, 0, 0, 0, -512, 512]),
       broken=st.sampled_from([None, None, None, *_BREAKS]))
def test_the_fast_path_answers_byte_for_byte_as_the_protocol(
        direct: _Direct, write: bool, lba: int, blocks: int, extra: int,
        broken: str | None) -> None:
    vsp, guest = direct.vsp, direct.guest
    assert vsp.protocol is not None
    request = guest.write(0, 1) if write else guest.read(0, 1)
    payload = bytearray(request.payload)
    struct.pack_into(">BBIBHB", payload, 28, 0x2A if write else 0x28, 0, lba, 0, blocks, 0)
    transfer = max(0, blocks * 512 + extra)
    struct.pack_into("<I", payload, 24, transfer)
    if broken is not None:
        offset, value = _BREAKS[broken]
        payload[offset if broken != "flags" else 29] = value
    data = os.urandom(transfer)
    fast_buffer, slow_buffer = bytearray(data), bytearray(data)
    assert vsp.fast_path is not None
    fast = vsp.fast_path.reply(bytes(payload), [memoryview(fast_buffer)]) if transfer else None
    slow = vsp.protocol.receive(bytes(payload), [memoryview(slow_buffer)])
    if fast is not None:
        assert broken is None
        assert fast == slow
        assert fast_buffer == slow_buffer
        event("fast path taken")
    else:
        event("protocol path")


def test_the_fast_path_is_taken_for_the_block_devices_own_requests(image: Path) -> None:
    _, _, vsp, _, disk = start({"path": str(image), "size_mb": 1})
    assert vsp.fast_path is not None
    before = vsp.fast_path.served
    disk.write(0, bytes(4096))
    disk.read(0, 8)
    assert vsp.fast_path.served == before + 2
    disk.read(1024, 256)   # 128 KiB: still one range of contiguous guest pages
    assert vsp.fast_path.served == before + 3
    disk.execute(disk.protocol.read_capacity)   # not READ/WRITE (10): the protocol's
    assert vsp.fast_path.served == before + 3


def test_a_driver_sets_queue_depth_reaches_the_guest_through_configured() -> None:
    assert StorVsc.configured({}) is StorVsc
    bound = StorVsc.configured({"queue_depth": 8, "path": "x.img"})
    assert issubclass(bound, StorVsc)
    assert bound.queue_depth == 8
    assert bound.__qualname__ == "StorVsc"
    with pytest.raises(ValueError, match="queue_depth: found 0"):
        StorVsc.configured({"queue_depth": 0})


def test_the_default_driver_set_boots_a_fresh_disk(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from winhv.plugins.cli import cli

    result = CliRunner().invoke(cli, ["bus", "--json"])
    assert result.exit_code == 0, result.output
    assert "StorVsc" in result.output


def test_the_driver_modules_are_fully_re_exported() -> None:
    import winhv.vsp_vsc_pairs.storage as storage
    from winhv.vsp_vsc_pairs.storage import _blockdev, _vsc, _vsp

    for module in (_blockdev, _vsc, _vsp):
        for name in module.__all__:
            assert getattr(storage, name) is getattr(module, name)
            assert name in storage.__all__
