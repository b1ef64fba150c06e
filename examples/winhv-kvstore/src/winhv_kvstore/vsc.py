"""The guest half: ``put``/``get``/``delete`` with a callback per answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from winhv.plugins.api import Vsc

from .protocol import INTERFACE_ID, KvError, Op, Status, parse_reply, request

#: ``callback(status, value)``; ``value`` is ``b""`` except for a found GET.
Answer = Callable[[Status, bytes], Any]


class KvStoreVsc(Vsc):
    interface_ids = (INTERFACE_ID,)

    def __init__(self, device: Any) -> None:
        super().__init__(device)
        self.channel: Any = None

    def on_open(self, channel: Any) -> None:
        self.channel = channel

    def remove(self) -> None:
        self.channel = None

    def _ask(self, op: Op, key: bytes, value: bytes, callback: Answer) -> int:
        if self.channel is None:
            raise KvError(Status.BAD_REQUEST, "the kvstore device is gone")
        return self.channel.send_request(
            request(op, key, value), lambda packet: callback(*parse_reply(packet.payload)))

    def put(self, key: bytes, value: bytes, callback: Answer) -> int:
        return self._ask(Op.PUT, key, value, callback)

    def get(self, key: bytes, callback: Answer) -> int:
        return self._ask(Op.GET, key, b"", callback)

    def delete(self, key: bytes, callback: Answer) -> int:
        return self._ask(Op.DELETE, key, b"", callback)
