/*  broker_attacker.c: the two attacks of issue 12 on twinsync-broker, as a
    tool the end-to-end tests run beside real nodes (tests/e2e/test_evict.py,
    tests/e2e/test_flood.py). It knows only what every node configuration
    and invitation code carries: the broker's endpoint and public key, and
    node names.

        broker_attacker evict ENDPOINT BROKER_KEY SECONDS NAME...
            Every 500 ms for SECONDS, per NAME: a new DEALER with ZMQ_ROUTING_ID
            = NAME (the routing id nodes used to set) and a fresh random CURVE
            key connects (the one before is closed) and sends HELLO (node NAME,
            role private) and PING.

        broker_attacker flood ENDPOINT BROKER_KEY SESSIONS SECONDS
            SESSIONS DEALERs, each with its own random CURVE key, say HELLO as
            private nodes and keep their sessions: PING every 500 ms, HELLO
            again at once after ERROR 401 and 1 s after any other refusal.
            Prints "answered=N" on a line of its own once every socket had an
            answer to its first HELLO (or after 20 s), so that a test knows
            the flood is in place.

    SIGTERM or SIGINT end the attack before SECONDS have passed (a test
    stops it once it has seen what it needed). At the end it prints one line
    of key=value counts: hellos sent, WELCOMEs, ERRORs by code, sockets.
    Exit 0, or 2 on a usage error.

    Not a test itself (CTest does not run it); single-threaded, one ZeroMQ
    context, the open-files limit raised to the hard limit.
*/
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <zmq.h>

#include "proto_buf.h"
#include "proto_msg.h"

#define PING_EVERY_MS  500  //  Keeps a session alive at the e2e heartbeat (500 ms, liveness 3)
#define RETRY_AFTER_MS 1000 //  After a refusal other than 401
#define READY_WAIT_MS  20000

typedef struct {
    void *socket;   //  DEALER
    void *ctx;      //  Its context (evict: a new socket each round)
    char name[64];  //  Node name claimed in HELLO
    int64_t due_ms; //  When to send next
    bool hello_due; //  The next send is a HELLO (else a PING)
    bool answered;  //  Some answer came since the first HELLO
} peer_t;

typedef struct {
    uint64_t hellos;     //  HELLOs sent
    uint64_t pings;      //  PINGs sent
    uint64_t welcomed;   //  WELCOMEs received
    uint64_t pongs;      //  PONGs received
    uint64_t errors[6];  //  ERRORs: 401, 403, 429, other 4xx, 5xx, unknown
    uint64_t send_fails; //  Sends refused by the socket (HWM, not connected)
} counts_t;

static volatile sig_atomic_t s_stop; //  Set by SIGTERM / SIGINT

static void s_on_signal(int signo)
{
    (void)signo;
    s_stop = 1;
}

static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void s_raise_fd_limit(void)
{
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit);
    }
}

//  Opens one DEALER with a fresh key pair (and routing id rid, when not
//  NULL) connected to endpoint. Returns NULL on failure (printed).
static void *s_open(void *ctx, const char *endpoint, const char *broker_key, const char *rid)
{
    char public_key[41], secret_key[41];
    void *socket = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    if (!socket || zmq_curve_keypair(public_key, secret_key) != 0 ||
        zmq_setsockopt(socket, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_setsockopt(socket, ZMQ_CURVE_SERVERKEY, broker_key, 40) != 0 ||
        zmq_setsockopt(socket, ZMQ_CURVE_PUBLICKEY, public_key, 40) != 0 ||
        zmq_setsockopt(socket, ZMQ_CURVE_SECRETKEY, secret_key, 40) != 0 ||
        (rid && zmq_setsockopt(socket, ZMQ_ROUTING_ID, rid, strlen(rid)) != 0) ||
        zmq_connect(socket, endpoint) != 0) {
        fprintf(stderr, "broker_attacker: cannot open a socket: %s\n", zmq_strerror(zmq_errno()));
        if (socket)
            zmq_close(socket);
        return NULL;
    }
    return socket;
}

static void s_send(peer_t *peer, const proto_msg_t *msg, counts_t *counts)
{
    proto_buf_t buf;
    proto_buf_init(&buf);
    if (proto_msg_encode(msg, NULL, &buf, NULL) == PROTO_OK &&
        zmq_send(peer->socket, buf.data, buf.size, ZMQ_DONTWAIT) < 0)
        counts->send_fails++;
    proto_buf_release(&buf);
}

static void s_send_hello(peer_t *peer, counts_t *counts)
{
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_HELLO);
    msg.hello.node = peer->name;
    msg.hello.role = PROTO_ROLE_PRIVATE;
    s_send(peer, &msg, counts);
    counts->hellos++;
}

