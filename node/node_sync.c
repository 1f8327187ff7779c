/*  node_sync.c: polling and applying, the worker side of the engine.

    How the parts fit:
      s_ctx_*       per-connection memory: the sealer (from the key file) and
                    the poll's de-duplication set
      s_fail_sn     what a ServiceNow failure means: retry later, or the
                    connection goes to status error with ServiceNow's words
      s_journal     comments of some incidents, from sys_journal_field
      s_send        one SYNC into the outbox (replica + new human comments)
      node_sync_poll    changed incidents -> SYNCs, one transaction per poll
      s_write       writes one received replica on ServiceNow (create or
                    update, then comments), idempotent after a crash
      s_apply_sync / s_receipt / node_sync_apply   inbound payloads
      s_retry_twin  re-applies the messages blocked behind a twin's error
      node_sync_requests / node_sync_retry   admin requests and retries

    Transactions: the ServiceNow calls happen outside any transaction; their
    outcome is recorded in one (outbox rows + twin + cursor, or result +
    RECEIPT + applied seq). A crash in between replays the work: the poll
    re-reads from the old cursor (the twin's `local` set absorbs what was
    already sent), an inbound message is delivered again and its intent row
    switches s_write to careful mode (look the twin up by correlation_id,
    look comments up in the journal before writing them).
*/
#include "node_sync.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "node_keys.h"
#include "node_replica.h"
#include "proto_seal.h"
#include "proto_sync.h"
#include "sn_incident.h"
#include "sn_journal.h"
#include "ts_log.h"

#define S_DEFAULT_LOOKBACK 10 //  Seconds re-read before the cursor
#define S_IDS_PER_QUERY    50 //  sys_ids in one sys_idIN query

typedef struct {
    char id[PROTO_MAX_ID + 1]; //  Connection id
    proto_seal_t *seal;        //  Sealer from the key file
    sn_seen_t *seen;           //  Poll de-duplication set
} s_ctx_t;

struct node_sync {
    node_state_t *state; //  Not owned
    sn_client_t *sn;     //  Not owned
    char *state_dir;     //  Owned copy
    char *instance;      //  Owned copy
    char *sync_user;     //  Owned copy
    int lookback_s;      //  Poll look-back
    s_ctx_t *ctx;        //  Per-connection memory, owned
    size_t ctx_count;    //  Entries in ctx
};

node_sync_t *node_sync_new(const node_sync_config_t *cfg)
{
    node_sync_t *self = calloc(1, sizeof(node_sync_t));
    if (!self)
        return NULL;
    self->state = cfg->state;
    self->sn = cfg->sn;
    self->state_dir = strdup(cfg->state_dir);
    self->instance = strdup(cfg->instance);
    self->sync_user = strdup(cfg->sync_user);
    self->lookback_s = cfg->lookback_s > 0 ? cfg->lookback_s : S_DEFAULT_LOOKBACK;
    if (!self->state_dir || !self->instance || !self->sync_user)
        node_sync_destroy(&self);
    return self;
}

static void s_ctx_clear(s_ctx_t *ctx)
{
    proto_seal_destroy(&ctx->seal);
    sn_seen_destroy(&ctx->seen);
}

void node_sync_destroy(node_sync_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    node_sync_t *self = *self_p;
    for (size_t i = 0; i < self->ctx_count; i++)
        s_ctx_clear(&self->ctx[i]);
    free(self->ctx);
    free(self->state_dir);
    free(self->instance);
    free(self->sync_user);
    free(self);
    *self_p = NULL;
}

void node_sync_forget(node_sync_t *self, const char *conn)
{
    for (size_t i = 0; i < self->ctx_count; i++) {
        if (strcmp(self->ctx[i].id, conn))
            continue;
        s_ctx_clear(&self->ctx[i]);
        self->ctx[i] = self->ctx[--self->ctx_count];
        return;
    }
}

//  The memory of connection conn, loading its key file the first time.
//  NULL when the key file is missing or unreadable (logged).
static s_ctx_t *s_ctx(node_sync_t *self, const char *conn)
{
    for (size_t i = 0; i < self->ctx_count; i++)
        if (!strcmp(self->ctx[i].id, conn))
            return &self->ctx[i];
    node_keys_t keys;
    char err[512];
    int rc = node_keys_read(self->state_dir, conn, &keys, err, sizeof err);
    if (rc) {
        ts_log(TS_LOG_ERROR, "cannot load connection secret", "conn=%s reason=\"%s\"", conn,
               rc == 1 ? "key file missing" : err);
        return NULL;
    }
    s_ctx_t *grown = realloc(self->ctx, (self->ctx_count + 1) * sizeof(s_ctx_t));
    if (!grown) {
        node_keys_wipe(&keys);
        return NULL;
    }
    self->ctx = grown;
    s_ctx_t *ctx = &self->ctx[self->ctx_count];
    memset(ctx, 0, sizeof *ctx);
    snprintf(ctx->id, sizeof ctx->id, "%s", conn);
    ctx->seal = proto_seal_new(keys.secret, conn);
    ctx->seen = sn_seen_new();
    node_keys_wipe(&keys);
    if (!ctx->seal || !ctx->seen) {
        s_ctx_clear(ctx);
        return NULL;
    }
    self->ctx_count++;
    return ctx;
}

//  Forgets what the poll of ctx has seen: after a failed poll, rows handed
//  over but not recorded must come again.
static void s_ctx_reset_seen(s_ctx_t *ctx)
{
    sn_seen_t *fresh = sn_seen_new();
    if (!fresh)
        return; //  keeping the old set only risks a missed row until it changes
    sn_seen_destroy(&ctx->seen);
    ctx->seen = fresh;
}

static int64_t s_now(void)
{
    return (int64_t)time(NULL);
}

//  "message (detail)" of a ServiceNow error, into buf.
static const char *s_sn_text(const sn_error_t *err, char *buf, size_t size)
{
    //  Long texts are cut: the return value is checked only to say so.
    int n = *err->detail ? snprintf(buf, size, "%s: %s (%s)", sn_err_name(err->code), err->message,
                                    err->detail)
                         : snprintf(buf, size, "%s: %s", sn_err_name(err->code), err->message);
    if (n < 0)
        buf[0] = 0;
    return buf;
}

//  Handles a ServiceNow failure that is not tied to one record: transient
//  ones are retried later, connection-wide ones put conn in status error.
static node_sync_rc_t s_fail_sn(node_sync_t *self, const char *conn, const sn_error_t *err,
                                const char *during)
{
    char text[NODE_TEXT_MAX + 1], quoted[600];
    s_sn_text(err, text, sizeof text);
    if (sn_err_scope(err->code) == SN_SCOPE_TRANSIENT) {
        ts_log(TS_LOG_WARN, "servicenow unavailable, will retry", "conn=%s during=%s error=%s",
               conn, during, ts_log_quote(quoted, sizeof quoted, text));
        return NODE_SYNC_RETRY;
    }
    node_conn_t c;
    if (node_state_conn_get(self->state, conn, &c) == 0 && c.status != NODE_CONN_ERROR)
        ts_log(TS_LOG_ERROR, "connection error", "conn=%s during=%s error=%s", conn, during,
               ts_log_quote(quoted, sizeof quoted, text));
    if (node_state_conn_get(self->state, conn, &c) == 0 &&
        (c.status == NODE_CONN_ACTIVE || c.status == NODE_CONN_ERROR) &&
        node_state_conn_set_status(self->state, conn, NODE_CONN_ERROR, text) < 0)
        return NODE_SYNC_FATAL;
    return NODE_SYNC_CONN_ERROR;
}

//  Logs a state database failure and returns FATAL.
static node_sync_rc_t s_fatal(node_sync_t *self, const char *during)
{
    char quoted[600];
    ts_log(TS_LOG_ERROR, "state database failure", "during=%s error=%s", during,
           ts_log_quote(quoted, sizeof quoted, node_state_error(self->state)));
    node_state_rollback(self->state);
    return NODE_SYNC_FATAL;
}

