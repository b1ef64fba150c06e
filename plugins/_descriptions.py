"""Descriptions: what a plugin tells winhv about each thing it provides.

A description is a frozen value that names a device pair, an Integration Component or a VID
service, points at its classes and declares its configuration schema. Descriptions validate
themselves when constructed (``DescriptionError`` names the description and the field), so a
malformed one never reaches the registry.

The configuration schema is a tuple of :class:`ConfigField`; :func:`validate_config` checks a
mapping (one ``[vm.device.config]`` table of a driver set, say) against it, applies the defaults
and returns a plain dict. Errors are :class:`ConfigError` with the key path of the bad value.
"""

from __future__ import annotations

import difflib
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Final, Literal, TypeAlias

from winhv.drivers.vid import VidService
from winhv.drivers.vmbus.device import Vsc, Vsp

__all__ = [
    "FIELD_TYPES",
    "ConfigError",
    "ConfigField",
    "Description",
    "DescriptionError",
    "FieldType",
    "IcDescription",
    "PairDescription",
    "VidServiceDescription",
    "describe_value",
    "did_you_mean",
    "validate_config",
]

#: Names a configuration value's type can have.
FieldType: TypeAlias = Literal["bool", "int", "float", "str", "path"]
FIELD_TYPES: Final[tuple[str, ...]] = ("bool", "int", "float", "str", "path")
_PY_TYPES: Final[dict[type, str]] = {
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
    Path: "path",
    PurePath: "path",
}
_EXPECTED: Final[dict[str, str]] = {
    "bool": "a boolean (true or false)",
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "path": "a path (a string)",
}

#: Pair, IC, service and config-field names: lowercase words joined by ``-`` or ``_``.
_NAME_RE: Final = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
_NAME_RULE: Final = "a lowercase name like 'storage' or 'synthetic-net' ([a-z][a-z0-9_-]*)"
#: A description's own version: dotted non-negative integers ("1", "1.0", "2.4.1").
_VERSION_RE: Final = re.compile(r"\d+(?:\.\d+)*")
#: An IC protocol version, "major.minor", each a u16 on the wire (fact sheet §5.2).
_IC_VERSION_RE: Final = re.compile(r"(\d+)\.(\d+)")
#: IC framework versions the Linux guest accepts (fact sheet §5.3).
DEFAULT_IC_FRAMEWORK_VERSIONS: Final[tuple[str, ...]] = ("3.0", "1.0")


class DescriptionError(ValueError):
    """A description a plugin built is malformed. The message names it and the field."""


class ConfigError(ValueError):
    """A configuration value does not fit its schema.

    ``path`` is the key path of the value (``vm[1].device[0].config.size_mb``), ``found``
    describes what was there and ``expected`` what the schema wants.
    """

    def __init__(self, path: str, found: str, expected: str) -> None:
        self.path = path
        self.found = found
        self.expected = expected
        super().__init__(f"{path}: found {found}, expected {expected}")


def describe_value(value: object) -> str:
    """Say what ``value`` is, for an error message: ``'abc' (a string)``, ``3 (an integer)``."""
    kinds = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    kind = next((name for typ, name in kinds.items() if type(value) is typ), None)
    if kind is None:
        kind = "a " + type(value).__name__
    if isinstance(value, dict):
        return kind
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({kind})"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check(ok: bool, owner: str, name: str, found: object, expected: str) -> None:
    if not ok:
        raise DescriptionError(f"{owner}: {name}: found {found!r}, expected {expected}")


def _check_name(owner: str, value: object) -> None:
    _check(isinstance(value, str) and bool(_NAME_RE.fullmatch(value)), owner, "name", value,
           _NAME_RULE)


def _coerce_uuid(owner: str, obj: object, attr: str) -> None:
    value = getattr(obj, attr)
    if isinstance(value, str):
        try:
            value = uuid.UUID(value)
        except ValueError:
            _check(False, owner, attr, value, "a GUID like 'ba6163d9-04a1-4d29-b605-72e2ffb1dc7f'")
        object.__setattr__(obj, attr, value)
    _check(isinstance(value, uuid.UUID), owner, attr, value, "a uuid.UUID (or its string form)")
    _check(value.int != 0, owner, attr, value, "a non-nil GUID")


