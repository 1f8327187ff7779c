/*  sn_pager.c: keyset paging state machine. See sn_pager.h for the walk. */

#include "sn_pager.h"
#include "sn_record.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    SN_PAGE_FIRST, //  time >= since
    SN_PAGE_SAME,  //  time = last time, sys_id > last id
    SN_PAGE_AFTER, //  time > last time
    SN_PAGE_DONE,  //  walk complete
} sn_page_phase_t;

struct sn_pager_t {
    char *filter;                  //  caller's filter, "" for none
    char *time_field;              //  sys_updated_on, sys_created_on
    char since[SN_STAMP_SIZE];     //  lower bound, "" for none
    sn_page_phase_t phase;         //  kind of the next query
    char last_time[SN_STAMP_SIZE]; //  key of the last row taken
    char last_id[33];              //  (its sys_id)
    char until[SN_STAMP_SIZE];     //  upper bound, "" for none
    char *query;                   //  last query built
};

sn_pager_t *sn_pager_new(const char *filter, const char *time_field, const char *since)
{
    assert(time_field && sn_query_value_safe(time_field));
    assert(!since || !*since || sn_stamp_valid(since));
    sn_pager_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->filter = strdup(filter ? filter : "");
    self->time_field = strdup(time_field);
    if (!self->filter || !self->time_field) {
        sn_pager_destroy(&self);
        return NULL;
    }
    snprintf(self->since, sizeof self->since, "%s", since ? since : "");
    self->phase = SN_PAGE_FIRST;
    return self;
}

void sn_pager_destroy(sn_pager_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    sn_pager_t *self = *self_p;
    free(self->filter);
    free(self->time_field);
    free(self->query);
    free(self);
    *self_p = NULL;
}

const char *sn_pager_query(sn_pager_t *self, bool *oom)
{
    assert(self && oom);
    *oom = false;
    free(self->query);
    self->query = NULL;
    if (self->phase == SN_PAGE_DONE)
        return NULL;
    const char *field = self->time_field;
    char *condition = NULL;
    int rc = 0;
    if (self->phase == SN_PAGE_FIRST && *self->since)
        rc = asprintf(&condition, "%s>=%s", field, self->since);
    else if (self->phase == SN_PAGE_SAME)
        rc = asprintf(&condition, "%s=%s^sys_id>%s", field, self->last_time, self->last_id);
    else if (self->phase == SN_PAGE_AFTER)
        rc = asprintf(&condition, "%s>%s", field, self->last_time);
    if (rc >= 0 && *self->until) {
        char *bounded = NULL;
        rc = asprintf(&bounded, "%s%s%s<=%s", condition ? condition : "", condition ? "^" : "",
                      field, self->until);
        free(condition);
        condition = rc < 0 ? NULL : bounded;
    }
    if (rc < 0) {
        *oom = true;
        return NULL;
    }
    char *filtered = sn_query_and(self->filter, condition);
    free(condition);
    if (!filtered || asprintf(&self->query, "%s%sORDERBY%s^ORDERBYsys_id", filtered,
                              *filtered ? "^" : "", field) < 0) {
        free(filtered);
        self->query = NULL;
        *oom = true;
        return NULL;
    }
    free(filtered);
    return self->query;
}

//  Refuses the page: marks the walk complete and fills err.
static sn_err_code_t s_refuse(sn_pager_t *self, sn_error_t *err, size_t index, const char *why)
{
    self->phase = SN_PAGE_DONE;
    return sn_error_set(err, SN_E_BAD_RESPONSE, 0, "ServiceNow returned rows out of key order",
                        "row %zu of the page %s (last key %s/%s); did the instance ignore "
                        "part of the query?",
                        index, why, self->last_time, self->last_id);
}

//  Checks that row's key (time, id) advances past the last key and obeys the
//  phase's condition, then makes it the last key.
static sn_err_code_t s_take_row(sn_pager_t *self, const json_t *row, size_t index,
                                sn_page_phase_t phase, const char *page_time, sn_error_t *err)
{
    const char *time = sn_field(row, self->time_field);
    const char *id = sn_field(row, "sys_id");
    if (!sn_stamp_valid(time) || !sn_is_sys_id(id))
        return s_refuse(self, err, index, "has no valid sys_id or time stamp");
    int order = strcmp(time, self->last_time);
    bool advances = !*self->last_time || order > 0 || (order == 0 && strcmp(id, self->last_id) > 0);
    if (!advances)
        return s_refuse(self, err, index, "does not come after the previous row");
    if (phase == SN_PAGE_FIRST && *self->since && strcmp(time, self->since) < 0)
        return s_refuse(self, err, index, "is older than the lower bound");
    if (phase == SN_PAGE_SAME && strcmp(time, page_time) != 0)
        return s_refuse(self, err, index, "is not in the second being finished");
    if (*self->until && strcmp(time, self->until) > 0)
        return s_refuse(self, err, index, "is newer than the upper bound");
    snprintf(self->last_time, sizeof self->last_time, "%s", time);
    snprintf(self->last_id, sizeof self->last_id, "%s", id);
    return SN_OK;
}

sn_err_code_t sn_pager_advance(sn_pager_t *self, const json_t *rows, sn_error_t *err)
{
    assert(self && err);
    assert(self->phase != SN_PAGE_DONE);
    if (!json_is_array(rows)) {
        self->phase = SN_PAGE_DONE;
        return sn_error_set(err, SN_E_BAD_RESPONSE, 0, "unexpected response shape",
                            "a page of rows is not an array");
    }
    sn_page_phase_t phase = self->phase;
    char page_time[SN_STAMP_SIZE];
    snprintf(page_time, sizeof page_time, "%s", self->last_time);
    size_t index;
    json_t *row;
    json_array_foreach(rows, index, row)
    {
        sn_err_code_t code = s_take_row(self, row, index, phase, page_time, err);
        if (code != SN_OK)
            return code;
    }
    if (json_array_size(rows) > 0)
        self->phase = SN_PAGE_SAME;
    else if (phase == SN_PAGE_SAME)
        self->phase = SN_PAGE_AFTER;
    else
        self->phase = SN_PAGE_DONE;
    return SN_OK;
}

void sn_pager_bound(sn_pager_t *self, const char *until)
{
    assert(self && sn_stamp_valid(until) && !*self->until && self->phase == SN_PAGE_FIRST);
    snprintf(self->until, sizeof self->until, "%s", until);
}

const char *sn_pager_last_time(const sn_pager_t *self)
{
    assert(self);
    return self->last_time;
}
