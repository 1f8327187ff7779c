/*  broker_core.c: sessions, connections, queues, authorisation, credit
    (see broker_core.h for the contract).

    Layout of the state:
      peers   an array of sessions (peer_t *), one per CURVE key that said
              HELLO, each with the routing id its replies go to. A frame
              belongs to a session only when key and routing id both match:
              a newer HELLO of the same key (from any routing id) replaces
              the older session, whose deliveries are then made again; a
              frame of another key never touches it. Guests (keys bound to
              no connection) are sessions too, with their own budget and a
              grace after which they end (see s_on_hello).
      conns   an array of connections (conn_t *), loaded from the store at
              start. Each has two queues, indexed by direction; queue d is
              published by side d and received by side 1 - d, where side 0
              is the public node and side 1 the private node (so the
              direction of a message is simply the sender's side).

    A queue's in-memory state mirrors its store row (last_seq, count, bytes,
    and of those the file data: file_count, file_bytes) plus the delivery
    state of the current receiver session: delivered_upto (highest seq sent
    in this session) and unacked (sent, not consumed, and unacked_bytes).
    When the receiver changes or goes away, they reset to zero, so that
    everything unconsumed is delivered again to the next session.

    Lookups are linear scans: a broker serves tens to hundreds of
    connections, and a scan of that size costs less than one commit.
*/
#include "broker_core.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker_tail.h"
#include "proto_msg.h"
#include "ts_log.h"

#define RID_MAX      256 //  ZeroMQ routing ids are at most 255 bytes
#define SIDE_PUBLIC  0
#define SIDE_PRIVATE 1

//  In-memory tails (broker_tail.h): a queue with a receiver keeps its newest
//  messages so that delivering them reads nothing back from the store. The
//  bound is broker-wide, so a million queued messages or ten thousand
//  connections never cost more than TAILS_BYTES_MAX of RSS.
#define TAIL_BYTES      (256 * 1024)       //  Payload bytes per queue's tail
#define TAIL_COUNT      1024               //  Messages per queue's tail
#define TAILS_BYTES_MAX (16 * 1024 * 1024) //  All tails together

//  Payload bytes delivered and not yet consumed, per queue, besides the
//  credit's count: 64 file chunks of 512 KiB would otherwise lie in the
//  broker's output for one receiver (32 MiB); 8 of them keep a receiver
//  busy as well. A message is always delivered when nothing is unacked.
#define UNACKED_BYTES_MAX (4 * 1024 * 1024)

#define DEFER_BATCHES_MAX 64  //  Batches of CONSUMED only that may share one commit
#define BROKER_BATCH_MAX  256 //  Most messages per PUBLISH / DELIVER frame (WELCOME.batch)

#define ADDRESS_MAX 64 //  Longest peer address kept (an IPv6 text is at most 45)

typedef struct {
    uint8_t rid[RID_MAX];        //  Routing id: where its frames go, not who it is
    size_t rid_size;             //  Bytes in rid
    char key[41];                //  CURVE key (Z85) of the session: who it is
    char address[ADDRESS_MAX];   //  Network address it came from ("" when unknown)
    char node[PROTO_MAX_ID + 1]; //  Node id from HELLO
    int side;                    //  SIDE_PUBLIC or SIDE_PRIVATE
    bool guest;                  //  Key bound to no connection: HELLO, JOIN, PING only
    int64_t since_ms;            //  When its HELLO came (a guest's grace runs from it)
    uint32_t credit;             //  Delivery window the node asked for
    uint32_t batch;              //  Most messages per DELIVER it takes (HELLO.batch, >= 1)
    int64_t last_seen_ms;        //  Last frame received
    int64_t last_sent_ms;        //  Last frame sent
    uint64_t ready_batch;        //  Group of its WELCOME / JOINED: no DELIVER before it is sent
} peer_t;

typedef struct {
    int64_t qid;             //  Store id
    uint64_t last_seq;       //  Highest seq stored (duplicate filter)
    uint64_t committed_seq;  //  last_seq when the store last committed
    uint64_t durable_seq;    //  Highest seq durable: the only ones delivered
    uint64_t count;          //  Messages held
    uint64_t bytes;          //  Payload bytes held, records and files (max_queue_bytes)
    uint64_t file_count;     //  Of the messages held: file data (PUBLISH "file")
    uint64_t file_bytes;     //  Their payload bytes
    uint64_t delivered_upto; //  Highest seq sent to the current receiver session
    uint64_t unacked;        //  Sent in this session, not consumed
    uint64_t unacked_bytes;  //  Their payload bytes (at most UNACKED_BYTES_MAX + one message)
    uint64_t consume_to;     //  Highest seq a CONSUMED named, not removed yet (0: none)
    uint64_t max_delivered;  //  Highest seq ever sent since start (redelivery count)
    int64_t oldest_ms;       //  stored_at of the head message, 0 if empty
    bool oldest_stale;       //  oldest_ms must be read again
    bool dirty;              //  Counters changed in the open transaction
    bool wake;               //  Try to deliver at the next flush
    uint64_t stored_batch;   //  Batch in which stored_reply was queued
    size_t stored_reply;     //  Index of this batch's STORED in replies
    uint64_t stored_seq;     //  The seq it carries
    broker_tail_t *tail;     //  Newest messages in memory while a receiver is attached, or NULL
    uint64_t published;      //  PUBLISH frames accepted (new and duplicates)
    uint64_t stored;         //  Messages stored
    uint64_t delivered;      //  DELIVER frames sent
    uint64_t consumed;       //  Messages removed by CONSUMED or HELLO
    uint64_t redelivered;    //  DELIVERs of a seq already sent before
    uint64_t duplicates;     //  PUBLISHes of a seq already stored
} queue_t;

typedef struct {
    char *id;                //  Connection id
    char *key[2];            //  Public and private node keys ("" if none)
    char *desc[2];           //  Public and private node descriptions
    bool has_kx;             //  JOIN brought the key exchange: kx and auth below
    uint8_t kx[32];          //  JOIN's kx, relayed to the public node (opaque)
    uint8_t auth[32];        //  JOIN's auth, relayed to the public node (opaque)
    uint8_t token_hash[32];  //  SHA-256 of the join token
    int64_t expires;         //  Unix seconds
    bool token_used;         //  Joined
    int64_t created;         //  Unix seconds
    queue_t queue[2];        //  By direction (= sender's side)
    peer_t *peer[2];         //  Sessions of the two sides, or NULL
    int64_t last_seen_ms[2]; //  When each side was last heard from
} conn_t;

typedef struct {
    uint8_t rid[RID_MAX]; //  Destination
    size_t rid_size;      //  Bytes in rid
    size_t offset;        //  Encoded frame: its place in replies_t.data
    size_t size;          //  Bytes of the frame
    bool cancelled;       //  Covered by a later cumulative STORED: not sent
} reply_t;

//  The replies of one commit group, sent once it is durable.
typedef struct {
    reply_t *list;    //  Replies, in order
    size_t count;     //  Entries in list
    size_t cap;       //  Allocated entries
    proto_buf_t data; //  Their encoded frames, one after another
} replies_t;

struct broker_core_t {
    broker_store_t *store;         //  Borrowed
    const broker_config_t *config; //  Borrowed
    broker_send_fn send;           //  Frame output
    void *send_arg;                //  Its argument
    proto_limits_t limits;         //  Decode limits from the config
    peer_t **peers;                //  Sessions
    size_t peers_count;            //  Entries in peers
    size_t peers_cap;              //  Allocated entries
    conn_t **conns;                //  Connections
    size_t conns_count;            //  Entries in conns
    size_t conns_cap;              //  Allocated entries
    replies_t groups[2];           //  Replies of the open group and of the one syncing
    replies_t *open;               //  Replies to writes not yet committed (and to others)
    replies_t *syncing;            //  Replies of the commit being synced, or NULL
    uint64_t batch;                //  Number of the open commit group (from 1)
    uint64_t syncing_batch;        //  Number of the group syncing
    uint64_t sent_batch;           //  Highest group whose replies are sent
    size_t tails_bytes;            //  Memory the queues' tails hold, at most TAILS_BYTES_MAX
    int deferred;                  //  Batches of removals only waiting for a commit
    bool consumes_waiting;         //  Some queue's consume_to is set
    bool (*idle)(void *arg);       //  True when no frame waits to be read, or NULL
    void *idle_arg;                //  Its argument
    proto_buf_t buf;               //  Encode buffer
    proto_buf_t dbuf;              //  Payloads of the DELIVER batch being built
    size_t deliver_frame;          //  Largest DELIVER batch frame (bytes)
    broker_metrics_t metrics;      //  Broker-wide counters
    ts_log_limiter_t limiter;      //  Rate limit of refusal logs
    ts_log_limiter_t session_log;  //  Rate limit of connect/disconnect logs
    int64_t start_ms;              //  When the core was made
    bool fatal;                    //  The store failed
    char error[600];               //  Why
};

//  ---------------------------------------------------------------------
//  Small helpers

static int s_fatal(broker_core_t *self)
{
    self->fatal = true;
    snprintf(self->error, sizeof self->error, "%s", broker_store_error(self->store));
    return -1;
}

//  Hex of the routing id, for logs (first 16 bytes).
static const char *s_rid_text(const uint8_t *rid, size_t size, char *buf, size_t buflen)
{
    size_t at = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < size && i < 16 && at + 3 <= buflen; i++)
        at += (size_t)snprintf(buf + at, buflen - at, "%02x", rid[i]);
    return buf;
}

static const char *s_side_name(int side)
{
    return side == SIDE_PUBLIC ? "public" : "private";
}

//  The sender a peer of side is, in the protocol's table of who may send
//  what (proto_msg_may_send).
static proto_sender_t s_sender(int side)
{
    return side == SIDE_PUBLIC ? PROTO_SENDER_PUBLIC : PROTO_SENDER_PRIVATE;
}

static const char *s_dir_name(int dir)
{
    return dir == BROKER_DIR_TO_PRIVATE ? "public_to_private" : "private_to_public";
}

static bool s_grow(void **array, size_t *cap, size_t count, size_t item)
{
    if (count < *cap)
        return true;
    size_t next = *cap ? *cap * 2 : 16;
    void *grown = realloc(*array, next * item);
    if (!grown)
        return false;
    *array = grown;
    *cap = next;
    return true;
}

//  ---------------------------------------------------------------------
//  Connections

static void s_conn_free(conn_t *conn)
{
    if (!conn)
        return;
    free(conn->id);
    for (int side = 0; side < 2; side++) {
        free(conn->key[side]);
        free(conn->desc[side]);
        broker_tail_destroy(&conn->queue[side].tail);
    }
    free(conn);
}

static char *s_dup(const char *text)
{
    return strdup(text ? text : "");
}

static bool s_set(char **field, const char *text)
{
    char *copy = s_dup(text);
    if (!copy)
        return false;
    free(*field);
    *field = copy;
    return true;
}

static conn_t *s_conn_new(const char *id)
{
    conn_t *conn = calloc(1, sizeof *conn);
    if (!conn)
        return NULL;
    conn->id = s_dup(id);
    for (int side = 0; side < 2; side++) {
        conn->key[side] = s_dup("");
        conn->desc[side] = s_dup("");
        conn->queue[side].qid = -1;
    }
    if (!conn->id || !conn->key[0] || !conn->key[1] || !conn->desc[0] || !conn->desc[1]) {
        s_conn_free(conn);
        return NULL;
    }
    return conn;
}

