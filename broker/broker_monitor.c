/*  broker_monitor.c: failed handshakes from libzmq's socket monitor (see
    broker_monitor.h). An event is two frames: 6 bytes (uint16 event, uint32
    value, host order) and the endpoint.
*/
#include "broker_monitor.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "ts_log.h"

#define MONITOR_ENDPOINT "inproc://twinsync-broker-monitor"
#define MONITOR_EVENTS                                                                             \
    (ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |                  \
     ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)

struct broker_monitor_t {
    void *socket;             //  The socket monitored (borrowed)
    void *pair;               //  PAIR connected to the monitor endpoint
    ts_log_limiter_t limiter; //  Rate limit of the log lines
};

broker_monitor_t *broker_monitor_new(void *ctx, void *socket)
{
    broker_monitor_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->socket = socket;
    self->limiter.per_second = 10;
    if (zmq_socket_monitor(socket, MONITOR_ENDPOINT, MONITOR_EVENTS) != 0) {
        free(self);
        return NULL;
    }
    self->pair = zmq_socket(ctx, ZMQ_PAIR);
    int linger = 0;
    if (!self->pair || zmq_setsockopt(self->pair, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_connect(self->pair, MONITOR_ENDPOINT) != 0) {
        int saved = errno;
        broker_monitor_destroy(&self);
        errno = saved;
        return NULL;
    }
    return self;
}

void broker_monitor_destroy(broker_monitor_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    broker_monitor_t *self = *self_p;
    zmq_socket_monitor(self->socket, NULL, 0);
    if (self->pair)
        zmq_close(self->pair);
    free(self);
    *self_p = NULL;
}

void *broker_monitor_socket(broker_monitor_t *self)
{
    return self->pair;
}

static broker_handshake_t s_reason(uint16_t event)
{
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
        return BROKER_HANDSHAKE_PROTOCOL;
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
        return BROKER_HANDSHAKE_AUTH;
    return BROKER_HANDSHAKE_OTHER;
}

int broker_monitor_handle(broker_monitor_t *self, broker_metrics_t *metrics)
{
    int events = 0;
    while (true) {
        zmq_msg_t head, address;
        zmq_msg_init(&head);
        if (zmq_msg_recv(&head, self->pair, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&head);
            return events;
        }
        zmq_msg_init(&address);
        if (zmq_msg_more(&head))
            zmq_msg_recv(&address, self->pair, 0);
        if (zmq_msg_size(&head) >= 6) {
            uint16_t event;
            uint32_t value;
            memcpy(&event, zmq_msg_data(&head), sizeof event);
            memcpy(&value, (uint8_t *)zmq_msg_data(&head) + 2, sizeof value);
            broker_handshake_t reason = s_reason(event);
            metrics->handshakes_failed[reason]++;
            char endpoint[128];
            snprintf(endpoint, sizeof endpoint, "%.*s", (int)zmq_msg_size(&address),
                     (const char *)zmq_msg_data(&address));
            ts_log_limited(&self->limiter, TS_LOG_WARN, "handshake failed",
                           "reason=%s detail=0x%x endpoint=%s hint=\"wrong broker key in the "
                           "node's configuration, or not a CURVE client\"",
                           broker_handshake_name(reason), value, endpoint);
            events++;
        }
        zmq_msg_close(&address);
        zmq_msg_close(&head);
    }
}
