/*  broker_store.c: the broker's durable store on SQLite (see broker_store.h).

    Schema (version 3, PRAGMA user_version):
      queues(qid INTEGER PRIMARY KEY, conn, dir, last_seq, count, bytes,
             file_count, file_bytes)
      messages(qid, seq, stored_at, payload, file, PRIMARY KEY (qid, seq))
      connections(conn PRIMARY KEY, public_key, private_key, token_hash,
                  expires, token_used, public_desc, private_desc, created,
                  private_kx, private_auth)

    Version 2 added private_kx and private_auth (JOIN's key exchange, NULL
    when none, docs/protocol.md §8.3). Version 3 added messages.file (1:
    file data, PUBLISH "file", docs/protocol.md §4.7) and the queues'
    file_count and file_bytes, kept like count and bytes. An older store
    gains the missing columns at open, in one transaction with the new
    user_version; every column added defaults to what an older broker's
    rows mean (no key exchange, no file data), so the counters of a store
    upgraded with messages in it are right as they are.

    messages is an ordinary rowid table with a unique (qid, seq) index rather
    than WITHOUT ROWID: payloads are around a kilobyte, and SQLite's advice is
    that WITHOUT ROWID pays off only for rows under ~1/20 of a page.

    The backlog lives on disk: the page cache is bounded (cache_size) and
    memory-mapped I/O is off, so RSS does not grow with the queue. A restart
    reads the queues and connections tables only.

    Every statement is prepared once at open. Writes go into one transaction
    that the first write after a commit opens (group commit).

    Checkpoints: SQLite's automatic checkpoint would run inside COMMIT, after
    the fsync but before the caller can answer anyone, and every 1000 pages.
    Instead the caller runs broker_store_checkpoint once its replies are out;
    it copies the WAL into the database once CHECKPOINT_PAGES are waiting,
    so that the pages a busy queue rewrites over and over (the b-tree's
    right edge, the queue rows) reach the database file once per checkpoint,
    not once per thousand pages. A commit still checkpoints by itself when
    the WAL passes CHECKPOINT_HARD_PAGES (a caller that never checkpoints).

    Pipelined group commit: the database runs with synchronous=NORMAL, so
    COMMIT writes the transaction's WAL frames without an fsync; the store
    then has its sync thread (broker_syncer.c) fdatasync the WAL through a
    descriptor of its own, and the caller answers only once that sync
    returned. Why this is as safe as synchronous=FULL (docs/broker.md, "The
    store"): a transaction's frames are all in the WAL file when COMMIT
    returns, and the fdatasync started after that makes them durable; WAL
    checksums chain from frame to frame, so recovery never loads a later
    transaction without the earlier ones. A checkpoint (also one running
    while the sync does) fsyncs the WAL before it copies frames into the
    database and fsyncs the database before the WAL can be reset, so no
    frame is overwritten before it is durable somewhere.

    Files: broker.db holds every queued payload and each connection's
    keys, so it is made 0600 before SQLite opens it, whatever the umask;
    SQLite gives the WAL and the shared-memory file the mode of broker.db
    when it creates them. Files an older broker left readable by others are
    made 0600 at open.
*/
#include "broker_store.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "broker_syncer.h"

#define SCHEMA_VERSION        3
#define CHECKPOINT_PAGES      4096  //  WAL pages (16 MiB) before broker_store_checkpoint copies
#define CHECKPOINT_HARD_PAGES 16384 //  WAL pages after which a commit checkpoints itself

enum {
    ST_BEGIN,
    ST_COMMIT,
    ST_QUEUE_INSERT,
    ST_QUEUE_SAVE,
    ST_QUEUE_ALL,
    ST_CONN_SAVE,
    ST_CONN_ALL,
    ST_APPEND,
    ST_REMOVE_UPTO,
    ST_READ,
    ST_OLDEST,
    ST_COUNT
};