static conn_t *s_conn_find(broker_core_t *self, const char *id)
{
    for (size_t i = 0; i < self->conns_count; i++) {
        if (strcmp(self->conns[i]->id, id) == 0)
            return self->conns[i];
    }
    return NULL;
}

static bool s_conn_add(broker_core_t *self, conn_t *conn)
{
    if (!s_grow((void **)&self->conns, &self->conns_cap, self->conns_count, sizeof(conn_t *)))
        return false;
    self->conns[self->conns_count++] = conn;
    return true;
}

//  The side key is bound to on conn, or -1.
static int s_conn_side(const conn_t *conn, const char *key)
{
    if (*conn->key[SIDE_PUBLIC] && strcmp(conn->key[SIDE_PUBLIC], key) == 0)
        return SIDE_PUBLIC;
    if (*conn->key[SIDE_PRIVATE] && strcmp(conn->key[SIDE_PRIVATE], key) == 0)
        return SIDE_PRIVATE;
    return -1;
}

//  Writes conn's row in the open transaction.
static int s_conn_save(broker_core_t *self, const conn_t *conn)
{
    broker_store_conn_t row = {
        .conn = conn->id,
        .public_key = conn->key[SIDE_PUBLIC],
        .private_key = conn->key[SIDE_PRIVATE],
        .expires = conn->expires,
        .token_used = conn->token_used,
        .public_desc = conn->desc[SIDE_PUBLIC],
        .private_desc = conn->desc[SIDE_PRIVATE],
        .created = conn->created,
        .has_kx = conn->has_kx,
    };
    memcpy(row.token_hash, conn->token_hash, sizeof row.token_hash);
    memcpy(row.kx, conn->kx, sizeof row.kx);
    memcpy(row.auth, conn->auth, sizeof row.auth);
    return broker_store_conn_save(self->store, &row) == 0 ? 0 : s_fatal(self);
}

//  Gives the memory of queue's tail back to the broker-wide budget.
static void s_tail_release(broker_core_t *self, queue_t *queue)
{
    if (!queue->tail)
        return;
    self->tails_bytes -= broker_tail_allocated(queue->tail);
    broker_tail_destroy(&queue->tail);
}

//  Keeps a message just stored in queue's tail, when the queue has a
//  receiver to deliver it to and the budget allows.
static void s_tail_keep(broker_core_t *self, queue_t *queue, bool receiver, uint64_t seq,
                        const void *payload, size_t size, bool file)
{
    if (!receiver)
        return;
    if (!queue->tail) {
        if (self->tails_bytes + TAIL_BYTES > TAILS_BYTES_MAX)
            return;
        queue->tail = broker_tail_new(TAIL_BYTES, TAIL_COUNT);
        if (!queue->tail)
            return;
    }
    size_t before = broker_tail_allocated(queue->tail);
    broker_tail_push(queue->tail, seq, payload, size, file);
    self->tails_bytes += broker_tail_allocated(queue->tail) - before;
}

//  Forgets what was delivered to the receiver of queue dir: everything
//  unconsumed goes out again to the next receiver session, from the store.
static void s_queue_rewind(broker_core_t *self, queue_t *queue)
{
    queue->delivered_upto = 0;
    queue->unacked = 0;
    queue->unacked_bytes = 0;
    queue->wake = true;
    s_tail_release(self, queue);
}

//  The next sequence to deliver. The queue holds exactly the sequences
//  (last_seq - count, last_seq]: PUBLISH appends last_seq + 1 only, and
//  CONSUMED removes a prefix.
static uint64_t s_queue_next(const queue_t *queue)
{
    uint64_t head = queue->last_seq - queue->count + 1;
    return queue->delivered_upto + 1 > head ? queue->delivered_upto + 1 : head;
}

//  ---------------------------------------------------------------------
//  Loading from the store

static int s_load_conn(const broker_store_conn_t *row, void *arg)
{
    broker_core_t *self = arg;
    conn_t *conn = s_conn_new(row->conn);
    if (!conn || !s_set(&conn->key[SIDE_PUBLIC], row->public_key) ||
        !s_set(&conn->key[SIDE_PRIVATE], row->private_key) ||
        !s_set(&conn->desc[SIDE_PUBLIC], row->public_desc) ||
        !s_set(&conn->desc[SIDE_PRIVATE], row->private_desc) || !s_conn_add(self, conn)) {
        s_conn_free(conn);
        snprintf(self->error, sizeof self->error, "out of memory loading connections");
        return 1;
    }
    memcpy(conn->token_hash, row->token_hash, sizeof conn->token_hash);
    conn->expires = row->expires;
    conn->token_used = row->token_used;
    conn->created = row->created;
    conn->has_kx = row->has_kx;
    memcpy(conn->kx, row->kx, sizeof conn->kx);
    memcpy(conn->auth, row->auth, sizeof conn->auth);
    return 0;
}

static int s_load_queue(const broker_store_queue_t *row, void *arg)
{
    broker_core_t *self = arg;
    conn_t *conn = s_conn_find(self, row->conn);
    if (!conn || row->dir < 0 || row->dir > 1) {
        ts_log(TS_LOG_WARN, "store queue without connection", "conn=%s dir=%d", row->conn,
               row->dir);
        return 0;
    }
    queue_t *queue = &conn->queue[row->dir];
    queue->qid = row->qid;
    queue->last_seq = row->last_seq;
    queue->committed_seq = row->last_seq;
    queue->durable_seq = row->last_seq;
    queue->count = row->count;
    queue->bytes = row->bytes;
    queue->file_count = row->file_count;
    queue->file_bytes = row->file_bytes;
    queue->oldest_stale = true;
    queue->wake = true;
    return 0;
}

//  Creates the store rows of queues that have none (connections INVITEd by
//  this run). Part of the open transaction.
static int s_ensure_queues(broker_core_t *self, conn_t *conn)
{
    for (int dir = 0; dir < 2; dir++) {
        if (conn->queue[dir].qid >= 0)
            continue;
        if (broker_store_queue_create(self->store, conn->id, dir, &conn->queue[dir].qid) != 0)
            return s_fatal(self);
    }
    return 0;
}

broker_core_t *broker_core_new(broker_store_t *store, const broker_config_t *config,
                               broker_send_fn send, void *send_arg, char *err, size_t errlen)
{
    broker_core_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->store = store;
    self->config = config;
    self->send = send;
    self->send_arg = send_arg;
    self->limits = proto_limits_default();
    //  A DELIVER batch stays within the frame every decoder takes by default:
    //  the broker does not know the receiver's limit (a single message always
    //  fits it, max_payload is below it).
    self->deliver_frame = self->limits.max_frame < (size_t)config->max_frame
                              ? self->limits.max_frame
                              : (size_t)config->max_frame;
    self->limits.max_frame = (size_t)config->max_frame;
    if (self->limits.max_payload > (size_t)config->max_frame - 512)
        self->limits.max_payload = (size_t)config->max_frame - 512;
    self->limiter.per_second = 10;
    self->session_log.per_second = 20;
    self->start_ms = ts_now_ms();
    self->batch = 1;
    proto_buf_init(&self->buf);
    proto_buf_init(&self->dbuf);
    proto_buf_init(&self->groups[0].data);
    proto_buf_init(&self->groups[1].data);
    self->open = &self->groups[0];
    if (broker_store_each_conn(store, s_load_conn, self) != 0 || *self->error ||
        broker_store_each_queue(store, s_load_queue, self) != 0) {
        snprintf(err, errlen, "cannot load the store: %s",
                 *self->error ? self->error : broker_store_error(store));
        broker_core_destroy(&self);
        return NULL;
    }
    for (size_t i = 0; i < self->conns_count; i++) {
        if (s_ensure_queues(self, self->conns[i]) != 0 || broker_store_commit(store) != 0) {
            snprintf(err, errlen, "cannot prepare queues: %s", broker_store_error(store));
            broker_core_destroy(&self);
            return NULL;
        }
    }
    return self;
}

static void s_replies_clear(replies_t *replies)
{
    replies->count = 0;
    proto_buf_reset(&replies->data);
}

void broker_core_destroy(broker_core_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    broker_core_t *self = *self_p;
    for (size_t i = 0; i < self->peers_count; i++)
        free(self->peers[i]);
    free(self->peers);
    for (size_t i = 0; i < self->conns_count; i++)
        s_conn_free(self->conns[i]);
    free(self->conns);
    for (int i = 0; i < 2; i++) {
        free(self->groups[i].list);
        proto_buf_release(&self->groups[i].data);
    }
    proto_buf_release(&self->buf);
    proto_buf_release(&self->dbuf);
    free(self);
    *self_p = NULL;
}

broker_metrics_t *broker_core_metrics(broker_core_t *self)
{
    return &self->metrics;
}

const char *broker_core_error(const broker_core_t *self)
{
    return self->error;
}

size_t broker_core_peer_count(const broker_core_t *self)
{
    return self->peers_count;
}

size_t broker_core_guest_count(const broker_core_t *self)
{
    size_t count = 0;
    for (size_t i = 0; i < self->peers_count; i++)
        count += self->peers[i]->guest;
    return count;
}

//  ---------------------------------------------------------------------
//  Peers

static peer_t *s_peer_by_rid(broker_core_t *self, const uint8_t *rid, size_t rid_size)
{
    for (size_t i = 0; i < self->peers_count; i++) {
        peer_t *peer = self->peers[i];
        if (peer->rid_size == rid_size && memcmp(peer->rid, rid, rid_size) == 0)
            return peer;
    }
    return NULL;
}

static peer_t *s_peer_by_key(broker_core_t *self, const char *key)
{
    for (size_t i = 0; i < self->peers_count; i++) {
        if (strcmp(self->peers[i]->key, key) == 0)
            return self->peers[i];
    }
    return NULL;
}

static int s_apply_consumes(broker_core_t *self);

//  Ends a session: its connections lose their receiver (deliveries will
//  be made again to the next session), and the peer is freed.
static void s_peer_drop(broker_core_t *self, peer_t *peer, const char *why, int64_t now_ms)
{
    //  Its noted CONSUMEDs first, while the queue still counts what this
    //  session holds (a store failure there is fatal: the next pump stops).
    s_apply_consumes(self);
    for (size_t i = 0; i < self->conns_count; i++) {
        conn_t *conn = self->conns[i];
        for (int side = 0; side < 2; side++) {
            if (conn->peer[side] != peer)
                continue;
            conn->peer[side] = NULL;
            conn->last_seen_ms[side] = peer->last_seen_ms;
            s_queue_rewind(self, &conn->queue[1 - side]);
        }
    }
    char rid[40];
    ts_log_limited(
        &self->session_log, TS_LOG_INFO, "peer disconnected",
        "node=%s role=%s key=%s guest=%d address=%s rid=%s reason=%s idle_ms=%" PRId64, peer->node,
        s_side_name(peer->side), peer->key, (int)peer->guest, *peer->address ? peer->address : "-",
        s_rid_text(peer->rid, peer->rid_size, rid, sizeof rid), why, now_ms - peer->last_seen_ms);
    for (size_t i = 0; i < self->peers_count; i++) {
        if (self->peers[i] == peer) {
            self->peers[i] = self->peers[--self->peers_count];
            break;
        }
    }
    free(peer);
}

