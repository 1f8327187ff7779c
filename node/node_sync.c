/*  node_sync.c: the worker side of the engine, what its two halves share,
    and the admin requests. The outbound half (polling) is node_sync_poll.c,
    the inbound half (applying, retries) node_sync_apply.c; what they share
    is declared in node_sync_impl.h.

    How the parts fit:
      node_sync_ctx*    per-connection memory: the sealer (from the key file)
                        and the poll's de-duplication set
      node_sync_fail_sn what a ServiceNow failure means: retry later, or the
                        connection goes to status error with ServiceNow's words
      node_sync_journal comments of some incidents, from sys_journal_field
      node_sync_send    one SYNC into the outbox (replica + new human comments)
      node_sync_requests   admin requests (start syncing one incident)

    Transactions: the ServiceNow calls happen outside any transaction; their
    outcome is recorded in one (outbox rows + twin + cursor, or result +
    RECEIPT + applied seq). A crash in between replays the work: the poll
    re-reads from the old cursor (the twin's `local` set absorbs what was
    already sent), an inbound message is delivered again and its intent row
    switches s_write to careful mode (look the twin up by correlation_id,
    look comments up in the journal before writing them).
*/
#include "node_sync_impl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "node_keys.h"
#include "node_rekey.h"
#include "node_replica.h"
#include "proto_kx.h"
#include "proto_seal.h"
#include "proto_sync.h"
#include "sn_incident.h"
#include "sn_journal.h"
#include "ts_log.h"

#define S_DEFAULT_LOOKBACK 10 //  Seconds re-read before the cursor

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
    self->rekey_interval_s = cfg->rekey_interval_s;
    self->no_padding = cfg->no_padding;
    self->attachments_none = cfg->attachments_none;
    self->attachment_max = cfg->attachment_max;
    self->attachment_scan_ms = cfg->attachment_scan_ms > 0 ? cfg->attachment_scan_ms : 60000;
    if (!self->state_dir || !self->instance || !self->sync_user)
        node_sync_destroy(&self);
    return self;
}

static void s_ctx_clear(node_sync_ctx_t *ctx)
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
    node_sync_files_forget(self, conn);
    for (size_t i = 0; i < self->ctx_count; i++) {
        if (strcmp(self->ctx[i].id, conn))
            continue;
        s_ctx_clear(&self->ctx[i]);
        self->ctx[i] = self->ctx[--self->ctx_count];
        return;
    }
}

//  Appends "KEY_ID NONCE" (hex) of one sealed payload to the file named by
//  TWINSYNC_SEAL_TRACE: the tests' proof that no (key, nonce) pair is used
//  twice, even across restarts and restores. A key fingerprint reveals
//  nothing of the key.
static void s_trace_seal(const uint8_t key_id[PROTO_SEAL_KEY_ID_SIZE],
                         const uint8_t nonce[PROTO_SEAL_NONCE_SIZE], void *arg)
{
    FILE *f = fopen(arg, "a");
    if (!f)
        return;
    for (int i = 0; i < PROTO_SEAL_KEY_ID_SIZE; i++)
        fprintf(f, "%02x", key_id[i]);
    fputc(' ', f);
    for (int i = 0; i < PROTO_SEAL_NONCE_SIZE; i++)
        fprintf(f, "%02x", nonce[i]);
    fputc('\n', f);
    fclose(f);
}

int node_sync_gens_load(node_sync_t *self, const char *conn, node_rekey_gens_t *gens, char *err,
                        size_t errlen)
{
    int rc = node_rekey_read(self->state_dir, conn, gens, err, errlen);
    if (rc != 1)
        return rc;
    node_keys_t keys;
    rc = node_keys_read(self->state_dir, conn, &keys, err, errlen);
    if (rc == 1)
        snprintf(err, errlen, "key file missing");
    else if (rc == 0 && !keys.has_root)
        snprintf(err, errlen, "no root yet (the join is not done)");
    if (rc || !keys.has_root) {
        node_keys_wipe(&keys);
        return -1;
    }
    memset(gens, 0, sizeof *gens);
    gens->count = 1;
    memcpy(gens->roots[0].root, keys.root, PROTO_KEY_SIZE);
    node_keys_wipe(&keys);
    node_conn_t c;
    gens->rotated_at = node_state_conn_get(self->state, conn, &c) == 0 ? c.joined_at : 0;
    return 0;
}

