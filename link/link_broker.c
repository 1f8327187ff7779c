/*  link_broker.c: the node's side of the broker link (see link_broker.h).

    Parts, in file order: connections and pending requests (the state the
    link keeps across sessions), sending (one encoded frame per call, the
    pump that drains the windows within the credit), the session (open,
    HELLO, death with backoff), the dispatch of what the broker sends, and
    the public API.

    Invariants: `socket` is NULL exactly when state is LINK_DOWN; entries of
    a window are marked sent only in LINK_READY, and every new HELLO marks
    them all unsent again, so each session re-sends everything un-STORED.
*/
#include "link_broker.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "link_window.h"
#include "proto_buf.h"

#define LINK_HANDLE_BATCH   1024 //  Messages read per link_handle at most
#define LINK_DEFAULT_CREDIT 64   //  The broker's credit when HELLO asks for none (§4.5)

typedef struct {
    char id[PROTO_MAX_ID + 1]; //  Connection id
    uint64_t stored;           //  Highest own sequence STORED
    uint64_t consumed;         //  Highest inbound sequence applied
    uint64_t next;             //  Next own sequence the application assigns (0: unknown)
    link_window_t *window;     //  Un-STORED PUBLISHes
    int64_t resume_at;         //  Paused (429 / 422 / 5xx) until then; 0: not paused
    bool stopped;              //  Refused (403 / 404 / 413): silent until next session
    uint32_t acks_owed;        //  Applied in this burst, CONSUMED not sent yet
} s_conn_t;

typedef struct {
    proto_type_t type;                    //  PROTO_INVITE or PROTO_JOIN
    char conn[PROTO_MAX_ID + 1];          //  Connection id
    uint8_t key[PROTO_KEY_SIZE];          //  Token hash (INVITE) or token (JOIN)
    uint64_t expires;                     //  INVITE only
    char description[PROTO_MAX_NAME + 1]; //  Node description, "" for none
    bool has_kx;                          //  JOIN only: kx and auth are sent
    uint8_t kx[PROTO_KEY_SIZE];           //  JOIN only: X25519 public key
    uint8_t auth[PROTO_KEY_SIZE];         //  JOIN only: the join's authenticator
} s_request_t;

struct link_t {
    void *ctx;              //  ZeroMQ context, not owned
    void *socket;           //  DEALER, NULL while down
    link_config_t config;   //  Copy; endpoint and node_id point into ours
    char *endpoint;         //  Owned copy of config.endpoint
    char *node_id;          //  Owned copy of config.node_id
    link_callbacks_t cb;    //  Application callbacks
    link_state_t state;     //  Down, hello, ready
    s_conn_t **conns;       //  Connections served
    size_t conns_count;     //  Entries in conns
    s_request_t **requests; //  INVITE / JOIN waiting for an answer
    size_t requests_count;  //  Entries in requests
    uint32_t heartbeat_ms;  //  In force (WELCOME's, else the configured one)
    uint32_t credit;        //  PUBLISHes sent un-STORED per connection at most
    uint32_t max_frame;     //  Largest frame the broker accepts
    uint32_t batch;         //  Most messages per PUBLISH (WELCOME.batch and config; >= 1)
    bool corked;            //  link_cork: link_publish only queues
    int64_t now;            //  Time of the last tick / handle
    int64_t last_recv;      //  Last message from the broker (or HELLO sent)
    int64_t last_send;      //  Last message sent
    int64_t reopen_at;      //  When a down link opens its socket
    int64_t backoff_ms;     //  Delay before the next reopen after a death
    bool in_burst;          //  Inside link_handle: CONSUMED waits for the burst's end
    proto_buf_t buf;        //  Encoding scratch
};

//  ---------------------------------------------------------------------------
//  Connections and requests

static s_conn_t *s_conn_find(const link_t *self, const char *conn)
{
    if (!conn)
        return NULL;
    for (size_t i = 0; i < self->conns_count; i++)
        if (strcmp(self->conns[i]->id, conn) == 0)
            return self->conns[i];
    return NULL;
}

static void s_conn_free(s_conn_t **conn_p)
{
    if (!*conn_p)
        return;
    link_window_destroy(&(*conn_p)->window);
    free(*conn_p);
    *conn_p = NULL;
}

//  Index of the request of type for conn, or -1.
static long s_request_find(const link_t *self, proto_type_t type, const char *conn)
{
    for (size_t i = 0; i < self->requests_count; i++)
        if (self->requests[i]->type == type && strcmp(self->requests[i]->conn, conn) == 0)
            return (long)i;
    return -1;
}

static void s_request_remove(link_t *self, size_t i)
{
    free(self->requests[i]);
    self->requests[i] = self->requests[--self->requests_count];
}

