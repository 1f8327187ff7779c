/*  sn_incident.c: incident reads, writes and change polling on top of the
    generic Table API calls. See sn_incident.h for the contract. */

#include "sn_incident.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SN_INCIDENT "incident"

sn_err_code_t sn_incident_poll(sn_client_t *self, const sn_incident_poll_t *poll, sn_record_fn *fn,
                               void *arg, sn_poll_result_t *result, sn_error_t *err)
{
    assert(poll);
    sn_poll_t table_poll = {.table = SN_INCIDENT,
                            .time_field = "sys_updated_on",
                            .version_field = "sys_mod_count",
                            .filter = poll->trigger,
                            .fields = poll->fields,
                            .cursor = poll->cursor,
                            .lookback_s = poll->lookback_s,
                            .seen = poll->seen};
    return sn_table_poll(self, &table_poll, fn, arg, result, err);
}

sn_err_code_t sn_incident_poll_all(sn_client_t *self, const sn_incident_poll_t *poll,
                                   json_t **records_p, sn_poll_result_t *result, sn_error_t *err)
{
    assert(records_p);
    *records_p = json_array();
    if (!*records_p)
        return sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
    return sn_incident_poll(self, poll, sn_poll_collect, *records_p, result, err);
}

sn_err_code_t sn_incident_get(sn_client_t *self, const char *sys_id, const char *fields,
                              json_t **record_p, sn_error_t *err)
{
    return sn_table_get(self, SN_INCIDENT, sys_id, fields, record_p, err);
}

//  Incidents where field equals value, oldest first, at most limit of them.
static sn_err_code_t s_find(sn_client_t *self, const char *field, const char *value,
                            const char *fields, int limit, json_t **rows_p, sn_error_t *err)
{
    *rows_p = NULL;
    if (!sn_query_value_safe(value))
        return sn_error_set(err, SN_E_BAD_REQUEST, 0, "value cannot be queried",
                            "%s '%.64s' is empty or holds '^' or control characters", field,
                            value ? value : "");
    char *query = NULL;
    if (asprintf(&query, "%s=%s^ORDERBYsys_created_on^ORDERBYnumber^ORDERBYsys_id", field, value) <
        0)
        return sn_error_set(err, SN_E_BAD_REQUEST, 0, "out of memory", NULL);
    sn_list_params_t params = {.query = query, .fields = fields, .limit = limit};
    sn_err_code_t code = sn_table_list(self, SN_INCIDENT, &params, rows_p, NULL, err);
    free(query);
    return code;
}

sn_err_code_t sn_incident_get_by_number(sn_client_t *self, const char *number, const char *fields,
                                        json_t **record_p, sn_error_t *err)
{
    assert(record_p);
    *record_p = NULL;
    json_t *rows;
    sn_err_code_t code = s_find(self, "number", number, fields, 1, &rows, err);
    if (code != SN_OK)
        return code;
    json_t *first = json_array_get(rows, 0);
    if (first)
        *record_p = json_incref(first);
    else
        code = sn_error_set(err, SN_E_NOT_FOUND, 0, "No Record found",
                            "no incident with number '%s'", number);
    json_decref(rows);
    return code;
}

sn_err_code_t sn_incident_find_by_correlation(sn_client_t *self, const char *correlation_id,
                                              const char *fields, json_t **records_p,
                                              sn_error_t *err)
{
    assert(records_p);
    return s_find(self, "correlation_id", correlation_id, fields, 0, records_p, err);
}

sn_err_code_t sn_incident_create(sn_client_t *self, const json_t *fields, sn_created_t *created,
                                 json_t **record_p, sn_error_t *err)
{
    assert(created);
    memset(created, 0, sizeof *created);
    json_t *record = NULL;
    sn_err_code_t code = sn_table_insert(self, SN_INCIDENT, fields, &record, err);
    if (code == SN_OK && !sn_is_sys_id(sn_field(record, "sys_id")))
        code = sn_error_set(err, SN_E_BAD_RESPONSE, 201, "created record has no sys_id",
                            "POST /api/now/table/incident answered without a valid sys_id");
    if (code == SN_OK) {
        snprintf(created->sys_id, sizeof created->sys_id, "%s", sn_field(record, "sys_id"));
        snprintf(created->number, sizeof created->number, "%s", sn_field(record, "number"));
    }
    if (record_p && code == SN_OK)
        *record_p = record;
    else {
        if (record_p)
            *record_p = NULL;
        json_decref(record);
    }
    return code;
}

sn_err_code_t sn_incident_update(sn_client_t *self, const char *sys_id, const json_t *fields,
                                 json_t **record_p, sn_error_t *err)
{
    return sn_table_update(self, SN_INCIDENT, sys_id, fields, record_p, err);
}

sn_err_code_t sn_incident_add_comment(sn_client_t *self, const char *sys_id, const char *text,
                                      json_t **record_p, sn_error_t *err)
{
    assert(text);
    json_t *fields = json_pack("{ss}", "comments", text);
    if (!fields)
        return sn_error_set(err, SN_E_BAD_REQUEST, 0, "comment is not valid UTF-8", NULL);
    sn_err_code_t code = sn_table_update(self, SN_INCIDENT, sys_id, fields, record_p, err);
    json_decref(fields);
    return code;
}
