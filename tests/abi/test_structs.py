"""Sizes and key offsets of every hypercall input/output block against fact sheet §1.7, plus
the special constants and the precompiled hot-path codecs."""

from __future__ import annotations

import ctypes

import pytest

import winhv.abi as abi
from winhv.abi import (
    HYPERCALLS,
    POST_MESSAGE_HEADER,
    SIGNAL_EVENT,
    HvCallCode,
    HvPortInfo,
    HvPortType,
    PostMessageInput,
    SignalEventInput,
)

# name -> (size, {field: offset}) from §1.7, by hand.
SHEET_LAYOUTS: dict[str, tuple[int, dict[str, int]]] = {
    "HvProximityDomainInfo": (8, {"domain_id": 0, "flags": 4}),
    "HvPortInfo": (24, {"port_type": 0, "info": 8}),
    "HvMessagePortInfo": (16, {"target_sint": 0, "target_vp": 4, "reserved": 8}),
    "HvEventPortInfo": (
        16,
        {"target_sint": 0, "target_vp": 4, "base_flag_number": 8, "flag_count": 10, "reserved": 12},
    ),
    "HvMonitorPortInfo": (16, {"monitor_address": 0}),
    "HvConnectionInfo": (32, {"port_type": 0, "info": 8}),
    "HvMonitorConnectionInfo": (8, {"monitor_address": 0}),
    "HvDoorbellConnectionInfo": (24, {"gpa": 0, "trigger_value": 8, "flags": 16}),
    "PostMessageInput": (
        256,
        {"connection_id": 0, "reserved": 4, "message_type": 8, "payload_size": 12, "payload": 16},
    ),
    "SignalEventInput": (8, {"connection_id": 0, "flag_number": 4, "reserved": 6}),
    "SignalEventDirectInput": (
        16,
        {
            "target_partition": 0,
            "target_vp": 8,
            "target_vtl": 12,
            "target_sint": 13,
            "flag_number": 14,
        },
    ),
    "SignalEventDirectOutput": (8, {"newly_signaled": 0}),
    "PostMessageDirectInput": (
        280,
        {"partition_id": 0, "vp_index": 8, "vtl": 12, "sint": 16, "message": 20},
    ),
    "CreatePartitionInput": (
        56,
        {
            "flags": 0,
            "proximity_domain_info": 8,
            "compatibility_version": 16,
            "padding": 20,
            "disabled_processor_features": 24,
            "disabled_processor_xsave_features": 40,
            "isolation_properties": 48,
        },
    ),
    "CreatePartitionOutput": (8, {"partition_id": 0}),
    "InitializePartitionInput": (8, {"partition_id": 0}),
    "FinalizePartitionInput": (8, {"partition_id": 0}),
    "DeletePartitionInput": (8, {"partition_id": 0}),
    "GetPartitionPropertyInput": (16, {"partition_id": 0, "property_code": 8, "reserved": 12}),
    "GetPartitionPropertyOutput": (8, {"property_value": 0}),
    "SetPartitionPropertyInput": (
        24,
        {"partition_id": 0, "property_code": 8, "padding": 12, "property_value": 16},
    ),
    "GetPartitionIdOutput": (8, {"partition_id": 0}),
    "GetNextChildPartitionInput": (
        16,
        {"parent_partition_id": 0, "previous_child_partition_id": 8},
    ),
    "GetNextChildPartitionOutput": (8, {"next_child_partition_id": 0}),
    "DepositMemoryInput": (8, {"partition_id": 0}),
    "WithdrawMemoryInput": (16, {"partition_id": 0, "proximity_domain_info": 8}),
    "GetMemoryBalanceInput": (16, {"partition_id": 0, "proximity_domain_info": 8}),
    "GetMemoryBalanceOutput": (16, {"pages_available": 0, "pages_in_use": 8}),
    "MapGpaPagesInput": (
        24,
        {"target_partition_id": 0, "target_gpa_base": 8, "map_flags": 16, "padding": 20},
    ),
    "UnmapGpaPagesInput": (
        24,
        {"target_partition_id": 0, "target_gpa_base": 8, "unmap_flags": 16, "padding": 20},
    ),
    "InstallInterceptInput": (
        24,
        {"partition_id": 0, "access_type": 8, "intercept_type": 12, "intercept_parameter": 16},
    ),
    "CreateVpInput": (
        40,
        {
            "partition_id": 0,
            "vp_index": 8,
            "reserved": 12,
            "subnode_type": 15,
            "subnode_id": 16,
            "proximity_domain_info": 24,
            "flags": 32,
        },
    ),
    "DeleteVpInput": (16, {"partition_id": 0, "vp_index": 8, "reserved": 12}),
    "GetVpRegistersInput": (
        16,
        {"partition_id": 0, "vp_index": 8, "target_vtl": 12, "reserved": 13},
    ),
    "SetVpRegistersInput": (
        16,
        {"partition_id": 0, "vp_index": 8, "target_vtl": 12, "reserved": 13},
    ),
    "HvRegisterValue": (16, {"low": 0, "high": 8}),
    "SetVpRegistersElement": (32, {"name": 0, "reserved1": 4, "reserved2": 8, "value": 16}),
    "TranslateVirtualAddressInput": (
        32,
        {"partition_id": 0, "vp_index": 8, "padding": 12, "control_flags": 16, "gva_page": 24},
    ),
    "TranslateVirtualAddressOutput": (16, {"translation_result": 0, "gpa_page": 8}),
    "FlushVirtualAddressSpaceInput": (24, {"address_space": 0, "flags": 8, "processor_mask": 16}),
    "FlushVirtualAddressListInput": (24, {"address_space": 0, "flags": 8, "processor_mask": 16}),
    "SendSyntheticClusterIpiInput": (
        16,
        {"vector": 0, "target_vtl": 4, "padding": 5, "processor_mask": 8},
    ),
    "CreatePortInput": (
        56,
        {
            "port_partition": 0,
            "port_id": 8,
            "port_vtl": 12,
            "min_connection_vtl": 13,
            "reserved": 14,
            "connection_partition": 16,
            "port_info": 24,
            "proximity_domain_info": 48,
        },
    ),
    "ConnectPortInput": (
        72,
        {
            "connection_partition": 0,
            "connection_id": 8,
            "connection_vtl": 12,
            "reserved1": 13,
            "port_partition": 16,
            "port_id": 24,
            "reserved2": 28,
            "connection_info": 32,
            "proximity_domain_info": 64,
        },
    ),
    "DeletePortInput": (16, {"port_partition": 0, "port_id": 8, "reserved": 12}),
    "DisconnectPortInput": (16, {"connection_partition": 0, "connection_id": 8, "flags": 12}),
}

