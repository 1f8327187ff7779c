/*  fuzz_proto_sync.c: libFuzzer target for the SYNC / RECEIPT payload
    decoder, with the same decode, re-encode, compare contract as
    fuzz_proto_msg.c.
*/
#include <stdint.h>
#include <stdlib.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    proto_payload_t p;
    proto_error_t err;
    if (proto_payload_decode(data, size, NULL, &p, &err) != PROTO_OK) {
        if (p.mem != NULL)
            abort();
        return 0;
    }
    proto_buf_t buf;
    proto_buf_init(&buf);
    if (proto_payload_encode(&p, NULL, &buf, &err) != PROTO_OK) {
        //  Only size may differ: a decodable plaintext up to max_payload may
        //  not leave room for the seal's tag.
        if (err.code != PROTO_E_FRAME_TOO_BIG)
            abort();
    } else {
        proto_payload_t again;
        if (proto_payload_decode(buf.data, buf.size, NULL, &again, &err) != PROTO_OK)
            abort();
        if (!proto_payload_equal(&p, &again))
            abort();
        proto_payload_clear(&again);
    }
    proto_payload_clear(&p);
    proto_buf_release(&buf);
    return 0;
}