static const char *s_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_QUEUE_INSERT] = "INSERT INTO queues (conn, dir, last_seq, count, bytes, file_count, "
                        "file_bytes) VALUES (?1, ?2, 0, 0, 0, 0, 0)",
    [ST_QUEUE_SAVE] = "UPDATE queues SET last_seq = ?2, count = ?3, bytes = ?4, file_count = ?5, "
                      "file_bytes = ?6 WHERE qid = ?1",
    [ST_QUEUE_ALL] = "SELECT qid, conn, dir, last_seq, count, bytes, file_count, file_bytes "
                     "FROM queues ORDER BY qid",
    [ST_CONN_SAVE] = "INSERT OR REPLACE INTO connections (conn, public_key, private_key, "
                     "token_hash, expires, token_used, public_desc, private_desc, created, "
                     "private_kx, private_auth) "
                     "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    [ST_CONN_ALL] = "SELECT conn, public_key, private_key, token_hash, expires, token_used, "
                    "public_desc, private_desc, created, private_kx, private_auth "
                    "FROM connections ORDER BY conn",
    [ST_APPEND] = "INSERT INTO messages (qid, seq, stored_at, payload, file) "
                  "VALUES (?1, ?2, ?3, ?4, ?5)",
    //  One pass: the rows go and their sizes and kinds come back for the
    //  counters.
    [ST_REMOVE_UPTO] = "DELETE FROM messages WHERE qid = ?1 AND seq <= ?2 "
                       "RETURNING length(payload), file",
    [ST_READ] = "SELECT seq, payload, stored_at, file FROM messages WHERE qid = ?1 AND seq > ?2 "
                "ORDER BY seq LIMIT ?3",
    [ST_OLDEST] = "SELECT stored_at FROM messages WHERE qid = ?1 ORDER BY seq LIMIT 1",
};

static const char *s_schema = "CREATE TABLE IF NOT EXISTS queues ("
                              "  qid INTEGER PRIMARY KEY,"
                              "  conn TEXT NOT NULL,"
                              "  dir INTEGER NOT NULL,"
                              "  last_seq INTEGER NOT NULL,"
                              "  count INTEGER NOT NULL,"
                              "  bytes INTEGER NOT NULL,"
                              "  file_count INTEGER NOT NULL DEFAULT 0,"
                              "  file_bytes INTEGER NOT NULL DEFAULT 0,"
                              "  UNIQUE (conn, dir));"
                              "CREATE TABLE IF NOT EXISTS messages ("
                              "  qid INTEGER NOT NULL,"
                              "  seq INTEGER NOT NULL,"
                              "  stored_at INTEGER NOT NULL,"
                              "  payload BLOB NOT NULL,"
                              "  file INTEGER NOT NULL DEFAULT 0,"
                              "  PRIMARY KEY (qid, seq));"
                              "CREATE TABLE IF NOT EXISTS connections ("
                              "  conn TEXT PRIMARY KEY,"
                              "  public_key TEXT NOT NULL,"
                              "  private_key TEXT NOT NULL,"
                              "  token_hash BLOB NOT NULL,"
                              "  expires INTEGER NOT NULL,"
                              "  token_used INTEGER NOT NULL,"
                              "  public_desc TEXT NOT NULL,"
                              "  private_desc TEXT NOT NULL,"
                              "  created INTEGER NOT NULL,"
                              "  private_kx BLOB,"
                              "  private_auth BLOB);";

struct broker_store_t {
    sqlite3 *db;                  //  The database connection
    sqlite3_stmt *stmt[ST_COUNT]; //  Prepared statements, by ST_*
    char *path;                   //  Database file path
    bool in_txn;                  //  A write transaction is open
    bool no_sync;                 //  synchronous=OFF, no sync thread (fuzzing)
    bool syncing;                 //  A commit's WAL sync is in flight
    int wal_fd;                   //  Our own descriptor of the WAL, -1 if none
    broker_syncer_t *syncer;      //  Sync thread, NULL with no_sync
    broker_sync_fn sync_fn;       //  How the WAL is synced (fdatasync unless a test's)
    double commit_started;        //  When the commit being synced began
    int wal_pages;                //  Pages in the WAL after the last commit
    double last_commit_s;         //  Duration of the last commit
    char error[512];              //  Reason of the last failure
};

