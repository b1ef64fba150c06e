"""``WinHv``: the calling convention of ``winhv.sys``, bound to one partition and VP.

Every function is named as in Windows and returns an :class:`~winhv.HvStatus`; a function with
an output returns ``(status, value)``. Hypervisor failures are statuses, never exceptions (an
exception means the *caller* passed something Python cannot encode, e.g. a negative id). Rep
calls continue transparently: when the hypervisor returns early with reps completed < rep
count, the call is reissued from where it stopped, as a guest's RIP-not-advanced re-execution
would (fact sheet §1.3).

Parameters go through the handle's own hypercall input/output pages in the partition's memory;
the handle holds no reference into the hypervisor besides the bridge it calls.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterable, Sequence

from winhv._calls import HvCallCode
from winhv._control import CONTROL_REP_COUNT_SHIFT, CONTROL_REP_START_SHIFT
from winhv._gpa import GpaError
from winhv._handle import HandleCore
from winhv._registers import HvRegisterName
from winhv._status import HvStatus
from winhv._structs import HV_ANY_VP, HV_PARTITION_ID_SELF, HV_VP_INDEX_SELF, HvPortType

__all__ = ["WinHv"]

_U64 = struct.Struct("<Q")
_PAGE = 4096
#: WinHvSignalEom's input: this partition and VP, one (EOM, 0) register element.
_EOM_HEADER = struct.pack("<QIB3x", HV_PARTITION_ID_SELF, HV_VP_INDEX_SELF, 0)
_EOM_ELEMENT = struct.pack("<I12xQQ", int(HvRegisterName.EOM), 0, 0)
_EOM_INPUT = _EOM_HEADER + _EOM_ELEMENT
_EOM_CONTROL = HvCallCode.SET_VP_REGISTERS | 1 << CONTROL_REP_COUNT_SHIFT


#: HvStatus members by value: a dict lookup instead of an enum call (~1 us) per hypercall.
_STATUSES: dict[int, HvStatus] = {int(member): member for member in HvStatus}


def _status(value: int) -> HvStatus | int:
    value &= 0xFFFF
    return _STATUSES.get(value, value)


class WinHv(HandleCore):
    """The WinHv functions for one partition and VP (see the module docstring)."""

    # -- plumbing ------------------------------------------------------------------------------

    def _input(self) -> memoryview:
        return self.memory.view(self.input_gpa, _PAGE)

    def _output(self) -> memoryview:
        return self.memory.view(self.output_gpa, _PAGE)

    def _simple(self, code: int, data: bytes = b"", out_size: int = 0,
                ) -> tuple[HvStatus | int, bytes]:
        try:
            return self._simple_call(code, data, out_size)
        except GpaError:
            # The handle's own parameter pages are gone (the partition gave them away): the
            # hypervisor cannot read the input either, so the call fails as a GPA fault does.
            return HvStatus.INVALID_ALIGNMENT, b""

    def _simple_call(self, code: int, data: bytes, out_size: int,
                     ) -> tuple[HvStatus | int, bytes]:
        if data:
            self._input()[: len(data)] = data
        result = self.hypercall(code, self.input_gpa if data else 0,
                                self.output_gpa if out_size else 0)
        status = _status(result)
        out = bytes(self._output()[:out_size]) if out_size and status == 0 else b""
        return status, out

    def _rep(self, code: int, header: bytes, elements: Sequence[bytes], element_out: int = 0,
             ) -> tuple[HvStatus | int, int, bytes]:
        size = len(elements[0]) if elements else 0
        return self._rep_packed(code, header, b"".join(elements), size, len(elements),
                                element_out)

    def _rep_packed(self, code: int, header: bytes, packed: bytes, element_size: int,
                    count: int, element_out: int = 0) -> tuple[HvStatus | int, int, bytes]:
        """Issue a rep call, continuing until every element is done or one fails.

        Returns ``(status, reps completed, output elements)``.
        """
        if count == 0:
            return HvStatus.SUCCESS, 0, b""
        if count > 0xFFF:
            raise ValueError(f"{count} elements exceed the 12-bit rep count")
        data = header + packed
        if len(data) > _PAGE or count * element_out > _PAGE:
            raise ValueError("rep input or output does not fit one page")
        try:
            page = self._input()
            output = self._output() if element_out else None
        except GpaError:
            return HvStatus.INVALID_ALIGNMENT, 0, b""
        page[: len(data)] = data
        done = 0
        while True:
            control = code | (count << CONTROL_REP_COUNT_SHIFT) | (done << CONTROL_REP_START_SHIFT)
            result = self.hypercall(control, self.input_gpa,
                                    self.output_gpa if element_out else 0)
            status = _status(result)
            completed = (result >> 32) & 0xFFF
            if status != HvStatus.SUCCESS or completed >= count:
                break
            if completed <= done:  # no progress: never spin
                status = HvStatus.INVALID_HYPERCALL_INPUT
                break
            done = completed
        out = bytes(output[: completed * element_out]) if output is not None else b""
        return status, completed, out

    # -- partitions ----------------------------------------------------------------------------

    def WinHvCreatePartition(self, flags: int = 0, compatibility_version: int = 0,
                             ) -> tuple[HvStatus | int, int]:
        """Create a child partition; ``(status, new partition id)``."""
        data = struct.pack("<QQI4x16sQQ", flags, 0, compatibility_version, b"", 0, 0)
        status, out = self._simple(HvCallCode.CREATE_PARTITION, data, 8)
        return status, (_U64.unpack(out)[0] if out else 0)

    def WinHvInitializePartition(self, partition_id: int) -> HvStatus | int:
        return self._simple(HvCallCode.INITIALIZE_PARTITION, _U64.pack(partition_id))[0]

    def WinHvFinalizePartition(self, partition_id: int) -> HvStatus | int:
        return self._simple(HvCallCode.FINALIZE_PARTITION, _U64.pack(partition_id))[0]

    def WinHvDeletePartition(self, partition_id: int) -> HvStatus | int:
        return self._simple(HvCallCode.DELETE_PARTITION, _U64.pack(partition_id))[0]

    def WinHvGetPartitionProperty(self, partition_id: int, property_code: int,
                                  ) -> tuple[HvStatus | int, int]:
        status, out = self._simple(HvCallCode.GET_PARTITION_PROPERTY,
                                   struct.pack("<QI4x", partition_id, property_code), 8)
        return status, (_U64.unpack(out)[0] if out else 0)

    def WinHvSetPartitionProperty(self, partition_id: int, property_code: int,
                                  value: int) -> HvStatus | int:
        data = struct.pack("<QI4xQ", partition_id, property_code, value)
        return self._simple(HvCallCode.SET_PARTITION_PROPERTY, data)[0]

    def WinHvGetNextChildPartition(self, parent_id: int = HV_PARTITION_ID_SELF,
                                   previous_child_id: int = 0) -> tuple[HvStatus | int, int]:
        status, out = self._simple(HvCallCode.GET_NEXT_CHILD_PARTITION,
                                   struct.pack("<QQ", parent_id, previous_child_id), 8)
        return status, (_U64.unpack(out)[0] if out else 0)

    # -- memory --------------------------------------------------------------------------------

    def WinHvDepositMemory(self, partition_id: int, pages: Iterable[int]) -> HvStatus | int:
        """Give pages of this partition's memory (GPA page numbers) to a partition's pool."""
        return self._rep(HvCallCode.DEPOSIT_MEMORY, _U64.pack(partition_id),
                         [_U64.pack(p) for p in pages])[0]

    def WinHvWithdrawMemory(self, partition_id: int, count: int,
                            ) -> tuple[HvStatus | int, list[int]]:
        """Take up to ``count`` unused pages back; ``(status, page numbers)``."""
        status, done, out = self._rep(HvCallCode.WITHDRAW_MEMORY,
                                      struct.pack("<QQ", partition_id, 0),
                                      [b""] * count, element_out=8)
        return status, [v for (v,) in struct.iter_unpack("<Q", out[: 8 * done])]

    def WinHvGetMemoryBalance(self, partition_id: int) -> tuple[HvStatus | int, tuple[int, int]]:
        """``(status, (pages available, pages in use))`` of a partition's pool."""
        status, out = self._simple(HvCallCode.GET_MEMORY_BALANCE,
                                   struct.pack("<QQ", partition_id, 0), 16)
        return status, (struct.unpack("<QQ", out) if out else (0, 0))

    def WinHvMapGpaPages(self, partition_id: int, target_gpa_page: int,
                         source_pages: Sequence[int], flags: int = 0x7) -> HvStatus | int:
        """Map this partition's pages ``source_pages`` at ``target_gpa_page ..`` in a child."""
        header = struct.pack("<QQI4x", partition_id, target_gpa_page, flags)
        pages = array("Q", source_pages)
        if sys.byteorder != "little":
            pages.byteswap()
        return self._rep_packed(HvCallCode.MAP_GPA_PAGES, header, pages.tobytes(), 8,
                                len(pages))[0]

    def WinHvUnmapGpaPages(self, partition_id: int, target_gpa_page: int,
                           count: int) -> HvStatus | int:
        header = struct.pack("<QQI4x", partition_id, target_gpa_page, 0)
        return self._rep(HvCallCode.UNMAP_GPA_PAGES, header, [b""] * count)[0]

    # -- virtual processors --------------------------------------------------------------------

    def WinHvCreateVp(self, partition_id: int, vp_index: int) -> HvStatus | int:
        data = struct.pack("<QI3xB8sQQ", partition_id, vp_index, 0, b"", 0, 0)
        return self._simple(HvCallCode.CREATE_VP, data)[0]

    def WinHvDeleteVp(self, partition_id: int, vp_index: int) -> HvStatus | int:
        return self._simple(HvCallCode.DELETE_VP, struct.pack("<QI4x", partition_id, vp_index))[0]

    def WinHvGetVpRegisters(self, names: Sequence[int], *, partition_id: int = HV_PARTITION_ID_SELF,
                            vp_index: int = HV_VP_INDEX_SELF,
                            ) -> tuple[HvStatus | int, list[int]]:
        """Read registers; ``(status, values)`` (values of the registers read before a failure)."""
        header = struct.pack("<QIB3x", partition_id, vp_index, 0)
        status, done, out = self._rep(HvCallCode.GET_VP_REGISTERS, header,
                                      [struct.pack("<I", int(n)) for n in names], element_out=16)
        return status, [lo for lo, _hi in struct.iter_unpack("<QQ", out[: 16 * done])]

    def WinHvSetVpRegisters(self, values: Iterable[tuple[int, int]], *,
                            partition_id: int = HV_PARTITION_ID_SELF,
                            vp_index: int = HV_VP_INDEX_SELF) -> HvStatus | int:
        """Write ``(register name, value)`` pairs in order; stops at the first failure."""
        header = struct.pack("<QIB3x", partition_id, vp_index, 0)
        elements = [struct.pack("<I12xQQ", int(n), v, 0) for n, v in values]
        return self._rep(HvCallCode.SET_VP_REGISTERS, header, elements)[0]

    def WinHvGetVpRegister(self, name: int, **target: int) -> tuple[HvStatus | int, int]:
        status, values = self.WinHvGetVpRegisters([name], **target)
        return status, (values[0] if values else 0)

    def WinHvSetVpRegister(self, name: int, value: int, **target: int) -> HvStatus | int:
        return self.WinHvSetVpRegisters([(name, value)], **target)

    def WinHvSignalEom(self) -> HvStatus | int:
        """Write the EOM register of this VP (redeliver queued messages, §2.4).

        The same HvCallSetVpRegisters call as ``WinHvSetVpRegister(EOM, 0)``, with its
        constant input precomputed: the ISR issues one per queued message.
        """
        try:
            self._input()[: len(_EOM_INPUT)] = _EOM_INPUT
        except GpaError:
            return HvStatus.INVALID_ALIGNMENT
        result = self.hypercall(_EOM_CONTROL, self.input_gpa, 0)
        status = _status(result)
        if status == 0 and not (result >> 32) & 0xFFF:
            return HvStatus.INVALID_HYPERCALL_INPUT   # no rep done: as _rep_packed says
        return status

    # -- ports and connections -----------------------------------------------------------------

    def WinHvCreatePort(self, port_partition_id: int, port_id: int, port_type: int, *,
                        connection_partition_id: int, target_sint: int,
                        target_vp: int = HV_ANY_VP, base_flag: int = 0,
                        flag_count: int = 0) -> HvStatus | int:
        """Create a message or event port (``HvPortType``) that targets a VP's SINT."""
        info = struct.pack("<I4xIIHHI", port_type, target_sint, target_vp,
                           base_flag if port_type == HvPortType.EVENT else 0,
                           flag_count if port_type == HvPortType.EVENT else 0, 0)
        data = struct.pack("<QIBBHQ", port_partition_id, port_id, 0, 0, 0,
                           connection_partition_id) + info + _U64.pack(0)
        return self._simple(HvCallCode.CREATE_PORT, data)[0]

    def WinHvDeletePort(self, port_partition_id: int, port_id: int) -> HvStatus | int:
        return self._simple(HvCallCode.DELETE_PORT,
                            struct.pack("<QI4x", port_partition_id, port_id))[0]

    def WinHvConnectPort(self, connection_partition_id: int, connection_id: int,
                         port_partition_id: int, port_id: int, port_type: int) -> HvStatus | int:
        """Bind ``connection_id`` of the connecting partition to a port."""
        data = struct.pack("<QIB3xQI4x", connection_partition_id, connection_id, 0,
                           port_partition_id, port_id) + struct.pack("<I28x", port_type) \
            + _U64.pack(0)
        return self._simple(HvCallCode.CONNECT_PORT, data)[0]

    def WinHvDisconnectPort(self, connection_partition_id: int,
                            connection_id: int) -> HvStatus | int:
        return self._simple(HvCallCode.DISCONNECT_PORT,
                            struct.pack("<QI4x", connection_partition_id, connection_id))[0]
