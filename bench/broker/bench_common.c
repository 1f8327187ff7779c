/*  bench_common.c: flags, payload stamps, latency samples and the result line the
    broker benchmark's peers share (see bench_common.h).
*/
#include "bench_common.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>

struct bench_lat_t {
    uint32_t *us;      //  samples in microseconds
    uint64_t count;    //  samples recorded
    uint64_t capacity; //  room in us
    bool sorted;       //  us[0..count) is sorted
};

static void s_usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s --broker.endpoint EP [--mode both|publish|consume|probe] [--messages N]\n"
            "          [--conns C] [--size BYTES] [--window W] [--timeout SECONDS]\n"
            "          [--dir DIR] [--tag NAME] [--file 0|1]\n",
            prog);
}

//  Parses text as an unsigned integer in [min, max]. Returns 0, or -1.
static int s_parse_u64(const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-')
        return -1;
    if (v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int bench_args_parse(int argc, char **argv, const char *prog, bench_args_t *args)
{
    *args = (bench_args_t){.endpoint = NULL,
                           .mode = "both",
                           .messages = 20000,
                           .conns = 1,
                           .size = 1024,
                           .window = 64,
                           .timeout_s = 600,
                           .dir = NULL,
                           .tag = "bench"};
    for (int i = 1; i < argc; i += 2) {
        const char *flag = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t v = 0;
        int rc = 0;
        if (value == NULL) {
            fprintf(stderr, "%s: %s needs a value\n", prog, flag);
            s_usage(prog);
            return -1;
        }
        if (strcmp(flag, "--broker.endpoint") == 0)
            args->endpoint = value;
        else if (strcmp(flag, "--mode") == 0)
            args->mode = value;
        else if (strcmp(flag, "--dir") == 0)
            args->dir = value;
        else if (strcmp(flag, "--tag") == 0)
            args->tag = value;
        else if (strcmp(flag, "--messages") == 0 &&
                 (rc = s_parse_u64(value, 1, UINT64_C(1) << 40, &v)) == 0)
            args->messages = v;
        else if (strcmp(flag, "--conns") == 0 && (rc = s_parse_u64(value, 1, 4096, &v)) == 0)
            args->conns = (unsigned)v;
        else if (strcmp(flag, "--size") == 0 &&
                 (rc = s_parse_u64(value, BENCH_STAMP_SIZE, 1 << 20, &v)) == 0)
            args->size = (size_t)v;
        else if (strcmp(flag, "--window") == 0 && (rc = s_parse_u64(value, 1, 65536, &v)) == 0)
            args->window = (unsigned)v;
        else if (strcmp(flag, "--timeout") == 0 && (rc = s_parse_u64(value, 1, 86400, &v)) == 0)
            args->timeout_s = (unsigned)v;
        else if (strcmp(flag, "--file") == 0 && (rc = s_parse_u64(value, 0, 1, &v)) == 0)
            args->file = v == 1;
        else {
            fprintf(stderr, "%s: %s %s: %s\n", prog, flag, value,
                    rc != 0 ? "value out of range" : "unknown flag");
            s_usage(prog);
            return -1;
        }
    }
    if (args->endpoint == NULL) {
        fprintf(stderr, "%s: --broker.endpoint is required\n", prog);
        s_usage(prog);
        return -1;
    }
    return 0;
}

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void bench_payload_fill(uint8_t *payload, size_t size, uint32_t queue, uint64_t seq)
{
    uint64_t now = bench_now_ns();
    memcpy(payload, &now, 8);
    memcpy(payload + 8, &queue, 4);
    memcpy(payload + 12, &seq, 8);
    for (size_t i = BENCH_STAMP_SIZE; i < size; i++)
        payload[i] = (uint8_t)(i * 31 + seq);
}

int bench_payload_read(const uint8_t *payload, size_t size, uint64_t *sent_ns, uint32_t *queue,
                       uint64_t *seq)
{
    if (size < BENCH_STAMP_SIZE)
        return -1;
    memcpy(sent_ns, payload, 8);
    memcpy(queue, payload + 8, 4);
    memcpy(seq, payload + 12, 8);
    return 0;
}

bench_lat_t *bench_lat_new(uint64_t capacity)
{
    bench_lat_t *self = calloc(1, sizeof *self);
    if (self == NULL)
        return NULL;
    self->us = calloc(capacity ? capacity : 1, sizeof *self->us);
    if (self->us == NULL) {
        free(self);
        return NULL;
    }
    self->capacity = capacity;
    return self;
}

void bench_lat_destroy(bench_lat_t **self_p)
{
    if (self_p == NULL || *self_p == NULL)
        return;
    free((*self_p)->us);
    free(*self_p);
    *self_p = NULL;
}

void bench_lat_add(bench_lat_t *self, uint64_t sent_ns)
{
    if (self->count >= self->capacity)
        return;
    uint64_t now = bench_now_ns();
    uint64_t us = now > sent_ns ? (now - sent_ns) / 1000 : 0;
    self->us[self->count++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    self->sorted = false;
}

static int s_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

double bench_lat_quantile(bench_lat_t *self, double q)
{
    if (self->count == 0)
        return 0;
    if (!self->sorted) {
        qsort(self->us, self->count, sizeof *self->us, s_cmp_u32);
        self->sorted = true;
    }
    uint64_t rank = (uint64_t)(q * (double)self->count);
    if (rank >= self->count)
        rank = self->count - 1;
    return self->us[rank];
}

uint64_t bench_lat_count(const bench_lat_t *self)
{
    return self->count;
}

void bench_result_print(const char *system, const bench_args_t *args, uint64_t messages,
                        uint64_t elapsed_ns, bench_lat_t *lat)
{
    double seconds = (double)elapsed_ns / 1e9;
    double rate = seconds > 0 ? (double)messages / seconds : 0;
    printf("system=%s conns=%u messages=%" PRIu64 " size=%zu window=%u seconds=%.3f "
           "msgs_per_s=%.0f",
           system, args->conns, messages, args->size, args->window, seconds, rate);
    if (lat != NULL)
        printf(" p50_us=%.0f p99_us=%.0f", bench_lat_quantile(lat, 0.50),
               bench_lat_quantile(lat, 0.99));
    printf("\n");
    fflush(stdout);
}

uint64_t bench_queue_total(const bench_args_t *args, uint32_t q)
{
    uint64_t base = args->messages / args->conns;
    return base + (q < args->messages % args->conns ? 1 : 0);
}

typedef struct {
    bench_side_fn *fn; //  the side to run
    void *arg;         //  its argument
    int rc;            //  what it returned
} s_side_t;

static void *s_side_main(void *arg)
{
    s_side_t *side = arg;
    side->rc = side->fn(side->arg);
    return NULL;
}

int bench_run(bench_side_fn *consume, void *consume_arg, bench_side_fn *publish, void *publish_arg,
              uint64_t *elapsed_ns)
{
    s_side_t sides[2] = {{consume, consume_arg, 0}, {publish, publish_arg, 0}};
    pthread_t threads[2];
    bool started[2] = {false, false};
    uint64_t start = bench_now_ns();
    for (int i = 0; i < 2; i++) {
        if (sides[i].fn == NULL)
            continue;
        if (pthread_create(&threads[i], NULL, s_side_main, &sides[i]) != 0) {
            fprintf(stderr, "bench: cannot start a thread\n");
            sides[i].rc = -1;
            continue;
        }
        started[i] = true;
    }
    for (int i = 0; i < 2; i++)
        if (started[i])
            pthread_join(threads[i], NULL);
    *elapsed_ns = bench_now_ns() - start;
    return sides[0].rc == 0 && sides[1].rc == 0 ? 0 : -1;
}

bool bench_expired(uint64_t deadline_ns, const char *prog, const char *what)
{
    if (bench_now_ns() < deadline_ns)
        return false;
    fprintf(stderr, "%s: timed out %s\n", prog, what);
    return true;
}
