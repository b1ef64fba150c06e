# cython: language_level=3
"""Scanning a SIEF flag array (256 bytes = 2048 flags) the way a guest ISR does (§2.5)."""

from libc.stdint cimport uint8_t, uint64_t

cdef extern from *:
    """
    static inline unsigned long long winhv_xchg64(unsigned long long *p) {
        return __atomic_exchange_n(p, 0ULL, __ATOMIC_SEQ_CST);
    }
    """
    unsigned long long winhv_xchg64(unsigned long long* p) nogil


def take_flags(uint8_t[::1] flags not None):
    """Atomically clear every set flag of a 256-byte SIEF array; return their numbers, sorted.

    Flag ``f`` is bit ``f % 8`` of byte ``f // 8``. The array must be 8-byte aligned (SIEF pages
    are page-aligned and each SINT's array starts at a multiple of 256).
    """
    if flags.shape[0] != 256:
        raise ValueError(f"a SIEF flag array is 256 bytes, got {flags.shape[0]}")
    cdef unsigned long long* words = <unsigned long long*> &flags[0]
    cdef unsigned long long word
    cdef int i
    cdef int bit
    out = []
    for i in range(32):
        if words[i] == 0:
            continue
        word = winhv_xchg64(&words[i])
        while word:
            bit = __builtin_ctzll(word)
            out.append(i * 64 + bit)
            word &= word - 1
    return out


cdef extern from *:
    int __builtin_ctzll(unsigned long long) nogil
