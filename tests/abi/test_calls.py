"""The hypercall table against fact sheet §1.4 (codes, names, classes), §1.6 (privileges) and
§1.7 (sizes), plus the table's internal consistency."""

from __future__ import annotations

import types

import pytest

from winhv.abi import (
    HYPERCALLS,
    CallClass,
    HvCallCode,
    HypercallInfo,
    Privilege,
    hypercall_info,
)

S, R = "simple", "rep"

# §1.4 by hand: code -> (TLFS name, class). Expanded ranges use Mile.HyperV's names; deprecated
# duplicates carry "Deprecated". Calls with no class in the sheet are simple.
SHEET_1_4: dict[int, tuple[str, str]] = {
    0x0001: ("HvCallSwitchVirtualAddressSpace", S),
    0x0002: ("HvCallFlushVirtualAddressSpace", S),
    0x0003: ("HvCallFlushVirtualAddressList", R),
    0x0004: ("HvCallGetLogicalProcessorRunTime", S),
    0x0008: ("HvCallNotifyLongSpinWait", S),
    0x0009: ("HvCallParkedVirtualProcessors", S),
    0x000A: ("HvCallInvokeHypervisorDebugger", S),
    0x000B: ("HvCallSendSyntheticClusterIpi", S),
    0x000C: ("HvCallModifyVtlProtectionMask", R),
    0x000D: ("HvCallEnablePartitionVtl", S),
    0x000E: ("HvCallDisablePartitionVtl", S),
    0x000F: ("HvCallEnableVpVtl", S),
    0x0010: ("HvCallDisableVpVtl", S),
    0x0011: ("HvCallVtlCall", S),
    0x0012: ("HvCallVtlReturn", S),
    0x0013: ("HvCallFlushVirtualAddressSpaceEx", S),
    0x0014: ("HvCallFlushVirtualAddressListEx", R),
    0x0015: ("HvCallSendSyntheticClusterIpiEx", S),
    0x0040: ("HvCallCreatePartition", S),
    0x0041: ("HvCallInitializePartition", S),
    0x0042: ("HvCallFinalizePartition", S),
    0x0043: ("HvCallDeletePartition", S),
    0x0044: ("HvCallGetPartitionProperty", S),
    0x0045: ("HvCallSetPartitionProperty", S),
    0x0046: ("HvCallGetPartitionId", S),
    0x0047: ("HvCallGetNextChildPartition", S),
    0x0048: ("HvCallDepositMemory", R),
    0x0049: ("HvCallWithdrawMemory", R),
    0x004A: ("HvCallGetMemoryBalance", S),
    0x004B: ("HvCallMapGpaPages", R),
    0x004C: ("HvCallUnmapGpaPages", R),
    0x004D: ("HvCallInstallIntercept", S),
    0x004E: ("HvCallCreateVp", S),
    0x004F: ("HvCallDeleteVp", S),
    0x0050: ("HvCallGetVpRegisters", R),
    0x0051: ("HvCallSetVpRegisters", R),
    0x0052: ("HvCallTranslateVirtualAddress", S),
    0x0053: ("HvCallReadGpa", S),
    0x0054: ("HvCallWriteGpa", S),
    0x0055: ("HvCallAssertVirtualInterruptDeprecated", S),
    0x0056: ("HvCallClearVirtualInterrupt", S),
    0x0057: ("HvCallCreatePortDeprecated", S),
    0x0058: ("HvCallDeletePort", S),
    0x0059: ("HvCallConnectPortDeprecated", S),
    0x005A: ("HvCallGetPortProperty", S),
    0x005B: ("HvCallDisconnectPort", S),
    0x005C: ("HvCallPostMessage", S),
    0x005D: ("HvCallSignalEvent", S),
    0x005E: ("HvCallSavePartitionState", S),
    0x005F: ("HvCallRestorePartitionState", S),
    0x0060: ("HvCallInitializeEventLogBufferGroup", S),
    0x0061: ("HvCallFinalizeEventLogBufferGroup", S),
    0x0062: ("HvCallCreateEventLogBuffer", S),
    0x0063: ("HvCallDeleteEventLogBuffer", S),
    0x0064: ("HvCallMapEventLogBuffer", S),
    0x0065: ("HvCallUnmapEventLogBuffer", S),
    0x0066: ("HvCallSetEventLogGroupSources", S),
    0x0067: ("HvCallReleaseEventLogBuffer", S),
    0x0068: ("HvCallFlushEventLogBuffer", S),
    0x0069: ("HvCallPostDebugData", S),
    0x006A: ("HvCallRetrieveDebugData", S),
    0x006B: ("HvCallResetDebugSession", S),
    0x006C: ("HvCallMapStatsPage", S),
    0x006D: ("HvCallUnmapStatsPage", S),
    0x006E: ("HvCallMapSparseGpaPages", R),
    0x006F: ("HvCallSetSystemProperty", S),
    0x0070: ("HvCallSetPortProperty", S),
    0x0071: ("HvCallOutputDebugCharacter", S),
    0x0072: ("HvCallEchoIncrement", S),
    0x0073: ("HvCallPerfNop", S),
    0x0074: ("HvCallPerfNopInput", S),
    0x0075: ("HvCallPerfNopOutput", S),
    0x0076: ("HvCallAddLogicalProcessor", S),
    0x0077: ("HvCallRemoveLogicalProcessor", S),
    0x0078: ("HvCallQueryNumaDistance", S),
    0x0079: ("HvCallSetLogicalProcessorProperty", S),
    0x007A: ("HvCallGetLogicalProcessorProperty", S),
    0x007B: ("HvCallGetSystemProperty", S),
    0x007C: ("HvCallMapDeviceInterrupt", S),
    0x007D: ("HvCallUnmapDeviceInterrupt", S),
    0x007E: ("HvCallRetargetDeviceInterrupt", S),
    0x0080: ("HvCallMapDevicePages", S),
    0x0081: ("HvCallUnmapDevicePages", S),
    0x0082: ("HvCallAttachDevice", S),
    0x0083: ("HvCallDetachDevice", S),
    0x0084: ("HvCallNotifyStandbyTransition", S),
    0x0085: ("HvCallPrepareForSleep", S),
    0x0086: ("HvCallPrepareForHibernate", S),
    0x0087: ("HvCallNotifyPartitionEvent", S),
    0x0088: ("HvCallGetLogicalProcessorRegisters", S),
    0x0089: ("HvCallSetLogicalProcessorRegisters", S),
    0x008A: ("HvCallQueryAssociatedLpsforMca", S),
    0x008B: ("HvCallNotifyRingEmpty", S),
    0x008C: ("HvCallInjectSyntheticMachineCheck", S),
    0x008D: ("HvCallScrubPartition", S),
    0x008E: ("HvCallCollectLivedump", S),
    0x008F: ("HvCallDisableHypervisor", S),
    0x0090: ("HvCallModifySparseGpaPages", R),
    0x0091: ("HvCallRegisterInterceptResult", S),
    0x0092: ("HvCallUnregisterInterceptResult", S),
    0x0094: ("HvCallAssertVirtualInterrupt", S),
    0x0095: ("HvCallCreatePort", S),
    0x0096: ("HvCallConnectPort", S),
    0x0097: ("HvCallGetSpaPageList", S),
    0x0099: ("HvCallStartVirtualProcessor", S),
    0x009A: ("HvCallGetVpIndexFromApicId", R),
    0x00AC: ("HvCallTranslateVirtualAddressEx", S),
    0x00AD: ("HvCallCheckForIoIntercept", S),
    0x00AF: ("HvCallFlushGuestPhysicalAddressSpace", S),
    0x00B0: ("HvCallFlushGuestPhysicalAddressList", R),
    0x00C0: ("HvCallSignalEventDirect", S),
    0x00C1: ("HvCallPostMessageDirect", S),
    0x00C2: ("HvCallDispatchVp", S),
    0x00C9: ("HvCallGetGpaPagesAccessStates", S),
    0x00D4: ("HvCallCheckSparseGpaPageVtlAccess", S),
    0x00D7: ("HvCallAcquireSparseSpaPageHostAccess", S),
    0x00D8: ("HvCallReleaseSparseSpaPageHostAccess", S),
    0x00D9: ("HvCallAcceptGpaPages", S),
    0x00DB: ("HvCallModifySparseGpaPageHostVisibility", S),
    0x00E1: ("HvCallMapVpStatePage", S),
    0x00E2: ("HvCallUnmapVpStatePage", S),
    0x00E3: ("HvCallGetVpState", S),
    0x00E4: ("HvCallSetVpState", S),
    0x00E5: ("HvCallGetVpSetFromMda", S),
    0x00F4: ("HvCallGetVpCpuidValues", R),
    0x0103: ("HvCallRestorePartitionTime", S),
    0x0106: ("HvCallMemoryMappedIoRead", S),
    0x0107: ("HvCallMemoryMappedIoWrite", S),
    0x010A: ("HvCallSetPartitionPropertyEx", S),
    0x0110: ("HvCallInstallInterceptEx", R),
    0x0112: ("HvCallPinGpaPageRanges", S),
    0x0113: ("HvCallUnpinGpaPageRanges", S),
    0x011C: ("HvCallQuerySparseGpaPageHostVisibility", S),
    0x011F: ("HvCallSetVirtualInterruptTarget", S),
    0x0131: ("HvCallMapStatsPage2", S),
    0x8001: ("HvExtCallQueryCapabilities", S),
    0x8002: ("HvExtCallGetBootZeroedMemory", S),
    0x8003: ("HvExtCallMemoryHeatHint", S),
    0x8004: ("HvExtCallEpfSetup", S),
    0x8006: ("HvExtCallMemoryHeatHintAsync", S),
    0xC001: ("HvCallVbsVmCallReport", S),
}

