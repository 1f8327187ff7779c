/*  test_broker_admission.c: who gets a session, and who can end one, on the
    real broker process with real sockets (issue 12; docs/security.md).

    - A node that still sets its own routing id (nodes did, up to issue 12)
      keeps it: another key connecting with the same routing id is never
      given it, reaches nothing and ends nothing (the broker has no
      ZMQ_ROUTER_HANDOVER any more).
    - A node that restarts (a new socket, the same key) gets in at once: its
      HELLO replaces its old session without waiting for the old one to
      fall silent, and what it had not consumed comes to the new socket.
    - Guests (keys bound to no connection) draw from their own budget:
      max_guests_per_address refuses the surplus from one address with 429,
      counted by reason, while the known keys still get their sessions; a
      guest's session ends guest_grace_ms after its HELLO.
    - The store's files are 0600 under umask 022.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "broker_harness.h"

typedef struct {
    th_broker_t broker;
    th_pair_t pair; //  Connection conn-a
} fixture_t;

static int s_setup_with(void **state, const char *const *args)
{
    fixture_t *f = calloc(1, sizeof *f);
    th_broker_init(&f->broker, th_binary());
    for (int i = 0; args && args[i]; i += 2)
        th_broker_arg(&f->broker, args[i], args[i + 1]);
    th_pair_prepare(&f->pair, &f->broker, "conn-a");
    th_broker_start(&f->broker);
    th_pair_connect(&f->pair, &f->broker);
    *state = f;
    return 0;
}

static int s_setup(void **state)
{
    return s_setup_with(state, NULL);
}

static int s_setup_guests(void **state)
{
    static const char *const args[] = {"--broker.max_guests_per_address",
                                       "3",
                                       "--broker.guest_grace_ms",
                                       "1000",
                                       "--broker.heartbeat_ms",
                                       "200",
                                       NULL};
    return s_setup_with(state, args);
}

static int s_teardown(void **state)
{
    fixture_t *f = *state;
    th_pair_close(&f->pair);
    th_broker_cleanup(&f->broker);
    free(f);
    return 0;
}

static double s_rejected(fixture_t *f, const char *reason)
{
    char labels[96];
    snprintf(labels, sizeof labels, "reason=\"%s\"", reason);
    return th_metric(&f->broker, "twinsync_broker_frames_rejected_total", labels);
}

//  Replaces client's socket by one that sets routing id rid, as nodes did
//  up to issue 12 (same keys).
static void s_reopen_with_rid(th_client_t *client, const char *rid)
{
    zmq_close(client->socket);
    client->socket = zmq_socket(client->ctx, ZMQ_DEALER);
    assert_non_null(client->socket);
    int linger = 0;
    assert_int_equal(zmq_setsockopt(client->socket, ZMQ_LINGER, &linger, sizeof linger), 0);
    assert_int_equal(zmq_setsockopt(client->socket, ZMQ_ROUTING_ID, rid, strlen(rid)), 0);
    assert_int_equal(
        zmq_setsockopt(client->socket, ZMQ_CURVE_SERVERKEY, client->broker->server_key, 40), 0);
    assert_int_equal(zmq_setsockopt(client->socket, ZMQ_CURVE_PUBLICKEY, client->public_key, 40),
                     0);
    assert_int_equal(zmq_setsockopt(client->socket, ZMQ_CURVE_SECRETKEY, client->secret_key, 40),
                     0);
    assert_int_equal(zmq_connect(client->socket, client->broker->endpoint), 0);
    client->last_sent_ms = th_now_ms();
}

static void s_send_empty(th_client_t *client, proto_type_t type)
{
    proto_msg_t msg;
    proto_msg_init(&msg, type);
    th_send(client, &msg);
}

static void s_hello_as(th_client_t *client, const char *node)
{
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_HELLO);
    msg.hello.node = node;
    msg.hello.role = PROTO_ROLE_PRIVATE;
    th_send(client, &msg);
}

static void test_old_node_routing_id_cannot_be_taken(void **state)
{
    fixture_t *f = *state;
    th_client_t *priv = &f->pair.priv;
    s_reopen_with_rid(priv, "node-private");
    th_hello(priv, "node-private", PROTO_ROLE_PRIVATE, "conn-a", 0, 0);

    //  An attacker: random key, the node's routing id, HELLO and PING every
    //  100 ms for 2 s.
    th_client_t attacker;
    th_client_init(&attacker, &f->broker);
    s_reopen_with_rid(&attacker, "node-private");
    int64_t end = th_now_ms() + 2000;
    uint64_t seq = 0;
    while (th_now_ms() < end) {
        s_hello_as(&attacker, "node-private");
        s_send_empty(&attacker, PROTO_PING);
        th_publish(&f->pair.pub, "conn-a", ++seq, "m", 1);
        proto_msg_t msg;
        th_expect(priv, PROTO_DELIVER, &msg, 2000);
        assert_int_equal(msg.deliver.seq, seq);
        proto_msg_clear(&msg);
        th_consumed(priv, "conn-a", seq);
        th_expect(&f->pair.pub, PROTO_STORED, &msg, 2000);
        proto_msg_clear(&msg);
        usleep(100 * 1000);
    }
    //  The attacker never got the routing id, so nothing at all.
    proto_msg_t msg;
    assert_false(th_recv(&attacker, &msg, 200));
    th_client_close(&attacker);
    th_sync(priv); //  the node's session is the one it had
    assert_int_equal(th_metric(&f->broker, "twinsync_broker_peers", NULL), 2);
    assert_true(seq >= 5);
}

static void test_restarted_node_replaces_its_session_at_once(void **state)
{
    fixture_t *f = *state;
    th_client_t *priv = &f->pair.priv;
    for (uint64_t seq = 1; seq <= 3; seq++)
        th_publish(&f->pair.pub, "conn-a", seq, "abc", 3);
    th_expect_stored(&f->pair.pub, "conn-a", 3);
    for (int i = 0; i < 3; i++) {
        proto_msg_t msg;
        th_expect(priv, PROTO_DELIVER, &msg, 2000);
        proto_msg_clear(&msg);
    }
    //  Restarted: a new socket with the same key, nothing consumed. Its HELLO
    //  comes long before the old session could fall silent (3 s here).
    int64_t start = th_now_ms();
    th_client_reconnect(priv);
    th_hello(priv, "node-private", PROTO_ROLE_PRIVATE, "conn-a", 0, 0);
    for (uint64_t seq = 1; seq <= 3; seq++) {
        proto_msg_t msg;
        th_expect(priv, PROTO_DELIVER, &msg, 2000);
        assert_int_equal(msg.deliver.seq, seq);
        proto_msg_clear(&msg);
    }
    assert_true(th_now_ms() - start < 3000);
    assert_int_equal(th_metric(&f->broker, "twinsync_broker_peers", NULL), 2); //  replaced
    assert_int_equal(s_rejected(f, "key_mismatch"), 0);
}

static void test_guests_budget_and_grace(void **state)
{
    fixture_t *f = *state;
    enum { STRANGERS = 5 };
    th_client_t strangers[STRANGERS];
    size_t welcomed = 0, refused = 0;
    for (int i = 0; i < STRANGERS; i++) {
        th_client_init(&strangers[i], &f->broker);
        proto_msg_t reply;
        th_hello_reply(&strangers[i], "stranger", PROTO_ROLE_PRIVATE, &reply);
        if (reply.type == PROTO_WELCOME)
            welcomed++;
        else if (reply.type == PROTO_ERROR && reply.error.code == 429)
            refused++;
        proto_msg_clear(&reply);
    }
    assert_int_equal(welcomed, 3); //  max_guests_per_address, all from 127.0.0.1
    assert_int_equal(refused, 2);
    assert_int_equal(s_rejected(f, "too_many_guests_from_address"), 2);
    assert_int_equal(th_metric(&f->broker, "twinsync_broker_guests", NULL), 3);

    //  The known keys restart meanwhile and get in.
    th_client_reconnect(&f->pair.pub);
    th_client_reconnect(&f->pair.priv);
    th_hello(&f->pair.pub, "node-public", PROTO_ROLE_PUBLIC, "conn-a", 0, 0);
    th_hello(&f->pair.priv, "node-private", PROTO_ROLE_PRIVATE, "conn-a", 0, 0);

    //  The guests keep pinging; their grace (1 s) ends anyway.
    int64_t end = th_now_ms() + 1600;
    while (th_now_ms() < end) {
        for (int i = 0; i < STRANGERS; i++)
            s_send_empty(&strangers[i], PROTO_PING);
        th_sync(&f->pair.pub); //  and so do the nodes (heartbeat 200 ms here)
        th_sync(&f->pair.priv);
        usleep(100 * 1000);
    }
    assert_int_equal(th_metric(&f->broker, "twinsync_broker_guests", NULL), 0);
    assert_true(th_metric(&f->broker, "twinsync_broker_guests_expired_total", NULL) >= 3);
    assert_int_equal(th_metric(&f->broker, "twinsync_broker_peers", NULL), 2); //  the nodes'
    for (int i = 0; i < STRANGERS; i++)
        th_client_close(&strangers[i]);
}

//  The integration test's own umask is 022 (set in main) and the broker
//  inherits it.
static void test_store_files_private(void **state)
{
    fixture_t *f = *state;
    th_publish(&f->pair.pub, "conn-a", 1, "x", 1);
    th_expect_stored(&f->pair.pub, "conn-a", 1);
    const char *names[] = {"broker.db", "broker.db-wal", "broker.db-shm"};
    for (int i = 0; i < 3; i++) {
        char path[256];
        snprintf(path, sizeof path, "%s/%s", f->broker.state_dir, names[i]);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        if ((st.st_mode & 0777) != 0600)
            fail_msg("%s has mode %03o, not 600", path, (unsigned)(st.st_mode & 0777));
    }
}

int main(int argc, char **argv)
{
    umask(022);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_old_node_routing_id_cannot_be_taken, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_restarted_node_replaces_its_session_at_once, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_guests_budget_and_grace, s_setup_guests, s_teardown),
        cmocka_unit_test_setup_teardown(test_store_files_private, s_setup, s_teardown),
    };
    return TH_MAIN(tests);
}
