"""Hypercall call codes and the one table that describes each call (fact sheet §1.4, §1.7).

:data:`HYPERCALLS` is built from a single declarative table, ``_TABLE``: one row per
:class:`HvCallCode` member giving the TLFS name, the call class (simple or rep), whether the
call may be issued fast, whether it takes a variable header, the partition privilege the caller
must hold, and the fixed sizes of its input/output blocks and rep elements. Dispatch, argument
checks, documentation and the CLI listing are all derived from it.

Conventions of the table:

* Sizes are in bytes and are the *padded* block sizes the guest places in memory (TLFS blocks
  are padded to multiples of 8, §1.1). A size of 0 means "no such block" or "layout not in the
  fact sheet" (§9 lists the calls whose layouts are unknown).
* Rep element sizes are 0 for simple calls. A rep call may still have no element list:
  HvCallUnmapGpaPages's rep count is a page count and it carries no elements.
* ``fast`` is set where the sheet marks the call usable with the Fast bit (TLFS, Linux usage,
  or Mile's annotations). A fast call's input must fit in RDX:R8, so its input is at most
  16 bytes.
* Reserved code ranges (0x0016-0x003F and the gaps above) are omitted; the old codes of
  CreatePort/ConnectPort/AssertVirtualInterrupt (§8 item 4) are members with a
  ``_DEPRECATED`` suffix and TLFS names ending in ``Deprecated`` (Mile's spelling).
"""

from __future__ import annotations

import enum
import types
from collections.abc import Mapping
from dataclasses import dataclass

from ._privileges import Privilege

__all__ = ["HYPERCALLS", "CallClass", "HvCallCode", "HypercallInfo", "hypercall_info"]


class CallClass(enum.Enum):
    """Simple calls do one unit of work; rep calls repeat it ``rep_count`` times (§1.3)."""

    SIMPLE = "simple"
    REP = "rep"


