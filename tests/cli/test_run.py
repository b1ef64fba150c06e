"""``winhv run``, ``winhv bus`` and ``winhv vm`` through click's CliRunner: JSON parsed, exit
codes, one-line errors, and the ``--trace`` JSON lines."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from support.vmbus_io import ECHO_IF, EchoVsc, EchoVsp

from winhv.plugins.api import DiscoveryResult, PairDescription, discover, hookimpl
from winhv.plugins.cli import cli

ICS = ["heartbeat", "shutdown", "timesync", "kvp"]


class EchoPlugin:
    """Registers the test echo pair as ``echo``."""

    @hookimpl
    def winhv_vsp_vsc_pairs(self) -> tuple[PairDescription, ...]:
        return (PairDescription("echo", ECHO_IF, "1.0", EchoVsp, EchoVsc),)


@pytest.fixture(scope="module")
def plugins() -> DiscoveryResult:
    """The built-in plugin and the echo pair (no other installed distribution)."""
    builtin = [ep for ep in importlib.metadata.entry_points(group="winhv")
               if ep.name == "builtin"]
    result = discover(entry_points=builtin, plugins={"hosttests": EchoPlugin()})
    assert result.failures == []
    return result


def run(plugins: DiscoveryResult, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), obj=plugins, prog_name="winhv")


TWO_VMS = """
[host]
root_memory_mb = 512

[[vm]]
name = "a"
memory_mb = 32
ics = ["shutdown", "heartbeat"]
[[vm.device]]
pair = "echo"

[[vm]]
name = "b"
memory_mb = 32
[[vm.device]]
pair = "echo"
[[vm.device]]
pair = "echo"
"""

WITH_A_REFUSED_VM = TWO_VMS + """
[[vm]]
name = "huge"
memory_mb = 1024

