# cython: language_level=3
"""The compiled hypervisor objects: partitions, virtual processors with their SynIC, ports and
connections, and the message/event delivery of fact sheet §2.3–§2.6.

Policy (who may create what, partition states, properties) lives in Python
(:mod:`winhv.drivers.hv.hypervisor` and the handler modules); what a guest triggers on every
message or signal lives here in C: ``HvCallPostMessage`` and ``HvCallSignalEvent`` are
registered with the compiled bridge as C function pointers and run without the interpreter.

SynIC pages live in the partition's own memory at the GPAs it programmed into SIMP/SIEFP, so a
guest reads its messages and event flags from its memory exactly as on Hyper-V.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from cpython.list cimport PyList_Append, PyList_GET_SIZE
from cpython.tuple cimport PyTuple_GET_ITEM
from cpython.ref cimport PyObject
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

from types import MappingProxyType

from winhv._bridge cimport Bridge, Caller, HvCall
from winhv._cdefs cimport (
    CALL_GET_PARTITION_ID, CALL_POST_MESSAGE, CALL_SET_VP_REGISTERS, CALL_SIGNAL_EVENT,
    HV_DEFER_TO_PYTHON, REGISTER_EOM, HV_MESSAGE_PAYLOAD_SIZE,
    MESSAGE_FLAG_PENDING, SINT_MASKED, SINT_VECTOR_MASK, ST_INVALID_CONNECTION_ID,
    ST_INSUFFICIENT_BUFFERS, ST_INVALID_PARAMETER, ST_INVALID_PORT_ID, ST_INVALID_SYNIC_STATE,
    ST_INVALID_VP_INDEX, ST_SUCCESS, ST_ACCESS_DENIED,
)
from winhv._gpa cimport GpaSpace, gpa_pointer, gpa_pointer_lent

cdef extern from *:
    """
    static inline unsigned char winhv_atomic_or8(unsigned char *p, unsigned char v) {
        return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST);
    }
    static inline void winhv_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
    """
    unsigned char winhv_atomic_or8(unsigned char* p, unsigned char v) nogil
    void winhv_fence() nogil

# Borrowed list access for the hot paths (no reference counting, no Python error checks). The
# lists are the objects' own attributes, which outlive the call.
cdef extern from *:
    """
    #define winhv_list_size(o) PyList_GET_SIZE((PyObject *)(o))
    #define winhv_list_item(o, i) ((void *)PyList_GET_ITEM((PyObject *)(o), (i)))
    """
    Py_ssize_t _list_size "winhv_list_size"(void* o) noexcept nogil
    void* _list_item "winhv_list_item"(void* o, Py_ssize_t i) noexcept nogil

# Partition states (hypervisor-internal; the TLFS names the transitions, not the states).
STATE_CREATED = 0        # after HvCallCreatePartition
STATE_ACTIVE = 1         # after HvCallInitializePartition
STATE_FINALIZED = 2      # after HvCallFinalizePartition; only DeletePartition remains
STATE_DELETED = 3
cdef int _ACTIVE = 1

cdef enum:
    _PORT_MESSAGE = 1
    _PORT_EVENT = 2

PORT_MESSAGE = _PORT_MESSAGE
PORT_EVENT = _PORT_EVENT
PORT_MONITOR = 3
PORT_DOORBELL = 4

#: Guest message buffers per message port (fact sheet §2.4).
PORT_MESSAGE_BUFFERS = 16
cdef uint32_t _ANY_VP = 0xFFFFFFFFU
cdef uint32_t _VP_SELF = 0xFFFFFFFEU
cdef uint32_t _ID_RESERVED = 0xFF000000U
cdef uint32_t _TYPE_HYPERVISOR = 0x80000000U
cdef uint64_t _ACCESS_SYNIC_REGS = 1 << 2     # Privilege.ACCESS_SYNIC_REGS (§1.6)
HV_ANY_VP = _ANY_VP
HV_VP_INDEX_SELF = _VP_SELF


@cython.final
cdef class Port:
    """A port: owned by the receiving partition; fixes the target VP and SINT (§2.6)."""

    cdef readonly uint32_t port_id
    cdef readonly Partition partition
    cdef readonly uint32_t port_type
    cdef readonly uint32_t target_sint
    cdef readonly uint32_t target_vp
    cdef readonly uint16_t base_flag
    cdef readonly uint16_t flag_count
    cdef public int free_buffers
    cdef public bint deleted
    cdef public uint64_t connection_partition
    cdef public uint64_t messages
    cdef public uint64_t signals

    def __init__(self, Partition partition not None, uint32_t port_id, uint32_t port_type,
                 uint32_t target_sint, uint32_t target_vp, uint16_t base_flag=0,
                 uint16_t flag_count=0):
        self.partition = partition
        self.port_id = port_id
        self.port_type = port_type
        self.target_sint = target_sint
        self.target_vp = target_vp
        self.base_flag = base_flag
        self.flag_count = flag_count
        self.free_buffers = PORT_MESSAGE_BUFFERS if port_type == _PORT_MESSAGE else 0
        self.deleted = False

    def __repr__(self):
        kind = {1: "message", 2: "event", 3: "monitor", 4: "doorbell"}.get(self.port_type, "?")
        return (f"<Port {self.port_id:#x} {kind} of partition {self.partition.partition_id:#x} "
                f"vp={self.target_vp} sint={self.target_sint}>")


@cython.final
cdef class Connection:
    """A connection: owned by the sending partition, bound to one port (§2.6)."""

    cdef readonly uint32_t connection_id
    cdef readonly Partition partition
    cdef readonly Port port

    def __init__(self, Partition partition not None, uint32_t connection_id, Port port not None):
        self.partition = partition
        self.connection_id = connection_id
        self.port = port

    def __repr__(self):
        return (f"<Connection {self.connection_id:#x} of partition "
                f"{self.partition.partition_id:#x} -> {self.port!r}>")


@cython.final
cdef class Vp:
    """A virtual processor and its SynIC registers, message queues and pending interrupts."""

    cdef readonly uint32_t index
    cdef readonly Partition partition
    cdef public uint64_t scontrol
    cdef public uint64_t simp
    cdef public uint64_t siefp
    cdef uint64_t _sint[16]
    cdef list _queues                 # per SINT: [(message bytes, Port), ...] waiting for the slot
    cdef uint64_t _irr[4]             # pending interrupt vectors (bit per vector)
    cdef public bint queued           # in the scheduler's ready list
    cdef public object ready          # the scheduler's ready list (shared by every VP)
    cdef public object interrupt_handler   # the guest's ISR: callable(vector)
    cdef public uint64_t interrupts_raised
    cdef public uint64_t interrupts_lost
    cdef void* _memory                # partition.memory, borrowed (both are fixed for life)

    def __init__(self, Partition partition not None, uint32_t index, ready not None):
        self.partition = partition
        self._memory = <void*> partition.memory
        self.index = index
        self.ready = ready
        self._queues = [[] for _ in range(16)]
        self.reset()

    def reset(self):
        """Reset the SynIC to its power-on state (§2.2: SINTs masked, pages disabled)."""
        cdef int i
        self.scontrol = 0
        self.simp = 0
        self.siefp = 0
        for i in range(16):
            self._sint[i] = SINT_MASKED
            self._release_queue(i)
        for i in range(4):
            self._irr[i] = 0

    cdef void _release_queue(self, int sint):
        for message, port in self._queues[sint]:
            (<Port> port).free_buffers += 1
        self._queues[sint] = []

    def __repr__(self):
        return f"<Vp {self.index} of partition {self.partition.partition_id:#x}>"

    # -- registers -----------------------------------------------------------------------------

    def get_sint(self, int n):
        if not 0 <= n < 16:
            raise IndexError(n)
        return self._sint[n]

    def set_sint(self, int n, uint64_t value):
        """Program SINTn. The caller validated the vector (§2.2: 16..255)."""
        if not 0 <= n < 16:
            raise IndexError(n)
        cdef uint64_t old = self._sint[n]
        self._sint[n] = value
        if (old & SINT_MASKED) and not (value & SINT_MASKED):
            self._try_deliver(n)

    def drop_port(self, Port port not None):
        """Discard the queued messages of a deleted port and free their buffers (§2.4.8)."""
        cdef int n
        for n in range(16):
            kept = [entry for entry in self._queues[n] if entry[1] is not port]
            port.free_buffers += len(self._queues[n]) - len(kept)
            self._queues[n] = kept

    def eom(self):
        """End of message: rescan every SINT queue and deliver into free slots (§2.4 step 5)."""
        self._eom()

    cdef void _eom(self) except *:
        cdef int n
        for n in range(16):
            if PyList_GET_SIZE(self._queues[n]):
                self._try_deliver(n)

    def queued_messages(self, int sint):
        """Number of messages waiting for SINT ``sint``'s slot."""
        return len(self._queues[sint])

    def pending_vectors(self):
        """Vectors raised and not yet taken by the scheduler, highest first."""
        return [v for v in range(255, -1, -1) if self._irr[v >> 6] & (1ULL << (v & 63))]

    def take_pending(self):
        """Remove and return the pending vectors, highest first (APIC priority order)."""
        cdef int v
        out = []
        for v in range(255, -1, -1):
            if self._irr[v >> 6] & (1ULL << (v & 63)):
                out.append(v)
        self._irr[0] = self._irr[1] = self._irr[2] = self._irr[3] = 0
        self.queued = False
        return out

    # -- delivery ------------------------------------------------------------------------------

    cdef inline void raise_sint(self, int sint) noexcept:
        """Assert SINTn's edge interrupt, unless it is masked (then the interrupt is lost)."""
        cdef uint64_t reg = self._sint[sint]
        if reg & SINT_MASKED:
            self.interrupts_lost += 1
            return
        cdef uint32_t vector = reg & SINT_VECTOR_MASK
        self._irr[vector >> 6] |= 1ULL << (vector & 63)
        self.interrupts_raised += 1
        if not self.queued:
            self.queued = True
            PyList_Append(self.ready, self)

    def raise_vector(self, int sint):
        """Python access to :meth:`raise_sint` (timers, tests)."""
        self.raise_sint(sint)

    cdef inline uint8_t* slot(self, int sint) noexcept:
        if not (self.scontrol & 1) or not (self.simp & 1):
            return NULL
        return gpa_pointer_lent(self._memory, (self.simp & ~0xFFFULL) + sint * 256, 256)

    cdef inline uint8_t* flags(self, int sint) noexcept:
        if not (self.scontrol & 1) or not (self.siefp & 1):
            return NULL
        return gpa_pointer_lent(self._memory, (self.siefp & ~0xFFFULL) + sint * 256, 256)

    cdef void _try_deliver(self, int sint):
        """Move the head of SINTn's queue into its slot if the slot is free (§2.4 steps 3–4)."""
        cdef list queue = self._queues[sint]
        cdef uint8_t* slot
        cdef tuple head
        cdef bytes message
        if not PyList_GET_SIZE(queue):
            return
        slot = self.slot(sint)
        if slot == NULL:
            return
        if (<uint32_t*> slot)[0] != 0:
            slot[5] |= MESSAGE_FLAG_PENDING
            return
        head = queue.pop(0)
        message = <bytes> PyTuple_GET_ITEM(head, 0)
        memcpy(slot + 4, PyBytes_AS_STRING(message) + 4, PyBytes_GET_SIZE(message) - 4)
        winhv_fence()
        memcpy(slot, PyBytes_AS_STRING(message), 4)   # the type last: publishes the slot
        (<Port> PyTuple_GET_ITEM(head, 1)).free_buffers += 1
        if PyList_GET_SIZE(queue):
            slot[5] |= MESSAGE_FLAG_PENDING
        self.raise_sint(sint)

    cdef inline uint16_t post(self, int sint, void* port, uint32_t message_type,
                              const uint8_t* payload, uint32_t size) noexcept:
        """Queue one message from ``port`` (a borrowed Port) for SINTn and try to deliver it.

        Never raises: running out of memory while queueing is HV_STATUS_OPERATION_FAILED.
        """
        cdef uint8_t* slot = self.slot(sint)
        if slot == NULL:
            return ST_INVALID_SYNIC_STATE
        if (<Port> port).free_buffers <= 0:
            return ST_INSUFFICIENT_BUFFERS
        (<Port> port).messages = (<Port> port).messages + 1
        if not _list_size(_list_item(<void*> self._queues, sint)) and (<uint32_t*> slot)[0] == 0:
            # Fast path: the slot is free and nothing is ahead of us; the buffer is taken and
            # released at once.
            slot[4] = <uint8_t> size
            slot[5] = 0
            slot[6] = 0
            slot[7] = 0
            (<uint64_t*> (slot + 8))[0] = (<Port> port).port_id
            if size:
                memcpy(slot + 16, payload, size)
            winhv_fence()
            (<uint32_t*> slot)[0] = message_type
            self.raise_sint(sint)
            return ST_SUCCESS
        return self._post_slow(sint, port, message_type, payload, size)

    cdef uint16_t _post_slow(self, int sint, void* port, uint32_t message_type,
                             const uint8_t* payload, uint32_t size) noexcept:
        """:meth:`post` when the message must queue (kept out of line: the fast path stays
        small enough to inline, with no exception frame)."""
        # Queueing allocates, which may run the garbage collector and so arbitrary finalizers:
        # hold the VP and the port (both borrowed so far) for the rest of the call.
        cdef object vp_ref = self
        cdef object port_ref = <object> port
        try:
            return self._post_queued(sint, <Port> port_ref, message_type, payload, size)
        except BaseException:
            return 0x71   # HV_STATUS_OPERATION_FAILED (out of memory while queueing)
        finally:
            vp_ref = port_ref = None

    cdef uint16_t _post_queued(self, int sint, Port port, uint32_t message_type,
                               const uint8_t* payload, uint32_t size) except? 0xFFFF:
        """The slow half of :meth:`post`: the slot is busy or messages are ahead of this one."""
        cdef list queue = self._queues[sint]
        cdef bytes message
        cdef uint8_t* m
        message = PyBytes_FromStringAndSize(NULL, 16 + size)
        m = <uint8_t*> PyBytes_AS_STRING(message)
        (<uint32_t*> m)[0] = message_type
        m[4] = <uint8_t> size
        m[5] = 0
        m[6] = 0
        m[7] = 0
        (<uint64_t*> (m + 8))[0] = port.port_id
        if size:
            memcpy(m + 16, payload, size)
        port.free_buffers -= 1
        queue.append((message, port))
        self._try_deliver(sint)
        return ST_SUCCESS

    cdef inline uint16_t signal(self, int sint, uint32_t flag) noexcept:
        """Set event flag ``flag`` of SINTn; interrupt on a 0->1 transition only (§2.5)."""
        cdef uint8_t* flags = self.flags(sint)
        cdef uint8_t bit
        if flags == NULL or self._sint[sint] & SINT_MASKED:
            return ST_INVALID_SYNIC_STATE
        bit = 1 << (flag & 7)
        if flags[flag >> 3] & bit:
            return ST_SUCCESS   # already pending: no 0->1 transition, nothing to write
        if not (winhv_atomic_or8(flags + (flag >> 3), bit) & bit):
            self.raise_sint(sint)
        return ST_SUCCESS

    # Python-visible wrappers (the reference bridge's handlers and tests use these).
    def post_message(self, int sint, Port port not None, uint32_t message_type, payload):
        """Deliver ``payload`` from ``port`` to SINTn as the compiled PostMessage does."""
        cdef const uint8_t[::1] data = memoryview(payload).cast("B")
        if not 0 <= sint < 16 or data.shape[0] > HV_MESSAGE_PAYLOAD_SIZE:
            raise ValueError("bad SINT or payload size")
        return self.post(sint, <void*> port, message_type, &data[0] if data.shape[0] else NULL,
                         data.shape[0])

    def signal_flag(self, int sint, uint32_t flag):
        """Set event flag ``flag`` of SINTn as the compiled SignalEvent does."""
        if not 0 <= sint < 16 or flag >= 2048:
            raise ValueError("bad SINT or flag")
        return self.signal(sint, flag)