class HvCallCode(enum.IntEnum):
    """Every call code of §1.4 (0x0060-0x0068, 0x0073-0x0075 and 0x0080-0x0083 expanded with
    the names of Mile.HyperV's ``HV_CALL_CODE``)."""

    SWITCH_VIRTUAL_ADDRESS_SPACE = 0x0001
    FLUSH_VIRTUAL_ADDRESS_SPACE = 0x0002
    FLUSH_VIRTUAL_ADDRESS_LIST = 0x0003
    GET_LOGICAL_PROCESSOR_RUN_TIME = 0x0004
    NOTIFY_LONG_SPIN_WAIT = 0x0008
    PARKED_VIRTUAL_PROCESSORS = 0x0009
    INVOKE_HYPERVISOR_DEBUGGER = 0x000A
    SEND_SYNTHETIC_CLUSTER_IPI = 0x000B
    MODIFY_VTL_PROTECTION_MASK = 0x000C
    ENABLE_PARTITION_VTL = 0x000D
    DISABLE_PARTITION_VTL = 0x000E
    ENABLE_VP_VTL = 0x000F
    DISABLE_VP_VTL = 0x0010
    VTL_CALL = 0x0011
    VTL_RETURN = 0x0012
    FLUSH_VIRTUAL_ADDRESS_SPACE_EX = 0x0013
    FLUSH_VIRTUAL_ADDRESS_LIST_EX = 0x0014
    SEND_SYNTHETIC_CLUSTER_IPI_EX = 0x0015
    CREATE_PARTITION = 0x0040
    INITIALIZE_PARTITION = 0x0041
    FINALIZE_PARTITION = 0x0042
    DELETE_PARTITION = 0x0043
    GET_PARTITION_PROPERTY = 0x0044
    SET_PARTITION_PROPERTY = 0x0045
    GET_PARTITION_ID = 0x0046
    GET_NEXT_CHILD_PARTITION = 0x0047
    DEPOSIT_MEMORY = 0x0048
    WITHDRAW_MEMORY = 0x0049
    GET_MEMORY_BALANCE = 0x004A
    MAP_GPA_PAGES = 0x004B
    UNMAP_GPA_PAGES = 0x004C
    INSTALL_INTERCEPT = 0x004D
    CREATE_VP = 0x004E
    DELETE_VP = 0x004F
    GET_VP_REGISTERS = 0x0050
    SET_VP_REGISTERS = 0x0051
    TRANSLATE_VIRTUAL_ADDRESS = 0x0052
    READ_GPA = 0x0053
    WRITE_GPA = 0x0054
    ASSERT_VIRTUAL_INTERRUPT_DEPRECATED = 0x0055
    CLEAR_VIRTUAL_INTERRUPT = 0x0056
    CREATE_PORT_DEPRECATED = 0x0057
    DELETE_PORT = 0x0058
    CONNECT_PORT_DEPRECATED = 0x0059
    GET_PORT_PROPERTY = 0x005A
    DISCONNECT_PORT = 0x005B
    POST_MESSAGE = 0x005C
    SIGNAL_EVENT = 0x005D
    SAVE_PARTITION_STATE = 0x005E
    RESTORE_PARTITION_STATE = 0x005F
    INITIALIZE_EVENT_LOG_BUFFER_GROUP = 0x0060
    FINALIZE_EVENT_LOG_BUFFER_GROUP = 0x0061
    CREATE_EVENT_LOG_BUFFER = 0x0062
    DELETE_EVENT_LOG_BUFFER = 0x0063
    MAP_EVENT_LOG_BUFFER = 0x0064
    UNMAP_EVENT_LOG_BUFFER = 0x0065
    SET_EVENT_LOG_GROUP_SOURCES = 0x0066
    RELEASE_EVENT_LOG_BUFFER = 0x0067
    FLUSH_EVENT_LOG_BUFFER = 0x0068
    POST_DEBUG_DATA = 0x0069
    RETRIEVE_DEBUG_DATA = 0x006A
    RESET_DEBUG_SESSION = 0x006B
    MAP_STATS_PAGE = 0x006C
    UNMAP_STATS_PAGE = 0x006D
    MAP_SPARSE_GPA_PAGES = 0x006E
    SET_SYSTEM_PROPERTY = 0x006F
    SET_PORT_PROPERTY = 0x0070
    OUTPUT_DEBUG_CHARACTER = 0x0071
    ECHO_INCREMENT = 0x0072
    PERF_NOP = 0x0073
    PERF_NOP_INPUT = 0x0074
    PERF_NOP_OUTPUT = 0x0075
    ADD_LOGICAL_PROCESSOR = 0x0076
    REMOVE_LOGICAL_PROCESSOR = 0x0077
    QUERY_NUMA_DISTANCE = 0x0078
    SET_LOGICAL_PROCESSOR_PROPERTY = 0x0079
    GET_LOGICAL_PROCESSOR_PROPERTY = 0x007A
    GET_SYSTEM_PROPERTY = 0x007B
    MAP_DEVICE_INTERRUPT = 0x007C
    UNMAP_DEVICE_INTERRUPT = 0x007D
    RETARGET_DEVICE_INTERRUPT = 0x007E
    MAP_DEVICE_PAGES = 0x0080
    UNMAP_DEVICE_PAGES = 0x0081
    ATTACH_DEVICE = 0x0082
    DETACH_DEVICE = 0x0083
    NOTIFY_STANDBY_TRANSITION = 0x0084
    PREPARE_FOR_SLEEP = 0x0085
    PREPARE_FOR_HIBERNATE = 0x0086
    NOTIFY_PARTITION_EVENT = 0x0087
    GET_LOGICAL_PROCESSOR_REGISTERS = 0x0088
    SET_LOGICAL_PROCESSOR_REGISTERS = 0x0089
    QUERY_ASSOCIATED_LPS_FOR_MCA = 0x008A
    NOTIFY_RING_EMPTY = 0x008B
    INJECT_SYNTHETIC_MACHINE_CHECK = 0x008C
    SCRUB_PARTITION = 0x008D
    COLLECT_LIVEDUMP = 0x008E
    DISABLE_HYPERVISOR = 0x008F
    MODIFY_SPARSE_GPA_PAGES = 0x0090
    REGISTER_INTERCEPT_RESULT = 0x0091
    UNREGISTER_INTERCEPT_RESULT = 0x0092
    ASSERT_VIRTUAL_INTERRUPT = 0x0094
    CREATE_PORT = 0x0095
    CONNECT_PORT = 0x0096
    GET_SPA_PAGE_LIST = 0x0097
    START_VIRTUAL_PROCESSOR = 0x0099
    GET_VP_INDEX_FROM_APIC_ID = 0x009A
    TRANSLATE_VIRTUAL_ADDRESS_EX = 0x00AC
    CHECK_FOR_IO_INTERCEPT = 0x00AD
    FLUSH_GUEST_PHYSICAL_ADDRESS_SPACE = 0x00AF
    FLUSH_GUEST_PHYSICAL_ADDRESS_LIST = 0x00B0
    SIGNAL_EVENT_DIRECT = 0x00C0
    POST_MESSAGE_DIRECT = 0x00C1
    DISPATCH_VP = 0x00C2
    GET_GPA_PAGES_ACCESS_STATES = 0x00C9
    CHECK_SPARSE_GPA_PAGE_VTL_ACCESS = 0x00D4
    ACQUIRE_SPARSE_SPA_PAGE_HOST_ACCESS = 0x00D7
    RELEASE_SPARSE_SPA_PAGE_HOST_ACCESS = 0x00D8
    ACCEPT_GPA_PAGES = 0x00D9
    MODIFY_SPARSE_GPA_PAGE_HOST_VISIBILITY = 0x00DB
    MAP_VP_STATE_PAGE = 0x00E1
    UNMAP_VP_STATE_PAGE = 0x00E2
    GET_VP_STATE = 0x00E3
    SET_VP_STATE = 0x00E4
    GET_VP_SET_FROM_MDA = 0x00E5
    GET_VP_CPUID_VALUES = 0x00F4
    RESTORE_PARTITION_TIME = 0x0103
    MEMORY_MAPPED_IO_READ = 0x0106
    MEMORY_MAPPED_IO_WRITE = 0x0107
    SET_PARTITION_PROPERTY_EX = 0x010A
    INSTALL_INTERCEPT_EX = 0x0110
    PIN_GPA_PAGE_RANGES = 0x0112
    UNPIN_GPA_PAGE_RANGES = 0x0113
    QUERY_SPARSE_GPA_PAGE_HOST_VISIBILITY = 0x011C
    SET_VIRTUAL_INTERRUPT_TARGET = 0x011F
    MAP_STATS_PAGE2 = 0x0131
    EXT_QUERY_CAPABILITIES = 0x8001
    EXT_GET_BOOT_ZEROED_MEMORY = 0x8002
    EXT_MEMORY_HEAT_HINT = 0x8003
    EXT_EPF_SETUP = 0x8004
    EXT_MEMORY_HEAT_HINT_ASYNC = 0x8006
    VBS_VM_CALL_REPORT = 0xC001