def _coerce_config(owner: str, obj: Any) -> None:
    fields = obj.config
    if isinstance(fields, list):
        fields = tuple(fields)
        object.__setattr__(obj, "config", fields)
    _check(isinstance(fields, tuple), owner, "config", fields, "a tuple of ConfigField")
    seen: set[str] = set()
    for index, item in enumerate(fields):
        _check(isinstance(item, ConfigField), owner, f"config[{index}]", item, "a ConfigField")
        _check(item.name not in seen, owner, f"config[{index}].name", item.name,
               "a name not used by another field of this description")
        seen.add(item.name)


def _check_summary(owner: str, value: object) -> None:
    _check(isinstance(value, str), owner, "summary", value, "a string")


def _check_class(owner: str, attr: str, value: object, base: type | None,
                 shown: str | None = None) -> None:
    if base is None:
        _check(isinstance(value, type), owner, attr, value, "a class")
    else:
        _check(isinstance(value, type) and issubclass(value, base), owner, attr, value,
               f"a subclass of {shown or base.__module__ + '.' + base.__qualname__}")


def _check_driver_guids(owner: str, kind: str, interface_id: uuid.UUID, vsp: type,
                        vsp_attr: str, vsc: type, vsc_attr: str) -> None:
    """The VSP's ``interface_id`` (if set) is the description's; the VSC's ``interface_ids``
    (if any) include it: a VSC binds by GUID, so a mismatch would never bind."""
    vsp_guid = getattr(vsp, "interface_id", None)
    if vsp_guid is not None:
        _check(vsp_guid == interface_id, owner, f"{vsp_attr}.interface_id", vsp_guid,
               f"the {kind}'s interface_id {interface_id}")
    vsc_guids = tuple(getattr(vsc, "interface_ids", ()))
    if vsc_guids:
        _check(interface_id in vsc_guids, owner, f"{vsc_attr}.interface_ids", vsc_guids,
               f"a tuple containing the {kind}'s interface_id {interface_id}")


@dataclass(frozen=True, slots=True)
class ConfigField:
    """One key of a configuration schema.

    ``type`` is one of ``"bool"``, ``"int"``, ``"float"``, ``"str"``, ``"path"`` (or the Python
    type ``bool``, ``int``, ``float``, ``str``, ``pathlib.Path``, normalised to its name).
    ``minimum``/``maximum`` (inclusive) apply to ``int`` and ``float`` fields; ``choices``
    restricts the value to a set. A ``required`` field has no default; any other field's
    ``default`` must itself satisfy the field (checked here, so a schema cannot lie).
    """

    name: str
    type: FieldType | type
    default: Any = None
    doc: str = ""
    minimum: int | float | None = None
    maximum: int | float | None = None
    choices: tuple[Any, ...] | None = None
    required: bool = False

    def __post_init__(self) -> None:
        owner = f"ConfigField {self.name!r}"
        _check(isinstance(self.name, str) and bool(_NAME_RE.fullmatch(self.name)), owner, "name",
               self.name, _NAME_RULE)
        kind = _PY_TYPES.get(self.type, self.type) if isinstance(self.type, type) else self.type
        _check(kind in FIELD_TYPES, owner, "type", self.type,
               "one of " + ", ".join(FIELD_TYPES) + " (or bool, int, float, str, pathlib.Path)")
        object.__setattr__(self, "type", kind)
        _check(isinstance(self.doc, str), owner, "doc", self.doc, "a string")
        _check(isinstance(self.required, bool), owner, "required", self.required, "a boolean")
        for bound in ("minimum", "maximum"):
            value = getattr(self, bound)
            if value is None:
                continue
            _check(kind in ("int", "float"), owner, bound, value,
                   "None: bounds apply to int and float fields only")
            _check(isinstance(value, int | float) and not isinstance(value, bool)
                   and math.isfinite(value), owner, bound, value, "a finite number")
        if self.minimum is not None and self.maximum is not None:
            _check(self.minimum <= self.maximum, owner, "maximum", self.maximum,
                   f"a number >= minimum ({self.minimum!r})")
        if self.choices is not None:
            choices = tuple(self.choices)
            object.__setattr__(self, "choices", choices)
            _check(len(choices) > 0, owner, "choices", choices, "at least one choice, or None")
            for index, choice in enumerate(choices):
                try:
                    self._coerce(choice, "choices")
                except ConfigError as exc:
                    _check(False, owner, f"choices[{index}]", choice, exc.expected)
        if self.required:
            _check(self.default is None, owner, "default", self.default,
                   "None for a required field")
        elif self.default is not None:
            try:
                object.__setattr__(self, "default", self.check(self.default, path="default"))
            except ConfigError as exc:
                _check(False, owner, "default", self.default, exc.expected)

    def _coerce(self, value: object, path: str, base_dir: Path | None = None) -> Any:
        kind = str(self.type)  # normalised to a FIELD_TYPES name by __post_init__
        ok = {
            "bool": isinstance(value, bool),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, int | float) and not isinstance(value, bool),
            "str": isinstance(value, str),
            "path": isinstance(value, str | PurePath),
        }[kind]
        if not ok:
            raise ConfigError(path, describe_value(value), _EXPECTED[kind])
        if kind == "float":
            value = float(value)  # type: ignore[arg-type]
            if not math.isfinite(value):
                raise ConfigError(path, describe_value(value), "a finite number")
        if kind == "path":
            if value == "":
                raise ConfigError(path, "an empty string", "a path")
            value = Path(value)  # type: ignore[arg-type]
            if base_dir is not None and not value.is_absolute():
                value = base_dir / value
        return value

    def check(self, value: object, *, path: str, base_dir: Path | None = None) -> Any:
        """Return ``value`` converted to this field's type, or raise :class:`ConfigError`.

        Integers are accepted for ``float`` fields; ``path`` values become ``pathlib.Path``,
        relative ones joined to ``base_dir`` when it is given.
        """
        checked: Any = self._coerce(value, path, base_dir)
        if self.minimum is not None and checked < self.minimum:
            raise ConfigError(path, describe_value(checked), self._range())
        if self.maximum is not None and checked > self.maximum:
            raise ConfigError(path, describe_value(checked), self._range())
        if self.choices is not None and checked not in self.choices:
            raise ConfigError(path, describe_value(checked),
                              "one of " + ", ".join(repr(c) for c in self.choices))
        return checked

    def _range(self) -> str:
        what = _EXPECTED[str(self.type)]
        if self.minimum is not None and self.maximum is not None:
            return f"{what} from {self.minimum} to {self.maximum}"
        if self.minimum is not None:
            return f"{what} >= {self.minimum}"
        return f"{what} <= {self.maximum}"


