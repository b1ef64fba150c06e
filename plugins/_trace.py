"""``--trace FILE``: every hypercall, SynIC message, signal and channel packet of a run, as JSON
lines stamped with virtual time (ns).

Hypercalls come from the bridge's tracer; PostMessage and SignalEvent records are decoded
into ``message``/``signal`` records (connection, type, size, payload); channel packets come
from taps on both ends of every channel as it opens.
"""

from __future__ import annotations

import json
from typing import IO, Any

from winhv._calls import HYPERCALLS
from winhv._status import HvStatus

__all__ = ["Tracer"]

_POST = 0x5C
_SIGNAL = 0x5D


def _status_name(value: int) -> str:
    try:
        return HvStatus(value).name
    except ValueError:
        return f"{value:#06x}"


class Tracer:
    """Writes trace records for one host to ``out`` (a text file)."""

    def __init__(self, host: Any, out: IO[str]) -> None:
        self.host = host
        self.out = out
        self.records = 0
        self._tapped: set[int] = set()
        host.hypervisor.bridge.tracer = self._hypercall

    def _write(self, record: dict[str, Any]) -> None:
        record["t"] = self.host.scheduler.now
        self.out.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.records += 1

    def _hypercall(self, partition_id: int, control: int, rdx: int, r8: int,
                   result: int) -> None:
        code = control & 0xFFFF
        info = HYPERCALLS.get(code)
        status = result & 0xFFFF
        record: dict[str, Any] = {
            "kind": "hypercall", "partition": partition_id, "code": f"{code:#06x}",
            "name": info.name if info else "unknown", "status": _status_name(status),
        }
        if (control >> 32) & 0xFFF:
            record["reps"] = [(control >> 48) & 0xFFF, (control >> 32) & 0xFFF,
                              (result >> 32) & 0xFFF]
        self._write(record)
        if code == _SIGNAL:
            self._write({"kind": "signal", "partition": partition_id,
                         "connection": rdx & 0xFFFFFFFF, "flag": (rdx >> 32) & 0xFFFF,
                         "status": _status_name(status)})
        elif code == _POST:
            partition = self.host.hypervisor.partitions.get(partition_id)
            try:
                block = bytes(partition.memory.view(rdx, 256)) if partition else b""
            except Exception:
                block = b""
            if len(block) == 256:
                size = min(int.from_bytes(block[12:16], "little"), 240)
                self._write({"kind": "message", "partition": partition_id,
                             "connection": int.from_bytes(block[0:4], "little"),
                             "type": int.from_bytes(block[8:12], "little"), "size": size,
                             "payload": block[16:16 + size].hex(),
                             "status": _status_name(status)})

    def tap_bus(self, vm: str, devices: Any, client: Any) -> None:
        """Tap every channel of one VM the moment it opens, on both ends, before the driver's
        ``on_open`` runs: what a VSP or VSC sends on open (an IC's version negotiation, the
        storage driver's first request) is traced too. ``devices`` are the worker's host
        devices (name -> HostDevice), ``client`` the guest's VMBus client."""
        for device in devices.values():
            device.vsp.on_open = self._tapping(vm, device.vsp.on_open)
        opened = client.open_result

        def open_result(relid: int, status: int) -> Any:
            guest = client.devices.get(relid)
            driver = getattr(guest, "driver", None)
            # (a driver with its own instance on_open, or without a __dict__, is tapped at
            # bind instead, by tap_channels)
            if driver is not None and status == 0 and \
                    "on_open" not in getattr(driver, "__dict__", {"on_open": None}):
                driver.on_open = self._tapping(vm, driver.on_open, once=True, owner=driver)
            return opened(relid, status)

        client.open_result = open_result

    def _tapping(self, vm: str, on_open: Any, *, once: bool = False, owner: Any = None) -> Any:
        """``on_open`` that first attaches this tracer's tap to the channel."""
        def tapped(channel: Any) -> Any:
            if id(channel) not in self._tapped:
                self._tapped.add(id(channel))
                channel.taps.append(self._packet(vm))
            if once and owner is not None:
                del owner.on_open   # back to the class's method
            return on_open(channel)

        return tapped

    def tap_channels(self) -> None:
        """Attach packet taps to every channel opened since the last call."""
        for vm in self.host.vmms.list():
            worker = vm.worker
            if worker is None:
                continue
            ends = []
            if worker.server is not None:
                ends += [d.channel for d in worker.server.devices.values()]
            if worker.client is not None:
                ends += [d.channel for d in worker.client.devices.values()]
            for channel in ends:
                if channel is not None and id(channel) not in self._tapped:
                    self._tapped.add(id(channel))
                    channel.taps.append(self._packet(vm.name))

    def _packet(self, vm: str) -> Any:
        def tap(channel: Any, direction: str, ptype: int, trans_id: int, payload: Any) -> None:
            self._write({"kind": "packet", "vm": vm, "side": channel.side,
                         "relid": channel.relid, "direction": direction, "type": int(ptype),
                         "trans_id": trans_id, "size": len(payload)})

        return tap
