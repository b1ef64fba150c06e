"""The winhv-echo plugin: an echo pair, a ping IC, a clock VID service and an ``echo`` command.

Written only against ``winhv.plugins.api``, as an outside distribution must be.
"""

from __future__ import annotations

import uuid
from typing import Any

import click

from winhv.plugins.api import (
    ConfigField,
    IcDescription,
    OfferSpec,
    PairDescription,
    VidService,
    VidServiceDescription,
    Vsc,
    Vsp,
    hookimpl,
)

#: Made-up interface type GUIDs (not Hyper-V's).
ECHO_INTERFACE = uuid.UUID("6f1c2a59-4b9e-4f0e-9d1e-8c3b7a5e0e01")
PING_INTERFACE = uuid.UUID("6f1c2a59-4b9e-4f0e-9d1e-8c3b7a5e0e02")

#: Lifecycle notifications received, for the tests to inspect.
EVENTS: list[tuple[str, Any]] = []


class EchoVsp(Vsp):
    """Sends every packet back on the channel it came from, ``repeat`` times."""

    interface_id = ECHO_INTERFACE

    def on_packet(self, channel: Any, packet: Any) -> None:
        for _ in range(self.config["repeat"]):
            channel.send(self.config["prefix"].encode() + bytes(packet))


class EchoVsc(Vsc):
    """Says hello when its channel opens and collects what comes back."""

    interface_ids = (ECHO_INTERFACE,)

    def __init__(self, device: Any) -> None:
        super().__init__(device)
        self.received: list[bytes] = []

    def on_open(self, channel: Any) -> None:
        channel.send(b"hello")

    def on_packet(self, channel: Any, packet: Any) -> None:
        self.received.append(bytes(packet))


class PingHost(Vsp):
    """Host half of the ping IC: a VSP whose channel is a pipe, as every IC's is."""

    interface_id = PING_INTERFACE

    def offer(self) -> OfferSpec:
        return OfferSpec(pipe_mode=True)


class PingGuest(Vsc):
    """Guest half of the ping IC."""

    interface_ids = (PING_INTERFACE,)


class Clock(VidService):
    """A VID service that ticks."""


@hookimpl
def winhv_vsp_vsc_pairs() -> list[PairDescription]:
    return [
        PairDescription(
            name="echo",
            interface_id=ECHO_INTERFACE,
            version="1.2",
            vsp=EchoVsp,
            vsc=EchoVsc,
            config=(
                ConfigField("repeat", int, default=1, minimum=1, maximum=8,
                            doc="How many copies of each packet to send back."),
                ConfigField("prefix", str, default="", doc="Bytes put before each copy."),
                ConfigField("mode", str, default="sync", choices=("sync", "async")),
                ConfigField("log", "path", doc="Where to log packets (none by default)."),
            ),
            summary="Sends every packet back.",
        )
    ]


@hookimpl
def winhv_integration_components() -> list[IcDescription]:
    return [
        IcDescription(name="ping", interface_id=PING_INTERFACE, host=PingHost, guest=PingGuest,
                      versions=("1.0",), config=(ConfigField("interval_ms", int, default=1000,
                                                             minimum=1),))
    ]


@hookimpl
def winhv_vid_services() -> list[VidServiceDescription]:
    return [VidServiceDescription(name="clock", service=Clock, summary="Ticks.")]


@hookimpl
def winhv_cli_commands(cli: click.Group) -> None:
    @cli.command("echo")
    @click.argument("words", nargs=-1)
    def echo(words: tuple[str, ...]) -> None:
        """Print WORDS back."""
        click.echo(" ".join(words))


@hookimpl
def winhv_device_bound(vm: Any, device: Any) -> None:
    EVENTS.append(("bound", device))
