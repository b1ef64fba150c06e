"""VMBus protocol versions and the feature flags negotiated from 6.0 (fact sheet §3.4, §3.3).

A version is a u32 ``major << 16 | minor``. Ordering versions is ordering their values, so
``VmbusVersion`` is an ``IntEnum`` and ``v >= VmbusVersion.WIN10_V5`` reads as the spec does.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

__all__ = ["CLIENT_VERSIONS", "FeatureFlag", "VmbusVersion", "major_minor"]


class VmbusVersion(IntEnum):
    """Every channel-management protocol version (§3.4), named as Linux names them.

    The comment after each member gives OpenVMM's name and the Windows release.
    """

    WS2008 = 0x0000000D  # V1, 0.13, WS2008
    WIN7 = 0x00010001  # Win7, 1.1, Win7 / WS2008R2
    WIN8 = 0x00020004  # Win8, 2.4, Win8 / WS2012
    WIN8_1 = 0x00030000  # Win8_1, 3.0, Win8.1 / WS2012R2
    WIN10 = 0x00040000  # Win10, 4.0
    WIN10_V4_1 = 0x00040001  # Win10Rs3_0, 4.1, RS3
    WIN10_V5 = 0x00050000  # Win10Rs3_1, 5.0
    WIN10_V5_1 = 0x00050001  # Win10Rs4, 5.1, RS4
    WIN10_V5_2 = 0x00050002  # Win10Rs5, 5.2, WS2019
    WIN10_V5_3 = 0x00050003  # Iron, 5.3, WS2022
    WIN10_V6_0 = 0x00060000  # Copper, 6.0, confidential VMBus


def major_minor(version: int) -> tuple[int, int]:
    """Split a version u32 into ``(major, minor)``: ``major_minor(0x00020004) == (2, 4)``."""
    if not 0 <= version <= 0xFFFF_FFFF:
        raise ValueError(f"version: found {version:#x}, expected a u32")
    return version >> 16, version & 0xFFFF


#: The versions a guest proposes, newest first, as a recent Linux kernel does (§3.4: 5.3 down
#: to WIN8; WIN7 and WS2008 are no longer proposed by Linux). 6.0 is left out as mainline Linux
#: without the confidential-VMBus series leaves it out; pass ``versions=`` to propose it.
CLIENT_VERSIONS: tuple[VmbusVersion, ...] = (
    VmbusVersion.WIN10_V5_3,
    VmbusVersion.WIN10_V5_2,
    VmbusVersion.WIN10_V5_1,
    VmbusVersion.WIN10_V5,
    VmbusVersion.WIN10_V4_1,
    VmbusVersion.WIN10,
    VmbusVersion.WIN8_1,
    VmbusVersion.WIN8,
)


class FeatureFlag(IntFlag):
    """Feature flags (u32) of INITIATE_CONTACT bytes 20..24 and VERSION_RESPONSE2 bytes 16..20,
    meaningful from 6.0 (§3.3, "Feature flags"; OpenVMM names).
    """

    GUEST_SPECIFIED_SIGNAL_PARAMETERS = 0x01
    CHANNEL_INTERRUPT_REDIRECTION = 0x02
    MODIFY_CONNECTION = 0x04
    CLIENT_ID = 0x08
    CONFIDENTIAL_CHANNELS = 0x10
    PAUSE_RESUME = 0x20
    SERVER_SPECIFIED_MONITOR_PAGES = 0x40
    GPA_PINNING = 0x80
