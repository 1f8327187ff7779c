/*  rabbit_peer.c: publisher and consumer for RabbitMQ, doing the durable work the
    twinsync broker does (bench_common.h describes the run).

    Publisher: one AMQP connection, channel 1 in confirm mode, persistent
    messages (delivery_mode 2) to durable queues "TAG-0" .. "TAG-(C-1)" through
    the default exchange; at most window * conns messages unconfirmed. A confirm
    for a persistent message on a durable queue means RabbitMQ has written it to
    disk (or delivered and had it acknowledged), the promise STORED makes.
    Consumer: its own connection, one consumer per queue with manual
    acknowledgements and a prefetch of `window` each. Acknowledgements are
    cumulative, as twinsync's CONSUMED is: one basic.ack with multiple = true
    covers every delivery of the channel up to its tag, sent when nothing more
    is waiting in the input (the end of a burst) or when half the channel's
    prefetch (window * conns / 2) is unacknowledged, the cadence of the
    twinsync link (one CONSUMED per connection per burst or per half credit).

      rabbit_peer --broker.endpoint 127.0.0.1:PORT --messages N --conns C --window W
      rabbit_peer --broker.endpoint 127.0.0.1:PORT --mode probe --timeout S
          waits until the server accepts a login (for the script's start-up)
*/
#include "bench_common.h"

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#define CHANNEL 1

typedef struct {
    const bench_args_t *args;    //  the run
    amqp_connection_state_t amq; //  this side's connection
    bench_lat_t *lat;            //  consumer: latencies
} s_side_t;

static const char *s_prog = "rabbit_peer";

//  Prints what went wrong in an RPC; returns 0 when the reply is normal.
static int s_check(amqp_rpc_reply_t reply, const char *what)
{
    if (reply.reply_type == AMQP_RESPONSE_NORMAL)
        return 0;
    if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION)
        fprintf(stderr, "%s: %s: %s\n", s_prog, what, amqp_error_string2(reply.library_error));
    else
        fprintf(stderr, "%s: %s: server refused (method 0x%08x)\n", s_prog, what,
                (unsigned)reply.reply.id);
    return -1;
}