@cython.final
cdef class Partition(Caller):
    """A partition: its memory, VPs, ports, connections and hypervisor-visible registers."""

    cdef public object name
    cdef public object parent
    cdef public int state
    cdef public dict ports
    cdef dict _connections
    cdef uint32_t* _conn_keys         # open-addressing index of _connections for the C path:
    cdef PyObject** _conn_ports       # key slot holds id + 1 (0 = empty); the value is the
    cdef uint32_t _conn_mask          # connection's port, borrowed: _connections owns the
                                      # connections, each its (fixed) port
    cdef public list vps
    cdef public dict properties
    cdef public uint64_t guest_os_id
    cdef public uint64_t hypercall_msr
    cdef public set pool_pages
    cdef public uint64_t pool_in_use

    def __init__(self, uint64_t partition_id, GpaSpace memory not None, uint64_t privileges=0,
                 name="", parent=None):
        Caller.__init__(self, partition_id, memory, privileges)
        self.name = name or f"partition-{partition_id:#x}"
        self.parent = parent
        self.state = STATE_CREATED
        self.ports = {}
        self._connections = {}
        self._conn_keys = NULL
        self._conn_ports = NULL
        self._conn_mask = 0
        self.vps = []
        self.properties = {}
        self.pool_pages = set()
        self.pool_in_use = 0

    def __dealloc__(self):
        PyMem_Free(self._conn_keys)
        PyMem_Free(self._conn_ports)

    def __repr__(self):
        return f"<Partition {self.partition_id:#x} {self.name!r} state={self.state}>"

    @property
    def connections(self):
        """Read-only ``{connection id: Connection}``; change it with the methods below."""
        return MappingProxyType(self._connections)

    def add_connection(self, Connection connection not None):
        """Register ``connection``; its id must be free (ValueError otherwise)."""
        if connection.connection_id in self._connections:
            raise ValueError(f"connection {connection.connection_id:#x} exists")
        self._connections[connection.connection_id] = connection
        self._reindex()

    def remove_connection(self, uint32_t connection_id):
        """Remove and return the connection with that id, or None."""
        found = self._connections.pop(connection_id, None)
        self._reindex()
        return found

    def clear_connections(self):
        self._connections.clear()
        self._reindex()

    cdef void _reindex(self) except *:
        cdef uint32_t cap = 8
        cdef uint32_t i
        cdef uint32_t key
        cdef Connection conn
        while cap < 2 * len(self._connections) + 2:
            cap *= 2
        keys = <uint32_t*> PyMem_Calloc(cap, sizeof(uint32_t))
        values = <PyObject**> PyMem_Calloc(cap, sizeof(PyObject*))
        if keys == NULL or values == NULL:
            PyMem_Free(keys)
            PyMem_Free(values)
            raise MemoryError()
        for conn in self._connections.values():
            key = conn.connection_id
            i = _hash_id(key) & (cap - 1)
            while keys[i]:
                i = (i + 1) & (cap - 1)
            keys[i] = key + 1
            values[i] = <PyObject*> conn.port
        PyMem_Free(self._conn_keys)
        PyMem_Free(self._conn_ports)
        self._conn_keys = keys
        self._conn_ports = values
        self._conn_mask = cap - 1

    cdef inline PyObject* find_port(self, uint32_t connection_id) noexcept:
        """The port of this partition's connection ``connection_id`` (borrowed), or NULL."""
        cdef uint32_t i
        cdef uint32_t key
        if self._conn_keys == NULL:
            return NULL
        i = _hash_id(connection_id) & self._conn_mask
        while True:
            key = self._conn_keys[i]
            if key == 0:
                return NULL
            if key == connection_id + 1:
                return self._conn_ports[i]
            i = (i + 1) & self._conn_mask

    cpdef Vp vp(self, uint32_t index):
        """The VP with ``index`` (``HV_VP_INDEX_SELF`` = the calling VP), or None."""
        if index == _VP_SELF:
            index = self.current_vp
        if index < <uint32_t> len(self.vps):
            return self.vps[index]
        return None


