/*  node_sync_impl.h: what the three parts of node_sync share, inside node/.

    node_sync.c holds the object, the per-connection memory, the failure
    rules, reading comments and sending one SYNC (used by every part), and
    the admin requests; node_sync_poll.c the outbound half (changed incidents
    -> SYNCs); node_sync_apply.c the inbound half (payloads -> ServiceNow,
    receipts, retries). Not installed, not for other modules.
*/
#ifndef NODE_SYNC_IMPL_H
#define NODE_SYNC_IMPL_H

#include <stdint.h>

#include "node_sync.h"
#include "proto_seal.h"
#include "proto_sync.h"
#include "sn_client.h"
#include "sn_seen.h"
#include "node_rekey.h"

typedef struct {
    char id[PROTO_MAX_ID + 1]; //  Connection id
    proto_seal_t *seal;        //  Sealer from the key files
    sn_seen_t *seen;           //  Poll de-duplication set
    uint32_t current;          //  Key generation sealed in
    bool has_previous;         //  The one before is still held (node_rekey.h)
    bool rekey_pending;        //  A rekey started here awaits its REKEY_ACK
    int64_t rotated_at;        //  Unix seconds current came into use
    int64_t files_scan_at;     //  Monotonic ms of the next scan for deleted attachments
} node_sync_ctx_t;

struct node_sync {
    node_state_t *state;              //  Not owned
    sn_client_t *sn;                  //  Not owned
    char *state_dir;                  //  Owned copy
    char *instance;                   //  Owned copy
    char *sync_user;                  //  Owned copy
    int lookback_s;                   //  Poll look-back
    int64_t rekey_interval_s;         //  The public node rekeys this often (0: never)
    bool no_padding;                  //  Payloads sealed without padding
    bool attachments_none;            //  node.attachments = none
    uint64_t attachment_max;          //  node.attachment_max_bytes
    int64_t attachment_scan_ms;       //  Between scans for deleted attachments
    node_sync_ctx_t *ctx;             //  Per-connection memory, owned
    size_t ctx_count;                 //  Entries in ctx
    uint8_t digest[NODE_DIGEST_SIZE]; //  SHA-256 of the inbound payload being applied
};

int64_t node_sync_now_ms(void);

//  "message (detail)" of a ServiceNow error, into buf.
const char *node_sync_sn_text(const sn_error_t *err, char *buf, size_t size);

//  Handles a ServiceNow failure that is not tied to one record: transient
//  ones are retried later, connection-wide ones put conn in status error.
node_sync_rc_t node_sync_fail_sn(node_sync_t *self, const char *conn, const sn_error_t *err,
                                 const char *during);

//  Logs a state database failure and returns FATAL.
node_sync_rc_t node_sync_fatal(node_sync_t *self, const char *during);

//  The memory of connection conn, loading its key file the first time.
//  NULL when the key file is missing or unreadable (logged).
node_sync_ctx_t *node_sync_ctx(node_sync_t *self, const char *conn);

//  Forgets what the poll of ctx has seen: after a failed poll, rows handed
//  over but not recorded must come again.
void node_sync_ctx_reset_seen(node_sync_ctx_t *ctx);

//  The journal entries ("comments" only) of incidents ids, as a JSON object
//  sys_id -> array of entries in creation order, in *by_incident_p (owned by
//  the caller). Returns SN_OK or the client's error.
sn_err_code_t node_sync_journal(node_sync_t *self, const char *const *ids, size_t count,
                                json_t **by_incident_p, sn_error_t *err);

//  Encodes, seals and queues payload as the next message of conn. Call
//  inside a transaction. Returns 0 with *seq set, 1 when the payload cannot
//  be encoded (err says why), -1 on a database failure.
int node_sync_queue(node_sync_t *self, const node_conn_t *conn, node_sync_ctx_t *ctx,
                    const proto_payload_t *payload, uint64_t *seq, proto_error_t *err);

//  Records a per-twin error of ours (inside the caller's transaction).
int node_sync_twin_error(node_sync_t *self, const char *conn, const node_twin_t *twin,
                         const char *remote_sys_id, const char *remote_number, uint64_t seq,
                         const char *origin, const char *code, const char *message);

//  Sends the replica of record for twin (inside the caller's transaction)
//  when it differs from what the other side has or new human comments
//  exist; force sends in any case. Updates and writes the twin. Returns 1
//  when a SYNC was queued, 0 when nothing had to go, -1 on a database
//  failure.
int node_sync_send(node_sync_t *self, const node_conn_t *conn, node_sync_ctx_t *ctx,
                   node_twin_t *twin, const json_t *record, json_t *entries, bool force);

//  Sends the current replica of local incident record (exalate, or a retry
//  of the other side's refusal) in its own transaction.
node_sync_rc_t node_sync_force_send(node_sync_t *self, const node_conn_t *conn,
                                    node_sync_ctx_t *ctx, json_t *record, node_twin_t *twin);

//  The key generations of conn: its generations file, or generation 0 from
//  the join's key file. Returns 0 or -1 with a reason in err.
int node_sync_gens_load(node_sync_t *self, const char *conn, node_rekey_gens_t *gens, char *err,
                        size_t errlen);

//  Writes the generations of conn and removes the join's key file. Returns
//  0 or -1 with a reason in err.
int node_sync_gens_save(node_sync_t *self, const char *conn, const node_rekey_gens_t *gens,
                        char *err, size_t errlen);

//  --- attachments (node_sync_files.c)

//  Finds new and deleted attachments of conn on our instance (after a
//  successful poll). Returns OK, a ServiceNow failure's code, or FATAL.
node_sync_rc_t node_sync_files_poll(node_sync_t *self, const node_conn_t *conn,
                                    node_sync_ctx_t *ctx);

//  An inbound FILE_CHUNK, FILE_ACK or FILE_RECEIPT, inside the apply's
//  transaction. Returns 0 or -1.
int node_sync_files_in(node_sync_t *self, const node_conn_t *conn, node_sync_ctx_t *ctx,
                       const proto_payload_t *payload);

//  The ServiceNow half of an inbound FILE_DELETE, before the transaction:
//  deletes our copy when twinsync put it here. Returns OK or the failure's
//  code (the message is applied again later).
node_sync_rc_t node_sync_files_delete_in(node_sync_t *self, const node_conn_t *conn,
                                         const proto_file_delete_t *del);

//  The state half of an inbound FILE_DELETE, inside the apply's
//  transaction. Returns 0 or -1.
int node_sync_files_deleted(node_sync_t *self, const node_conn_t *conn,
                            const proto_file_delete_t *del);

//  `errors retry` of a refused upload: the twin's refused files wait for
//  their upload again, the error goes. Returns 0 or -1.
int node_sync_files_retry(node_sync_t *self, const node_error_t *error);

//  Removes the spool files of a deleted connection.
void node_sync_files_forget(node_sync_t *self, const char *conn);

#endif
