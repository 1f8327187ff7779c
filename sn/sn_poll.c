/*  sn_poll.c: change polling over sn_pager and sn_seen. See sn_poll.h. */

#include "sn_poll.h"
#include "sn_pager.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

//  sysparm_fields with the key fields added (new string), or NULL for all
//  fields when fields is NULL. *oom set when out of memory.
static char *s_fields(const sn_poll_t *poll, bool *oom)
{
    *oom = false;
    if (!poll->fields)
        return NULL;
    const char *keys[3] = {"sys_id", poll->time_field, poll->version_field};
    char *fields = strdup(poll->fields);
    for (size_t i = 0; fields && i < 3; i++) {
        if (!keys[i])
            continue;
        //  Look for the key as a whole comma-separated item
        char *padded = NULL, *item = NULL;
        if (asprintf(&padded, ",%s,", fields) < 0 || asprintf(&item, ",%s,", keys[i]) < 0) {
            free(padded);
            free(fields);
            *oom = true;
            return NULL;
        }
        bool present = strstr(padded, item) != NULL;
        free(padded);
        free(item);
        char *longer = NULL;
        if (!present && asprintf(&longer, "%s%s%s", fields, *fields ? "," : "", keys[i]) >= 0) {
            free(fields);
            fields = longer;
        }
    }
    *oom = fields == NULL;
    return fields;
}

//  Hands the new rows of one page to fn, updating seen and the result.
static sn_err_code_t s_deliver(const sn_poll_t *poll, json_t *rows, sn_record_fn *fn, void *arg,
                               sn_poll_result_t *result, sn_error_t *err)
{
    size_t index;
    json_t *row;
    json_array_foreach(rows, index, row)
    {
        const char *id = sn_field(row, "sys_id");
        const char *version = poll->version_field ? sn_field(row, poll->version_field) : "";
        const char *stamp = sn_field(row, poll->time_field);
        result->rows++;
        if (!sn_seen_is_new(poll->seen, id, version))
            result->duplicates++;
        else {
            if (fn(row, arg) != 0)
                return sn_error_set(err, SN_E_CANCELLED, 0, "poll stopped by the caller",
                                    "at %s %s", poll->table, id);
            if (!sn_seen_add(poll->seen, id, version, stamp))
                return sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
            result->delivered++;
        }
        if (strcmp(stamp, result->cursor) > 0)
            snprintf(result->cursor, sizeof result->cursor, "%s", stamp);
    }
    return SN_OK;
}

//  The lower bound of the poll (cursor - look-back, "" for none).
static sn_err_code_t s_since(const sn_poll_t *poll, char since[SN_STAMP_SIZE], sn_error_t *err)
{
    since[0] = '\0';
    if (poll->lookback_s < 0)
        return sn_error_set(err, SN_E_BAD_REQUEST, 0, "negative look-back", "%d", poll->lookback_s);
    if (!poll->cursor || !*poll->cursor)
        return SN_OK;
    if (!sn_stamp_add(poll->cursor, -(long)poll->lookback_s, since))
        return sn_error_set(err, SN_E_BAD_REQUEST, 0, "invalid poll cursor",
                            "'%.40s' is not YYYY-MM-DD HH:MM:SS", poll->cursor);
    return SN_OK;
}

//  Bounds the walk at the instance's clock minus one second. The clock is the
//  Date of a one-row request made now, before the first page is queried, so
//  that every row stamped at or before the bound was written before that page
//  was read (the Date of the first page itself may be sent seconds after its
//  query ran). The node's clock stands in when the answer has no Date.
//  *empty is set when nothing at all is at or after the lower bound: the
//  pages would come back empty, and the walk is skipped. *instance_clock
//  says whether the bound is the instance's own clock.
static sn_err_code_t s_bound(sn_client_t *self, const sn_poll_t *poll, sn_pager_t *pager,
                             const char *fields, sn_poll_result_t *result, bool *empty,
                             bool *instance_clock, sn_error_t *err)
{
    bool oom;
    const char *query = sn_pager_query(pager, &oom);
    if (!query)
        return sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
    sn_list_params_t params = {.query = query, .fields = fields, .limit = 1};
    json_t *rows = NULL;
    result->pages++;
    sn_err_code_t code = sn_table_list(self, poll->table, &params, &rows, NULL, err);
    *empty = code == SN_OK && json_array_size(rows) == 0;
    json_decref(rows);
    if (code != SN_OK)
        return code;
    time_t now = sn_client_server_date(self);
    *instance_clock = now > 0;
    if (now <= 0)
        now = time(NULL);
    sn_stamp_from_time(now - 1, result->until);
    if (!sn_stamp_valid(result->until))
        return sn_error_set(err, SN_E_BAD_RESPONSE, 0, "the instance's clock is out of range",
                            NULL);
    sn_pager_bound(pager, result->until);
    return SN_OK;
}

sn_err_code_t sn_table_poll(sn_client_t *self, const sn_poll_t *poll, sn_record_fn *fn, void *arg,
                            sn_poll_result_t *result, sn_error_t *err)
{
    assert(self && poll && poll->table && poll->time_field && poll->seen && fn && result && err);
    memset(result, 0, sizeof *result);
    sn_error_reset(err);
    char since[SN_STAMP_SIZE];
    if (s_since(poll, since, err) != SN_OK)
        return err->code;
    snprintf(result->cursor, sizeof result->cursor, "%s", poll->cursor ? poll->cursor : "");
    //  Entries older than the window can no longer come back unchanged
    sn_seen_prune(poll->seen, since);
    bool oom;
    char *fields = s_fields(poll, &oom);
    sn_pager_t *pager = oom ? NULL : sn_pager_new(poll->filter, poll->time_field, since);
    if (!pager) {
        free(fields);
        return sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
    }
    //  A poll from a cursor continues a stream of changes and is bounded; one
    //  without a cursor reads everything there is (a first poll, a lookup)
    sn_err_code_t code = SN_OK;
    bool bounded = poll->cursor && *poll->cursor, empty = false, instance_clock = false;
    if (bounded)
        code = s_bound(self, poll, pager, fields, result, &empty, &instance_clock, err);
    const char *query = NULL;
    while (code == SN_OK && !empty && (query = sn_pager_query(pager, &oom)) != NULL) {
        sn_list_params_t params = {.query = query, .fields = fields};
        json_t *rows = NULL;
        result->pages++;
        code = sn_table_list(self, poll->table, &params, &rows, NULL, err);
        if (code == SN_OK)
            code = sn_pager_advance(pager, rows, err);
        if (code == SN_OK)
            code = s_deliver(poll, rows, fn, arg, result, err);
        json_decref(rows);
    }
    if (code == SN_OK && !empty && oom)
        code = sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
    //  Every row stamped up to the bound has been read: the stream continues
    //  from there, so that a quiet instance's window empties after the
    //  look-back instead of re-reading the last changes forever. Only the
    //  instance's clock may move the cursor: the node's own may run ahead.
    if (code == SN_OK && bounded && instance_clock && strcmp(result->until, result->cursor) > 0)
        snprintf(result->cursor, sizeof result->cursor, "%s", result->until);
    sn_pager_destroy(&pager);
    free(fields);
    return code;
}

int sn_poll_collect(json_t *row, void *arg)
{
    return json_array_append(arg, row);
}