cdef inline uint32_t _hash_id(uint32_t x) noexcept nogil:
    x ^= x >> 16
    x *= 0x45D9F3BU
    x ^= x >> 16
    return x


cdef inline void* _connection_port(Partition caller, uint32_t connection_id) noexcept:
    """The port of the caller's connection with that id, borrowed from its index, or NULL."""
    if connection_id & _ID_RESERVED:
        return NULL
    return <void*> caller.find_port(connection_id)


cdef inline void* _target_vp(void* target, uint32_t index) noexcept:
    """The VP of ``target`` (a borrowed Partition) that a port with ``target_vp = index``
    delivers to, borrowed from its ``vps``; ``HV_ANY_VP`` picks the first VP with its SynIC
    enabled. NULL when there is none."""
    cdef void* vps = <void*> (<Partition> target).vps
    cdef void* vp
    cdef Py_ssize_t i
    cdef Py_ssize_t n
    if vps == <void*> None:
        return NULL
    n = _list_size(vps)
    if index == _ANY_VP:
        for i in range(n):
            vp = _list_item(vps, i)
            if vp != <void*> None and (<Vp> vp).scontrol & 1:
                return vp
        return NULL
    if index < <size_t> n:
        vp = _list_item(vps, index)
        if vp != <void*> None:
            return vp
    return NULL


