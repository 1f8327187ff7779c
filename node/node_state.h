/*  node_state.h: a node's durable state, one SQLite database per node.

    STATE_DIR/node.db, WAL mode, synchronous=FULL, schema version in table
    meta. It holds everything the node must not forget across kill -9:

      connections  id, name, role, status (pending, joining, active,
                   deactivated, error + its text), trigger, broker endpoint
                   and key, sequence counters (next outbound seq, highest
                   STORED, highest inbound applied), poll cursor
      twins        local incident <-> remote incident, under sync or not, the
                   field sets of node_replica.h (local, previous, pending),
                   last SYNC sent and acknowledged, last sys_mod_count seen
      comments     journal entries already sent (out) or already written (in)
      outbox       sealed payloads not yet STORED by the broker
      intents      inbound seqs whose apply started writing to ServiceNow
      blocked      inbound SYNCs held in order behind a twin's error
      errors       per-twin and per-connection errors shown by `errors list`
      requests     admin requests the daemon carries out (exalate, retry)

    Secrets (join tokens, invitation secrets, roots) are not in the
    database: they live in key files (node_keys.h). node.db, node.db-wal and
    node.db-shm are created 0600 whatever the umask (node_state_open makes
    the file before SQLite does; SQLite gives -wal and -shm its mode): they
    hold the connections' fingerprints and every synced incident.

    Concurrency: the daemon's threads and the admin commands each open their
    own node_state_t on the same file; WAL lets readers run beside the one
    writer, and a busy timeout absorbs short write contention. Writers that
    must be atomic together (an outbox row with the cursor it advances, an
    apply's result with its RECEIPT) bracket the calls with node_state_begin
    / node_state_commit. Targeted setters (set status, set trigger, ...) let
    an admin change one column without racing the daemon's other columns.

    Every call returns 0 on success and -1 on a database error, whose text
    node_state_error() gives; lookups return 1 when nothing matches. A handle
    is used by one thread at a time.
*/
#ifndef NODE_STATE_H
#define NODE_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "node_fields.h"
#include "proto_invite.h"
#include "proto_limits.h"
#include "proto_msg.h"

#define NODE_STATE_FILE     "node.db"
#define NODE_STATE_SCHEMA   1    //  Schema version written in meta
#define NODE_TEXT_MAX       1024 //  Error texts, triggers (bytes, NUL excluded)
#define NODE_CURSOR_SIZE    20   //  "YYYY-MM-DD HH:MM:SS" and NUL
#define NODE_BROKER_KEY_Z85 41   //  Z85 CURVE key and NUL

typedef struct node_state node_state_t;

typedef enum {
    NODE_CONN_PENDING = 0,     //  Public: initiated, waiting for the partner's accept
    NODE_CONN_JOINING = 1,     //  Private: accept in progress (JOIN sent or to send)
    NODE_CONN_ACTIVE = 2,      //  Syncing
    NODE_CONN_DEACTIVATED = 3, //  Paused by an admin; local changes wait
    NODE_CONN_ERROR = 4        //  Cannot proceed; error_text says why
} node_conn_status_t;

//  Attachments a side sends and takes (docs/sync.md, "Attachments").
typedef enum {
    NODE_ATTACH_DEFAULT = 0, //  As the node's configuration says (node.attachments)
    NODE_ATTACH_ALL = 1,     //  Every file up to the size cap
    NODE_ATTACH_NONE = 2     //  No file
} node_attach_mode_t;

