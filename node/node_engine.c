/*  node_engine.c: the node daemon's two threads (see node_engine.h).

    How the parts fit:
      worker        node_worker.h runs the thread and the channel to it;
                    s_op_* are what it calls: node_sync and the worker's
                    own database handle
      loop          s_scan (connections the admin commands created or
                    deleted, INVITE / JOIN, link creation), s_offer (outbox
                    -> link_publish), the link callbacks, node_engine_run
*/
#include "node_engine.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "link_broker.h"
#include "node_keys.h"
#include "node_state.h"
#include "node_sync.h"
#include "node_transfer.h"
#include "node_worker.h"
#include "proto_invite.h"
#include "sn_query.h"
#include "ts_log.h"
#include "ts_secret.h"

#define S_SCAN_MS        1000  //  Loop re-reads connections this often
#define S_UNREACHABLE_MS 5000  //  Link not ready this long: warn, naming the endpoint
#define S_REWARN_MS      60000 //  ... and again this often while it stays so

//  A connection as the loop serves it.
typedef struct {
    char id[PROTO_MAX_ID + 1]; //  Connection id
    bool in_link;              //  link_conn_add done
    bool requested;            //  INVITE / JOIN sent by this process
    uint64_t offered;          //  Highest seq offered to link_publish
    bool seen;                 //  Still in the database (scan mark)
    bool paused;               //  Deactivated: its outbox waits
} s_known_t;

struct node_engine {
    const node_config_t *cfg;             //  Configuration (not owned)
    proto_role_t role;                    //  Our role
    char description[PROTO_MAX_NAME + 1]; //  Shown to the other node: our name, no URL
    sn_client_t *sn;                      //  Used by the worker only
    uint8_t public_key[PROTO_KEY_SIZE];   //  Node's CURVE pair
    uint8_t secret_key[PROTO_KEY_SIZE];   //  (secret wiped on destroy)
    void *zmq_ctx;                        //  ZeroMQ context
    //  loop
    node_state_t *state;              //  Loop's database handle
    link_t *link;                     //  Broker link, NULL until an endpoint is known
    node_worker_t *worker;            //  The worker thread and the channel to it
    s_known_t *known;                 //  Connections served
    size_t known_count;               //  Entries
    bool fatal;                       //  The loop or the worker failed for good
    char endpoint[PROTO_MAX_URL + 1]; //  Where the link dials
    int64_t down_since;               //  Monotonic ms the link left READY, 0 while ready
    int64_t warned_at;                //  Monotonic ms of the last "broker unreachable"
    //  worker (used only through the s_op_* calls, on the worker thread)
    node_state_t *wstate; //  Worker's database handle
    node_sync_t *sync;    //  Poll and apply
    //  transfer thread (node_transfer.h)
    node_state_t *tstate;      //  Its database handle
    sn_client_t *tsn;          //  Its ServiceNow client
    node_transfer_t *transfer; //  The thread
};

//  --- worker: what node_worker calls, on its thread

static int s_op_list(void *arg, node_worker_conn_t **conns_p, size_t *count_p)
{
    node_engine_t *self = arg;
    node_conn_t *conns = NULL;
    size_t count = 0;
    *conns_p = NULL;
    *count_p = 0;
    if (node_state_conn_list(self->wstate, &conns, &count)) {
        char quoted[600];
        ts_log(TS_LOG_ERROR, "state database failure", "during=worker-scan error=%s",
               ts_log_quote(quoted, sizeof quoted, node_state_error(self->wstate)));
        return -1;
    }
    node_worker_conn_t *out = count ? calloc(count, sizeof *out) : NULL;
    if (count && !out) {
        free(conns);
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        snprintf(out[i].id, sizeof out[i].id, "%s", conns[i].id);
        //  A connection in error polls only once it was joined: before, it
        //  has no root (a refused invitation or join).
        out[i].pollable = conns[i].status == NODE_CONN_ACTIVE ||
                          (conns[i].status == NODE_CONN_ERROR && conns[i].joined_at);
    }
    free(conns);
    *conns_p = out;
    *count_p = count;
    return 0;
}

static node_sync_rc_t s_op_poll(void *arg, const char *conn, bool *sent)
{
    node_engine_t *self = arg;
    node_sync_report_t report = {0};
    node_sync_rc_t rc = node_sync_poll(self->sync, conn, &report);
    *sent = report.sent;
    return rc;
}

