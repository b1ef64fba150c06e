"""``winhv.drivers.vmbus`` exports exactly its public names, sorted."""

from __future__ import annotations

from support.exports import isort_key, public_names

import winhv.drivers.vmbus as vmbus


def test_vmbus_namespace_exports_exactly_its_public_names() -> None:
    assert sorted(vmbus.__all__, key=isort_key) == vmbus.__all__
    assert set(vmbus.__all__) == public_names(vmbus)


def test_hv_namespace_exports_exactly_its_public_names() -> None:
    import winhv.drivers.hv as hv

    assert sorted(hv.__all__, key=isort_key) == hv.__all__
    assert set(hv.__all__) == public_names(hv)
