"""Hostile input (issue #2): a child partition is untrusted. Random control words, GPAs,
register values and input pages issued from a child through the raw ``hypercall`` entry never
raise, always answer a TLFS status (§1.5) in a well-formed result word (§1.3), never change
another partition's memory or state, and get the same answer from both bridges."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from support.hv import (
    CHILD_INPUT_GPA,
    CHILD_OUTPUT_GPA,
    CHILD_PAGES,
    TLFS_STATUSES,
    Machine,
    boot,
    call_codes,
    control_words,
    guest_gpas,
    memory_snapshot,
    partition_state,
    rarely,
    register_names,
    register_values,
    u64,
)

from winhv.abi import HvPortType

HOSTILE = settings(max_examples=60, deadline=None)

#: 64-bit words a guest plausibly puts in an input page: ids (self, its own, a sibling's, the
#: root's), VP indexes, register names and values, connection ids with flag numbers, sizes.
_small = st.integers(0, 16) | st.sampled_from([0xFFFF_FFFE, 0xFFFF_FFFF, 240, 241, 0x80000000])
_half = _small | register_names
input_words = st.one_of(
    st.sampled_from([0xFFFF_FFFF_FFFF_FFFF, 1, 2, 3, 4]),
    st.builds(lambda lo, hi: lo | hi << 32, _half, _half),
    register_values,
    u64,
)
input_pages = st.one_of(
    st.lists(input_words, max_size=48).map(lambda ws: struct.pack(f"<{len(ws)}Q", *ws)),
    st.binary(max_size=512),
)
#: What a child may call (§1.6 default child privileges) first, then anything.
_child_codes = rarely(None, call_codes).flatmap(
    lambda code: st.sampled_from([0x46, 0x47, 0x50, 0x51, 0x5C, 0x5D]) if code is None
    else st.just(code))
calls = st.lists(
    st.tuples(control_words(_child_codes),
              st.one_of(st.just(CHILD_INPUT_GPA), st.just(CHILD_INPUT_GPA), guest_gpas),
              st.one_of(st.just(CHILD_OUTPUT_GPA), st.just(CHILD_OUTPUT_GPA), guest_gpas),
              input_pages),
    min_size=1, max_size=4)


def _hostile_machine(kind: str) -> Machine:
    """Root + two children. The first (the attacker) holds loopback message and event
    connections to ports of its own, so PostMessage/SignalEvent reach real delivery."""
    machine = boot(kind, children=2)
    machine.enable_root_synic()
    attacker = machine.guests[0].partition_id
    machine.message_channel(attacker, attacker, port_id=1, connection_id=1)
    machine.event_channel(attacker, attacker, port_id=2, connection_id=2, flag_count=16)
    return machine


def _others(machine: Machine) -> dict[str, Any]:
    """Everything the attacker must not change: the root's and the sibling's state, the
    sibling's RAM, the root's own pages below the children's, and who exists."""
    hv = machine.hv
    sibling = machine.guests[1]
    return {
        "partitions": sorted(hv.partitions),
        "root": partition_state(hv, 1),
        "sibling": partition_state(hv, sibling.partition_id),
        "sibling_ram": memory_snapshot(sibling.memory, range(CHILD_PAGES)),
        "root_pages": memory_snapshot(hv.root.memory, range(0x10)),
        "root_interrupts": list(machine.root_interrupts),
        "sibling_interrupts": list(sibling.interrupts),
    }


def _attacker(machine: Machine) -> dict[str, Any]:
    guest = machine.guests[0]
    return {"state": partition_state(machine.hv, guest.partition_id),
            "ram": memory_snapshot(guest.memory, range(CHILD_PAGES)),
            "interrupts": list(guest.interrupts)}


def _issue(machine: Machine, word: int, rdx: int, r8: int, page: bytes) -> int:
    guest = machine.guests[0]
    guest.memory.write(CHILD_INPUT_GPA, page)
    result = guest.handle.hypercall(word, rdx, r8)
    machine.run()
    return result


@HOSTILE
@given(calls)
def test_child_hypercalls_never_raise_and_never_reach_another_partition(
        sequence: list[tuple[int, int, int, bytes]]) -> None:
    machines = [_hostile_machine(kind) for kind in ("compiled", "reference")]
    before = [_others(m) for m in machines]
    for word, rdx, r8, page in sequence:
        results = [_issue(m, word, rdx, r8, page) for m in machines]
        for result in results:
            assert result & 0xFFFF in TLFS_STATUSES, hex(result)
            assert result & ~((0xFFF << 32) | 0xFFFF) == 0, hex(result)
            rep_count = (word >> 32) & 0xFFF
            assert (result >> 32) & 0xFFF <= rep_count
        assert results[0] == results[1], f"bridges disagree on {word:#x}: {results}"
    after = [_others(m) for m in machines]
    assert after[0] == before[0]
    assert after[1] == before[1]
    assert _attacker(machines[0]) == _attacker(machines[1])


@HOSTILE
@given(st.lists(st.tuples(register_names, register_values), min_size=1, max_size=6),
       st.sampled_from([0xFFFF_FFFF_FFFF_FFFF, 1, 3, 999]),
       st.sampled_from([0, 0xFFFF_FFFE, 1, 0xFFFF_FFFF]))
def test_random_register_writes_from_a_child_stay_in_the_child(
        writes: list[tuple[int, int]], partition_id: int, vp_index: int) -> None:
    machines = [_hostile_machine(kind) for kind in ("compiled", "reference")]
    before = [_others(m) for m in machines]
    statuses = []
    for machine in machines:
        handle = machine.guests[0].handle
        statuses.append((handle.WinHvSetVpRegisters(writes, partition_id=partition_id,
                                                    vp_index=vp_index),
                         handle.WinHvGetVpRegisters([n for n, _ in writes],
                                                    partition_id=partition_id,
                                                    vp_index=vp_index)))
        machine.run()
    assert statuses[0] == statuses[1]
    assert [_others(m) for m in machines] == before
    assert _attacker(machines[0]) == _attacker(machines[1])


@HOSTILE
@given(st.integers(0, 0xFF_FFFF) | st.sampled_from([1, 2]), st.binary(max_size=240),
       st.integers(1, 0xFFFF_FFFF), st.integers(0, 0xFFFF))
def test_random_messages_and_signals_from_a_child_land_only_in_its_own_pages(
        connection_id: int, payload: bytes, message_type: int, flag: int) -> None:
    for kind in ("compiled", "reference"):
        machine = _hostile_machine(kind)
        before = _others(machine)
        handle = machine.guests[0].handle
        for _ in range(18):           # past the 16-buffer limit
            assert int(handle.WinHvPostMessage(connection_id, message_type, payload)) \
                in TLFS_STATUSES
        assert int(handle.WinHvSignalEvent(connection_id, flag)) in TLFS_STATUSES
        machine.run()
        assert _others(machine) == before


def test_the_hostile_machine_really_delivers_to_the_attacker() -> None:
    """Sanity check of the fixture: the loopback connections work, so the properties above
    exercise delivery and not just routing failures."""
    machine = _hostile_machine("compiled")
    guest = machine.guests[0]
    assert guest.handle.WinHvPostMessage(1, 1, b"x") == 0
    assert guest.handle.WinHvSignalEvent(2, 5) == 0
    machine.run()
    assert guest.message()[4] == b"x"
    assert guest.flag_set(5)
    assert machine.hv.partitions[guest.partition_id].ports[1].port_type == HvPortType.MESSAGE
