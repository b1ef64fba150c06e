/*
 * winhv.h - the WinHv calling interface as a C table.
 *
 * A C driver receives a pointer to a WINHV_INTERFACE bound to one partition (and one virtual
 * processor) and calls the hypervisor through it, exactly as the Python WinHv handle does.
 * Every function returns an HV_STATUS (fact sheet section 1.5); hypervisor failures are
 * statuses, never crashes.
 *
 * Versioning: the table starts with its size in bytes and its version. Entries are only ever
 * appended: a driver built against version N runs on any table with Version >= N, and must
 * check Size >= offsetof(WINHV_INTERFACE, <last entry it uses>) + sizeof(void *).
 *
 * Threading: call with the Python GIL held (a driver loaded through ctypes.PyDLL, or called
 * from an extension module). The functions never release it.
 */
#ifndef WINHV_H
#define WINHV_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint16_t HV_STATUS;
typedef uint64_t HV_PARTITION_ID;
typedef uint32_t HV_CONNECTION_ID;
typedef uint32_t HV_PORT_ID;

#define HV_STATUS_SUCCESS                 ((HV_STATUS)0x0000)
#define HV_STATUS_INVALID_HYPERCALL_CODE  ((HV_STATUS)0x0002)
#define HV_STATUS_INVALID_HYPERCALL_INPUT ((HV_STATUS)0x0003)
#define HV_STATUS_INVALID_ALIGNMENT       ((HV_STATUS)0x0004)
#define HV_STATUS_INVALID_PARAMETER       ((HV_STATUS)0x0005)
#define HV_STATUS_ACCESS_DENIED           ((HV_STATUS)0x0006)
#define HV_STATUS_INVALID_CONNECTION_ID   ((HV_STATUS)0x0012)
#define HV_STATUS_INSUFFICIENT_BUFFERS    ((HV_STATUS)0x0013)
#define HV_STATUS_INVALID_SYNIC_STATE     ((HV_STATUS)0x0018)

#define HV_MESSAGE_PAYLOAD_SIZE 240

/* Version 1: the first table. */
#define WINHV_INTERFACE_VERSION_1 1u
#define WINHV_INTERFACE_VERSION   WINHV_INTERFACE_VERSION_1

typedef struct WINHV_INTERFACE {
    uint32_t Size;      /* sizeof(WINHV_INTERFACE) of the implementation */
    uint32_t Version;   /* WINHV_INTERFACE_VERSION of the implementation */
    void *Context;      /* pass as the first argument of every entry */

    /* -- version 1 ------------------------------------------------------------------------ */
    /* Raw hypercall: control word, then input/output GPAs (or fast registers). Returns the
     * 64-bit result word (status in bits 15:0, reps completed in bits 43:32). */
    uint64_t (*Hypercall)(void *Context, uint64_t Control, uint64_t Input, uint64_t Output);
    HV_STATUS (*PostMessage)(void *Context, HV_CONNECTION_ID ConnectionId, uint32_t MessageType,
                             const void *Payload, uint32_t PayloadSize);
    HV_STATUS (*SignalEvent)(void *Context, HV_CONNECTION_ID ConnectionId, uint16_t FlagNumber);
    HV_STATUS (*GetPartitionId)(void *Context, HV_PARTITION_ID *PartitionId);
    /* Append new entries here; never reorder or remove. */
} WINHV_INTERFACE;

#ifdef __cplusplus
}
#endif

#endif /* WINHV_H */
