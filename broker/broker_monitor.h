/*  broker_monitor.h: counts what never becomes a message: failed CURVE
    handshakes (a wrong broker key, a client that is not CURVE, a ZAP
    refusal) on the ROUTER socket.

    libzmq reports them as socket monitor events on an inproc PAIR socket;
    the main loop polls it and hands each event here, which counts it in
    broker_metrics_t (twinsync_broker_handshakes_failed_total{reason}) and
    logs it with a rate limit.
*/
#ifndef BROKER_MONITOR_H
#define BROKER_MONITOR_H

#include "broker_metrics.h"

typedef struct broker_monitor_t broker_monitor_t;

//  Starts monitoring socket (in context ctx). Returns NULL with errno set.
broker_monitor_t *broker_monitor_new(void *ctx, void *socket);

//  Stops monitoring and frees; sets *self_p to NULL; accepts NULL.
void broker_monitor_destroy(broker_monitor_t **self_p);

//  The PAIR socket to poll (ZMQ_POLLIN).
void *broker_monitor_socket(broker_monitor_t *self);

//  Reads every pending event without blocking and counts it in metrics.
//  Returns the number of events read.
int broker_monitor_handle(broker_monitor_t *self, broker_metrics_t *metrics);

#endif
