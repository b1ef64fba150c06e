"""Discovery: real entry points, the built-in plugin, and broken plugins contained one by one."""

from __future__ import annotations

import sys
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from winhv.plugins.api import (
    PairDescription,
    Vsc,
    Vsp,
    discover,
    hookimpl,
    parse_driver_set,
    validate_config,
)

ECHO_GUID = uuid.UUID("6f1c2a59-4b9e-4f0e-9d1e-8c3b7a5e0e01")


def test_builtin_plugin_loads_through_the_winhv_entry_point_group() -> None:
    result = discover()
    builtin = [p for p in result.plugins if p.source.entry_point == "builtin"]
    assert len(builtin) == 1
    assert builtin[0].source.distribution == "winhv"
    assert builtin[0].plugin is sys.modules["winhv.vsp_vsc_pairs"]
    assert result.failures == []


def test_third_party_plugin_is_discovered_listed_validated_and_used(
    echo_installed: Any, entry_points_of: Any
) -> None:
    result = discover(entry_points=entry_points_of("winhv", "winhv-echo"))
    assert result.failures == []
    assert [p.source.distribution for p in result.plugins] == ["winhv", "winhv-echo"]

    # listed, with the distribution it came from
    pair = result.registry.pair("echo")
    source = result.registry.source_of(pair)
    assert (source.distribution, source.version, source.entry_point) == (
        "winhv-echo", "1.2.0", "echo")
    assert result.registry.by_interface(ECHO_GUID) is pair
    assert result.registry.ic("ping").versions == ("1.0",)
    assert result.registry.vid_service("clock").summary == "Ticks."

    # validated: a driver set naming the pair is checked against the pair's own schema
    driver_set = parse_driver_set(
        '[[vm]]\nname = "a"\nmemory_mb = 64\nics = ["ping"]\n'
        '[[vm.device]]\npair = "echo"\nconfig = { repeat = 2, prefix = ">" }\n',
        registry=result.registry,
    )
    device = driver_set.vms[0].devices[0]
    assert device.name == "echo0"
    assert dict(device.config) == {"repeat": 2, "prefix": ">", "mode": "sync", "log": None}

    # used: the VSP built from the description and the validated config does its job
    sent: list[bytes] = []
    vsp = pair.vsp(device.config)
    vsp.on_packet(SimpleNamespace(send=sent.append), b"hi")
    assert sent == [b">hi", b">hi"]

    # and its lifecycle hook is called through the framework's contained notification
    assert result.notify("winhv_device_bound", vm="vm", device="dev0") == ()
    echo_module = sys.modules["winhv_echo.plugin"]
    assert echo_module.EVENTS[-1] == ("bound", "dev0")


def test_builtins_load_before_third_parties_whatever_the_listing_order(
    echo_installed: Any, entry_points_of: Any
) -> None:
    eps = list(reversed(entry_points_of("winhv", "winhv-echo")))
    result = discover(entry_points=eps)
    assert [p.source.entry_point for p in result.plugins] == ["builtin", "echo"]


# ---- broken plugins ---------------------------------------------------------------------------

_GOOD = """
import uuid
from winhv.plugins.api import PairDescription, Vsp, Vsc, hookimpl

class GoodVsp(Vsp):
    pass

class GoodVsc(Vsc):
    pass

@hookimpl
def winhv_vsp_vsc_pairs():
    return [PairDescription("good", uuid.UUID("11111111-2222-3333-4444-555555555555"), "1.0",
                            GoodVsp, GoodVsc)]
"""

_IMPORT_ERROR = """
import winhv_no_such_module_anywhere
"""

_BAD_DESCRIPTION = """
import uuid
from winhv.plugins.api import PairDescription, Vsc, hookimpl

class NotAVsp:
    pass

@hookimpl
def winhv_vsp_vsc_pairs():
    return [PairDescription("bad", uuid.UUID("22222222-2222-3333-4444-555555555555"), "1.0",
                            NotAVsp, Vsc)]
"""