//  Connects and logs in as guest to host:port. Returns the connection, or NULL
//  (quiet when quiet is true, for the start-up probe).
static amqp_connection_state_t s_connect(const char *endpoint, bool quiet)
{
    char host[256];
    const char *colon = strrchr(endpoint, ':');
    if (colon == NULL || (size_t)(colon - endpoint) >= sizeof host) {
        fprintf(stderr, "%s: endpoint must be HOST:PORT, not %s\n", s_prog, endpoint);
        return NULL;
    }
    memcpy(host, endpoint, (size_t)(colon - endpoint));
    host[colon - endpoint] = '\0';
    amqp_connection_state_t amq = amqp_new_connection();
    amqp_socket_t *socket = amqp_tcp_socket_new(amq);
    if (socket == NULL ||
        amqp_socket_open(socket, host, (int)strtol(colon + 1, NULL, 10)) != AMQP_STATUS_OK) {
        if (!quiet)
            fprintf(stderr, "%s: cannot connect to %s\n", s_prog, endpoint);
        amqp_destroy_connection(amq);
        return NULL;
    }
    amqp_rpc_reply_t reply =
        amqp_login(amq, "/", 0, 1 << 20, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest");
    if ((quiet && reply.reply_type != AMQP_RESPONSE_NORMAL) ||
        (!quiet && s_check(reply, "login") != 0)) {
        amqp_destroy_connection(amq);
        return NULL;
    }
    amqp_channel_open(amq, CHANNEL);
    if (s_check(amqp_get_rpc_reply(amq), "channel open") != 0) {
        amqp_destroy_connection(amq);
        return NULL;
    }
    return amq;
}

static void s_close(amqp_connection_state_t amq)
{
    if (amq == NULL)
        return;
    amqp_channel_close(amq, CHANNEL, AMQP_REPLY_SUCCESS);
    amqp_connection_close(amq, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(amq);
}

static void s_queue_name(const bench_args_t *args, uint32_t q, char *name, size_t size)
{
    snprintf(name, size, "%s-%u", args->tag, q);
}

//  Declares the run's durable queues.
static int s_declare(const bench_args_t *args, amqp_connection_state_t amq)
{
    for (uint32_t q = 0; q < args->conns; q++) {
        char name[128];
        s_queue_name(args, q, name, sizeof name);
        amqp_queue_declare(amq, CHANNEL, amqp_cstring_bytes(name), 0, 1, 0, 0, amqp_empty_table);
        if (s_check(amqp_get_rpc_reply(amq), "queue declare") != 0)
            return -1;
    }
    return 0;
}

//  Applies a basic.ack (delivery_tag, multiple) to the acked table; returns how
//  many messages it newly confirms.
static uint64_t s_confirm(uint8_t *acked, uint64_t published, uint64_t *lowest,
                          const amqp_basic_ack_t *ack)
{
    uint64_t newly = 0;
    uint64_t first = ack->multiple ? *lowest : ack->delivery_tag;
    for (uint64_t tag = first; tag <= ack->delivery_tag && tag <= published; tag++) {
        if (acked[tag] == 0) {
            acked[tag] = 1;
            newly++;
        }
    }
    while (*lowest <= published && acked[*lowest])
        (*lowest)++;
    return newly;
}

static int s_publish(void *arg)
{
    s_side_t *self = arg;
    const bench_args_t *args = self->args;
    uint8_t *acked = calloc(args->messages + 2, 1); //  by delivery tag, from 1
    uint8_t *body = malloc(args->size);
    uint64_t deadline = bench_now_ns() + (uint64_t)args->timeout_s * 1000000000u;
    uint64_t published = 0, confirmed = 0, lowest = 1;
    uint64_t limit = (uint64_t)args->window * args->conns;
    amqp_basic_properties_t props = {._flags = AMQP_BASIC_DELIVERY_MODE_FLAG, .delivery_mode = 2};
    int rc = -1;
    if (acked == NULL || body == NULL)
        goto done;
    while (confirmed < args->messages) {
        while (published < args->messages && published - confirmed < limit) {
            uint32_t q = bench_queue_of(args, published);
            char name[128];
            s_queue_name(args, q, name, sizeof name);
            bench_payload_fill(body, args->size, q, bench_seq_of(args, published));
            amqp_bytes_t bytes = {.len = args->size, .bytes = body};
            if (amqp_basic_publish(self->amq, CHANNEL, amqp_empty_bytes, amqp_cstring_bytes(name),
                                   0, 0, &props, bytes) != AMQP_STATUS_OK) {
                fprintf(stderr, "%s: publish failed\n", s_prog);
                goto done;
            }
            published++;
        }
        amqp_frame_t frame;
        struct timeval tv = {.tv_sec = 0, .tv_usec = 100000};
        int status = amqp_simple_wait_frame_noblock(self->amq, &frame, &tv);
        if (status == AMQP_STATUS_OK && frame.frame_type == AMQP_FRAME_METHOD) {
            if (frame.payload.method.id == AMQP_BASIC_ACK_METHOD)
                confirmed += s_confirm(acked, published, &lowest, frame.payload.method.decoded);
            else if (frame.payload.method.id == AMQP_BASIC_NACK_METHOD) {
                fprintf(stderr, "%s: the server refused a message (nack)\n", s_prog);
                goto done;
            }
        } else if (status != AMQP_STATUS_OK && status != AMQP_STATUS_TIMEOUT) {
            fprintf(stderr, "%s: waiting for confirms: %s\n", s_prog, amqp_error_string2(status));
            goto done;
        }
        amqp_maybe_release_buffers(self->amq);
        if (bench_expired(deadline, s_prog, "waiting for confirms"))
            goto done;
    }
    rc = 0;
done:
    free(body);
    free(acked);
    return rc;
}

static int s_consume(void *arg)
{
    s_side_t *self = arg;
    const bench_args_t *args = self->args;
    uint64_t deadline = bench_now_ns() + (uint64_t)args->timeout_s * 1000000000u;
    uint64_t consumed = 0, pending = 0, last_tag = 0;
    uint64_t ack_every = (uint64_t)args->window * args->conns / 2;
    if (ack_every == 0)
        ack_every = 1;
    while (consumed < args->messages) {
        amqp_envelope_t envelope;
        struct timeval tv = {.tv_sec = 0, .tv_usec = 100000};
        amqp_maybe_release_buffers(self->amq);
        amqp_rpc_reply_t reply = amqp_consume_message(self->amq, &envelope, &tv, 0);
        if (reply.reply_type == AMQP_RESPONSE_NORMAL) {
            uint64_t sent, seq;
            uint32_t q;
            if (bench_payload_read(envelope.message.body.bytes, envelope.message.body.len, &sent,
                                   &q, &seq) == 0)
                bench_lat_add(self->lat, sent);
            last_tag = envelope.delivery_tag;
            amqp_destroy_envelope(&envelope);
            consumed++;
            pending++;
            bool burst_over = !amqp_data_in_buffer(self->amq) && !amqp_frames_enqueued(self->amq);
            if (pending >= ack_every || burst_over || consumed == args->messages) {
                int status = amqp_basic_ack(self->amq, CHANNEL, last_tag, 1);
                if (status != AMQP_STATUS_OK) {
                    fprintf(stderr, "%s: ack failed: %s\n", s_prog, amqp_error_string2(status));
                    return -1;
                }
                pending = 0;
            }
        } else if (!(reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
                     reply.library_error == AMQP_STATUS_TIMEOUT)) {
            s_check(reply, "consume");
            return -1;
        }
        if (bench_expired(deadline, s_prog, "waiting for deliveries"))
            return -1;
    }
    return 0;
}

//  Opens the consumer's connection: queues, prefetch, one consumer per queue.
static amqp_connection_state_t s_subscribe(const bench_args_t *args)
{
    amqp_connection_state_t amq = s_connect(args->endpoint, false);
    if (amq == NULL || s_declare(args, amq) != 0)
        goto fail;
    amqp_basic_qos(amq, CHANNEL, 0, (uint16_t)args->window, 0);
    if (s_check(amqp_get_rpc_reply(amq), "basic.qos") != 0)
        goto fail;
    for (uint32_t q = 0; q < args->conns; q++) {
        char name[128];
        s_queue_name(args, q, name, sizeof name);
        amqp_basic_consume(amq, CHANNEL, amqp_cstring_bytes(name), amqp_empty_bytes, 0, 0, 0,
                           amqp_empty_table);
        if (s_check(amqp_get_rpc_reply(amq), "basic.consume") != 0)
            goto fail;
    }
    return amq;
fail:
    s_close(amq);
    return NULL;
}

//  Retries a login until it works or the timeout passes.
static int s_probe(const bench_args_t *args)
{
    uint64_t deadline = bench_now_ns() + (uint64_t)args->timeout_s * 1000000000u;
    while (!bench_expired(deadline, s_prog, "waiting for RabbitMQ to accept a login")) {
        amqp_connection_state_t amq = s_connect(args->endpoint, true);
        if (amq != NULL) {
            s_close(amq);
            return 0;
        }
        usleep(200000);
    }
    return -1;
}

int main(int argc, char **argv)
{
    bench_args_t args;
    if (bench_args_parse(argc, argv, s_prog, &args) != 0)
        return 2;
    if (strcmp(args.mode, "probe") == 0)
        return s_probe(&args) == 0 ? 0 : 1;
    s_side_t consumer = {.args = &args, .lat = bench_lat_new(args.messages)};
    s_side_t publisher = {.args = &args};
    int rc = 1;
    consumer.amq = s_subscribe(&args);
    if (consumer.amq == NULL || consumer.lat == NULL)
        goto done;
    publisher.amq = s_connect(args.endpoint, false);
    if (publisher.amq == NULL)
        goto done;
    amqp_confirm_select(publisher.amq, CHANNEL);
    if (s_check(amqp_get_rpc_reply(publisher.amq), "confirm.select") != 0)
        goto done;
    uint64_t elapsed = 0;
    if (bench_run(s_consume, &consumer, s_publish, &publisher, &elapsed) != 0)
        goto done;
    bench_result_print("rabbitmq", &args, args.messages, elapsed, consumer.lat);
    rc = 0;
done:
    s_close(publisher.amq);
    s_close(consumer.amq);
    bench_lat_destroy(&consumer.lat);
    return rc;
}
