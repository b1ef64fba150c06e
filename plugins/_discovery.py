"""Discovery: load plugins one at a time, so that one broken plugin never stops the others.

:func:`discover` reads the ``winhv`` entry-point group (or the entry points it is given) and
admits each plugin through the same four steps, whether it is the built-in
``winhv.vsp_vsc_pairs`` or a third party's:

1. **import** the entry point's object;
2. **register** it with the pluggy manager (pluggy checks each implementation's arguments
   against its hook specification);
3. **hooks**: ``check_pending``: an implementation of a hook that does not exist (a misspelled
   ``winhv_*`` function, decorated or not) is an error, not something silently never called;
4. **describe**: call the plugin's registration hooks, check that each returned object is a
   description of the right kind, and enter them into the :class:`~._registry.Registry` as one
   batch (**conflict** if a name or GUID is taken).

A failure at any step unregisters the plugin, leaves nothing of it in the registry, and is
recorded as a :class:`PluginFailure` with the entry point, the distribution and the error.

Order: the built-in distribution (``winhv``) loads first, then the others sorted by
distribution and entry-point name, so the outcome of a conflict does not depend on the order
``importlib.metadata`` happens to list things in: the earlier plugin keeps its claim.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias, cast

import pluggy

from . import _hookspecs
from ._descriptions import (
    Description,
    IcDescription,
    PairDescription,
    VidServiceDescription,
    did_you_mean,
)
from ._hookspecs import PROJECT_NAME, REGISTRATION_HOOKS
from ._registry import BUILTIN_DISTRIBUTION, ConflictError, Registry, Source

__all__ = [
    "DIRECT_DISTRIBUTION",
    "DiscoveryResult",
    "HookError",
    "LoadedPlugin",
    "PluginFailure",
    "Stage",
    "discover",
]

_log = logging.getLogger("winhv.plugins")

#: The step at which a plugin failed.
Stage: TypeAlias = Literal["import", "register", "hooks", "describe", "conflict"]
#: Distribution name recorded for plugin objects registered directly (no entry point).
DIRECT_DISTRIBUTION: Final = "<direct>"
_EXPECTED_KIND: Final[dict[str, type]] = {
    "winhv_vsp_vsc_pairs": PairDescription,
    "winhv_integration_components": IcDescription,
    "winhv_vid_services": VidServiceDescription,
}
_KNOWN_HOOKS: Final = tuple(
    name for name in dir(_hookspecs) if name.startswith("winhv_")
)


@dataclass(frozen=True, slots=True)
class PluginFailure:
    """A plugin that did not load: which entry point, from which distribution, and why.

    ``error`` is one line: ``"<stage>: <what went wrong>"`` in the plugin's terms (the hook
    that returned something malformed, the conflicting name and both distributions, ...).
    """

    entry_point: str
    distribution: str
    error: str
    version: str = ""
    stage: Stage = "import"

    def __str__(self) -> str:
        dist = f"{self.distribution} {self.version}" if self.version else self.distribution
        return f"plugin {self.entry_point!r} from {dist}: {self.error}"


@dataclass(frozen=True, slots=True)
class LoadedPlugin:
    """A plugin that loaded: its name in the plugin manager and where it came from."""

    name: str
    source: Source
    plugin: object = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class HookError:
    """A hook implementation raised while being notified; recorded, never propagated."""

    hook: str
    plugin: str
    error: str


class _PluginManager(pluggy.PluginManager):
    """Treats any ``winhv_*`` function as a hook implementation, marked or not (as pytest does
    for ``pytest_*``), so that a misspelled hook name is caught by ``check_pending``."""

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> pluggy.HookimplOpts | None:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("winhv_"):
            attr = inspect.getattr_static(plugin, name, None)
            if isinstance(attr, staticmethod | classmethod) or inspect.isfunction(attr):
                return cast(pluggy.HookimplOpts, {})  # pluggy fills in the defaults
        return opts


def _one_line(exc: BaseException, limit: int = 400) -> str:
    """``"Type: message"`` on one line (lines joined by ``"; "``), at most ``limit`` chars."""
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Rejected(Exception):
    def __init__(self, stage: Stage, message: str) -> None:
        super().__init__(message)
        self.stage = stage


class DiscoveryResult:
    """The loaded plugins: the pluggy manager, the registry, and what failed.

    It is also the way in for plugins that are not entry points: :meth:`register` admits a
    module or object through exactly the steps an entry point goes through.
    """

    def __init__(self) -> None:
        self.plugin_manager = _PluginManager(PROJECT_NAME)
        self.plugin_manager.add_hookspecs(_hookspecs)
        self.registry = Registry()
        self.plugins: list[LoadedPlugin] = []
        self.failures: list[PluginFailure] = []
        self.hook_errors: list[HookError] = []

    @property
    def hook(self) -> pluggy.HookRelay:
        """The pluggy hook relay (``result.hook.winhv_vm_state_changed(...)``). Exceptions
        propagate from it; use :meth:`notify` for contained lifecycle notifications."""
        return self.plugin_manager.hook

    # ---- admitting plugins ----------------------------------------------------------------

    def load_entry_point(self, entry_point: importlib.metadata.EntryPoint) -> bool:
        """Load one entry point; True if it loaded, else a :class:`PluginFailure` is recorded."""
        source = _source_of(entry_point)
        try:
            plugin = entry_point.load()
        except Exception as exc:  # a plugin's import runs arbitrary code: contain it
            self._fail(source, "import", f"cannot import {entry_point.value!r}: {_one_line(exc)}")
            return False
        return self._admit(plugin, f"{source.distribution}:{entry_point.name}", source)

    def register(
        self,
        plugin: object,
        *,
        name: str,
        distribution: str = DIRECT_DISTRIBUTION,
        version: str = "",
    ) -> bool:
        """Admit a plugin object directly (tests, the pytest plugin); same checks as an entry
        point. True if it loaded, else a :class:`PluginFailure` is recorded."""
        return self._admit(plugin, name, Source(distribution, version, name))

    def _admit(self, plugin: object, name: str, source: Source) -> bool:
        pm = self.plugin_manager
        try:
            if pm.register(plugin, name=name) is None:
                raise _Rejected("register", f"plugin name {name!r} is blocked")
        except _Rejected as exc:
            self._fail(source, exc.stage, str(exc))
            return False
        except (ValueError, pluggy.PluginValidationError) as exc:
            self._fail(source, "register", _one_line(exc))
            return False
        try:
            self._check_hooks(plugin)
            batch = self._collect(plugin)
            try:
                self.registry.add_batch(batch, source)
            except ConflictError as exc:
                raise _Rejected("conflict", str(exc)) from exc
        except _Rejected as exc:
            pm.unregister(plugin)
            self._fail(source, exc.stage, str(exc))
            return False
        self.plugins.append(LoadedPlugin(name, source, plugin))
        return True

    def _check_hooks(self, plugin: object) -> None:
        try:
            self.plugin_manager.check_pending()
        except pluggy.PluginValidationError as exc:
            unknown = sorted(
                hook_name
                for hook_name, caller in vars(self.plugin_manager.hook).items()
                if not hook_name.startswith("_") and not caller.has_spec()
                and any(i.plugin is plugin and not i.optionalhook
                        for i in caller.get_hookimpls())
            )
            if not unknown:  # another plugin's problem; cannot happen when admitted one by one
                raise
            detail = "; ".join(f"{h!r}{did_you_mean(h, _KNOWN_HOOKS)}" for h in unknown)
            raise _Rejected("hooks", f"implements unknown hook {detail}") from exc

    def _collect(self, plugin: object) -> list[Description]:
        pm = self.plugin_manager
        others = [p for p in pm.get_plugins() if p is not plugin]
        batch: list[Description] = []
        for hook_name in REGISTRATION_HOOKS:
            expected = _EXPECTED_KIND[hook_name]
            try:
                returned = pm.subset_hook_caller(hook_name, others)()
            except Exception as exc:  # plugin code, including description constructors
                raise _Rejected("describe", f"{hook_name}() raised {_one_line(exc)}") from exc
            for result in returned:
                if isinstance(result, str | bytes | Mapping) or not isinstance(result, Iterable):
                    raise _Rejected(
                        "describe",
                        f"{hook_name}() returned {result!r}, expected an iterable of "
                        f"{expected.__name__}",
                    )
                for index, item in enumerate(result):
                    if not isinstance(item, expected):
                        raise _Rejected(
                            "describe",
                            f"{hook_name}() returned {item!r} at index {index}, expected "
                            f"{'an' if expected.__name__[0] in 'AEIOU' else 'a'} "
                            f"{expected.__name__}",
                        )
                    batch.append(cast(Description, item))
        return batch

    def _fail(self, source: Source, stage: Stage, message: str) -> None:
        failure = PluginFailure(
            entry_point=source.entry_point,
            distribution=source.distribution,
            error=f"{stage}: {message}",
            version=source.version,
            stage=stage,
        )
        _log.warning("%s", failure)
        self.failures.append(failure)

    # ---- calling plugins ------------------------------------------------------------------

    def notify(self, hook_name: str, **kwargs: Any) -> tuple[HookError, ...]:
        """Call every implementation of ``hook_name`` with ``kwargs``, each in isolation.

        Implementations run in pluggy's order (``tryfirst`` first, then the last registered
        first); one that raises is recorded as a :class:`HookError` (also in
        :attr:`hook_errors`) and the rest still run. Wrapper implementations are not called:
        notifications have nothing to wrap. Returns the errors of this call.
        """
        caller = getattr(self.plugin_manager.hook, hook_name)
        errors: list[HookError] = []
        for impl in reversed(caller.get_hookimpls()):
            if impl.wrapper or impl.hookwrapper:
                continue
            try:
                impl.function(*(kwargs[arg] for arg in impl.argnames))
            except Exception as exc:  # an observer must not break the thing it observes
                error = HookError(hook_name, impl.plugin_name, _one_line(exc))
                _log.warning("hook %s of plugin %s raised %s", hook_name, impl.plugin_name,
                             error.error)
                errors.append(error)
        self.hook_errors.extend(errors)
        return tuple(errors)


def _source_of(entry_point: importlib.metadata.EntryPoint) -> Source:
    dist = entry_point.dist
    if dist is None:
        return Source("<unknown>", "", entry_point.name)
    return Source(dist.metadata["Name"] or dist.name, dist.version, entry_point.name)


def _order_key(entry_point: importlib.metadata.EntryPoint) -> tuple[bool, str, str]:
    dist = entry_point.dist
    dist_name = (dist.metadata["Name"] or "") if dist is not None else ""
    return (dist_name.lower() != BUILTIN_DISTRIBUTION, dist_name.lower(), entry_point.name)


def discover(
    *,
    entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
    plugins: Mapping[str, object] | Iterable[tuple[str, object]] = (),
) -> DiscoveryResult:
    """Load the ``winhv`` plugins and return what loaded and what failed.

    :param entry_points: the entry points to load; ``None`` reads the installed ``winhv``
        group through ``importlib.metadata``.
    :param plugins: extra plugin objects by name, admitted after the entry points with
        :meth:`DiscoveryResult.register` (distribution ``"<direct>"``).
    Never raises for a plugin's fault: every failure is in ``result.failures``.
    """
    result = DiscoveryResult()
    if entry_points is None:
        entry_points = importlib.metadata.entry_points(group=PROJECT_NAME)
    for entry_point in sorted(entry_points, key=_order_key):
        result.load_entry_point(entry_point)
    items = plugins.items() if isinstance(plugins, Mapping) else plugins
    for name, plugin in items:
        result.register(plugin, name=name)
    return result