typedef struct {
    char id[PROTO_MAX_ID + 1];                       //  Connection id
    char name[PROTO_MAX_NAME + 1];                   //  Name chosen by the admin
    char mode[16];                                   //  "basic"
    proto_role_t role;                               //  Our role in it
    node_conn_status_t status;                       //  See node_conn_status_t
    char error_text[NODE_TEXT_MAX + 1];              //  Why status is error ("" otherwise)
    char peer_description[PROTO_MAX_NAME + 1];       //  The other node, once known
    char peer_url[PROTO_MAX_URL + 1];                //  The other side's instance URL, if known
    char trigger[NODE_TEXT_MAX + 1];                 //  Encoded query starting syncs ("" none)
    char broker_endpoint[PROTO_MAX_URL + 1];         //  tcp://host:port
    char broker_key[NODE_BROKER_KEY_Z85];            //  Broker's CURVE public key, Z85
    int64_t expires;                                 //  Invitation expiry, Unix seconds
    bool invite_sent;                                //  Public: INVITE acknowledged
    int64_t joined_at;                               //  Unix seconds of JOINED, 0 before
    uint64_t next_out_seq;                           //  Next outbound seq to assign (>= 1)
    uint64_t stored_seq;                             //  Highest own seq the broker STORED
    uint64_t applied_in_seq;                         //  Highest inbound seq applied
    char poll_cursor[NODE_CURSOR_SIZE];              //  Highest sys_updated_on polled ("" none)
    int64_t last_poll_at;                            //  Unix ms of the last good poll, 0 never
    int64_t created_at;                              //  Unix seconds
    char fingerprint[PROTO_INVITE_FINGERPRINT_SIZE]; //  What the admins compare ("" unknown)
    char file_cursor[NODE_CURSOR_SIZE];              //  Highest sys_attachment.sys_created_on
                                                     //  polled ("" none)
    node_attach_mode_t attachments;                  //  What this side sends and takes
    uint64_t attachment_max;                         //  Largest file sent or taken (0: the
                                                     //  node's default)
} node_conn_t;

typedef struct {
    char conn[PROTO_MAX_ID + 1];             //  Connection id
    char local_sys_id[PROTO_MAX_SN_ID + 1];  //  Incident on our instance
    char local_number[PROTO_MAX_SN_ID + 1];  //  Its number
    char remote_sys_id[PROTO_MAX_SN_ID + 1]; //  Twin on the other side ("" until known)
    char remote_number[PROTO_MAX_SN_ID + 1]; //  Its number ("" until known)
    bool under_sync;                         //  false after unexalate
    bool peer_stopped;                       //  The other side unexalated it
    node_fields_t *local;                    //  Synced values our instance holds (owned)
    node_fields_t *previous;                 //  Last replica received and applied (owned)
    node_fields_t *pending;                  //  Our unacknowledged changes (owned)
    uint64_t last_sent_seq;                  //  Seq of our latest SYNC, 0 none
    uint64_t acked_seq;                      //  Highest of our SYNCs the other side applied
    char mod_count[24];                      //  sys_mod_count last polled or written
    int64_t last_sync_at;                    //  Unix seconds of the last send or apply
    int64_t created_at;                      //  Unix seconds
} node_twin_t;

typedef enum {
    NODE_COMMENT_OUT = 0, //  Local journal entry sent to the other side
    NODE_COMMENT_IN = 1   //  Remote journal entry written here
} node_comment_dir_t;

typedef struct {
    int64_t id;                              //  Error id shown to the admin
    char conn[PROTO_MAX_ID + 1];             //  Connection
    char local_sys_id[PROTO_MAX_SN_ID + 1];  //  Twin concerned ("" for connection errors)
    char local_number[PROTO_MAX_SN_ID + 1];  //  Its number, if known
    char remote_sys_id[PROTO_MAX_SN_ID + 1]; //  Remote record concerned
    char remote_number[PROTO_MAX_SN_ID + 1]; //  Its number, if known
    uint64_t seq;                            //  Inbound seq that failed (0 none)
    char origin[16];                         //  "local" (we failed to apply), "remote"
                                             //  (the other side refused ours), "seal"
    char code[32];                           //  Short code: "data_policy", "refused", ...
    char message[NODE_TEXT_MAX + 1];         //  ServiceNow's or our message
    int64_t created_at;                      //  Unix seconds
    int64_t updated_at;                      //  Unix seconds of the last attempt
    int retries;                             //  Attempts after the first
    bool retry_requested;                    //  An admin asked for `errors retry`
} node_error_t;

typedef enum {
    NODE_REQ_EXALATE = 1, //  Start syncing incident NUMBER (needs ServiceNow)
    NODE_REQ_REKEY = 2,   //  Start a rekey of the connection (docs/protocol.md §8.4)
} node_req_kind_t;