static node_sync_rc_t s_op_requests(void *arg)
{
    node_engine_t *self = arg;
    node_sync_rc_t rc = node_sync_requests(self->sync);
    if (rc != NODE_SYNC_FATAL)
        rc = node_sync_retry(self->sync, NULL);
    bool sent = false;
    return rc == NODE_SYNC_FATAL ? rc : node_sync_files_pump(self->sync, &sent);
}

static node_sync_rc_t s_op_apply(void *arg, const char *conn, uint64_t seq, const uint8_t *payload,
                                 size_t size)
{
    node_engine_t *self = arg;
    return node_sync_apply(self->sync, conn, seq, payload, size);
}

static void s_op_forget(void *arg, const char *conn)
{
    node_engine_t *self = arg;
    node_sync_forget(self->sync, conn);
}

//  --- loop: connections

static s_known_t *s_known(node_engine_t *self, const char *id)
{
    for (size_t i = 0; i < self->known_count; i++)
        if (!strcmp(self->known[i].id, id))
            return &self->known[i];
    return NULL;
}

static s_known_t *s_known_add(node_engine_t *self, const char *id)
{
    s_known_t *known = s_known(self, id);
    if (known)
        return known;
    s_known_t *grown = realloc(self->known, (self->known_count + 1) * sizeof(s_known_t));
    if (!grown)
        return NULL;
    self->known = grown;
    known = &self->known[self->known_count++];
    memset(known, 0, sizeof *known);
    snprintf(known->id, sizeof known->id, "%s", id);
    return known;
}

static void s_log_state_error(node_engine_t *self, const char *during)
{
    char quoted[600];
    ts_log(TS_LOG_ERROR, "state database failure", "during=%s error=%s", during,
           ts_log_quote(quoted, sizeof quoted, node_state_error(self->state)));
    self->fatal = true;
}

typedef struct {
    node_engine_t *engine; //  Engine
    s_known_t *known;      //  Connection offered
} s_offer_t;

static int s_offer_row(uint64_t seq, const uint8_t *payload, size_t size, bool file, void *arg)
{
    s_offer_t *offer = arg;
    int rc = link_publish(offer->engine->link, offer->known->id, seq, payload, size, file);
    if (rc == LINK_OK || rc == LINK_E_SEQ) {
        offer->known->offered = seq; //  E_SEQ: the link already has it
        return 0;
    }
    if (rc != LINK_FULL)
        ts_log(TS_LOG_ERROR, "cannot offer message", "conn=%s seq=%" PRIu64 " error=\"%s\"",
               offer->known->id, seq, link_status_str(rc));
    return 1;
}

//  Offers the outbox rows of conn the link does not have yet.
static void s_offer(node_engine_t *self, const char *conn)
{
    s_known_t *known = s_known(self, conn);
    if (!self->link || !known || !known->in_link || known->paused)
        return;
    size_t room = link_room(self->link, conn);
    if (room == 0)
        return;
    s_offer_t offer = {self, known};
    link_cork(self->link); //  the rows leave together, batched
    if (node_state_outbox_each(self->state, conn, known->offered, room, s_offer_row, &offer))
        s_log_state_error(self, "offer");
    link_uncork(self->link);
}

//  Puts conn in the link with its durable positions.
static void s_link_add(node_engine_t *self, s_known_t *known, const node_conn_t *conn)
{
    if (!self->link || known->in_link)
        return;
    if (link_conn_add(self->link, conn->id, conn->stored_seq, conn->applied_in_seq) != LINK_OK ||
        link_conn_set_next(self->link, conn->id, conn->next_out_seq) != LINK_OK)
        return;
    known->in_link = true;
    if (known->offered < conn->stored_seq)
        known->offered = conn->stored_seq;
}

