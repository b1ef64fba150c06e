"""The ``winhv`` command line through click's CliRunner: JSON on stdout, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from winhv._calls import HYPERCALLS
from winhv.drivers.hv.calls import IMPLEMENTED_HYPERCALLS
from winhv.plugins.api import DiscoveryResult, discover
from winhv.plugins.cli import EXIT_INTERNAL, cli, main

_BROKEN = "import winhv_no_such_module_anywhere\n"


def run(*args: str, obj: DiscoveryResult | None = None, **kwargs: Any) -> Result:
    return CliRunner().invoke(cli, list(args), obj=obj, prog_name="winhv", **kwargs)


@pytest.fixture
def plugins(echo_installed: Any, make_distribution: Any, entry_points_of: Any) -> DiscoveryResult:
    """The built-in plugin, winhv-echo, and one plugin that fails to import."""
    make_distribution("zz-broken", "0.3", modules={"broken_cli_mod": _BROKEN},
                      entry_points={"broken": "broken_cli_mod"})
    return discover(entry_points=entry_points_of("winhv", "winhv-echo", "zz-broken"))


def test_plugins_json_lists_pairs_ics_services_sources_and_failures(
    plugins: DiscoveryResult,
) -> None:
    result = run("plugins", "--json", obj=plugins)
    assert result.exit_code == 0
    assert result.stderr == ""
    doc = json.loads(result.stdout)
    assert [(p["distribution"], p["entry_point"]) for p in doc["plugins"]] == [
        ("winhv", "builtin"), ("winhv-echo", "echo")]
    # the built-in distribution (winhv) registers its own pairs, ICs and services beside these
    [echo] = [p for p in doc["pairs"] if p["distribution"] != "winhv"]
    assert echo["name"] == "echo"
    assert echo["interface_id"] == "6f1c2a59-4b9e-4f0e-9d1e-8c3b7a5e0e01"
    assert (echo["distribution"], echo["distribution_version"]) == ("winhv-echo", "1.2.0")
    assert echo["vsp"] == "winhv_echo.plugin:EchoVsp"
    assert echo["config"][0] == {"name": "repeat", "type": "int", "default": 1,
                                 "required": False, "minimum": 1, "maximum": 8, "choices": None,
                                 "doc": "How many copies of each packet to send back."}
    assert [ic["name"] for ic in doc["ics"] if ic["distribution"] != "winhv"] == ["ping"]
    assert [s["name"] for s in doc["vid_services"] if s["distribution"] != "winhv"] == ["clock"]
    [failure] = doc["failures"]
    assert (failure["entry_point"], failure["distribution"], failure["version"],
            failure["stage"]) == ("broken", "zz-broken", "0.3", "import")
    assert "No module named 'winhv_no_such_module_anywhere'" in failure["error"]


def test_plugins_human_listing_shows_guids_distributions_and_failures(
    plugins: DiscoveryResult,
) -> None:
    result = run("plugins", obj=plugins)
    assert result.exit_code == 0
    assert "{6f1c2a59-4b9e-4f0e-9d1e-8c3b7a5e0e01}  [winhv-echo 1.2.0]" in result.stdout
    assert "failed plugins:" in result.stdout
    assert "[zz-broken 0.3] import: cannot import" in result.stdout


def test_plugins_strict_exits_1_with_one_line_when_a_plugin_failed(
    plugins: DiscoveryResult,
) -> None:
    result = run("plugins", "--strict", "--json", obj=plugins)
    assert result.exit_code == 1
    json.loads(result.stdout)  # the listing is still complete JSON
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("Error: 1 plugin(s) failed to load; first: plugin 'broken'")


def test_check_valid_file_json(plugins: DiscoveryResult, tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text('[host]\nvmbus_version = "WIN10"\n[[vm]]\nname = "a"\nmemory_mb = 64\n'
                    'ics = ["ping"]\n[[vm.device]]\npair = "echo"\nconfig = { repeat = 3 }\n')
    result = run("check", str(path), "--json", obj=plugins)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["valid"] is True
    assert doc["host"]["vmbus_version"] == "WIN10"
    assert doc["vms"][0]["devices"][0] == {
        "name": "echo0", "pair": "echo", "interface_id": "6f1c2a59-4b9e-4f0e-9d1e-8c3b7a5e0e01",
        "config": {"repeat": 3, "prefix": "", "mode": "sync", "log": None}}
    # the failed plugin is a warning on stderr, never mixed into the JSON
    assert result.stderr.startswith("warning: plugin 'broken' from zz-broken 0.3: import:")


def test_check_invalid_file_exits_1_with_one_line_and_json_error(
    plugins: DiscoveryResult, tmp_path: Path,
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[vm]]\nname = "a"\nmemory_mb = 64\n[[vm.device]]\npair = "ecko"\n')
    result = run("check", str(path), "--json", obj=plugins)
    assert result.exit_code == 1
    expected = (f"{path}: vm[0].device[0].pair: found unknown pair 'ecko', expected one of "
                "echo, storage (did you mean 'echo'?)")
    assert result.stderr.splitlines()[-1] == f"Error: {expected}"
    assert "Traceback" not in result.output
    doc = json.loads(result.stdout)
    assert doc["valid"] is False
    assert doc["error"]["message"] == expected
    assert doc["error"]["path"] == "vm[0].device[0].pair"


def test_check_human_output_and_stdin(plugins: DiscoveryResult) -> None:
    result = run("check", "-", obj=plugins, input='[[vm]]\nname = "a"\nmemory_mb = 64\n')
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "<stdin>: ok, 1 VM(s)",
        "  a: 64 MiB, 1 VP(s), 0 device(s), 0 IC(s), 0 driver override(s)"]


def test_check_missing_file_and_usage_errors(tmp_path: Path) -> None:
    result = run("check", str(tmp_path / "nope.toml"), obj=discover(entry_points=[]))
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {tmp_path / 'nope.toml'}: found a file that cannot be read "
                             "(No such file or directory), expected a readable TOML file\n")
    assert run("check").exit_code == 2
    assert run("no-such-command", obj=discover(entry_points=[])).exit_code == 2


def test_hypercalls_json_is_the_abi_table_with_implemented_flags() -> None:
    result = run("hypercalls", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    rows = {row["code"]: row for row in doc["hypercalls"]}
    assert set(rows) == set(HYPERCALLS)
    assert rows[0x005C]["name"] == "HvCallPostMessage"
    assert rows[0x005C]["implemented"] is True
    assert rows[0x0003]["class"] == "rep"
    assert doc["implemented"] == len(IMPLEMENTED_HYPERCALLS & set(HYPERCALLS))
    only = json.loads(run("hypercalls", "--json", "--implemented").stdout)["hypercalls"]
    assert {r["code"] for r in only} == IMPLEMENTED_HYPERCALLS & set(HYPERCALLS)


def test_hypercalls_table_on_stdout_and_summary_on_stderr() -> None:
    result = run("hypercalls", "--implemented")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0].split() == ["code", "name", "class", "fast",
                                                     "implemented"]
    assert "0x005D  HvCallSignalEvent" in result.stdout
    assert result.stderr.endswith("call codes implemented\n")


def test_a_plugin_adds_a_command_found_through_real_discovery(echo_installed: Any) -> None:
    result = run("echo", "hello", "there")
    assert (result.exit_code, result.stdout) == (0, "hello there\n")
    assert "echo" in run("--help").stdout


def test_a_plugin_command_cannot_shadow_a_builtin_and_a_bug_is_one_line() -> None:
    class Plugin:
        def winhv_cli_commands(self, cli: click.Group) -> None:
            @cli.command("check")
            def fake_check() -> None: ...

            @cli.command("boom")
            def boom() -> None:
                raise RuntimeError("kaput")

    plugins = discover(entry_points=[], plugins={"p": Plugin()})
    result = run("boom", obj=plugins)
    assert result.exit_code == EXIT_INTERNAL
    assert result.stderr.splitlines() == [
        "warning: a plugin command named 'check' is ignored: a built-in command has that name",
        "Error: internal error: RuntimeError: kaput (set WINHV_TRACEBACK=1 for the traceback)"]


def test_a_plugin_failing_to_add_commands_is_a_warning() -> None:
    class Plugin:
        def winhv_cli_commands(self, cli: click.Group) -> None:
            raise ValueError("no commands today")

    result = run("plugins", "--json", obj=discover(entry_points=[], plugins={"p": Plugin()}))
    assert result.exit_code == 0
    json.loads(result.stdout)
    result = run("nothing", obj=discover(entry_points=[], plugins={"p": Plugin()}))
    assert "warning: plugin 'p' failed to add its commands: ValueError: no commands today" in (
        result.stderr)


@pytest.mark.parametrize(("words", "cword", "expected"), [
    ("winhv hyp", "1", "plain,hypercalls"),
    ("winhv check --j", "2", "plain,--json"),
    ("winhv plugins --st", "2", "plain,--strict"),
])
def test_shell_completion(words: str, cword: str, expected: str) -> None:
    env = {"_WINHV_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": cword}
    result = run(env=env, obj=discover(entry_points=[]))
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [expected]


def test_shell_completion_offers_plugin_commands(echo_installed: Any) -> None:
    env = {"_WINHV_COMPLETE": "bash_complete", "COMP_WORDS": "winhv e", "COMP_CWORD": "1"}
    assert run(env=env).stdout.splitlines() == ["plain,echo"]


def test_bash_completion_script_is_generated() -> None:
    result = run(env={"_WINHV_COMPLETE": "bash_source"})
    assert result.exit_code == 0
    assert "_winhv_completion" in result.stdout


def test_main_is_the_console_entry_point(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["hypercalls", "--json"])
    assert info.value.code == 0
    assert json.loads(capsys.readouterr().out)["hypercalls"]


def test_a_third_party_pair_and_ic_run_in_a_vm_through_the_command_line(
        echo_installed: Any, tmp_path: Path) -> None:
    """Installed winhv-echo used as an outside distribution is: a driver set names its pair
    (with configuration) and its IC, and ``winhv run`` boots them in a VM."""
    path = tmp_path / "echo.toml"
    path.write_text('[[vm]]\nname = "vm"\nmemory_mb = 64\nics = ["ping"]\n'
                    '[[vm.device]]\npair = "echo"\nconfig = { repeat = 3, prefix = "> " }\n')
    result = CliRunner().invoke(cli, ["run", str(path), "--duration", "1", "--json"])
    assert result.exit_code == 0, result.output
    [vm] = json.loads(result.stdout)["vms"]
    assert vm["state"] == "Running"
    assert vm["errors"] == []
    bound = {b["driver"]: b["state"] for b in vm["bound"]}
    assert bound == {"EchoVsc": "open", "PingGuest": "open"}
    echo = next(c for c in vm["channels"] if c["name"] == "echo0")
    assert (echo["packets_in"], echo["packets_out"]) == (1, 3)   # hello, echoed 3 times



@pytest.mark.parametrize("args", [["plugins", "--json"], ["check", "-"], ["plugins"]])
def test_a_failed_plugin_is_reported_once_on_stderr(args: list[str], make_distribution: Any,
                                                    tmp_path: Path) -> None:
    """As a console script (no pytest log handlers): discovery's log record of the failure is
    not printed beside the command's own report of it."""
    site = make_distribution("zz-broken", "0.3", modules={"broken_mod": _BROKEN},
                             entry_points={"broken": "broken_mod"})
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-c", "from winhv.plugins.cli import main; main()",
                           *args], input='[[vm]]\nname = "a"\nmemory_mb = 64\n', env=env,
                          capture_output=True, text=True, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    error = "ModuleNotFoundError: No module named 'winhv_no_such_module_anywhere'"
    if args[0] == "plugins":   # the listing says it, on stdout
        assert done.stderr == ""
        assert error in done.stdout.split("failed plugins:\n" if len(args) == 1
                                          else '"failures"')[1]
    else:
        assert done.stderr.splitlines() == [
            f"warning: plugin 'broken' from zz-broken 0.3: import: cannot import 'broken_mod': "
            f"{error}"]