# Input/output structure of each call whose block size the table gives.
CALL_BLOCKS: dict[HvCallCode, tuple[str | None, str | None]] = {
    HvCallCode.FLUSH_VIRTUAL_ADDRESS_SPACE: ("FlushVirtualAddressSpaceInput", None),
    HvCallCode.FLUSH_VIRTUAL_ADDRESS_LIST: ("FlushVirtualAddressListInput", None),
    HvCallCode.SEND_SYNTHETIC_CLUSTER_IPI: ("SendSyntheticClusterIpiInput", None),
    HvCallCode.CREATE_PARTITION: ("CreatePartitionInput", "CreatePartitionOutput"),
    HvCallCode.INITIALIZE_PARTITION: ("InitializePartitionInput", None),
    HvCallCode.FINALIZE_PARTITION: ("FinalizePartitionInput", None),
    HvCallCode.DELETE_PARTITION: ("DeletePartitionInput", None),
    HvCallCode.GET_PARTITION_PROPERTY: ("GetPartitionPropertyInput", "GetPartitionPropertyOutput"),
    HvCallCode.SET_PARTITION_PROPERTY: ("SetPartitionPropertyInput", None),
    HvCallCode.GET_PARTITION_ID: (None, "GetPartitionIdOutput"),
    HvCallCode.GET_NEXT_CHILD_PARTITION: (
        "GetNextChildPartitionInput",
        "GetNextChildPartitionOutput",
    ),
    HvCallCode.DEPOSIT_MEMORY: ("DepositMemoryInput", None),
    HvCallCode.WITHDRAW_MEMORY: ("WithdrawMemoryInput", None),
    HvCallCode.GET_MEMORY_BALANCE: ("GetMemoryBalanceInput", "GetMemoryBalanceOutput"),
    HvCallCode.MAP_GPA_PAGES: ("MapGpaPagesInput", None),
    HvCallCode.UNMAP_GPA_PAGES: ("UnmapGpaPagesInput", None),
    HvCallCode.INSTALL_INTERCEPT: ("InstallInterceptInput", None),
    HvCallCode.CREATE_VP: ("CreateVpInput", None),
    HvCallCode.DELETE_VP: ("DeleteVpInput", None),
    HvCallCode.GET_VP_REGISTERS: ("GetVpRegistersInput", None),
    HvCallCode.SET_VP_REGISTERS: ("SetVpRegistersInput", None),
    HvCallCode.TRANSLATE_VIRTUAL_ADDRESS: (
        "TranslateVirtualAddressInput",
        "TranslateVirtualAddressOutput",
    ),
    HvCallCode.DELETE_PORT: ("DeletePortInput", None),
    HvCallCode.DISCONNECT_PORT: ("DisconnectPortInput", None),
    HvCallCode.POST_MESSAGE: ("PostMessageInput", None),
    HvCallCode.SIGNAL_EVENT: ("SignalEventInput", None),
    HvCallCode.CREATE_PORT: ("CreatePortInput", None),
    HvCallCode.CONNECT_PORT: ("ConnectPortInput", None),
    HvCallCode.SIGNAL_EVENT_DIRECT: ("SignalEventDirectInput", "SignalEventDirectOutput"),
    HvCallCode.POST_MESSAGE_DIRECT: ("PostMessageDirectInput", None),
}


