/*  test_broker_store.c: the broker store keeps its promises (broker_store.h).

    - what is committed survives a reopen, in order, with its counters;
    - what is not committed is gone after a "crash" (destroy before commit);
    - a batch of many appends costs one commit's syncs (group commit);
    - a torn or garbled WAL tail loses exactly the last transaction, never
      loads it as data, and leaves the earlier ones whole;
    - an fsync error makes the commit fail (the broker then stops);
    - broker.db, its WAL and its shared-memory file are 0600 whatever the
      umask, and a store an older version left readable by others is made
      0600 when opened (issue 12: they were 0644 under umask 022).
    - a connection's key exchange (JOIN's kx and auth) survives a reopen,
      and a version 1 store (before the key exchange) opens, keeps its
      rows and takes one.
    - whether a message is file data is kept with it, read back with it,
      and what a removal takes is told apart; the queue row's file counters
      survive a reopen; a version 2 store (before file data) opens with
      its messages and counters, every old message a record, and takes
      file data at once; a store of a newer version is refused.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include "broker_store.h"
#include "faulty_vfs.h"

static int s_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int s_setup(void **state)
{
    char *dir = strdup("/tmp/test_broker_store.XXXXXX");
    assert_non_null(mkdtemp(dir));
    *state = dir;
    return 0;
}

static int s_teardown(void **state)
{
    nftw(*state, s_rm, 8, FTW_DEPTH | FTW_PHYS);
    free(*state);
    return 0;
}

static broker_store_t *s_open(const char *dir, const char *vfs)
{
    char err[512] = "";
    broker_store_options_t options = {.vfs = vfs, .sync = vfs ? faulty_vfs_sync_fd : NULL};
    broker_store_t *store = broker_store_open(dir, &options, err, sizeof err);
    if (!store)
        fail_msg("open: %s", err);
    return store;
}

//  Appends seqs [from, to] to qid with payload "m<seq>" and updates the
//  queue row, in the current transaction.
static void s_append_range(broker_store_t *store, int64_t qid, uint64_t from, uint64_t to)
{
    for (uint64_t seq = from; seq <= to; seq++) {
        char payload[32];
        int n = snprintf(payload, sizeof payload, "m%llu", (unsigned long long)seq);
        assert_int_equal(
            broker_store_append(store, qid, seq, payload, (size_t)n, false, 1000 + (int64_t)seq),
            0);
    }
}

typedef struct {
    uint64_t seqs[4096];
    size_t count;
    bool payload_ok;
    size_t files; //  Messages read as file data
} collected_t;

static int s_collect(uint64_t seq, const void *payload, size_t size, bool file, int64_t stored_at,
                     void *arg)
{
    collected_t *c = arg;
    c->files += file;
    char expect[32];
    int n = snprintf(expect, sizeof expect, "m%llu", (unsigned long long)seq);
    if ((size_t)n != size || memcmp(expect, payload, size) != 0 || stored_at != 1000 + (int64_t)seq)
        c->payload_ok = false;
    c->seqs[c->count++] = seq;
    return 0;
}

static collected_t *s_read_all(broker_store_t *store, int64_t qid)
{
    collected_t *c = calloc(1, sizeof *c);
    c->payload_ok = true;
    assert_true(broker_store_read(store, qid, 0, 4096, s_collect, c) >= 0);
    return c;
}

typedef struct {
    broker_store_queue_t rows[8];
    char conns[8][64];
    size_t count;
} queues_t;

static int s_queue_row(const broker_store_queue_t *queue, void *arg)
{
    queues_t *q = arg;
    q->rows[q->count] = *queue;
    snprintf(q->conns[q->count], sizeof q->conns[0], "%s", queue->conn);
    q->rows[q->count].conn = q->conns[q->count];
    q->count++;
    return 0;
}

static void test_commit_survives_reopen(void **state)
{
    broker_store_t *store = s_open(*state, NULL);
    int64_t qid = 0;
    assert_int_equal(broker_store_queue_create(store, "c1", 0, &qid), 0);
    s_append_range(store, qid, 1, 10);
    broker_store_queue_t row = {.qid = qid, .last_seq = 10, .count = 10, .bytes = 21};
    assert_int_equal(broker_store_queue_save(store, &row), 0);
    assert_true(broker_store_dirty(store));
    assert_int_equal(broker_store_commit(store), 0);
    assert_false(broker_store_dirty(store));
    broker_store_destroy(&store);
    assert_null(store);

    store = s_open(*state, NULL);
    queues_t queues = {0};
    assert_int_equal(broker_store_each_queue(store, s_queue_row, &queues), 0);
    assert_int_equal(queues.count, 1);
    assert_string_equal(queues.rows[0].conn, "c1");
    assert_int_equal(queues.rows[0].last_seq, 10);
    assert_int_equal(queues.rows[0].count, 10);
    assert_int_equal(queues.rows[0].bytes, 21);

    collected_t *c = s_read_all(store, qid);
    assert_int_equal(c->count, 10);
    assert_true(c->payload_ok);
    for (size_t i = 0; i < c->count; i++)
        assert_int_equal(c->seqs[i], i + 1);
    free(c);
    assert_int_equal(broker_store_oldest(store, qid), 1001);
    broker_store_destroy(&store);
    broker_store_destroy(&store); //  idempotent
}

static void test_uncommitted_is_gone(void **state)
{
    broker_store_t *store = s_open(*state, NULL);
    int64_t qid = 0;
    assert_int_equal(broker_store_queue_create(store, "c1", 1, &qid), 0);
    s_append_range(store, qid, 1, 3);
    assert_int_equal(broker_store_commit(store), 0);
    s_append_range(store, qid, 4, 6);
    broker_store_destroy(&store); //  no commit: a crash before STORED

    store = s_open(*state, NULL);
    collected_t *c = s_read_all(store, qid);
    assert_int_equal(c->count, 3);
    assert_int_equal(c->seqs[2], 3);
    free(c);
    broker_store_destroy(&store);
}

static void test_remove_and_read_window(void **state)
{
    broker_store_t *store = s_open(*state, NULL);
    int64_t qid = 0;
    assert_int_equal(broker_store_queue_create(store, "c1", 0, &qid), 0);
    s_append_range(store, qid, 1, 20);
    assert_int_equal(broker_store_commit(store), 0);

    broker_store_removed_t gone = {0};
    assert_int_equal(broker_store_remove_upto(store, qid, 1, &gone), 0);
    assert_int_equal(gone.count, 1);
    assert_int_equal(gone.bytes, 2);
    gone = (broker_store_removed_t){0};
    assert_int_equal(broker_store_remove_upto(store, qid, 1, &gone), 0);
    assert_int_equal(gone.count, 0); //  twice: nothing left to remove
    assert_int_equal(broker_store_remove_upto(store, qid, 10, &gone), 0);
    assert_int_equal(gone.count, 9);         //  2..10
    assert_int_equal(gone.bytes, 8 * 2 + 3); //  m2..m9 are 2 bytes, m10 is 3
    assert_int_equal(gone.file_count, 0);
    assert_int_equal(gone.file_bytes, 0);
    assert_int_equal(broker_store_commit(store), 0);

    collected_t *c = calloc(1, sizeof *c);
    c->payload_ok = true;
    assert_int_equal(broker_store_read(store, qid, 12, 5, s_collect, c), 5);
    assert_int_equal(c->count, 5);
    assert_int_equal(c->seqs[0], 13);
    assert_int_equal(c->seqs[4], 17);
    assert_true(c->payload_ok);
    free(c);
    assert_int_equal(broker_store_oldest(store, qid), 1011);
    broker_store_destroy(&store);
}

static int s_conn_row(const broker_store_conn_t *conn, void *arg)
{
    broker_store_conn_t *out = arg;
    assert_string_equal(conn->conn, "conn-1");
    assert_string_equal(conn->public_key, "PUBKEY");
    assert_string_equal(conn->private_key, "PRIVKEY");
    assert_string_equal(conn->public_desc, "A");
    assert_string_equal(conn->private_desc, "B");
    memcpy(out->token_hash, conn->token_hash, 32);
    out->expires = conn->expires;
    out->token_used = conn->token_used;
    out->created = conn->created;
    return 0;
}

static void test_connections(void **state)
{
    broker_store_t *store = s_open(*state, NULL);
    broker_store_conn_t conn = {.conn = "conn-1",
                                .public_key = "PUBKEY",
                                .private_key = "",
                                .expires = 1234,
                                .public_desc = "A",
                                .created = 99};
    memset(conn.token_hash, 0xab, 32);
    assert_int_equal(broker_store_conn_save(store, &conn), 0);
    conn.private_key = "PRIVKEY";
    conn.private_desc = "B";
    conn.token_used = true;
    assert_int_equal(broker_store_conn_save(store, &conn), 0); //  replaces
    assert_int_equal(broker_store_commit(store), 0);
    broker_store_destroy(&store);

    store = s_open(*state, NULL);
    broker_store_conn_t got = {0};
    assert_int_equal(broker_store_each_conn(store, s_conn_row, &got), 0);
    assert_int_equal(got.expires, 1234);
    assert_true(got.token_used);
    assert_int_equal(got.created, 99);
    assert_int_equal(got.token_hash[31], 0xab);
    broker_store_destroy(&store);
}

static int s_conn_copy(const broker_store_conn_t *conn, void *arg)
{
    broker_store_conn_t *out = arg;
    out->has_kx = conn->has_kx;
    memcpy(out->kx, conn->kx, 32);
    memcpy(out->auth, conn->auth, 32);
    out->token_used = conn->token_used;
    assert_string_equal(conn->public_desc, "A");
    return 0;
}

static void test_join_kx_kept_and_old_store_upgraded(void **state)
{
    //  A store of schema version 1, written by hand as a 1.1 broker left it.
    char path[256];
    snprintf(path, sizeof path, "%s/%s", (const char *)*state, BROKER_STORE_FILE);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db,
                     "PRAGMA journal_mode = WAL;"
                     "CREATE TABLE connections (conn TEXT PRIMARY KEY, public_key TEXT NOT NULL,"
                     " private_key TEXT NOT NULL, token_hash BLOB NOT NULL,"
                     " expires INTEGER NOT NULL, token_used INTEGER NOT NULL,"
                     " public_desc TEXT NOT NULL, private_desc TEXT NOT NULL,"
                     " created INTEGER NOT NULL);"
                     "INSERT INTO connections VALUES ('conn-1', 'PUBKEY', '', zeroblob(32), 1234,"
                     " 0, 'A', '', 99);"
                     "PRAGMA user_version = 1;",
                     NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);

    broker_store_t *store = s_open(*state, NULL);
    broker_store_conn_t got = {0};
    assert_int_equal(broker_store_each_conn(store, s_conn_copy, &got), 0);
    assert_false(got.has_kx);
    broker_store_conn_t conn = {.conn = "conn-1",
                                .public_key = "PUBKEY",
                                .private_key = "PRIVKEY",
                                .expires = 1234,
                                .token_used = true,
                                .public_desc = "A",
                                .private_desc = "B",
                                .created = 99,
                                .has_kx = true};
    for (int i = 0; i < 32; i++) {
        conn.kx[i] = (uint8_t)(i + 1);
        conn.auth[i] = (uint8_t)(0xff - i);
    }
    assert_int_equal(broker_store_conn_save(store, &conn), 0);
    assert_int_equal(broker_store_commit(store), 0);
    broker_store_destroy(&store);

    store = s_open(*state, NULL);
    memset(&got, 0, sizeof got);
    assert_int_equal(broker_store_each_conn(store, s_conn_copy, &got), 0);
    assert_true(got.has_kx);
    assert_true(got.token_used);
    assert_memory_equal(got.kx, conn.kx, 32);
    assert_memory_equal(got.auth, conn.auth, 32);
    broker_store_destroy(&store);
}

//  Messages 1..12 of c1: every third one file data of 100 * seq bytes, the
//  others records "m<seq>"; the queue row says so.
static void s_append_mixed(broker_store_t *store, int64_t qid)
{
    static uint8_t chunk[1200];
    broker_store_queue_t row = {.qid = qid, .last_seq = 12, .count = 12};
    for (uint64_t seq = 1; seq <= 12; seq++) {
        char text[32];
        int n = snprintf(text, sizeof text, "m%llu", (unsigned long long)seq);
        bool file = seq % 3 == 0;
        size_t size = file ? 100 * seq : (size_t)n;
        assert_int_equal(broker_store_append(store, qid, seq, file ? (const void *)chunk : text,
                                             size, file, 1000 + (int64_t)seq),
                         0);
        row.bytes += size;
        row.file_count += file;
        row.file_bytes += file ? size : 0;
    }
    assert_int_equal(broker_store_queue_save(store, &row), 0);
}

static int s_flags(uint64_t seq, const void *payload, size_t size, bool file, int64_t stored_at,
                   void *arg)
{
    (void)payload, (void)stored_at;
    bool *flags = arg;
    flags[seq] = file;
    assert_int_equal(size, file ? 100 * seq : (seq < 10 ? 2 : 3));
    return 0;
}

static void test_file_data_kept_and_counted(void **state)
{
    broker_store_t *store = s_open(*state, NULL);
    int64_t qid = 0;
    assert_int_equal(broker_store_queue_create(store, "c1", 0, &qid), 0);
    s_append_mixed(store, qid);
    assert_int_equal(broker_store_commit(store), 0);
    broker_store_destroy(&store);

    //  After a reopen: the row's counters, and each message's kind.
    store = s_open(*state, NULL);
    queues_t queues = {0};
    assert_int_equal(broker_store_each_queue(store, s_queue_row, &queues), 0);
    assert_int_equal(queues.count, 1);
    assert_int_equal(queues.rows[0].count, 12);
    assert_int_equal(queues.rows[0].file_count, 4); //  3, 6, 9, 12
    assert_int_equal(queues.rows[0].file_bytes, 100 * (3 + 6 + 9 + 12));
    assert_int_equal(queues.rows[0].bytes, 100 * 30 + 6 * 2 + 2 * 3); //  m1..m8, m10, m11
    bool flags[13] = {false};
    assert_int_equal(broker_store_read(store, qid, 0, 100, s_flags, flags), 12);
    for (uint64_t seq = 1; seq <= 12; seq++)
        assert_int_equal(flags[seq], seq % 3 == 0);

    //  A removal tells what it took apart.
    broker_store_removed_t gone = {0};
    assert_int_equal(broker_store_remove_upto(store, qid, 7, &gone), 0);
    assert_int_equal(gone.count, 7);
    assert_int_equal(gone.file_count, 2);
    assert_int_equal(gone.file_bytes, 300 + 600);
    assert_int_equal(gone.bytes, 900 + 5 * 2);
    assert_int_equal(broker_store_remove_upto(store, qid, 12, &gone), 0);
    assert_int_equal(gone.count, 12); //  added to: the two calls together
    assert_int_equal(gone.file_count, 4);
    assert_int_equal(gone.file_bytes, queues.rows[0].file_bytes);
    assert_int_equal(gone.bytes, queues.rows[0].bytes);
    broker_store_destroy(&store);
}

//  The schema of version 2 (protocol 1.2), as a broker of then wrote it.
static const char *s_schema_v2 =
    "PRAGMA journal_mode = WAL;"
    "CREATE TABLE queues (qid INTEGER PRIMARY KEY, conn TEXT NOT NULL, dir INTEGER NOT NULL,"
    " last_seq INTEGER NOT NULL, count INTEGER NOT NULL, bytes INTEGER NOT NULL,"
    " UNIQUE (conn, dir));"
    "CREATE TABLE messages (qid INTEGER NOT NULL, seq INTEGER NOT NULL,"
    " stored_at INTEGER NOT NULL, payload BLOB NOT NULL, PRIMARY KEY (qid, seq));"
    "CREATE TABLE connections (conn TEXT PRIMARY KEY, public_key TEXT NOT NULL,"
    " private_key TEXT NOT NULL, token_hash BLOB NOT NULL, expires INTEGER NOT NULL,"
    " token_used INTEGER NOT NULL, public_desc TEXT NOT NULL, private_desc TEXT NOT NULL,"
    " created INTEGER NOT NULL, private_kx BLOB, private_auth BLOB);"
    "INSERT INTO connections VALUES ('c1', 'PUBKEY', '', zeroblob(32), 1234, 0, 'A', '', 99,"
    " NULL, NULL);"
    "INSERT INTO queues VALUES (1, 'c1', 0, 3, 3, 6);"
    "INSERT INTO messages VALUES (1, 1, 1001, 'm1'), (1, 2, 1002, 'm2'), (1, 3, 1003, 'm3');"
    "PRAGMA user_version = 2;";

static int s_user_version(const char *dir)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, BROKER_STORE_FILE);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *stmt;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    int version = sqlite3_column_int(stmt, 0);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return version;
}

static void test_version_2_store_upgraded(void **state)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", (const char *)*state, BROKER_STORE_FILE);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, s_schema_v2, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    //  Opens, keeps its messages and counters; everything it held is a record.
    broker_store_t *store = s_open(*state, NULL);
    assert_int_equal(s_user_version(*state), 3);
    queues_t queues = {0};
    assert_int_equal(broker_store_each_queue(store, s_queue_row, &queues), 0);
    assert_int_equal(queues.count, 1);
    assert_int_equal(queues.rows[0].last_seq, 3);
    assert_int_equal(queues.rows[0].count, 3);
    assert_int_equal(queues.rows[0].bytes, 6);
    assert_int_equal(queues.rows[0].file_count, 0);
    assert_int_equal(queues.rows[0].file_bytes, 0);
    collected_t *c = s_read_all(store, 1);
    assert_int_equal(c->count, 3);
    assert_true(c->payload_ok);
    assert_int_equal(c->files, 0);
    free(c);

    //  And takes file data at once, counted apart from the old records.
    static uint8_t chunk[500];
    assert_int_equal(broker_store_append(store, 1, 4, chunk, sizeof chunk, true, 1004), 0);
    broker_store_queue_t row = queues.rows[0];
    row.last_seq = 4;
    row.count = 4;
    row.bytes = 6 + sizeof chunk;
    row.file_count = 1;
    row.file_bytes = sizeof chunk;
    assert_int_equal(broker_store_queue_save(store, &row), 0);
    assert_int_equal(broker_store_commit(store), 0);
    broker_store_destroy(&store);

    //  Opened again (nothing left to add), the counters are what was saved.
    store = s_open(*state, NULL);
    memset(&queues, 0, sizeof queues);
    assert_int_equal(broker_store_each_queue(store, s_queue_row, &queues), 0);
    assert_int_equal(queues.rows[0].file_count, 1);
    assert_int_equal(queues.rows[0].file_bytes, sizeof chunk);
    broker_store_removed_t gone = {0};
    assert_int_equal(broker_store_remove_upto(store, 1, 4, &gone), 0);
    assert_int_equal(gone.count, 4);
    assert_int_equal(gone.file_count, 1);
    assert_int_equal(gone.file_bytes, sizeof chunk);
    assert_int_equal(broker_store_commit(store), 0);
    broker_store_destroy(&store);
}

//  A store a newer broker wrote is not touched.
static void test_newer_store_refused(void **state)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", (const char *)*state, BROKER_STORE_FILE);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db, "PRAGMA journal_mode = WAL; PRAGMA user_version = 4;", NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    char err[512] = "";
    broker_store_t *store = broker_store_open(*state, NULL, err, sizeof err);
    assert_null(store);
    assert_non_null(strstr(err, "schema version 4"));
    assert_int_equal(s_user_version(*state), 4);
}

static void test_group_commit_one_sync_per_batch(void **state)
{
    assert_int_equal(faulty_vfs_register(), 0);
    broker_store_t *store = s_open(*state, "faulty");
    int64_t qid = 0;
    assert_int_equal(broker_store_queue_create(store, "c1", 0, &qid), 0);
    assert_int_equal(broker_store_commit(store), 0);

    unsigned before = faulty_vfs_sync_calls();
    s_append_range(store, qid, 1, 500);
    assert_int_equal(broker_store_commit(store), 0);
    unsigned syncs = faulty_vfs_sync_calls() - before;
    assert_true(syncs >= 1); //  the commit really syncs the WAL
    assert_true(syncs <= 2); //  one WAL sync per batch, not per message
    broker_store_destroy(&store);
}

//  Copies src to dst byte for byte.
static void s_copy(const char *src, const char *dst)
{
    int in = open(src, O_RDONLY);
    assert_true(in >= 0);
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(out >= 0);
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        assert_int_equal(write(out, buf, (size_t)n), n);
    close(in);
    close(out);
}

typedef enum { TAIL_TORN, TAIL_GARBLED } tail_damage_t;

//  Commits seqs 1..50 then 51..100, photographs the files as a crash would
//  leave them (the WAL still holds both transactions), damages the last
//  frame, and checks that only the first transaction comes back.
static void s_damaged_tail(const char *dir, tail_damage_t damage)
{
    broker_store_t *store = s_open(dir, NULL);
    int64_t qid = 0;
    assert_int_equal(broker_store_queue_create(store, "c1", 0, &qid), 0);
    s_append_range(store, qid, 1, 50);
    broker_store_queue_t row = {.qid = qid, .last_seq = 50, .count = 50};
    assert_int_equal(broker_store_queue_save(store, &row), 0);
    assert_int_equal(broker_store_commit(store), 0);
    s_append_range(store, qid, 51, 100);
    row.last_seq = 100;
    row.count = 100;
    assert_int_equal(broker_store_queue_save(store, &row), 0);
    assert_int_equal(broker_store_commit(store), 0);

    char crash[512], path[600], copy[600];
    snprintf(crash, sizeof crash, "%s/crash", dir);
    assert_int_equal(mkdir(crash, 0700), 0);
    snprintf(path, sizeof path, "%s/%s", dir, BROKER_STORE_FILE);
    snprintf(copy, sizeof copy, "%s/%s", crash, BROKER_STORE_FILE);
    s_copy(path, copy);
    snprintf(path, sizeof path, "%s/%s-wal", dir, BROKER_STORE_FILE);
    snprintf(copy, sizeof copy, "%s/%s-wal", crash, BROKER_STORE_FILE);
    s_copy(path, copy);
    broker_store_destroy(&store);

    struct stat st;
    assert_int_equal(stat(copy, &st), 0);
    assert_true(st.st_size > 4096 * 2);
    if (damage == TAIL_TORN) {
        //  The last frame (24-byte header + one page) only half written.
        assert_int_equal(truncate(copy, st.st_size - 2048), 0);
    } else {
        //  The last frame fully there, with its page content garbled.
        int fd = open(copy, O_RDWR);
        assert_true(fd >= 0);
        char junk[512];
        memset(junk, 0x5a, sizeof junk);
        assert_int_equal(pwrite(fd, junk, sizeof junk, st.st_size - 1024), (ssize_t)sizeof junk);
        close(fd);
    }

    store = s_open(crash, NULL);
    queues_t queues = {0};
    assert_int_equal(broker_store_each_queue(store, s_queue_row, &queues), 0);
    assert_int_equal(queues.count, 1);
    assert_int_equal(queues.rows[0].last_seq, 50); //  counters agree with the data
    collected_t *c = s_read_all(store, qid);
    assert_int_equal(c->count, 50);
    assert_true(c->payload_ok);
    for (size_t i = 0; i < c->count; i++)
        assert_int_equal(c->seqs[i], i + 1);
    free(c);
    //  And the store is usable: the lost seqs can be stored again.
    s_append_range(store, qid, 51, 52);
    assert_int_equal(broker_store_commit(store), 0);
    broker_store_destroy(&store);
}

static void test_torn_wal_tail_is_cut(void **state)
{
    s_damaged_tail(*state, TAIL_TORN);
}

static void test_garbled_wal_tail_is_cut(void **state)
{
    s_damaged_tail(*state, TAIL_GARBLED);
}

static void test_fsync_error_fails_commit(void **state)
{
    assert_int_equal(faulty_vfs_register(), 0);
    broker_store_t *store = s_open(*state, "faulty");
    int64_t qid = 0;
    assert_int_equal(broker_store_queue_create(store, "c1", 0, &qid), 0);
    assert_int_equal(broker_store_commit(store), 0);

    s_append_range(store, qid, 1, 5);
    faulty_vfs_fail_sync(true);
    assert_int_equal(broker_store_commit(store), -1);
    faulty_vfs_fail_sync(false);
    const char *error = broker_store_error(store);
    assert_non_null(strstr(error, "commit"));
    assert_non_null(strstr(error, "I/O error"));
    broker_store_destroy(&store);
}

//  The mode bits (0777) of dir/name, or -1 when it does not exist.
static int s_mode(const char *dir, const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat st;
    return stat(path, &st) == 0 ? (int)(st.st_mode & 0777) : -1;
}

//  Under umask 022 (what a shell or a service outside systemd usually has)
//  every file of the store is 0600, the WAL and the shared memory included;
//  and the files a crashed older broker left at 0644 are made 0600 when the
//  store is opened again.
static void test_files_private_whatever_umask(void **state)
{
    const char *dir = *state;
    mode_t old_umask = umask(022);
    const char *names[] = {"broker.db", "broker.db-wal", "broker.db-shm"};
    //  A broker that writes and dies without closing: all three files stay.
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        broker_store_t *store = s_open(dir, NULL);
        int64_t qid = 0;
        bool ok = broker_store_queue_create(store, "c1", 0, &qid) == 0;
        for (uint64_t seq = 1; ok && seq <= 3; seq++)
            ok = broker_store_append(store, qid, seq, "x", 1, false, 1000) == 0;
        ok = ok && broker_store_commit(store) == 0;
        for (int i = 0; ok && i < 3; i++)
            ok = s_mode(dir, names[i]) == 0600;
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0); //  0600 while it ran
    for (int i = 0; i < 3; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        assert_int_equal(chmod(path, 0644), 0); //  as an older broker left them
    }
    broker_store_t *store = s_open(dir, NULL);
    for (int i = 0; i < 3; i++)
        assert_int_equal(s_mode(dir, names[i]), 0600);
    collected_t *c = s_read_all(store, 1);
    assert_int_equal(c->count, 3); //  and the data is there
    free(c);
    broker_store_destroy(&store);
    umask(old_umask);
}

static void test_open_fails_cleanly(void **state)
{
    (void)state;
    char err[256] = "";
    assert_null(broker_store_open("/nonexistent/dir/for/sure", NULL, err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/dir/for/sure"));
    assert_null(broker_store_open("", NULL, err, sizeof err));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commit_survives_reopen, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_uncommitted_is_gone, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_remove_and_read_window, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_connections, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_join_kx_kept_and_old_store_upgraded, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_file_data_kept_and_counted, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_version_2_store_upgraded, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_newer_store_refused, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_group_commit_one_sync_per_batch, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_torn_wal_tail_is_cut, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_garbled_wal_tail_is_cut, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_fsync_error_fails_commit, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_files_private_whatever_umask, s_setup, s_teardown),
        cmocka_unit_test(test_open_fails_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
