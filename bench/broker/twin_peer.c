/*  twin_peer.c: a public and a private twinsync node for the broker benchmark,
    each with its own broker link (link/link_broker.h) on its own thread.

    The public node publishes the run's messages on connections "TAG-0" ..
    "TAG-(C-1)" (bench_common.h: round-robin, 1 KiB payloads stamped with their
    send time); the private node applies each DELIVER in order and answers
    CONSUMED. Every hop is acknowledged: PUBLISH -> STORED (after the broker's
    fsync), DELIVER -> CONSUMED. Payloads are opaque bytes, not sealed: the
    benchmark measures the broker, and sealing is node-side work.

    DIR holds the keys: broker.pub (the broker's Z85 public key, from
    `twinsync-broker key`), public.key and private.key (Z85 public key, then
    secret key, one per line; made by --mode keygen).

      twin_peer --mode keygen  --dir DIR       prints the public node's key
      twin_peer --mode setup   --dir DIR --broker.endpoint EP --conns C --tag T
          INVITE + JOIN the connections (both nodes), then exit
      twin_peer --mode both    ...            setup, then the timed run
      twin_peer --mode publish ...            public node only: publish N and
          wait for every STORED (messages queue for an absent receiver)
      twin_peer --mode consume ...            private node only: take N
      twin_peer --mode probe   ...            public node: print the
          CLOCK_REALTIME of the first WELCOME (welcome_unix_ns=...); the public
          node, so that nothing queued for the private node is delivered to it
*/
#include "bench_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "link_broker.h"
#include "proto_invite.h"

typedef struct {
    const bench_args_t *args; //  the run
    bool public_side;         //  public (publisher) or private (consumer) node
    link_t *link;             //  this node's link
    char (*conn_ids)[64];     //  connection ids, by queue index
    uint64_t *position;       //  per queue: highest STORED (public) / applied (private)
    uint64_t total;           //  messages STORED / applied in this run
    uint64_t answers;         //  INVITED (public) / JOINED (private) seen
    uint64_t welcome_ns;      //  CLOCK_REALTIME of the first READY, 0 before
    bench_lat_t *lat;         //  private: latencies
    bool failed;              //  a refusal the run cannot survive
} s_node_t;

static const char *s_prog = "twin_peer";

//  -------------------------------------------------------------------------
//  Keys

//  Reads a Z85 key file (public key line, optional secret key line) into raw
//  keys. Returns 0, or -1 after printing why.
static int s_read_keys(const char *dir, const char *name, uint8_t public_key[32],
                       uint8_t *secret_key)
{
    char path[512], pub[64] = "", sec[64] = "";
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *file = fopen(path, "r");
    if (!file) {
        fprintf(stderr, "%s: cannot read %s\n", s_prog, path);
        return -1;
    }
    int n = fscanf(file, "%63s %63s", pub, sec);
    fclose(file);
    if (n < 1 || strlen(pub) != 40 || !zmq_z85_decode(public_key, pub) ||
        (secret_key && (n < 2 || strlen(sec) != 40 || !zmq_z85_decode(secret_key, sec)))) {
        fprintf(stderr, "%s: %s does not hold Z85 keys\n", s_prog, path);
        return -1;
    }
    return 0;
}

static int s_keygen(const char *dir)
{
    char pub[41], sec[41];
    for (int i = 0; i < 2; i++) {
        const char *name = i == 0 ? "public.key" : "private.key";
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, name);
        if (zmq_curve_keypair(pub, sec) != 0) {
            fprintf(stderr, "%s: libzmq has no CURVE\n", s_prog);
            return -1;
        }
        FILE *file = fopen(path, "w");
        if (!file) {
            fprintf(stderr, "%s: cannot write %s\n", s_prog, path);
            return -1;
        }
        chmod(path, 0600);
        fprintf(file, "%s\n%s\n", pub, sec);
        fclose(file);
        if (i == 0)
            printf("%s\n", pub);
    }
    return 0;
}

//  -------------------------------------------------------------------------
//  Link callbacks

//  Queue index of connection id "TAG-i", or -1.
static long s_queue(const s_node_t *node, const char *conn)
{
    size_t tag = strlen(node->args->tag);
    if (strncmp(conn, node->args->tag, tag) != 0 || conn[tag] != '-')
        return -1;
    char *end = NULL;
    long q = strtol(conn + tag + 1, &end, 10);
    return *end == '\0' && q >= 0 && q < (long)node->args->conns ? q : -1;
}