cdef uint16_t post_message(Partition caller, const uint8_t* input) noexcept:
    """HvCallPostMessage on an input block (§1.7): validate, route, deliver. Never raises."""
    cdef uint32_t connection_id = (<const uint32_t*> input)[0]
    cdef uint32_t reserved = (<const uint32_t*> input)[1]
    cdef uint32_t message_type = (<const uint32_t*> input)[2]
    cdef uint32_t size = (<const uint32_t*> input)[3]
    cdef void* port
    cdef void* target
    cdef void* vp
    if reserved or message_type == 0 or message_type & _TYPE_HYPERVISOR \
            or size > HV_MESSAGE_PAYLOAD_SIZE:
        return ST_INVALID_PARAMETER
    # Borrowed all the way down: the caller's connections hold their ports, which hold
    # their partition, whose list holds its VPs; nothing on this path runs Python code that
    # could drop any of them (queueing behind a busy slot holds the VP and port first).
    port = _connection_port(caller, connection_id)
    if port == NULL:
        return ST_INVALID_CONNECTION_ID
    target = <void*> (<Port> port).partition
    if (<Port> port).deleted or (<Port> port).port_type != _PORT_MESSAGE \
            or (<Partition> target).state != _ACTIVE:
        return ST_INVALID_PORT_ID
    vp = _target_vp(target, (<Port> port).target_vp)
    if vp == NULL:
        return ST_INVALID_VP_INDEX
    return (<Vp> vp).post((<Port> port).target_sint, port, message_type, input + 16, size)