static int s_fail(broker_store_t *self, const char *what)
{
    snprintf(self->error, sizeof self->error, "%s: %s (sqlite code %d)", what,
             sqlite3_errmsg(self->db), sqlite3_extended_errcode(self->db));
    return -1;
}

static double s_mono_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

//  Runs a statement that returns no rows (or whose rows are ignored) and
//  resets it. Returns 0, or -1 with self->error set.
static int s_step_done(broker_store_t *self, int which, const char *what)
{
    sqlite3_stmt *stmt = self->stmt[which];
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
        ;
    int result = rc == SQLITE_DONE ? 0 : s_fail(self, what);
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return result;
}

//  Opens the write transaction if none is open. Returns 0 or -1.
static int s_begin(broker_store_t *self)
{
    if (self->in_txn)
        return 0;
    if (s_step_done(self, ST_BEGIN, "begin transaction") != 0)
        return -1;
    self->in_txn = true;
    return 0;
}

static int s_exec(broker_store_t *self, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(self->db, sql, NULL, NULL, &msg) == SQLITE_OK)
        return 0;
    //  The statement's start is enough to name it; the error text stays whole.
    snprintf(self->error, sizeof self->error, "%.64s...: %.400s", sql, msg ? msg : "failed");
    sqlite3_free(msg);
    return -1;
}

//  True when table has a column named column; -1 on a read error.
static int s_has_column(broker_store_t *self, const char *table, const char *column)
{
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(self->db, "SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2", -1,
                           &stmt, NULL) != SQLITE_OK)
        return s_fail(self, "read the schema");
    sqlite3_bind_text(stmt, 1, table, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 2, column, -1, SQLITE_STATIC);
    int rc = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return s_fail(self, "read the schema");
    return rc == SQLITE_ROW;
}

