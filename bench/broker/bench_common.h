/*  bench_common.h: what the broker benchmark's peers share.

    Each peer (raw_peer, rabbit_peer, twin_peer) runs the same work against its
    system: a publisher thread sends `messages` payloads of `size` bytes spread
    round-robin over `conns` queues (twinsync connections, RabbitMQ queues, raw
    streams), at most `window` unacknowledged per queue; a consumer thread
    receives them and acknowledges each one. The run ends when the publisher
    holds every acknowledgement and the consumer has acknowledged every message.

    Every payload starts with the CLOCK_MONOTONIC time it was sent at, so the
    consumer measures the one-way latency publisher -> system -> consumer of each
    message (the clock is shared by the processes of one host).

    Each peer prints one result line in key=value form (bench_result_print);
    bench/broker/run collects those lines into its table.
*/
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BENCH_STAMP_SIZE 20 //  send time (8) + queue index (4) + sequence (8)

typedef struct {
    const char *endpoint; //  where the system listens (peer-specific syntax)
    const char *mode;     //  "both" (default), "publish", "consume", "probe"
    uint64_t messages;    //  messages in the run, over all queues
    unsigned conns;       //  queues the messages are spread over
    size_t size;          //  payload bytes, >= BENCH_STAMP_SIZE
    unsigned window;      //  unacknowledged messages per queue
    unsigned timeout_s;   //  the peer gives up after this long
    const char *dir;      //  peer-specific directory (keys, state) or NULL
    const char *tag;      //  a name for queues / connections, "bench"
    bool file;            //  payloads are file data (twinsync: PUBLISH "file"), --file 1
} bench_args_t;

//  Parses the common flags (--broker.endpoint, --mode, --messages, --conns, --size,
//  --window, --timeout, --dir, --tag, --file) into *args with defaults. Prints the
//  problem and the usage to stderr and returns -1 on a bad or unknown flag.
int bench_args_parse(int argc, char **argv, const char *prog, bench_args_t *args);

//  CLOCK_MONOTONIC in nanoseconds.
uint64_t bench_now_ns(void);

//  Writes the stamp (now, queue, seq) at the start of payload and fills the rest
//  with a pattern. payload holds size >= BENCH_STAMP_SIZE bytes.
void bench_payload_fill(uint8_t *payload, size_t size, uint32_t queue, uint64_t seq);

//  Reads the stamp back. Returns -1 when size < BENCH_STAMP_SIZE.
int bench_payload_read(const uint8_t *payload, size_t size, uint64_t *sent_ns, uint32_t *queue,
                       uint64_t *seq);

//  One-way latencies, in microseconds, of up to `capacity` messages.
typedef struct bench_lat_t bench_lat_t;

bench_lat_t *bench_lat_new(uint64_t capacity);
void bench_lat_destroy(bench_lat_t **self_p);

//  Records the latency of a message sent at sent_ns and received now.
void bench_lat_add(bench_lat_t *self, uint64_t sent_ns);

//  The q-quantile (0 < q < 1) in microseconds; sorts the samples. 0 if none.
double bench_lat_quantile(bench_lat_t *self, double q);

//  Samples recorded.
uint64_t bench_lat_count(const bench_lat_t *self);

//  Prints the result line:
//    system=S conns=C messages=N size=B window=W seconds=T msgs_per_s=R p50_us=A p99_us=B
//  lat may be NULL (publish-only runs print no latency).
void bench_result_print(const char *system, const bench_args_t *args, uint64_t messages,
                        uint64_t elapsed_ns, bench_lat_t *lat);

//  Index of the queue message number i (0-based) goes to, and its sequence
//  within that queue (1-based): round-robin.
static inline uint32_t bench_queue_of(const bench_args_t *args, uint64_t i)
{
    return (uint32_t)(i % args->conns);
}
static inline uint64_t bench_seq_of(const bench_args_t *args, uint64_t i)
{
    return i / args->conns + 1;
}

//  Messages queue q receives in a run of args->messages.
uint64_t bench_queue_total(const bench_args_t *args, uint32_t q);

//  One side of a run, executed on its own thread; returns 0, or -1 after it
//  printed why it failed.
typedef int(bench_side_fn)(void *arg);

//  Runs consume(consume_arg) and publish(publish_arg) on two threads (either may
//  be NULL to run one side only) and waits for both. The consumer must already be
//  subscribed: the clock starts when the threads start. Stores the elapsed time in
//  *elapsed_ns; returns 0 when both sides succeeded, else -1.
int bench_run(bench_side_fn *consume, void *consume_arg, bench_side_fn *publish, void *publish_arg,
              uint64_t *elapsed_ns);

//  True once deadline_ns (CLOCK_MONOTONIC) has passed; prints "PROG: timed out
//  WHAT" the first time.
bool bench_expired(uint64_t deadline_ns, const char *prog, const char *what);

#endif