//  Sends INVITE (public, pending) or JOIN (private, joining) for conn.
static void s_request(node_engine_t *self, s_known_t *known, const node_conn_t *conn)
{
    node_keys_t keys;
    char err[512];
    int rc = node_keys_read(self->cfg->state_dir, conn->id, &keys, err, sizeof err);
    if (rc || !keys.has_token || (self->role == PROTO_ROLE_PRIVATE && !keys.has_join)) {
        ts_log(TS_LOG_ERROR, "cannot read the join token", "conn=%s reason=\"%s\"", conn->id,
               rc ? err : "no token or key exchange in the key file");
        node_keys_wipe(&keys);
        return;
    }
    if (self->role == PROTO_ROLE_PUBLIC) {
        uint8_t hash[PROTO_KEY_SIZE];
        proto_invite_token_hash(keys.join_token, hash);
        rc = link_invite(self->link, conn->id, hash, (uint64_t)conn->expires, self->description);
    } else {
        rc = link_join(self->link, conn->id, keys.join_token, keys.join_kx, keys.join_auth,
                       self->description);
        known->in_link = rc == LINK_OK;
    }
    node_keys_wipe(&keys);
    known->requested = rc == LINK_OK;
    ts_log(TS_LOG_INFO, self->role == PROTO_ROLE_PUBLIC ? "invite sent" : "join sent",
           "conn=%s status=\"%s\"", conn->id, link_status_str(rc));
}

static void s_on_state(link_state_t state, const char *reason, void *arg);
static void s_on_stored(const char *conn, uint64_t seq, void *arg);
static int s_on_deliver(const char *conn, uint64_t seq, const uint8_t *payload, size_t size,
                        void *arg);
static void s_on_invited(const char *conn, uint64_t expires, void *arg);
static void s_on_joined(const proto_joined_t *joined, void *arg);
static void s_on_error(const link_error_t *error, void *arg);
static void s_on_behind(const char *conn, uint64_t stored, uint64_t consumed, void *arg);

//  Creates the link once a broker endpoint and key are known: from the
//  configuration, or (private node) from the first accepted invitation.
static void s_link_open(node_engine_t *self, const node_conn_t *conns, size_t count)
{
    const char *endpoint = self->cfg->endpoint, *key = self->cfg->broker_key;
    for (size_t i = 0; (!*endpoint || !*key) && i < count; i++) {
        if (*conns[i].broker_endpoint && *conns[i].broker_key) {
            endpoint = conns[i].broker_endpoint;
            key = conns[i].broker_key;
        }
    }
    if (!*endpoint || !*key)
        return;
    link_config_t config;
    link_config_defaults(&config);
    config.endpoint = endpoint;
    config.node_id = self->cfg->name;
    config.role = self->role;
    config.heartbeat_ms = (uint32_t)self->cfg->heartbeat_ms;
    memcpy(config.public_key, self->public_key, PROTO_KEY_SIZE);
    memcpy(config.secret_key, self->secret_key, PROTO_KEY_SIZE);
    if (strlen(key) != 40 || !zmq_z85_decode(config.broker_key, key)) {
        ts_log(TS_LOG_ERROR, "broker public key is not 40 Z85 characters", NULL);
        self->fatal = true;
        return;
    }
    link_callbacks_t callbacks = {s_on_state,  s_on_stored, s_on_deliver, s_on_invited,
                                  s_on_joined, s_on_error,  s_on_behind,  self};
    char err[256];
    self->link = link_new(self->zmq_ctx, &config, &callbacks, err, sizeof err);
    memset(config.secret_key, 0, PROTO_KEY_SIZE);
    if (!self->link) {
        ts_log(TS_LOG_ERROR, "cannot create the broker link", "reason=\"%s\"", err);
        self->fatal = true;
        return;
    }
    snprintf(self->endpoint, sizeof self->endpoint, "%s", endpoint);
    self->down_since = ts_mono_ms();
    self->warned_at = 0;
    ts_log(TS_LOG_INFO, "broker link created", "endpoint=%s node=%s", endpoint, self->cfg->name);
}

//  A broker that is down or whose name does not resolve yet is no reason to
//  stop (it may come back), but the operator must learn where the node
//  dials: after S_UNREACHABLE_MS without a ready link, warn naming the
//  endpoint, then every S_REWARN_MS while it stays unreachable.
static void s_watch_link(node_engine_t *self, int64_t now)
{
    if (!self->link)
        return;
    if (link_state(self->link) == LINK_READY) {
        self->down_since = 0;
        return;
    }
    if (!self->down_since)
        self->down_since = now;
    bool due = self->warned_at ? now - self->warned_at >= S_REWARN_MS
                               : now - self->down_since >= S_UNREACHABLE_MS;
    if (!due)
        return;
    self->warned_at = now;
    ts_log(TS_LOG_WARN, "broker unreachable", "endpoint=%s state=%s for_s=%lld", self->endpoint,
           link_state_name(link_state(self->link)), (long long)((now - self->down_since) / 1000));
}

