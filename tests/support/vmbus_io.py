"""VMBus I/O test support: an echo device pair, fault-injecting variants of it, and helpers
that boot machines with one or two VMs and move requests through real channels.

The echo protocol frames every payload as ``u32 length`` + bytes, because a VMBus packet's
payload is padded to 8 bytes (fact sheet §4.3: payload length = (len8 - offset8) * 8) and the
receiver cannot otherwise tell where the data ends. The VSP answers a request (COMPLETION_REQUESTED
set) with a completion carrying ``b"echo:" + data``; a packet without the flag it records only.

A GPA-direct request (type 9) carries a one-byte command: ``b"R"`` asks the VSP to read the named
guest bytes and return them in the completion; ``b"W" + fill`` asks it to write ``fill``
repeated over the named bytes. The VSP reaches guest memory only through
``channel.guest_view``, as a real worker does.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any, ClassVar

from winhv.drivers.vmbus.device import Vsc, Vsp
from winhv.drivers.vmbus.loopback import Loopback, boot_host, boot_vm
from winhv.drivers.vmbus.ring import PacketType

#: Interface GUIDs of the test devices (random, fixed).
ECHO_IF = uuid.UUID("5a6c1c2e-34f1-4d8b-9a30-0b7e1f2d3c41")
ALT_IF = uuid.UUID("0c1f9e3a-7b52-4e6d-8a14-95d2c3b4a5f6")
UNKNOWN_IF = uuid.UUID("f00dfeed-0000-4000-8000-000000000001")

_LEN = struct.Struct("<I")
ECHO_PREFIX = b"echo:"


def frame(data: bytes) -> bytes:
    """``data`` with its u32 length in front (the echo protocol's framing)."""
    return _LEN.pack(len(data)) + data


def unframe(payload: Any) -> bytes:
    """The data of a framed payload (ignores the ring's zero padding)."""
    raw = bytes(payload)
    (size,) = _LEN.unpack_from(raw)
    if size > len(raw) - 4:
        raise AssertionError(f"framed length {size} exceeds the {len(raw) - 4} payload bytes")
    return raw[4:4 + size]


class EchoVsp(Vsp):
    """Root half of the echo pair. ``config["fail_in"]`` names a method that raises."""

    interface_id = ECHO_IF

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config or {})
        self.channel: Any = None
        self.opened: list[Any] = []
        self.closed: list[Any] = []
        #: ``(type, trans_id, data)`` of every packet, data unframed where it was framed.
        self.received: list[tuple[int, int, bytes]] = []
        self.stopped = False

    def _maybe_fail(self, where: str) -> None:
        if self.config.get("fail_in") == where:
            raise RuntimeError(f"injected fault in EchoVsp.{where}")

    def on_open(self, channel: Any) -> None:
        self._maybe_fail("on_open")
        self.channel = channel
        self.opened.append(channel)

    def on_packet(self, channel: Any, packet: Any) -> None:
        self._maybe_fail("on_packet")
        data = unframe(packet.payload)
        self.received.append((int(packet.type), packet.trans_id, data))
        if packet.type == PacketType.DATA_USING_GPA_DIRECT:
            channel.complete(packet.trans_id, frame(self._gpa_direct(channel, packet, data)))
        elif packet.completion_requested:
            channel.complete(packet.trans_id, frame(ECHO_PREFIX + data))

    @staticmethod
    def _gpa_direct(channel: Any, packet: Any, command: bytes) -> bytes:
        out = bytearray()
        for byte_count, byte_offset, pfns in packet.ranges:
            done = 0
            offset = byte_offset
            for pfn in pfns:
                chunk = min(4096 - offset, byte_count - done)
                if chunk <= 0:
                    break
                view = channel.guest_view((pfn << 12) + offset, chunk)
                if command[:1] == b"R":
                    out += view
                else:
                    fill = command[1:] or b"\xa5"
                    view[:] = (fill * (chunk // len(fill) + 1))[:chunk]
                done += chunk
                offset = 0
        return bytes(out)

    def on_close(self, channel: Any) -> None:
        self.closed.append(channel)

    def stop(self) -> None:
        self.stopped = True


class EchoVsc(Vsc):
    """Child half of the echo pair. ``fail_in`` names a method that raises (see ``failing``)."""

    interface_ids: ClassVar[tuple[uuid.UUID, ...]] = (ECHO_IF,)
    fail_in: ClassVar[str] = ""

    def __init__(self, device: Any) -> None:
        super().__init__(device)
        self.channel: Any = None
        self.probed = False
        self.removed = False
        #: Unframed data of packets the host sent on its own (not completions of ours).
        self.unsolicited: list[bytes] = []

    def _maybe_fail(self, where: str) -> None:
        if self.fail_in == where:
            raise RuntimeError(f"injected fault in {type(self).__name__}.{where}")

    def probe(self) -> None:
        self._maybe_fail("probe")
        self.probed = True

    def on_open(self, channel: Any) -> None:
        self._maybe_fail("on_open")
        self.channel = channel

    def on_packet(self, channel: Any, packet: Any) -> None:
        self._maybe_fail("on_packet")
        self.unsolicited.append(unframe(packet.payload))

    def remove(self) -> None:
        self.removed = True


class AltVsc(EchoVsc):
    """A second driver for the echo interface, used by per-VM overrides."""

    interface_ids: ClassVar[tuple[uuid.UUID, ...]] = (ALT_IF,)


def failing(where: str) -> type[EchoVsc]:
    """An :class:`EchoVsc` subclass whose ``where`` method raises."""
    return type(f"EchoVscFailing_{where}", (EchoVsc,), {"fail_in": where})


def request(loop: Loopback, channel: Any, data: bytes) -> bytes:
    """Send ``data`` as a request on a guest channel, run the machine, return the reply data."""
    replies: list[bytes] = []
    channel.send_request(frame(data), lambda packet: replies.append(unframe(packet.payload)))
    loop.run()
    if len(replies) != 1:
        raise AssertionError(f"{channel!r}: expected one completion, got {replies!r}")
    return replies[0]


def echo_vm(name: str = "vm", *, machine: Any = None, drivers: tuple[type[Vsc], ...] = (EchoVsc,),
            vsp: EchoVsp | None = None, **boot: Any) -> tuple[Loopback, EchoVsp, Any]:
    """Boot a VM (on ``machine`` if given) with one echo device open; returns
    ``(loop, vsp, guest device)``."""
    loop = boot_vm(list(drivers), name=name, machine=machine, **boot)
    vsp = vsp or EchoVsp()
    host_device = loop.offer("echo", vsp, ECHO_IF)
    return loop, vsp, loop.client.devices[host_device.relid]


def two_vms() -> tuple[Loopback, Loopback]:
    """Two VMs on one host, each with an open echo device."""
    machine = boot_host()
    a, _, _ = echo_vm("a", machine=machine)
    b, _, _ = echo_vm("b", machine=machine)
    return a, b


def assert_echo_works(loop: Loopback, relid: int = 1) -> None:
    """The echo device at ``relid`` of ``loop`` still round-trips a request."""
    device = loop.client.devices[relid]
    assert device.channel is not None, device
    assert not device.channel.closed, device.channel
    assert request(loop, device.channel, b"still alive") == ECHO_PREFIX + b"still alive"

