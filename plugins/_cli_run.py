"""``winhv run``, ``winhv bus`` and ``winhv vm``: boot a host from a driver set and drive it.

Every command boots a fresh host in this process (virtual time, deterministic), does its job
and reports; nothing persists between invocations.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import click

from winhv.drivers.vmms import STOP_TIMEOUT_S, Host, IllegalTransition, VmmsError, VmState

from ._driverset import DriverSet, load_default_driver_set, load_driver_set
from ._hostbuild import boot_driver_set
from ._trace import Tracer

__all__ = ["register"]

NS = 1_000_000_000


def _driver_set(ctx: click.Context, file: Path | None) -> DriverSet:
    from .cli import _warn_failures, get_discovery

    discovery = get_discovery(ctx)
    _warn_failures(discovery)
    if file is None:
        return load_default_driver_set(discovery.registry)
    return load_driver_set(file, discovery.registry)


def _boot(ctx: click.Context, file: Path | None, extra_notify: Any = None) -> Host:
    from .cli import get_discovery

    return boot_driver_set(_driver_set(ctx, file), get_discovery(ctx),
                           extra_notify=extra_notify)


class _Progress:
    """Progress on stderr, at most once a second, only for runs longer than a second."""

    def __init__(self, host: Host, enabled: bool) -> None:
        self.host = host
        self.enabled = enabled
        self.start = time.monotonic()
        self.last = self.start

    def __call__(self, now_ns: int) -> None:
        if not self.enabled:
            return
        wall = time.monotonic()
        if wall - self.last >= 1.0:
            self.last = wall
            vms = self.host.vmms.list()
            running = sum(1 for vm in vms if vm.state is VmState.RUNNING)
            click.echo(f"winhv: {wall - self.start:.0f} s: virtual t={now_ns / NS:.1f} s, "
                       f"{running}/{len(vms)} VMs running", err=True)


def _ic_report(host: Host, vm: Any) -> dict[str, Any]:
    """Each IC as the management API reports it, without the keys that are ``None``."""
    return {name: {k: v for k, v in status.items() if v is not None}
            for name, status in host.vmms.ics(vm.name).items()}


def vm_report(host: Host, vm: Any) -> dict[str, Any]:
    """One VM's report: state, devices, ICs, channel and hypercall counters, errors."""
    details = host.vmms.inspect(vm.name)
    channels = details.get("channels", [])
    return {
        "name": vm.name,
        "state": str(vm.state),
        "reason": vm.reason,
        "vmbus_version": details.get("vmbus_version"),
        "devices": [{"name": d.name, "type": d.type_name, "kind": d.kind} for d in
                    vm.spec.devices],
        "bound": [d for d in details.get("devices", []) if d.get("state") == "open"],
        "health": details.get("health"),
        "ics": _ic_report(host, vm),
        "channels": channels,
        "packets_in": sum(c.get("packets_in", 0) for c in channels),
        "packets_out": sum(c.get("packets_out", 0) for c in channels),
        "hypercalls": (details.get("partition") or {}).get("hypercalls", 0),
        "errors": details.get("errors", []),
    }


def _print_report(report: dict[str, Any]) -> None:
    click.echo(f"VM {report['name']}: {report['state']}"
               + (f" ({report['reason']})" if report["reason"] else ""))
    click.echo(f"  VMBus {report['vmbus_version'] or '-'}, {len(report['bound'])} of "
               f"{len(report['devices'])} devices bound, {report['hypercalls']} hypercalls, "
               f"packets in/out {report['packets_in']}/{report['packets_out']}")
    for channel in report["channels"]:
        state = "open" if channel["open"] else "closed"
        click.echo(f"  relid {channel['relid']:>3} {channel['name']:<16} {state:<7}"
                   f" in {channel['packets_in']:<6} out {channel['packets_out']}")
    if report["health"] is not None:
        click.echo(f"  heartbeat health: {report['health']}")
    for name, ic in report["ics"].items():
        extra = ", ".join(f"{k}={v}" for k, v in ic.items() if k in _IC_SHOWN)
        click.echo(f"  IC {name:<14} {'open' if ic['open'] else 'closed'}"
                   + (f" ({extra})" if extra else ""))
    for error in report["errors"]:
        click.echo(f"  error: {error}")


