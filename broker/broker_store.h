/*  broker_store.h: the broker's durable store (one SQLite database in WAL mode).

    What it holds, all in one file so that one transaction covers everything:
      - messages:    (queue, seq) -> sealed payload and whether it is file
                     data (PUBLISH "file"), from PUBLISH until CONSUMED
      - queues:      per connection and direction: highest stored seq (the
                     duplicate filter), messages and bytes held, and how
                     many of them are file data (so that a restart reads
                     one row per queue, never the messages)
      - connections: who owns a connection (public key), who joined it (private
                     key), the SHA-256 of its join token, expiry, descriptions,
                     and the key exchange its JOIN carried (opaque bytes)

    Group commit: the caller opens nothing explicitly. The first write after a
    commit starts a transaction; broker_store_commit makes everything written
    since durable with one WAL fdatasync. The caller answers STORED / JOINED
    only after broker_store_commit returned 0.

    Pipelined group commit: broker_store_commit_start commits without waiting
    for the disk (the WAL frames are written, synchronous=NORMAL) and hands
    the WAL's fdatasync to a sync thread; the caller goes on writing the next
    transaction meanwhile, and answers the committed one only once
    broker_store_sync_done returned 1 (broker_store_sync_fd is readable when
    it will). Reads see everything written, durable or not: the caller must
    not hand out what is not durable yet. broker_store_commit_here does the
    same commit and sync on the calling thread, for a caller with nothing
    else to do meanwhile (two thread wake-ups fewer).

    Failures: every write or commit failure is fatal to the process by
    contract (broker_store_commit returns -1 and the broker exits): after an
    fsync error the state of the kernel's page cache is unknown, so the only
    safe move is to stop and recover from the WAL on restart. SQLite's WAL
    checksums cut a torn tail on recovery: a transaction whose frames did not
    all reach the disk is never loaded.

    Not thread-safe: one thread owns a store (its sync thread touches nothing
    but a descriptor of the WAL of its own).
*/
#ifndef BROKER_STORE_H
#define BROKER_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BROKER_STORE_FILE "broker.db"

typedef struct broker_store_t broker_store_t;

typedef struct {
    const char *vfs;     //  SQLite VFS name, NULL for the default (tests inject faults)
    bool no_sync;        //  synchronous=OFF: for fuzzing only, never in the daemon
    long cache_kib;      //  Page cache bound in KiB (0: 8192)
    long wal_limit_kib;  //  WAL file size kept after a checkpoint, KiB (0: 65536)
    int (*sync)(int fd); //  Replaces fdatasync of the WAL (tests: faults, delays); NULL normally
} broker_store_options_t;

//  One queue's durable state: a connection and a direction.
typedef struct {
    int64_t qid;         //  Store's id for the queue
    const char *conn;    //  Connection id (owned by the store row buffer or caller)
    int dir;             //  Direction (broker_dir_t)
    uint64_t last_seq;   //  Highest seq ever stored (duplicate filter)
    uint64_t count;      //  Messages held
    uint64_t bytes;      //  Payload bytes held (records and files)
    uint64_t file_count; //  Of the messages held: those of file data
    uint64_t file_bytes; //  Their payload bytes
} broker_store_queue_t;

//  What broker_store_remove_upto took away (added to by each call).
typedef struct {
    uint64_t count;      //  Messages
    uint64_t bytes;      //  Their payload bytes
    uint64_t file_count; //  Of them: messages of file data
    uint64_t file_bytes; //  Their payload bytes
} broker_store_removed_t;

//  One connection as the store keeps it.
typedef struct {
    const char *conn;         //  Connection id
    const char *public_key;   //  Z85 key of the public node that invited
    const char *private_key;  //  Z85 key bound by JOIN, "" while pending
    uint8_t token_hash[32];   //  SHA-256 of the join token
    int64_t expires;          //  Unix seconds after which JOIN fails
    bool token_used;          //  JOIN succeeded: the token is burnt
    const char *public_desc;  //  Public node description ("" if none)
    const char *private_desc; //  Private node description ("" if none)
    int64_t created;          //  Unix seconds of the first INVITE
    bool has_kx;              //  JOIN brought a key exchange: kx and auth hold it
    uint8_t kx[32];           //  JOIN's kx, opaque (docs/protocol.md §8.3)
    uint8_t auth[32];         //  JOIN's auth, opaque
} broker_store_conn_t;

//  Opens (creating if needed) dir/broker.db. Returns the store, or NULL with
//  a reason in err. options may be NULL for the defaults. The caller owns the
//  result.
broker_store_t *broker_store_open(const char *dir, const broker_store_options_t *options, char *err,
                                  size_t errlen);

//  Closes the store (checkpointing the WAL) and sets *self_p to NULL; accepts
//  NULL. Anything written since the last commit is rolled back.
void broker_store_destroy(broker_store_t **self_p);