//  --- comments

//  The journal entries ("comments" only) of incidents ids, as a JSON object
//  sys_id -> array of entries in creation order, in *by_incident_p (owned by
//  the caller). Returns SN_OK or the client's error.
static sn_err_code_t s_journal(node_sync_t *self, const char *const *ids, size_t count,
                               json_t **by_incident_p, sn_error_t *err)
{
    json_t *by_incident = json_object();
    *by_incident_p = by_incident;
    if (!by_incident)
        return sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
    if (count == 0)
        return SN_OK;
    sn_seen_t *seen = sn_seen_new();
    if (!seen)
        return sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
    sn_journal_poll_t poll = {.incident_ids = ids, .count = count, .seen = seen};
    json_t *entries = NULL;
    sn_poll_result_t result;
    sn_err_code_t rc = sn_journal_poll_all(self->sn, &poll, &entries, &result, err);
    sn_seen_destroy(&seen);
    size_t i;
    json_t *entry;
    json_array_foreach(entries, i, entry)
    {
        if (rc != SN_OK || strcmp(sn_field(entry, "element"), "comments"))
            continue;
        const char *incident = sn_field(entry, "element_id");
        json_t *list = json_object_get(by_incident, incident);
        if (!list) {
            list = json_array();
            json_object_set_new(by_incident, incident, list);
        }
        json_array_append(list, entry);
    }
    json_decref(entries);
    return rc;
}

//  --- sending

//  Fills *sync with the replica of record and the comments to send. The
//  arrays are owned by the caller (free *fields_p and *comments_p); the
//  strings point into fields, record and entries.
static int s_build_sync(node_sync_t *self, const node_conn_t *conn, const node_twin_t *twin,
                        const json_t *record, const node_fields_t *fields, json_t *entries,
                        proto_sync_t *sync, proto_field_t **fields_p, proto_comment_t **comments_p)
{
    size_t nfields = node_fields_size(fields);
    size_t ncomments = json_array_size(entries);
    *fields_p = calloc(nfields + 1, sizeof(proto_field_t));
    *comments_p = calloc(ncomments + 1, sizeof(proto_comment_t));
    if (!*fields_p || !*comments_p)
        return -1;
    for (size_t i = 0; i < nfields; i++)
        (*fields_p)[i] = (proto_field_t){node_fields_name(fields, i), node_fields_value(fields, i)};
    for (size_t i = 0; i < ncomments; i++) {
        json_t *entry = json_array_get(entries, i);
        (*comments_p)[i] =
            (proto_comment_t){sn_field(entry, "sys_id"), sn_field(entry, "sys_created_by"),
                              sn_field(entry, "sys_created_on"), sn_field(entry, "value")};
    }
    *sync = (proto_sync_t){.table = NODE_REPLICA_TABLE,
                           .sys_id = sn_field(record, "sys_id"),
                           .number = sn_field(record, "number"),
                           .instance = self->instance,
                           .twin_sys_id = *twin->remote_sys_id ? twin->remote_sys_id : NULL,
                           .fields = *fields_p,
                           .fields_count = nfields,
                           .comments = *comments_p,
                           .comments_count = ncomments,
                           .base_seq = conn->applied_in_seq};
    return 0;
}

//  Encodes, seals and queues payload as the next message of conn. Call
//  inside a transaction. Returns 0 with *seq set, 1 when the payload cannot
//  be encoded (err says why), -1 on a database failure.
static int s_queue(node_sync_t *self, const node_conn_t *conn, s_ctx_t *ctx,
                   const proto_payload_t *payload, uint64_t *seq, proto_error_t *err)
{
    proto_buf_t plain, sealed;
    proto_buf_init(&plain);
    proto_buf_init(&sealed);
    int rc = 1;
    if (proto_payload_encode(payload, NULL, &plain, err) != PROTO_OK)
        goto done;
    rc = -1;
    if (node_state_conn_take_seq(self->state, conn->id, seq))
        goto done;
    if (proto_seal_box(ctx->seal, proto_dir_outbound(conn->role), *seq, plain.data, plain.size,
                       &sealed) != PROTO_OK)
        goto done;
    rc = node_state_outbox_add(self->state, conn->id, *seq, sealed.data, sealed.size);
done:
    proto_buf_wipe(&plain);
    proto_buf_release(&sealed);
    return rc;
}

//  The comments of entries that must travel: written by a human (not the
//  integration user) and not sent before. A new array owned by the caller.
static json_t *s_new_comments(node_sync_t *self, const char *conn, json_t *entries)
{
    json_t *out = json_array();
    size_t i;
    json_t *entry;
    json_array_foreach(entries, i, entry)
    {
        bool seen = false;
        if (!strcmp(sn_field(entry, "sys_created_by"), self->sync_user))
            continue; //  written by us: never echoed
        if (node_state_comment_seen(self->state, conn, NODE_COMMENT_OUT, sn_field(entry, "sys_id"),
                                    &seen) ||
            seen)
            continue;
        json_array_append(out, entry);
    }
    return out;
}

//  Records a per-twin error of ours (inside the caller's transaction).
static int s_twin_error(node_sync_t *self, const char *conn, const node_twin_t *twin,
                        const char *remote_sys_id, const char *remote_number, uint64_t seq,
                        const char *origin, const char *code, const char *message)
{
    node_error_t e;
    memset(&e, 0, sizeof e);
    snprintf(e.conn, sizeof e.conn, "%s", conn);
    if (twin) {
        snprintf(e.local_sys_id, sizeof e.local_sys_id, "%s", twin->local_sys_id);
        snprintf(e.local_number, sizeof e.local_number, "%s", twin->local_number);
    }
    snprintf(e.remote_sys_id, sizeof e.remote_sys_id, "%s", remote_sys_id ? remote_sys_id : "");
    snprintf(e.remote_number, sizeof e.remote_number, "%s", remote_number ? remote_number : "");
    e.seq = seq;
    snprintf(e.origin, sizeof e.origin, "%s", origin);
    snprintf(e.code, sizeof e.code, "%s", code);
    snprintf(e.message, sizeof e.message, "%s", message);
    return node_state_error_add(self->state, &e);
}

//  Sends the replica of record for twin (inside the caller's transaction)
//  when it differs from what the other side has or new human comments
//  exist; force sends in any case. Updates and writes the twin. Returns 1
//  when a SYNC was queued, 0 when nothing had to go, -1 on a database
//  failure.
static int s_send(node_sync_t *self, const node_conn_t *conn, s_ctx_t *ctx, node_twin_t *twin,
                  const json_t *record, json_t *entries, bool force)
{
    node_fields_t *fields = node_replica_extract(record);
    json_t *comments = s_new_comments(self, conn->id, entries);
    proto_field_t *pfields = NULL;
    proto_comment_t *pcomments = NULL;
    int rc = -1;
    if (!fields || !comments)
        goto done;
    snprintf(twin->mod_count, sizeof twin->mod_count, "%s", sn_field(record, "sys_mod_count"));
    snprintf(twin->local_number, sizeof twin->local_number, "%s", sn_field(record, "number"));
    if (!force && node_fields_equal(fields, twin->local) && json_array_size(comments) == 0) {
        rc = node_state_twin_put(self->state, twin); //  our own write, or no synced change
        goto done;
    }
    proto_payload_t payload;
    proto_payload_init(&payload, PROTO_SYNC);
    if (s_build_sync(self, conn, twin, record, fields, comments, &payload.sync, &pfields,
                     &pcomments))
        goto done;
    uint64_t seq = 0;
    proto_error_t perr;
    rc = s_queue(self, conn, ctx, &payload, &seq, &perr);
    if (rc == 1) {
        ts_log(TS_LOG_ERROR, "replica cannot be sent", "conn=%s incident=%s reason=\"%s\"",
               conn->id, twin->local_number, proto_error_str(&perr));
        rc = s_twin_error(self, conn->id, twin, twin->remote_sys_id, twin->remote_number, 0,
                          "local", "too_large", proto_error_str(&perr));
        goto done;
    }
    if (rc)
        goto done;
    rc = node_replica_pending_add(twin->pending, twin->local, fields, seq);
    node_fields_destroy(&twin->local);
    twin->local = fields;
    fields = NULL;
    twin->last_sent_seq = seq;
    twin->last_sync_at = s_now();
    if (rc == 0)
        rc = node_state_twin_put(self->state, twin);
    size_t i;
    json_t *entry;
    json_array_foreach(comments, i, entry)
    {
        if (rc == 0)
            rc = node_state_comment_add(self->state, conn->id, NODE_COMMENT_OUT,
                                        sn_field(entry, "sys_id"), twin->local_sys_id);
    }
    if (rc == 0) {
        ts_log(TS_LOG_INFO, "sync queued", "conn=%s incident=%s seq=%" PRIu64 " comments=%zu",
               conn->id, twin->local_number, seq, json_array_size(comments));
        rc = 1;
    }
done:
    node_fields_destroy(&fields);
    json_decref(comments);
    free(pfields);
    free(pcomments);
    return rc;
}

