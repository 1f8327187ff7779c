/*  test_engine.c: the node daemon's hand-off between its loop and its worker
    thread (node_worker.h) on a bench, without ServiceNow, a database or a
    broker: the test is the loop, and the worker's ops are a rig that records
    what it is asked to apply and answers as a script says.

    It proves the promises the engine relies on: each connection's messages
    are applied in seq order whatever order they arrive in, a re-delivered
    seq is applied once, nothing is lost across threads (thousands of
    messages over several connections), a held message waits and a refused
    one is not CONSUMED, FORGET drops a connection's queue, nothing is polled
    before the WELCOME, a fatal answer stops the worker, a worker that keeps
    answering while the loop does not read never blocks, and a stop with
    work pending ends after the message in progress and frees the rest.
    Runs under ThreadSanitizer in scripts/test.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "node_worker.h"

#define S_CONNS 4 //  Connections of the rig: c0 .. c3

//  One call of ops->apply.
typedef struct {
    int conn;     //  Index of the connection
    uint64_t seq; //  Sequence applied
} s_call_t;

//  One scripted answer of ops->apply.
typedef struct {
    int conn;          //  Connection index
    uint64_t seq;      //  Sequence
    node_sync_rc_t rc; //  What apply returns
    int times;         //  For this many calls
} s_script_t;

//  The worker's ops and what they saw; every field below lock is shared by
//  the test thread and the worker thread.
typedef struct {
    pthread_mutex_t lock;   //  Guards everything below
    pthread_cond_t changed; //  Broadcast on every call of an op
    s_call_t *calls;        //  Apply calls in order
    size_t call_count;      //  Entries
    size_t call_cap;        //  Allocated
    size_t bad_payloads;    //  Payloads that were not "cN:seq"
    bool gate_closed;       //  apply waits while true (after recording)
    s_script_t script[8];   //  Scripted answers
    size_t script_count;    //  Entries
    size_t lists;           //  ops->list calls
    size_t polls[S_CONNS];  //  ops->poll calls per connection
    size_t requests;        //  ops->requests calls
    char forgotten[64];     //  Last connection ops->forget was told of
    //  The loop's side (test thread only): answers taken from the worker.
    uint64_t consumed[S_CONNS][8192]; //  CONSUMED seqs per connection, in order
    size_t consumed_count[S_CONNS];   //  Entries
    size_t outbox[S_CONNS];           //  OUTBOX answers per connection
    bool fatal;                       //  FATAL seen
    bool answer_errors;               //  An answer named no rig connection
} s_rig_t;

static int s_index(const char *conn)
{
    if (conn[0] == 'c' && conn[1] >= '0' && conn[1] < '0' + S_CONNS && !conn[2])
        return conn[1] - '0';
    return -1;
}

static node_sync_rc_t s_apply(void *arg, const char *conn, uint64_t seq, const uint8_t *payload,
                              size_t size)
{
    s_rig_t *rig = arg;
    char expected[64];
    snprintf(expected, sizeof expected, "%s:%" PRIu64, conn, seq);
    pthread_mutex_lock(&rig->lock);
    if (size != strlen(expected) || memcmp(payload, expected, size))
        rig->bad_payloads++;
    if (rig->call_count == rig->call_cap) {
        rig->call_cap = rig->call_cap ? rig->call_cap * 2 : 1024;
        rig->calls = realloc(rig->calls, rig->call_cap * sizeof *rig->calls);
    }
    rig->calls[rig->call_count++] = (s_call_t){s_index(conn), seq};
    pthread_cond_broadcast(&rig->changed);
    while (rig->gate_closed)
        pthread_cond_wait(&rig->changed, &rig->lock);
    node_sync_rc_t rc = NODE_SYNC_OK;
    for (size_t i = 0; i < rig->script_count; i++) {
        s_script_t *s = &rig->script[i];
        if (s->conn == s_index(conn) && s->seq == seq && s->times > 0) {
            s->times--;
            rc = s->rc;
            break;
        }
    }
    pthread_mutex_unlock(&rig->lock);
    return rc;
}

static int s_list(void *arg, node_worker_conn_t **conns_p, size_t *count_p)
{
    s_rig_t *rig = arg;
    node_worker_conn_t *conns = calloc(S_CONNS, sizeof *conns);
    if (!conns)
        return -1;
    for (int i = 0; i < S_CONNS; i++) {
        snprintf(conns[i].id, sizeof conns[i].id, "c%d", i);
        conns[i].pollable = i != S_CONNS - 1; //  the last one is deactivated
    }
    pthread_mutex_lock(&rig->lock);
    rig->lists++;
    pthread_cond_broadcast(&rig->changed);
    pthread_mutex_unlock(&rig->lock);
    *conns_p = conns;
    *count_p = S_CONNS;
    return 0;
}

static node_sync_rc_t s_poll(void *arg, const char *conn, bool *sent)
{
    s_rig_t *rig = arg;
    pthread_mutex_lock(&rig->lock);
    if (s_index(conn) >= 0)
        rig->polls[s_index(conn)]++;
    pthread_cond_broadcast(&rig->changed);
    pthread_mutex_unlock(&rig->lock);
    *sent = true;
    return NODE_SYNC_OK;
}

static node_sync_rc_t s_requests(void *arg)
{
    s_rig_t *rig = arg;
    pthread_mutex_lock(&rig->lock);
    rig->requests++;
    pthread_cond_broadcast(&rig->changed);
    pthread_mutex_unlock(&rig->lock);
    return NODE_SYNC_OK;
}

static void s_forget(void *arg, const char *conn)
{
    s_rig_t *rig = arg;
    pthread_mutex_lock(&rig->lock);
    snprintf(rig->forgotten, sizeof rig->forgotten, "%s", conn);
    pthread_cond_broadcast(&rig->changed);
    pthread_mutex_unlock(&rig->lock);
}

typedef struct {
    s_rig_t *rig;          //  The ops' side
    node_worker_t *worker; //  The worker under test
    void *zmq_ctx;         //  Context of its channel
} s_bench_t;

//  Makes the bench; poll_interval_ms is also the base of the worker's back-off.
static int s_setup_with(void **state, int64_t poll_interval_ms)
{
    s_bench_t *b = calloc(1, sizeof *b);
    assert_non_null(b);
    b->rig = calloc(1, sizeof *b->rig);
    assert_non_null(b->rig);
    pthread_mutex_init(&b->rig->lock, NULL);
    pthread_cond_init(&b->rig->changed, NULL);
    b->zmq_ctx = zmq_ctx_new();
    assert_non_null(b->zmq_ctx);
    node_worker_ops_t ops = {.arg = b->rig,
                             .poll_interval_ms = poll_interval_ms,
                             .list = s_list,
                             .poll = s_poll,
                             .requests = s_requests,
                             .apply = s_apply,
                             .forget = s_forget};
    char err[256];
    b->worker = node_worker_new(b->zmq_ctx, &ops, err, sizeof err);
    assert_non_null(b->worker);
    *state = b;
    return 0;
}

//  A poll interval of a minute: each connection is polled once in a test.
static int s_setup(void **state)
{
    return s_setup_with(state, 60000);
}

//  A short poll interval, so that a back-off after a failure is short too.
static int s_setup_fast(void **state)
{
    return s_setup_with(state, 20);
}

//  Opens the gate (a test that failed with it closed must not hang here).
static void s_gate(s_rig_t *rig, bool closed)
{
    pthread_mutex_lock(&rig->lock);
    rig->gate_closed = closed;
    pthread_cond_broadcast(&rig->changed);
    pthread_mutex_unlock(&rig->lock);
}

static int s_teardown(void **state)
{
    s_bench_t *b = *state;
    s_gate(b->rig, false);
    node_worker_destroy(&b->worker);
    assert_null(b->worker);
    zmq_ctx_term(b->zmq_ctx);
    pthread_cond_destroy(&b->rig->changed);
    pthread_mutex_destroy(&b->rig->lock);
    free(b->rig->calls);
    free(b->rig);
    free(b);
    return 0;
}

static void s_deliver(s_bench_t *b, int conn, uint64_t seq)
{
    char id[8], payload[64];
    snprintf(id, sizeof id, "c%d", conn);
    snprintf(payload, sizeof payload, "c%d:%" PRIu64, conn, seq);
    node_worker_deliver(b->worker, id, seq, (const uint8_t *)payload, strlen(payload));
}

//  Takes every answer waiting, as the loop does.
static void s_take_answers(s_bench_t *b)
{
    s_rig_t *rig = b->rig;
    node_worker_answer_t answer;
    while (node_worker_answer(b->worker, &answer) == 0) {
        int i = s_index(answer.conn);
        if (answer.kind == NODE_WORKER_FATAL) {
            rig->fatal = true;
        } else if (i < 0) {
            rig->answer_errors = true;
        } else if (answer.kind == NODE_WORKER_OUTBOX) {
            rig->outbox[i]++;
        } else if (rig->consumed_count[i] < sizeof rig->consumed[i] / sizeof rig->consumed[i][0]) {
            rig->consumed[i][rig->consumed_count[i]++] = answer.seq;
        }
    }
}

//  Runs the loop's side until done(rig) is true.
static void s_pump_until(s_bench_t *b, bool (*done)(s_rig_t *rig, const void *arg), const void *arg)
{
    while (!done(b->rig, arg)) {
        zmq_pollitem_t item = {node_worker_socket(b->worker), 0, ZMQ_POLLIN, 0};
        zmq_poll(&item, 1, 50);
        s_take_answers(b);
    }
}

//  Waits (without pumping) until the worker has made at least n apply calls.
static void s_wait_calls(s_rig_t *rig, size_t n)
{
    pthread_mutex_lock(&rig->lock);
    while (rig->call_count < n)
        pthread_cond_wait(&rig->changed, &rig->lock);
    pthread_mutex_unlock(&rig->lock);
}

static bool s_consumed_at_least(s_rig_t *rig, const void *arg)
{
    const size_t *want = arg; //  per connection
    for (int i = 0; i < S_CONNS; i++)
        if (rig->consumed_count[i] < want[i])
            return false;
    return true;
}

static bool s_saw_fatal(s_rig_t *rig, const void *arg)
{
    (void)arg;
    return rig->fatal;
}

//  The apply calls of connection conn, in order, copied under the lock.
static size_t s_calls_of(s_rig_t *rig, int conn, uint64_t *seqs, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&rig->lock);
    for (size_t i = 0; i < rig->call_count; i++)
        if (rig->calls[i].conn == conn && n < max)
            seqs[n++] = rig->calls[i].seq;
    pthread_mutex_unlock(&rig->lock);
    return n;
}

//  What the ops counted, copied under the lock (a failed assert must not
//  leave the lock held: the teardown takes it).
typedef struct {
    size_t calls;          //  apply calls
    size_t bad_payloads;   //  payloads that were not "cN:seq"
    size_t lists;          //  list calls
    size_t polls[S_CONNS]; //  poll calls per connection
} s_counts_t;

static s_counts_t s_counts(s_rig_t *rig)
{
    pthread_mutex_lock(&rig->lock);
    s_counts_t n = {rig->call_count, rig->bad_payloads, rig->lists, {0}};
    memcpy(n.polls, rig->polls, sizeof n.polls);
    pthread_mutex_unlock(&rig->lock);
    return n;
}

static void test_many_messages_applied_once_in_order(void **state)
{
    s_bench_t *b = *state;
    enum { PER_CONN = 2000 };
    assert_int_equal(node_worker_start(b->worker), 0);
    //  Interleaved over the connections, taking answers between bursts as
    //  the loop does, while the worker applies on its own thread.
    for (uint64_t seq = 1; seq <= PER_CONN; seq++) {
        for (int c = 0; c < S_CONNS; c++)
            s_deliver(b, c, seq);
        if (seq % 100 == 0)
            s_take_answers(b);
    }
    size_t want[S_CONNS] = {PER_CONN, PER_CONN, PER_CONN, PER_CONN};
    s_pump_until(b, s_consumed_at_least, want);
    s_rig_t *rig = b->rig;
    static uint64_t seqs[PER_CONN + 1];
    for (int c = 0; c < S_CONNS; c++) {
        assert_int_equal(rig->consumed_count[c], PER_CONN);
        assert_int_equal(s_calls_of(rig, c, seqs, PER_CONN + 1), PER_CONN);
        for (uint64_t i = 0; i < PER_CONN; i++) {
            assert_int_equal(rig->consumed[c][i], i + 1);
            assert_int_equal(seqs[i], i + 1);
        }
        assert_true(rig->outbox[c] >= 1); //  RECEIPTs may be waiting
    }
    s_counts_t n = s_counts(rig);
    assert_int_equal(n.bad_payloads, 0);
    assert_int_equal(n.lists, 0); //  no WELCOME: no poll, no request
    assert_false(rig->answer_errors);
    assert_false(rig->fatal);
}

static void test_arrival_order_and_duplicates_do_not_matter(void **state)
{
    s_bench_t *b = *state;
    s_gate(b->rig, true);
    assert_int_equal(node_worker_start(b->worker), 0);
    s_deliver(b, 0, 1);
    s_wait_calls(b->rig, 1); //  the worker is inside apply(1)
    const uint64_t arrivals[] = {5, 3, 4, 2, 3, 5, 2};
    for (size_t i = 0; i < sizeof arrivals / sizeof arrivals[0]; i++)
        s_deliver(b, 0, arrivals[i]);
    s_gate(b->rig, false);
    size_t want[S_CONNS] = {5};
    s_pump_until(b, s_consumed_at_least, want);
    uint64_t seqs[16];
    assert_int_equal(s_calls_of(b->rig, 0, seqs, 16), 5);
    for (uint64_t i = 0; i < 5; i++) {
        assert_int_equal(seqs[i], i + 1);
        assert_int_equal(b->rig->consumed[0][i], i + 1);
    }
}

static void test_held_waits_refused_is_not_consumed(void **state)
{
    s_bench_t *b = *state;
    s_rig_t *rig = b->rig;
    rig->script[rig->script_count++] = (s_script_t){0, 2, NODE_SYNC_HOLD, 1};
    rig->script[rig->script_count++] = (s_script_t){0, 3, NODE_SYNC_REFUSED, 1};
    rig->script[rig->script_count++] = (s_script_t){1, 1, NODE_SYNC_RETRY, 1};
    assert_int_equal(node_worker_start(b->worker), 0);
    for (uint64_t seq = 1; seq <= 4; seq++)
        s_deliver(b, 0, seq);
    s_deliver(b, 1, 1);
    s_deliver(b, 1, 2);
    size_t want[S_CONNS] = {3, 2};
    s_pump_until(b, s_consumed_at_least, want);
    //  c0: 2 is held and tried again before 3 and 4; 3 refused is dropped
    //  without CONSUMED (the broker's gap rule re-delivers what is needed).
    uint64_t seqs[16];
    assert_int_equal(s_calls_of(rig, 0, seqs, 16), 5);
    const uint64_t tried[] = {1, 2, 2, 3, 4};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(seqs[i], tried[i]);
    assert_int_equal(rig->consumed_count[0], 3);
    assert_int_equal(rig->consumed[0][0], 1);
    assert_int_equal(rig->consumed[0][1], 2);
    assert_int_equal(rig->consumed[0][2], 4);
    //  c1: a ServiceNow failure backs off and keeps the order.
    assert_int_equal(s_calls_of(rig, 1, seqs, 16), 3);
    assert_int_equal(seqs[0], 1);
    assert_int_equal(seqs[1], 1);
    assert_int_equal(seqs[2], 2);
    assert_int_equal(rig->consumed[1][0], 1);
    assert_int_equal(rig->consumed[1][1], 2);
}

static void test_forget_drops_the_queue(void **state)
{
    s_bench_t *b = *state;
    s_gate(b->rig, true);
    assert_int_equal(node_worker_start(b->worker), 0);
    s_deliver(b, 0, 1);
    s_wait_calls(b->rig, 1);
    for (uint64_t seq = 2; seq <= 10; seq++)
        s_deliver(b, 0, seq);
    for (uint64_t seq = 1; seq <= 3; seq++)
        s_deliver(b, 1, seq);
    node_worker_forget(b->worker, "c0");
    s_gate(b->rig, false);
    size_t want[S_CONNS] = {1, 3};
    s_pump_until(b, s_consumed_at_least, want);
    uint64_t seqs[16];
    assert_int_equal(s_calls_of(b->rig, 0, seqs, 16), 1); //  only the one in progress
    assert_int_equal(s_calls_of(b->rig, 1, seqs, 16), 3);
    pthread_mutex_lock(&b->rig->lock);
    while (strcmp(b->rig->forgotten, "c0"))
        pthread_cond_wait(&b->rig->changed, &b->rig->lock);
    pthread_mutex_unlock(&b->rig->lock);
}

static bool s_polled_and_requested(s_rig_t *rig, const void *arg)
{
    (void)arg;
    pthread_mutex_lock(&rig->lock);
    bool done = rig->requests > 0;
    pthread_mutex_unlock(&rig->lock);
    return done && rig->outbox[S_CONNS - 1] > 0;
}

static void test_ticks_only_after_welcome(void **state)
{
    s_bench_t *b = *state;
    s_rig_t *rig = b->rig;
    assert_int_equal(node_worker_start(b->worker), 0);
    s_deliver(b, 2, 1);
    size_t want[S_CONNS] = {0, 0, 1};
    s_pump_until(b, s_consumed_at_least, want);
    assert_int_equal(s_counts(rig).lists, 0);

    node_worker_welcome(b->worker);
    s_pump_until(b, s_polled_and_requested, NULL);
    s_counts_t n = s_counts(rig);
    for (int c = 0; c < S_CONNS - 1; c++)
        assert_int_equal(n.polls[c], 1);       //  once: the next is a poll interval away
    assert_int_equal(n.polls[S_CONNS - 1], 0); //  not pollable
    for (int c = 0; c < S_CONNS; c++)
        assert_true(rig->outbox[c] >= 1); //  every outbox is offered after requests
}

static void test_fatal_apply_stops_the_worker(void **state)
{
    s_bench_t *b = *state;
    s_rig_t *rig = b->rig;
    rig->script[rig->script_count++] = (s_script_t){0, 2, NODE_SYNC_FATAL, 1};
    assert_int_equal(node_worker_start(b->worker), 0);
    for (uint64_t seq = 1; seq <= 5; seq++)
        s_deliver(b, 0, seq);
    s_pump_until(b, s_saw_fatal, NULL);
    assert_true(node_worker_failed(b->worker));
    uint64_t seqs[16];
    assert_int_equal(s_calls_of(rig, 0, seqs, 16), 2);
    assert_int_equal(rig->consumed_count[0], 1);
}

static void test_answers_never_block_the_worker(void **state)
{
    s_bench_t *b = *state;
    enum { COUNT = 6000 }; //  well past ZeroMQ's default high-water mark of 1000
    assert_int_equal(node_worker_start(b->worker), 0);
    for (uint64_t seq = 1; seq <= COUNT; seq++)
        s_deliver(b, 0, seq);
    //  The loop reads nothing meanwhile: with a bounded pipe the worker would
    //  block on its answers and never get here.
    s_wait_calls(b->rig, COUNT);
    size_t want[S_CONNS] = {COUNT};
    s_pump_until(b, s_consumed_at_least, want);
    assert_int_equal(b->rig->consumed[0][COUNT - 1], COUNT);
}

static void test_stop_with_work_pending(void **state)
{
    s_bench_t *b = *state;
    s_gate(b->rig, true);
    assert_int_equal(node_worker_start(b->worker), 0);
    for (uint64_t seq = 1; seq <= 500; seq++)
        for (int c = 0; c < S_CONNS; c++)
            s_deliver(b, c, seq);
    s_wait_calls(b->rig, 1);
    node_worker_stop(b->worker);
    node_worker_stop(b->worker); //  idempotent
    s_gate(b->rig, false);
    node_worker_destroy(&b->worker); //  joins: returns once apply(1) is done
    assert_null(b->worker);
    //  Only the message in progress was applied; the 1999 others were freed
    //  unapplied (never CONSUMED: the broker delivers them again).
    assert_int_equal(s_counts(b->rig).calls, 1);
}

static void test_destroy_without_start(void **state)
{
    s_bench_t *b = *state;
    s_deliver(b, 0, 1); //  queued in the channel, never read
    node_worker_destroy(&b->worker);
    node_worker_destroy(&b->worker); //  accepts a pointer to NULL
    node_worker_destroy(NULL);
    assert_null(b->worker);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_many_messages_applied_once_in_order, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_arrival_order_and_duplicates_do_not_matter, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_held_waits_refused_is_not_consumed, s_setup_fast,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_forget_drops_the_queue, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_ticks_only_after_welcome, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_fatal_apply_stops_the_worker, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_answers_never_block_the_worker, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_stop_with_work_pending, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_destroy_without_start, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
