/*  raw_peer.c: publisher and consumer for raw_relay (the benchmark's upper bound).

    Same work as the other peers (bench_common.h): the publisher keeps at most
    `window` messages per queue without their 'S' acknowledgement, the consumer
    answers each 'D' with a 'C'. Frame: type (1) + queue (u32) + seq (u64) +
    payload.

      raw_peer --broker.endpoint tcp://127.0.0.1:PORT --messages N --conns C --window W
*/
#include "bench_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define RAW_HEADER 13

typedef struct {
    const bench_args_t *args; //  the run
    void *socket;             //  this side's DEALER
    bench_lat_t *lat;         //  consumer: latencies
    uint64_t done;            //  messages acknowledged
} s_side_t;

static const char *s_prog = "raw_peer";

//  A DEALER connected to the relay with an unlimited queue, or NULL.
static void *s_dealer(void *ctx, const char *endpoint, const char *id)
{
    void *socket = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(socket, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt(socket, ZMQ_RCVHWM, &zero, sizeof zero);
    zmq_setsockopt(socket, ZMQ_ROUTING_ID, id, strlen(id));
    if (zmq_connect(socket, endpoint) != 0) {
        fprintf(stderr, "%s: cannot connect %s: %s\n", s_prog, endpoint, zmq_strerror(zmq_errno()));
        zmq_close(socket);
        return NULL;
    }
    return socket;
}

static void s_header(uint8_t *frame, char type, uint32_t queue, uint64_t seq)
{
    frame[0] = (uint8_t)type;
    memcpy(frame + 1, &queue, 4);
    memcpy(frame + 5, &seq, 8);
}

//  Receives one frame of at least RAW_HEADER bytes within timeout_ms into msg.
//  Returns 1, 0 on timeout, -1 on error.
static int s_recv(void *socket, zmq_msg_t *msg, long timeout_ms)
{
    zmq_pollitem_t item = {socket, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, timeout_ms) < 0)
        return -1;
    if (!(item.revents & ZMQ_POLLIN))
        return 0;
    if (zmq_msg_recv(msg, socket, 0) < 0)
        return -1;
    return zmq_msg_size(msg) >= RAW_HEADER ? 1 : -1;
}

static int s_publish(void *arg)
{
    s_side_t *self = arg;
    const bench_args_t *args = self->args;
    unsigned *inflight = calloc(args->conns, sizeof *inflight);
    uint8_t *frame = malloc(RAW_HEADER + args->size);
    uint64_t deadline = bench_now_ns() + (uint64_t)args->timeout_s * 1000000000u;
    uint64_t next = 0;
    int rc = -1;
    while (self->done < args->messages) {
        while (next < args->messages && inflight[bench_queue_of(args, next)] < args->window) {
            uint32_t q = bench_queue_of(args, next);
            uint64_t seq = bench_seq_of(args, next);
            s_header(frame, 'P', q, seq);
            bench_payload_fill(frame + RAW_HEADER, args->size, q, seq);
            if (zmq_send(self->socket, frame, RAW_HEADER + args->size, 0) < 0)
                goto done;
            inflight[q]++;
            next++;
        }
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        int got = s_recv(self->socket, &msg, 100);
        if (got == 1) {
            uint32_t q;
            memcpy(&q, (uint8_t *)zmq_msg_data(&msg) + 1, 4);
            if (q < args->conns && inflight[q] > 0) {
                inflight[q]--;
                self->done++;
            }
        }
        zmq_msg_close(&msg);
        if (got < 0 || bench_expired(deadline, s_prog, "waiting for acknowledgements"))
            goto done;
    }
    rc = 0;
done:
    free(frame);
    free(inflight);
    return rc;
}

static int s_consume(void *arg)
{
    s_side_t *self = arg;
    const bench_args_t *args = self->args;
    uint64_t deadline = bench_now_ns() + (uint64_t)args->timeout_s * 1000000000u;
    while (self->done < args->messages) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        int got = s_recv(self->socket, &msg, 100);
        if (got == 1) {
            uint8_t *data = zmq_msg_data(&msg);
            uint64_t sent, seq;
            uint32_t q;
            if (bench_payload_read(data + RAW_HEADER, zmq_msg_size(&msg) - RAW_HEADER, &sent, &q,
                                   &seq) == 0)
                bench_lat_add(self->lat, sent);
            data[0] = 'C';
            if (zmq_send(self->socket, data, RAW_HEADER, 0) < 0)
                got = -1;
            self->done++;
        }
        zmq_msg_close(&msg);
        if (got < 0 || bench_expired(deadline, s_prog, "waiting for deliveries"))
            return -1;
    }
    return 0;
}

//  Says hello to the relay and waits for its answer, so that no 'D' is dropped.
static int s_subscribe(void *socket, unsigned timeout_s)
{
    uint8_t hello[RAW_HEADER];
    s_header(hello, 'H', 0, 0);
    if (zmq_send(socket, hello, sizeof hello, 0) < 0)
        return -1;
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    int got = s_recv(socket, &msg, (long)timeout_s * 1000);
    int ok = got == 1 && ((char *)zmq_msg_data(&msg))[0] == 'W';
    zmq_msg_close(&msg);
    return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    bench_args_t args;
    if (bench_args_parse(argc, argv, s_prog, &args) != 0)
        return 2;
    void *ctx = zmq_ctx_new();
    s_side_t consumer = {.args = &args, .lat = bench_lat_new(args.messages)};
    s_side_t publisher = {.args = &args};
    consumer.socket = s_dealer(ctx, args.endpoint, "sub");
    publisher.socket = s_dealer(ctx, args.endpoint, "pub");
    int rc = 1;
    if (consumer.socket == NULL || publisher.socket == NULL || consumer.lat == NULL)
        goto done;
    if (s_subscribe(consumer.socket, 10) != 0) {
        fprintf(stderr, "%s: the relay at %s did not answer\n", s_prog, args.endpoint);
        goto done;
    }
    uint64_t elapsed = 0;
    if (bench_run(s_consume, &consumer, s_publish, &publisher, &elapsed) != 0)
        goto done;
    bench_result_print("raw", &args, args.messages, elapsed, consumer.lat);
    rc = 0;
done:
    bench_lat_destroy(&consumer.lat);
    zmq_close(consumer.socket);
    zmq_close(publisher.socket);
    zmq_ctx_term(ctx);
    return rc;
}
