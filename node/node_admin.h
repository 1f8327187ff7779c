/*  node_admin.h: the admin operations both nodes share, as functions that
    return data.

    Every common admin command of twinsync-public and twinsync-private is one
    of these plus printing (node_cli.h); a web console can call the same
    functions and show the same data. Nothing here prints or exits: each
    function returns 0, or -1 with one line in err (what failed, the
    connection or error concerned, what to do), and fills a result the
    caller owns.

    The operations work on the node's state database while the daemon runs:
    the handle opened here is the admin's own (WAL lets it read and write
    beside the daemon's). What needs ServiceNow (starting the sync of an
    incident, retrying an error) is queued as a request that the daemon's
    worker carries out; the operation waits for the answer at most wait_ms
    (polling the database, so it may block that long) and then says whether
    it was done or is still queued. What the public and the private node do
    only (initiate, accept) lives in public-node/ and private-node/ and uses
    node_admin_state for the rest.
*/
#ifndef NODE_ADMIN_H
#define NODE_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "node_config.h"
#include "node_state.h"

typedef struct node_admin node_admin_t;

//  A connection with its counts, as list, show and status give it.
typedef struct {
    node_conn_t conn;    //  As stored
    uint64_t twins;      //  Twins known
    uint64_t under_sync; //  Twins still under sync
    uint64_t outbox;     //  Messages not yet STORED by the broker
    uint64_t errors;     //  Errors errors list shows
    uint64_t blocked;    //  Inbound messages parked behind twin errors
} node_admin_conn_t;

//  The node as status shows it.
typedef struct {
    bool daemon_running;      //  The daemon's heartbeat in the database is fresh
    char link[32];            //  Broker link: ready, hello, down ("down" while no daemon runs)
    char link_reason[256];    //  Why the link is down, "" none
    node_admin_conn_t *conns; //  Every connection (owned; node_admin_status_clear)
    size_t count;             //  Entries in conns
} node_admin_status_t;

//  A twin as twins lists it.
typedef struct {
    char local_number[PROTO_MAX_SN_ID + 1];  //  Incident here
    char local_sys_id[PROTO_MAX_SN_ID + 1];  //  Its sys_id
    char remote_number[PROTO_MAX_SN_ID + 1]; //  Its twin, "" until known
    char remote_sys_id[PROTO_MAX_SN_ID + 1]; //  The twin's sys_id, "" until known
    int64_t last_sync_at;                    //  Unix seconds of the last send or apply, 0 never
    const char *state;                       //  synced, pending, error, unexalated, stopped-by-peer
    char replica[17];                        //  Hash of the values our instance holds
} node_admin_twin_t;

//  What became of a sync start.
typedef struct {
    node_conn_t conn;                 //  The connection
    char number[PROTO_MAX_SN_ID + 1]; //  The incident
    bool done;                        //  The daemon did it; false: still queued
    bool daemon_running;              //  When queued: whether a daemon runs at all
    char result[NODE_TEXT_MAX + 1];   //  The daemon's answer ("" while queued)
} node_admin_sync_t;

typedef enum {
    NODE_ADMIN_RESOLVED = 0,     //  The twin is in sync again
    NODE_ADMIN_SENT_AGAIN = 1,   //  A remote error: our replica was sent again
    NODE_ADMIN_FAILED_AGAIN = 2, //  Tried, and failed again (message says why)
    NODE_ADMIN_RETRY_QUEUED = 3  //  Not tried yet (daemon busy, or not running)
} node_admin_retry_outcome_t;

//  What became of an error retry.
typedef struct {
    int64_t id;                         //  The error
    node_admin_retry_outcome_t outcome; //  See node_admin_retry_outcome_t
    bool daemon_running;                //  When queued: whether a daemon runs at all
    char message[NODE_TEXT_MAX + 1];    //  The error's message after the attempt
} node_admin_retry_t;

//  Opens the state of cfg->state_dir (creating it on first use). cfg must
//  outlive the result. Returns the handle owned by the caller, or NULL with
//  a reason in err ("missing key node.state_dir" when it is not set).
node_admin_t *node_admin_open(const node_config_t *cfg, char *err, size_t errlen);

//  Closes the handle and sets *self_p to NULL; accepts NULL or a pointer to NULL.
void node_admin_destroy(node_admin_t **self_p);

//  The state handle and the configuration, for the operations of one role
//  (public-node/, private-node/). Lent: valid as long as self.
node_state_t *node_admin_state(node_admin_t *self);
const node_config_t *node_admin_config(const node_admin_t *self);

//  True when the daemon published a heartbeat in the last seconds.
bool node_admin_daemon_running(node_admin_t *self);

//  The daemon, its broker link and every connection with its counts.
//  Returns 0 (free with node_admin_status_clear) or -1 with err.
int node_admin_status(node_admin_t *self, node_admin_status_t *out, char *err, size_t errlen);

//  Frees what node_admin_status filled; safe twice.
void node_admin_status_clear(node_admin_status_t *status);

//  Every connection with its counts, by creation. *list_p is owned by the
//  caller (free). Returns 0 or -1 with err.
int node_admin_conn_list(node_admin_t *self, node_admin_conn_t **list_p, size_t *count_p, char *err,
                         size_t errlen);

