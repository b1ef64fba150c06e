"""The ``winhv`` hook specifications: everything a plugin can contribute or observe.

A plugin is any module or object registered with the pluggy project ``winhv``. Third-party
distributions name theirs in the ``winhv`` entry-point group; the built-in devices
(``winhv.vsp_vsc_pairs``) are registered through that same group as the ``builtin`` entry point
and implement these same hooks: there is no other way in.

Implement a hook by defining a function (or method) of the same name, optionally decorated with
:data:`hookimpl` (needed only for ``tryfirst``/``trylast``/``wrapper`` options). A function whose
name starts with ``winhv_`` but matches no hook here is an error at load time: the plugin is
unregistered and reported, so a misspelled hook never silently does nothing.

Two kinds of hooks:

* **Registration hooks** (:func:`winhv_vsp_vsc_pairs`, :func:`winhv_integration_components`,
  :func:`winhv_vid_services`) are called once per plugin, right after the plugin is loaded,
  and only for that plugin. What they return is validated and entered into the registry as
  one batch: if anything in the batch is malformed or conflicts with an earlier plugin, none of
  it is registered and the whole plugin is unloaded and reported as a failed plugin.
* **Lifecycle hooks** (``winhv_vm_state_changed`` and the device and channel hooks) are
  notifications. Their return values are ignored. Each implementation is called in isolation:
  an exception is recorded with the plugin's name and does not stop the other observers, the
  VM, or the device the notification is about.

Argument types written as ``Any`` are objects of the VM layer (VMMS's VM record, the guest
bus's device node, the VMBus server's channel); the attributes documented here are the
contract they keep (``tests/cli/test_lifecycle_hooks.py`` checks them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from ._descriptions import IcDescription, PairDescription, VidServiceDescription

__all__ = [
    "LIFECYCLE_HOOKS",
    "PROJECT_NAME",
    "REGISTRATION_HOOKS",
    "hookimpl",
    "hookspec",
]

#: The pluggy project name; also the entry-point group plugins are discovered from.
PROJECT_NAME = "winhv"

#: Marks a hook specification of the ``winhv`` project.
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: Marks a hook implementation of the ``winhv`` project (optional for plain ``winhv_*`` functions).
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --------------------------------------------------------------------------------------------
# Registration hooks
# --------------------------------------------------------------------------------------------


@hookspec
def winhv_vsp_vsc_pairs() -> Iterable[PairDescription] | None:
    """Return the synthetic device pairs this plugin provides.

    Called once, right after the plugin is loaded, with no arguments.

    :return: an iterable of :class:`~winhv.plugins.api.PairDescription`. Each pair name and
        each interface type GUID must be new to the registry; a clash with another plugin is a
        conflict naming both distributions, and this plugin is not loaded. Returning ``None``
        or an empty iterable contributes nothing.
    """


@hookspec
def winhv_integration_components() -> Iterable[IcDescription] | None:
    """Return the Integration Components (heartbeat, shutdown, time sync, KVP, ...) this
    plugin provides.

    Called once, right after the plugin is loaded, with no arguments.

    :return: an iterable of :class:`~winhv.plugins.api.IcDescription`, whose ``host`` is a
        :class:`~winhv.plugins.api.Vsp` offering a pipe-mode channel and ``guest`` a
        :class:`~winhv.plugins.api.Vsc`. IC names share no namespace with pair names, but
        interface GUIDs do: an IC and a pair can never claim the same GUID, because both are
        offered on the same VMBus.
    """


@hookspec
def winhv_vid_services() -> Iterable[VidServiceDescription] | None:
    """Return the VID services (root-side services of the virtualization stack that are not
    VMBus devices, e.g. a memory balancer) this plugin provides.

    Called once, right after the plugin is loaded, with no arguments.

    :return: an iterable of :class:`~winhv.plugins.api.VidServiceDescription` with names new
        to the registry, each naming a :class:`~winhv.plugins.api.VidService` subclass.
    """


@hookspec
def winhv_cli_commands(cli: click.Group) -> None:
    """Add commands to the ``winhv`` command line.

    Called once per ``winhv`` invocation, the first time the command line needs a command it
    does not define itself (a plugin command is being run, listed in ``--help``, or completed).

    :param cli: the ``click.Group`` to add to: ``cli.add_command(cmd)`` or ``@cli.command()``.
        A command whose name a built-in command already has is ignored with a warning.
    :return: ignored.
    """


# --------------------------------------------------------------------------------------------
# Lifecycle hooks
# --------------------------------------------------------------------------------------------


@hookspec
def winhv_vm_state_changed(vm: Any, old: str, new: str) -> None:
    """A VM moved from state ``old`` to state ``new``.

    Called by VMMS after the transition has happened, in the order the transitions happen.
    ``old`` and ``new`` are the lower-case names of the VM state machine's states:
    ``"off"``, ``"starting"``, ``"running"``, ``"pausing"``, ``"paused"``, ``"resuming"``,
    ``"saving"``, ``"saved"``, ``"stopping"``, ``"failed"``.

    :param vm: VMMS's record of the VM (attributes ``name``, and ``state``: the
        :class:`~winhv.drivers.vmms.VmState` just entered, ``vm.state.value.lower() == new``).
    :return: ignored.
    """


@hookspec
def winhv_device_bound(vm: Any, device: Any) -> None:
    """A VSC driver in ``vm`` accepted a device.

    Called by the guest's bus enumerator after the driver's ``probe()`` returned, before the
    channel is opened.

    :param vm: the VM the device belongs to.
    :param device: the bound device (attributes ``name``, ``interface_id``, ``instance_id`` and
        ``driver``, the VSC instance, at least).
    :return: ignored.
    """


@hookspec
def winhv_device_unbound(vm: Any, device: Any, reason: str) -> None:
    """A device's VSC driver was unbound from it.

    Called by the guest's bus enumerator after the driver's ``remove()`` ran (or raised) and
    its channel is closed.

    :param reason: ``"rescind"`` (the host withdrew the offer), ``"vm-stop"``, ``"unbind"``
        (asked for), or ``"fault: <what the driver raised>"`` when the framework unbound a
        driver that raised in ``probe``, ``on_open`` or ``on_packet``.
    :return: ignored.
    """


@hookspec
def winhv_channel_opened(vm: Any, channel: Any) -> None:
    """A VMBus channel of ``vm`` is open.

    Called by the root's VMBus server once both rings are mapped through the GPADL and the
    VSP's ``on_open`` has returned, before the first packet is delivered.

    :param channel: the channel (attributes ``child_relid``, ``interface_id``,
        ``instance_id`` and ``sub_channel_index`` at least).
    :return: ignored.
    """


@hookspec
def winhv_channel_closed(vm: Any, channel: Any, reason: str) -> None:
    """A VMBus channel of ``vm`` closed; no packet will flow on it again.

    Called by the root's VMBus server after the VSP's ``on_close`` ran (or raised) and the
    ring memory is released, once per channel (sub-channels included).

    :param reason: ``"guest-close"``, ``"rescind"``, ``"vm-stop"``, or ``"fault: <error>"``
        when the channel was closed because a driver on either side raised or a ring was
        found corrupt.
    :return: ignored.
    """


#: Hooks called once per plugin at load time; their results go into the registry.
REGISTRATION_HOOKS: tuple[str, ...] = (
    "winhv_vsp_vsc_pairs",
    "winhv_integration_components",
    "winhv_vid_services",
)

#: Notification hooks; each implementation is called in isolation and its result ignored.
LIFECYCLE_HOOKS: tuple[str, ...] = (
    "winhv_vm_state_changed",
    "winhv_device_bound",
    "winhv_device_unbound",
    "winhv_channel_opened",
    "winhv_channel_closed",
)