# §1.7 by hand: code -> (input, output, rep input element, rep output element) in bytes.
SHEET_1_7_SIZES: dict[int, tuple[int, int, int, int]] = {
    0x0002: (24, 0, 0, 0),  # FlushVirtualAddressSpace
    0x0003: (24, 0, 8, 0),  # FlushVirtualAddressList
    0x000B: (16, 0, 0, 0),  # SendSyntheticClusterIpi
    0x0040: (56, 8, 0, 0),  # CreatePartition
    0x0041: (8, 0, 0, 0),  # InitializePartition
    0x0042: (8, 0, 0, 0),  # FinalizePartition
    0x0043: (8, 0, 0, 0),  # DeletePartition
    0x0044: (16, 8, 0, 0),  # GetPartitionProperty
    0x0045: (24, 0, 0, 0),  # SetPartitionProperty
    0x0046: (0, 8, 0, 0),  # GetPartitionId
    0x0047: (16, 8, 0, 0),  # GetNextChildPartition
    0x0048: (8, 0, 8, 0),  # DepositMemory
    0x0049: (16, 0, 0, 8),  # WithdrawMemory
    0x004A: (16, 16, 0, 0),  # GetMemoryBalance
    0x004B: (24, 0, 8, 0),  # MapGpaPages
    0x004C: (24, 0, 0, 0),  # UnmapGpaPages (20 bytes padded to 24; no elements)
    0x004D: (24, 0, 0, 0),  # InstallIntercept
    0x004E: (40, 0, 0, 0),  # CreateVp
    0x004F: (16, 0, 0, 0),  # DeleteVp
    0x0050: (16, 0, 4, 16),  # GetVpRegisters
    0x0051: (16, 0, 32, 0),  # SetVpRegisters
    0x0052: (32, 16, 0, 0),  # TranslateVirtualAddress
    0x0058: (16, 0, 0, 0),  # DeletePort
    0x005B: (16, 0, 0, 0),  # DisconnectPort
    0x005C: (256, 0, 0, 0),  # PostMessage
    0x005D: (8, 0, 0, 0),  # SignalEvent
    0x0095: (56, 0, 0, 0),  # CreatePort
    0x0096: (72, 0, 0, 0),  # ConnectPort
    0x00C0: (16, 8, 0, 0),  # SignalEventDirect
    0x00C1: (280, 0, 0, 0),  # PostMessageDirect (OVMM layout, §8 item 6)
}

