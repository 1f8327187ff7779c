/*  test_broker_auth.c: who may do what, per CURVE key, checked on every
    message (docs/architecture.md §5; docs/broker.md, "Who may do what"),
    against the real broker process.

    Each refusal must be an ERROR with the right code, counted under its
    reason in /metrics, and must deliver nothing:
      - a key that is not configured cannot act as a public node;
      - a configured public key cannot act as a private node;
      - JOIN with a wrong token, after expiry, or with a token another key
        already used;
      - a node naming a connection it is not bound to (PUBLISH, CONSUMED),
        a stranger that never joined, a private node that INVITEs;
      - the same node repeating its own JOIN gets JOINED again.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "broker_harness.h"

typedef struct {
    th_broker_t broker;
    th_pair_t one;      //  Connection conn-1
    th_pair_t two;      //  Connection conn-2
    char pub_extra[41]; //  Third public key, configured, for INVITE tests
    char pub_extra_sec[41];
} fixture_t;

static int s_setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    th_broker_init(&f->broker, th_binary());
    th_pair_prepare(&f->one, &f->broker, "conn-1");
    th_pair_prepare(&f->two, &f->broker, "conn-2");
    assert_int_equal(zmq_curve_keypair(f->pub_extra, f->pub_extra_sec), 0);
    th_broker_add_public_key(&f->broker, f->pub_extra);
    th_broker_start(&f->broker);
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    fixture_t *f = *state;
    th_pair_close(&f->one);
    th_pair_close(&f->two);
    th_broker_cleanup(&f->broker);
    free(f);
    return 0;
}

static double s_rejected(fixture_t *f, const char *reason)
{
    char labels[64];
    snprintf(labels, sizeof labels, "reason=\"%s\"", reason);
    return th_metric(&f->broker, "twinsync_broker_frames_rejected_total", labels);
}

static double s_stored_total(fixture_t *f, const char *conn, const char *dir)
{
    char labels[128];
    snprintf(labels, sizeof labels, "connection=\"%s\",direction=\"%s\"", conn, dir);
    return th_metric(&f->broker, "twinsync_broker_queue_stored_total", labels);
}

static void s_random_token(uint8_t token[32])
{
    for (int i = 0; i < 32; i++)
        token[i] = (uint8_t)rand();
}

static void test_unknown_key_is_not_public(void **state)
{
    fixture_t *f = *state;
    th_client_t stranger;
    th_client_init(&stranger, &f->broker);
    proto_msg_t reply;
    th_hello_reply(&stranger, "impostor", PROTO_ROLE_PUBLIC, &reply);
    assert_int_equal(reply.type, PROTO_ERROR);
    assert_int_equal(reply.error.code, 403);
    proto_msg_clear(&reply);
    //  Without a session it may not publish either.
    th_publish(&stranger, "conn-1", 1, "x", 1);
    th_expect_error(&stranger, 401, NULL);
    th_client_close(&stranger);
    assert_int_equal(s_rejected(f, "unknown_key"), 1);
    assert_int_equal(s_rejected(f, "not_hello"), 1);
}

static void test_public_key_cannot_be_private(void **state)
{
    fixture_t *f = *state;
    th_client_t client;
    th_client_init_keys(&client, &f->broker, f->pub_extra, f->pub_extra_sec);
    proto_msg_t reply;
    th_hello_reply(&client, "confused", PROTO_ROLE_PRIVATE, &reply);
    assert_int_equal(reply.type, PROTO_ERROR);
    assert_int_equal(reply.error.code, 403);
    proto_msg_clear(&reply);
    th_client_close(&client);
}

static void test_join_wrong_token(void **state)
{
    fixture_t *f = *state;
    th_pair_connect_public(&f->one, &f->broker);
    uint8_t token[32], wrong[32];
    s_random_token(token);
    memcpy(wrong, token, 32);
    wrong[7] ^= 1;
    th_invite(&f->one.pub, "conn-1", token, (uint64_t)time(NULL) + 3600);

    th_client_init(&f->one.priv, &f->broker);
    th_hello(&f->one.priv, "node-private", PROTO_ROLE_PRIVATE, NULL, 0, 0);
    proto_msg_t reply;
    th_join(&f->one.priv, "conn-1", wrong, &reply);
    assert_int_equal(reply.type, PROTO_ERROR);
    assert_int_equal(reply.error.code, 412);
    proto_msg_clear(&reply);
    //  Unknown connection.
    th_join(&f->one.priv, "conn-nope", token, &reply);
    assert_int_equal(reply.type, PROTO_ERROR);
    assert_int_equal(reply.error.code, 404);
    proto_msg_clear(&reply);
    //  Not joined: it may not publish on the connection.
    th_publish(&f->one.priv, "conn-1", 1, "x", 1);
    th_expect_error(&f->one.priv, 403, NULL);
    //  The right token still works afterwards (a wrong guess burns nothing).
    th_join(&f->one.priv, "conn-1", token, &reply);
    assert_int_equal(reply.type, PROTO_JOINED);
    proto_msg_clear(&reply);
    assert_int_equal(s_rejected(f, "join_bad_token"), 1);
    assert_int_equal(s_rejected(f, "unknown_connection"), 1);
    assert_int_equal(s_rejected(f, "foreign_connection"), 1);
    assert_int_equal(s_stored_total(f, "conn-1", "private_to_public"), 0);
}

static void test_join_expired(void **state)
{
    fixture_t *f = *state;
    th_pair_connect_public(&f->one, &f->broker);
    uint8_t token[32];
    s_random_token(token);
    //  An expiry already past is refused at INVITE.
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_INVITE);
    msg.invite.conn = "conn-1";
    msg.invite.expires = (uint64_t)time(NULL) - 10;
    th_send(&f->one.pub, &msg);
    th_expect_error(&f->one.pub, 410, NULL);
    //  One that passes while the code travels is refused at JOIN.
    th_invite(&f->one.pub, "conn-1", token, (uint64_t)time(NULL) + 2);
    sleep(3);
    th_client_init(&f->one.priv, &f->broker);
    th_hello(&f->one.priv, "node-private", PROTO_ROLE_PRIVATE, NULL, 0, 0);
    proto_msg_t reply;
    th_join(&f->one.priv, "conn-1", token, &reply);
    assert_int_equal(reply.type, PROTO_ERROR);
    assert_int_equal(reply.error.code, 410);
    proto_msg_clear(&reply);
    assert_int_equal(s_rejected(f, "join_expired"), 2);
}

static void test_join_reused_token(void **state)
{
    fixture_t *f = *state;
    th_pair_connect(&f->one, &f->broker);
    //  The same node asking again (its JOINED was lost) is answered again.
    th_client_t *priv = &f->one.priv;
    proto_msg_t reply;
    //  th_pair_connect does not keep the token: register a second
    //  connection whose token we know.
    uint8_t token[32];
    s_random_token(token);
    th_invite(&f->one.pub, "conn-3", token, (uint64_t)time(NULL) + 3600);
    th_join(priv, "conn-3", token, &reply);
    assert_int_equal(reply.type, PROTO_JOINED);
    proto_msg_clear(&reply);
    th_expect(&f->one.pub, PROTO_JOINED, &reply, 5000);
    proto_msg_clear(&reply);
    th_join(priv, "conn-3", token, &reply);
    assert_int_equal(reply.type, PROTO_JOINED);
    proto_msg_clear(&reply);
    th_expect(&f->one.pub, PROTO_JOINED, &reply, 5000); //  told again too: idempotent
    proto_msg_clear(&reply);
    //  Another key with the same (copied) code is refused.
    th_client_t copycat;
    th_client_init(&copycat, &f->broker);
    th_hello(&copycat, "copycat", PROTO_ROLE_PRIVATE, NULL, 0, 0);
    th_join(&copycat, "conn-3", token, &reply);
    assert_int_equal(reply.type, PROTO_ERROR);
    assert_int_equal(reply.error.code, 409);
    proto_msg_clear(&reply);
    //  And it cannot reach the connection in any other way.
    th_publish(&copycat, "conn-3", 1, "x", 1);
    th_expect_error(&copycat, 403, NULL);
    th_client_close(&copycat);
    assert_int_equal(s_rejected(f, "join_reused"), 1);
    //  A public node cannot re-INVITE a joined connection.
    proto_msg_init(&reply, PROTO_INVITE);
    reply.invite.conn = "conn-3";
    reply.invite.expires = (uint64_t)time(NULL) + 60;
    th_send(&f->one.pub, &reply);
    th_expect_error(&f->one.pub, 409, NULL);
}

static void test_foreign_connection(void **state)
{
    fixture_t *f = *state;
    th_pair_connect(&f->one, &f->broker);
    th_pair_connect(&f->two, &f->broker);
    //  Each node of conn-2 names conn-1.
    th_publish(&f->two.priv, "conn-1", 1, "x", 1);
    th_expect_error(&f->two.priv, 403, NULL);
    th_publish(&f->two.pub, "conn-1", 1, "x", 1);
    th_expect_error(&f->two.pub, 403, NULL);
    th_consumed(&f->two.priv, "conn-1", 1);
    th_expect_error(&f->two.priv, 403, NULL);
    //  conn-2's public node tries to take conn-1 over with a new INVITE.
    uint8_t token[32];
    s_random_token(token);
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_INVITE);
    msg.invite.conn = "conn-1";
    msg.invite.expires = (uint64_t)time(NULL) + 60;
    th_send(&f->two.pub, &msg);
    th_expect_error(&f->two.pub, 403, NULL);
    //  A private node may not INVITE at all.
    msg.invite.conn = "conn-9";
    th_send(&f->two.priv, &msg);
    th_expect_error(&f->two.priv, 403, NULL);

    //  Nothing of it reached conn-1's nodes or its queues.
    th_expect_silence(&f->one.priv, 200);
    th_expect_silence(&f->one.pub, 100);
    assert_int_equal(s_stored_total(f, "conn-1", "public_to_private"), 0);
    assert_int_equal(s_stored_total(f, "conn-1", "private_to_public"), 0);
    assert_int_equal(s_rejected(f, "foreign_connection"), 4);
    assert_int_equal(s_rejected(f, "unknown_key"), 1);
    //  conn-1 still works for its own nodes.
    th_publish(&f->one.pub, "conn-1", 1, "ok", 2);
    th_expect(&f->one.pub, PROTO_STORED, &msg, 5000);
    proto_msg_clear(&msg);
    th_expect(&f->one.priv, PROTO_DELIVER, &msg, 5000);
    assert_memory_equal(msg.deliver.payload, "ok", 2);
    proto_msg_clear(&msg);
}

static void test_bindings_survive_restart(void **state)
{
    fixture_t *f = *state;
    th_pair_connect(&f->one, &f->broker);
    assert_int_equal(th_broker_stop(&f->broker, 9), 128 + 9);
    th_broker_start(&f->broker);
    th_client_reconnect(&f->one.pub);
    th_client_reconnect(&f->one.priv);
    th_hello(&f->one.priv, "node-private", PROTO_ROLE_PRIVATE, "conn-1", 0, 0);
    th_hello(&f->one.pub, "node-public", PROTO_ROLE_PUBLIC, "conn-1", 0, 0);
    proto_msg_t msg;
    th_publish(&f->one.priv, "conn-1", 1, "after", 5);
    th_expect(&f->one.priv, PROTO_STORED, &msg, 5000);
    proto_msg_clear(&msg);
    th_expect(&f->one.pub, PROTO_DELIVER, &msg, 5000);
    proto_msg_clear(&msg);
    //  A stranger still gets nothing of conn-1 after the restart.
    th_client_t stranger;
    th_client_init(&stranger, &f->broker);
    proto_msg_t reply;
    th_hello_reply(&stranger, "stranger", PROTO_ROLE_PRIVATE, &reply);
    assert_int_equal(reply.type, PROTO_WELCOME);
    proto_msg_clear(&reply);
    th_publish(&stranger, "conn-1", 2, "x", 1);
    th_expect_error(&stranger, 403, NULL);
    th_expect_silence(&stranger, 200);
    th_client_close(&stranger);
}

//  Sum of the failed-handshake counters, waited for (events are async).
static double s_handshakes_failed(fixture_t *f, double at_least)
{
    const char *reasons[] = {"protocol", "auth", "other"};
    double total = 0;
    for (int attempt = 0; attempt < 100; attempt++) {
        total = 0;
        for (int i = 0; i < 3; i++) {
            char labels[64];
            snprintf(labels, sizeof labels, "reason=\"%s\"", reasons[i]);
            total += th_metric(&f->broker, "twinsync_broker_handshakes_failed_total", labels);
        }
        if (total >= at_least)
            break;
        usleep(20 * 1000);
    }
    return total;
}

static void test_wrong_broker_key_and_plain_client(void **state)
{
    fixture_t *f = *state;
    //  A node configured with another broker's key: CURVE fails, no session.
    th_broker_t other = f->broker;
    char pub[41], sec[41];
    assert_int_equal(zmq_curve_keypair(pub, sec), 0);
    memcpy(other.server_key, pub, sizeof other.server_key);
    th_client_t lost;
    th_client_init(&lost, &other);
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_PING);
    th_send(&lost, &msg);
    assert_false(th_recv(&lost, &msg, 300));
    th_client_close(&lost);
    assert_true(s_handshakes_failed(f, 1) >= 1);

    //  A client without CURVE at all.
    void *ctx = zmq_ctx_new();
    void *plain = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(plain, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_connect(plain, f->broker.endpoint), 0);
    zmq_send(plain, "hello?", 6, ZMQ_DONTWAIT);
    assert_true(s_handshakes_failed(f, 2) >= 2);
    zmq_close(plain);
    zmq_ctx_term(ctx);
    assert_int_equal(th_metric(&f->broker, "twinsync_broker_peers", NULL), 0);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_unknown_key_is_not_public, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_public_key_cannot_be_private, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_join_wrong_token, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_join_expired, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_join_reused_token, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_foreign_connection, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_bindings_survive_restart, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_wrong_broker_key_and_plain_client, s_setup,
                                        s_teardown),
    };
    return TH_MAIN(tests);
}
