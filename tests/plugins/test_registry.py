"""The registry: lookups by name and GUID, sources, conflicts naming both distributions."""

from __future__ import annotations

import uuid

import pytest

from winhv.plugins.api import (
    ConflictError,
    IcDescription,
    PairDescription,
    Registry,
    Source,
    UnknownNameError,
    VidService,
    VidServiceDescription,
    Vsc,
    Vsp,
)

G1 = uuid.UUID("11111111-0000-4000-8000-000000000001")
G2 = uuid.UUID("11111111-0000-4000-8000-000000000002")
A = Source("dist-a", "1.0", "a")
B = Source("dist-b", "2.0", "b")


def _pair(name: str, guid: uuid.UUID) -> PairDescription:
    return PairDescription(name, guid, "1.0", Vsp, Vsc)


def test_lookups_by_name_and_guid_remember_the_source() -> None:
    reg = Registry()
    storage = _pair("storage", G1)
    ic = IcDescription("heartbeat", G2, Vsp, Vsc, ("3.0",))
    svc = VidServiceDescription("balloon", VidService)
    reg.add_batch([storage, ic, svc], A)
    assert reg.pair("storage") is storage
    assert reg.ic("heartbeat") is ic
    assert reg.vid_service("balloon") is svc
    assert reg.by_interface(G1) is storage
    assert reg.by_interface(str(G2)) is ic
    assert reg.source_of(ic) == A
    assert str(A) == "dist-a 1.0 (entry point 'a')"
    assert (reg.pairs, reg.ics, reg.vid_services, len(reg)) == ((storage,), (ic,), (svc,), 3)
    assert [e.kind for e in reg.entries()] == ["pair", "ic", "vid-service"]


def test_unknown_names_list_the_known_ones() -> None:
    reg = Registry()
    reg.add_batch([_pair("storage", G1), _pair("network", G2)], A)
    with pytest.raises(UnknownNameError) as info:
        reg.pair("strage")
    assert str(info.value) == ("unknown pair 'strage': expected one of network, storage "
                               "(did you mean 'storage'?)")
    assert info.value.known == ("network", "storage")
    with pytest.raises(UnknownNameError, match="no plugin registers any ic"):
        reg.ic("heartbeat")


def test_a_second_claim_on_a_name_or_guid_names_both_distributions() -> None:
    reg = Registry()
    reg.add(_pair("storage", G1), A)
    with pytest.raises(ConflictError) as info:
        reg.add(_pair("storage", G2), B)
    assert str(info.value) == (
        "pair name 'storage' is claimed twice: by pair 'storage' from dist-b 2.0 (entry point "
        "'b') and by pair 'storage' from dist-a 1.0 (entry point 'a')")
    assert (info.value.existing.source, info.value.new.source) == (A, B)
    with pytest.raises(ConflictError, match=rf"interface GUID {G1} is claimed twice: by ic "
                       r"'hb' from dist-b .* by pair 'storage' from dist-a"):
        reg.add(IcDescription("hb", G1, Vsp, Vsc, ("1.0",)), B)


def test_a_batch_is_all_or_nothing() -> None:
    reg = Registry()
    reg.add(_pair("storage", G1), A)
    with pytest.raises(ConflictError):
        reg.add_batch([_pair("network", G2), _pair("storage", uuid.uuid4())], B)
    assert reg.names("pair") == ("storage",)
    with pytest.raises(ConflictError, match=r"dist-b 2\.0 .* and by pair 'dup' from dist-b 2\.0"):
        reg.add_batch([_pair("dup", G2), _pair("dup", uuid.uuid4())], B)
    with pytest.raises(TypeError, match="expected a PairDescription"):
        reg.add_batch(["storage"], B)  # type: ignore[list-item]
    assert reg.names("pair") == ("storage",)
