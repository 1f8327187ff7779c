/*  broker_core.h: the broker's protocol engine, without sockets.

    The core knows peers (sessions, one per CURVE key; the ZeroMQ routing id
    is only where its replies go), connections (who owns and who joined
    them) and their two queues, one per direction.
    It takes frames in (broker_core_handle), and gives frames out through a
    send callback, so that the daemon (broker_server.c), the tests and the
    fuzzer drive the same code.

    Batching (group commit): the caller hands in every frame it can read
    without blocking, up to a batch limit, then calls broker_core_flush (or
    broker_core_pump, its pipelined form, see there). Writes of the batch go
    into one store transaction; flush commits it (one WAL fdatasync), then
    sends every reply of the batch in order (STORED, JOINED, WELCOME,
    ERROR, PONG ...), then delivers within each receiver's credit window
    (from a queue's in-memory tail when it holds the message, else from the
    store) what is durable. Nothing that needs durability is answered or
    delivered before its commit's sync returned. A
    batch that answers nothing (only CONSUMED) is not committed at once: it
    joins the next commit (the next batch with a reply, at most 64 batches
    later, or the next tick); a crash before then only re-delivers messages
    the receiver already applied, which it discards.

    Authorisation, per message, by the CURVE key (ZAP User-Id, Z85):
      - public nodes: keys listed in the configuration; may HELLO, INVITE,
        PUBLISH and CONSUME on the connections they invited;
      - private nodes: any other key; may HELLO and JOIN with a valid token,
        which binds the key to the connection; then PUBLISH and CONSUME on it;
      - the direction of a PUBLISH/CONSUMED follows from the sender's role
        on that connection; a key that names a connection it is not bound to
        gets ERROR 403.
    Sessions are bound to keys: a frame is of a session only when both its
    key and its routing id are the session's. Another key can neither take
    a session over nor end it (a frame on a session's routing id with
    another key is refused, key_mismatch); the same key's HELLO from a new
    routing id (a node that restarted or reconnected) replaces its own
    session at once.
    Admission: a key bound to no connection (not a listed public key, not
    the key of a joined private node) is a guest. A guest may HELLO, JOIN
    and PING; its session ends guest_grace_ms after its HELLO unless a JOIN
    bound its key; guests have a budget of their own (max_guests, and
    max_guests_per_address per sender address), so that max_peers counts
    known keys only and a flood of random keys never keeps a node out.
    Every refusal is counted by reason (broker_metrics_t) and logged with a
    rate limit.
*/
#ifndef BROKER_CORE_H
#define BROKER_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker_config.h"
#include "broker_metrics.h"
#include "broker_store.h"
#include "proto_buf.h"

//  Queue directions; the label values are "public_to_private" and
//  "private_to_public".
typedef enum {
    BROKER_DIR_TO_PRIVATE = 0, //  Published by the public node
    BROKER_DIR_TO_PUBLIC = 1   //  Published by the private node
} broker_dir_t;

//  Sends one frame to routing id rid. Returns 0, or -1 with errno
//  EHOSTUNREACH (the peer is gone) or EAGAIN (its queue is full); the core
//  treats any other errno as EAGAIN.
typedef int (*broker_send_fn)(void *arg, const uint8_t *rid, size_t rid_size, const uint8_t *data,
                              size_t size);

typedef struct broker_core_t broker_core_t;

//  Who sent a frame, as the socket tells it.
typedef struct {
    const uint8_t *rid;  //  ZeroMQ routing id of the pipe it came on: where replies go
    size_t rid_size;     //  Bytes in rid
    const char *key;     //  CURVE key (ZAP User-Id, Z85), NULL when the message carried none
    const char *address; //  Network address (ZeroMQ Peer-Address), NULL when unknown
} broker_sender_t;

//  Makes a core over store (borrowed, must outlive the core) and config
//  (borrowed), loading connections and queue counters from the store.
//  Returns NULL with a reason in err.
broker_core_t *broker_core_new(broker_store_t *store, const broker_config_t *config,
                               broker_send_fn send, void *send_arg, char *err, size_t errlen);

//  Frees the core and sets *self_p to NULL; accepts NULL. Does not commit.
void broker_core_destroy(broker_core_t **self_p);

//  Handles one frame from sender from (borrowed for the call). now_ms is
//  CLOCK_REALTIME in ms. Replies wait for broker_core_flush. Returns 0, or
//  -1 when the store failed (fatal: stop without flushing;
//  broker_core_error says why).
int broker_core_handle(broker_core_t *self, const broker_sender_t *from, const uint8_t *data,
                       size_t size, int64_t now_ms);

//  Counts (and logs, rate-limited) a frame the caller refused before it
//  reached broker_core_handle, e.g. a multipart message.
void broker_core_reject(broker_core_t *self, broker_reject_t reason, const char *detail);

//  Commits the batch, waits until it is durable, sends its replies, then
//  delivers. Returns 0, or -1 when the commit failed (fatal: the caller
//  must exit non-zero without sending anything else).
int broker_core_flush(broker_core_t *self, int64_t now_ms);

//  The pipelined flush, which never waits for the disk: if the sync in
//  flight is over, sends its replies; then, with no sync in flight,
//  commits what was handled since (one group, however many batches) and
//  starts its sync on the store's sync thread; then delivers what is
//  durable. Call it after each batch and whenever broker_store_sync_fd is
//  readable. Replies of a group leave only once its sync returned, in
//  order, after those of the group before. Returns 0, or -1 (fatal, as
//  broker_core_flush).
int broker_core_pump(broker_core_t *self, int64_t now_ms);

//  Tells the core how to see that no frame waits to be read (idle returns
//  true then): a commit made while idle is synced on the calling thread.
//  NULL (the default): every commit's sync goes to the sync thread.
void broker_core_set_idle(broker_core_t *self, bool (*idle)(void *arg), void *arg);

//  True while a commit's sync is in flight (its replies wait for it).
bool broker_core_syncing(const broker_core_t *self);

//  Heartbeats: PINGs idle peers, drops peers silent for liveness
//  heartbeats (their deliveries will be made again) and guests whose grace
//  is over, and commits what flush left uncommitted. Call at least every heartbeat_ms / 2. Returns
//  0, or -1 as broker_core_flush.
int broker_core_tick(broker_core_t *self, int64_t now_ms);

//  Commits whatever flush left uncommitted (removals of CONSUMED messages;
//  see below). Call it before stopping. Returns 0, or -1 (fatal).
int broker_core_commit(broker_core_t *self);

//  Writes every metric in Prometheus text format into out (contents
//  replaced). extra may add broker-wide counters owned by the caller.
void broker_core_write_metrics(broker_core_t *self, proto_buf_t *out, int64_t now_ms);

//  The counters the core keeps (owned by the core; the caller may add to
//  fields it observes itself, e.g. handshakes_refused).
broker_metrics_t *broker_core_metrics(broker_core_t *self);

//  Why the last fatal failure happened.
const char *broker_core_error(const broker_core_t *self);

//  Number of live sessions, guests included.
size_t broker_core_peer_count(const broker_core_t *self);

//  Number of live guest sessions (keys bound to no connection).
size_t broker_core_guest_count(const broker_core_t *self);

#endif
