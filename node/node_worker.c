/*  node_worker.c: the node daemon's worker thread and its channel to the
    loop (see node_worker.h).

    How the parts fit:
      s_pair_*      the inproc messages, both directions
      s_wconn_*     per connection: inbound queue sorted by seq, the apply
                    and poll schedules with back-off
      s_drain       applies a connection's queue in order, as far as it can
      s_tick        polls the connections that are due, then requests
      s_main        the thread: wait for a message or the next due time,
                    take every message, drain, tick
    The loop's side (node_worker_deliver, _forget, _answer) only sends and
    receives; everything else runs on the worker thread, which alone touches
    the connection table. stopping, welcomed and failed are the only fields
    both threads read.
*/
#include "node_worker.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "ts_log.h"

#define S_TICK_MS        250   //  Worker looks at requests and retries this often
#define S_HOLD_MS        1000  //  Retry of a held inbound message
#define S_BACKOFF_MAX_MS 30000 //  Longest pause after ServiceNow failures

//  One inbound message waiting in the worker.
typedef struct s_inbound {
    uint64_t seq;           //  Sequence
    uint8_t *data;          //  Sealed payload, owned
    size_t size;            //  Bytes
    struct s_inbound *next; //  Next higher seq
} s_inbound_t;

//  A connection as the worker serves it.
typedef struct {
    char id[PROTO_MAX_ID + 1]; //  Connection id
    s_inbound_t *queue;        //  Inbound messages by seq
    int64_t apply_at;          //  Monotonic ms before which the queue waits
    int64_t poll_at;           //  Monotonic ms of the next poll
    int failures;              //  ServiceNow failures in a row (back-off)
} s_wconn_t;

struct node_worker {
    node_worker_ops_t ops; //  What the worker calls
    void *pair;            //  Loop's end of the PAIR
    void *wpair;           //  Worker's end
    pthread_t thread;      //  The worker thread
    bool started;          //  thread is joinable
    bool stop_sent;        //  STOP is on its way (loop's side)
    atomic_bool stopping;  //  Stop asked: apply and poll nothing more
    atomic_bool welcomed;  //  The broker confirmed our positions: tick
    atomic_bool failed;    //  The worker gave up (FATAL sent)
    s_wconn_t *wconns;     //  Worker's connections (worker thread only)
    size_t wconn_count;    //  Entries
};

//  --- inproc messages

//  Sends a message of up to four frames (NULL frames are left out). Never
//  blocks: the sockets have no high-water mark.
static void s_pair_send(void *socket, const char *type, const char *conn, const uint64_t *seq,
                        const uint8_t *data, size_t size)
{
    bool more_conn = conn != NULL, more_seq = seq != NULL, more_data = data != NULL;
    zmq_send(socket, type, strlen(type), more_conn ? ZMQ_SNDMORE : 0);
    if (more_conn)
        zmq_send(socket, conn, strlen(conn), more_seq ? ZMQ_SNDMORE : 0);
    if (more_seq)
        zmq_send(socket, seq, sizeof *seq, more_data ? ZMQ_SNDMORE : 0);
    if (more_data)
        zmq_send(socket, data, size, 0);
}

typedef struct {
    char type[16];               //  Message type
    char conn[PROTO_MAX_ID + 1]; //  Connection, "" when absent
    uint64_t seq;                //  Sequence, 0 when absent
    zmq_msg_t data;              //  Payload frame (empty when absent)
} s_pair_msg_t;

//  Receives one message without waiting. Returns 0, or -1 when none.
static int s_pair_recv(void *socket, s_pair_msg_t *msg)
{
    memset(msg, 0, sizeof *msg);
    zmq_msg_init(&msg->data);
    zmq_msg_t part;
    int index = 0;
    bool more = true;
    while (more) {
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, socket, index == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close(&part);
            return -1;
        }
        size_t size = zmq_msg_size(&part);
        const char *data = zmq_msg_data(&part);
        if (index == 0)
            snprintf(msg->type, sizeof msg->type, "%.*s", (int)size, data);
        else if (index == 1)
            snprintf(msg->conn, sizeof msg->conn, "%.*s", (int)size, data);
        else if (index == 2 && size == sizeof msg->seq)
            memcpy(&msg->seq, data, sizeof msg->seq);
        else if (index == 3)
            zmq_msg_copy(&msg->data, &part);
        more = zmq_msg_more(&part);
        zmq_msg_close(&part);
        index++;
    }
    return 0;
}