@dataclass(frozen=True, slots=True)
class HypercallInfo:
    """What the ABI says about one call code (one row of the table).

    Attributes:
        code: the call code (bits 15:0 of the control value).
        name: the TLFS name, e.g. ``"HvCallPostMessage"``.
        call_class: :attr:`CallClass.SIMPLE` or :attr:`CallClass.REP`; the control value's rep
            count must be 0 for a simple call and non-zero for a rep call.
        fast: the call may be issued with the Fast bit (input in registers).
        variable_header: the call accepts a non-zero variable-header size.
        privilege: the partition privilege the caller must hold, or ``None`` when the fact
            sheet names none.
        input_size: bytes of the fixed input header (0 if none or unknown).
        output_size: bytes of the fixed output block (0 if none or unknown).
        rep_input_size: bytes of one rep input element (0 for simple calls / no list).
        rep_output_size: bytes of one rep output element (0 for simple calls / no list).
        doc: one line saying what the call does.
    """

    code: int
    name: str
    call_class: CallClass
    fast: bool
    variable_header: bool
    privilege: Privilege | None
    input_size: int
    output_size: int
    rep_input_size: int
    rep_output_size: int
    doc: str

    @property
    def is_rep(self) -> bool:
        """True for a rep call."""
        return self.call_class is CallClass.REP


_S, _R = CallClass.SIMPLE, CallClass.REP
_P = Privilege


def _row(
    code: HvCallCode,
    name: str,
    call_class: CallClass,
    doc: str,
    *,
    fast: bool = False,
    varhead: bool = False,
    priv: Privilege | None = None,
    inp: int = 0,
    out: int = 0,
    rep_in: int = 0,
    rep_out: int = 0,
) -> HypercallInfo:
    return HypercallInfo(
        code=int(code),
        name=name,
        call_class=call_class,
        fast=fast,
        variable_header=varhead,
        privilege=priv,
        input_size=inp,
        output_size=out,
        rep_input_size=rep_in,
        rep_output_size=rep_out,
        doc=doc,
    )


_C = HvCallCode

