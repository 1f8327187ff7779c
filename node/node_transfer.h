/*  node_transfer.h: the node daemon's transfer thread, which moves file
    content between our instance and the spool (docs/sync.md, "Attachments").

    A file can take minutes to read from or write to ServiceNow; the worker
    must keep polling and applying meanwhile, so the long calls live on a
    thread of their own with its own ServiceNow client and database handle:

      download  a file of ours that is queued: read from our instance into
                its spool from where the spool ends (a kill -9 resumes, it
                does not start over), its SHA-256 checked against the
                instance's hash before the last chunk may leave
      upload    a file of theirs that arrived whole: its SHA-256 checked,
                then, unless an earlier attempt whose answer was lost already
                stored it (same name and hash, by the integration user, not
                claimed by another row), uploaded to its twin incident

    It never seals or queues a message: what it changes in a file row
    (downloaded, uploaded, refused, damaged) the worker's pump turns into
    chunks and receipts. Every change is read, changed and written inside one
    transaction, since the worker writes the same rows.
*/
#ifndef NODE_TRANSFER_H
#define NODE_TRANSFER_H

#include "node_state.h"
#include "sn_client.h"
#include "sn_error.h"

typedef struct node_transfer node_transfer_t;

typedef struct {
    node_state_t *state;   //  The thread's own database handle (not owned)
    sn_client_t *sn;       //  The thread's own ServiceNow client (not owned)
    const char *state_dir; //  Where the spool lives
    const char *sync_user; //  The integration user's user_name
    int64_t retry_ms;      //  Wait after a failed attempt (0: 5000), doubling to 5 min
} node_transfer_config_t;

//  A transfer thread (not started) on cfg, or NULL when out of memory. The
//  state and client must outlive it.
node_transfer_t *node_transfer_new(const node_transfer_config_t *cfg);

//  Stops the thread (it abandons a transfer under way: the next start goes
//  on from the spool), joins it, frees it, sets *self_p to NULL; accepts NULL.
void node_transfer_destroy(node_transfer_t **self_p);

//  Starts the thread. Returns 0, or -1 when it cannot be created.
int node_transfer_start(node_transfer_t *self);

//  One round on the calling thread, for tests: the next download or upload
//  due, if any. Returns 1 when it did one, 0 when none was due, -1 when the
//  state database failed.
int node_transfer_step(node_transfer_t *self);

//  The attachment of the twin incident local that an upload of f whose
//  answer was lost stored: same name and hash, created by sync_user, and
//  claimed by no other file row. Its sys_id into out. Returns 1 found, 0
//  not, -1 on a failure (ServiceNow: err set; the database: err untouched).
//  Blocks on ServiceNow.
int node_transfer_find_copy(node_state_t *state, sn_client_t *sn, const char *sync_user,
                            const node_file_t *f, const char *local, char *out, size_t size,
                            sn_error_t *err);

#endif
