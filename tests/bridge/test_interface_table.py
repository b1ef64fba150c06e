"""The C interface table (``winhv/include/winhv.h``): a C driver compiled with the system
compiler receives a handle's ``WINHV_INTERFACE``, checks its size and version, posts a message
and signals an event through it; and a ctypes mirror of the table matches the compiled one."""

from __future__ import annotations

import ctypes
import shlex
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
from support.hv import (
    ROOT_SIEFP_GPA,
    ROOT_SIMP_GPA,
    SINT,
    VECTOR,
    Machine,
    winhv_package,
)

from winhv._handle import HandleCore
from winhv.abi import HvStatus

SOURCE = Path(__file__).with_name("cdriver") / "driver.c"
INCLUDE = Path(winhv_package().get_include())
MESSAGE_CONNECTION, EVENT_CONNECTION = 7, 8
BASE_FLAG, FLAG_COUNT = 10, 4

_u16, _u32, _u64, _ptr = ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_void_p
HYPERCALL = ctypes.PYFUNCTYPE(_u64, _ptr, _u64, _u64, _u64)
POST_MESSAGE = ctypes.PYFUNCTYPE(_u16, _ptr, _u32, _u32, _ptr, _u32)
SIGNAL_EVENT = ctypes.PYFUNCTYPE(_u16, _ptr, _u32, _u16)
GET_PARTITION_ID = ctypes.PYFUNCTYPE(_u16, _ptr, ctypes.POINTER(_u64))


class WinHvInterface(ctypes.Structure):
    """ctypes mirror of ``WINHV_INTERFACE`` (version 1). ``PYFUNCTYPE``: the entries need the
    GIL held, which ctypes' ``CFUNCTYPE`` would release."""

    _fields_ = [
        ("Size", _u32),
        ("Version", _u32),
        ("Context", _ptr),
        ("Hypercall", HYPERCALL),
        ("PostMessage", POST_MESSAGE),
        ("SignalEvent", SIGNAL_EVENT),
        ("GetPartitionId", GET_PARTITION_ID),
    ]


class DriverReport(ctypes.Structure):
    """Mirror of the test driver's ``DRIVER_REPORT``."""

    _fields_ = [
        ("Size", _u32), ("Version", _u32),
        ("GetPartitionIdStatus", _u16), ("PostStatus", _u16), ("PostTooLongStatus", _u16),
        ("SignalStatus", _u16), ("SignalBadFlagStatus", _u16),
        ("SignalBadConnectionStatus", _u16), ("Reserved", _u32),
        ("PartitionId", _u64), ("RawResult", _u64),
    ]


def _compiler() -> list[str] | None:
    cc = sysconfig.get_config_var("CC") or "cc"
    argv = shlex.split(cc)
    if shutil.which(argv[0]) is None:
        argv = ["cc"]
        if shutil.which("cc") is None:
            return None
    return argv


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> ctypes.PyDLL:
    """The test driver built as a shared object and loaded with the GIL-holding PyDLL."""
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler: neither sysconfig's CC nor 'cc' is on PATH")
    out = tmp_path_factory.mktemp("cdriver") / "driver.so"
    cmd = [*cc, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", f"-I{INCLUDE}", str(SOURCE),
           "-o", str(out)]
    built = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert built.returncode == 0, f"{shlex.join(cmd)} failed:\n{built.stderr}"
    library = ctypes.PyDLL(str(out))
    library.DriverEntry.argtypes = [_ptr, _u32, _u32, ctypes.POINTER(DriverReport)]
    library.DriverEntry.restype = ctypes.c_int
    return library


@pytest.fixture
def wired(machine: Machine) -> Machine:
    """The child holds a message and an event connection to ports of the root."""
    machine.enable_root_synic()
    child = machine.guests[0].partition_id
    machine.message_channel(1, child, port_id=5, connection_id=MESSAGE_CONNECTION)
    machine.event_channel(1, child, port_id=6, connection_id=EVENT_CONNECTION,
                          base_flag=BASE_FLAG, flag_count=FLAG_COUNT)
    return machine


