"""VMBus protocol versions and feature flags (fact sheet §3.4, §3.3)."""

from __future__ import annotations

import pytest

from winhv.drivers.vmbus.protocol import CLIENT_VERSIONS, FeatureFlag, VmbusVersion, major_minor


def test_every_version_has_its_u32_value():
    assert {v.name: (int(v), major_minor(v)) for v in VmbusVersion} == {
        "WS2008": (0x0000000D, (0, 13)),
        "WIN7": (0x00010001, (1, 1)),
        "WIN8": (0x00020004, (2, 4)),
        "WIN8_1": (0x00030000, (3, 0)),
        "WIN10": (0x00040000, (4, 0)),
        "WIN10_V4_1": (0x00040001, (4, 1)),
        "WIN10_V5": (0x00050000, (5, 0)),
        "WIN10_V5_1": (0x00050001, (5, 1)),
        "WIN10_V5_2": (0x00050002, (5, 2)),
        "WIN10_V5_3": (0x00050003, (5, 3)),
        "WIN10_V6_0": (0x00060000, (6, 0)),
    }


def test_versions_order_as_the_protocol_does():
    assert list(VmbusVersion) == sorted(VmbusVersion)
    assert VmbusVersion.WIN8_1 < VmbusVersion.WIN10_V5 <= VmbusVersion.WIN10_V5


def test_major_minor_refuses_non_u32():
    with pytest.raises(ValueError, match="u32"):
        major_minor(1 << 32)


def test_client_versions_are_newest_first_from_5_3_down_to_win8_like_linux():
    assert list(CLIENT_VERSIONS) == sorted(CLIENT_VERSIONS, reverse=True)
    assert CLIENT_VERSIONS[0] is VmbusVersion.WIN10_V5_3
    assert CLIENT_VERSIONS[-1] is VmbusVersion.WIN8
    assert len(set(CLIENT_VERSIONS)) == len(CLIENT_VERSIONS) == 8


def test_feature_flags_are_the_eight_bits_of_the_table():
    assert [int(f) for f in FeatureFlag] == [1 << i for i in range(8)]
    assert FeatureFlag.CLIENT_ID == 0x08
    assert FeatureFlag.CONFIDENTIAL_CHANNELS == 0x10
    assert FeatureFlag.PAUSE_RESUME == 0x20
    assert FeatureFlag.GPA_PINNING == 0x80