//  True for an id the protocol accepts (docs/protocol.md §3).
static bool s_valid_id(const char *id)
{
    size_t len = id ? strlen(id) : 0;
    if (len == 0 || len > PROTO_MAX_ID)
        return false;
    return strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-") == len;
}

//  ---------------------------------------------------------------------------
//  Sending

static void s_report(link_t *self, uint16_t code, const char *text, const char *conn, bool has_seq,
                     uint64_t seq, bool local)
{
    if (!self->cb.on_error)
        return;
    link_error_t error = {code, text ? text : "", conn, has_seq, seq, local};
    self->cb.on_error(&error, self->cb.arg);
}

//  Sends one frame. Returns 0, or -1 when the socket would not take it (the
//  caller keeps what it sent for the next try).
static int s_send_frame(link_t *self, const uint8_t *data, size_t size)
{
    if (!self->socket)
        return -1;
    if (zmq_send(self->socket, data, size, ZMQ_DONTWAIT) < 0)
        return -1;
    self->last_send = self->now;
    return 0;
}

//  Encodes msg into self->buf. Returns PROTO_OK or the encoder's status.
static proto_status_t s_encode(link_t *self, const proto_msg_t *msg, proto_error_t *err)
{
    //  Which node may send INVITE or JOIN is the broker's to check (it
    //  answers ERROR 403); that a node sends only node messages is ours.
    assert(proto_msg_may_send(msg->type, PROTO_SENDER_NODE));
    return proto_msg_encode(msg, &self->config.limits, &self->buf, err);
}

//  Encodes and sends msg. Returns 0, or -1 (reported as a local error when
//  the message does not encode: a bug or a bad argument upstream).
static int s_send_msg(link_t *self, const proto_msg_t *msg)
{
    proto_error_t err;
    if (s_encode(self, msg, &err) != PROTO_OK) {
        s_report(self, PROTO_ERR_BAD_FRAME, proto_error_str(&err), NULL, false, 0, true);
        return -1;
    }
    return s_send_frame(self, self->buf.data, self->buf.size);
}

static int s_send_empty(link_t *self, proto_type_t type)
{
    proto_msg_t msg;
    proto_msg_init(&msg, type);
    return s_send_msg(self, &msg);
}

static int s_send_ack(link_t *self, proto_type_t type, const char *conn, uint64_t seq)
{
    proto_msg_t msg;
    proto_msg_init(&msg, type);
    msg.consumed = (proto_ack_t){conn, seq};
    return s_send_msg(self, &msg);
}

//  Applications that answer DELIVER with little work between messages
//  would otherwise send one CONSUMED per DELIVER. Inside a burst (the
//  messages link_handle reads without blocking) CONSUMED is owed instead and
//  sent once per connection at the end, or when half the credit is owed so
//  that the broker's window never closes; it carries the connection's
//  consumed position, which covers every message before it (cumulative,
//  docs/protocol.md §4.4).
static uint32_t s_ack_every(const link_t *self)
{
    uint32_t credit = self->config.credit ? self->config.credit : LINK_DEFAULT_CREDIT;
    return credit / 2 > 0 ? credit / 2 : 1;
}

//  Sends the CONSUMED conn owes, if any. Outside LINK_READY nothing is
//  sent: the next HELLO carries the consumed position.
static void s_ack_flush(link_t *self, s_conn_t *conn)
{
    if (conn->acks_owed == 0)
        return;
    conn->acks_owed = 0;
    if (self->state == LINK_READY)
        s_send_ack(self, PROTO_CONSUMED, conn->id, conn->consumed);
}

static void s_ack_flush_all(link_t *self)
{
    for (size_t i = 0; i < self->conns_count; i++)
        s_ack_flush(self, self->conns[i]);
}

static int s_send_request(link_t *self, const s_request_t *request)
{
    proto_msg_t msg;
    proto_msg_init(&msg, request->type);
    const char *description = request->description[0] ? request->description : NULL;
    if (request->type == PROTO_INVITE) {
        msg.invite.conn = request->conn;
        memcpy(msg.invite.token_hash, request->key, PROTO_KEY_SIZE);
        msg.invite.expires = request->expires;
        msg.invite.description = description;
    } else {
        msg.join.conn = request->conn;
        memcpy(msg.join.token, request->key, PROTO_KEY_SIZE);
        msg.join.description = request->description;
        msg.join.has_kx = msg.join.has_auth = request->has_kx;
        memcpy(msg.join.kx, request->kx, PROTO_KEY_SIZE);
        memcpy(msg.join.auth, request->auth, PROTO_KEY_SIZE);
    }
    return s_send_msg(self, &msg);
}

#define LINK_BATCH_MAX 256 //  Most messages per PUBLISH this link builds