//  --- polling

//  One changed incident the poll decided to look at.
typedef struct {
    json_t *record;   //  Borrowed from the poll's array
    node_twin_t twin; //  Its twin (new when is_new)
    bool is_new;      //  Started by the trigger now
} s_item_t;

typedef struct {
    s_item_t *items;    //  Incidents to send
    size_t count;       //  Entries in items
    json_t *candidates; //  Non-twins to check against the trigger (array of sys_ids)
} s_plan_t;

static void s_plan_clear(s_plan_t *plan)
{
    for (size_t i = 0; i < plan->count; i++)
        node_twin_clear(&plan->items[i].twin);
    free(plan->items);
    json_decref(plan->candidates);
    memset(plan, 0, sizeof *plan);
}

static s_item_t *s_plan_add(s_plan_t *plan, json_t *record)
{
    s_item_t *grown = realloc(plan->items, (plan->count + 1) * sizeof(s_item_t));
    if (!grown)
        return NULL;
    plan->items = grown;
    s_item_t *item = &plan->items[plan->count++];
    memset(item, 0, sizeof *item);
    item->record = record;
    return item;
}

//  Sorts the polled records into twins that changed and candidates for
//  the trigger. Returns 0 or -1 (database failure).
static int s_plan_records(node_sync_t *self, const node_conn_t *conn, json_t *records,
                          s_plan_t *plan)
{
    plan->candidates = json_array();
    size_t i;
    json_t *record;
    json_array_foreach(records, i, record)
    {
        node_twin_t twin = {0};
        int rc = node_state_twin_by_local(self->state, conn->id, sn_field(record, "sys_id"), &twin);
        if (rc < 0)
            return -1;
        if (rc == 1) {
            //  Incidents the integration user created are twins of some
            //  connection (or being made one): never started by a trigger.
            if (*conn->trigger && strcmp(sn_field(record, "sys_created_by"), self->sync_user))
                json_array_append_new(plan->candidates, json_string(sn_field(record, "sys_id")));
            continue;
        }
        bool skip = !twin.under_sync || twin.peer_stopped ||
                    !strcmp(twin.mod_count, sn_field(record, "sys_mod_count"));
        s_item_t *item = skip ? NULL : s_plan_add(plan, record);
        if (item)
            item->twin = twin;
        else
            node_twin_clear(&twin);
        if (!skip && !item)
            return -1;
    }
    return 0;
}

//  Adds to plan the candidates that match the connection's trigger (one
//  list request per 50 candidates).
static sn_err_code_t s_plan_trigger(node_sync_t *self, const node_conn_t *conn, json_t *records,
                                    s_plan_t *plan, sn_error_t *err)
{
    size_t total = json_array_size(plan->candidates);
    for (size_t start = 0; start < total; start += S_IDS_PER_QUERY) {
        char *ids = NULL;
        size_t len = 0;
        FILE *out = open_memstream(&ids, &len);
        if (!out)
            return sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
        fputs("sys_idIN", out);
        for (size_t i = start; i < total && i < start + S_IDS_PER_QUERY; i++)
            fprintf(out, "%s%s", i > start ? "," : "",
                    json_string_value(json_array_get(plan->candidates, i)));
        fclose(out);
        char *query = sn_query_and(conn->trigger, ids);
        free(ids);
        json_t *rows = NULL;
        sn_list_params_t params = {.query = query, .fields = "sys_id", .limit = S_IDS_PER_QUERY};
        sn_err_code_t rc =
            query ? sn_table_list(self->sn, NODE_REPLICA_TABLE, &params, &rows, NULL, err)
                  : sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
        free(query);
        size_t i, j;
        json_t *row, *record;
        json_array_foreach(rows, i, row)
        {
            json_array_foreach(records, j, record)
            {
                if (strcmp(sn_field(record, "sys_id"), sn_field(row, "sys_id")))
                    continue;
                s_item_t *item = s_plan_add(plan, record);
                if (!item)
                    break;
                item->is_new = true;
                node_twin_t *t = &item->twin;
                snprintf(t->conn, sizeof t->conn, "%s", conn->id);
                snprintf(t->local_sys_id, sizeof t->local_sys_id, "%s", sn_field(record, "sys_id"));
                t->under_sync = true;
                t->local = node_fields_new();
                t->previous = node_fields_new();
                t->pending = node_fields_new();
                break;
            }
        }
        json_decref(rows);
        if (rc != SN_OK)
            return rc;
    }
    return SN_OK;
}

//  The journal of every item in plan.
static sn_err_code_t s_plan_journal(node_sync_t *self, const s_plan_t *plan, json_t **journal_p,
                                    sn_error_t *err)
{
    const char **ids = calloc(plan->count + 1, sizeof(char *));
    if (!ids)
        return sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
    for (size_t i = 0; i < plan->count; i++)
        ids[i] = plan->items[i].twin.local_sys_id;
    sn_err_code_t rc = s_journal(self, ids, plan->count, journal_p, err);
    free(ids);
    return rc;
}

//  Marks conn active again after a successful ServiceNow exchange.
static int s_resume(node_sync_t *self, const node_conn_t *conn)
{
    if (conn->status != NODE_CONN_ERROR)
        return 0;
    ts_log(TS_LOG_INFO, "connection resumed", "conn=%s", conn->id);
    return node_state_conn_set_status(self->state, conn->id, NODE_CONN_ACTIVE, NULL) < 0 ? -1 : 0;
}

//  Writes the SYNCs of plan and the new cursor in one transaction.
static node_sync_rc_t s_plan_commit(node_sync_t *self, const node_conn_t *conn, s_ctx_t *ctx,
                                    s_plan_t *plan, json_t *journal, const char *cursor,
                                    node_sync_report_t *report)
{
    if (node_state_begin(self->state))
        return s_fatal(self, "poll");
    //  An admin may have paused the connection while ServiceNow answered:
    //  then nothing is recorded, and the next poll after activation reads
    //  the same changes from the same cursor.
    node_conn_t now;
    if (node_state_conn_get(self->state, conn->id, &now))
        return s_fatal(self, "poll");
    if (now.status != NODE_CONN_ACTIVE && now.status != NODE_CONN_ERROR) {
        node_state_rollback(self->state);
        s_ctx_reset_seen(ctx); //  what this poll read must come again
        return NODE_SYNC_OK;
    }
    for (size_t i = 0; i < plan->count; i++) {
        s_item_t *item = &plan->items[i];
        json_t *entries = json_object_get(journal, item->twin.local_sys_id);
        int rc = s_send(self, conn, ctx, &item->twin, item->record, entries, item->is_new);
        if (rc < 0)
            return s_fatal(self, "poll");
        if (report)
            report->sent += (size_t)rc;
    }
    if (node_state_conn_set_cursor(self->state, conn->id, cursor, ts_now_ms()) < 0 ||
        s_resume(self, conn) || node_state_commit(self->state))
        return s_fatal(self, "poll");
    return NODE_SYNC_OK;
}