typedef enum {
    NODE_REQ_QUEUED = 0, //  Waiting for the daemon
    NODE_REQ_DONE = 1,   //  Carried out; result says what happened
    NODE_REQ_FAILED = 2  //  Refused; result says why
} node_req_status_t;

typedef struct {
    int64_t id;                     //  Request id
    char conn[PROTO_MAX_ID + 1];    //  Connection
    node_req_kind_t kind;           //  What to do
    char arg[PROTO_MAX_SN_ID + 1];  //  Incident number
    node_req_status_t status;       //  See node_req_status_t
    char result[NODE_TEXT_MAX + 1]; //  Outcome for the admin
    int64_t created_at;             //  Unix seconds
} node_request_t;

//  --- store

//  Opens (creating if needed, with mode 0700 for a new directory) dir and
//  dir/node.db, sets WAL, synchronous=FULL and a busy timeout, creates or
//  checks the schema. Returns a handle owned by the caller, or NULL with a
//  reason in err (also when the file has a newer schema version).
node_state_t *node_state_open(const char *dir, char *err, size_t errlen);

//  Closes the handle (rolling back an open transaction) and sets *self_p to
//  NULL; accepts NULL.
void node_state_destroy(node_state_t **self_p);

//  Text of the last failure ("" none). Owned by the handle.
const char *node_state_error(const node_state_t *self);

//  Starts a write transaction (BEGIN IMMEDIATE), commits it, rolls it back.
int node_state_begin(node_state_t *self);
int node_state_commit(node_state_t *self);
void node_state_rollback(node_state_t *self);

//  --- meta: small facts the daemon publishes for the admin commands
//  ("daemon_seen" heartbeat, "link_state", "link_reason")

//  Sets key to value. Returns 0 or -1.
int node_state_meta_set(node_state_t *self, const char *key, const char *value);

//  Copies the value of key into buf. Returns 0, 1 when absent, -1.
int node_state_meta_get(node_state_t *self, const char *key, char *buf, size_t size);

//  Marks conn as restored from an older copy of this state (the broker was
//  past its positions): from then on a twin is looked up by correlation id
//  before one is created. Returns 0 or -1.
int node_state_conn_mark_restored(node_state_t *self, const char *conn);

//  1 when conn was marked restored, 0 when not, -1 on a failure.
int node_state_conn_restored(node_state_t *self, const char *conn);

//  --- connections

const char *node_conn_status_name(node_conn_status_t status);

//  Inserts a new connection. Returns 0, 1 when the id or name exists, -1.
int node_state_conn_insert(node_state_t *self, const node_conn_t *conn);

//  Reads connection id (or, when no id matches, the connection named so)
//  into *out. Returns 0, 1 when none, -1.
int node_state_conn_get(node_state_t *self, const char *id_or_name, node_conn_t *out);

//  All connections by creation time, as an array owned by the caller (free).
int node_state_conn_list(node_state_t *self, node_conn_t **list_p, size_t *count_p);

//  Deletes a connection with its twins, comments, outbox, intents, blocked
//  messages, errors and requests (in one transaction unless one is open).
//  Returns 0, 1 when none, -1.
int node_state_conn_delete(node_state_t *self, const char *id);

//  Sets status and error text (NULL: ""). Returns 0, 1 when none, -1.
int node_state_conn_set_status(node_state_t *self, const char *id, node_conn_status_t status,
                               const char *error_text);
int node_state_conn_set_trigger(node_state_t *self, const char *id, const char *trigger);
int node_state_conn_set_peer(node_state_t *self, const char *id, const char *description,
                             int64_t joined_at);
int node_state_conn_set_invite_sent(node_state_t *self, const char *id, bool sent);
int node_state_conn_set_cursor(node_state_t *self, const char *id, const char *cursor,
                               int64_t last_poll_at);
int node_state_conn_set_stored(node_state_t *self, const char *id, uint64_t seq);
int node_state_conn_set_applied(node_state_t *self, const char *id, uint64_t seq);

#define NODE_DIGEST_SIZE  32   //  SHA-256 of a sealed inbound payload
#define NODE_APPLIED_KEPT 4096 //  Applied inbound digests kept per connection

