/*  node_sync.h: the sync work of one node, everything that talks to
    ServiceNow: polling changes into the outbox and applying what arrives.

    The engine's worker thread owns one node_sync_t and calls it; it never
    touches the broker link. What leaves goes into the outbox (sealed, with
    its seq), in the same transaction as the cursor, twin state and comment
    marks it depends on; the loop thread sends outbox rows. What arrives is
    handed to node_sync_apply with its seq; the answer says whether the
    broker may be told CONSUMED.

      node_sync_poll      one poll of one active connection (docs/sync.md §2)
      node_sync_apply     one inbound sealed payload (SYNC or RECEIPT)
      node_sync_requests  admin requests queued in the database (exalate)
      node_sync_retry     errors an admin asked to retry (`errors retry ID`)

    Results (node_sync_rc_t):
      OK          done; for apply: applied or parked durably, send CONSUMED
      RETRY       ServiceNow is rate limiting / unavailable / slow: nothing
                  was lost, try again later (apply: do not consume)
      CONN_ERROR  connection-wide failure (credentials, roles): the
                  connection is now in status error with ServiceNow's
                  message; try again later, it resumes by itself
      HOLD        apply only: the connection is not active (deactivated,
                  error), or an earlier seq is not applied yet: keep the
                  message and offer it again later
      REFUSED     apply only: the payload does not open or decode. It is
                  reported (`errors list`) and never applied nor consumed:
                  skipping it would let whoever altered it drop a change.
                  The broker keeps it; the next session delivers it again
      FATAL       the state database failed: the daemon must stop
*/
#ifndef NODE_SYNC_H
#define NODE_SYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "node_state.h"
#include "sn_client.h"

typedef enum {
    NODE_SYNC_OK = 0,
    NODE_SYNC_RETRY,
    NODE_SYNC_CONN_ERROR,
    NODE_SYNC_HOLD,
    NODE_SYNC_REFUSED,
    NODE_SYNC_FATAL
} node_sync_rc_t;

typedef struct {
    node_state_t *state;        //  State store, used by this object only (not owned)
    sn_client_t *sn;            //  ServiceNow client (not owned)
    const char *state_dir;      //  Where key files live (node_keys.h)
    const char *instance;       //  Our instance's short name, e.g. "acme"
    const char *sync_user;      //  The integration user's user_name (echo prevention)
    int lookback_s;             //  Poll look-back, seconds (0: 10)
    int64_t rekey_interval_s;   //  The public node starts a rekey this often (0: never)
    bool no_padding;            //  Seal payloads without padding them to size buckets
    bool attachments_none;      //  node.attachments = none: no file sent or taken by default
    uint64_t attachment_max;    //  Largest file sent or taken by default (0: 1 GiB)
    int64_t attachment_scan_ms; //  Between scans for attachments deleted at the source (0: 60 s)
} node_sync_config_t;

typedef struct {
    size_t changed; //  Incidents the poll handed over
    size_t sent;    //  SYNCs written to the outbox
    size_t applied; //  Inbound SYNCs applied (retry)
} node_sync_report_t;

typedef struct node_sync node_sync_t;

//  A new sync worker holding copies of cfg's strings, or NULL when out of
//  memory. The state and client must outlive it.
node_sync_t *node_sync_new(const node_sync_config_t *cfg);

//  Frees the worker (sealers, de-duplication sets); sets *self_p to NULL.
void node_sync_destroy(node_sync_t **self_p);

//  Starts a rekey of connection conn (docs/protocol.md §8.4): a new X25519
//  share in a REKEY, queued in the outbox. text (size bytes) says what
//  happened for the admin. Returns OK (also when conn cannot be rekeyed now:
//  not active, a rekey under way; text says so), or FATAL.
node_sync_rc_t node_sync_rekey(node_sync_t *self, const char *conn, char *text, size_t size);

//  Polls connection conn once (it must be active or in error: a successful
//  poll of a connection in error makes it active again). report may be
//  NULL.
node_sync_rc_t node_sync_poll(node_sync_t *self, const char *conn, node_sync_report_t *report);

//  Applies inbound payload seq of conn (sealed, as DELIVER carried it).
node_sync_rc_t node_sync_apply(node_sync_t *self, const char *conn, uint64_t seq,
                               const uint8_t *sealed, size_t size);

//  Carries out queued admin requests (all connections).
node_sync_rc_t node_sync_requests(node_sync_t *self);

//  Retries errors an admin asked to retry, and the blocked twins of conn
//  when a new message arrived for them. report may be NULL.
node_sync_rc_t node_sync_retry(node_sync_t *self, node_sync_report_t *report);

//  Moves attachments along (docs/sync.md, "Attachments"): cuts the files being sent
//  into chunks within their window and sends the receipts and deletions
//  owed. No ServiceNow call; sets *sent when it queued a message.
node_sync_rc_t node_sync_files_pump(node_sync_t *self, bool *sent);

//  Forgets the per-connection memory (sealer, seen set) of conn, e.g. after
//  it was deleted.
void node_sync_forget(node_sync_t *self, const char *conn);

#endif
