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
      sequence exactly once, in order, with nothing lost;
    - link_publish's file flag reaches the broker, message by message in
      batched PUBLISHes: its file metrics count exactly the messages
      published as file data, and fall to 0 once they are consumed;
    - a stream of file chunks five times the broker's max_queue_bytes: the
      broker refuses it with 429 while the receiver holds back, the link
      retries by itself, and once the receiver consumes every chunk arrives
      once, in order, whole; no error reaches the application;
    - the broker's memory while 150 MiB of 512 KiB file chunks cross a
      connection whose receiver consumes, the links configured as the node
      does (window 256): its peak RSS grows by less than 40 MiB (about 22
      measured; 49 to 130 before the link bounded its window in bytes). Skipped
      under the sanitizers, whose shadow memory would be most of it.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <zmq.h>

#include "broker_harness.h"
#include "link_broker.h"
#include "proto_invite.h"

#define CONN       "it-1"
#define TOTAL      3000 //  Messages in the stream of the kill test
#define KILL_AFTER 1000 //  STOREDs before the broker is killed

static const char *s_binary;

//  The stream the public node feeds (s_feed) and the private node checks
//  (s_on_deliver): s_total messages; with s_chunk 0 message n is the text
//  "message n", else s_chunk bytes of a pattern of n; every s_file_every-th
//  one (0: none) is published as file data.
static uint64_t s_total = TOTAL;
static size_t s_chunk;
static uint32_t s_window = 64; //  config.window of the links
static unsigned s_file_every;
static uint8_t s_buf[512 * 1024];

//  Message seq of the stream into s_buf; returns its size.
static size_t s_payload(uint64_t seq)
{
    if (!s_chunk)
        return (size_t)snprintf((char *)s_buf, sizeof s_buf, "message %llu",
                                (unsigned long long)seq);
    for (size_t i = 0; i < s_chunk; i++)
        s_buf[i] = (uint8_t)(seq * 13 + i * 5);
    return s_chunk;
}

static bool s_is_file(uint64_t seq)
{
    return s_file_every && seq % s_file_every == 0;
}

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
    bool hold;           //  Private: apply but do not consume (LINK_LATER)
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
    size_t expected = s_payload(seq);
    assert_int_equal(size, expected);
    assert_memory_equal(payload, s_buf, size);
    node->applied = seq;
    return node->hold ? LINK_LATER : LINK_APPLIED;
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
    config.window = s_window;
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

//  Offers the next messages while the window has room, as one burst (the
//  node corks its outbox rows, so they leave batched).
static void s_feed(node_t *pub)
{
    link_cork(pub->link);
    while (s_next_seq <= s_total && link_room(pub->link, CONN) > 0) {
        size_t size = s_payload(s_next_seq);
        int rc = link_publish(pub->link, CONN, s_next_seq, s_buf, size, s_is_file(s_next_seq));
        if (rc == LINK_FULL)
            break;
        assert_int_equal(rc, LINK_OK);
        s_next_seq++;
    }
    link_uncork(pub->link);
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
    return pub->stored == s_total && priv->applied == s_total;
}

static int64_t s_until; //  Deadline of s_time_up

static bool s_time_up(node_t *pub, node_t *priv)
{
    (void)pub, (void)priv;
    return th_now_ms() >= s_until;
}

//  Runs both links for ms milliseconds.
static void s_run_for(node_t *pub, node_t *priv, int64_t ms)
{
    s_until = th_now_ms() + ms;
    s_drive(pub, priv, ms + 5000, s_time_up, s_feed);
}

//  A broker (extra argument pair name, value unless NULL), both links,
//  connection CONN invited and joined.
typedef struct {
    th_broker_t broker;
    void *ctx;
    node_t pub, priv;
} world_t;