//  Records that inbound seq of conn, whose sealed bytes have SHA-256 digest,
//  was applied; forgets digests more than NODE_APPLIED_KEPT below it (only
//  recent messages can be delivered again). 0 or -1.
int node_state_applied_put(node_state_t *self, const char *conn, uint64_t seq,
                           const uint8_t digest[NODE_DIGEST_SIZE]);

//  The digest recorded for applied inbound seq of conn: 0 found, 1 not
//  (never recorded, or forgotten), -1 on a failure.
int node_state_applied_get(node_state_t *self, const char *conn, uint64_t seq,
                           uint8_t digest[NODE_DIGEST_SIZE]);
//  Raises the next outbound sequence of id to at least next (never lowers it).
int node_state_conn_set_next_min(node_state_t *self, const char *id, uint64_t next);

//  Takes the next outbound seq of connection id into *seq and advances the
//  counter. Call inside the transaction that writes the outbox row.
int node_state_conn_take_seq(node_state_t *self, const char *id, uint64_t *seq);

//  --- twins

//  Frees a twin's field sets and zeroes it.
void node_twin_clear(node_twin_t *twin);

//  Reads the twin whose local (or remote) sys_id is sys_id. *out is cleared
//  first and owns its field sets (node_twin_clear). Returns 0, 1, -1.
int node_state_twin_by_local(node_state_t *self, const char *conn, const char *sys_id,
                             node_twin_t *out);
int node_state_twin_by_remote(node_state_t *self, const char *conn, const char *sys_id,
                              node_twin_t *out);

//  The twin whose local or remote number is number. Returns 0, 1, -1.
int node_state_twin_by_number(node_state_t *self, const char *conn, const char *number,
                              node_twin_t *out);

//  Writes a twin (insert, or update of every column but under_sync, which
//  only node_state_twin_set_sync changes once the row exists).
int node_state_twin_put(node_state_t *self, const node_twin_t *twin);

//  Sets under_sync (and clears peer_stopped when syncing again). 0, 1, -1.
int node_state_twin_set_sync(node_state_t *self, const char *conn, const char *local_sys_id,
                             bool under_sync);

//  Calls fn for every twin of conn in creation order; stops when fn returns
//  non-zero. The twin passed is owned by the iteration (copy what you keep).
int node_state_twin_each(node_state_t *self, const char *conn,
                         int (*fn)(const node_twin_t *twin, void *arg), void *arg);

//  Counts twins of conn: all, and under sync.
int node_state_twin_count(node_state_t *self, const char *conn, uint64_t *total, uint64_t *synced);

//  --- comments

//  *seen = whether journal entry journal_id was recorded in direction dir.
int node_state_comment_seen(node_state_t *self, const char *conn, node_comment_dir_t dir,
                            const char *journal_id, bool *seen);
int node_state_comment_add(node_state_t *self, const char *conn, node_comment_dir_t dir,
                           const char *journal_id, const char *local_sys_id);

//  --- outbox

//  Adds the sealed payload seq of conn; file says it carries file data (the
//  broker counts those bytes apart).
int node_state_outbox_add(node_state_t *self, const char *conn, uint64_t seq,
                          const uint8_t *payload, size_t size, bool file);

//  Calls fn for each outbox row of conn with seq > after, in seq order, at
//  most limit rows (0: all); stops when fn returns non-zero. The payload
//  lives until fn returns.
int node_state_outbox_each(node_state_t *self, const char *conn, uint64_t after, size_t limit,
                           int (*fn)(uint64_t seq, const uint8_t *payload, size_t size, bool file,
                                     void *arg),
                           void *arg);

//  Deletes the outbox row seq of conn (STORED); no row is not an error.
int node_state_outbox_remove(node_state_t *self, const char *conn, uint64_t seq);

//  Deletes every outbox row of conn with a seq <= seq (STORED is cumulative).
int node_state_outbox_remove_upto(node_state_t *self, const char *conn, uint64_t seq);
int node_state_outbox_count(node_state_t *self, const char *conn, uint64_t *count);

//  --- intents

int node_state_intent_add(node_state_t *self, const char *conn, uint64_t seq);
int node_state_intent_exists(node_state_t *self, const char *conn, uint64_t seq, bool *exists);
int node_state_intent_remove(node_state_t *self, const char *conn, uint64_t seq);