static void s_send_empty(peer_t *peer, proto_type_t type, counts_t *counts)
{
    proto_msg_t msg;
    proto_msg_init(&msg, type);
    s_send(peer, &msg, counts);
    counts->pings += type == PROTO_PING;
}

//  Reads what waits on peer's socket and reacts as a node would (flood) or
//  only counts (evict).
static void s_read(peer_t *peer, bool flood, int64_t now, counts_t *counts)
{
    while (true) {
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        if (zmq_msg_recv(&frame, peer->socket, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&frame);
            return;
        }
        proto_msg_t msg;
        bool ok = proto_msg_decode(zmq_msg_data(&frame), zmq_msg_size(&frame), NULL, &msg, NULL) ==
                  PROTO_OK;
        zmq_msg_close(&frame);
        if (!ok)
            continue;
        peer->answered = true;
        if (msg.type == PROTO_WELCOME) {
            counts->welcomed++;
        } else if (msg.type == PROTO_PONG) {
            counts->pongs++;
        } else if (msg.type == PROTO_PING) {
            s_send_empty(peer, PROTO_PONG, counts);
        } else if (msg.type == PROTO_ERROR) {
            uint16_t code = msg.error.code;
            int at = code == 401 ? 0 : code == 403 ? 1 : code == 429 ? 2 : code < 500 ? 3 : 4;
            counts->errors[code >= 400 && code < 600 ? at : 5]++;
            if (flood) {
                peer->hello_due = true;
                peer->due_ms = code == 401 ? now : now + RETRY_AFTER_MS;
            }
        }
        proto_msg_clear(&msg);
    }
}

static void s_print_counts(const char *mode, size_t sockets, const counts_t *c)
{
    printf("mode=%s sockets=%zu hellos=%llu pings=%llu welcomed=%llu pongs=%llu error_401=%llu "
           "error_403=%llu error_429=%llu error_4xx=%llu error_5xx=%llu error_other=%llu "
           "send_fails=%llu\n",
           mode, sockets, (unsigned long long)c->hellos, (unsigned long long)c->pings,
           (unsigned long long)c->welcomed, (unsigned long long)c->pongs,
           (unsigned long long)c->errors[0], (unsigned long long)c->errors[1],
           (unsigned long long)c->errors[2], (unsigned long long)c->errors[3],
           (unsigned long long)c->errors[4], (unsigned long long)c->errors[5],
           (unsigned long long)c->send_fails);
    fflush(stdout);
}

//  Replaces peer's socket by a new one (a new key, the same routing id),
//  counting what the old one got. Returns false when none can be opened.
static bool s_renew(peer_t *peer, const char *endpoint, const char *broker_key, int64_t now,
                    counts_t *counts)
{
    s_read(peer, false, now, counts);
    zmq_close(peer->socket);
    peer->socket = s_open(peer->ctx, endpoint, broker_key, peer->name);
    return peer->socket != NULL;
}

