/*  node_engine.h: the node daemon (`twinsync-public run`, `twinsync-private
    run`).

    Two threads:

      loop    (the caller's thread) owns the broker link (link_broker.h) and
              its end of the channel to the worker, and never waits for HTTP:
              heartbeats, STORED and CONSUMED keep flowing while ServiceNow is
              slow. It feeds link_publish from the outbox, deletes outbox rows
              on STORED, forwards DELIVERs to the worker and CONSUMEDs back,
              sends INVITE / JOIN for connections the admin commands created,
              marks them active on JOINED, and publishes a heartbeat and the
              link state in the state database for `status`.
      worker  owns the ServiceNow client and node_sync.h: polls every active
              connection each poll interval, applies inbound messages strictly
              in order per connection, carries out admin requests (exalate)
              and retries; tells the loop when the outbox grew and which
              messages are applied.

    Loop <-> worker messages (inproc, multipart; node_worker.h): DELIVER conn
    seq payload; CONSUMED conn seq; OUTBOX conn; FORGET conn; STOP; FATAL.
    Each thread has its own node_state_t on the same database (WAL).

    The admin commands never talk to the daemon: they write to the database
    (new connections, requests, retry marks, status changes) and the daemon
    picks changes up within a second (loop) or a poll interval (worker).
*/
#ifndef NODE_ENGINE_H
#define NODE_ENGINE_H

#include <signal.h>

#include "node_config.h"

typedef struct node_engine node_engine_t;

//  Prepares the daemon: opens the state, reads the secrets, makes the node's
//  CURVE key pair on first start, builds the ServiceNow client. Returns the
//  engine owned by the caller, or NULL with a reason in err.
node_engine_t *node_engine_new(const node_config_t *cfg, char *err, size_t errlen);

//  Stops and frees the engine; sets *self_p to NULL; accepts NULL.
void node_engine_destroy(node_engine_t **self_p);

//  Runs until *stop becomes non-zero (set it from a signal handler) or a
//  fatal error. Returns 0 after a requested stop, 1 after a fatal error.
int node_engine_run(node_engine_t *self, volatile sig_atomic_t *stop);

#endif
