/*  fuzz_broker_frame.c: libFuzzer target for the broker's frame handler
    (broker_core_handle), with its store, commits and replies.

    Input: a sequence of records "op, length (2 bytes, big endian), frame".
    op & 3 picks the sender: 0 the configured public node, 1 a private node,
    2 a stranger, 3 no frame but a flush and a heartbeat tick 1 s later.
    op & 4 makes the next sends fail (EHOSTUNREACH or, with op & 8, EAGAIN).
    When the first byte has its top bit set, the run starts from a joined
    pair on connection "c1" (the fuzzer cannot forge a token's SHA-256).
    Invariants checked: the handler never fails (no store failure here), and
    every frame the broker sends decodes.
*/
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core_rig.h"
#include "ts_log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void s_check_outputs(const core_rig_t *rig)
{
    for (size_t i = 0; i < rig->out_count; i++) {
        if (!rig->out[i].decoded) {
            fprintf(stderr, "broker sent an undecodable frame\n");
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ts_log_set_level(TS_LOG_ERROR);
    core_rig_t rig;
    const char *args[] = {"--broker.credit", "4", "--broker.max_queue_bytes", "4096", NULL};
    if (core_rig_init(&rig, args, true, NULL) != 0)
        abort();
    if (size && (data[0] & 0x80) && core_rig_join(&rig) != 0)
        abort();
    size_t at = size ? 1 : 0;
    while (at + 3 <= size) {
        uint8_t op = data[at];
        size_t len = (size_t)data[at + 1] << 8 | data[at + 2];
        at += 3;
        if (len > size - at)
            len = size - at;
        rig.fail_errno = op & 4 ? (op & 8 ? EAGAIN : EHOSTUNREACH) : 0;
        int id = op & 3;
        if (id == 3) {
            rig.now_ms += 1000;
            if (broker_core_flush(rig.core, rig.now_ms) != 0 ||
                broker_core_tick(rig.core, rig.now_ms) != 0)
                abort();
        } else if (core_rig_raw(&rig, id, data + at, len) != 0) {
            abort();
        }
        at += len;
        s_check_outputs(&rig);
        core_rig_clear(&rig);
    }
    rig.fail_errno = 0;
    if (core_rig_flush(&rig) != 0)
        abort();
    s_check_outputs(&rig);
    core_rig_release(&rig);
    return 0;
}
