"""The built-in plugin's hook implementations.

``winhv.vsp_vsc_pairs`` is registered through the ``winhv`` entry-point group as ``builtin``,
exactly like a third-party distribution, and contributes its devices through the same hooks.
The ICs' descriptions are derived from ``IC_TABLE`` (GUIDs, versions, summaries) and the
drivers' table (classes, configuration); pairs and VID services are added as they land.
"""

from __future__ import annotations

import uuid

from winhv.drivers.vid import MemoryReserve
from winhv.plugins.api import (
    ConfigField,
    IcDescription,
    PairDescription,
    VidServiceDescription,
    hookimpl,
)
from winhv.vsp_vsc_pairs.ic._driver_table import ic_descriptions
from winhv.vsp_vsc_pairs.storage import SCSI_INTERFACE_ID, STORAGE_CONFIG, StorVsc, StorVsp

__all__ = ["winhv_integration_components", "winhv_vid_services", "winhv_vsp_vsc_pairs"]


@hookimpl
def winhv_vsp_vsc_pairs() -> tuple[PairDescription, ...]:
    """The built-in device pairs: ``storage``, a SCSI disk on a raw image (§6.1)."""
    return (PairDescription(
        name="storage", interface_id=uuid.UUID(SCSI_INTERFACE_ID), version="1.0",
        vsp=StorVsp, vsc=StorVsc, config=STORAGE_CONFIG,
        summary="synthetic SCSI disk (vstor, storvsp/storvsc) backed by a raw image file"),)


@hookimpl
def winhv_integration_components() -> tuple[IcDescription, ...]:
    """The built-in Integration Components: heartbeat, KVP, shutdown and timesync (§5)."""
    return ic_descriptions()


@hookimpl
def winhv_vid_services() -> tuple[VidServiceDescription, ...]:
    """The built-in VID services: ``memory-reserve`` (admission against a root-memory floor)."""
    return (
        VidServiceDescription(
            name=MemoryReserve.name,
            service=MemoryReserve,
            config=(ConfigField("reserve_mb", int, default=64, minimum=0,
                                doc="Root memory (MiB) no VM may eat into."),),
            summary="Refuses a VM whose memory would leave the root below its reserve.",
        ),
    )
