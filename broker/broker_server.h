/*  broker_server.h: the running daemon: sockets, main loop, signals.

    broker_server_new opens the store, loads or makes the CURVE key pair,
    starts the ZAP handler, binds the ROUTER socket (CURVE server,
    ROUTER_MANDATORY, MAXMSGSIZE = max_frame; no handover: routing ids are
    ZeroMQ's, sessions are bound to CURVE keys) and the metrics endpoint,
    after raising the open-files limit to its hard limit.
    broker_server_run is the single-threaded main loop:

        poll (ROUTER, ZAP, metrics wake-up, signal pipe; timeout: heartbeat/2)
        answer ZAP requests
        read up to `batch` frames without blocking -> broker_core_handle
        broker_core_flush: one commit, then STORED & co, then DELIVERs
        broker_core_tick when due: PING idle peers, drop silent ones
        publish a metrics snapshot when one is wanted

    SIGTERM/SIGINT: unbind (no new peers), flush what was read, send the
    replies (bounded linger), exit 0. A store failure (fsync error, I/O
    error, disk full) is fatal: nothing more is sent and run returns 1.
*/
#ifndef BROKER_SERVER_H
#define BROKER_SERVER_H

#include <stddef.h>

#include "broker_config.h"

typedef struct broker_server_t broker_server_t;

//  Prepares everything run needs. config is borrowed and must outlive the
//  server. Returns NULL with one line in err that starts with the key at
//  fault when a configuration value is the cause ("endpoint: cannot bind
//  ...", "state_dir: ...", "metrics_port: ..."); logs nothing then.
broker_server_t *broker_server_new(const broker_config_t *config, char *err, size_t errlen);

//  Closes sockets, the store and the metrics endpoint; sets *self_p to NULL;
//  accepts NULL.
void broker_server_destroy(broker_server_t **self_p);

//  Runs until SIGTERM or SIGINT (returns 0) or a fatal failure (returns 1,
//  the reason logged).
int broker_server_run(broker_server_t *self);

#endif