//  --- blocked inbound messages (per twin, in seq order)

//  Keeps the opened payload of inbound seq, which concerns the remote record
//  remote_sys_id, behind that twin's error.
int node_state_blocked_add(node_state_t *self, const char *conn, uint64_t seq,
                           const char *remote_sys_id, const uint8_t *plain, size_t size);

//  Calls fn for each blocked message of remote_sys_id (NULL: every one of
//  conn) in seq order; stops when fn returns non-zero.
int node_state_blocked_each(node_state_t *self, const char *conn, const char *remote_sys_id,
                            int (*fn)(uint64_t seq, const char *remote_sys_id, const uint8_t *plain,
                                      size_t size, void *arg),
                            void *arg);
int node_state_blocked_remove(node_state_t *self, const char *conn, uint64_t seq);
int node_state_blocked_count(node_state_t *self, const char *conn, const char *remote_sys_id,
                             uint64_t *count);

//  --- errors

//  Records a new error (id, created_at, updated_at are assigned; error->id is
//  set). When an error of the same connection, twin and origin exists (for
//  errors tied to no twin: same origin and seq), it is updated instead
//  (message, code, retries + 1) and its id returned: one line per blocked
//  twin, not one per attempt.
int node_state_error_add(node_state_t *self, node_error_t *error);

//  Reads error id. Returns 0, 1, -1.
int node_state_error_get(node_state_t *self, int64_t id, node_error_t *out);

//  The error of a twin (by local or remote sys_id) and origin. 0, 1, -1.
int node_state_error_for_twin(node_state_t *self, const char *conn, const char *sys_id,
                              const char *origin, node_error_t *out);

//  Errors of conn (NULL: all) by id, as an array owned by the caller (free).
int node_state_error_list(node_state_t *self, const char *conn, node_error_t **list_p,
                          size_t *count_p);

//  Marks error id for retry by the daemon. Returns 0, 1 when none, -1.
int node_state_error_request_retry(node_state_t *self, int64_t id);

//  Counts an attempt that failed again: new message, retries + 1, retry
//  request cleared.
int node_state_error_failed_again(node_state_t *self, int64_t id, const char *message);

//  Deletes error id (resolved). No row is not an error.
int node_state_error_remove(node_state_t *self, int64_t id);
int node_state_error_count(node_state_t *self, const char *conn, uint64_t *count);

//  --- files (attachments in transfer or transferred; docs/sync.md, "Attachments")

typedef enum {
    NODE_FILE_OUT = 0, //  A file of our instance, sent to the twin
    NODE_FILE_IN = 1   //  A file of the other instance, received here
} node_file_dir_t;

typedef enum {
    NODE_FILE_QUEUED = 0,    //  Out: found; the transfer thread reads it from our instance
    NODE_FILE_SENDING = 1,   //  Out: being read and sent in chunks
    NODE_FILE_SENT = 2,      //  Out: the twin has it (uploaded by the other node)
    NODE_FILE_RECEIVING = 3, //  In: chunks arriving into the spool file
    NODE_FILE_COMPLETE = 4,  //  In: whole and checked; waits for its upload here
    NODE_FILE_RECEIVED = 5,  //  In: uploaded to our instance (twin_file)
    NODE_FILE_REFUSED = 6,   //  ServiceNow refused the upload (out: theirs; in: ours)
    NODE_FILE_SKIPPED = 7,   //  Not sent or not taken: attachments none, size cap
    NODE_FILE_DELETED = 8,   //  Deleted at its source (in: our copy deleted too)
    NODE_FILE_FAILED = 9     //  In: arrived damaged; asked for again
} node_file_state_t;

#define NODE_FILE_NAME_MAX 1024 //  File name bytes (UTF-8)
#define NODE_FILE_TYPE_MAX 256  //  MIME type bytes

