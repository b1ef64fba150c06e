"""Testing tools for driver authors: the mock hypervisor, the pair harness, and records.

Import from here (``from winhv.plugins.testing import MockHost``); the pytest plugin
(``winhv.plugins.pytest_plugin``, entry point ``winhv``) builds its fixtures from these.

* :class:`MockHost` boots the real core for a test (deterministic, seeded), records every
  hypercall, control message, signal and packet, and injects faults on demand; a
  :class:`MockVm` is one of its VMs.
* :func:`pair` (``MockHost.harness``) puts a VSP and a VSC, or a scripted :class:`FakeVsp` /
  :class:`FakeVsc` on either side, on one real channel, and returns a :class:`Pair` of
  :class:`End` objects with ``send``/``request``/``expect``.
* The record types (:class:`HypercallRecord`, :class:`MessageRecord`, :class:`SignalRecord`,
  :class:`PacketRecord`, :class:`NoteRecord`) are what the queries return.

Guides: ``docs/howto-fault-injection.md``, ``docs/reference-fixtures.md``.
"""

from __future__ import annotations

from ._faults import Fault, InjectedFault
from ._harness import (
    End,
    ExpectationFailed,
    FakeVsc,
    FakeVsp,
    Pair,
    pair,
    payload_matches,
)
from ._injection import FILLER_TRANS_ID, RING_FIELDS
from ._mock import MockError, MockHost, MockVm
from ._records import (
    TO_GUEST,
    TO_HOST,
    HypercallRecord,
    MessageRecord,
    NoteRecord,
    PacketRecord,
    Record,
    SignalRecord,
    format_trace,
    message_type,
)

__all__ = [
    "FILLER_TRANS_ID",
    "RING_FIELDS",
    "TO_GUEST",
    "TO_HOST",
    "End",
    "ExpectationFailed",
    "FakeVsc",
    "FakeVsp",
    "Fault",
    "HypercallRecord",
    "InjectedFault",
    "MessageRecord",
    "MockError",
    "MockHost",
    "MockVm",
    "NoteRecord",
    "PacketRecord",
    "Pair",
    "Record",
    "SignalRecord",
    "format_trace",
    "message_type",
    "pair",
    "payload_matches",
]