node_sync_rc_t node_sync_poll(node_sync_t *self, const char *conn_id, node_sync_report_t *report)
{
    node_conn_t conn;
    int found = node_state_conn_get(self->state, conn_id, &conn);
    if (found)
        return found < 0 ? s_fatal(self, "poll") : NODE_SYNC_OK;
    if (conn.status != NODE_CONN_ACTIVE && conn.status != NODE_CONN_ERROR)
        return NODE_SYNC_OK;
    s_ctx_t *ctx = s_ctx(self, conn.id);
    if (!ctx)
        return NODE_SYNC_RETRY;
    sn_incident_poll_t poll = {.fields = node_replica_read_fields,
                               .cursor = conn.poll_cursor,
                               .lookback_s = self->lookback_s,
                               .seen = ctx->seen};
    json_t *records = NULL, *journal = NULL;
    sn_poll_result_t result;
    sn_error_t err;
    sn_error_reset(&err);
    s_plan_t plan = {0};
    node_sync_rc_t rc = NODE_SYNC_OK;
    sn_err_code_t code = sn_incident_poll_all(self->sn, &poll, &records, &result, &err);
    if (code == SN_OK && s_plan_records(self, &conn, records, &plan))
        rc = s_fatal(self, "poll");
    if (code == SN_OK && rc == NODE_SYNC_OK)
        code = s_plan_trigger(self, &conn, records, &plan, &err);
    if (code == SN_OK && rc == NODE_SYNC_OK)
        code = s_plan_journal(self, &plan, &journal, &err);
    if (code != SN_OK && rc == NODE_SYNC_OK) {
        s_ctx_reset_seen(ctx);
        rc = s_fail_sn(self, conn.id, &err, "poll");
    }
    if (code == SN_OK && rc == NODE_SYNC_OK)
        rc = s_plan_commit(self, &conn, ctx, &plan, journal, result.cursor, report);
    if (rc != NODE_SYNC_OK)
        s_ctx_reset_seen(ctx);
    if (report)
        report->changed += json_array_size(records);
    s_plan_clear(&plan);
    json_decref(records);
    json_decref(journal);
    return rc;
}

//  --- applying

//  The fields of a received SYNC as a set (owned by the caller), or NULL.
static node_fields_t *s_sync_fields(const proto_sync_t *sync)
{
    node_fields_t *fields = node_fields_new();
    for (size_t i = 0; fields && i < sync->fields_count; i++)
        if (node_fields_set(fields, sync->fields[i].name, sync->fields[i].value))
            node_fields_destroy(&fields);
    return fields;
}

//  Follows the twin's sys_mod_count after one write of ours: only when the
//  write is the sole change since the last known version, so that a human
//  change racing our write is still polled and sent.
static void s_track_mod_count(node_twin_t *twin, const json_t *record)
{
    const char *now = sn_field(record, "sys_mod_count");
    char *end = NULL, *now_end = NULL;
    long long before = strtoll(twin->mod_count, &end, 10);
    long long after = strtoll(now, &now_end, 10);
    if (*twin->mod_count && end && !*end && *now && !*now_end && after == before + 1)
        snprintf(twin->mod_count, sizeof twin->mod_count, "%s", now);
}

//  True when the journal of the twin already holds text written by the
//  integration user (careful mode after a crash). *journal_p caches the
//  journal between calls.
static sn_err_code_t s_comment_written(node_sync_t *self, const node_twin_t *twin, const char *text,
                                       json_t **journal_p, bool *written, sn_error_t *err)
{
    *written = false;
    if (!*journal_p) {
        const char *ids[] = {twin->local_sys_id};
        sn_err_code_t rc = s_journal(self, ids, 1, journal_p, err);
        if (rc != SN_OK && rc != SN_E_JOURNAL_UNREADABLE)
            return rc;
    }
    size_t i;
    json_t *entry;
    json_array_foreach(json_object_get(*journal_p, twin->local_sys_id), i, entry)
    {
        if (!strcmp(sn_field(entry, "value"), text) &&
            !strcmp(sn_field(entry, "sys_created_by"), self->sync_user))
            *written = true;
    }
    return SN_OK;
}

//  Writes the comments of sync on the twin, each once.
static sn_err_code_t s_write_comments(node_sync_t *self, const char *conn, node_twin_t *twin,
                                      const proto_sync_t *sync, bool careful, sn_error_t *err)
{
    json_t *journal = NULL;
    sn_err_code_t rc = SN_OK;
    for (size_t i = 0; i < sync->comments_count && rc == SN_OK; i++) {
        const proto_comment_t *c = &sync->comments[i];
        bool seen = false;
        if (node_state_comment_seen(self->state, conn, NODE_COMMENT_IN, c->journal_id, &seen))
            return sn_error_set(err, SN_E_CANCELLED, 0, "state database failure", NULL);
        if (seen)
            continue;
        char *text = node_replica_comment_text(sync->instance, c->author, c->text);
        if (!text)
            return sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
        bool written = false;
        if (careful)
            rc = s_comment_written(self, twin, text, &journal, &written, err);
        json_t *record = NULL;
        if (rc == SN_OK && !written)
            rc = sn_incident_add_comment(self->sn, twin->local_sys_id, text, &record, err);
        free(text);
        if (record)
            s_track_mod_count(twin, record);
        json_decref(record);
        if (rc == SN_OK && node_state_comment_add(self->state, conn, NODE_COMMENT_IN, c->journal_id,
                                                  twin->local_sys_id))
            rc = sn_error_set(err, SN_E_CANCELLED, 0, "state database failure", NULL);
    }
    json_decref(journal);
    return rc;
}

//  Creates the twin of a SYNC that has none yet (or, in careful mode, finds
//  the one a crashed attempt created by its correlation_id) and records it
//  at once, so a retry updates it instead of creating another.
static sn_err_code_t s_create_twin(node_sync_t *self, const char *conn, const proto_sync_t *sync,
                                   const node_fields_t *incoming, bool careful, node_twin_t *twin,
                                   sn_error_t *err)
{
    json_t *record = NULL;
    sn_err_code_t rc = SN_OK;
    if (careful) {
        json_t *found = NULL;
        rc = sn_incident_find_by_correlation(self->sn, sync->sys_id, node_replica_read_fields,
                                             &found, err);
        record = json_incref(json_array_get(found, 0));
        json_decref(found);
        if (rc != SN_OK)
            return rc;
    }
    if (!record) {
        json_t *body =
            node_replica_create_body(incoming, sync->sys_id, sync->number, sync->instance);
        sn_created_t created;
        rc = body ? sn_incident_create(self->sn, body, &created, &record, err)
                  : sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
        json_decref(body);
        if (rc != SN_OK)
            return rc;
    }
    node_twin_clear(twin);
    snprintf(twin->conn, sizeof twin->conn, "%s", conn);
    snprintf(twin->local_sys_id, sizeof twin->local_sys_id, "%s", sn_field(record, "sys_id"));
    snprintf(twin->local_number, sizeof twin->local_number, "%s", sn_field(record, "number"));
    snprintf(twin->remote_sys_id, sizeof twin->remote_sys_id, "%s", sync->sys_id);
    snprintf(twin->remote_number, sizeof twin->remote_number, "%s", sync->number);
    snprintf(twin->mod_count, sizeof twin->mod_count, "%s", sn_field(record, "sys_mod_count"));
    twin->under_sync = true;
    twin->local = node_replica_extract(record);
    twin->previous = node_fields_new();
    twin->pending = node_fields_new();
    twin->last_sync_at = s_now();
    json_decref(record);
    if (!twin->local || !twin->previous || !twin->pending || node_state_twin_put(self->state, twin))
        return sn_error_set(err, SN_E_CANCELLED, 0, "state database failure", NULL);
    ts_log(TS_LOG_INFO, "twin created", "conn=%s incident=%s remote=%s", conn, twin->local_number,
           sync->number);
    return SN_OK;
}