//  Drops connections deleted by an admin.
static void s_scan_removed(node_engine_t *self)
{
    size_t i = 0;
    while (i < self->known_count) {
        if (self->known[i].seen) {
            self->known[i++].seen = false;
            continue;
        }
        ts_log(TS_LOG_INFO, "connection removed", "conn=%s", self->known[i].id);
        if (self->link && self->known[i].in_link)
            link_conn_remove(self->link, self->known[i].id);
        node_worker_forget(self->worker, self->known[i].id);
        self->known[i] = self->known[--self->known_count];
    }
}

//  Reads the connections and does what each needs from the loop.
static void s_scan(node_engine_t *self)
{
    node_conn_t *conns = NULL;
    size_t count = 0;
    if (node_state_conn_list(self->state, &conns, &count)) {
        s_log_state_error(self, "scan");
        return;
    }
    if (!self->link)
        s_link_open(self, conns, count);
    for (size_t i = 0; i < count && self->link; i++) {
        const node_conn_t *conn = &conns[i];
        s_known_t *known = s_known_add(self, conn->id);
        if (!known)
            continue;
        known->seen = true;
        known->paused = conn->status == NODE_CONN_DEACTIVATED;
        bool public_side = self->role == PROTO_ROLE_PUBLIC;
        if (!known->requested &&
            ((public_side && conn->status == NODE_CONN_PENDING && !conn->invite_sent) ||
             (!public_side && conn->status == NODE_CONN_JOINING)))
            s_request(self, known, conn);
        bool serves = conn->status == NODE_CONN_ACTIVE || conn->status == NODE_CONN_DEACTIVATED ||
                      (conn->status == NODE_CONN_ERROR && conn->joined_at) ||
                      (public_side && conn->status == NODE_CONN_PENDING && conn->invite_sent);
        if (serves)
            s_link_add(self, known, conn);
        //  A join the public node refused (its root never came): the broker
        //  has the partner bound, but nothing of it may be applied here.
        if (!serves && public_side && known->in_link && conn->status == NODE_CONN_ERROR &&
            !conn->joined_at) {
            link_conn_remove(self->link, conn->id);
            known->in_link = false;
        }
        s_offer(self, conn->id);
    }
    for (size_t i = 0; !self->link && i < count; i++)
        s_known_add(self, conns[i].id)->seen = true;
    s_scan_removed(self);
    free(conns);
    char now[32];
    snprintf(now, sizeof now, "%lld", (long long)time(NULL));
    if (node_state_meta_set(self->state, "daemon_seen", now))
        s_log_state_error(self, "heartbeat");
}

//  --- loop: link callbacks

static void s_on_state(link_state_t state, const char *reason, void *arg)
{
    node_engine_t *self = arg;
    ts_log(state == LINK_READY ? TS_LOG_INFO : TS_LOG_WARN, "broker link", "state=%s reason=\"%s\"",
           link_state_name(state), reason ? reason : "");
    if (state == LINK_READY)
        node_worker_welcome(self->worker);
    node_state_meta_set(self->state, "link_state", link_state_name(state));
    node_state_meta_set(self->state, "link_reason", reason ? reason : "");
}

static void s_on_stored(const char *conn, uint64_t seq, void *arg)
{
    node_engine_t *self = arg;
    if (node_state_begin(self->state) || node_state_outbox_remove_upto(self->state, conn, seq) ||
        node_state_conn_set_stored(self->state, conn, seq) < 0 || node_state_commit(self->state)) {
        s_log_state_error(self, "stored");
        return;
    }
    s_offer(self, conn);
}

