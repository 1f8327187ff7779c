/*  sn_user.h: lookups in sys_user, for the names behind journal entries.

    Journal rows and records name users by user_name (sys_created_by,
    sys_updated_by); the twin's comment prefix wants the person's name. */

#ifndef SN_USER_H
#define SN_USER_H

#include "sn_client.h"

//  The sys_user record whose user_name is user_name (fields as
//  sysparm_fields, NULL for sys_id,user_name,name), a new reference in
//  *record_p; SN_E_NOT_FOUND when there is none.
sn_err_code_t sn_user_find(sn_client_t *self, const char *user_name, const char *fields,
                           json_t **record_p, sn_error_t *err);

#endif
