/*  broker_http.h: /metrics and /healthz on a loopback HTTP port.

    libmicrohttpd serves from its own thread. The main loop owns every
    number, so the HTTP thread never reads broker state: on a /metrics
    request it raises a flag (an eventfd the main loop polls) and waits, up
    to a second, for the main loop to publish a fresh snapshot; if the loop
    is busy it serves the previous one. /healthz answers 200 "ok" while the
    main loop has run in the last few seconds, 503 otherwise.
*/
#ifndef BROKER_HTTP_H
#define BROKER_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct broker_http_t broker_http_t;

//  Listens on 127.0.0.1:port. Returns NULL with a reason in err.
broker_http_t *broker_http_new(int port, char *err, size_t errlen);

//  Stops the server thread and frees; sets *self_p to NULL; accepts NULL.
void broker_http_destroy(broker_http_t **self_p);

//  File descriptor that becomes readable when a snapshot is wanted.
int broker_http_wake_fd(const broker_http_t *self);

//  True (once) when a snapshot was asked for since the last call.
bool broker_http_wanted(broker_http_t *self);

//  Replaces the snapshot with a copy of text and wakes waiting requests.
void broker_http_publish(broker_http_t *self, const void *text, size_t size);

//  Records that the main loop is alive at now_ms (monotonic).
void broker_http_alive(broker_http_t *self, int64_t now_ms);

#endif