static void s_on_state(link_state_t state, const char *reason, void *arg)
{
    s_node_t *node = arg;
    if (state == LINK_READY && node->welcome_ns == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        node->welcome_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }
    if (state == LINK_DOWN)
        fprintf(stderr, "%s: %s link down: %s\n", s_prog, node->public_side ? "public" : "private",
                reason);
}

static void s_on_stored(const char *conn, uint64_t seq, void *arg)
{
    s_node_t *node = arg;
    long q = s_queue(node, conn);
    if (q < 0 || seq <= node->position[q])
        return;
    node->total += seq - node->position[q];
    node->position[q] = seq;
}

static int s_on_deliver(const char *conn, uint64_t seq, const uint8_t *payload, size_t size,
                        void *arg)
{
    s_node_t *node = arg;
    long q = s_queue(node, conn);
    if (q < 0)
        return LINK_REFUSED;
    if (seq <= node->position[q])
        return LINK_APPLIED; //  duplicate: applied before
    if (seq != node->position[q] + 1)
        return LINK_REFUSED; //  gap: the broker re-delivers in order
    uint64_t sent, stamp_seq;
    uint32_t stamp_queue;
    if (node->lat && bench_payload_read(payload, size, &sent, &stamp_queue, &stamp_seq) == 0)
        bench_lat_add(node->lat, sent);
    node->position[q] = seq;
    node->total++;
    return LINK_APPLIED;
}

static void s_on_answer(s_node_t *node)
{
    node->answers++;
}

static void s_on_invited(const char *conn, uint64_t expires, void *arg)
{
    (void)conn;
    (void)expires;
    s_on_answer(arg);
}

static void s_on_joined(const proto_joined_t *joined, void *arg)
{
    s_node_t *node = arg;
    if (!node->public_side && s_queue(node, joined->conn) >= 0)
        s_on_answer(node);
}

static void s_on_error(const link_error_t *error, void *arg)
{
    s_node_t *node = arg;
    fprintf(stderr, "%s: %s node: error %u%s conn=%s: %s\n", s_prog,
            node->public_side ? "public" : "private", (unsigned)error->code,
            error->local ? " (local)" : "", error->conn ? error->conn : "-", error->text);
    if (error->code != PROTO_ERR_QUEUE_FULL && error->code < 500)
        node->failed = true;
}

//  -------------------------------------------------------------------------
//  Nodes

static int s_node_init(s_node_t *node, const bench_args_t *args, bool public_side, void *ctx)
{
    memset(node, 0, sizeof *node);
    node->args = args;
    node->public_side = public_side;
    node->conn_ids = calloc(args->conns, sizeof *node->conn_ids);
    node->position = calloc(args->conns, sizeof *node->position);
    if (!public_side)
        node->lat = bench_lat_new(args->messages);
    if (!node->conn_ids || !node->position || (!public_side && !node->lat))
        return -1;

    link_config_t config;
    link_config_defaults(&config);
    config.endpoint = args->endpoint;
    config.node_id = public_side ? "bench-public" : "bench-private";
    config.role = public_side ? PROTO_ROLE_PUBLIC : PROTO_ROLE_PRIVATE;
    config.window = args->window;
    config.credit = args->window;
    config.heartbeat_ms = 200; //  until WELCOME: the probe retries fast
    config.backoff_min_ms = 20;
    config.backoff_max_ms = 200;
    if (s_read_keys(args->dir, "broker.pub", config.broker_key, NULL) != 0 ||
        s_read_keys(args->dir, public_side ? "public.key" : "private.key", config.public_key,
                    config.secret_key) != 0)
        return -1;
    link_callbacks_t callbacks = {s_on_state,  s_on_stored, s_on_deliver, s_on_invited,
                                  s_on_joined, s_on_error,  NULL,         node};
    char err[256];
    node->link = link_new(ctx, &config, &callbacks, err, sizeof err);
    if (!node->link) {
        fprintf(stderr, "%s: %s\n", s_prog, err);
        return -1;
    }
    for (uint32_t q = 0; q < args->conns; q++) {
        snprintf(node->conn_ids[q], sizeof node->conn_ids[q], "%s-%u", args->tag, q);
        if (link_conn_add(node->link, node->conn_ids[q], 0, 0) != LINK_OK) {
            fprintf(stderr, "%s: bad connection id %s\n", s_prog, node->conn_ids[q]);
            return -1;
        }
    }
    return 0;
}

static void s_node_release(s_node_t *node)
{
    link_destroy(&node->link);
    bench_lat_destroy(&node->lat);
    free(node->conn_ids);
    free(node->position);
}

