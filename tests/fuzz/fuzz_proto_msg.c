/*  fuzz_proto_msg.c: libFuzzer target for the broker message decoder.

    Any input must decode or be refused without a crash, a leak or a read
    outside the input. When it decodes, the message must encode again and
    that encoding must decode to an equal message: the codec's two halves
    agree on everything the decoder accepts. Runs with tight limits too, so
    the limit checks themselves are fuzzed.
*/
#include <stdint.h>
#include <stdlib.h>

#include "proto.h"

static void s_check(const uint8_t *data, size_t size, const proto_limits_t *limits)
{
    proto_msg_t msg;
    proto_error_t err;
    if (proto_msg_decode(data, size, limits, &msg, &err) != PROTO_OK) {
        if (msg.mem != NULL || proto_error_str(&err)[0] == '\0')
            abort();
        return;
    }
    proto_buf_t buf;
    proto_buf_init(&buf);
    if (proto_msg_encode(&msg, limits, &buf, &err) != PROTO_OK)
        abort();
    proto_msg_t again;
    if (proto_msg_decode(buf.data, buf.size, limits, &again, &err) != PROTO_OK)
        abort();
    if (!proto_msg_equal(&msg, &again) || again.version != PROTO_VERSION)
        abort();
    proto_msg_clear(&again);
    proto_msg_clear(&msg);
    proto_buf_release(&buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    s_check(data, size, NULL);
    proto_limits_t tight = {
        .max_frame = 512, .max_payload = 64, .max_text = 32, .max_items = 4, .max_depth = 3};
    s_check(data, size, &tight);
    return 0;
}