//  Runs peers for seconds. flood: sessions kept as a node would; evict:
//  every PING_EVERY_MS a new socket (new key, the same routing id), HELLO +
//  PING, whatever comes back.
static void s_run(peer_t *peers, size_t count, bool flood, long seconds, const char *endpoint,
                  const char *broker_key, counts_t *counts)
{
    zmq_pollitem_t *items = calloc(count, sizeof *items);
    if (!items)
        return;
    for (size_t i = 0; i < count; i++)
        items[i] = (zmq_pollitem_t){peers[i].socket, 0, ZMQ_POLLIN, 0};
    int64_t start = s_now_ms(), end = start + seconds * 1000;
    bool ready_told = !flood;
    for (int64_t now = start; now < end && !s_stop; now = s_now_ms()) {
        for (size_t i = 0; i < count; i++) {
            peer_t *peer = &peers[i];
            if (now < peer->due_ms)
                continue;
            if (!flood && peer->due_ms && !s_renew(peer, endpoint, broker_key, now, counts)) {
                end = now; //  No socket to be had any more: stop
                break;
            }
            items[i].socket = peer->socket;
            if (!flood || peer->hello_due)
                s_send_hello(peer, counts);
            if (!flood || !peer->hello_due)
                s_send_empty(peer, PROTO_PING, counts);
            peer->hello_due = false;
            peer->due_ms = now + PING_EVERY_MS;
        }
        if (zmq_poll(items, (int)count, 20) < 0 && zmq_errno() != EINTR)
            break;
        now = s_now_ms();
        for (size_t i = 0; i < count; i++) {
            if (items[i].revents & ZMQ_POLLIN)
                s_read(&peers[i], flood, now, counts);
        }
        if (!ready_told) {
            size_t answered = 0;
            for (size_t i = 0; i < count; i++)
                answered += peers[i].answered;
            if (answered == count || now - start >= READY_WAIT_MS) {
                printf("answered=%zu\n", answered);
                fflush(stdout);
                ready_told = true;
            }
        }
    }
    free(items);
}

static int s_usage(void)
{
    fprintf(stderr, "usage: broker_attacker evict ENDPOINT BROKER_KEY SECONDS NAME...\n"
                    "       broker_attacker flood ENDPOINT BROKER_KEY SESSIONS SECONDS\n");
    return 2;
}

//  A whole number from text in [min, max], or -1.
static long s_number(const char *text, long min, long max)
{
    char *end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno || end == text || *end || value < min || value > max)
        return -1;
    return value;
}

int main(int argc, char **argv)
{
    if (argc < 6)
        return s_usage();
    bool flood = strcmp(argv[1], "flood") == 0;
    if (!flood && strcmp(argv[1], "evict") != 0)
        return s_usage();
    const char *endpoint = argv[2], *broker_key = argv[3];
    if (strlen(broker_key) != 40)
        return s_usage();
    long sessions = flood ? s_number(argv[4], 1, 100000) : argc - 5;
    long seconds = s_number(argv[flood ? 5 : 4], 1, 3600);
    if (sessions < 1 || seconds < 1)
        return s_usage();

    s_raise_fd_limit();
    struct sigaction action = {.sa_handler = s_on_signal};
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);
    void *ctx = zmq_ctx_new();
    zmq_ctx_set(ctx, ZMQ_MAX_SOCKETS, (int)sessions + 16);
    peer_t *peers = calloc((size_t)sessions, sizeof *peers);
    if (!ctx || !peers)
        return 1;
    size_t opened = 0;
    for (long i = 0; i < sessions; i++) {
        peer_t *peer = &peers[opened];
        if (flood)
            snprintf(peer->name, sizeof peer->name, "flood-%ld", i);
        else
            snprintf(peer->name, sizeof peer->name, "%s", argv[5 + i]);
        peer->ctx = ctx;
        peer->socket = s_open(ctx, endpoint, broker_key, flood ? NULL : peer->name);
        if (!peer->socket)
            break;
        peer->hello_due = true;
        opened++;
    }
    counts_t counts = {0};
    s_run(peers, opened, flood, seconds, endpoint, broker_key, &counts);
    s_print_counts(argv[1], opened, &counts);
    for (size_t i = 0; i < opened; i++) {
        if (peers[i].socket)
            zmq_close(peers[i].socket);
    }
    free(peers);
    zmq_ctx_term(ctx);
    return 0;
}
