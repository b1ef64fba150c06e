"""The root side of VMBus, host-wide: one :class:`VmbusHost` per root (``vmbusr``'s shared part).

The host owns the root's VMBus resources, which every VM's :class:`VmbusServer`
(``_server.py``) draws on: the SINT the guests' control messages arrive on (the origination id
in each SynIC message, a root port id, tells which VM and which connection a message came on),
the SIEF flags its channels' guest->host signals set, and the root's port and connection ids.

They are shared by every VM, and the guests are untrusted, so each is kept in a pool that gets
back exactly what a failed open took and what a closed channel or a stopped VM gave up: no
sequence of legal opens and closes uses them up, and a per-VM quota of open channels keeps one
VM from taking the flags the others need.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from winhv.drivers.kernel import Kernel

if TYPE_CHECKING:
    from winhv.drivers.vmbus._server import VmbusServer

__all__ = ["VmbusHost"]

_log = logging.getLogger("winhv.vmbus")

#: SIM message type of every VMBus control message (fact sheet §3.1).
VMBUS_MESSAGE_TYPE = 1
#: SINT of the VMBus control plane and of channel interrupts (§3.1).
VMBUS_SINT = 2
#: Root SINTs whose SIEF flags carry guest->host channel signals (2047 channels each).
ROOT_EVENT_SINTS = (2, 3, 4, 5, 6, 7)
#: Channel connection ids in an offer: 0x2000 + relid (OpenVMM's VTL0/SINT2 scheme, §3.1).
CHANNEL_CONNECTION_BASE = 0x2000
#: NTSTATUS answered to an OPENCHANNEL the host cannot honour (STATUS_UNSUCCESSFUL).
STATUS_UNSUCCESSFUL = 0xC0000001
#: Port and connection ids are 24 bits (HvCallCreatePort/HvCallConnectPort, §1.7).
ID_LIMIT = 0xFF_FFFF
#: No VP index reaches this (HV_MAXIMUM_PROCESSORS on x64; HvCallCreateVp refuses it). The
#: indices above it are not VPs either: 0xFFFFFFFE is HV_VP_INDEX_SELF, 0xFFFFFFFF HV_ANY_VP.
MAX_VPS = 2048
#: The root's own port and connection ids start above these (below is left to others).
FIRST_PORT_ID = 0x101
FIRST_CONNECTION_ID = 0x10001

_ORIGIN = struct.Struct("<Q")

_T = TypeVar("_T")


class HostError(RuntimeError):
    """A hypercall the host made for a VM failed, or a host-wide pool is empty. The message
    names the VM, what the host was doing and the status."""


class Undo:
    """The inverses of a transaction's steps, run newest first if the transaction fails.

    ``with Undo() as undo:`` register each step's inverse with ``undo.callback(fn, *args)``
    right after the step; call ``undo.commit()`` once everything succeeded. A block that
    ends without ``commit()`` -- an exception, or a return from inside it -- runs every
    registered inverse (one that raises is logged, and the rest still run); an exception
    then goes on. A list of calls rather than an ``ExitStack``:
    a channel open registers about six and bring-up opens dozens of channels.
    """

    __slots__ = ("_steps",)

    def __init__(self) -> None:
        self._steps: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []

    def __enter__(self) -> Undo:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        steps = self._steps
        while steps:
            fn, args, kwargs = steps.pop()
            try:
                fn(*args, **kwargs)
            except Exception:
                _log.exception("undoing a failed VMBus transaction: %r raised", fn)
        return False

    def callback(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        self._steps.append((fn, args, kwargs))

    def commit(self) -> None:
        """Everything succeeded: forget the inverses."""
        self._steps.clear()


class _Pool(Generic[_T]):
    """``count`` host-wide resources (ids, SIEF flags): ``make(i)`` is the ``i``-th. Given
    back ones are reused first (last in, first out).

    ``take(undo)`` registers on ``undo`` (an :class:`Undo`) the exact inverse of the take, so a
    transaction that fails part way leaves the pool as it found it.
    """

    def __init__(self, what: str, count: int, make: Callable[[int], _T]) -> None:
        self.what = what
        self.count = count
        self.make = make
        self.free: list[_T] = []
        #: Index of the next never-used resource.
        self.next = 0
        #: Taken ones that must not come back (the hypervisor still has them).
        self.retired: set[_T] = set()

    def take(self, undo: Undo | None = None) -> _T:
        if self.free:
            value = self.free.pop()
            if undo is not None:
                undo.callback(self.give, value)
            return value
        if self.next >= self.count:
            raise HostError(f"the root has no {self.what} left: all {self.count} are in use")
        value = self.make(self.next)
        self.next += 1
        if undo is not None:
            undo.callback(self._untake_new, value)
        return value

    def _untake_new(self, value: _T) -> None:
        if value in self.retired:
            self.retired.discard(value)   # stays used: the pool never hands it out again
        elif self.next and self.make(self.next - 1) == value:
            self.next -= 1                # the newest: the counter steps back over it
        else:
            # Taken before a newer one that was retired (which the counter must not step
            # back onto): reused like any given-back value.
            self.free.append(value)

    def give(self, value: _T) -> None:
        if value in self.retired:
            self.retired.discard(value)
        else:
            self.free.append(value)

    def retire(self, value: _T) -> None:
        """``value`` (taken) must never be handed out again: a later ``give`` or undo of its
        take drops it."""
        self.retired.add(value)


def _flag(index: int) -> tuple[int, int]:
    sint, flag = divmod(index, 2047)
    return ROOT_EVENT_SINTS[sint], flag + 1   # flag 0 is never a channel, as on Hyper-V


class VmbusHost:
    """The root's VMBus: SINT dispatch and the resources every VM's server shares.

    Those are the root SIEF flags (``len(ROOT_EVENT_SINTS) * 2047``: one per open channel of
    any VM) and the root's port and connection ids (24 bits each). Each goes back to its pool
    when the channel closes or the server shuts down, so no sequence of legal opens and closes
    uses them up; a per-VM quota (``VmbusServer.max_open_channels``) keeps one VM from taking
    the flags the others need.
    """

    def __init__(self, root: Kernel) -> None:
        self.root = root
        self._routes: dict[int, tuple[VmbusServer, int]] = {}   # root port id -> server, conn
        self._flags: _Pool[tuple[int, int]] = _Pool(
            "SIEF flag for another channel", len(ROOT_EVENT_SINTS) * 2047, _flag)
        self._port_ids: _Pool[int] = _Pool(
            "port id", ID_LIMIT + 1 - FIRST_PORT_ID, lambda i: FIRST_PORT_ID + i)
        self._connection_ids: _Pool[int] = _Pool(
            "connection id", ID_LIMIT + 1 - FIRST_CONNECTION_ID, lambda i: FIRST_CONNECTION_ID + i)
        # Ids of deleted message ports: a message of one may still sit in the root's SIM slot,
        # so each is reused only once the root has taken the next message (see _on_message).
        # Until then they are held: two per VM stopped while no guest sends anything, out
        # of 2**24.
        self._quarantined_ports: list[int] = []
        self.servers: dict[int, VmbusServer] = {}
        root.on_message(VMBUS_SINT, self._on_message)

    @staticmethod
    def synic_sints(vector: int) -> dict[int, int]:
        """The SINT -> vector map the root kernel must enable for VMBus."""
        return {sint: vector for sint in ROOT_EVENT_SINTS}

    def take_flag(self, undo: Undo | None = None) -> tuple[int, int]:
        """A free (root SINT, flag) pair for one channel's guest->host signal (flag 0 is
        never a channel, as on Hyper-V). Raises :class:`HostError` when none is left."""
        return self._flags.take(undo)

    def give_flag(self, flag: tuple[int, int]) -> None:
        self._flags.give(flag)

    def retire_flag(self, flag: tuple[int, int]) -> None:
        """A root port that could not be deleted still sets ``flag``: never hand it out again
        (its ``give_flag`` or undo then drops it)."""
        self._flags.retire(flag)

    def new_port_id(self, undo: Undo | None = None) -> int:
        """A root port id no live root port has (:class:`HostError` when none is left)."""
        return self._port_ids.take(undo)

    def free_port_id(self, port_id: int, *, message: bool = False) -> None:
        """``port_id`` names no root port any more. A message port's id is held back until
        the root took its next message (one from the deleted port may sit in the SIM slot)."""
        if message:
            self._quarantined_ports.append(port_id)
        else:
            self._port_ids.give(port_id)

    def new_connection_id(self, undo: Undo | None = None) -> int:
        """A root connection id no live root connection has (:class:`HostError` when none is
        left)."""
        return self._connection_ids.take(undo)

    def free_connection_id(self, connection_id: int) -> None:
        self._connection_ids.give(connection_id)

    def retire_port_id(self, port_id: int) -> None:
        """The hypervisor has a root port ``port_id`` the host did not make (or could not
        delete): never hand that id out again."""
        self._port_ids.retire(port_id)

    def retire_connection_id(self, connection_id: int) -> None:
        """As :meth:`retire_port_id`, for a root connection id."""
        self._connection_ids.retire(connection_id)

    def route(self, port_id: int, server: VmbusServer, connection_id: int) -> None:
        self._routes[port_id] = (server, connection_id)

    def unroute(self, port_id: int) -> None:
        self._routes.pop(port_id, None)

    def _on_message(self, message: bytes) -> None:
        port_id = _ORIGIN.unpack_from(message, 8)[0] & 0xFF_FFFF
        route = self._routes.get(port_id)
        if self._quarantined_ports:
            # The root's SIM slot holds one message, and deleting a port drops its queued ones:
            # this message was the last one a deleted port could have left.
            for quarantined in self._quarantined_ports:
                self._port_ids.give(quarantined)
            self._quarantined_ports.clear()
        if route is None:
            _log.warning("root: VMBus message from unknown port %#x dropped", port_id)
            return
        server, connection_id = route
        size = message[4]
        server.receive(message[16:16 + min(size, 240)], connection_id)
