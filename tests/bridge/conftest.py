"""Fixtures of this area: every test that involves the bridge runs on both bridges, so the
reference and compiled bridges are proven to behave identically."""

from __future__ import annotations

import pytest
from support.hv import BRIDGE_KINDS, Machine, boot


@pytest.fixture(params=BRIDGE_KINDS)
def bridge_kind(request: pytest.FixtureRequest) -> str:
    """``"compiled"`` or ``"reference"``."""
    return request.param


@pytest.fixture
def machine(bridge_kind: str) -> Machine:
    """A hypervisor on ``bridge_kind`` with one ready child (SynIC enabled on SINT 2)."""
    return boot(bridge_kind)
