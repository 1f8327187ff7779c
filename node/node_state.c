/*  node_state.c: the node's SQLite state store (see node_state.h).

    Every statement goes through two helpers: s_prepare binds arguments from
    a small format string ('t' text, 'i' int64, 'b' blob pointer + size,
    'z' text stored as NULL when empty), s_exec runs a statement that returns
    no rows. Readers step the statement themselves and copy columns with
    s_copy. Statements are prepared per call: the node does a few per second,
    and SQLite prepares in microseconds.
*/
#include "node_state.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct node_state {
    sqlite3 *db;     //  Connection to node.db
    char error[512]; //  Last failure, "" none
};

static const char *s_schema =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS connections("
    " id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, mode TEXT NOT NULL,"
    " role INTEGER NOT NULL, status INTEGER NOT NULL, error_text TEXT NOT NULL DEFAULT '',"
    " peer_description TEXT NOT NULL DEFAULT '', peer_url TEXT NOT NULL DEFAULT '',"
    " trigger TEXT NOT NULL DEFAULT '', broker_endpoint TEXT NOT NULL DEFAULT '',"
    " broker_key TEXT NOT NULL DEFAULT '', expires INTEGER NOT NULL DEFAULT 0,"
    " invite_sent INTEGER NOT NULL DEFAULT 0, joined_at INTEGER NOT NULL DEFAULT 0,"
    " next_out_seq INTEGER NOT NULL DEFAULT 1, stored_seq INTEGER NOT NULL DEFAULT 0,"
    " applied_in_seq INTEGER NOT NULL DEFAULT 0, poll_cursor TEXT NOT NULL DEFAULT '',"
    " last_poll_at INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL,"
    " fingerprint TEXT NOT NULL DEFAULT '');"
    "CREATE TABLE IF NOT EXISTS twins("
    " conn TEXT NOT NULL, local_sys_id TEXT NOT NULL, local_number TEXT NOT NULL DEFAULT '',"
    " remote_sys_id TEXT, remote_number TEXT NOT NULL DEFAULT '',"
    " under_sync INTEGER NOT NULL DEFAULT 1, peer_stopped INTEGER NOT NULL DEFAULT 0,"
    " local_fields BLOB, previous_fields BLOB, pending_fields BLOB,"
    " last_sent_seq INTEGER NOT NULL DEFAULT 0, acked_seq INTEGER NOT NULL DEFAULT 0,"
    " mod_count TEXT NOT NULL DEFAULT '', last_sync_at INTEGER NOT NULL DEFAULT 0,"
    " created_at INTEGER NOT NULL,"
    " PRIMARY KEY(conn, local_sys_id), UNIQUE(conn, remote_sys_id));"
    "CREATE TABLE IF NOT EXISTS comments("
    " conn TEXT NOT NULL, dir INTEGER NOT NULL, journal_id TEXT NOT NULL,"
    " local_sys_id TEXT NOT NULL, created_at INTEGER NOT NULL,"
    " PRIMARY KEY(conn, dir, journal_id));"
    "CREATE TABLE IF NOT EXISTS outbox("
    " conn TEXT NOT NULL, seq INTEGER NOT NULL, payload BLOB NOT NULL,"
    " created_at INTEGER NOT NULL, PRIMARY KEY(conn, seq));"
    "CREATE TABLE IF NOT EXISTS intents("
    " conn TEXT NOT NULL, seq INTEGER NOT NULL, created_at INTEGER NOT NULL,"
    " PRIMARY KEY(conn, seq));"
    "CREATE TABLE IF NOT EXISTS blocked("
    " conn TEXT NOT NULL, seq INTEGER NOT NULL, remote_sys_id TEXT NOT NULL,"
    " payload BLOB NOT NULL, created_at INTEGER NOT NULL, PRIMARY KEY(conn, seq));"
    "CREATE TABLE IF NOT EXISTS errors("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, conn TEXT NOT NULL,"
    " local_sys_id TEXT NOT NULL DEFAULT '', local_number TEXT NOT NULL DEFAULT '',"
    " remote_sys_id TEXT NOT NULL DEFAULT '', remote_number TEXT NOT NULL DEFAULT '',"
    " seq INTEGER NOT NULL DEFAULT 0, origin TEXT NOT NULL, code TEXT NOT NULL,"
    " message TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
    " retries INTEGER NOT NULL DEFAULT 0, retry_requested INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS applied("
    " conn TEXT NOT NULL, seq INTEGER NOT NULL, digest BLOB NOT NULL,"
    " PRIMARY KEY(conn, seq)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS requests("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, conn TEXT NOT NULL, kind INTEGER NOT NULL,"
    " arg TEXT NOT NULL, status INTEGER NOT NULL DEFAULT 0, result TEXT NOT NULL DEFAULT '',"
    " created_at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS files("
    " conn TEXT NOT NULL, dir INTEGER NOT NULL, file_id TEXT NOT NULL, record TEXT NOT NULL,"
    " name TEXT NOT NULL DEFAULT '', content_type TEXT NOT NULL DEFAULT '',"
    " size INTEGER NOT NULL DEFAULT 0, hash TEXT NOT NULL DEFAULT '',"
    " state INTEGER NOT NULL, done INTEGER NOT NULL DEFAULT 0, acked INTEGER NOT NULL DEFAULT 0,"
    " downloaded INTEGER NOT NULL DEFAULT 0, twin_file TEXT NOT NULL DEFAULT '',"
    " text TEXT NOT NULL DEFAULT '', finished INTEGER NOT NULL DEFAULT 0,"
    " notify INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL, PRIMARY KEY(conn, dir, file_id));"
    "CREATE INDEX IF NOT EXISTS files_by_state ON files(conn, dir, state);"
    "CREATE INDEX IF NOT EXISTS files_by_record ON files(conn, record);";

//  --- helpers

static int s_fail(node_state_t *self, const char *what)
{
    snprintf(self->error, sizeof self->error, "%s: %s", what, sqlite3_errmsg(self->db));
    return -1;
}

//  Steps stmt to its end, handing each row to fn, and finalizes it. fn
//  returns 0 to go on, 1 to stop early, -1 when it failed (the error
//  recorded). Returns 0, or -1 with the error recorded (what failed).
static int s_walk(node_state_t *self, sqlite3_stmt *stmt, int (*fn)(sqlite3_stmt *stmt, void *arg),
                  void *arg, const char *what)
{
    if (!stmt)
        return -1;
    int rc, stop = 0;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW && (stop = fn(stmt, arg)) == 0)
        ;
    int failed = stop == 0 && rc != SQLITE_DONE ? s_fail(self, what) : 0;
    sqlite3_finalize(stmt);
    return stop < 0 ? -1 : failed;
}

//  A growing array of rows, filled by s_walk through s_rows_add.
typedef struct {
    node_state_t *self;                          //  For the error
    const char *what;                            //  What is being read
    char *items;                                 //  Rows read, realloc'd
    size_t count;                                //  Entries in items
    size_t size;                                 //  Bytes of one entry
    void (*read)(sqlite3_stmt *stmt, void *out); //  Fills one entry from a row
} s_rows_t;

static int s_rows_add(sqlite3_stmt *stmt, void *arg)
{
    s_rows_t *rows = arg;
    char *grown = realloc(rows->items, (rows->count + 1) * rows->size);
    if (!grown) {
        snprintf(rows->self->error, sizeof rows->self->error, "%s: out of memory", rows->what);
        return -1;
    }
    rows->items = grown;
    rows->read(stmt, grown + rows->count++ * rows->size);
    return 0;
}

