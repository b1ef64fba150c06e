# cython: language_level=3
"""The guest side of the SynIC, compiled: what an ISR does on every interrupt (§2.4, §2.5).

For each SINT programmed with the interrupting vector: atomically take the set event flags
and call their handlers; then drain the SINT's message slot (copy the message out, free the
slot, EOM when MessagePending was set) and call the SINT's message handler. Scanning 2048
flags and checking a slot is C, so an interrupt with nothing to do costs next to nothing.
"""

from libc.stdint cimport uint8_t, uint32_t, uint64_t

cdef extern from *:
    """
    static inline unsigned long long winhv_xchg64(unsigned long long *p) {
        return __atomic_exchange_n(p, 0ULL, __ATOMIC_SEQ_CST);
    }
    static inline void winhv_synic_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
    """
    unsigned long long winhv_xchg64(unsigned long long* p) nogil
    void winhv_synic_fence() nogil
    int __builtin_ctzll(unsigned long long) nogil


cdef class SynicDispatcher:
    """Event-flag and message dispatch for one VP's SIM and SIEF pages.

    ``sim`` and ``sief`` are writable 4096-byte views of the pages (kept alive here);
    ``eom()`` is called when a consumed message had MessagePending set; ``on_fault(where,
    exc)`` receives any exception a handler raises (handlers never break the ISR).
    """

    cdef uint8_t* _sim
    cdef uint8_t* _sief
    cdef object _keep
    cdef dict _vectors          # vector -> tuple of SINT numbers
    cdef list _events           # per SINT: dict flag -> handler, or None
    cdef list _messages         # per SINT: handler or None
    cdef object _eom
    cdef public object on_fault
    cdef public uint64_t events_received
    cdef public uint64_t messages_received

    def __init__(self, sim, sief, eom, on_fault):
        cdef uint8_t[::1] sim_view = sim
        cdef uint8_t[::1] sief_view = sief
        if sim_view.shape[0] != 4096 or sief_view.shape[0] != 4096:
            raise ValueError("the SIM and SIEF pages are 4096 bytes each")
        self._sim = &sim_view[0]
        self._sief = &sief_view[0]
        self._keep = (sim, sief, sim_view, sief_view)
        self._vectors = {}
        self._events = [None] * 16
        self._messages = [None] * 16
        self._eom = eom
        self.on_fault = on_fault

    def route(self, int sint, int vector):
        """Handle SINT ``sint`` when ``vector`` interrupts."""
        self._vectors[vector] = tuple(sorted(set(self._vectors.get(vector, ())) | {sint}))

    def on_event(self, int sint, int flag, handler):
        table = self._events[sint]
        if handler is None:
            if table is not None:
                table.pop(flag, None)
            return
        if table is None:
            table = self._events[sint] = {}
        table[flag] = handler

    def on_message(self, int sint, handler):
        self._messages[sint] = handler

    def vectors(self):
        return list(self._vectors)

    cdef inline void _fault(self, str where, exc):
        if self.on_fault is not None:
            self.on_fault(where, exc)

    cpdef void interrupt(self, int vector):
        """The ISR for ``vector``."""
        cdef tuple sints = self._vectors.get(vector)
        cdef int sint
        if sints is None:
            return
        for sint in sints:
            # Always take the flags, handled or not: a flag left set never goes 0 -> 1 again,
            # so every later signal on it would be lost (a channel's host may signal before
            # the guest has registered its handler; the guest polls the channel once it has).
            self._take_events(sint)
            if (<uint32_t*> (self._sim + sint * 256))[0] != 0:
                self._take_messages(sint)

    cdef void _take_events(self, int sint):
        cdef unsigned long long* words = <unsigned long long*> (self._sief + sint * 256)
        cdef unsigned long long word
        cdef int i
        cdef int flag
        cdef object table = self._events[sint]
        for i in range(32):
            if words[i] == 0:
                continue
            word = winhv_xchg64(&words[i])
            while word:
                flag = i * 64 + __builtin_ctzll(word)
                word &= word - 1
                if table is None:
                    continue
                handler = (<dict> table).get(flag)
                if handler is None:
                    continue
                self.events_received += 1
                try:
                    handler()
                except Exception as exc:
                    self._fault("event", exc)

    cdef void _take_messages(self, int sint):
        cdef uint8_t* slot = self._sim + sint * 256
        cdef bint pending
        cdef bytes message
        handler = self._messages[sint]
        while (<uint32_t*> slot)[0] != 0:
            message = (<char*> slot)[:256]
            pending = slot[5] & 1
            (<uint32_t*> slot)[0] = 0     # the type is the "full" marker: the slot is free
            slot[5] = 0
            winhv_synic_fence()
            if pending:
                try:
                    self._eom()
                except Exception as exc:
                    self._fault("eom", exc)
            self.messages_received += 1
            if handler is not None:
                try:
                    handler(message)
                except Exception as exc:
                    self._fault("message", exc)