static void s_world(world_t *w, const char *name, const char *value)
{
    th_broker_init(&w->broker, s_binary);
    th_broker_arg(&w->broker, "--broker.heartbeat_ms", "200");
    if (name)
        th_broker_arg(&w->broker, name, value);
    char pub_public[41], pub_secret[41], priv_public[41], priv_secret[41];
    assert_int_equal(zmq_curve_keypair(pub_public, pub_secret), 0);
    assert_int_equal(zmq_curve_keypair(priv_public, priv_secret), 0);
    th_broker_add_public_key(&w->broker, pub_public);
    th_broker_start(&w->broker);
    w->ctx = zmq_ctx_new();
    s_node_new(&w->pub, w->ctx, &w->broker, PROTO_ROLE_PUBLIC, "it-public", pub_public, pub_secret);
    s_node_new(&w->priv, w->ctx, &w->broker, PROTO_ROLE_PRIVATE, "it-private", priv_public,
               priv_secret);
    uint8_t token[32], hash[32];
    for (size_t i = 0; i < sizeof token; i++)
        token[i] = (uint8_t)(i * 11 + 3);
    proto_invite_token_hash(token, hash);
    assert_int_equal(link_conn_add(w->pub.link, CONN, 0, 0), LINK_OK);
    assert_int_equal(link_invite(w->pub.link, CONN, hash, (uint64_t)time(NULL) + 600, "pub"),
                     LINK_OK);
    s_drive(&w->pub, &w->priv, 10000, s_invited, NULL);
    assert_int_equal(link_join(w->priv.link, CONN, token, s_kx, s_auth, "priv"), LINK_OK);
    s_drive(&w->pub, &w->priv, 10000, s_joined, NULL);
}

static void s_world_end(world_t *w)
{
    link_destroy(&w->pub.link);
    link_destroy(&w->priv.link);
    zmq_ctx_term(w->ctx);
    th_broker_stop(&w->broker, SIGTERM);
    th_broker_cleanup(&w->broker);
}

#define P2P "connection=\"" CONN "\",direction=\"public_to_private\""

//  The flag of link_publish reaches the broker for every message, batched
//  or not: while the receiver holds everything, the broker's file metrics
//  count exactly the messages published as file data.
static void test_file_flags_reach_the_broker(void **state)
{
    (void)state;
    s_total = 60;
    s_chunk = 0;
    s_file_every = 3;
    s_next_seq = 1;
    world_t w;
    s_world(&w, NULL, NULL);
    w.priv.hold = true;
    s_drive(&w.pub, &w.priv, 20000, s_all_applied, s_feed);
    uint64_t file_bytes = 0, bytes = 0;
    for (uint64_t seq = 1; seq <= s_total; seq++) {
        size_t size = s_payload(seq);
        bytes += size;
        file_bytes += s_is_file(seq) ? size : 0;
    }
    assert_true(th_metric(&w.broker, "twinsync_broker_queue_bytes", P2P) == (double)bytes);
    assert_true(th_metric(&w.broker, "twinsync_broker_queue_file_bytes", P2P) ==
                (double)file_bytes);
    assert_true(th_metric(&w.broker, "twinsync_broker_queue_file_messages", P2P) ==
                (double)(s_total / 3));
    //  Consumed: nothing of either kind left.
    w.priv.hold = false;
    assert_int_equal(link_consume(w.priv.link, CONN, w.priv.applied), LINK_OK);
    s_run_for(&w.pub, &w.priv, 300);
    assert_true(th_metric(&w.broker, "twinsync_broker_queue_file_bytes", P2P) == 0);
    assert_true(th_metric(&w.broker, "twinsync_broker_queue_bytes", P2P) == 0);
    assert_int_equal(w.pub.errors + w.priv.errors, 0);
    s_world_end(&w);
}