P = Privilege
# The brief's privilege map (§1.4 notes and §1.6).
EXPECTED_PRIVILEGES: dict[int, Privilege] = {
    0x0040: P.CREATE_PARTITIONS,
    0x0041: P.CREATE_PARTITIONS,
    0x0042: P.CREATE_PARTITIONS,
    0x0043: P.CREATE_PARTITIONS,
    0x0044: P.CREATE_PARTITIONS,
    0x0045: P.CREATE_PARTITIONS,
    0x004E: P.CREATE_PARTITIONS,
    0x004F: P.CREATE_PARTITIONS,
    0x004B: P.CREATE_PARTITIONS,
    0x004C: P.CREATE_PARTITIONS,
    0x0046: P.ACCESS_PARTITION_ID,
    0x0048: P.ACCESS_MEMORY_POOL,
    0x0049: P.ACCESS_MEMORY_POOL,
    0x004A: P.ACCESS_MEMORY_POOL,
    0x005C: P.POST_MESSAGES,
    0x005D: P.SIGNAL_EVENTS,
    0x0095: P.CREATE_PORT,
    0x0058: P.CREATE_PORT,
    0x0096: P.CONNECT_PORT,
    0x005B: P.CONNECT_PORT,
    0x0050: P.ACCESS_VP_REGISTERS,
    0x0051: P.ACCESS_VP_REGISTERS,
    # §1.6 notes: AccessStats for the stats-page calls, and the two self-naming bits.
    0x006C: P.ACCESS_STATS,
    0x006D: P.ACCESS_STATS,
    0x0131: P.ACCESS_STATS,
    0x0099: P.START_VIRTUAL_PROCESSOR,
    0x8001: P.ENABLE_EXTENDED_HYPERCALLS,
    0x8002: P.ENABLE_EXTENDED_HYPERCALLS,
    0x8003: P.ENABLE_EXTENDED_HYPERCALLS,
    0x8004: P.ENABLE_EXTENDED_HYPERCALLS,
    0x8006: P.ENABLE_EXTENDED_HYPERCALLS,
}

