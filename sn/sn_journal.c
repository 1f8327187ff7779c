/*  sn_journal.c: journal polling on sys_journal_field and detection of the
    journal-ACL trap. See sn_journal.h for the contract. */

#include "sn_journal.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SN_JOURNAL_TABLE  "sys_journal_field"
#define SN_JOURNAL_FIELDS "sys_id,element_id,name,element,value,sys_created_on,sys_created_by"
#define SN_JOURNAL_CHUNK  50 //  incidents per query: keeps the URL near 2 kB

//  "sys_idINa,b,c"-style list of ids[0..count) after prefix, as a new string;
//  NULL when out of memory.
static char *s_in_list(const char *prefix, const char *const *ids, size_t count)
{
    size_t len = strlen(prefix) + 1;
    for (size_t i = 0; i < count; i++)
        len += strlen(ids[i]) + 1;
    char *text = malloc(len);
    if (!text)
        return NULL;
    size_t used = (size_t)snprintf(text, len, "%s", prefix);
    for (size_t i = 0; i < count; i++)
        used += (size_t)snprintf(text + used, len - used, "%s%s", i ? "," : "", ids[i]);
    return text;
}

//  The filter of journal rows of these incidents (new string, or NULL).
static char *s_filter(const char *const *ids, size_t count, bool work_notes)
{
    char *in = s_in_list("element_idIN", ids, count);
    char *filter = NULL;
    if (in && asprintf(&filter, "name=incident^%s^%s", in,
                       work_notes ? "elementINcomments,work_notes" : "element=comments") < 0)
        filter = NULL;
    free(in);
    return filter;
}

static sn_err_code_t s_check_ids(const char *const *ids, size_t count, sn_error_t *err)
{
    for (size_t i = 0; i < count; i++)
        if (!sn_is_sys_id(ids[i]))
            return sn_error_set(err, SN_E_BAD_REQUEST, 0, "invalid incident sys_id",
                                "'%.64s' is not 32 letters and digits", ids[i] ? ids[i] : "");
    return SN_OK;
}

//  The error of the trap, naming the incident that gave it away (or the
//  hidden row count) and the fix.
static sn_err_code_t s_trap(sn_error_t *err, const char *evidence)
{
    return sn_error_set(err, SN_E_JOURNAL_UNREADABLE, 200,
                        "journal entries are hidden from the integration user",
                        "%s but sys_journal_field returns no rows: grant the user read access "
                        "to sys_journal_field (role audit_viewer or a read ACL on the table)",
                        evidence);
}

//  True when the incident's display value of a journal field shows entries.
static bool s_shows_entries(const json_t *incident, bool work_notes)
{
    return *sn_field(incident, "comments") || (work_notes && *sn_field(incident, "work_notes"));
}

//  Step 2 of the check: reads the incidents' journal display values and
//  reports the first one that shows entries.
static sn_err_code_t s_probe_display(sn_client_t *self, const char *const *ids, size_t count,
                                     bool work_notes, sn_error_t *err)
{
    char *query = s_in_list("sys_idIN", ids, count);
    if (!query)
        return sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
    sn_list_params_t params = {.query = query,
                               .fields = work_notes ? "sys_id,number,comments,work_notes"
                                                    : "sys_id,number,comments",
                               .limit = (int)count,
                               .display_value = true};
    json_t *incidents = NULL;
    sn_err_code_t code = sn_table_list(self, "incident", &params, &incidents, NULL, err);
    free(query);
    size_t index;
    json_t *incident;
    json_array_foreach(incidents, index, incident)
    {
        if (!s_shows_entries(incident, work_notes))
            continue;
        char evidence[96];
        snprintf(evidence, sizeof evidence, "incident %.40s shows journal entries",
                 *sn_field(incident, "number") ? sn_field(incident, "number")
                                               : sn_field(incident, "sys_id"));
        code = s_trap(err, evidence);
        break;
    }
    json_decref(incidents);
    return code;
}

