/*  test_broker_durability.c: "kill -9 at any instant loses nothing STORED
    and delivers it exactly once, in order" as a test that kills and counts.

    A pair of nodes streams messages both ways over one connection, each
    with a window of PUBLISHes in flight, the receivers applying in order
    and answering CONSUMED, like real nodes:
      - a sender keeps everything not yet STORED and, after a reconnect,
        sends again from the lowest un-STORED sequence (its outbox);
      - a receiver applies seq == applied + 1, answers CONSUMED again for a
        seq it already applied (a redelivery), and fails the test on
        anything else: a gap or a reordering means a STORED message was lost
        or a message that was not STORED jumped ahead.
    The broker is killed with SIGKILL at a random instant every round,
    restarted on the same state, and both nodes say HELLO again with their
    positions. At the end every sequence 1..N of both directions was applied
    exactly once in order, the broker's queues are empty, and a last
    restart delivers nothing more.
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
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "broker_harness.h"

#define ROUNDS        40
#define PER_DIRECTION 5000 //  Messages each way
#define WINDOW        64   //  PUBLISHes in flight per sender
#define MAX_PAYLOAD   512

typedef struct {
    th_client_t *sender;   //  Publishes
    th_client_t *receiver; //  Consumes
    int dir;               //  0: public to private, 1: private to public
    uint64_t next_send;    //  Next seq to send
    uint64_t stored_upto;  //  Highest seq STORED (STORED is cumulative)
    uint64_t applied;      //  Highest seq applied by the receiver
    uint64_t redelivered;  //  DELIVERs of an applied seq
    uint64_t resent;       //  PUBLISHes sent again after a reconnect
} stream_t;

//  Deterministic payload of (dir, seq): size and bytes follow from both.
static size_t s_payload(int dir, uint64_t seq, uint8_t *out)
{
    size_t size = 16 + (size_t)((seq * 2654435761u + (uint64_t)dir) % (MAX_PAYLOAD - 16));
    int n = snprintf((char *)out, size, "dir=%d seq=%llu ", dir, (unsigned long long)seq);
    for (size_t i = (size_t)n; i < size; i++)
        out[i] = (uint8_t)(seq * 31 + i * 7 + (uint64_t)dir);
    return size;
}

static void s_send_window(stream_t *s, const char *conn)
{
    while (s->next_send <= PER_DIRECTION && s->next_send - s->stored_upto <= WINDOW) {
        uint8_t payload[MAX_PAYLOAD];
        size_t size = s_payload(s->dir, s->next_send, payload);
        th_publish(s->sender, conn, s->next_send, payload, size);
        s->next_send++;
    }
}

static void s_on_stored(stream_t *s, const proto_ack_t *ack)
{
    if (ack->seq <= s->stored_upto)
        return; //  A STORED for a re-sent PUBLISH the broker already had
    //  STORED is cumulative (it covers everything below it), but never
    //  names a sequence that was not sent.
    if (ack->seq >= s->next_send)
        fail_msg("dir %d: STORED %llu, but only up to %llu was sent", s->dir,
                 (unsigned long long)ack->seq, (unsigned long long)s->next_send - 1);
    s->stored_upto = ack->seq;
}

static void s_on_deliver(stream_t *s, const proto_data_t *data, const char *conn)
{
    if (data->seq <= s->applied) {
        s->redelivered++;
    } else if (data->seq == s->applied + 1) {
        uint8_t expect[MAX_PAYLOAD];
        size_t size = s_payload(s->dir, data->seq, expect);
        if (data->payload_size != size || memcmp(data->payload, expect, size) != 0)
            fail_msg("dir %d: payload of seq %llu damaged", s->dir, (unsigned long long)data->seq);
        s->applied = data->seq;
    } else {
        fail_msg("dir %d: DELIVER %llu after applying %llu: a message was lost or reordered",
                 s->dir, (unsigned long long)data->seq, (unsigned long long)s->applied);
    }
    th_consumed(s->receiver, conn, data->seq);
}

//  Handles one message that arrived on client.
static void s_dispatch(stream_t streams[2], th_client_t *client, proto_msg_t *msg, const char *conn)
{
    for (int i = 0; i < 2; i++) {
        if (msg->type == PROTO_STORED && streams[i].sender == client)
            s_on_stored(&streams[i], &msg->stored);
        else if (msg->type == PROTO_DELIVER && streams[i].receiver == client)
            s_on_deliver(&streams[i], &msg->deliver, conn);
    }
    if (msg->type == PROTO_ERROR)
        fail_msg("ERROR %u: %s", msg->error.code, msg->error.text);
}

//  Runs traffic until stop(streams) is true, failing after timeout_ms.
static void s_traffic(stream_t streams[2], th_client_t *clients[2], const char *conn,
                      bool (*stop)(const stream_t *streams, uint64_t arg), uint64_t arg,
                      int timeout_ms)
{
    int64_t deadline = th_now_ms() + timeout_ms;
    while (!stop(streams, arg)) {
        if (th_now_ms() > deadline)
            fail_msg("stalled: stored %llu/%llu applied %llu/%llu",
                     (unsigned long long)streams[0].stored_upto,
                     (unsigned long long)streams[1].stored_upto,
                     (unsigned long long)streams[0].applied,
                     (unsigned long long)streams[1].applied);
        for (int i = 0; i < 2; i++)
            s_send_window(&streams[i], conn);
        zmq_pollitem_t items[2] = {{clients[0]->socket, 0, ZMQ_POLLIN, 0},
                                   {clients[1]->socket, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, 5) <= 0)
            continue;
        for (int c = 0; c < 2; c++) {
            if (!(items[c].revents & ZMQ_POLLIN))
                continue;
            proto_msg_t msg;
            while (th_recv(clients[c], &msg, 0)) {
                s_dispatch(streams, clients[c], &msg, conn);
                proto_msg_clear(&msg);
            }
        }
    }
}

static bool s_done(const stream_t *streams, uint64_t arg)
{
    (void)arg;
    for (int i = 0; i < 2; i++) {
        if (streams[i].applied < PER_DIRECTION || streams[i].stored_upto < PER_DIRECTION)
            return false;
    }
    return true;
}

//  True once the first stream has STORED up to arg (or everything is done):
//  the kill then falls while a window of PUBLISHes is in flight.
static bool s_reached(const stream_t *streams, uint64_t arg)
{
    return streams[0].stored_upto >= arg || s_done(streams, 0);
}

//  Both nodes reconnect after a broker restart, say HELLO with their
//  positions, and senders go back to their lowest un-STORED sequence. With
//  report_consumed false the receivers claim nothing consumed, so the
//  broker delivers again whatever it still holds (and they drop duplicates).
static void s_rejoin(th_pair_t *pair, stream_t streams[2], bool report_consumed)
{
    th_client_reconnect(&pair->pub);
    th_client_reconnect(&pair->priv);
    th_hello(&pair->pub, "node-public", PROTO_ROLE_PUBLIC, pair->conn, streams[0].stored_upto,
             report_consumed ? streams[1].applied : 0);
    th_hello(&pair->priv, "node-private", PROTO_ROLE_PRIVATE, pair->conn, streams[1].stored_upto,
             report_consumed ? streams[0].applied : 0);
    for (int i = 0; i < 2; i++) {
        streams[i].resent += streams[i].next_send - 1 - streams[i].stored_upto;
        streams[i].next_send = streams[i].stored_upto + 1;
    }
}

//  True once the clock (th_now_ms) has passed arg.
static bool s_time_passed(const stream_t *streams, uint64_t arg)
{
    (void)streams;
    return (uint64_t)th_now_ms() >= arg;
}

static void test_sigkill_rounds(void **state)
{
    (void)state;
    unsigned seed = (unsigned)time(NULL);
    if (getenv("TH_SEED"))
        seed = (unsigned)strtoul(getenv("TH_SEED"), NULL, 10);
    srand(seed);
    fprintf(stderr, "seed %u (TH_SEED=%u to repeat)\n", seed, seed);

    th_broker_t broker;
    th_broker_init(&broker, th_binary());
    th_pair_t pair;
    th_pair_prepare(&pair, &broker, "conn-d");
    th_broker_start(&broker);
    th_pair_connect(&pair, &broker);

    stream_t streams[2] = {{&pair.pub, &pair.priv, 0, 1, 0, 0, 0, 0},
                           {&pair.priv, &pair.pub, 1, 1, 0, 0, 0, 0}};
    th_client_t *clients[2] = {&pair.pub, &pair.priv};
    int kills = 0;
    for (int round = 0; round < ROUNDS; round++) {
        uint64_t target = streams[0].stored_upto + 1 + (uint64_t)rand() % (PER_DIRECTION / ROUNDS);
        s_traffic(streams, clients, pair.conn, s_reached, target, 30000);
        //  Then the kill: every third round at once (the STORED just read must
        //  already be durable), else at a random instant: more traffic for
        //  0-4 ms, then 0-3 ms in which the broker works unobserved.
        if (round % 3 != 0) {
            s_traffic(streams, clients, pair.conn, s_time_passed,
                      (uint64_t)(th_now_ms() + rand() % 5), 30000);
            usleep((useconds_t)(rand() % 3000));
        }
        int status = th_broker_stop(&broker, SIGKILL);
        assert_int_equal(status, 128 + SIGKILL);
        kills++;
        if (getenv("TH_VERBOSE"))
            fprintf(stderr, "round %d: stored %llu/%llu applied %llu/%llu sent %llu\n", round,
                    (unsigned long long)streams[0].stored_upto,
                    (unsigned long long)streams[1].stored_upto,
                    (unsigned long long)streams[0].applied, (unsigned long long)streams[1].applied,
                    (unsigned long long)streams[0].next_send - 1);
        th_broker_start(&broker);
        s_rejoin(&pair, streams, round % 2 == 0);
    }
    s_traffic(streams, clients, pair.conn, s_done, 0, 60000);
    fprintf(stderr,
            "kills %d; public->private stored %llu applied %llu redelivered %llu resent %llu; "
            "private->public stored %llu applied %llu redelivered %llu resent %llu\n",
            kills, (unsigned long long)streams[0].stored_upto,
            (unsigned long long)streams[0].applied, (unsigned long long)streams[0].redelivered,
            (unsigned long long)streams[0].resent, (unsigned long long)streams[1].stored_upto,
            (unsigned long long)streams[1].applied, (unsigned long long)streams[1].redelivered,
            (unsigned long long)streams[1].resent);

    //  Everything consumed: the queues are empty and stay empty over a restart.
    th_sync(&pair.pub);
    th_sync(&pair.priv);
    assert_int_equal(th_broker_stop(&broker, SIGTERM), 0);
    th_broker_start(&broker);
    s_rejoin(&pair, streams, true);
    th_expect_silence(&pair.priv, 300);
    th_expect_silence(&pair.pub, 100);
    const char *dirs[2] = {"public_to_private", "private_to_public"};
    for (int i = 0; i < 2; i++) {
        char labels[128];
        snprintf(labels, sizeof labels, "connection=\"conn-d\",direction=\"%s\"", dirs[i]);
        assert_int_equal(th_metric(&broker, "twinsync_broker_queue_messages_ready", labels), 0);
        assert_int_equal(th_metric(&broker, "twinsync_broker_queue_bytes", labels), 0);
        assert_int_equal(th_metric(&broker, "twinsync_broker_queue_last_stored_sequence", labels),
                         PER_DIRECTION);
    }
    th_pair_close(&pair);
    th_broker_cleanup(&broker);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigkill_rounds),
    };
    return TH_MAIN(tests);
}
