"""The built-in plugin's hook implementations.

``winhv.vsp_vsc_pairs`` is registered through the ``winhv`` entry-point group as ``builtin``,
exactly like a third-party distribution, and contributes its devices through the same hooks.
The built-in pairs, ICs and VID services arrive with later issues; each is added to the tuples
returned here.
"""

from __future__ import annotations

from winhv.plugins.api import (
    IcDescription,
    PairDescription,
    VidServiceDescription,
    hookimpl,
)

__all__ = ["winhv_integration_components", "winhv_vid_services", "winhv_vsp_vsc_pairs"]


@hookimpl
def winhv_vsp_vsc_pairs() -> tuple[PairDescription, ...]:
    """The built-in device pairs (none yet: storage and network come with their issues)."""
    return ()


@hookimpl
def winhv_integration_components() -> tuple[IcDescription, ...]:
    """The built-in Integration Components (none yet: the ICs come with issue #7)."""
    return ()


@hookimpl
def winhv_vid_services() -> tuple[VidServiceDescription, ...]:
    """The built-in VID services (none yet)."""
    return ()
