/*  test_broker_badinput.c: bad input never stops the broker, and a
    well-behaved pair keeps being served while it arrives.

    A bounded fuzz loop: rogue peers send random frames, mutations of valid
    messages (flipped, truncated, extended bytes), multipart messages,
    oversized frames, valid messages they have no right to send, and one
    rogue never reads its answers. Between bursts a good pair exchanges
    messages both ways and checks every one arrives, in order, intact.
    Afterwards the broker is alive and healthy, has counted the rejects, and
    the pair's queues are empty.
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
#include <sys/wait.h>
#include <time.h>
#include <zmq.h>

#include "broker_harness.h"

#define BURSTS         200
#define FRAMES_A_BURST 60
#define MAX_FRAME      65536

//  Valid encodings of every message type, as seeds for mutation.
static void s_seed(proto_buf_t *out, int which)
{
    static const proto_conn_state_t state = {"conn-1", 5, 3, 0};
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_PING);
    switch (which % 8) {
    case 0:
        proto_msg_init(&msg, PROTO_HELLO);
        msg.hello.node = "rogue";
        msg.hello.role = which % 2 ? PROTO_ROLE_PUBLIC : PROTO_ROLE_PRIVATE;
        msg.hello.conns = &state;
        msg.hello.conns_count = 1;
        break;
    case 1:
        proto_msg_init(&msg, PROTO_PUBLISH);
        msg.publish.conn = "conn-1";
        msg.publish.seq = 1 + (uint64_t)(which % 7);
        msg.publish.payload = (const uint8_t *)"rogue payload";
        msg.publish.payload_size = 13;
        break;
    case 2:
        proto_msg_init(&msg, PROTO_CONSUMED);
        msg.consumed.conn = "conn-1";
        msg.consumed.seq = 1;
        break;
    case 3:
        proto_msg_init(&msg, PROTO_JOIN);
        msg.join.conn = "conn-1";
        msg.join.description = "rogue";
        break;
    case 4:
        proto_msg_init(&msg, PROTO_INVITE);
        msg.invite.conn = "conn-1";
        msg.invite.expires = (uint64_t)time(NULL) + 100;
        break;
    case 5:
        proto_msg_init(&msg, PROTO_DELIVER); //  a node may not send this
        msg.deliver.conn = "conn-1";
        msg.deliver.seq = 1;
        msg.deliver.payload = (const uint8_t *)"x";
        msg.deliver.payload_size = 1;
        break;
    case 6:
        proto_msg_init(&msg, PROTO_ERROR);
        msg.error.code = 500;
        msg.error.text = "rogue error";
        break;
    default:
        break; //  PING
    }
    assert_int_equal(proto_msg_encode(&msg, NULL, out, NULL), PROTO_OK);
}

//  One hostile frame into buf: random, mutated, truncated or extended.
static size_t s_hostile(uint8_t *buf, size_t cap)
{
    proto_buf_t seed;
    proto_buf_init(&seed);
    s_seed(&seed, rand());
    size_t size = seed.size < cap ? seed.size : cap;
    memcpy(buf, seed.data, size);
    proto_buf_release(&seed);
    switch (rand() % 5) {
    case 0: //  random bytes
        size = (size_t)rand() % 2048;
        for (size_t i = 0; i < size; i++)
            buf[i] = (uint8_t)rand();
        break;
    case 1: //  flipped bytes
        for (int i = 0; i < 1 + rand() % 4 && size; i++)
            buf[(size_t)rand() % size] ^= (uint8_t)(1 + rand() % 255);
        break;
    case 2: //  truncated
        size = size ? (size_t)rand() % size : 0;
        break;
    case 3: //  extended with junk
        while (size < cap && rand() % 8)
            buf[size++] = (uint8_t)rand();
        break;
    default: //  valid but unauthorised (or not allowed from a node)
        break;
    }
    return size;
}

//  Sends a burst from the rogue: mostly single frames, some multipart, and
//  when oversized is set, last, one frame over the limit (which makes
//  libzmq drop the connection, and with it what was still in flight).
static void s_burst(th_client_t *rogue, bool oversized, uint64_t *sent)
{
    static uint8_t buf[MAX_FRAME + 1024];
    for (int i = 0; i < FRAMES_A_BURST; i++) {
        if (rand() % 100 < 5) {
            size_t a = s_hostile(buf, 4096);
            zmq_send(rogue->socket, buf, a, ZMQ_SNDMORE | ZMQ_DONTWAIT);
            zmq_send(rogue->socket, buf, a, ZMQ_DONTWAIT);
        } else {
            size_t size = s_hostile(buf, 4096);
            zmq_send(rogue->socket, buf, size, ZMQ_DONTWAIT);
        }
        (*sent)++;
    }
    if (oversized) {
        memset(buf, 0xc1, sizeof buf);
        zmq_send(rogue->socket, buf, sizeof buf, ZMQ_DONTWAIT);
        (*sent)++;
    }
}

//  Drains whatever the rogue got back (answers are not checked: anything
//  decodable or not is fine, as long as the broker stays up).
static void s_drain(th_client_t *rogue)
{
    zmq_msg_t frame;
    zmq_msg_init(&frame);
    while (zmq_msg_recv(&frame, rogue->socket, ZMQ_DONTWAIT) >= 0)
        ;
    zmq_msg_close(&frame);
}

typedef struct {
    uint64_t sent;    //  Next seq to send
    uint64_t stored;  //  STOREDs received
    uint64_t applied; //  DELIVERs applied in order
} lane_t;

static void s_good_step(th_pair_t *pair, lane_t lanes[2])
{
    th_client_t *senders[2] = {&pair->pub, &pair->priv};
    for (int i = 0; i < 2; i++) {
        char payload[64];
        int n = snprintf(payload, sizeof payload, "good %d %llu", i,
                         (unsigned long long)lanes[i].sent + 1);
        th_publish(senders[i], pair->conn, ++lanes[i].sent, payload, (size_t)n);
    }
    //  Each node gets its STORED and the other's DELIVER, in either order.
    int64_t deadline = th_now_ms() + 10000;
    while (lanes[0].stored < lanes[0].sent || lanes[1].stored < lanes[1].sent ||
           lanes[0].applied < lanes[0].sent || lanes[1].applied < lanes[1].sent) {
        if (th_now_ms() > deadline)
            fail_msg("good pair starved: lanes %llu/%llu %llu/%llu",
                     (unsigned long long)lanes[0].stored, (unsigned long long)lanes[0].applied,
                     (unsigned long long)lanes[1].stored, (unsigned long long)lanes[1].applied);
        for (int c = 0; c < 2; c++) {
            proto_msg_t msg;
            if (!th_recv(senders[c], &msg, 5))
                continue;
            if (msg.type == PROTO_STORED) {
                assert_int_equal(msg.stored.seq, ++lanes[c].stored);
            } else if (msg.type == PROTO_DELIVER) {
                lane_t *lane = &lanes[1 - c]; //  what senders[c] receives
                assert_int_equal(msg.deliver.seq, ++lane->applied);
                char payload[64];
                int n = snprintf(payload, sizeof payload, "good %d %llu", 1 - c,
                                 (unsigned long long)lane->applied);
                assert_int_equal(msg.deliver.payload_size, (size_t)n);
                assert_memory_equal(msg.deliver.payload, payload, (size_t)n);
                th_consumed(senders[c], pair->conn, msg.deliver.seq);
            } else {
                fail_msg("good node got %s", proto_type_name(msg.type));
            }
            proto_msg_clear(&msg);
        }
    }
}

static void test_rogue_flood_while_pair_works(void **state)
{
    (void)state;
    unsigned seed =
        getenv("TH_SEED") ? (unsigned)strtoul(getenv("TH_SEED"), NULL, 10) : (unsigned)time(NULL);
    srand(seed);
    fprintf(stderr, "seed %u (TH_SEED=%u to repeat)\n", seed, seed);
    th_broker_t broker;
    th_broker_init(&broker, th_binary());
    th_broker_arg(&broker, "--broker.max_frame", "65536");
    th_pair_t pair;
    th_pair_prepare(&pair, &broker, "conn-1");
    th_broker_start(&broker);
    th_pair_connect(&pair, &broker);

    th_client_t reader, deaf;
    th_client_init(&reader, &broker); //  reads (and drops) its answers
    th_client_init(&deaf, &broker);   //  never reads anything
    th_hello(&reader, "rogue", PROTO_ROLE_PRIVATE, NULL, 0, 0);
    lane_t lanes[2] = {{0, 0, 0}, {0, 0, 0}};
    uint64_t rogue_frames = 0;
    int64_t start = th_now_ms();
    for (int burst = 0; burst < BURSTS; burst++) {
        s_burst(burst % 2 ? &reader : &deaf, burst % 10 == 9, &rogue_frames);
        s_drain(&reader);
        s_good_step(&pair, lanes);
    }
    fprintf(stderr, "%llu rogue frames, %llu good messages each way, %lld ms\n",
            (unsigned long long)rogue_frames, (unsigned long long)lanes[0].applied,
            (long long)(th_now_ms() - start));

    //  Still there, still healthy, and it counted what it refused.
    int status;
    assert_int_equal(waitpid(broker.pid, &status, WNOHANG), 0);
    double bad =
        th_metric(&broker, "twinsync_broker_frames_rejected_total", "reason=\"bad_frame\"");
    double foreign = th_metric(&broker, "twinsync_broker_frames_rejected_total",
                               "reason=\"foreign_connection\"");
    double multipart =
        th_metric(&broker, "twinsync_broker_frames_rejected_total", "reason=\"multipart\"");
    char *text = th_metrics_text(&broker);
    double total = 0;
    for (char *line = strstr(text, "\ntwinsync_broker_frames_rejected_total{"); line;
         line = strstr(line + 1, "\ntwinsync_broker_frames_rejected_total{"))
        total += strtod(strchr(line, '}') + 1, NULL);
    free(text);
    fprintf(stderr,
            "rejected: %.0f in all; bad_frame %.0f foreign_connection %.0f multipart %.0f\n", total,
            bad, foreign, multipart);
    assert_true(bad > 0);
    assert_true(multipart > 0);
    const char *dirs[2] = {"public_to_private", "private_to_public"};
    for (int i = 0; i < 2; i++) {
        char labels[128];
        snprintf(labels, sizeof labels, "connection=\"conn-1\",direction=\"%s\"", dirs[i]);
        th_sync(i ? &pair.pub : &pair.priv);
        assert_int_equal(th_metric(&broker, "twinsync_broker_queue_stored_total", labels), BURSTS);
        assert_int_equal(th_metric(&broker, "twinsync_broker_queue_bytes", labels), 0);
    }
    th_client_close(&reader);
    th_client_close(&deaf);
    th_pair_close(&pair);
    assert_int_equal(th_broker_stop(&broker, SIGTERM), 0);
    th_broker_cleanup(&broker);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rogue_flood_while_pair_works),
    };
    return TH_MAIN(tests);
}
