"""A VID service a third-party plugin registers (hook ``winhv_vid_services``) is built from
the driver set's ``[[host.service]]`` with its validated configuration and sees every
partition of a real host: admission before any hypercall, creation after the VPs exist,
destruction when its VM stops; a refusal fails only that VM, with the service's reason."""

from __future__ import annotations

import importlib.metadata
from typing import Any

from winhv.drivers.vid import VidService
from winhv.drivers.vmms import VmState
from winhv.plugins._driverset import parse_driver_set
from winhv.plugins._hostbuild import boot_driver_set
from winhv.plugins.api import ConfigField, VidServiceDescription, discover, hookimpl

SEEN: list[tuple[str, str]] = []


class ProcessorCap(VidService):
    """Refuses a VM with more VPs than ``max_processors``; records what it sees."""

    name = "processor-cap"

    def admit(self, vid: Any, name: str, memory_mb: int, processors: int) -> str | None:
        SEEN.append(("admit", name))
        limit = self.config["max_processors"]
        return f"{processors} VPs, at most {limit}" if processors > limit else None

    def partition_created(self, vid: Any, partition: Any) -> None:
        SEEN.append(("created", partition.name))

    def partition_destroyed(self, vid: Any, partition: Any) -> None:
        SEEN.append(("destroyed", partition.name))


class CapPlugin:
    @hookimpl
    def winhv_vid_services(self) -> list[VidServiceDescription]:
        return [VidServiceDescription(
            "processor-cap", ProcessorCap,
            (ConfigField("max_processors", "int", 1, "VPs per VM", minimum=1),),
            "Caps the VPs of a VM.")]


SET = """
[[host.service]]
name = "processor-cap"
config = { max_processors = 2 }

[[vm]]
name = "small"
memory_mb = 32
processors = 2
ics = ["heartbeat"]

[[vm]]
name = "wide"
memory_mb = 32
processors = 4
ics = ["heartbeat"]
"""


def test_a_plugin_vid_service_sees_every_partition_and_its_refusal_fails_only_that_vm(
) -> None:
    builtin = [ep for ep in importlib.metadata.entry_points(group="winhv")
               if ep.name == "builtin"]
    discovery = discover(entry_points=builtin, plugins={"cap": CapPlugin()})
    assert discovery.failures == []
    driver_set = parse_driver_set(SET, registry=discovery.registry)
    SEEN.clear()
    host = boot_driver_set(driver_set, discovery)
    [service] = [s for s in host.vid.services if isinstance(s, ProcessorCap)]
    assert service.config == {"max_processors": 2}
    for vm in host.vmms.list():
        host.vmms.start(vm.name)
    host.settle()
    small, wide = host.vmms.get("small"), host.vmms.get("wide")
    assert small.state is VmState.RUNNING
    assert wide.state is VmState.FAILED
    assert "VID service processor-cap refused the partition: 4 VPs, at most 2" in (
        wide.reason or "")
    assert [p.name for p in host.vid.partitions.values()] == ["small"]
    assert SEEN == [("admit", "small"), ("created", "small"), ("admit", "wide")]
    host.vmms.stop("small", force=True)
    assert SEEN[-1] == ("destroyed", "small")
    assert host.vid.partitions == {}