# Fast-capable per §1.4 (TLFS/Linux "Fast", Mile "Fast (M)").
SHEET_FAST = {
    0x0001, 0x0008, 0x000B, 0x0041, 0x0042, 0x0043, 0x004F, 0x0056, 0x0058, 0x005B, 0x005D,
    0x0061, 0x0062, 0x0063, 0x0065, 0x0066, 0x0067, 0x0068, 0x006B,
}  # fmt: skip
SHEET_VARHEAD = {0x0013, 0x0014, 0x0015, 0x010A}


def test_table_holds_exactly_the_sheet_codes_names_and_classes() -> None:
    assert {
        code: (info.name, info.call_class.value) for code, info in HYPERCALLS.items()
    } == SHEET_1_4


def test_enum_and_table_cover_the_same_codes() -> None:
    assert set(HYPERCALLS) == {member.value for member in HvCallCode}


@pytest.mark.parametrize(
    ("member", "code"),
    [
        (HvCallCode.POST_MESSAGE, 0x5C),
        (HvCallCode.SIGNAL_EVENT, 0x5D),
        (HvCallCode.CREATE_PORT, 0x95),
        (HvCallCode.CONNECT_PORT, 0x96),
        (HvCallCode.CREATE_PORT_DEPRECATED, 0x57),
        (HvCallCode.CONNECT_PORT_DEPRECATED, 0x59),
        (HvCallCode.ASSERT_VIRTUAL_INTERRUPT_DEPRECATED, 0x55),
        (HvCallCode.GET_PARTITION_ID, 0x46),
        (HvCallCode.EXT_QUERY_CAPABILITIES, 0x8001),
    ],
)
def test_named_codes(member: HvCallCode, code: int) -> None:
    assert member == code