//  ---------------------------------------------------------------------
//  Output

//  Encodes msg into a reply for rid, sent after the commit. Returns its
//  index in replies, or -1 when it could not be queued (logged; the node
//  asks again).
static long s_reply(broker_core_t *self, const uint8_t *rid, size_t rid_size,
                    const proto_msg_t *msg)
{
    assert(proto_msg_may_send(msg->type, PROTO_SENDER_BROKER));
    proto_error_t perr;
    if (proto_msg_encode(msg, &self->limits, &self->buf, &perr) != PROTO_OK) {
        ts_log(TS_LOG_ERROR, "cannot encode reply", "type=%s error=\"%s\"",
               proto_type_name(msg->type), proto_error_str(&perr));
        return -1;
    }
    replies_t *replies = self->open;
    if (!s_grow((void **)&replies->list, &replies->cap, replies->count, sizeof(reply_t)))
        return -1;
    size_t offset = replies->data.size;
    if (proto_buf_append(&replies->data, self->buf.data, self->buf.size) != 0)
        return -1;
    reply_t *reply = &replies->list[replies->count];
    reply->offset = offset;
    reply->size = self->buf.size;
    reply->cancelled = false;
    memcpy(reply->rid, rid, rid_size);
    reply->rid_size = rid_size;
    return (long)replies->count++;
}

//  Sends a frame now. Returns 0, or -1 with errno EHOSTUNREACH / EAGAIN.
static int s_send(broker_core_t *self, const uint8_t *rid, size_t rid_size, const uint8_t *data,
                  size_t size, int64_t now_ms)
{
    if (self->send(self->send_arg, rid, rid_size, data, size) == 0) {
        peer_t *peer = s_peer_by_rid(self, rid, rid_size);
        if (peer)
            peer->last_sent_ms = now_ms;
        return 0;
    }
    if (errno != EHOSTUNREACH)
        errno = EAGAIN;
    return -1;
}

//  A send failed with EHOSTUNREACH: the routing id no longer reaches
//  anyone, so the session is over.
static void s_unreachable(broker_core_t *self, const uint8_t *rid, size_t rid_size, int64_t now_ms)
{
    peer_t *peer = s_peer_by_rid(self, rid, rid_size);
    if (peer)
        s_peer_drop(self, peer, "unreachable", now_ms);
}

//  Refuses a frame: counts it, logs it (rate-limited), and answers ERROR.
static void s_refuse(broker_core_t *self, const uint8_t *rid, size_t rid_size, const char *key,
                     broker_reject_t reason, proto_err_code_t code, const char *conn,
                     const uint64_t *seq, const char *fmt, ...)
    __attribute__((format(printf, 9, 10)));

static void s_refuse(broker_core_t *self, const uint8_t *rid, size_t rid_size, const char *key,
                     broker_reject_t reason, proto_err_code_t code, const char *conn,
                     const uint64_t *seq, const char *fmt, ...)
{
    char text[512];
    va_list args;
    va_start(args, fmt);
    vsnprintf(text, sizeof text, fmt, args);
    va_end(args);
    //  The text may quote what the peer sent: keep it printable ASCII so
    //  that it is valid UTF-8 on the wire and harmless in a terminal.
    for (char *p = text; *p; p++) {
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            *p = '?';
    }
    self->metrics.rejected[reason]++;
    char rid_text[40], quoted[600];
    ts_log_limited(&self->limiter, TS_LOG_WARN, "frame refused",
                   "reason=%s code=%d rid=%s key=%s conn=%s detail=%s", broker_reject_name(reason),
                   (int)code, s_rid_text(rid, rid_size, rid_text, sizeof rid_text), key ? key : "-",
                   conn ? conn : "-", ts_log_quote(quoted, sizeof quoted, text));
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_ERROR);
    msg.error.code = (uint16_t)code;
    msg.error.text = text;
    msg.error.conn = conn;
    if (seq) {
        msg.error.has_seq = true;
        msg.error.seq = *seq;
    }
    s_reply(self, rid, rid_size, &msg);
}

void broker_core_reject(broker_core_t *self, broker_reject_t reason, const char *detail)
{
    self->metrics.rejected[reason]++;
    char quoted[600];
    ts_log_limited(&self->limiter, TS_LOG_WARN, "frame refused", "reason=%s detail=%s",
                   broker_reject_name(reason), ts_log_quote(quoted, sizeof quoted, detail));
}

//  ---------------------------------------------------------------------
//  HELLO

static int s_consume_upto(broker_core_t *self, queue_t *queue, uint64_t seq);

//  Makes peer the receiver on every connection its key is bound to on its
//  side, and applies the node's "consumed" positions from HELLO.
static int s_attach(broker_core_t *self, peer_t *peer, const proto_hello_t *hello, int64_t now_ms)
{
    for (size_t i = 0; i < self->conns_count; i++) {
        conn_t *conn = self->conns[i];
        if (s_conn_side(conn, peer->key) != peer->side)
            continue;
        conn->peer[peer->side] = peer;
        conn->last_seen_ms[peer->side] = now_ms;
        s_queue_rewind(self, &conn->queue[1 - peer->side]);
    }
    for (size_t i = 0; i < hello->conns_count; i++) {
        const proto_conn_state_t *state = &hello->conns[i];
        conn_t *conn = s_conn_find(self, state->conn);
        if (!conn || s_conn_side(conn, peer->key) != peer->side)
            continue;
        queue_t *out = &conn->queue[peer->side];
        if (state->stored > out->last_seq) {
            self->metrics.hello_ahead++;
            ts_log(TS_LOG_WARN, "node ahead of broker",
                   "conn=%s node=%s node_stored=%" PRIu64 " broker_stored=%" PRIu64
                   " hint=\"the broker's store lost messages the node saw STORED\"",
                   conn->id, peer->node, state->stored, out->last_seq);
        }
        if (state->consumed &&
            s_consume_upto(self, &conn->queue[1 - peer->side], state->consumed) != 0)
            return -1;
    }
    return 0;
}

//  The connections of hello where the node's state is older than the
//  broker's queues (docs/protocol.md §4.1): messages of its own at or above
//  its next seq, or messages to it deleted above its consumed seq. Fills
//  out[] (hello->conns_count entries at most) with the broker's positions,
//  logs and counts each one; returns how many.
static size_t s_behind(broker_core_t *self, const peer_t *peer, const proto_hello_t *hello,
                       proto_conn_state_t *out)
{
    size_t n = 0;
    for (size_t i = 0; i < hello->conns_count; i++) {
        const proto_conn_state_t *state = &hello->conns[i];
        conn_t *conn = s_conn_find(self, state->conn);
        if (!conn || s_conn_side(conn, peer->key) != peer->side)
            continue;
        const queue_t *mine = &conn->queue[peer->side];
        const queue_t *theirs = &conn->queue[1 - peer->side];
        //  theirs holds deleted+1 .. last_seq (consecutive; removals cut the front)
        uint64_t deleted = theirs->count <= theirs->last_seq ? theirs->last_seq - theirs->count : 0;
        bool seq_behind = state->next && mine->last_seq >= state->next;
        if (!seq_behind && deleted <= state->consumed)
            continue;
        self->metrics.hello_behind++;
        ts_log(TS_LOG_WARN, "node behind broker",
               "conn=%s node=%s node_next=%" PRIu64 " broker_stored=%" PRIu64
               " node_consumed=%" PRIu64 " broker_deleted=%" PRIu64
               " hint=\"the node's state is older than the broker's queues (restored from an "
               "older backup?); it continues after them\"",
               conn->id, peer->node, state->next, mine->last_seq, state->consumed, deleted);
        out[n++] = (proto_conn_state_t){conn->id, mine->last_seq, deleted, 0};
    }
    return n;
}

//  JOIN's key exchange goes to the public node only, byte for byte: the
//  broker relays it and reads nothing in it (docs/protocol.md §8.3).
static void s_joined_kx(const conn_t *conn, int side, proto_joined_t *joined)
{
    joined->has_kx = joined->has_auth = conn->has_kx && side == SIDE_PUBLIC;
    memcpy(joined->kx, conn->kx, sizeof joined->kx);
    memcpy(joined->auth, conn->auth, sizeof joined->auth);
}

//  Sends JOINED for every connection listed in HELLO that is joined and
//  bound to the peer, so that a node that missed the first JOINED learns it
//  (docs/protocol.md §4.1).
static void s_remind_joined(broker_core_t *self, const peer_t *peer, const proto_hello_t *hello)
{
    for (size_t i = 0; i < hello->conns_count; i++) {
        conn_t *conn = s_conn_find(self, hello->conns[i].conn);
        if (!conn || !conn->token_used || s_conn_side(conn, peer->key) != peer->side)
            continue;
        proto_msg_t msg;
        proto_msg_init(&msg, PROTO_JOINED);
        msg.joined.conn = conn->id;
        msg.joined.description = conn->desc[1 - peer->side];
        s_joined_kx(conn, peer->side, &msg.joined);
        s_reply(self, peer->rid, peer->rid_size, &msg);
    }
}

//  Makes a session for a HELLO of from and adds it to the peers. Returns
//  it, or NULL when out of memory.
static peer_t *s_peer_new(broker_core_t *self, const broker_sender_t *from, bool guest,
                          const proto_hello_t *hello, int64_t now_ms)
{
    if (!s_grow((void **)&self->peers, &self->peers_cap, self->peers_count, sizeof(peer_t *)))
        return NULL;
    peer_t *peer = calloc(1, sizeof *peer);
    if (!peer)
        return NULL;
    memcpy(peer->rid, from->rid, from->rid_size);
    peer->rid_size = from->rid_size;
    snprintf(peer->key, sizeof peer->key, "%s", from->key);
    snprintf(peer->address, sizeof peer->address, "%s", from->address ? from->address : "");
    peer->guest = guest;
    peer->since_ms = now_ms;
    snprintf(peer->node, sizeof peer->node, "%s", hello->node ? hello->node : "");
    peer->side = hello->role == PROTO_ROLE_PUBLIC ? SIDE_PUBLIC : SIDE_PRIVATE;
    peer->credit = hello->credit ? hello->credit : 64;
    peer->batch = hello->batch ? hello->batch : 1;
    if (peer->batch > BROKER_BATCH_MAX)
        peer->batch = BROKER_BATCH_MAX;
    peer->last_seen_ms = now_ms;
    peer->last_sent_ms = now_ms;
    peer->ready_batch = self->batch; //  Its WELCOME is in this group
    self->peers[self->peers_count++] = peer;
    return peer;
}

static void s_welcome(broker_core_t *self, const peer_t *peer, const proto_hello_t *hello)
{
    proto_conn_state_t *behind = calloc(hello->conns_count + 1, sizeof *behind);
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_WELCOME);
    msg.welcome.broker = self->config->id;
    msg.welcome.heartbeat_ms = (uint32_t)self->config->heartbeat_ms;
    msg.welcome.max_frame = (uint32_t)self->config->max_frame;
    msg.welcome.credit = (uint32_t)self->config->publish_credit;
    msg.welcome.batch = BROKER_BATCH_MAX;
    if (behind) {
        msg.welcome.conns = behind;
        msg.welcome.conns_count = s_behind(self, peer, hello, behind);
    }
    s_reply(self, peer->rid, peer->rid_size, &msg);
    free(behind);
}

