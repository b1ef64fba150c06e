"""The built-in VSP/VSC pairs, Integration Components and VID services.

Each registers through the same ``winhv`` entry point and hooks a third-party package uses;
nothing here has a private door into the framework. This module is the plugin object the
``builtin`` entry point names, so its hook implementations are re-exported here.
"""

from __future__ import annotations

from ._plugin import winhv_integration_components, winhv_vid_services, winhv_vsp_vsc_pairs

__all__ = ["winhv_integration_components", "winhv_vid_services", "winhv_vsp_vsc_pairs"]
