/*  sn_user.c: sys_user lookups by user_name. See sn_user.h. */

#include "sn_user.h"
#include "sn_query.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

sn_err_code_t sn_user_find(sn_client_t *self, const char *user_name, const char *fields,
                           json_t **record_p, sn_error_t *err)
{
    assert(self && record_p && err);
    *record_p = NULL;
    sn_error_reset(err);
    if (!sn_query_value_safe(user_name))
        return sn_error_set(err, SN_E_BAD_REQUEST, 0, "user name cannot be queried",
                            "'%.64s' is empty or holds '^' or control characters",
                            user_name ? user_name : "");
    char *query = NULL;
    if (asprintf(&query, "user_name=%s^ORDERBYsys_id", user_name) < 0)
        return sn_error_set(err, SN_E_BAD_REQUEST, 0, "out of memory", NULL);
    sn_list_params_t params = {
        .query = query, .fields = fields ? fields : "sys_id,user_name,name", .limit = 1};
    json_t *rows = NULL;
    sn_err_code_t code = sn_table_list(self, "sys_user", &params, &rows, NULL, err);
    free(query);
    json_t *first = json_array_get(rows, 0);
    if (code == SN_OK && first)
        *record_p = json_incref(first);
    else if (code == SN_OK)
        code = sn_error_set(err, SN_E_NOT_FOUND, 0, "No Record found", "no user '%s'", user_name);
    json_decref(rows);
    return code;
}