#: The IC status keys the human report shows (``--json`` has them all).
_IC_SHOWN = ("state", "framework", "message", "health", "failure", "close_reason", "error")


def _start_all(host: Host) -> None:
    for vm in host.vmms.list():
        host.vmms.start(vm.name)


def run_command_impl(ctx: click.Context, file: Path | None, duration: float, as_json: bool,
                     trace: Path | None) -> None:
    from .cli import _emit_json, _fail

    tracers: list[Tracer] = []

    def on_event(event: str, **details: Any) -> None:
        # Tap each channel as it opens, so the boot's packets are traced too.
        if not tracers:
            return
        if event == "bus_created":
            tracers[0].tap_bus(details["vm"], details["devices"], details["client"])
        elif event == "channel_opened":
            tracers[0].tap_channels()

    host = _boot(ctx, file, on_event if trace is not None else None)
    with contextlib.ExitStack() as stack:
        tracer = None
        if trace is not None:
            tracer = Tracer(host, stack.enter_context(trace.open("w", encoding="utf-8")))
            tracers.append(tracer)
        progress = _Progress(host, enabled=True)
        _start_all(host)

        def step(now: int) -> None:
            if tracer is not None:
                tracer.tap_channels()
            progress(now)

        host.settle()
        step(host.scheduler.now)
        host.run_for(int(duration * NS), progress=step,
                     until=lambda: all(vm.state in (VmState.OFF, VmState.FAILED)
                                       for vm in host.vmms.list()))
        reports = [vm_report(host, vm) for vm in host.vmms.list()]
        if tracer is not None:
            click.echo(f"winhv: wrote {tracer.records} trace records to {trace}", err=True)
    if as_json:
        _emit_json({"virtual_time_ns": host.scheduler.now, "vms": reports})
    else:
        for report in reports:
            _print_report(report)
    bad = [r["name"] for r in reports if r["state"] != str(VmState.RUNNING)]
    if bad:
        _fail(f"not running: {', '.join(bad)}")