//  The broker is past conn's positions: this state is older than the
//  broker's queues (restored from a backup), or the broker says so wrongly.
//  Everything up to stored is at the broker, so the outbox drops it and the
//  next sequence goes above it (sealing is safe whatever the sequence: a
//  sequence sealed again gets a new epoch, docs/protocol.md §8.1). The
//  broker's word alone never skips an inbound message: when it says the
//  other side's messages up to consumed were applied here and deleted,
//  inbound stays held (the next message the broker has is not the next one
//  this state expects) until an admin accepts the position with `errors
//  retry ID`. Logged and listed in `errors list`.
static void s_on_behind(const char *conn, uint64_t stored, uint64_t consumed, void *arg)
{
    node_engine_t *self = arg;
    node_conn_t c;
    if (node_state_conn_get(self->state, conn, &c))
        return;
    bool skips = consumed > c.applied_in_seq;
    char text[NODE_TEXT_MAX + 1];
    int n = snprintf(
        text, sizeof text,
        "this node's state is older than the broker's queues (restored from an older "
        "backup?): the broker already held its messages up to %" PRIu64 " (this state: %" PRIu64
        "); sync continues after them. Changes made here since the backup are polled and sent "
        "again; twins created here since then are found again by correlation id",
        stored, c.next_out_seq ? c.next_out_seq - 1 : 0);
    if (skips && n > 0 && (size_t)n < sizeof text)
        snprintf(text + n, sizeof text - (size_t)n,
                 ". The broker also says the other side's messages up to %" PRIu64
                 " were applied here and deleted (this state: %" PRIu64
                 "); inbound sync is held until an admin accepts that with `errors retry` on "
                 "this error (only if this node's state was restored)",
                 consumed, c.applied_in_seq);
    ts_log(TS_LOG_WARN, "state behind broker",
           "conn=%s broker_stored=%" PRIu64 " broker_consumed=%" PRIu64 " next_out_seq=%" PRIu64
           " applied_in_seq=%" PRIu64 " inbound_held=%s",
           conn, stored, consumed, c.next_out_seq, c.applied_in_seq, skips ? "yes" : "no");
    node_error_t e;
    memset(&e, 0, sizeof e);
    snprintf(e.conn, sizeof e.conn, "%s", conn);
    snprintf(e.origin, sizeof e.origin, "broker");
    snprintf(e.code, sizeof e.code, "restored");
    snprintf(e.message, sizeof e.message, "%s", text);
    e.seq = skips ? consumed : 0; //  What an admin's retry accepts
    if (node_state_begin(self->state) || node_state_outbox_remove_upto(self->state, conn, stored) ||
        node_state_conn_set_stored(self->state, conn, stored) < 0 ||
        node_state_conn_set_next_min(self->state, conn, stored + 1) < 0 ||
        node_state_error_add(self->state, &e) < 0 ||
        node_state_conn_mark_restored(self->state, conn) || node_state_commit(self->state)) {
        s_log_state_error(self, "behind");
        return;
    }
    s_known_t *known = s_known(self, conn);
    if (known && known->offered < stored)
        known->offered = stored;
}

static int s_on_deliver(const char *conn, uint64_t seq, const uint8_t *payload, size_t size,
                        void *arg)
{
    node_engine_t *self = arg;
    node_worker_deliver(self->worker, conn, seq, payload, size);
    return LINK_LATER;
}

static void s_on_invited(const char *conn, uint64_t expires, void *arg)
{
    node_engine_t *self = arg;
    (void)expires;
    ts_log(TS_LOG_INFO, "invitation registered", "conn=%s", conn);
    if (node_state_conn_set_invite_sent(self->state, conn, true) < 0)
        s_log_state_error(self, "invited");
}

//  Public node, JOINED for a pending connection: checks the partner's half
//  of the key exchange and derives the root (node_keys_join_public).
//  Returns 0 when the join stands; 1 when it is refused (the connection goes
//  to error saying why, and never gets a root); -1 when the key file could
//  not be read or written (logged; the next JOINED, after the next HELLO,
//  tries again).
static int s_finish_join(node_engine_t *self, const node_conn_t *c, const proto_joined_t *joined)
{
    char reason[NODE_TEXT_MAX - 64] = "";
    uint8_t broker_key[PROTO_KEY_SIZE];
    int rc = 1;
    if (!joined->has_kx || !joined->has_auth)
        snprintf(reason, sizeof reason,
                 "the join brought no key exchange (twinsync-private or twinsync-broker is "
                 "older than 1.2): upgrade them, delete this connection and initiate a new one");
    else if (strlen(c->broker_key) != 40 || !zmq_z85_decode(broker_key, c->broker_key))
        snprintf(reason, sizeof reason, "the connection's broker key is not 40 Z85 characters");
    else
        rc = node_keys_join_public(self->cfg->state_dir, c->id, broker_key, joined->kx,
                                   joined->auth, reason, sizeof reason);
    if (rc == 0)
        return 0;
    char quoted[NODE_TEXT_MAX];
    ts_log_quote(quoted, sizeof quoted, reason);
    if (rc < 0) {
        ts_log(TS_LOG_ERROR, "cannot complete the join", "conn=%s reason=%s", c->id, quoted);
        return -1;
    }
    ts_log(TS_LOG_ERROR, "join refused", "conn=%s reason=%s", c->id, quoted);
    char text[NODE_TEXT_MAX + 1];
    snprintf(text, sizeof text, "join refused: %s", reason);
    if (node_state_conn_set_status(self->state, c->id, NODE_CONN_ERROR, text) < 0)
        s_log_state_error(self, "joined");
    return 1;
}

