/*  test_proto_sync.c: the sealed payload plaintexts SYNC and RECEIPT
    (proto_sync.h).

    Proves: both round trip with ordinary and edge values (no fields, many
    comments, long UTF-8 text); unknown keys are skipped; malformed payloads
    get their exact error and field (duplicate field names, bad receipts);
    every truncation is refused; the size limit is that of a sealed payload.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mptext.h"
#include "proto.h"
#include "samples.h"

static void s_round_trip(const proto_payload_t *p)
{
    proto_buf_t buf;
    proto_buf_init(&buf);
    proto_error_t err;
    if (proto_payload_encode(p, NULL, &buf, &err) != PROTO_OK)
        fail_msg("encode: %s", proto_error_str(&err));
    proto_payload_t back;
    if (proto_payload_decode(buf.data, buf.size, NULL, &back, &err) != PROTO_OK)
        fail_msg("decode: %s", proto_error_str(&err));
    assert_int_equal(back.type, p->type);
    assert_true(proto_payload_equal(p, &back));
    proto_payload_clear(&back);
    proto_buf_release(&buf);
}

static void test_round_trip(void **state)
{
    (void)state;
    proto_payload_t p;
    samples_sync(&p);
    s_round_trip(&p);
    p.sync.twin_sys_id = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
    s_round_trip(&p);
    p.sync.base_seq = UINT64_MAX;
    s_round_trip(&p);
    p.sync.base_seq = 0;
    //  Nothing but ids: no fields, no comments.
    p.sync.fields = NULL, p.sync.fields_count = 0;
    p.sync.comments = NULL, p.sync.comments_count = 0;
    s_round_trip(&p);

    samples_receipt(&p, true);
    s_round_trip(&p);
    samples_receipt(&p, false);
    s_round_trip(&p);
    p.receipt.seq = UINT64_MAX;
    p.receipt.error_text = "";
    s_round_trip(&p);
}

static void test_round_trip_large(void **state)
{
    (void)state;
    //  A long description and many comments, within the default limits.
    proto_limits_t limits = proto_limits_default();
    char *text = malloc(limits.max_text + 1);
    assert_non_null(text);
    for (size_t i = 0; i < limits.max_text; i += 2)
        memcpy(text + i, "\xc3\xa9", 2); //  é, two bytes
    text[limits.max_text] = '\0';
    proto_field_t fields[] = {{"description", text}};
    proto_comment_t comments[200];
    for (size_t i = 0; i < 200; i++)
        comments[i] = (proto_comment_t){"0123456789abcdef0123456789abcdef", "someone",
                                        "2024-05-01 12:00:00", "short comment"};
    proto_payload_t p;
    samples_sync(&p);
    p.sync.fields = fields, p.sync.fields_count = 1;
    p.sync.comments = comments, p.sync.comments_count = 200;
    s_round_trip(&p);

    //  One byte more text is refused by the encoder with the field named.
    char *longer = malloc(limits.max_text + 2);
    memset(longer, 'x', limits.max_text + 1);
    longer[limits.max_text + 1] = '\0';
    fields[0].value = longer;
    proto_buf_t buf;
    proto_buf_init(&buf);
    proto_error_t err;
    assert_int_equal(proto_payload_encode(&p, NULL, &buf, &err), PROTO_E_TOO_LONG);
    assert_string_equal(err.field, "fields.description");
    proto_buf_release(&buf);
    free(longer);
    free(text);
}

//  The four attachment payloads: their round trips and the rules a table
//  cannot say (docs/protocol.md §8.5).
static void test_file_payloads(void **state)
{
    (void)state;
    static const char hash[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    static uint8_t data[PROTO_FILE_CHUNK_DATA];
    memset(data, 0xa5, sizeof data);
    proto_payload_t p;
    proto_payload_init(&p, PROTO_FILE_CHUNK);
    p.file_chunk = (proto_file_chunk_t){.file = "f1",
                                        .record = "r1",
                                        .offset = 0,
                                        .size = 2 * sizeof data,
                                        .data = data,
                                        .data_size = sizeof data,
                                        .name = "Über .. €.txt",
                                        .content_type = "text/plain",
                                        .hash = hash};
    s_round_trip(&p);
    //  A full chunk's sealed form fits the 512 KiB padding bucket
    proto_buf_t buf;
    proto_buf_init(&buf);
    proto_error_t err;
    p.file_chunk.offset = sizeof data;
    p.file_chunk.name = p.file_chunk.content_type = p.file_chunk.hash = NULL;
    assert_int_equal(proto_payload_encode(&p, NULL, &buf, &err), PROTO_OK);
    assert_true(buf.size + PROTO_SEAL_OVERHEAD <= 512 * 1024);
    s_round_trip(&p);
    //  Later chunks carry no name; the first must
    p.file_chunk.name = "x";
    assert_int_equal(proto_payload_encode(&p, NULL, &buf, &err), PROTO_E_VALUE);
    p.file_chunk.name = NULL;
    p.file_chunk.offset = 0;
    assert_int_equal(proto_payload_encode(&p, NULL, &buf, &err), PROTO_E_MISSING);
    assert_string_equal(err.field, "name");
    //  A bad hash, a chunk past the end, an empty chunk of a non-empty file
    p.file_chunk.name = "a";
    p.file_chunk.content_type = "";
    p.file_chunk.hash = "ABC";
    assert_int_equal(proto_payload_encode(&p, NULL, &buf, &err), PROTO_E_VALUE);
    assert_string_equal(err.field, "hash");
    p.file_chunk.hash = hash;
    p.file_chunk.size = 10;
    assert_int_equal(proto_payload_encode(&p, NULL, &buf, &err), PROTO_E_VALUE);
    assert_string_equal(err.field, "data");
    p.file_chunk.data_size = 0;
    assert_int_equal(proto_payload_encode(&p, NULL, &buf, &err), PROTO_E_VALUE);
    //  The empty file: one empty chunk
    p.file_chunk.size = 0;
    s_round_trip(&p);

    proto_payload_init(&p, PROTO_FILE_ACK);
    p.file_ack = (proto_file_ack_t){"f1", "r1", UINT64_MAX};
    s_round_trip(&p);

    proto_payload_init(&p, PROTO_FILE_RECEIPT);
    p.file_receipt = (proto_file_receipt_t){"f1", "r1", PROTO_FILE_UPLOADED, "c1", NULL};
    s_round_trip(&p);
    p.file_receipt.twin_file = NULL;
    assert_int_equal(proto_payload_encode(&p, NULL, &buf, &err), PROTO_E_MISSING);
    p.file_receipt.code = PROTO_FILE_REFUSED;
    p.file_receipt.error_text = "file tool.exe: extension exe is not allowed";
    s_round_trip(&p);
    p.file_receipt.code = 4;
    assert_int_equal(proto_payload_encode(&p, NULL, &buf, &err), PROTO_E_VALUE);

    proto_payload_init(&p, PROTO_FILE_DELETE);
    p.file_delete = (proto_file_delete_t){"f1", "r1"};
    s_round_trip(&p);
    p.file_delete.record = NULL;
    assert_int_equal(proto_payload_encode(&p, NULL, &buf, &err), PROTO_E_MISSING);
    proto_buf_release(&buf);
}

static void test_field_lookup(void **state)
{
    (void)state;
    proto_payload_t p;
    samples_sync(&p);
    assert_string_equal(proto_sync_field(&p.sync, "urgency"), "1");
    assert_string_equal(proto_sync_field(&p.sync, "state"), "");
    assert_null(proto_sync_field(&p.sync, "impact"));
}

typedef struct {
    const char *input;
    proto_status_t code;
    const char *field;
} s_bad_case_t;

#define S_IDS "table:\"incident\",sys_id:\"abc\",number:\"INC1\",instance:\"a\""

static const s_bad_case_t s_cases[] = {
    //  Valid, with unknown keys at every level
    {"{v:256,t:32," S_IDS ",fields:{urgency:\"1\"},comments:[],new:[1,{x:2}]}", PROTO_OK, ""},
    {"{v:256,t:32," S_IDS ",fields:{},comments:[{journal_id:\"j\",author:\"a\",created_on:"
     "\"2024-01-01 00:00:00\",text:\"t\",likes:3}]}",
     PROTO_OK, ""},
    {"{v:256,t:33,seq:1,sys_id:\"s\",code:0,twin_sys_id:\"t\",twin_number:\"n\",hint:nil}",
     PROTO_OK, ""},
    //  Wrong dialect
    {"{v:256,t:9}", PROTO_E_UNKNOWN_TYPE, "t"},
    {"{v:512,t:32}", PROTO_E_VERSION, "v"},
    //  SYNC
    {"{v:256,t:32,table:\"incident\",sys_id:\"abc\",number:\"INC1\",fields:{},comments:[]}",
     PROTO_E_MISSING, "instance"},
    {"{v:256,t:32," S_IDS ",comments:[]}", PROTO_E_MISSING, "fields"},
    {"{v:256,t:32," S_IDS ",fields:{}}", PROTO_E_MISSING, "comments"},
    {"{v:256,t:32," S_IDS ",fields:[],comments:[]}", PROTO_E_TYPE, "fields"},
    {"{v:256,t:32," S_IDS ",fields:{urgency:1},comments:[]}", PROTO_E_TYPE, "fields.urgency"},
    {"{v:256,t:32," S_IDS ",fields:{urgency:nil},comments:[]}", PROTO_E_TYPE, "fields.urgency"},
    {"{v:256,t:32," S_IDS ",fields:{1:\"x\"},comments:[]}", PROTO_E_TYPE, "fields.(key)"},
    {"{v:256,t:32," S_IDS ",fields:{urgency:\"1\",urgency:\"2\"},comments:[]}", PROTO_E_DUPLICATE,
     "fields.urgency"},
    {"{v:256,t:32," S_IDS ",fields:{\"bad name\":\"1\"},comments:[]}", PROTO_E_VALUE,
     "fields.bad name"},
    {"{v:256,t:32," S_IDS ",fields:{\"\":\"1\"},comments:[]}", PROTO_E_VALUE, "fields"},
    {"{v:256,t:32," S_IDS ",fields:{S(81):\"1\"},comments:[]}", PROTO_E_TOO_LONG,
     "fields.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
    {"{v:256,t:32," S_IDS ",fields:{x:\"\\xfe\"},comments:[]}", PROTO_E_VALUE, "fields.x"},
    {"{v:256,t:32," S_IDS ",fields:{},comments:[{author:\"a\",created_on:\"c\",text:\"t\"}]}",
     PROTO_E_MISSING, "comments[0].journal_id"},
    {"{v:256,t:32," S_IDS ",fields:{},comments:[{journal_id:\"j\",author:\"a\",created_on:"
     "S(33),text:\"t\"}]}",
     PROTO_E_TOO_LONG, "comments[0].created_on"},
    {"{v:256,t:32," S_IDS ",twin_sys_id:\"\",fields:{},comments:[]}", PROTO_E_VALUE, "twin_sys_id"},
    {"{v:256,t:32," S_IDS ",base_seq:\"7\",fields:{},comments:[]}", PROTO_E_TYPE, "base_seq"},
    {"{v:256,t:32,table:\"incident\",sys_id:S(65),number:\"INC1\",instance:\"a\",fields:{},"
     "comments:[]}",
     PROTO_E_TOO_LONG, "sys_id"},
    //  RECEIPT
    {"{v:256,t:33,seq:1,sys_id:\"s\",code:0,twin_sys_id:\"t\"}", PROTO_E_MISSING, "twin_number"},
    {"{v:256,t:33,seq:1,sys_id:\"s\",code:0,twin_number:\"n\"}", PROTO_E_MISSING, "twin_sys_id"},
    {"{v:256,t:33,seq:1,sys_id:\"s\",code:0,twin_sys_id:\"t\",twin_number:\"n\","
     "error_text:\"x\"}",
     PROTO_E_VALUE, "error_text"},
    {"{v:256,t:33,seq:1,sys_id:\"s\",code:1}", PROTO_E_MISSING, "error_text"},
    {"{v:256,t:33,seq:0,sys_id:\"s\",code:1,error_text:\"x\"}", PROTO_E_VALUE, "seq"},
    {"{v:256,t:33,sys_id:\"s\",code:1,error_text:\"x\"}", PROTO_E_MISSING, "seq"},
    {"{v:256,t:33,seq:1,sys_id:\"s\",code:70000,error_text:\"x\"}", PROTO_E_VALUE, "code"},
};

static void test_malformed_table(void **state)
{
    (void)state;
    proto_buf_t buf;
    proto_buf_init(&buf);
    for (size_t i = 0; i < sizeof(s_cases) / sizeof(s_cases[0]); i++) {
        const s_bad_case_t *c = &s_cases[i];
        mptext(c->input, &buf);
        proto_payload_t p;
        proto_error_t err;
        proto_status_t rc = proto_payload_decode(buf.data, buf.size, NULL, &p, &err);
        if (rc != c->code || strcmp(err.field, c->field) != 0)
            fail_msg("case %zu %s: got %s field '%s' (%s), want %s field '%s'", i, c->input,
                     proto_status_str(rc), err.field, proto_error_str(&err),
                     proto_status_str(c->code), c->field);
        proto_payload_clear(&p);
    }
    proto_buf_release(&buf);
}

static void test_every_truncation_refused(void **state)
{
    (void)state;
    proto_payload_t samples[3];
    samples_sync(&samples[0]);
    samples_receipt(&samples[1], true);
    samples_receipt(&samples[2], false);
    proto_buf_t buf;
    proto_buf_init(&buf);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(proto_payload_encode(&samples[i], NULL, &buf, NULL), PROTO_OK);
        for (size_t cut = 0; cut < buf.size; cut++) {
            uint8_t *copy = malloc(cut ? cut : 1);
            memcpy(copy, buf.data, cut);
            proto_payload_t back;
            proto_error_t err;
            proto_status_t rc = proto_payload_decode(copy, cut, NULL, &back, &err);
            if (rc != PROTO_E_TRUNCATED)
                fail_msg("sample %zu cut at %zu: %s", i, cut, proto_error_str(&err));
            free(copy);
        }
    }
    proto_buf_release(&buf);
}

static void test_size_limit_is_sealed_payload(void **state)
{
    (void)state;
    //  An encoded plaintext must leave room for the seal's tag in a payload.
    proto_limits_t limits = proto_limits_default();
    limits.max_payload = 200;
    proto_payload_t p;
    samples_sync(&p);
    proto_buf_t buf;
    proto_buf_init(&buf);
    proto_error_t err;
    assert_int_equal(proto_payload_encode(&p, &limits, &buf, &err), PROTO_E_FRAME_TOO_BIG);
    assert_int_equal(err.max, 200 - PROTO_SEAL_OVERHEAD);
    assert_int_equal(proto_payload_encode(&p, NULL, &buf, &err), PROTO_OK);
    proto_payload_t back;
    assert_int_equal(proto_payload_decode(buf.data, buf.size, &limits, &back, &err),
                     PROTO_E_FRAME_TOO_BIG);
    //  Only SYNC and RECEIPT are payloads.
    proto_payload_init(&p, PROTO_PUBLISH);
    assert_int_equal(proto_payload_encode(&p, NULL, &buf, &err), PROTO_E_UNKNOWN_TYPE);
    proto_buf_release(&buf);
}

static void test_encoder_refuses_bad_payloads(void **state)
{
    (void)state;
    proto_buf_t buf;
    proto_buf_init(&buf);
    proto_error_t err;
    proto_payload_t p;
    samples_sync(&p);
    proto_field_t dup[] = {{"urgency", "1"}, {"impact", "2"}, {"urgency", "3"}};
    p.sync.fields = dup, p.sync.fields_count = 3;
    assert_int_equal(proto_payload_encode(&p, NULL, &buf, &err), PROTO_E_DUPLICATE);
    assert_string_equal(err.field, "fields.urgency");
    proto_field_t nul[] = {{"urgency", NULL}};
    p.sync.fields = nul, p.sync.fields_count = 1;
    assert_int_equal(proto_payload_encode(&p, NULL, &buf, &err), PROTO_E_MISSING);
    assert_string_equal(err.field, "fields[0]");
    samples_sync(&p);
    p.sync.sys_id = NULL;
    assert_int_equal(proto_payload_encode(&p, NULL, &buf, &err), PROTO_E_MISSING);
    assert_string_equal(err.field, "sys_id");
    samples_receipt(&p, false);
    p.receipt.error_text = NULL;
    assert_int_equal(proto_payload_encode(&p, NULL, &buf, &err), PROTO_E_MISSING);
    assert_string_equal(err.field, "error_text");
    proto_buf_release(&buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_round_trip_large),
        cmocka_unit_test(test_field_lookup),
        cmocka_unit_test(test_file_payloads),
        cmocka_unit_test(test_malformed_table),
        cmocka_unit_test(test_every_truncation_refused),
        cmocka_unit_test(test_size_limit_is_sealed_payload),
        cmocka_unit_test(test_encoder_refuses_bad_payloads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
