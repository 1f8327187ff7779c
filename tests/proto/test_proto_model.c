/*  test_proto_model.c: the protocol's one model as callers see it
    (proto_msg_may_send, proto_sender_of_role, proto_type_name,
    proto_role_name).

    Proves: for every message type and every sender, proto_msg_may_send
    answers what docs/protocol.md §5 ("Sent by") and §4 say, restated here
    as the specification; no sender may send a type the protocol does not
    have; a mask of senders means "any of them"; every type has its name;
    the role enum is read and written only as its two wire names.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mptext.h"
#include "proto.h"

#define PUB  PROTO_SENDER_PUBLIC
#define PRIV PROTO_SENDER_PRIVATE
#define BRK  PROTO_SENDER_BROKER

//  Who may send each type: docs/protocol.md §5, written out by hand.
static const struct {
    proto_type_t type;
    const char *name;
    unsigned senders;
} s_spec[] = {
    {PROTO_HELLO, "HELLO", PUB | PRIV},               //  Nodes open sessions
    {PROTO_WELCOME, "WELCOME", BRK},                  //  The broker accepts them
    {PROTO_ERROR, "ERROR", PUB | PRIV | BRK},         //  Either way
    {PROTO_PING, "PING", PUB | PRIV | BRK},           //  Either way
    {PROTO_PONG, "PONG", PUB | PRIV | BRK},           //  Either way
    {PROTO_INVITE, "INVITE", PUB},                    //  Only the public node invites
    {PROTO_JOIN, "JOIN", PRIV},                       //  Only the private node joins
    {PROTO_JOINED, "JOINED", BRK},                    //  The broker tells both nodes
    {PROTO_PUBLISH, "PUBLISH", PUB | PRIV},           //  Both nodes publish
    {PROTO_STORED, "STORED", BRK},                    //  The broker confirms
    {PROTO_DELIVER, "DELIVER", BRK},                  //  The broker delivers
    {PROTO_CONSUMED, "CONSUMED", PUB | PRIV},         //  Both nodes consume
    {PROTO_INVITED, "INVITED", BRK},                  //  The broker confirms INVITE
    {PROTO_SYNC, "SYNC", PUB | PRIV},                 //  Node to node, sealed
    {PROTO_RECEIPT, "RECEIPT", PUB | PRIV},           //  Node to node, sealed
    {PROTO_REKEY, "REKEY", PUB | PRIV},               //  Node to node, sealed
    {PROTO_REKEY_ACK, "REKEY_ACK", PUB | PRIV},       //  Node to node, sealed
    {PROTO_FILE_CHUNK, "FILE_CHUNK", PUB | PRIV},     //  Node to node, sealed
    {PROTO_FILE_ACK, "FILE_ACK", PUB | PRIV},         //  Node to node, sealed
    {PROTO_FILE_RECEIPT, "FILE_RECEIPT", PUB | PRIV}, //  Node to node, sealed
    {PROTO_FILE_DELETE, "FILE_DELETE", PUB | PRIV},   //  Node to node, sealed
    {PROTO_INVITATION, "INVITATION", PUB},            //  Made by the public node
};

static const proto_sender_t s_senders[] = {PROTO_SENDER_PUBLIC, PROTO_SENDER_PRIVATE,
                                           PROTO_SENDER_BROKER};

//  The specified senders of type, or -1 when the protocol has no such type.
static long s_spec_senders(unsigned type)
{
    for (size_t i = 0; i < sizeof(s_spec) / sizeof(s_spec[0]); i++)
        if ((unsigned)s_spec[i].type == type)
            return (long)s_spec[i].senders;
    return -1;
}

static void test_every_type_and_sender(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(s_spec) / sizeof(s_spec[0]); i++) {
        for (size_t k = 0; k < sizeof(s_senders) / sizeof(s_senders[0]); k++) {
            bool expected = (s_spec[i].senders & (unsigned)s_senders[k]) != 0;
            if (proto_msg_may_send(s_spec[i].type, s_senders[k]) != expected)
                fail_msg("%s from sender %d: expected %s", s_spec[i].name, (int)s_senders[k],
                         expected ? "allowed" : "refused");
        }
    }
}

//  Every number a "t" can carry: a type outside the specification may be
//  sent by nobody, and the specification's types are all there.
static void test_no_other_type(void **state)
{
    (void)state;
    size_t found = 0;
    for (unsigned type = 0; type <= UINT16_MAX; type++) {
        long senders = s_spec_senders(type);
        bool any = proto_msg_may_send((proto_type_t)type, PROTO_SENDER_NODE) ||
                   proto_msg_may_send((proto_type_t)type, PROTO_SENDER_BROKER);
        if (senders < 0 && any)
            fail_msg("type %u is not in docs/protocol.md, yet someone may send it", type);
        if (senders < 0)
            assert_string_equal(proto_type_name((proto_type_t)type), "UNKNOWN");
        else
            found++;
    }
    assert_int_equal(found, sizeof(s_spec) / sizeof(s_spec[0]));
}

static void test_sender_masks(void **state)
{
    (void)state;
    //  A mask asks whether any of its senders may.
    assert_true(proto_msg_may_send(PROTO_INVITE, PROTO_SENDER_NODE));
    assert_true(proto_msg_may_send(PROTO_JOIN, PROTO_SENDER_NODE));
    assert_false(proto_msg_may_send(PROTO_DELIVER, PROTO_SENDER_NODE));
    assert_false(proto_msg_may_send(PROTO_WELCOME, PROTO_SENDER_NODE));
    assert_true(proto_msg_may_send(PROTO_DELIVER, (proto_sender_t)(PROTO_SENDER_NODE | BRK)));
    //  Nobody is no sender.
    assert_false(proto_msg_may_send(PROTO_PING, (proto_sender_t)0));
    //  A node of each role is its sender.
    assert_int_equal(proto_sender_of_role(PROTO_ROLE_PUBLIC), PROTO_SENDER_PUBLIC);
    assert_int_equal(proto_sender_of_role(PROTO_ROLE_PRIVATE), PROTO_SENDER_PRIVATE);
    assert_int_equal(proto_sender_of_role((proto_role_t)0), 0);
    assert_false(proto_msg_may_send(PROTO_INVITE, proto_sender_of_role(PROTO_ROLE_PRIVATE)));
    assert_false(proto_msg_may_send(PROTO_JOIN, proto_sender_of_role(PROTO_ROLE_PUBLIC)));
}

static void test_type_names(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(s_spec) / sizeof(s_spec[0]); i++)
        assert_string_equal(proto_type_name(s_spec[i].type), s_spec[i].name);
}

//  The role is an enum of strings whose names come from HELLO's table.
static void test_role_enum(void **state)
{
    (void)state;
    assert_string_equal(proto_role_name(PROTO_ROLE_PUBLIC), "public");
    assert_string_equal(proto_role_name(PROTO_ROLE_PRIVATE), "private");
    assert_string_equal(proto_role_name((proto_role_t)0), "unknown");
    assert_string_equal(proto_role_name((proto_role_t)3), "unknown");
    assert_string_equal(proto_role_name((proto_role_t)-1), "unknown");

    const proto_role_t roles[] = {PROTO_ROLE_PUBLIC, PROTO_ROLE_PRIVATE};
    proto_buf_t buf;
    proto_buf_init(&buf);
    for (size_t i = 0; i < 2; i++) {
        proto_msg_t msg, back;
        proto_msg_init(&msg, PROTO_HELLO);
        msg.hello = (proto_hello_t){.node = "n", .role = roles[i]};
        assert_int_equal(proto_msg_encode(&msg, NULL, &buf, NULL), PROTO_OK);
        assert_int_equal(proto_msg_decode(buf.data, buf.size, NULL, &back, NULL), PROTO_OK);
        assert_int_equal(back.hello.role, roles[i]);
        proto_msg_clear(&back);
    }
    //  A value without a name is refused when encoding, a name without a
    //  value when decoding; so is the empty name and a name's prefix.
    proto_msg_t msg;
    proto_error_t err;
    proto_msg_init(&msg, PROTO_HELLO);
    msg.hello = (proto_hello_t){.node = "n", .role = (proto_role_t)3};
    assert_int_equal(proto_msg_encode(&msg, NULL, &buf, &err), PROTO_E_VALUE);
    assert_string_equal(err.field, "role");
    msg.hello.role = (proto_role_t)-1;
    assert_int_equal(proto_msg_encode(&msg, NULL, &buf, &err), PROTO_E_VALUE);
    const char *bad[] = {"{v:256,t:1,node:\"n\",role:\"\",conns:[]}",
                         "{v:256,t:1,node:\"n\",role:\"pub\",conns:[]}",
                         "{v:256,t:1,node:\"n\",role:\"publicx\",conns:[]}",
                         "{v:256,t:1,node:\"n\",role:\"PUBLIC\",conns:[]}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        proto_buf_t in;
        proto_buf_init(&in);
        mptext(bad[i], &in);
        assert_int_equal(proto_msg_decode(in.data, in.size, NULL, &msg, &err), PROTO_E_VALUE);
        assert_string_equal(err.field, "role");
        proto_buf_release(&in);
    }
    proto_buf_release(&buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_type_and_sender),
        cmocka_unit_test(test_no_other_type),
        cmocka_unit_test(test_sender_masks),
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_role_enum),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
