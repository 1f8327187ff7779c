/*  node_sync_apply.c: the inbound half of node_sync (see node_sync.h):
    payloads from the other side are written on this side's instance.

    How the parts fit:
      s_write       writes one received replica on ServiceNow (create or
                    update, then comments), idempotent after a crash: an
                    intent row switches it to careful mode (the twin looked
                    up by correlation_id, comments looked up in the journal)
      s_apply_sync / s_receipt_in / node_sync_apply   inbound payloads,
                    strictly in order, each outcome committed with the
                    applied seq and the RECEIPT sent back
      s_park / s_refused   a twin whose write failed holds its later messages
      s_retry_twin / node_sync_retry   re-applies the messages blocked behind
                    a twin's error, merged into one write
*/
#include "node_sync_impl.h"

#include "proto_kx.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <time.h>

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
        sn_err_code_t rc = node_sync_journal(self, ids, 1, journal_p, err);
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
    twin->last_sync_at = node_sync_now_ms();
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
        twin->last_sync_at = node_sync_now_ms();
        twin->peer_stopped = false; //  the other side syncs it (again, after an exalate)
    }
    node_fields_destroy(&plan);
    node_fields_destroy(&incoming);
    return rc;
}

//  Queues the RECEIPT of inbound seq (inside the caller's transaction).
static int s_receipt_out(node_sync_t *self, const node_conn_t *conn, node_sync_ctx_t *ctx,
                         uint64_t seq, const char *sender_sys_id, proto_receipt_code_t code,
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
    return node_sync_queue(self, conn, ctx, &payload, &out_seq, &err) ? -1 : 0;
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
        node_state_conn_set_applied(self->state, conn, seq) < 0 ||
        node_state_applied_put(self->state, conn, seq, self->digest) ||
        node_state_commit(self->state))
        return node_sync_fatal(self, "apply");
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
        return node_sync_fatal(self, "reject");
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
        rc = node_sync_twin_error(self, conn->id, &twin, r->twin_sys_id,
                                  r->twin_number ? r->twin_number : "", r->seq, "remote",
                                  "conflict", text);
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
        rc = node_sync_twin_error(self, conn->id, &twin, twin.remote_sys_id, twin.remote_number,
                                  r->seq, "remote",
                                  r->code == PROTO_RECEIPT_GONE ? "gone" : "refused",
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

static node_sync_rc_t s_retry_twin(node_sync_t *self, const node_conn_t *conn, node_sync_ctx_t *ctx,
                                   const char *remote_sys_id, node_sync_report_t *report);

//  The other side syncs a twin again after it had stopped (unexalate, then
//  exalate): what changed here meanwhile was never sent, so send the
//  current replica and its unsent comments once.
static node_sync_rc_t s_resend(node_sync_t *self, const node_conn_t *conn, node_sync_ctx_t *ctx,
                               node_twin_t *twin)
{
    json_t *record = NULL;
    sn_error_t err;
    sn_error_reset(&err);
    sn_err_code_t code =
        sn_incident_get(self->sn, twin->local_sys_id, node_replica_read_fields, &record, &err);
    node_sync_rc_t rc = code == SN_OK ? node_sync_force_send(self, conn, ctx, record, twin)
                                      : node_sync_fail_sn(self, conn->id, &err, "resend");
    json_decref(record);
    return rc;
}

//  Parks inbound seq behind the twin's error, then tries the blocked chain
//  again (a later change may have fixed it).
static node_sync_rc_t s_park(node_sync_t *self, const node_conn_t *conn, node_sync_ctx_t *ctx,
                             uint64_t seq, const proto_sync_t *sync, const proto_buf_t *plain)
{
    if (node_state_begin(self->state))
        return node_sync_fatal(self, "park");
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
static node_sync_rc_t s_refused(node_sync_t *self, const node_conn_t *conn, node_sync_ctx_t *ctx,
                                uint64_t seq, const proto_sync_t *sync, const proto_buf_t *plain,
                                const node_twin_t *twin, const sn_error_t *err)
{
    char text[NODE_TEXT_MAX + 1], quoted[600];
    node_sync_sn_text(err, text, sizeof text);
    ts_log(TS_LOG_WARN, "sync refused by servicenow", "conn=%s remote=%s error=%s", conn->id,
           sync->number, ts_log_quote(quoted, sizeof quoted, text));
    if (node_state_begin(self->state))
        return node_sync_fatal(self, "refused");
    const node_twin_t *known = *twin->local_sys_id ? twin : NULL;
    int rc = node_sync_twin_error(self, conn->id, known, sync->sys_id, sync->number, seq, "local",
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
static node_sync_rc_t s_apply_sync(node_sync_t *self, const node_conn_t *conn, node_sync_ctx_t *ctx,
                                   uint64_t seq, const proto_sync_t *sync, const proto_buf_t *plain)
{
    node_error_t blocking;
    int blocked =
        node_state_error_for_twin(self->state, conn->id, sync->sys_id, "local", &blocking);
    if (blocked < 0)
        return node_sync_fatal(self, "apply");
    if (blocked == 0)
        return s_park(self, conn, ctx, seq, sync, plain);
    node_twin_t twin = {0};
    int found = s_find_twin(self, conn->id, sync, &twin);
    if (found < 0)
        return node_sync_fatal(self, "apply");
    node_sync_rc_t rc;
    if (found == 0 && !twin.under_sync) {
        char text[256];
        snprintf(text, sizeof text, "%s is no longer under sync on %s (unexalated)",
                 twin.local_number, self->instance);
        rc = node_state_begin(self->state)
                 ? node_sync_fatal(self, "apply")
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
        return node_sync_fatal(self, "intent");
    }
    if (found == 1 && !careful) {
        //  After a restore from an older backup the twin may exist without
        //  our record of it: look it up by correlation id before creating.
        int restored = node_state_conn_restored(self->state, conn->id);
        if (restored < 0) {
            node_twin_clear(&twin);
            return node_sync_fatal(self, "apply");
        }
        careful = restored == 1;
    }
    sn_error_t err;
    sn_error_reset(&err);
    sn_err_code_t code = s_write(self, conn, sync, careful, &twin, &err);
    if (code == SN_E_CANCELLED)
        rc = node_sync_fatal(self, err.message);
    else if (code != SN_OK && sn_err_scope(code) == SN_SCOPE_RECORD)
        rc = s_refused(self, conn, ctx, seq, sync, plain, &twin, &err);
    else if (code != SN_OK)
        rc = node_sync_fail_sn(self, conn->id, &err, "apply");
    else if (node_state_begin(self->state))
        rc = node_sync_fatal(self, "apply");
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

//  A message at or below the applied position: delivered again after a
//  reconnect (the same bytes as the one applied: nothing to do), or another
//  message under a sequence already used — the broker's state was restored
//  from an older backup, or the broker is not honest. That one is never
//  dropped silently: it is reported, not applied.
static node_sync_rc_t s_applied_before(node_sync_t *self, const node_conn_t *conn, uint64_t seq)
{
    uint8_t known[NODE_DIGEST_SIZE];
    int found = node_state_applied_get(self->state, conn->id, seq, known);
    if (found < 0)
        return node_sync_fatal(self, "apply");
    if (found == 0 && CRYPTO_memcmp(known, self->digest, NODE_DIGEST_SIZE) == 0)
        return NODE_SYNC_OK;
    return s_reject(self, conn->id, seq, "seq_reused",
                    found == 0
                        ? "delivered under a sequence already applied here, with other contents: "
                          "the broker's state was restored from an older backup, or the broker "
                          "is not honest; not applied (the record's next change carries it "
                          "whole again; check its comments)"
                        : "delivered under a sequence applied here too long ago to compare: "
                          "the broker's state was restored from an older backup, or the broker "
                          "is not honest; not applied");
}

//  --- rekeying (docs/protocol.md §8.4; the start is node_sync_rekey)

//  Queues the REKEY_ACK of generation with share kx, sealed in the
//  generation before it (the other side does not hold the new one yet),
//  inside the caller's transaction. Returns 0 or -1.
static int s_rekey_answer(node_sync_t *self, const node_conn_t *conn, node_sync_ctx_t *ctx,
                          uint32_t generation, const uint8_t kx[PROTO_KEY_SIZE])
{
    proto_payload_t ack;
    proto_payload_init(&ack, PROTO_REKEY_ACK);
    ack.rekey.generation = generation;
    memcpy(ack.rekey.kx, kx, PROTO_KEY_SIZE);
    uint64_t seq = 0;
    proto_error_t perr;
    if (proto_seal_use_generation(ctx->seal, generation - 1) != PROTO_OK)
        return -1;
    int rc = node_sync_queue(self, conn, ctx, &ack, &seq, &perr);
    if (proto_seal_use_generation(ctx->seal, generation) != PROTO_OK)
        return -1;
    return rc;
}

//  Makes the sealer of ctx hold generation's root and seal in it.
static int s_rekey_switch(node_sync_ctx_t *ctx, uint32_t generation,
                          const uint8_t root[PROTO_KEY_SIZE])
{
    if (proto_seal_add_generation(ctx->seal, generation, root) != PROTO_OK ||
        proto_seal_use_generation(ctx->seal, generation) != PROTO_OK)
        return -1;
    ctx->current = generation;
    ctx->has_previous = true;
    ctx->rekey_pending = false;
    ctx->rotated_at = (int64_t)time(NULL);
    return 0;
}

//  A REKEY from the other side, inside the caller's transaction: answer it
//  with a share of ours and seal in the new generation from now on. Returns
//  0 (also when it is ignored: stale, or crossing our own as the public
//  node), or -1.
static int s_rekey_in(node_sync_t *self, const node_conn_t *conn, node_sync_ctx_t *ctx,
                      const proto_rekey_t *r)
{
    node_rekey_gens_t gens;
    char err[512];
    if (node_sync_gens_load(self, conn->id, &gens, err, sizeof err)) {
        ts_log(TS_LOG_ERROR, "rekey failed", "conn=%s reason=\"%s\"", conn->id, err);
        return -1;
    }
    uint32_t g = r->generation;
    int rc = 0;
    if (g == gens.current + 1 && gens.pending == g && conn->role == PROTO_ROLE_PUBLIC) {
        ts_log(TS_LOG_INFO, "rekey crossed", "conn=%s generation=%" PRIu32 " kept=ours", conn->id,
               g);
    } else if (g == gens.current + 1) {
        uint8_t secret[PROTO_KEY_SIZE], share[PROTO_KEY_SIZE], root[PROTO_KEY_SIZE];
        rc = proto_kx_keypair(secret, share) != PROTO_OK ||
                     node_rekey_root(secret, r->kx, gens.roots[0].root, conn->id, g, r->kx, share,
                                     root)
                 ? -1
                 : 0;
        OPENSSL_cleanse(secret, sizeof secret);
        if (rc == 0) {
            //  Ours, if any, gives way (the public node's wins)
            node_rekey_advance(&gens, g, root, (int64_t)time(NULL));
            gens.answered = g;
            memcpy(gens.answered_kx, share, PROTO_KEY_SIZE);
            rc = node_sync_gens_save(self, conn->id, &gens, err, sizeof err) ||
                         s_rekey_switch(ctx, g, root) || s_rekey_answer(self, conn, ctx, g, share)
                     ? -1
                     : 0;
        }
        OPENSSL_cleanse(root, sizeof root);
        if (rc == 0)
            ts_log(TS_LOG_INFO, "rekey answered", "conn=%s generation=%" PRIu32, conn->id, g);
    } else if (g == gens.current && gens.answered == g) {
        //  Answered before a crash took the commit: the same share again
        rc = s_rekey_answer(self, conn, ctx, g, gens.answered_kx);
    } else {
        ts_log(TS_LOG_WARN, "rekey ignored", "conn=%s generation=%" PRIu32 " current=%" PRIu32,
               conn->id, g, gens.current);
    }
    if (rc)
        ts_log(TS_LOG_ERROR, "rekey failed", "conn=%s generation=%" PRIu32 " reason=\"%s\"",
               conn->id, g, err);
    node_rekey_wipe(&gens);
    return rc;
}

//  The REKEY_ACK of a rekey started here: the new generation is made.
//  Returns 0 (also when it is stale), or -1.
static int s_rekey_ack_in(node_sync_t *self, const node_conn_t *conn, node_sync_ctx_t *ctx,
                          const proto_rekey_t *r)
{
    node_rekey_gens_t gens;
    char err[512] = "crypto failure";
    if (node_sync_gens_load(self, conn->id, &gens, err, sizeof err))
        return -1;
    uint32_t g = r->generation;
    int rc = 0;
    if (gens.pending == g && gens.current + 1 == g) {
        uint8_t own[PROTO_KEY_SIZE], root[PROTO_KEY_SIZE];
        rc = proto_kx_public_key(gens.pending_key, own) != PROTO_OK ||
                     node_rekey_root(gens.pending_key, r->kx, gens.roots[0].root, conn->id, g, own,
                                     r->kx, root)
                 ? -1
                 : 0;
        if (rc == 0) {
            node_rekey_advance(&gens, g, root, (int64_t)time(NULL));
            rc = node_sync_gens_save(self, conn->id, &gens, err, sizeof err) ||
                         s_rekey_switch(ctx, g, root)
                     ? -1
                     : 0;
        }
        OPENSSL_cleanse(root, sizeof root);
        if (rc == 0)
            ts_log(TS_LOG_INFO, "rekey done", "conn=%s generation=%" PRIu32, conn->id, g);
        else
            ts_log(TS_LOG_ERROR, "rekey failed", "conn=%s generation=%" PRIu32 " reason=\"%s\"",
                   conn->id, g, err);
    } else {
        ts_log(TS_LOG_WARN, "rekey answer ignored",
               "conn=%s generation=%" PRIu32 " pending=%" PRIu32, conn->id, g, gens.pending);
    }
    node_rekey_wipe(&gens);
    return rc;
}

//  A payload sealed in the current generation came from the other side:
//  everything it sealed in the one before has arrived, so that one is wiped
//  (forward secrecy). Returns 0 or -1.
static int s_rekey_settled(node_sync_t *self, node_sync_ctx_t *ctx, const uint8_t *sealed,
                           size_t size)
{
    if (!ctx->has_previous || proto_seal_generation_of(sealed, size) != (int64_t)ctx->current)
        return 0;
    node_rekey_gens_t gens;
    char err[512];
    int rc = node_sync_gens_load(self, ctx->id, &gens, err, sizeof err);
    if (rc == 0 && node_rekey_drop_previous(&gens))
        rc = node_sync_gens_save(self, ctx->id, &gens, err, sizeof err);
    node_rekey_wipe(&gens);
    if (rc) {
        ts_log(TS_LOG_ERROR, "cannot wipe the old key generation", "conn=%s reason=\"%s\"", ctx->id,
               err);
        return -1;
    }
    proto_seal_forget_before(ctx->seal, ctx->current);
    ctx->has_previous = false;
    ts_log(TS_LOG_INFO, "old key generation wiped", "conn=%s generation=%" PRIu32, ctx->id,
           ctx->current);
    return 0;
}

node_sync_rc_t node_sync_apply(node_sync_t *self, const char *conn_id, uint64_t seq,
                               const uint8_t *sealed, size_t size)
{
    node_conn_t conn;
    int found = node_state_conn_get(self->state, conn_id, &conn);
    if (found)
        return found < 0 ? node_sync_fatal(self, "apply") : NODE_SYNC_OK; //  deleted: drop
    if (!SHA256(sealed, size, self->digest))
        return node_sync_fatal(self, "digest");
    if (seq <= conn.applied_in_seq)
        return s_applied_before(self, &conn, seq);
    if (conn.status != NODE_CONN_ACTIVE || seq > conn.applied_in_seq + 1)
        return NODE_SYNC_HOLD; //  paused, or strictly in order
    node_sync_ctx_t *ctx = node_sync_ctx(self, conn.id);
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
    if (s_rekey_settled(self, ctx, sealed, size)) {
        proto_buf_wipe(&plain);
        return node_sync_fatal(self, "rekey");
    }
    proto_payload_t payload;
    proto_error_t perr;
    node_sync_rc_t rc;
    if (proto_payload_decode(plain.data, plain.size, NULL, &payload, &perr) != PROTO_OK) {
        rc = s_reject(self, conn.id, seq, "invalid", proto_error_str(&perr));
    } else if (payload.type == PROTO_REKEY || payload.type == PROTO_REKEY_ACK) {
        rc = node_state_begin(self->state)
                 ? node_sync_fatal(self, "rekey")
                 : s_finish(self, conn.id, seq,
                            payload.type == PROTO_REKEY
                                ? s_rekey_in(self, &conn, ctx, &payload.rekey)
                                : s_rekey_ack_in(self, &conn, ctx, &payload.rekey));
    } else if (payload.type == PROTO_FILE_DELETE) {
        rc = node_sync_files_delete_in(self, &conn, &payload.file_delete);
        if (rc == NODE_SYNC_OK)
            rc = node_state_begin(self->state)
                     ? node_sync_fatal(self, "attachments")
                     : s_finish(self, conn.id, seq,
                                node_sync_files_deleted(self, &conn, &payload.file_delete));
    } else if (payload.type == PROTO_FILE_CHUNK || payload.type == PROTO_FILE_ACK ||
               payload.type == PROTO_FILE_RECEIPT) {
        rc = node_state_begin(self->state)
                 ? node_sync_fatal(self, "attachments")
                 : s_finish(self, conn.id, seq, node_sync_files_in(self, &conn, ctx, &payload));
    } else if (payload.type == PROTO_RECEIPT) {
        rc = node_state_begin(self->state)
                 ? node_sync_fatal(self, "receipt")
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
static node_sync_rc_t s_retry_twin(node_sync_t *self, const node_conn_t *conn, node_sync_ctx_t *ctx,
                                   const char *remote_sys_id, node_sync_report_t *report)
{
    node_error_t error;
    int has_error =
        node_state_error_for_twin(self->state, conn->id, remote_sys_id, "local", &error);
    if (has_error)
        return has_error < 0 ? node_sync_fatal(self, "retry") : NODE_SYNC_OK;
    s_chain_t chain = {0};
    if (node_state_blocked_each(self->state, conn->id, remote_sys_id, s_chain_add, &chain) ||
        chain.failed || chain.count == 0) {
        s_chain_clear(&chain);
        return chain.failed ? node_sync_fatal(self, "retry") : NODE_SYNC_OK;
    }
    proto_sync_t merged;
    proto_comment_t *comments = NULL;
    node_twin_t twin = {0};
    node_sync_rc_t rc = NODE_SYNC_OK;
    if (s_chain_merge(&chain, &merged, &comments) ||
        s_find_twin(self, conn->id, &merged, &twin) < 0)
        rc = node_sync_fatal(self, "retry");
    sn_error_t err;
    sn_error_reset(&err);
    sn_err_code_t code =
        rc == NODE_SYNC_OK ? s_write(self, conn, &merged, true, &twin, &err) : SN_E_CANCELLED;
    char text[NODE_TEXT_MAX + 1];
    if (rc != NODE_SYNC_OK) {
        //  already failed
    } else if (code == SN_E_CANCELLED) {
        rc = node_sync_fatal(self, err.message);
    } else if (code != SN_OK && sn_err_scope(code) == SN_SCOPE_RECORD) {
        if (node_state_error_failed_again(self->state, error.id,
                                          node_sync_sn_text(&err, text, sizeof text)) < 0)
            rc = node_sync_fatal(self, "retry");
    } else if (code != SN_OK) {
        rc = node_sync_fail_sn(self, conn->id, &err, "retry");
    } else if (node_state_begin(self->state)) {
        rc = node_sync_fatal(self, "retry");
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
            rc = node_sync_fatal(self, "retry");
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

//  Retries one error an admin asked for.
static node_sync_rc_t s_retry_error(node_sync_t *self, const node_error_t *error,
                                    node_sync_report_t *report)
{
    node_conn_t conn;
    int found = node_state_conn_get(self->state, error->conn, &conn);
    if (found)
        return found < 0 ? node_sync_fatal(self, "retry") : NODE_SYNC_OK;
    if (conn.status != NODE_CONN_ACTIVE)
        return NODE_SYNC_HOLD;
    node_sync_ctx_t *ctx = node_sync_ctx(self, conn.id);
    if (!ctx)
        return NODE_SYNC_HOLD;
    if (!strcmp(error->origin, "local"))
        return s_retry_twin(self, &conn, ctx, error->remote_sys_id, report);
    if (!strcmp(error->origin, "file"))
        return node_sync_files_retry(self, error) ? node_sync_fatal(self, "retry") : NODE_SYNC_OK;
    if (!strcmp(error->origin, "broker") && !strcmp(error->code, "restored") &&
        error->seq > conn.applied_in_seq) {
        //  The admin accepts the broker's word that the other side's
        //  messages up to error->seq were applied here before a restore
        ts_log(TS_LOG_WARN, "restored position accepted",
               "conn=%s applied_in_seq=%" PRIu64 " accepted=%" PRIu64, conn.id, conn.applied_in_seq,
               error->seq);
        return node_state_begin(self->state) ||
                       node_state_conn_set_applied(self->state, conn.id, error->seq) < 0 ||
                       node_state_error_remove(self->state, error->id) ||
                       node_state_commit(self->state)
                   ? node_sync_fatal(self, "retry")
                   : NODE_SYNC_OK;
    }
    if (strcmp(error->origin, "remote"))
        //  A payload that did not open cannot be retried: the admin has
        //  seen it, the line goes.
        return node_state_error_remove(self->state, error->id) ? node_sync_fatal(self, "retry")
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
        return node_sync_fatal(self, "retry");
    }
    sn_err_code_t code =
        sn_incident_get(self->sn, twin.local_sys_id, node_replica_read_fields, &record, &err);
    if (code != SN_OK)
        rc = node_sync_fail_sn(self, conn.id, &err, "retry");
    else
        rc = node_sync_force_send(self, &conn, ctx, record, &twin);
    json_decref(record);
    node_twin_clear(&twin);
    return rc;
}

node_sync_rc_t node_sync_retry(node_sync_t *self, node_sync_report_t *report)
{
    node_error_t *list = NULL;
    size_t count = 0;
    if (node_state_error_list(self->state, NULL, &list, &count))
        return node_sync_fatal(self, "retry");
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