@pytest.mark.parametrize("name", sorted(SHEET_LAYOUTS))
def test_size_and_offsets_match_sheet(name: str) -> None:
    cls = getattr(abi, name)
    size, offsets = SHEET_LAYOUTS[name]
    assert ctypes.sizeof(cls) == size
    for field, offset in offsets.items():
        assert getattr(cls, field).offset == offset, f"{name}.{field}"


def test_every_exported_structure_is_checked() -> None:
    exported = {
        name
        for name in abi.__all__
        if isinstance(getattr(abi, name), type)
        and issubclass(getattr(abi, name), ctypes.Structure)
        and getattr(abi, name).__module__ == "winhv._structs"
    }
    assert exported == set(SHEET_LAYOUTS)


@pytest.mark.parametrize("name", sorted(SHEET_LAYOUTS))
def test_structures_are_packed_little_endian_ms_layout(name: str) -> None:
    cls = getattr(abi, name)
    assert cls._pack_ == 1
    assert cls._layout_ == "ms"
    assert issubclass(cls, ctypes.LittleEndianStructure)


@pytest.mark.parametrize("code", sorted(CALL_BLOCKS))
def test_structures_agree_with_the_hypercall_table(code: HvCallCode) -> None:
    info = HYPERCALLS[code]
    input_name, output_name = CALL_BLOCKS[code]
    assert info.input_size == (ctypes.sizeof(getattr(abi, input_name)) if input_name else 0)
    assert info.output_size == (ctypes.sizeof(getattr(abi, output_name)) if output_name else 0)