def register(cli: click.Group) -> None:
    """Add ``run``, ``bus`` and ``vm`` to the ``winhv`` group."""
    from .cli import _emit_json, _fail, json_option

    file_argument = click.argument("file", required=False, default=None,
                                   type=click.Path(dir_okay=False, exists=True,
                                                   path_type=Path))

    @cli.command("run")
    @file_argument
    @click.option("--duration", type=click.FloatRange(min=0), default=10.0, show_default=True,
                  help="Seconds of virtual time to run after boot (stops early if every VM "
                       "is off or failed).")
    @click.option("--trace", type=click.Path(dir_okay=False, path_type=Path),
                  help="Write every hypercall, SynIC message, signal and packet as JSON lines.")
    @json_option
    @click.pass_context
    def run_command(ctx: click.Context, file: Path | None, duration: float, as_json: bool,
                    trace: Path | None) -> None:
        """Boot a host and every VM of FILE (default: the built-in driver set), run, report."""
        run_command_impl(ctx, file, duration, as_json, trace)

    @cli.command("bus")
    @file_argument
    @json_option
    @click.pass_context
    def bus_command(ctx: click.Context, file: Path | None, as_json: bool) -> None:
        """Print each VM's VMBus enumeration tree (offers, GUIDs, relids, drivers, rings)."""
        host = _boot(ctx, file)
        _start_all(host)
        host.settle()
        trees = {}
        for vm in host.vmms.list():
            worker = vm.worker
            details = host.vmms.inspect(vm.name)
            trees[vm.name] = {
                "state": str(vm.state),
                "vmbus_version": details.get("vmbus_version"),
                "health": details.get("health"),
                "ics": _ic_report(host, vm),
                "devices": worker.client.tree() if worker and worker.client else [],
            }
        if as_json:
            _emit_json(trees)
            return
        for name, tree in trees.items():
            health = f", heartbeat {tree['health']}" if tree["health"] is not None else ""
            click.echo(f"{name} ({tree['state']}, VMBus {tree['vmbus_version'] or '-'}"
                       f"{health})")
            for d in tree["devices"]:
                click.echo(f"  relid {d['relid']:>3}  conn {d['connection_id']:#06x}  "
                           f"{d['state']:<8} {d['driver'] or '(no driver)'}")
                click.echo(f"      interface {d['interface_id']}  instance {d['instance_id']}"
                           f"  ring {d['ring_size']} B" + (f"  error: {d['error']}"
                                                           if d["error"] else ""))

    @cli.group("vm")
    def vm_group() -> None:
        """Drive the management API (VMMS) on a host booted from a driver set."""

    @vm_group.command("list")
    @click.option("--file", "file", type=click.Path(dir_okay=False, exists=True,
                                                   path_type=Path))
    @json_option
    @click.pass_context
    def vm_list(ctx: click.Context, file: Path | None, as_json: bool) -> None:
        """The VMs of the driver set: memory, processors, devices, state."""
        host = _boot(ctx, file)
        rows = [{"name": vm.name, "state": str(vm.state), "memory_mb": vm.spec.memory_mb,
                 "processors": vm.spec.processors,
                 "devices": [d.name for d in vm.spec.devices]} for vm in host.vmms.list()]
        if as_json:
            _emit_json(rows)
        else:
            for row in rows:
                click.echo(f"{row['name']:<16} {row['state']:<8} {row['memory_mb']} MiB "
                           f"{row['processors']} VP  {', '.join(row['devices'])}")

    @vm_group.command("inspect")
    @click.argument("name")
    @click.option("--file", "file", type=click.Path(dir_okay=False, exists=True,
                                                   path_type=Path))
    @json_option
    @click.pass_context
    def vm_inspect(ctx: click.Context, name: str, file: Path | None, as_json: bool) -> None:
        """Start VM NAME, let it boot, and print everything VMMS knows about it."""
        host = _boot(ctx, file)
        try:
            host.vmms.start(name)
        except KeyError as exc:
            _fail(str(exc.args[0]))
        host.settle()
        details = host.vmms.inspect(name)
        if as_json:
            _emit_json(details)
        else:
            _print_report(vm_report(host, host.vmms.get(name)))

    @vm_group.command("do")
    @click.argument("name")
    @click.argument("actions", nargs=-1, required=True)
    @click.option("--file", "file", type=click.Path(dir_okay=False, exists=True,
                                                   path_type=Path))
    @click.option("--pool", default="external", show_default=True,
                  help="KVP pool of the kvp-* actions: external, guest, auto, auto-external, "
                       "auto-internal or 0-4.")
    @json_option
    @click.pass_context
    def vm_do(ctx: click.Context, name: str, actions: tuple[str, ...], file: Path | None,
              pool: str, as_json: bool) -> None:
        """Apply ACTIONS to VM NAME in order and print the state after each.

        \b
        Lifecycle: start, stop (graceful through the shutdown IC; without one, or if the
        guest refuses, the hard stop after the timeout), stop-force, restart (a reboot
        through the shutdown IC, then Running again), restart-force, pause, resume, save,
        reset, wait=SECONDS (virtual).
        KVP of the running VM (--pool): kvp-set:KEY=VALUE, kvp-set-int:KEY=NUMBER,
        kvp-get:KEY, kvp-delete:KEY, kvp-list.
        """
        host = _boot(ctx, file)
        steps = []
        for action in actions:
            try:
                step = _vm_action(host, name, action, pool)
            except (IllegalTransition, VmmsError, KeyError, ValueError) as exc:
                _fail(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc))
            vm = host.vmms.get(name)
            step = {"action": action, "state": str(vm.state), "reason": vm.reason,
                    "stop_mode": vm.stop_mode, "restarts": vm.restarts,
                    "health": host.vmms.health(name),
                    "t": host.scheduler.now, **step}
            steps.append(step)
            if not as_json:
                click.echo(_step_line(step))
        if as_json:
            _emit_json(steps)