//  Writes a received replica on ServiceNow: creates the twin or updates the
//  fields the other side changed, then writes its new comments. On SN_OK
//  *twin holds the new twin state (not yet written: the caller records it
//  with the RECEIPT). careful: a previous attempt may have written part of
//  it (look before writing).
static sn_err_code_t s_write(node_sync_t *self, const node_conn_t *conn, const proto_sync_t *sync,
                             bool careful, node_twin_t *twin, sn_error_t *err)
{
    node_fields_t *incoming = s_sync_fields(sync);
    if (!incoming)
        return sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
    sn_err_code_t rc = SN_OK;
    if (!*twin->local_sys_id)
        rc = s_create_twin(self, conn->id, sync, incoming, careful, twin, err);
    node_fields_t *plan = NULL;
    if (rc == SN_OK)
        plan = node_replica_plan(incoming, twin->previous, twin->local, twin->pending, conn->role);
    if (rc == SN_OK && !plan)
        rc = sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
    if (rc == SN_OK && node_fields_size(plan) > 0) {
        json_t *body = node_replica_update_body(plan);
        json_t *record = NULL;
        rc = sn_incident_update(self->sn, twin->local_sys_id, body, &record, err);
        json_decref(body);
        if (rc == SN_OK) {
            s_track_mod_count(twin, record);
            for (size_t i = 0; i < node_fields_size(plan); i++)
                node_fields_set(twin->local, node_fields_name(plan, i), node_fields_value(plan, i));
        }
        json_decref(record);
    }
    if (rc == SN_OK)
        rc = s_write_comments(self, conn->id, twin, sync, careful, err);
    if (rc == SN_OK) {
        node_fields_destroy(&twin->previous);
        twin->previous = incoming;
        incoming = NULL;
        twin->last_sync_at = s_now();
        twin->peer_stopped = false; //  the other side syncs it (again, after an exalate)
    }
    node_fields_destroy(&plan);
    node_fields_destroy(&incoming);
    return rc;
}

//  Queues the RECEIPT of inbound seq (inside the caller's transaction).
static int s_receipt_out(node_sync_t *self, const node_conn_t *conn, s_ctx_t *ctx, uint64_t seq,
                         const char *sender_sys_id, proto_receipt_code_t code,
                         const node_twin_t *twin, const char *error_text)
{
    proto_payload_t payload;
    proto_payload_init(&payload, PROTO_RECEIPT);
    payload.receipt = (proto_receipt_t){.seq = seq,
                                        .sys_id = sender_sys_id,
                                        .code = (uint16_t)code,
                                        .twin_sys_id = twin ? twin->local_sys_id : NULL,
                                        .twin_number = twin ? twin->local_number : NULL,
                                        .error_text = error_text};
    if (code != PROTO_RECEIPT_APPLIED)
        payload.receipt.twin_sys_id = payload.receipt.twin_number = NULL;
    uint64_t out_seq;
    proto_error_t err;
    return s_queue(self, conn, ctx, &payload, &out_seq, &err) ? -1 : 0;
}

//  The RECEIPT code for a ServiceNow refusal of one record.
static proto_receipt_code_t s_receipt_code(sn_err_code_t code)
{
    if (code == SN_E_NOT_FOUND)
        return PROTO_RECEIPT_GONE;
    if (code == SN_E_BAD_REQUEST)
        return PROTO_RECEIPT_INVALID;
    return PROTO_RECEIPT_REFUSED;
}

//  Finishes an inbound message in one transaction: applied seq, intent
//  gone, plus what body adds (twin, RECEIPT, error ...).
static node_sync_rc_t s_finish(node_sync_t *self, const char *conn, uint64_t seq, int body_rc)
{
    if (body_rc || node_state_intent_remove(self->state, conn, seq) ||
        node_state_conn_set_applied(self->state, conn, seq) < 0 || node_state_commit(self->state))
        return s_fatal(self, "apply");
    return NODE_SYNC_OK;
}

//  An inbound payload that cannot be applied at all (does not open, does not
//  decode): reported once per seq, neither applied nor consumed (see
//  NODE_SYNC_REFUSED).
static node_sync_rc_t s_reject(node_sync_t *self, const char *conn, uint64_t seq, const char *code,
                               const char *message)
{
    ts_log(TS_LOG_ERROR, "inbound payload rejected", "conn=%s seq=%" PRIu64 " reason=\"%s\"", conn,
           seq, message);
    node_error_t e;
    memset(&e, 0, sizeof e);
    snprintf(e.conn, sizeof e.conn, "%s", conn);
    snprintf(e.origin, sizeof e.origin, "seal");
    snprintf(e.code, sizeof e.code, "%s", code);
    snprintf(e.message, sizeof e.message, "message %" PRIu64 " from the other node: %s", seq,
             message);
    e.seq = seq;
    if (node_state_error_add(self->state, &e))
        return s_fatal(self, "reject");
    return NODE_SYNC_REFUSED;
}

//  A RECEIPT for one of our SYNCs: learn the twin's ids, forget pending
//  changes it covers, show or clear the other side's refusal.
static int s_receipt_in(node_sync_t *self, const node_conn_t *conn, const proto_receipt_t *r)
{
    node_twin_t twin = {0};
    int rc = node_state_twin_by_local(self->state, conn->id, r->sys_id, &twin);
    if (rc)
        return rc < 0 ? -1 : 0; //  a twin deleted meanwhile: nothing to update
    node_error_t old;
    int has_error =
        node_state_error_for_twin(self->state, conn->id, twin.local_sys_id, "remote", &old);
    if (has_error < 0)
        rc = -1;
    node_twin_t other = {0};
    int taken = 1;
    if (rc == 0 && r->code == PROTO_RECEIPT_APPLIED && r->twin_sys_id &&
        strcmp(twin.remote_sys_id, r->twin_sys_id)) {
        taken = node_state_twin_by_remote(self->state, conn->id, r->twin_sys_id, &other);
        if (taken < 0)
            rc = -1;
    }
    if (rc == 0 && taken == 0) {
        //  Two local records claim one remote twin (a state database from
        //  before twin ids were honoured): kept apart, shown to the admin.
        char text[NODE_TEXT_MAX + 1];
        snprintf(text, sizeof text, "the other side's %s is already the twin of %s here",
                 r->twin_number ? r->twin_number : r->twin_sys_id, other.local_number);
        rc = s_twin_error(self, conn->id, &twin, r->twin_sys_id,
                          r->twin_number ? r->twin_number : "", r->seq, "remote", "conflict", text);
        ts_log(TS_LOG_ERROR, "twin conflict", "conn=%s incident=%s other=%s", conn->id,
               twin.local_number, other.local_number);
    } else if (rc == 0 && r->code == PROTO_RECEIPT_APPLIED) {
        if (r->twin_sys_id)
            snprintf(twin.remote_sys_id, sizeof twin.remote_sys_id, "%s", r->twin_sys_id);
        if (r->twin_number)
            snprintf(twin.remote_number, sizeof twin.remote_number, "%s", r->twin_number);
        if (r->seq > twin.acked_seq) {
            twin.acked_seq = r->seq;
            if (node_replica_pending_ack(twin.pending, r->seq, twin.previous, twin.local))
                rc = -1;
        }
        if (rc == 0 && has_error == 0 && r->seq >= old.seq)
            rc = node_state_error_remove(self->state, old.id);
    } else if (rc == 0) {
        twin.peer_stopped = r->code == PROTO_RECEIPT_GONE;
        rc = s_twin_error(self, conn->id, &twin, twin.remote_sys_id, twin.remote_number, r->seq,
                          "remote", r->code == PROTO_RECEIPT_GONE ? "gone" : "refused",
                          r->error_text ? r->error_text : "refused by the other side");
        ts_log(TS_LOG_WARN, "other side refused a sync", "conn=%s incident=%s seq=%" PRIu64,
               conn->id, twin.local_number, r->seq);
    }
    if (rc == 0)
        rc = node_state_twin_put(self->state, &twin);
    node_twin_clear(&other);
    node_twin_clear(&twin);
    return rc;
}