//  True when key is the private node of a joined connection.
static bool s_key_joined(const broker_core_t *self, const char *key)
{
    for (size_t i = 0; i < self->conns_count; i++) {
        const conn_t *conn = self->conns[i];
        if (conn->token_used && strcmp(conn->key[SIDE_PRIVATE], key) == 0)
            return true;
    }
    return false;
}

//  Whether a new session may begin for from: a known key counts against
//  max_peers, a guest against max_guests and max_guests_per_address (the
//  guests' own budget, so that a flood of random keys never takes a known
//  key's place). Refuses (ERROR 429, counted) and returns false when the
//  budget is spent.
static bool s_admit(broker_core_t *self, const broker_sender_t *from, bool guest)
{
    const char *address = from->address ? from->address : "";
    size_t known = 0, guests = 0, here = 0;
    for (size_t i = 0; i < self->peers_count; i++) {
        const peer_t *peer = self->peers[i];
        if (!peer->guest) {
            known++;
            continue;
        }
        guests++;
        if (strcmp(peer->address, address) == 0)
            here++;
    }
    if (!guest && known >= (size_t)self->config->max_peers) {
        s_refuse(self, from->rid, from->rid_size, from->key, BROKER_REJECT_TOO_MANY_PEERS,
                 PROTO_ERR_QUEUE_FULL, NULL, NULL,
                 "broker has %zu sessions of known keys (max_peers); retry later", known);
        return false;
    }
    if (guest && guests >= (size_t)self->config->max_guests) {
        s_refuse(self, from->rid, from->rid_size, from->key, BROKER_REJECT_TOO_MANY_GUESTS,
                 PROTO_ERR_QUEUE_FULL, NULL, NULL,
                 "broker has %zu sessions of keys bound to no connection (max_guests); retry "
                 "later",
                 guests);
        return false;
    }
    if (guest && here >= (size_t)self->config->max_guests_per_addr) {
        s_refuse(self, from->rid, from->rid_size, from->key, BROKER_REJECT_GUESTS_ADDRESS,
                 PROTO_ERR_QUEUE_FULL, NULL, NULL,
                 "address %s has %zu sessions of keys bound to no connection "
                 "(max_guests_per_address); retry later",
                 *address ? address : "-", here);
        return false;
    }
    return true;
}

static int s_on_hello(broker_core_t *self, const broker_sender_t *from, peer_t *peer,
                      const proto_hello_t *hello, int64_t now_ms)
{
    const uint8_t *rid = from->rid;
    size_t rid_size = from->rid_size;
    const char *key = from->key;
    bool listed = broker_config_is_public_key(self->config, key);
    if (hello->role == PROTO_ROLE_PUBLIC && !listed) {
        s_refuse(self, rid, rid_size, key, BROKER_REJECT_UNKNOWN_KEY, PROTO_ERR_FORBIDDEN, NULL,
                 NULL, "key %s is not a public node of this broker (add it to public_keys)", key);
        return 0;
    }
    if (hello->role == PROTO_ROLE_PRIVATE && listed) {
        s_refuse(self, rid, rid_size, key, BROKER_REJECT_UNKNOWN_KEY, PROTO_ERR_FORBIDDEN, NULL,
                 NULL, "key %s is configured as a public node; it cannot act as private", key);
        return 0;
    }
    //  One session per key: a new HELLO replaces the key's session, whether
    //  it came on the same routing id or on a new one (a node that restarted
    //  or reconnected gets in at once, without waiting for its old session to
    //  fall silent). Only the key's own HELLO can end it.
    if (peer)
        s_peer_drop(self, peer, "hello_again", now_ms);
    peer_t *same_key = s_peer_by_key(self, key);
    if (same_key)
        s_peer_drop(self, same_key, "replaced", now_ms);
    bool guest = !listed && !s_key_joined(self, key);
    if (!s_admit(self, from, guest))
        return 0;
    peer = s_peer_new(self, from, guest, hello, now_ms);
    if (!peer) {
        s_refuse(self, rid, rid_size, key, BROKER_REJECT_TOO_MANY_PEERS, PROTO_ERR_INTERNAL, NULL,
                 NULL, "broker out of memory; retry later");
        return 0;
    }
    if (s_attach(self, peer, hello, now_ms) != 0)
        return -1;

    char rid_text[40];
    ts_log_limited(
        &self->session_log, TS_LOG_INFO, "peer connected",
        "node=%s role=%s key=%s guest=%d address=%s rid=%s credit=%u conns=%zu", peer->node,
        s_side_name(peer->side), key, (int)guest, *peer->address ? peer->address : "-",
        s_rid_text(rid, rid_size, rid_text, sizeof rid_text), peer->credit, hello->conns_count);
    s_welcome(self, peer, hello);
    s_remind_joined(self, peer, hello);
    return 0;
}

//  ---------------------------------------------------------------------
//  INVITE and JOIN

static int s_on_invite(broker_core_t *self, peer_t *peer, const proto_invite_msg_t *invite,
                       int64_t now_ms)
{
    if (!proto_msg_may_send(PROTO_INVITE, s_sender(peer->side))) {
        s_refuse(self, peer->rid, peer->rid_size, peer->key, BROKER_REJECT_UNKNOWN_KEY,
                 PROTO_ERR_FORBIDDEN, invite->conn, NULL,
                 "only a public node may INVITE; this key is a private node");
        return 0;
    }
    if ((int64_t)invite->expires <= now_ms / 1000) {
        s_refuse(self, peer->rid, peer->rid_size, peer->key, BROKER_REJECT_JOIN_EXPIRED,
                 PROTO_ERR_JOIN_EXPIRED, invite->conn, NULL,
                 "invitation expiry %" PRIu64 " is already past", invite->expires);
        return 0;
    }
    conn_t *conn = s_conn_find(self, invite->conn);
    if (conn && strcmp(conn->key[SIDE_PUBLIC], peer->key) != 0) {
        s_refuse(self, peer->rid, peer->rid_size, peer->key, BROKER_REJECT_FOREIGN_CONN,
                 PROTO_ERR_FORBIDDEN, invite->conn, NULL,
                 "connection %s belongs to another public node", invite->conn);
        return 0;
    }
    if (conn && conn->token_used) {
        s_refuse(self, peer->rid, peer->rid_size, peer->key, BROKER_REJECT_JOIN_REUSED,
                 PROTO_ERR_JOIN_REUSED, invite->conn, NULL,
                 "connection %s is already joined; make a new connection to invite again",
                 invite->conn);
        return 0;
    }
    if (!conn) {
        if (self->conns_count >= (size_t)self->config->max_connections) {
            s_refuse(self, peer->rid, peer->rid_size, peer->key, BROKER_REJECT_TOO_MANY_CONNS,
                     PROTO_ERR_QUEUE_FULL, invite->conn, NULL,
                     "broker holds %zu connections (max_connections)", self->conns_count);
            return 0;
        }
        conn = s_conn_new(invite->conn);
        if (!conn || !s_set(&conn->key[SIDE_PUBLIC], peer->key) || !s_conn_add(self, conn)) {
            s_conn_free(conn);
            return 0;
        }
        conn->created = now_ms / 1000;
        conn->peer[SIDE_PUBLIC] = peer;
        conn->last_seen_ms[SIDE_PUBLIC] = now_ms;
    }
    memcpy(conn->token_hash, invite->token_hash, sizeof conn->token_hash);
    conn->expires = (int64_t)invite->expires;
    if (!s_set(&conn->desc[SIDE_PUBLIC], invite->description))
        return 0;
    if (s_ensure_queues(self, conn) != 0 || s_conn_save(self, conn) != 0)
        return -1;
    ts_log(TS_LOG_INFO, "connection invited", "conn=%s node=%s expires=%" PRId64, conn->id,
           peer->node, conn->expires);
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_INVITED);
    msg.invited.conn = conn->id;
    msg.invited.expires = (uint64_t)conn->expires;
    s_reply(self, peer->rid, peer->rid_size, &msg);
    return 0;
}

//  Sends JOINED for conn to both of its nodes that have a session.
static void s_joined_both(broker_core_t *self, const conn_t *conn)
{
    for (int side = 0; side < 2; side++) {
        peer_t *peer = conn->peer[side];
        if (!peer)
            continue;
        proto_msg_t msg;
        proto_msg_init(&msg, PROTO_JOINED);
        msg.joined.conn = conn->id;
        msg.joined.description = conn->desc[1 - side];
        s_joined_kx(conn, side, &msg.joined);
        s_reply(self, peer->rid, peer->rid_size, &msg);
    }
}

static int s_on_join(broker_core_t *self, peer_t *peer, const proto_join_t *join, int64_t now_ms)
{
    const char *id = join->conn;
    if (!proto_msg_may_send(PROTO_JOIN, s_sender(peer->side))) {
        s_refuse(self, peer->rid, peer->rid_size, peer->key, BROKER_REJECT_UNKNOWN_KEY,
                 PROTO_ERR_FORBIDDEN, id, NULL, "only a private node may JOIN");
        return 0;
    }
    conn_t *conn = s_conn_find(self, id);
    if (!conn) {
        s_refuse(self, peer->rid, peer->rid_size, peer->key, BROKER_REJECT_UNKNOWN_CONN,
                 PROTO_ERR_UNKNOWN_CONN, id, NULL,
                 "no connection %s on this broker (was the invitation registered?)", id);
        return 0;
    }
    uint8_t hash[SHA256_DIGEST_LENGTH];
    SHA256(join->token, sizeof join->token, hash);
    bool match = CRYPTO_memcmp(hash, conn->token_hash, sizeof hash) == 0;
    if (conn->token_used) {
        if (match && strcmp(conn->key[SIDE_PRIVATE], peer->key) == 0) {
            conn->peer[SIDE_PRIVATE] = peer;
            peer->ready_batch = self->batch;
            s_joined_both(self, conn); //  The same node asking again: answer again
            return 0;
        }
        s_refuse(self, peer->rid, peer->rid_size, peer->key, BROKER_REJECT_JOIN_REUSED,
                 PROTO_ERR_JOIN_REUSED, id, NULL,
                 "the invitation for connection %s was already used", id);
        return 0;
    }
    if (!match) {
        s_refuse(self, peer->rid, peer->rid_size, peer->key, BROKER_REJECT_JOIN_BAD_TOKEN,
                 PROTO_ERR_JOIN_BAD_TOKEN, id, NULL,
                 "join token does not match connection %s (was the code copied whole?)", id);
        return 0;
    }
    if (now_ms / 1000 >= conn->expires) {
        s_refuse(self, peer->rid, peer->rid_size, peer->key, BROKER_REJECT_JOIN_EXPIRED,
                 PROTO_ERR_JOIN_EXPIRED, id, NULL,
                 "the invitation for connection %s expired; ask for a new one", id);
        return 0;
    }
    if (!s_set(&conn->key[SIDE_PRIVATE], peer->key) ||
        !s_set(&conn->desc[SIDE_PRIVATE], join->description))
        return 0;
    conn->token_used = true;
    conn->has_kx = join->has_kx && join->has_auth;
    memcpy(conn->kx, join->kx, sizeof conn->kx);
    memcpy(conn->auth, join->auth, sizeof conn->auth);
    conn->peer[SIDE_PRIVATE] = peer;
    peer->guest = false; //  Its key is bound now: no grace, no guest budget
    peer->ready_batch = self->batch;
    conn->last_seen_ms[SIDE_PRIVATE] = now_ms;
    s_queue_rewind(self, &conn->queue[BROKER_DIR_TO_PRIVATE]);
    if (s_conn_save(self, conn) != 0)
        return -1;
    ts_log(TS_LOG_INFO, "connection joined", "conn=%s node=%s key=%s", conn->id, peer->node,
           peer->key);
    s_joined_both(self, conn);
    return 0;
}

