/*
 * A minimal C driver for the interface-table test: it receives a WINHV_INTERFACE, checks the
 * table's size and version as winhv.h tells drivers to, then posts a message and signals an
 * event through the table and reports every status back to the test.
 */
#include <stddef.h>
#include <string.h>

#include "winhv.h"

typedef struct DRIVER_REPORT {
    uint32_t Size;
    uint32_t Version;
    HV_STATUS GetPartitionIdStatus;
    HV_STATUS PostStatus;
    HV_STATUS PostTooLongStatus;
    HV_STATUS SignalStatus;
    HV_STATUS SignalBadFlagStatus;
    HV_STATUS SignalBadConnectionStatus;
    uint32_t Reserved;
    uint64_t PartitionId;
    uint64_t RawResult;
} DRIVER_REPORT;

#define NEEDED_SIZE (offsetof(WINHV_INTERFACE, GetPartitionId) + sizeof(void *))

/* Returns 0 on success, -1 when the table is too old or too small for this driver. */
int DriverEntry(const WINHV_INTERFACE *Hv, HV_CONNECTION_ID MessageConnection,
                HV_CONNECTION_ID EventConnection, DRIVER_REPORT *Report)
{
    static const char text[] = "hello from C";
    unsigned char too_long[HV_MESSAGE_PAYLOAD_SIZE + 1];

    memset(Report, 0, sizeof(*Report));
    Report->Size = Hv->Size;
    Report->Version = Hv->Version;
    if (Hv->Version < WINHV_INTERFACE_VERSION_1 || Hv->Size < NEEDED_SIZE)
        return -1;

    Report->GetPartitionIdStatus = Hv->GetPartitionId(Hv->Context, &Report->PartitionId);
    Report->PostStatus = Hv->PostMessage(Hv->Context, MessageConnection, 1, text,
                                         sizeof(text) - 1);
    memset(too_long, 0x5A, sizeof(too_long));
    Report->PostTooLongStatus = Hv->PostMessage(Hv->Context, MessageConnection, 1, too_long,
                                                sizeof(too_long));
    Report->SignalStatus = Hv->SignalEvent(Hv->Context, EventConnection, 3);
    Report->SignalBadFlagStatus = Hv->SignalEvent(Hv->Context, EventConnection, 4);
    Report->SignalBadConnectionStatus = Hv->SignalEvent(Hv->Context, 0x00ABCDEF, 0);
    /* HvCallGetPartitionId through the raw entry, output to a GPA nobody mapped. */
    Report->RawResult = Hv->Hypercall(Hv->Context, 0x0046, 0, 0xFFFFFFFFFFFF0000ull);
    return 0;
}
