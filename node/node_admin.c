/*  node_admin.c: the shared admin operations (see node_admin.h).

    How the parts fit: s_conn finds a connection by id or name for every
    operation that names one; s_counts adds the figures list, show and
    status print; s_wait_request and the retry loop poll the database for
    the daemon's answer, 200 ms apart, bounded by the caller's wait.
*/
#include "node_admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "node_keys.h"
#include "node_rekey.h"

#define S_DAEMON_FRESH 5   //  Seconds after which the daemon's heartbeat is stale
#define S_POLL_MS      200 //  How often a wait looks at the database

struct node_admin {
    const node_config_t *cfg; //  Configuration (lent)
    node_state_t *state;      //  The admin's own handle on node.db
};

node_admin_t *node_admin_open(const node_config_t *cfg, char *err, size_t errlen)
{
    if (!*cfg->state_dir) {
        snprintf(err, errlen, "missing key node.state_dir (give --config FILE)");
        return NULL;
    }
    node_admin_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->cfg = cfg;
    self->state = node_state_open(cfg->state_dir, err, errlen);
    if (!self->state)
        node_admin_destroy(&self);
    return self;
}

void node_admin_destroy(node_admin_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    node_state_destroy(&(*self_p)->state);
    free(*self_p);
    *self_p = NULL;
}

node_state_t *node_admin_state(node_admin_t *self)
{
    return self->state;
}

const node_config_t *node_admin_config(const node_admin_t *self)
{
    return self->cfg;
}

static void s_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

//  The database's last failure as err; returns -1.
static int s_db_fail(node_admin_t *self, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s", node_state_error(self->state));
    return -1;
}

bool node_admin_daemon_running(node_admin_t *self)
{
    char seen[32];
    if (node_state_meta_get(self->state, "daemon_seen", seen, sizeof seen))
        return false;
    char *end = NULL;
    long long at = strtoll(seen, &end, 10);
    return end != seen && *end == '\0' && time(NULL) - at <= S_DAEMON_FRESH;
}

//  Reads connection id-or-name which into *conn. Returns 0 or -1 with err.
static int s_conn(node_admin_t *self, const char *which, node_conn_t *conn, char *err,
                  size_t errlen)
{
    int rc = node_state_conn_get(self->state, which, conn);
    if (rc < 0)
        return s_db_fail(self, err, errlen);
    if (rc == 1) {
        snprintf(err, errlen, "no connection named %s (see connection list)", which);
        return -1;
    }
    return 0;
}

//  The connection which, or with which NULL the node's only one.
static int s_conn_or_only(node_admin_t *self, const char *which, node_conn_t *conn, char *err,
                          size_t errlen)
{
    if (which)
        return s_conn(self, which, conn, err, errlen);
    node_conn_t *list;
    size_t count;
    if (node_state_conn_list(self->state, &list, &count))
        return s_db_fail(self, err, errlen);
    if (count == 1)
        *conn = list[0];
    else
        snprintf(err, errlen, "this node has %zu connections: name the connection", count);
    free(list);
    return count == 1 ? 0 : -1;
}

//  Adds the counts of its connection to info.
static void s_counts(node_admin_t *self, node_admin_conn_t *info)
{
    const char *id = info->conn.id;
    node_state_twin_count(self->state, id, &info->twins, &info->under_sync);
    node_state_outbox_count(self->state, id, &info->outbox);
    node_state_error_count(self->state, id, &info->errors);
    node_state_blocked_count(self->state, id, NULL, &info->blocked);
}

int node_admin_conn_list(node_admin_t *self, node_admin_conn_t **list_p, size_t *count_p, char *err,
                         size_t errlen)
{
    node_conn_t *conns;
    size_t count;
    *list_p = NULL;
    *count_p = 0;
    if (node_state_conn_list(self->state, &conns, &count))
        return s_db_fail(self, err, errlen);
    node_admin_conn_t *list = calloc(count ? count : 1, sizeof *list);
    if (!list) {
        free(conns);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        list[i].conn = conns[i];
        s_counts(self, &list[i]);
    }
    free(conns);
    *list_p = list;
    *count_p = count;
    return 0;
}

int node_admin_conn_get(node_admin_t *self, const char *which, node_admin_conn_t *out, char *err,
                        size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (s_conn(self, which, &out->conn, err, errlen))
        return -1;
    s_counts(self, out);
    return 0;
}

int node_admin_status(node_admin_t *self, node_admin_status_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->daemon_running = node_admin_daemon_running(self);
    snprintf(out->link, sizeof out->link, "unknown");
    node_state_meta_get(self->state, "link_state", out->link, sizeof out->link);
    node_state_meta_get(self->state, "link_reason", out->link_reason, sizeof out->link_reason);
    if (!out->daemon_running)
        snprintf(out->link, sizeof out->link, "down");
    return node_admin_conn_list(self, &out->conns, &out->count, err, errlen);
}