//  ---------------------------------------------------------------------
//  PUBLISH and CONSUMED

//  The connection a data message names, if peer's key is bound to it;
//  otherwise answers ERROR and returns NULL.
static conn_t *s_bound_conn(broker_core_t *self, peer_t *peer, const char *id, uint64_t seq)
{
    conn_t *conn = s_conn_find(self, id);
    if (!conn) {
        s_refuse(self, peer->rid, peer->rid_size, peer->key, BROKER_REJECT_UNKNOWN_CONN,
                 PROTO_ERR_UNKNOWN_CONN, id, &seq, "no connection %s on this broker", id);
        return NULL;
    }
    if (s_conn_side(conn, peer->key) != peer->side) {
        s_refuse(self, peer->rid, peer->rid_size, peer->key, BROKER_REJECT_FOREIGN_CONN,
                 PROTO_ERR_FORBIDDEN, id, &seq, "key %s is not the %s node of connection %s",
                 peer->key, s_side_name(peer->side), id);
        return NULL;
    }
    return conn;
}

//  Answers STORED seq on queue. STORED is cumulative (docs/protocol.md
//  §4.4), so one per queue and peer is enough for a batch: a second one
//  cancels the first and carries the higher of the two sequences, at the
//  place of the later one, which keeps the order of replies to the peer.
static void s_stored_reply(broker_core_t *self, const peer_t *peer, const conn_t *conn,
                           queue_t *queue, uint64_t seq)
{
    if (queue->stored_batch == self->batch) {
        reply_t *before = &self->open->list[queue->stored_reply];
        if (before->rid_size == peer->rid_size &&
            memcmp(before->rid, peer->rid, peer->rid_size) == 0) {
            before->cancelled = true;
            if (queue->stored_seq > seq)
                seq = queue->stored_seq;
        }
    }
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_STORED);
    msg.stored.conn = conn->id;
    msg.stored.seq = seq;
    long at = s_reply(self, peer->rid, peer->rid_size, &msg);
    if (at < 0)
        return;
    queue->stored_batch = self->batch;
    queue->stored_reply = (size_t)at;
    queue->stored_seq = seq;
}

//  Stores message seq of a PUBLISH (alone or in a batch); file says it is
//  file data. Returns 0 when stored or a duplicate, 1 when refused
//  (answered ERROR: the rest of a batch is not looked at), -1 fatal.
static int s_publish_one(broker_core_t *self, peer_t *peer, conn_t *conn, queue_t *queue,
                         uint64_t seq, const uint8_t *payload, size_t size, bool file,
                         int64_t now_ms)
{
    queue->published++;
    if (seq <= queue->last_seq) {
        queue->duplicates++;
        s_stored_reply(self, peer, conn, queue, seq);
        return 0;
    }
    if (seq != queue->last_seq + 1) {
        uint64_t expected = queue->last_seq + 1;
        s_refuse(self, peer->rid, peer->rid_size, peer->key, BROKER_REJECT_SEQUENCE_GAP,
                 PROTO_ERR_OUT_OF_ORDER, conn->id, &expected,
                 "sequence gap on %s: got %" PRIu64 ", expected %" PRIu64
                 "; re-send from the expected one",
                 conn->id, seq, expected);
        return 1;
    }
    //  File bytes count like any others: max_queue_bytes bounds what the
    //  store holds, whatever it is. An empty queue takes any one message
    //  (the frame limit bounds it), so that a max_queue_bytes below the
    //  largest payload slows a sender down and never stops it for good.
    if (queue->count > 0 && queue->bytes + size > (uint64_t)self->config->max_queue_bytes) {
        s_refuse(self, peer->rid, peer->rid_size, peer->key, BROKER_REJECT_QUEUE_FULL,
                 PROTO_ERR_QUEUE_FULL, conn->id, &seq,
                 "queue %s %s holds %" PRIu64 " bytes (max_queue_bytes); retry later", conn->id,
                 s_dir_name(peer->side), queue->bytes);
        return 1;
    }
    if (broker_store_append(self->store, queue->qid, seq, payload, size, file, now_ms) != 0)
        return s_fatal(self);
    if (queue->count == 0) {
        queue->oldest_ms = now_ms;
        queue->oldest_stale = false;
    }
    s_tail_keep(self, queue, conn->peer[1 - peer->side] != NULL, seq, payload, size, file);
    queue->last_seq = seq;
    queue->count++;
    queue->bytes += size;
    if (file) {
        queue->file_count++;
        queue->file_bytes += size;
    }
    queue->stored++;
    queue->dirty = true;
    queue->wake = true;
    s_stored_reply(self, peer, conn, queue, seq);
    return 0;
}

//  PUBLISH: one message, or a batch of consecutive ones (seq, seq + 1, ...),
//  each stored as if it came alone.
static int s_on_publish(broker_core_t *self, peer_t *peer, const proto_data_t *data, int64_t now_ms)
{
    conn_t *conn = s_bound_conn(self, peer, data->conn, data->seq);
    if (!conn)
        return 0;
    queue_t *queue = &conn->queue[peer->side]; //  the decoder kept seq + more_count in range
    int rc = s_publish_one(self, peer, conn, queue, data->seq, data->payload, data->payload_size,
                           data->file == PROTO_DATA_FILE, now_ms);
    for (size_t i = 0; rc == 0 && i < data->more_count; i++)
        rc = s_publish_one(self, peer, conn, queue, data->seq + 1 + i, data->more[i].payload,
                           data->more[i].payload_size, data->more[i].file == PROTO_DATA_FILE,
                           now_ms);
    return rc < 0 ? -1 : 0;
}

//  Removes everything of queue up to seq (CONSUMED and HELLO's consumed are
//  cumulative: the receiver applies in order) and updates the counters.
//  Returns 0, or -1 (fatal).
static int s_consume_upto(broker_core_t *self, queue_t *queue, uint64_t seq)
{
    if (queue->count == 0)
        return 0;
    broker_store_removed_t removed = {0};
    if (broker_store_remove_upto(self->store, queue->qid, seq, &removed) != 0)
        return s_fatal(self);
    uint64_t count = removed.count;
    if (count == 0)
        return 0; //  Consumed before (a repeated CONSUMED): nothing to do
    //  Everything held at or below delivered_upto went out in this session.
    if (seq >= queue->delivered_upto) {
        queue->unacked = 0;
        queue->unacked_bytes = 0;
        queue->delivered_upto = seq;
    } else {
        queue->unacked -= count < queue->unacked ? count : queue->unacked;
        queue->unacked_bytes -=
            removed.bytes < queue->unacked_bytes ? removed.bytes : queue->unacked_bytes;
    }
    queue->count -= count < queue->count ? count : queue->count;
    queue->bytes -= removed.bytes < queue->bytes ? removed.bytes : queue->bytes;
    queue->file_count -=
        removed.file_count < queue->file_count ? removed.file_count : queue->file_count;
    queue->file_bytes -=
        removed.file_bytes < queue->file_bytes ? removed.file_bytes : queue->file_bytes;
    queue->consumed += count;
    queue->oldest_stale = true;
    queue->dirty = true;
    queue->wake = true;
    return 0;
}

//  CONSUMED: noted, and carried out by s_apply_consumes once the commit of
//  the PUBLISHes read in the same batch has started, so that STORED never
//  waits for the removals of another queue (or of this one).
static int s_on_consumed(broker_core_t *self, peer_t *peer, const proto_ack_t *ack)
{
    conn_t *conn = s_bound_conn(self, peer, ack->conn, ack->seq);
    if (!conn)
        return 0;
    queue_t *queue = &conn->queue[1 - peer->side];
    if (ack->seq > queue->consume_to)
        queue->consume_to = ack->seq;
    self->consumes_waiting = true;
    return 0;
}

//  Removes what the CONSUMEDs noted since the last call named. Returns 0,
//  or -1 (fatal).
static int s_apply_consumes(broker_core_t *self)
{
    if (!self->consumes_waiting)
        return 0;
    self->consumes_waiting = false;
    for (size_t i = 0; i < self->conns_count; i++) {
        for (int dir = 0; dir < 2; dir++) {
            queue_t *queue = &self->conns[i]->queue[dir];
            uint64_t seq = queue->consume_to;
            queue->consume_to = 0;
            if (seq && s_consume_upto(self, queue, seq) != 0)
                return -1;
        }
    }
    return 0;
}

//  ---------------------------------------------------------------------
//  Frame dispatch

static broker_reject_t s_decode_reason(proto_status_t status, proto_err_code_t *code)
{
    switch (status) {
    case PROTO_E_FRAME_TOO_BIG:
        *code = PROTO_ERR_TOO_BIG;
        return BROKER_REJECT_TOO_BIG;
    case PROTO_E_VERSION:
        *code = PROTO_ERR_VERSION;
        return BROKER_REJECT_VERSION;
    case PROTO_E_UNKNOWN_TYPE:
        *code = PROTO_ERR_BAD_FRAME;
        return BROKER_REJECT_UNKNOWN_TYPE;
    case PROTO_E_TOO_LONG:
        *code = PROTO_ERR_TOO_BIG;
        return BROKER_REJECT_TOO_BIG;
    default:
        *code = PROTO_ERR_BAD_FRAME;
        return BROKER_REJECT_BAD_FRAME;
    }
}

//  Refuses what a guest (a key bound to no connection) may not send:
//  anything but HELLO, JOIN and PING (and the PONG and ERROR that answer
//  the broker). PUBLISH and CONSUMED are refused as naming a connection the
//  key is not bound to, whichever connection they name (so a guest cannot
//  tell which connection ids exist); INVITE is left to its handler, which
//  refuses it from any private-side key. Returns true when refused.
static bool s_guest_refused(broker_core_t *self, const peer_t *peer, const proto_msg_t *msg)
{
    if (!peer->guest)
        return false;
    const proto_data_t *data = msg->type == PROTO_PUBLISH ? &msg->publish : NULL;
    const proto_ack_t *ack = msg->type == PROTO_CONSUMED ? &msg->consumed : NULL;
    if (!data && !ack)
        return false;
    const char *conn = data ? data->conn : ack->conn;
    uint64_t seq = data ? data->seq : ack->seq;
    s_refuse(self, peer->rid, peer->rid_size, peer->key, BROKER_REJECT_FOREIGN_CONN,
             PROTO_ERR_FORBIDDEN, conn, &seq,
             "key %s is bound to no connection: it may only HELLO, JOIN and PING", peer->key);
    return true;
}