static void s_on_joined(const proto_joined_t *joined, void *arg)
{
    node_engine_t *self = arg;
    const char *conn = joined->conn;
    node_conn_t c;
    if (node_state_conn_get(self->state, conn, &c))
        return;
    bool joining = c.status == NODE_CONN_PENDING || c.status == NODE_CONN_JOINING;
    //  A public connection never joined and not pending (its join was
    //  refused, or its invitation): the broker's word changes nothing.
    if (self->role == PROTO_ROLE_PUBLIC && !joining && !c.joined_at)
        return;
    if (self->role == PROTO_ROLE_PUBLIC && joining && s_finish_join(self, &c, joined) != 0)
        return;
    int rc = node_state_conn_set_peer(self->state, conn, joined->description,
                                      c.joined_at ? c.joined_at : time(NULL));
    if (rc == 0 && joining) {
        //  Changes from now on are synced: the cursor starts here.
        char stamp[SN_STAMP_SIZE];
        sn_stamp_from_time(time(NULL), stamp);
        rc = node_state_conn_set_cursor(self->state, conn, stamp, 0) < 0 ||
             node_state_conn_set_status(self->state, conn, NODE_CONN_ACTIVE, NULL) < 0;
        ts_log(TS_LOG_INFO, "connection active", "conn=%s peer=\"%s\"", conn,
               joined->description ? joined->description : "");
    }
    if (rc)
        s_log_state_error(self, "joined");
    //  Joined: the token, the invitation secret and the key exchange leave
    //  the key file (after the database says so: a crash between the two
    //  finds the connection active and ends here again at the next JOINED).
    char err[512];
    if (rc == 0 && node_keys_forget_join(self->cfg->state_dir, conn, err, sizeof err))
        ts_log(TS_LOG_ERROR, "cannot wipe the join's secrets", "conn=%s reason=\"%s\"", conn, err);
    s_known_t *known = s_known(self, conn);
    if (known && node_state_conn_get(self->state, conn, &c) == 0)
        s_link_add(self, known, &c);
}

static void s_on_error(const link_error_t *error, void *arg)
{
    node_engine_t *self = arg;
    char quoted[600];
    ts_log(TS_LOG_WARN, "broker error", "code=%u conn=%s local=%d text=%s", error->code,
           error->conn ? error->conn : "-", error->local,
           ts_log_quote(quoted, sizeof quoted, error->text));
    node_conn_t c;
    if (!error->conn || node_state_conn_get(self->state, error->conn, &c))
        return;
    if (c.status != NODE_CONN_PENDING && c.status != NODE_CONN_JOINING)
        return;
    char text[NODE_TEXT_MAX + 1];
    snprintf(text, sizeof text, "the broker refused the %s: %s (%u)",
             self->role == PROTO_ROLE_PUBLIC ? "invitation" : "join", error->text, error->code);
    if (node_state_conn_set_status(self->state, error->conn, NODE_CONN_ERROR, text) < 0)
        s_log_state_error(self, "error");
}

//  --- engine

//  The ServiceNow client hands over whole lines ("level=warn msg=\"...\"
//  key=value..."); ts_log writes the timestamp, level and msg itself, so
//  those are taken out of the line and only the key=value rest is passed on.
static void s_sn_log(void *arg, const char *line)
{
    (void)arg;
    ts_log_level_t level = TS_LOG_WARN;
    if (strncmp(line, "level=", 6)) {
        char quoted[1024];
        ts_log(level, "servicenow", "detail=%s", ts_log_quote(quoted, sizeof quoted, line));
        return;
    }
    char name[16], msg[128] = "servicenow";
    snprintf(name, sizeof name, "%.*s", (int)strcspn(line + 6, " "), line + 6);
    ts_log_level_parse(name, &level);
    line += 6 + strcspn(line + 6, " ");
    line += strspn(line, " ");
    if (!strncmp(line, "msg=\"", 5) && strchr(line + 5, '"')) {
        size_t len = (size_t)(strchr(line + 5, '"') - (line + 5));
        snprintf(msg, sizeof msg, "%.*s", (int)len, line + 5);
        line += 5 + len + 1;
        line += strspn(line, " ");
    }
    if (*line)
        ts_log(level, msg, "%s", line);
    else
        ts_log(level, msg, NULL);
}