_WRONG_KIND = """
from winhv.plugins.api import hookimpl

def winhv_integration_components():
    return [{"name": "heartbeat"}]
"""

_MISSPELLED = """
from winhv.plugins.api import hookimpl

@hookimpl
def winhv_vsp_vsc_pair():
    return []
"""

_MISSPELLED_UNMARKED = """
def winhv_vm_state_change(vm, old, new):
    pass
"""

_CONFLICT = """
import uuid
from winhv.plugins.api import PairDescription, Vsp, Vsc, hookimpl

def winhv_vsp_vsc_pairs():
    return [PairDescription("impostor", uuid.UUID("6f1c2a59-4b9e-4f0e-9d1e-8c3b7a5e0e01"), "9.9",
                            Vsp, Vsc)]
"""


def _discover_all(entry_points_of: Any, *dists: str) -> Any:
    return discover(entry_points=entry_points_of("winhv", "winhv-echo", *dists))


@pytest.mark.parametrize(
    ("source", "stage", "error"),
    [
        pytest.param(_IMPORT_ERROR, "import",
                     "import: cannot import 'broken_mod': ModuleNotFoundError: No module named "
                     "'winhv_no_such_module_anywhere'", id="import-error"),
        pytest.param(_BAD_DESCRIPTION, "describe",
                     "describe: winhv_vsp_vsc_pairs() raised DescriptionError: PairDescription "
                     "'bad': vsp: found <class 'broken_mod.NotAVsp'>, expected a subclass of "
                     "winhv.drivers.vmbus.device.Vsp", id="bad-description"),
        pytest.param(_WRONG_KIND, "describe",
                     "describe: winhv_integration_components() returned {'name': 'heartbeat'} "
                     "at index 0, expected an IcDescription", id="not-a-description"),
        pytest.param(_MISSPELLED, "hooks",
                     "hooks: implements unknown hook 'winhv_vsp_vsc_pair' (did you mean "
                     "'winhv_vsp_vsc_pairs'?)", id="misspelled-hook"),
        pytest.param(_MISSPELLED_UNMARKED, "hooks",
                     "hooks: implements unknown hook 'winhv_vm_state_change' (did you mean "
                     "'winhv_vm_state_changed'?)", id="misspelled-unmarked-hook"),
        pytest.param(_CONFLICT, "conflict",
                     "conflict: interface GUID 6f1c2a59-4b9e-4f0e-9d1e-8c3b7a5e0e01 is claimed "
                     "twice: by pair 'impostor' from zz-broken 0.3 (entry point 'broken') and "
                     "by pair 'echo' from winhv-echo 1.2.0 (entry point 'echo')",
                     id="conflicting-guid"),
    ],
)
def test_a_broken_plugin_is_reported_precisely_and_the_others_load(
    source: str, stage: str, error: str, echo_installed: Any, make_distribution: Any,
    entry_points_of: Any,
) -> None:
    make_distribution("zz-broken", "0.3", modules={"broken_mod": source},
                      entry_points={"broken": "broken_mod"})
    make_distribution("good-dist", "1.0", modules={"good_mod": _GOOD},
                      entry_points={"good": "good_mod"})
    result = _discover_all(entry_points_of, "zz-broken", "good-dist")

    assert len(result.failures) == 1
    failure = result.failures[0]
    assert (failure.entry_point, failure.distribution, failure.version, failure.stage) == (
        "broken", "zz-broken", "0.3", stage)
    assert failure.error == error
    # the others keep working, the broken one left nothing behind
    assert [p.source.entry_point for p in result.plugins] == ["builtin", "good", "echo"]
    assert result.registry.names("pair") == ("echo", "good", "storage")
    assert "zz-broken:broken" not in {n for n, _ in result.plugin_manager.list_name_plugin()}