static int s_dispatch(broker_core_t *self, const broker_sender_t *from, peer_t *peer,
                      const proto_msg_t *msg, int64_t now_ms)
{
    const uint8_t *rid = from->rid;
    size_t rid_size = from->rid_size;
    //  Noted removals take effect before anything that looks at or resets a
    //  queue's delivery state (HELLO, JOIN, INVITE); PUBLISH and CONSUMED
    //  do not need them.
    if (msg->type != PROTO_PUBLISH && msg->type != PROTO_CONSUMED && msg->type != PROTO_PING &&
        msg->type != PROTO_PONG && s_apply_consumes(self) != 0)
        return -1;
    if (msg->type == PROTO_HELLO)
        return s_on_hello(self, from, peer, &msg->hello, now_ms);
    //  What a node may send is the protocol's table; which node may send
    //  INVITE and JOIN is checked by their handlers, once the session says
    //  which side the peer is.
    if (!proto_msg_may_send(msg->type, PROTO_SENDER_NODE)) {
        s_refuse(self, rid, rid_size, from->key, BROKER_REJECT_UNEXPECTED_TYPE, PROTO_ERR_BAD_FRAME,
                 NULL, NULL, "a node may not send %s to the broker", proto_type_name(msg->type));
        return 0;
    }
    if (!peer) {
        if (msg->type == PROTO_ERROR)
            return 0; //  Never answer an ERROR with an ERROR
        s_refuse(self, rid, rid_size, from->key, BROKER_REJECT_NOT_HELLO, PROTO_ERR_NOT_HELLO, NULL,
                 NULL, "unknown session (broker restarted?): send HELLO");
        return 0;
    }
    if (s_guest_refused(self, peer, msg))
        return 0;
    switch (msg->type) {
    case PROTO_PING: {
        proto_msg_t pong;
        proto_msg_init(&pong, PROTO_PONG);
        s_reply(self, rid, rid_size, &pong);
        return 0;
    }
    case PROTO_INVITE:
        return s_on_invite(self, peer, &msg->invite, now_ms);
    case PROTO_JOIN:
        return s_on_join(self, peer, &msg->join, now_ms);
    case PROTO_PUBLISH:
        return s_on_publish(self, peer, &msg->publish, now_ms);
    case PROTO_CONSUMED:
        return s_on_consumed(self, peer, &msg->consumed);
    case PROTO_ERROR: {
        char quoted[600];
        ts_log_limited(&self->limiter, TS_LOG_WARN, "node reported error",
                       "node=%s code=%u conn=%s text=%s", peer->node, msg->error.code,
                       msg->error.conn ? msg->error.conn : "-",
                       ts_log_quote(quoted, sizeof quoted, msg->error.text));
        return 0;
    }
    default: //  PONG: the heartbeat was counted by the caller
        return 0;
    }
}

//  A frame of one key on the routing id of another key's session. ZeroMQ
//  gives a routing id to one live pipe at a time (the ROUTER has no
//  handover), so that session's pipe is gone or the id was chosen to
//  collide; either way the session is the other key's and is left alone:
//  it ends only by its own HELLO, its silence or an unreachable send. The
//  frame is refused (an ERROR is not answered) and counted.
static void s_refuse_mismatch(broker_core_t *self, const broker_sender_t *from,
                              const peer_t *holder, const proto_msg_t *msg)
{
    if (msg->type == PROTO_ERROR) {
        broker_core_reject(self, BROKER_REJECT_KEY_MISMATCH, "ERROR on another key's routing id");
        return;
    }
    bool hello = msg->type == PROTO_HELLO;
    s_refuse(self, from->rid, from->rid_size, from->key, BROKER_REJECT_KEY_MISMATCH,
             hello ? PROTO_ERR_FORBIDDEN : PROTO_ERR_NOT_HELLO, NULL, NULL,
             "this routing id is the session of key %s; a session is bound to its key "
             "(connect without a routing id of your own)",
             holder->key);
}

int broker_core_handle(broker_core_t *self, const broker_sender_t *from, const uint8_t *data,
                       size_t size, int64_t now_ms)
{
    if (self->fatal)
        return -1;
    const uint8_t *rid = from->rid;
    size_t rid_size = from->rid_size;
    if (rid_size == 0 || rid_size >= RID_MAX) {
        broker_core_reject(self, BROKER_REJECT_BAD_FRAME, "routing id of a bad size");
        return 0;
    }
    const char *user_id = from->key;
    if (!user_id || strlen(user_id) != 40) {
        s_refuse(self, rid, rid_size, NULL, BROKER_REJECT_NO_USER_ID, PROTO_ERR_FORBIDDEN, NULL,
                 NULL, "message without a CURVE key");
        return 0;
    }
    proto_msg_t msg;
    proto_error_t perr;
    proto_status_t status = proto_msg_decode(data, size, &self->limits, &msg, &perr);
    if (status != PROTO_OK) {
        proto_err_code_t code;
        broker_reject_t reason = s_decode_reason(status, &code);
        s_refuse(self, rid, rid_size, user_id, reason, code, NULL, NULL, "%s",
                 proto_error_str(&perr));
        return 0;
    }
    //  The frame is of the key's session only when it came on that session's
    //  routing id. The same key on another routing id is the node on a new
    //  pipe (restarted, reconnected): its HELLO replaces the old session,
    //  anything else is told to say HELLO.
    peer_t *peer = s_peer_by_key(self, user_id);
    if (peer && (peer->rid_size != rid_size || memcmp(peer->rid, rid, rid_size) != 0))
        peer = NULL;
    peer_t *holder = peer ? NULL : s_peer_by_rid(self, rid, rid_size);
    if (holder) {
        s_refuse_mismatch(self, from, holder, &msg);
        proto_msg_clear(&msg);
        return 0;
    }
    if (peer)
        peer->last_seen_ms = now_ms;
    int rc = s_dispatch(self, from, peer, &msg, now_ms);
    proto_msg_clear(&msg);
    return rc;
}

//  ---------------------------------------------------------------------
//  Flush: commit, replies, deliveries

//  The queue's delivery counters, kept to undo a batch that did not leave.
typedef struct {
    uint64_t delivered_upto, unacked, unacked_bytes, delivered, redelivered, max_delivered;
} counters_t;

typedef struct {
    broker_core_t *core;             //  The core
    conn_t *conn;                    //  Connection delivered from
    queue_t *queue;                  //  Queue delivered from
    peer_t *peer;                    //  Receiver
    int64_t now_ms;                  //  Clock
    int failed;                      //  0, or the errno of the failed send
    bool full;                       //  UNACKED_BYTES_MAX reached: the rest waits
    uint64_t batch;                  //  Most messages per DELIVER here
    uint64_t first;                  //  Seq of the batch's first message
    size_t count;                    //  Messages in the batch (payloads in core->dbuf)
    size_t offset[BROKER_BATCH_MAX]; //  Where each payload starts in core->dbuf
    size_t size[BROKER_BATCH_MAX];   //  Its length
    bool file[BROKER_BATCH_MAX];     //  Whether it is file data (echoed in DELIVER)
    counters_t before;               //  The queue's counters before the batch
} deliver_t;

//  Forgets the batch being built and puts the queue's counters back.
static void s_deliver_undo(deliver_t *d)
{
    queue_t *queue = d->queue;
    if (d->count > 0) {
        queue->delivered_upto = d->before.delivered_upto;
        queue->unacked = d->before.unacked;
        queue->unacked_bytes = d->before.unacked_bytes;
        queue->delivered = d->before.delivered;
        queue->redelivered = d->before.redelivered;
        queue->max_delivered = d->before.max_delivered;
    }
    d->count = 0;
    proto_buf_reset(&d->core->dbuf);
}

//  Sends the batch as one DELIVER (consecutive seqs; one message alone when
//  the receiver takes no batches). On failure the queue's counters go back
//  to before the batch: its messages are delivered again later. Returns 0 or
//  1 (d->failed set).
static int s_deliver_flush(deliver_t *d)
{
    if (d->count == 0)
        return 0;
    broker_core_t *self = d->core;
    const uint8_t *base = self->dbuf.data;
    proto_item_t more[BROKER_BATCH_MAX];
    for (size_t i = 1; i < d->count; i++)
        more[i - 1] = (proto_item_t){base + d->offset[i], d->size[i],
                                     d->file[i] ? PROTO_DATA_FILE : PROTO_DATA_RECORD};
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_DELIVER);
    msg.deliver = (proto_data_t){d->conn->id,
                                 d->first,
                                 base + d->offset[0],
                                 d->size[0],
                                 d->count > 1 ? more : NULL,
                                 d->count - 1,
                                 d->file[0] ? PROTO_DATA_FILE : PROTO_DATA_RECORD};
    proto_error_t perr;
    int rc = 0;
    if (proto_msg_encode(&msg, &self->limits, &self->buf, &perr) != PROTO_OK) {
        ts_log(TS_LOG_ERROR, "cannot encode DELIVER", "conn=%s seq=%" PRIu64 " error=\"%s\"",
               d->conn->id, d->first, proto_error_str(&perr));
        d->failed = EAGAIN;
        rc = 1;
    } else if (s_send(self, d->peer->rid, d->peer->rid_size, self->buf.data, self->buf.size,
                      d->now_ms) != 0) {
        d->failed = errno;
        rc = 1;
    }
    if (rc) {
        s_deliver_undo(d);
    } else {
        d->count = 0;
        proto_buf_reset(&self->dbuf);
    }
    return rc;
}

//  Adds message seq to the DELIVER batch (sending the batch first when it
//  is full) and counts it as delivered.
static int s_deliver_one(uint64_t seq, const void *payload, size_t size, bool file,
                         int64_t stored_at, void *arg)
{
    (void)stored_at;
    deliver_t *d = arg;
    broker_core_t *self = d->core;
    queue_t *queue = d->queue;
    if (queue->unacked > 0 && queue->unacked_bytes >= UNACKED_BYTES_MAX) {
        d->full = true; //  Not taken: sent once the receiver consumed some
        return 1;
    }
    if (d->count > 0 &&
        (d->count >= d->batch ||
         PROTO_DATA_OVERHEAD + self->dbuf.size + size + PROTO_ITEM_OVERHEAD * (d->count + 1) >
             self->deliver_frame ||
         seq != d->first + d->count) &&
        s_deliver_flush(d) != 0)
        return 1;
    if (d->count == 0) {
        d->first = seq;
        d->before = (counters_t){queue->delivered_upto, queue->unacked,     queue->unacked_bytes,
                                 queue->delivered,      queue->redelivered, queue->max_delivered};
    }
    d->offset[d->count] = self->dbuf.size;
    d->size[d->count] = size;
    d->file[d->count] = file;
    if (proto_buf_append(&self->dbuf, size ? payload : "", size) != 0) {
        s_deliver_undo(d);
        d->failed = EAGAIN;
        return 1;
    }
    d->count++;
    queue->delivered_upto = seq;
    queue->unacked++;
    queue->unacked_bytes += size;
    queue->delivered++;
    if (seq <= queue->max_delivered)
        queue->redelivered++;
    else
        queue->max_delivered = seq;
    return 0;
}

//  How many messages may go to queue's receiver now: within the window,
//  held, and durable (a message is never handed out before its commit's
//  sync returned, so a receiver never holds what a crash could take back);
//  none while UNACKED_BYTES_MAX are unacked (the count may still stop at
//  fewer than it says: s_deliver_one checks the bytes message by message).
static uint64_t s_deliverable(const queue_t *queue, uint64_t window)
{
    if (queue->unacked >= window || queue->count <= queue->unacked ||
        (queue->unacked > 0 && queue->unacked_bytes >= UNACKED_BYTES_MAX))
        return 0;
    uint64_t next = s_queue_next(queue);
    if (next > queue->durable_seq)
        return 0;
    uint64_t durable = queue->durable_seq - next + 1;
    uint64_t room = window - queue->unacked;
    return durable < room ? durable : room;
}

