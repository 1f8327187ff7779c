/*  sn_incident.h: the incident operations of the sync engine.

    Records are jansson objects of string fields (sn_record.h); every function
    that returns one gives the caller a new reference. `fields` arguments are
    sysparm_fields lists ("sys_id,number,short_description"), NULL for every
    field. Values written are strings, as the Table API wants them.

    Idempotence: sn_incident_create and sn_incident_add_comment are not
    idempotent and are sent again only when the server surely did not act
    (sn_client.h). After SN_E_TIMEOUT or SN_E_UNAVAILABLE from them, look for
    the effect first: sn_incident_find_by_correlation for a create (write
    correlation_id in the create itself), the journal (sn_journal.h) for a
    comment. */

#ifndef SN_INCIDENT_H
#define SN_INCIDENT_H

#include "sn_client.h"
#include "sn_poll.h"

//  The keys of a record just created.
typedef struct {
    char sys_id[33]; //  its sys_id
    char number[41]; //  its number, e.g. INC0010001
} sn_created_t;

//  Parameters of an incident change poll.
typedef struct {
    const char *trigger; //  the connection's encoded query, NULL/"" for all incidents
    const char *fields;  //  fields to read, NULL for all (keys always added)
    const char *cursor;  //  sys_updated_on of the last poll, NULL/"" for everything
    int lookback_s;      //  seconds re-read before the cursor (>= 0; 60 is a sane value)
    sn_seen_t *seen;     //  the stream's de-duplication set (one per connection)
} sn_incident_poll_t;

//  Incidents with sys_updated_on >= cursor - lookback matching the trigger,
//  each new (sys_id, sys_mod_count) once, in (sys_updated_on, sys_id) order,
//  handed to fn (see sn_table_poll in sn_poll.h for the contract).
sn_err_code_t sn_incident_poll(sn_client_t *self, const sn_incident_poll_t *poll, sn_record_fn *fn,
                               void *arg, sn_poll_result_t *result, sn_error_t *err);

//  Same poll, collecting the records into a new JSON array in *records_p
//  (always set on return, possibly empty; owned by the caller).
sn_err_code_t sn_incident_poll_all(sn_client_t *self, const sn_incident_poll_t *poll,
                                   json_t **records_p, sn_poll_result_t *result, sn_error_t *err);

//  The incident with this sys_id; SN_E_NOT_FOUND when there is none.
sn_err_code_t sn_incident_get(sn_client_t *self, const char *sys_id, const char *fields,
                              json_t **record_p, sn_error_t *err);

//  The incident with this number (the oldest if several share it: numbers
//  are not unique by default);
//  SN_E_NOT_FOUND when there is none.
sn_err_code_t sn_incident_get_by_number(sn_client_t *self, const char *number, const char *fields,
                                        json_t **record_p, sn_error_t *err);

//  Every incident whose correlation_id is correlation_id (up to the page
//  size), oldest first (by sys_created_on, then number), as a new JSON array
//  in *records_p (empty when none: correlation_id is neither unique nor
//  indexed, so 0, 1 or more matches are all possible).
sn_err_code_t sn_incident_find_by_correlation(sn_client_t *self, const char *correlation_id,
                                              const char *fields, json_t **records_p,
                                              sn_error_t *err);

//  Creates an incident with fields (object of strings) and fills *created;
//  the whole new record goes to *record_p when record_p is not NULL.
sn_err_code_t sn_incident_create(sn_client_t *self, const json_t *fields, sn_created_t *created,
                                 json_t **record_p, sn_error_t *err);

//  PATCHes fields of the incident; the updated record goes to *record_p when
//  not NULL. A refused state change (resolve without close_code and
//  close_notes) is SN_E_DATA_POLICY with ServiceNow's message.
sn_err_code_t sn_incident_update(sn_client_t *self, const char *sys_id, const json_t *fields,
                                 json_t **record_p, sn_error_t *err);

//  Adds a public additional comment (PATCH {"comments": text}).
sn_err_code_t sn_incident_add_comment(sn_client_t *self, const char *sys_id, const char *text,
                                      json_t **record_p, sn_error_t *err);

#endif