@dataclass(frozen=True, slots=True)
class PairDescription:
    """A synthetic device pair: a VSP (root side) and a VSC (guest side) over one channel type.

    ``interface_id`` is the interface type GUID of the channel offer (fact sheet §3.3, §5.9).
    If the VSP class sets ``interface_id`` it must equal this one; if the VSC class lists
    ``interface_ids`` they must include it (a VSC binds by GUID). ``version`` is the pair's own
    version, dotted integers (``"1.0"``). ``config`` is the per-device schema a driver set's
    ``[vm.device.config]`` table is checked against.
    """

    name: str
    interface_id: uuid.UUID
    version: str
    vsp: type[Vsp]
    vsc: type[Vsc]
    config: tuple[ConfigField, ...] = ()
    summary: str = ""

    def __post_init__(self) -> None:
        owner = f"PairDescription {self.name!r}"
        _check_name(owner, self.name)
        _coerce_uuid(owner, self, "interface_id")
        _check(isinstance(self.version, str) and bool(_VERSION_RE.fullmatch(self.version)),
               owner, "version", self.version, "dotted integers like '1.0'")
        _check_class(owner, "vsp", self.vsp, Vsp)
        _check_class(owner, "vsc", self.vsc, Vsc)
        _check_driver_guids(owner, "pair", self.interface_id, self.vsp, "vsp", self.vsc, "vsc")
        _coerce_config(owner, self)
        _check_summary(owner, self.summary)


