/*  proto_limits.c: the default decode limits (documented in docs/protocol.md). */
#include "proto_limits.h"

proto_limits_t proto_limits_default(void)
{
    proto_limits_t limits = {
        .max_frame = 1024 * 1024,
        .max_payload = 1024 * 1024 - 1024,
        .max_text = 256 * 1024,
        .max_items = 4096,
        .max_depth = 16,
    };
    return limits;
}
