/*  node_replica.h: the Basic-mode sync rules, as pure functions.

    A replica is the set of synced fields of one incident (node_fields.h):
    short_description, description, urgency, impact, state, and, only while
    state is 6 (Resolved) or 7 (Closed), close_code and close_notes so that the
    far side's data policy accepts the state. Work notes are never read.

    Per twin the engine keeps three field sets:
      local    what the local instance holds for the synced fields, as last
               polled, sent or written by us;
      previous the last replica received from the other side and applied;
      pending  field name -> seq of our latest SYNC that changed the field,
               for SYNCs the other side has not yet acknowledged (RECEIPT).

    Sending: a polled replica is sent when it differs from `local` (or a human
    wrote a new comment). A change we wrote ourselves leaves the replica equal
    to `local`, so it is never sent back: that is the loop prevention.

    Applying (node_replica_plan): only the fields the other side changed
    (incoming differs from `previous`) are written, never the whole replica,
    so a local change not yet polled is not overwritten by stale values.
    Concurrent changes: SYNCs of one twin cross when the other side built its
    SYNC before applying ours, which is exactly when our SYNC is still pending
    (RECEIPTs travel in order behind the SYNCs of the same direction). A field
    both sides changed is then decided for the public side: the public node
    keeps its value (it skips that field), the private node writes the public
    value. Fields only one side changed are taken from that side. Both ends
    reach the same values and neither sends again. docs/sync.md walks through
    the cases.
*/
#ifndef NODE_REPLICA_H
#define NODE_REPLICA_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "node_fields.h"
#include "proto_msg.h"

#define NODE_REPLICA_TABLE "incident"

//  The synced field names of Basic mode, NULL-terminated (close_code and
//  close_notes are not in it: they travel with a resolved or closed state).
extern const char *const node_replica_synced[];

//  sysparm_fields for reading incidents: the synced fields plus what the
//  engine needs (sys_id, number, sys_updated_on, sys_mod_count,
//  sys_created_by, correlation_id, close_code, close_notes).
extern const char node_replica_read_fields[];

//  True for state "6" (Resolved) and "7" (Closed).
bool node_replica_state_closed(const char *state);

//  The replica of an incident record (every value a string, sn_record.h).
//  Absent fields are read as "". Returns a set owned by the caller, or NULL
//  when out of memory.
node_fields_t *node_replica_extract(const json_t *record);

//  The fields to write on the local twin when a replica arrives (see the top
//  comment). incoming: the received replica; previous: the last replica
//  received and applied (NULL or empty when none: first SYNC, everything is
//  written); local: what we hold (NULL: unknown); pending: our unacknowledged
//  changes (NULL: none); role: our role. When the result sets a closed state,
//  close_code and close_notes from incoming come with it. Returns a set owned
//  by the caller (possibly empty: nothing to write), or NULL when out of
//  memory.
node_fields_t *node_replica_plan(const node_fields_t *incoming, const node_fields_t *previous,
                                 const node_fields_t *local, const node_fields_t *pending,
                                 proto_role_t role);

//  Records in pending (name -> decimal seq) every field whose value differs
//  between before and after (a field present in only one of them counts as
//  changed), with seq. Returns 0, or -1 when out of memory.
int node_replica_pending_add(node_fields_t *pending, const node_fields_t *before,
                             const node_fields_t *after, uint64_t seq);

//  The other side applied our SYNC seq (RECEIPT): forgets every pending
//  entry whose seq is <= seq and, when previous is not NULL, records in
//  previous that the other side now holds our value (from local) for each of
//  those fields. Without that, previous would keep the older value the other
//  side had before it took ours, and a later replica of theirs carrying our
//  value unchanged would read as their change (a crossed comment-only SYNC
//  then overwrote a newer local edit). Returns 0, or -1 when out of memory.
int node_replica_pending_ack(node_fields_t *pending, uint64_t seq, node_fields_t *previous,
                             const node_fields_t *local);

//  Text written on the twin for a comment that arrived: a first line naming
//  instance and author, then the text:
//      "[acme] alice wrote:\n<text>"
//  Returns a new string owned by the caller, or NULL when out of memory.
char *node_replica_comment_text(const char *instance, const char *author, const char *text);

//  correlation_display of a twin: "NUMBER@instance" (e.g.
//  "INC0010001@acme"). Returns a new string owned by the caller, or NULL.
char *node_replica_correlation_display(const char *number, const char *instance);

//  The body that creates a twin: every field of incoming, plus
//  correlation_id = source_sys_id and correlation_display. Returns a new
//  JSON object owned by the caller (json_decref), or NULL when out of memory.
json_t *node_replica_create_body(const node_fields_t *incoming, const char *source_sys_id,
                                 const char *source_number, const char *source_instance);

//  The body of a PATCH writing fields (a JSON object of strings), or NULL.
json_t *node_replica_update_body(const node_fields_t *fields);

#endif