//  Sends what conn's window holds and the credit allows: consecutive
//  waiting messages go out as one PUBLISH of up to self->batch messages
//  (one each when the broker takes no batches), within the broker's
//  max_frame and the link's own.
static void s_pump_conn(link_t *self, s_conn_t *conn)
{
    if (conn->stopped || (conn->resume_at && conn->resume_at > self->now))
        return;
    conn->resume_at = 0;
    const link_entry_t *entry;
    proto_item_t more[LINK_BATCH_MAX];
    size_t frame = self->max_frame < self->config.limits.max_frame ? self->max_frame
                                                                   : self->config.limits.max_frame;
    //  A quarter of the window a frame: the broker commits the first ones
    //  (and STORED comes back) while the next ones travel.
    size_t quarter = (self->config.window < self->credit ? self->config.window : self->credit) / 4;
    while (link_window_sent(conn->window) < self->credit &&
           (entry = link_window_next(conn->window)) != NULL) {
        if (entry->size + PROTO_DATA_OVERHEAD > self->max_frame) {
            conn->stopped = true;
            s_report(self, PROTO_ERR_TOO_BIG, "PUBLISH larger than the broker's max_frame",
                     conn->id, true, entry->seq, true);
            return;
        }
        size_t room = self->credit - link_window_sent(conn->window);
        size_t limit = self->batch < room ? self->batch : room;
        if (limit > quarter)
            limit = quarter ? quarter : 1;
        if (limit > LINK_BATCH_MAX)
            limit = LINK_BATCH_MAX;
        size_t bytes = entry->size + PROTO_DATA_OVERHEAD, count = 1;
        const link_entry_t *next;
        while (count < limit && (next = link_window_waiting(conn->window, count)) != NULL &&
               next->seq == entry->seq + count &&
               bytes + next->size + PROTO_ITEM_OVERHEAD <= frame) {
            more[count - 1] = (proto_item_t){next->data, next->size,
                                             next->file ? PROTO_DATA_FILE : PROTO_DATA_RECORD};
            bytes += next->size + PROTO_ITEM_OVERHEAD;
            count++;
        }
        proto_msg_t msg;
        proto_msg_init(&msg, PROTO_PUBLISH);
        msg.publish = (proto_data_t){conn->id,
                                     entry->seq,
                                     entry->data,
                                     entry->size,
                                     count > 1 ? more : NULL,
                                     count - 1,
                                     entry->file ? PROTO_DATA_FILE : PROTO_DATA_RECORD};
        if (s_send_msg(self, &msg) != 0)
            return;
        for (size_t i = 0; i < count; i++)
            link_window_mark_sent(conn->window);
    }
}

static void s_pump(link_t *self)
{
    if (self->state != LINK_READY)
        return;
    for (size_t i = 0; i < self->conns_count && self->state == LINK_READY; i++)
        s_pump_conn(self, self->conns[i]);
}

//  ---------------------------------------------------------------------------
//  Session

static void s_set_state(link_t *self, link_state_t state, const char *reason)
{
    self->state = state;
    if (self->cb.on_state)
        self->cb.on_state(state, reason, self->cb.arg);
}

//  Closes the socket; the next open waits for the backoff, which doubles.
static void s_die(link_t *self, const char *reason)
{
    if (self->socket) {
        zmq_close(self->socket);
        self->socket = NULL;
    }
    self->reopen_at = self->now + self->backoff_ms;
    self->backoff_ms *= 2;
    if (self->backoff_ms > self->config.backoff_max_ms)
        self->backoff_ms = self->config.backoff_max_ms;
    s_set_state(self, LINK_DOWN, reason);
}

//  Starts a session on the open socket: every window waits again, HELLO
//  goes out with every connection's positions, the WELCOME timer starts.
static void s_hello(link_t *self, const char *reason)
{
    proto_conn_state_t *states = calloc(self->conns_count ? self->conns_count : 1, sizeof *states);
    if (!states) {
        s_die(self, "out of memory");
        return;
    }
    for (size_t i = 0; i < self->conns_count; i++) {
        s_conn_t *conn = self->conns[i];
        link_window_rewind_all(conn->window);
        conn->acks_owed = 0; //  HELLO carries the consumed position
        conn->stopped = false;
        conn->resume_at = 0;
        states[i] = (proto_conn_state_t){conn->id, conn->stored, conn->consumed, conn->next};
    }
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_HELLO);
    msg.hello = (proto_hello_t){self->node_id, self->config.role, self->config.credit,
                                states,        self->conns_count, self->config.batch};
    proto_error_t err;
    proto_status_t status = s_encode(self, &msg, &err);
    free(states);
    if (status != PROTO_OK) {
        s_report(self, PROTO_ERR_BAD_FRAME, proto_error_str(&err), NULL, false, 0, true);
        s_die(self, "HELLO does not encode");
        return;
    }
    self->last_recv = self->now;
    self->state = LINK_HELLO;
    if (s_send_frame(self, self->buf.data, self->buf.size) != 0) {
        s_die(self, "cannot send HELLO");
        return;
    }
    s_set_state(self, LINK_HELLO, reason);
}