void node_admin_status_clear(node_admin_status_t *status)
{
    free(status->conns);
    status->conns = NULL;
    status->count = 0;
}

//  Moves a connection to status to when its status is from1 or from2.
static int s_set_status(node_admin_t *self, const char *which, node_conn_status_t to,
                        node_conn_status_t from1, node_conn_status_t from2, const char *verb,
                        node_conn_t *out, char *err, size_t errlen)
{
    if (s_conn(self, which, out, err, errlen))
        return -1;
    if (out->status != from1 && out->status != from2) {
        snprintf(err, errlen, "connection %s is %s: cannot %s it", out->name,
                 node_conn_status_name(out->status), verb);
        return -1;
    }
    if (node_state_conn_set_status(self->state, out->id, to, NULL) < 0)
        return s_db_fail(self, err, errlen);
    out->status = to;
    out->error_text[0] = '\0';
    return 0;
}

int node_admin_conn_deactivate(node_admin_t *self, const char *which, node_conn_t *out, char *err,
                               size_t errlen)
{
    return s_set_status(self, which, NODE_CONN_DEACTIVATED, NODE_CONN_ACTIVE, NODE_CONN_ERROR,
                        "deactivate", out, err, errlen);
}

int node_admin_conn_activate(node_admin_t *self, const char *which, node_conn_t *out, char *err,
                             size_t errlen)
{
    return s_set_status(self, which, NODE_CONN_ACTIVE, NODE_CONN_DEACTIVATED, NODE_CONN_ERROR,
                        "activate", out, err, errlen);
}

int node_admin_conn_delete(node_admin_t *self, const char *which, node_conn_t *out, char *err,
                           size_t errlen)
{
    if (s_conn(self, which, out, err, errlen))
        return -1;
    if (node_state_conn_delete(self->state, out->id) < 0)
        return s_db_fail(self, err, errlen);
    node_keys_remove(self->cfg->state_dir, out->id);
    node_rekey_remove(self->cfg->state_dir, out->id);
    return 0;
}

bool node_admin_trigger_ok(const char *trigger)
{
    //  A trigger is an encoded query; a line break would end it early.
    for (const char *c = trigger; *c; c++) {
        if ((unsigned char)*c < 0x20)
            return false;
    }
    return strlen(trigger) <= NODE_TEXT_MAX;
}

int node_admin_trigger_set(node_admin_t *self, const char *which, const char *trigger,
                           node_conn_t *out, char *err, size_t errlen)
{
    if (s_conn(self, which, out, err, errlen))
        return -1;
    if (!node_admin_trigger_ok(trigger)) {
        snprintf(err, errlen, "the trigger must be one line of encoded query (at most %d bytes)",
                 NODE_TEXT_MAX);
        return -1;
    }
    if (node_state_conn_set_trigger(self->state, out->id, trigger) < 0)
        return s_db_fail(self, err, errlen);
    snprintf(out->trigger, sizeof out->trigger, "%s", trigger);
    return 0;
}

void node_admin_wait_conn(node_admin_t *self, node_conn_t *conn, node_conn_status_t from,
                          bool invite, long wait_ms)
{
    for (long waited = 0; waited < wait_ms; waited += S_POLL_MS) {
        if (node_state_conn_get(self->state, conn->id, conn))
            return;
        if (conn->status != from || (invite && conn->invite_sent))
            return;
        s_sleep_ms(S_POLL_MS);
    }
}

//  Queues a request of kind for the daemon on out->conn (arg: its argument)
//  and waits at most wait_ms for its answer, into *out. failed names what
//  was asked, for the error. Returns 0 or -1 with err.
static int s_request(node_admin_t *self, node_req_kind_t kind, const char *arg, long wait_ms,
                     const char *failed, node_admin_sync_t *out, char *err, size_t errlen)
{
    node_request_t req = {.kind = kind};
    snprintf(req.conn, sizeof req.conn, "%s", out->conn.id);
    snprintf(req.arg, sizeof req.arg, "%s", arg);
    if (node_state_request_add(self->state, &req))
        return s_db_fail(self, err, errlen);
    for (long waited = 0; waited < wait_ms && req.status == NODE_REQ_QUEUED; waited += S_POLL_MS) {
        s_sleep_ms(S_POLL_MS);
        if (node_state_request_get(self->state, req.id, &req))
            break;
    }
    if (req.status == NODE_REQ_FAILED) {
        snprintf(err, errlen, "%s: %s", failed, req.result);
        return -1;
    }
    out->done = req.status == NODE_REQ_DONE;
    out->daemon_running = out->done || node_admin_daemon_running(self);
    snprintf(out->result, sizeof out->result, "%s", out->done ? req.result : "");
    return 0;
}