//  --- connections (worker thread)

static s_wconn_t *s_wconn(node_worker_t *self, const char *id)
{
    for (size_t i = 0; i < self->wconn_count; i++)
        if (!strcmp(self->wconns[i].id, id))
            return &self->wconns[i];
    s_wconn_t *grown = realloc(self->wconns, (self->wconn_count + 1) * sizeof(s_wconn_t));
    if (!grown)
        return NULL;
    self->wconns = grown;
    s_wconn_t *c = &self->wconns[self->wconn_count++];
    memset(c, 0, sizeof *c);
    snprintf(c->id, sizeof c->id, "%s", id);
    return c;
}

static void s_queue_free(s_inbound_t *head)
{
    while (head) {
        s_inbound_t *next = head->next;
        free(head->data);
        free(head);
        head = next;
    }
}

//  Inserts a DELIVER in seq order (a re-delivered seq already queued is
//  dropped; one re-delivered after a refusal goes back to its place).
static void s_enqueue(s_wconn_t *c, uint64_t seq, const void *data, size_t size)
{
    s_inbound_t **at = &c->queue;
    while (*at && (*at)->seq < seq)
        at = &(*at)->next;
    if (*at && (*at)->seq == seq)
        return;
    s_inbound_t *item = calloc(1, sizeof *item);
    uint8_t *copy = malloc(size ? size : 1);
    if (!item || !copy) {
        free(item);
        free(copy);
        return; //  not consumed: the broker delivers it again next session
    }
    memcpy(copy, data, size);
    *item = (s_inbound_t){seq, copy, size, *at};
    *at = item;
    c->apply_at = 0;
}

//  Milliseconds to wait after n failures in a row.
static int64_t s_backoff(const node_worker_t *self, int failures)
{
    int64_t delay = self->ops.poll_interval_ms;
    for (int i = 0; i < failures && delay < S_BACKOFF_MAX_MS; i++)
        delay *= 2;
    return delay < S_BACKOFF_MAX_MS ? delay : S_BACKOFF_MAX_MS;
}

//  --- worker thread

//  True when the worker must start nothing new: stopped or failed.
static bool s_halted(node_worker_t *self)
{
    return atomic_load(&self->stopping) || atomic_load(&self->failed);
}

static void s_fail(node_worker_t *self)
{
    atomic_store(&self->failed, true);
    s_pair_send(self->wpair, "FATAL", NULL, NULL, NULL, 0);
}

//  Applies the queued messages of c in order, as far as possible.
static void s_drain(node_worker_t *self, s_wconn_t *c, int64_t now)
{
    bool applied = false;
    while (c->queue && now >= c->apply_at && !s_halted(self)) {
        s_inbound_t *head = c->queue;
        node_sync_rc_t rc =
            self->ops.apply(self->ops.arg, c->id, head->seq, head->data, head->size);
        if (rc == NODE_SYNC_OK || rc == NODE_SYNC_REFUSED) {
            if (rc == NODE_SYNC_OK)
                s_pair_send(self->wpair, "CONSUMED", c->id, &head->seq, NULL, 0);
            c->queue = head->next;
            head->next = NULL;
            s_queue_free(head);
            applied = true;
            continue;
        }
        if (rc == NODE_SYNC_FATAL) {
            s_fail(self);
            break;
        }
        c->failures += rc != NODE_SYNC_HOLD;
        c->apply_at = now + (rc == NODE_SYNC_HOLD ? S_HOLD_MS : s_backoff(self, c->failures));
    }
    if (applied)
        s_pair_send(self->wpair, "OUTBOX", c->id, NULL, NULL, 0); //  RECEIPTs
}

