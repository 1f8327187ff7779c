/*  test_state.c: unit tests for node_state (the node's SQLite store) and
    node_keys (key files): schema and WAL, connections and their counters, twins
    with their field sets, the outbox and its transaction with the seq counter,
    intents, comments, blocked messages, errors, admin requests, a second handle
    reading beside a writer, key file permissions; node.db, -wal and -shm
    0600 under umask 022; the join leaves the key files holding the root
    alone (no invitation secret, token or X25519 key, grepped in the files),
    and a join whose authenticator does not match is refused with the file
    unchanged.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "node_keys.h"
#include "node_state.h"
#include "proto_kx.h"

typedef struct {
    char dir[64];
    node_state_t *st;
} s_fixture_t;

static int s_setup(void **state)
{
    s_fixture_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/test-node-state-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char err[256];
    f->st = node_state_open(f->dir, err, sizeof err);
    assert_non_null(f->st);
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    s_fixture_t *f = *state;
    node_state_destroy(&f->st);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static node_conn_t s_conn(const char *id, const char *name, proto_role_t role)
{
    node_conn_t c;
    memset(&c, 0, sizeof c);
    snprintf(c.id, sizeof c.id, "%s", id);
    snprintf(c.name, sizeof c.name, "%s", name);
    snprintf(c.mode, sizeof c.mode, "basic");
    c.role = role;
    c.status = NODE_CONN_PENDING;
    return c;
}

//  Outbox iteration: counts rows, checks the payloads written below.
static int s_collect(uint64_t s, const uint8_t *p, size_t size, bool file, void *arg)
{
    (void)file;
    (void)s;
    assert_int_equal(size, 2);
    assert_int_equal(p[0], 'p');
    (*(size_t *)arg)++;
    return 0;
}

//  Blocked iteration: appends each one-byte payload to a string.
static int s_append(uint64_t seq, const char *remote, const uint8_t *plain, size_t size, void *arg)
{
    (void)seq;
    (void)remote;
    strncat((char *)arg, (const char *)plain, size);
    return 0;
}

static void test_open_sets_wal_and_schema(void **state)
{
    s_fixture_t *f = *state;
    char path[128], err[256];
    snprintf(path, sizeof path, "%s/node.db", f->dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *stmt;
    sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &stmt, NULL);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(stmt, 0), "wal");
    sqlite3_finalize(stmt);
    sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key='schema'", -1, &stmt, NULL);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(stmt, 0), "1");
    sqlite3_finalize(stmt);
    //  A reopen keeps the data; a newer schema is refused with a clear text.
    node_state_t *again = node_state_open(f->dir, err, sizeof err);
    assert_non_null(again);
    node_state_destroy(&again);
    assert_int_equal(
        sqlite3_exec(db, "UPDATE meta SET value='99' WHERE key='schema'", NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    again = node_state_open(f->dir, err, sizeof err);
    assert_null(again);
    assert_non_null(strstr(err, "schema version 99"));
}

static void test_concurrent_first_opens(void **state)
{
    //  The daemon and an admin command may create the database at the same
    //  moment: every opener must succeed, whoever comes first. The children
    //  wait on a pipe so that they all start at once.
    s_fixture_t *f = *state;
    enum { ROUNDS = 20, OPENERS = 8 };
    for (int round = 0; round < ROUNDS; round++) {
        char dir[128], err[256];
        snprintf(dir, sizeof dir, "%s/fresh%d", f->dir, round);
        int gate[2];
        assert_int_equal(pipe(gate), 0);
        pid_t pids[OPENERS];
        for (int i = 0; i < OPENERS; i++) {
            pids[i] = fork();
            if (pids[i] == 0) {
                char byte;
                close(gate[1]);
                if (read(gate[0], &byte, 1) < 0)
                    _exit(2);
                node_state_t *st = node_state_open(dir, err, sizeof err);
                _exit(st ? 0 : 1);
            }
        }
        close(gate[0]);
        close(gate[1]); //  opens the gate: every read returns 0 at once
        for (int i = 0; i < OPENERS; i++) {
            int status = 0;
            assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
            assert_true(WIFEXITED(status));
            assert_int_equal(WEXITSTATUS(status), 0);
        }
    }
}

static void test_connections(void **state)
{
    s_fixture_t *f = *state;
    node_conn_t c = s_conn("c1", "acme-partner", PROTO_ROLE_PUBLIC);
    snprintf(c.trigger, sizeof c.trigger, "urgency=1");
    assert_int_equal(node_state_conn_insert(f->st, &c), 0);
    assert_int_equal(node_state_conn_insert(f->st, &c), 1); //  same id
    node_conn_t other = s_conn("c2", "acme-partner", PROTO_ROLE_PUBLIC);
    assert_int_equal(node_state_conn_insert(f->st, &other), 1); //  same name
    other = s_conn("c2", "second", PROTO_ROLE_PRIVATE);
    assert_int_equal(node_state_conn_insert(f->st, &other), 0);

    node_conn_t got;
    assert_int_equal(node_state_conn_get(f->st, "acme-partner", &got), 0); //  by name
    assert_string_equal(got.id, "c1");
    assert_string_equal(got.trigger, "urgency=1");
    assert_int_equal(got.next_out_seq, 1);
    assert_int_equal(node_state_conn_get(f->st, "nope", &got), 1);

    assert_int_equal(node_state_conn_set_status(f->st, "c1", NODE_CONN_ERROR, "401 bad pw"), 0);
    assert_int_equal(node_state_conn_set_trigger(f->st, "c1", "active=true"), 0);
    assert_int_equal(node_state_conn_set_peer(f->st, "c1", "private node", 1234), 0);
    assert_int_equal(node_state_conn_set_cursor(f->st, "c1", "2026-01-01 00:00:00", 99), 0);
    assert_int_equal(node_state_conn_set_stored(f->st, "c1", 7), 0);
    assert_int_equal(node_state_conn_set_stored(f->st, "c1", 5), 0); //  never goes back
    assert_int_equal(node_state_conn_set_applied(f->st, "c1", 3), 0);
    assert_int_equal(node_state_conn_set_status(f->st, "zz", NODE_CONN_ACTIVE, NULL), 1);
    assert_int_equal(node_state_conn_get(f->st, "c1", &got), 0);
    assert_int_equal(got.status, NODE_CONN_ERROR);
    assert_string_equal(got.error_text, "401 bad pw");
    assert_string_equal(got.trigger, "active=true");
    assert_string_equal(got.peer_description, "private node");
    assert_int_equal(got.joined_at, 1234);
    assert_string_equal(got.poll_cursor, "2026-01-01 00:00:00");
    assert_int_equal(got.stored_seq, 7);
    assert_int_equal(got.applied_in_seq, 3);
    assert_string_equal(node_conn_status_name(got.status), "error");

    uint64_t seq1 = 0, seq2 = 0;
    assert_int_equal(node_state_conn_take_seq(f->st, "c1", &seq1), 0);
    assert_int_equal(node_state_conn_take_seq(f->st, "c1", &seq2), 0);
    assert_int_equal(seq1, 1);
    assert_int_equal(seq2, 2);
    assert_int_equal(node_state_conn_take_seq(f->st, "zz", &seq1), 1);
    //  Restored from an older copy: the next seq only goes up, and the mark stays per connection.
    assert_int_equal(node_state_conn_set_next_min(f->st, "c1", 10), 0);
    assert_int_equal(node_state_conn_set_next_min(f->st, "c1", 4), 0);
    assert_int_equal(node_state_conn_take_seq(f->st, "c1", &seq1), 0);
    assert_int_equal(seq1, 10);
    assert_int_equal(node_state_conn_restored(f->st, "c1"), 0);
    assert_int_equal(node_state_conn_mark_restored(f->st, "c1"), 0);
    assert_int_equal(node_state_conn_restored(f->st, "c1"), 1);
    assert_int_equal(node_state_conn_restored(f->st, "c2"), 0);

    node_conn_t *list;
    size_t count;
    assert_int_equal(node_state_conn_list(f->st, &list, &count), 0);
    assert_int_equal(count, 2);
    free(list);
}

static void test_outbox_atomic_with_seq(void **state)
{
    s_fixture_t *f = *state;
    node_conn_t c = s_conn("c1", "n1", PROTO_ROLE_PUBLIC);
    assert_int_equal(node_state_conn_insert(f->st, &c), 0);
    //  A rolled-back transaction takes no seq and leaves no row.
    uint64_t seq;
    assert_int_equal(node_state_begin(f->st), 0);
    assert_int_equal(node_state_conn_take_seq(f->st, "c1", &seq), 0);
    assert_int_equal(node_state_outbox_add(f->st, "c1", seq, (const uint8_t *)"abc", 3, false), 0);
    node_state_rollback(f->st);
    uint64_t count = 9;
    assert_int_equal(node_state_outbox_count(f->st, "c1", &count), 0);
    assert_int_equal(count, 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(node_state_begin(f->st), 0);
        assert_int_equal(node_state_conn_take_seq(f->st, "c1", &seq), 0);
        assert_int_equal(seq, (uint64_t)i + 1); //  the rollback gave its seq back
        char payload[8];
        snprintf(payload, sizeof payload, "p%d", i);
        assert_int_equal(node_state_outbox_add(f->st, "c1", seq, (uint8_t *)payload, 2, false), 0);
        assert_int_equal(node_state_commit(f->st), 0);
    }
    //  The same seq twice is refused (never reused).
    assert_int_equal(node_state_outbox_add(f->st, "c1", 2, (const uint8_t *)"x", 1, false), -1);
    assert_non_null(strstr(node_state_error(f->st), "UNIQUE"));
    assert_int_equal(node_state_outbox_count(f->st, "c1", &count), 0);
    assert_int_equal(count, 3);
    assert_int_equal(node_state_outbox_remove(f->st, "c1", 2), 0);
    size_t n = 0;
    assert_int_equal(node_state_outbox_each(f->st, "c1", 0, 0, s_collect, &n), 0);
    assert_int_equal(n, 2);
    n = 0;
    assert_int_equal(node_state_outbox_each(f->st, "c1", 1, 0, s_collect, &n), 0);
    assert_int_equal(n, 1); //  only seq 3 after 1
    assert_int_equal(node_state_outbox_remove_upto(f->st, "c1", 3), 0);
    assert_int_equal(node_state_outbox_count(f->st, "c1", &count), 0);
    assert_int_equal(count, 0);
    char value[32];
    assert_int_equal(node_state_meta_get(f->st, "link_state", value, sizeof value), 1);
    assert_int_equal(node_state_meta_set(f->st, "link_state", "ready"), 0);
    assert_int_equal(node_state_meta_get(f->st, "link_state", value, sizeof value), 0);
    assert_string_equal(value, "ready");
}

static void test_twins(void **state)
{
    s_fixture_t *f = *state;
    node_twin_t t = {0};
    snprintf(t.conn, sizeof t.conn, "c1");
    snprintf(t.local_sys_id, sizeof t.local_sys_id, "aaaa");
    snprintf(t.local_number, sizeof t.local_number, "INC0010001");
    t.under_sync = true;
    t.local = node_fields_new();
    node_fields_set(t.local, "state", "2");
    node_fields_set(t.local, "description", "multi\nline");
    t.last_sent_seq = 4;
    snprintf(t.mod_count, sizeof t.mod_count, "3");
    assert_int_equal(node_state_twin_put(f->st, &t), 0);

    node_twin_t got = {0};
    assert_int_equal(node_state_twin_by_local(f->st, "c1", "aaaa", &got), 0);
    assert_string_equal(got.local_number, "INC0010001");
    assert_string_equal(got.remote_sys_id, "");
    assert_true(got.under_sync);
    assert_true(node_fields_equal(got.local, t.local));
    assert_int_equal(node_fields_size(got.previous), 0);
    assert_int_equal(got.last_sent_seq, 4);
    assert_string_equal(got.mod_count, "3");

    //  The remote ids arrive with the RECEIPT.
    snprintf(t.remote_sys_id, sizeof t.remote_sys_id, "bbbb");
    snprintf(t.remote_number, sizeof t.remote_number, "INC0020002");
    //  unexalate by an admin meanwhile: a later put of the engine keeps it.
    assert_int_equal(node_state_twin_set_sync(f->st, "c1", "aaaa", false), 0);
    assert_int_equal(node_state_twin_put(f->st, &t), 0);
    assert_int_equal(node_state_twin_by_remote(f->st, "c1", "bbbb", &got), 0);
    assert_false(got.under_sync);
    assert_string_equal(got.local_sys_id, "aaaa");
    assert_int_equal(node_state_twin_by_number(f->st, "c1", "INC0020002", &got), 0);
    assert_string_equal(got.local_sys_id, "aaaa");
    assert_int_equal(node_state_twin_by_number(f->st, "c1", "INC0099999", &got), 1);
    assert_int_equal(node_state_twin_by_local(f->st, "c2", "aaaa", &got), 1);

    //  Two twins cannot share a remote record.
    node_twin_t dup = {0};
    snprintf(dup.conn, sizeof dup.conn, "c1");
    snprintf(dup.local_sys_id, sizeof dup.local_sys_id, "cccc");
    snprintf(dup.remote_sys_id, sizeof dup.remote_sys_id, "bbbb");
    assert_int_equal(node_state_twin_put(f->st, &dup), -1);
    //  Twins without a remote yet do not collide.
    dup.remote_sys_id[0] = 0;
    assert_int_equal(node_state_twin_put(f->st, &dup), 0);
    snprintf(dup.local_sys_id, sizeof dup.local_sys_id, "dddd");
    assert_int_equal(node_state_twin_put(f->st, &dup), 0);

    uint64_t total, synced;
    assert_int_equal(node_state_twin_count(f->st, "c1", &total, &synced), 0);
    assert_int_equal(total, 3);
    assert_int_equal(synced, 0); //  dup rows were put with under_sync false
    assert_int_equal(node_state_twin_set_sync(f->st, "c1", "aaaa", true), 0);
    assert_int_equal(node_state_twin_count(f->st, "c1", &total, &synced), 0);
    assert_int_equal(synced, 1);
    node_twin_clear(&got);
    node_twin_clear(&t);
}

static void test_comments_intents_blocked(void **state)
{
    s_fixture_t *f = *state;
    bool seen = true;
    assert_int_equal(node_state_comment_seen(f->st, "c1", NODE_COMMENT_OUT, "j1", &seen), 0);
    assert_false(seen);
    assert_int_equal(node_state_comment_add(f->st, "c1", NODE_COMMENT_OUT, "j1", "aaaa"), 0);
    assert_int_equal(node_state_comment_add(f->st, "c1", NODE_COMMENT_OUT, "j1", "aaaa"), 0);
    assert_int_equal(node_state_comment_seen(f->st, "c1", NODE_COMMENT_OUT, "j1", &seen), 0);
    assert_true(seen);
    assert_int_equal(node_state_comment_seen(f->st, "c1", NODE_COMMENT_IN, "j1", &seen), 0);
    assert_false(seen); //  directions are apart

    bool exists = true;
    assert_int_equal(node_state_intent_exists(f->st, "c1", 5, &exists), 0);
    assert_false(exists);
    assert_int_equal(node_state_intent_add(f->st, "c1", 5), 0);
    assert_int_equal(node_state_intent_exists(f->st, "c1", 5, &exists), 0);
    assert_true(exists);
    assert_int_equal(node_state_intent_remove(f->st, "c1", 5), 0);
    assert_int_equal(node_state_intent_exists(f->st, "c1", 5, &exists), 0);
    assert_false(exists);

    assert_int_equal(node_state_blocked_add(f->st, "c1", 9, "r1", (const uint8_t *)"9", 1), 0);
    assert_int_equal(node_state_blocked_add(f->st, "c1", 4, "r1", (const uint8_t *)"4", 1), 0);
    assert_int_equal(node_state_blocked_add(f->st, "c1", 6, "r2", (const uint8_t *)"6", 1), 0);
    uint64_t count;
    assert_int_equal(node_state_blocked_count(f->st, "c1", "r1", &count), 0);
    assert_int_equal(count, 2);
    assert_int_equal(node_state_blocked_count(f->st, "c1", NULL, &count), 0);
    assert_int_equal(count, 3);
    char order[8] = "";
    assert_int_equal(node_state_blocked_each(f->st, "c1", "r1", s_append, order), 0);
    assert_string_equal(order, "49"); //  in seq order
    order[0] = 0;
    assert_int_equal(node_state_blocked_each(f->st, "c1", NULL, s_append, order), 0);
    assert_string_equal(order, "469");
    assert_int_equal(node_state_blocked_remove(f->st, "c1", 4), 0);
    assert_int_equal(node_state_blocked_count(f->st, "c1", "r1", &count), 0);
    assert_int_equal(count, 1);
}

static void test_errors_and_requests(void **state)
{
    s_fixture_t *f = *state;
    node_error_t e = {0};
    snprintf(e.conn, sizeof e.conn, "c1");
    snprintf(e.remote_sys_id, sizeof e.remote_sys_id, "r1");
    snprintf(e.origin, sizeof e.origin, "local");
    snprintf(e.code, sizeof e.code, "data_policy");
    snprintf(e.message, sizeof e.message, "Data Policy Exception: Close notes");
    e.seq = 12;
    assert_int_equal(node_state_error_add(f->st, &e), 0);
    int64_t first = e.id;
    assert_true(first > 0);
    //  The same twin failing again updates the one line.
    snprintf(e.message, sizeof e.message, "still refused");
    assert_int_equal(node_state_error_add(f->st, &e), 0);
    assert_int_equal(e.id, first);
    node_error_t got;
    assert_int_equal(node_state_error_get(f->st, first, &got), 0);
    assert_string_equal(got.message, "still refused");
    assert_int_equal(got.retries, 1);
    assert_int_equal(node_state_error_for_twin(f->st, "c1", "r1", "local", &got), 0);
    assert_int_equal(node_state_error_for_twin(f->st, "c1", "r1", "remote", &got), 1);
    //  Another origin is another line.
    snprintf(e.origin, sizeof e.origin, "remote");
    assert_int_equal(node_state_error_add(f->st, &e), 0);
    assert_true(e.id != first);
    node_error_t *list;
    size_t count;
    assert_int_equal(node_state_error_list(f->st, "c1", &list, &count), 0);
    assert_int_equal(count, 2);
    free(list);
    assert_int_equal(node_state_error_list(f->st, "other", &list, &count), 0);
    assert_int_equal(count, 0);
    free(list);
    assert_int_equal(node_state_error_request_retry(f->st, first), 0);
    assert_int_equal(node_state_error_request_retry(f->st, 999), 1);
    assert_int_equal(node_state_error_get(f->st, first, &got), 0);
    assert_true(got.retry_requested);
    assert_int_equal(node_state_error_failed_again(f->st, first, "third"), 0);
    assert_int_equal(node_state_error_get(f->st, first, &got), 0);
    assert_false(got.retry_requested);
    assert_int_equal(got.retries, 2);
    assert_int_equal(node_state_error_remove(f->st, first), 0);
    assert_int_equal(node_state_error_get(f->st, first, &got), 1);
    uint64_t n;
    assert_int_equal(node_state_error_count(f->st, NULL, &n), 0);
    assert_int_equal(n, 1);

    node_request_t r = {0};
    snprintf(r.conn, sizeof r.conn, "c1");
    r.kind = NODE_REQ_EXALATE;
    snprintf(r.arg, sizeof r.arg, "INC0010001");
    assert_int_equal(node_state_request_add(f->st, &r), 0);
    node_request_t next;
    assert_int_equal(node_state_request_next(f->st, &next), 0);
    assert_int_equal(next.id, r.id);
    assert_int_equal(next.kind, NODE_REQ_EXALATE);
    assert_int_equal(node_state_request_finish(f->st, r.id, NODE_REQ_DONE, "twin INC0020001"), 0);
    assert_int_equal(node_state_request_next(f->st, &next), 1);
    assert_int_equal(node_state_request_get(f->st, r.id, &next), 0);
    assert_int_equal(next.status, NODE_REQ_DONE);
    assert_string_equal(next.result, "twin INC0020001");
}

static void test_delete_connection_cascades(void **state)
{
    s_fixture_t *f = *state;
    node_conn_t c = s_conn("c1", "n1", PROTO_ROLE_PUBLIC);
    assert_int_equal(node_state_conn_insert(f->st, &c), 0);
    node_twin_t t = {0};
    snprintf(t.conn, sizeof t.conn, "c1");
    snprintf(t.local_sys_id, sizeof t.local_sys_id, "aaaa");
    assert_int_equal(node_state_twin_put(f->st, &t), 0);
    assert_int_equal(node_state_outbox_add(f->st, "c1", 1, (const uint8_t *)"x", 1, false), 0);
    assert_int_equal(node_state_conn_delete(f->st, "c1"), 0);
    assert_int_equal(node_state_conn_delete(f->st, "c1"), 1);
    uint64_t total, synced, count;
    assert_int_equal(node_state_twin_count(f->st, "c1", &total, &synced), 0);
    assert_int_equal(total, 0);
    assert_int_equal(node_state_outbox_count(f->st, "c1", &count), 0);
    assert_int_equal(count, 0);
}

static void test_second_handle_reads_beside_writer(void **state)
{
    s_fixture_t *f = *state;
    char err[256];
    node_state_t *admin = node_state_open(f->dir, err, sizeof err);
    assert_non_null(admin);
    node_conn_t c = s_conn("c1", "n1", PROTO_ROLE_PUBLIC);
    assert_int_equal(node_state_conn_insert(f->st, &c), 0);
    assert_int_equal(node_state_begin(f->st), 0);
    assert_int_equal(node_state_conn_set_status(f->st, "c1", NODE_CONN_ACTIVE, NULL), 0);
    node_conn_t got;
    assert_int_equal(node_state_conn_get(admin, "c1", &got), 0); //  WAL: no waiting
    assert_int_equal(got.status, NODE_CONN_PENDING);             //  not committed yet
    assert_int_equal(node_state_commit(f->st), 0);
    assert_int_equal(node_state_conn_get(admin, "c1", &got), 0);
    assert_int_equal(got.status, NODE_CONN_ACTIVE);
    node_state_destroy(&admin);
    node_state_destroy(&admin);
}

//  The whole text of a key file.
static void s_slurp(const char *dir, const char *conn, char *text, size_t size)
{
    char path[256];
    snprintf(path, sizeof path, "%s/keys/%s.secret", dir, conn);
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    size_t n = fread(text, 1, size - 1, fp);
    text[n] = '\0';
    fclose(fp);
}

static void s_hex(const uint8_t *bytes, char out[65])
{
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", bytes[i]);
}

static void test_join_leaves_root_only(void **state)
{
    s_fixture_t *f = *state;
    char err[512], priv_dir[128], text[1024], hex[65];
    snprintf(priv_dir, sizeof priv_dir, "%s/private", f->dir);

    //  Initiate (public): invitation secret, token, X25519 pair.
    proto_invite_t inv;
    proto_invite_init(&inv);
    inv.conn = "c1";
    for (int i = 0; i < 32; i++)
        inv.broker_key[i] = (uint8_t)(0x30 + i);
    node_keys_t pub = {.has_invite = true, .has_token = true, .has_kx = true};
    assert_int_equal(proto_invite_generate_secrets(&inv), PROTO_OK);
    assert_int_equal(proto_kx_keypair(pub.kx_secret, inv.kx), PROTO_OK);
    memcpy(pub.invite_secret, inv.secret, 32);
    memcpy(pub.join_token, inv.join_token, 32);
    assert_int_equal(node_keys_write(f->dir, "c1", &pub, err, sizeof err), 0);
    assert_int_equal(node_keys_write(f->dir, "c2", &pub, err, sizeof err), 0);

    //  Accept (private): root, token and JOIN's half; no X25519 secret.
    node_keys_t priv = {.has_root = true, .has_token = true, .has_join = true};
    assert_int_equal(proto_kx_accept(&inv, priv.join_kx, priv.join_auth, priv.root), PROTO_OK);
    memcpy(priv.join_token, inv.join_token, 32);
    assert_int_equal(node_keys_write(priv_dir, "c1", &priv, err, sizeof err), 0);

    //  A join whose authenticator does not match is refused; nothing changes.
    uint8_t bad[32];
    memcpy(bad, priv.join_auth, 32);
    bad[0] ^= 1;
    assert_int_equal(
        node_keys_join_public(f->dir, "c2", inv.broker_key, priv.join_kx, bad, err, sizeof err), 1);
    assert_non_null(strstr(err, "not authenticated"));
    node_keys_t got;
    assert_int_equal(node_keys_read(f->dir, "c2", &got, err, sizeof err), 0);
    assert_true(got.has_invite && got.has_token && got.has_kx && !got.has_root);

    //  JOINED (public), then active on both sides: the same root, alone.
    assert_int_equal(node_keys_join_public(f->dir, "c1", inv.broker_key, priv.join_kx,
                                           priv.join_auth, err, sizeof err),
                     0);
    assert_int_equal(node_keys_forget_join(f->dir, "c1", err, sizeof err), 0);
    assert_int_equal(node_keys_forget_join(priv_dir, "c1", err, sizeof err), 0);
    node_keys_t a, b;
    assert_int_equal(node_keys_read(f->dir, "c1", &a, err, sizeof err), 0);
    assert_int_equal(node_keys_read(priv_dir, "c1", &b, err, sizeof err), 0);
    assert_true(a.has_root && !a.has_invite && !a.has_token && !a.has_kx && !a.has_join);
    assert_true(b.has_root && !b.has_invite && !b.has_token && !b.has_kx && !b.has_join);
    assert_memory_equal(a.root, priv.root, 32);
    assert_memory_equal(b.root, priv.root, 32);
    //  JOINED again (after each HELLO): nothing left to do, nothing changes.
    assert_int_equal(node_keys_join_public(f->dir, "c1", inv.broker_key, priv.join_kx,
                                           priv.join_auth, err, sizeof err),
                     0);

    //  What is on disk: one root= line each; no token, invitation secret
    //  or X25519 secret anywhere in the files.
    const char *dirs[] = {f->dir, priv_dir};
    const uint8_t *gone[] = {inv.secret, inv.join_token, pub.kx_secret, priv.join_auth};
    for (int d = 0; d < 2; d++) {
        s_slurp(dirs[d], "c1", text, sizeof text);
        s_hex(priv.root, hex);
        char expected[80];
        snprintf(expected, sizeof expected, "root=%s\n", hex);
        assert_string_equal(text, expected);
        for (size_t g = 0; g < sizeof gone / sizeof gone[0]; g++) {
            s_hex(gone[g], hex);
            assert_null(strstr(text, hex));
        }
    }
    node_keys_wipe(&pub);
    node_keys_wipe(&priv);
    proto_invite_clear(&inv);
}

//  A key file written before the key exchange (secret= was the root) still
//  opens its connection; half a JOIN is damage.
static void test_key_file_of_older_twinsync(void **state)
{
    s_fixture_t *f = *state;
    char err[512], path[128];
    node_keys_t keys = {.has_token = true};
    assert_int_equal(node_keys_write(f->dir, "c1", &keys, err, sizeof err), 0); //  makes keys/
    snprintf(path, sizeof path, "%s/keys/c1.secret", f->dir);
    FILE *fp = fopen(path, "w");
    fprintf(fp, "secret=");
    for (int i = 0; i < 32; i++)
        fprintf(fp, "%02x", i);
    fprintf(fp, "\n");
    fclose(fp);
    node_keys_t got;
    assert_int_equal(node_keys_read(f->dir, "c1", &got, err, sizeof err), 0);
    assert_true(got.has_root);
    assert_false(got.has_token);
    assert_int_equal(got.root[31], 31);
    fp = fopen(path, "w");
    fprintf(fp, "root=%064d\njoin_kx=%064d\n", 0, 0);
    fclose(fp);
    assert_int_equal(node_keys_read(f->dir, "c1", &got, err, sizeof err), -1);
    assert_non_null(strstr(err, "damaged"));
}

//  node.db and its -wal and -shm are the owner's alone, whatever the umask:
//  they hold every synced incident.
static void test_state_files_private_under_umask_022(void **state)
{
    s_fixture_t *f = *state;
    char dir[128], path[160], err[256];
    snprintf(dir, sizeof dir, "%s/fresh", f->dir);
    mode_t old = umask(022);
    node_state_t *st = node_state_open(dir, err, sizeof err);
    assert_non_null(st);
    node_conn_t conn;
    memset(&conn, 0, sizeof conn);
    snprintf(conn.id, sizeof conn.id, "c1");
    snprintf(conn.name, sizeof conn.name, "one");
    snprintf(conn.mode, sizeof conn.mode, "basic");
    conn.role = PROTO_ROLE_PUBLIC;
    assert_int_equal(node_state_conn_insert(st, &conn), 0); //  the WAL holds it
    const char *files[] = {"node.db", "node.db-wal", "node.db-shm"};
    struct stat sb;
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        assert_int_equal(stat(path, &sb), 0);
        if ((sb.st_mode & 0777) != 0600)
            fail_msg("%s has mode %03o", files[i], (unsigned)(sb.st_mode & 0777));
    }
    node_state_destroy(&st);
    //  Files an older twinsync left readable by others are made private.
    snprintf(path, sizeof path, "%s/node.db", dir);
    assert_int_equal(chmod(path, 0644), 0);
    st = node_state_open(dir, err, sizeof err);
    assert_non_null(st);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    node_state_destroy(&st);
    umask(old);
}

static void test_key_files(void **state)
{
    s_fixture_t *f = *state;
    char err[256];
    node_keys_t keys = {.has_root = true}, got;
    for (int i = 0; i < PROTO_KEY_SIZE; i++) {
        keys.root[i] = (uint8_t)i;
        keys.join_token[i] = (uint8_t)(255 - i);
    }
    assert_int_equal(node_keys_read(f->dir, "c1", &got, err, sizeof err), 1);
    assert_int_equal(node_keys_write(f->dir, "c1", &keys, err, sizeof err), 0);
    assert_int_equal(node_keys_read(f->dir, "c1", &got, err, sizeof err), 0);
    assert_memory_equal(got.root, keys.root, PROTO_KEY_SIZE);
    assert_false(got.has_token);
    keys.has_token = true;
    assert_int_equal(node_keys_write(f->dir, "c1", &keys, err, sizeof err), 0);
    assert_int_equal(node_keys_read(f->dir, "c1", &got, err, sizeof err), 0);
    assert_true(got.has_token);
    assert_memory_equal(got.join_token, keys.join_token, PROTO_KEY_SIZE);
    char path[128];
    snprintf(path, sizeof path, "%s/keys/c1.secret", f->dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    //  A file others can read is refused; so is a damaged one.
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(node_keys_read(f->dir, "c1", &got, err, sizeof err), -1);
    FILE *fp = fopen(path, "w");
    fputs("secret=zz\n", fp);
    fclose(fp);
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(node_keys_read(f->dir, "c1", &got, err, sizeof err), -1);
    assert_non_null(strstr(err, "damaged"));
    assert_int_equal(node_keys_remove(f->dir, "c1"), 0);
    assert_int_equal(node_keys_remove(f->dir, "c1"), 0);
    assert_int_equal(node_keys_read(f->dir, "c1", &got, err, sizeof err), 1);
    node_keys_wipe(&keys);

    //  The node's CURVE pair is made once, then read back unchanged.
    uint8_t pub1[32], sec1[32], pub2[32], sec2[32];
    char z85[41];
    assert_int_equal(node_keys_node_pair(f->dir, pub1, sec1, z85, err, sizeof err), 0);
    assert_int_equal(strlen(z85), 40);
    assert_int_equal(node_keys_node_pair(f->dir, pub2, sec2, NULL, err, sizeof err), 0);
    assert_memory_equal(pub1, pub2, 32);
    assert_memory_equal(sec1, sec2, 32);
    assert_memory_not_equal(pub1, sec1, 32);
    snprintf(path, sizeof path, "%s/keys/node.key", f->dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_sets_wal_and_schema, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_first_opens, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_connections, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_outbox_atomic_with_seq, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_twins, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_comments_intents_blocked, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_errors_and_requests, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_delete_connection_cascades, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_second_handle_reads_beside_writer, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_key_files, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_join_leaves_root_only, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_key_file_of_older_twinsync, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_state_files_private_under_umask_022, s_setup,
                                        s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
