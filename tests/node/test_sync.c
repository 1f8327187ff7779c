/*  test_sync.c: tests of node_sync against two real ServiceNow emulators
    (tests/snemu), with this test carrying outbox rows from one node to the
    other in place of the broker. They prove the sync rules without any ZeroMQ:
    a twin is created with the right fields and correlation, updates and
    comments flow both ways exactly once, work notes stay home, both nodes go
    quiet after a sync, concurrent changes converge, a record refusal blocks one
    twin only and clears on retry, a 401 puts the connection in error and it
    resumes, a payload that does not open is rejected, and a crash between the
    ServiceNow write and the state commit re-applies without duplicates.

    Label "integration": it starts two python3 processes.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "node_keys.h"
#include "node_rekey.h"
#include "node_state.h"
#include "node_sync.h"
#include "node_transfer.h"
#include "sn_attachment.h"
#include "sn_incident.h"
#include "sn_journal.h"

#ifndef SNEMU_PY
#error "SNEMU_PY must name tests/snemu/snemu.py"
#endif

#define S_CONN "c-test"

//  One side: an emulator, its node's state and sync worker, and a client
//  acting as a human user (alice or bob) for the test's own changes.
typedef struct {
    const char *instance;      //  "acme" / "globex"
    const char *human;         //  Human user of this instance
    pid_t pid;                 //  Emulator process
    int port;                  //  Its port
    char url[64];              //  http://127.0.0.1:PORT
    char dir[64];              //  Node state directory
    node_state_t *state;       //  Node state
    sn_client_t *sync_sn;      //  Node's client (integration user "sync")
    sn_client_t *user_sn;      //  The human's client
    node_sync_t *sync;         //  The worker
    node_transfer_t *transfer; //  The transfer thread's work, stepped by the test
    proto_role_t role;         //  Public or private
} s_side_t;

typedef struct {
    s_side_t pub;
    s_side_t priv;
    char tmp[64];
} s_world_t;

//  --- emulator processes and their control API

static int s_start_emulator(s_side_t *side, const char *tmp, const char *extra)
{
    char port_file[128];
    snprintf(port_file, sizeof port_file, "%s/%s.port", tmp, side->instance);
    side->pid = fork();
    if (side->pid == 0) {
        char user1[64], user2[64];
        snprintf(user1, sizeof user1, "%s:pw:Alice Smith", "alice");
        snprintf(user2, sizeof user2, "%s:pw:Bob Jones", "bob");
        const char *argv[] = {"python3",     SNEMU_PY,
                              "--port",      "0",
                              "--port-file", port_file,
                              "--instance",  side->instance,
                              "--user",      "sync:syncpw:Sync User",
                              "--user",      user1,
                              "--user",      user2,
                              extra,         extra ? "64000" : NULL,
                              NULL};
        execvp("python3", (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) {
        FILE *f = fopen(port_file, "r");
        if (f) {
            int ok = fscanf(f, "%d", &side->port) == 1;
            fclose(f);
            if (ok) {
                snprintf(side->url, sizeof side->url, "http://127.0.0.1:%d", side->port);
                return 0;
            }
        }
        usleep(50000);
    }
    return -1;
}

static size_t s_collect(char *data, size_t size, size_t n, void *arg)
{
    FILE *out = arg;
    return fwrite(data, size, n, out);
}

//  One control request; returns the body (free it) or NULL.
static char *s_control(const s_side_t *side, const char *method, const char *path, const char *body)
{
    char url[160];
    snprintf(url, sizeof url, "%s%s", side->url, path);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    CURL *curl = curl_easy_init();
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, s_collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, out);
    if (body)
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    CURLcode rc = curl_easy_perform(curl);
    curl_easy_cleanup(curl);
    fclose(out);
    if (rc != CURLE_OK) {
        free(text);
        return NULL;
    }
    return text;
}

static void s_fault(const s_side_t *side, const char *json)
{
    free(s_control(side, "POST", "/__snemu/faults", json));
}

//  Requests in the emulator's log since the last clear (decoded JSON array).
static json_t *s_log(const s_side_t *side)
{
    char *text = s_control(side, "GET", "/__snemu/log", NULL);
    json_t *doc = json_loads(text ? text : "{}", 0, NULL);
    free(text);
    json_t *requests = json_incref(json_object_get(doc, "requests"));
    json_decref(doc);
    return requests;
}

//  --- nodes

static sn_client_t *s_client(const s_side_t *side, const char *user, const char *password)
{
    sn_config_t cfg = {.instance_url = side->url, .user = user, .password = password};
    cfg.retry = sn_retry_policy_default();
    cfg.retry.max_total_wait_ms = 3000;
    cfg.retry.base_backoff_ms = 50;
    cfg.retry.max_backoff_ms = 500;
    sn_error_t err;
    sn_client_t *client = sn_client_new(&cfg, &err);
    assert_non_null(client);
    return client;
}

static void s_side_open(s_side_t *side, const char *tmp, proto_role_t role)
{
    char err[256];
    snprintf(side->dir, sizeof side->dir, "%s/%s-node", tmp, side->instance);
    side->role = role;
    side->state = node_state_open(side->dir, err, sizeof err);
    assert_non_null(side->state);
    node_conn_t conn;
    memset(&conn, 0, sizeof conn);
    snprintf(conn.id, sizeof conn.id, S_CONN);
    snprintf(conn.name, sizeof conn.name, "test");
    snprintf(conn.mode, sizeof conn.mode, "basic");
    snprintf(conn.trigger, sizeof conn.trigger, "urgency=1");
    conn.role = role;
    conn.status = NODE_CONN_ACTIVE;
    assert_int_equal(node_state_conn_insert(side->state, &conn), 0);
    node_keys_t keys = {.has_root = true}; //  Both sides: the same root, as after a join
    memset(keys.root, 7, sizeof keys.root);
    assert_int_equal(node_keys_write(side->dir, S_CONN, &keys, err, sizeof err), 0);
    side->sync_sn = s_client(side, "sync", "syncpw");
    side->user_sn = s_client(side, side->human, "pw");
    node_sync_config_t cfg = {.state = side->state,
                              .sn = side->sync_sn,
                              .state_dir = side->dir,
                              .instance = side->instance,
                              .sync_user = "sync",
                              .lookback_s = 5,
                              .attachment_scan_ms = 1};
    side->sync = node_sync_new(&cfg);
    assert_non_null(side->sync);
    node_transfer_config_t tcfg = {.state = side->state,
                                   .sn = side->sync_sn,
                                   .state_dir = side->dir,
                                   .sync_user = "sync",
                                   .retry_ms = 1};
    side->transfer = node_transfer_new(&tcfg);
    assert_non_null(side->transfer);
}

static void s_side_close(s_side_t *side)
{
    node_sync_destroy(&side->sync);
    node_transfer_destroy(&side->transfer);
    sn_client_destroy(&side->sync_sn);
    sn_client_destroy(&side->user_sn);
    node_state_destroy(&side->state);
    if (side->pid > 0) {
        kill(side->pid, SIGTERM);
        waitpid(side->pid, NULL, 0);
    }
}

static int s_setup_with(void **state, const char *priv_extra)
{
    s_world_t *w = calloc(1, sizeof *w);
    snprintf(w->tmp, sizeof w->tmp, "/tmp/test-node-sync-XXXXXX");
    assert_non_null(mkdtemp(w->tmp));
    w->pub = (s_side_t){.instance = "acme", .human = "alice"};
    w->priv = (s_side_t){.instance = "globex", .human = "bob"};
    assert_int_equal(s_start_emulator(&w->pub, w->tmp, NULL), 0);
    assert_int_equal(s_start_emulator(&w->priv, w->tmp, priv_extra), 0);
    s_side_open(&w->pub, w->tmp, PROTO_ROLE_PUBLIC);
    s_side_open(&w->priv, w->tmp, PROTO_ROLE_PRIVATE);
    *state = w;
    return 0;
}

static int s_setup(void **state)
{
    return s_setup_with(state, NULL);
}

static int s_setup_small_bodies(void **state)
{
    return s_setup_with(state, "--max-content-length");
}

static int s_teardown(void **state)
{
    s_world_t *w = *state;
    s_side_close(&w->pub);
    s_side_close(&w->priv);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", w->tmp);
    assert_int_equal(system(cmd), 0);
    free(w);
    return 0;
}

//  --- the stand-in broker

typedef struct {
    s_side_t *to;             //  Receiver
    uint64_t delivered[4096]; //  Seqs applied, to delete from the sender
    size_t count;             //  Entries
    bool stop;                //  A message was held: keep order, stop here
} s_carry_t;

static int s_deliver(uint64_t seq, const uint8_t *payload, size_t size, bool file, void *arg)
{
    (void)file;
    s_carry_t *carry = arg;
    node_sync_rc_t rc = node_sync_apply(carry->to->sync, S_CONN, seq, payload, size);
    if (rc != NODE_SYNC_OK) {
        carry->stop = true;
        return 1;
    }
    carry->delivered[carry->count++] = seq;
    return 0;
}

//  Moves every outbox row of from into to (apply, then delete on success).
//  Returns how many were applied.
static size_t s_carry(s_side_t *from, s_side_t *to)
{
    s_carry_t carry = {.to = to};
    assert_int_equal(node_state_outbox_each(from->state, S_CONN, 0, 0, s_deliver, &carry), 0);
    for (size_t i = 0; i < carry.count; i++)
        assert_int_equal(node_state_outbox_remove(from->state, S_CONN, carry.delivered[i]), 0);
    return carry.count;
}

//  Sleeps just past the next whole second of the wall clock. A poll reads only
//  seconds that have ended (sn_poll bounds it by the instance's Date - 1 s), so
//  a round waits for the second of the last writes to end before it polls.
static void s_next_second(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    long ns = 1000000000L - now.tv_nsec + 20000000L;
    struct timespec pause = {ns / 1000000000L, ns % 1000000000L};
    nanosleep(&pause, NULL);
}

//  Polls both sides and carries messages until nothing moves.
static void s_settle(s_world_t *w)
{
    for (int round = 0; round < 10; round++) {
        s_next_second();
        node_sync_poll(w->pub.sync, S_CONN, NULL);
        node_sync_poll(w->priv.sync, S_CONN, NULL);
        size_t moved = s_carry(&w->pub, &w->priv) + s_carry(&w->priv, &w->pub);
        if (moved == 0)
            return;
    }
    fail_msg("the two nodes did not settle in 10 rounds (ping-pong?)");
}

//  --- ServiceNow helpers acting as the human users

static json_t *s_create(s_side_t *side, const char *json)
{
    json_t *fields = json_loads(json, 0, NULL);
    assert_non_null(fields);
    sn_created_t created;
    json_t *record = NULL;
    sn_error_t err;
    assert_int_equal(sn_incident_create(side->user_sn, fields, &created, &record, &err), SN_OK);
    json_decref(fields);
    return record;
}

static void s_update(s_side_t *side, const char *sys_id, const char *json)
{
    json_t *fields = json_loads(json, 0, NULL);
    sn_error_t err;
    assert_int_equal(sn_incident_update(side->user_sn, sys_id, fields, NULL, &err), SN_OK);
    json_decref(fields);
}

//  The twin of sys_id (correlation_id = sys_id) on side; NULL when none,
//  fails when more than one.
static json_t *s_twin_of(s_side_t *side, const char *sys_id)
{
    json_t *found = NULL;
    sn_error_t err;
    assert_int_equal(sn_incident_find_by_correlation(side->user_sn, sys_id, NULL, &found, &err),
                     SN_OK);
    assert_true(json_array_size(found) <= 1);
    json_t *twin = json_incref(json_array_get(found, 0));
    json_decref(found);
    return twin;
}

//  Comments ("comments" journal, or work_notes when notes) of an incident.
static json_t *s_journal(s_side_t *side, const char *sys_id, bool notes)
{
    sn_seen_t *seen = sn_seen_new();
    const char *ids[] = {sys_id};
    sn_journal_poll_t poll = {
        .incident_ids = ids, .count = 1, .include_work_notes = notes, .seen = seen};
    json_t *entries = NULL;
    sn_poll_result_t result;
    sn_error_t err;
    sn_err_code_t rc = sn_journal_poll_all(side->user_sn, &poll, &entries, &result, &err);
    assert_true(rc == SN_OK || rc == SN_E_JOURNAL_UNREADABLE);
    sn_seen_destroy(&seen);
    json_t *out = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e)
    {
        if (!strcmp(sn_field(e, "element"), notes ? "work_notes" : "comments"))
            json_array_append(out, e);
    }
    json_decref(entries);
    return out;
}

static size_t s_count_text(json_t *entries, const char *needle)
{
    size_t n = 0, i;
    json_t *e;
    json_array_foreach(entries, i, e)
    {
        if (strstr(sn_field(e, "value"), needle))
            n++;
    }
    return n;
}

//  --- tests

//  Outbox iteration: copies the first row as seq (8 bytes), size (8), payload.
static int s_grab(uint64_t s, const uint8_t *p, size_t n, bool file, void *arg)
{
    (void)file;
    uint8_t *out = arg;
    memcpy(out, &s, sizeof s);
    memcpy(out + 8, &n, sizeof n);
    memcpy(out + 16, p, n);
    return 1;
}

static void test_create_update_comments_both_ways(void **state)
{
    s_world_t *w = *state;
    //  Created on the public side, matching the trigger (urgency=1).
    json_t *a = s_create(&w->pub, "{\"short_description\":\"Mail down\",\"description\":"
                                  "\"since 9am\",\"urgency\":\"1\",\"impact\":\"2\","
                                  "\"comments\":\"first public comment\","
                                  "\"work_notes\":\"internal: suspect the relay\"}");
    const char *a_id = sn_field(a, "sys_id");
    s_settle(w);
    json_t *b = s_twin_of(&w->priv, a_id);
    assert_non_null(b);
    assert_string_equal(sn_field(b, "short_description"), "Mail down");
    assert_string_equal(sn_field(b, "description"), "since 9am");
    assert_string_equal(sn_field(b, "urgency"), "1");
    assert_string_equal(sn_field(b, "impact"), "2");
    char display[64];
    snprintf(display, sizeof display, "%s@acme", sn_field(a, "number"));
    assert_string_equal(sn_field(b, "correlation_display"), display);
    const char *b_id = sn_field(b, "sys_id");

    //  The twins know each other.
    node_twin_t twin = {0};
    assert_int_equal(node_state_twin_by_local(w->pub.state, S_CONN, a_id, &twin), 0);
    assert_string_equal(twin.remote_sys_id, b_id);
    assert_string_equal(twin.remote_number, sn_field(b, "number"));
    node_twin_clear(&twin);

    //  Updates both ways, comments both ways.
    s_update(&w->priv, b_id, "{\"impact\":\"1\",\"comments\":\"reply from globex\"}");
    s_settle(w);
    s_update(&w->pub, a_id, "{\"description\":\"since 9am, relay replaced\"}");
    s_settle(w);
    json_t *a2 = NULL, *b2 = NULL;
    sn_error_t err;
    assert_int_equal(sn_incident_get(w->pub.user_sn, a_id, NULL, &a2, &err), SN_OK);
    assert_int_equal(sn_incident_get(w->priv.user_sn, b_id, NULL, &b2, &err), SN_OK);
    assert_string_equal(sn_field(a2, "impact"), "1");
    assert_string_equal(sn_field(b2, "description"), "since 9am, relay replaced");

    json_t *ca = s_journal(&w->pub, a_id, false), *cb = s_journal(&w->priv, b_id, false);
    assert_int_equal(s_count_text(cb, "[acme] alice wrote:\nfirst public comment"), 1);
    assert_int_equal(s_count_text(ca, "[globex] bob wrote:\nreply from globex"), 1);
    assert_int_equal(json_array_size(ca), 2);
    assert_int_equal(json_array_size(cb), 2);
    //  Work notes never leave their instance.
    json_t *nb = s_journal(&w->priv, b_id, true);
    assert_int_equal(json_array_size(nb), 0);
    assert_int_equal(s_count_text(cb, "suspect the relay"), 0);

    //  After the sync both sides go quiet: only the polls.
    free(s_control(&w->pub, "DELETE", "/__snemu/log", NULL));
    free(s_control(&w->priv, "DELETE", "/__snemu/log", NULL));
    sleep(1);
    s_settle(w);
    s_settle(w);
    for (int side = 0; side < 2; side++) {
        json_t *log = s_log(side ? &w->priv : &w->pub);
        size_t i;
        json_t *req;
        assert_true(json_array_size(log) >= 2);
        json_array_foreach(log, i, req)
        {
            //  The incident poll, and the attachment poll with the deletion scan
            const char *path = json_string_value(json_object_get(req, "path"));
            assert_string_equal(json_string_value(json_object_get(req, "method")), "GET");
            if (strcmp(path, "/api/now/v1/attachment"))
                assert_string_equal(path, "/api/now/table/incident");
        }
        json_decref(log);
    }
    json_decref(a);
    json_decref(b);
    json_decref(a2);
    json_decref(b2);
    json_decref(ca);
    json_decref(cb);
    json_decref(nb);
}

static void test_private_side_creates_and_resolves(void **state)
{
    s_world_t *w = *state;
    json_t *b = s_create(&w->priv, "{\"short_description\":\"VPN flaps\",\"urgency\":\"1\"}");
    const char *b_id = sn_field(b, "sys_id");
    //  Not matching the trigger: stays home.
    json_t *quiet = s_create(&w->priv, "{\"short_description\":\"local only\",\"urgency\":\"3\"}");
    s_settle(w);
    json_t *a = s_twin_of(&w->pub, b_id);
    assert_non_null(a);
    json_t *none = s_twin_of(&w->pub, sn_field(quiet, "sys_id"));
    assert_null(none);
    //  Resolve with close code and notes: the state arrives with them.
    s_update(&w->priv, b_id,
             "{\"state\":\"6\",\"close_code\":\"Solved (Permanently)\",\"close_notes\":\"fixed\"}");
    s_settle(w);
    json_t *a2 = NULL;
    sn_error_t err;
    assert_int_equal(sn_incident_get(w->pub.user_sn, sn_field(a, "sys_id"), NULL, &a2, &err),
                     SN_OK);
    assert_string_equal(sn_field(a2, "state"), "6");
    assert_string_equal(sn_field(a2, "close_code"), "Solved (Permanently)");
    assert_string_equal(sn_field(a2, "close_notes"), "fixed");
    uint64_t count = 1;
    assert_int_equal(node_state_error_count(w->pub.state, NULL, &count), 0);
    assert_int_equal(count, 0);
    json_decref(a);
    json_decref(a2);
    json_decref(b);
    json_decref(quiet);
}

static void test_concurrent_update_converges(void **state)
{
    s_world_t *w = *state;
    json_t *a = s_create(&w->pub, "{\"short_description\":\"Printer\",\"urgency\":\"1\"}");
    const char *a_id = sn_field(a, "sys_id");
    s_settle(w);
    json_t *b = s_twin_of(&w->priv, a_id);
    const char *b_id = sn_field(b, "sys_id");
    //  Both change in the same interval: polls run before either applies.
    s_update(&w->pub, a_id, "{\"short_description\":\"Printer (public)\",\"impact\":\"1\"}");
    s_update(&w->priv, b_id, "{\"short_description\":\"Printer (private)\",\"urgency\":\"2\"}");
    assert_int_equal(node_sync_poll(w->pub.sync, S_CONN, NULL), NODE_SYNC_OK);
    assert_int_equal(node_sync_poll(w->priv.sync, S_CONN, NULL), NODE_SYNC_OK);
    s_settle(w);
    json_t *a2 = NULL, *b2 = NULL;
    sn_error_t err;
    assert_int_equal(sn_incident_get(w->pub.user_sn, a_id, NULL, &a2, &err), SN_OK);
    assert_int_equal(sn_incident_get(w->priv.user_sn, b_id, NULL, &b2, &err), SN_OK);
    static const char *const fields[] = {"short_description", "urgency", "impact", NULL};
    for (int i = 0; fields[i]; i++)
        assert_string_equal(sn_field(a2, fields[i]), sn_field(b2, fields[i]));
    assert_string_equal(sn_field(a2, "short_description"), "Printer (public)");
    assert_string_equal(sn_field(a2, "urgency"), "2");
    assert_string_equal(sn_field(a2, "impact"), "1");
    json_decref(a);
    json_decref(b);
    json_decref(a2);
    json_decref(b2);
}

static void test_refused_twin_blocks_alone_and_retries(void **state)
{
    s_world_t *w = *state;
    //  The private emulator refuses bodies above 64000 bytes (400): this
    //  incident cannot be created there, the others can.
    char *big = malloc(70000);
    memset(big, 'x', 69999);
    big[69999] = 0;
    json_t *fields =
        json_pack("{s:s,s:s,s:s}", "short_description", "huge", "description", big, "urgency", "1");
    sn_created_t created;
    json_t *a = NULL;
    sn_error_t err;
    assert_int_equal(sn_incident_create(w->pub.user_sn, fields, &created, &a, &err), SN_OK);
    json_decref(fields);
    json_t *ok = s_create(&w->pub, "{\"short_description\":\"small\",\"urgency\":\"1\"}");
    s_settle(w);
    assert_null(s_twin_of(&w->priv, created.sys_id));
    json_t *ok_twin = s_twin_of(&w->priv, sn_field(ok, "sys_id"));
    assert_non_null(ok_twin);
    //  The refusal is listed on the private side (local) and on the public
    //  side (reported by RECEIPT).
    node_error_t *list;
    size_t count;
    assert_int_equal(node_state_error_list(w->priv.state, NULL, &list, &count), 0);
    assert_int_equal(count, 1);
    assert_string_equal(list[0].origin, "local");
    assert_string_equal(list[0].remote_number, created.number);
    int64_t id = list[0].id;
    free(list);
    assert_int_equal(node_state_error_list(w->pub.state, NULL, &list, &count), 0);
    assert_int_equal(count, 1);
    assert_string_equal(list[0].origin, "remote");
    free(list);
    //  A later change of the same incident is parked behind the error...
    s_update(&w->pub, created.sys_id, "{\"impact\":\"1\",\"comments\":\"more info\"}");
    s_settle(w);
    assert_null(s_twin_of(&w->priv, created.sys_id));
    uint64_t blocked = 0;
    assert_int_equal(node_state_blocked_count(w->priv.state, S_CONN, NULL, &blocked), 0);
    assert_int_equal(blocked, 2);
    //  ... the fix (a shorter description) goes through the same chain and
    //  clears it; `errors retry` re-runs the chain too.
    s_update(&w->pub, created.sys_id, "{\"description\":\"short now\"}");
    s_settle(w);
    assert_int_equal(node_state_error_request_retry(w->priv.state, id) >= 0, 1);
    assert_int_equal(node_sync_retry(w->priv.sync, NULL), NODE_SYNC_OK);
    s_settle(w);
    json_t *b = s_twin_of(&w->priv, created.sys_id);
    assert_non_null(b);
    assert_string_equal(sn_field(b, "description"), "short now");
    assert_string_equal(sn_field(b, "impact"), "1");
    json_t *cb = s_journal(&w->priv, sn_field(b, "sys_id"), false);
    assert_int_equal(s_count_text(cb, "more info"), 1);
    assert_int_equal(node_state_error_count(w->priv.state, NULL, &count), 0);
    assert_int_equal(count, 0);
    uint64_t remote_errors = 9;
    assert_int_equal(node_state_error_count(w->pub.state, NULL, &remote_errors), 0);
    assert_int_equal(remote_errors, 0);
    free(big);
    json_decref(a);
    json_decref(ok);
    json_decref(ok_twin);
    json_decref(b);
    json_decref(cb);
}

static void test_auth_failure_errors_connection_then_resumes(void **state)
{
    s_world_t *w = *state;
    free(s_control(&w->priv, "POST", "/__snemu/users", "{\"name\":\"sync\",\"password\":\"new\"}"));
    json_t *a = s_create(&w->pub, "{\"short_description\":\"during outage\",\"urgency\":\"1\"}");
    assert_int_equal(node_sync_poll(w->pub.sync, S_CONN, NULL), NODE_SYNC_OK);
    assert_int_equal(node_sync_poll(w->priv.sync, S_CONN, NULL), NODE_SYNC_CONN_ERROR);
    node_conn_t conn;
    assert_int_equal(node_state_conn_get(w->priv.state, S_CONN, &conn), 0);
    assert_int_equal(conn.status, NODE_CONN_ERROR);
    assert_non_null(strstr(conn.error_text, "auth"));
    //  Inbound messages wait (not consumed) while the connection is in error.
    assert_int_equal(s_carry(&w->pub, &w->priv), 0);
    //  The password is fixed: the next poll resumes, nothing was lost.
    free(s_control(&w->priv, "POST", "/__snemu/users",
                   "{\"name\":\"sync\",\"password\":\"syncpw\"}"));
    assert_int_equal(node_sync_poll(w->priv.sync, S_CONN, NULL), NODE_SYNC_OK);
    assert_int_equal(node_state_conn_get(w->priv.state, S_CONN, &conn), 0);
    assert_int_equal(conn.status, NODE_CONN_ACTIVE);
    s_settle(w);
    json_t *b = s_twin_of(&w->priv, sn_field(a, "sys_id"));
    assert_non_null(b);
    json_decref(a);
    json_decref(b);
}

static void test_rate_limit_and_outage_delay_only(void **state)
{
    s_world_t *w = *state;
    json_t *a = s_create(&w->pub, "{\"short_description\":\"storm\",\"urgency\":\"1\"}");
    s_fault(&w->priv, "{\"rate_limit\":{\"count\":20,\"retry_after\":1}}");
    assert_int_equal(node_sync_poll(w->pub.sync, S_CONN, NULL), NODE_SYNC_OK);
    //  The client gives up within its budget: the apply is delayed, not lost.
    assert_int_equal(s_carry(&w->pub, &w->priv), 0);
    free(s_control(&w->priv, "POST", "/__snemu/reset", NULL));
    s_fault(&w->priv, "{\"fail_next\":{\"count\":2,\"status\":503}}");
    s_settle(w);
    json_t *b = s_twin_of(&w->priv, sn_field(a, "sys_id"));
    assert_non_null(b);
    json_decref(a);
    json_decref(b);
}

static void test_bad_seal_rejected_and_reported(void **state)
{
    s_world_t *w = *state;
    json_t *a = s_create(&w->pub, "{\"short_description\":\"sealed\",\"urgency\":\"1\"}");
    assert_int_equal(node_sync_poll(w->pub.sync, S_CONN, NULL), NODE_SYNC_OK);
    //  Alter one byte of the sealed payload on its way.
    uint8_t copy[65536];
    size_t size = 0;
    uint64_t seq = 0;
    assert_int_equal(node_state_outbox_each(w->pub.state, S_CONN, 0, 1, s_grab, copy), 0);
    memcpy(&seq, copy, sizeof seq);
    memcpy(&size, copy + 8, sizeof size);
    copy[16 + size / 2] ^= 1;
    //  Refused, reported once however often it comes, never applied.
    for (int i = 0; i < 2; i++)
        assert_int_equal(node_sync_apply(w->priv.sync, S_CONN, seq, copy + 16, size),
                         NODE_SYNC_REFUSED);
    node_error_t *list;
    size_t count;
    assert_int_equal(node_state_error_list(w->priv.state, NULL, &list, &count), 0);
    assert_int_equal(count, 1);
    assert_string_equal(list[0].code, "seal");
    free(list);
    assert_null(s_twin_of(&w->priv, sn_field(a, "sys_id")));
    //  Nothing later overtakes it, and the seq is not burnt: the genuine
    //  payload, delivered again, applies.
    assert_int_equal(node_sync_apply(w->priv.sync, S_CONN, seq + 1, copy + 16, size),
                     NODE_SYNC_HOLD);
    copy[16 + size / 2] ^= 1;
    assert_int_equal(node_sync_apply(w->priv.sync, S_CONN, seq, copy + 16, size), NODE_SYNC_OK);
    json_t *b = s_twin_of(&w->priv, sn_field(a, "sys_id"));
    assert_non_null(b);
    json_decref(b);
    json_decref(a);
}

//  A broker restored from an older backup (or one that lies) delivers a new
//  message under a sequence this node applied already: not applied, and
//  reported, never dropped silently; the same message delivered again after
//  a reconnect stays a quiet no-op.
static void test_new_message_under_an_applied_seq_is_reported(void **state)
{
    s_world_t *w = *state;
    json_t *a = s_create(&w->pub, "{\"short_description\":\"first\",\"urgency\":\"1\"}");
    assert_int_equal(node_sync_poll(w->pub.sync, S_CONN, NULL), NODE_SYNC_OK);
    static uint8_t first[65536], other[65536];
    assert_int_equal(node_state_outbox_each(w->pub.state, S_CONN, 0, 1, s_grab, first), 0);
    uint64_t seq;
    size_t size;
    memcpy(&seq, first, sizeof seq);
    memcpy(&size, first + 8, sizeof size);
    assert_int_equal(node_sync_apply(w->priv.sync, S_CONN, seq, first + 16, size), NODE_SYNC_OK);
    //  Delivered again, same bytes: nothing to say
    assert_int_equal(node_sync_apply(w->priv.sync, S_CONN, seq, first + 16, size), NODE_SYNC_OK);
    node_error_t *list;
    size_t count;
    assert_int_equal(node_state_error_list(w->priv.state, NULL, &list, &count), 0);
    assert_int_equal(count, 0);
    free(list);
    //  Other bytes under the sequence already applied (the broker's queue
    //  was rolled back and the sender sealed something else as seq)
    memcpy(other, first, 16 + size);
    other[16 + size / 2] ^= 1;
    assert_int_equal(node_sync_apply(w->priv.sync, S_CONN, seq, other + 16, size),
                     NODE_SYNC_REFUSED);
    assert_int_equal(node_state_error_list(w->priv.state, NULL, &list, &count), 0);
    assert_int_equal(count, 1);
    assert_string_equal(list[0].code, "seq_reused");
    assert_int_equal(list[0].seq, seq);
    assert_non_null(strstr(list[0].message, "restored from an older backup"));
    free(list);
    json_decref(a);
}

//  Reads the key generations of side; asserts they are there.
static node_rekey_gens_t s_gens(const s_side_t *side)
{
    node_rekey_gens_t gens;
    char err[256];
    if (node_rekey_read(side->dir, S_CONN, &gens, err, sizeof err))
        fail_msg("no key generations on %s: %s", side->dir, err);
    return gens;
}

//  A rekey started while both sides change their incidents: every change and
//  comment crosses once, both sides end in generation 1 with generation 0
//  and the join's key file gone, and a second rekey works the same way.
static void test_rekey_during_changes_loses_nothing(void **state)
{
    s_world_t *w = *state;
    json_t *a = s_create(&w->pub, "{\"short_description\":\"before\",\"urgency\":\"1\"}");
    const char *a_id = sn_field(a, "sys_id");
    s_settle(w);
    json_t *b = s_twin_of(&w->priv, a_id);
    const char *b_id = sn_field(b, "sys_id");
    char text[256];
    assert_int_equal(node_sync_rekey(w->pub.sync, S_CONN, text, sizeof text), NODE_SYNC_OK);
    assert_non_null(strstr(text, "started"));
    //  A second start while the first is under way is refused
    assert_int_equal(node_sync_rekey(w->pub.sync, S_CONN, text, sizeof text), NODE_SYNC_OK);
    assert_non_null(strstr(text, "under way"));
    //  Both sides change things while the REKEY is on its way
    s_next_second();
    s_update(&w->pub, a_id, "{\"comments\":\"public during rekey\"}");
    s_update(&w->priv, b_id, "{\"comments\":\"private during rekey\"}");
    s_next_second();
    assert_int_equal(node_sync_poll(w->pub.sync, S_CONN, NULL), NODE_SYNC_OK);
    assert_int_equal(node_sync_poll(w->priv.sync, S_CONN, NULL), NODE_SYNC_OK);
    s_settle(w);
    //  And after it
    s_update(&w->pub, a_id, "{\"comments\":\"public after rekey\"}");
    s_update(&w->priv, b_id, "{\"comments\":\"private after rekey\"}");
    s_settle(w);
    json_t *ja = s_journal(&w->pub, a_id, false), *jb = s_journal(&w->priv, b_id, false);
    const char *said[] = {"public during rekey", "private during rekey", "public after rekey",
                          "private after rekey"};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(s_count_text(ja, said[i]), 1);
        assert_int_equal(s_count_text(jb, said[i]), 1);
    }
    json_decref(ja);
    json_decref(jb);
    //  Both sides in generation 1, generation 0 wiped, no join key file left
    s_side_t *sides[] = {&w->pub, &w->priv};
    for (size_t i = 0; i < 2; i++) {
        node_rekey_gens_t gens = s_gens(sides[i]);
        assert_int_equal(gens.current, 1);
        assert_int_equal(gens.count, 1);
        assert_int_equal(gens.pending, 0);
        node_rekey_wipe(&gens);
        node_keys_t keys;
        char err[256];
        assert_int_equal(node_keys_read(sides[i]->dir, S_CONN, &keys, err, sizeof err), 1);
    }
    //  A second rotation, started by the private side this time
    assert_int_equal(node_sync_rekey(w->priv.sync, S_CONN, text, sizeof text), NODE_SYNC_OK);
    s_settle(w);
    s_update(&w->pub, a_id, "{\"short_description\":\"after two\"}");
    s_settle(w);
    s_update(&w->priv, b_id, "{\"comments\":\"last word\"}");
    s_settle(w);
    json_t *b2 = s_twin_of(&w->priv, a_id);
    assert_string_equal(sn_field(b2, "short_description"), "after two");
    json_decref(b2);
    ja = s_journal(&w->pub, a_id, false);
    assert_int_equal(s_count_text(ja, "last word"), 1);
    json_decref(ja);
    for (size_t i = 0; i < 2; i++) {
        node_rekey_gens_t gens = s_gens(sides[i]);
        assert_int_equal(gens.current, 2);
        assert_int_equal(gens.count, 1);
        node_rekey_wipe(&gens);
    }
    json_decref(a);
    json_decref(b);
}

static void test_crash_between_write_and_commit_applies_once(void **state)
{
    s_world_t *w = *state;
    json_t *a = s_create(&w->pub, "{\"short_description\":\"crashy\",\"urgency\":\"1\","
                                  "\"comments\":\"one comment\"}");
    assert_int_equal(node_sync_poll(w->pub.sync, S_CONN, NULL), NODE_SYNC_OK);
    uint8_t copy[65536];
    assert_int_equal(node_state_outbox_each(w->pub.state, S_CONN, 0, 1, s_grab, copy), 0);
    uint64_t seq;
    size_t size;
    memcpy(&seq, copy, sizeof seq);
    memcpy(&size, copy + 8, sizeof size);
    //  The private node wrote the twin and the comment, then died before
    //  its commit: replay that by applying, then rewinding what the commit
    //  recorded (applied seq, twin row, comment mark) and keeping the intent.
    assert_int_equal(node_sync_apply(w->priv.sync, S_CONN, seq, copy + 16, size), NODE_SYNC_OK);
    json_t *b = s_twin_of(&w->priv, sn_field(a, "sys_id"));
    assert_non_null(b);
    node_state_destroy(&w->priv.state);
    node_sync_destroy(&w->priv.sync);
    char path[128], sql[512];
    snprintf(path, sizeof path, "%s/node.db", w->priv.dir);
    snprintf(sql, sizeof sql,
             "UPDATE connections SET applied_in_seq = 0;"
             " DELETE FROM twins; DELETE FROM comments; DELETE FROM outbox;"
             " INSERT INTO intents(conn, seq, created_at) VALUES('%s', %llu, 0);",
             S_CONN, (unsigned long long)seq);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    char err[256];
    w->priv.state = node_state_open(w->priv.dir, err, sizeof err);
    node_sync_config_t cfg = {.state = w->priv.state,
                              .sn = w->priv.sync_sn,
                              .state_dir = w->priv.dir,
                              .instance = "globex",
                              .sync_user = "sync"};
    w->priv.sync = node_sync_new(&cfg);
    //  Delivered again: one twin, one comment.
    assert_int_equal(node_sync_apply(w->priv.sync, S_CONN, seq, copy + 16, size), NODE_SYNC_OK);
    json_t *again = s_twin_of(&w->priv, sn_field(a, "sys_id")); //  fails if two
    assert_string_equal(sn_field(again, "sys_id"), sn_field(b, "sys_id"));
    json_t *cb = s_journal(&w->priv, sn_field(b, "sys_id"), false);
    assert_int_equal(s_count_text(cb, "one comment"), 1);
    json_decref(a);
    json_decref(b);
    json_decref(again);
    json_decref(cb);
}

//  A RECEIPT that names a twin another local record already has (a state
//  from before twin ids were honoured) is recorded as that twin's error;
//  the node does not stop on the unique index.
static void test_receipt_naming_a_taken_twin_is_an_error_not_a_stop(void **state)
{
    s_world_t *w = *state;
    json_t *a = s_create(&w->pub, "{\"short_description\":\"Claimed\",\"urgency\":\"1\"}");
    const char *a_id = sn_field(a, "sys_id");
    s_next_second();
    assert_int_equal(node_sync_poll(w->pub.sync, S_CONN, NULL), NODE_SYNC_OK);
    assert_int_equal(s_carry(&w->pub, &w->priv), 1);
    json_t *b = s_twin_of(&w->priv, a_id);
    assert_non_null(b);
    node_twin_t forged = {.under_sync = true,
                          .local = node_fields_new(),
                          .previous = node_fields_new(),
                          .pending = node_fields_new()};
    snprintf(forged.conn, sizeof forged.conn, "%s", S_CONN);
    snprintf(forged.local_sys_id, sizeof forged.local_sys_id, "%s",
             "0123456789abcdef0123456789abcdef");
    snprintf(forged.local_number, sizeof forged.local_number, "%s", "INC0099999");
    snprintf(forged.remote_sys_id, sizeof forged.remote_sys_id, "%s", sn_field(b, "sys_id"));
    assert_int_equal(node_state_twin_put(w->pub.state, &forged), 0);
    node_twin_clear(&forged);
    assert_int_equal(s_carry(&w->priv, &w->pub), 1); //  the RECEIPT: applied, no stop
    node_error_t *errors = NULL;
    size_t count = 0;
    assert_int_equal(node_state_error_list(w->pub.state, S_CONN, &errors, &count), 0);
    assert_int_equal(count, 1);
    assert_string_equal(errors[0].code, "conflict");
    assert_string_equal(errors[0].local_number, sn_field(a, "number"));
    assert_non_null(strstr(errors[0].message, "INC0099999"));
    free(errors);
    node_twin_t twin = {0};
    assert_int_equal(node_state_twin_by_local(w->pub.state, S_CONN, a_id, &twin), 0);
    assert_string_equal(twin.remote_sys_id, ""); //  the forged row keeps the claim
    node_twin_clear(&twin);
    json_decref(a);
    json_decref(b);
}

//  --- attachments

//  Runs the transfer work of side until none is due; returns the steps done.
static int s_transfer(s_side_t *side)
{
    int steps = 0, rc;
    while ((rc = node_transfer_step(side->transfer)) == 1)
        steps++;
    assert_int_equal(rc, 0);
    return steps;
}

//  Polls, transfers, pumps and carries on both sides until nothing moves.
static void s_settle_files(s_world_t *w)
{
    for (int round = 0; round < 40; round++) {
        s_next_second();
        assert_int_equal(node_sync_poll(w->pub.sync, S_CONN, NULL), NODE_SYNC_OK);
        assert_int_equal(node_sync_poll(w->priv.sync, S_CONN, NULL), NODE_SYNC_OK);
        int work = 0;
        for (int inner = 0; inner < 200; inner++) {
            bool sent = false;
            int steps = s_transfer(&w->pub) + s_transfer(&w->priv);
            assert_int_equal(node_sync_files_pump(w->pub.sync, &sent), NODE_SYNC_OK);
            assert_int_equal(node_sync_files_pump(w->priv.sync, &sent), NODE_SYNC_OK);
            size_t moved = s_carry(&w->pub, &w->priv) + s_carry(&w->priv, &w->pub);
            work += steps + (int)moved;
            if (steps == 0 && moved == 0)
                break;
        }
        if (work == 0 && round > 0)
            return;
    }
    fail_msg("attachments did not settle in 40 rounds");
}

//  A file of size bytes (a pattern seeded by seed) at path.
static void s_make_file(const char *path, size_t size, unsigned seed)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (size_t i = 0; i < size; i++)
        fputc((int)((i * 131 + seed * 7 + i / 4099) & 0xff), f);
    fclose(f);
}

//  Attaches path to incident sys_id on side as its human; returns the metadata.
static json_t *s_attach(s_side_t *side, const char *sys_id, const char *name, const char *path,
                        uint64_t size)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    sn_attachment_file_t file = {.table = "incident",
                                 .table_sys_id = sys_id,
                                 .file_name = name,
                                 .content_type = "application/octet-stream",
                                 .fd = fd,
                                 .size = size};
    json_t *meta = NULL;
    sn_error_t err;
    assert_int_equal(sn_attachment_upload(side->user_sn, &file, &meta, &err), SN_OK);
    close(fd);
    return meta;
}

//  The attachments of incident sys_id on side.
static json_t *s_files(s_side_t *side, const char *sys_id)
{
    json_t *rows = NULL;
    sn_error_t err;
    assert_int_equal(sn_attachment_list_record(side->user_sn, "incident", sys_id, &rows, &err),
                     SN_OK);
    return rows;
}

//  The one attachment named name in rows (fails when not exactly one).
static json_t *s_one_named(json_t *rows, const char *name)
{
    json_t *found = NULL;
    size_t i, n = 0;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        if (!strcmp(sn_field(row, "file_name"), name)) {
            found = row;
            n++;
        }
    }
    assert_int_equal(n, 1);
    return found;
}

static node_file_state_t s_file_state(s_side_t *side, node_file_dir_t dir, const char *file_id)
{
    node_file_t f;
    assert_int_equal(node_state_file_get(side->state, S_CONN, dir, file_id, &f), 0);
    return f.state;
}

static void test_files_cross_both_ways_once_and_deletions_follow(void **state)
{
    s_world_t *w = *state;
    json_t *a = s_create(&w->pub, "{\"short_description\":\"files\",\"urgency\":\"1\"}");
    const char *a_id = sn_field(a, "sys_id");
    char big[128], small[128], empty[128];
    snprintf(big, sizeof big, "%s/big.bin", w->tmp);
    snprintf(small, sizeof small, "%s/small.txt", w->tmp);
    snprintf(empty, sizeof empty, "%s/empty", w->tmp);
    s_make_file(big, 3 * 1024 * 1024 + 12345, 1); //  7 chunks, the last one short
    s_make_file(small, 1000, 2);
    s_make_file(empty, 0, 3);
    //  One file before the incident is a twin: a new twin receives it too
    json_t *m1 = s_attach(&w->pub, a_id, "Überprüfung €.bin", big, 3 * 1024 * 1024 + 12345);
    s_settle_files(w);
    json_t *b = s_twin_of(&w->priv, a_id);
    assert_non_null(b);
    const char *b_id = sn_field(b, "sys_id");
    json_t *m2 = s_attach(&w->pub, a_id, "..", empty, 0);
    json_t *m3 = s_attach(&w->priv, b_id, "bob notes.txt", small, 1000);
    s_settle_files(w);

    json_t *on_b = s_files(&w->priv, b_id);
    json_t *on_a = s_files(&w->pub, a_id);
    assert_int_equal(json_array_size(on_b), 3); //  bob's own and two copies, no echo
    assert_int_equal(json_array_size(on_a), 3);
    json_t *c1 = s_one_named(on_b, "Überprüfung €.bin");
    assert_string_equal(sn_field(c1, "hash"), sn_field(m1, "hash"));
    assert_string_equal(sn_field(c1, "size_bytes"), sn_field(m1, "size_bytes"));
    assert_string_equal(sn_field(c1, "sys_created_by"), "sync");
    assert_string_equal(sn_field(s_one_named(on_b, ".."), "hash"), sn_field(m2, "hash"));
    assert_string_equal(sn_field(s_one_named(on_a, "bob notes.txt"), "hash"), sn_field(m3, "hash"));
    assert_int_equal(s_file_state(&w->pub, NODE_FILE_OUT, sn_field(m1, "sys_id")), NODE_FILE_SENT);
    assert_int_equal(s_file_state(&w->priv, NODE_FILE_IN, sn_field(m1, "sys_id")),
                     NODE_FILE_RECEIVED);
    assert_int_equal(s_file_state(&w->priv, NODE_FILE_OUT, sn_field(m3, "sys_id")), NODE_FILE_SENT);

    //  Deleted at its source: the copy goes; a person's file on the twin stays
    sn_error_t err;
    assert_int_equal(sn_attachment_delete(w->pub.user_sn, sn_field(m1, "sys_id"), &err), SN_OK);
    //  Deleting a copy deletes nothing at the source
    json_t *copy3 = s_one_named(on_a, "bob notes.txt");
    assert_int_equal(sn_attachment_delete(w->pub.user_sn, sn_field(copy3, "sys_id"), &err), SN_OK);
    s_settle_files(w);
    json_t *after_b = s_files(&w->priv, b_id);
    assert_int_equal(json_array_size(after_b), 2); //  bob's and the empty file's copy
    s_one_named(after_b, "bob notes.txt");
    s_one_named(after_b, "..");
    assert_int_equal(s_file_state(&w->priv, NODE_FILE_IN, sn_field(m1, "sys_id")),
                     NODE_FILE_DELETED);
    json_decref(after_b);
    json_decref(on_a);
    json_decref(on_b);
    json_decref(m1);
    json_decref(m2);
    json_decref(m3);
    json_decref(a);
    json_decref(b);
}

static void test_refused_file_is_a_twin_error_and_retries(void **state)
{
    s_world_t *w = *state;
    json_t *a = s_create(&w->pub, "{\"short_description\":\"exe\",\"urgency\":\"1\"}");
    const char *a_id = sn_field(a, "sys_id");
    s_settle_files(w);
    json_t *b = s_twin_of(&w->priv, a_id);
    assert_non_null(b);
    s_fault(&w->priv, "{\"attachment_extensions\":\"txt\"}");
    char path[128];
    snprintf(path, sizeof path, "%s/tool.exe", w->tmp);
    s_make_file(path, 5000, 9);
    json_t *m = s_attach(&w->pub, a_id, "tool.exe", path, 5000);
    s_settle_files(w);
    assert_int_equal(s_file_state(&w->priv, NODE_FILE_IN, sn_field(m, "sys_id")),
                     NODE_FILE_REFUSED);
    assert_int_equal(s_file_state(&w->pub, NODE_FILE_OUT, sn_field(m, "sys_id")),
                     NODE_FILE_REFUSED);
    node_error_t *errors = NULL;
    size_t count = 0;
    assert_int_equal(node_state_error_list(w->priv.state, S_CONN, &errors, &count), 0);
    assert_int_equal(count, 1);
    assert_string_equal(errors[0].origin, "file");
    assert_non_null(strstr(errors[0].message, "tool.exe"));
    //  Fields still flow meanwhile
    s_update(&w->pub, a_id, "{\"short_description\":\"exe, updated\"}");
    //  The rule is fixed, the admin retries
    s_fault(&w->priv, "{\"attachment_extensions\":null}");
    assert_int_equal(node_state_error_request_retry(w->priv.state, errors[0].id), 0);
    assert_int_equal(node_sync_retry(w->priv.sync, NULL), NODE_SYNC_OK);
    free(errors);
    s_settle_files(w);
    json_t *twin = s_twin_of(&w->priv, a_id);
    assert_string_equal(sn_field(twin, "short_description"), "exe, updated");
    json_t *on_b = s_files(&w->priv, sn_field(b, "sys_id"));
    assert_int_equal(json_array_size(on_b), 1);
    assert_string_equal(sn_field(s_one_named(on_b, "tool.exe"), "hash"), sn_field(m, "hash"));
    assert_int_equal(s_file_state(&w->pub, NODE_FILE_OUT, sn_field(m, "sys_id")), NODE_FILE_SENT);
    assert_int_equal(node_state_error_count(w->priv.state, S_CONN, &(uint64_t){0}), 0);
    json_decref(on_b);
    json_decref(twin);
    json_decref(m);
    json_decref(a);
    json_decref(b);
}

static void test_size_cap_skips_on_either_side(void **state)
{
    s_world_t *w = *state;
    json_t *a = s_create(&w->pub, "{\"short_description\":\"caps\",\"urgency\":\"1\"}");
    const char *a_id = sn_field(a, "sys_id");
    s_settle_files(w);
    //  The receiver takes at most 10,000 bytes; the sender sends anything
    assert_int_equal(node_state_conn_set_attachments(w->priv.state, S_CONN, NODE_ATTACH_ALL, 10000),
                     0);
    char path[128];
    snprintf(path, sizeof path, "%s/f.bin", w->tmp);
    s_make_file(path, 20000, 4);
    json_t *big = s_attach(&w->pub, a_id, "big.bin", path, 20000);
    json_t *small = s_attach(&w->pub, a_id, "small.bin", path, 5000);
    s_settle_files(w);
    node_file_t f;
    assert_int_equal(
        node_state_file_get(w->pub.state, S_CONN, NODE_FILE_OUT, sn_field(big, "sys_id"), &f), 0);
    assert_int_equal(f.state, NODE_FILE_SKIPPED);
    assert_non_null(strstr(f.text, "larger than the cap of 10000 bytes on globex"));
    assert_int_equal(s_file_state(&w->pub, NODE_FILE_OUT, sn_field(small, "sys_id")),
                     NODE_FILE_SENT);
    //  attachments none on the sender: nothing more leaves
    assert_int_equal(node_state_conn_set_attachments(w->pub.state, S_CONN, NODE_ATTACH_NONE, 0), 0);
    json_t *third = s_attach(&w->pub, a_id, "third.bin", path, 100);
    s_settle_files(w);
    assert_int_equal(s_file_state(&w->pub, NODE_FILE_OUT, sn_field(third, "sys_id")),
                     NODE_FILE_SKIPPED);
    json_t *b = s_twin_of(&w->priv, a_id);
    json_t *on_b = s_files(&w->priv, sn_field(b, "sys_id"));
    assert_int_equal(json_array_size(on_b), 1);
    json_decref(on_b);
    json_decref(b);
    json_decref(third);
    json_decref(big);
    json_decref(small);
    json_decref(a);
}

static void test_deleted_while_an_upload_answer_was_lost(void **state)
{
    s_world_t *w = *state;
    json_t *a = s_create(&w->pub, "{\"short_description\":\"lost\",\"urgency\":\"1\"}");
    const char *a_id = sn_field(a, "sys_id");
    s_settle_files(w);
    json_t *b = s_twin_of(&w->priv, a_id);
    assert_non_null(b);
    char path[128];
    snprintf(path, sizeof path, "%s/lost.bin", w->tmp);
    s_make_file(path, 70000, 5);
    json_t *m = s_attach(&w->pub, a_id, "lost.bin", path, 70000);
    //  The receiving instance stores the upload but its answer is lost
    s_fault(&w->priv, "{\"lose_answer\":{\"count\":1,\"method\":\"POST\",\"user\":\"sync\"}}");
    for (int round = 0; round < 10; round++) {
        s_next_second();
        node_sync_poll(w->pub.sync, S_CONN, NULL);
        bool sent = false;
        s_transfer(&w->pub);
        node_sync_files_pump(w->pub.sync, &sent);
        s_carry(&w->pub, &w->priv);
        node_transfer_step(w->priv.transfer);
        json_t *on_b = s_files(&w->priv, sn_field(b, "sys_id"));
        size_t n = json_array_size(on_b);
        json_decref(on_b);
        if (n == 1)
            break;
    }
    node_file_t f;
    assert_int_equal(
        node_state_file_get(w->priv.state, S_CONN, NODE_FILE_IN, sn_field(m, "sys_id"), &f), 0);
    assert_int_equal(f.state, NODE_FILE_COMPLETE); //  stored there, not known here
    //  Deleted at the source before the receiver tried again: the copy goes
    sn_error_t err;
    assert_int_equal(sn_attachment_delete(w->pub.user_sn, sn_field(m, "sys_id"), &err), SN_OK);
    for (int round = 0; round < 10 && f.state != NODE_FILE_DELETED; round++) {
        s_next_second();
        node_sync_poll(w->pub.sync, S_CONN, NULL);
        bool sent = false;
        node_sync_files_pump(w->pub.sync, &sent);
        s_carry(&w->pub, &w->priv); //  no upload attempt on the receiver meanwhile
        assert_int_equal(
            node_state_file_get(w->priv.state, S_CONN, NODE_FILE_IN, sn_field(m, "sys_id"), &f), 0);
    }
    assert_int_equal(f.state, NODE_FILE_DELETED);
    s_settle_files(w);
    json_t *on_b = s_files(&w->priv, sn_field(b, "sys_id"));
    assert_int_equal(json_array_size(on_b), 0);
    assert_int_equal(s_file_state(&w->priv, NODE_FILE_IN, sn_field(m, "sys_id")),
                     NODE_FILE_DELETED);
    json_decref(on_b);
    json_decref(m);
    json_decref(a);
    json_decref(b);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_update_comments_both_ways, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_private_side_creates_and_resolves, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_update_converges, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_refused_twin_blocks_alone_and_retries,
                                        s_setup_small_bodies, s_teardown),
        cmocka_unit_test_setup_teardown(test_auth_failure_errors_connection_then_resumes, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_rate_limit_and_outage_delay_only, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_bad_seal_rejected_and_reported, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_new_message_under_an_applied_seq_is_reported, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_rekey_during_changes_loses_nothing, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_crash_between_write_and_commit_applies_once, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_receipt_naming_a_taken_twin_is_an_error_not_a_stop,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_files_cross_both_ways_once_and_deletions_follow,
                                        s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_refused_file_is_a_twin_error_and_retries, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_size_cap_skips_on_either_side, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_deleted_while_an_upload_answer_was_lost, s_setup,
                                        s_teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