//  Sets the options of a new DEALER. Returns 0 or -1. No ZMQ_ROUTING_ID:
//  the broker's ROUTER gives each connection its own id and knows the node
//  by its CURVE key. A fixed id (the node id, as before) let anyone who knew
//  a node's name and the broker's public key take the node's routing id.
static int s_configure(link_t *self, void *socket)
{
    int zero = 0;
    const link_config_t *c = &self->config;
    if (zmq_setsockopt(socket, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_setsockopt(socket, ZMQ_SNDHWM, &zero, sizeof zero) != 0 ||
        zmq_setsockopt(socket, ZMQ_CURVE_SERVERKEY, c->broker_key, PROTO_KEY_SIZE) != 0 ||
        zmq_setsockopt(socket, ZMQ_CURVE_PUBLICKEY, c->public_key, PROTO_KEY_SIZE) != 0 ||
        zmq_setsockopt(socket, ZMQ_CURVE_SECRETKEY, c->secret_key, PROTO_KEY_SIZE) != 0)
        return -1;
    return zmq_connect(socket, self->endpoint);
}

static void s_open(link_t *self)
{
    assert(!self->socket);
    void *socket = zmq_socket(self->ctx, ZMQ_DEALER);
    if (!socket || s_configure(self, socket) != 0) {
        char reason[160];
        snprintf(reason, sizeof reason, "cannot open a socket to the broker: %s",
                 zmq_strerror(zmq_errno()));
        if (socket)
            zmq_close(socket);
        s_die(self, reason);
        return;
    }
    self->socket = socket;
    s_hello(self, "connecting");
}

//  ---------------------------------------------------------------------------
//  What the broker sends

static void s_on_welcome(link_t *self, const proto_welcome_t *welcome)
{
    if (welcome->heartbeat_ms)
        self->heartbeat_ms = welcome->heartbeat_ms;
    self->credit = welcome->credit ? welcome->credit : 1;
    self->max_frame = welcome->max_frame;
    self->batch = welcome->batch ? welcome->batch : 1;
    if (self->batch > self->config.batch)
        self->batch = self->config.batch ? self->config.batch : 1;
    self->backoff_ms = self->config.backoff_min_ms;
    //  Connections whose positions the broker is past (the application's
    //  state went back in time): settled before anything is sent.
    for (size_t i = 0; i < welcome->conns_count; i++) {
        const proto_conn_state_t *behind = &welcome->conns[i];
        s_conn_t *conn = s_conn_find(self, behind->conn);
        if (!conn)
            continue;
        if (behind->stored > conn->stored) {
            conn->stored = behind->stored;
            link_window_ack(conn->window, behind->stored);
        }
        if (behind->stored >= conn->next)
            conn->next = behind->stored + 1;
        if (behind->consumed > conn->consumed)
            conn->consumed = behind->consumed;
        if (self->cb.on_behind)
            self->cb.on_behind(conn->id, behind->stored, behind->consumed, self->cb.arg);
    }
    self->state = LINK_READY;
    for (size_t i = 0; i < self->requests_count; i++)
        s_send_request(self, self->requests[i]);
    char reason[PROTO_MAX_ID + 32];
    snprintf(reason, sizeof reason, "welcome from broker %s", welcome->broker);
    s_set_state(self, LINK_READY, reason);
}

//  An ERROR about a PUBLISH of conn. Refusals the broker may lift (429 full,
//  422 out of order, 5xx failure) rewind the window to the sequence named and
//  pause the connection for retry_ms: the PUBLISHes already on their way draw
//  their own refusals meanwhile, and a pause makes those rewinds cost nothing.
//  Other refusals (403, 404, 413) stop the connection until the next session.
static void s_on_publish_error(link_t *self, s_conn_t *conn, const proto_msg_error_t *error)
{
    bool retry = error->code == PROTO_ERR_QUEUE_FULL || error->code == PROTO_ERR_OUT_OF_ORDER ||
                 error->code >= 500;
    if (!retry) {
        conn->stopped = true;
        s_report(self, error->code, error->text, conn->id, true, error->seq, false);
        return;
    }
    if (link_window_rewind(conn->window, error->seq) == 0) {
        conn->resume_at = self->now + self->config.retry_ms;
        if (error->code >= 500)
            s_report(self, error->code, error->text, conn->id, true, error->seq, false);
        return;
    }
    //  The window no longer holds seq: a late refusal of something since
    //  STORED (nothing to do), or a broker that lost what it had stored.
    if (error->code == PROTO_ERR_OUT_OF_ORDER) {
        char text[160];
        snprintf(text, sizeof text,
                 "broker expects seq %llu but the link holds from seq %llu: the broker lost "
                 "messages",
                 (unsigned long long)error->seq,
                 (unsigned long long)link_window_first_seq(conn->window));
        s_report(self, error->code, text, conn->id, true, error->seq, true);
    }
}

static void s_on_error(link_t *self, const proto_msg_error_t *error)
{
    if (error->code == PROTO_ERR_NOT_HELLO) {
        //  Every frame sent before the broker restarted draws a 401; the first
        //  one starts a session, the others find HELLO already on its way.
        if (self->state == LINK_READY)
            s_hello(self, "the broker does not know this session (ERROR 401)");
        return;
    }
    s_conn_t *conn = s_conn_find(self, error->conn);
    if (conn && error->has_seq) {
        s_on_publish_error(self, conn, error);
        return;
    }
    if (error->conn) {
        for (long i; (i = s_request_find(self, PROTO_INVITE, error->conn)) >= 0 ||
                     (i = s_request_find(self, PROTO_JOIN, error->conn)) >= 0;)
            s_request_remove(self, (size_t)i);
    }
    s_report(self, error->code, error->text, error->conn, error->has_seq, error->seq, false);
    if (self->state == LINK_HELLO && !error->conn) {
        char reason[96];
        snprintf(reason, sizeof reason, "the broker refused HELLO (ERROR %u)",
                 (unsigned)error->code);
        s_die(self, reason);
    }
}

static void s_on_stored(link_t *self, const proto_ack_t *ack)
{
    s_conn_t *conn = s_conn_find(self, ack->conn);
    if (!conn || ack->seq <= conn->stored)
        return;
    conn->stored = ack->seq;
    link_window_ack(conn->window, ack->seq);
    if (self->cb.on_stored)
        self->cb.on_stored(ack->conn, ack->seq, self->cb.arg);
}

static void s_deliver_one(link_t *self, const char *conn, uint64_t seq, const uint8_t *payload,
                          size_t size)
{
    int result = LINK_REFUSED;
    if (self->cb.on_deliver)
        result = self->cb.on_deliver(conn, seq, payload, size, self->cb.arg);
    if (result == LINK_APPLIED)
        link_consume(self, conn, seq);
}

//  DELIVER: one message, or a batch of consecutive ones, each handed to the
//  application as if it came alone.
static void s_on_deliver(link_t *self, const proto_data_t *data)
{
    s_deliver_one(self, data->conn, data->seq, data->payload, data->payload_size);
    for (size_t i = 0; i < data->more_count; i++) //  the decoder kept seq + i in range
        s_deliver_one(self, data->conn, data->seq + 1 + i, data->more[i].payload,
                      data->more[i].payload_size);
}

static void s_on_answer(link_t *self, proto_type_t type, const char *conn)
{
    long i = s_request_find(self, type, conn);
    if (i >= 0)
        s_request_remove(self, (size_t)i);
}

//  Reports a message the broker may not send (or this link cannot take).
static void s_unexpected(link_t *self, const proto_msg_t *msg)
{
    char text[64];
    snprintf(text, sizeof text, "unexpected %s from the broker", proto_type_name(msg->type));
    s_report(self, PROTO_ERR_BAD_FRAME, text, NULL, false, 0, true);
}

static void s_dispatch(link_t *self, const proto_msg_t *msg)
{
    //  What the broker may send is the protocol's table; anything else is
    //  refused before it reaches a handler.
    if (!proto_msg_may_send(msg->type, PROTO_SENDER_BROKER)) {
        s_unexpected(self, msg);
        return;
    }
    switch (msg->type) {
    case PROTO_WELCOME:
        s_on_welcome(self, &msg->welcome);
        break;
    case PROTO_ERROR:
        s_on_error(self, &msg->error);
        break;
    case PROTO_PING:
        if (self->state == LINK_READY)
            s_send_empty(self, PROTO_PONG);
        break;
    case PROTO_PONG:
        break;
    case PROTO_STORED:
        s_on_stored(self, &msg->stored);
        break;
    case PROTO_DELIVER:
        s_on_deliver(self, &msg->deliver);
        break;
    case PROTO_INVITED:
        s_on_answer(self, PROTO_INVITE, msg->invited.conn);
        if (self->cb.on_invited)
            self->cb.on_invited(msg->invited.conn, msg->invited.expires, self->cb.arg);
        break;
    case PROTO_JOINED:
        s_on_answer(self, PROTO_JOIN, msg->joined.conn);
        if (self->cb.on_joined)
            self->cb.on_joined(&msg->joined, self->cb.arg);
        break;
    default: //  The table lets the broker send a type this link does not handle
        s_unexpected(self, msg);
    }
}

//  ---------------------------------------------------------------------------
//  API

void link_config_defaults(link_config_t *config)
{
    memset(config, 0, sizeof *config);
    config->role = PROTO_ROLE_PUBLIC;
    config->window = 256;
    //  16 file chunks of 512 KiB, or far more records than the window holds:
    //  a bound on what the link copies and what lies in the broker's input
    //  for this connection (docs/bench.md, broker memory with file data).
    config->window_bytes = 8u << 20;
    config->batch = 64;
    config->heartbeat_ms = 5000;
    config->liveness = 3;
    config->backoff_min_ms = 1000;
    config->backoff_max_ms = 32000;
    config->retry_ms = 1000;
    config->limits = proto_limits_default();
}

//  Checks a configuration. Returns NULL, or what is wrong.
static const char *s_config_problem(const link_config_t *c)
{
    if (!c->endpoint || !*c->endpoint)
        return "no broker endpoint";
    if (!s_valid_id(c->node_id))
        return "node id must be 1 to 64 characters of [A-Za-z0-9._:-]";
    if (c->role != PROTO_ROLE_PUBLIC && c->role != PROTO_ROLE_PRIVATE)
        return "role must be public or private";
    if (c->window < 1 || c->heartbeat_ms < 1 || c->liveness < 1)
        return "window, heartbeat_ms and liveness must be at least 1";
    if (c->backoff_min_ms < 1 || c->backoff_max_ms < c->backoff_min_ms || c->retry_ms < 1)
        return "backoff_min_ms must be >= 1, backoff_max_ms >= backoff_min_ms, retry_ms >= 1";
    return NULL;
}

link_t *link_new(void *zmq_ctx, const link_config_t *config, const link_callbacks_t *callbacks,
                 char *err, size_t errlen)
{
    assert(zmq_ctx && config);
    const char *problem = s_config_problem(config);
    if (problem) {
        snprintf(err, errlen, "link: %s", problem);
        return NULL;
    }
    link_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "link: out of memory");
        return NULL;
    }
    self->ctx = zmq_ctx;
    self->config = *config;
    self->endpoint = strdup(config->endpoint);
    self->node_id = strdup(config->node_id);
    if (!self->endpoint || !self->node_id) {
        link_destroy(&self);
        snprintf(err, errlen, "link: out of memory");
        return NULL;
    }
    self->config.endpoint = self->endpoint;
    self->config.node_id = self->node_id;
    if (self->config.limits.max_frame == 0)
        self->config.limits = proto_limits_default();
    if (callbacks)
        self->cb = *callbacks;
    self->state = LINK_DOWN;
    self->heartbeat_ms = config->heartbeat_ms;
    self->credit = config->window;
    self->max_frame = (uint32_t)self->config.limits.max_frame;
    self->batch = 1;
    self->backoff_ms = config->backoff_min_ms;
    proto_buf_init(&self->buf);
    return self;
}

