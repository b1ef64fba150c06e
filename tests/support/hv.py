"""Hypervisor test support: a booted machine with children whose SynIC is programmed, port
helpers, snapshots for isolation checks, and Hypothesis strategies for what a guest can put in
its registers (control words, GPAs, register names and values).

The flow is the one a real stack follows (fact sheet §1.7, §2.7): the root creates a child,
grants it the default child privileges, deposits pool pages, initializes it, maps some of its
own RAM as the child's RAM, creates VP 0; the child then programs SIMP, SIEFP, a SINT and
SCONTROL through its own WinHv handle. Nothing here reaches around the hypercall interface
except to *observe* (memory snapshots, partition tables).
"""

from __future__ import annotations

import importlib
import importlib.util
import struct
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

# Everything comes from ``winhv.abi`` and the private modules, not from ``winhv`` itself: an
# empty ``tests/winhv`` folder turns ``winhv`` into a namespace package under an editable
# install (tests/ is first on sys.path), while its submodules still resolve.
from winhv._winhv import WinHv
from winhv.abi import (
    CONTROL_FAST,
    CONTROL_NESTED,
    CONTROL_REP_COUNT_SHIFT,
    CONTROL_REP_START_SHIFT,
    CONTROL_RESERVED_MASK,
    CONTROL_VARHEAD_SHIFT,
    DEFAULT_CHILD_PRIVILEGES,
    HYPERCALLS,
    HvPortType,
    HvRegisterName,
    HvStatus,
    PartitionProperty,
)
from winhv.drivers.hv.calls import IMPLEMENTED_HYPERCALLS
from winhv.drivers.hv.hypervisor import ROOT_PARTITION_ID, Hypervisor

R = HvRegisterName
BRIDGE_KINDS = ("compiled", "reference")

#: The root handle's hypercall input/output pages and its SynIC pages (root GPAs).
ROOT_INPUT_GPA = 0x1000
ROOT_OUTPUT_GPA = 0x2000
ROOT_SIMP_GPA = 0x3000
ROOT_SIEFP_GPA = 0x4000
#: Root pages handed out as pool deposits (16 per child) and as child RAM (CHILD_PAGES each).
_FIRST_POOL_PAGE = 0x100
_FIRST_RAM_PAGE = 0x1000
POOL_PAGES_PER_CHILD = 16
#: Guest RAM of every child: GPA pages 0 .. CHILD_PAGES - 1.
CHILD_PAGES = 64
#: A child's layout (child GPAs): hypercall pages, then its SIM and SIEF pages.
CHILD_INPUT_GPA = 0x0000
CHILD_OUTPUT_GPA = 0x1000
CHILD_SIMP_GPA = 0x2000
CHILD_SIEFP_GPA = 0x3000
#: The SINT and vector the helpers program (SINT 2 is VMBus's, §2.7).
SINT = 2
VECTOR = 0x50
#: Statuses of fact sheet §1.5, for "every result is a TLFS status" checks.
TLFS_STATUSES = frozenset(int(s) for s in HvStatus)


def winhv_package() -> types.ModuleType:
    """The ``winhv`` package itself, even when an empty ``tests/winhv`` folder shadows it as a
    namespace package (then its ``__init__`` is loaded by path, without touching sys.modules).
    """
    module = importlib.import_module("winhv")
    if getattr(module, "__file__", None):
        return module
    import winhv._select as anchor

    init = Path(anchor.__file__).with_name("__init__.py")
    spec = importlib.util.spec_from_file_location("winhv", init,
                                                  submodule_search_locations=[str(init.parent)])
    assert spec is not None
    assert spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(package)
    return package


def ok(status: Any) -> None:
    """Assert ``status`` is SUCCESS, showing its name when it is not."""
    assert status == HvStatus.SUCCESS, f"expected SUCCESS, got {status!r}"


def result_status(result: int) -> int:
    """Bits 15:0 of a result word (§1.3)."""
    return result & 0xFFFF


def result_reps(result: int) -> int:
    """Bits 43:32 of a result word: total reps completed (§1.3)."""
    return (result >> 32) & 0xFFF


