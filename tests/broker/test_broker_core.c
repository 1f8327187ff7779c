/*  test_broker_core.c: the broker's protocol engine and configuration,
    without sockets (unit; runs under the sanitizers).

    - configuration: defaults, file, flags over file, refusals that name the key;
    - nothing is answered before the commit: replies appear only at flush;
    - the dialogue HELLO / INVITE / JOIN / PUBLISH / DELIVER / CONSUMED;
    - a peer gone (EHOSTUNREACH) keeps its messages, a full peer (EAGAIN) is
      served later;
    - an fsync error is fatal: flush fails and no STORED leaves;
    - pipelined commit (broker_core_pump): while a commit's WAL sync runs,
      the next batches are taken in, but nothing of them or of the syncing
      commit (STORED, DELIVER) leaves before its own sync returned;
    - sessions are bound to keys: a frame of another key on a session's
      routing id is refused and never ends the session, however often it
      comes; the same key's HELLO from a new routing id (a restarted node)
      replaces its session at once;
    - guests (keys bound to no connection): HELLO, JOIN and PING only, a
      grace after which the session ends unless a JOIN bound the key, a
      budget of their own (max_guests, max_guests_per_address) that known
      keys never draw from;
    - heartbeats: idle peers are pinged, silent ones dropped;
    - a restart restores connections, bindings and queues from the store;
    - file data (PUBLISH "file"): counted per queue apart from the records,
      by CONSUMED, by HELLO's consumed and across a restart, echoed in
      DELIVER item by item (from the tail and from the store); a duplicate
      changes no count; an empty queue takes a message larger than
      max_queue_bytes, a queue holding anything refuses it (429);
    - deliveries in flight are bounded in bytes as well as by the credit
      (4 MiB of payload unconsumed per queue; one message always goes).
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <openssl/sha.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core_rig.h"
#include "faulty_vfs.h"
#include "ts_ini.h"
#include "ts_log.h"

//  ---------------------------------------------------------------------
//  Configuration

static int s_load(broker_config_t *config, const char **argv, char *err, size_t errlen)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    return broker_config_load(config, argc, (char **)argv, 2, err, errlen);
}

static void test_config(void **state)
{
    (void)state;
    broker_config_t config;
    char err[512];
    const char *none[] = {"b", "run", NULL};
    assert_int_equal(s_load(&config, none, err, sizeof err), 0);
    assert_string_equal(config.endpoint, "tcp://0.0.0.0:5570");
    assert_int_equal(config.credit, 64);
    assert_int_equal(config.max_frame, 1048576);
    assert_int_equal(config.metrics_port, 9570);
    assert_int_equal(config.public_keys_count, 0);
    assert_int_equal(config.max_peers, 1024);
    assert_int_equal(config.max_guests, 64);
    assert_int_equal(config.max_guests_per_addr, 8);
    assert_int_equal(config.guest_grace_ms, 5000);
    broker_config_release(&config);

    char path[] = "/tmp/broker-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "[broker]\ncredit = 8\nendpoint = tcp://127.0.0.1:1\n"
                       "public_keys = rigPUBLICkey0000000000000000000000000000, "
                       "rigPRIVATEkey000000000000000000000000000\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    const char *file_and_flag[] = {"b", "run", "--config", path, "--broker.credit", "16", NULL};
    assert_int_equal(s_load(&config, file_and_flag, err, sizeof err), 0);
    assert_int_equal(config.credit, 16); //  flag over file
    assert_string_equal(config.endpoint, "tcp://127.0.0.1:1");
    assert_int_equal(config.public_keys_count, 2);
    assert_true(broker_config_is_public_key(&config, "rigPRIVATEkey000000000000000000000000000"));
    assert_false(broker_config_is_public_key(&config, "rigSTRANGERkey00000000000000000000000000"));
    broker_config_release(&config);
    unlink(path);

    const char *unknown[] = {"b", "run", "--broker.crdit", "3", NULL};
    assert_int_equal(s_load(&config, unknown, err, sizeof err), -1);
    assert_non_null(strstr(err, "--broker.crdit"));
    const char *range[] = {"b", "run", "--broker.max_frame", "12", NULL};
    assert_int_equal(s_load(&config, range, err, sizeof err), -1);
    assert_non_null(strstr(err, "max_frame"));
    const char *badkey[] = {"b", "run", "--broker.public_keys", "not-a-key", NULL};
    assert_int_equal(s_load(&config, badkey, err, sizeof err), -1);
    assert_non_null(strstr(err, "not-a-key"));
    const char *grace[] = {"b", "run", "--broker.guest_grace_ms", "10", NULL};
    assert_int_equal(s_load(&config, grace, err, sizeof err), -1);
    assert_non_null(strstr(err, "guest_grace_ms"));
    const char *badid[] = {"b", "run", "--broker.id", "has space", NULL};
    assert_int_equal(s_load(&config, badid, err, sizeof err), -1);
    assert_non_null(strstr(err, "id"));
}

//  ---------------------------------------------------------------------
//  Dialogue helpers

//  HELLO from id; with list_c1 set it names connection c1 (nothing
//  stored or consumed).
static void s_hello_conns(core_rig_t *rig, int id, proto_role_t role, bool list_c1)
{
    static const proto_conn_state_t c1 = {"c1", 0, 0, 0};
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_HELLO);
    msg.hello.node = id == RIG_PUBLIC ? "pub" : "priv";
    msg.hello.role = role;
    msg.hello.conns = list_c1 ? &c1 : NULL;
    msg.hello.conns_count = list_c1 ? 1 : 0;
    assert_int_equal(core_rig_send(rig, id, &msg), 0);
}

static void s_hello(core_rig_t *rig, int id, proto_role_t role)
{
    s_hello_conns(rig, id, role, false);
}

static void s_publish(core_rig_t *rig, int id, uint64_t seq)
{
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_PUBLISH);
    msg.publish.conn = "c1";
    msg.publish.seq = seq;
    msg.publish.payload = (const uint8_t *)"sealed";
    msg.publish.payload_size = 6;
    assert_int_equal(core_rig_send(rig, id, &msg), 0);
}

static void s_consumed(core_rig_t *rig, int id, uint64_t seq)
{
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_CONSUMED);
    msg.consumed.conn = "c1";
    msg.consumed.seq = seq;
    assert_int_equal(core_rig_send(rig, id, &msg), 0);
}

//  Public and private node connected and joined on c1; outputs cleared.
static void s_joined_pair(core_rig_t *rig)
{
    assert_int_equal(core_rig_join(rig), 0);
}

static int s_setup(void **state)
{
    core_rig_t *rig = calloc(1, sizeof *rig);
    if (core_rig_init(rig, NULL, false, NULL) != 0)
        return -1;
    *state = rig;
    return 0;
}

static int s_teardown(void **state)
{
    core_rig_release(*state);
    free(*state);
    return 0;
}

//  ---------------------------------------------------------------------
//  Tests

static void test_replies_wait_for_commit(void **state)
{
    core_rig_t *rig = *state;
    s_joined_pair(rig);
    s_publish(rig, RIG_PUBLIC, 1);
    assert_int_equal(rig->out_count, 0); //  nothing before the commit
    assert_int_equal(core_rig_flush(rig), 0);
    const proto_msg_t *stored = core_rig_find(rig, RIG_PUBLIC, PROTO_STORED, 0);
    assert_non_null(stored);
    assert_int_equal(stored->stored.seq, 1);
    const proto_msg_t *deliver = core_rig_find(rig, RIG_PRIVATE, PROTO_DELIVER, 0);
    assert_non_null(deliver);
    assert_int_equal(deliver->deliver.seq, 1);
    assert_memory_equal(deliver->deliver.payload, "sealed", 6);
    //  STORED leaves before the DELIVER it allows.
    assert_true(stored < deliver);
    core_rig_clear(rig);
    s_consumed(rig, RIG_PRIVATE, 1);
    assert_int_equal(core_rig_flush(rig), 0);
    assert_int_equal(rig->out_count, 0);
}

//  STORED is cumulative: a batch answers one STORED per queue and peer,
//  carrying the highest sequence, even when a re-sent duplicate comes last;
//  the next batch answers again.
static void test_stored_once_per_batch(void **state)
{
    core_rig_t *rig = *state;
    s_joined_pair(rig);
    for (uint64_t seq = 1; seq <= 5; seq++)
        s_publish(rig, RIG_PUBLIC, seq);
    s_publish(rig, RIG_PUBLIC, 2);  //  a re-send: must not lower the answer
    s_publish(rig, RIG_PRIVATE, 1); //  the other queue has its own STORED
    assert_int_equal(core_rig_flush(rig), 0);
    assert_int_equal(core_rig_count(rig, RIG_PUBLIC, PROTO_STORED), 1);
    assert_int_equal(core_rig_find(rig, RIG_PUBLIC, PROTO_STORED, 0)->stored.seq, 5);
    assert_int_equal(core_rig_count(rig, RIG_PRIVATE, PROTO_STORED), 1);
    assert_int_equal(core_rig_find(rig, RIG_PRIVATE, PROTO_STORED, 0)->stored.seq, 1);
    assert_int_equal(core_rig_count(rig, RIG_PRIVATE, PROTO_DELIVER), 5);
    core_rig_clear(rig);
    s_publish(rig, RIG_PUBLIC, 3); //  a duplicate alone in its batch
    assert_int_equal(core_rig_flush(rig), 0);
    assert_int_equal(core_rig_count(rig, RIG_PUBLIC, PROTO_STORED), 1);
    assert_int_equal(core_rig_find(rig, RIG_PUBLIC, PROTO_STORED, 0)->stored.seq, 3);
}

//  A batch of CONSUMED only answers nothing, so it is not committed at
//  once: it joins the next commit (a batch with replies, or the tick).
static void test_consumed_commit_deferred(void **state)
{
    core_rig_t *rig = *state;
    s_joined_pair(rig);
    s_publish(rig, RIG_PUBLIC, 1);
    s_publish(rig, RIG_PUBLIC, 2);
    assert_int_equal(core_rig_flush(rig), 0);
    const broker_metrics_t *metrics = broker_core_metrics(rig->core);
    uint64_t commits = metrics->fsync_count;
    s_consumed(rig, RIG_PRIVATE, 1);
    assert_int_equal(core_rig_flush(rig), 0);
    assert_int_equal(metrics->fsync_count, commits); //  no fsync for it
    assert_true(broker_store_dirty(rig->store));
    s_publish(rig, RIG_PUBLIC, 3); //  a STORED to answer: one commit for both
    assert_int_equal(core_rig_flush(rig), 0);
    assert_int_equal(metrics->fsync_count, commits + 1);
    assert_false(broker_store_dirty(rig->store));
    s_consumed(rig, RIG_PRIVATE, 2);
    assert_int_equal(core_rig_flush(rig), 0);
    assert_true(broker_store_dirty(rig->store));
    assert_int_equal(broker_core_tick(rig->core, rig->now_ms), 0); //  the tick commits
    assert_false(broker_store_dirty(rig->store));
    assert_int_equal(metrics->fsync_count, commits + 2);
}

//  A CONSUMED read in the same batch as a PUBLISH does not hold up that
//  PUBLISH's commit: the removal goes into the next transaction (the store
//  is dirty once the PUBLISH is answered), and it still frees the window
//  before the next delivery.
//  Joined pair; seqs 1 .. n published, committed and delivered; outputs
//  cleared.
static void s_delivered_pair(core_rig_t *rig, uint64_t n)
{
    s_joined_pair(rig);
    for (uint64_t seq = 1; seq <= n; seq++)
        s_publish(rig, RIG_PUBLIC, seq);
    assert_int_equal(core_rig_flush(rig), 0);
    assert_int_equal(core_rig_count(rig, RIG_PRIVATE, PROTO_DELIVER), n);
    core_rig_clear(rig);
}

//  The private node got exactly one DELIVER since the last clear, of seq.
static void s_assert_only_delivered(const core_rig_t *rig, uint64_t seq)
{
    assert_int_equal(core_rig_count(rig, RIG_PRIVATE, PROTO_DELIVER), 1);
    assert_int_equal(core_rig_find(rig, RIG_PRIVATE, PROTO_DELIVER, 0)->deliver.seq, seq);
}

static void test_consumed_after_publish_commit(void **state)
{
    core_rig_t *rig = *state;
    s_delivered_pair(rig, 2);
    const broker_metrics_t *metrics = broker_core_metrics(rig->core);
    uint64_t commits = metrics->fsync_count;

    s_consumed(rig, RIG_PRIVATE, 2);
    s_publish(rig, RIG_PUBLIC, 3);
    assert_int_equal(core_rig_flush(rig), 0);
    assert_int_equal(metrics->fsync_count, commits + 1);
    assert_int_equal(core_rig_find(rig, RIG_PUBLIC, PROTO_STORED, 0)->stored.seq, 3);
    assert_true(broker_store_dirty(rig->store)); //  the removal waits for the next commit
    s_assert_only_delivered(rig, 3);

    //  Removed for good: after a commit and a restart only 3 is delivered.
    assert_int_equal(broker_core_tick(rig->core, rig->now_ms), 0);
    assert_false(broker_store_dirty(rig->store));
    assert_int_equal(core_rig_restart(rig), 0);
    s_hello_conns(rig, RIG_PRIVATE, PROTO_ROLE_PRIVATE, false);
    assert_int_equal(core_rig_flush(rig), 0);
    s_assert_only_delivered(rig, 3);
}

//  A CONSUMED followed in the same batch by the receiver's new HELLO (it
//  reconnected) is carried out before the HELLO rewinds the queue: what it
//  consumed is not delivered again.
static void test_consumed_before_hello_same_batch(void **state)
{
    core_rig_t *rig = *state;
    s_delivered_pair(rig, 3);

    s_consumed(rig, RIG_PRIVATE, 2);
    s_hello_conns(rig, RIG_PRIVATE, PROTO_ROLE_PRIVATE, false);
    assert_int_equal(core_rig_flush(rig), 0);
    s_assert_only_delivered(rig, 3);
}

static void test_unreachable_peer_keeps_messages(void **state)
{
    core_rig_t *rig = *state;
    s_joined_pair(rig);
    s_publish(rig, RIG_PUBLIC, 1);
    s_publish(rig, RIG_PUBLIC, 2);
    rig->fail_errno = EHOSTUNREACH; //  the private node vanished
    assert_int_equal(core_rig_flush(rig), 0);
    assert_int_equal(broker_core_peer_count(rig->core), 0); //  both unreachable now
    rig->fail_errno = 0;
    core_rig_clear(rig);
    s_hello(rig, RIG_PRIVATE, PROTO_ROLE_PRIVATE);
    assert_int_equal(core_rig_flush(rig), 0);
    assert_int_equal(core_rig_count(rig, RIG_PRIVATE, PROTO_DELIVER), 2);
}

static void test_full_peer_served_later(void **state)
{
    core_rig_t *rig = *state;
    s_joined_pair(rig);
    s_publish(rig, RIG_PUBLIC, 1);
    rig->fail_errno = EAGAIN;
    assert_int_equal(core_rig_flush(rig), 0);
    assert_int_equal(rig->out_count, 0);
    assert_int_equal(broker_core_peer_count(rig->core), 2);               //  full is not gone
    assert_int_equal(broker_core_metrics(rig->core)->replies_dropped, 1); //  the STORED
    rig->fail_errno = 0;
    assert_int_equal(broker_core_tick(rig->core, rig->now_ms), 0);
    assert_int_equal(core_rig_count(rig, RIG_PRIVATE, PROTO_DELIVER), 1);
}

static void test_fsync_error_is_fatal(void **state)
{
    (void)state;
    assert_int_equal(faulty_vfs_register(), 0);
    core_rig_t rig;
    assert_int_equal(core_rig_init(&rig, NULL, false, "faulty"), 0);
    s_joined_pair(&rig);
    s_publish(&rig, RIG_PUBLIC, 1);
    faulty_vfs_fail_sync(true);
    assert_int_equal(core_rig_flush(&rig), -1);
    faulty_vfs_fail_sync(false);
    assert_int_equal(rig.out_count, 0); //  no STORED, no DELIVER
    assert_non_null(strstr(broker_core_error(rig.core), "I/O error"));
    //  And the core stays stopped.
    assert_int_equal(core_rig_flush(&rig), -1);
    proto_msg_t ping;
    proto_msg_init(&ping, PROTO_PING);
    assert_int_equal(core_rig_send(&rig, RIG_PUBLIC, &ping), -1);
    core_rig_release(&rig);
}

//  Waits (up to 5 s) until the store's sync in flight is over.
static void s_wait_sync(core_rig_t *rig)
{
    struct pollfd pfd = {.fd = broker_store_sync_fd(rig->store), .events = POLLIN};
    assert_true(pfd.fd >= 0);
    assert_int_equal(poll(&pfd, 1, 5000), 1);
}

//  A failed assertion must not leave the next test's syncs hanging.
static int s_release_sync(void **state)
{
    (void)state;
    faulty_vfs_hold_sync(false);
    faulty_vfs_fail_sync(false);
    return 0;
}

static void test_pipeline_answers_after_sync(void **state)
{
    (void)state;
    assert_int_equal(faulty_vfs_register(), 0);
    core_rig_t rig;
    assert_int_equal(core_rig_init(&rig, NULL, false, "faulty"), 0);
    s_joined_pair(&rig);
    core_rig_clear(&rig);

    faulty_vfs_hold_sync(true); //  The disk is slow: the sync of seq 1 hangs
    s_publish(&rig, RIG_PUBLIC, 1);
    assert_int_equal(broker_core_pump(rig.core, rig.now_ms), 0);
    assert_true(broker_core_syncing(rig.core));
    s_publish(&rig, RIG_PUBLIC, 2); //  Taken in meanwhile, into the next group
    assert_int_equal(broker_core_pump(rig.core, rig.now_ms), 0);
    usleep(20 * 1000);
    assert_int_equal(broker_core_pump(rig.core, rig.now_ms), 0);
    assert_int_equal(rig.out_count, 0); //  No STORED, no DELIVER while it hangs

    faulty_vfs_hold_sync(false);
    s_wait_sync(&rig);
    assert_int_equal(broker_core_pump(rig.core, rig.now_ms), 0);
    //  Seq 1 is durable: answered and delivered. Seq 2 is committed now,
    //  its sync in flight: neither answered nor delivered yet.
    assert_int_equal(core_rig_count(&rig, RIG_PUBLIC, PROTO_STORED), 1);
    assert_int_equal(core_rig_find(&rig, RIG_PUBLIC, PROTO_STORED, 0)->stored.seq, 1);
    assert_int_equal(core_rig_count(&rig, RIG_PRIVATE, PROTO_DELIVER), 1);
    assert_int_equal(core_rig_find(&rig, RIG_PRIVATE, PROTO_DELIVER, 0)->deliver.seq, 1);
    assert_true(broker_core_syncing(rig.core));

    s_wait_sync(&rig);
    assert_int_equal(broker_core_pump(rig.core, rig.now_ms), 0);
    assert_false(broker_core_syncing(rig.core));
    assert_int_equal(core_rig_count(&rig, RIG_PUBLIC, PROTO_STORED), 2);
    assert_int_equal(core_rig_find(&rig, RIG_PUBLIC, PROTO_STORED, 1)->stored.seq, 2);
    assert_int_equal(core_rig_count(&rig, RIG_PRIVATE, PROTO_DELIVER), 2);
    assert_int_equal(core_rig_find(&rig, RIG_PRIVATE, PROTO_DELIVER, 1)->deliver.seq, 2);
    core_rig_release(&rig);
}

static void test_pipeline_sync_error_is_fatal(void **state)
{
    (void)state;
    assert_int_equal(faulty_vfs_register(), 0);
    core_rig_t rig;
    assert_int_equal(core_rig_init(&rig, NULL, false, "faulty"), 0);
    s_joined_pair(&rig);
    core_rig_clear(&rig);
    faulty_vfs_fail_sync(true);
    s_publish(&rig, RIG_PUBLIC, 1);
    assert_int_equal(broker_core_pump(rig.core, rig.now_ms), 0); //  Sync started
    s_wait_sync(&rig);
    assert_int_equal(broker_core_pump(rig.core, rig.now_ms), -1);
    faulty_vfs_fail_sync(false);
    assert_int_equal(rig.out_count, 0);
    assert_non_null(strstr(broker_core_error(rig.core), "I/O error"));
    assert_int_equal(broker_core_pump(rig.core, rig.now_ms), -1); //  Stays stopped
    core_rig_release(&rig);
}

static bool s_idle_value; //  What s_idle_probe answers

static bool s_idle_probe(void *arg)
{
    (void)arg;
    return s_idle_value;
}

//  With nothing waiting to be read, a commit is synced on the calling
//  thread: the pump that commits also answers and delivers, with no sync
//  left in flight. With frames waiting, the sync thread takes it as before.
//  A failed sync on the calling thread is as fatal as on the sync thread.
static void test_idle_commit_synced_here(void **state)
{
    (void)state;
    assert_int_equal(faulty_vfs_register(), 0);
    core_rig_t rig;
    assert_int_equal(core_rig_init(&rig, NULL, false, "faulty"), 0);
    broker_core_set_idle(rig.core, s_idle_probe, NULL);
    s_joined_pair(&rig);
    core_rig_clear(&rig);
    const broker_metrics_t *metrics = broker_core_metrics(rig.core);
    uint64_t commits = metrics->fsync_count;

    s_idle_value = true;
    s_publish(&rig, RIG_PUBLIC, 1);
    assert_int_equal(broker_core_pump(rig.core, rig.now_ms), 0);
    assert_false(broker_core_syncing(rig.core));
    assert_false(broker_store_dirty(rig.store));
    assert_int_equal(metrics->fsync_count, commits + 1);
    assert_int_equal(core_rig_find(&rig, RIG_PUBLIC, PROTO_STORED, 0)->stored.seq, 1);
    assert_int_equal(core_rig_find(&rig, RIG_PRIVATE, PROTO_DELIVER, 0)->deliver.seq, 1);
    core_rig_clear(&rig);

    s_idle_value = false; //  More frames waiting: the sync thread takes it
    faulty_vfs_hold_sync(true);
    s_publish(&rig, RIG_PUBLIC, 2);
    assert_int_equal(broker_core_pump(rig.core, rig.now_ms), 0);
    assert_true(broker_core_syncing(rig.core));
    assert_int_equal(rig.out_count, 0);
    faulty_vfs_hold_sync(false);
    s_wait_sync(&rig);
    assert_int_equal(broker_core_pump(rig.core, rig.now_ms), 0);
    assert_int_equal(core_rig_find(&rig, RIG_PUBLIC, PROTO_STORED, 0)->stored.seq, 2);
    core_rig_clear(&rig);

    s_idle_value = true;
    faulty_vfs_fail_sync(true);
    s_publish(&rig, RIG_PUBLIC, 3);
    assert_int_equal(broker_core_pump(rig.core, rig.now_ms), -1);
    faulty_vfs_fail_sync(false);
    assert_int_equal(rig.out_count, 0); //  no STORED, no DELIVER
    assert_non_null(strstr(broker_core_error(rig.core), "I/O error"));
    assert_int_equal(broker_core_pump(rig.core, rig.now_ms), -1); //  Stays stopped
    core_rig_release(&rig);
}

//  Another key on the private node's routing id (what ZMQ_ROUTER_HANDOVER
//  allowed anyone knowing a node's name): refused and counted, and the
//  private node's session stays, still served. Before issue 12 the frame
//  ended the session (reason routing_id_taken, peer count 1).
static void test_routing_id_taken_by_other_key(void **state)
{
    core_rig_t *rig = *state;
    s_joined_pair(rig);
    proto_msg_t ping;
    proto_msg_init(&ping, PROTO_PING);
    assert_int_equal(core_rig_send_as(rig, RIG_PRIVATE, RIG_STRANGER, &ping), 0);
    assert_int_equal(core_rig_flush(rig), 0);
    const proto_msg_t *error = core_rig_find(rig, RIG_PRIVATE, PROTO_ERROR, 0);
    assert_non_null(error); //  the answer goes to whoever sent on that routing id
    assert_int_equal(error->error.code, 401);
    assert_int_equal(broker_core_peer_count(rig->core), 2);
    assert_int_equal(broker_core_metrics(rig->core)->rejected[BROKER_REJECT_KEY_MISMATCH], 1);
    core_rig_clear(rig);
    s_publish(rig, RIG_PUBLIC, 1);
    assert_int_equal(core_rig_flush(rig), 0);
    s_assert_only_delivered(rig, 1);
}

//  The eviction attack of issue 12, on the bench: for 30 s of the core's
//  clock a stranger sends HELLO (as node "priv", role private) and PING
//  every 0.5 s, both on the private node's routing id and on its own,
//  while the pair keeps talking. The private node's session is never
//  ended and never replaced, and every message published meanwhile is
//  delivered to it.
static void test_impostor_never_ends_a_session(void **state)
{
    core_rig_t *rig = *state;
    s_joined_pair(rig);
    proto_msg_t hello, ping, pong;
    proto_msg_init(&hello, PROTO_HELLO);
    hello.hello.node = "priv";
    hello.hello.role = PROTO_ROLE_PRIVATE;
    proto_msg_init(&ping, PROTO_PING);
    proto_msg_init(&pong, PROTO_PONG);
    uint64_t seq = 0;
    size_t delivered = 0, stranger_welcomed = 0;
    for (int round = 0; round < 60; round++) {
        rig->now_ms += 500;
        assert_int_equal(core_rig_send_as(rig, RIG_PRIVATE, RIG_STRANGER, &hello), 0);
        assert_int_equal(core_rig_send_as(rig, RIG_PRIVATE, RIG_STRANGER, &ping), 0);
        assert_int_equal(core_rig_send(rig, RIG_STRANGER, &hello), 0);
        assert_int_equal(core_rig_send(rig, RIG_STRANGER, &ping), 0);
        s_publish(rig, RIG_PUBLIC, ++seq);
        assert_int_equal(core_rig_send(rig, RIG_PRIVATE, &pong), 0); //  the node's heartbeat
        assert_int_equal(core_rig_send(rig, RIG_PUBLIC, &pong), 0);
        assert_int_equal(broker_core_tick(rig->core, rig->now_ms), 0);
        //  Nothing the private node could take for its own session's end.
        assert_int_equal(core_rig_count(rig, RIG_PRIVATE, PROTO_WELCOME), 0);
        for (size_t i = 0; i < core_rig_count(rig, RIG_PRIVATE, PROTO_DELIVER); i++) {
            const proto_msg_t *d = core_rig_find(rig, RIG_PRIVATE, PROTO_DELIVER, i);
            assert_int_equal(d->deliver.seq, ++delivered);
            s_consumed(rig, RIG_PRIVATE, d->deliver.seq);
        }
        stranger_welcomed += core_rig_count(rig, RIG_STRANGER, PROTO_WELCOME);
        assert_int_equal(core_rig_count(rig, RIG_PUBLIC, PROTO_ERROR), 0);
        core_rig_clear(rig);
    }
    assert_int_equal(core_rig_flush(rig), 0);
    assert_int_equal(delivered, seq);
    assert_true(stranger_welcomed >= 1); //  a guest in its own right, never as the node
    broker_metrics_t *metrics = broker_core_metrics(rig->core);
    assert_int_equal(metrics->rejected[BROKER_REJECT_KEY_MISMATCH], 120);
    //  The private node's session is the one of its JOIN: still bound to c1.
    s_publish(rig, RIG_PRIVATE, 1);
    assert_int_equal(core_rig_flush(rig), 0);
    assert_int_equal(core_rig_count(rig, RIG_PRIVATE, PROTO_STORED), 1);
    assert_int_equal(core_rig_count(rig, RIG_PUBLIC, PROTO_DELIVER), 1);
}

//  A node that restarted comes back on a new socket (a new routing id) with
//  its key. Anything but HELLO from there is told to say HELLO, and leaves
//  the old session alone; its HELLO replaces the old session at once (no
//  wait for it to fall silent), and what was not consumed goes to the new
//  routing id.
static void test_same_key_new_socket_replaces_session(void **state)
{
    core_rig_t *rig = *state;
    s_delivered_pair(rig, 2);
    uint8_t old_rid[8];
    memcpy(old_rid, rig->rids[RIG_PRIVATE], sizeof old_rid);
    core_rig_reconnect(rig, RIG_PRIVATE);

    proto_msg_t ping;
    proto_msg_init(&ping, PROTO_PING);
    assert_int_equal(core_rig_send(rig, RIG_PRIVATE, &ping), 0);
    assert_int_equal(core_rig_flush(rig), 0);
    assert_int_equal(core_rig_find(rig, RIG_PRIVATE, PROTO_ERROR, 0)->error.code, 401);
    assert_int_equal(broker_core_peer_count(rig->core), 2);
    core_rig_clear(rig);

    s_hello_conns(rig, RIG_PRIVATE, PROTO_ROLE_PRIVATE, true);
    assert_int_equal(core_rig_flush(rig), 0);
    assert_int_equal(core_rig_count(rig, RIG_PRIVATE, PROTO_WELCOME), 1);
    assert_int_equal(broker_core_peer_count(rig->core), 2); //  replaced, not added
    assert_int_equal(core_rig_count(rig, RIG_PRIVATE, PROTO_DELIVER), 2);
    core_rig_clear(rig);
    s_publish(rig, RIG_PUBLIC, 3);
    assert_int_equal(core_rig_flush(rig), 0);
    s_assert_only_delivered(rig, 3);
    assert_int_equal(core_rig_count_rid(rig, old_rid, sizeof old_rid, PROTO_DELIVER), 0);
    assert_int_equal(broker_core_metrics(rig->core)->rejected[BROKER_REJECT_KEY_MISMATCH], 0);
}

//  A key with no connection said HELLO: a guest. Past guest_grace_ms its
//  session ends (counted) and it is told to HELLO again; the joined
//  private node and the public node stay whatever the time. A guest that
//  JOINs within its grace is bound and stays too.
static void test_guest_grace(void **state)
{
    core_rig_t *rig = *state;
    s_joined_pair(rig);
    static const uint8_t token[32] = "second connection's token, 32 !";
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_INVITE);
    msg.invite.conn = "c2";
    SHA256(token, sizeof token, msg.invite.token_hash);
    msg.invite.expires = (uint64_t)(rig->now_ms / 1000 + 600);
    assert_int_equal(core_rig_send(rig, RIG_PUBLIC, &msg), 0);
    s_hello(rig, RIG_STRANGER, PROTO_ROLE_PRIVATE);
    assert_int_equal(core_rig_flush(rig), 0);
    assert_int_equal(core_rig_count(rig, RIG_STRANGER, PROTO_WELCOME), 1);
    assert_int_equal(broker_core_guest_count(rig->core), 1);

    //  Just before the grace ends nothing happens.
    proto_msg_t pong;
    proto_msg_init(&pong, PROTO_PONG);
    int64_t grace = rig->config.guest_grace_ms;
    int64_t start = rig->now_ms;
    rig->now_ms = start + grace - 1;
    for (int id = 0; id < RIG_IDS; id++)
        assert_int_equal(core_rig_send(rig, id, &pong), 0);
    assert_int_equal(broker_core_tick(rig->core, rig->now_ms), 0);
    assert_int_equal(broker_core_peer_count(rig->core), 3);
    //  Then the guest goes, however alive it is.
    rig->now_ms = start + grace;
    for (int id = 0; id < RIG_IDS; id++)
        assert_int_equal(core_rig_send(rig, id, &pong), 0);
    assert_int_equal(broker_core_tick(rig->core, rig->now_ms), 0);
    assert_int_equal(broker_core_peer_count(rig->core), 2);
    assert_int_equal(broker_core_guest_count(rig->core), 0);
    assert_int_equal(broker_core_metrics(rig->core)->guests_expired, 1);
    core_rig_clear(rig);
    proto_msg_t ping;
    proto_msg_init(&ping, PROTO_PING);
    assert_int_equal(core_rig_send(rig, RIG_STRANGER, &ping), 0);
    assert_int_equal(core_rig_flush(rig), 0);
    assert_int_equal(core_rig_find(rig, RIG_STRANGER, PROTO_ERROR, 0)->error.code, 401);

    //  It says HELLO again, and JOINs c2 before its new grace ends: bound.
    core_rig_clear(rig);
    s_hello(rig, RIG_STRANGER, PROTO_ROLE_PRIVATE);
    rig->now_ms += grace - 1;
    proto_msg_init(&msg, PROTO_JOIN);
    msg.join.conn = "c2";
    memcpy(msg.join.token, token, sizeof token);
    msg.join.description = "C";
    assert_int_equal(core_rig_send(rig, RIG_STRANGER, &msg), 0);
    assert_int_equal(core_rig_flush(rig), 0);
    assert_int_equal(core_rig_count(rig, RIG_STRANGER, PROTO_JOINED), 1);
    assert_int_equal(broker_core_guest_count(rig->core), 0);
    for (int round = 0; round < 4; round++) {
        rig->now_ms += grace;
        for (int id = 0; id < RIG_IDS; id++)
            assert_int_equal(core_rig_send(rig, id, &pong), 0);
        assert_int_equal(broker_core_tick(rig->core, rig->now_ms), 0);
    }
    assert_int_equal(broker_core_peer_count(rig->core), 3);
    assert_int_equal(broker_core_metrics(rig->core)->guests_expired, 1);
}

//  What a guest may not do: PUBLISH and CONSUMED are refused as naming a
//  connection it is not bound to, existing or not (403: nothing tells a
//  guest which connection ids exist), INVITE as from a private key; it may
//  PING, and JOIN (a wrong token is refused as ever). Nothing is stored.
static void test_guest_may_only_hello_join_ping(void **state)
{
    core_rig_t *rig = *state;
    s_joined_pair(rig);
    s_hello(rig, RIG_STRANGER, PROTO_ROLE_PRIVATE);
    assert_int_equal(core_rig_flush(rig), 0);
    core_rig_clear(rig);
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_PUBLISH);
    msg.publish = (proto_data_t){"c1", 1, (const uint8_t *)"x", 1, NULL, 0, 0};
    assert_int_equal(core_rig_send(rig, RIG_STRANGER, &msg), 0);
    msg.publish.conn = "no-such-conn";
    assert_int_equal(core_rig_send(rig, RIG_STRANGER, &msg), 0);
    proto_msg_init(&msg, PROTO_CONSUMED);
    msg.consumed = (proto_ack_t){"c1", 1};
    assert_int_equal(core_rig_send(rig, RIG_STRANGER, &msg), 0);
    proto_msg_init(&msg, PROTO_INVITE);
    msg.invite.conn = "c9";
    msg.invite.expires = (uint64_t)(rig->now_ms / 1000 + 600);
    assert_int_equal(core_rig_send(rig, RIG_STRANGER, &msg), 0);
    proto_msg_init(&msg, PROTO_JOIN);
    msg.join.conn = "c1";
    msg.join.description = "guess";
    assert_int_equal(core_rig_send(rig, RIG_STRANGER, &msg), 0);
    proto_msg_init(&msg, PROTO_PING);
    assert_int_equal(core_rig_send(rig, RIG_STRANGER, &msg), 0);
    assert_int_equal(core_rig_flush(rig), 0);

    assert_int_equal(core_rig_count(rig, RIG_STRANGER, PROTO_ERROR), 5);
    const proto_msg_t *e = core_rig_find(rig, RIG_STRANGER, PROTO_ERROR, 0);
    assert_int_equal(e->error.code, 403);
    assert_string_equal(e->error.conn, "c1");
    assert_true(e->error.has_seq);
    assert_int_equal(core_rig_find(rig, RIG_STRANGER, PROTO_ERROR, 1)->error.code, 403);
    assert_int_equal(core_rig_find(rig, RIG_STRANGER, PROTO_ERROR, 2)->error.code, 403);
    assert_int_equal(core_rig_find(rig, RIG_STRANGER, PROTO_ERROR, 3)->error.code, 403);
    assert_int_equal(core_rig_find(rig, RIG_STRANGER, PROTO_ERROR, 4)->error.code, 409);
    assert_int_equal(core_rig_count(rig, RIG_STRANGER, PROTO_PONG), 1);
    assert_int_equal(core_rig_count(rig, RIG_PUBLIC, PROTO_DELIVER), 0);
    assert_int_equal(core_rig_count(rig, RIG_PRIVATE, PROTO_DELIVER), 0);
    broker_metrics_t *metrics = broker_core_metrics(rig->core);
    assert_int_equal(metrics->rejected[BROKER_REJECT_FOREIGN_CONN], 3);
    assert_int_equal(metrics->rejected[BROKER_REJECT_UNKNOWN_KEY], 1);
    assert_int_equal(metrics->rejected[BROKER_REJECT_JOIN_REUSED], 1);
    assert_int_equal(metrics->rejected[BROKER_REJECT_UNKNOWN_CONN], 0);
}

//  A HELLO of the n-th flood key from routing id "flood-n" and address.
static int s_flood_hello(core_rig_t *rig, int n, const char *address)
{
    char key[41], rid[16];
    snprintf(key, sizeof key, "rigFLOOD%04dkey0000000000000000000000000", n);
    int rid_size = snprintf(rid, sizeof rid, "flood-%d", n);
    broker_sender_t from = {(const uint8_t *)rid, (size_t)rid_size, key, address};
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_HELLO);
    msg.hello.node = "flood";
    msg.hello.role = PROTO_ROLE_PRIVATE;
    return core_rig_send_from(rig, &from, &msg);
}

//  The filling attack of issue 12, on the bench: guests draw from their own
//  budget (max_guests, and max_guests_per_address per address), each
//  refusal answered 429 and counted; the known keys (the listed public
//  node, the joined private node) get their sessions whatever the guests
//  hold, also when they come back on new sockets. A guest gone makes room
//  for the next.
static void test_guests_never_keep_known_keys_out(void **state)
{
    (void)state;
    core_rig_t rig;
    const char *args[] = {"--broker.max_peers",
                          "2",
                          "--broker.max_guests",
                          "4",
                          "--broker.max_guests_per_address",
                          "2",
                          NULL};
    assert_int_equal(core_rig_init(&rig, args, false, NULL), 0);
    assert_int_equal(core_rig_join(&rig), 0);
    const char *addresses[] = {"198.51.100.1", "198.51.100.1", "198.51.100.1", "198.51.100.2",
                               "198.51.100.3", "198.51.100.3", "198.51.100.4"};
    for (int n = 0; n < 7; n++)
        assert_int_equal(s_flood_hello(&rig, n, addresses[n]), 0);
    assert_int_equal(core_rig_flush(&rig), 0);
    size_t welcomed = 0, refused = 0;
    for (size_t i = 0; i < rig.out_count; i++) {
        welcomed += rig.out[i].msg.type == PROTO_WELCOME;
        if (rig.out[i].msg.type == PROTO_ERROR) {
            assert_int_equal(rig.out[i].msg.error.code, 429);
            refused++;
        }
    }
    assert_int_equal(welcomed, 4);
    assert_int_equal(refused, 3);
    assert_int_equal(broker_core_guest_count(rig.core), 4);
    broker_metrics_t *metrics = broker_core_metrics(rig.core);
    assert_int_equal(metrics->rejected[BROKER_REJECT_GUESTS_ADDRESS], 1); //  the third of .1
    assert_int_equal(metrics->rejected[BROKER_REJECT_TOO_MANY_GUESTS], 2);
    assert_int_equal(metrics->rejected[BROKER_REJECT_TOO_MANY_PEERS], 0);
    core_rig_clear(&rig);

    //  Both nodes restart (new sockets) while the guests fill their budget.
    core_rig_reconnect(&rig, RIG_PUBLIC);
    core_rig_reconnect(&rig, RIG_PRIVATE);
    s_hello_conns(&rig, RIG_PUBLIC, PROTO_ROLE_PUBLIC, true);
    s_hello_conns(&rig, RIG_PRIVATE, PROTO_ROLE_PRIVATE, true);
    assert_int_equal(core_rig_flush(&rig), 0);
    assert_int_equal(core_rig_count(&rig, RIG_PUBLIC, PROTO_WELCOME), 1);
    assert_int_equal(core_rig_count(&rig, RIG_PRIVATE, PROTO_WELCOME), 1);
    assert_int_equal(core_rig_count(&rig, RIG_PUBLIC, PROTO_ERROR), 0);
    assert_int_equal(core_rig_count(&rig, RIG_PRIVATE, PROTO_ERROR), 0);
    assert_int_equal(broker_core_peer_count(rig.core), 6);
    //  A third known key would be over max_peers; the listed public key
    //  saying HELLO again is not a third one.
    s_hello(&rig, RIG_PUBLIC, PROTO_ROLE_PUBLIC);
    assert_int_equal(core_rig_flush(&rig), 0);
    assert_int_equal(core_rig_count(&rig, RIG_PUBLIC, PROTO_WELCOME), 2);

    //  The guests are gone (silent, or their grace over): their slots are
    //  free again.
    core_rig_clear(&rig);
    proto_msg_t pong;
    proto_msg_init(&pong, PROTO_PONG);
    rig.now_ms += rig.config.guest_grace_ms;
    assert_int_equal(core_rig_send(&rig, RIG_PUBLIC, &pong), 0);
    assert_int_equal(core_rig_send(&rig, RIG_PRIVATE, &pong), 0);
    assert_int_equal(broker_core_tick(rig.core, rig.now_ms), 0);
    assert_int_equal(broker_core_guest_count(rig.core), 0);
    assert_int_equal(broker_core_peer_count(rig.core), 2);
    assert_int_equal(s_flood_hello(&rig, 6, "198.51.100.4"), 0);
    assert_int_equal(core_rig_flush(&rig), 0);
    assert_int_equal(broker_core_guest_count(rig.core), 1);
    core_rig_release(&rig);
}

static void test_heartbeats(void **state)
{
    core_rig_t *rig = *state;
    s_joined_pair(rig);
    rig->now_ms += rig->config.heartbeat_ms;
    assert_int_equal(broker_core_tick(rig->core, rig->now_ms), 0);
    assert_int_equal(core_rig_count(rig, RIG_PUBLIC, PROTO_PING), 1);
    assert_int_equal(core_rig_count(rig, RIG_PRIVATE, PROTO_PING), 1);
    //  The public node answers, the private node stays silent.
    proto_msg_t pong;
    proto_msg_init(&pong, PROTO_PONG);
    rig->now_ms += rig->config.heartbeat_ms * 2;
    assert_int_equal(core_rig_send(rig, RIG_PUBLIC, &pong), 0);
    rig->now_ms += rig->config.heartbeat_ms;
    assert_int_equal(broker_core_tick(rig->core, rig->now_ms), 0);
    assert_int_equal(broker_core_peer_count(rig->core), 1);
}

static void test_restart_restores(void **state)
{
    core_rig_t *rig = *state;
    s_delivered_pair(rig, 3);
    s_consumed(rig, RIG_PRIVATE, 1);
    assert_int_equal(core_rig_flush(rig), 0);
    assert_int_equal(core_rig_restart(rig), 0);

    //  Bindings: the private key may publish on c1 after HELLO; the
    //  duplicate filter: seq 3 is a duplicate, 4 is new.
    s_hello_conns(rig, RIG_PRIVATE, PROTO_ROLE_PRIVATE, false);
    s_hello_conns(rig, RIG_PUBLIC, PROTO_ROLE_PUBLIC, true);
    s_publish(rig, RIG_PUBLIC, 3);
    s_publish(rig, RIG_PUBLIC, 4);
    assert_int_equal(core_rig_flush(rig), 0);
    assert_int_equal(core_rig_count(rig, RIG_PUBLIC, PROTO_STORED), 1); //  cumulative: 4
    assert_int_equal(core_rig_find(rig, RIG_PUBLIC, PROTO_STORED, 0)->stored.seq, 4);
    assert_int_equal(core_rig_count(rig, RIG_PUBLIC, PROTO_JOINED), 1);   //  c1 listed
    assert_int_equal(core_rig_count(rig, RIG_PRIVATE, PROTO_JOINED), 0);  //  none listed
    assert_int_equal(core_rig_count(rig, RIG_PRIVATE, PROTO_DELIVER), 3); //  2, 3, 4
    assert_int_equal(core_rig_find(rig, RIG_PRIVATE, PROTO_DELIVER, 0)->deliver.seq, 2);
    proto_buf_t text;
    proto_buf_init(&text);
    broker_core_write_metrics(rig->core, &text, rig->now_ms);
    assert_int_equal(proto_buf_append(&text, "", 1), 0);
    assert_non_null(strstr((char *)text.data, "twinsync_broker_queue_last_stored_sequence{"
                                              "connection=\"c1\",direction=\"public_to_private\"}"
                                              " 4\n"));
    assert_non_null(strstr((char *)text.data, "twinsync_broker_queue_duplicates_total{"
                                              "connection=\"c1\",direction=\"public_to_private\"}"
                                              " 1\n"));
    proto_buf_release(&text);
}

//  HELLO naming c1 with the given positions; returns the WELCOME answered.
static const proto_msg_t *s_hello_at(core_rig_t *rig, int id, uint64_t stored, uint64_t consumed,
                                     uint64_t next)
{
    proto_conn_state_t c1 = {"c1", stored, consumed, next};
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_HELLO);
    msg.hello.node = id == RIG_PUBLIC ? "pub" : "priv";
    msg.hello.role = id == RIG_PUBLIC ? PROTO_ROLE_PUBLIC : PROTO_ROLE_PRIVATE;
    msg.hello.conns = &c1;
    msg.hello.conns_count = 1;
    core_rig_clear(rig);
    assert_int_equal(core_rig_send(rig, id, &msg), 0);
    assert_int_equal(core_rig_flush(rig), 0);
    const proto_msg_t *welcome = core_rig_find(rig, id, PROTO_WELCOME, 0);
    assert_non_null(welcome);
    return welcome;
}

//  A node whose state went back in time (restored from an older backup) is
//  told the broker's positions in WELCOME: its own messages held above its
//  next seq, and messages to it deleted above its consumed seq. A node in
//  step is told nothing.
static void test_behind_node_told_in_welcome(void **state)
{
    core_rig_t *rig = *state;
    s_delivered_pair(rig, 5);
    s_consumed(rig, RIG_PRIVATE, 5);
    assert_int_equal(core_rig_flush(rig), 0);

    //  In step: everything assigned was stored, everything delivered consumed.
    const proto_msg_t *w = s_hello_at(rig, RIG_PUBLIC, 5, 0, 6);
    assert_int_equal(w->welcome.conns_count, 0);
    w = s_hello_at(rig, RIG_PRIVATE, 0, 5, 1);
    assert_int_equal(w->welcome.conns_count, 0);
    //  Not reporting next (an older node): only the consumed side is checked.
    w = s_hello_at(rig, RIG_PUBLIC, 2, 0, 0);
    assert_int_equal(w->welcome.conns_count, 0);

    //  The public node restored to a state that had assigned 1 and 2 only.
    w = s_hello_at(rig, RIG_PUBLIC, 2, 0, 3);
    assert_int_equal(w->welcome.conns_count, 1);
    assert_string_equal(w->welcome.conns[0].conn, "c1");
    assert_int_equal(w->welcome.conns[0].stored, 5);
    assert_int_equal(w->welcome.conns[0].consumed, 0);
    //  The private node restored to a state that had applied up to 3 only.
    w = s_hello_at(rig, RIG_PRIVATE, 0, 3, 1);
    assert_int_equal(w->welcome.conns_count, 1);
    assert_int_equal(w->welcome.conns[0].stored, 0);
    assert_int_equal(w->welcome.conns[0].consumed, 5);

    proto_buf_t metrics;
    proto_buf_init(&metrics);
    broker_core_write_metrics(rig->core, &metrics, 0);
    assert_int_equal(proto_buf_append(&metrics, "", 1), 0);
    assert_non_null(strstr((const char *)metrics.data, "twinsync_broker_hello_behind_total 2\n"));
    proto_buf_release(&metrics);
}

//  PUBLISH of seq with the next more_count messages in the same frame.
static void s_publish_batch(core_rig_t *rig, int id, uint64_t seq, size_t more_count)
{
    static const proto_item_t items[16] = {{(const uint8_t *)"sealed", 6, 0}};
    proto_item_t more[16];
    for (size_t i = 0; i < more_count; i++)
        more[i] = items[0];
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_PUBLISH);
    msg.publish = (proto_data_t){"c1", seq, (const uint8_t *)"sealed", 6, more, more_count, 0};
    assert_int_equal(core_rig_send(rig, id, &msg), 0);
}

//  Publishes a batch from the public node and commits: the seq of the one
//  STORED answered, 0 when none. The captured output is cleared first.
static uint64_t s_batch_stored(core_rig_t *rig, uint64_t seq, size_t more_count)
{
    core_rig_clear(rig);
    s_publish_batch(rig, RIG_PUBLIC, seq, more_count);
    assert_int_equal(core_rig_flush(rig), 0);
    assert_true(core_rig_count(rig, RIG_PUBLIC, PROTO_STORED) <= 1);
    const proto_msg_t *stored = core_rig_find(rig, RIG_PUBLIC, PROTO_STORED, 0);
    return stored ? stored->stored.seq : 0;
}

//  The seqs the DELIVER frames to id carried, in order, into seqs[]; returns
//  how many, and sets *frames and *largest (messages in the biggest frame).
static size_t s_delivered(core_rig_t *rig, int id, uint64_t *seqs, size_t cap, size_t *frames,
                          size_t *largest)
{
    size_t n = 0;
    *frames = *largest = 0;
    const proto_msg_t *d;
    while ((d = core_rig_find(rig, id, PROTO_DELIVER, *frames)) != NULL) {
        (*frames)++;
        if (d->deliver.more_count + 1 > *largest)
            *largest = d->deliver.more_count + 1;
        for (size_t i = 0; i <= d->deliver.more_count && n < cap; i++)
            seqs[n++] = d->deliver.seq + i;
    }
    return n;
}

//  Batches: a PUBLISH of several consecutive messages is stored message by
//  message (duplicates answered, a gap refused whole) under one cumulative
//  STORED; a receiver that said HELLO.batch gets DELIVERs of several
//  consecutive messages, a receiver that did not gets one per frame.
static void test_batches(void **state)
{
    core_rig_t *rig = *state;
    s_joined_pair(rig);
    //  The private node says it takes batches of 4.
    proto_conn_state_t c1 = {"c1", 0, 0, 0};
    proto_msg_t hello;
    proto_msg_init(&hello, PROTO_HELLO);
    hello.hello = (proto_hello_t){"priv", PROTO_ROLE_PRIVATE, 0, &c1, 1, 4};
    assert_int_equal(core_rig_send(rig, RIG_PRIVATE, &hello), 0);
    assert_int_equal(core_rig_flush(rig), 0);
    const proto_msg_t *w = core_rig_find(rig, RIG_PRIVATE, PROTO_WELCOME, 0);
    assert_non_null(w);
    assert_true(w->welcome.batch > 1); //  the broker takes batches too
    core_rig_clear(rig);

    assert_int_equal(s_batch_stored(rig, 1, 9), 10); //  1 .. 10
    uint64_t seqs[64];
    size_t frames, largest;
    size_t n = s_delivered(rig, RIG_PRIVATE, seqs, 64, &frames, &largest);
    assert_true(n >= 4);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(seqs[i], i + 1);
    assert_true(frames < n);
    assert_true(largest > 1 && largest <= 4);
    core_rig_clear(rig);

    //  Overlapping a stored run: 8 .. 10 are duplicates, 11 and 12 new.
    assert_int_equal(s_batch_stored(rig, 8, 4), 12);
    //  A batch past a gap is refused whole, nothing of it stored.
    assert_int_equal(s_batch_stored(rig, 20, 1), 0);
    const proto_msg_t *e = core_rig_find(rig, RIG_PUBLIC, PROTO_ERROR, 0);
    assert_non_null(e);
    assert_int_equal(e->error.code, PROTO_ERR_OUT_OF_ORDER);
    assert_int_equal(e->error.seq, 13);
    assert_int_equal(s_batch_stored(rig, 13, 0), 13);
    core_rig_clear(rig);

    //  The public node said no batch size: one message per DELIVER.
    s_publish_batch(rig, RIG_PRIVATE, 1, 2);
    assert_int_equal(core_rig_flush(rig), 0);
    n = s_delivered(rig, RIG_PUBLIC, seqs, 64, &frames, &largest);
    assert_int_equal(n, 3);
    assert_int_equal(frames, 3);
    assert_int_equal(largest, 1);
}

//  A broker configured for frames larger than the protocol's default still
//  keeps each DELIVER batch within that default (the receiver's limit is not
//  known to it): 16 messages of 200 KiB leave in frames of at most 1 MiB.
static void test_batches_within_the_default_frame(void **state)
{
    (void)state;
    core_rig_t rig;
    const char *args[] = {"--broker.max_frame", "8388608", "--broker.credit", "64", NULL};
    assert_int_equal(core_rig_init(&rig, args, false, NULL), 0);
    assert_int_equal(core_rig_join(&rig), 0);
    proto_conn_state_t c1 = {"c1", 0, 0, 0};
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_HELLO);
    msg.hello = (proto_hello_t){"priv", PROTO_ROLE_PRIVATE, 64, &c1, 1, 64};
    assert_int_equal(core_rig_send(&rig, RIG_PRIVATE, &msg), 0);
    assert_int_equal(core_rig_flush(&rig), 0);
    core_rig_clear(&rig);
    static uint8_t payload[200 * 1024];
    for (uint64_t seq = 1; seq <= 16; seq++) {
        proto_msg_init(&msg, PROTO_PUBLISH);
        msg.publish = (proto_data_t){"c1", seq, payload, sizeof payload, NULL, 0, 0};
        assert_int_equal(core_rig_send(&rig, RIG_PUBLIC, &msg), 0);
    }
    assert_int_equal(core_rig_flush(&rig), 0);
    size_t frame_max = proto_limits_default().max_frame, frames = 0, messages = 0;
    for (size_t i = 0; i < rig.out_count; i++) {
        const rig_out_t *out = &rig.out[i];
        if (out->id != RIG_PRIVATE)
            continue;
        assert_true(out->decoded); //  a frame above 1 MiB would not decode here
        if (out->msg.type != PROTO_DELIVER)
            continue;
        size_t bytes = PROTO_DATA_OVERHEAD + out->msg.deliver.payload_size;
        for (size_t j = 0; j < out->msg.deliver.more_count; j++)
            bytes += PROTO_ITEM_OVERHEAD + out->msg.deliver.more[j].payload_size;
        assert_true(bytes <= frame_max);
        assert_int_equal(out->msg.deliver.seq, messages + 1);
        messages += 1 + out->msg.deliver.more_count;
        frames++;
    }
    assert_int_equal(messages, 16);
    assert_true(frames >= 4 && frames < 16); //  batched, and split by size
    core_rig_release(&rig);
}

//  The value of the sample name{labels} in the core's metrics text; -1 when
//  absent.
static double s_metric(core_rig_t *rig, const char *name, const char *labels)
{
    proto_buf_t text;
    proto_buf_init(&text);
    broker_core_write_metrics(rig->core, &text, rig->now_ms);
    assert_int_equal(proto_buf_append(&text, "", 1), 0);
    char want[256];
    snprintf(want, sizeof want, "\n%s%s%s%s ", name, labels ? "{" : "", labels ? labels : "",
             labels ? "}" : "");
    const char *at = strstr((const char *)text.data, want);
    double value = at ? strtod(at + strlen(want), NULL) : -1;
    proto_buf_release(&text);
    return value;
}

#define C1_P2P "connection=\"c1\",direction=\"public_to_private\""

//  What the private node was delivered since the last clear: kinds[seq] is
//  1 for file data, 0 for a record, -1 when not delivered.
static void s_delivered_kinds(const core_rig_t *rig, int *kinds, size_t cap)
{
    for (size_t i = 0; i < cap; i++)
        kinds[i] = -1;
    const proto_msg_t *d;
    for (size_t n = 0; (d = core_rig_find(rig, RIG_PRIVATE, PROTO_DELIVER, n)) != NULL; n++) {
        if (d->deliver.seq < cap)
            kinds[d->deliver.seq] = d->deliver.file;
        for (size_t i = 0; i < d->deliver.more_count; i++)
            if (d->deliver.seq + 1 + i < cap)
                kinds[d->deliver.seq + 1 + i] = d->deliver.more[i].file;
    }
}

static void test_file_accounting(void **state)
{
    core_rig_t *rig = *state;
    s_joined_pair(rig);
    //  The private node takes batches of 4: the flags travel item by item.
    proto_conn_state_t c1 = {"c1", 0, 0, 0};
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_HELLO);
    msg.hello = (proto_hello_t){"priv", PROTO_ROLE_PRIVATE, 0, &c1, 1, 4};
    assert_int_equal(core_rig_send(rig, RIG_PRIVATE, &msg), 0);
    assert_int_equal(core_rig_flush(rig), 0);
    core_rig_clear(rig);

    //  1 record (6), 2 file (100), 3 record (6), 4 file (300), 5 file (50).
    static uint8_t bytes[300];
    proto_item_t more[4] = {{bytes, 100, PROTO_DATA_FILE},
                            {bytes, 6, PROTO_DATA_RECORD},
                            {bytes, 300, PROTO_DATA_FILE},
                            {bytes, 50, PROTO_DATA_FILE}};
    proto_msg_init(&msg, PROTO_PUBLISH);
    msg.publish = (proto_data_t){"c1", 1, bytes, 6, more, 4, PROTO_DATA_RECORD};
    assert_int_equal(core_rig_send(rig, RIG_PUBLIC, &msg), 0);
    assert_int_equal(core_rig_flush(rig), 0);
    assert_int_equal(core_rig_find(rig, RIG_PUBLIC, PROTO_STORED, 0)->stored.seq, 5);
    assert_true(s_metric(rig, "twinsync_broker_queue_bytes", C1_P2P) == 462);
    assert_true(s_metric(rig, "twinsync_broker_queue_file_bytes", C1_P2P) == 450);
    assert_true(s_metric(rig, "twinsync_broker_queue_file_messages", C1_P2P) == 3);
    assert_true(s_metric(rig, "twinsync_broker_queues_file_bytes", NULL) == 450);
    assert_true(s_metric(rig, "twinsync_broker_queues_file_messages", NULL) == 3);
    int kinds[8];
    s_delivered_kinds(rig, kinds, 8);
    static const int published[8] = {-1, 0, 1, 0, 1, 1, -1, -1};
    assert_memory_equal(kinds, published, sizeof kinds); //  from the tail

    //  A duplicate with another flag changes nothing.
    core_rig_clear(rig);
    msg.publish = (proto_data_t){"c1", 4, bytes, 300, NULL, 0, PROTO_DATA_RECORD};
    assert_int_equal(core_rig_send(rig, RIG_PUBLIC, &msg), 0);
    assert_int_equal(core_rig_flush(rig), 0);
    assert_true(s_metric(rig, "twinsync_broker_queue_file_bytes", C1_P2P) == 450);

    //  CONSUMED 2: a record and a file chunk go.
    s_consumed(rig, RIG_PRIVATE, 2);
    assert_int_equal(core_rig_flush(rig), 0);
    assert_true(s_metric(rig, "twinsync_broker_queue_bytes", C1_P2P) == 356);
    assert_true(s_metric(rig, "twinsync_broker_queue_file_bytes", C1_P2P) == 350);
    assert_true(s_metric(rig, "twinsync_broker_queue_file_messages", C1_P2P) == 2);

    //  A restart reads the counters back with the queue.
    assert_int_equal(core_rig_restart(rig), 0);
    assert_true(s_metric(rig, "twinsync_broker_queue_bytes", C1_P2P) == 356);
    assert_true(s_metric(rig, "twinsync_broker_queue_file_bytes", C1_P2P) == 350);
    assert_true(s_metric(rig, "twinsync_broker_queue_file_messages", C1_P2P) == 2);
    assert_true(s_metric(rig, "twinsync_broker_queues_file_bytes", NULL) == 350);

    //  HELLO's consumed (3, a record) removes like CONSUMED; what is left
    //  comes from the store with its flags.
    core_rig_clear(rig);
    c1.consumed = 3;
    proto_msg_init(&msg, PROTO_HELLO);
    msg.hello = (proto_hello_t){"priv", PROTO_ROLE_PRIVATE, 0, &c1, 1, 4};
    assert_int_equal(core_rig_send(rig, RIG_PRIVATE, &msg), 0);
    assert_int_equal(core_rig_flush(rig), 0);
    assert_true(s_metric(rig, "twinsync_broker_queue_bytes", C1_P2P) == 350);
    assert_true(s_metric(rig, "twinsync_broker_queue_file_bytes", C1_P2P) == 350);
    s_delivered_kinds(rig, kinds, 8);
    static const int left[8] = {-1, -1, -1, -1, 1, 1, -1, -1};
    assert_memory_equal(kinds, left, sizeof kinds);

    //  Everything consumed: nothing of either kind is left, for good.
    s_consumed(rig, RIG_PRIVATE, 5);
    assert_int_equal(core_rig_flush(rig), 0);
    assert_int_equal(core_rig_restart(rig), 0);
    assert_true(s_metric(rig, "twinsync_broker_queue_bytes", C1_P2P) == 0);
    assert_true(s_metric(rig, "twinsync_broker_queue_file_bytes", C1_P2P) == 0);
    assert_true(s_metric(rig, "twinsync_broker_queue_file_messages", C1_P2P) == 0);
    assert_true(s_metric(rig, "twinsync_broker_queues_file_messages", NULL) == 0);
}

//  max_queue_bytes (4096 here) counts file bytes like any others; a queue
//  holding nothing still takes one message larger than that, so that a
//  small setting slows a sender of large chunks down and never stops it.
static void test_queue_limit_and_large_messages(void **state)
{
    (void)state;
    core_rig_t rig;
    const char *args[] = {"--broker.max_queue_bytes", "4096", NULL};
    assert_int_equal(core_rig_init(&rig, args, false, NULL), 0);
    assert_int_equal(core_rig_join(&rig), 0);
    static uint8_t chunk[8192];
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_PUBLISH);
    msg.publish = (proto_data_t){"c1", 1, chunk, sizeof chunk, NULL, 0, PROTO_DATA_FILE};
    assert_int_equal(core_rig_send(&rig, RIG_PUBLIC, &msg), 0);
    msg.publish = (proto_data_t){"c1", 2, chunk, 1, NULL, 0, PROTO_DATA_RECORD};
    assert_int_equal(core_rig_send(&rig, RIG_PUBLIC, &msg), 0);
    assert_int_equal(core_rig_flush(&rig), 0);
    assert_int_equal(core_rig_find(&rig, RIG_PUBLIC, PROTO_STORED, 0)->stored.seq, 1);
    const proto_msg_t *e = core_rig_find(&rig, RIG_PUBLIC, PROTO_ERROR, 0);
    assert_non_null(e);
    assert_int_equal(e->error.code, PROTO_ERR_QUEUE_FULL); //  even 1 byte: 8192 held
    assert_int_equal(e->error.seq, 2);
    //  Consumed: the queue is empty, and takes the next one.
    s_consumed(&rig, RIG_PRIVATE, 1);
    assert_int_equal(core_rig_flush(&rig), 0);
    core_rig_clear(&rig);
    assert_int_equal(core_rig_send(&rig, RIG_PUBLIC, &msg), 0);
    assert_int_equal(core_rig_flush(&rig), 0);
    assert_int_equal(core_rig_find(&rig, RIG_PUBLIC, PROTO_STORED, 0)->stored.seq, 2);
    assert_null(core_rig_find(&rig, RIG_PUBLIC, PROTO_ERROR, 0));
    core_rig_release(&rig);
}

//  Delivered messages of the private node since the last clear.
static size_t s_delivered_count(const core_rig_t *rig)
{
    size_t n = 0;
    const proto_msg_t *d;
    for (size_t i = 0; (d = core_rig_find(rig, RIG_PRIVATE, PROTO_DELIVER, i)) != NULL; i++)
        n += 1 + d->deliver.more_count;
    return n;
}

//  Large payloads: at most 4 MiB of payload delivered and unconsumed per
//  queue, whatever the credit allows (64 here), so that file chunks never
//  pile up in the broker's output. Below the bound a message goes whatever
//  its size: of 600 KiB chunks 7 go (the 7th passes the bound), then one
//  more for each one consumed.
static void test_unacked_bytes_bounded(void **state)
{
    (void)state;
    core_rig_t rig;
    assert_int_equal(core_rig_init(&rig, NULL, false, NULL), 0);
    assert_int_equal(core_rig_join(&rig), 0);
    static uint8_t chunk[600 * 1024];
    proto_msg_t msg;
    for (uint64_t seq = 1; seq <= 12; seq++) {
        proto_msg_init(&msg, PROTO_PUBLISH);
        msg.publish = (proto_data_t){"c1", seq, chunk, sizeof chunk, NULL, 0, PROTO_DATA_FILE};
        assert_int_equal(core_rig_send(&rig, RIG_PUBLIC, &msg), 0);
        assert_int_equal(core_rig_flush(&rig), 0);
    }
    assert_int_equal(s_delivered_count(&rig), 7); //  6 x 600 KiB < 4 MiB, 7 x > 4 MiB
    core_rig_clear(&rig);
    assert_int_equal(core_rig_flush(&rig), 0);
    assert_int_equal(s_delivered_count(&rig), 0); //  nothing more until a CONSUMED
    s_consumed(&rig, RIG_PRIVATE, 2);
    assert_int_equal(core_rig_flush(&rig), 0);
    assert_int_equal(s_delivered_count(&rig), 2); //  8 and 9
    assert_int_equal(core_rig_find(&rig, RIG_PRIVATE, PROTO_DELIVER, 0)->deliver.seq, 8);
    core_rig_clear(&rig);
    //  The receiver comes back: the unconsumed go again, as many as fit.
    core_rig_reconnect(&rig, RIG_PRIVATE);
    s_hello(&rig, RIG_PRIVATE, PROTO_ROLE_PRIVATE);
    assert_int_equal(core_rig_flush(&rig), 0);
    assert_int_equal(s_delivered_count(&rig), 7);
    assert_int_equal(core_rig_find(&rig, RIG_PRIVATE, PROTO_DELIVER, 0)->deliver.seq, 3);
    core_rig_clear(&rig);
    s_consumed(&rig, RIG_PRIVATE, 12);
    assert_int_equal(core_rig_flush(&rig), 0);
    assert_int_equal(s_delivered_count(&rig), 0);
    //  Chunks of the largest size a frame takes: the same bound in bytes.
    static uint8_t big[1000 * 1024];
    for (uint64_t seq = 13; seq <= 18; seq++) {
        proto_msg_init(&msg, PROTO_PUBLISH);
        msg.publish = (proto_data_t){"c1", seq, big, sizeof big, NULL, 0, PROTO_DATA_FILE};
        assert_int_equal(core_rig_send(&rig, RIG_PUBLIC, &msg), 0);
        assert_int_equal(core_rig_flush(&rig), 0);
    }
    assert_int_equal(s_delivered_count(&rig), 5); //  4 x 1000 KiB < 4 MiB, the 5th passes
    core_rig_release(&rig);
}

static void test_garbage_answered_and_counted(void **state)
{
    core_rig_t *rig = *state;
    assert_int_equal(core_rig_raw(rig, RIG_STRANGER, "\x81\xa1v\x01", 4), 0);
    assert_int_equal(core_rig_raw(rig, RIG_STRANGER, "", 0), 0);
    broker_sender_t keyless = {rig->rids[0], 8, NULL, NULL};
    assert_int_equal(broker_core_handle(rig->core, &keyless, (const uint8_t *)"x", 1, rig->now_ms),
                     0);
    assert_int_equal(core_rig_flush(rig), 0);
    assert_int_equal(core_rig_count(rig, RIG_STRANGER, PROTO_ERROR), 2);
    broker_metrics_t *metrics = broker_core_metrics(rig->core);
    assert_int_equal(metrics->rejected[BROKER_REJECT_VERSION], 1); //  "v" 1 is major 0
    assert_int_equal(metrics->rejected[BROKER_REJECT_BAD_FRAME], 1);
    assert_int_equal(metrics->rejected[BROKER_REJECT_NO_USER_ID], 1);
}

int main(void)
{
    ts_log_set_level(TS_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),
        cmocka_unit_test_setup_teardown(test_replies_wait_for_commit, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_stored_once_per_batch, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_consumed_commit_deferred, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_consumed_after_publish_commit, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_consumed_before_hello_same_batch, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_unreachable_peer_keeps_messages, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_full_peer_served_later, s_setup, s_teardown),
        cmocka_unit_test(test_fsync_error_is_fatal),
        cmocka_unit_test_teardown(test_pipeline_answers_after_sync, s_release_sync),
        cmocka_unit_test_teardown(test_pipeline_sync_error_is_fatal, s_release_sync),
        cmocka_unit_test_teardown(test_idle_commit_synced_here, s_release_sync),
        cmocka_unit_test_setup_teardown(test_routing_id_taken_by_other_key, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_impostor_never_ends_a_session, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_same_key_new_socket_replaces_session, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_guest_grace, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_guest_may_only_hello_join_ping, s_setup, s_teardown),
        cmocka_unit_test(test_guests_never_keep_known_keys_out),
        cmocka_unit_test_setup_teardown(test_heartbeats, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_restart_restores, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_garbage_answered_and_counted, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_behind_node_told_in_welcome, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_batches, s_setup, s_teardown),
        cmocka_unit_test(test_batches_within_the_default_frame),
        cmocka_unit_test_setup_teardown(test_file_accounting, s_setup, s_teardown),
        cmocka_unit_test(test_queue_limit_and_large_messages),
        cmocka_unit_test(test_unacked_bytes_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