cdef uint16_t signal_event(Partition caller, const uint8_t* input) noexcept:
    """HvCallSignalEvent on an 8-byte input (§1.7)."""
    cdef uint32_t connection_id = (<const uint32_t*> input)[0]
    cdef uint16_t flag = (<const uint16_t*> input)[2]
    cdef uint16_t reserved = (<const uint16_t*> input)[3]
    cdef void* port
    cdef void* target
    cdef void* vp
    if reserved:
        return ST_INVALID_PARAMETER
    port = _connection_port(caller, connection_id)
    if port == NULL:
        return ST_INVALID_CONNECTION_ID
    target = <void*> (<Port> port).partition
    if (<Port> port).deleted or (<Port> port).port_type != _PORT_EVENT \
            or (<Partition> target).state != _ACTIVE:
        return ST_INVALID_PORT_ID
    if flag >= (<Port> port).flag_count:
        return ST_INVALID_PARAMETER
    vp = _target_vp(target, (<Port> port).target_vp)
    if vp == NULL:
        return ST_INVALID_VP_INDEX
    (<Port> port).signals = (<Port> port).signals + 1
    return (<Vp> vp).signal((<Port> port).target_sint, (<Port> port).base_flag + flag)


cdef uint16_t _h_post_message(void* ctx, Caller caller, HvCall* call) noexcept:
    if not isinstance(caller, Partition):
        return ST_ACCESS_DENIED
    return post_message(<Partition> caller, call.input)


