"""VMBus benchmark (issue #3): request/completion round trip through a real channel (ring,
signal, interrupt delivery, callback), and bringing up a VM with 64 channels offered, GPADLs
created and opened. Run: ``python -m benchmarks vmbus``."""

from __future__ import annotations

import statistics
import sys
import time
import uuid

from benchmarks._harness import Row, median_ns, print_rows
from winhv.drivers.vmbus.device import Vsc, Vsp
from winhv.drivers.vmbus.loopback import boot_host, boot_vm, connect_pair

ECHO = uuid.UUID("9f1d9a4e-5f3c-4b7e-9a0e-6c1b2d3e4f50")


class EchoVsp(Vsp):
    interface_id = ECHO

    def on_packet(self, channel, packet):
        channel.complete(packet.trans_id, packet.payload)


class EchoVsc(Vsc):
    interface_ids = (ECHO,)
    ring_size = 4 * 4096

    def on_open(self, channel):
        self.channel = channel


def _round_trip_ns(count: int) -> float:
    loop, _host_channel, device = connect_pair(EchoVsp({}), EchoVsc)
    channel = device.driver.channel
    payload = bytes(64)
    done = []
    on_done = done.append

    def run(n: int) -> None:
        for _ in range(n):
            channel.send_request(payload, on_done)
            loop.run()

    result = median_ns(run, count)
    if len(done) < count:
        raise RuntimeError("completions went missing")
    return result


def _bring_up_ms(channels: int, repeats: int) -> float:
    machine = boot_host(root_memory_mb=1024)
    samples = []
    for i in range(repeats):
        start = time.perf_counter_ns()
        loop = boot_vm([EchoVsc], name=f"vm{i}", machine=machine, connect=False)
        for n in range(channels):
            loop.server.add_device(f"echo{n}", EchoVsp({}), ECHO)
        loop.client.connect()
        loop.settle()
        samples.append((time.perf_counter_ns() - start) / 1e6)
        opened = sum(1 for d in loop.client.devices.values() if d.channel is not None)
        if opened != channels:
            raise RuntimeError(f"only {opened} of {channels} channels opened")
        loop.server.shutdown()
    return statistics.median(samples)


def run(quick: bool = False) -> list[Row]:
    g = "vmbus (issue #3)"
    return [
        Row(g, "request/completion round trip, 64 B", _round_trip_ns(2000 if quick else 20000)
            / 1000, "us", "<= 10"),
        Row(g, "VM up with 64 channels offered+opened", _bring_up_ms(64, 3 if quick else 7),
            "ms", "<= 20", "(partition, SynIC, negotiation, 64 GPADLs and opens)"),
    ]


if __name__ == "__main__":
    print_rows(run(quick="--quick" in sys.argv))