void link_destroy(link_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    link_t *self = *self_p;
    if (self->socket)
        zmq_close(self->socket);
    for (size_t i = 0; i < self->conns_count; i++)
        s_conn_free(&self->conns[i]);
    free(self->conns);
    for (size_t i = 0; i < self->requests_count; i++)
        free(self->requests[i]);
    free(self->requests);
    proto_buf_release(&self->buf);
    free(self->endpoint);
    free(self->node_id);
    free(self);
    *self_p = NULL;
}

int link_conn_add(link_t *self, const char *conn, uint64_t stored, uint64_t consumed)
{
    if (!s_valid_id(conn))
        return LINK_E_INVALID;
    s_conn_t *found = s_conn_find(self, conn);
    if (found) {
        if (stored > found->stored) {
            found->stored = stored;
            link_window_ack(found->window, stored);
        }
        if (consumed > found->consumed)
            found->consumed = consumed;
        return LINK_OK;
    }
    s_conn_t **conns = realloc(self->conns, (self->conns_count + 1) * sizeof *conns);
    if (!conns)
        return LINK_E_NOMEM;
    self->conns = conns;
    s_conn_t *entry = calloc(1, sizeof *entry);
    if (!entry || !(entry->window = link_window_new(self->config.window))) {
        free(entry);
        return LINK_E_NOMEM;
    }
    snprintf(entry->id, sizeof entry->id, "%s", conn);
    entry->stored = stored;
    entry->consumed = consumed;
    entry->next = 0;
    link_window_ack(entry->window, stored);
    self->conns[self->conns_count++] = entry;
    return LINK_OK;
}

