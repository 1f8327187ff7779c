/*  test_proto_msg.c: the broker messages' codec (proto_msg.h).

    Proves: every message type survives encode/decode with ordinary and edge
    values; unknown keys (nested too) are skipped; every malformed input of
    the table gets exactly its error code and field; every truncation of
    every valid message is PROTO_E_TRUNCATED; the encoder refuses what the
    decoder would refuse; limits are configurable and enforced.
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

//  Encodes msg, decodes the result, asserts equality.
static void s_round_trip(const proto_msg_t *msg)
{
    proto_buf_t buf;
    proto_buf_init(&buf);
    proto_error_t err;
    assert_int_equal(proto_msg_encode(msg, NULL, &buf, &err), PROTO_OK);
    proto_msg_t back;
    proto_status_t rc = proto_msg_decode(buf.data, buf.size, NULL, &back, &err);
    if (rc != PROTO_OK)
        fail_msg("%s: %s", proto_type_name(msg->type), proto_error_str(&err));
    assert_int_equal(back.type, msg->type);
    assert_int_equal(back.version, PROTO_VERSION);
    assert_true(proto_msg_equal(msg, &back));
    proto_msg_clear(&back);
    proto_msg_clear(&back); //  Idempotent
    proto_buf_release(&buf);
}

static void test_round_trip_every_type(void **state)
{
    (void)state;
    for (size_t i = 0; i < samples_types_count; i++) {
        proto_msg_t msg;
        samples_msg(&msg, samples_types[i]);
        s_round_trip(&msg);
    }
}

static void test_round_trip_edges(void **state)
{
    (void)state;
    char id[PROTO_MAX_ID + 1];
    memset(id, 'z', PROTO_MAX_ID);
    id[PROTO_MAX_ID] = '\0';
    char text[PROTO_MAX_ERRTEXT + 1];
    memset(text, 'e', PROTO_MAX_ERRTEXT);
    text[PROTO_MAX_ERRTEXT] = '\0';

    proto_msg_t msg;
    //  Longest ids, UINT64_MAX sequence, empty payload.
    samples_msg(&msg, PROTO_PUBLISH);
    msg.publish.conn = id;
    msg.publish.seq = UINT64_MAX;
    msg.publish.payload_size = 0;
    msg.publish.more_count = 0;
    s_round_trip(&msg);
    //  A batch whose last sequence would pass UINT64_MAX is refused.
    msg.publish.seq = UINT64_MAX - 1;
    msg.publish.more_count = 2;
    proto_buf_t buf;
    proto_buf_init(&buf);
    proto_error_t perr;
    assert_int_equal(proto_msg_encode(&msg, NULL, &buf, &perr), PROTO_E_VALUE);
    assert_non_null(strstr(proto_error_str(&perr), "more"));
    proto_buf_release(&buf);
    msg.publish.more_count = 1; //  the last one is UINT64_MAX: fine
    s_round_trip(&msg);
    //  The same frame with seq raised to UINT64_MAX no longer decodes.
    proto_buf_init(&buf);
    assert_int_equal(proto_msg_encode(&msg, NULL, &buf, &perr), PROTO_OK);
    static const uint8_t near_max[] = {0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe};
    uint8_t *at = memmem(buf.data, buf.size, near_max, sizeof near_max);
    assert_non_null(at);
    at[8] = 0xff;
    proto_msg_t back;
    assert_int_equal(proto_msg_decode(buf.data, buf.size, NULL, &back, &perr), PROTO_E_VALUE);
    assert_non_null(strstr(proto_error_str(&perr), "more"));
    proto_buf_release(&buf);

    //  Largest payload the default limits allow still fits a frame.
    proto_limits_t limits = proto_limits_default();
    uint8_t *big = calloc(1, limits.max_payload);
    assert_non_null(big);
    samples_msg(&msg, PROTO_DELIVER);
    msg.deliver.payload = big;
    msg.deliver.payload_size = limits.max_payload;
    s_round_trip(&msg);
    free(big);

    //  Empty and longest text, UTF-8 (2, 3 and 4 byte sequences), no seq.
    samples_msg(&msg, PROTO_ERROR);
    msg.error = (proto_msg_error_t){65535, "", NULL, false, 0};
    s_round_trip(&msg);
    msg.error.text = text;
    s_round_trip(&msg);
    msg.error.text = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";
    msg.error.has_seq = true;
    msg.error.seq = 0;
    s_round_trip(&msg);

    //  HELLO with no connections and default credit.
    samples_msg(&msg, PROTO_HELLO);
    msg.hello.conns = NULL;
    msg.hello.conns_count = 0;
    msg.hello.credit = 0;
    msg.hello.role = PROTO_ROLE_PUBLIC;
    s_round_trip(&msg);

    //  INVITE without description; JOIN/JOINED with empty description.
    samples_msg(&msg, PROTO_INVITE);
    msg.invite.description = NULL;
    msg.invite.expires = 0;
    s_round_trip(&msg);
    samples_msg(&msg, PROTO_JOINED);
    msg.joined.description = "";
    s_round_trip(&msg);

    //  JOIN and JOINED without the key exchange (a 1.1 node, JOINED toward
    //  the private node).
    samples_msg(&msg, PROTO_JOIN);
    msg.join.has_kx = msg.join.has_auth = false;
    s_round_trip(&msg);
    samples_msg(&msg, PROTO_JOINED);
    msg.joined.has_kx = msg.joined.has_auth = false;
    s_round_trip(&msg);
}

static void test_equal_notices_differences(void **state)
{
    (void)state;
    proto_msg_t a, b;
    samples_msg(&a, PROTO_HELLO);
    samples_msg(&b, PROTO_HELLO);
    assert_true(proto_msg_equal(&a, &b));
    proto_conn_state_t other[2] = {a.hello.conns[0], a.hello.conns[1]};
    other[1].consumed = 5;
    b.hello.conns = other;
    assert_false(proto_msg_equal(&a, &b));
    samples_msg(&b, PROTO_HELLO);
    b.hello.credit = 0;
    assert_false(proto_msg_equal(&a, &b));
    samples_msg(&a, PROTO_PUBLISH);
    samples_msg(&b, PROTO_DELIVER);
    assert_false(proto_msg_equal(&a, &b));
    samples_msg(&b, PROTO_PUBLISH);
    uint8_t changed[6];
    assert_int_equal(a.publish.payload_size, sizeof(changed));
    memcpy(changed, a.publish.payload, sizeof(changed));
    changed[5] ^= 1;
    b.publish.payload = changed;
    assert_false(proto_msg_equal(&a, &b));
}

//  Decodes text (mptext notation) and returns the status; err filled.
static proto_status_t s_decode_text(const char *text, const proto_limits_t *limits,
                                    proto_msg_t *msg, proto_error_t *err)
{
    proto_buf_t buf;
    proto_buf_init(&buf);
    mptext(text, &buf);
    proto_status_t rc = proto_msg_decode(buf.data, buf.size, limits, msg, err);
    proto_buf_release(&buf);
    return rc;
}

static void test_unknown_keys_skipped(void **state)
{
    (void)state;
    static const char *const inputs[] = {
        "{v:256,t:10,conn:\"conn-1\",seq:42,later:1}",
        "{future:{a:[1,2,{b:nil}],c:b\"xy\"},v:256,t:10,conn:\"conn-1\",seq:42}",
        "{v:256,t:10,x:[[[[1]]]],conn:\"conn-1\",y:F,seq:42,z:-7,w:true,u:X(d40102)}",
        "{v:263,t:10,conn:\"conn-1\",seq:42}",                    //  Newer minor version 1.7
        "{v:256,t:10,conn:\"conn-1\",seq:X(cd002a)}",             //  Non-minimal uint16
        "{v:256,t:10,conn:\"conn-1\",seq:X(d3000000000000002a)}", //  Positive int64
    };
    proto_msg_t expected;
    samples_msg(&expected, PROTO_STORED);
    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        proto_msg_t msg;
        proto_error_t err;
        proto_status_t rc = s_decode_text(inputs[i], NULL, &msg, &err);
        if (rc != PROTO_OK)
            fail_msg("%s: %s", inputs[i], proto_error_str(&err));
        assert_true(proto_msg_equal(&expected, &msg));
        proto_msg_clear(&msg);
    }
    //  Unknown keys inside list elements are skipped too.
    proto_msg_t msg;
    proto_error_t err;
    assert_int_equal(s_decode_text("{v:256,t:1,node:\"n\",role:\"public\",conns:[{conn:\"c\","
                                   "stored:1,consumed:2,extra:{deep:[1]}}]}",
                                   NULL, &msg, &err),
                     PROTO_OK);
    assert_int_equal(msg.hello.conns_count, 1);
    assert_string_equal(msg.hello.conns[0].conn, "c");
    assert_int_equal(msg.hello.conns[0].consumed, 2);
    assert_int_equal(msg.hello.credit, 0);
    proto_msg_clear(&msg);
    //  nil for an optional field means absent.
    assert_int_equal(
        s_decode_text("{v:256,t:3,code:404,text:\"x\",conn:nil,seq:nil}", NULL, &msg, &err),
        PROTO_OK);
    assert_null(msg.error.conn);
    assert_false(msg.error.has_seq);
    proto_msg_clear(&msg);
}

typedef struct {
    const char *input;   //  mptext notation
    proto_status_t code; //  Expected status
    const char *field;   //  Expected err.field
} s_bad_case_t;

static const s_bad_case_t s_bad[] = {
    //  Not a message at all
    {"", PROTO_E_TRUNCATED, ""},
    {"[1,2]", PROTO_E_NOT_MAP, ""},
    {"\"hello\"", PROTO_E_NOT_MAP, ""},
    {"X(c1)", PROTO_E_TYPE, ""},
    {"{v:256,t:4} 1", PROTO_E_TRAILING, ""},
    {"{v:256,t:4}{v:256,t:4}", PROTO_E_TRAILING, ""},
    //  Header keys
    {"{t:4}", PROTO_E_MISSING, "v"},
    {"{v:256}", PROTO_E_MISSING, "t"},
    {"{v:512,t:4}", PROTO_E_VERSION, "v"},
    {"{v:255,t:4}", PROTO_E_VERSION, "v"},
    {"{v:512}", PROTO_E_VERSION, "v"},
    {"{v:\"1.0\",t:4}", PROTO_E_TYPE, "v"},
    {"{v:-1,t:4}", PROTO_E_VALUE, "v"},
    {"{v:65536,t:4}", PROTO_E_VALUE, "v"},
    {"{v:256,v:256,t:4}", PROTO_E_DUPLICATE, "v"},
    {"{v:256,t:4,t:5}", PROTO_E_DUPLICATE, "t"},
    {"{v:256,t:99}", PROTO_E_UNKNOWN_TYPE, "t"},
    {"{v:256,t:32}", PROTO_E_UNKNOWN_TYPE, "t"}, //  SYNC is a payload, not a message
    {"{v:256,t:[4]}", PROTO_E_TYPE, "t"},
    {"{v:256,t:4,1:2}", PROTO_E_TYPE, "(key)"},
    //  Required fields
    {"{v:256,t:10,seq:1}", PROTO_E_MISSING, "conn"},
    {"{v:256,t:10,conn:\"c\"}", PROTO_E_MISSING, "seq"},
    {"{v:256,t:9,conn:\"c\",seq:1}", PROTO_E_MISSING, "payload"},
    {"{v:256,t:1,node:\"n\",role:\"public\"}", PROTO_E_MISSING, "conns"},
    {"{v:256,t:1,node:\"n\",role:\"public\",conns:[{conn:\"c\",stored:1}]}", PROTO_E_MISSING,
     "conns[0].consumed"},
    {"{v:256,t:6,conn:\"c\",expires:1}", PROTO_E_MISSING, "token_hash"},
    {"{v:256,t:3,text:\"x\"}", PROTO_E_MISSING, "code"},
    {"{v:256,t:10,conn:nil,seq:1}", PROTO_E_TYPE, "conn"},
    //  Wrong types
    {"{v:256,t:10,conn:5,seq:1}", PROTO_E_TYPE, "conn"},
    {"{v:256,t:10,conn:b\"c\",seq:1}", PROTO_E_TYPE, "conn"},
    {"{v:256,t:10,conn:\"c\",seq:\"1\"}", PROTO_E_TYPE, "seq"},
    {"{v:256,t:10,conn:\"c\",seq:F}", PROTO_E_TYPE, "seq"},
    {"{v:256,t:10,conn:\"c\",seq:true}", PROTO_E_TYPE, "seq"},
    {"{v:256,t:10,conn:\"c\",seq:[1]}", PROTO_E_TYPE, "seq"},
    {"{v:256,t:10,conn:{a:1},seq:1}", PROTO_E_TYPE, "conn"},
    {"{v:256,t:9,conn:\"c\",seq:1,payload:\"text\"}", PROTO_E_TYPE, "payload"},
    {"{v:256,t:1,node:\"n\",role:1,conns:[]}", PROTO_E_TYPE, "role"},
    {"{v:256,t:1,node:\"n\",role:\"public\",conns:{}}", PROTO_E_TYPE, "conns"},
    {"{v:256,t:1,node:\"n\",role:\"public\",conns:[1]}", PROTO_E_TYPE, "conns[0]"},
    {"{v:256,t:6,conn:\"c\",token_hash:S(32),expires:1}", PROTO_E_TYPE, "token_hash"},
    //  Bad values
    {"{v:256,t:10,conn:\"c\",seq:0}", PROTO_E_VALUE, "seq"},
    {"{v:256,t:10,conn:\"c\",seq:-1}", PROTO_E_VALUE, "seq"},
    {"{v:256,t:10,conn:\"\",seq:1}", PROTO_E_VALUE, "conn"},
    {"{v:256,t:10,conn:\"a b\",seq:1}", PROTO_E_VALUE, "conn"},
    {"{v:256,t:10,conn:\"a\\x00b\",seq:1}", PROTO_E_VALUE, "conn"},
    {"{v:256,t:10,conn:\"caf\\xc3\\xa9\",seq:1}", PROTO_E_VALUE, "conn"},
    {"{v:256,t:3,code:0,text:\"x\"}", PROTO_E_VALUE, "code"},
    {"{v:256,t:3,code:65536,text:\"x\"}", PROTO_E_VALUE, "code"},
    {"{v:256,t:3,code:400,text:\"\\xc3\"}", PROTO_E_VALUE, "text"},                //  Cut sequence
    {"{v:256,t:3,code:400,text:\"\\xc0\\xaf\"}", PROTO_E_VALUE, "text"},           //  Overlong
    {"{v:256,t:3,code:400,text:\"\\xed\\xa0\\x80\"}", PROTO_E_VALUE, "text"},      //  Surrogate
    {"{v:256,t:3,code:400,text:\"\\xf4\\x90\\x80\\x80\"}", PROTO_E_VALUE, "text"}, //  > U+10FFFF
    {"{v:256,t:3,code:400,text:\"\\xff\"}", PROTO_E_VALUE, "text"},
    {"{v:256,t:3,code:400,text:\"a\\x00\"}", PROTO_E_VALUE, "text"},
    {"{v:256,t:1,node:\"n\",role:\"broker\",conns:[]}", PROTO_E_VALUE, "role"},
    {"{v:256,t:2,broker:\"b\",heartbeat_ms:0,max_frame:4096,credit:1}", PROTO_E_VALUE,
     "heartbeat_ms"},
    {"{v:256,t:2,broker:\"b\",heartbeat_ms:1,max_frame:4294967296,credit:1}", PROTO_E_VALUE,
     "max_frame"},
    {"{v:256,t:6,conn:\"c\",token_hash:B(31),expires:1}", PROTO_E_VALUE, "token_hash"},
    {"{v:256,t:7,conn:\"c\",token:B(33),description:\"d\"}", PROTO_E_VALUE, "token"},
    //  The join's key exchange: 32 bytes each, both or neither; nil is absent
    {"{v:258,t:7,conn:\"c\",token:B(32),description:\"d\",kx:B(31),auth:B(32)}", PROTO_E_VALUE,
     "kx"},
    {"{v:258,t:7,conn:\"c\",token:B(32),description:\"d\",kx:S(32),auth:B(32)}", PROTO_E_TYPE,
     "kx"},
    {"{v:258,t:7,conn:\"c\",token:B(32),description:\"d\",kx:B(32)}", PROTO_E_MISSING, "auth"},
    {"{v:258,t:8,conn:\"c\",description:\"d\",auth:B(32)}", PROTO_E_MISSING, "kx"},
    {"{v:258,t:8,conn:\"c\",description:\"d\",kx:nil,auth:nil}", PROTO_OK, ""},
    {"{v:258,t:8,conn:\"c\",description:\"d\",kx:B(32),auth:B(32)}", PROTO_OK, ""},
    {"{v:256,t:1,node:\"n\",role:\"public\",conns:[{conn:\"c\",stored:1,consumed:-2}]}",
     PROTO_E_VALUE, "conns[0].consumed"},
    //  Too long
    {"{v:256,t:10,conn:S(65),seq:1}", PROTO_E_TOO_LONG, "conn"},
    {"{v:256,t:3,code:400,text:S(1025)}", PROTO_E_TOO_LONG, "text"},
    {"{v:256,t:8,conn:\"c\",description:S(257)}", PROTO_E_TOO_LONG, "description"},
    {"{v:256,t:1,node:\"n\",role:\"public\",conns:[{conn:S(300),stored:1,consumed:2}]}",
     PROTO_E_TOO_LONG, "conns[0].conn"},
    //  Duplicates
    {"{v:256,t:10,conn:\"c\",seq:1,seq:2}", PROTO_E_DUPLICATE, "seq"},
    {"{v:256,t:10,conn:\"c\",conn:\"c\",seq:1}", PROTO_E_DUPLICATE, "conn"},
    //  Truncated or lying headers
    {"{v:256,t:10,conn:\"c\",seq:X(cf0000)}", PROTO_E_TRUNCATED, "seq"},
    {"{v:256,t:9,conn:\"c\",seq:1,payload:X(c6ffffffff00)}", PROTO_E_TRUNCATED, "payload"},
    {"{v:256,t:1,node:\"n\",role:\"public\",conns:X(ddffffffff)}", PROTO_E_TRUNCATED, "conns"},
    {"M(3) X(a176)", PROTO_E_TRUNCATED, ""},
    {"M(1) X(a176)", PROTO_E_TRUNCATED, "v"},
    {"X(df7fffffff)", PROTO_E_TRUNCATED, ""},
    //  Nesting
    {"{v:256,t:4,deep:D(15)}", PROTO_OK, ""},
    {"{v:256,t:4,deep:D(16)}", PROTO_E_DEPTH, "deep"},
    {"{v:256,t:4,deep:D(10000)}", PROTO_E_DEPTH, "deep"},
    {"{v:256,t:4,deep:{a:{b:{c:{d:{e:{f:{g:{h:{i:{j:{k:{l:{m:{n:{o:{p:1}}}}}}}}}}}}}}}}}",
     PROTO_E_DEPTH, "deep"},
};

//  PUBLISH / DELIVER "file" (1.3, docs/protocol.md §4.7): set on the first
//  message and on each batched one independently; absent on the wire when 0,
//  so a record's frame is what 1.2 sent; absent, nil or 0 decode as a
//  record; anything above 1 is refused by decoder and encoder alike.
static void test_file_flag(void **state)
{
    (void)state;
    static const uint8_t chunk[] = {1, 2, 3};
    proto_item_t more[3] = {
        {chunk, 3, PROTO_DATA_RECORD}, {chunk, 2, PROTO_DATA_FILE}, {chunk, 1, PROTO_DATA_RECORD}};
    proto_msg_t msg, back;
    proto_error_t err;
    proto_buf_t buf;
    proto_buf_init(&buf);
    static const proto_type_t types[] = {PROTO_PUBLISH, PROTO_DELIVER};
    for (size_t t = 0; t < 2; t++) {
        for (uint16_t first = 0; first <= 1; first++) {
            proto_msg_init(&msg, types[t]);
            msg.publish = (proto_data_t){"c", 7, chunk, 3, more, 3, first};
            assert_int_equal(proto_msg_encode(&msg, NULL, &buf, &err), PROTO_OK);
            assert_int_equal(proto_msg_decode(buf.data, buf.size, NULL, &back, &err), PROTO_OK);
            assert_int_equal(back.publish.file, first);
            assert_int_equal(back.publish.more_count, 3);
            assert_int_equal(back.publish.more[0].file, PROTO_DATA_RECORD);
            assert_int_equal(back.publish.more[1].file, PROTO_DATA_FILE);
            assert_int_equal(back.publish.more[2].file, PROTO_DATA_RECORD);
            assert_true(proto_msg_equal(&msg, &back));
            proto_msg_clear(&back);
        }
    }
    //  The flag is part of the message: equal notices it.
    proto_msg_init(&msg, PROTO_PUBLISH);
    msg.publish = (proto_data_t){"c", 7, chunk, 3, NULL, 0, PROTO_DATA_FILE};
    proto_msg_t record = msg;
    record.publish.file = PROTO_DATA_RECORD;
    assert_false(proto_msg_equal(&msg, &record));

    //  A record is encoded without the key: the same bytes as before 1.3.
    assert_int_equal(proto_msg_encode(&record, NULL, &buf, &err), PROTO_OK);
    assert_null(memmem(buf.data, buf.size,
                       "\xa4"
                       "file",
                       5));
    assert_int_equal(proto_msg_encode(&msg, NULL, &buf, &err), PROTO_OK);
    assert_non_null(memmem(buf.data, buf.size,
                           "\xa4"
                           "file\x01",
                           6));

    //  Absent, nil and 0 are a record; 1 is a file chunk; as older peers
    //  write them (v 1.2) and with a newer minor.
    static const struct {
        const char *text;
        uint16_t first, item;
    } ok[] = {
        {"{v:258,t:9,conn:\"c\",seq:1,payload:B(3)}", 0, 0},
        {"{v:259,t:9,conn:\"c\",seq:1,payload:B(3),file:nil,more:[{payload:B(1),file:nil}]}", 0, 0},
        {"{v:259,t:9,conn:\"c\",seq:1,payload:B(3),file:0,more:[{payload:B(1),file:0}]}", 0, 0},
        {"{v:259,t:9,file:1,conn:\"c\",seq:1,payload:B(3),more:[{file:1,payload:B(1)}]}", 1, 1},
        {"{v:259,t:11,conn:\"c\",seq:1,payload:B(3),more:[{payload:B(1),file:X(cd0001)}]}", 0, 1},
        {"{v:265,t:11,conn:\"c\",seq:1,payload:B(3),file:1,more:[{payload:B(1)}]}", 1, 0},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        proto_status_t rc = s_decode_text(ok[i].text, NULL, &back, &err);
        if (rc != PROTO_OK)
            fail_msg("%s: %s", ok[i].text, proto_error_str(&err));
        assert_int_equal(back.publish.file, ok[i].first);
        if (back.publish.more_count)
            assert_int_equal(back.publish.more[0].file, ok[i].item);
        proto_msg_clear(&back);
    }

    //  Anything but 0 and 1 is refused, with the field named.
    static const struct {
        const char *text;
        proto_status_t code;
        const char *field;
    } bad[] = {
        {"{v:259,t:9,conn:\"c\",seq:1,payload:B(3),file:2}", PROTO_E_VALUE, "file"},
        {"{v:259,t:9,conn:\"c\",seq:1,payload:B(3),file:65535}", PROTO_E_VALUE, "file"},
        {"{v:259,t:9,conn:\"c\",seq:1,payload:B(3),file:65536}", PROTO_E_VALUE, "file"},
        {"{v:259,t:9,conn:\"c\",seq:1,payload:B(3),file:-1}", PROTO_E_VALUE, "file"},
        {"{v:259,t:9,conn:\"c\",seq:1,payload:B(3),file:true}", PROTO_E_TYPE, "file"},
        {"{v:259,t:9,conn:\"c\",seq:1,payload:B(3),file:\"1\"}", PROTO_E_TYPE, "file"},
        {"{v:259,t:9,conn:\"c\",seq:1,payload:B(3),file:1,file:1}", PROTO_E_DUPLICATE, "file"},
        {"{v:259,t:11,conn:\"c\",seq:1,payload:B(3),more:[{payload:B(1)},{payload:B(1),file:2}]}",
         PROTO_E_VALUE, "more[1].file"},
        {"{v:259,t:11,conn:\"c\",seq:1,payload:B(3),more:[{file:1}]}", PROTO_E_MISSING,
         "more[0].payload"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        proto_status_t rc = s_decode_text(bad[i].text, NULL, &back, &err);
        if (rc != bad[i].code)
            fail_msg("%s: got %d (%s), expected %d", bad[i].text, (int)rc, proto_error_str(&err),
                     (int)bad[i].code);
        assert_string_equal(err.field, bad[i].field);
    }

    //  The encoder refuses what the decoder would.
    msg.publish.file = 2;
    assert_int_equal(proto_msg_encode(&msg, NULL, &buf, &err), PROTO_E_VALUE);
    assert_string_equal(err.field, "file");
    msg.publish.file = PROTO_DATA_FILE;
    more[2].file = 7;
    msg.publish.more = more;
    msg.publish.more_count = 3;
    assert_int_equal(proto_msg_encode(&msg, NULL, &buf, &err), PROTO_E_VALUE);
    assert_string_equal(err.field, "more[2].file");
    proto_buf_release(&buf);
}

//  A batch of the largest items the frame allows, every one a file chunk,
//  stays within PROTO_DATA_OVERHEAD + n * PROTO_ITEM_OVERHEAD of its
//  payloads: senders size their batches by these (docs/protocol.md §4.6).
static void test_data_overhead_covers_the_file_flag(void **state)
{
    (void)state;
    static uint8_t payload[70000]; //  bin32 headers, the longest item encoding
    proto_item_t more[255];
    for (size_t i = 0; i < 255; i++)
        more[i] = (proto_item_t){payload, i % 2 ? 1 : sizeof payload, PROTO_DATA_FILE};
    char id[PROTO_MAX_ID + 1];
    memset(id, 'c', PROTO_MAX_ID);
    id[PROTO_MAX_ID] = '\0';
    proto_limits_t limits = proto_limits_default();
    limits.max_frame = 64u << 20;
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_PUBLISH);
    msg.publish =
        (proto_data_t){id, UINT64_MAX - 255, payload, sizeof payload, more, 255, PROTO_DATA_FILE};
    size_t payloads = sizeof payload;
    for (size_t i = 0; i < 255; i++)
        payloads += more[i].payload_size;
    proto_buf_t buf;
    proto_buf_init(&buf);
    assert_int_equal(proto_msg_encode(&msg, &limits, &buf, NULL), PROTO_OK);
    assert_true(buf.size <= PROTO_DATA_OVERHEAD + payloads + 255 * PROTO_ITEM_OVERHEAD);
    //  And a single item's own overhead, alone: at most PROTO_ITEM_OVERHEAD.
    size_t with_one = buf.size;
    msg.publish.more_count = 254;
    assert_int_equal(proto_msg_encode(&msg, &limits, &buf, NULL), PROTO_OK);
    assert_true(with_one - buf.size <= more[254].payload_size + PROTO_ITEM_OVERHEAD);
    proto_buf_release(&buf);
}

static void test_malformed_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(s_bad) / sizeof(s_bad[0]); i++) {
        const s_bad_case_t *c = &s_bad[i];
        proto_msg_t msg;
        proto_error_t err;
        proto_status_t rc = s_decode_text(c->input, NULL, &msg, &err);
        if (rc != c->code || strcmp(err.field, c->field) != 0)
            fail_msg("case %zu %s: got %s field '%s' (%s), want %s field '%s'", i, c->input,
                     proto_status_str(rc), err.field, proto_error_str(&err),
                     proto_status_str(c->code), c->field);
        if (rc != PROTO_OK) {
            //  A refused frame leaves nothing behind and says why.
            assert_null(msg.mem);
            assert_int_equal(msg.type, 0);
            assert_true(strlen(proto_error_str(&err)) > 0);
        }
        proto_msg_clear(&msg);
    }
}

static void test_every_truncation_refused(void **state)
{
    (void)state;
    proto_buf_t buf;
    proto_buf_init(&buf);
    for (size_t i = 0; i < samples_types_count; i++) {
        proto_msg_t msg;
        samples_msg(&msg, samples_types[i]);
        assert_int_equal(proto_msg_encode(&msg, NULL, &buf, NULL), PROTO_OK);
        for (size_t cut = 0; cut < buf.size; cut++) {
            //  A copy of exactly cut bytes, so ASan sees any read beyond it.
            uint8_t *copy = malloc(cut ? cut : 1);
            memcpy(copy, buf.data, cut);
            proto_msg_t back;
            proto_error_t err;
            proto_status_t rc = proto_msg_decode(copy, cut, NULL, &back, &err);
            if (rc != PROTO_E_TRUNCATED)
                fail_msg("%s cut at %zu of %zu: %s", proto_type_name(samples_types[i]), cut,
                         buf.size, proto_error_str(&err));
            free(copy);
        }
    }
    proto_buf_release(&buf);
}

static void test_error_messages(void **state)
{
    (void)state;
    proto_msg_t msg;
    proto_error_t err;
    s_decode_text("{v:256,t:10,conn:S(300),seq:1}", NULL, &msg, &err);
    assert_string_equal(proto_error_str(&err), "field 'conn' too long (300 > 64 bytes)");
    s_decode_text("{v:256,t:10,conn:\"c\"}", NULL, &msg, &err);
    assert_string_equal(proto_error_str(&err), "missing required field 'seq'");
    s_decode_text("{v:256,t:10,conn:5,seq:1}", NULL, &msg, &err);
    assert_string_equal(proto_error_str(&err), "wrong type for field 'conn'");
    s_decode_text("{v:770,t:10}", NULL, &msg, &err);
    assert_string_equal(proto_error_str(&err), "unsupported version 3.2 (this side speaks 1.x)");
    s_decode_text("{v:256,t:77}", NULL, &msg, &err);
    assert_string_equal(proto_error_str(&err), "unknown message type 77");
    s_decode_text("{v:256,t:4} 1 2", NULL, &msg, &err);
    assert_string_equal(proto_error_str(&err), "2 trailing bytes after the message");
    assert_string_equal(proto_type_name(PROTO_CONSUMED), "CONSUMED");
    assert_string_equal(proto_type_name((proto_type_t)99), "UNKNOWN");
    assert_string_equal(proto_role_name(PROTO_ROLE_PRIVATE), "private");
    proto_error_clear(&err);
    assert_string_equal(proto_error_str(&err), "ok");
}

static void test_limits(void **state)
{
    (void)state;
    proto_limits_t limits = proto_limits_default();
    assert_int_equal(limits.max_frame, 1048576);
    proto_msg_t msg;
    proto_error_t err;
    proto_buf_t buf;
    proto_buf_init(&buf);

    //  Frame size is checked before anything is read.
    limits.max_frame = 16;
    samples_msg(&msg, PROTO_PUBLISH);
    assert_int_equal(proto_msg_encode(&msg, NULL, &buf, NULL), PROTO_OK);
    assert_true(buf.size > 16);
    assert_int_equal(proto_msg_decode(buf.data, buf.size, &limits, &msg, &err),
                     PROTO_E_FRAME_TOO_BIG);
    assert_int_equal(err.got, buf.size);
    assert_int_equal(err.max, 16);
    //  And by the encoder.
    samples_msg(&msg, PROTO_PUBLISH);
    assert_int_equal(proto_msg_encode(&msg, &limits, &buf, &err), PROTO_E_FRAME_TOO_BIG);
    assert_int_equal(buf.size, 0);

    //  Payload limit.
    limits = proto_limits_default();
    limits.max_payload = 5;
    assert_int_equal(
        s_decode_text("{v:256,t:11,conn:\"c\",seq:1,payload:B(6)}", &limits, &msg, &err),
        PROTO_E_TOO_LONG);
    assert_string_equal(err.field, "payload");
    assert_int_equal(
        s_decode_text("{v:256,t:11,conn:\"c\",seq:1,payload:B(5)}", &limits, &msg, &err), PROTO_OK);
    proto_msg_clear(&msg);

    //  Item limit on lists and on any map or array, even skipped ones.
    limits = proto_limits_default();
    limits.max_items = 5;
    const char *conn = "{conn:\"a\",stored:1,consumed:1}";
    char hello[512];
    snprintf(hello, sizeof(hello), "{v:256,t:1,node:\"n\",role:\"public\",conns:[%s,%s,%s,%s,%s]}",
             conn, conn, conn, conn, conn);
    assert_int_equal(s_decode_text(hello, &limits, &msg, &err), PROTO_OK);
    proto_msg_clear(&msg);
    snprintf(hello, sizeof(hello),
             "{v:256,t:1,node:\"n\",role:\"public\",conns:[%s,%s,%s,%s,%s,%s]}", conn, conn, conn,
             conn, conn, conn);
    assert_int_equal(s_decode_text(hello, &limits, &msg, &err), PROTO_E_TOO_MANY);
    assert_string_equal(err.field, "conns");
    assert_string_equal(proto_error_str(&err), "field 'conns' has too many items (6 > 5)");
    assert_int_equal(s_decode_text("{v:256,t:4,x:[1,2,3,4,5,6]}", &limits, &msg, &err),
                     PROTO_E_TOO_MANY);
    assert_string_equal(err.field, "x");
    assert_int_equal(s_decode_text("{v:256,t:4,a:1,b:2,c:3,d:4}", &limits, &msg, &err),
                     PROTO_E_TOO_MANY);
    assert_string_equal(err.field, "");

    //  Depth limit.
    limits = proto_limits_default();
    limits.max_depth = 3;
    assert_int_equal(s_decode_text("{v:256,t:4,x:D(2)}", &limits, &msg, &err), PROTO_OK);
    assert_int_equal(s_decode_text("{v:256,t:4,x:D(3)}", &limits, &msg, &err), PROTO_E_DEPTH);
    proto_buf_release(&buf);
}

static void test_encoder_refuses_bad_messages(void **state)
{
    (void)state;
    proto_buf_t buf;
    proto_buf_init(&buf);
    proto_error_t err;
    proto_msg_t msg;
    char long_id[PROTO_MAX_ID + 2];
    memset(long_id, 'a', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';

    samples_msg(&msg, PROTO_STORED);
    msg.stored.conn = NULL;
    assert_int_equal(proto_msg_encode(&msg, NULL, &buf, &err), PROTO_E_MISSING);
    assert_string_equal(err.field, "conn");
    msg.stored.conn = long_id;
    assert_int_equal(proto_msg_encode(&msg, NULL, &buf, &err), PROTO_E_TOO_LONG);
    assert_string_equal(proto_error_str(&err), "field 'conn' too long (65 > 64 bytes)");
    msg.stored.conn = "has space";
    assert_int_equal(proto_msg_encode(&msg, NULL, &buf, &err), PROTO_E_VALUE);
    msg.stored.conn = "c";
    msg.stored.seq = 0;
    assert_int_equal(proto_msg_encode(&msg, NULL, &buf, &err), PROTO_E_VALUE);
    assert_string_equal(err.field, "seq");

    samples_msg(&msg, PROTO_HELLO);
    msg.hello.role = 0;
    assert_int_equal(proto_msg_encode(&msg, NULL, &buf, &err), PROTO_E_VALUE);
    assert_string_equal(err.field, "role");
    samples_msg(&msg, PROTO_HELLO);
    proto_conn_state_t bad[1] = {{"bad id!", 1, 1, 0}};
    msg.hello.conns = bad;
    msg.hello.conns_count = 1;
    assert_int_equal(proto_msg_encode(&msg, NULL, &buf, &err), PROTO_E_VALUE);
    assert_string_equal(err.field, "conns[0].conn");
    msg.hello.conns = NULL;
    assert_int_equal(proto_msg_encode(&msg, NULL, &buf, &err), PROTO_E_MISSING);

    samples_msg(&msg, PROTO_PUBLISH);
    msg.publish.payload = NULL;
    assert_int_equal(proto_msg_encode(&msg, NULL, &buf, &err), PROTO_E_VALUE);
    msg.publish.payload_size = 0;
    assert_int_equal(proto_msg_encode(&msg, NULL, &buf, &err), PROTO_E_MISSING);

    samples_msg(&msg, PROTO_ERROR);
    msg.error.text = "\xff";
    assert_int_equal(proto_msg_encode(&msg, NULL, &buf, &err), PROTO_E_VALUE);
    assert_string_equal(err.field, "text");

    //  Half a key exchange never leaves.
    samples_msg(&msg, PROTO_JOIN);
    msg.join.has_auth = false;
    assert_int_equal(proto_msg_encode(&msg, NULL, &buf, &err), PROTO_E_MISSING);
    assert_string_equal(err.field, "auth");
    samples_msg(&msg, PROTO_JOINED);
    msg.joined.has_kx = false;
    assert_int_equal(proto_msg_encode(&msg, NULL, &buf, &err), PROTO_E_MISSING);
    assert_string_equal(err.field, "kx");

    proto_msg_init(&msg, PROTO_SYNC);
    assert_int_equal(proto_msg_encode(&msg, NULL, &buf, &err), PROTO_E_UNKNOWN_TYPE);
    proto_buf_release(&buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_every_type),
        cmocka_unit_test(test_round_trip_edges),
        cmocka_unit_test(test_equal_notices_differences),
        cmocka_unit_test(test_unknown_keys_skipped),
        cmocka_unit_test(test_malformed_table),
        cmocka_unit_test(test_every_truncation_refused),
        cmocka_unit_test(test_error_messages),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_encoder_refuses_bad_messages),
        cmocka_unit_test(test_file_flag),
        cmocka_unit_test(test_data_overhead_covers_the_file_flag),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
