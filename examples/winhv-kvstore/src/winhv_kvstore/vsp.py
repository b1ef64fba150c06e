"""The host half: owns the store (one per device instance), answers every request."""

from __future__ import annotations

from typing import Any

from winhv.plugins.api import Vsp

from .protocol import INTERFACE_ID, KvError, Op, Status, parse_request, reply


class KvStoreVsp(Vsp):
    """``config["capacity"]``: most entries the store holds (PUT of a new key beyond: FULL)."""

    interface_id = INTERFACE_ID

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.store: dict[bytes, bytes] = {}

    def on_packet(self, channel: Any, packet: Any) -> None:
        if not packet.completion_requested:
            return
        try:
            op, key, value = parse_request(packet.payload)
        except KvError as exc:
            channel.complete(packet.trans_id, reply(Status(exc.status)))
            return
        channel.complete(packet.trans_id, self.handle(op, key, value))

    def handle(self, op: Op, key: bytes, value: bytes) -> bytes:
        if op is Op.GET:
            found = self.store.get(key)
            return reply(Status.OK, found) if found is not None else reply(Status.NOT_FOUND)
        if op is Op.PUT:
            if key not in self.store and len(self.store) >= self.config.get("capacity", 64):
                return reply(Status.FULL)
            self.store[key] = value
            return reply(Status.OK)
        return reply(Status.OK if self.store.pop(key, None) is not None else Status.NOT_FOUND)