int link_conn_remove(link_t *self, const char *conn)
{
    for (size_t i = 0; i < self->conns_count; i++) {
        if (strcmp(self->conns[i]->id, conn) != 0)
            continue;
        s_conn_free(&self->conns[i]);
        self->conns[i] = self->conns[--self->conns_count];
        return LINK_OK;
    }
    return LINK_E_UNKNOWN_CONN;
}

int link_conn_set_next(link_t *self, const char *conn, uint64_t next)
{
    s_conn_t *found = s_conn_find(self, conn);
    if (!found)
        return LINK_E_UNKNOWN_CONN;
    found->next = next;
    return LINK_OK;
}

//  Places free in conn's window: none while it holds window_bytes or more
//  (whatever the next message's size, it is taken below that).
static size_t s_room(const link_t *self, const s_conn_t *conn)
{
    if (self->config.window_bytes && link_window_bytes(conn->window) >= self->config.window_bytes)
        return 0;
    return link_window_room(conn->window);
}

int link_publish(link_t *self, const char *conn, uint64_t seq, const uint8_t *payload, size_t size,
                 bool file)
{
    s_conn_t *found = s_conn_find(self, conn);
    if (!found)
        return LINK_E_UNKNOWN_CONN;
    if (seq <= link_window_last_seq(found->window))
        return LINK_E_SEQ;
    if (s_room(self, found) == 0)
        return LINK_FULL;
    if (seq == 0 || size > self->config.limits.max_payload || (size && !payload))
        return LINK_E_INVALID;
    if (link_window_push(found->window, seq, size ? payload : (const uint8_t *)"", size, file) != 0)
        return LINK_E_NOMEM;
    if (found->next && seq >= found->next)
        found->next = seq + 1;
    if (self->state == LINK_READY && !self->corked)
        s_pump_conn(self, found);
    return LINK_OK;
}