# The table. Sources per column are in the module docstring; sizes follow §1.7 unless noted.
_TABLE: tuple[HypercallInfo, ...] = (
    # --- address spaces, TLB, IPIs, VTLs (guest-visible, §1.4 public list) ---
    _row(_C.SWITCH_VIRTUAL_ADDRESS_SPACE, "HvCallSwitchVirtualAddressSpace", _S,
         "Switch the VP's address space (CR3).", fast=True, inp=8),
    _row(_C.FLUSH_VIRTUAL_ADDRESS_SPACE, "HvCallFlushVirtualAddressSpace", _S,
         "Flush all TLB entries of an address space on a processor mask.", inp=24),
    _row(_C.FLUSH_VIRTUAL_ADDRESS_LIST, "HvCallFlushVirtualAddressList", _R,
         "Flush a list of GVA ranges of an address space.", inp=24, rep_in=8),
    _row(_C.GET_LOGICAL_PROCESSOR_RUN_TIME, "HvCallGetLogicalProcessorRunTime", _S,
         "Read a logical processor's run time."),
    _row(_C.NOTIFY_LONG_SPIN_WAIT, "HvCallNotifyLongSpinWait", _S,
         "Tell the hypervisor a VP has spun on a lock for long.", fast=True, inp=8),
    _row(_C.PARKED_VIRTUAL_PROCESSORS, "HvCallParkedVirtualProcessors", _S,
         "Report parked virtual processors."),
    _row(_C.INVOKE_HYPERVISOR_DEBUGGER, "HvCallInvokeHypervisorDebugger", _S,
         "Break into the hypervisor debugger."),
    _row(_C.SEND_SYNTHETIC_CLUSTER_IPI, "HvCallSendSyntheticClusterIpi", _S,
         "Send an IPI to a set of VPs given by a 64-bit mask.", fast=True, inp=16),
    _row(_C.MODIFY_VTL_PROTECTION_MASK, "HvCallModifyVtlProtectionMask", _R,
         "Change VTL protections of a list of GPA pages."),
    _row(_C.ENABLE_PARTITION_VTL, "HvCallEnablePartitionVtl", _S,
         "Enable a VTL for a partition."),
    _row(_C.DISABLE_PARTITION_VTL, "HvCallDisablePartitionVtl", _S,
         "Disable a VTL for a partition."),
    _row(_C.ENABLE_VP_VTL, "HvCallEnableVpVtl", _S, "Enable a VTL on one VP."),
    _row(_C.DISABLE_VP_VTL, "HvCallDisableVpVtl", _S, "Disable a VTL on one VP."),
    _row(_C.VTL_CALL, "HvCallVtlCall", _S, "Switch to the next higher VTL."),
    _row(_C.VTL_RETURN, "HvCallVtlReturn", _S, "Return to the next lower VTL."),
    _row(_C.FLUSH_VIRTUAL_ADDRESS_SPACE_EX, "HvCallFlushVirtualAddressSpaceEx", _S,
         "Flush an address space on a sparse VP set.", varhead=True),
    _row(_C.FLUSH_VIRTUAL_ADDRESS_LIST_EX, "HvCallFlushVirtualAddressListEx", _R,
         "Flush GVA ranges on a sparse VP set.", varhead=True),
    _row(_C.SEND_SYNTHETIC_CLUSTER_IPI_EX, "HvCallSendSyntheticClusterIpiEx", _S,
         "Send an IPI to a sparse VP set.", varhead=True),
    # --- partition management (parent/root) ---
    _row(_C.CREATE_PARTITION, "HvCallCreatePartition", _S,
         "Create a child partition and return its id.",
         priv=_P.CREATE_PARTITIONS, inp=56, out=8),
    _row(_C.INITIALIZE_PARTITION, "HvCallInitializePartition", _S,
         "Move a created partition to the active state.",
         fast=True, priv=_P.CREATE_PARTITIONS, inp=8),
    _row(_C.FINALIZE_PARTITION, "HvCallFinalizePartition", _S,
         "Stop a partition and release its VPs before deletion.",
         fast=True, priv=_P.CREATE_PARTITIONS, inp=8),
    _row(_C.DELETE_PARTITION, "HvCallDeletePartition", _S,
         "Delete a finalized partition.", fast=True, priv=_P.CREATE_PARTITIONS, inp=8),
    _row(_C.GET_PARTITION_PROPERTY, "HvCallGetPartitionProperty", _S,
         "Read one partition property.", priv=_P.CREATE_PARTITIONS, inp=16, out=8),
    _row(_C.SET_PARTITION_PROPERTY, "HvCallSetPartitionProperty", _S,
         "Write one partition property.", priv=_P.CREATE_PARTITIONS, inp=24),
    _row(_C.GET_PARTITION_ID, "HvCallGetPartitionId", _S,
         "Return the caller's own partition id.", priv=_P.ACCESS_PARTITION_ID, out=8),
    _row(_C.GET_NEXT_CHILD_PARTITION, "HvCallGetNextChildPartition", _S,
         "Enumerate a parent's children (0 starts and ends the walk).", inp=16, out=8),
    _row(_C.DEPOSIT_MEMORY, "HvCallDepositMemory", _R,
         "Give GPA pages to a partition's memory pool.",
         priv=_P.ACCESS_MEMORY_POOL, inp=8, rep_in=8),
    _row(_C.WITHDRAW_MEMORY, "HvCallWithdrawMemory", _R,
         "Take pages back from a partition's memory pool.",
         priv=_P.ACCESS_MEMORY_POOL, inp=16, rep_out=8),
    _row(_C.GET_MEMORY_BALANCE, "HvCallGetMemoryBalance", _S,
         "Report a partition's pool pages available and in use.",
         priv=_P.ACCESS_MEMORY_POOL, inp=16, out=16),
    _row(_C.MAP_GPA_PAGES, "HvCallMapGpaPages", _R,
         "Map the caller's pages into a child's GPA space.",
         priv=_P.CREATE_PARTITIONS, inp=24, rep_in=8),
    # UnmapGpaPages: 20 bytes of fields padded to 24 (blocks are 8-byte multiples, §1.1);
    # the rep count is the number of pages and there is no element list.
    _row(_C.UNMAP_GPA_PAGES, "HvCallUnmapGpaPages", _R,
         "Unmap a run of pages from a child's GPA space.",
         priv=_P.CREATE_PARTITIONS, inp=24),
    _row(_C.INSTALL_INTERCEPT, "HvCallInstallIntercept", _S,
         "Install an intercept on a child partition.", inp=24),
    _row(_C.CREATE_VP, "HvCallCreateVp", _S,
         "Create a virtual processor in a partition.", priv=_P.CREATE_PARTITIONS, inp=40),
    _row(_C.DELETE_VP, "HvCallDeleteVp", _S,
         "Delete a virtual processor.", fast=True, priv=_P.CREATE_PARTITIONS, inp=16),
    _row(_C.GET_VP_REGISTERS, "HvCallGetVpRegisters", _R,
         "Read a list of VP registers by name.",
         priv=_P.ACCESS_VP_REGISTERS, inp=16, rep_in=4, rep_out=16),
    _row(_C.SET_VP_REGISTERS, "HvCallSetVpRegisters", _R,
         "Write a list of (name, value) VP registers.",
         priv=_P.ACCESS_VP_REGISTERS, inp=16, rep_in=32),
    _row(_C.TRANSLATE_VIRTUAL_ADDRESS, "HvCallTranslateVirtualAddress", _S,
         "Translate a GVA of a VP into a GPA.", inp=32, out=16),
    _row(_C.READ_GPA, "HvCallReadGpa", _S, "Read a child's guest physical memory."),
    _row(_C.WRITE_GPA, "HvCallWriteGpa", _S, "Write a child's guest physical memory."),
    _row(_C.ASSERT_VIRTUAL_INTERRUPT_DEPRECATED, "HvCallAssertVirtualInterruptDeprecated", _S,
         "Old code of AssertVirtualInterrupt (now 0x0094)."),
    _row(_C.CLEAR_VIRTUAL_INTERRUPT, "HvCallClearVirtualInterrupt", _S,
         "Clear a pending virtual interrupt.", fast=True),
    # --- ports, connections, messages, events ---
    _row(_C.CREATE_PORT_DEPRECATED, "HvCallCreatePortDeprecated", _S,
         "Old (WS2008) code of CreatePort (now 0x0095)."),
    _row(_C.DELETE_PORT, "HvCallDeletePort", _S,
         "Delete a port and free its message buffers.",
         fast=True, priv=_P.CREATE_PORT, inp=16),
    _row(_C.CONNECT_PORT_DEPRECATED, "HvCallConnectPortDeprecated", _S,
         "Old (WS2008) code of ConnectPort (now 0x0096)."),
    _row(_C.GET_PORT_PROPERTY, "HvCallGetPortProperty", _S, "Read a port property."),
    _row(_C.DISCONNECT_PORT, "HvCallDisconnectPort", _S,
         "Delete a connection.", fast=True, priv=_P.CONNECT_PORT, inp=16),
    _row(_C.POST_MESSAGE, "HvCallPostMessage", _S,
         "Post a message of up to 240 bytes to a connection's port.",
         priv=_P.POST_MESSAGES, inp=256),
    _row(_C.SIGNAL_EVENT, "HvCallSignalEvent", _S,
         "Set an event flag of a connection's port and interrupt on a 0->1 edge.",
         fast=True, priv=_P.SIGNAL_EVENTS, inp=8),
    _row(_C.SAVE_PARTITION_STATE, "HvCallSavePartitionState", _S, "Save partition state."),
    _row(_C.RESTORE_PARTITION_STATE, "HvCallRestorePartitionState", _S,
         "Restore partition state."),
    # --- event logs (layouts unknown, §9; fast per Mile) ---
    _row(_C.INITIALIZE_EVENT_LOG_BUFFER_GROUP, "HvCallInitializeEventLogBufferGroup", _S,
         "Create an event-log buffer group."),
    _row(_C.FINALIZE_EVENT_LOG_BUFFER_GROUP, "HvCallFinalizeEventLogBufferGroup", _S,
         "Tear down an event-log buffer group.", fast=True),
    _row(_C.CREATE_EVENT_LOG_BUFFER, "HvCallCreateEventLogBuffer", _S,
         "Create an event-log buffer.", fast=True),
    _row(_C.DELETE_EVENT_LOG_BUFFER, "HvCallDeleteEventLogBuffer", _S,
         "Delete an event-log buffer.", fast=True),
    _row(_C.MAP_EVENT_LOG_BUFFER, "HvCallMapEventLogBuffer", _S,
         "Map an event-log buffer."),
    _row(_C.UNMAP_EVENT_LOG_BUFFER, "HvCallUnmapEventLogBuffer", _S,
         "Unmap an event-log buffer.", fast=True),
    _row(_C.SET_EVENT_LOG_GROUP_SOURCES, "HvCallSetEventLogGroupSources", _S,
         "Choose the event sources of a buffer group.", fast=True),
    _row(_C.RELEASE_EVENT_LOG_BUFFER, "HvCallReleaseEventLogBuffer", _S,
         "Hand a consumed event-log buffer back.", fast=True),
    _row(_C.FLUSH_EVENT_LOG_BUFFER, "HvCallFlushEventLogBuffer", _S,
         "Flush an event-log buffer.", fast=True),
    # --- debugging, statistics, system ---
    _row(_C.POST_DEBUG_DATA, "HvCallPostDebugData", _S, "Send data to the debugger."),
    _row(_C.RETRIEVE_DEBUG_DATA, "HvCallRetrieveDebugData", _S,
         "Receive data from the debugger."),
    _row(_C.RESET_DEBUG_SESSION, "HvCallResetDebugSession", _S,
         "Reset the debugger session.", fast=True),
    _row(_C.MAP_STATS_PAGE, "HvCallMapStatsPage", _S,
         "Map a statistics page.", priv=_P.ACCESS_STATS),
    _row(_C.UNMAP_STATS_PAGE, "HvCallUnmapStatsPage", _S,
         "Unmap a statistics page.", priv=_P.ACCESS_STATS),
    _row(_C.MAP_SPARSE_GPA_PAGES, "HvCallMapSparseGpaPages", _R,
         "Map a sparse list of GPA pages into a child."),
    _row(_C.SET_SYSTEM_PROPERTY, "HvCallSetSystemProperty", _S,
         "Set a system-wide hypervisor property."),
    _row(_C.SET_PORT_PROPERTY, "HvCallSetPortProperty", _S, "Write a port property."),
    _row(_C.OUTPUT_DEBUG_CHARACTER, "HvCallOutputDebugCharacter", _S,
         "Print one character on the hypervisor debug port (test call)."),
    _row(_C.ECHO_INCREMENT, "HvCallEchoIncrement", _S, "Return input + 1 (test call)."),
    _row(_C.PERF_NOP, "HvCallPerfNop", _S, "Do nothing (performance test)."),
    _row(_C.PERF_NOP_INPUT, "HvCallPerfNopInput", _S,
         "Do nothing with an input block (performance test)."),
    _row(_C.PERF_NOP_OUTPUT, "HvCallPerfNopOutput", _S,
         "Do nothing with an output block (performance test)."),
    _row(_C.ADD_LOGICAL_PROCESSOR, "HvCallAddLogicalProcessor", _S,
         "Bring a logical processor under the hypervisor."),
    _row(_C.REMOVE_LOGICAL_PROCESSOR, "HvCallRemoveLogicalProcessor", _S,
         "Remove a logical processor."),
    _row(_C.QUERY_NUMA_DISTANCE, "HvCallQueryNumaDistance", _S,
         "Report the distance between NUMA nodes."),
    _row(_C.SET_LOGICAL_PROCESSOR_PROPERTY, "HvCallSetLogicalProcessorProperty", _S,
         "Write a logical-processor property."),
    _row(_C.GET_LOGICAL_PROCESSOR_PROPERTY, "HvCallGetLogicalProcessorProperty", _S,
         "Read a logical-processor property."),
    _row(_C.GET_SYSTEM_PROPERTY, "HvCallGetSystemProperty", _S,
         "Read a system-wide hypervisor property."),
    _row(_C.MAP_DEVICE_INTERRUPT, "HvCallMapDeviceInterrupt", _S,
         "Map a physical device interrupt."),
    _row(_C.UNMAP_DEVICE_INTERRUPT, "HvCallUnmapDeviceInterrupt", _S,
         "Unmap a physical device interrupt."),
    _row(_C.RETARGET_DEVICE_INTERRUPT, "HvCallRetargetDeviceInterrupt", _S,
         "Retarget a device interrupt to other VPs."),
    _row(_C.MAP_DEVICE_PAGES, "HvCallMapDevicePages", _S, "Map device pages."),
    _row(_C.UNMAP_DEVICE_PAGES, "HvCallUnmapDevicePages", _S, "Unmap device pages."),
    _row(_C.ATTACH_DEVICE, "HvCallAttachDevice", _S, "Attach a device to a domain."),
    _row(_C.DETACH_DEVICE, "HvCallDetachDevice", _S, "Detach a device from a domain."),
    _row(_C.NOTIFY_STANDBY_TRANSITION, "HvCallNotifyStandbyTransition", _S,
         "Announce a standby transition."),
    _row(_C.PREPARE_FOR_SLEEP, "HvCallPrepareForSleep", _S, "Prepare for system sleep."),
    _row(_C.PREPARE_FOR_HIBERNATE, "HvCallPrepareForHibernate", _S,
         "Prepare for hibernation."),
    _row(_C.NOTIFY_PARTITION_EVENT, "HvCallNotifyPartitionEvent", _S,
         "Notify the hypervisor of a partition event."),
    _row(_C.GET_LOGICAL_PROCESSOR_REGISTERS, "HvCallGetLogicalProcessorRegisters", _S,
         "Read registers of a logical processor."),
    _row(_C.SET_LOGICAL_PROCESSOR_REGISTERS, "HvCallSetLogicalProcessorRegisters", _S,
         "Write registers of a logical processor."),
    _row(_C.QUERY_ASSOCIATED_LPS_FOR_MCA, "HvCallQueryAssociatedLpsforMca", _S,
         "List the logical processors affected by a machine check."),
    _row(_C.NOTIFY_RING_EMPTY, "HvCallNotifyRingEmpty", _S,
         "Tell the hypervisor a port's ring became empty (Linux NOTIFY_PORT_RING_EMPTY)."),
    _row(_C.INJECT_SYNTHETIC_MACHINE_CHECK, "HvCallInjectSyntheticMachineCheck", _S,
         "Inject a synthetic machine check."),
    _row(_C.SCRUB_PARTITION, "HvCallScrubPartition", _S, "Scrub a partition's memory."),
    _row(_C.COLLECT_LIVEDUMP, "HvCallCollectLivedump", _S, "Collect a live dump."),
    _row(_C.DISABLE_HYPERVISOR, "HvCallDisableHypervisor", _S, "Turn the hypervisor off."),
    _row(_C.MODIFY_SPARSE_GPA_PAGES, "HvCallModifySparseGpaPages", _R,
         "Change attributes of a sparse list of GPA pages."),
    _row(_C.REGISTER_INTERCEPT_RESULT, "HvCallRegisterInterceptResult", _S,
         "Register a canned result for an intercept."),
    _row(_C.UNREGISTER_INTERCEPT_RESULT, "HvCallUnregisterInterceptResult", _S,
         "Remove a canned intercept result."),
    _row(_C.ASSERT_VIRTUAL_INTERRUPT, "HvCallAssertVirtualInterrupt", _S,
         "Assert a virtual interrupt on a VP of a child."),
    _row(_C.CREATE_PORT, "HvCallCreatePort", _S,
         "Create a message/event/monitor/doorbell port in a receiving partition.",
         priv=_P.CREATE_PORT, inp=56),
    _row(_C.CONNECT_PORT, "HvCallConnectPort", _S,
         "Create a sender's connection to a port.", priv=_P.CONNECT_PORT, inp=72),
    _row(_C.GET_SPA_PAGE_LIST, "HvCallGetSpaPageList", _S,
         "List the system physical pages backing GPAs."),
    _row(_C.START_VIRTUAL_PROCESSOR, "HvCallStartVirtualProcessor", _S,
         "Start a VP with an initial context.", priv=_P.START_VIRTUAL_PROCESSOR),
    _row(_C.GET_VP_INDEX_FROM_APIC_ID, "HvCallGetVpIndexFromApicId", _R,
         "Map APIC ids to VP indexes."),
    _row(_C.TRANSLATE_VIRTUAL_ADDRESS_EX, "HvCallTranslateVirtualAddressEx", _S,
         "Translate a GVA with extended results."),
    _row(_C.CHECK_FOR_IO_INTERCEPT, "HvCallCheckForIoIntercept", _S,
         "Ask whether an I/O access would be intercepted."),
    _row(_C.FLUSH_GUEST_PHYSICAL_ADDRESS_SPACE, "HvCallFlushGuestPhysicalAddressSpace", _S,
         "Flush cached L2 GPA translations (nested)."),
    _row(_C.FLUSH_GUEST_PHYSICAL_ADDRESS_LIST, "HvCallFlushGuestPhysicalAddressList", _R,
         "Flush a list of L2 GPA ranges (nested)."),
    _row(_C.SIGNAL_EVENT_DIRECT, "HvCallSignalEventDirect", _S,
         "Set an event flag on a given partition/VP/VTL/SINT without a connection.",
         inp=16, out=8),
    # PostMessageDirect: TLFS and OVMM disagree (§8 item 6); OVMM's 280-byte layout is used.
    _row(_C.POST_MESSAGE_DIRECT, "HvCallPostMessageDirect", _S,
         "Post a message to a given partition/VP/VTL/SINT without a connection.", inp=280),
    _row(_C.DISPATCH_VP, "HvCallDispatchVp", _S, "Run a VP (root scheduler)."),
    _row(_C.GET_GPA_PAGES_ACCESS_STATES, "HvCallGetGpaPagesAccessStates", _S,
         "Read and clear accessed/dirty state of GPA pages."),
    _row(_C.CHECK_SPARSE_GPA_PAGE_VTL_ACCESS, "HvCallCheckSparseGpaPageVtlAccess", _S,
         "Check VTL access to sparse GPA pages."),
    _row(_C.ACQUIRE_SPARSE_SPA_PAGE_HOST_ACCESS, "HvCallAcquireSparseSpaPageHostAccess", _S,
         "Acquire host access to sparse SPA pages."),
    _row(_C.RELEASE_SPARSE_SPA_PAGE_HOST_ACCESS, "HvCallReleaseSparseSpaPageHostAccess", _S,
         "Release host access to sparse SPA pages."),
    _row(_C.ACCEPT_GPA_PAGES, "HvCallAcceptGpaPages", _S,
         "Accept GPA pages into an isolated partition."),
    _row(_C.MODIFY_SPARSE_GPA_PAGE_HOST_VISIBILITY,
         "HvCallModifySparseGpaPageHostVisibility", _S,
         "Change host visibility of sparse GPA pages."),
    _row(_C.MAP_VP_STATE_PAGE, "HvCallMapVpStatePage", _S, "Map a VP state page."),
    _row(_C.UNMAP_VP_STATE_PAGE, "HvCallUnmapVpStatePage", _S, "Unmap a VP state page."),
    _row(_C.GET_VP_STATE, "HvCallGetVpState", _S, "Read VP state."),
    _row(_C.SET_VP_STATE, "HvCallSetVpState", _S, "Write VP state."),
    _row(_C.GET_VP_SET_FROM_MDA, "HvCallGetVpSetFromMda", _S,
         "Turn an APIC message destination address into a VP set."),
    _row(_C.GET_VP_CPUID_VALUES, "HvCallGetVpCpuidValues", _R,
         "Read the CPUID values a VP would see."),
    _row(_C.RESTORE_PARTITION_TIME, "HvCallRestorePartitionTime", _S,
         "Restore a partition's reference time."),
    _row(_C.MEMORY_MAPPED_IO_READ, "HvCallMemoryMappedIoRead", _S,
         "Read MMIO through the hypervisor."),
    _row(_C.MEMORY_MAPPED_IO_WRITE, "HvCallMemoryMappedIoWrite", _S,
         "Write MMIO through the hypervisor."),
    _row(_C.SET_PARTITION_PROPERTY_EX, "HvCallSetPartitionPropertyEx", _S,
         "Write a partition property with a variable-size value.", varhead=True),
    _row(_C.INSTALL_INTERCEPT_EX, "HvCallInstallInterceptEx", _R,
         "Install a list of intercepts."),
    _row(_C.PIN_GPA_PAGE_RANGES, "HvCallPinGpaPageRanges", _S, "Pin GPA page ranges."),
    _row(_C.UNPIN_GPA_PAGE_RANGES, "HvCallUnpinGpaPageRanges", _S, "Unpin GPA page ranges."),
    _row(_C.QUERY_SPARSE_GPA_PAGE_HOST_VISIBILITY, "HvCallQuerySparseGpaPageHostVisibility",
         _S, "Read host visibility of sparse GPA pages."),
    _row(_C.SET_VIRTUAL_INTERRUPT_TARGET, "HvCallSetVirtualInterruptTarget", _S,
         "Retarget a virtual interrupt."),
    _row(_C.MAP_STATS_PAGE2, "HvCallMapStatsPage2", _S,
         "Map a statistics page at a caller-chosen GPA.", priv=_P.ACCESS_STATS),
    # --- extended hypercalls (>= 0x8000); gated by EnableExtendedHypercalls (§1.6) ---
    _row(_C.EXT_QUERY_CAPABILITIES, "HvExtCallQueryCapabilities", _S,
         "Report which extended hypercalls exist.", priv=_P.ENABLE_EXTENDED_HYPERCALLS),
    _row(_C.EXT_GET_BOOT_ZEROED_MEMORY, "HvExtCallGetBootZeroedMemory", _S,
         "Report which memory was zeroed at boot.", priv=_P.ENABLE_EXTENDED_HYPERCALLS),
    _row(_C.EXT_MEMORY_HEAT_HINT, "HvExtCallMemoryHeatHint", _S,
         "Hint which pages are cold.", priv=_P.ENABLE_EXTENDED_HYPERCALLS),
    _row(_C.EXT_EPF_SETUP, "HvExtCallEpfSetup", _S,
         "Set up enlightened page faults.", priv=_P.ENABLE_EXTENDED_HYPERCALLS),
    _row(_C.EXT_MEMORY_HEAT_HINT_ASYNC, "HvExtCallMemoryHeatHintAsync", _S,
         "Asynchronous memory heat hint.", priv=_P.ENABLE_EXTENDED_HYPERCALLS),
    _row(_C.VBS_VM_CALL_REPORT, "HvCallVbsVmCallReport", _S,
         "Request a VBS attestation report (OVMM)."),
)


def _build(rows: tuple[HypercallInfo, ...]) -> Mapping[int, HypercallInfo]:
    table: dict[int, HypercallInfo] = {}
    for row in rows:
        if row.code in table:
            raise RuntimeError(f"hypercall table: code {row.code:#06x} listed twice")
        table[row.code] = row
    missing = sorted(set(HvCallCode) - table.keys())
    if missing:
        raise RuntimeError(f"hypercall table: no row for {', '.join(map(hex, missing))}")
    return types.MappingProxyType(dict(sorted(table.items())))


#: Every call code with its description, in code order (read-only).
HYPERCALLS: Mapping[int, HypercallInfo] = _build(_TABLE)


def hypercall_info(code: int) -> HypercallInfo | None:
    """The table row for ``code``, or ``None`` for an unknown or reserved code (the bridge
    answers those with ``HV_STATUS_INVALID_HYPERCALL_CODE``)."""
    return HYPERCALLS.get(code)