int node_admin_sync_start(node_admin_t *self, const char *which, const char *number, long wait_ms,
                          node_admin_sync_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (s_conn_or_only(self, which, &out->conn, err, errlen))
        return -1;
    snprintf(out->number, sizeof out->number, "%s", number);
    char failed[128];
    snprintf(failed, sizeof failed, "cannot start the sync of %s", number);
    return s_request(self, NODE_REQ_EXALATE, number, wait_ms, failed, out, err, errlen);
}

int node_admin_conn_rekey(node_admin_t *self, const char *which, long wait_ms,
                          node_admin_sync_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (s_conn_or_only(self, which, &out->conn, err, errlen))
        return -1;
    if (out->conn.status != NODE_CONN_ACTIVE) {
        snprintf(err, errlen, "connection %s is %s: only an active connection is rekeyed",
                 out->conn.name, node_conn_status_name(out->conn.status));
        return -1;
    }
    return s_request(self, NODE_REQ_REKEY, "", wait_ms, "cannot rekey", out, err, errlen);
}

//  The state of a twin for a person: synced, waiting for the other side,
//  refused, stopped.
static const char *s_twin_state(node_admin_t *self, const node_twin_t *twin)
{
    node_error_t e;
    if (!twin->under_sync)
        return "unexalated";
    if (twin->peer_stopped)
        return "stopped-by-peer";
    if (node_state_error_for_twin(self->state, twin->conn, twin->local_sys_id, "local", &e) == 0 ||
        node_state_error_for_twin(self->state, twin->conn, twin->remote_sys_id, "local", &e) == 0 ||
        node_state_error_for_twin(self->state, twin->conn, twin->local_sys_id, "remote", &e) == 0)
        return "error";
    if (!*twin->remote_sys_id || twin->acked_seq < twin->last_sent_seq)
        return "pending";
    return "synced";
}

//  Copies what twins shows of twin into *out.
static void s_twin_info(node_admin_t *self, const node_twin_t *twin, node_admin_twin_t *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->local_number, sizeof out->local_number, "%s", twin->local_number);
    snprintf(out->local_sys_id, sizeof out->local_sys_id, "%s", twin->local_sys_id);
    snprintf(out->remote_number, sizeof out->remote_number, "%s", twin->remote_number);
    snprintf(out->remote_sys_id, sizeof out->remote_sys_id, "%s", twin->remote_sys_id);
    out->last_sync_at = twin->last_sync_at;
    out->state = s_twin_state(self, twin);
    node_fields_hash_hex(twin->local, out->replica);
}

int node_admin_sync_stop(node_admin_t *self, const char *which, const char *number,
                         node_conn_t *conn, node_admin_twin_t *twin, char *err, size_t errlen)
{
    if (s_conn_or_only(self, which, conn, err, errlen))
        return -1;
    node_twin_t found = {0};
    int rc = node_state_twin_by_number(self->state, conn->id, number, &found);
    if (rc < 0)
        return s_db_fail(self, err, errlen);
    if (rc == 1) {
        snprintf(err, errlen, "%s is not a twin on connection %s", number, conn->name);
        return -1;
    }
    rc = node_state_twin_set_sync(self->state, conn->id, found.local_sys_id, false);
    found.under_sync = false;
    s_twin_info(self, &found, twin);
    node_twin_clear(&found);
    return rc < 0 ? s_db_fail(self, err, errlen) : 0;
}

int node_admin_attachments(node_admin_t *self, const char *which, const char *number,
                           node_conn_t *conn, node_admin_twin_t *twin, node_file_t **list_p,
                           size_t *count_p, char *err, size_t errlen)
{
    *list_p = NULL;
    *count_p = 0;
    if (s_conn_or_only(self, which, conn, err, errlen))
        return -1;
    node_twin_t found = {0};
    int rc = node_state_twin_by_number(self->state, conn->id, number, &found);
    if (rc < 0)
        return s_db_fail(self, err, errlen);
    if (rc == 1) {
        snprintf(err, errlen, "%s is not a twin on connection %s", number, conn->name);
        return -1;
    }
    s_twin_info(self, &found, twin);
    rc = node_state_file_list_twin(self->state, conn->id, found.local_sys_id, found.remote_sys_id,
                                   list_p, count_p);
    node_twin_clear(&found);
    return rc ? s_db_fail(self, err, errlen) : 0;
}