//  The reason of the last failure, "" if none. Owned by the store.
const char *broker_store_error(const broker_store_t *self);

//  Calls fn for every queue row; stops when fn returns non-zero. Strings
//  passed to fn live until fn returns. Returns 0, or -1 on a read error.
int broker_store_each_queue(broker_store_t *self,
                            int (*fn)(const broker_store_queue_t *queue, void *arg), void *arg);

//  Calls fn for every connection row, as broker_store_each_queue.
int broker_store_each_conn(broker_store_t *self,
                           int (*fn)(const broker_store_conn_t *conn, void *arg), void *arg);

//  Creates the queue (conn, dir) if absent and sets *qid. Part of the
//  current transaction. Returns 0, or -1 (fatal).
int broker_store_queue_create(broker_store_t *self, const char *conn, int dir, int64_t *qid);

//  Writes the queue's counters (last_seq, count, bytes, file_count,
//  file_bytes) in the current transaction. Returns 0, or -1 (fatal).
int broker_store_queue_save(broker_store_t *self, const broker_store_queue_t *queue);

//  Inserts or replaces a connection row in the current transaction.
//  Returns 0, or -1 (fatal).
int broker_store_conn_save(broker_store_t *self, const broker_store_conn_t *conn);

//  Appends a message in the current transaction; file says it is file data
//  (PUBLISH "file"). The caller has checked that seq is new (seq > the
//  queue's last_seq). Returns 0, or -1 (fatal).
int broker_store_append(broker_store_t *self, int64_t qid, uint64_t seq, const void *payload,
                        size_t size, bool file, int64_t stored_at_ms);

//  Deletes every message of qid with seq <= upto. Adds the messages and
//  payload bytes removed, all and file data, to *removed. Returns 0, or -1
//  (fatal).
int broker_store_remove_upto(broker_store_t *self, int64_t qid, uint64_t upto,
                             broker_store_removed_t *removed);

//  Reads, in seq order, up to limit messages of qid with seq > after, and
//  calls fn for each (payload valid only during the call; file as
//  appended); stops early when fn returns non-zero. Returns the number of
//  messages passed to fn, or -1.
typedef int (*broker_store_read_fn)(uint64_t seq, const void *payload, size_t size, bool file,
                                    int64_t stored_at_ms, void *arg);
int broker_store_read(broker_store_t *self, int64_t qid, uint64_t after, int limit,
                      broker_store_read_fn fn, void *arg);

//  The stored_at (ms) of qid's oldest message, or 0 when the queue is empty
//  (or on a read error).
int64_t broker_store_oldest(broker_store_t *self, int64_t qid);

//  True when a transaction is open (something was written since the last
//  commit).
bool broker_store_dirty(const broker_store_t *self);

//  Makes everything written since the last commit durable (one WAL
//  fdatasync) and waits for it. Not while a sync is in flight. Returns 0
//  (also when nothing was written), or -1: fatal, the process must stop
//  without answering anything written in this transaction.
int broker_store_commit(broker_store_t *self);

//  Commits without waiting for the disk and starts the WAL's sync on the
//  sync thread (at once durable with no_sync). Not while a sync is in
//  flight. Does nothing when nothing was written. Returns 0, or -1 (fatal).
int broker_store_commit_start(broker_store_t *self);

//  Commits and makes the commit durable on the calling thread (no hand-over
//  to the sync thread). Not while a sync is in flight. Returns 0 (also when
//  nothing was written), or -1 (fatal).
int broker_store_commit_here(broker_store_t *self);

//  True while the last broker_store_commit_start's sync is not collected.
bool broker_store_syncing(const broker_store_t *self);

//  A file descriptor that becomes readable when the sync in flight is over
//  (then call broker_store_sync_done), or -1 with no_sync.
int broker_store_sync_fd(const broker_store_t *self);

//  Collects the sync in flight: 1 when the committed transaction is durable
//  (at once when none is in flight), 0 when the sync still runs (only with
//  wait false), -1 when it failed: fatal, as a failed commit.
int broker_store_sync_done(broker_store_t *self, bool wait);

//  Copies the WAL into the database when enough of it is waiting (a few
//  MiB); does nothing inside a transaction or below that. Call it when the
//  replies of a commit are out, so that no answer waits for it. Returns 0,
//  or -1: fatal, as a failed commit (a failed fsync of the database).
int broker_store_checkpoint(broker_store_t *self);

//  Seconds the last commit took, from COMMIT to the end of its sync (for the
//  fsync latency histogram); 0 if the last call had nothing to commit.
double broker_store_last_commit_seconds(const broker_store_t *self);

//  Bytes of the database and its WAL on disk.
uint64_t broker_store_disk_bytes(const broker_store_t *self);

#endif