int node_sync_gens_save(node_sync_t *self, const char *conn, const node_rekey_gens_t *gens,
                        char *err, size_t errlen)
{
    if (node_rekey_write(self->state_dir, conn, gens, err, errlen))
        return -1;
    //  The generations file holds every root still needed: the join's key
    //  file (generation 0) goes, so that a later leak of it opens nothing
    if (node_keys_remove(self->state_dir, conn)) {
        snprintf(err, errlen, "cannot remove the key file of %s", conn);
        return -1;
    }
    return 0;
}

//  Makes ctx's sealer hold the roots of gens and seal in its current one.
static int s_ctx_seal(node_sync_ctx_t *ctx, const node_rekey_gens_t *gens)
{
    ctx->seal = proto_seal_new(gens->roots[0].root, ctx->id);
    if (!ctx->seal)
        return -1;
    for (size_t i = 0; i < gens->count; i++)
        if (proto_seal_add_generation(ctx->seal, gens->roots[i].generation, gens->roots[i].root) !=
            PROTO_OK)
            return -1;
    if (proto_seal_use_generation(ctx->seal, gens->current) != PROTO_OK)
        return -1;
    proto_seal_forget_before(ctx->seal,
                             gens->count == 2 ? gens->roots[1].generation : gens->current);
    ctx->current = gens->current;
    ctx->has_previous = gens->count == 2;
    ctx->rekey_pending = gens->pending != 0;
    ctx->rotated_at = gens->rotated_at;
    return 0;
}

//  The memory of connection conn, loading its keys the first time.
//  NULL when the keys are missing or unreadable (logged).
node_sync_ctx_t *node_sync_ctx(node_sync_t *self, const char *conn)
{
    for (size_t i = 0; i < self->ctx_count; i++)
        if (!strcmp(self->ctx[i].id, conn))
            return &self->ctx[i];
    node_rekey_gens_t gens;
    char err[512];
    if (node_sync_gens_load(self, conn, &gens, err, sizeof err)) {
        ts_log(TS_LOG_ERROR, "cannot load connection secret", "conn=%s reason=\"%s\"", conn, err);
        return NULL;
    }
    node_sync_ctx_t *grown = realloc(self->ctx, (self->ctx_count + 1) * sizeof(node_sync_ctx_t));
    if (!grown) {
        node_rekey_wipe(&gens);
        return NULL;
    }
    self->ctx = grown;
    node_sync_ctx_t *ctx = &self->ctx[self->ctx_count];
    memset(ctx, 0, sizeof *ctx);
    snprintf(ctx->id, sizeof ctx->id, "%s", conn);
    int rc = s_ctx_seal(ctx, &gens);
    node_rekey_wipe(&gens);
    if (rc == 0 && self->no_padding)
        proto_seal_set_padding(ctx->seal, false, proto_limits_default().max_payload);
    ctx->seen = sn_seen_new();
    const char *trace = getenv("TWINSYNC_SEAL_TRACE");
    if (ctx->seal && trace && *trace)
        proto_seal_set_trace(ctx->seal, s_trace_seal, (void *)trace);
    if (rc || !ctx->seal || !ctx->seen) {
        s_ctx_clear(ctx);
        return NULL;
    }
    self->ctx_count++;
    return ctx;
}

//  Forgets what the poll of ctx has seen: after a failed poll, rows handed
//  over but not recorded must come again.
void node_sync_ctx_reset_seen(node_sync_ctx_t *ctx)
{
    sn_seen_t *fresh = sn_seen_new();
    if (!fresh)
        return; //  keeping the old set only risks a missed row until it changes
    sn_seen_destroy(&ctx->seen);
    ctx->seen = fresh;
}