sn_err_code_t sn_journal_check(sn_client_t *self, const char *const *ids, size_t count,
                               bool work_notes, sn_error_t *err)
{
    assert(self && (ids || count == 0) && count <= SN_JOURNAL_CHUNK && err);
    sn_error_reset(err);
    if (count == 0 || s_check_ids(ids, count, err) != SN_OK)
        return err->code;
    //  Step 1: any journal row of these incidents proves the table readable;
    //  a count above zero with no row proves the opposite
    char *filter = s_filter(ids, count, work_notes);
    if (!filter)
        return sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
    sn_list_params_t params = {.query = filter, .fields = "sys_id", .limit = 1};
    json_t *rows = NULL;
    long total = -1;
    sn_err_code_t code = sn_table_list(self, SN_JOURNAL_TABLE, &params, &rows, &total, err);
    free(filter);
    bool readable = json_array_size(rows) > 0;
    json_decref(rows);
    if (code != SN_OK || readable)
        return code;
    if (total > 0) {
        char evidence[96];
        snprintf(evidence, sizeof evidence, "ServiceNow counts %ld journal entries", total);
        return s_trap(err, evidence);
    }
    //  Step 2: the incidents' journal display values
    return s_probe_display(self, ids, count, work_notes, err);
}

//  Polls one group of at most SN_JOURNAL_CHUNK incidents.
static sn_err_code_t s_poll_chunk(sn_client_t *self, const sn_journal_poll_t *poll,
                                  const char *const *ids, size_t count, sn_record_fn *fn, void *arg,
                                  sn_poll_result_t *result, sn_error_t *err)
{
    char *filter = s_filter(ids, count, poll->include_work_notes);
    if (!filter)
        return sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
    sn_poll_t table_poll = {.table = SN_JOURNAL_TABLE,
                            .time_field = "sys_created_on",
                            .version_field = NULL,
                            .filter = filter,
                            .fields = SN_JOURNAL_FIELDS,
                            .cursor = poll->cursor,
                            .lookback_s = poll->lookback_s,
                            .seen = poll->seen};
    sn_err_code_t code = sn_table_poll(self, &table_poll, fn, arg, result, err);
    free(filter);
    if (code == SN_OK && result->rows == 0)
        code = sn_journal_check(self, ids, count, poll->include_work_notes, err);
    return code;
}

sn_err_code_t sn_journal_poll(sn_client_t *self, const sn_journal_poll_t *poll, sn_record_fn *fn,
                              void *arg, sn_poll_result_t *result, sn_error_t *err)
{
    assert(self && poll && (poll->incident_ids || poll->count == 0) && fn && result && err);
    memset(result, 0, sizeof *result);
    snprintf(result->cursor, sizeof result->cursor, "%s", poll->cursor ? poll->cursor : "");
    sn_error_reset(err);
    if (s_check_ids(poll->incident_ids, poll->count, err) != SN_OK)
        return err->code;
    sn_err_code_t code = SN_OK;
    char lowest_until[SN_STAMP_SIZE] = "";
    for (size_t start = 0; start < poll->count && code == SN_OK; start += SN_JOURNAL_CHUNK) {
        size_t count =
            poll->count - start < SN_JOURNAL_CHUNK ? poll->count - start : SN_JOURNAL_CHUNK;
        sn_poll_result_t part;
        code = s_poll_chunk(self, poll, poll->incident_ids + start, count, fn, arg, &part, err);
        result->rows += part.rows;
        result->delivered += part.delivered;
        result->duplicates += part.duplicates;
        result->pages += part.pages;
        if (strcmp(part.cursor, result->cursor) > 0)
            snprintf(result->cursor, sizeof result->cursor, "%s", part.cursor);
        if (*part.until && (!*lowest_until || strcmp(part.until, lowest_until) < 0))
            snprintf(lowest_until, sizeof lowest_until, "%s", part.until);
    }
    //  Each group is bounded when it starts, so a later group reads further than
    //  an earlier one: only up to the lowest bound has every group been read.
    //  A cursor past it would skip entries an earlier group could not yet see.
    if (*lowest_until) {
        snprintf(result->until, sizeof result->until, "%s", lowest_until);
        if (strcmp(result->cursor, lowest_until) > 0)
            snprintf(result->cursor, sizeof result->cursor, "%s", lowest_until);
    }
    //  With several groups, a failed one may lie behind the others' progress
    if (code != SN_OK && poll->count > SN_JOURNAL_CHUNK)
        snprintf(result->cursor, sizeof result->cursor, "%s", poll->cursor ? poll->cursor : "");
    return code;
}

sn_err_code_t sn_journal_poll_all(sn_client_t *self, const sn_journal_poll_t *poll,
                                  json_t **entries_p, sn_poll_result_t *result, sn_error_t *err)
{
    assert(entries_p);
    *entries_p = json_array();
    if (!*entries_p)
        return sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
    return sn_journal_poll(self, poll, sn_poll_collect, *entries_p, result, err);
}