#: The lifecycle actions of ``winhv vm do`` that take no argument.
_LIFECYCLE = ("pause", "reset", "restart", "restart-force", "resume", "save", "start", "stop",
              "stop-force")
_KVP_ACTIONS = ("kvp-delete:KEY", "kvp-get:KEY", "kvp-list", "kvp-set-int:KEY=NUMBER",
                "kvp-set:KEY=VALUE")


def _vm_action(host: Host, name: str, action: str, pool: str) -> dict[str, Any]:
    """Carry out one ``winhv vm do`` action; returns what the step adds to its report."""
    vmms = host.vmms
    verb, _, argument = action.partition(":")
    if action.startswith("wait="):
        try:
            seconds = float(action[5:])
        except ValueError:
            raise ValueError(f"{action!r}: expected wait=SECONDS") from None
        host.run_for(int(seconds * NS))
        return {}
    if action in _LIFECYCLE:
        if action.endswith("-force"):
            getattr(vmms, action.removesuffix("-force"))(name, force=True)
        else:
            getattr(vmms, action)(name)
        host.settle()
        vm = vmms.get(name)
        if action in ("stop", "restart") and vm.state is VmState.STOPPING:
            # The guest has until the stop's timeout; run the clock until the VM is off.
            host.run_for((STOP_TIMEOUT_S + 1) * NS,
                         until=lambda: vm.state is not VmState.STOPPING)
            host.settle()
        return {}
    if verb in ("kvp-set", "kvp-set-int"):
        key, sep, value = argument.partition("=")
        if not sep or not key:
            raise ValueError(f"{action!r}: expected {verb}:KEY=VALUE")
        if verb == "kvp-set-int":
            try:
                number: str | int = int(value, 0)
            except ValueError:
                raise ValueError(f"{action!r}: {value!r} is not an integer") from None
        else:
            number = value
        vmms.kvp_set(name, key, number, pool=pool)
        return {"pool": pool, "key": key, "value": number}
    if verb in ("kvp-get", "kvp-delete") and argument:
        if verb == "kvp-get":
            return {"pool": pool, "key": argument,
                    "value": vmms.kvp_get(name, argument, pool=pool)}
        return {"pool": pool, "key": argument,
                "deleted": vmms.kvp_delete(name, argument, pool=pool)}
    if action == "kvp-list":
        return {"pool": pool, "items": [list(item) for item in vmms.kvp_items(name, pool=pool)]}
    raise ValueError(f"unknown action {action!r}: expected one of {', '.join(_LIFECYCLE)}, "
                     f"wait=SECONDS, {', '.join(_KVP_ACTIONS)}")


def _step_line(step: dict[str, Any]) -> str:
    line = f"{step['action']:<12} -> {step['state']}"
    notes = [step["reason"]] if step["reason"] else []
    if step["action"].startswith(("stop", "restart")) and step["stop_mode"] and not any(
            step["stop_mode"] in note for note in notes):
        notes.append(f"{step['stop_mode']} stop")
    if notes:
        line += f" ({'; '.join(notes)})"
    if "items" in step:
        line += "".join(f"\n  {key} = {value}" for key, value in step["items"])
    elif "deleted" in step:
        line += f": {step['key']} {'deleted' if step['deleted'] else 'was not there'}"
    elif "value" in step:
        line += f": {step['key']} = {step['value'] if step['value'] is not None else '(none)'}"
    return line
