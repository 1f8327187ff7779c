/*  sn_poll.h: reads every row of a table changed since a cursor, once.

    The change-detection recipe (docs/servicenow.md), for any table:
      time_field >= cursor - look-back  (>=: stamps have one-second resolution,
                                         a strict > loses same-second changes;
                                         the look-back catches late commits)
      keyset paging by (time_field, sys_id) through sn_pager (no offsets, never
                                         stopping on a short page)
      de-duplication by (sys_id, version_field) through the caller's sn_seen
      time_field <= UNTIL               (UNTIL: the instance's clock, the Date
                                         header of a one-row request made
                                         first, minus one second)
    and hands each new row to a callback, in (time_field, sys_id) order. The new
    cursor is the greatest time_field read, and after a complete bounded poll
    UNTIL itself (when UNTIL is the instance's clock); the caller stores it
    (with its outbox) and passes it to the next poll.

    Why the upper bound: without it a poll under steady changes chases new rows
    page after page, and a row written into a second the walk has already
    passed, with a sys_id sorting below the walk's key, is never read by it; the
    next poll, starting at cursor - look-back, may begin after that second: the
    change is lost. With it, every row a poll can read was written before the
    poll's first page was queried, so the keyset walk over that fixed set is
    exact, and rows
    written meanwhile (stamped after UNTIL; the current second is left out
    because it is still being written) are read by the next poll, whose lower
    bound cursor - look-back is at most UNTIL. The node's clock stands in only
    when the instance sent no Date. The bound costs one one-row request per
    poll; when that request finds no row at all at or after cursor - look-back,
    the walk is skipped, so a quiet poll is that one request.

    Why the cursor moves up to UNTIL: a row stamped S becomes visible at most
    look-back seconds after S (the look-back's promise), so a row stamped at or
    before UNTIL that the poll did not see was committed after the probe, at
    instance time >= UNTIL + 1, hence S > UNTIL - look-back: the next poll's
    window still holds it. Keeping the greatest stamp read instead would make
    every idle poll re-read the look-back before the last change, forever. Only a poll from a cursor
   is bounded: one without a cursor reads everything there is at the time, as a lookup must
   (node_sync reads a twin's whole journal this way to find a comment it wrote a moment ago). */

#ifndef SN_POLL_H
#define SN_POLL_H

#include "sn_client.h"
#include "sn_query.h"
#include "sn_seen.h"

//  Called once per new row. row is borrowed for the call (json_incref to
//  keep it). Returns 0 to go on; anything else stops the poll with
//  SN_E_CANCELLED, and the row is not marked as seen.
typedef int(sn_record_fn)(json_t *row, void *arg);

//  One poll of one table.
typedef struct {
    const char *table;         //  "incident", "sys_journal_field"
    const char *time_field;    //  "sys_updated_on", "sys_created_on"
    const char *version_field; //  "sys_mod_count", or NULL for rows that never change
    const char *filter;        //  encoded query ANDed in (e.g. the trigger), or NULL
    const char *fields;        //  sysparm_fields or NULL for all; the key fields are added
    const char *cursor;        //  stamp of the last poll, NULL or "" for everything
    int lookback_s;            //  seconds re-read before the cursor, >= 0
    sn_seen_t *seen;           //  this stream's de-duplication set (required)
} sn_poll_t;

//  What a poll did.
typedef struct {
    char cursor[SN_STAMP_SIZE]; //  cursor for the next poll (the old one when nothing came)
    size_t rows;                //  rows ServiceNow returned, duplicates included
    size_t delivered;           //  rows handed to the callback
    size_t duplicates;          //  rows dropped as already seen
    size_t pages;               //  list requests made
    char until[SN_STAMP_SIZE];  //  upper bound of the rows read; "" when unbounded
} sn_poll_result_t;

//  Runs the poll, calling fn for each new row. Returns SN_OK when the walk is
//  complete: every row matching the poll with time_field in [cursor -
//  look-back, result->until] has been read (no upper bound without a cursor);
//  after a bounded poll whose bound is the instance's clock the cursor returned
//  is result->until (or the old one, when that was later); otherwise it is
//  never above result->until (unless the old cursor already was). On an error the rows delivered so
//  far stay delivered and seen, and result->cursor covers exactly them, so the caller may keep it.
//  An invalid cursor or lookback is SN_E_BAD_REQUEST.
sn_err_code_t sn_table_poll(sn_client_t *self, const sn_poll_t *poll, sn_record_fn *fn, void *arg,
                            sn_poll_result_t *result, sn_error_t *err);

//  A callback for sn_table_poll and friends that appends each row to the JSON
//  array arg.
int sn_poll_collect(json_t *row, void *arg);

#endif
