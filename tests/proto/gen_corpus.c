/*  gen_corpus.c: writes the fuzz seed corpus (tests/fuzz/corpus/{msg,sync,invite})
    from the samples, plus a few odd-but-valid inputs (unknown keys, newer
    minor version, a bare invitation body). Not a test; run by hand when the
    protocol changes:

        proto_gen_corpus tests/fuzz/corpus
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mptext.h"
#include "proto.h"
#include "samples.h"

static int s_save(const char *dir, const char *sub, const char *name, const void *data, size_t size)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s/%s", dir, sub, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) {
        fprintf(stderr, "gen_corpus: cannot write %s\n", path);
        return -1;
    }
    return 0;
}

static int s_save_text(const char *dir, const char *sub, const char *name, const char *text)
{
    proto_buf_t buf;
    proto_buf_init(&buf);
    mptext(text, &buf);
    int rc = s_save(dir, sub, name, buf.data, buf.size);
    proto_buf_release(&buf);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: proto_gen_corpus CORPUS_DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    proto_buf_t buf;
    proto_buf_init(&buf);
    int rc = 0;
    for (size_t i = 0; i < samples_types_count; i++) {
        proto_msg_t msg;
        samples_msg(&msg, samples_types[i]);
        if (proto_msg_encode(&msg, NULL, &buf, NULL) != PROTO_OK)
            return 1;
        char name[64];
        snprintf(name, sizeof(name), "%s.mp", proto_type_name(samples_types[i]));
        for (char *c = name; *c; c++)
            *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
        rc |= s_save(dir, "msg", name, buf.data, buf.size);
    }
    rc |= s_save_text(dir, "msg", "stored-unknown-keys.mp",
                      "{x:{a:[1,{b:nil}]},v:263,t:10,conn:\"c\",seq:1,y:F,z:-1}");
    rc |= s_save_text(dir, "msg", "hello-empty.mp",
                      "{v:256,t:1,node:\"n\",role:\"public\",conns:[]}");

    proto_payload_t p;
    samples_sync(&p);
    rc |= proto_payload_encode(&p, NULL, &buf, NULL) != PROTO_OK;
    rc |= s_save(dir, "sync", "sync.mp", buf.data, buf.size);
    samples_receipt(&p, true);
    rc |= proto_payload_encode(&p, NULL, &buf, NULL) != PROTO_OK;
    rc |= s_save(dir, "sync", "receipt-applied.mp", buf.data, buf.size);
    samples_receipt(&p, false);
    rc |= proto_payload_encode(&p, NULL, &buf, NULL) != PROTO_OK;
    rc |= s_save(dir, "sync", "receipt-error.mp", buf.data, buf.size);
    static const uint8_t bytes[] = "attachment bytes";
    proto_payload_init(&p, PROTO_FILE_CHUNK);
    p.file_chunk = (proto_file_chunk_t){
        .file = "f1",
        .record = "r1",
        .size = sizeof bytes,
        .data = bytes,
        .data_size = sizeof bytes,
        .name = "notes.txt",
        .content_type = "text/plain",
        .hash = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"};
    rc |= proto_payload_encode(&p, NULL, &buf, NULL) != PROTO_OK;
    rc |= s_save(dir, "sync", "file-chunk.mp", buf.data, buf.size);
    proto_payload_init(&p, PROTO_FILE_RECEIPT);
    p.file_receipt = (proto_file_receipt_t){"f1", "r1", PROTO_FILE_REFUSED, NULL, "refused"};
    rc |= proto_payload_encode(&p, NULL, &buf, NULL) != PROTO_OK;
    rc |= s_save(dir, "sync", "file-receipt.mp", buf.data, buf.size);

    proto_invite_t inv;
    samples_invite(&inv);
    rc |= proto_invite_encode(&inv, &buf, NULL) != PROTO_OK;
    rc |= s_save(dir, "invite", "invite.txt", buf.data, buf.size);
    inv.expires = UINT64_MAX;
    inv.name = "";
    rc |= proto_invite_encode(&inv, &buf, NULL) != PROTO_OK;
    rc |= s_save(dir, "invite", "invite-never-expires.txt", buf.data, buf.size);
    //  A bare body for fuzz_proto_invite's wrapping mode (first byte 0).
    mptext("X(00) {v:256,t:48,conn:\"c-1\",name:\"n\",mode:\"basic\",node_name:\"p\","
           "instance_url:\"https://a.example\",endpoint:\"tcp://b:5560\",broker_key:B(32),"
           "kx:B(32),join_token:B(32),secret:B(32),expires:4000000000}",
           &buf);
    rc |= s_save(dir, "invite", "body.bin", buf.data, buf.size);
    proto_buf_release(&buf);
    return rc ? 1 : 0;
}