static int64_t s_mono_ms(void)
{
    return (int64_t)(bench_now_ns() / 1000000u);
}

//  Runs the links of nodes[0..count) for up to timeout_ms (once at least when
//  0), polling them together. Returns when done(arg) is true: 0, or -1 on a
//  timeout or a failed node.
static int s_drive(s_node_t **nodes, int count, int64_t timeout_ms, bool (*done)(void *), void *arg)
{
    int64_t end = s_mono_ms() + timeout_ms;
    for (;;) {
        int64_t now = s_mono_ms();
        zmq_pollitem_t items[2];
        s_node_t *polled[2];
        int n = 0;
        long wait = 100;
        for (int i = 0; i < count; i++) {
            link_tick(nodes[i]->link, now);
            long next = link_next_timeout_ms(nodes[i]->link, now);
            wait = next < wait ? next : wait;
            if (link_pollitem(nodes[i]->link, &items[n]))
                polled[n++] = nodes[i];
        }
        for (int i = 0; i < count; i++)
            if (nodes[i]->failed)
                return -1;
        if (done(arg))
            return 0;
        if (now >= end) {
            fprintf(stderr, "%s: timed out\n", s_prog);
            return -1;
        }
        if (n == 0) {
            zmq_poll(NULL, 0, wait);
            continue;
        }
        zmq_poll(items, n, wait);
        now = s_mono_ms();
        for (int i = 0; i < n; i++)
            if (items[i].revents & ZMQ_POLLIN)
                link_handle(polled[i]->link, now);
    }
}

typedef struct {
    s_node_t *node; //  the node awaited
    uint64_t goal;  //  answers or messages it must reach
} s_goal_t;

static bool s_answers_reached(void *arg)
{
    s_goal_t *goal = arg;
    return goal->node->answers >= goal->goal;
}

static bool s_total_reached(void *arg)
{
    s_goal_t *goal = arg;
    return goal->node->total >= goal->goal;
}

static bool s_welcomed(void *arg)
{
    s_goal_t *goal = arg;
    return goal->node->welcome_ns != 0;
}

//  INVITE every connection from the public node, then JOIN them from the
//  private node with the same tokens.
static int s_setup(s_node_t *pub, s_node_t *priv)
{
    const bench_args_t *args = pub->args;
    uint8_t(*tokens)[PROTO_KEY_SIZE] = calloc(args->conns, sizeof *tokens);
    if (!tokens)
        return -1;
    uint64_t expires = (uint64_t)time(NULL) + 3600;
    srand((unsigned)(time(NULL) ^ getpid()));
    int rc = -1;
    for (uint32_t q = 0; q < args->conns; q++) {
        uint8_t hash[PROTO_KEY_SIZE];
        for (size_t i = 0; i < PROTO_KEY_SIZE; i++)
            tokens[q][i] = (uint8_t)rand();
        proto_invite_token_hash(tokens[q], hash);
        if (link_invite(pub->link, pub->conn_ids[q], hash, expires, "bench public") != LINK_OK)
            goto done;
    }
    s_node_t *nodes[2] = {pub, priv};
    s_goal_t goal = {pub, args->conns};
    if (s_drive(nodes, 2, 30000, s_answers_reached, &goal) != 0)
        goto done;
    for (uint32_t q = 0; q < args->conns; q++)
        if (link_join(priv->link, priv->conn_ids[q], tokens[q], NULL, NULL, "bench private") !=
            LINK_OK)
            goto done;
    goal = (s_goal_t){priv, args->conns};
    rc = s_drive(nodes, 2, 30000, s_answers_reached, &goal);
done:
    free(tokens);
    if (rc != 0)
        fprintf(stderr, "%s: connection setup failed\n", s_prog);
    return rc;
}

//  -------------------------------------------------------------------------
//  The timed sides

//  Offers the next messages while their connection's window has room.
static void s_feed_burst(s_node_t *node, uint64_t *next, uint8_t *payload)
{
    const bench_args_t *args = node->args;
    while (*next < args->messages) {
        uint32_t q = bench_queue_of(args, *next);
        uint64_t seq = bench_seq_of(args, *next);
        if (link_room(node->link, node->conn_ids[q]) == 0)
            return;
        bench_payload_fill(payload, args->size, q, seq);
        int rc = link_publish(node->link, node->conn_ids[q], seq, payload, args->size, args->file);
        if (rc != LINK_OK) {
            fprintf(stderr, "%s: publish: %s\n", s_prog, link_status_str(rc));
            node->failed = true;
            return;
        }
        (*next)++;
    }
}