void link_cork(link_t *self)
{
    self->corked = true;
}

void link_uncork(link_t *self)
{
    self->corked = false;
    s_pump(self);
}

size_t link_room(const link_t *self, const char *conn)
{
    s_conn_t *found = s_conn_find(self, conn);
    return found ? s_room(self, found) : 0;
}

size_t link_unstored(const link_t *self, const char *conn)
{
    s_conn_t *found = s_conn_find(self, conn);
    return found ? link_window_count(found->window) : 0;
}

int link_consume(link_t *self, const char *conn, uint64_t seq)
{
    s_conn_t *found = s_conn_find(self, conn);
    if (!found)
        return LINK_E_UNKNOWN_CONN;
    if (seq > found->consumed)
        found->consumed = seq;
    //  Best effort: a CONSUMED that does not go out is covered by the
    //  consumed position of the next HELLO (the broker drops what it covers).
    found->acks_owed++;
    if (!self->in_burst || found->acks_owed >= s_ack_every(self))
        s_ack_flush(self, found);
    return LINK_OK;
}

//  Records (or replaces) a request and sends it when the session is up.
static int s_request(link_t *self, const s_request_t *request)
{
    long i = s_request_find(self, request->type, request->conn);
    s_request_t *entry = i >= 0 ? self->requests[i] : calloc(1, sizeof *entry);
    if (!entry)
        return LINK_E_NOMEM;
    if (i < 0) {
        s_request_t **requests =
            realloc(self->requests, (self->requests_count + 1) * sizeof *requests);
        if (!requests) {
            free(entry);
            return LINK_E_NOMEM;
        }
        self->requests = requests;
        self->requests[self->requests_count++] = entry;
    }
    *entry = *request;
    if (self->state == LINK_READY)
        s_send_request(self, entry);
    return LINK_OK;
}

//  Fills the common part of a request; LINK_E_INVALID for a bad id or text.
static int s_request_init(s_request_t *request, proto_type_t type, const char *conn,
                          const uint8_t key[PROTO_KEY_SIZE], const char *description)
{
    memset(request, 0, sizeof *request);
    if (!s_valid_id(conn) || (description && strlen(description) > PROTO_MAX_NAME))
        return LINK_E_INVALID;
    request->type = type;
    snprintf(request->conn, sizeof request->conn, "%s", conn);
    memcpy(request->key, key, PROTO_KEY_SIZE);
    if (description)
        snprintf(request->description, sizeof request->description, "%s", description);
    return LINK_OK;
}

int link_invite(link_t *self, const char *conn, const uint8_t token_hash[PROTO_KEY_SIZE],
                uint64_t expires, const char *description)
{
    s_request_t request;
    int rc = s_request_init(&request, PROTO_INVITE, conn, token_hash, description);
    if (rc != LINK_OK)
        return rc;
    request.expires = expires;
    return s_request(self, &request);
}