int64_t node_sync_now_ms(void)
{
    return (int64_t)time(NULL);
}

//  "message (detail)" of a ServiceNow error, into buf.
const char *node_sync_sn_text(const sn_error_t *err, char *buf, size_t size)
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
node_sync_rc_t node_sync_fail_sn(node_sync_t *self, const char *conn, const sn_error_t *err,
                                 const char *during)
{
    char text[NODE_TEXT_MAX + 1], quoted[600];
    node_sync_sn_text(err, text, sizeof text);
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
node_sync_rc_t node_sync_fatal(node_sync_t *self, const char *during)
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
sn_err_code_t node_sync_journal(node_sync_t *self, const char *const *ids, size_t count,
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
int node_sync_queue(node_sync_t *self, const node_conn_t *conn, node_sync_ctx_t *ctx,
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
    rc = node_state_outbox_add(self->state, conn->id, *seq, sealed.data, sealed.size,
                               payload->type == PROTO_FILE_CHUNK);
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
int node_sync_twin_error(node_sync_t *self, const char *conn, const node_twin_t *twin,
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
int node_sync_send(node_sync_t *self, const node_conn_t *conn, node_sync_ctx_t *ctx,
                   node_twin_t *twin, const json_t *record, json_t *entries, bool force)
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
    rc = node_sync_queue(self, conn, ctx, &payload, &seq, &perr);
    if (rc == 1) {
        ts_log(TS_LOG_ERROR, "replica cannot be sent", "conn=%s incident=%s reason=\"%s\"",
               conn->id, twin->local_number, proto_error_str(&perr));
        rc = node_sync_twin_error(self, conn->id, twin, twin->remote_sys_id, twin->remote_number, 0,
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
    twin->last_sync_at = node_sync_now_ms();
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

//  Sends the current replica of local incident record (exalate, or a retry
//  of the other side's refusal) in its own transaction.
node_sync_rc_t node_sync_force_send(node_sync_t *self, const node_conn_t *conn,
                                    node_sync_ctx_t *ctx, json_t *record, node_twin_t *twin)
{
    json_t *journal = NULL;
    sn_error_t err;
    sn_error_reset(&err);
    const char *ids[] = {sn_field(record, "sys_id")};
    sn_err_code_t code = node_sync_journal(self, ids, 1, &journal, &err);
    if (code != SN_OK) {
        json_decref(journal);
        return node_sync_fail_sn(self, conn->id, &err, "send");
    }
    node_sync_rc_t rc = NODE_SYNC_OK;
    if (node_state_begin(self->state) ||
        node_sync_send(self, conn, ctx, twin, record, json_object_get(journal, ids[0]), true) < 0 ||
        node_state_commit(self->state))
        rc = node_sync_fatal(self, "send");
    json_decref(journal);
    return rc;
}

//  --- rekeying (docs/protocol.md §8.4; the answers are in node_sync_apply.c)

node_sync_rc_t node_sync_rekey(node_sync_t *self, const char *conn_id, char *text, size_t size)
{
    node_conn_t conn;
    int found = node_state_conn_get(self->state, conn_id, &conn);
    if (found) {
        snprintf(text, size, "no connection %s", conn_id);
        return found < 0 ? node_sync_fatal(self, "rekey") : NODE_SYNC_OK;
    }
    if (conn.status != NODE_CONN_ACTIVE) {
        snprintf(text, size, "connection %s is %s: only an active connection is rekeyed", conn.name,
                 node_conn_status_name(conn.status));
        return NODE_SYNC_OK;
    }
    node_sync_ctx_t *ctx = node_sync_ctx(self, conn.id);
    if (!ctx) {
        snprintf(text, size, "the keys of %s cannot be read (see the log)", conn.name);
        return NODE_SYNC_OK;
    }
    node_rekey_gens_t gens;
    char err[512];
    if (node_sync_gens_load(self, conn.id, &gens, err, sizeof err)) {
        snprintf(text, size, "%s", err);
        return NODE_SYNC_OK;
    }
    if (gens.pending) {
        snprintf(text, size, "a rekey of %s to key generation %" PRIu32 " is under way", conn.name,
                 gens.pending);
        node_rekey_wipe(&gens);
        return NODE_SYNC_OK;
    }
    proto_payload_t payload;
    proto_payload_init(&payload, PROTO_REKEY);
    payload.rekey.generation = gens.current + 1;
    gens.pending = gens.current + 1;
    int rc = proto_kx_keypair(gens.pending_key, payload.rekey.kx) == PROTO_OK ? 0 : -1;
    //  The private key is on disk before the REKEY can leave
    if (rc == 0)
        rc = node_sync_gens_save(self, conn.id, &gens, err, sizeof err);
    node_rekey_wipe(&gens);
    if (rc) {
        snprintf(text, size, "cannot start a rekey of %s: %s", conn.name, err);
        return NODE_SYNC_OK;
    }
    uint64_t seq = 0;
    proto_error_t perr;
    if (node_state_begin(self->state) || node_sync_queue(self, &conn, ctx, &payload, &seq, &perr) ||
        node_state_commit(self->state))
        return node_sync_fatal(self, "rekey");
    ctx->rekey_pending = true;
    ts_log(TS_LOG_INFO, "rekey started", "conn=%s generation=%" PRIu32 " seq=%" PRIu64, conn.id,
           payload.rekey.generation, seq);
    snprintf(text, size, "rekey of %s to key generation %" PRIu32 " started", conn.name,
             payload.rekey.generation);
    return NODE_SYNC_OK;
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
        return found < 0 ? node_sync_fatal(self, "exalate") : NODE_SYNC_OK;
    }
    if (conn.status != NODE_CONN_ACTIVE) {
        snprintf(text, size, "connection %s is %s, not active", conn.name,
                 node_conn_status_name(conn.status));
        return NODE_SYNC_OK;
    }
    node_sync_ctx_t *ctx = node_sync_ctx(self, conn.id);
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
        return node_sync_fail_sn(self, conn.id, &err, "exalate");
    node_twin_t twin = {0};
    found = node_state_twin_by_local(self->state, conn.id, sn_field(record, "sys_id"), &twin);
    node_sync_rc_t rc = found < 0 ? node_sync_fatal(self, "exalate") : NODE_SYNC_OK;
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
        rc = node_sync_fatal(self, "exalate");
    twin.peer_stopped = false;
    if (rc == NODE_SYNC_OK)
        rc = node_sync_force_send(self, &conn, ctx, record, &twin);
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
            return found < 0 ? node_sync_fatal(self, "requests") : NODE_SYNC_OK;
        node_req_status_t status = NODE_REQ_FAILED;
        char text[NODE_TEXT_MAX + 1] = "unknown request";
        node_sync_rc_t rc = NODE_SYNC_OK;
        if (req.kind == NODE_REQ_EXALATE)
            rc = s_exalate(self, &req, &status, text, sizeof text);
        else if (req.kind == NODE_REQ_REKEY) {
            rc = node_sync_rekey(self, req.conn, text, sizeof text);
            status = strstr(text, " started") ? NODE_REQ_DONE : NODE_REQ_FAILED;
        }
        if (rc == NODE_SYNC_CONN_ERROR) {
            node_conn_t conn;
            if (node_state_conn_get(self->state, req.conn, &conn) == 0)
                snprintf(text, sizeof text, "%s", conn.error_text);
            rc = NODE_SYNC_OK; //  reported to the admin, not retried
        }
        if (rc != NODE_SYNC_OK)
            return rc; //  RETRY keeps the request queued
        if (node_state_request_finish(self->state, req.id, status, text) < 0)
            return node_sync_fatal(self, "requests");
    }
}