//  Every row of stmt as an array of size-byte entries filled by read, in
//  *items_p (free it) and *count_p. Returns 0, or -1 with the error recorded.
static int s_rows(node_state_t *self, sqlite3_stmt *stmt, size_t size,
                  void (*read)(sqlite3_stmt *stmt, void *out), void **items_p, size_t *count_p,
                  const char *what)
{
    *items_p = NULL;
    *count_p = 0;
    s_rows_t rows = {.self = self, .what = what, .size = size, .read = read};
    if (s_walk(self, stmt, s_rows_add, &rows, what)) {
        free(rows.items);
        return -1;
    }
    *items_p = rows.items;
    *count_p = rows.count;
    return 0;
}

static int64_t s_now(void)
{
    return (int64_t)time(NULL);
}

//  Prepares sql and binds the arguments described by fmt (see the top).
//  Returns the statement (finalize it), or NULL with the error recorded.
static sqlite3_stmt *s_vprepare(node_state_t *self, const char *sql, const char *fmt, va_list ap)
{
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(self->db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        s_fail(self, "prepare");
        return NULL;
    }
    //  A format that does not match the statement is a programmer error.
    assert(sqlite3_bind_parameter_count(stmt) == (int)(fmt ? strlen(fmt) : 0));
    int rc = SQLITE_OK;
    for (int i = 0; fmt && fmt[i] && rc == SQLITE_OK; i++) {
        int at = i + 1;
        if (fmt[i] == 't') {
            rc = sqlite3_bind_text(stmt, at, va_arg(ap, const char *), -1, SQLITE_TRANSIENT);
        } else if (fmt[i] == 'z') {
            const char *text = va_arg(ap, const char *);
            rc = text && *text ? sqlite3_bind_text(stmt, at, text, -1, SQLITE_TRANSIENT)
                               : sqlite3_bind_null(stmt, at);
        } else if (fmt[i] == 'i') {
            rc = sqlite3_bind_int64(stmt, at, va_arg(ap, int64_t));
        } else if (fmt[i] == 'b') {
            const void *data = va_arg(ap, const void *);
            size_t size = va_arg(ap, size_t);
            rc = sqlite3_bind_blob64(stmt, at, data ? data : "", size, SQLITE_TRANSIENT);
        }
    }
    if (rc != SQLITE_OK) {
        s_fail(self, "bind");
        sqlite3_finalize(stmt);
        return NULL;
    }
    return stmt;
}

static sqlite3_stmt *s_prepare(node_state_t *self, const char *sql, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sqlite3_stmt *stmt = s_vprepare(self, sql, fmt, ap);
    va_end(ap);
    return stmt;
}

//  Runs a statement returning no rows. Returns the number of rows changed
//  (>= 0), or -1.
static int s_exec(node_state_t *self, const char *sql, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sqlite3_stmt *stmt = s_vprepare(self, sql, fmt, ap);
    va_end(ap);
    if (!stmt)
        return -1;
    int rc = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE)
        return s_fail(self, "write");
    return sqlite3_changes(self->db);
}

//  0 when a row changed, 1 when none matched, -1 on error.
static int s_exec_one(int changed)
{
    return changed < 0 ? -1 : changed == 0 ? 1 : 0;
}

static void s_copy(sqlite3_stmt *stmt, int col, char *buf, size_t size)
{
    const unsigned char *text = sqlite3_column_text(stmt, col);
    snprintf(buf, size, "%s", text ? (const char *)text : "");
}

//  Field set from a BLOB column (NULL column: empty set). NULL when the blob
//  is damaged or memory ran out.
static node_fields_t *s_fields(sqlite3_stmt *stmt, int col)
{
    const void *data = sqlite3_column_blob(stmt, col);
    int size = sqlite3_column_bytes(stmt, col);
    return data ? node_fields_decode(data, (size_t)size) : node_fields_new();
}

//  Steps a statement expected to return at most one row. Returns 0 with a
//  row, 1 when none, -1 on error (statement finalized on 1 and -1).
static int s_step_row(node_state_t *self, sqlite3_stmt *stmt)
{
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        return 0;
    sqlite3_finalize(stmt);
    return rc == SQLITE_DONE ? 1 : s_fail(self, "read");
}

//  --- store

static int s_mkdir(const char *dir, char *err, size_t errlen)
{
    if (mkdir(dir, 0700) == 0 || errno == EEXIST)
        return 0;
    snprintf(err, errlen, "cannot create state directory %s: %s", dir, strerror(errno));
    return -1;
}

//  Reads the schema version into *version (0 when the database is new).
static int s_schema_version(node_state_t *self, long *version)
{
    sqlite3_stmt *stmt = s_prepare(self, "SELECT value FROM meta WHERE key = 'schema'", NULL);
    if (!stmt)
        return -1;
    int rc = s_step_row(self, stmt);
    *version = 0;
    if (rc)
        return rc < 0 ? -1 : 0;
    *version = strtol((const char *)sqlite3_column_text(stmt, 0), NULL, 10);
    sqlite3_finalize(stmt);
    return 0;
}

//  Columns added after schema version 1 was released. A column with a
//  default that older code never names needs no new schema version: both
//  read and write the same file.
static const struct {
    const char *table;  //  Table it belongs to
    const char *column; //  Its name
    const char *decl;   //  Type and default
} s_added[] = {
    {"connections", "fingerprint", "TEXT NOT NULL DEFAULT ''"},
    {"connections", "file_cursor", "TEXT NOT NULL DEFAULT ''"},
    {"connections", "attachments", "INTEGER NOT NULL DEFAULT 0"},
    {"connections", "attachment_max", "INTEGER NOT NULL DEFAULT 0"},
    {"twins", "files_scanned", "INTEGER NOT NULL DEFAULT 0"},
    {"outbox", "file", "INTEGER NOT NULL DEFAULT 0"},
};

//  Adds the columns of s_added that a database made before them lacks.
static int s_add_columns(node_state_t *self)
{
    for (size_t i = 0; i < sizeof s_added / sizeof s_added[0]; i++) {
        char sql[256];
        snprintf(sql, sizeof sql, "SELECT %s FROM %s LIMIT 0", s_added[i].column, s_added[i].table);
        sqlite3_stmt *stmt = NULL;
        if (sqlite3_prepare_v2(self->db, sql, -1, &stmt, NULL) == SQLITE_OK) {
            sqlite3_finalize(stmt);
            continue;
        }
        snprintf(sql, sizeof sql, "ALTER TABLE %s ADD COLUMN %s %s", s_added[i].table,
                 s_added[i].column, s_added[i].decl);
        if (sqlite3_exec(self->db, sql, NULL, NULL, NULL) != SQLITE_OK)
            return s_fail(self, "add a column");
    }
    return 0;
}

//  Creates the schema, or checks the version of an existing one. One
//  write transaction, so that processes opening a new database at the same
//  moment (the daemon and an admin command) do not both create it.
static int s_schema_check(node_state_t *self, char *err, size_t errlen)
{
    long version = 0;
    int rc = node_state_begin(self);
    if (rc == 0 && sqlite3_exec(self->db, s_schema, NULL, NULL, NULL) != SQLITE_OK)
        rc = s_fail(self, "create schema");
    if (rc == 0)
        rc = s_add_columns(self);
    if (rc == 0)
        rc = s_schema_version(self, &version);
    if (rc == 0 && version == 0 &&
        s_exec(self, "INSERT INTO meta(key, value) VALUES('schema', ?)", "i",
               (int64_t)NODE_STATE_SCHEMA) < 0)
        rc = -1;
    if (rc == 0)
        rc = node_state_commit(self);
    if (rc) {
        node_state_rollback(self);
        snprintf(err, errlen, "cannot set up the state database: %s", self->error);
        return -1;
    }
    if (version != 0 && version != NODE_STATE_SCHEMA) {
        snprintf(err, errlen,
                 "state database has schema version %ld, this twinsync knows %d: "
                 "use the matching twinsync version",
                 version, NODE_STATE_SCHEMA);
        return -1;
    }
    return 0;
}