cdef uint16_t _h_signal_event(void* ctx, Caller caller, HvCall* call) noexcept:
    if not isinstance(caller, Partition):
        return ST_ACCESS_DENIED
    return signal_event(<Partition> caller, call.input)


cdef uint16_t _h_get_partition_id(void* ctx, Caller caller, HvCall* call) noexcept:
    (<uint64_t*> call.output)[0] = caller.partition_id
    return ST_SUCCESS


cdef uint16_t _h_set_vp_registers(void* ctx, Caller caller, HvCall* call) noexcept:
    """Fast path of HvCallSetVpRegisters for the hot case, EOM writes to the caller's own VP
    (every message consumed with MessagePending set); anything else defers to Python."""
    cdef const uint8_t* element
    cdef uint64_t partition_id
    cdef uint32_t vp_index
    cdef int rep
    cdef Vp vp
    if call.fast or not isinstance(caller, Partition) or call.input_size < 16:
        return HV_DEFER_TO_PYTHON
    partition_id = (<const uint64_t*> call.input)[0]
    vp_index = (<const uint32_t*> (call.input + 8))[0]
    if (partition_id != 0xFFFFFFFFFFFFFFFFULL and partition_id != caller.partition_id) \
            or call.input[12] != 0 or not (caller.privileges & _ACCESS_SYNIC_REGS):
        return HV_DEFER_TO_PYTHON
    for rep in range(call.rep_start, call.rep_limit):
        element = call.input + 16 + 32 * rep
        if (<const uint32_t*> element)[0] != REGISTER_EOM:
            return HV_DEFER_TO_PYTHON
    vp = (<Partition> caller).vp(vp_index)
    if vp is None:
        return HV_DEFER_TO_PYTHON
    try:
        for rep in range(call.rep_start, call.rep_limit):
            vp._eom()
            call.reps_done = rep + 1
    except BaseException:
        return 0x71
    return ST_SUCCESS


def install_compiled_handlers(Bridge bridge not None):
    """Register the C handlers (PostMessage, SignalEvent, GetPartitionId) with ``bridge``."""
    bridge.set_c_handler(CALL_POST_MESSAGE, _h_post_message, None)
    bridge.set_c_handler(CALL_SIGNAL_EVENT, _h_signal_event, None)
    bridge.set_c_handler(CALL_GET_PARTITION_ID, _h_get_partition_id, None)
    bridge.set_c_handler(CALL_SET_VP_REGISTERS, _h_set_vp_registers, None, True)