[[host.service]]
name = "memory-reserve"
config = { reserve_mb = 600 }
"""


@pytest.fixture
def two_vms(tmp_path: Path) -> Path:
    path = tmp_path / "two.toml"
    path.write_text(TWO_VMS)
    return path


def test_run_json_reports_every_vm_of_the_default_driver_set(plugins: DiscoveryResult) -> None:
    result = run(plugins, "run", "--json", "--duration", "2")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["virtual_time_ns"] >= 2_000_000_000
    [vm] = doc["vms"]
    assert vm["name"] == "default"
    assert vm["state"] == "Running"
    assert vm["reason"] is None
    assert vm["errors"] == []
    assert vm["vmbus_version"] == "5.3"
    assert list(vm["ics"]) == ICS
    assert all(ic["open"] for ic in vm["ics"].values())
    assert vm["health"] == vm["ics"]["heartbeat"]["health"] == "ok"
    assert all(ic["state"] == "ready" and ic["framework"] == "3.0"
               for ic in vm["ics"].values())
    assert len(vm["bound"]) == len(vm["devices"]) == len(vm["channels"])
    assert vm["hypercalls"] > 0
    assert vm["packets_in"] == sum(c["packets_in"] for c in vm["channels"]) > 0
    assert vm["packets_out"] == sum(c["packets_out"] for c in vm["channels"]) > 0


def test_run_a_driver_set_file_exit_0_and_a_human_report(
    plugins: DiscoveryResult, two_vms: Path,
) -> None:
    result = run(plugins, "run", str(two_vms), "--duration", "1")
    assert result.exit_code == 0, result.output
    assert "VM a: Running" in result.stdout
    assert "VM b: Running" in result.stdout
    assert "2 of 2 devices bound" in result.stdout
    assert "IC shutdown" in result.stdout


def test_run_exits_1_with_one_line_naming_the_vm_that_failed(
    plugins: DiscoveryResult, tmp_path: Path,
) -> None:
    path = tmp_path / "refused.toml"
    path.write_text(WITH_A_REFUSED_VM)
    result = run(plugins, "run", str(path), "--json", "--duration", "1")
    assert result.exit_code == 1
    assert result.stderr == "Error: not running: huge\n"
    doc = json.loads(result.stdout)   # the report is still complete
    states = {vm["name"]: (vm["state"], vm["reason"]) for vm in doc["vms"]}
    assert states["a"] == ("Running", None)
    assert states["b"] == ("Running", None)
    assert states["huge"][0] == "Failed"
    assert "memory-reserve refused" in states["huge"][1]


def test_trace_writes_json_lines_of_every_kind_in_virtual_time_order(
    plugins: DiscoveryResult, tmp_path: Path,
) -> None:
    trace = tmp_path / "trace.jsonl"
    result = run(plugins, "run", "--duration", "3", "--trace", str(trace))
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert f"wrote {len(records)} trace records" in result.stderr
    kinds = {r["kind"] for r in records}
    assert kinds == {"hypercall", "message", "signal", "packet"}
    times = [r["t"] for r in records]
    assert times == sorted(times)
    assert times[-1] > 0
    first = records[0]
    assert (first["kind"], first["name"], first["status"]) == (
        "hypercall", "HvCallCreatePartition", "SUCCESS")
    messages = [r for r in records if r["kind"] == "message"]
    from_guest = [r for r in messages if r["partition"] != 1]
    # the guest's VMBus messages: message type 1 to the host's connection 1 or 4 (§3.4, §3.5)
    assert from_guest
    assert all(r["type"] == 1 and r["connection"] in (1, 4) for r in from_guest)
    packets = [r for r in records if r["kind"] == "packet"]
    # every packet one end sends the other end receives, the ones sent on open included
    # (a host IC's negotiation request leaves from inside its on_open)
    # (a reader sees the payload padded to 8 bytes, §4.3)
    sent = sorted((p["relid"], p["side"], p["type"], -(-p["size"] // 8) * 8)
                  for p in packets if p["direction"] == "out")
    received = sorted((p["relid"], {"host": "guest", "guest": "host"}[p["side"]], p["type"],
                       p["size"]) for p in packets if p["direction"] == "in")
    assert sent == received
    # both ends of the channels, from the boot on (the ICs negotiate first)
    assert {p["side"] for p in packets} == {"host", "guest"}
    assert {p["direction"] for p in packets} == {"in", "out"}
    assert min(p["t"] for p in packets) < 1_000_000_000


def test_bus_json_is_the_enumeration_tree_per_vm(
    plugins: DiscoveryResult, two_vms: Path,
) -> None:
    result = run(plugins, "bus", str(two_vms), "--json")
    assert result.exit_code == 0, result.output
    tree = json.loads(result.stdout)
    assert list(tree) == ["a", "b"]
    assert [d["driver"] for d in tree["b"]["devices"]] == ["EchoVsc", "EchoVsc"]
    for vm in tree.values():
        assert vm["state"] == "Running"
        relids = [d["relid"] for d in vm["devices"]]
        assert len(set(relids)) == len(relids)
        for d in vm["devices"]:
            assert d["state"] == "open"
            assert d["connection_id"] == 0x2000 | d["relid"]
            assert d["ring_size"] > 0
            assert d["interface_id"]
            assert d["instance_id"]
    assert str(ECHO_IF) in {d["interface_id"] for d in tree["a"]["devices"]}
    assert (tree["a"]["health"], tree["b"]["health"]) == ("ok", None)
    assert tree["a"]["ics"]["heartbeat"]["health"] == "ok"
    assert tree["a"]["ics"]["shutdown"]["message"] == "3.2"
    assert tree["b"]["ics"] == {}


def test_bus_human_tree(plugins: DiscoveryResult, two_vms: Path) -> None:
    result = run(plugins, "bus", str(two_vms))
    assert result.exit_code == 0, result.output
    assert "a (Running, VMBus 5.3, heartbeat ok)" in result.stdout
    assert "b (Running, VMBus 5.3)" in result.stdout    # no heartbeat IC, no health
    assert f"interface {ECHO_IF}" in result.stdout


def test_vm_list_and_inspect(plugins: DiscoveryResult, two_vms: Path) -> None:
    listed = run(plugins, "vm", "list", "--file", str(two_vms), "--json")
    assert listed.exit_code == 0, listed.output
    assert [(v["name"], v["state"], v["memory_mb"], len(v["devices"]))
            for v in json.loads(listed.stdout)] == [("a", "Off", 32, 3), ("b", "Off", 32, 2)]
    inspected = run(plugins, "vm", "inspect", "b", "--file", str(two_vms), "--json")
    assert inspected.exit_code == 0, inspected.output
    details: dict[str, Any] = json.loads(inspected.stdout)
    assert details["state"] == "Running"
    assert details["partition"]["memory_mb"] == 32
    assert details["partition"]["vps"] == 1
    assert details["partition"]["hypercalls"] > 0
    assert [c["open"] for c in details["channels"]] == [True, True]
    assert all(set(c["rings"]) >= {"inbound", "outbound"} for c in details["channels"])
    missing = run(plugins, "vm", "inspect", "nope", "--file", str(two_vms))
    assert missing.exit_code == 1
    assert missing.stderr == "Error: no VM named 'nope' (known: a, b)\n"


def test_vm_do_runs_the_actions_in_order(plugins: DiscoveryResult, two_vms: Path) -> None:
    result = run(plugins, "vm", "do", "a", "start", "pause", "resume", "save", "start",
                 "stop", "wait=1", "--file", str(two_vms), "--json")
    assert result.exit_code == 0, result.output
    steps = json.loads(result.stdout)
    assert [(s["action"], s["state"]) for s in steps] == [
        ("start", "Running"), ("pause", "Paused"), ("resume", "Running"), ("save", "Saved"),
        ("start", "Running"), ("stop", "Off"), ("wait=1", "Off")]
    assert [s["t"] for s in steps] == sorted(s["t"] for s in steps)


def test_vm_do_an_illegal_action_is_one_line_naming_the_state(
    plugins: DiscoveryResult, two_vms: Path,
) -> None:
    result = run(plugins, "vm", "do", "b", "start", "resume", "--file", str(two_vms))
    assert result.exit_code == 1
    assert result.stdout == "start        -> Running\n"
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("Error: VM 'b': cannot resume while Running")
    unknown = run(plugins, "vm", "do", "b", "explode", "--file", str(two_vms))
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith("Error: unknown action 'explode': expected one of")


def test_vm_inspect_reports_the_ics_and_heartbeat_health(
    plugins: DiscoveryResult, two_vms: Path,
) -> None:
    result = run(plugins, "vm", "inspect", "a", "--file", str(two_vms), "--json")
    assert result.exit_code == 0, result.output
    details = json.loads(result.stdout)
    assert details["health"] == "ok"
    assert set(details["ics"]) == {"shutdown", "heartbeat"}
    assert all(ic["open"] for ic in details["ics"].values())
    human = run(plugins, "vm", "inspect", "a", "--file", str(two_vms))
    assert "heartbeat health: ok" in human.stdout


def test_vm_do_stop_without_a_shutdown_ic_ends_off_with_the_hard_stop(
    plugins: DiscoveryResult, two_vms: Path,
) -> None:
    result = run(plugins, "vm", "do", "b", "start", "stop", "--file", str(two_vms), "--json")
    assert result.exit_code == 0, result.output
    start, stop = json.loads(result.stdout)
    assert (stop["state"], stop["stop_mode"]) == ("Off", "hard")
    assert stop["reason"] == "the VM has no shutdown IC: hard stop after 30 s"
    assert stop["t"] - start["t"] == 30_000_000_000
    graceful = run(plugins, "vm", "do", "a", "start", "stop", "--file", str(two_vms))
    assert graceful.stdout.splitlines()[-1] == "stop         -> Off (graceful stop)"


def test_vm_do_kvp_of_a_running_vm(plugins: DiscoveryResult) -> None:
    result = run(plugins, "vm", "do", "default", "start", "kvp-set:Color=blue",
                 "kvp-set-int:Count=0x10", "kvp-get:Color", "kvp-get:Nope", "kvp-list",
                 "kvp-delete:Color", "kvp-delete:Color", "kvp-list", "--json")
    assert result.exit_code == 0, result.output
    steps = json.loads(result.stdout)
    assert [s.get("value") for s in steps[1:5]] == ["blue", 16, "blue", None]
    assert steps[5]["items"] == [["Color", "blue"], ["Count", "16"]]
    assert [s["deleted"] for s in steps[6:8]] == [True, False]
    assert steps[8]["items"] == [["Count", "16"]]
    assert {s["state"] for s in steps} == {"Running"}
    auto = run(plugins, "vm", "do", "default", "start", "kvp-list", "--pool", "auto")
    assert "  FullyQualifiedDomainName = default" in auto.stdout


@pytest.mark.parametrize(("args", "error"), [
    (["kvp-get:k"], "Error: VM 'default': cannot read a KVP item while Off (the VM must be "
                    "Running)"),
    (["start", "kvp-get:k", "--pool", "nowhere"], "Error: KVP pool: found 'nowhere', "
                                                  "expected one of external (0)"),
    (["start", "kvp-set:novalue"], "Error: 'kvp-set:novalue': expected kvp-set:KEY=VALUE"),
    (["start", "kvp-set-int:n=ten"], "Error: 'kvp-set-int:n=ten': 'ten' is not an integer"),
    (["start", f"kvp-set:{'k' * 300}=v"], "Error: KVP key"),
])
def test_vm_do_kvp_errors_are_one_line(plugins: DiscoveryResult, args: list[str],
                                       error: str) -> None:
    result = run(plugins, "vm", "do", "default", *args)
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(error), result.stderr


def test_vm_do_restart_reboots_through_the_shutdown_ic_or_resets_after_the_timeout(
    plugins: DiscoveryResult, two_vms: Path,
) -> None:
    graceful = run(plugins, "vm", "do", "a", "start", "restart", "restart-force", "--file",
                   str(two_vms), "--json")
    assert graceful.exit_code == 0, graceful.output
    steps = json.loads(graceful.stdout)
    assert [(s["state"], s["restarts"], s["reason"]) for s in steps] == [
        ("Running", 0, None), ("Running", 1, None), ("Running", 2, None)]
    reset = run(plugins, "vm", "do", "b", "start", "restart", "--file", str(two_vms), "--json")
    start, restart = json.loads(reset.stdout)
    assert (restart["state"], restart["restarts"]) == ("Running", 1)
    assert restart["reason"] == "the VM has no shutdown IC: hard stop after 30 s"
    assert restart["t"] - start["t"] == 30_000_000_000