@dataclass(frozen=True, slots=True)
class IcDescription:
    """An Integration Component: a host-side service and a guest-side agent over a pipe-mode
    channel, speaking the IC framing of fact sheet §5.1.

    ``versions`` are the IC message versions the component speaks and ``framework_versions``
    the framework versions, each ``"major.minor"`` with u16 parts (§5.2), newest first: that is
    the preference order used in version negotiation.

    An IC is a device pair whose channel is a pipe: ``host`` is its root-side driver, a
    subclass of :class:`~winhv.drivers.vmbus.device.Vsp` (offered with
    ``OfferSpec(pipe_mode=True)``), and ``guest`` its guest-side driver, a subclass of
    :class:`~winhv.drivers.vmbus.device.Vsc`; both have the VSP/VSC lifecycle. As for a pair,
    a ``host.interface_id`` must equal ``interface_id`` and ``guest.interface_ids`` must
    include it.
    """

    name: str
    interface_id: uuid.UUID
    host: type
    guest: type
    versions: tuple[str, ...]
    framework_versions: tuple[str, ...] = DEFAULT_IC_FRAMEWORK_VERSIONS
    config: tuple[ConfigField, ...] = ()
    summary: str = ""

    def __post_init__(self) -> None:
        owner = f"IcDescription {self.name!r}"
        _check_name(owner, self.name)
        _coerce_uuid(owner, self, "interface_id")
        _check_class(owner, "host", self.host, Vsp)
        _check_class(owner, "guest", self.guest, Vsc)
        _check_driver_guids(owner, "IC", self.interface_id, self.host, "host", self.guest, "guest")
        for attr in ("versions", "framework_versions"):
            value = getattr(self, attr)
            if isinstance(value, list):
                value = tuple(value)
                object.__setattr__(self, attr, value)
            _check(isinstance(value, tuple) and len(value) > 0, owner, attr, value,
                   "a non-empty tuple of 'major.minor' strings")
            for index, version in enumerate(value):
                match = _IC_VERSION_RE.fullmatch(version) if isinstance(version, str) else None
                _check(match is not None and all(int(p) <= 0xFFFF for p in match.groups()),
                       owner, f"{attr}[{index}]", version,
                       "'major.minor' with each part 0..65535 (fact sheet §5.2)")
            _check(len(set(value)) == len(value), owner, attr, value, "no repeated version")
        _coerce_config(owner, self)
        _check_summary(owner, self.summary)


@dataclass(frozen=True, slots=True)
class VidServiceDescription:
    """A VID service: a root-side service of the virtualization stack that is not a VMBus
    device (it has no interface GUID and no guest half), configured per host.

    ``service`` is a subclass of :class:`~winhv.drivers.vid.VidService`: VID makes one
    instance per host with the validated ``[[host.service]]`` configuration, asks its
    ``admit()`` before each partition is created and tells it ``partition_created()`` and
    ``partition_destroyed()``."""

    name: str
    service: type
    config: tuple[ConfigField, ...] = ()
    summary: str = ""

    def __post_init__(self) -> None:
        owner = f"VidServiceDescription {self.name!r}"
        _check_name(owner, self.name)
        _check_class(owner, "service", self.service, VidService,
                     "winhv.plugins.api.VidService")
        _coerce_config(owner, self)
        _check_summary(owner, self.summary)


#: Any of the three description kinds.
Description: TypeAlias = PairDescription | IcDescription | VidServiceDescription


def validate_config(
    description: Description | tuple[ConfigField, ...],
    mapping: Mapping[str, Any] | None,
    *,
    path: str = "config",
    base_dir: Path | None = None,
) -> dict[str, Any]:
    """Check ``mapping`` against a description's configuration schema and apply defaults.

    Returns a new dict with exactly the schema's keys: given values converted to their field
    type, missing optional keys set to their default (``None`` if the field has none). Raises
    :class:`ConfigError` whose ``path`` is ``f"{path}.{key}"`` for an unknown key (listing the
    known ones), a missing required key, or a value of the wrong type, out of range or not
    among the choices. ``base_dir`` anchors relative ``path`` values (the driver set's folder).
    """
    fields = description if isinstance(description, tuple) else description.config
    given = dict(mapping or {})
    known = {f.name: f for f in fields}
    for key in given:
        if key not in known:
            expected = ("no keys: this schema is empty" if not known else
                        "one of " + ", ".join(sorted(known)) + did_you_mean(str(key), known))
            raise ConfigError(f"{path}.{key}", "an unknown key", expected)
    result: dict[str, Any] = {}
    for name, schema in known.items():
        key_path = f"{path}.{name}"
        if name in given:
            result[name] = schema.check(given[name], path=key_path, base_dir=base_dir)
        elif schema.required:
            raise ConfigError(key_path, "nothing (the key is missing)",
                              f"{_EXPECTED[str(schema.type)]}: this key is required")
        else:
            result[name] = schema.default
    return result