def test_reserved_ranges_are_absent() -> None:
    for code in (0x0000, 0x0005, 0x0006, 0x0007, *range(0x16, 0x40), 0x7F, 0x93, 0x98):
        assert hypercall_info(code) is None


def test_enum_member_names_follow_tlfs_names() -> None:
    for member in HvCallCode:
        name = HYPERCALLS[member].name
        camel = name.removeprefix("HvCall").removeprefix("HvExtCall")
        snake = "".join(f"_{c}" if c.isupper() else c for c in camel).lstrip("_").upper()
        if name.startswith("HvExtCall"):
            snake = f"EXT_{snake}"
        # Mile spells "QueryAssociatedLpsforMca" with a lower-case "for".
        assert member.name == snake.replace("LPSFOR", "LPS_FOR"), name


def test_sizes_match_sheet_1_7() -> None:
    for code, sizes in SHEET_1_7_SIZES.items():
        info = HYPERCALLS[code]
        got = (info.input_size, info.output_size, info.rep_input_size, info.rep_output_size)
        assert got == sizes, info.name


def test_privileges_match_sheet() -> None:
    got = {code: info.privilege for code, info in HYPERCALLS.items() if info.privilege}
    assert got == EXPECTED_PRIVILEGES


def test_fast_and_variable_header_flags_match_sheet() -> None:
    assert {code for code, info in HYPERCALLS.items() if info.fast} == SHEET_FAST
    assert {code for code, info in HYPERCALLS.items() if info.variable_header} == SHEET_VARHEAD


def test_table_is_read_only_and_ordered() -> None:
    assert isinstance(HYPERCALLS, types.MappingProxyType)
    assert list(HYPERCALLS) == sorted(HYPERCALLS)
    with pytest.raises(TypeError):
        HYPERCALLS[0x5C] = HYPERCALLS[0x5D]  # type: ignore[index]


def test_rows_are_consistent() -> None:
    names = [info.name for info in HYPERCALLS.values()]
    assert len(names) == len(set(names)), "TLFS names must be unique"
    for code, info in HYPERCALLS.items():
        assert isinstance(info, HypercallInfo)
        assert info.code == code
        assert 0 < code <= 0xFFFF
        assert info.name.startswith(("HvCall", "HvExtCall")), info.name
        assert info.doc, info.name
        assert "\n" not in info.doc, info.name
        sizes = (info.input_size, info.output_size, info.rep_input_size, info.rep_output_size)
        for size in sizes:
            assert size >= 0
            assert size % 4 == 0, info.name
        # Blocks are padded to 8 bytes (§1.1); rep elements may be 4 (register names).
        assert info.input_size % 8 == 0, info.name
        assert info.output_size % 8 == 0, info.name
        if info.call_class is CallClass.SIMPLE:
            assert info.rep_input_size == info.rep_output_size == 0, info.name
        if info.fast:
            # RDX:R8 carry at most 16 bytes and there is no memory output.
            assert info.input_size <= 16, info.name
            assert info.output_size == 0, info.name
        assert info.is_rep == (info.call_class is CallClass.REP)


def test_rep_calls_with_a_known_layout_have_element_sizes() -> None:
    element_less = {HvCallCode.UNMAP_GPA_PAGES}  # rep count = page count, no element list
    for code, info in HYPERCALLS.items():
        if info.is_rep and info.input_size and code not in element_less:
            assert info.rep_input_size or info.rep_output_size, info.name


def test_hypercall_info_looks_up_by_int_and_enum() -> None:
    assert hypercall_info(0x5C) is HYPERCALLS[0x5C]
    assert hypercall_info(HvCallCode.SIGNAL_EVENT) is HYPERCALLS[0x5D]
    assert hypercall_info(0xFFFF) is None


def test_info_is_frozen() -> None:
    info = HYPERCALLS[0x5C]
    with pytest.raises(AttributeError):
        info.fast = True  # type: ignore[misc]
