/*  sn_journal.h: the comments of incidents, read from sys_journal_field.

    Journal entries are rows of sys_journal_field: element_id (the incident's
    sys_id), name ("incident"), element ("comments" or "work_notes"), value
    (the text), sys_created_on, sys_created_by (user_name). Entries never
    change, so they are de-duplicated by sys_id alone. Reading comments through
    the incident's `comments` field is not used: raw reads return "", display
    reads are one localised string that cannot be split reliably.

    The journal-ACL trap: when ACLs hide sys_journal_field from the integration
    user, ServiceNow answers 200 with no rows, not an error, and comments would
    vanish silently. So whenever a journal poll returns no row at all, the
    client checks (sn_journal_check):
      1. sys_journal_field rows of those incidents at any time (limit 1, with
         the row count): one row proves the table readable; no row while
         X-Total-Count is above zero (ServiceNow counts before ACLs filter)
         proves the trap;
      2. otherwise the incidents' `comments` (and `work_notes` if asked) read
         with sysparm_display_value=true: an incident that shows journal
         entries there while sys_journal_field has none for it is the trap.
    The trap is reported as SN_E_JOURNAL_UNREADABLE, a connection-wide error.
    The check costs one or two requests, only on polls that found nothing. */

#ifndef SN_JOURNAL_H
#define SN_JOURNAL_H

#include "sn_client.h"
#include "sn_poll.h"

//  Parameters of a journal poll.
typedef struct {
    const char *const *incident_ids; //  sys_ids of the incidents to read
    size_t count;                    //  how many; 0 reads nothing
    const char *cursor;              //  sys_created_on of the last poll, NULL/"" for all
    int lookback_s;                  //  seconds re-read before the cursor, >= 0
    bool include_work_notes;         //  also work notes (never needed by basic mode)
    sn_seen_t *seen;                 //  the stream's de-duplication set
} sn_journal_poll_t;

//  New journal entries of the incidents, each once, ordered by
//  (sys_created_on, sys_id) within each group of up to 50 incidents, handed to
//  fn (sn_poll.h). Fields: sys_id, element_id, name, element, value,
//  sys_created_on, sys_created_by. Returns SN_E_JOURNAL_UNREADABLE for the
//  trap described above. When an error stops a poll over more than 50
//  incidents, result->cursor is the old cursor.
sn_err_code_t sn_journal_poll(sn_client_t *self, const sn_journal_poll_t *poll, sn_record_fn *fn,
                              void *arg, sn_poll_result_t *result, sn_error_t *err);

//  Same poll, collecting the entries into a new JSON array in *entries_p
//  (always set on return, possibly empty; owned by the caller).
sn_err_code_t sn_journal_poll_all(sn_client_t *self, const sn_journal_poll_t *poll,
                                  json_t **entries_p, sn_poll_result_t *result, sn_error_t *err);

//  Checks that the journal of these incidents (at most 50) is readable: SN_OK,
//  SN_E_JOURNAL_UNREADABLE, or the error of a request.
sn_err_code_t sn_journal_check(sn_client_t *self, const char *const *incident_ids, size_t count,
                               bool include_work_notes, sn_error_t *err);

#endif