//  Brings a store of an older schema version (or a new, empty one: version
//  0) to SCHEMA_VERSION: adds each column the tables lack, then sets
//  user_version, all in one transaction, so that a crash leaves the old
//  version or the new one and an open after it starts again cleanly. The
//  tables CREATE TABLE IF NOT EXISTS made are whole already; only those an
//  older broker made lack columns. Returns 0, or -1 with self->error set.
static int s_upgrade(broker_store_t *self)
{
    static const struct {
        const char *table, *column, *decl;
    } added[] = {
        {"connections", "private_kx", "BLOB"},                  //  version 2
        {"connections", "private_auth", "BLOB"},                //  version 2
        {"messages", "file", "INTEGER NOT NULL DEFAULT 0"},     //  version 3
        {"queues", "file_count", "INTEGER NOT NULL DEFAULT 0"}, //  version 3
        {"queues", "file_bytes", "INTEGER NOT NULL DEFAULT 0"}, //  version 3
    };
    if (s_exec(self, "BEGIN IMMEDIATE") != 0)
        return -1;
    char sql[256];
    for (size_t i = 0; i < sizeof added / sizeof added[0]; i++) {
        int has = s_has_column(self, added[i].table, added[i].column);
        snprintf(sql, sizeof sql, "ALTER TABLE %s ADD COLUMN %s %s", added[i].table,
                 added[i].column, added[i].decl);
        if (has < 0 || (has == 0 && s_exec(self, sql) != 0)) {
            sqlite3_exec(self->db, "ROLLBACK", NULL, NULL, NULL);
            return -1;
        }
    }
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d; COMMIT", SCHEMA_VERSION);
    if (s_exec(self, sql) != 0) {
        sqlite3_exec(self->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

//  Sets the pragmas that make the store what broker_store.h promises, checks
//  that WAL mode took, and creates the schema.
static int s_setup(broker_store_t *self, const broker_store_options_t *options)
{
    long cache_kib = options && options->cache_kib > 0 ? options->cache_kib : 8192;
    long wal_kib = options && options->wal_limit_kib > 0 ? options->wal_limit_kib : 65536;
    bool no_sync = options && options->no_sync;
    char sql[512];
    snprintf(sql, sizeof sql,
             "PRAGMA busy_timeout = 5000;"
             "PRAGMA synchronous = %s;"
             "PRAGMA cache_size = -%ld;"
             "PRAGMA mmap_size = 0;"
             "PRAGMA temp_store = FILE;"
             "PRAGMA journal_size_limit = %ld;"
             "PRAGMA foreign_keys = OFF;",
             no_sync ? "OFF" : "NORMAL", cache_kib, wal_kib * 1024);
    if (s_exec(self, sql) != 0)
        return -1;

    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(self->db, "PRAGMA journal_mode = WAL", -1, &stmt, NULL) != SQLITE_OK)
        return s_fail(self, "set journal_mode");
    int rc = sqlite3_step(stmt);
    const char *mode = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(stmt, 0) : NULL;
    bool wal = mode && strcmp(mode, "wal") == 0;
    sqlite3_finalize(stmt);
    if (!wal) {
        snprintf(self->error, sizeof self->error,
                 "cannot switch %s to WAL mode (is the file system local?)", self->path);
        return -1;
    }
    if (s_exec(self, s_schema) != 0)
        return -1;

    if (sqlite3_prepare_v2(self->db, "PRAGMA user_version", -1, &stmt, NULL) != SQLITE_OK)
        return s_fail(self, "read user_version");
    int version = sqlite3_step(stmt) == SQLITE_ROW ? sqlite3_column_int(stmt, 0) : -1;
    sqlite3_finalize(stmt);
    if (version == SCHEMA_VERSION)
        return 0;
    if (version < 0 || version > SCHEMA_VERSION) {
        snprintf(self->error, sizeof self->error,
                 "%s has schema version %d, this broker knows %d (newer broker's store?)",
                 self->path, version, SCHEMA_VERSION);
        return -1;
    }
    return s_upgrade(self);
}

static int s_prepare_all(broker_store_t *self)
{
    for (int i = 0; i < ST_COUNT; i++) {
        if (sqlite3_prepare_v3(self->db, s_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &self->stmt[i],
                               NULL) != SQLITE_OK)
            return s_fail(self, s_sql[i]);
    }
    return 0;
}

//  fsyncs the directory dir, so that a file just created in it stays.
static int s_sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

//  Opens our own descriptor of the WAL (which SQLite has made by now),
//  makes its directory entry durable and starts the sync thread.
static int s_start_syncer(broker_store_t *self, const char *dir, broker_sync_fn fn)
{
    char wal[PATH_MAX];
    snprintf(wal, sizeof wal, "%s-wal", self->path);
    self->wal_fd = open(wal, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (self->wal_fd < 0 || s_sync_dir(dir) != 0) {
        snprintf(self->error, sizeof self->error, "cannot open %s-wal for syncing: %s", self->path,
                 strerror(errno));
        return -1;
    }
    self->sync_fn = fn ? fn : fdatasync;
    self->syncer = broker_syncer_new(self->wal_fd, self->sync_fn, self->error, sizeof self->error);
    return self->syncer ? 0 : -1;
}

//  Makes path a file only its owner may read and write: created 0600
//  when create is set and it is missing, its group and other bits taken
//  away when it exists. Called before SQLite opens the store, so that
//  closing our descriptor drops no lock of SQLite's. Returns 0 (a missing
//  file without create is no failure), or -1 with errno set.
static int s_private_file(const char *path, bool create)
{
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT : 0), 0600);
    if (fd < 0)
        return !create && errno == ENOENT ? 0 : -1;
    struct stat st;
    int rc = fstat(fd, &st);
    if (rc == 0 && (st.st_mode & 077))
        rc = fchmod(fd, st.st_mode & 0700);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

//  broker.db created (or made) 0600 before SQLite sees it, and the WAL and
//  shared memory a crash left behind made 0600 too (SQLite sets the mode
//  of those it creates, not of those it finds). Returns 0, or -1 with the
//  reason in err.
static int s_private_files(const char *path, char *err, size_t errlen)
{
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char file[PATH_MAX];
        snprintf(file, sizeof file, "%s%s", path, suffixes[i]);
        if (s_private_file(file, i == 0) != 0) {
            snprintf(err, errlen, "cannot %s %s: %s", i == 0 ? "open" : "make private (0600)", file,
                     strerror(errno));
            return -1;
        }
    }
    return 0;
}

//  SQLite calls this after every commit with the pages now in the WAL.
static int s_on_wal(void *arg, sqlite3 *db, const char *name, int pages)
{
    (void)db, (void)name;
    broker_store_t *self = arg;
    self->wal_pages = pages;
    return SQLITE_OK;
}

broker_store_t *broker_store_open(const char *dir, const broker_store_options_t *options, char *err,
                                  size_t errlen)
{
    if (!dir || !*dir) {
        snprintf(err, errlen, "no state directory given");
        return NULL;
    }
    broker_store_t *self = calloc(1, sizeof *self);
    if (self)
        self->wal_fd = -1;
    if (!self || asprintf(&self->path, "%s/%s", dir, BROKER_STORE_FILE) < 0) {
        free(self);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (s_private_files(self->path, err, errlen) != 0) {
        broker_store_destroy(&self);
        return NULL;
    }
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(self->path, &self->db, flags, options ? options->vfs : NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", self->path,
                 self->db ? sqlite3_errmsg(self->db) : sqlite3_errstr(rc));
        broker_store_destroy(&self);
        return NULL;
    }
    sqlite3_extended_result_codes(self->db, 1);
    self->no_sync = options && options->no_sync;
    if (s_setup(self, options) != 0 || s_prepare_all(self) != 0 ||
        (!self->no_sync && s_start_syncer(self, dir, options ? options->sync : NULL) != 0)) {
        snprintf(err, errlen, "cannot open store %s: %s", self->path, self->error);
        broker_store_destroy(&self);
        return NULL;
    }
    //  Replaces SQLite's automatic checkpoint (its own WAL hook).
    sqlite3_wal_hook(self->db, s_on_wal, self);
    return self;
}

void broker_store_destroy(broker_store_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    broker_store_t *self = *self_p;
    if (self->syncer)
        broker_syncer_collect(self->syncer, true);
    broker_syncer_destroy(&self->syncer);
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(self->stmt[i]);
    if (self->db) {
        if (self->in_txn)
            sqlite3_exec(self->db, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_close(self->db);
    }
    if (self->wal_fd >= 0)
        close(self->wal_fd); //  After sqlite3_close: SQLite holds no lock on the WAL
    free(self->path);
    free(self);
    *self_p = NULL;
}

const char *broker_store_error(const broker_store_t *self)
{
    return self->error;
}

int broker_store_each_queue(broker_store_t *self,
                            int (*fn)(const broker_store_queue_t *queue, void *arg), void *arg)
{
    sqlite3_stmt *stmt = self->stmt[ST_QUEUE_ALL];
    int rc;
    int stop = 0;
    while (!stop && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        broker_store_queue_t queue = {
            .qid = sqlite3_column_int64(stmt, 0),
            .conn = (const char *)sqlite3_column_text(stmt, 1),
            .dir = sqlite3_column_int(stmt, 2),
            .last_seq = (uint64_t)sqlite3_column_int64(stmt, 3),
            .count = (uint64_t)sqlite3_column_int64(stmt, 4),
            .bytes = (uint64_t)sqlite3_column_int64(stmt, 5),
            .file_count = (uint64_t)sqlite3_column_int64(stmt, 6),
            .file_bytes = (uint64_t)sqlite3_column_int64(stmt, 7),
        };
        if (!queue.conn)
            queue.conn = "";
        stop = fn(&queue, arg);
    }
    int result = stop || rc == SQLITE_DONE ? 0 : s_fail(self, "read queues");
    sqlite3_reset(stmt);
    return result;
}

static const char *s_text(sqlite3_stmt *stmt, int column)
{
    const char *text = (const char *)sqlite3_column_text(stmt, column);
    return text ? text : "";
}

int broker_store_each_conn(broker_store_t *self,
                           int (*fn)(const broker_store_conn_t *conn, void *arg), void *arg)
{
    sqlite3_stmt *stmt = self->stmt[ST_CONN_ALL];
    int rc;
    int stop = 0;
    while (!stop && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        broker_store_conn_t conn = {
            .conn = s_text(stmt, 0),
            .public_key = s_text(stmt, 1),
            .private_key = s_text(stmt, 2),
            .expires = sqlite3_column_int64(stmt, 4),
            .token_used = sqlite3_column_int(stmt, 5) != 0,
            .public_desc = s_text(stmt, 6),
            .private_desc = s_text(stmt, 7),
            .created = sqlite3_column_int64(stmt, 8),
        };
        const void *hash = sqlite3_column_blob(stmt, 3);
        if (hash && sqlite3_column_bytes(stmt, 3) == (int)sizeof conn.token_hash)
            memcpy(conn.token_hash, hash, sizeof conn.token_hash);
        const void *kx = sqlite3_column_blob(stmt, 9), *auth = sqlite3_column_blob(stmt, 10);
        conn.has_kx = kx && auth && sqlite3_column_bytes(stmt, 9) == (int)sizeof conn.kx &&
                      sqlite3_column_bytes(stmt, 10) == (int)sizeof conn.auth;
        if (conn.has_kx) {
            memcpy(conn.kx, kx, sizeof conn.kx);
            memcpy(conn.auth, auth, sizeof conn.auth);
        }
        stop = fn(&conn, arg);
    }
    int result = stop || rc == SQLITE_DONE ? 0 : s_fail(self, "read connections");
    sqlite3_reset(stmt);
    return result;
}

int broker_store_queue_create(broker_store_t *self, const char *conn, int dir, int64_t *qid)
{
    if (s_begin(self) != 0)
        return -1;
    sqlite3_stmt *stmt = self->stmt[ST_QUEUE_INSERT];
    sqlite3_bind_text(stmt, 1, conn, -1, SQLITE_STATIC);
    sqlite3_bind_int(stmt, 2, dir);
    if (s_step_done(self, ST_QUEUE_INSERT, "create queue") != 0)
        return -1;
    *qid = sqlite3_last_insert_rowid(self->db);
    return 0;
}

int broker_store_queue_save(broker_store_t *self, const broker_store_queue_t *queue)
{
    if (s_begin(self) != 0)
        return -1;
    sqlite3_stmt *stmt = self->stmt[ST_QUEUE_SAVE];
    sqlite3_bind_int64(stmt, 1, queue->qid);
    sqlite3_bind_int64(stmt, 2, (sqlite3_int64)queue->last_seq);
    sqlite3_bind_int64(stmt, 3, (sqlite3_int64)queue->count);
    sqlite3_bind_int64(stmt, 4, (sqlite3_int64)queue->bytes);
    sqlite3_bind_int64(stmt, 5, (sqlite3_int64)queue->file_count);
    sqlite3_bind_int64(stmt, 6, (sqlite3_int64)queue->file_bytes);
    return s_step_done(self, ST_QUEUE_SAVE, "save queue");
}

int broker_store_conn_save(broker_store_t *self, const broker_store_conn_t *conn)
{
    if (s_begin(self) != 0)
        return -1;
    sqlite3_stmt *stmt = self->stmt[ST_CONN_SAVE];
    sqlite3_bind_text(stmt, 1, conn->conn, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 2, conn->public_key ? conn->public_key : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 3, conn->private_key ? conn->private_key : "", -1, SQLITE_STATIC);
    sqlite3_bind_blob(stmt, 4, conn->token_hash, sizeof conn->token_hash, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 5, conn->expires);
    sqlite3_bind_int(stmt, 6, conn->token_used ? 1 : 0);
    sqlite3_bind_text(stmt, 7, conn->public_desc ? conn->public_desc : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 8, conn->private_desc ? conn->private_desc : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 9, conn->created);
    if (conn->has_kx) {
        sqlite3_bind_blob(stmt, 10, conn->kx, sizeof conn->kx, SQLITE_STATIC);
        sqlite3_bind_blob(stmt, 11, conn->auth, sizeof conn->auth, SQLITE_STATIC);
    } else {
        sqlite3_bind_null(stmt, 10);
        sqlite3_bind_null(stmt, 11);
    }
    return s_step_done(self, ST_CONN_SAVE, "save connection");
}

int broker_store_append(broker_store_t *self, int64_t qid, uint64_t seq, const void *payload,
                        size_t size, bool file, int64_t stored_at_ms)
{
    if (size > INT_MAX) {
        snprintf(self->error, sizeof self->error, "payload of %zu bytes too large", size);
        return -1;
    }
    if (s_begin(self) != 0)
        return -1;
    sqlite3_stmt *stmt = self->stmt[ST_APPEND];
    sqlite3_bind_int64(stmt, 1, qid);
    sqlite3_bind_int64(stmt, 2, (sqlite3_int64)seq);
    sqlite3_bind_int64(stmt, 3, stored_at_ms);
    sqlite3_bind_blob(stmt, 4, size ? payload : "", (int)size, SQLITE_STATIC);
    sqlite3_bind_int(stmt, 5, file ? 1 : 0);
    return s_step_done(self, ST_APPEND, "append message");
}

int broker_store_remove_upto(broker_store_t *self, int64_t qid, uint64_t upto,
                             broker_store_removed_t *removed)
{
    if (s_begin(self) != 0)
        return -1;
    sqlite3_stmt *stmt = self->stmt[ST_REMOVE_UPTO];
    sqlite3_bind_int64(stmt, 1, qid);
    sqlite3_bind_int64(stmt, 2, upto > INT64_MAX ? INT64_MAX : (sqlite3_int64)upto);
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        uint64_t size = (uint64_t)sqlite3_column_int64(stmt, 0);
        removed->count++;
        removed->bytes += size;
        if (sqlite3_column_int(stmt, 1) != 0) {
            removed->file_count++;
            removed->file_bytes += size;
        }
    }
    int result = rc == SQLITE_DONE ? 0 : s_fail(self, "remove messages");
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return result;
}

int broker_store_read(broker_store_t *self, int64_t qid, uint64_t after, int limit,
                      broker_store_read_fn fn, void *arg)
{
    sqlite3_stmt *stmt = self->stmt[ST_READ];
    sqlite3_bind_int64(stmt, 1, qid);
    sqlite3_bind_int64(stmt, 2, (sqlite3_int64)after);
    sqlite3_bind_int(stmt, 3, limit);
    int rc;
    int passed = 0;
    int stop = 0;
    while (!stop && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        uint64_t seq = (uint64_t)sqlite3_column_int64(stmt, 0);
        const void *payload = sqlite3_column_blob(stmt, 1);
        size_t size = (size_t)sqlite3_column_bytes(stmt, 1);
        int64_t stored_at = sqlite3_column_int64(stmt, 2);
        bool file = sqlite3_column_int(stmt, 3) != 0;
        stop = fn(seq, payload, size, file, stored_at, arg);
        passed++;
    }
    int result = stop || rc == SQLITE_DONE ? passed : s_fail(self, "read messages");
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return result;
}

int64_t broker_store_oldest(broker_store_t *self, int64_t qid)
{
    sqlite3_stmt *stmt = self->stmt[ST_OLDEST];
    sqlite3_bind_int64(stmt, 1, qid);
    int64_t stored_at = sqlite3_step(stmt) == SQLITE_ROW ? sqlite3_column_int64(stmt, 0) : 0;
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return stored_at;
}

bool broker_store_dirty(const broker_store_t *self)
{
    return self->in_txn;
}

//  COMMITs the open transaction (its WAL frames written, not synced) and
//  checkpoints if the WAL passed CHECKPOINT_HARD_PAGES; notes when the
//  commit began. Returns 1 when something was committed, 0 when nothing
//  was open, -1 (fatal).
static int s_commit_write(broker_store_t *self)
{
    assert(!self->syncing);
    self->last_commit_s = 0;
    if (!self->in_txn)
        return 0;
    self->commit_started = s_mono_seconds();
    if (s_step_done(self, ST_COMMIT, "commit") != 0) {
        //  The transaction may or may not be open now; the caller stops the
        //  process, and destroy rolls back whatever is left.
        return -1;
    }
    self->in_txn = false;
    if (self->wal_pages >= CHECKPOINT_HARD_PAGES && broker_store_checkpoint(self) != 0)
        return -1;
    return 1;
}

//  A sync of the WAL failed with errnum: fatal, as a failed commit.
static int s_sync_failed(broker_store_t *self, int errnum)
{
    snprintf(self->error, sizeof self->error, "commit: disk I/O error: fdatasync of %s-wal: %s",
             self->path, strerror(errnum));
    return -1;
}

int broker_store_commit_start(broker_store_t *self)
{
    int rc = s_commit_write(self);
    if (rc <= 0)
        return rc;
    if (self->no_sync) {
        self->last_commit_s = s_mono_seconds() - self->commit_started;
        return 0;
    }
    broker_syncer_start(self->syncer);
    self->syncing = true;
    return 0;
}

int broker_store_commit_here(broker_store_t *self)
{
    int rc = s_commit_write(self);
    if (rc <= 0)
        return rc;
    if (!self->no_sync && self->sync_fn(self->wal_fd) != 0)
        return s_sync_failed(self, errno);
    self->last_commit_s = s_mono_seconds() - self->commit_started;
    return 0;
}

bool broker_store_syncing(const broker_store_t *self)
{
    return self->syncing;
}

int broker_store_sync_fd(const broker_store_t *self)
{
    return self->syncer ? broker_syncer_fd(self->syncer) : -1;
}

int broker_store_sync_done(broker_store_t *self, bool wait)
{
    if (!self->syncing)
        return 1;
    int rc = broker_syncer_collect(self->syncer, wait);
    if (rc == 0)
        return 0;
    self->syncing = false;
    self->last_commit_s = s_mono_seconds() - self->commit_started;
    if (rc < 0)
        return s_sync_failed(self, errno);
    return 1;
}

int broker_store_commit(broker_store_t *self)
{
    if (broker_store_commit_start(self) != 0)
        return -1;
    return broker_store_sync_done(self, true) < 0 ? -1 : 0;
}

int broker_store_checkpoint(broker_store_t *self)
{
    if (self->in_txn || self->wal_pages < CHECKPOINT_PAGES)
        return 0;
    int rc = sqlite3_wal_checkpoint_v2(self->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    if (rc != SQLITE_OK)
        return s_fail(self, "checkpoint");
    self->wal_pages = 0;
    return 0;
}

double broker_store_last_commit_seconds(const broker_store_t *self)
{
    return self->last_commit_s;
}

static uint64_t s_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

uint64_t broker_store_disk_bytes(const broker_store_t *self)
{
    char wal[PATH_MAX];
    snprintf(wal, sizeof wal, "%s-wal", self->path);
    return s_file_size(self->path) + s_file_size(wal);
}