//  Builds the worker's ServiceNow client.
static sn_client_t *s_sn_client(const node_config_t *cfg, char *err, size_t errlen)
{
    char *password = NULL, *client_secret = NULL;
    if (node_config_secrets(cfg, &password, &client_secret, err, errlen))
        return NULL;
    sn_config_t sn = {.instance_url = cfg->url,
                      .auth = strcmp(cfg->auth, "oauth") ? SN_AUTH_BASIC : SN_AUTH_OAUTH,
                      .user = cfg->user,
                      .password = password,
                      .oauth_client_id = *cfg->client_id ? cfg->client_id : NULL,
                      .oauth_client_secret = *client_secret ? client_secret : NULL,
                      .ca_bundle = *cfg->ca_file ? cfg->ca_file : NULL,
                      .allow_insecure_http = cfg->allow_insecure_http,
                      .request_timeout_ms = cfg->request_timeout_ms,
                      .log = s_sn_log};
    sn.retry = sn_retry_policy_default();
    sn.retry.max_total_wait_ms = cfg->max_retry_wait_ms;
    sn_error_t sn_err;
    sn_client_t *client = sn_client_new(&sn, &sn_err);
    ts_secret_free(&password);
    ts_secret_free(&client_secret);
    if (!client) {
        //  After node_config_check_run, what the client still refuses at
        //  start is the URL (scheme, credentials, query, plain http); name
        //  the key then, else the section.
        bool url = strstr(sn_err.message, "URL") || strstr(sn_err.message, "http");
        snprintf(err, errlen, "servicenow%s: %s%s%s", url ? ".url" : "", sn_err.message,
                 *sn_err.detail ? " - " : "", sn_err.detail);
        node_config_blame(cfg, err, errlen);
    }
    return client;
}

//  Names the key and the file in a start-up failure of the state directory.
static void s_blame_state_dir(const node_config_t *cfg, char *err, size_t errlen)
{
    char reason[512];
    snprintf(reason, sizeof reason, "%s", err);
    snprintf(err, errlen, "node.state_dir: %s", reason);
    node_config_blame(cfg, err, errlen);
}

