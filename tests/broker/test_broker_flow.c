/*  test_broker_flow.c: the broker's dialogue with a well-behaved pair of
    nodes, against the real process on 127.0.0.1.

    - PUBLISH is answered STORED, the other node gets DELIVER, CONSUMED
      removes it;
    - a repeated PUBLISH is answered STORED again and delivered once;
    - a gap in sequences is refused with the expected sequence;
    - the credit window bounds what is in flight;
    - a receiver that reconnects before CONSUMED gets the message again;
    - a receiver that reconnects after a broker restart gets everything
      pending, and the duplicate filter survived the restart;
    - HELLO's "consumed" positions remove what the node already applied;
    - an unknown peer is told to HELLO; the broker PINGs idle peers and
      drops silent ones;
    - a full queue refuses PUBLISH with 429 until the receiver consumes;
    - a stream of file data three times max_queue_bytes: refused 429 exactly
      at the limit (file bytes count toward it), taken again once the
      receiver consumed, and delivered whole, in order, once, each chunk
      still flagged as file data: backpressure, nothing lost;
    - SIGTERM exits 0 and keeps everything.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker_harness.h"

typedef struct {
    th_broker_t broker;
    th_pair_t pair;
} fixture_t;

static int s_setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    th_broker_init(&f->broker, th_binary());
    th_pair_prepare(&f->pair, &f->broker, "conn-1");
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    fixture_t *f = *state;
    th_pair_close(&f->pair);
    th_broker_cleanup(&f->broker);
    free(f);
    return 0;
}

static void s_start(fixture_t *f)
{
    th_broker_start(&f->broker);
    th_pair_connect(&f->pair, &f->broker);
}

//  Publishes seqs [from, to] with payload "payload-<seq>" and expects
//  STORED up to `to` (cumulative: one STORED may cover several).
static void s_publish_range(th_client_t *client, const char *conn, uint64_t from, uint64_t to)
{
    for (uint64_t seq = from; seq <= to; seq++) {
        char payload[32];
        int n = snprintf(payload, sizeof payload, "payload-%llu", (unsigned long long)seq);
        th_publish(client, conn, seq, payload, (size_t)n);
    }
    th_expect_stored(client, conn, to);
}

//  Expects DELIVERs of seqs [from, to] in order, checks payloads, and
//  answers CONSUMED when consume is set.
static void s_expect_deliveries(th_client_t *client, const char *conn, uint64_t from, uint64_t to,
                                bool consume)
{
    for (uint64_t seq = from; seq <= to; seq++) {
        proto_msg_t msg;
        th_expect(client, PROTO_DELIVER, &msg, 5000);
        assert_string_equal(msg.deliver.conn, conn);
        assert_int_equal(msg.deliver.seq, seq);
        char payload[32];
        int n = snprintf(payload, sizeof payload, "payload-%llu", (unsigned long long)seq);
        assert_int_equal(msg.deliver.payload_size, (size_t)n);
        assert_memory_equal(msg.deliver.payload, payload, (size_t)n);
        proto_msg_clear(&msg);
        if (consume)
            th_consumed(client, conn, seq);
    }
}

static void test_publish_deliver_consume(void **state)
{
    fixture_t *f = *state;
    s_start(f);
    s_publish_range(&f->pair.pub, "conn-1", 1, 3);
    s_expect_deliveries(&f->pair.priv, "conn-1", 1, 3, true);
    th_sync(&f->pair.priv);
    //  And the other way round.
    s_publish_range(&f->pair.priv, "conn-1", 1, 2);
    s_expect_deliveries(&f->pair.pub, "conn-1", 1, 2, true);
    th_sync(&f->pair.pub);
    assert_int_equal(th_metric(&f->broker, "twinsync_broker_queue_consumed_total",
                               "connection=\"conn-1\",direction=\"public_to_private\""),
                     3);
    assert_int_equal(th_metric(&f->broker, "twinsync_broker_queue_messages_ready",
                               "connection=\"conn-1\",direction=\"private_to_public\""),
                     0);
}

static void test_duplicate_publish_stored_once(void **state)
{
    fixture_t *f = *state;
    s_start(f);
    s_publish_range(&f->pair.pub, "conn-1", 1, 2);
    s_publish_range(&f->pair.pub, "conn-1", 1, 2); //  re-sent after a lost STORED
    s_expect_deliveries(&f->pair.priv, "conn-1", 1, 2, true);
    th_expect_silence(&f->pair.priv, 300);
    assert_int_equal(th_metric(&f->broker, "twinsync_broker_queue_duplicates_total",
                               "connection=\"conn-1\",direction=\"public_to_private\""),
                     2);
    //  Also after consumption: an old seq is still a duplicate, never stored again.
    s_publish_range(&f->pair.pub, "conn-1", 1, 1);
    th_expect_silence(&f->pair.priv, 300);
}

static void test_sequence_gap_refused(void **state)
{
    fixture_t *f = *state;
    s_start(f);
    s_publish_range(&f->pair.pub, "conn-1", 1, 1);
    th_publish(&f->pair.pub, "conn-1", 5, "x", 1);
    proto_msg_t msg;
    th_expect_error(&f->pair.pub, 422, &msg);
    assert_true(msg.error.has_seq);
    assert_int_equal(msg.error.seq, 2);
    assert_string_equal(msg.error.conn, "conn-1");
    proto_msg_clear(&msg);
    s_publish_range(&f->pair.pub, "conn-1", 2, 2);
    s_expect_deliveries(&f->pair.priv, "conn-1", 1, 2, false);
}

static void test_credit_window(void **state)
{
    fixture_t *f = *state;
    th_broker_arg(&f->broker, "--broker.credit", "4");
    s_start(f);
    s_publish_range(&f->pair.pub, "conn-1", 1, 10);
    s_expect_deliveries(&f->pair.priv, "conn-1", 1, 4, false);
    th_expect_silence(&f->pair.priv, 300); //  window full
    assert_int_equal(th_metric(&f->broker, "twinsync_broker_queue_messages_unacked",
                               "connection=\"conn-1\",direction=\"public_to_private\""),
                     4);
    assert_int_equal(th_metric(&f->broker, "twinsync_broker_queue_messages_ready",
                               "connection=\"conn-1\",direction=\"public_to_private\""),
                     6);
    th_consumed(&f->pair.priv, "conn-1", 1);
    s_expect_deliveries(&f->pair.priv, "conn-1", 5, 5, false);
    th_expect_silence(&f->pair.priv, 300);
}

static void test_redelivery_on_reconnect(void **state)
{
    fixture_t *f = *state;
    s_start(f);
    s_publish_range(&f->pair.pub, "conn-1", 1, 5);
    s_expect_deliveries(&f->pair.priv, "conn-1", 1, 5, false);
    //  The private node goes away before CONSUMED and comes back.
    th_client_reconnect(&f->pair.priv);
    th_hello(&f->pair.priv, "node-private", PROTO_ROLE_PRIVATE, "conn-1", 0, 0);
    s_expect_deliveries(&f->pair.priv, "conn-1", 1, 5, true);
    th_sync(&f->pair.priv);
    assert_int_equal(th_metric(&f->broker, "twinsync_broker_queue_redelivered_total",
                               "connection=\"conn-1\",direction=\"public_to_private\""),
                     5);
    th_client_reconnect(&f->pair.priv);
    th_hello(&f->pair.priv, "node-private", PROTO_ROLE_PRIVATE, "conn-1", 0, 5);
    th_expect_silence(&f->pair.priv, 300);
}

static void test_redelivery_after_broker_restart(void **state)
{
    fixture_t *f = *state;
    s_start(f);
    s_publish_range(&f->pair.pub, "conn-1", 1, 10);
    s_expect_deliveries(&f->pair.priv, "conn-1", 1, 3, true);
    th_sync(&f->pair.priv);
    assert_int_equal(th_broker_stop(&f->broker, SIGKILL), 128 + SIGKILL);
    th_broker_start(&f->broker);

    //  Both nodes were unknown to the new broker: told to HELLO again.
    proto_msg_t msg;
    th_consumed(&f->pair.priv, "conn-1", 4);
    th_expect_error(&f->pair.priv, 401, &msg);
    proto_msg_clear(&msg);
    th_client_reconnect(&f->pair.priv);
    th_client_reconnect(&f->pair.pub);
    th_hello(&f->pair.priv, "node-private", PROTO_ROLE_PRIVATE, "conn-1", 0, 3);
    th_hello(&f->pair.pub, "node-public", PROTO_ROLE_PUBLIC, "conn-1", 10, 0);
    s_expect_deliveries(&f->pair.priv, "conn-1", 4, 10, true);
    //  The duplicate filter survived: 10 is a duplicate, 11 is new.
    s_publish_range(&f->pair.pub, "conn-1", 10, 11);
    s_expect_deliveries(&f->pair.priv, "conn-1", 11, 11, true);
    th_expect_silence(&f->pair.priv, 300);
}

static void test_hello_consumed_removes(void **state)
{
    fixture_t *f = *state;
    s_start(f);
    s_publish_range(&f->pair.pub, "conn-1", 1, 6);
    s_expect_deliveries(&f->pair.priv, "conn-1", 1, 6, false);
    //  The node applied 1..4 but crashed before its CONSUMED went out.
    th_client_reconnect(&f->pair.priv);
    th_hello(&f->pair.priv, "node-private", PROTO_ROLE_PRIVATE, "conn-1", 0, 4);
    s_expect_deliveries(&f->pair.priv, "conn-1", 5, 6, true);
    th_expect_silence(&f->pair.priv, 300);
}

static void test_unknown_peer_told_to_hello(void **state)
{
    fixture_t *f = *state;
    th_broker_start(&f->broker);
    th_client_t stranger;
    th_client_init(&stranger, &f->broker);
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_PING);
    th_send(&stranger, &msg);
    th_expect_error(&stranger, 401, &msg);
    proto_msg_clear(&msg);
    th_client_close(&stranger);
    assert_int_equal(
        th_metric(&f->broker, "twinsync_broker_frames_rejected_total", "reason=\"not_hello\""), 1);
}

static void test_heartbeats_and_dead_peer(void **state)
{
    fixture_t *f = *state;
    th_broker_arg(&f->broker, "--broker.heartbeat_ms", "100");
    s_start(f);
    assert_int_equal(th_metric(&f->broker, "twinsync_broker_connection_peers_connected",
                               "connection=\"conn-1\""),
                     2);
    //  The broker pings a quiet peer (the client itself only pings after
    //  300 ms). Meanwhile the private node says nothing at all: it is dropped
    //  after liveness (3) heartbeats, the public node (answering) is not.
    f->pair.pub.pings_answered = 0;
    th_expect_silence(&f->pair.pub, 700);
    assert_true(f->pair.pub.pings_answered > 0);
    assert_int_equal(th_metric(&f->broker, "twinsync_broker_connection_peers_connected",
                               "connection=\"conn-1\""),
                     1);
    //  What is published meanwhile waits, and comes when it says HELLO again.
    s_publish_range(&f->pair.pub, "conn-1", 1, 2);
    th_client_reconnect(&f->pair.priv);
    th_hello(&f->pair.priv, "node-private", PROTO_ROLE_PRIVATE, "conn-1", 0, 0);
    s_expect_deliveries(&f->pair.priv, "conn-1", 1, 2, true);
}

static void test_queue_full_backpressure(void **state)
{
    fixture_t *f = *state;
    th_broker_arg(&f->broker, "--broker.max_queue_bytes", "4096");
    s_start(f);
    static uint8_t payload[1024];
    uint64_t seq = 1;
    for (; seq <= 4; seq++)
        th_publish(&f->pair.pub, "conn-1", seq, payload, sizeof payload);
    th_publish(&f->pair.pub, "conn-1", seq, payload, sizeof payload);
    //  STOREDs (cumulative) up to 4, then the refusal of 5.
    proto_msg_t msg;
    uint64_t stored = 0;
    while (stored < 4) {
        th_expect(&f->pair.pub, PROTO_STORED, &msg, 5000);
        assert_true(msg.stored.seq > stored && msg.stored.seq <= 4);
        stored = msg.stored.seq;
        proto_msg_clear(&msg);
    }
    th_expect_error(&f->pair.pub, 429, &msg);
    assert_int_equal(msg.error.seq, 5);
    proto_msg_clear(&msg);
    //  The receiver consumes one: the retry is accepted.
    th_expect(&f->pair.priv, PROTO_DELIVER, &msg, 5000);
    th_consumed(&f->pair.priv, "conn-1", msg.deliver.seq);
    proto_msg_clear(&msg);
    th_sync(&f->pair.priv);
    th_publish(&f->pair.pub, "conn-1", 5, payload, sizeof payload);
    th_expect(&f->pair.pub, PROTO_STORED, &msg, 5000);
    assert_int_equal(msg.stored.seq, 5);
    proto_msg_clear(&msg);
    assert_int_equal(
        th_metric(&f->broker, "twinsync_broker_frames_rejected_total", "reason=\"queue_full\""), 1);
}

#define CHUNK       (64 * 1024)  //  Bytes of one file chunk in the stream below
#define CHUNKS      12           //  Chunks in the stream: 3 x the queue's limit
#define QUEUE_LIMIT (256 * 1024) //  max_queue_bytes for it: 4 chunks

//  Chunk seq of the stream: its bytes tell which chunk it is.
static void s_chunk(uint64_t seq, uint8_t *out)
{
    for (size_t i = 0; i < CHUNK; i++)
        out[i] = (uint8_t)(seq * 31 + i * 7);
}

//  The receiver takes every DELIVER up to seq upto, checks each is the next
//  one, whole and flagged as file data, and consumes them.
static void s_take_chunks(th_client_t *priv, uint64_t *delivered, uint64_t upto)
{
    static uint8_t expect[CHUNK];
    while (*delivered < upto) {
        proto_msg_t msg;
        th_expect(priv, PROTO_DELIVER, &msg, 5000);
        assert_int_equal(msg.deliver.seq, *delivered + 1);
        assert_int_equal(msg.deliver.more_count, 0);
        assert_int_equal(msg.deliver.file, PROTO_DATA_FILE);
        assert_int_equal(msg.deliver.payload_size, CHUNK);
        s_chunk(msg.deliver.seq, expect);
        assert_memory_equal(msg.deliver.payload, expect, CHUNK);
        (*delivered)++;
        proto_msg_clear(&msg);
    }
    th_consumed(priv, "conn-1", *delivered);
    th_sync(priv);
}

static void test_file_stream_backpressure(void **state)
{
    fixture_t *f = *state;
    char limit[32];
    snprintf(limit, sizeof limit, "%d", QUEUE_LIMIT);
    th_broker_arg(&f->broker, "--broker.max_queue_bytes", limit);
    s_start(f);
    static uint8_t chunk[CHUNK];
    const char *labels = "connection=\"conn-1\",direction=\"public_to_private\"";
    uint64_t next = 1, delivered = 0;
    unsigned refusals = 0;
    while (next <= CHUNKS) {
        s_chunk(next, chunk);
        th_publish_kind(&f->pair.pub, "conn-1", next, chunk, CHUNK, true);
        proto_msg_t msg;
        assert_true(th_recv(&f->pair.pub, &msg, 5000));
        if (msg.type == PROTO_STORED) {
            assert_int_equal(msg.stored.seq, next);
            proto_msg_clear(&msg);
            next++;
            continue;
        }
        //  Refused exactly at the limit: what is held plus this chunk is
        //  more than max_queue_bytes, and all of it is file data.
        assert_int_equal(msg.type, PROTO_ERROR);
        assert_int_equal(msg.error.code, PROTO_ERR_QUEUE_FULL);
        assert_int_equal(msg.error.seq, next);
        proto_msg_clear(&msg);
        refusals++;
        double held = th_metric(&f->broker, "twinsync_broker_queue_bytes", labels);
        assert_true(held <= QUEUE_LIMIT && held + CHUNK > QUEUE_LIMIT);
        assert_true(th_metric(&f->broker, "twinsync_broker_queue_file_bytes", labels) == held);
        assert_true(th_metric(&f->broker, "twinsync_broker_queue_file_messages", labels) ==
                    held / CHUNK);
        //  The receiver consumes what it has; the sender retries the same seq.
        s_take_chunks(&f->pair.priv, &delivered, next - 1);
        assert_int_equal(th_metric(&f->broker, "twinsync_broker_queue_file_bytes", labels), 0);
    }
    s_take_chunks(&f->pair.priv, &delivered, CHUNKS);
    th_expect_silence(&f->pair.priv, 300); //  nothing twice
    assert_int_equal(delivered, CHUNKS);
    assert_int_equal(refusals, CHUNKS / (QUEUE_LIMIT / CHUNK) - 1); //  at 5 and at 9
    assert_int_equal(
        th_metric(&f->broker, "twinsync_broker_frames_rejected_total", "reason=\"queue_full\""),
        refusals);
    assert_int_equal(th_metric(&f->broker, "twinsync_broker_queue_stored_total", labels), CHUNKS);
    assert_int_equal(th_metric(&f->broker, "twinsync_broker_queue_file_bytes", labels), 0);
    assert_int_equal(th_metric(&f->broker, "twinsync_broker_queue_bytes", labels), 0);
}

static void test_sigterm_exits_zero_and_keeps(void **state)
{
    fixture_t *f = *state;
    s_start(f);
    s_publish_range(&f->pair.pub, "conn-1", 1, 3);
    assert_int_equal(th_broker_stop(&f->broker, SIGTERM), 0);
    th_broker_start(&f->broker);
    th_client_reconnect(&f->pair.priv);
    th_hello(&f->pair.priv, "node-private", PROTO_ROLE_PRIVATE, "conn-1", 0, 0);
    s_expect_deliveries(&f->pair.priv, "conn-1", 1, 3, true);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_publish_deliver_consume, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_publish_stored_once, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_sequence_gap_refused, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_credit_window, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_redelivery_on_reconnect, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_redelivery_after_broker_restart, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_hello_consumed_removes, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_unknown_peer_told_to_hello, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_heartbeats_and_dead_peer, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_queue_full_backpressure, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_file_stream_backpressure, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_exits_zero_and_keeps, s_setup, s_teardown),
    };
    return TH_MAIN(tests);
}