def test_a_per_vm_driver_override_binds_the_named_vsc_in_that_vm_only(
        echo_installed: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Binding is by GUID; ``[vm.drivers]`` replaces the VSC for one VM: booted, the guest of
    'custom' binds the override, the guest of 'plain' the pair's own VSC."""
    import types

    from winhv_echo.plugin import EchoVsc

    module = types.ModuleType("my_vscs")
    module.QuietEchoVsc = type("QuietEchoVsc", (EchoVsc,), {  # type: ignore[attr-defined]
        "on_open": lambda self, channel: None})
    monkeypatch.setitem(sys.modules, "my_vscs", module)
    path = tmp_path / "override.toml"
    path.write_text('[[vm]]\nname = "custom"\nmemory_mb = 64\n[[vm.device]]\npair = "echo"\n'
                    '[vm.drivers]\necho = "my_vscs:QuietEchoVsc"\n'
                    '[[vm]]\nname = "plain"\nmemory_mb = 64\n[[vm.device]]\npair = "echo"\n')
    result = CliRunner().invoke(cli, ["bus", str(path), "--json"])
    assert result.exit_code == 0, result.output
    tree = json.loads(result.stdout)
    drivers = {vm: [(d["driver"], d["state"]) for d in tree[vm]["devices"]] for vm in tree}
    assert drivers == {"custom": [("QuietEchoVsc", "open")], "plain": [("EchoVsc", "open")]}