//  Delivers from queue's tail while it holds the next sequence and the
//  window allows. Returns the number delivered (d->failed set when a send
//  failed).
static int s_deliver_from_tail(queue_t *queue, uint64_t window, deliver_t *d)
{
    int n = 0;
    broker_tail_entry_t entry;
    while (queue->tail && s_deliverable(queue, window) > 0 &&
           broker_tail_find(queue->tail, s_queue_next(queue), &entry)) {
        if (s_deliver_one(entry.seq, entry.payload, entry.size, entry.file, 0, d) != 0)
            return 0;
        n++;
    }
    return s_deliver_flush(d) == 0 ? n : 0;
}

//  Sends what the receiver's window allows, from the tail when it has the
//  messages, else from the store. Returns 0, or -1 (store read failure,
//  fatal).
static int s_deliver(broker_core_t *self, conn_t *conn, int dir, int64_t now_ms)
{
    queue_t *queue = &conn->queue[dir];
    peer_t *peer = conn->peer[1 - dir];
    if (!peer || queue->qid < 0)
        return 0;
    if (peer->ready_batch > self->sent_batch) {
        queue->wake = true; //  Its WELCOME / JOINED has not left yet: nothing may overtake it
        return 0;
    }
    uint64_t window = peer->credit;
    if (window > (uint64_t)self->config->credit)
        window = (uint64_t)self->config->credit;
    //  A quarter of the window a frame: the receiver's cumulative CONSUMED
    //  for the first ones comes back while the next ones travel, instead of
    //  the whole window waiting for one round trip.
    uint64_t batch = window / 4 < peer->batch ? window / 4 : peer->batch;
    uint64_t allowed;
    while ((allowed = s_deliverable(queue, window)) > 0) {
        deliver_t d = {.core = self,
                       .conn = conn,
                       .queue = queue,
                       .peer = peer,
                       .now_ms = now_ms,
                       .batch = batch ? batch : 1};
        int n = s_deliver_from_tail(queue, window, &d);
        if (n == 0 && !d.failed) {
            n = broker_store_read(self->store, queue->qid, queue->delivered_upto, (int)allowed,
                                  s_deliver_one, &d);
            if (n < 0) {
                s_deliver_undo(&d);
                return s_fatal(self);
            }
            if (!d.failed && s_deliver_flush(&d) != 0)
                n = 0;
        }
        if (d.failed == EHOSTUNREACH) {
            s_peer_drop(self, peer, "unreachable", now_ms);
            return 0;
        }
        if (d.failed) {
            queue->wake = true; //  Receiver's pipe is full: try again later
            return 0;
        }
        if (n == 0)
            break; //  count says more, the store says no more: counters are high
    }
    return 0;
}

static int s_deliver_all(broker_core_t *self, int64_t now_ms)
{
    for (size_t i = 0; i < self->conns_count; i++) {
        conn_t *conn = self->conns[i];
        for (int dir = 0; dir < 2; dir++) {
            if (!conn->queue[dir].wake)
                continue;
            conn->queue[dir].wake = false;
            if (s_deliver(self, conn, dir, now_ms) != 0)
                return -1;
        }
    }
    return 0;
}

//  Writes the counters of every queue that changed into the open
//  transaction, and notes what the commit about to be made will hold.
static int s_save_queues(broker_core_t *self)
{
    for (size_t i = 0; i < self->conns_count; i++) {
        conn_t *conn = self->conns[i];
        for (int dir = 0; dir < 2; dir++) {
            queue_t *queue = &conn->queue[dir];
            if (!queue->dirty)
                continue;
            broker_store_queue_t row = {.qid = queue->qid,
                                        .last_seq = queue->last_seq,
                                        .count = queue->count,
                                        .bytes = queue->bytes,
                                        .file_count = queue->file_count,
                                        .file_bytes = queue->file_bytes};
            if (broker_store_queue_save(self->store, &row) != 0)
                return s_fatal(self);
            queue->dirty = false;
            queue->committed_seq = queue->last_seq;
        }
    }
    return 0;
}

//  The commit that was syncing is durable: what it stored may be delivered.
static void s_mark_durable(broker_core_t *self)
{
    for (size_t i = 0; i < self->conns_count; i++) {
        conn_t *conn = self->conns[i];
        for (int dir = 0; dir < 2; dir++) {
            queue_t *queue = &conn->queue[dir];
            if (queue->durable_seq == queue->committed_seq)
                continue;
            queue->durable_seq = queue->committed_seq;
            queue->wake = true;
        }
    }
}

static void s_send_replies(broker_core_t *self, replies_t *replies, int64_t now_ms)
{
    for (size_t i = 0; i < replies->count; i++) {
        reply_t *reply = &replies->list[i];
        if (reply->cancelled)
            continue;
        const uint8_t *data = replies->data.data + reply->offset;
        if (s_send(self, reply->rid, reply->rid_size, data, reply->size, now_ms) == 0)
            continue;
        if (errno == EHOSTUNREACH)
            s_unreachable(self, reply->rid, reply->rid_size, now_ms);
        else
            self->metrics.replies_dropped++;
    }
    s_replies_clear(replies);
}

//  Collects the sync in flight, if any (waiting for it when wait): once it
//  is over, its replies go out and what it stored becomes deliverable.
//  Returns 1 when no sync is in flight any more, 0 when it still runs, -1
//  when it failed (fatal; its replies are dropped).
static int s_collect(broker_core_t *self, bool wait, int64_t now_ms)
{
    if (!self->syncing)
        return 1;
    int rc = broker_store_sync_done(self->store, wait);
    if (rc == 0)
        return 0;
    if (rc < 0) {
        s_replies_clear(self->syncing);
        return s_fatal(self);
    }
    broker_metrics_observe_fsync(&self->metrics, broker_store_last_commit_seconds(self->store));
    s_mark_durable(self);
    replies_t *done = self->syncing;
    self->syncing = NULL;
    s_send_replies(self, done, now_ms);
    self->sent_batch = self->syncing_batch;
    return 1;
}

//  Commits the open transaction (counters included). With here false it
//  starts its sync on the sync thread: the open group's replies become the
//  syncing group's, and a new group opens; no sync may be in flight. With
//  here true the sync runs on this thread and the group is answered at
//  once: for an idle broker, where nothing would be done meanwhile and the
//  hand-over to the sync thread only adds two wake-ups. Returns 0, or -1
//  (fatal).
static int s_commit_open(broker_core_t *self, bool here, int64_t now_ms)
{
    self->deferred = 0;
    if (s_save_queues(self) != 0)
        return -1;
    if ((here ? broker_store_commit_here(self->store) : broker_store_commit_start(self->store)) !=
        0) {
        s_replies_clear(self->open);
        return s_fatal(self);
    }
    if (here) {
        broker_metrics_observe_fsync(&self->metrics, broker_store_last_commit_seconds(self->store));
        s_mark_durable(self);
        s_send_replies(self, self->open, now_ms);
        self->sent_batch = self->batch++;
        return 0;
    }
    self->syncing = self->open;
    self->syncing_batch = self->batch;
    self->open = self->syncing == &self->groups[0] ? &self->groups[1] : &self->groups[0];
    self->batch++;
    return 0;
}

//  Commits the open transaction, if any, and waits until it is durable and
//  answered (the sync in flight first). Returns 0, or -1 (fatal).
static int s_commit(broker_core_t *self, int64_t now_ms)
{
    if (s_collect(self, true, now_ms) < 0)
        return -1;
    if (broker_store_dirty(self->store) && s_commit_open(self, false, now_ms) != 0)
        return -1;
    return s_collect(self, true, now_ms) < 0 ? -1 : 0;
}

//  True when the open group must be committed now. A group that answers
//  nothing wrote only removals (CONSUMED): nobody waits for them to be
//  durable, and losing them in a crash only makes the broker deliver those
//  messages again, which the receiver discards (docs/protocol.md §4.4).
//  Such batches share the next commit, at most DEFER_BATCHES_MAX of them
//  and at most until the next tick, so that a receiver draining a queue
//  does not wait for an fsync per window.
static bool s_commit_due(broker_core_t *self)
{
    return self->open->count > 0 || ++self->deferred >= DEFER_BATCHES_MAX;
}

//  The pipeline: collect a finished sync (its replies go out), then, with
//  no sync in flight, commit the open group and start its sync (or, with
//  no frame waiting to be read, sync it here and answer it) — or, when it
//  wrote nothing, send its replies at once — then carry out the noted
//  removals, deliver what is durable, and checkpoint. With wait, every
//  step waits for the disk.
static int s_pump(broker_core_t *self, bool wait, int64_t now_ms)
{
    if (self->fatal)
        return -1;
    int rc = s_collect(self, wait, now_ms);
    if (rc < 0)
        return -1;
    if (rc == 1) {
        if (!broker_store_dirty(self->store)) {
            s_send_replies(self, self->open, now_ms); //  Nothing of it needs the disk
            self->sent_batch = self->batch++;
        } else if (s_commit_due(self)) {
            bool here = self->idle && self->idle(self->idle_arg);
            if (s_commit_open(self, here, now_ms) != 0)
                return -1;
        }
        if (wait && s_collect(self, true, now_ms) < 0)
            return -1;
    }
    //  Removals go into the next transaction, while this one syncs.
    if (s_apply_consumes(self) != 0)
        return -1;
    if (s_deliver_all(self, now_ms) != 0)
        return -1;
    //  Safe beside a sync in flight: a checkpoint fsyncs the WAL before it
    //  copies it (synchronous=NORMAL), see broker_store.c.
    return broker_store_checkpoint(self->store) == 0 ? 0 : s_fatal(self);
}

int broker_core_flush(broker_core_t *self, int64_t now_ms)
{
    return s_pump(self, true, now_ms);
}

int broker_core_pump(broker_core_t *self, int64_t now_ms)
{
    return s_pump(self, false, now_ms);
}

void broker_core_set_idle(broker_core_t *self, bool (*idle)(void *arg), void *arg)
{
    self->idle = idle;
    self->idle_arg = arg;
}

bool broker_core_syncing(const broker_core_t *self)
{
    return self->syncing != NULL;
}

int broker_core_tick(broker_core_t *self, int64_t now_ms)
{
    if (self->fatal)
        return -1;
    int64_t interval = self->config->heartbeat_ms;
    int64_t dead_after = interval * self->config->liveness;
    for (size_t i = 0; i < self->peers_count;) {
        peer_t *peer = self->peers[i];
        if (now_ms - peer->last_seen_ms > dead_after) {
            s_peer_drop(self, peer, "silent", now_ms); //  peers[i] now holds another peer
            continue;
        }
        if (peer->guest && now_ms - peer->since_ms >= self->config->guest_grace_ms) {
            //  A key that did not bind itself by JOIN in time: its slot goes
            //  back to the guests' budget (it may say HELLO again).
            self->metrics.guests_expired++;
            s_peer_drop(self, peer, "guest_grace", now_ms);
            continue;
        }
        i++;
        if (now_ms - peer->last_sent_ms < interval)
            continue;
        proto_msg_t ping;
        proto_msg_init(&ping, PROTO_PING);
        if (proto_msg_encode(&ping, &self->limits, &self->buf, NULL) != PROTO_OK)
            continue;
        if (s_send(self, peer->rid, peer->rid_size, self->buf.data, self->buf.size, now_ms) != 0 &&
            errno == EHOSTUNREACH) {
            s_peer_drop(self, peer, "unreachable", now_ms);
            i--;
        }
    }
    if (broker_core_flush(self, now_ms) != 0)
        return -1;
    return s_commit(self, now_ms);
}