//  One burst, corked: the link sends it as batched PUBLISHes, as the node does.
static void s_feed(s_node_t *node, uint64_t *next, uint8_t *payload)
{
    link_cork(node->link);
    s_feed_burst(node, next, payload);
    link_uncork(node->link);
}

static int s_publish(void *arg)
{
    s_node_t *node = arg;
    const bench_args_t *args = node->args;
    uint8_t *payload = malloc(args->size);
    if (!payload)
        return -1;
    uint64_t next = 0;
    int64_t end = s_mono_ms() + (int64_t)args->timeout_s * 1000;
    int rc = 0;
    while (node->total < args->messages) {
        int64_t now = s_mono_ms();
        s_feed(node, &next, payload);
        link_tick(node->link, now);
        zmq_pollitem_t item;
        long wait = link_next_timeout_ms(node->link, now);
        if (link_pollitem(node->link, &item)) {
            zmq_poll(&item, 1, wait < 100 ? wait : 100);
            if (item.revents & ZMQ_POLLIN)
                link_handle(node->link, s_mono_ms());
        } else {
            zmq_poll(NULL, 0, wait < 100 ? wait : 100);
        }
        if (node->failed || now > end) {
            fprintf(stderr, "%s: publisher stopped at %llu of %llu stored\n", s_prog,
                    (unsigned long long)node->total, (unsigned long long)args->messages);
            rc = -1;
            break;
        }
    }
    free(payload);
    return rc;
}

static int s_consume(void *arg)
{
    s_node_t *node = arg;
    s_goal_t goal = {node, node->args->messages};
    s_node_t *nodes[1] = {node};
    return s_drive(nodes, 1, (int64_t)node->args->timeout_s * 1000, s_total_reached, &goal);
}

//  -------------------------------------------------------------------------

int main(int argc, char **argv)
{
    bench_args_t args;
    if (bench_args_parse(argc, argv, s_prog, &args) != 0)
        return 2;
    if (!args.dir) {
        fprintf(stderr, "%s: --dir is required\n", s_prog);
        return 2;
    }
    if (strcmp(args.mode, "keygen") == 0)
        return s_keygen(args.dir) == 0 ? 0 : 1;

    const char *mode = args.mode;
    bool use_public = strcmp(mode, "consume") != 0;
    bool use_private = strcmp(mode, "publish") != 0 && strcmp(mode, "probe") != 0;
    void *ctx = zmq_ctx_new();
    s_node_t pub, priv;
    memset(&pub, 0, sizeof pub);
    memset(&priv, 0, sizeof priv);
    int rc = 1;
    if ((use_public && s_node_init(&pub, &args, true, ctx) != 0) ||
        (use_private && s_node_init(&priv, &args, false, ctx) != 0))
        goto done;

    uint64_t elapsed = 0;
    if (strcmp(mode, "probe") == 0) {
        s_goal_t goal = {&pub, 0};
        s_node_t *nodes[1] = {&pub};
        if (s_drive(nodes, 1, (int64_t)args.timeout_s * 1000, s_welcomed, &goal) != 0)
            goto done;
        printf("welcome_unix_ns=%llu\n", (unsigned long long)pub.welcome_ns);
    } else if (strcmp(mode, "setup") == 0) {
        if (s_setup(&pub, &priv) != 0)
            goto done;
    } else if (strcmp(mode, "both") == 0) {
        if (s_setup(&pub, &priv) != 0 ||
            bench_run(s_consume, &priv, s_publish, &pub, &elapsed) != 0)
            goto done;
        bench_result_print("twinsync", &args, args.messages, elapsed, priv.lat);
    } else if (strcmp(mode, "publish") == 0) {
        if (bench_run(NULL, NULL, s_publish, &pub, &elapsed) != 0)
            goto done;
        bench_result_print("twinsync-publish", &args, args.messages, elapsed, NULL);
    } else if (strcmp(mode, "consume") == 0) {
        if (bench_run(s_consume, &priv, NULL, NULL, &elapsed) != 0)
            goto done;
        bench_result_print("twinsync-drain", &args, args.messages, elapsed, NULL);
    } else {
        fprintf(stderr, "%s: unknown mode %s\n", s_prog, mode);
        goto done;
    }
    rc = 0;
done:
    s_node_release(&pub);
    s_node_release(&priv);
    zmq_ctx_term(ctx);
    return rc;
}