//  Switches the database to WAL. A concurrent first open may hold the lock
//  the switch needs for a moment: retried for up to ten seconds.
static int s_wal(node_state_t *self)
{
    for (int attempt = 0; attempt < 100; attempt++) {
        int rc = sqlite3_exec(self->db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            return sqlite3_exec(self->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL) == SQLITE_OK
                       ? 0
                       : -1;
        if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
            return -1;
        sqlite3_sleep(100);
    }
    return -1;
}

//  Makes path (node.db) mode 0600 before SQLite opens it, whatever the
//  umask: SQLite would create it 0644 less the umask, and it gives -wal and
//  -shm the database file's mode when it creates them. Files an older
//  twinsync left readable by others (node.db, -wal, -shm) lose those bits.
//  A file that exists is changed by path, never opened: closing any
//  descriptor of node.db would drop the POSIX locks SQLite holds on it in
//  this process (the daemon opens two handles). Returns 0, or -1 with a
//  reason in err.
static int s_private_files(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd); //  New: nobody holds a lock on it yet
    else if (errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    int rc = 0;
    for (int i = 0; rc == 0 && i < 3; i++) {
        char file[4200];
        snprintf(file, sizeof file, "%s%s", path, i == 0 ? "" : i == 1 ? "-wal" : "-shm");
        struct stat st;
        if (stat(file, &st) == 0 && (st.st_mode & 077))
            rc = chmod(file, st.st_mode & 0700);
    }
    if (rc)
        snprintf(err, errlen, "cannot make %s private (0600): %s", path, strerror(errno));
    return rc;
}

node_state_t *node_state_open(const char *dir, char *err, size_t errlen)
{
    if (s_mkdir(dir, err, errlen))
        return NULL;
    node_state_t *self = calloc(1, sizeof(node_state_t));
    char *path = NULL;
    if (!self || asprintf(&path, "%s/%s", dir, NODE_STATE_FILE) < 0) {
        snprintf(err, errlen, "out of memory");
        free(self);
        return NULL;
    }
    if (s_private_files(path, err, errlen)) {
        free(path);
        free(self);
        return NULL;
    }
    int rc = sqlite3_open_v2(
        path, &self->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    free(path);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s/%s: %s", dir, NODE_STATE_FILE,
                 self->db ? sqlite3_errmsg(self->db) : "out of memory");
        node_state_destroy(&self);
        return NULL;
    }
    sqlite3_busy_timeout(self->db, 10000);
    if (s_wal(self)) {
        snprintf(err, errlen, "cannot set WAL mode on %s/%s: %s", dir, NODE_STATE_FILE,
                 sqlite3_errmsg(self->db));
        node_state_destroy(&self);
        return NULL;
    }
    if (s_schema_check(self, err, errlen))
        node_state_destroy(&self);
    return self;
}