typedef struct {
    char conn[PROTO_MAX_ID + 1];               //  Connection
    node_file_dir_t dir;                       //  Ours going out, or theirs coming in
    char file_id[PROTO_MAX_SN_ID + 1];         //  The attachment's sys_id at its source
    char record[PROTO_MAX_SN_ID + 1];          //  Its incident's sys_id at its source
    char name[NODE_FILE_NAME_MAX + 1];         //  File name
    char content_type[NODE_FILE_TYPE_MAX + 1]; //  MIME type
    uint64_t size;                             //  Bytes
    char hash[65];                             //  SHA-256, lowercase hex
    node_file_state_t state;                   //  See node_file_state_t
    uint64_t done;                             //  Out: bytes queued in chunks; in: bytes spooled
    uint64_t acked;                            //  Out: bytes the receiver confirmed; in: bytes
                                               //  confirmed to the sender
    bool downloaded;                           //  Out: read whole from our instance and checked
    char twin_file[PROTO_MAX_SN_ID + 1];       //  The copy's sys_id (out: theirs; in: ours)
    char text[NODE_TEXT_MAX + 1];              //  Why refused, skipped or failed
    bool finished;                             //  Out: every chunk is queued
    bool notify;                               //  A message is owed to the other side: in, the
                                               //  FILE_RECEIPT of state; out, the FILE_DELETE
    int64_t created_at;                        //  Unix seconds
    int64_t updated_at;                        //  Unix seconds of the last change
} node_file_t;

const char *node_file_state_name(node_file_state_t state);

//  Inserts file unless a row of the same connection, direction and file id
//  exists. Returns 0 inserted, 1 existed, -1.
int node_state_file_add(node_state_t *self, const node_file_t *file);

//  Reads one file. Returns 0, 1 when none, -1.
int node_state_file_get(node_state_t *self, const char *conn, node_file_dir_t dir,
                        const char *file_id, node_file_t *out);

//  Writes every changing column of an existing file (state, done, acked,
//  downloaded, twin_file, text, finished, notify, and the name, type, size
//  and hash a first chunk brings). Two threads write files: read, change and
//  put inside one transaction (node_state_begin) so no write is lost.
//  Returns 0, 1 when none, -1.
int node_state_file_put(node_state_t *self, const node_file_t *file);

//  The files of conn (NULL: every connection) in direction dir whose state
//  is one of states (count n; 0: any), of record (NULL: any), oldest first,
//  at most limit (0: all), as an array owned by the caller (free).
int node_state_file_list(node_state_t *self, const char *conn, node_file_dir_t dir,
                         const node_file_state_t *states, size_t n, const char *record,
                         size_t limit, node_file_t **list_p, size_t *count_p);

//  The files of conn that owe the other side a message (notify), oldest
//  first, as an array owned by the caller (free).
int node_state_file_list_owed(node_state_t *self, const char *conn, node_file_t **list_p,
                              size_t *count_p);

//  Every file of conn attached to record on either side (out: record is our
//  incident; in: record is the twin's incident), oldest first.
int node_state_file_list_twin(node_state_t *self, const char *conn, const char *local_sys_id,
                              const char *remote_sys_id, node_file_t **list_p, size_t *count_p);

//  Sets the attachment poll cursor of conn.
int node_state_conn_set_file_cursor(node_state_t *self, const char *id, const char *cursor);

//  Sets what this side of conn sends and takes, and the size cap (0: the
//  node's default).
int node_state_conn_set_attachments(node_state_t *self, const char *id, node_attach_mode_t mode,
                                    uint64_t max_bytes);

//  Up to limit twins of conn under sync whose attachments were never
//  listed, their local sys_ids into ids (each PROTO_MAX_SN_ID + 1 bytes).
int node_state_twin_unscanned(node_state_t *self, const char *conn, size_t limit,
                              char (*ids)[PROTO_MAX_SN_ID + 1], size_t *count_p);

//  Marks the attachments of twin local_sys_id as listed.
int node_state_twin_set_scanned(node_state_t *self, const char *conn, const char *local_sys_id);

//  --- admin requests

//  Queues a request; request->id and created_at are set.
int node_state_request_add(node_state_t *self, node_request_t *request);
int node_state_request_get(node_state_t *self, int64_t id, node_request_t *out);

//  The oldest queued request of any connection. Returns 0, 1 when none, -1.
int node_state_request_next(node_state_t *self, node_request_t *out);
int node_state_request_finish(node_state_t *self, int64_t id, node_req_status_t status,
                              const char *result);

#endif
