/*  test_link.c: the node's broker link (link/link_broker.h) against a fake
    broker.

    The fake broker is a ROUTER socket in the test with a CURVE server key
    (no ZAP handler: libzmq then accepts every client key). The test plays
    the broker's side of docs/protocol.md by hand: it reads what the link
    sends and answers what the scenario needs. Time as the link sees it is
    synthetic (env.now), so heartbeats, deaths and backoffs are exact; only
    the sockets run in real time.

    Each test names the promise it checks: handshake, publish -> STORED,
    the file flag on every message of a batched PUBLISH and again after a
    re-send,
    credit and window, re-send after ERROR 401 and after a reconnect,
    DELIVER -> CONSUMED (now, later, refused), heartbeats, death and
    backoff, refusals (429, 422, 403, refused HELLO), INVITE / JOIN, bad
    frames, wrong broker key.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <zmq.h>

#include "link_broker.h"
#include "proto_buf.h"
#include "proto_msg.h"

#define MAX_EVENTS 64
#define HB         100 //  Heartbeat the fake broker announces (ms)

typedef struct {
    int type;       //  'S' stored, 'D' deliver, 'I' invited, 'J' joined, 'E' error, 's' state,
                    //  'B' behind (seq: stored, code: consumed)
    char conn[72];  //  Connection
    uint64_t seq;   //  Sequence, expires, error seq or state
    uint16_t code;  //  Error code
    bool local;     //  Error found by the link
    char text[256]; //  Payload, description, error text or state reason
} event_t;

typedef struct {
    void *ctx;                 //  ZeroMQ context
    void *router;              //  The fake broker
    char endpoint[64];         //  Where it listens
    uint8_t server_public[32]; //  Its CURVE key pair (raw)
    uint8_t server_secret[32];
    link_config_t config;       //  The link's configuration
    link_t *link;               //  Under test
    int64_t now;                //  Synthetic time given to the link
    event_t events[MAX_EVENTS]; //  Callbacks seen, in order
    size_t events_count;
    int deliver_answer; //  What s_on_deliver returns
    uint8_t rid[256];   //  Routing id the broker saw last
    size_t rid_size;    //  Its size
} env_t;

//  ---------------------------------------------------------------------------
//  Callbacks: each records an event

static event_t *s_event(env_t *env, int type, const char *conn)
{
    assert_true(env->events_count < MAX_EVENTS);
    event_t *e = &env->events[env->events_count++];
    memset(e, 0, sizeof *e);
    e->type = type;
    if (conn)
        snprintf(e->conn, sizeof e->conn, "%s", conn);
    return e;
}

static void s_on_state(link_state_t state, const char *reason, void *arg)
{
    event_t *e = s_event(arg, 's', NULL);
    e->seq = state;
    snprintf(e->text, sizeof e->text, "%s", reason);
}

static void s_on_stored(const char *conn, uint64_t seq, void *arg)
{
    s_event(arg, 'S', conn)->seq = seq;
}

static int s_on_deliver(const char *conn, uint64_t seq, const uint8_t *payload, size_t size,
                        void *arg)
{
    env_t *env = arg;
    event_t *e = s_event(env, 'D', conn);
    e->seq = seq;
    snprintf(e->text, sizeof e->text, "%.*s", (int)size, (const char *)payload);
    return env->deliver_answer;
}

static void s_on_invited(const char *conn, uint64_t expires, void *arg)
{
    s_event(arg, 'I', conn)->seq = expires;
}

static void s_on_joined(const proto_joined_t *joined, void *arg)
{
    snprintf(s_event(arg, 'J', joined->conn)->text, sizeof(((event_t *)0)->text), "%s",
             joined->description);
}

static void s_on_error(const link_error_t *error, void *arg)
{
    event_t *e = s_event(arg, 'E', error->conn);
    e->code = error->code;
    e->seq = error->seq;
    e->local = error->local;
    snprintf(e->text, sizeof e->text, "%s", error->text);
}

static void s_on_behind(const char *conn, uint64_t stored, uint64_t consumed, void *arg)
{
    event_t *e = s_event(arg, 'B', conn);
    e->seq = stored;
    e->code = (uint16_t)consumed;
    env_t *env = arg;
    //  Reported before LINK_READY: the application settles first.
    e->local = link_state(env->link) == LINK_READY;
}

//  The last event of type, or NULL.
static const event_t *s_last(const env_t *env, int type)
{
    for (size_t i = env->events_count; i > 0; i--)
        if (env->events[i - 1].type == type)
            return &env->events[i - 1];
    return NULL;
}

static size_t s_count(const env_t *env, int type)
{
    size_t n = 0;
    for (size_t i = 0; i < env->events_count; i++)
        n += env->events[i].type == type;
    return n;
}

//  ---------------------------------------------------------------------------
//  The fake broker

static void s_keypair(uint8_t public_key[32], uint8_t secret_key[32])
{
    char pub[41], sec[41];
    assert_int_equal(zmq_curve_keypair(pub, sec), 0);
    assert_non_null(zmq_z85_decode(public_key, pub));
    assert_non_null(zmq_z85_decode(secret_key, sec));
}

static int64_t s_real_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

//  Lets the link read what is waiting for up to ms of real time, or until
//  it has handled at least one message when until_one is true.
static void s_run_link(env_t *env, int ms, bool until_one)
{
    int64_t end = s_real_ms() + ms;
    while (s_real_ms() < end) {
        zmq_pollitem_t item;
        if (!link_pollitem(env->link, &item))
            return;
        zmq_poll(&item, 1, 10);
        if ((item.revents & ZMQ_POLLIN) && link_handle(env->link, env->now) > 0 && until_one)
            return;
    }
}

//  Receives the next message the link sent within 2 s, decoded; fails the
//  test on a timeout.
static void s_recv(env_t *env, proto_msg_t *msg)
{
    zmq_pollitem_t item = {env->router, 0, ZMQ_POLLIN, 0};
    assert_int_equal(zmq_poll(&item, 1, 2000), 1);
    int n = zmq_recv(env->router, env->rid, sizeof env->rid, 0);
    assert_true(n > 0 && (size_t)n <= sizeof env->rid);
    env->rid_size = (size_t)n;
    static uint8_t frame[2 << 20]; //  the decoded message keeps its own copy
    n = zmq_recv(env->router, frame, sizeof frame, 0);
    assert_true(n > 0);
    assert_int_equal(proto_msg_decode(frame, (size_t)n, NULL, msg, NULL), PROTO_OK);
}

//  Receives the next message and checks its type.
static void s_expect(env_t *env, proto_type_t type, proto_msg_t *msg)
{
    s_recv(env, msg);
    if (msg->type != type)
        fail_msg("expected %s, got %s", proto_type_name(type), proto_type_name(msg->type));
}

//  True when the link sends nothing for ms of real time.
static bool s_quiet(env_t *env, int ms)
{
    zmq_pollitem_t item = {env->router, 0, ZMQ_POLLIN, 0};
    return zmq_poll(&item, 1, ms) == 0;
}

//  Sends msg to the link and lets the link handle it.
static void s_send(env_t *env, const proto_msg_t *msg)
{
    proto_buf_t buf;
    proto_buf_init(&buf);
    assert_int_equal(proto_msg_encode(msg, NULL, &buf, NULL), PROTO_OK);
    assert_int_equal(zmq_send(env->router, env->rid, env->rid_size, ZMQ_SNDMORE),
                     (int)env->rid_size);
    assert_int_equal(zmq_send(env->router, buf.data, buf.size, 0), (int)buf.size);
    proto_buf_release(&buf);
    s_run_link(env, 2000, true);
}

//  WELCOME with the given credit, max_frame and batch size (0: no batches).
static void s_send_welcome_as(env_t *env, uint32_t credit, uint32_t max_frame, uint32_t batch)
{
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_WELCOME);
    msg.welcome = (proto_welcome_t){"fake-broker", HB, max_frame, credit, NULL, 0, batch};
    s_send(env, &msg);
}

static void s_send_welcome(env_t *env, uint32_t credit)
{
    s_send_welcome_as(env, credit, 1 << 20, 0);
}

static void s_send_ack(env_t *env, proto_type_t type, const char *conn, uint64_t seq)
{
    proto_msg_t msg;
    proto_msg_init(&msg, type);
    msg.stored = (proto_ack_t){conn, seq};
    s_send(env, &msg);
}

static void s_send_error(env_t *env, uint16_t code, const char *conn, bool has_seq, uint64_t seq)
{
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_ERROR);
    msg.error = (proto_msg_error_t){code, "refused by the fake broker", conn, has_seq, seq};
    s_send(env, &msg);
}

static void s_send_empty(env_t *env, proto_type_t type)
{
    proto_msg_t msg;
    proto_msg_init(&msg, type);
    s_send(env, &msg);
}

//  ---------------------------------------------------------------------------
//  Set-up

static int s_setup(void **state)
{
    static env_t env;
    memset(&env, 0, sizeof env);
    env.ctx = zmq_ctx_new();
    env.router = zmq_socket(env.ctx, ZMQ_ROUTER);
    s_keypair(env.server_public, env.server_secret);
    int one = 1, zero = 0;
    zmq_setsockopt(env.router, ZMQ_CURVE_SERVER, &one, sizeof one);
    zmq_setsockopt(env.router, ZMQ_CURVE_SECRETKEY, env.server_secret, 32);
    zmq_setsockopt(env.router, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_bind(env.router, "tcp://127.0.0.1:*"), 0);
    size_t len = sizeof env.endpoint;
    zmq_getsockopt(env.router, ZMQ_LAST_ENDPOINT, env.endpoint, &len);

    link_config_defaults(&env.config);
    env.config.endpoint = env.endpoint;
    env.config.node_id = "node-a";
    env.config.role = PROTO_ROLE_PUBLIC;
    s_keypair(env.config.public_key, env.config.secret_key);
    memcpy(env.config.broker_key, env.server_public, 32);
    env.config.window = 4;
    env.config.heartbeat_ms = HB;
    env.config.backoff_min_ms = 50;
    env.config.backoff_max_ms = 400;
    env.config.retry_ms = 300;
    env.now = 1000000;
    env.deliver_answer = LINK_APPLIED;
    *state = &env;
    return 0;
}

static int s_teardown(void **state)
{
    env_t *env = *state;
    link_destroy(&env->link);
    zmq_close(env->router);
    zmq_ctx_term(env->ctx);
    return 0;
}

static void s_new_link(env_t *env)
{
    static const link_callbacks_t callbacks = {s_on_state,  s_on_stored, s_on_deliver, s_on_invited,
                                               s_on_joined, s_on_error,  s_on_behind,  NULL};
    link_callbacks_t cb = callbacks;
    cb.arg = env;
    char err[256];
    env->link = link_new(env->ctx, &env->config, &cb, err, sizeof err);
    assert_non_null(env->link);
}

//  A link with connection c1 in session with the fake broker (credit,
//  max_frame and batch size given).
static void s_ready_as(env_t *env, uint32_t credit, uint32_t max_frame, uint32_t batch)
{
    s_new_link(env);
    assert_int_equal(link_conn_add(env->link, "c1", 0, 0), LINK_OK);
    link_tick(env->link, env->now);
    proto_msg_t msg;
    s_expect(env, PROTO_HELLO, &msg);
    proto_msg_clear(&msg);
    s_send_welcome_as(env, credit, max_frame, batch);
    assert_int_equal(link_state(env->link), LINK_READY);
}

//  The same with the defaults: 1 MiB frames, no batches.
static void s_ready(env_t *env, uint32_t credit)
{
    s_ready_as(env, credit, 1 << 20, 0);
}

static void s_publish_bytes(env_t *env, uint64_t seq, const uint8_t *data, size_t size)
{
    assert_int_equal(link_publish(env->link, "c1", seq, data, size, false), LINK_OK);
}

static void s_publish(env_t *env, const char *conn, uint64_t seq, const char *text)
{
    assert_int_equal(link_publish(env->link, conn, seq, (const uint8_t *)text, strlen(text), false),
                     LINK_OK);
}

//  Receives a PUBLISH and checks conn, seq and payload.
static void s_expect_publish(env_t *env, const char *conn, uint64_t seq, const char *text)
{
    proto_msg_t msg;
    s_expect(env, PROTO_PUBLISH, &msg);
    assert_string_equal(msg.publish.conn, conn);
    assert_int_equal(msg.publish.seq, seq);
    assert_int_equal(msg.publish.payload_size, strlen(text));
    assert_memory_equal(msg.publish.payload, text, strlen(text));
    proto_msg_clear(&msg);
}

//  ---------------------------------------------------------------------------
//  Tests

static void test_handshake(void **state)
{
    env_t *env = *state;
    s_new_link(env);
    assert_int_equal(link_conn_add(env->link, "c1", 3, 7), LINK_OK);
    assert_int_equal(link_conn_add(env->link, "c2", 0, 0), LINK_OK);
    assert_int_equal(link_conn_add(env->link, "bad id!", 0, 0), LINK_E_INVALID);
    assert_int_equal(link_state(env->link), LINK_DOWN);
    assert_int_equal(link_next_timeout_ms(env->link, env->now), 0);
    link_tick(env->link, env->now);
    assert_int_equal(link_state(env->link), LINK_HELLO);

    proto_msg_t msg;
    s_expect(env, PROTO_HELLO, &msg);
    //  The link sets no routing id of its own (issue 12: a fixed one, the
    //  node id, let anyone knowing the name take it over): the ROUTER made
    //  one, which ZeroMQ starts with a zero byte.
    assert_true(env->rid_size == 5 && env->rid[0] == 0);
    assert_string_equal(msg.hello.node, "node-a");
    assert_int_equal(msg.hello.role, PROTO_ROLE_PUBLIC);
    assert_int_equal(msg.hello.conns_count, 2);
    assert_string_equal(msg.hello.conns[0].conn, "c1");
    assert_int_equal(msg.hello.conns[0].stored, 3);
    assert_int_equal(msg.hello.conns[0].consumed, 7);
    assert_string_equal(msg.hello.conns[1].conn, "c2");
    assert_int_equal(msg.hello.batch, 64); //  the default: it takes batched DELIVERs
    proto_msg_clear(&msg);

    s_send_welcome(env, 16);
    assert_int_equal(link_state(env->link), LINK_READY);
    assert_int_equal(link_heartbeat_ms(env->link), HB);
    const event_t *e = s_last(env, 's');
    assert_int_equal(e->seq, LINK_READY);
    assert_non_null(strstr(e->text, "fake-broker"));
    //  Seeded positions hold: seq 3 is already stored.
    assert_int_equal(link_publish(env->link, "c1", 3, (const uint8_t *)"x", 1, false), LINK_E_SEQ);
}

//  A node restored from an older backup: HELLO reports the next seq the
//  application assigns; WELCOME lists the broker's positions past it. The
//  link counts them as STORED / consumed, tells the application before it is
//  READY, and takes new sequences only above them.
static void test_behind_positions_in_welcome(void **state)
{
    env_t *env = *state;
    s_new_link(env);
    assert_int_equal(link_conn_add(env->link, "c1", 2, 4), LINK_OK);
    assert_int_equal(link_conn_set_next(env->link, "c1", 3), LINK_OK);
    assert_int_equal(link_conn_set_next(env->link, "nope", 3), LINK_E_UNKNOWN_CONN);
    s_publish(env, "c1", 3, "old three");
    link_tick(env->link, env->now);
    proto_msg_t msg;
    s_expect(env, PROTO_HELLO, &msg);
    assert_int_equal(msg.hello.conns[0].next, 4); //  raised by the publish of 3
    proto_msg_clear(&msg);
    proto_conn_state_t behind = {"c1", 9, 6, 0};
    proto_msg_init(&msg, PROTO_WELCOME);
    msg.welcome = (proto_welcome_t){"fake-broker", HB, 1 << 20, 16, &behind, 1, 0};
    s_send(env, &msg);
    assert_int_equal(link_state(env->link), LINK_READY);
    const event_t *e = s_last(env, 'B');
    assert_non_null(e);
    assert_string_equal(e->conn, "c1");
    assert_int_equal(e->seq, 9);
    assert_int_equal(e->code, 6);
    assert_false(e->local);
    //  seq 3 counts as stored (the broker holds up to 9): not sent again.
    assert_int_equal(link_unstored(env->link, "c1"), 0);
    assert_int_equal(link_publish(env->link, "c1", 9, (const uint8_t *)"x", 1, false), LINK_E_SEQ);
    s_publish(env, "c1", 10, "ten");
    s_expect_publish(env, "c1", 10, "ten");
    //  The next HELLO carries the settled positions.
    s_send_error(env, PROTO_ERR_NOT_HELLO, NULL, false, 0);
    s_expect(env, PROTO_HELLO, &msg);
    assert_int_equal(msg.hello.conns[0].stored, 9);
    assert_int_equal(msg.hello.conns[0].consumed, 6);
    assert_int_equal(msg.hello.conns[0].next, 11);
    proto_msg_clear(&msg);
}

//  With a broker that takes batches (WELCOME.batch), a corked burst leaves
//  as PUBLISHes of consecutive messages, at most a quarter of the window
//  each; an uncorked publish goes at once, alone. A batched DELIVER reaches
//  the application message by message, in order.
static void test_batches(void **state)
{
    env_t *env = *state;
    env->config.window = 16;
    s_ready_as(env, 16, 1 << 20, 8);
    proto_msg_t msg;

    link_cork(env->link);
    for (uint64_t seq = 1; seq <= 6; seq++) {
        char text[8];
        snprintf(text, sizeof text, "m%llu", (unsigned long long)seq);
        s_publish(env, "c1", seq, text);
    }
    assert_true(s_quiet(env, 100)); //  corked: nothing yet
    link_uncork(env->link);
    uint64_t expect = 1;
    for (int frame = 0; frame < 2; frame++) {
        s_expect(env, PROTO_PUBLISH, &msg);
        assert_int_equal(msg.publish.seq, expect);
        assert_int_equal(msg.publish.more_count, frame == 0 ? 3 : 1); //  16 / 4, then the rest
        assert_memory_equal(msg.publish.payload, frame == 0 ? "m1" : "m5", 2);
        for (size_t i = 0; i < msg.publish.more_count; i++) {
            char text[8];
            snprintf(text, sizeof text, "m%llu", (unsigned long long)(expect + 1 + i));
            assert_int_equal(msg.publish.more[i].payload_size, strlen(text));
            assert_memory_equal(msg.publish.more[i].payload, text, strlen(text));
        }
        expect += 1 + msg.publish.more_count;
        proto_msg_clear(&msg);
    }
    s_publish(env, "c1", 7, "m7");
    s_expect(env, PROTO_PUBLISH, &msg);
    assert_int_equal(msg.publish.seq, 7);
    assert_int_equal(msg.publish.more_count, 0);
    proto_msg_clear(&msg);

    proto_item_t more[2] = {{(const uint8_t *)"two", 3, 0}, {(const uint8_t *)"three", 5, 0}};
    proto_msg_init(&msg, PROTO_DELIVER);
    msg.deliver = (proto_data_t){"c1", 1, (const uint8_t *)"one", 3, more, 2, 0};
    s_send(env, &msg);
    assert_int_equal(s_count(env, 'D'), 3);
    static const char *const texts[] = {"one", "two", "three"};
    for (size_t i = 0, d = 0; i < env->events_count; i++) {
        if (env->events[i].type != 'D')
            continue;
        assert_int_equal(env->events[i].seq, d + 1);
        assert_string_equal(env->events[i].text, texts[d]);
        d++;
    }
}

//  A broker that takes frames far larger than the link's own limit: a
//  batch is cut at the smaller of the two, so every PUBLISH still encodes.
static void test_batch_within_the_link_frame(void **state)
{
    env_t *env = *state;
    env->config.window = 32; //  a quarter: 8 messages a frame by count
    s_ready_as(env, 32, 64u << 20, 256);
    proto_msg_t msg;
    static uint8_t payload[300 * 1024];
    link_cork(env->link);
    for (uint64_t seq = 1; seq <= 8; seq++)
        s_publish_bytes(env, seq, payload, sizeof payload);
    link_uncork(env->link);
    uint64_t next = 1;
    while (next <= 8) {
        s_expect(env, PROTO_PUBLISH, &msg);
        assert_int_equal(msg.publish.seq, next);
        size_t bytes = PROTO_DATA_OVERHEAD + msg.publish.payload_size;
        for (size_t i = 0; i < msg.publish.more_count; i++)
            bytes += PROTO_ITEM_OVERHEAD + msg.publish.more[i].payload_size;
        assert_true(bytes <= env->config.limits.max_frame);
        assert_true(msg.publish.more_count >= 1); //  still batched
        next += 1 + msg.publish.more_count;
        proto_msg_clear(&msg);
    }
    assert_null(s_last(env, 'E')); //  no PUBLISH failed to encode
}

//  link_publish's file flag goes out with its message: on the first
//  message of a PUBLISH and on each batched one, whatever their mix, alone
//  when uncorked, and the same again when a new session sends them again.
static void test_file_flag_in_publish(void **state)
{
    env_t *env = *state;
    env->config.window = 16;
    s_ready_as(env, 16, 1 << 20, 8);
    static const bool file[9] = {false, true, false, false, true, true, false, true, true};
    link_cork(env->link);
    for (uint64_t seq = 1; seq <= 6; seq++) {
        char text[8];
        snprintf(text, sizeof text, "m%llu", (unsigned long long)seq);
        assert_int_equal(
            link_publish(env->link, "c1", seq, (const uint8_t *)text, strlen(text), file[seq]),
            LINK_OK);
    }
    link_uncork(env->link);
    for (int round = 0; round < 2; round++) {
        uint64_t expect = 1;
        while (expect <= 6) {
            proto_msg_t msg;
            s_expect(env, PROTO_PUBLISH, &msg);
            assert_int_equal(msg.publish.seq, expect);
            assert_int_equal(msg.publish.file, file[expect]);
            for (size_t i = 0; i < msg.publish.more_count; i++)
                assert_int_equal(msg.publish.more[i].file, file[expect + 1 + i]);
            if (round == 0)
                assert_true(msg.publish.more_count > 0); //  batched
            expect += 1 + msg.publish.more_count;
            proto_msg_clear(&msg);
        }
        if (round == 1)
            break;
        //  The broker forgets the session: all six go again, flags and all.
        s_send_error(env, PROTO_ERR_NOT_HELLO, NULL, false, 0);
        proto_msg_t hello;
        s_expect(env, PROTO_HELLO, &hello);
        proto_msg_clear(&hello);
        s_send_welcome_as(env, 16, 1 << 20, 8);
    }
    //  Uncorked, one at a time: a file chunk, then a record.
    for (uint64_t seq = 7; seq <= 8; seq++) {
        assert_int_equal(link_publish(env->link, "c1", seq, (const uint8_t *)"x", 1, seq == 7),
                         LINK_OK);
        proto_msg_t msg;
        s_expect(env, PROTO_PUBLISH, &msg);
        assert_int_equal(msg.publish.seq, seq);
        assert_int_equal(msg.publish.more_count, 0);
        assert_int_equal(msg.publish.file, seq == 7 ? PROTO_DATA_FILE : PROTO_DATA_RECORD);
        proto_msg_clear(&msg);
    }
}

static void test_publish_stored(void **state)
{
    env_t *env = *state;
    s_ready(env, 16);
    s_publish(env, "c1", 1, "one");
    s_publish(env, "c1", 2, "two");
    s_publish(env, "c1", 3, "three");
    s_expect_publish(env, "c1", 1, "one");
    s_expect_publish(env, "c1", 2, "two");
    s_expect_publish(env, "c1", 3, "three");
    assert_int_equal(link_unstored(env->link, "c1"), 3);

    s_send_ack(env, PROTO_STORED, "c1", 2); //  cumulative: 1 and 2
    const event_t *e = s_last(env, 'S');
    assert_non_null(e);
    assert_string_equal(e->conn, "c1");
    assert_int_equal(e->seq, 2);
    assert_int_equal(link_unstored(env->link, "c1"), 1);
    s_send_ack(env, PROTO_STORED, "c1", 2); //  a duplicate STORED changes nothing
    assert_int_equal(s_count(env, 'S'), 1);
    s_send_ack(env, PROTO_STORED, "c1", 3);
    assert_int_equal(link_unstored(env->link, "c1"), 0);
    assert_int_equal(s_count(env, 'S'), 2);

    assert_int_equal(link_publish(env->link, "c1", 3, (const uint8_t *)"x", 1, false), LINK_E_SEQ);
    assert_int_equal(link_publish(env->link, "nope", 9, (const uint8_t *)"x", 1, false),
                     LINK_E_UNKNOWN_CONN);
    assert_true(s_quiet(env, 100));
}

static void test_window_and_credit(void **state)
{
    env_t *env = *state;
    s_ready(env, 2); //  the broker allows 2 un-STORED; the window holds 4
    for (uint64_t seq = 1; seq <= 4; seq++) {
        char text[8];
        snprintf(text, sizeof text, "m%llu", (unsigned long long)seq);
        s_publish(env, "c1", seq, text);
    }
    assert_int_equal(link_room(env->link, "c1"), 0);
    assert_int_equal(link_publish(env->link, "c1", 5, (const uint8_t *)"m5", 2, false), LINK_FULL);
    s_expect_publish(env, "c1", 1, "m1");
    s_expect_publish(env, "c1", 2, "m2");
    assert_true(s_quiet(env, 150)); //  credit exhausted
    s_send_ack(env, PROTO_STORED, "c1", 1);
    s_expect_publish(env, "c1", 3, "m3");
    assert_true(s_quiet(env, 100));
    assert_int_equal(link_room(env->link, "c1"), 1);
    s_publish(env, "c1", 5, "m5");
    s_send_ack(env, PROTO_STORED, "c1", 3);
    s_expect_publish(env, "c1", 4, "m4");
    s_expect_publish(env, "c1", 5, "m5");
}

//  window_bytes bounds what the link holds in payload bytes: below it any
//  message is taken (however large), at or above it none (LINK_FULL, no
//  room) until STORED frees bytes.
static void test_window_bytes(void **state)
{
    env_t *env = *state;
    env->config.window = 16;
    env->config.window_bytes = 1000;
    s_ready(env, 16);
    static uint8_t big[1500];
    assert_int_equal(link_room(env->link, "c1"), 16);
    s_publish_bytes(env, 1, big, 1500); //  larger than the bound: taken alone
    assert_int_equal(link_room(env->link, "c1"), 0);
    assert_int_equal(link_publish(env->link, "c1", 2, big, 10, true), LINK_FULL);
    s_send_ack(env, PROTO_STORED, "c1", 1);
    assert_int_equal(link_room(env->link, "c1"), 16);
    s_publish_bytes(env, 2, big, 600);
    s_publish_bytes(env, 3, big, 600); //  600 held < 1000: taken, 1200 now
    assert_int_equal(link_room(env->link, "c1"), 0);
    assert_int_equal(link_publish(env->link, "c1", 4, big, 1, false), LINK_FULL);
    s_send_ack(env, PROTO_STORED, "c1", 2);
    assert_true(link_room(env->link, "c1") > 0);
    s_publish_bytes(env, 4, big, 1);
    proto_msg_t msg;
    for (uint64_t seq = 1; seq <= 4; seq++) {
        s_expect(env, PROTO_PUBLISH, &msg);
        assert_int_equal(msg.publish.seq, seq);
        proto_msg_clear(&msg);
    }
    assert_true(s_quiet(env, 50));
}

static void test_resend_after_401(void **state)
{
    env_t *env = *state;
    s_ready(env, 16);
    s_publish(env, "c1", 1, "one");
    s_publish(env, "c1", 2, "two");
    s_expect_publish(env, "c1", 1, "one");
    s_expect_publish(env, "c1", 2, "two");
    s_send_ack(env, PROTO_STORED, "c1", 1);

    //  The broker restarted and forgot us: one HELLO, however many 401s.
    s_send_error(env, PROTO_ERR_NOT_HELLO, NULL, false, 0);
    s_send_error(env, PROTO_ERR_NOT_HELLO, NULL, false, 0);
    assert_int_equal(link_state(env->link), LINK_HELLO);
    proto_msg_t msg;
    s_expect(env, PROTO_HELLO, &msg);
    assert_int_equal(msg.hello.conns[0].stored, 1);
    proto_msg_clear(&msg);
    assert_true(s_quiet(env, 100)); //  nothing before WELCOME, and no second HELLO
    s_send_welcome(env, 16);
    s_expect_publish(env, "c1", 2, "two");
    assert_true(s_quiet(env, 100));
    assert_int_equal(s_count(env, 'E'), 0);
}

static void test_deliver_consumed(void **state)
{
    env_t *env = *state;
    s_ready(env, 16);
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_DELIVER);
    msg.deliver = (proto_data_t){"c1", 8, (const uint8_t *)"hello", 5, NULL, 0, 0};
    s_send(env, &msg);
    const event_t *e = s_last(env, 'D');
    assert_non_null(e);
    assert_string_equal(e->conn, "c1");
    assert_int_equal(e->seq, 8);
    assert_string_equal(e->text, "hello");
    proto_msg_t ack;
    s_expect(env, PROTO_CONSUMED, &ack);
    assert_string_equal(ack.consumed.conn, "c1");
    assert_int_equal(ack.consumed.seq, 8);
    proto_msg_clear(&ack);

    //  Duplicates are the application's: it answers APPLIED again.
    s_send(env, &msg);
    s_expect(env, PROTO_CONSUMED, &ack);
    assert_int_equal(ack.consumed.seq, 8);
    proto_msg_clear(&ack);

    //  Applied later: CONSUMED only when the application says so.
    env->deliver_answer = LINK_LATER;
    msg.deliver.seq = 9;
    s_send(env, &msg);
    assert_true(s_quiet(env, 100));
    assert_int_equal(link_consume(env->link, "c1", 9), LINK_OK);
    s_expect(env, PROTO_CONSUMED, &ack);
    assert_int_equal(ack.consumed.seq, 9);
    proto_msg_clear(&ack);

    //  Refused (a payload that does not open): no answer at all.
    env->deliver_answer = LINK_REFUSED;
    msg.deliver.seq = 10;
    s_send(env, &msg);
    assert_true(s_quiet(env, 100));

    //  The next session reports the highest applied sequence.
    s_send_error(env, PROTO_ERR_NOT_HELLO, NULL, false, 0);
    s_expect(env, PROTO_HELLO, &ack);
    assert_int_equal(ack.hello.conns[0].consumed, 9);
    proto_msg_clear(&ack);
}

//  CONSUMED is cumulative: what is applied in one burst of input is
//  answered by one CONSUMED per connection at the end of the burst, or
//  every half credit (the default credit is 64: every 32) so that the
//  broker's window never closes.
static void test_consumed_once_per_burst(void **state)
{
    env_t *env = *state;
    s_ready(env, 16);
    proto_buf_t buf;
    proto_buf_init(&buf);
    for (uint64_t seq = 1; seq <= 40; seq++) {
        proto_msg_t msg;
        proto_msg_init(&msg, PROTO_DELIVER);
        msg.deliver = (proto_data_t){"c1", seq, (const uint8_t *)"x", 1, NULL, 0, 0};
        assert_int_equal(proto_msg_encode(&msg, NULL, &buf, NULL), PROTO_OK);
        zmq_send(env->router, env->rid, env->rid_size, ZMQ_SNDMORE);
        zmq_send(env->router, buf.data, buf.size, 0);
    }
    proto_buf_release(&buf);
    struct timespec pause = {0, 200 * 1000 * 1000}; //  let all 40 reach the link's socket
    nanosleep(&pause, NULL);
    assert_int_equal(link_handle(env->link, env->now), 40); //  one burst
    assert_int_equal(s_count(env, 'D'), 40);
    proto_msg_t ack;
    s_expect(env, PROTO_CONSUMED, &ack);
    assert_int_equal(ack.consumed.seq, 32); //  half the credit owed
    proto_msg_clear(&ack);
    s_expect(env, PROTO_CONSUMED, &ack);
    assert_int_equal(ack.consumed.seq, 40); //  the end of the burst
    proto_msg_clear(&ack);
    assert_true(s_quiet(env, 100));
}

static void test_heartbeat(void **state)
{
    env_t *env = *state;
    s_ready(env, 16);
    //  Idle for a heartbeat: PING.
    assert_int_equal(link_next_timeout_ms(env->link, env->now), HB);
    env->now += HB - 1;
    link_tick(env->link, env->now);
    assert_true(s_quiet(env, 50));
    env->now += 1;
    link_tick(env->link, env->now);
    proto_msg_t msg;
    s_expect(env, PROTO_PING, &msg);
    s_send_empty(env, PROTO_PONG);
    //  The broker's PING: PONG.
    s_send_empty(env, PROTO_PING);
    s_expect(env, PROTO_PONG, &msg);
    assert_int_equal(link_state(env->link), LINK_READY);
}

static void test_death_and_backoff(void **state)
{
    env_t *env = *state;
    s_ready(env, 16);
    s_publish(env, "c1", 1, "one");
    s_expect_publish(env, "c1", 1, "one");

    //  Silent for 3 heartbeats: dead, down, reopen after 50 ms.
    env->now += 3 * HB - 1;
    link_tick(env->link, env->now);
    assert_int_equal(link_state(env->link), LINK_READY);
    proto_msg_t msg;
    s_expect(env, PROTO_PING, &msg); //  idle meanwhile: it pinged
    env->now += 1;
    link_tick(env->link, env->now);
    assert_int_equal(link_state(env->link), LINK_DOWN);
    assert_false(link_pollitem(env->link, &(zmq_pollitem_t){0}));
    assert_non_null(strstr(s_last(env, 's')->text, "silent"));

    int64_t expected_backoff[] = {50, 100, 200, 400, 400};
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(link_next_timeout_ms(env->link, env->now), expected_backoff[i]);
        env->now += expected_backoff[i];
        link_tick(env->link, env->now);
        assert_int_equal(link_state(env->link), LINK_HELLO);
        s_expect(env, PROTO_HELLO, &msg);
        proto_msg_clear(&msg);
        //  No WELCOME within 3 heartbeats: dead again, the delay doubles.
        env->now += 3 * HB;
        link_tick(env->link, env->now);
        assert_int_equal(link_state(env->link), LINK_DOWN);
    }
    //  A WELCOME resets the delay and re-sends the un-STORED message.
    env->now += 400;
    link_tick(env->link, env->now);
    s_expect(env, PROTO_HELLO, &msg);
    proto_msg_clear(&msg);
    s_send_welcome(env, 16);
    s_expect_publish(env, "c1", 1, "one");
    env->now += 3 * HB;
    link_tick(env->link, env->now);
    assert_int_equal(link_state(env->link), LINK_DOWN);
    assert_int_equal(link_next_timeout_ms(env->link, env->now), 50);
}

static void test_backpressure(void **state)
{
    env_t *env = *state;
    env->config.retry_ms = 150;
    s_ready(env, 16);
    s_publish(env, "c1", 1, "one");
    s_publish(env, "c1", 2, "two");
    s_publish(env, "c1", 3, "three");
    s_expect_publish(env, "c1", 1, "one");
    s_expect_publish(env, "c1", 2, "two");
    s_expect_publish(env, "c1", 3, "three");
    s_send_ack(env, PROTO_STORED, "c1", 1);
    //  Queue full at 2, so 3 is out of order: pause, then re-send from 2.
    s_send_error(env, PROTO_ERR_QUEUE_FULL, "c1", true, 2);
    s_send_error(env, PROTO_ERR_OUT_OF_ORDER, "c1", true, 2);
    assert_int_equal(s_count(env, 'E'), 0); //  backpressure is not an error
    s_publish(env, "c1", 4, "four");        //  accepted, held during the pause
    assert_true(s_quiet(env, 100));
    env->now += 149; //  heartbeats go on during the pause, PUBLISHes do not
    link_tick(env->link, env->now);
    proto_msg_t msg;
    s_expect(env, PROTO_PING, &msg);
    assert_true(s_quiet(env, 50));
    assert_int_equal(link_next_timeout_ms(env->link, env->now), 1);
    env->now += 1;
    link_tick(env->link, env->now);
    s_expect_publish(env, "c1", 2, "two");
    s_expect_publish(env, "c1", 3, "three");
    s_expect_publish(env, "c1", 4, "four");
    assert_true(s_quiet(env, 50));

    //  422 for a sequence the window no longer holds: the broker lost data.
    s_send_ack(env, PROTO_STORED, "c1", 4);
    s_send_error(env, PROTO_ERR_OUT_OF_ORDER, "c1", true, 1);
    const event_t *e = s_last(env, 'E');
    assert_non_null(e);
    assert_int_equal(e->code, PROTO_ERR_OUT_OF_ORDER);
    assert_true(e->local);
    assert_non_null(strstr(e->text, "lost"));

    //  A 5xx pauses the same way and is reported.
    s_publish(env, "c1", 5, "five");
    s_expect_publish(env, "c1", 5, "five");
    s_send_error(env, PROTO_ERR_INTERNAL, "c1", true, 5);
    assert_int_equal(s_last(env, 'E')->code, PROTO_ERR_INTERNAL);
    assert_true(s_quiet(env, 50));
    env->now += 150;
    link_tick(env->link, env->now);
    s_expect(env, PROTO_PING, &msg);
    s_expect_publish(env, "c1", 5, "five");
}

static void test_refusals(void **state)
{
    env_t *env = *state;
    s_ready(env, 16);
    assert_int_equal(link_conn_add(env->link, "c2", 0, 0), LINK_OK);
    s_publish(env, "c1", 1, "one");
    s_expect_publish(env, "c1", 1, "one");
    //  403 on c1: reported, c1 stops; c2 goes on.
    s_send_error(env, PROTO_ERR_FORBIDDEN, "c1", true, 1);
    const event_t *e = s_last(env, 'E');
    assert_int_equal(e->code, PROTO_ERR_FORBIDDEN);
    assert_string_equal(e->conn, "c1");
    assert_false(e->local);
    s_publish(env, "c1", 2, "two");
    s_publish(env, "c2", 1, "other");
    s_expect_publish(env, "c2", 1, "other");
    assert_true(s_quiet(env, 100));
    //  The next session tries c1 again.
    s_send_error(env, PROTO_ERR_NOT_HELLO, NULL, false, 0);
    proto_msg_t msg;
    s_expect(env, PROTO_HELLO, &msg);
    proto_msg_clear(&msg);
    s_send_welcome(env, 16);
    s_expect_publish(env, "c1", 1, "one");
    s_expect_publish(env, "c1", 2, "two");
    s_expect_publish(env, "c2", 1, "other");

    //  A refused HELLO: reported, the link goes down and retries later.
    s_send_error(env, PROTO_ERR_NOT_HELLO, NULL, false, 0);
    s_expect(env, PROTO_HELLO, &msg);
    proto_msg_clear(&msg);
    s_send_error(env, PROTO_ERR_FORBIDDEN, NULL, false, 0);
    assert_int_equal(s_last(env, 'E')->code, PROTO_ERR_FORBIDDEN);
    assert_int_equal(link_state(env->link), LINK_DOWN);
    assert_non_null(strstr(s_last(env, 's')->text, "refused HELLO"));
}

static void test_invite_join(void **state)
{
    env_t *env = *state;
    s_new_link(env);
    uint8_t hash[32], token[32];
    memset(hash, 0xab, sizeof hash);
    memset(token, 0xcd, sizeof token);
    //  Asked before the session: sent after WELCOME.
    assert_int_equal(link_invite(env->link, "c9", hash, 1700000000, "public side"), LINK_OK);
    assert_int_equal(link_join(env->link, "c8", token, NULL, NULL, "private side"), LINK_OK);
    assert_int_equal(link_invite(env->link, "bad id!", hash, 1, NULL), LINK_E_INVALID);
    link_tick(env->link, env->now);
    proto_msg_t msg;
    s_expect(env, PROTO_HELLO, &msg);
    assert_int_equal(msg.hello.conns_count, 1); //  JOIN added c8
    assert_string_equal(msg.hello.conns[0].conn, "c8");
    proto_msg_clear(&msg);
    assert_true(s_quiet(env, 100));
    s_send_welcome(env, 16);
    s_expect(env, PROTO_INVITE, &msg);
    assert_string_equal(msg.invite.conn, "c9");
    assert_memory_equal(msg.invite.token_hash, hash, 32);
    assert_int_equal(msg.invite.expires, 1700000000);
    assert_string_equal(msg.invite.description, "public side");
    proto_msg_clear(&msg);
    s_expect(env, PROTO_JOIN, &msg);
    assert_string_equal(msg.join.conn, "c8");
    assert_memory_equal(msg.join.token, token, 32);
    proto_msg_clear(&msg);

    //  INVITED answers the INVITE; the JOIN stays pending and is sent again
    //  in the next session.
    proto_msg_t answer;
    proto_msg_init(&answer, PROTO_INVITED);
    answer.invited = (proto_invited_t){"c9", 1700000000};
    s_send(env, &answer);
    assert_int_equal(s_last(env, 'I')->seq, 1700000000);
    s_send_error(env, PROTO_ERR_NOT_HELLO, NULL, false, 0);
    s_expect(env, PROTO_HELLO, &msg);
    proto_msg_clear(&msg);
    s_send_welcome(env, 16);
    s_expect(env, PROTO_JOIN, &msg);
    proto_msg_clear(&msg);
    assert_true(s_quiet(env, 100));

    //  A refused JOIN reaches s_on_error with its connection; not sent again.
    s_send_error(env, PROTO_ERR_JOIN_BAD_TOKEN, "c8", false, 0);
    const event_t *e = s_last(env, 'E');
    assert_int_equal(e->code, PROTO_ERR_JOIN_BAD_TOKEN);
    assert_string_equal(e->conn, "c8");
    assert_int_equal(link_state(env->link), LINK_READY);
    //  JOINED (also unasked) reaches s_on_joined.
    proto_msg_init(&answer, PROTO_JOINED);
    answer.joined.conn = "c8";
    answer.joined.description = "the other side";
    s_send(env, &answer);
    assert_string_equal(s_last(env, 'J')->text, "the other side");
    s_send_error(env, PROTO_ERR_NOT_HELLO, NULL, false, 0);
    s_expect(env, PROTO_HELLO, &msg);
    proto_msg_clear(&msg);
    s_send_welcome(env, 16);
    assert_true(s_quiet(env, 100));
}

static void test_bad_frame(void **state)
{
    env_t *env = *state;
    s_ready(env, 16);
    zmq_send(env->router, env->rid, env->rid_size, ZMQ_SNDMORE);
    zmq_send(env->router, "\x81\xa1v\xcd\x01", 5, 0); //  cut short
    s_run_link(env, 2000, true);
    const event_t *e = s_last(env, 'E');
    assert_non_null(e);
    assert_int_equal(e->code, PROTO_ERR_BAD_FRAME);
    assert_true(e->local);
    assert_int_equal(link_state(env->link), LINK_READY);
    //  And the link goes on.
    s_send_empty(env, PROTO_PING);
    proto_msg_t msg;
    s_expect(env, PROTO_PONG, &msg);
}

static void test_wrong_broker_key(void **state)
{
    env_t *env = *state;
    uint8_t other_secret[32];
    s_keypair(env->config.broker_key, other_secret); //  not the broker's key
    s_new_link(env);
    link_tick(env->link, env->now);
    assert_true(s_quiet(env, 300)); //  CURVE handshake fails: nothing arrives
    env->now += 3 * HB;
    link_tick(env->link, env->now);
    assert_int_equal(link_state(env->link), LINK_DOWN);
    assert_non_null(strstr(s_last(env, 's')->text, "no WELCOME"));
}

static void test_config_refused(void **state)
{
    env_t *env = *state;
    char err[256];
    link_config_t config = env->config;
    config.node_id = "has space";
    assert_null(link_new(env->ctx, &config, NULL, err, sizeof err));
    assert_non_null(strstr(err, "node id"));
    config = env->config;
    config.backoff_max_ms = 10;
    assert_null(link_new(env->ctx, &config, NULL, err, sizeof err));
    assert_non_null(strstr(err, "backoff"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_handshake, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_publish_stored, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_file_flag_in_publish, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_window_bytes, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_behind_positions_in_welcome, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_batches, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_batch_within_the_link_frame, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_window_and_credit, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_resend_after_401, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_deliver_consumed, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_consumed_once_per_burst, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_heartbeat, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_death_and_backoff, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_backpressure, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_refusals, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_invite_join, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_bad_frame, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_wrong_broker_key, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_config_refused, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
