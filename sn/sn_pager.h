/*  sn_pager.h: keyset paging over a ServiceNow table, in (time, sys_id) order.

    Offset paging skips or repeats rows while records change, and a page can be
    short (ACLs filter after sysparm_limit) while more rows remain. The pager
    never uses offsets and never ends on a short page. It walks the key
    (time_field, sys_id) upward in three kinds of query:

      first     FILTER ^ time>=SINCE                 ORDERBYtime^ORDERBYsys_id
      same      FILTER ^ time=LAST_T ^ sys_id>LAST_ID   (rest of LAST_T's second)
      after     FILTER ^ time>LAST_T                 ORDERBYtime^ORDERBYsys_id

    A non-empty page moves to `same` from its last row; an empty `same` page
    moves to `after`; an empty `first` or `after` page ends the walk. Every
    page strictly advances the key, so the walk ends, and many rows sharing one
    second (more than a page) are all read. A page whose rows do not advance the
    key (the server ignored part of the query) is refused as a bad response
    instead of looping. The pager does no I/O: the caller runs each query.

    The upper bound (sn_pager_bound): a walk chasing rows that are still being
    written never ends, and worse, rows written into a second it has already
    passed, with a lower sys_id, sort behind its key and are never read. So a
    poll bounds the walk at a stamp UNTIL taken from the instance's clock before
    the first page: every query adds time<=UNTIL, so the set walked is fixed. */

#ifndef SN_PAGER_H
#define SN_PAGER_H

#include "sn_error.h"
#include "sn_query.h"

#include <jansson.h>
#include <stdbool.h>

typedef struct sn_pager_t sn_pager_t;

//  A pager over rows matching filter (encoded query, NULL or "" for all) whose
//  time_field is at or after since (a stamp, or NULL/"" for no lower bound).
//  Returns NULL when out of memory. time_field must be a plain field name.
sn_pager_t *sn_pager_new(const char *filter, const char *time_field, const char *since);

//  Frees the pager and sets *self_p to NULL; accepts NULL and *self_p NULL.
void sn_pager_destroy(sn_pager_t **self_p);

//  The encoded query of the next page (owned by the pager, valid until the next
//  call on it), or NULL when the walk is complete. Sets *oom when a query could
//  not be built for lack of memory.
const char *sn_pager_query(sn_pager_t *self, bool *oom);

//  Takes the rows (a JSON array of records) that the last query returned.
//  Returns SN_OK, or SN_E_BAD_RESPONSE when a row lacks a valid sys_id or time
//  stamp, does not advance the key, or lies beyond the bound; the pager is then
//  complete.
sn_err_code_t sn_pager_advance(sn_pager_t *self, const json_t *rows, sn_error_t *err);

//  Bounds the walk at until (a valid stamp): every query reads only rows with
//  time <= until, and a row beyond it is refused. Call it once, before the
//  first query.
void sn_pager_bound(sn_pager_t *self, const char *until);

//  The time of the last row taken, "" before the first.
const char *sn_pager_last_time(const sn_pager_t *self);

#endif