//  The connection whose id (or name) is which, with its counts. Returns 0,
//  or -1 with err ("no connection named X", or a database failure).
int node_admin_conn_get(node_admin_t *self, const char *which, node_admin_conn_t *out, char *err,
                        size_t errlen);

//  Pauses a connection (from active or error) / resumes it (from
//  deactivated or error). *out is the connection with its new status.
//  Returns 0, or -1 with err (unknown, or in another status).
int node_admin_conn_deactivate(node_admin_t *self, const char *which, node_conn_t *out, char *err,
                               size_t errlen);
int node_admin_conn_activate(node_admin_t *self, const char *which, node_conn_t *out, char *err,
                             size_t errlen);

//  Forgets a connection: its twins, queues, errors and key file (ServiceNow
//  data stays; the other side keeps its copy). *out is the connection as it
//  was. Returns 0 or -1 with err.
int node_admin_conn_delete(node_admin_t *self, const char *which, node_conn_t *out, char *err,
                           size_t errlen);

//  True when trigger can be stored: one line of at most NODE_TEXT_MAX bytes.
bool node_admin_trigger_ok(const char *trigger);

//  Sets this side's trigger of a connection ("" removes it). *out is the
//  connection after the change. Returns 0 or -1 with err.
int node_admin_trigger_set(node_admin_t *self, const char *which, const char *trigger,
                           node_conn_t *out, char *err, size_t errlen);

//  Waits (at most wait_ms) until conn's status leaves from or, with invite,
//  until its invitation was registered; re-reads *conn as it goes.
void node_admin_wait_conn(node_admin_t *self, node_conn_t *conn, node_conn_status_t from,
                          bool invite, long wait_ms);

//  Starts syncing incident number on connection which (NULL: the node's
//  only connection) and waits at most wait_ms for the daemon. Returns 0 with
//  out->done telling whether the daemon has done it, or -1 with err (no such
//  connection, the daemon refused it: "INC... not found").
int node_admin_sync_start(node_admin_t *self, const char *which, const char *number, long wait_ms,
                          node_admin_sync_t *out, char *err, size_t errlen);

//  Starts a rekey of connection which (NULL: the only one; it must be
//  active) and waits at most wait_ms for the daemon to send its REKEY
//  (docs/protocol.md §8.4; the other side completes it). Returns 0 with
//  out->done telling whether the daemon has started it, or -1 with err.
int node_admin_conn_rekey(node_admin_t *self, const char *which, long wait_ms,
                          node_admin_sync_t *out, char *err, size_t errlen);

//  Stops syncing the twin whose local or remote number is number on
//  connection which (NULL: the only one); both incidents keep their data.
//  *conn and *twin describe what was stopped. Returns 0 or -1 with err.
int node_admin_sync_stop(node_admin_t *self, const char *which, const char *number,
                         node_conn_t *conn, node_admin_twin_t *twin, char *err, size_t errlen);

//  The twins of a connection in creation order; *list_p is owned by the
//  caller (free). Returns 0 or -1 with err.
int node_admin_twins(node_admin_t *self, const char *which, node_conn_t *conn,
                     node_admin_twin_t **list_p, size_t *count_p, char *err, size_t errlen);

//  The errors of connection which (NULL: of every connection) by id;
//  *list_p is owned by the caller (free). Returns 0 or -1 with err.
int node_admin_errors(node_admin_t *self, const char *which, node_error_t **list_p, size_t *count_p,
                      char *err, size_t errlen);

//  Asks the daemon to retry error id now and waits at most wait_ms for the
//  attempt. Returns 0 with the outcome in *out, or -1 with err (no such
//  error, a database failure).
int node_admin_error_retry(node_admin_t *self, int64_t id, long wait_ms, node_admin_retry_t *out,
                           char *err, size_t errlen);

//  The files of the twin whose local or remote number is number on
//  connection which (NULL: the only one), both directions, oldest first;
//  *list_p is owned by the caller (free). *conn and *twin describe the twin.
//  Returns 0 or -1 with err (no such connection or twin, a database failure).
int node_admin_attachments(node_admin_t *self, const char *which, const char *number,
                           node_conn_t *conn, node_admin_twin_t *twin, node_file_t **list_p,
                           size_t *count_p, char *err, size_t errlen);

//  Sets what this side of connection which sends and takes: mode "all",
//  "none" or "default" (the node's node.attachments), and max_text, the size
//  cap ("" or "default": node.attachment_max_bytes; else bytes with an
//  optional KiB, MiB or GiB, at most 1 GiB). *out is the connection after.
//  Returns 0 or -1 with err (a bad mode or size, no such connection).
int node_admin_attachments_set(node_admin_t *self, const char *which, const char *mode,
                               const char *max_text, node_conn_t *out, char *err, size_t errlen);

//  This node's CURVE public key (Z85, 40 characters and NUL), made on first
//  use in cfg's state directory. Needs no open state. Returns 0 or -1 with err.
int node_admin_key(const node_config_t *cfg, char z85[41], char *err, size_t errlen);

#endif
