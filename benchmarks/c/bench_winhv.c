/* Times WinHv calls made from C through the WINHV_INTERFACE table (see winhv.h). */
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "winhv.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Signal `count` times; returns elapsed ns, or 0 when a call failed. */
uint64_t bench_signal_event(const WINHV_INTERFACE *t, uint32_t connection_id, uint64_t count)
{
    uint64_t start = now_ns();
    for (uint64_t i = 0; i < count; i++) {
        if (t->SignalEvent(t->Context, connection_id, 0) != HV_STATUS_SUCCESS)
            return 0;
    }
    return now_ns() - start;
}

/* Post `count` messages of `size` bytes, clearing the target slot's message type after each
 * (the guest's part of the protocol, done here so buffers never run out). */
uint64_t bench_post_message(const WINHV_INTERFACE *t, uint32_t connection_id, uint32_t size,
                            volatile uint32_t *slot_type, uint64_t count)
{
    uint8_t payload[HV_MESSAGE_PAYLOAD_SIZE];
    memset(payload, 0xA5, sizeof payload);
    uint64_t start = now_ns();
    for (uint64_t i = 0; i < count; i++) {
        if (t->PostMessage(t->Context, connection_id, 1, payload, size) != HV_STATUS_SUCCESS)
            return 0;
        *slot_type = 0;
    }
    return now_ns() - start;
}