int node_admin_attachments_set(node_admin_t *self, const char *which, const char *mode,
                               const char *max_text, node_conn_t *out, char *err, size_t errlen)
{
    node_attach_mode_t m = !strcmp(mode, "all")       ? NODE_ATTACH_ALL
                           : !strcmp(mode, "none")    ? NODE_ATTACH_NONE
                           : !strcmp(mode, "default") ? NODE_ATTACH_DEFAULT
                                                      : (node_attach_mode_t)-1;
    if ((int)m < 0) {
        snprintf(err, errlen, "attachments must be all, none or default, not \"%s\"", mode);
        return -1;
    }
    long max = 0;
    char why[256];
    if (max_text && *max_text && strcmp(max_text, "default") &&
        ts_config_parse_number(TS_CONFIG_BYTES, max_text, 1, 1024L * 1024 * 1024, &max, why,
                               sizeof why)) {
        snprintf(err, errlen, "size cap: %s", why);
        return -1;
    }
    if (s_conn(self, which, out, err, errlen))
        return -1;
    if (node_state_conn_set_attachments(self->state, out->id, m, (uint64_t)max) < 0)
        return s_db_fail(self, err, errlen);
    out->attachments = m;
    out->attachment_max = (uint64_t)max;
    return 0;
}

typedef struct {
    node_admin_t *self;      //  Whose state
    node_admin_twin_t *list; //  Rows so far
    size_t count;            //  Entries in list
    size_t capacity;         //  Entries allocated
    bool full;               //  Out of memory: the iteration stopped early
} s_twins_t;

static int s_twin_row(const node_twin_t *twin, void *arg)
{
    s_twins_t *t = arg;
    if (t->count == t->capacity) {
        size_t capacity = t->capacity ? t->capacity * 2 : 64;
        node_admin_twin_t *grown = realloc(t->list, capacity * sizeof *grown);
        if (!grown) {
            t->full = true;
            return -1;
        }
        t->list = grown;
        t->capacity = capacity;
    }
    s_twin_info(t->self, twin, &t->list[t->count++]);
    return 0;
}

int node_admin_twins(node_admin_t *self, const char *which, node_conn_t *conn,
                     node_admin_twin_t **list_p, size_t *count_p, char *err, size_t errlen)
{
    *list_p = NULL;
    *count_p = 0;
    if (s_conn(self, which, conn, err, errlen))
        return -1;
    s_twins_t t = {self, NULL, 0, 0, false};
    int rc = node_state_twin_each(self->state, conn->id, s_twin_row, &t);
    if (rc || t.full) {
        free(t.list);
        if (t.full)
            snprintf(err, errlen, "out of memory");
        return rc ? s_db_fail(self, err, errlen) : -1;
    }
    *list_p = t.list;
    *count_p = t.count;
    return 0;
}

int node_admin_errors(node_admin_t *self, const char *which, node_error_t **list_p, size_t *count_p,
                      char *err, size_t errlen)
{
    node_conn_t conn;
    *list_p = NULL;
    *count_p = 0;
    if (which && s_conn(self, which, &conn, err, errlen))
        return -1;
    if (node_state_error_list(self->state, which ? conn.id : NULL, list_p, count_p))
        return s_db_fail(self, err, errlen);
    return 0;
}

int node_admin_error_retry(node_admin_t *self, int64_t id, long wait_ms, node_admin_retry_t *out,
                           char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->id = id;
    node_error_t before, after;
    int rc = node_state_error_get(self->state, id, &before);
    if (rc < 0)
        return s_db_fail(self, err, errlen);
    if (rc == 1) {
        snprintf(err, errlen, "no error %lld (see errors list)", (long long)id);
        return -1;
    }
    if (node_state_error_request_retry(self->state, id) < 0)
        return s_db_fail(self, err, errlen);
    after = before;
    after.retry_requested = true;
    for (long waited = 0; waited < wait_ms; waited += S_POLL_MS) {
        s_sleep_ms(S_POLL_MS);
        rc = node_state_error_get(self->state, id, &after);
        if (rc != 0 || !after.retry_requested)
            break;
    }
    if (rc < 0)
        return s_db_fail(self, err, errlen);
    if (rc == 1) {
        out->outcome = NODE_ADMIN_RESOLVED;
        return 0;
    }
    snprintf(out->message, sizeof out->message, "%s", after.message);
    if (after.retry_requested) {
        out->outcome = NODE_ADMIN_RETRY_QUEUED;
        out->daemon_running = node_admin_daemon_running(self);
    } else {
        out->outcome =
            strcmp(before.origin, "remote") == 0 ? NODE_ADMIN_SENT_AGAIN : NODE_ADMIN_FAILED_AGAIN;
    }
    return 0;
}

int node_admin_key(const node_config_t *cfg, char z85[41], char *err, size_t errlen)
{
    uint8_t pub[PROTO_KEY_SIZE], sec[PROTO_KEY_SIZE];
    if (!*cfg->state_dir) {
        snprintf(err, errlen, "missing key node.state_dir (give --config FILE)");
        return -1;
    }
    int rc = node_keys_node_pair(cfg->state_dir, pub, sec, z85, err, errlen);
    memset(sec, 0, sizeof sec);
    return rc;
}
