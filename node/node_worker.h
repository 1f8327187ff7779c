/*  node_worker.h: the node daemon's worker thread and the channel between it
    and the loop (node_engine.h says what each thread owns).

    The two threads share no memory but three flags; they talk over an inproc
    ZeroMQ PAIR with multipart messages:

      loop -> worker   DELIVER conn seq payload   node_worker_deliver
                       FORGET conn                node_worker_forget
                       STOP                       node_worker_stop
      worker -> loop   CONSUMED conn seq          conn's message seq is applied
                       OUTBOX conn                conn's outbox may have grown
                       FATAL                      the worker gave up for good

    The worker keeps each connection's inbound messages in seq order (a seq
    already queued is dropped), applies them strictly in order through
    ops->apply, waits and backs off after failures, and, once the loop has
    reported the broker's WELCOME (node_worker_welcome), polls the
    connections that are due and carries out admin requests on its tick.
    ServiceNow and the state database are behind ops: the engine's ops call
    node_sync, and tests/node/test_engine.c drives this hand-off with its own.

    Neither direction has a high-water mark, so no send ever blocks: the loop
    never waits for a worker busy with ServiceNow, and a worker that answers
    while the loop has stopped reading cannot hang the shutdown. What the loop
    hands over is bounded by the broker's credit window.
*/
#ifndef NODE_WORKER_H
#define NODE_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "node_sync.h"
#include "proto_msg.h"

typedef struct node_worker node_worker_t;

//  A connection as ops->list reports it.
typedef struct {
    char id[PROTO_MAX_ID + 1]; //  Connection id
    bool pollable;             //  Active or in error: polled when due
} node_worker_conn_t;

//  What the worker calls, all on its own thread. arg is handed to each.
typedef struct {
    void *arg;                //  Handed to every call
    int64_t poll_interval_ms; //  Between polls of a connection; base of the back-off
    //  The connections, as a malloc'ed array the worker frees (NULL when
    //  none). Returns 0, or -1 when the worker must give up.
    int (*list)(void *arg, node_worker_conn_t **conns_p, size_t *count_p);
    //  One poll of conn; sets *sent when it wrote outbox rows.
    node_sync_rc_t (*poll)(void *arg, const char *conn, bool *sent);
    //  Admin requests and retries, on every tick.
    node_sync_rc_t (*requests)(void *arg);
    //  Applies one inbound payload, as node_sync_apply.
    node_sync_rc_t (*apply)(void *arg, const char *conn, uint64_t seq, const uint8_t *payload,
                            size_t size);
    //  conn was deleted: drop what is kept about it. May be NULL.
    void (*forget)(void *arg, const char *conn);
} node_worker_ops_t;

//  Makes the channel on zmq_ctx (its two PAIR ends) and the worker's state;
//  the thread starts with node_worker_start. ops is copied. Returns the
//  worker owned by the caller, or NULL with a reason in err.
node_worker_t *node_worker_new(void *zmq_ctx, const node_worker_ops_t *ops, char *err,
                               size_t errlen);

//  Stops the thread (node_worker_stop, then waits for the message it is
//  applying), closes both ends and frees what is still queued: those
//  messages were never CONSUMED, so the broker delivers them again. Sets
//  *self_p to NULL; accepts NULL.
void node_worker_destroy(node_worker_t **self_p);

//  Starts the worker thread. Returns 0, or -1 when it cannot be created.
int node_worker_start(node_worker_t *self);

//  --- the loop's side (one thread, the one that made the worker)

//  The loop's end of the channel, to poll for ZMQ_POLLIN with the link.
void *node_worker_socket(node_worker_t *self);

//  Hands an inbound message to the worker (the payload is copied).
void node_worker_deliver(node_worker_t *self, const char *conn, uint64_t seq,
                         const uint8_t *payload, size_t size);

//  Tells the worker that conn was deleted: its queued messages are dropped.
void node_worker_forget(node_worker_t *self, const char *conn);

//  The broker has confirmed where this node's queues stand: the worker may
//  poll, carry out requests and retry (they take sequence numbers).
void node_worker_welcome(node_worker_t *self);

//  Asks the thread to stop without waiting for it: it finishes the call it
//  is in and applies nothing more. Idempotent.
void node_worker_stop(node_worker_t *self);

//  True once the worker has given up (it also sent FATAL).
bool node_worker_failed(node_worker_t *self);

typedef enum {
    NODE_WORKER_CONSUMED, //  conn's message seq is applied durably
    NODE_WORKER_OUTBOX,   //  conn's outbox may have grown
    NODE_WORKER_FATAL     //  the worker gave up
} node_worker_kind_t;

//  One answer of the worker.
typedef struct {
    node_worker_kind_t kind;     //  What it says
    char conn[PROTO_MAX_ID + 1]; //  Connection ("" for FATAL)
    uint64_t seq;                //  CONSUMED: the message applied
} node_worker_answer_t;

//  Takes the next answer without waiting. Returns 0, or -1 when none waits.
int node_worker_answer(node_worker_t *self, node_worker_answer_t *answer);

#endif
