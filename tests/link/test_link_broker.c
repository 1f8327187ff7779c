/*  test_link_broker.c: two links (a public and a private node) against the
    real twinsync-broker binary (integration; path of the binary in argv[1]).

    Started and stopped through the broker tests' harness
    (tests/broker/broker_harness.h). Checks, with the broker's own rules:
    - INVITE -> INVITED, JOIN -> JOINED on both sides, through the links;
    - the key exchange of JOIN (kx, auth) reaches the public node in JOINED
      byte for byte, the private node never, and again from the broker's
      store after the broker restarted;
    - every message published arrives once, in order, and is CONSUMED;
    - the broker killed (SIGKILL) and restarted in the middle of a stream:
      the links find out (silence or ERROR 401), start new sessions, re-send
      what was not STORED, and the private node still applies every
      sequence exactly once, in order, with nothing lost.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <zmq.h>

#include "broker_harness.h"
#include "link_broker.h"
#include "proto_invite.h"

#define CONN       "it-1"
#define TOTAL      3000 //  Messages in the stream
#define KILL_AFTER 1000 //  STOREDs before the broker is killed

static const char *s_binary;

typedef struct {
    link_t *link;        //  The node's link
    uint64_t stored;     //  Highest STORED (public)
    uint64_t applied;    //  Highest applied in order (private)
    uint64_t duplicates; //  DELIVERs at or below applied (re-deliveries)
    uint64_t gaps;       //  DELIVERs above applied + 1 (must stay 0: the
                         //  broker delivers in order)
    bool invited;        //  INVITED seen
    bool joined;         //  JOINED seen
    unsigned kx_relayed; //  JOINEDs carrying JOIN's kx and auth intact
    unsigned kx_other;   //  JOINEDs carrying anything else (must stay 0 on
                         //  the public side: the broker relays opaquely)
    unsigned sessions;   //  Times the link reached READY
    unsigned errors;     //  s_on_error calls
} node_t;

static void s_on_state(link_state_t state, const char *reason, void *arg)
{
    node_t *node = arg;
    (void)reason;
    if (state == LINK_READY)
        node->sessions++;
}

static void s_on_stored(const char *conn, uint64_t seq, void *arg)
{
    node_t *node = arg;
    assert_string_equal(conn, CONN);
    node->stored = seq;
}

static int s_on_deliver(const char *conn, uint64_t seq, const uint8_t *payload, size_t size,
                        void *arg)
{
    node_t *node = arg;
    assert_string_equal(conn, CONN);
    if (seq <= node->applied) {
        node->duplicates++;
        return LINK_APPLIED;
    }
    if (seq != node->applied + 1) {
        node->gaps++;
        return LINK_REFUSED;
    }
    char expected[32];
    snprintf(expected, sizeof expected, "message %llu", (unsigned long long)seq);
    assert_int_equal(size, strlen(expected));
    assert_memory_equal(payload, expected, size);
    node->applied = seq;
    return LINK_APPLIED;
}

static void s_on_invited(const char *conn, uint64_t expires, void *arg)
{
    (void)expires;
    assert_string_equal(conn, CONN);
    ((node_t *)arg)->invited = true;
}

static uint8_t s_kx[32], s_auth[32]; //  What the private node sends in JOIN

static void s_on_joined(const proto_joined_t *joined, void *arg)
{
    node_t *node = arg;
    if (strcmp(joined->conn, CONN) == 0)
        node->joined = true;
    if (joined->has_kx && memcmp(joined->kx, s_kx, 32) == 0 &&
        memcmp(joined->auth, s_auth, 32) == 0)
        node->kx_relayed++;
    else
        node->kx_other++;
}

static void s_on_error(const link_error_t *error, void *arg)
{
    fprintf(stderr, "link error %u conn=%s: %s\n", (unsigned)error->code,
            error->conn ? error->conn : "-", error->text);
    ((node_t *)arg)->errors++;
}

static void s_node_new(node_t *node, void *ctx, const th_broker_t *broker, proto_role_t role,
                       const char *id, const char *public_z85, const char *secret_z85)
{
    memset(node, 0, sizeof *node);
    link_config_t config;
    link_config_defaults(&config);
    config.endpoint = broker->endpoint;
    config.node_id = id;
    config.role = role;
    assert_non_null(zmq_z85_decode(config.public_key, public_z85));
    assert_non_null(zmq_z85_decode(config.secret_key, secret_z85));
    assert_non_null(zmq_z85_decode(config.broker_key, broker->server_key));
    config.window = 64;
    config.heartbeat_ms = 200;
    config.backoff_min_ms = 50;
    config.backoff_max_ms = 400;
    config.retry_ms = 100;
    link_callbacks_t callbacks = {s_on_state,  s_on_stored, s_on_deliver, s_on_invited,
                                  s_on_joined, s_on_error,  NULL,         node};
    char err[256];
    node->link = link_new(ctx, &config, &callbacks, err, sizeof err);
    assert_non_null(node->link);
}

//  Runs both links until done() or timeout_ms; fails on the timeout.
static void s_drive(node_t *a, node_t *b, int64_t timeout_ms, bool (*done)(node_t *, node_t *),
                    void (*feed)(node_t *))
{
    int64_t end = th_now_ms() + timeout_ms;
    while (!done(a, b)) {
        if (th_now_ms() > end)
            fail_msg("timed out: stored %llu applied %llu", (unsigned long long)a->stored,
                     (unsigned long long)b->applied);
        if (feed)
            feed(a);
        int64_t now = th_now_ms();
        node_t *nodes[2] = {a, b};
        zmq_pollitem_t items[2];
        node_t *polled[2];
        int n = 0;
        long wait = 50;
        for (int i = 0; i < 2; i++) {
            link_tick(nodes[i]->link, now);
            long next = link_next_timeout_ms(nodes[i]->link, now);
            wait = next < wait ? next : wait;
            if (link_pollitem(nodes[i]->link, &items[n]))
                polled[n++] = nodes[i];
        }
        zmq_poll(n ? items : NULL, n, wait);
        now = th_now_ms();
        for (int i = 0; i < n; i++)
            if (items[i].revents & ZMQ_POLLIN)
                link_handle(polled[i]->link, now);
    }
}

static uint64_t s_next_seq = 1;

//  Offers the next messages while the window has room.
static void s_feed(node_t *pub)
{
    while (s_next_seq <= TOTAL && link_room(pub->link, CONN) > 0) {
        char text[32];
        int n = snprintf(text, sizeof text, "message %llu", (unsigned long long)s_next_seq);
        assert_int_equal(
            link_publish(pub->link, CONN, s_next_seq, (const uint8_t *)text, (size_t)n), LINK_OK);
        s_next_seq++;
    }
}

static bool s_joined(node_t *pub, node_t *priv)
{
    return pub->joined && priv->joined;
}

static bool s_invited(node_t *pub, node_t *priv)
{
    (void)priv;
    return pub->invited;
}

static bool s_kill_point(node_t *pub, node_t *priv)
{
    (void)priv;
    return pub->stored >= KILL_AFTER;
}

static bool s_all_applied(node_t *pub, node_t *priv)
{
    return pub->stored == TOTAL && priv->applied == TOTAL;
}

static void test_stream_across_broker_kill(void **state)
{
    (void)state;
    th_broker_t broker;
    th_broker_init(&broker, s_binary);
    th_broker_arg(&broker, "--broker.heartbeat_ms", "200");
    char pub_public[41], pub_secret[41], priv_public[41], priv_secret[41];
    assert_int_equal(zmq_curve_keypair(pub_public, pub_secret), 0);
    assert_int_equal(zmq_curve_keypair(priv_public, priv_secret), 0);
    th_broker_add_public_key(&broker, pub_public);
    th_broker_start(&broker);

    void *ctx = zmq_ctx_new();
    node_t pub, priv;
    s_node_new(&pub, ctx, &broker, PROTO_ROLE_PUBLIC, "it-public", pub_public, pub_secret);
    s_node_new(&priv, ctx, &broker, PROTO_ROLE_PRIVATE, "it-private", priv_public, priv_secret);

    //  INVITE, then JOIN with the token: both sides learn JOINED.
    uint8_t token[32], hash[32];
    for (size_t i = 0; i < sizeof token; i++)
        token[i] = (uint8_t)(i * 7 + 1);
    proto_invite_token_hash(token, hash);
    assert_int_equal(link_conn_add(pub.link, CONN, 0, 0), LINK_OK);
    assert_int_equal(link_invite(pub.link, CONN, hash, (uint64_t)time(NULL) + 600, "pub"), LINK_OK);
    s_drive(&pub, &priv, 10000, s_invited, NULL);
    for (size_t i = 0; i < sizeof s_kx; i++) {
        s_kx[i] = (uint8_t)(0xa0 ^ i);
        s_auth[i] = (uint8_t)(0x5c + i);
    }
    assert_int_equal(link_join(priv.link, CONN, token, s_kx, s_auth, "priv"), LINK_OK);
    s_drive(&pub, &priv, 10000, s_joined, NULL);
    assert_int_equal(link_state(pub.link), LINK_READY);
    assert_true(pub.kx_relayed >= 1);
    assert_int_equal(pub.kx_other, 0);
    assert_int_equal(priv.kx_relayed, 0); //  The private node gets no kx
    unsigned relayed = pub.kx_relayed;

    //  Stream; kill the broker in the middle; restart it on the same state.
    s_drive(&pub, &priv, 30000, s_kill_point, s_feed);
    unsigned sessions = pub.sessions + priv.sessions;
    assert_int_equal(th_broker_stop(&broker, SIGKILL), 128 + SIGKILL);
    th_broker_start(&broker);
    s_drive(&pub, &priv, 60000, s_all_applied, s_feed);

    printf("# sessions public=%u private=%u, re-deliveries=%llu\n", pub.sessions, priv.sessions,
           (unsigned long long)priv.duplicates);
    assert_true(pub.sessions + priv.sessions >= sessions + 2); //  both started over
    assert_int_equal(priv.gaps, 0);
    assert_int_equal(priv.applied, TOTAL);
    assert_int_equal(link_unstored(pub.link, CONN), 0);
    assert_int_equal(pub.errors + priv.errors, 0);
    //  The public node's new sessions got JOINED again, with kx and auth
    //  read back from the restarted broker's store.
    assert_true(pub.kx_relayed > relayed);
    assert_int_equal(pub.kx_other, 0);

    link_destroy(&pub.link);
    link_destroy(&priv.link);
    zmq_ctx_term(ctx);
    th_broker_stop(&broker, SIGTERM);
    th_broker_cleanup(&broker);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_link_broker PATH-OF-twinsync-broker\n");
        return 2;
    }
    s_binary = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_across_broker_kill),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