def test_get_include_names_the_shipped_header() -> None:
    header = (INCLUDE / "winhv.h").read_text()
    assert "typedef struct WINHV_INTERFACE" in header
    assert "#define WINHV_INTERFACE_VERSION   WINHV_INTERFACE_VERSION_1" in header


def test_ctypes_mirror_matches_the_compiled_table() -> None:
    assert ctypes.sizeof(WinHvInterface) == HandleCore.interface_size()
    assert WinHvInterface.Context.offset == 8
    assert WinHvInterface.Hypercall.offset == 16
    assert WinHvInterface.GetPartitionId.offset == 16 + 3 * ctypes.sizeof(_ptr)


def test_table_is_filled_in_and_stable(wired: Machine) -> None:
    handle = wired.guests[0].handle
    address = handle.interface_address()
    assert handle.interface_address() == address
    table = WinHvInterface.from_address(address)
    assert table.Size == HandleCore.interface_size()
    assert table.Version == 1
    assert table.Context


def test_ctypes_mirror_calls_through_the_table(wired: Machine) -> None:
    guest = wired.guests[0]
    table = WinHvInterface.from_address(guest.handle.interface_address())
    pid = _u64()
    assert table.GetPartitionId(table.Context, ctypes.byref(pid)) == 0
    assert pid.value == guest.partition_id
    assert table.SignalEvent(table.Context, EVENT_CONNECTION, 1) == 0
    assert wired.hv.root.memory.read(ROOT_SIEFP_GPA + 256 * SINT + 1, 1) == b"\x08"
    assert table.Hypercall(table.Context, 0x0016, 0, 0) == HvStatus.INVALID_HYPERCALL_CODE


def test_c_driver_posts_and_signals_through_the_table(driver: ctypes.PyDLL,
                                                      wired: Machine) -> None:
    guest = wired.guests[0]
    report = DriverReport()
    rc = driver.DriverEntry(guest.handle.interface_address(), MESSAGE_CONNECTION,
                            EVENT_CONNECTION, ctypes.byref(report))
    assert rc == 0
    assert (report.Size, report.Version) == (HandleCore.interface_size(), 1)
    assert report.GetPartitionIdStatus == HvStatus.SUCCESS
    assert report.PartitionId == guest.partition_id
    assert report.PostStatus == HvStatus.SUCCESS
    assert report.PostTooLongStatus == HvStatus.INVALID_PARAMETER
    assert report.SignalStatus == HvStatus.SUCCESS
    assert report.SignalBadFlagStatus == HvStatus.INVALID_PARAMETER
    assert report.SignalBadConnectionStatus == HvStatus.INVALID_CONNECTION_ID
    assert report.RawResult == HvStatus.INVALID_ALIGNMENT

    root = wired.hv.root.memory
    slot = root.read(ROOT_SIMP_GPA + 256 * SINT, 256)
    assert slot[:16] == bytes([1, 0, 0, 0, 12, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0])
    assert slot[16:28] == b"hello from C"
    flags = root.read(ROOT_SIEFP_GPA + 256 * SINT, 256)
    assert int.from_bytes(flags, "little") == 1 << (BASE_FLAG + 3)
    assert wired.hv.root.vp(0).interrupts_raised == 2
    wired.run()
    assert wired.root_interrupts == [VECTOR]   # two edges on one vector, one IRR bit


def test_c_driver_refuses_a_table_that_is_too_small(driver: ctypes.PyDLL,
                                                    wired: Machine) -> None:
    fake = WinHvInterface()
    fake.Size = 16
    fake.Version = 1
    report = DriverReport()
    assert driver.DriverEntry(ctypes.addressof(fake), 0, 0, ctypes.byref(report)) == -1
    assert (report.Size, report.Version) == (16, 1)
