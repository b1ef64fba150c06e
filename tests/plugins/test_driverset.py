"""Driver sets: the documented example, the default set, and every kind of malformed file."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from winhv.drivers.vmbus._versions import VmbusVersion
from winhv.plugins.api import (
    ConfigField,
    DriverSetError,
    IcDescription,
    PairDescription,
    Registry,
    Source,
    VidService,
    VidServiceDescription,
    Vsc,
    Vsp,
    discover,
    load_default_driver_set,
    load_driver_set,
    parse_driver_set,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "driver-sets.md"
STORAGE_GUID = uuid.UUID("ba6163d9-04a1-4d29-b605-72e2ffb1dc7f")  # fact sheet §5.9
NETWORK_GUID = uuid.UUID("f8615163-df3e-46c5-913f-f2d2f965ed0e")
IC_GUIDS = {  # fact sheet §5.9
    "heartbeat": "57164f39-9115-4e78-ab55-382f3bd5422d",
    "shutdown": "0e0b6031-5213-4934-818b-38d90ced39db",
    "timesync": "9527e630-d0ae-497b-adce-e80ab0175caf",
    "kvp": "a9a0f4e7-5a45-4d96-b827-8a841e8c03e6",
}


class StorVsp(Vsp):
    pass


class StorVsc(Vsc):
    interface_ids = (STORAGE_GUID,)


class NetVsp(Vsp):
    pass


class NetVsc(Vsc):
    pass


class NotAVsc:
    pass


@pytest.fixture(scope="module")
def registry() -> Registry:
    """Stand-ins for the built-in storage and network pairs, ICs and a VID service."""
    reg = Registry()
    src = Source("winhv", "0.1.0", "builtin")
    reg.add_batch([
        PairDescription("storage", STORAGE_GUID, "1.0", StorVsp, StorVsc, config=(
            ConfigField("size_mb", int, required=True, minimum=1, maximum=1 << 20),
            ConfigField("backing", "path"),
            ConfigField("read_only", bool, default=False),
        )),
        PairDescription("network", NETWORK_GUID, "1.0", NetVsp, NetVsc),
        *(IcDescription(name, guid, Vsp, Vsc, ("3.0", "1.0"))
          for name, guid in IC_GUIDS.items() if name != "kvp"),
        IcDescription("kvp", IC_GUIDS["kvp"], Vsp, Vsc, ("4.0",),
                      config=(ConfigField("pool_size", int, default=16, minimum=1),)),
        VidServiceDescription("balloon", VidService),
    ], src)
    return reg


def doc_blocks() -> list[str]:
    return re.findall(r"^```(?:toml)?\n(.*?)^```$", DOCS.read_text(), flags=re.S | re.M)


def test_the_documented_complete_example_is_valid_with_the_installed_plugins(
        tmp_path: Path) -> None:
    example, _errors = doc_blocks()
    path = tmp_path / "example.toml"
    path.write_text(example)
    ds = load_driver_set(path, discover().registry)   # the real, installed plugins
    assert ds.host.vmbus_version is VmbusVersion.WIN10_V5_2
    assert (ds.host.root_memory_mb, ds.host.root_processors, ds.host.seed) == (4096, 4, 1234)
    assert [(s.name, s.config) for s in ds.host.services] == [
        ("memory-reserve", {"reserve_mb": 128})]
    web, batch = ds.vms
    assert (web.name, web.memory_mb, web.processors) == ("web", 2048, 2)
    assert [ic.name for ic in web.ics] == ["heartbeat", "shutdown", "timesync", "kvp"]
    assert web.ics[3].config["items"] == "Role=web;Tier=front"
    assert [(d.name, d.pair) for d in web.devices] == [
        ("boot-disk", "storage"), ("storage1", "storage")]
    assert web.devices[0].config["path"] == tmp_path.resolve() / "disks/web.img"
    assert web.devices[1].config["block_size"] == 4096
    from winhv.vsp_vsc_pairs.storage import StorVsc as BuiltinStorVsc

    assert web.driver_for(STORAGE_GUID) is BuiltinStorVsc
    assert (batch.name, batch.memory_mb, batch.processors, batch.devices) == ("batch", 512, 1, ())
    assert ds.vm("batch") is batch


#: The input behind each error line docs/driver-sets.md shows.
_DOC_ERRORS = [
    '[[vm]]\nname = "web"\nmemroy_mb = 64\n',
    '[[vm]]\nname = "web"\nmemory_mb = 64\n[[vm]]\nname = "db"\nmemory_mb = 16\n',
    '[[vm]]\nname = "web"\nmemory_mb = 64\n[[vm]]\nname = "web"\nmemory_mb = 64\n',
    '[[vm]]\nname = "web"\nmemory_mb = 64\n[[vm.device]]\npair = "storage"\n'
    '[[vm.device]]\npair = "strage"\n',
    '[[vm]]\nname = "web"\nmemory_mb = 64\nics = ["kvp", "hartbeat"]\n',
    '[[vm]]\nname = "web"\nmemory_mb = 64\n[[vm.device]]\npair = "storage"\n'
    'config = { size_mb = "512" }\n',
    '[[vm]]\nname = "web"\nmemory_mb = 64\n[[vm.device]]\npair = "storage"\n'
    'config = { size_mb = 0 }\n',
    '[[vm]]\nname = "web"\nmemory_mb = \n',
]


def test_every_documented_error_line_is_what_the_installed_plugins_report() -> None:
    registry = discover().registry
    shown = doc_blocks()[1].splitlines()
    produced = []
    for text in _DOC_ERRORS:
        with pytest.raises(DriverSetError) as info:
            parse_driver_set(text, source="web.toml", registry=registry)
        produced.append(str(info.value))
    assert produced == shown


def test_the_builtin_default_driver_set_validates_against_the_builtin_plugin() -> None:
    ds = load_default_driver_set(discover().registry)
    assert ds.source == "winhv.plugins/default.toml"
    assert [vm.name for vm in ds.vms] == ["default"]
    assert ds.host.vmbus_version is VmbusVersion.WIN10_V5_3


@pytest.mark.parametrize(("text", "version"), [
    ('"5.3"', VmbusVersion.WIN10_V5_3), ('"win10"', VmbusVersion.WIN10),
    ('"VERSION_WIN8_1"', VmbusVersion.WIN8_1), ('"0.13"', VmbusVersion.WS2008),
])
def test_vmbus_version_caps_by_number_or_linux_name(registry: Registry, text: str,
                                                    version: VmbusVersion) -> None:
    ds = parse_driver_set(f"[host]\nvmbus_version = {text}\n", registry=registry)
    assert ds.host.vmbus_version is version


def test_driver_override_by_guid_with_a_pair_name_value(registry: Registry) -> None:
    ds = parse_driver_set(f'[[vm]]\nname = "a"\nmemory_mb = 64\n[vm.drivers]\n'
                          f'"{NETWORK_GUID}" = "storage"\n', registry=registry)
    assert ds.vms[0].driver_for(NETWORK_GUID) is StorVsc


_VM = '[[vm]]\nname = "a"\nmemory_mb = 64\n'
_ERRORS = [
    pytest.param("[host\n", "f.toml:1:6: found a TOML syntax error (Expected ']' at the end of "
                 "a table declaration), expected valid TOML", id="bad-toml"),
    pytest.param("[[vm]]\nname = \n", "f.toml:2:8: found a TOML syntax error (Invalid value), "
                 "expected valid TOML", id="bad-toml-value"),
    pytest.param("colour = 1\n", "f.toml: colour: found an unknown key, expected one of host, vm",
                 id="unknown-top-key"),
    pytest.param('[[vm]]\nname = "a"\nmemroy_mb = 64\n', "f.toml: vm[0].memroy_mb: found an "
                 "unknown key, expected one of device, drivers, ic, ics, memory_mb, name, "
                 "processors (did you mean 'memory_mb'?)", id="unknown-vm-key"),
    pytest.param(_VM + '[[vm.device]]\npair = "storage"\nsize = 1\n', "f.toml: vm[0].device[0]"
                 ".size: found an unknown key, expected one of config, name, pair",
                 id="unknown-device-key"),
    pytest.param(_VM + '[[vm.device]]\npair = "storage"\nconfig = { size_mb = 1, sizemb = 2 }\n',
                 "f.toml: vm[0].device[0].config.sizemb: found an unknown key, expected one of "
                 "backing, read_only, size_mb (did you mean 'size_mb'?)", id="unknown-config-key"),
    pytest.param('[[vm]]\nname = "a"\nmemory_mb = "64"\n', "f.toml: vm[0].memory_mb: found "
                 "'64' (a string), expected an integer (MiB)", id="memory-wrong-type"),
    pytest.param('[[vm]]\nname = "a"\nmemory_mb = 16\n', "f.toml: vm[0].memory_mb: found 16 "
                 "(an integer), expected an integer (MiB) from 32 to 12582912",
                 id="memory-too-small"),
    pytest.param('[[vm]]\nname = "a"\nmemory_mb = 12582913\n', "f.toml: vm[0].memory_mb: found "
                 "12582913 (an integer), expected an integer (MiB) from 32 to 12582912",
                 id="memory-too-large"),
    pytest.param('[[vm]]\nname = "a"\n', "f.toml: vm[0].memory_mb: found nothing (the key is "
                 "missing), expected an integer: this key is required", id="memory-missing"),
    pytest.param(_VM + "processors = 241\n", "f.toml: vm[0].processors: found 241 (an integer), "
                 "expected an integer from 1 to 240", id="too-many-processors"),
    pytest.param(_VM + "processors = true\n", "f.toml: vm[0].processors: found True (a boolean)"
                 ", expected an integer", id="processors-bool"),
    pytest.param(_VM + _VM, "f.toml: vm[1].name: found 'a' again (also vm[0].name), expected a "
                 "VM name not used by another [[vm]]", id="duplicate-vm-name"),
    pytest.param('[[vm]]\nname = 3\nmemory_mb = 64\n', "f.toml: vm[0].name: found 3 (an "
                 "integer), expected a string", id="vm-name-type"),
    pytest.param('vm = { name = "a" }\n', "f.toml: vm: found a table, expected an array of "
                 "tables", id="vm-not-array"),
    pytest.param(_VM + '[[vm.device]]\npair = "strage"\n', "f.toml: vm[0].device[0].pair: found "
                 "unknown pair 'strage', expected one of network, storage (did you mean "
                 "'storage'?)", id="unknown-pair"),
    pytest.param(_VM + '[[vm.device]]\npair = "storage"\nconfig = { size_mb = "512" }\n',
                 "f.toml: vm[0].device[0].config.size_mb: found '512' (a string), expected an "
                 "integer", id="config-wrong-type"),
    pytest.param(_VM + '[[vm.device]]\npair = "storage"\nconfig = { size_mb = 0 }\n',
                 "f.toml: vm[0].device[0].config.size_mb: found 0 (an integer), expected an "
                 "integer from 1 to 1048576", id="config-out-of-range"),
    pytest.param(_VM + '[[vm.device]]\npair = "storage"\n', "f.toml: vm[0].device[0].config."
                 "size_mb: found nothing (the key is missing), expected an integer: this key is "
                 "required", id="config-required-missing"),
    pytest.param(_VM + '[[vm.device]]\npair = "network"\nname = "n"\n[[vm.device]]\n'
                 'pair = "network"\nname = "n"\n', "f.toml: vm[0].device[1].name: found 'n' "
                 "again (also vm[0].device[0]), expected a device name not used by another "
                 "device of this VM", id="duplicate-device-name"),
    pytest.param(_VM + 'ics = ["heartbeat", "heartbeat"]\n', "f.toml: vm[0].ics[1]: found "
                 "'heartbeat' again (also vm[0].ics[0]), expected each IC at most once",
                 id="duplicate-ic"),
    pytest.param(_VM + 'ics = ["hartbeat"]\n', "f.toml: vm[0].ics[0]: found unknown ic "
                 "'hartbeat', expected one of heartbeat, kvp, shutdown, timesync (did you mean "
                 "'heartbeat'?)", id="unknown-ic"),
    pytest.param(_VM + '[[vm.ic]]\nname = "kvp"\nconfig = { pool_size = 0 }\n', "f.toml: "
                 "vm[0].ic[0].config.pool_size: found 0 (an integer), expected an integer >= 1",
                 id="ic-config"),
    pytest.param('[host]\nvmbus_version = "7.0"\n', "f.toml: host.vmbus_version: found '7.0' "
                 "(a string), expected a VMBus version: one of 0.13 (WS2008), 1.1 (WIN7), 2.4 "
                 "(WIN8), 3.0 (WIN8_1), 4.0 (WIN10), 4.1 (WIN10_V4_1), 5.0 (WIN10_V5), 5.1 "
                 "(WIN10_V5_1), 5.2 (WIN10_V5_2), 5.3 (WIN10_V5_3), 6.0 (WIN10_V6_0)",
                 id="bad-vmbus-version"),
    pytest.param('[host]\nseed = -1\n', "f.toml: host.seed: found -1 (an integer), expected an "
                 "integer from 0 to 18446744073709551615", id="negative-seed"),
    pytest.param('[host]\nservices = ["ballon"]\n', "f.toml: host.services[0]: found unknown "
                 "vid-service 'ballon', expected one of balloon (did you mean 'balloon'?)",
                 id="unknown-service"),
    pytest.param(_VM + '[vm.drivers]\nstorage = "no_such_module_x:Vsc"\n', "f.toml: "
                 "vm[0].drivers.storage: found 'no_such_module_x:Vsc', which cannot be imported "
                 "(ModuleNotFoundError: No module named 'no_such_module_x'), expected a pair "
                 "name or an importable 'module:Class' path to a Vsc subclass",
                 id="override-unimportable"),
    pytest.param(_VM + f'[vm.drivers]\nstorage = "{__name__}:NotAVsc"\n', "f.toml: "
                 f"vm[0].drivers.storage: found '{__name__}:NotAVsc', which is <class "
                 f"'{__name__}.NotAVsc'>, expected a pair name or an importable 'module:Class' "
                 "path to a Vsc subclass", id="override-not-a-vsc"),
    pytest.param(_VM + '[vm.drivers]\n"00000000-0000-0000-0000-000000000001" = "storage"\n',
                 'f.toml: vm[0].drivers.00000000-0000-0000-0000-000000000001: found interface '
                 "GUID 00000000-0000-0000-0000-000000000001, which no registered pair offers, "
                 f"expected a pair name or the interface GUID of a registered pair: "
                 f"{NETWORK_GUID} (network), {STORAGE_GUID} (storage)", id="override-unknown-guid"),
    pytest.param(_VM + f'[vm.drivers]\nstorage = "network"\n"{STORAGE_GUID}" = "network"\n',
                 f'f.toml: vm[0].drivers.{STORAGE_GUID}: found a second override of interface '
                 f"{STORAGE_GUID} (also vm[0].drivers.storage), expected one override per "
                 "interface", id="override-twice"),
]


@pytest.mark.parametrize(("text", "message"), _ERRORS)
def test_a_malformed_driver_set_is_one_precise_error(registry: Registry, text: str,
                                                     message: str) -> None:
    with pytest.raises(DriverSetError) as info:
        parse_driver_set(text, source="f.toml", registry=registry)
    assert str(info.value) == message
    assert info.value.source == "f.toml"


def test_error_carries_path_found_expected_and_position(registry: Registry) -> None:
    with pytest.raises(DriverSetError) as info:
        parse_driver_set(_VM + '[[vm.device]]\npair = "storage"\nconfig = { size_mb = 0 }\n',
                         source="f.toml", registry=registry)
    err = info.value
    assert (err.path, err.found, err.expected, err.line) == (
        "vm[0].device[0].config.size_mb", "0 (an integer)", "an integer from 1 to 1048576", None)
    with pytest.raises(DriverSetError) as info:
        parse_driver_set("a = [\n", source="f.toml", registry=registry)
    assert (info.value.path, info.value.line, info.value.column) == ("", 2, 1)


def test_unknown_pair_with_an_empty_registry_says_none_are_registered() -> None:
    with pytest.raises(DriverSetError, match=r"found unknown pair 'storage', expected a "
                       r"registered pair name \(no plugin registers any pair\)$"):
        parse_driver_set(_VM + '[[vm.device]]\npair = "storage"\n', registry=Registry())


def test_unreadable_and_non_utf8_files_are_driver_set_errors(tmp_path: Path,
                                                            registry: Registry) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(DriverSetError, match=r"missing\.toml: found a file that cannot be read "
                       r"\(No such file or directory\), expected a readable TOML file$"):
        load_driver_set(missing, registry)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b"# caf\xe9\n")
    with pytest.raises(DriverSetError, match=r"found bytes that are not UTF-8 \(at offset 5\)"):
        load_driver_set(latin, registry)