//  Polls the connections that are due, then requests and retries.
static void s_tick(node_worker_t *self, int64_t now)
{
    node_worker_conn_t *conns = NULL;
    size_t count = 0;
    if (self->ops.list(self->ops.arg, &conns, &count)) {
        s_fail(self);
        return;
    }
    bool fatal = false;
    for (size_t i = 0; i < count && !fatal && !s_halted(self); i++) {
        if (!conns[i].pollable)
            continue;
        s_wconn_t *c = s_wconn(self, conns[i].id);
        if (!c || now < c->poll_at)
            continue;
        bool sent = false;
        node_sync_rc_t rc = self->ops.poll(self->ops.arg, c->id, &sent);
        fatal = rc == NODE_SYNC_FATAL;
        c->failures = rc == NODE_SYNC_OK ? 0 : c->failures + 1;
        c->poll_at =
            now + (c->failures ? s_backoff(self, c->failures) : self->ops.poll_interval_ms);
        if (rc == NODE_SYNC_OK)
            c->apply_at = 0; //  a connection back from error applies what waited
        if (sent)
            s_pair_send(self->wpair, "OUTBOX", c->id, NULL, NULL, 0);
    }
    if (!fatal && !s_halted(self))
        fatal = self->ops.requests(self->ops.arg) == NODE_SYNC_FATAL;
    for (size_t i = 0; i < count && !fatal; i++)
        s_pair_send(self->wpair, "OUTBOX", conns[i].id, NULL, NULL, 0); //  exalate, retries
    free(conns);
    if (fatal)
        s_fail(self);
}

//  Handles one message from the loop. Returns false on STOP.
static bool s_handle(node_worker_t *self, s_pair_msg_t *msg)
{
    if (!strcmp(msg->type, "STOP"))
        return false;
    if (!strcmp(msg->type, "DELIVER")) {
        s_wconn_t *c = s_wconn(self, msg->conn);
        if (c)
            s_enqueue(c, msg->seq, zmq_msg_data(&msg->data), zmq_msg_size(&msg->data));
    } else if (!strcmp(msg->type, "FORGET")) {
        for (size_t i = 0; i < self->wconn_count; i++) {
            if (strcmp(self->wconns[i].id, msg->conn))
                continue;
            s_queue_free(self->wconns[i].queue);
            self->wconns[i] = self->wconns[--self->wconn_count];
            break;
        }
        if (self->ops.forget)
            self->ops.forget(self->ops.arg, msg->conn);
    }
    return true;
}

static void *s_main(void *arg)
{
    node_worker_t *self = arg;
    int64_t next_tick = 0;
    bool running = true;
    while (running && !s_halted(self)) {
        int64_t now = ts_mono_ms();
        long timeout = next_tick > now ? (long)(next_tick - now) : 0;
        for (size_t i = 0; i < self->wconn_count; i++) {
            s_wconn_t *c = &self->wconns[i];
            if (c->queue)
                timeout = c->apply_at <= now            ? 0
                          : c->apply_at - now < timeout ? (long)(c->apply_at - now)
                                                        : timeout;
        }
        zmq_pollitem_t item = {self->wpair, 0, ZMQ_POLLIN, 0};
        zmq_poll(&item, 1, timeout);
        s_pair_msg_t msg;
        while (running && s_pair_recv(self->wpair, &msg) == 0) {
            running = s_handle(self, &msg);
            zmq_msg_close(&msg.data);
        }
        now = ts_mono_ms();
        for (size_t i = 0; running && i < self->wconn_count; i++)
            s_drain(self, &self->wconns[i], now);
        //  No poll, request or retry (they take sequence numbers) before the
        //  broker has confirmed where this node's queues stand.
        if (running && !s_halted(self) && now >= next_tick && atomic_load(&self->welcomed)) {
            s_tick(self, now);
            next_tick = now + S_TICK_MS;
        }
    }
    return NULL;
}