static node_sync_rc_t s_retry_twin(node_sync_t *self, const node_conn_t *conn, s_ctx_t *ctx,
                                   const char *remote_sys_id, node_sync_report_t *report);
static node_sync_rc_t s_force_send(node_sync_t *self, const node_conn_t *conn, s_ctx_t *ctx,
                                   json_t *record, node_twin_t *twin);

//  The other side syncs a twin again after it had stopped (unexalate, then
//  exalate): what changed here meanwhile was never sent, so send the
//  current replica and its unsent comments once.
static node_sync_rc_t s_resend(node_sync_t *self, const node_conn_t *conn, s_ctx_t *ctx,
                               node_twin_t *twin)
{
    json_t *record = NULL;
    sn_error_t err;
    sn_error_reset(&err);
    sn_err_code_t code =
        sn_incident_get(self->sn, twin->local_sys_id, node_replica_read_fields, &record, &err);
    node_sync_rc_t rc = code == SN_OK ? s_force_send(self, conn, ctx, record, twin)
                                      : s_fail_sn(self, conn->id, &err, "resend");
    json_decref(record);
    return rc;
}

//  Parks inbound seq behind the twin's error, then tries the blocked chain
//  again (a later change may have fixed it).
static node_sync_rc_t s_park(node_sync_t *self, const node_conn_t *conn, s_ctx_t *ctx, uint64_t seq,
                             const proto_sync_t *sync, const proto_buf_t *plain)
{
    if (node_state_begin(self->state))
        return s_fatal(self, "park");
    node_sync_rc_t rc = s_finish(
        self, conn->id, seq,
        node_state_blocked_add(self->state, conn->id, seq, sync->sys_id, plain->data, plain->size));
    if (rc != NODE_SYNC_OK)
        return rc;
    rc = s_retry_twin(self, conn, ctx, sync->sys_id, NULL);
    return rc == NODE_SYNC_FATAL ? rc : NODE_SYNC_OK;
}

//  Records a per-twin refusal of an inbound SYNC: error line, message
//  parked for retry, RECEIPT with the refusal.
static node_sync_rc_t s_refused(node_sync_t *self, const node_conn_t *conn, s_ctx_t *ctx,
                                uint64_t seq, const proto_sync_t *sync, const proto_buf_t *plain,
                                const node_twin_t *twin, const sn_error_t *err)
{
    char text[NODE_TEXT_MAX + 1], quoted[600];
    s_sn_text(err, text, sizeof text);
    ts_log(TS_LOG_WARN, "sync refused by servicenow", "conn=%s remote=%s error=%s", conn->id,
           sync->number, ts_log_quote(quoted, sizeof quoted, text));
    if (node_state_begin(self->state))
        return s_fatal(self, "refused");
    const node_twin_t *known = *twin->local_sys_id ? twin : NULL;
    int rc = s_twin_error(self, conn->id, known, sync->sys_id, sync->number, seq, "local",
                          sn_err_name(err->code), text);
    if (rc == 0)
        rc = node_state_blocked_add(self->state, conn->id, seq, sync->sys_id, plain->data,
                                    plain->size);
    if (rc == 0)
        rc = s_receipt_out(self, conn, ctx, seq, sync->sys_id, s_receipt_code(err->code), NULL,
                           text);
    return s_finish(self, conn->id, seq, rc);
}

//  The twin a SYNC is about: by the sender's sys_id, or else by the twin id
//  the sender names. The second finds the twin of a record this side sent
//  whose RECEIPT has not arrived yet (the other side changed its new twin
//  first): the row is adopted with the sender's ids instead of a second twin
//  being created. Same returns as node_state_twin_by_remote.
static int s_find_twin(node_sync_t *self, const char *conn, const proto_sync_t *sync,
                       node_twin_t *twin)
{
    int found = node_state_twin_by_remote(self->state, conn, sync->sys_id, twin);
    if (found != 1 || !sync->twin_sys_id || !*sync->twin_sys_id)
        return found;
    found = node_state_twin_by_local(self->state, conn, sync->twin_sys_id, twin);
    if (found != 0)
        return found;
    if (*twin->remote_sys_id) { //  twinned with another record: not this one's
        node_twin_clear(twin);
        return 1;
    }
    snprintf(twin->remote_sys_id, sizeof twin->remote_sys_id, "%s", sync->sys_id);
    snprintf(twin->remote_number, sizeof twin->remote_number, "%s", sync->number);
    return 0;
}

//  Applies one SYNC (opened and decoded).
static node_sync_rc_t s_apply_sync(node_sync_t *self, const node_conn_t *conn, s_ctx_t *ctx,
                                   uint64_t seq, const proto_sync_t *sync, const proto_buf_t *plain)
{
    node_error_t blocking;
    int blocked =
        node_state_error_for_twin(self->state, conn->id, sync->sys_id, "local", &blocking);
    if (blocked < 0)
        return s_fatal(self, "apply");
    if (blocked == 0)
        return s_park(self, conn, ctx, seq, sync, plain);
    node_twin_t twin = {0};
    int found = s_find_twin(self, conn->id, sync, &twin);
    if (found < 0)
        return s_fatal(self, "apply");
    node_sync_rc_t rc;
    if (found == 0 && !twin.under_sync) {
        char text[256];
        snprintf(text, sizeof text, "%s is no longer under sync on %s (unexalated)",
                 twin.local_number, self->instance);
        rc = node_state_begin(self->state)
                 ? s_fatal(self, "apply")
                 : s_finish(self, conn->id, seq,
                            s_receipt_out(self, conn, ctx, seq, sync->sys_id, PROTO_RECEIPT_GONE,
                                          NULL, text));
        node_twin_clear(&twin);
        return rc;
    }
    bool resumed = found == 0 && twin.peer_stopped;
    bool careful = false;
    if (node_state_intent_exists(self->state, conn->id, seq, &careful) ||
        node_state_intent_add(self->state, conn->id, seq)) {
        node_twin_clear(&twin);
        return s_fatal(self, "intent");
    }
    if (found == 1 && !careful) {
        //  After a restore from an older backup the twin may exist without
        //  our record of it: look it up by correlation id before creating.
        int restored = node_state_conn_restored(self->state, conn->id);
        if (restored < 0) {
            node_twin_clear(&twin);
            return s_fatal(self, "apply");
        }
        careful = restored == 1;
    }
    sn_error_t err;
    sn_error_reset(&err);
    sn_err_code_t code = s_write(self, conn, sync, careful, &twin, &err);
    if (code == SN_E_CANCELLED)
        rc = s_fatal(self, err.message);
    else if (code != SN_OK && sn_err_scope(code) == SN_SCOPE_RECORD)
        rc = s_refused(self, conn, ctx, seq, sync, plain, &twin, &err);
    else if (code != SN_OK)
        rc = s_fail_sn(self, conn->id, &err, "apply");
    else if (node_state_begin(self->state))
        rc = s_fatal(self, "apply");
    else {
        int body = node_state_twin_put(self->state, &twin);
        if (body == 0)
            body = s_receipt_out(self, conn, ctx, seq, sync->sys_id, PROTO_RECEIPT_APPLIED, &twin,
                                 NULL);
        rc = s_finish(self, conn->id, seq, body);
        if (rc == NODE_SYNC_OK)
            ts_log(TS_LOG_INFO, "sync applied", "conn=%s seq=%" PRIu64 " incident=%s remote=%s",
                   conn->id, seq, twin.local_number, sync->number);
        //  Applied and consumed either way; a failed resend is retried by
        //  the next local change.
        if (rc == NODE_SYNC_OK && resumed && s_resend(self, conn, ctx, &twin) == NODE_SYNC_FATAL)
            rc = NODE_SYNC_FATAL;
    }
    node_twin_clear(&twin);
    return rc;
}

