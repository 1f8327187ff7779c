/*  store_probe.c: how fast the broker's store is on this disk, and what a
    big backlog costs in memory and restart time. A manual measuring tool,
    not a test (no pass/fail, never run by CTest); docs/broker.md quotes its
    output. The end-to-end benchmark is bench/broker.

        broker_store_probe [MESSAGES [PAYLOAD_BYTES [BATCH [DIR]]]]
        (defaults: 1000000 1024 256 /tmp)

    1. fill:    MESSAGES appends in transactions of BATCH (one fsync each)
    2. restart: close, reopen the store and load a broker core over it
    3. drain:   read in windows of 64 and consume one by one, BATCH a commit
    printing throughput, commit latency and the process RSS after each.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "broker_config.h"
#include "broker_core.h"
#include "broker_store.h"
#include "ts_log.h"

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long s_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = strtol(line + 6, NULL, 10);
    }
    if (f)
        fclose(f);
    return kib;
}

static int s_null_send(void *arg, const uint8_t *rid, size_t rid_size, const uint8_t *data,
                       size_t size)
{
    (void)arg, (void)rid, (void)rid_size, (void)data, (void)size;
    return 0;
}

static int s_count(uint64_t seq, const void *payload, size_t size, bool file, int64_t at, void *arg)
{
    (void)payload, (void)size, (void)file, (void)at;
    *(uint64_t *)arg = seq;
    return 0;
}

static broker_store_t *s_open(const char *dir)
{
    char err[512];
    broker_store_t *store = broker_store_open(dir, NULL, err, sizeof err);
    if (!store) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    return store;
}

static void s_commit(broker_store_t *store, double *commit_total, long *commits)
{
    if (broker_store_commit(store) != 0) {
        fprintf(stderr, "commit: %s\n", broker_store_error(store));
        exit(1);
    }
    *commit_total += broker_store_last_commit_seconds(store);
    (*commits)++;
}

int main(int argc, char **argv)
{
    long messages = argc > 1 ? strtol(argv[1], NULL, 10) : 1000000;
    long payload_size = argc > 2 ? strtol(argv[2], NULL, 10) : 1024;
    long batch = argc > 3 ? strtol(argv[3], NULL, 10) : 256;
    char dir[256];
    snprintf(dir, sizeof dir, "%s/store-probe.XXXXXX", argc > 4 ? argv[4] : "/tmp");
    if (!mkdtemp(dir) || messages < 1 || payload_size < 1 || batch < 1)
        return 2;
    ts_log_set_level(TS_LOG_ERROR);
    char *payload = malloc((size_t)payload_size);
    memset(payload, 'x', (size_t)payload_size);

    broker_store_t *store = s_open(dir);
    broker_store_conn_t conn = {.conn = "probe", .public_key = "", .private_key = ""};
    int64_t qid = 0;
    if (broker_store_conn_save(store, &conn) != 0 ||
        broker_store_queue_create(store, "probe", 0, &qid) != 0 || broker_store_commit(store))
        return 1;
    double commit_total = 0, start = s_now();
    long commits = 0;
    for (long seq = 1; seq <= messages; seq++) {
        if (broker_store_append(store, qid, (uint64_t)seq, payload, (size_t)payload_size, false,
                                seq) != 0)
            return 1;
        if (seq % batch == 0 || seq == messages) {
            broker_store_queue_t row = {.qid = qid,
                                        .last_seq = (uint64_t)seq,
                                        .count = (uint64_t)seq,
                                        .bytes = (uint64_t)(seq * payload_size)};
            broker_store_queue_save(store, &row);
            s_commit(store, &commit_total, &commits);
        }
    }
    double took = s_now() - start;
    printf("fill    %ld x %ld B, batch %ld: %.1f s, %.0f msg/s, %ld commits, mean commit %.2f ms, "
           "store %.0f MiB, RSS %ld MiB\n",
           messages, payload_size, batch, took, (double)messages / took, commits,
           commit_total / (double)commits * 1000,
           (double)broker_store_disk_bytes(store) / 1048576.0, s_rss_kib() / 1024);
    broker_store_destroy(&store);

    long rss_before = s_rss_kib();
    start = s_now();
    store = s_open(dir);
    broker_config_t config;
    const char *args[] = {"probe", "run", "--broker.state_dir", dir, NULL};
    char err[512];
    if (broker_config_load(&config, 4, (char **)args, 2, err, sizeof err) != 0)
        return 1;
    broker_core_t *core = broker_core_new(store, &config, s_null_send, NULL, err, sizeof err);
    if (!core) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    took = s_now() - start;
    printf("restart store + core ready in %.3f s, RSS %ld MiB (was %ld MiB)\n", took,
           s_rss_kib() / 1024, rss_before / 1024);

    start = s_now();
    commit_total = 0;
    commits = 0;
    uint64_t after = 0;
    long removed = 0;
    while (removed < messages) {
        uint64_t last = after;
        if (broker_store_read(store, qid, after, 64, s_count, &last) <= 0)
            break;
        for (uint64_t seq = after + 1; seq <= last; seq++) {
            broker_store_removed_t gone = {0};
            broker_store_remove_upto(store, qid, seq, &gone); //  one CONSUMED each
            if (++removed % batch == 0)
                s_commit(store, &commit_total, &commits);
        }
        after = last;
    }
    s_commit(store, &commit_total, &commits);
    took = s_now() - start;
    printf("drain   %ld read+deleted: %.1f s, %.0f msg/s, mean commit %.2f ms, RSS %ld MiB\n",
           removed, took, (double)removed / took, commit_total / (double)commits * 1000,
           s_rss_kib() / 1024);
    broker_core_destroy(&core);
    broker_store_destroy(&store);
    broker_config_release(&config);
    free(payload);
    char command[300];
    snprintf(command, sizeof command, "rm -rf %s", dir);
    return system(command) == 0 ? 0 : 1;
}