void node_state_destroy(node_state_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    node_state_t *self = *self_p;
    if (self->db && !sqlite3_get_autocommit(self->db))
        sqlite3_exec(self->db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close_v2(self->db);
    free(self);
    *self_p = NULL;
}

const char *node_state_error(const node_state_t *self)
{
    return self->error;
}

int node_state_begin(node_state_t *self)
{
    return sqlite3_exec(self->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK
               ? 0
               : s_fail(self, "begin");
}

int node_state_commit(node_state_t *self)
{
    if (sqlite3_exec(self->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK)
        return 0;
    s_fail(self, "commit");
    node_state_rollback(self);
    return -1;
}

void node_state_rollback(node_state_t *self)
{
    if (!sqlite3_get_autocommit(self->db))
        sqlite3_exec(self->db, "ROLLBACK", NULL, NULL, NULL);
}

//  --- meta

int node_state_meta_set(node_state_t *self, const char *key, const char *value)
{
    return s_exec(self, "INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", "tt", key, value) <
                   0
               ? -1
               : 0;
}

int node_state_meta_get(node_state_t *self, const char *key, char *buf, size_t size)
{
    sqlite3_stmt *stmt = s_prepare(self, "SELECT value FROM meta WHERE key = ?", "t", key);
    if (!stmt)
        return -1;
    int rc = s_step_row(self, stmt);
    if (rc)
        return rc;
    s_copy(stmt, 0, buf, size);
    sqlite3_finalize(stmt);
    return 0;
}

static void s_restored_key(const char *conn, char *key, size_t size)
{
    snprintf(key, size, "restored:%s", conn);
}

int node_state_conn_mark_restored(node_state_t *self, const char *conn)
{
    char key[PROTO_MAX_ID + 16];
    s_restored_key(conn, key, sizeof key);
    return node_state_meta_set(self, key, "1");
}

int node_state_conn_restored(node_state_t *self, const char *conn)
{
    char key[PROTO_MAX_ID + 16], value[8];
    s_restored_key(conn, key, sizeof key);
    int rc = node_state_meta_get(self, key, value, sizeof value);
    return rc < 0 ? -1 : rc == 0;
}

//  --- connections

const char *node_conn_status_name(node_conn_status_t status)
{
    switch (status) {
    case NODE_CONN_PENDING:
        return "pending";
    case NODE_CONN_JOINING:
        return "joining";
    case NODE_CONN_ACTIVE:
        return "active";
    case NODE_CONN_DEACTIVATED:
        return "deactivated";
    case NODE_CONN_ERROR:
        return "error";
    }
    return "unknown";
}

#define S_CONN_COLUMNS                                                                             \
    "id, name, mode, role, status, error_text, peer_description, peer_url, trigger,"               \
    " broker_endpoint, broker_key, expires, invite_sent, joined_at, next_out_seq, stored_seq,"     \
    " applied_in_seq, poll_cursor, last_poll_at, created_at, fingerprint, file_cursor,"            \
    " attachments, attachment_max"

static void s_read_conn(sqlite3_stmt *stmt, node_conn_t *out)
{
    memset(out, 0, sizeof *out);
    s_copy(stmt, 0, out->id, sizeof out->id);
    s_copy(stmt, 1, out->name, sizeof out->name);
    s_copy(stmt, 2, out->mode, sizeof out->mode);
    out->role = (proto_role_t)sqlite3_column_int(stmt, 3);
    out->status = (node_conn_status_t)sqlite3_column_int(stmt, 4);
    s_copy(stmt, 5, out->error_text, sizeof out->error_text);
    s_copy(stmt, 6, out->peer_description, sizeof out->peer_description);
    s_copy(stmt, 7, out->peer_url, sizeof out->peer_url);
    s_copy(stmt, 8, out->trigger, sizeof out->trigger);
    s_copy(stmt, 9, out->broker_endpoint, sizeof out->broker_endpoint);
    s_copy(stmt, 10, out->broker_key, sizeof out->broker_key);
    out->expires = sqlite3_column_int64(stmt, 11);
    out->invite_sent = sqlite3_column_int(stmt, 12) != 0;
    out->joined_at = sqlite3_column_int64(stmt, 13);
    out->next_out_seq = (uint64_t)sqlite3_column_int64(stmt, 14);
    out->stored_seq = (uint64_t)sqlite3_column_int64(stmt, 15);
    out->applied_in_seq = (uint64_t)sqlite3_column_int64(stmt, 16);
    s_copy(stmt, 17, out->poll_cursor, sizeof out->poll_cursor);
    out->last_poll_at = sqlite3_column_int64(stmt, 18);
    out->created_at = sqlite3_column_int64(stmt, 19);
    s_copy(stmt, 20, out->fingerprint, sizeof out->fingerprint);
    s_copy(stmt, 21, out->file_cursor, sizeof out->file_cursor);
    out->attachments = (node_attach_mode_t)sqlite3_column_int(stmt, 22);
    out->attachment_max = (uint64_t)sqlite3_column_int64(stmt, 23);
}

int node_state_conn_insert(node_state_t *self, const node_conn_t *conn)
{
    int rc =
        s_exec(self,
               "INSERT INTO connections(" S_CONN_COLUMNS ") VALUES"
               "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
               "tttiittttttiiiiiitiittii", conn->id, conn->name, conn->mode, (int64_t)conn->role,
               (int64_t)conn->status, conn->error_text, conn->peer_description, conn->peer_url,
               conn->trigger, conn->broker_endpoint, conn->broker_key, conn->expires,
               (int64_t)conn->invite_sent, conn->joined_at,
               (int64_t)(conn->next_out_seq ? conn->next_out_seq : 1), (int64_t)conn->stored_seq,
               (int64_t)conn->applied_in_seq, conn->poll_cursor, conn->last_poll_at,
               conn->created_at ? conn->created_at : s_now(), conn->fingerprint, conn->file_cursor,
               (int64_t)conn->attachments, (int64_t)conn->attachment_max);
    if (rc < 0 && sqlite3_extended_errcode(self->db) == SQLITE_CONSTRAINT_UNIQUE)
        return 1;
    if (rc < 0 && sqlite3_extended_errcode(self->db) == SQLITE_CONSTRAINT_PRIMARYKEY)
        return 1;
    return rc < 0 ? -1 : 0;
}

int node_state_conn_get(node_state_t *self, const char *id_or_name, node_conn_t *out)
{
    sqlite3_stmt *stmt = s_prepare(self,
                                   "SELECT " S_CONN_COLUMNS " FROM connections"
                                   " WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1",
                                   "t", id_or_name);
    if (!stmt)
        return -1;
    int rc = s_step_row(self, stmt);
    if (rc)
        return rc;
    s_read_conn(stmt, out);
    sqlite3_finalize(stmt);
    return 0;
}

//  s_rows reader of a connection row.
static void s_read_conn_row(sqlite3_stmt *stmt, void *out)
{
    s_read_conn(stmt, out);
}

int node_state_conn_list(node_state_t *self, node_conn_t **list_p, size_t *count_p)
{
    return s_rows(
        self,
        s_prepare(self, "SELECT " S_CONN_COLUMNS " FROM connections ORDER BY created_at, id", NULL),
        sizeof(node_conn_t), s_read_conn_row, (void **)list_p, count_p, "list connections");
}

int node_state_conn_delete(node_state_t *self, const char *id)
{
    static const char *const tables[] = {"twins",  "comments", "outbox",  "intents", "blocked",
                                         "errors", "requests", "applied", "files",   NULL};
    bool own = sqlite3_get_autocommit(self->db) != 0;
    if (own && node_state_begin(self))
        return -1;
    int rc = 0;
    for (int i = 0; tables[i] && rc >= 0; i++) {
        char sql[96];
        snprintf(sql, sizeof sql, "DELETE FROM %s WHERE conn = ?", tables[i]);
        rc = s_exec(self, sql, "t", id);
    }
    if (rc >= 0)
        rc = s_exec(self, "DELETE FROM connections WHERE id = ?", "t", id);
    if (rc < 0) {
        if (own)
            node_state_rollback(self);
        return -1;
    }
    if (own && node_state_commit(self))
        return -1;
    return rc == 0 ? 1 : 0;
}

int node_state_conn_set_status(node_state_t *self, const char *id, node_conn_status_t status,
                               const char *error_text)
{
    return s_exec_one(s_exec(self, "UPDATE connections SET status = ?, error_text = ? WHERE id = ?",
                             "itt", (int64_t)status, error_text ? error_text : "", id));
}

int node_state_conn_set_trigger(node_state_t *self, const char *id, const char *trigger)
{
    return s_exec_one(
        s_exec(self, "UPDATE connections SET trigger = ? WHERE id = ?", "tt", trigger, id));
}

int node_state_conn_set_peer(node_state_t *self, const char *id, const char *description,
                             int64_t joined_at)
{
    return s_exec_one(s_exec(self,
                             "UPDATE connections SET peer_description = ?, joined_at = ?"
                             " WHERE id = ?",
                             "tit", description ? description : "", joined_at, id));
}

int node_state_conn_set_invite_sent(node_state_t *self, const char *id, bool sent)
{
    return s_exec_one(s_exec(self, "UPDATE connections SET invite_sent = ? WHERE id = ?", "it",
                             (int64_t)sent, id));
}

int node_state_conn_set_cursor(node_state_t *self, const char *id, const char *cursor,
                               int64_t last_poll_at)
{
    return s_exec_one(s_exec(self,
                             "UPDATE connections SET poll_cursor = ?, last_poll_at = ?"
                             " WHERE id = ?",
                             "tit", cursor, last_poll_at, id));
}

int node_state_conn_set_stored(node_state_t *self, const char *id, uint64_t seq)
{
    return s_exec_one(s_exec(self,
                             "UPDATE connections SET stored_seq = max(stored_seq, ?) WHERE id = ?",
                             "it", (int64_t)seq, id));
}

int node_state_conn_set_next_min(node_state_t *self, const char *id, uint64_t next)
{
    return s_exec_one(s_exec(self,
                             "UPDATE connections SET next_out_seq = max(next_out_seq, ?)"
                             " WHERE id = ?",
                             "it", (int64_t)next, id));
}

int node_state_conn_set_applied(node_state_t *self, const char *id, uint64_t seq)
{
    return s_exec_one(s_exec(self,
                             "UPDATE connections SET applied_in_seq = max(applied_in_seq, ?)"
                             " WHERE id = ?",
                             "it", (int64_t)seq, id));
}

int node_state_applied_put(node_state_t *self, const char *conn, uint64_t seq,
                           const uint8_t digest[NODE_DIGEST_SIZE])
{
    if (s_exec(self, "INSERT OR REPLACE INTO applied(conn, seq, digest) VALUES (?, ?, ?)", "tib",
               conn, (int64_t)seq, digest, (size_t)NODE_DIGEST_SIZE) < 0)
        return -1;
    //  Only the recent ones can be delivered again
    return s_exec(self, "DELETE FROM applied WHERE conn = ? AND seq <= ?", "ti", conn,
                  (int64_t)seq - NODE_APPLIED_KEPT) < 0
               ? -1
               : 0;
}

int node_state_applied_get(node_state_t *self, const char *conn, uint64_t seq,
                           uint8_t digest[NODE_DIGEST_SIZE])
{
    sqlite3_stmt *stmt = s_prepare(self, "SELECT digest FROM applied WHERE conn = ? AND seq = ?",
                                   "ti", conn, (int64_t)seq);
    if (!stmt)
        return -1;
    int rc = s_step_row(self, stmt);
    if (rc)
        return rc;
    int ok = sqlite3_column_bytes(stmt, 0) == NODE_DIGEST_SIZE;
    if (ok)
        memcpy(digest, sqlite3_column_blob(stmt, 0), NODE_DIGEST_SIZE);
    sqlite3_finalize(stmt);
    return ok ? 0 : 1;
}

int node_state_conn_take_seq(node_state_t *self, const char *id, uint64_t *seq)
{
    sqlite3_stmt *stmt = s_prepare(self,
                                   "UPDATE connections SET next_out_seq = next_out_seq + 1"
                                   " WHERE id = ? RETURNING next_out_seq - 1",
                                   "t", id);
    if (!stmt)
        return -1;
    int rc = s_step_row(self, stmt);
    if (rc)
        return rc;
    *seq = (uint64_t)sqlite3_column_int64(stmt, 0);
    rc = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    return rc == SQLITE_DONE ? 0 : s_fail(self, "take seq");
}

//  --- twins

void node_twin_clear(node_twin_t *twin)
{
    node_fields_destroy(&twin->local);
    node_fields_destroy(&twin->previous);
    node_fields_destroy(&twin->pending);
    memset(twin, 0, sizeof *twin);
}

#define S_TWIN_COLUMNS                                                                             \
    "conn, local_sys_id, local_number, remote_sys_id, remote_number, under_sync, peer_stopped,"    \
    " local_fields, previous_fields, pending_fields, last_sent_seq, acked_seq, mod_count,"         \
    " last_sync_at, created_at"

//  Fills *out from a twins row. Returns 0, or -1 when a field set is damaged.
static int s_read_twin(node_state_t *self, sqlite3_stmt *stmt, node_twin_t *out)
{
    node_twin_clear(out);
    s_copy(stmt, 0, out->conn, sizeof out->conn);
    s_copy(stmt, 1, out->local_sys_id, sizeof out->local_sys_id);
    s_copy(stmt, 2, out->local_number, sizeof out->local_number);
    s_copy(stmt, 3, out->remote_sys_id, sizeof out->remote_sys_id);
    s_copy(stmt, 4, out->remote_number, sizeof out->remote_number);
    out->under_sync = sqlite3_column_int(stmt, 5) != 0;
    out->peer_stopped = sqlite3_column_int(stmt, 6) != 0;
    out->local = s_fields(stmt, 7);
    out->previous = s_fields(stmt, 8);
    out->pending = s_fields(stmt, 9);
    out->last_sent_seq = (uint64_t)sqlite3_column_int64(stmt, 10);
    out->acked_seq = (uint64_t)sqlite3_column_int64(stmt, 11);
    s_copy(stmt, 12, out->mod_count, sizeof out->mod_count);
    out->last_sync_at = sqlite3_column_int64(stmt, 13);
    out->created_at = sqlite3_column_int64(stmt, 14);
    if (out->local && out->previous && out->pending)
        return 0;
    snprintf(self->error, sizeof self->error, "twin %s: damaged field set", out->local_sys_id);
    node_twin_clear(out);
    return -1;
}

//  Runs a twin lookup (sql selects S_TWIN_COLUMNS with two text parameters).
static int s_twin_lookup(node_state_t *self, const char *sql, const char *conn, const char *key,
                         node_twin_t *out)
{
    node_twin_clear(out);
    sqlite3_stmt *stmt = s_prepare(self, sql, "tt", conn, key);
    if (!stmt)
        return -1;
    int rc = s_step_row(self, stmt);
    if (rc)
        return rc;
    rc = s_read_twin(self, stmt, out);
    sqlite3_finalize(stmt);
    return rc;
}

int node_state_twin_by_local(node_state_t *self, const char *conn, const char *sys_id,
                             node_twin_t *out)
{
    return s_twin_lookup(self,
                         "SELECT " S_TWIN_COLUMNS " FROM twins WHERE conn = ? AND local_sys_id = ?",
                         conn, sys_id, out);
}

int node_state_twin_by_remote(node_state_t *self, const char *conn, const char *sys_id,
                              node_twin_t *out)
{
    return s_twin_lookup(
        self, "SELECT " S_TWIN_COLUMNS " FROM twins WHERE conn = ? AND remote_sys_id = ?", conn,
        sys_id, out);
}

int node_state_twin_by_number(node_state_t *self, const char *conn, const char *number,
                              node_twin_t *out)
{
    return s_twin_lookup(self,
                         "SELECT " S_TWIN_COLUMNS " FROM twins WHERE conn = ?1 AND"
                         " (local_number = ?2 OR remote_number = ?2)"
                         " ORDER BY local_number = ?2 DESC LIMIT 1",
                         conn, number, out);
}

int node_state_twin_put(node_state_t *self, const node_twin_t *twin)
{
    proto_buf_t local, previous, pending;
    proto_buf_init(&local);
    proto_buf_init(&previous);
    proto_buf_init(&pending);
    int rc = -1;
    if (node_fields_encode(twin->local, &local) || node_fields_encode(twin->previous, &previous) ||
        node_fields_encode(twin->pending, &pending)) {
        snprintf(self->error, sizeof self->error, "out of memory");
        goto done;
    }
    rc = s_exec(self,
                "INSERT INTO twins(" S_TWIN_COLUMNS ") VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(conn, local_sys_id) DO UPDATE SET"
                " local_number = excluded.local_number, remote_sys_id = excluded.remote_sys_id,"
                " remote_number = excluded.remote_number, peer_stopped = excluded.peer_stopped,"
                " local_fields = excluded.local_fields,"
                " previous_fields = excluded.previous_fields,"
                " pending_fields = excluded.pending_fields,"
                " last_sent_seq = excluded.last_sent_seq, acked_seq = excluded.acked_seq,"
                " mod_count = excluded.mod_count, last_sync_at = excluded.last_sync_at",
                "tttztiibbbiitii", twin->conn, twin->local_sys_id, twin->local_number,
                twin->remote_sys_id, twin->remote_number, (int64_t)twin->under_sync,
                (int64_t)twin->peer_stopped, local.data, local.size, previous.data, previous.size,
                pending.data, pending.size, (int64_t)twin->last_sent_seq, (int64_t)twin->acked_seq,
                twin->mod_count, twin->last_sync_at, twin->created_at ? twin->created_at : s_now());
    rc = rc < 0 ? -1 : 0;
done:
    proto_buf_release(&local);
    proto_buf_release(&previous);
    proto_buf_release(&pending);
    return rc;
}

int node_state_twin_set_sync(node_state_t *self, const char *conn, const char *local_sys_id,
                             bool under_sync)
{
    return s_exec_one(s_exec(self,
                             "UPDATE twins SET under_sync = ?1,"
                             " peer_stopped = CASE WHEN ?1 THEN 0 ELSE peer_stopped END"
                             " WHERE conn = ?2 AND local_sys_id = ?3",
                             "itt", (int64_t)under_sync, conn, local_sys_id));
}

//  A caller's twin callback, for s_walk.
typedef struct {
    node_state_t *self;                            //  For s_read_twin
    int (*fn)(const node_twin_t *twin, void *arg); //  The caller's
    void *arg;                                     //  Its argument
} s_twin_walk_t;

static int s_twin_row(sqlite3_stmt *stmt, void *arg)
{
    s_twin_walk_t *walk = arg;
    node_twin_t twin = {0};
    if (s_read_twin(walk->self, stmt, &twin))
        return -1;
    int stop = walk->fn(&twin, walk->arg);
    node_twin_clear(&twin);
    return stop ? 1 : 0;
}

int node_state_twin_each(node_state_t *self, const char *conn,
                         int (*fn)(const node_twin_t *twin, void *arg), void *arg)
{
    s_twin_walk_t walk = {self, fn, arg};
    return s_walk(self,
                  s_prepare(self,
                            "SELECT " S_TWIN_COLUMNS
                            " FROM twins WHERE conn = ? ORDER BY created_at, rowid",
                            "t", conn),
                  s_twin_row, &walk, "list twins");
}

//  Runs a one-row, one-integer-column query.
static int s_count(node_state_t *self, sqlite3_stmt *stmt, uint64_t *count)
{
    if (!stmt)
        return -1;
    int rc = s_step_row(self, stmt);
    if (rc)
        return -1;
    *count = (uint64_t)sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    return 0;
}

int node_state_twin_count(node_state_t *self, const char *conn, uint64_t *total, uint64_t *synced)
{
    sqlite3_stmt *stmt = s_prepare(
        self, "SELECT count(*), coalesce(sum(under_sync), 0) FROM twins WHERE conn = ?", "t", conn);
    if (!stmt)
        return -1;
    if (s_step_row(self, stmt))
        return -1;
    *total = (uint64_t)sqlite3_column_int64(stmt, 0);
    *synced = (uint64_t)sqlite3_column_int64(stmt, 1);
    sqlite3_finalize(stmt);
    return 0;
}

//  --- comments

int node_state_comment_seen(node_state_t *self, const char *conn, node_comment_dir_t dir,
                            const char *journal_id, bool *seen)
{
    uint64_t count = 0;
    int rc = s_count(self,
                     s_prepare(self,
                               "SELECT count(*) FROM comments"
                               " WHERE conn = ? AND dir = ? AND journal_id = ?",
                               "tit", conn, (int64_t)dir, journal_id),
                     &count);
    *seen = count > 0;
    return rc;
}

int node_state_comment_add(node_state_t *self, const char *conn, node_comment_dir_t dir,
                           const char *journal_id, const char *local_sys_id)
{
    return s_exec(self,
                  "INSERT OR IGNORE INTO comments(conn, dir, journal_id, local_sys_id, created_at)"
                  " VALUES(?,?,?,?,?)",
                  "titti", conn, (int64_t)dir, journal_id, local_sys_id, s_now()) < 0
               ? -1
               : 0;
}

//  --- outbox

int node_state_outbox_add(node_state_t *self, const char *conn, uint64_t seq,
                          const uint8_t *payload, size_t size, bool file)
{
    return s_exec(self,
                  "INSERT INTO outbox(conn, seq, payload, created_at, file) VALUES(?,?,?,?,?)",
                  "tibii", conn, (int64_t)seq, payload, size, s_now(), (int64_t)file) < 0
               ? -1
               : 0;
}

//  A caller's payload callback, for s_walk over (seq, [text,] blob) rows.
typedef struct {
    int (*outbox)(uint64_t seq, const uint8_t *payload, size_t size, bool file, void *arg);
    int (*blocked)(uint64_t seq, const char *remote_sys_id, const uint8_t *plain, size_t size,
                   void *arg);
    void *arg; //  The caller's argument
} s_payload_walk_t;

static int s_outbox_row(sqlite3_stmt *stmt, void *arg)
{
    s_payload_walk_t *walk = arg;
    return walk->outbox((uint64_t)sqlite3_column_int64(stmt, 0), sqlite3_column_blob(stmt, 1),
                        (size_t)sqlite3_column_bytes(stmt, 1), sqlite3_column_int(stmt, 2) != 0,
                        walk->arg)
               ? 1
               : 0;
}

int node_state_outbox_each(node_state_t *self, const char *conn, uint64_t after, size_t limit,
                           int (*fn)(uint64_t seq, const uint8_t *payload, size_t size, bool file,
                                     void *arg),
                           void *arg)
{
    s_payload_walk_t walk = {.outbox = fn, .arg = arg};
    return s_walk(self,
                  s_prepare(self,
                            "SELECT seq, payload, file FROM outbox WHERE conn = ? AND seq > ?"
                            " ORDER BY seq LIMIT ?",
                            "tii", conn, (int64_t)after, limit ? (int64_t)limit : -1),
                  s_outbox_row, &walk, "read outbox");
}

int node_state_outbox_remove(node_state_t *self, const char *conn, uint64_t seq)
{
    int rc =
        s_exec(self, "DELETE FROM outbox WHERE conn = ? AND seq = ?", "ti", conn, (int64_t)seq);
    return rc < 0 ? -1 : 0;
}

int node_state_outbox_remove_upto(node_state_t *self, const char *conn, uint64_t seq)
{
    int rc =
        s_exec(self, "DELETE FROM outbox WHERE conn = ? AND seq <= ?", "ti", conn, (int64_t)seq);
    return rc < 0 ? -1 : 0;
}

int node_state_outbox_count(node_state_t *self, const char *conn, uint64_t *count)
{
    return s_count(self, s_prepare(self, "SELECT count(*) FROM outbox WHERE conn = ?", "t", conn),
                   count);
}

//  --- files

const char *node_file_state_name(node_file_state_t state)
{
    static const char *const names[] = {"queued",   "sending", "sent",    "receiving", "complete",
                                        "received", "refused", "skipped", "deleted",   "failed"};
    return (unsigned)state < sizeof names / sizeof names[0] ? names[state] : "unknown";
}

#define S_FILE_COLUMNS                                                                             \
    "conn, dir, file_id, record, name, content_type, size, hash, state, done, acked, downloaded,"  \
    " twin_file, text, finished, notify, created_at, updated_at"

static void s_read_file(sqlite3_stmt *stmt, void *arg)
{
    node_file_t *out = arg;
    memset(out, 0, sizeof *out);
    s_copy(stmt, 0, out->conn, sizeof out->conn);
    out->dir = (node_file_dir_t)sqlite3_column_int(stmt, 1);
    s_copy(stmt, 2, out->file_id, sizeof out->file_id);
    s_copy(stmt, 3, out->record, sizeof out->record);
    s_copy(stmt, 4, out->name, sizeof out->name);
    s_copy(stmt, 5, out->content_type, sizeof out->content_type);
    out->size = (uint64_t)sqlite3_column_int64(stmt, 6);
    s_copy(stmt, 7, out->hash, sizeof out->hash);
    out->state = (node_file_state_t)sqlite3_column_int(stmt, 8);
    out->done = (uint64_t)sqlite3_column_int64(stmt, 9);
    out->acked = (uint64_t)sqlite3_column_int64(stmt, 10);
    out->downloaded = sqlite3_column_int(stmt, 11) != 0;
    s_copy(stmt, 12, out->twin_file, sizeof out->twin_file);
    s_copy(stmt, 13, out->text, sizeof out->text);
    out->finished = sqlite3_column_int(stmt, 14) != 0;
    out->notify = sqlite3_column_int(stmt, 15) != 0;
    out->created_at = sqlite3_column_int64(stmt, 16);
    out->updated_at = sqlite3_column_int64(stmt, 17);
}

int node_state_file_add(node_state_t *self, const node_file_t *f)
{
    int64_t now = s_now();
    int rc = s_exec(self,
                    "INSERT OR IGNORE INTO files(" S_FILE_COLUMNS
                    ") VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    "tittttitiiiittiiii", f->conn, (int64_t)f->dir, f->file_id, f->record, f->name,
                    f->content_type, (int64_t)f->size, f->hash, (int64_t)f->state, (int64_t)f->done,
                    (int64_t)f->acked, (int64_t)f->downloaded, f->twin_file, f->text,
                    (int64_t)f->finished, (int64_t)f->notify, now, now);
    return rc < 0 ? -1 : rc == 0 ? 1 : 0;
}

int node_state_file_get(node_state_t *self, const char *conn, node_file_dir_t dir,
                        const char *file_id, node_file_t *out)
{
    sqlite3_stmt *stmt = s_prepare(self,
                                   "SELECT " S_FILE_COLUMNS " FROM files"
                                   " WHERE conn = ? AND dir = ? AND file_id = ?",
                                   "tit", conn, (int64_t)dir, file_id);
    if (!stmt)
        return -1;
    int rc = s_step_row(self, stmt);
    if (rc)
        return rc;
    s_read_file(stmt, out);
    sqlite3_finalize(stmt);
    return 0;
}

int node_state_file_put(node_state_t *self, const node_file_t *f)
{
    return s_exec_one(s_exec(self,
                             "UPDATE files SET name = ?, content_type = ?, size = ?, hash = ?,"
                             " state = ?, done = ?, acked = ?, downloaded = ?, twin_file = ?,"
                             " text = ?, finished = ?, notify = ?, updated_at = ?"
                             " WHERE conn = ? AND dir = ? AND file_id = ?",
                             "ttitiiiittiiitit", f->name, f->content_type, (int64_t)f->size,
                             f->hash, (int64_t)f->state, (int64_t)f->done, (int64_t)f->acked,
                             (int64_t)f->downloaded, f->twin_file, f->text, (int64_t)f->finished,
                             (int64_t)f->notify, s_now(), f->conn, (int64_t)f->dir, f->file_id));
}

int node_state_file_list(node_state_t *self, const char *conn, node_file_dir_t dir,
                         const node_file_state_t *states, size_t n, const char *record,
                         size_t limit, node_file_t **list_p, size_t *count_p)
{
    //  The states are small numbers: a bit mask keeps the statement fixed.
    int64_t mask = 0;
    for (size_t i = 0; i < n; i++)
        mask |= (int64_t)1 << states[i];
    return s_rows(self,
                  s_prepare(self,
                            "SELECT " S_FILE_COLUMNS " FROM files WHERE (?1 IS NULL OR conn = ?1)"
                            " AND dir = ?2 AND (?3 = 0 OR (?3 >> state) & 1)"
                            " AND (?4 IS NULL OR record = ?4)"
                            " ORDER BY created_at, rowid LIMIT ?5",
                            "ziizi", conn, (int64_t)dir, mask, record, limit ? (int64_t)limit : -1),
                  sizeof(node_file_t), s_read_file, (void **)list_p, count_p, "list files");
}

int node_state_file_list_owed(node_state_t *self, const char *conn, node_file_t **list_p,
                              size_t *count_p)
{
    return s_rows(self,
                  s_prepare(self,
                            "SELECT " S_FILE_COLUMNS " FROM files WHERE conn = ? AND notify"
                            " ORDER BY created_at, rowid",
                            "t", conn),
                  sizeof(node_file_t), s_read_file, (void **)list_p, count_p, "list files");
}

int node_state_file_list_twin(node_state_t *self, const char *conn, const char *local_sys_id,
                              const char *remote_sys_id, node_file_t **list_p, size_t *count_p)
{
    return s_rows(self,
                  s_prepare(self,
                            "SELECT " S_FILE_COLUMNS " FROM files WHERE conn = ?"
                            " AND ((dir = 0 AND record = ?) OR (dir = 1 AND record = ?))"
                            " ORDER BY created_at, rowid",
                            "ttt", conn, local_sys_id, remote_sys_id),
                  sizeof(node_file_t), s_read_file, (void **)list_p, count_p, "list files");
}

int node_state_conn_set_file_cursor(node_state_t *self, const char *id, const char *cursor)
{
    return s_exec_one(
        s_exec(self, "UPDATE connections SET file_cursor = ? WHERE id = ?", "tt", cursor, id));
}

int node_state_conn_set_attachments(node_state_t *self, const char *id, node_attach_mode_t mode,
                                    uint64_t max_bytes)
{
    return s_exec_one(s_exec(self,
                             "UPDATE connections SET attachments = ?, attachment_max = ?"
                             " WHERE id = ?",
                             "iit", (int64_t)mode, (int64_t)max_bytes, id));
}

//  s_walk reader that copies one sys_id into the caller's array.
typedef struct {
    char (*ids)[PROTO_MAX_SN_ID + 1]; //  Where to write
    size_t count;                     //  Written so far
} s_ids_t;

static int s_id_row(sqlite3_stmt *stmt, void *arg)
{
    s_ids_t *ids = arg;
    s_copy(stmt, 0, ids->ids[ids->count++], PROTO_MAX_SN_ID + 1);
    return 0;
}

int node_state_twin_unscanned(node_state_t *self, const char *conn, size_t limit,
                              char (*ids)[PROTO_MAX_SN_ID + 1], size_t *count_p)
{
    s_ids_t walk = {.ids = ids};
    int rc = s_walk(self,
                    s_prepare(self,
                              "SELECT local_sys_id FROM twins WHERE conn = ? AND under_sync"
                              " AND NOT peer_stopped AND NOT files_scanned"
                              " ORDER BY created_at LIMIT ?",
                              "ti", conn, (int64_t)limit),
                    s_id_row, &walk, "list twins to scan");
    *count_p = walk.count;
    return rc;
}

int node_state_twin_set_scanned(node_state_t *self, const char *conn, const char *local_sys_id)
{
    return s_exec_one(
        s_exec(self, "UPDATE twins SET files_scanned = 1 WHERE conn = ? AND local_sys_id = ?", "tt",
               conn, local_sys_id));
}

//  --- intents

int node_state_intent_add(node_state_t *self, const char *conn, uint64_t seq)
{
    return s_exec(self, "INSERT OR IGNORE INTO intents(conn, seq, created_at) VALUES(?,?,?)", "tii",
                  conn, (int64_t)seq, s_now()) < 0
               ? -1
               : 0;
}

int node_state_intent_exists(node_state_t *self, const char *conn, uint64_t seq, bool *exists)
{
    uint64_t count = 0;
    int rc = s_count(self,
                     s_prepare(self, "SELECT count(*) FROM intents WHERE conn = ? AND seq = ?",
                               "ti", conn, (int64_t)seq),
                     &count);
    *exists = count > 0;
    return rc;
}

int node_state_intent_remove(node_state_t *self, const char *conn, uint64_t seq)
{
    return s_exec(self, "DELETE FROM intents WHERE conn = ? AND seq = ?", "ti", conn,
                  (int64_t)seq) < 0
               ? -1
               : 0;
}

//  --- blocked

int node_state_blocked_add(node_state_t *self, const char *conn, uint64_t seq,
                           const char *remote_sys_id, const uint8_t *plain, size_t size)
{
    return s_exec(self,
                  "INSERT OR IGNORE INTO blocked(conn, seq, remote_sys_id, payload, created_at)"
                  " VALUES(?,?,?,?,?)",
                  "titbi", conn, (int64_t)seq, remote_sys_id, plain, size, s_now()) < 0
               ? -1
               : 0;
}

static int s_blocked_row(sqlite3_stmt *stmt, void *arg)
{
    s_payload_walk_t *walk = arg;
    const char *remote = (const char *)sqlite3_column_text(stmt, 1);
    return walk->blocked((uint64_t)sqlite3_column_int64(stmt, 0), remote ? remote : "",
                         sqlite3_column_blob(stmt, 2), (size_t)sqlite3_column_bytes(stmt, 2),
                         walk->arg)
               ? 1
               : 0;
}

int node_state_blocked_each(node_state_t *self, const char *conn, const char *remote_sys_id,
                            int (*fn)(uint64_t seq, const char *remote_sys_id, const uint8_t *plain,
                                      size_t size, void *arg),
                            void *arg)
{
    s_payload_walk_t walk = {.blocked = fn, .arg = arg};
    return s_walk(self,
                  s_prepare(self,
                            "SELECT seq, remote_sys_id, payload FROM blocked"
                            " WHERE conn = ?1 AND (?2 IS NULL OR remote_sys_id = ?2)"
                            " ORDER BY seq",
                            "tz", conn, remote_sys_id),
                  s_blocked_row, &walk, "read blocked");
}

int node_state_blocked_remove(node_state_t *self, const char *conn, uint64_t seq)
{
    return s_exec(self, "DELETE FROM blocked WHERE conn = ? AND seq = ?", "ti", conn,
                  (int64_t)seq) < 0
               ? -1
               : 0;
}

int node_state_blocked_count(node_state_t *self, const char *conn, const char *remote_sys_id,
                             uint64_t *count)
{
    return s_count(self,
                   s_prepare(self,
                             "SELECT count(*) FROM blocked"
                             " WHERE conn = ?1 AND (?2 IS NULL OR remote_sys_id = ?2)",
                             "tz", conn, remote_sys_id),
                   count);
}

//  --- errors

#define S_ERROR_COLUMNS                                                                            \
    "id, conn, local_sys_id, local_number, remote_sys_id, remote_number, seq, origin, code,"       \
    " message, created_at, updated_at, retries, retry_requested"

static void s_read_error(sqlite3_stmt *stmt, node_error_t *out)
{
    memset(out, 0, sizeof *out);
    out->id = sqlite3_column_int64(stmt, 0);
    s_copy(stmt, 1, out->conn, sizeof out->conn);
    s_copy(stmt, 2, out->local_sys_id, sizeof out->local_sys_id);
    s_copy(stmt, 3, out->local_number, sizeof out->local_number);
    s_copy(stmt, 4, out->remote_sys_id, sizeof out->remote_sys_id);
    s_copy(stmt, 5, out->remote_number, sizeof out->remote_number);
    out->seq = (uint64_t)sqlite3_column_int64(stmt, 6);
    s_copy(stmt, 7, out->origin, sizeof out->origin);
    s_copy(stmt, 8, out->code, sizeof out->code);
    s_copy(stmt, 9, out->message, sizeof out->message);
    out->created_at = sqlite3_column_int64(stmt, 10);
    out->updated_at = sqlite3_column_int64(stmt, 11);
    out->retries = sqlite3_column_int(stmt, 12);
    out->retry_requested = sqlite3_column_int(stmt, 13) != 0;
}

//  Reads one error row selected by stmt into *out. Returns 0, 1, -1.
static int s_error_row(node_state_t *self, sqlite3_stmt *stmt, node_error_t *out)
{
    if (!stmt)
        return -1;
    int rc = s_step_row(self, stmt);
    if (rc)
        return rc;
    s_read_error(stmt, out);
    sqlite3_finalize(stmt);
    return 0;
}

int node_state_error_for_twin(node_state_t *self, const char *conn, const char *sys_id,
                              const char *origin, node_error_t *out)
{
    return s_error_row(self,
                       s_prepare(self,
                                 "SELECT " S_ERROR_COLUMNS " FROM errors WHERE conn = ?1"
                                 " AND origin = ?3 AND ?2 <> ''"
                                 " AND (local_sys_id = ?2 OR remote_sys_id = ?2)"
                                 " ORDER BY id LIMIT 1",
                                 "ttt", conn, sys_id, origin),
                       out);
}

int node_state_error_add(node_state_t *self, node_error_t *error)
{
    node_error_t old;
    const char *key = *error->local_sys_id ? error->local_sys_id : error->remote_sys_id;
    int rc = *key ? node_state_error_for_twin(self, error->conn, key, error->origin, &old)
                  : s_error_row(self,
                                s_prepare(self,
                                          "SELECT " S_ERROR_COLUMNS " FROM errors WHERE conn = ?"
                                          " AND origin = ? AND seq = ? AND local_sys_id = ''"
                                          " AND remote_sys_id = '' LIMIT 1",
                                          "tti", error->conn, error->origin, (int64_t)error->seq),
                                &old);
    if (rc < 0)
        return -1;
    int64_t now = s_now();
    if (rc == 0) {
        error->id = old.id;
        return s_exec(self,
                      "UPDATE errors SET code = ?, message = ?, updated_at = ?,"
                      " retries = retries + 1, retry_requested = 0,"
                      " local_number = CASE WHEN ? <> '' THEN ? ELSE local_number END"
                      " WHERE id = ?",
                      "ttitti", error->code, error->message, now, error->local_number,
                      error->local_number, error->id) < 0
                   ? -1
                   : 0;
    }
    rc = s_exec(self,
                "INSERT INTO errors(conn, local_sys_id, local_number, remote_sys_id,"
                " remote_number, seq, origin, code, message, created_at, updated_at)"
                " VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                "tttttitttii", error->conn, error->local_sys_id, error->local_number,
                error->remote_sys_id, error->remote_number, (int64_t)error->seq, error->origin,
                error->code, error->message, now, now);
    if (rc < 0)
        return -1;
    error->id = sqlite3_last_insert_rowid(self->db);
    error->created_at = error->updated_at = now;
    return 0;
}

int node_state_error_get(node_state_t *self, int64_t id, node_error_t *out)
{
    return s_error_row(
        self, s_prepare(self, "SELECT " S_ERROR_COLUMNS " FROM errors WHERE id = ?", "i", id), out);
}

//  s_rows reader of an error row.
static void s_read_error_row(sqlite3_stmt *stmt, void *out)
{
    s_read_error(stmt, out);
}

int node_state_error_list(node_state_t *self, const char *conn, node_error_t **list_p,
                          size_t *count_p)
{
    return s_rows(self,
                  s_prepare(self,
                            "SELECT " S_ERROR_COLUMNS " FROM errors"
                            " WHERE ?1 IS NULL OR conn = ?1 ORDER BY id",
                            "z", conn),
                  sizeof(node_error_t), s_read_error_row, (void **)list_p, count_p, "list errors");
}

int node_state_error_request_retry(node_state_t *self, int64_t id)
{
    return s_exec_one(s_exec(self, "UPDATE errors SET retry_requested = 1 WHERE id = ?", "i", id));
}

int node_state_error_failed_again(node_state_t *self, int64_t id, const char *message)
{
    return s_exec_one(s_exec(self,
                             "UPDATE errors SET message = ?, updated_at = ?,"
                             " retries = retries + 1, retry_requested = 0 WHERE id = ?",
                             "tii", message, s_now(), id));
}

int node_state_error_remove(node_state_t *self, int64_t id)
{
    return s_exec(self, "DELETE FROM errors WHERE id = ?", "i", id) < 0 ? -1 : 0;
}

int node_state_error_count(node_state_t *self, const char *conn, uint64_t *count)
{
    return s_count(
        self,
        s_prepare(self, "SELECT count(*) FROM errors WHERE ?1 IS NULL OR conn = ?1", "z", conn),
        count);
}

//  --- requests

static void s_read_request(sqlite3_stmt *stmt, node_request_t *out)
{
    memset(out, 0, sizeof *out);
    out->id = sqlite3_column_int64(stmt, 0);
    s_copy(stmt, 1, out->conn, sizeof out->conn);
    out->kind = (node_req_kind_t)sqlite3_column_int(stmt, 2);
    s_copy(stmt, 3, out->arg, sizeof out->arg);
    out->status = (node_req_status_t)sqlite3_column_int(stmt, 4);
    s_copy(stmt, 5, out->result, sizeof out->result);
    out->created_at = sqlite3_column_int64(stmt, 6);
}

static int s_request_row(node_state_t *self, sqlite3_stmt *stmt, node_request_t *out)
{
    if (!stmt)
        return -1;
    int rc = s_step_row(self, stmt);
    if (rc)
        return rc;
    s_read_request(stmt, out);
    sqlite3_finalize(stmt);
    return 0;
}

int node_state_request_add(node_state_t *self, node_request_t *request)
{
    request->created_at = s_now();
    request->status = NODE_REQ_QUEUED;
    if (s_exec(self, "INSERT INTO requests(conn, kind, arg, created_at) VALUES(?,?,?,?)", "titi",
               request->conn, (int64_t)request->kind, request->arg, request->created_at) < 0)
        return -1;
    request->id = sqlite3_last_insert_rowid(self->db);
    return 0;
}

#define S_REQUEST_COLUMNS "id, conn, kind, arg, status, result, created_at"

int node_state_request_get(node_state_t *self, int64_t id, node_request_t *out)
{
    return s_request_row(
        self, s_prepare(self, "SELECT " S_REQUEST_COLUMNS " FROM requests WHERE id = ?", "i", id),
        out);
}

int node_state_request_next(node_state_t *self, node_request_t *out)
{
    return s_request_row(self,
                         s_prepare(self,
                                   "SELECT " S_REQUEST_COLUMNS " FROM requests WHERE status = 0"
                                   " ORDER BY id LIMIT 1",
                                   NULL),
                         out);
}

int node_state_request_finish(node_state_t *self, int64_t id, node_req_status_t status,
                              const char *result)
{
    //  Finished requests older than a day are dropped on the way: the
    //  command that queued one reads its result within seconds.
    if (s_exec(self, "DELETE FROM requests WHERE status <> 0 AND created_at < ?", "i",
               s_now() - 86400) < 0)
        return -1;
    return s_exec_one(s_exec(self, "UPDATE requests SET status = ?, result = ? WHERE id = ?", "iti",
                             (int64_t)status, result ? result : "", id));
}