int link_join(link_t *self, const char *conn, const uint8_t token[PROTO_KEY_SIZE],
              const uint8_t *kx, const uint8_t *auth, const char *description)
{
    s_request_t request;
    int rc = s_request_init(&request, PROTO_JOIN, conn, token, description ? description : "");
    if (rc != LINK_OK)
        return rc;
    if ((kx == NULL) != (auth == NULL))
        return LINK_E_INVALID;
    request.has_kx = kx != NULL;
    if (kx) {
        memcpy(request.kx, kx, PROTO_KEY_SIZE);
        memcpy(request.auth, auth, PROTO_KEY_SIZE);
    }
    rc = link_conn_add(self, conn, 0, 0);
    if (rc != LINK_OK)
        return rc;
    return s_request(self, &request);
}

bool link_pollitem(const link_t *self, zmq_pollitem_t *item)
{
    if (!self->socket)
        return false;
    *item = (zmq_pollitem_t){self->socket, 0, ZMQ_POLLIN, 0};
    return true;
}

void *link_socket(const link_t *self)
{
    return self->socket;
}

int link_handle(link_t *self, int64_t now_ms)
{
    self->now = now_ms;
    int handled = 0;
    self->in_burst = true;
    while (self->socket && handled < LINK_HANDLE_BATCH) {
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        if (zmq_msg_recv(&frame, self->socket, ZMQ_DONTWAIT) < 0) {
            int error = zmq_errno();
            zmq_msg_close(&frame);
            if (error == EAGAIN || error == EINTR)
                break;
            self->in_burst = false; //  What is owed goes in the next HELLO
            s_die(self, "socket failure");
            return -1;
        }
        handled++;
        self->last_recv = now_ms;
        proto_msg_t msg;
        proto_error_t err;
        proto_status_t status = proto_msg_decode(zmq_msg_data(&frame), zmq_msg_size(&frame),
                                                 &self->config.limits, &msg, &err);
        bool more = zmq_msg_more(&frame);
        zmq_msg_close(&frame);
        if (status != PROTO_OK || more) {
            char text[300];
            snprintf(text, sizeof text, "bad frame from the broker: %s",
                     status != PROTO_OK ? proto_error_str(&err) : "more than one frame");
            s_report(self, PROTO_ERR_BAD_FRAME, text, NULL, false, 0, true);
            proto_msg_clear(&msg);
            continue;
        }
        s_dispatch(self, &msg);
        proto_msg_clear(&msg);
    }
    self->in_burst = false;
    s_ack_flush_all(self);
    s_pump(self);
    return handled;
}

void link_tick(link_t *self, int64_t now_ms)
{
    self->now = now_ms;
    int64_t deadline = self->last_recv + (int64_t)self->config.liveness * self->heartbeat_ms;
    switch (self->state) {
    case LINK_DOWN:
        if (now_ms >= self->reopen_at)
            s_open(self);
        return;
    case LINK_HELLO:
        if (now_ms >= deadline)
            s_die(self, "no WELCOME from the broker");
        return;
    case LINK_READY:
        if (now_ms >= deadline) {
            s_die(self, "the broker went silent");
            return;
        }
        if (now_ms - self->last_send >= self->heartbeat_ms)
            s_send_empty(self, PROTO_PING);
        s_pump(self);
        return;
    }
}

long link_next_timeout_ms(const link_t *self, int64_t now_ms)
{
    int64_t at;
    if (self->state == LINK_DOWN)
        at = self->reopen_at;
    else {
        at = self->last_recv + (int64_t)self->config.liveness * self->heartbeat_ms;
        if (self->state == LINK_READY) {
            int64_t ping = self->last_send + self->heartbeat_ms;
            at = ping < at ? ping : at;
            for (size_t i = 0; i < self->conns_count; i++) {
                const s_conn_t *conn = self->conns[i];
                if (conn->resume_at && !conn->stopped && conn->resume_at < at)
                    at = conn->resume_at;
            }
        }
    }
    int64_t wait = at - now_ms;
    return wait < 0 ? 0 : (wait > 3600000 ? 3600000 : (long)wait);
}

link_state_t link_state(const link_t *self)
{
    return self->state;
}

uint32_t link_heartbeat_ms(const link_t *self)
{
    return self->heartbeat_ms;
}

const char *link_state_name(link_state_t state)
{
    switch (state) {
    case LINK_DOWN:
        return "down";
    case LINK_HELLO:
        return "hello";
    case LINK_READY:
        return "ready";
    }
    return "unknown";
}

const char *link_status_str(int status)
{
    switch (status) {
    case LINK_OK:
        return "ok";
    case LINK_FULL:
        return "window full";
    case LINK_E_UNKNOWN_CONN:
        return "unknown connection";
    case LINK_E_SEQ:
        return "sequence not above the last one";
    case LINK_E_INVALID:
        return "invalid message";
    case LINK_E_NOMEM:
        return "out of memory";
    }
    return "unknown status";
}
