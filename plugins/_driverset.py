"""Driver sets: the TOML file that says which host to boot and which VMs, devices and ICs to run.

The format is documented in ``docs/driver-sets.md``. Parsing checks the whole file against the
format and against the registry (pair, IC and VID-service names and each one's configuration
schema) and builds frozen :class:`DriverSet` values. Every problem is a :class:`DriverSetError`
naming the file, the key path (``vm[1].device[0].config.size_mb``, indexes from 0), what was
found and what was expected; the first problem found is reported.
"""

from __future__ import annotations

import importlib
import importlib.resources
import re
import tomllib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from winhv.drivers.vmbus._versions import VmbusVersion, major_minor
from winhv.drivers.vmbus.device import Vsc

from ._descriptions import (
    ConfigError,
    Description,
    IcDescription,
    PairDescription,
    VidServiceDescription,
    describe_value,
    did_you_mean,
    validate_config,
)
from ._registry import Registry, UnknownNameError

__all__ = [
    "DEFAULT_DRIVER_SET",
    "MAX_VM_MEMORY_MB",
    "MAX_VM_PROCESSORS",
    "MIN_VM_MEMORY_MB",
    "DeviceConfig",
    "DriverOverride",
    "DriverSet",
    "DriverSetError",
    "HostConfig",
    "IcConfig",
    "ServiceConfig",
    "VmConfig",
    "load_default_driver_set",
    "load_driver_set",
    "parse_driver_set",
    "parse_vmbus_version",
]

def _dotted(version: int) -> str:
    major, minor = major_minor(version)
    return f"{major}.{minor}"


_VERSION_BY_NAME: Final[dict[str, VmbusVersion]] = {
    spelling: version
    for version in VmbusVersion
    for spelling in (version.name, "VERSION_" + version.name, _dotted(version))
}

#: Per-VM limits. Memory: Hyper-V's 32 MB minimum and 12 TB maximum for a generation 2 VM;
#: processors: 240 virtual processors for a generation 2 VM ("Plan for Hyper-V scalability in
#: Windows Server", Microsoft Learn, Windows Server 2016-2022; not in the fact sheet).
MIN_VM_MEMORY_MB: Final = 32
MAX_VM_MEMORY_MB: Final = 12 * 1024 * 1024
MAX_VM_PROCESSORS: Final = 240
_MAX_ROOT_PROCESSORS: Final = 320  # logical processors a Hyper-V host's root may use (same page)
_MAX_NAME: Final = 100
_DEVICE_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_BARE_KEY_RE: Final = re.compile(r"[A-Za-z0-9_-]+")
_TOML_POSITION_RE: Final = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
#: The package resource holding the built-in default driver set.
DEFAULT_DRIVER_SET: Final = "default.toml"