def test_rep_element_sizes_agree_with_structures() -> None:
    assert HYPERCALLS[HvCallCode.SET_VP_REGISTERS].rep_input_size == ctypes.sizeof(
        abi.SetVpRegistersElement
    )
    assert HYPERCALLS[HvCallCode.GET_VP_REGISTERS].rep_output_size == ctypes.sizeof(
        abi.HvRegisterValue
    )


def test_port_info_union_members() -> None:
    info = HvPortInfo(port_type=HvPortType.EVENT)
    info.event.target_sint = 2
    info.event.target_vp = 1
    info.event.base_flag_number = 5
    info.event.flag_count = 3
    raw = bytes(info)
    assert raw[0:4] == (2).to_bytes(4, "little")
    assert raw[8:12] == (2).to_bytes(4, "little")
    assert raw[12:16] == (1).to_bytes(4, "little")
    assert raw[16:18] == (5).to_bytes(2, "little")
    assert raw[18:20] == (3).to_bytes(2, "little")
    monitor = HvPortInfo(port_type=HvPortType.MONITOR)
    monitor.monitor.monitor_address = 0x1234_5000
    assert bytes(monitor)[8:16] == (0x1234_5000).to_bytes(8, "little")


def test_connection_info_doorbell_offsets() -> None:
    info = abi.HvConnectionInfo(port_type=HvPortType.DOORBELL)
    info.doorbell.gpa = 0xAAAA
    info.doorbell.trigger_value = 0xBBBB
    info.doorbell.flags = abi.DOORBELL_FLAG_ANY_VALUE | abi.HvDoorbellTriggerSize.DWORD
    raw = bytes(info)
    assert raw[8:16] == (0xAAAA).to_bytes(8, "little")
    assert raw[16:24] == (0xBBBB).to_bytes(8, "little")
    assert raw[24:32] == (0x8000_0003).to_bytes(8, "little")


def test_port_types_and_special_constants() -> None:
    assert {t.name: t.value for t in HvPortType} == {
        "MESSAGE": 1,
        "EVENT": 2,
        "MONITOR": 3,
        "DOORBELL": 4,
    }
    assert abi.HV_PARTITION_ID_INVALID == 0
    assert abi.HV_PARTITION_ID_SELF == 0xFFFF_FFFF_FFFF_FFFF
    assert abi.HV_VP_INDEX_SELF == 0xFFFF_FFFE
    assert abi.HV_ANY_VP == 0xFFFF_FFFF
    assert abi.HV_CONNECTION_ID_MASK == abi.HV_PORT_ID_MASK == 0x00FF_FFFF
    assert abi.PROXIMITY_INFO_VALID == 1 << 31
    assert abi.DOORBELL_TRIGGER_SIZE_MASK == 0b111
    assert [s.value for s in abi.HvDoorbellTriggerSize] == [0, 1, 2, 3, 4]


def test_post_message_codec_matches_structure() -> None:
    assert POST_MESSAGE_HEADER.size == PostMessageInput.payload.offset == 16
    block = bytearray(256)
    POST_MESSAGE_HEADER.pack_into(block, 0, 0x2001, 0, 1, 5)
    block[16:21] = b"hello"
    view = PostMessageInput.from_buffer(block)
    assert (view.connection_id, view.message_type, view.payload_size) == (0x2001, 1, 5)
    assert bytes(view.payload[:5]) == b"hello"


def test_signal_event_codec_matches_linux_fast_input() -> None:
    # Linux passes connection_id | flag_number << 32 in RDX.
    raw = SIGNAL_EVENT.pack(0x2003, 7, 0)
    assert SIGNAL_EVENT.size == ctypes.sizeof(SignalEventInput) == 8
    assert int.from_bytes(raw, "little") == 0x2003 | 7 << 32
    view = SignalEventInput.from_buffer_copy(raw)
    assert (view.connection_id, view.flag_number) == (0x2003, 7)


def test_partition_id_codec() -> None:
    assert abi.PARTITION_ID.pack(abi.HV_PARTITION_ID_SELF) == b"\xff" * 8
