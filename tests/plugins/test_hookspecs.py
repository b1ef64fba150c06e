"""The hook specifications: the contract's names, documented the way pytest documents hooks."""

from __future__ import annotations

import inspect

import pluggy

from winhv.plugins import _hookspecs
from winhv.plugins.api import PROJECT_NAME, hookimpl

CONTRACT = {
    "winhv_vsp_vsc_pairs": [],
    "winhv_integration_components": [],
    "winhv_vid_services": [],
    "winhv_cli_commands": ["cli"],
    "winhv_vm_state_changed": ["vm", "old", "new"],
    "winhv_device_bound": ["vm", "device"],
    "winhv_device_unbound": ["vm", "device", "reason"],
    "winhv_channel_opened": ["vm", "channel"],
    "winhv_channel_closed": ["vm", "channel", "reason"],
}


def test_the_hooks_are_exactly_the_contract_with_their_arguments() -> None:
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(_hookspecs)
    hooks = {name: caller.spec.argnames for name, caller in vars(pm.hook).items()
             if not name.startswith("_") and caller.spec is not None}
    assert {k: list(v) for k, v in hooks.items()} == CONTRACT
    assert set(_hookspecs.REGISTRATION_HOOKS) | set(_hookspecs.LIFECYCLE_HOOKS) | {
        "winhv_cli_commands"} == set(CONTRACT)


def test_every_hook_says_when_it_is_called_and_what_its_return_value_means() -> None:
    for name in CONTRACT:
        doc = inspect.getdoc(getattr(_hookspecs, name)) or ""
        assert ":return:" in doc, name
        assert "Called" in doc, name


def test_hookimpl_marks_the_winhv_project() -> None:
    @hookimpl(tryfirst=True)
    def winhv_vid_services() -> list[object]:
        return []

    assert winhv_vid_services.winhv_impl["tryfirst"]  # type: ignore[attr-defined] is True
