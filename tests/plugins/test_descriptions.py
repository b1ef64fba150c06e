"""Descriptions validate themselves; validate_config applies a schema with key-path errors."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from winhv.plugins.api import (
    ConfigError,
    ConfigField,
    DescriptionError,
    IcDescription,
    PairDescription,
    VidService,
    VidServiceDescription,
    Vsc,
    Vsp,
    validate_config,
)

GUID = uuid.UUID("ba6163d9-04a1-4d29-b605-72e2ffb1dc7f")


class AVsp(Vsp):
    pass


class AVsc(Vsc):
    pass


def pair(**changes: Any) -> PairDescription:
    fields: dict[str, Any] = {"name": "storage", "interface_id": GUID, "version": "1.0",
                              "vsp": AVsp, "vsc": AVsc}
    fields.update(changes)
    return PairDescription(**fields)


def test_a_valid_pair_normalises_its_guid_string_and_config_list() -> None:
    d = pair(interface_id=str(GUID), config=[ConfigField("size_mb", int, default=8)])
    assert d.interface_id == GUID
    assert d.config == (ConfigField("size_mb", "int", default=8),)


@pytest.mark.parametrize(("changes", "message"), [
    ({"name": "Storage"}, "PairDescription 'Storage': name: found 'Storage', expected a "
     "lowercase name like 'storage' or 'synthetic-net' ([a-z][a-z0-9_-]*)"),
    ({"interface_id": "not-a-guid"}, "PairDescription 'storage': interface_id: found "
     "'not-a-guid', expected a GUID like 'ba6163d9-04a1-4d29-b605-72e2ffb1dc7f'"),
    ({"interface_id": uuid.UUID(int=0)}, "PairDescription 'storage': interface_id: found "
     "UUID('00000000-0000-0000-0000-000000000000'), expected a non-nil GUID"),
    ({"version": "v1"}, "PairDescription 'storage': version: found 'v1', expected dotted "
     "integers like '1.0'"),
    ({"vsp": AVsc}, f"PairDescription 'storage': vsp: found {AVsc!r}, expected a subclass of "
     "winhv.drivers.vmbus.device.Vsp"),
    ({"vsc": object}, "PairDescription 'storage': vsc: found <class 'object'>, expected a "
     "subclass of winhv.drivers.vmbus.device.Vsc"),
    ({"config": (ConfigField("a", int), ConfigField("a", str))}, "PairDescription 'storage': "
     "config[1].name: found 'a', expected a name not used by another field of this description"),
    ({"config": ("a",)}, "PairDescription 'storage': config[0]: found 'a', expected a "
     "ConfigField"),
    ({"summary": None}, "PairDescription 'storage': summary: found None, expected a string"),
])
def test_a_malformed_pair_names_itself_and_the_field(changes: dict[str, Any],
                                                      message: str) -> None:
    with pytest.raises(DescriptionError) as info:
        pair(**changes)
    assert str(info.value) == message


def test_vsp_and_vsc_guids_must_agree_with_the_pair() -> None:
    other = uuid.uuid4()
    vsp = type("V", (Vsp,), {"interface_id": other})
    with pytest.raises(DescriptionError, match=r"vsp\.interface_id: found UUID\('"):
        pair(vsp=vsp)
    vsc = type("C", (Vsc,), {"interface_ids": (other,)})
    with pytest.raises(DescriptionError, match=r"vsc\.interface_ids: .* expected a tuple "
                       r"containing the pair's interface_id"):
        pair(vsc=vsc)
    assert pair(vsc=type("C2", (Vsc,), {"interface_ids": (other, GUID)})).vsc.interface_ids


def test_ic_versions_are_u16_major_minor_without_repeats() -> None:
    ic = IcDescription("heartbeat", "57164f39-9115-4e78-ab55-382f3bd5422d", AVsp, AVsc,
                       ["3.0", "1.0"])
    assert ic.versions == ("3.0", "1.0")
    assert ic.framework_versions == ("3.0", "1.0")
    with pytest.raises(DescriptionError, match=r"versions\[0\]: found '65536\.0', expected "
                       r"'major\.minor' with each part 0\.\.65535 \(fact sheet §5\.2\)"):
        IcDescription("hb", GUID, AVsp, AVsc, ("65536.0",))
    with pytest.raises(DescriptionError, match=r"versions: found \(\), expected a non-empty"):
        IcDescription("hb", GUID, AVsp, AVsc, ())
    with pytest.raises(DescriptionError, match="no repeated version"):
        IcDescription("hb", GUID, AVsp, AVsc, ("1.0", "1.0"))


def test_an_ic_is_a_vsp_and_a_vsc_that_agree_on_its_guid() -> None:
    vsp_path = r"winhv\.drivers\.vmbus\.device\.Vsp"
    with pytest.raises(DescriptionError, match=r"IcDescription 'hb': host: found 3, expected a "
                       r"subclass of " + vsp_path):
        IcDescription("hb", GUID, 3, AVsc, ("1.0",))  # type: ignore[arg-type]
    with pytest.raises(DescriptionError, match=r"host: found <class 'object'>, expected a "
                       r"subclass of " + vsp_path):
        IcDescription("hb", GUID, object, AVsc, ("1.0",))
    with pytest.raises(DescriptionError, match=r"guest: found <class '.*AVsp'>, expected a "
                       r"subclass of winhv\.drivers\.vmbus\.device\.Vsc"):
        IcDescription("hb", GUID, AVsp, AVsp, ("1.0",))
    other = uuid.UUID("11111111-0000-4000-8000-000000000001")
    host = type("H", (Vsp,), {"interface_id": other})
    with pytest.raises(DescriptionError, match=r"host\.interface_id: found UUID\('11111111-.*"
                       r"expected the IC's interface_id ba6163d9-"):
        IcDescription("hb", GUID, host, AVsc, ("1.0",))
    guest = type("G", (Vsc,), {"interface_ids": (other,)})
    with pytest.raises(DescriptionError, match=r"guest\.interface_ids: .* expected a tuple "
                       r"containing the IC's interface_id"):
        IcDescription("hb", GUID, AVsp, guest, ("1.0",))


def test_a_vid_service_is_a_vid_service_subclass() -> None:
    with pytest.raises(DescriptionError, match=r"VidServiceDescription 'clock': service: found "
                       r"'Clock', expected a subclass of winhv\.plugins\.api\.VidService$"):
        VidServiceDescription("clock", "Clock")  # type: ignore[arg-type]
    with pytest.raises(DescriptionError, match=r"VidServiceDescription 'clock': service: found "
                       r"<class 'object'>, expected a subclass of winhv\.plugins\.api\."
                       r"VidService$"):
        VidServiceDescription("clock", object)
    clock = type("Clock", (VidService,), {})
    assert VidServiceDescription("clock", clock).service is clock


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"type": "list"}, "type: found 'list', expected one of bool, int, float, str, path (or bool, "
     "int, float, str, pathlib.Path)"),
    ({"type": int, "default": "1"}, "default: found '1', expected an integer"),
    ({"type": int, "default": 0, "minimum": 1}, "default: found 0, expected an integer >= 1"),
    ({"type": str, "minimum": 1}, "minimum: found 1, expected None: bounds apply to int and "
     "float fields only"),
    ({"type": int, "minimum": 5, "maximum": 1}, "maximum: found 1, expected a number >= "
     "minimum (5)"),
    ({"type": int, "required": True, "default": 3}, "default: found 3, expected None for a "
     "required field"),
    ({"type": str, "choices": ("a", 1)}, "choices[1]: found 1, expected a string"),
    ({"type": str, "choices": ()}, "choices: found (), expected at least one choice, or None"),
])
def test_a_malformed_config_field_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(DescriptionError) as info:
        ConfigField("f", **kwargs)
    assert str(info.value) == f"ConfigField 'f': {message}"


SCHEMA = (
    ConfigField("size_mb", int, required=True, minimum=1, maximum=1024),
    ConfigField("ratio", float, default=0.5, minimum=0, maximum=1),
    ConfigField("read_only", bool, default=False),
    ConfigField("mode", str, default="fast", choices=("fast", "safe")),
    ConfigField("backing", Path),
)


def test_validate_config_applies_defaults_types_and_base_dir(tmp_path: Path) -> None:
    assert validate_config(SCHEMA, {"size_mb": 4, "ratio": 1, "backing": "d.img"},
                           base_dir=tmp_path) == {
        "size_mb": 4, "ratio": 1.0, "read_only": False, "mode": "fast",
        "backing": tmp_path / "d.img"}
    assert validate_config(SCHEMA, {"size_mb": 4, "backing": "/abs.img"})["backing"] == Path(
        "/abs.img")


@pytest.mark.parametrize(("given_", "message"), [
    ({}, "c.size_mb: found nothing (the key is missing), expected an integer: this key is "
     "required"),
    ({"size_mb": 4, "colour": 1}, "c.colour: found an unknown key, expected one of backing, "
     "mode, ratio, read_only, size_mb"),
    ({"size_mb": 4.0}, "c.size_mb: found 4.0 (a number), expected an integer"),
    ({"size_mb": True}, "c.size_mb: found True (a boolean), expected an integer"),
    ({"size_mb": 2048}, "c.size_mb: found 2048 (an integer), expected an integer from 1 to 1024"),
    ({"size_mb": 1, "ratio": 1.5}, "c.ratio: found 1.5 (a number), expected a number from 0 "
     "to 1"),
    ({"size_mb": 1, "ratio": float("nan")}, "c.ratio: found nan (a number), expected a finite "
     "number"),
    ({"size_mb": 1, "read_only": "yes"}, "c.read_only: found 'yes' (a string), expected a "
     "boolean (true or false)"),
    ({"size_mb": 1, "mode": "slow"}, "c.mode: found 'slow' (a string), expected one of 'fast', "
     "'safe'"),
    ({"size_mb": 1, "backing": ""}, "c.backing: found an empty string, expected a path"),
])
def test_validate_config_errors_name_the_key_path(given_: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(SCHEMA, given_, path="c")
    assert str(info.value) == message


def test_validate_config_on_an_empty_schema_refuses_every_key() -> None:
    with pytest.raises(ConfigError, match=r"^config\.x: found an unknown key, expected no keys"):
        validate_config(pair(), {"x": 1})
    assert validate_config(pair(), None) == {}


_BOUNDED = ConfigField("n", int, minimum=-100, maximum=100)


@given(st.integers(min_value=-(2**70), max_value=2**70))
def test_an_int_field_accepts_exactly_its_range(value: int) -> None:
    if -100 <= value <= 100:
        assert _BOUNDED.check(value, path="n") == value
    else:
        with pytest.raises(ConfigError, match=r"expected an integer from -100 to 100$"):
            _BOUNDED.check(value, path="n")
