/*  test_broker_metrics.c: /metrics tells the truth about a known scenario,
    passes `promtool check metrics`, and `twinsync-broker stats` shows it.

    Scenario on connection conn-m: the public node publishes 5 messages (2
    and 4 file data) and re-sends 2 of them (4 as a record: a duplicate
    changes nothing); the private node is delivered all 5, each with the
    flag it was published with, and consumes 2; the private node publishes
    1 (file data), delivered to the public node and not consumed; a rogue
    sends one undecodable frame. Every per-queue gauge and counter, the
    per-connection figures and the broker-wide ones (file bytes and
    messages included) are then checked against what must be true. A
    reconnect of the private node then shows as 3 redeliveries, read back
    from the store with their flags.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "broker_harness.h"
#include "broker_stats.h"

#define P2P "connection=\"conn-m\",direction=\"public_to_private\""
#define Q2P "connection=\"conn-m\",direction=\"private_to_public\""

static void s_check(const th_broker_t *broker, const char *name, const char *labels, double expect)
{
    double got = th_metric(broker, name, labels);
    if (got != expect)
        fail_msg("%s{%s} = %g, expected %g", name, labels ? labels : "", got, expect);
}

//  Runs promtool on the metrics text; skips (with a note) without promtool.
static void s_promtool(const th_broker_t *broker)
{
    if (system("command -v promtool >/dev/null 2>&1") != 0) {
        fprintf(stderr, "promtool not found: skipping 'promtool check metrics' "
                        "(apt-get install prometheus)\n");
        return;
    }
    char path[256];
    snprintf(path, sizeof path, "%s/metrics.txt", broker->dir);
    char *text = th_metrics_text(broker);
    FILE *file = fopen(path, "w");
    assert_non_null(file);
    fputs(text, file);
    fclose(file);
    free(text);
    char command[512];
    snprintf(command, sizeof command, "promtool check metrics < %s 2>&1", path);
    FILE *out = popen(command, "r");
    assert_non_null(out);
    char line[512];
    bool noisy = false;
    while (fgets(line, sizeof line, out)) {
        fprintf(stderr, "promtool: %s", line);
        noisy = true;
    }
    int status = pclose(out);
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_false(noisy); //  lint findings are printed: there must be none
}

static void s_stats_table(const th_broker_t *broker)
{
    char command[512];
    snprintf(command, sizeof command, "%s stats --broker.metrics_port %d", broker->binary,
             broker->metrics_port);
    FILE *out = popen(command, "r");
    assert_non_null(out);
    char text[8192];
    size_t used = fread(text, 1, sizeof text - 1, out);
    text[used] = '\0';
    assert_int_equal(WEXITSTATUS(pclose(out)), 0);
    fprintf(stderr, "%s", text);
    //  The queue row: READY 0, UNACKED 3, OLDEST, BYTES 12 B, FILE BYTES
    //  4 B, FILES 1, ... PUBLISHED 7, STORED 5.
    char *row = strstr(text, "conn-m");
    assert_non_null(row);
    char dir[32];
    double ready, unacked, oldest, bytes, file_bytes, files;
    assert_int_equal(sscanf(row, "conn-m %31s %lf %lf %lfs %lf B %lf B %lf", dir, &ready, &unacked,
                            &oldest, &bytes, &file_bytes, &files),
                     7);
    assert_string_equal(dir, "public_to_private");
    assert_true(ready == 0 && unacked == 3);
    assert_true(bytes == 12 && file_bytes == 4 && files == 1);
    assert_non_null(strstr(text, "files queued 9 B in 2 messages"));
    assert_non_null(strstr(text, "bad_frame=1"));
    assert_non_null(strstr(text, "active"));
}

static void test_known_scenario(void **state)
{
    (void)state;
    th_broker_t broker;
    th_broker_init(&broker, th_binary());
    th_pair_t pair;
    th_pair_prepare(&pair, &broker, "conn-m");
    th_broker_start(&broker);
    th_pair_connect(&pair, &broker);

    const char *payloads[] = {"a", "bb", "ccc", "dddd", "eeeee"};
    proto_msg_t msg;
    for (int i = 0; i < 5; i++)
        th_publish_kind(&pair.pub, "conn-m", (uint64_t)i + 1, payloads[i], strlen(payloads[i]),
                        i % 2 == 1);                    //  2 and 4: file data
    th_publish(&pair.pub, "conn-m", 4, payloads[3], 4); //  re-sent, now said to be a record
    th_publish(&pair.pub, "conn-m", 5, payloads[4], 5);
    th_expect_stored(&pair.pub, "conn-m", 5);
    for (int i = 0; i < 5; i++) {
        th_expect(&pair.priv, PROTO_DELIVER, &msg, 5000);
        assert_int_equal(msg.deliver.more_count, 0);
        assert_int_equal(msg.deliver.file, msg.deliver.seq % 2 == 0); //  as first published
        if (msg.deliver.seq <= 2)
            th_consumed(&pair.priv, "conn-m", msg.deliver.seq);
        proto_msg_clear(&msg);
    }
    th_publish_kind(&pair.priv, "conn-m", 1, "reply", 5, true);
    th_expect(&pair.priv, PROTO_STORED, &msg, 5000);
    proto_msg_clear(&msg);
    th_expect(&pair.pub, PROTO_DELIVER, &msg, 5000);
    assert_int_equal(msg.deliver.file, PROTO_DATA_FILE);
    proto_msg_clear(&msg);
    th_sync(&pair.priv);

    th_client_t rogue;
    th_client_init(&rogue, &broker);
    th_send_raw(&rogue, "\xff\x00", 2);
    th_expect(&rogue, PROTO_ERROR, &msg, 5000);
    assert_int_equal(msg.error.code, 400);
    proto_msg_clear(&msg);
    th_client_close(&rogue);

    s_check(&broker, "twinsync_broker_queue_messages_ready", P2P, 0);
    s_check(&broker, "twinsync_broker_queue_messages_unacked", P2P, 3);
    s_check(&broker, "twinsync_broker_queue_bytes", P2P, 3 + 4 + 5);
    s_check(&broker, "twinsync_broker_queue_file_bytes", P2P, 4); //  "bb" was consumed
    s_check(&broker, "twinsync_broker_queue_file_messages", P2P, 1);
    s_check(&broker, "twinsync_broker_queue_last_stored_sequence", P2P, 5);
    s_check(&broker, "twinsync_broker_queue_published_total", P2P, 7);
    s_check(&broker, "twinsync_broker_queue_stored_total", P2P, 5);
    s_check(&broker, "twinsync_broker_queue_delivered_total", P2P, 5);
    s_check(&broker, "twinsync_broker_queue_consumed_total", P2P, 2);
    s_check(&broker, "twinsync_broker_queue_redelivered_total", P2P, 0);
    s_check(&broker, "twinsync_broker_queue_duplicates_total", P2P, 2);
    double age = th_metric(&broker, "twinsync_broker_queue_oldest_message_age_seconds", P2P);
    assert_true(age >= 0 && age < 60);

    s_check(&broker, "twinsync_broker_queue_messages_unacked", Q2P, 1);
    s_check(&broker, "twinsync_broker_queue_published_total", Q2P, 1);
    s_check(&broker, "twinsync_broker_queue_stored_total", Q2P, 1);
    s_check(&broker, "twinsync_broker_queue_bytes", Q2P, 5);
    s_check(&broker, "twinsync_broker_queue_file_bytes", Q2P, 5);
    s_check(&broker, "twinsync_broker_queue_file_messages", Q2P, 1);
    s_check(&broker, "twinsync_broker_queues_file_bytes", NULL, 4 + 5);
    s_check(&broker, "twinsync_broker_queues_file_messages", NULL, 2);

    s_check(&broker, "twinsync_broker_connection_peers_connected", "connection=\"conn-m\"", 2);
    s_check(&broker, "twinsync_broker_connection_joined", "connection=\"conn-m\"", 1);
    double seen = th_metric(&broker, "twinsync_broker_connection_last_seen_timestamp_seconds",
                            "connection=\"conn-m\",role=\"private\"");
    assert_true(seen > (double)time(NULL) - 60 && seen <= (double)time(NULL) + 1);
    s_check(&broker, "twinsync_broker_connections", "state=\"active\"", 1);
    s_check(&broker, "twinsync_broker_connections", "state=\"pending\"", 0);
    s_check(&broker, "twinsync_broker_peers", NULL, 2);
    s_check(&broker, "twinsync_broker_frames_rejected_total", "reason=\"bad_frame\"", 1);
    s_check(&broker, "twinsync_broker_frames_rejected_total", "reason=\"foreign_connection\"", 0);
    assert_true(th_metric(&broker, "twinsync_broker_store_fsync_seconds_count", NULL) >= 3);
    assert_true(th_metric(&broker, "twinsync_broker_store_fsync_seconds_bucket", "le=\"+Inf\"") ==
                th_metric(&broker, "twinsync_broker_store_fsync_seconds_count", NULL));
    assert_true(th_metric(&broker, "twinsync_broker_store_bytes", NULL) > 0);

    s_promtool(&broker);
    s_stats_table(&broker);

    //  The private node comes back: the 3 unconsumed are delivered again.
    th_client_reconnect(&pair.priv);
    th_hello(&pair.priv, "node-private", PROTO_ROLE_PRIVATE, "conn-m", 1, 2);
    for (int i = 0; i < 3; i++) {
        th_expect(&pair.priv, PROTO_DELIVER, &msg, 5000);
        assert_int_equal(msg.deliver.seq, (uint64_t)i + 3);
        assert_int_equal(msg.deliver.file, msg.deliver.seq == 4); //  from the store, as stored
        proto_msg_clear(&msg);
    }
    th_sync(&pair.priv);
    s_check(&broker, "twinsync_broker_queue_redelivered_total", P2P, 3);
    s_check(&broker, "twinsync_broker_queue_delivered_total", P2P, 8);
    //  Consumed at last: the file counters come down with the messages.
    th_consumed(&pair.priv, "conn-m", 5);
    th_sync(&pair.priv);
    s_check(&broker, "twinsync_broker_queue_file_bytes", P2P, 0);
    s_check(&broker, "twinsync_broker_queue_file_messages", P2P, 0);
    s_check(&broker, "twinsync_broker_queue_bytes", P2P, 0);
    s_check(&broker, "twinsync_broker_queues_file_bytes", NULL, 5);

    th_pair_close(&pair);
    th_broker_cleanup(&broker);
}

static void test_http_endpoints(void **state)
{
    (void)state;
    th_broker_t broker;
    th_broker_init(&broker, th_binary());
    th_broker_start(&broker);
    char url[128], err[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/nope", broker.metrics_port);
    assert_null(broker_stats_fetch(url, err, sizeof err));
    assert_non_null(strstr(err, "404"));
    snprintf(url, sizeof url, "http://127.0.0.1:%d/healthz", broker.metrics_port);
    char *body = broker_stats_fetch(url, err, sizeof err);
    assert_non_null(body);
    assert_string_equal(body, "ok\n");
    free(body);
    //  With no connection yet, the broker-wide families are still there.
    s_check(&broker, "twinsync_broker_peers", NULL, 0);
    s_check(&broker, "twinsync_broker_queues_file_bytes", NULL, 0);
    s_check(&broker, "twinsync_broker_queues_file_messages", NULL, 0);
    s_check(&broker, "twinsync_broker_frames_rejected_total", "reason=\"bad_frame\"", 0);
    s_promtool(&broker);
    th_broker_cleanup(&broker);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_scenario),
        cmocka_unit_test(test_http_endpoints),
    };
    return TH_MAIN(tests);
}