//  --- the loop's side

node_worker_t *node_worker_new(void *zmq_ctx, const node_worker_ops_t *ops, char *err,
                               size_t errlen)
{
    node_worker_t *self = calloc(1, sizeof(node_worker_t));
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->ops = *ops;
    atomic_init(&self->stopping, false);
    atomic_init(&self->welcomed, false);
    atomic_init(&self->failed, false);
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "inproc://node-worker-%p", (void *)self);
    self->pair = zmq_socket(zmq_ctx, ZMQ_PAIR);
    self->wpair = zmq_socket(zmq_ctx, ZMQ_PAIR);
    int zero = 0;
    bool ok = self->pair && self->wpair;
    for (int i = 0; ok && i < 2; i++) {
        void *socket = i ? self->wpair : self->pair;
        ok = !zmq_setsockopt(socket, ZMQ_LINGER, &zero, sizeof zero) &&
             !zmq_setsockopt(socket, ZMQ_SNDHWM, &zero, sizeof zero) &&
             !zmq_setsockopt(socket, ZMQ_RCVHWM, &zero, sizeof zero);
    }
    if (!ok || zmq_bind(self->pair, endpoint) || zmq_connect(self->wpair, endpoint)) {
        snprintf(err, errlen, "cannot set up the worker's channel: %s", zmq_strerror(zmq_errno()));
        node_worker_destroy(&self);
        return NULL;
    }
    return self;
}

void node_worker_destroy(node_worker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    node_worker_t *self = *self_p;
    if (self->started) {
        node_worker_stop(self);
        pthread_join(self->thread, NULL);
    }
    if (self->pair)
        zmq_close(self->pair);
    if (self->wpair)
        zmq_close(self->wpair);
    for (size_t i = 0; i < self->wconn_count; i++)
        s_queue_free(self->wconns[i].queue);
    free(self->wconns);
    free(self);
    *self_p = NULL;
}

int node_worker_start(node_worker_t *self)
{
    if (self->started)
        return 0;
    if (pthread_create(&self->thread, NULL, s_main, self))
        return -1;
    self->started = true;
    return 0;
}

void *node_worker_socket(node_worker_t *self)
{
    return self->pair;
}

void node_worker_deliver(node_worker_t *self, const char *conn, uint64_t seq,
                         const uint8_t *payload, size_t size)
{
    s_pair_send(self->pair, "DELIVER", conn, &seq, payload ? payload : (const uint8_t *)"", size);
}

void node_worker_forget(node_worker_t *self, const char *conn)
{
    s_pair_send(self->pair, "FORGET", conn, NULL, NULL, 0);
}

void node_worker_welcome(node_worker_t *self)
{
    atomic_store(&self->welcomed, true);
}

void node_worker_stop(node_worker_t *self)
{
    atomic_store(&self->stopping, true);
    if (!self->stop_sent) {
        s_pair_send(self->pair, "STOP", NULL, NULL, NULL, 0); //  wakes it from its poll
        self->stop_sent = true;
    }
}

bool node_worker_failed(node_worker_t *self)
{
    return atomic_load(&self->failed);
}

int node_worker_answer(node_worker_t *self, node_worker_answer_t *answer)
{
    s_pair_msg_t msg;
    while (s_pair_recv(self->pair, &msg) == 0) {
        zmq_msg_close(&msg.data);
        memset(answer, 0, sizeof *answer);
        snprintf(answer->conn, sizeof answer->conn, "%s", msg.conn);
        answer->seq = msg.seq;
        if (!strcmp(msg.type, "CONSUMED"))
            answer->kind = NODE_WORKER_CONSUMED;
        else if (!strcmp(msg.type, "OUTBOX"))
            answer->kind = NODE_WORKER_OUTBOX;
        else if (!strcmp(msg.type, "FATAL"))
            answer->kind = NODE_WORKER_FATAL;
        else
            continue;
        return 0;
    }
    return -1;
}