node_engine_t *node_engine_new(const node_config_t *cfg, char *err, size_t errlen)
{
    node_engine_t *self = calloc(1, sizeof(node_engine_t));
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->cfg = cfg;
    self->role = cfg->role;
    //  INVITE and JOIN descriptions end up in the broker's store: the node's
    //  name only, never the instance URL (docs/security.md).
    snprintf(self->description, sizeof self->description, "%s", cfg->name);
    if (node_config_check_run(cfg, err, errlen))
        goto fail;
    self->state = node_state_open(cfg->state_dir, err, errlen);
    self->wstate = self->state ? node_state_open(cfg->state_dir, err, errlen) : NULL;
    if (!self->wstate || node_keys_node_pair(cfg->state_dir, self->public_key, self->secret_key,
                                             NULL, err, errlen)) {
        s_blame_state_dir(cfg, err, errlen);
        goto fail;
    }
    self->sn = s_sn_client(cfg, err, errlen);
    if (!self->sn)
        goto fail;
    self->tstate = node_state_open(cfg->state_dir, err, errlen);
    self->tsn = self->tstate ? s_sn_client(cfg, err, errlen) : NULL;
    if (!self->tsn)
        goto fail;
    node_transfer_config_t transfer = {.state = self->tstate,
                                       .sn = self->tsn,
                                       .state_dir = cfg->state_dir,
                                       .sync_user = cfg->user};
    self->transfer = node_transfer_new(&transfer);
    node_sync_config_t sync = {.state = self->wstate,
                               .sn = self->sn,
                               .state_dir = cfg->state_dir,
                               .instance = cfg->instance,
                               .sync_user = cfg->user,
                               .lookback_s = (int)cfg->lookback_s,
                               .rekey_interval_s = cfg->rekey_interval_ms / 1000,
                               .no_padding = !cfg->pad_payloads,
                               .attachments_none = !strcmp(cfg->attachments, "none"),
                               .attachment_max = (uint64_t)cfg->attachment_max_bytes,
                               .attachment_scan_ms = cfg->attachment_scan_ms};
    self->sync = node_sync_new(&sync);
    self->zmq_ctx = zmq_ctx_new();
    if (!self->sync || !self->zmq_ctx || !self->transfer) {
        snprintf(err, errlen, "cannot set up the engine: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    node_worker_ops_t ops = {.arg = self,
                             .poll_interval_ms = cfg->poll_interval_ms,
                             .list = s_op_list,
                             .poll = s_op_poll,
                             .requests = s_op_requests,
                             .apply = s_op_apply,
                             .forget = s_op_forget};
    self->worker = node_worker_new(self->zmq_ctx, &ops, err, errlen);
    if (!self->worker)
        goto fail;
    return self;
fail:
    node_engine_destroy(&self);
    return NULL;
}

void node_engine_destroy(node_engine_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    node_engine_t *self = *self_p;
    node_worker_destroy(&self->worker); //  stops and joins the thread first
    node_transfer_destroy(&self->transfer);
    sn_client_destroy(&self->tsn);
    node_state_destroy(&self->tstate);
    link_destroy(&self->link);
    if (self->zmq_ctx)
        zmq_ctx_term(self->zmq_ctx);
    free(self->known);
    node_sync_destroy(&self->sync);
    sn_client_destroy(&self->sn);
    node_state_destroy(&self->state);
    node_state_destroy(&self->wstate);
    memset(self->secret_key, 0, sizeof self->secret_key);
    free(self);
    *self_p = NULL;
}

//  Handles what the worker sent.
static void s_loop_from_worker(node_engine_t *self)
{
    node_worker_answer_t answer;
    while (node_worker_answer(self->worker, &answer) == 0) {
        if (answer.kind == NODE_WORKER_CONSUMED && self->link)
            link_consume(self->link, answer.conn, answer.seq);
        else if (answer.kind == NODE_WORKER_OUTBOX)
            s_offer(self, answer.conn);
        else if (answer.kind == NODE_WORKER_FATAL)
            self->fatal = true;
    }
}

int node_engine_run(node_engine_t *self, volatile sig_atomic_t *stop)
{
    char pid[32];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    node_state_meta_set(self->state, "daemon_pid", pid);
    if (node_worker_start(self->worker) || node_transfer_start(self->transfer)) {
        ts_log(TS_LOG_ERROR, "cannot start the worker threads", NULL);
        return 1;
    }
    ts_log(TS_LOG_INFO, "node started", "node=%s role=%s instance=%s url=%s", self->cfg->name,
           proto_role_name(self->role), self->cfg->instance, self->cfg->url);
    int64_t next_scan = 0;
    while (!*stop && !self->fatal && !node_worker_failed(self->worker)) {
        int64_t now = ts_mono_ms();
        if (now >= next_scan) {
            s_scan(self);
            next_scan = now + S_SCAN_MS;
        }
        if (self->link)
            link_tick(self->link, now);
        s_watch_link(self, now);
        zmq_pollitem_t items[2] = {{node_worker_socket(self->worker), 0, ZMQ_POLLIN, 0}, {0}};
        int count = self->link && link_pollitem(self->link, &items[1]) ? 2 : 1;
        long timeout = (long)(next_scan - now);
        if (self->link) {
            long link_timeout = link_next_timeout_ms(self->link, now);
            timeout = link_timeout < timeout ? link_timeout : timeout;
        }
        if (zmq_poll(items, count, timeout < 0 ? 0 : timeout) < 0)
            continue; //  interrupted by a signal: check stop
        if (items[0].revents & ZMQ_POLLIN)
            s_loop_from_worker(self);
        if (count == 2 && (items[1].revents & ZMQ_POLLIN))
            link_handle(self->link, ts_mono_ms());
    }
    if (node_worker_failed(self->worker))
        self->fatal = true;
    ts_log(self->fatal ? TS_LOG_ERROR : TS_LOG_INFO, "node stopping", "reason=%s",
           self->fatal ? "fatal" : "signal");
    node_state_meta_set(self->state, "daemon_seen", "0");
    return self->fatal ? 1 : 0;
}