node_sync_rc_t node_sync_apply(node_sync_t *self, const char *conn_id, uint64_t seq,
                               const uint8_t *sealed, size_t size)
{
    node_conn_t conn;
    int found = node_state_conn_get(self->state, conn_id, &conn);
    if (found)
        return found < 0 ? s_fatal(self, "apply") : NODE_SYNC_OK; //  deleted: drop
    if (seq <= conn.applied_in_seq)
        return NODE_SYNC_OK; //  delivered again after a reconnect: already applied
    if (conn.status != NODE_CONN_ACTIVE || seq > conn.applied_in_seq + 1)
        return NODE_SYNC_HOLD; //  paused, or strictly in order
    s_ctx_t *ctx = s_ctx(self, conn.id);
    if (!ctx)
        return NODE_SYNC_HOLD;
    proto_buf_t plain;
    proto_buf_init(&plain);
    if (proto_seal_open(ctx->seal, proto_dir_inbound(conn.role), seq, sealed, size, &plain) !=
        PROTO_OK) {
        proto_buf_wipe(&plain);
        return s_reject(self, conn.id, seq, "seal",
                        "payload does not open (altered, replayed, or sealed with another "
                        "connection's secret)");
    }
    proto_payload_t payload;
    proto_error_t perr;
    node_sync_rc_t rc;
    if (proto_payload_decode(plain.data, plain.size, NULL, &payload, &perr) != PROTO_OK) {
        rc = s_reject(self, conn.id, seq, "invalid", proto_error_str(&perr));
    } else if (payload.type == PROTO_RECEIPT) {
        rc = node_state_begin(self->state)
                 ? s_fatal(self, "receipt")
                 : s_finish(self, conn.id, seq, s_receipt_in(self, &conn, &payload.receipt));
    } else {
        rc = s_apply_sync(self, &conn, ctx, seq, &payload.sync, &plain);
    }
    proto_payload_clear(&payload);
    proto_buf_wipe(&plain);
    return rc;
}

//  --- retries

//  The blocked messages of one twin, decoded.
typedef struct {
    proto_payload_t *items; //  Decoded SYNCs, owned
    uint64_t *seqs;         //  Their seqs
    size_t count;           //  Entries
    bool failed;            //  Out of memory or a damaged row
} s_chain_t;

static int s_chain_add(uint64_t seq, const char *remote, const uint8_t *plain, size_t size,
                       void *arg)
{
    (void)remote;
    s_chain_t *chain = arg;
    proto_payload_t *items = realloc(chain->items, (chain->count + 1) * sizeof(proto_payload_t));
    uint64_t *seqs = items ? realloc(chain->seqs, (chain->count + 1) * sizeof(uint64_t)) : NULL;
    if (items)
        chain->items = items;
    if (seqs)
        chain->seqs = seqs;
    if (!items || !seqs ||
        proto_payload_decode(plain, size, NULL, &chain->items[chain->count], NULL) != PROTO_OK ||
        chain->items[chain->count].type != PROTO_SYNC) {
        chain->failed = true;
        return 1;
    }
    chain->seqs[chain->count++] = seq;
    return 0;
}

static void s_chain_clear(s_chain_t *chain)
{
    for (size_t i = 0; i < chain->count; i++)
        proto_payload_clear(&chain->items[i]);
    free(chain->items);
    free(chain->seqs);
    memset(chain, 0, sizeof *chain);
}

//  One SYNC standing for the whole chain: the latest replica (replicas are
//  whole, so the latest carries every field change of the earlier ones)
//  with the comments of every message in order. Arrays owned by the caller.
static int s_chain_merge(const s_chain_t *chain, proto_sync_t *merged, proto_comment_t **comments_p)
{
    size_t total = 0;
    for (size_t i = 0; i < chain->count; i++)
        total += chain->items[i].sync.comments_count;
    *comments_p = calloc(total + 1, sizeof(proto_comment_t));
    if (!*comments_p)
        return -1;
    size_t at = 0;
    for (size_t i = 0; i < chain->count; i++)
        for (size_t j = 0; j < chain->items[i].sync.comments_count; j++)
            (*comments_p)[at++] = chain->items[i].sync.comments[j];
    *merged = chain->items[chain->count - 1].sync;
    merged->comments = *comments_p;
    merged->comments_count = total;
    return 0;
}

//  Applies the messages blocked behind the error of remote record
//  remote_sys_id, merged into one write. Success clears the error and
//  sends a RECEIPT per message; a new refusal updates the error line.
static node_sync_rc_t s_retry_twin(node_sync_t *self, const node_conn_t *conn, s_ctx_t *ctx,
                                   const char *remote_sys_id, node_sync_report_t *report)
{
    node_error_t error;
    int has_error =
        node_state_error_for_twin(self->state, conn->id, remote_sys_id, "local", &error);
    if (has_error)
        return has_error < 0 ? s_fatal(self, "retry") : NODE_SYNC_OK;
    s_chain_t chain = {0};
    if (node_state_blocked_each(self->state, conn->id, remote_sys_id, s_chain_add, &chain) ||
        chain.failed || chain.count == 0) {
        s_chain_clear(&chain);
        return chain.failed ? s_fatal(self, "retry") : NODE_SYNC_OK;
    }
    proto_sync_t merged;
    proto_comment_t *comments = NULL;
    node_twin_t twin = {0};
    node_sync_rc_t rc = NODE_SYNC_OK;
    if (s_chain_merge(&chain, &merged, &comments) ||
        s_find_twin(self, conn->id, &merged, &twin) < 0)
        rc = s_fatal(self, "retry");
    sn_error_t err;
    sn_error_reset(&err);
    sn_err_code_t code =
        rc == NODE_SYNC_OK ? s_write(self, conn, &merged, true, &twin, &err) : SN_E_CANCELLED;
    char text[NODE_TEXT_MAX + 1];
    if (rc != NODE_SYNC_OK) {
        //  already failed
    } else if (code == SN_E_CANCELLED) {
        rc = s_fatal(self, err.message);
    } else if (code != SN_OK && sn_err_scope(code) == SN_SCOPE_RECORD) {
        if (node_state_error_failed_again(self->state, error.id,
                                          s_sn_text(&err, text, sizeof text)) < 0)
            rc = s_fatal(self, "retry");
    } else if (code != SN_OK) {
        rc = s_fail_sn(self, conn->id, &err, "retry");
    } else if (node_state_begin(self->state)) {
        rc = s_fatal(self, "retry");
    } else {
        int body = node_state_twin_put(self->state, &twin);
        for (size_t i = 0; i < chain.count && body == 0; i++) {
            body = s_receipt_out(self, conn, ctx, chain.seqs[i], remote_sys_id,
                                 PROTO_RECEIPT_APPLIED, &twin, NULL);
            if (body == 0)
                body = node_state_blocked_remove(self->state, conn->id, chain.seqs[i]);
        }
        if (body == 0)
            body = node_state_error_remove(self->state, error.id);
        if (body || node_state_commit(self->state))
            rc = s_fatal(self, "retry");
        else
            ts_log(TS_LOG_INFO, "blocked twin applied", "conn=%s incident=%s messages=%zu",
                   conn->id, twin.local_number, chain.count);
        if (report && rc == NODE_SYNC_OK)
            report->applied += chain.count;
    }
    free(comments);
    node_twin_clear(&twin);
    s_chain_clear(&chain);
    return rc;
}