def control(code: int, *, fast: bool = False, varhead: int = 0, nested: bool = False,
            rep_count: int = 0, rep_start: int = 0, reserved: int = 0) -> int:
    """A control word (§1.2) built field by field, without validation (tests want bad ones)."""
    return (code | (CONTROL_FAST if fast else 0) | varhead << CONTROL_VARHEAD_SHIFT
            | (CONTROL_NESTED if nested else 0) | rep_count << CONTROL_REP_COUNT_SHIFT
            | rep_start << CONTROL_REP_START_SHIFT | reserved)


@dataclass
class Guest:
    """A child partition with VP 0, its WinHv handle and the interrupts its ISR received."""

    machine: Machine
    partition_id: int
    handle: WinHv
    root_ram_page: int
    interrupts: list[int] = field(default_factory=list)

    @property
    def partition(self) -> Any:
        return self.machine.hv.partitions[self.partition_id]

    @property
    def memory(self) -> Any:
        return self.partition.memory

    @property
    def vp(self) -> Any:
        return self.partition.vp(0)

    def slot(self, sint: int = SINT) -> bytes:
        """The 256 bytes of SIM slot ``sint`` as the guest sees them."""
        return self.memory.read(CHILD_SIMP_GPA + 256 * sint, 256)

    def message(self, sint: int = SINT) -> tuple[int, int, int, int, bytes]:
        """``(type, payload size, flags, origin, payload)`` of SIM slot ``sint`` (§2.3)."""
        raw = self.slot(sint)
        kind, size, flags, _rsvd, origin = struct.unpack_from("<IBBHQ", raw)
        return kind, size, flags, origin, raw[16:16 + size]

    def consume(self, sint: int = SINT) -> tuple[int, int, int, int, bytes]:
        """What a guest ISR does (§2.4 step 7): copy the message out, clear the type, and
        write EOM when MessagePending was set."""
        seen = self.message(sint)
        self.memory.write(CHILD_SIMP_GPA + 256 * sint, b"\0\0\0\0")
        if seen[2] & 1:
            ok(self.handle.WinHvSignalEom())
        return seen

    def flags(self, sint: int = SINT) -> bytes:
        """The 256-byte event-flag array of SINT ``sint`` in the SIEF page (§2.5)."""
        return self.memory.read(CHILD_SIEFP_GPA + 256 * sint, 256)

    def flag_set(self, flag: int, sint: int = SINT) -> bool:
        return bool(self.flags(sint)[flag // 8] >> (flag % 8) & 1)

    def enable_synic(self, *, sint: int = SINT, vector: int = VECTOR) -> None:
        """Program the SynIC as Linux does (§2.7): SIMP, SIEFP, SINTn unmasked, SCONTROL."""
        ok(self.handle.WinHvSetVpRegisters([
            (R.SIMP, CHILD_SIMP_GPA | 1), (R.SIEFP, CHILD_SIEFP_GPA | 1),
            (R.SINT0 + sint, vector), (R.SCONTROL, 1),
        ]))


@dataclass
class Machine:
    """A booted hypervisor, the root's handle, and the children made so far."""

    kind: str
    hv: Hypervisor
    root: WinHv
    guests: list[Guest] = field(default_factory=list)
    root_interrupts: list[int] = field(default_factory=list)

    def add_child(self, *, synic: bool = True, privileges: int = int(DEFAULT_CHILD_PRIVILEGES),
                  ) -> Guest:
        """Create, configure, initialize and map a child, create VP 0, program its SynIC."""
        n = len(self.guests)
        status, pid = self.root.WinHvCreatePartition()
        ok(status)
        ok(self.root.WinHvSetPartitionProperty(pid, PartitionProperty.PRIVILEGE_FLAGS,
                                               privileges))
        pool = _FIRST_POOL_PAGE + n * POOL_PAGES_PER_CHILD
        ok(self.root.WinHvDepositMemory(pid, range(pool, pool + POOL_PAGES_PER_CHILD)))
        ok(self.root.WinHvInitializePartition(pid))
        ram = _FIRST_RAM_PAGE + n * CHILD_PAGES
        ok(self.root.WinHvMapGpaPages(pid, 0, range(ram, ram + CHILD_PAGES)))
        ok(self.root.WinHvCreateVp(pid, 0))
        handle = self.hv.handle(pid, input_gpa=CHILD_INPUT_GPA, output_gpa=CHILD_OUTPUT_GPA)
        guest = Guest(self, pid, handle, ram)
        self.hv.set_interrupt_handler(pid, 0, guest.interrupts.append)
        if synic:
            guest.enable_synic()
        self.guests.append(guest)
        return guest

    def enable_root_synic(self) -> None:
        """Program the root VP 0's SynIC (SINT 2, vector ``VECTOR``) and record its ISR."""
        ok(self.root.WinHvSetVpRegisters([
            (R.SIMP, ROOT_SIMP_GPA | 1), (R.SIEFP, ROOT_SIEFP_GPA | 1),
            (R.SINT0 + SINT, VECTOR), (R.SCONTROL, 1),
        ]))
        self.hv.set_interrupt_handler(ROOT_PARTITION_ID, 0, self.root_interrupts.append)

    def message_channel(self, receiver: int, sender: int, *, port_id: int,
                        connection_id: int, sint: int = SINT, vp: int = 0) -> None:
        """A message port in ``receiver`` and ``sender``'s connection to it (§2.6)."""
        ok(self.root.WinHvCreatePort(receiver, port_id, HvPortType.MESSAGE,
                                     connection_partition_id=sender, target_sint=sint,
                                     target_vp=vp))
        ok(self.root.WinHvConnectPort(sender, connection_id, receiver, port_id,
                                      HvPortType.MESSAGE))

    def event_channel(self, receiver: int, sender: int, *, port_id: int, connection_id: int,
                      base_flag: int = 0, flag_count: int = 1, sint: int = SINT,
                      vp: int = 0) -> None:
        """An event port in ``receiver`` and ``sender``'s connection to it (§2.6)."""
        ok(self.root.WinHvCreatePort(receiver, port_id, HvPortType.EVENT,
                                     connection_partition_id=sender, target_sint=sint,
                                     target_vp=vp, base_flag=base_flag,
                                     flag_count=flag_count))
        ok(self.root.WinHvConnectPort(sender, connection_id, receiver, port_id,
                                      HvPortType.EVENT))

    def run(self) -> int:
        """Deliver every pending interrupt (the scheduler's ``run_until_idle``)."""
        return self.hv.scheduler.run_until_idle()


def boot(kind: str, *, children: int = 1, rep_slice: int | None = None,
         root_memory_mb: int = 64, synic: bool = True) -> Machine:
    """A hypervisor on the ``kind`` bridge with ``children`` ready children."""
    hv = Hypervisor(root_memory_mb=root_memory_mb, bridge=kind, rep_slice=rep_slice)
    root = hv.handle(ROOT_PARTITION_ID, input_gpa=ROOT_INPUT_GPA, output_gpa=ROOT_OUTPUT_GPA)
    machine = Machine(kind, hv, root)
    for _ in range(children):
        machine.add_child(synic=synic)
    return machine


# -- snapshots (isolation checks) ---------------------------------------------------------------


def partition_state(hv: Hypervisor, partition_id: int) -> dict[str, Any]:
    """Everything a hypercall could change about one partition, as plain values."""
    p = hv.partitions[partition_id]
    vps = []
    for vp in p.vps:
        if vp is None:
            vps.append(None)
            continue
        vps.append((vp.scontrol, vp.simp, vp.siefp, tuple(vp.get_sint(n) for n in range(16)),
                    tuple(vp.queued_messages(n) for n in range(16)), tuple(vp.pending_vectors())))
    return {
        "state": p.state,
        "privileges": p.privileges,
        "parent": None if p.parent is None else p.parent.partition_id,
        "ports": sorted((k, v.port_type, v.target_sint, v.target_vp, v.base_flag, v.flag_count,
                         v.deleted, v.free_buffers) for k, v in p.ports.items()),
        "connections": sorted((k, c.port.partition.partition_id, c.port.port_id)
                              for k, c in p.connections.items()),
        "properties": dict(p.properties),
        "guest_os_id": p.guest_os_id,
        "hypercall_msr": p.hypercall_msr,
        "pool": (sorted(p.pool_pages), p.pool_in_use),
        "mapped_pages": p.memory.mapped_page_count,
        "vps": vps,
    }


def memory_snapshot(memory: Any, pages: Iterable[int]) -> list[bytes | None]:
    """The bytes of each page (None when unmapped)."""
    return [memory.read(page << 12, 4096) if memory.is_mapped(page << 12, 4096) else None
            for page in pages]


# -- strategies ---------------------------------------------------------------------------------

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
u64 = st.integers(0, (1 << 64) - 1)

#: Call codes: the implemented ones most often, then any known code, then anything.
call_codes = (st.sampled_from(sorted(IMPLEMENTED_HYPERCALLS))
              | st.sampled_from(sorted(HYPERCALLS)) | u16)


def rarely(default: Any, other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``default`` about seven times in eight, else a draw from ``other``."""
    return st.integers(0, 7).flatmap(lambda n: other if n == 7 else st.just(default))


@st.composite
def control_words(draw: Callable[..., Any], codes: st.SearchStrategy[int] = call_codes,
                  ) -> int:
    """Control words (§1.2) that are mostly well-formed for their call, sometimes subtly not
    (each field rarely drawn from its full width), sometimes pure noise."""
    if draw(st.integers(0, 9)) == 0:
        return draw(u64)
    code = draw(codes)
    info = HYPERCALLS.get(code)
    rep = info is not None and info.is_rep
    rep_count = draw(st.integers(1, 8) if rep else rarely(0, st.integers(0, 0xFFF)))
    rep_start = draw(rarely(0, st.integers(0, max(rep_count - 1, 0)) | st.integers(0, 0xFFF)))
    reserved_bits = [1 << b for b in range(64) if CONTROL_RESERVED_MASK >> b & 1]
    return control(
        code,
        fast=draw(st.booleans() if info is not None and info.fast else
                  rarely(False, st.just(True))),
        varhead=draw(rarely(0, st.integers(0, 0x3FF))),
        nested=draw(rarely(False, st.just(True))),
        rep_count=rep_count if rep else draw(rarely(rep_count, st.integers(0, 0xFFF))),
        rep_start=rep_start,
        reserved=draw(rarely(0, st.sampled_from(reserved_bits))),
    )


#: Guest physical addresses: the child's own interesting pages, near-misses, anything.
guest_gpas = (st.sampled_from([CHILD_INPUT_GPA, CHILD_OUTPUT_GPA, CHILD_SIMP_GPA,
                               CHILD_SIEFP_GPA, CHILD_PAGES << 12, (CHILD_PAGES - 1) << 12])
              | st.integers(0, (CHILD_PAGES + 1) << 12)
              | u64)

#: Register names: the ones the hypervisor implements, other §2.1 names, any u32.
register_names = st.sampled_from(sorted(int(r) for r in HvRegisterName)) | u32

#: Register values: enable bits with page numbers of the child's RAM, SINT shapes, noise.
register_values = (st.builds(lambda page, bits: page << 12 | bits,
                             st.integers(0, CHILD_PAGES + 2), st.integers(0, 3))
                   | st.builds(lambda vector, masked: vector | masked << 16,
                               st.integers(0, 255), st.integers(0, 1))
                   | st.sampled_from([0, 1, (1 << 64) - 1])
                   | u64)

__all__ = [
    "BRIDGE_KINDS",
    "CHILD_INPUT_GPA",
    "CHILD_OUTPUT_GPA",
    "CHILD_PAGES",
    "CHILD_SIEFP_GPA",
    "CHILD_SIMP_GPA",
    "POOL_PAGES_PER_CHILD",
    "ROOT_INPUT_GPA",
    "ROOT_OUTPUT_GPA",
    "ROOT_SIEFP_GPA",
    "ROOT_SIMP_GPA",
    "SINT",
    "TLFS_STATUSES",
    "VECTOR",
    "Guest",
    "Machine",
    "boot",
    "call_codes",
    "control",
    "control_words",
    "guest_gpas",
    "memory_snapshot",
    "ok",
    "partition_state",
    "rarely",
    "register_names",
    "register_values",
    "result_reps",
    "result_status",
    "u16",
    "u32",
    "u64",
    "winhv_package",
]