def test_a_conflicting_pair_name_names_both_distributions(
    echo_installed: Any, make_distribution: Any, entry_points_of: Any
) -> None:
    make_distribution("aaa-first", "2.0", modules={"clash_mod": _GOOD.replace('"good"', '"echo"')},
                      entry_points={"clash": "clash_mod"})
    result = _discover_all(entry_points_of, "aaa-first")
    # "aaa-first" sorts before "winhv-echo", so it keeps the name and winhv-echo is refused
    [failure] = result.failures
    assert failure.distribution == "winhv-echo"
    assert failure.error == (
        "conflict: pair name 'echo' is claimed twice: by pair 'echo' from winhv-echo 1.2.0 "
        "(entry point 'echo') and by pair 'echo' from aaa-first 2.0 (entry point 'clash')"
    )
    # winhv-echo's IC and service went with it: a plugin is admitted whole or not at all
    assert "ping" not in result.registry.names("ic")
    assert "clock" not in result.registry.names("vid-service")


def test_a_plugin_whose_hook_raises_is_reported_with_the_hook(make_distribution: Any,
                                                               entry_points_of: Any) -> None:
    make_distribution("raiser", modules={"raiser_mod": (
        "def winhv_vid_services():\n    raise RuntimeError('no clock here')\n")},
        entry_points={"r": "raiser_mod"})
    result = discover(entry_points=entry_points_of("raiser"))
    assert [f.error for f in result.failures] == [
        "describe: winhv_vid_services() raised RuntimeError: no clock here"]


def test_a_hookimpl_with_an_argument_the_spec_lacks_is_refused_at_register() -> None:
    class Plugin:
        @hookimpl
        def winhv_vm_state_changed(self, vm: Any, old: str, new: str, extra: int) -> None: ...

    result = discover(entry_points=[], plugins={"odd": Plugin()})
    [failure] = result.failures
    assert failure.stage == "register"
    assert "extra" in failure.error
    assert failure.distribution == "<direct>"


def test_plugins_can_be_registered_directly_through_the_same_checks() -> None:
    class MyVsp(Vsp):
        pass

    class MyVsc(Vsc):
        pass

    class Plugin:
        def winhv_vsp_vsc_pairs(self) -> list[PairDescription]:
            return [PairDescription("mine", uuid.uuid4(), "1", MyVsp, MyVsc)]

    result = discover(entry_points=[])
    assert result.register(Plugin(), name="mine-plugin", distribution="tests", version="0")
    assert result.registry.source_of(result.registry.pair("mine")).distribution == "tests"
    assert not result.register(Plugin(), name="again")  # same pair name: a conflict
    assert result.failures[-1].stage == "conflict"


def test_notify_contains_a_raising_observer_and_calls_the_others() -> None:
    calls: list[str] = []

    class Bad:
        def winhv_channel_closed(self, vm: Any, channel: Any, reason: str) -> None:
            raise ValueError("observer bug")

    class Good:
        def winhv_channel_closed(self, vm: Any, channel: Any, reason: str) -> None:
            calls.append(reason)

    result = discover(entry_points=[], plugins=[("good", Good()), ("bad", Bad())])
    errors = result.notify("winhv_channel_closed", vm=None, channel=None, reason="rescind")
    assert calls == ["rescind"]
    assert [(e.hook, e.plugin, e.error) for e in errors] == [
        ("winhv_channel_closed", "bad", "ValueError: observer bug")]
    assert result.hook_errors == list(errors)


def test_validate_config_from_the_api_uses_the_discovered_schema(
    echo_installed: Any, entry_points_of: Any
) -> None:
    pair = discover(entry_points=entry_points_of("winhv-echo")).registry.pair("echo")
    with pytest.raises(ValueError, match=r"^dev\.repeat: found 9 \(an integer\), expected an "
                                         r"integer from 1 to 8$"):
        validate_config(pair, {"repeat": 9}, path="dev")