//  Sends the current replica of local incident record (exalate, or a retry
//  of the other side's refusal) in its own transaction.
static node_sync_rc_t s_force_send(node_sync_t *self, const node_conn_t *conn, s_ctx_t *ctx,
                                   json_t *record, node_twin_t *twin)
{
    json_t *journal = NULL;
    sn_error_t err;
    sn_error_reset(&err);
    const char *ids[] = {sn_field(record, "sys_id")};
    sn_err_code_t code = s_journal(self, ids, 1, &journal, &err);
    if (code != SN_OK) {
        json_decref(journal);
        return s_fail_sn(self, conn->id, &err, "send");
    }
    node_sync_rc_t rc = NODE_SYNC_OK;
    if (node_state_begin(self->state) ||
        s_send(self, conn, ctx, twin, record, json_object_get(journal, ids[0]), true) < 0 ||
        node_state_commit(self->state))
        rc = s_fatal(self, "send");
    json_decref(journal);
    return rc;
}

//  Retries one error an admin asked for.
static node_sync_rc_t s_retry_error(node_sync_t *self, const node_error_t *error,
                                    node_sync_report_t *report)
{
    node_conn_t conn;
    int found = node_state_conn_get(self->state, error->conn, &conn);
    if (found)
        return found < 0 ? s_fatal(self, "retry") : NODE_SYNC_OK;
    if (conn.status != NODE_CONN_ACTIVE)
        return NODE_SYNC_HOLD;
    s_ctx_t *ctx = s_ctx(self, conn.id);
    if (!ctx)
        return NODE_SYNC_HOLD;
    if (!strcmp(error->origin, "local"))
        return s_retry_twin(self, &conn, ctx, error->remote_sys_id, report);
    if (strcmp(error->origin, "remote"))
        //  A payload that did not open cannot be retried: the admin has
        //  seen it, the line goes.
        return node_state_error_remove(self->state, error->id) ? s_fatal(self, "retry")
                                                               : NODE_SYNC_OK;
    //  The other side refused our SYNC: send the current replica again; the
    //  other side retries its blocked chain when it arrives.
    node_twin_t twin = {0};
    json_t *record = NULL;
    sn_error_t err;
    sn_error_reset(&err);
    node_sync_rc_t rc = NODE_SYNC_OK;
    if (node_state_twin_by_local(self->state, conn.id, error->local_sys_id, &twin) ||
        node_state_error_failed_again(self->state, error->id, error->message) < 0) {
        node_twin_clear(&twin);
        return s_fatal(self, "retry");
    }
    sn_err_code_t code =
        sn_incident_get(self->sn, twin.local_sys_id, node_replica_read_fields, &record, &err);
    if (code != SN_OK)
        rc = s_fail_sn(self, conn.id, &err, "retry");
    else
        rc = s_force_send(self, &conn, ctx, record, &twin);
    json_decref(record);
    node_twin_clear(&twin);
    return rc;
}

node_sync_rc_t node_sync_retry(node_sync_t *self, node_sync_report_t *report)
{
    node_error_t *list = NULL;
    size_t count = 0;
    if (node_state_error_list(self->state, NULL, &list, &count))
        return s_fatal(self, "retry");
    node_sync_rc_t rc = NODE_SYNC_OK;
    for (size_t i = 0; i < count && rc != NODE_SYNC_FATAL; i++) {
        if (!list[i].retry_requested)
            continue;
        node_sync_rc_t one = s_retry_error(self, &list[i], report);
        if (one != NODE_SYNC_OK && one != NODE_SYNC_HOLD)
            rc = one;
    }
    free(list);
    return rc;
}

//  --- admin requests

//  Starts syncing incident number on conn. Returns the result for the
//  request (DONE / FAILED with text), or RETRY / CONN_ERROR / FATAL.
static node_sync_rc_t s_exalate(node_sync_t *self, const node_request_t *req,
                                node_req_status_t *status, char *text, size_t size)
{
    node_conn_t conn;
    int found = node_state_conn_get(self->state, req->conn, &conn);
    *status = NODE_REQ_FAILED;
    if (found) {
        snprintf(text, size, "no connection %s", req->conn);
        return found < 0 ? s_fatal(self, "exalate") : NODE_SYNC_OK;
    }
    if (conn.status != NODE_CONN_ACTIVE) {
        snprintf(text, size, "connection %s is %s, not active", conn.name,
                 node_conn_status_name(conn.status));
        return NODE_SYNC_OK;
    }
    s_ctx_t *ctx = s_ctx(self, conn.id);
    if (!ctx) {
        snprintf(text, size, "connection %s has no readable key file", conn.name);
        return NODE_SYNC_OK;
    }
    json_t *record = NULL;
    sn_error_t err;
    sn_error_reset(&err);
    sn_err_code_t code =
        sn_incident_get_by_number(self->sn, req->arg, node_replica_read_fields, &record, &err);
    if (code == SN_E_NOT_FOUND) {
        snprintf(text, size, "no incident %s on %s", req->arg, self->instance);
        return NODE_SYNC_OK;
    }
    if (code != SN_OK)
        return s_fail_sn(self, conn.id, &err, "exalate");
    node_twin_t twin = {0};
    found = node_state_twin_by_local(self->state, conn.id, sn_field(record, "sys_id"), &twin);
    node_sync_rc_t rc = found < 0 ? s_fatal(self, "exalate") : NODE_SYNC_OK;
    if (found == 1) {
        snprintf(twin.conn, sizeof twin.conn, "%s", conn.id);
        snprintf(twin.local_sys_id, sizeof twin.local_sys_id, "%s", sn_field(record, "sys_id"));
        twin.under_sync = true;
        twin.local = node_fields_new();
        twin.previous = node_fields_new();
        twin.pending = node_fields_new();
    }
    if (rc == NODE_SYNC_OK && found == 0 &&
        node_state_twin_set_sync(self->state, conn.id, twin.local_sys_id, true) < 0)
        rc = s_fatal(self, "exalate");
    twin.peer_stopped = false;
    if (rc == NODE_SYNC_OK)
        rc = s_force_send(self, &conn, ctx, record, &twin);
    if (rc == NODE_SYNC_OK) {
        *status = NODE_REQ_DONE;
        snprintf(text, size, "%s is under sync on connection %s%s%s", req->arg, conn.name,
                 *twin.remote_number ? ", twin " : "", twin.remote_number);
    }
    node_twin_clear(&twin);
    json_decref(record);
    return rc;
}

node_sync_rc_t node_sync_requests(node_sync_t *self)
{
    for (;;) {
        node_request_t req;
        int found = node_state_request_next(self->state, &req);
        if (found)
            return found < 0 ? s_fatal(self, "requests") : NODE_SYNC_OK;
        node_req_status_t status = NODE_REQ_FAILED;
        char text[NODE_TEXT_MAX + 1] = "unknown request";
        node_sync_rc_t rc = NODE_SYNC_OK;
        if (req.kind == NODE_REQ_EXALATE)
            rc = s_exalate(self, &req, &status, text, sizeof text);
        if (rc == NODE_SYNC_CONN_ERROR) {
            node_conn_t conn;
            if (node_state_conn_get(self->state, req.conn, &conn) == 0)
                snprintf(text, sizeof text, "%s", conn.error_text);
            rc = NODE_SYNC_OK; //  reported to the admin, not retried
        }
        if (rc != NODE_SYNC_OK)
            return rc; //  RETRY keeps the request queued
        if (node_state_request_finish(self->state, req.id, status, text) < 0)
            return s_fatal(self, "requests");
    }
}
