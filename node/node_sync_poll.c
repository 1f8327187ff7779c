/*  node_sync_poll.c: the outbound half of node_sync (see node_sync.h):
    changed incidents on this side's instance become SYNCs in the outbox.

    One poll reads the trigger's changes since the cursor (s_plan_trigger),
    plans what each changed twin sends (s_plan_records: a new twin, a field
    change, new human comments from the journal, s_plan_journal), and commits
    the outbox rows, the twins and the new cursor in one transaction
    (s_plan_commit). A crash before the commit re-reads from the old cursor;
    each twin's "last replica sent" absorbs what went out already.
*/
#include "node_sync_impl.h"

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

#define S_IDS_PER_QUERY 50 //  sys_ids in one sys_idIN query

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
    sn_err_code_t rc = node_sync_journal(self, ids, plan->count, journal_p, err);
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
static node_sync_rc_t s_plan_commit(node_sync_t *self, const node_conn_t *conn,
                                    node_sync_ctx_t *ctx, s_plan_t *plan, json_t *journal,
                                    const char *cursor, node_sync_report_t *report)
{
    if (node_state_begin(self->state))
        return node_sync_fatal(self, "poll");
    //  An admin may have paused the connection while ServiceNow answered:
    //  then nothing is recorded, and the next poll after activation reads
    //  the same changes from the same cursor.
    node_conn_t now;
    if (node_state_conn_get(self->state, conn->id, &now))
        return node_sync_fatal(self, "poll");
    if (now.status != NODE_CONN_ACTIVE && now.status != NODE_CONN_ERROR) {
        node_state_rollback(self->state);
        node_sync_ctx_reset_seen(ctx); //  what this poll read must come again
        return NODE_SYNC_OK;
    }
    for (size_t i = 0; i < plan->count; i++) {
        s_item_t *item = &plan->items[i];
        json_t *entries = json_object_get(journal, item->twin.local_sys_id);
        int rc = node_sync_send(self, conn, ctx, &item->twin, item->record, entries, item->is_new);
        if (rc < 0)
            return node_sync_fatal(self, "poll");
        if (report)
            report->sent += (size_t)rc;
    }
    if (node_state_conn_set_cursor(self->state, conn->id, cursor, ts_now_ms()) < 0 ||
        s_resume(self, conn) || node_state_commit(self->state))
        return node_sync_fatal(self, "poll");
    return NODE_SYNC_OK;
}

node_sync_rc_t node_sync_poll(node_sync_t *self, const char *conn_id, node_sync_report_t *report)
{
    node_conn_t conn;
    int found = node_state_conn_get(self->state, conn_id, &conn);
    if (found)
        return found < 0 ? node_sync_fatal(self, "poll") : NODE_SYNC_OK;
    if (conn.status != NODE_CONN_ACTIVE && conn.status != NODE_CONN_ERROR)
        return NODE_SYNC_OK;
    node_sync_ctx_t *ctx = node_sync_ctx(self, conn.id);
    if (!ctx)
        return NODE_SYNC_RETRY;
    //  The public node rotates the keys on its schedule (docs/protocol.md §8.4)
    if (conn.role == PROTO_ROLE_PUBLIC && conn.status == NODE_CONN_ACTIVE &&
        self->rekey_interval_s > 0 && !ctx->rekey_pending && ctx->rotated_at > 0 &&
        (int64_t)time(NULL) - ctx->rotated_at >= self->rekey_interval_s) {
        char text[NODE_TEXT_MAX + 1];
        if (node_sync_rekey(self, conn.id, text, sizeof text) == NODE_SYNC_FATAL)
            return NODE_SYNC_FATAL;
    }
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
        rc = node_sync_fatal(self, "poll");
    if (code == SN_OK && rc == NODE_SYNC_OK)
        code = s_plan_trigger(self, &conn, records, &plan, &err);
    if (code == SN_OK && rc == NODE_SYNC_OK)
        code = s_plan_journal(self, &plan, &journal, &err);
    if (code != SN_OK && rc == NODE_SYNC_OK) {
        node_sync_ctx_reset_seen(ctx);
        rc = node_sync_fail_sn(self, conn.id, &err, "poll");
    }
    if (code == SN_OK && rc == NODE_SYNC_OK)
        rc = s_plan_commit(self, &conn, ctx, &plan, journal, result.cursor, report);
    if (code == SN_OK && rc == NODE_SYNC_OK)
        rc = node_sync_files_poll(self, &conn, ctx);
    if (rc != NODE_SYNC_OK)
        node_sync_ctx_reset_seen(ctx);
    if (report)
        report->changed += json_array_size(records);
    s_plan_clear(&plan);
    json_decref(records);
    json_decref(journal);
    return rc;
}