//  Backpressure through the link: chunks of file data, five times what the
//  broker's queue may hold. While the receiver holds back, the queue fills
//  to max_queue_bytes and the broker refuses the rest (429); the link
//  retries on its own, and once the receiver consumes, every chunk arrives
//  exactly once, in order, whole. Nothing reaches the application as an
//  error: 429 is backpressure, not a failure.
static void test_file_stream_through_backpressure(void **state)
{
    (void)state;
    s_chunk = 128 * 1024;
    s_total = 40; //  5 MiB
    s_file_every = 1;
    s_next_seq = 1;
    world_t w;
    s_world(&w, "--broker.max_queue_bytes", "1048576"); //  8 chunks
    w.priv.hold = true;
    s_run_for(&w.pub, &w.priv, 1500);
    assert_true(th_metric(&w.broker, "twinsync_broker_queue_file_bytes", P2P) == 1048576);
    assert_true(th_metric(&w.broker, "twinsync_broker_queue_bytes", P2P) == 1048576);
    assert_true(
        th_metric(&w.broker, "twinsync_broker_frames_rejected_total", "reason=\"queue_full\"") > 0);
    assert_int_equal(w.pub.stored, 8);
    assert_int_equal(w.priv.applied, 8);

    w.priv.hold = false;
    assert_int_equal(link_consume(w.priv.link, CONN, w.priv.applied), LINK_OK);
    s_drive(&w.pub, &w.priv, 60000, s_all_applied, s_feed);
    assert_int_equal(w.priv.gaps, 0);
    assert_int_equal(w.priv.applied, s_total);
    assert_int_equal(link_unstored(w.pub.link, CONN), 0);
    assert_int_equal(w.pub.errors + w.priv.errors, 0);
    s_run_for(&w.pub, &w.priv, 300);
    assert_true(th_metric(&w.broker, "twinsync_broker_queue_file_bytes", P2P) == 0);
    assert_true(th_metric(&w.broker, "twinsync_broker_queue_stored_total", P2P) == s_total);
    s_world_end(&w);
}

//  VmRSS or VmHWM (field) of process pid in KiB, from /proc; -1 if unknown.
static long s_proc_kib(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *file = fopen(path, "r");
    long kib = -1;
    size_t len = strlen(field);
    while (file && fgets(line, sizeof line, file))
        if (strncmp(line, field, len) == 0 && line[len] == ':')
            kib = strtol(line + len + 1, NULL, 10);
    if (file)
        fclose(file);
    return kib;
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define S_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define S_SANITIZED 1
#endif
#endif

//  Large payloads do not grow the broker: what lies in its input for a
//  connection is bounded by the link's window in bytes, what lies in its
//  output by its own bound on unconsumed bytes, and nothing else holds a
//  payload for longer than one frame (the in-memory tail keeps none of this
//  size; the store's page cache is bounded).
static void test_broker_memory_with_file_stream(void **state)
{
    (void)state;
#ifdef S_SANITIZED
    skip();
#endif
    s_chunk = 512 * 1024;
    s_total = 300; //  150 MiB
    s_file_every = 1;
    s_next_seq = 1;
    s_window = 256; //  the node's
    world_t w;
    s_world(&w, NULL, NULL);
    long start = s_proc_kib(w.broker.pid, "VmRSS");
    assert_true(start > 0);
    s_drive(&w.pub, &w.priv, 240000, s_all_applied, s_feed);
    long peak = s_proc_kib(w.broker.pid, "VmHWM");
    printf("# broker RSS at start %ld KiB, peak %ld KiB, for %llu MiB of file data\n", start, peak,
           (unsigned long long)(s_total * s_chunk >> 20));
    assert_int_equal(w.priv.applied, s_total);
    assert_int_equal(w.priv.gaps, 0);
    assert_int_equal(w.pub.errors + w.priv.errors, 0);
    assert_true(peak - start < 40 * 1024);
    s_window = 64;
    s_world_end(&w);
}

static void test_stream_across_broker_kill(void **state)
{
    (void)state;
    s_total = TOTAL;
    s_chunk = 0;
    s_file_every = 0;
    s_next_seq = 1;
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
        cmocka_unit_test(test_file_flags_reach_the_broker),
        cmocka_unit_test(test_file_stream_through_backpressure),
        cmocka_unit_test(test_broker_memory_with_file_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
