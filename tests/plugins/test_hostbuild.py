"""``vm_spec``: a driver set's ``[[vm]]`` entry as the VMMS spec the worker boots."""

from __future__ import annotations

import sys
import types
import uuid

import pytest

from winhv.plugins._hostbuild import vm_spec
from winhv.plugins.api import discover, parse_driver_set
from winhv.vsp_vsc_pairs.storage import SCSI_INTERFACE_ID, StorVsc


class LoggingStorVsc(StorVsc):
    """An outside guest driver that replaces the storage VSC in one VM."""


@pytest.fixture
def my_drivers(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("my_drivers")
    module.LoggingStorVsc = LoggingStorVsc  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "my_drivers", module)


def test_an_override_is_bound_with_its_devices_configuration(my_drivers: None) -> None:
    ds = parse_driver_set(
        '[[vm]]\nname = "a"\nmemory_mb = 64\n'
        '[[vm.device]]\npair = "storage"\nconfig = { size_mb = 1, queue_depth = 7 }\n'
        '[vm.drivers]\nstorage = "my_drivers:LoggingStorVsc"\n',
        registry=discover().registry)
    spec = vm_spec(ds.vms[0])
    override = spec.overrides[uuid.UUID(SCSI_INTERFACE_ID)]
    assert override is not None
    assert issubclass(override, LoggingStorVsc)
    assert override.queue_depth == 7   # not the class default (64)
    [device] = spec.devices
    assert device.vsc is not None
    assert device.vsc.queue_depth == 7