class DriverSetError(ConfigError):
    """A driver set is malformed. ``source`` is the file, ``path`` the key path ("" for a TOML
    syntax error, which has ``line`` and ``column`` instead)."""

    def __init__(
        self,
        source: str,
        path: str,
        found: str,
        expected: str,
        *,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(path, found, expected)
        self.source = source
        self.line = line
        self.column = column
        where = source if line is None else f"{source}:{line}:{column}"
        where = f"{where}: {path}" if path else where
        self.args = (f"{where}: found {found}, expected {expected}",)

    def __str__(self) -> str:
        return str(self.args[0])


# ---- values --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostConfig:
    """The ``[host]`` table. ``vmbus_version`` caps the VMBus protocol version the host accepts
    (fact sheet §3.4; ``None`` for the newest it supports)."""

    vmbus_version: VmbusVersion | None = None
    root_memory_mb: int = 2048
    root_processors: int = 1
    seed: int = 0
    services: tuple[ServiceConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """A VID service to run on the host, with its validated configuration."""

    name: str
    config: Mapping[str, Any]
    description: VidServiceDescription = field(repr=False)


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """One ``[[vm.device]]``: a device instance of a registered pair, with validated config."""

    name: str
    pair: str
    config: Mapping[str, Any]
    description: PairDescription = field(repr=False)


@dataclass(frozen=True, slots=True)
class IcConfig:
    """One Integration Component a VM runs, with validated configuration."""

    name: str
    config: Mapping[str, Any]
    description: IcDescription = field(repr=False)


@dataclass(frozen=True, slots=True)
class DriverOverride:
    """A ``[vm.drivers]`` entry: the guest binds ``vsc`` to offers of ``interface_id``
    instead of the driver the registry would pick. ``spec`` is the value as written."""

    interface_id: uuid.UUID
    vsc: type[Vsc]
    spec: str


@dataclass(frozen=True, slots=True)
class VmConfig:
    """One ``[[vm]]`` entry."""

    name: str
    memory_mb: int
    processors: int
    devices: tuple[DeviceConfig, ...] = ()
    ics: tuple[IcConfig, ...] = ()
    drivers: tuple[DriverOverride, ...] = ()

    def driver_for(self, interface_id: uuid.UUID) -> type[Vsc] | None:
        """The overriding VSC class for ``interface_id`` in this VM, or ``None``."""
        return next((d.vsc for d in self.drivers if d.interface_id == interface_id), None)


@dataclass(frozen=True, slots=True)
class DriverSet:
    """A validated driver set: the host and its VMs, in file order."""

    source: str
    host: HostConfig
    vms: tuple[VmConfig, ...]

    def vm(self, name: str) -> VmConfig:
        """The VM called ``name`` (``KeyError`` if there is none)."""
        for vm in self.vms:
            if vm.name == name:
                return vm
        raise KeyError(name)


def parse_vmbus_version(text: str) -> VmbusVersion:
    """The VMBus version named by ``text``: ``"5.3"``, ``"WIN10"`` or ``"VERSION_WIN8_1"``
    (case-insensitive; the Linux names of fact sheet §3.4). ``ValueError`` for any other."""
    value = _VERSION_BY_NAME.get(text.strip().upper())
    if value is None:
        raise ValueError(f"unknown VMBus version {text!r}")
    return value


# ---- parsing -------------------------------------------------------------------------------

_TOP_KEYS: Final = ("host", "vm")
_HOST_KEYS: Final = ("root_memory_mb", "root_processors", "seed", "service", "services",
                     "vmbus_version")
_VM_KEYS: Final = ("device", "drivers", "ic", "ics", "memory_mb", "name", "processors")
_DEVICE_KEYS: Final = ("config", "name", "pair")
_NAMED_KEYS: Final = ("config", "name")


def _key(path: str, key: str) -> str:
    part = key if _BARE_KEY_RE.fullmatch(key) else f'"{key}"'
    return f"{path}.{part}" if path else part


class _Parser:
    def __init__(self, source: str, registry: Registry, base_dir: Path | None) -> None:
        self.source = source
        self.registry = registry
        self.base_dir = base_dir

    def error(self, path: str, found: str, expected: str) -> DriverSetError:
        return DriverSetError(self.source, path, found, expected)

    def table(self, value: object, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(path, describe_value(value), "a table")
        for key in value:
            if key not in allowed:
                raise self.error(_key(path, key), "an unknown key",
                                 "one of " + ", ".join(allowed) + did_you_mean(key, allowed))
        return value

    def tables(self, value: object, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.error(path, describe_value(value), "an array of tables")
        return value

    def integer(self, table: dict[str, Any], key: str, path: str, default: int | None,
                low: int, high: int, unit: str = "") -> int:
        where = _key(path, key)
        if key not in table:
            if default is None:
                raise self.error(where, "nothing (the key is missing)",
                                 "an integer: this key is required")
            return default
        value = table[key]
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(where, describe_value(value), f"an integer{unit}")
        if not low <= value <= high:
            raise self.error(where, describe_value(value), f"an integer{unit} from {low} to {high}")
        return value

    def string(self, table: dict[str, Any], key: str, path: str, *, required: bool) -> str | None:
        where = _key(path, key)
        if key not in table:
            if required:
                raise self.error(where, "nothing (the key is missing)",
                                 "a string: this key is required")
            return None
        value = table[key]
        if not isinstance(value, str):
            raise self.error(where, describe_value(value), "a string")
        return value

    def config(self, description: Description, value: object, path: str) -> Mapping[str, Any]:
        if value is not None and not isinstance(value, dict):
            raise self.error(path, describe_value(value), "a table")
        try:
            checked = validate_config(description, value, path=path, base_dir=self.base_dir)
        except ConfigError as exc:
            raise self.error(exc.path, exc.found, exc.expected) from exc
        return MappingProxyType(checked)

    def lookup(self, find: Callable[[str], Any], name: str, path: str) -> Any:
        try:
            return find(name)
        except UnknownNameError as exc:
            raise self.error(path, f"unknown {exc.kind} {name!r}", exc.expected) from exc

    # ---- sections ----------------------------------------------------------------------------

    def document(self, data: dict[str, Any]) -> DriverSet:
        self.table(data, "", _TOP_KEYS)
        host = self.host(data.get("host", {}))
        vms: list[VmConfig] = []
        seen: dict[str, str] = {}
        for index, raw in enumerate(self.tables(data.get("vm", []), "vm")):
            path = f"vm[{index}]"
            vm = self.vm(raw, path)
            if vm.name in seen:
                raise self.error(f"{path}.name", f"{vm.name!r} again (also {seen[vm.name]}.name)",
                                 "a VM name not used by another [[vm]]")
            seen[vm.name] = path
            vms.append(vm)
        return DriverSet(self.source, host, tuple(vms))

    def host(self, raw: object) -> HostConfig:
        table = self.table(raw, "host", _HOST_KEYS)
        version: VmbusVersion | None = None
        text = self.string(table, "vmbus_version", "host", required=False)
        if text is not None:
            try:
                version = parse_vmbus_version(text)
            except ValueError:
                names = ", ".join(f"{_dotted(v)} ({v.name})" for v in VmbusVersion)
                raise self.error("host.vmbus_version", describe_value(text),
                                 f"a VMBus version: one of {names}") from None
        services = self.named_list(table, "services", "service", "host",
                                   self.registry.vid_service, "VID service")
        return HostConfig(
            vmbus_version=version,
            root_memory_mb=self.integer(table, "root_memory_mb", "host", 2048, 256,
                                        MAX_VM_MEMORY_MB, " (MiB)"),
            root_processors=self.integer(table, "root_processors", "host", 1, 1,
                                         _MAX_ROOT_PROCESSORS),
            seed=self.integer(table, "seed", "host", 0, 0, 2**64 - 1),
            services=tuple(ServiceConfig(name, cfg, d) for name, cfg, d in services),
        )

    def vm(self, raw: object, path: str) -> VmConfig:
        table = self.table(raw, path, _VM_KEYS)
        name = self.string(table, "name", path, required=True)
        assert name is not None
        if not name.strip() or len(name) > _MAX_NAME or not name.isprintable():
            raise self.error(f"{path}.name", describe_value(name),
                             f"a printable, non-blank name of at most {_MAX_NAME} characters")
        memory = self.integer(table, "memory_mb", path, None, MIN_VM_MEMORY_MB,
                              MAX_VM_MEMORY_MB, " (MiB)")
        processors = self.integer(table, "processors", path, 1, 1, MAX_VM_PROCESSORS)
        devices = self.devices(table.get("device", []), f"{path}.device")
        ics = self.named_list(table, "ics", "ic", path, self.registry.ic, "IC")
        drivers = self.drivers(table.get("drivers", {}), f"{path}.drivers")
        return VmConfig(
            name=name,
            memory_mb=memory,
            processors=processors,
            devices=devices,
            ics=tuple(IcConfig(n, cfg, d) for n, cfg, d in ics),
            drivers=drivers,
        )

    def devices(self, raw: object, path: str) -> tuple[DeviceConfig, ...]:
        devices: list[DeviceConfig] = []
        seen: dict[str, str] = {}
        per_pair: dict[str, int] = {}
        for index, item in enumerate(self.tables(raw, path)):
            where = f"{path}[{index}]"
            table = self.table(item, where, _DEVICE_KEYS)
            pair_name = self.string(table, "pair", where, required=True)
            assert pair_name is not None
            description = self.lookup(self.registry.pair, pair_name, f"{where}.pair")
            name = self.string(table, "name", where, required=False)
            if name is None:
                name = f"{pair_name}{per_pair.get(pair_name, 0)}"
            elif not _DEVICE_NAME_RE.fullmatch(name):
                raise self.error(f"{where}.name", describe_value(name),
                                 "a device name of letters, digits, '_', '.', '-' (at most 64, "
                                 "starting with a letter or digit)")
            per_pair[pair_name] = per_pair.get(pair_name, 0) + 1
            if name in seen:
                raise self.error(f"{where}.name", f"{name!r} again (also {seen[name]})",
                                 "a device name not used by another device of this VM")
            seen[name] = where
            config = self.config(description, table.get("config"), f"{where}.config")
            devices.append(DeviceConfig(name, pair_name, config, description))
        return tuple(devices)

    def named_list(
        self,
        table: dict[str, Any],
        short_key: str,
        long_key: str,
        path: str,
        find: Callable[[str], Any],
        what: str,
    ) -> list[tuple[str, Mapping[str, Any], Any]]:
        """``short_key = ["a", "b"]`` and/or ``[[long_key]]`` tables with ``name``/``config``."""
        items: list[tuple[str, object, str]] = []  # (name, raw config, where)
        if short_key in table:
            names = table[short_key]
            if not isinstance(names, list):
                raise self.error(_key(path, short_key), describe_value(names),
                                 f"an array of {what} names")
            for index, name in enumerate(names):
                where = f"{_key(path, short_key)}[{index}]"
                if not isinstance(name, str):
                    raise self.error(where, describe_value(name), f"a {what} name (a string)")
                items.append((name, None, where))
        for index, item in enumerate(self.tables(table.get(long_key, []), _key(path, long_key))):
            where = f"{_key(path, long_key)}[{index}]"
            entry = self.table(item, where, _NAMED_KEYS)
            name = self.string(entry, "name", where, required=True)
            assert name is not None
            items.append((name, entry.get("config"), f"{where}.name"))
        result: list[tuple[str, Mapping[str, Any], Any]] = []
        seen: dict[str, str] = {}
        for name, raw_config, where in items:
            description = self.lookup(find, name, where)
            if name in seen:
                raise self.error(where, f"{name!r} again (also {seen[name]})",
                                 f"each {what} at most once")
            seen[name] = where
            config_path = where.removesuffix(".name") + ".config"
            result.append((name, self.config(description, raw_config, config_path), description))
        return result

    def drivers(self, raw: object, path: str) -> tuple[DriverOverride, ...]:
        if not isinstance(raw, dict):
            raise self.error(path, describe_value(raw), "a table")
        overrides: dict[uuid.UUID, tuple[DriverOverride, str]] = {}
        for key, value in raw.items():
            where = _key(path, key)
            guid = self.driver_key(key, where)
            if not isinstance(value, str):
                raise self.error(where, describe_value(value),
                                 "a pair name or a 'module:Class' path (a string)")
            vsc = self.driver_class(value, where)
            if guid in overrides:
                raise self.error(where, f"a second override of interface {guid} (also "
                                 f"{overrides[guid][1]})", "one override per interface")
            overrides[guid] = (DriverOverride(guid, vsc, value), where)
        return tuple(o for o, _ in overrides.values())

    def driver_key(self, key: str, where: str) -> uuid.UUID:
        try:
            guid = uuid.UUID(key)
        except ValueError:
            guid = None
        if guid is None:
            pair: PairDescription = self.lookup(self.registry.pair, key, where)
            return pair.interface_id
        try:
            owner = self.registry.by_interface(guid)
        except UnknownNameError:
            owner = None
        if not isinstance(owner, PairDescription):
            offered = ", ".join(f"{p.interface_id} ({p.name})" for p in self.registry.pairs)
            raise self.error(where, f"interface GUID {guid}, which no registered pair offers",
                             "a pair name or the interface GUID of a registered pair: "
                             + (offered or "none are registered"))
        return guid

    def driver_class(self, spec: str, where: str) -> type[Vsc]:
        expected = "a pair name or an importable 'module:Class' path to a Vsc subclass"
        if ":" not in spec and "." not in spec:
            pair: PairDescription = self.lookup(self.registry.pair, spec, where)
            return pair.vsc
        module_name, _, qualname = spec.partition(":") if ":" in spec else spec.rpartition(".")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except Exception as exc:  # importing runs the named module's code: report, don't crash
            raise self.error(where, f"{spec!r}, which cannot be imported "
                             f"({type(exc).__name__}: {exc})", expected) from exc
        if not (isinstance(obj, type) and issubclass(obj, Vsc)):
            raise self.error(where, f"{spec!r}, which is {obj!r}", expected)
        return obj


def parse_driver_set(
    text: str,
    *,
    source: str = "<string>",
    registry: Registry,
    base_dir: Path | None = None,
) -> DriverSet:
    """Parse and validate driver-set TOML ``text``; ``source`` names it in errors.

    ``base_dir`` anchors relative ``path`` values of device configuration. Raises
    :class:`DriverSetError` for the first problem found.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_POSITION_RE.search(message)
        line = column = None
        if match:
            line, column = int(match[1]), int(match[2])
            message = message[: match.start()]
        elif message.endswith(" (at end of document)"):
            line = text.count("\n") + 1
            column = len(text.rpartition("\n")[2]) + 1
            message = message.removesuffix(" (at end of document)")
        raise DriverSetError(source, "", f"a TOML syntax error ({message})", "valid TOML",
                             line=line, column=column) from exc
    return _Parser(source, registry, base_dir).document(data)


def load_driver_set(path: str | Path, registry: Registry) -> DriverSet:
    """Read, parse and validate the driver set at ``path`` (relative config paths in it are
    taken from the file's folder)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise DriverSetError(str(path), "", f"a file that cannot be read ({exc.strerror})",
                             "a readable TOML file") from exc
    except UnicodeDecodeError as exc:
        raise DriverSetError(str(path), "", f"bytes that are not UTF-8 (at offset {exc.start})",
                             "a UTF-8 TOML file") from exc
    return parse_driver_set(text, source=str(path), registry=registry,
                            base_dir=path.parent.resolve())


def load_default_driver_set(registry: Registry) -> DriverSet:
    """The built-in default driver set that ships inside the package (``winhv run`` with no
    file)."""
    resource = importlib.resources.files("winhv.plugins").joinpath(DEFAULT_DRIVER_SET)
    return parse_driver_set(resource.read_text(encoding="utf-8"),
                            source=f"winhv.plugins/{DEFAULT_DRIVER_SET}", registry=registry)
