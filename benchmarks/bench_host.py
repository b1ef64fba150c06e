"""Host benchmark (issue #6): one VM of the default driver set to Running with every channel
open, and 100 VMs x 8 channels to Running (time and peak RSS). Run:
``python -m benchmarks host``. The 100-VM figure runs in a child process so its peak RSS is
its own."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import uuid

from benchmarks._harness import Row, print_rows

ECHO = uuid.UUID("9f1d9a4e-5f3c-4b7e-9a0e-6c1b2d3e4f51")


def _default_vm_ms(repeats: int) -> float:
    from winhv.drivers.vmms import VmState
    from winhv.plugins._discovery import discover
    from winhv.plugins._driverset import load_default_driver_set
    from winhv.plugins._hostbuild import boot_driver_set

    discovery = discover()
    driver_set = load_default_driver_set(discovery.registry)
    samples = []
    for _ in range(repeats):
        host = boot_driver_set(driver_set, discovery)
        name = driver_set.vms[0].name
        start = time.perf_counter_ns()
        host.vmms.start(name)
        host.settle()
        samples.append((time.perf_counter_ns() - start) / 1e6)
        vm = host.vmms.get(name)
        if vm.state is not VmState.RUNNING:
            raise RuntimeError(f"default VM is {vm.state}: {vm.reason}")
        # Running counts a failed device as settled; the bar is for every channel open.
        closed = [c["name"] for c in host.vmms.inspect(name)["channels"] if not c["open"]]
        if closed or not vm.spec.devices:
            raise RuntimeError(f"default VM booted without channels open: {closed}")
    return statistics.median(samples)


_SCALE = r"""
import json, resource, sys, time, uuid
from winhv.drivers.vmbus.device import Vsc, Vsp
from winhv.drivers.vmms import DeviceSpec, Host, VmSpec, VmState
ECHO = uuid.UUID("9f1d9a4e-5f3c-4b7e-9a0e-6c1b2d3e4f51")
class EchoVsp(Vsp):
    def on_packet(self, channel, packet):
        channel.complete(packet.trans_id, packet.payload)
class EchoVsc(Vsc):
    interface_ids = (ECHO,)
vms, channels, memory = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
host = Host(root_memory_mb=vms * memory + 512)
start = time.perf_counter()
for i in range(vms):
    devices = tuple(DeviceSpec(f"echo{j}", "device", ECHO, EchoVsp, EchoVsc)
                    for j in range(channels))
    host.vmms.create(VmSpec(f"vm{i}", memory, 1, devices))
    host.vmms.start(f"vm{i}")
host.settle()
elapsed = time.perf_counter() - start
running = sum(1 for vm in host.vmms.list() if vm.state is VmState.RUNNING)
opened = sum(1 for vm in host.vmms.list()
             for d in vm.worker.client.devices.values() if d.channel is not None)
print(json.dumps({"seconds": elapsed, "running": running, "channels": opened,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _scale(vms: int, channels: int, memory_mb: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _SCALE, str(vms), str(channels),
                          str(memory_mb)], check=True, capture_output=True, text=True)
    result = json.loads(out.stdout)
    if result["running"] != vms or result["channels"] != vms * channels:
        raise RuntimeError(f"scale run incomplete: {result}")
    return result


def run(quick: bool = False) -> list[Row]:
    g = "host (issue #6)"
    scale = _scale(100, 8, 32)
    return [
        Row(g, "default driver set VM to Running", _default_vm_ms(3 if quick else 7), "ms",
            "<= 50", "(every channel open)"),
        Row(g, "100 VMs x 8 channels to Running", scale["seconds"], "s", "<= 3"),
        Row(g, "  peak RSS of that process", scale["peak_rss_mib"], "MiB", "<= 2048"),
    ]


if __name__ == "__main__":
    print_rows(run(quick="--quick" in sys.argv))
