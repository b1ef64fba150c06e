"""Per-VM limits of ServerProtocol: what one guest may make the host hold (audit finding 3a/3b).

A guest chooses how many GPADLs it describes and how many it leaves half sent. Past a limit
the host refuses the GPADL the way the protocol refuses any GPADL -- GPADL_CREATED with
0x8000FFFF (fact sheet §3.3, OpenVMM STATUS_UNSUCCESSFUL) -- and reports which VM limit,
which channel and which GPADL; the guest's other GPADLs and channels are untouched.
"""

from __future__ import annotations

import uuid

import pytest
from support.vmbus_strategies import RecordingServerNotifier

from winhv.drivers.vmbus.protocol import (
    GPADL_STATUS_UNSUCCESSFUL,
    GpadlCreated,
    GpadlHeader,
    GpadlLimits,
    GpadlTeardown,
    GpadlTorndown,
    InitiateContact,
    OfferParams,
    RequestOffers,
    ServerProtocol,
    Unload,
    VmbusVersion,
    gpadl_messages,
)


def connected(**limits) -> tuple[ServerProtocol, RecordingServerNotifier, int]:
    notifier = RecordingServerNotifier()
    server = ServerProtocol(notifier=notifier, gpadl_limits=GpadlLimits(**limits))
    relid = server.offer(OfferParams(uuid.UUID(int=1), uuid.UUID(int=2)))
    server.receive(InitiateContact(VmbusVersion.WIN10_V5_3, msg_sint=2).pack(), 4)
    server.receive(RequestOffers().pack())
    notifier.take()
    return server, notifier, relid


def header_only(relid: int, gpadl_id: int, pages: int) -> bytes:
    """The GPADL_HEADER of a ``pages``-page GPADL whose bodies never come."""
    return gpadl_messages(relid, gpadl_id, list(range(0x100, 0x100 + pages)))[0].pack()


def send(server: ServerProtocol, relid: int, gpadl_id: int, pages: int) -> None:
    for m in gpadl_messages(relid, gpadl_id, list(range(0x100, 0x100 + pages))):
        server.receive(m.pack())


def test_defaults_are_documented_and_generous_for_real_guests():
    server, _, _ = connected()
    assert server.gpadl_limits == GpadlLimits(max_pending=64, max_gpadls=8192, max_pages=1 << 20)


def test_gpadls_in_progress_are_capped_and_the_next_header_is_refused_with_a_reason():
    server, notifier, relid = connected(max_pending=3)
    for gpadl_id in (1, 2, 3):
        server.receive(header_only(relid, gpadl_id, 100))
    assert notifier.take() == []
    server.receive(header_only(relid, 4, 100))
    assert notifier.take() == [GpadlCreated(relid, 4, GPADL_STATUS_UNSUCCESSFUL)]
    (error,) = notifier.errors
    assert str(error) == (
        "GPADL_HEADER.gpadl_id: found GPADL 0x4 of relid 1 with 3 GPADLs in progress, "
        "expected at most 3 in progress per VM (GpadlLimits.max_pending)")
    assert server.in_progress_gpadls == 3


def test_a_completed_gpadl_frees_its_in_progress_slot():
    server, notifier, relid = connected(max_pending=1)
    send(server, relid, 1, 100)
    send(server, relid, 2, 100)
    assert notifier.take() == [GpadlCreated(relid, 1, 0), GpadlCreated(relid, 2, 0)]
    assert notifier.errors == []


def test_gpadl_pages_per_vm_are_budgeted_and_the_budget_comes_back_at_teardown():
    server, notifier, relid = connected(max_pages=250)
    send(server, relid, 1, 200)
    send(server, relid, 2, 60)                     # 260 > 250: refused at the header
    assert notifier.take() == [GpadlCreated(relid, 1, 0),
                               GpadlCreated(relid, 2, GPADL_STATUS_UNSUCCESSFUL)]
    assert "GpadlLimits.max_pages" in str(notifier.errors[0])
    assert "relid 1" in str(notifier.errors[0])
    assert server.gpadl_pages == 200
    server.receive(GpadlTeardown(relid, 1).pack())
    assert notifier.take() == [GpadlTorndown(1)]
    assert server.gpadl_pages == 0
    send(server, relid, 3, 250)
    assert notifier.take() == [GpadlCreated(relid, 3, 0)]


def test_pages_of_gpadls_in_progress_count_against_the_budget():
    server, notifier, relid = connected(max_pages=150)
    server.receive(header_only(relid, 1, 100))     # bodies pending: 100 pages reserved
    server.receive(header_only(relid, 2, 100))
    assert notifier.take() == [GpadlCreated(relid, 2, GPADL_STATUS_UNSUCCESSFUL)]
    assert "GpadlLimits.max_pages" in str(notifier.errors[0])


def test_the_number_of_gpadls_per_vm_is_capped():
    server, notifier, relid = connected(max_gpadls=2)
    for gpadl_id in (1, 2, 3):
        send(server, relid, gpadl_id, 1)
    assert notifier.take() == [GpadlCreated(relid, 1, 0), GpadlCreated(relid, 2, 0),
                               GpadlCreated(relid, 3, GPADL_STATUS_UNSUCCESSFUL)]
    assert "GpadlLimits.max_gpadls" in str(notifier.errors[0])


def test_unload_gives_every_page_and_slot_back():
    server, notifier, relid = connected(max_pages=300, max_pending=1)
    send(server, relid, 1, 200)
    server.receive(header_only(relid, 2, 50))
    assert (server.gpadl_pages, server.in_progress_gpadls, notifier.errors) == (200, 1, [])
    server.receive(Unload().pack())
    assert (server.gpadl_pages, server.in_progress_gpadls) == (0, 0)


def test_the_audit_flood_of_headers_stays_bounded():
    # /tmp/aud/c_pending.py: 20,000 headers of 8190-page GPADLs whose bodies never come used
    # to be held forever (~9 MB). Now at most GpadlLimits.max_pending are held, each refused one
    # is answered.
    server, notifier, relid = connected()
    words = (4096 * 8190, *range(16, 42))
    for gpadl_id in range(1, 1001):
        server.receive(GpadlHeader(relid, gpadl_id, 8191 * 8, 1, words).pack())
    assert server.in_progress_gpadls == 64
    refused = notifier.take()
    assert len(refused) == 1000 - 64
    assert {m.status for m in refused} == {GPADL_STATUS_UNSUCCESSFUL}


@pytest.mark.parametrize("limit", ["max_pending", "max_gpadls", "max_pages"])
def test_limits_must_be_positive(limit):
    with pytest.raises(ValueError, match=limit):
        GpadlLimits(**{limit: 0})


def test_a_header_reusing_an_id_in_progress_is_the_ids_one_and_only_answer():
    # Refused with 0x8000FFFF; the first GPADL of that id is abandoned with it, so its bodies
    # complete nothing and the guest never hears a second, contradicting GPADL_CREATED.
    server, notifier, relid = connected()
    header, *bodies = gpadl_messages(relid, 7, list(range(0x100, 0x100 + 100)))
    server.receive(header.pack())
    server.receive(header.pack())
    for body in bodies:
        server.receive(body.pack())
    assert notifier.take() == [GpadlCreated(relid, 7, GPADL_STATUS_UNSUCCESSFUL)]
    assert server.in_progress_gpadls == 0
    assert server.gpadl_pages == 0