int broker_core_commit(broker_core_t *self)
{
    if (self->fatal)
        return -1;
    return s_commit(self, ts_now_ms());
}

//  ---------------------------------------------------------------------
//  Metrics

typedef double (*queue_value_fn)(broker_core_t *self, queue_t *queue, int64_t now_ms);

static double s_q_ready(broker_core_t *self, queue_t *q, int64_t now_ms)
{
    (void)self, (void)now_ms;
    return (double)(q->count > q->unacked ? q->count - q->unacked : 0);
}
static double s_q_unacked(broker_core_t *self, queue_t *q, int64_t now_ms)
{
    (void)self, (void)now_ms;
    return (double)q->unacked;
}
static double s_q_bytes(broker_core_t *self, queue_t *q, int64_t now_ms)
{
    (void)self, (void)now_ms;
    return (double)q->bytes;
}
static double s_q_file_bytes(broker_core_t *self, queue_t *q, int64_t now_ms)
{
    (void)self, (void)now_ms;
    return (double)q->file_bytes;
}
static double s_q_file_messages(broker_core_t *self, queue_t *q, int64_t now_ms)
{
    (void)self, (void)now_ms;
    return (double)q->file_count;
}
static double s_q_last_seq(broker_core_t *self, queue_t *q, int64_t now_ms)
{
    (void)self, (void)now_ms;
    return (double)q->last_seq;
}
static double s_q_age(broker_core_t *self, queue_t *q, int64_t now_ms)
{
    if (q->count == 0)
        return 0;
    if (q->oldest_stale) {
        q->oldest_ms = broker_store_oldest(self->store, q->qid);
        q->oldest_stale = false;
    }
    return q->oldest_ms && now_ms > q->oldest_ms ? (double)(now_ms - q->oldest_ms) / 1000.0 : 0;
}
#define COUNTER_FN(field)                                                                          \
    static double s_q_##field(broker_core_t *self, queue_t *q, int64_t now_ms)                     \
    {                                                                                              \
        (void)self, (void)now_ms;                                                                  \
        return (double)q->field;                                                                   \
    }
COUNTER_FN(published)
COUNTER_FN(stored)
COUNTER_FN(delivered)
COUNTER_FN(consumed)
COUNTER_FN(redelivered)
COUNTER_FN(duplicates)

static const struct {
    const char *name;
    const char *type;
    queue_value_fn fn;
    const char *help;
} s_queue_families[] = {
    {"twinsync_broker_queue_messages_ready", "gauge", s_q_ready,
     "Messages stored and not yet delivered to the receiving node."},
    {"twinsync_broker_queue_messages_unacked", "gauge", s_q_unacked,
     "Messages delivered and not yet consumed."},
    {"twinsync_broker_queue_bytes", "gauge", s_q_bytes,
     "Payload bytes held in the queue, records and files (what max_queue_bytes bounds)."},
    {"twinsync_broker_queue_file_bytes", "gauge", s_q_file_bytes,
     "Of the payload bytes held: those of file data (attachment chunks)."},
    {"twinsync_broker_queue_file_messages", "gauge", s_q_file_messages,
     "Of the messages held: those of file data (attachment chunks)."},
    {"twinsync_broker_queue_oldest_message_age_seconds", "gauge", s_q_age,
     "Age of the oldest message held (0 when empty)."},
    {"twinsync_broker_queue_last_stored_sequence", "gauge", s_q_last_seq,
     "Highest sequence stored (the duplicate filter)."},
    {"twinsync_broker_queue_published_total", "counter", s_q_published,
     "PUBLISH frames accepted, new and duplicate."},
    {"twinsync_broker_queue_stored_total", "counter", s_q_stored, "Messages stored durably."},
    {"twinsync_broker_queue_delivered_total", "counter", s_q_delivered,
     "DELIVER frames sent, first deliveries and redeliveries."},
    {"twinsync_broker_queue_consumed_total", "counter", s_q_consumed,
     "Messages removed after the receiving node consumed them."},
    {"twinsync_broker_queue_redelivered_total", "counter", s_q_redelivered,
     "DELIVER frames of a sequence already delivered since the broker started."},
    {"twinsync_broker_queue_duplicates_total", "counter", s_q_duplicates,
     "PUBLISH frames of a sequence already stored (answered STORED, not stored again)."},
};

static void s_conn_labels(char *buf, size_t size, const conn_t *conn, const char *key,
                          const char *value)
{
    buf[0] = '\0';
    broker_prom_label(buf, size, "connection", conn->id);
    if (key)
        broker_prom_label(buf, size, key, value);
}

static void s_write_queue_metrics(broker_core_t *self, proto_buf_t *out, int64_t now_ms)
{
    for (size_t f = 0; f < sizeof s_queue_families / sizeof s_queue_families[0]; f++) {
        broker_prom_family(out, s_queue_families[f].name, s_queue_families[f].type,
                           s_queue_families[f].help);
        for (size_t i = 0; i < self->conns_count; i++) {
            for (int dir = 0; dir < 2; dir++) {
                char labels[256];
                s_conn_labels(labels, sizeof labels, self->conns[i], "direction", s_dir_name(dir));
                queue_t *queue = &self->conns[i]->queue[dir];
                broker_prom_sample(out, s_queue_families[f].name, labels,
                                   s_queue_families[f].fn(self, queue, now_ms));
            }
        }
    }
}

static void s_write_conn_metrics(broker_core_t *self, proto_buf_t *out)
{
    const char *name = "twinsync_broker_connection_peers_connected";
    broker_prom_family(out, name, "gauge", "Nodes of the connection with a live session (0-2).");
    for (size_t i = 0; i < self->conns_count; i++) {
        conn_t *conn = self->conns[i];
        char labels[256];
        s_conn_labels(labels, sizeof labels, conn, NULL, NULL);
        broker_prom_sample(out, name, labels, (conn->peer[0] != NULL) + (conn->peer[1] != NULL));
    }
    name = "twinsync_broker_connection_joined";
    broker_prom_family(out, name, "gauge", "1 when the private node has joined, 0 while pending.");
    for (size_t i = 0; i < self->conns_count; i++) {
        char labels[256];
        s_conn_labels(labels, sizeof labels, self->conns[i], NULL, NULL);
        broker_prom_sample(out, name, labels, self->conns[i]->token_used);
    }
    name = "twinsync_broker_connection_last_seen_timestamp_seconds";
    broker_prom_family(out, name, "gauge",
                       "When each node of the connection was last heard from (Unix time, 0: "
                       "never since start).");
    for (size_t i = 0; i < self->conns_count; i++) {
        conn_t *conn = self->conns[i];
        for (int side = 0; side < 2; side++) {
            int64_t seen =
                conn->peer[side] ? conn->peer[side]->last_seen_ms : conn->last_seen_ms[side];
            char labels[256];
            s_conn_labels(labels, sizeof labels, conn, "role", s_side_name(side));
            broker_prom_sample(out, name, labels, (double)seen / 1000.0);
        }
    }
}

static void s_write_broker_metrics(broker_core_t *self, proto_buf_t *out)
{
    broker_metrics_write_rejects(&self->metrics, out, "twinsync_broker_frames_rejected_total");
    broker_metrics_write_fsync(&self->metrics, out, "twinsync_broker_store_fsync_seconds");
    const char *name = "twinsync_broker_store_bytes";
    broker_prom_family(out, name, "gauge", "Size of the store on disk (database and WAL).");
    broker_prom_sample(out, name, NULL, (double)broker_store_disk_bytes(self->store));
    size_t joined = 0;
    for (size_t i = 0; i < self->conns_count; i++)
        joined += self->conns[i]->token_used;
    uint64_t file_bytes = 0, file_count = 0;
    for (size_t i = 0; i < self->conns_count; i++) {
        for (int dir = 0; dir < 2; dir++) {
            file_bytes += self->conns[i]->queue[dir].file_bytes;
            file_count += self->conns[i]->queue[dir].file_count;
        }
    }
    name = "twinsync_broker_queues_file_bytes";
    broker_prom_family(out, name, "gauge",
                       "Payload bytes of file data held in all queues together.");
    broker_prom_sample(out, name, NULL, (double)file_bytes);
    name = "twinsync_broker_queues_file_messages";
    broker_prom_family(out, name, "gauge", "Messages of file data held in all queues together.");
    broker_prom_sample(out, name, NULL, (double)file_count);
    name = "twinsync_broker_connections";
    broker_prom_family(out, name, "gauge", "Connections known to the broker, by state.");
    broker_prom_sample(out, name, "state=\"pending\"", (double)(self->conns_count - joined));
    broker_prom_sample(out, name, "state=\"active\"", (double)joined);
    name = "twinsync_broker_peers";
    broker_prom_family(out, name, "gauge",
                       "Node sessions (peers that said HELLO and are alive), guests included.");
    broker_prom_sample(out, name, NULL, (double)self->peers_count);
    name = "twinsync_broker_guests";
    broker_prom_family(out, name, "gauge",
                       "Sessions of keys bound to no connection yet (guests: HELLO, JOIN, PING "
                       "only, for guest_grace_ms).");
    broker_prom_sample(out, name, NULL, (double)broker_core_guest_count(self));
    name = "twinsync_broker_guests_expired_total";
    broker_prom_family(out, name, "counter",
                       "Guest sessions ended because guest_grace_ms passed without a JOIN.");
    broker_prom_sample(out, name, NULL, (double)self->metrics.guests_expired);
    name = "twinsync_broker_replies_dropped_total";
    broker_prom_family(out, name, "counter",
                       "Replies not sent because the peer's queue was full (the node re-sends).");
    broker_prom_sample(out, name, NULL, (double)self->metrics.replies_dropped);
    broker_metrics_write_handshakes(&self->metrics, out, "twinsync_broker_handshakes_failed_total");
    name = "twinsync_broker_hello_ahead_total";
    broker_prom_family(out, name, "counter",
                       "HELLOs reporting a STORED sequence the broker does not hold (lost data).");
    broker_prom_sample(out, name, NULL, (double)self->metrics.hello_ahead);
    name = "twinsync_broker_hello_behind_total";
    broker_prom_family(out, name, "counter",
                       "Connections of HELLOs whose node state is older than the broker's "
                       "queues (restored from an old backup?), told in WELCOME.");
    broker_prom_sample(out, name, NULL, (double)self->metrics.hello_behind);
    name = "twinsync_broker_start_time_seconds";
    broker_prom_family(out, name, "gauge", "When the broker started (Unix time).");
    broker_prom_sample(out, name, NULL, (double)(self->start_ms / 1000));
}

void broker_core_write_metrics(broker_core_t *self, proto_buf_t *out, int64_t now_ms)
{
    proto_buf_reset(out);
    s_write_queue_metrics(self, out, now_ms);
    s_write_conn_metrics(self, out);
    s_write_broker_metrics(self, out);
}
