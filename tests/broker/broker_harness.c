/*  broker_harness.c: real broker process and test nodes for the broker's
    integration tests (see broker_harness.h).
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "broker_harness.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <openssl/sha.h>
#include <zmq.h>

#include "broker_stats.h"

static const char *s_binary; //  Set by th_main

int th_main(int argc, char **argv, const struct CMUnitTest *tests, size_t count)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s PATH-TO-twinsync-broker\n", argv[0]);
        return 2;
    }
    s_binary = argv[1];
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    return _cmocka_run_group_tests(argv[0], tests, count, NULL, NULL);
}

const char *th_binary(void)
{
    assert(s_binary);
    return s_binary;
}

#define IDLE_PING_MS 300

int64_t th_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

//  ---------------------------------------------------------------------
//  Broker process

static int s_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in addr = {.sin_family = AF_INET};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    socklen_t len = sizeof addr;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
    close(fd);
    return ntohs(addr.sin_port);
}

//  Runs the binary with argv, stdout into out (NUL-terminated), stderr to
//  the log. Returns the exit status.
static int s_run_capture(const th_broker_t *broker, char *const argv[], char *out, size_t size)
{
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(pipefd[1], 1);
        int log = open(broker->log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (log >= 0)
            dup2(log, 2);
        close(pipefd[0]);
        execv(broker->binary, argv);
        _exit(127);
    }
    close(pipefd[1]);
    size_t used = 0;
    ssize_t n;
    while (used + 1 < size && (n = read(pipefd[0], out + used, size - used - 1)) > 0)
        used += (size_t)n;
    out[used] = '\0';
    close(pipefd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

//  Brokers not yet cleaned up, by value (a failing test jumps out of its
//  stack frame before its own cleanup): the process kills them and removes
//  their directories at exit.
#define TH_MAX_BROKERS 32
typedef struct {
    const th_broker_t *owner; //  Identity only, never dereferenced at exit
    pid_t pid;                //  Running process, or 0
    char dir[128];            //  Directory to remove
} tracked_t;
static tracked_t s_tracked[TH_MAX_BROKERS];

static int s_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void s_remove_dir(const char *dir)
{
    if (*dir && !getenv("TH_KEEP"))
        nftw(dir, s_rm, 8, FTW_DEPTH | FTW_PHYS);
}

static void s_cleanup_at_exit(void)
{
    for (int i = 0; i < TH_MAX_BROKERS; i++) {
        tracked_t *t = &s_tracked[i];
        if (!t->owner)
            continue;
        if (t->pid > 0) {
            kill(t->pid, SIGKILL);
            waitpid(t->pid, NULL, 0);
        }
        s_remove_dir(t->dir);
        t->owner = NULL;
    }
}

//  The tracking slot of broker (made when create is set), or NULL.
static tracked_t *s_tracked_slot(const th_broker_t *broker, bool create)
{
    static bool registered;
    if (!registered) {
        atexit(s_cleanup_at_exit);
        registered = true;
    }
    for (int i = 0; i < TH_MAX_BROKERS; i++) {
        if (s_tracked[i].owner == broker)
            return &s_tracked[i];
    }
    for (int i = 0; create && i < TH_MAX_BROKERS; i++) {
        if (!s_tracked[i].owner) {
            s_tracked[i].owner = broker;
            return &s_tracked[i];
        }
    }
    return NULL;
}

//  Records broker's current pid and directory (or forgets it).
static void s_track(const th_broker_t *broker, bool keep)
{
    tracked_t *t = s_tracked_slot(broker, keep);
    if (!t)
        return;
    if (!keep) {
        t->owner = NULL;
        return;
    }
    t->pid = broker->pid;
    snprintf(t->dir, sizeof t->dir, "%s", broker->dir);
}

void th_broker_init(th_broker_t *broker, const char *binary)
{
    memset(broker, 0, sizeof *broker);
    broker->binary = binary;
    snprintf(broker->dir, sizeof broker->dir, "/tmp/twinsync-broker-test.XXXXXX");
    assert_non_null(mkdtemp(broker->dir));
    s_track(broker, true);
    snprintf(broker->state_dir, sizeof broker->state_dir, "%s/state", broker->dir);
    snprintf(broker->log_path, sizeof broker->log_path, "%s/broker.log", broker->dir);
    snprintf(broker->endpoint, sizeof broker->endpoint, "tcp://127.0.0.1:%d", s_free_port());
    broker->metrics_port = s_free_port();

    char *argv[] = {(char *)binary, "key", "--broker.state_dir", broker->state_dir, NULL};
    char out[128];
    assert_int_equal(s_run_capture(broker, argv, out, sizeof out), 0);
    out[strcspn(out, "\n")] = '\0';
    assert_int_equal(strlen(out), 40);
    snprintf(broker->server_key, sizeof broker->server_key, "%s", out);
}

void th_broker_arg(th_broker_t *broker, const char *name, const char *value)
{
    assert_true(broker->args_count + 2 <= TH_MAX_ARGS);
    broker->args[broker->args_count++] = name;
    broker->args[broker->args_count++] = value;
}

void th_broker_add_public_key(th_broker_t *broker, const char *key)
{
    size_t at = strlen(broker->public_keys);
    snprintf(broker->public_keys + at, sizeof broker->public_keys - at, "%s%s", at ? "," : "", key);
}

static bool s_healthy(const th_broker_t *broker)
{
    char url[128], err[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/healthz", broker->metrics_port);
    char *body = broker_stats_fetch(url, err, sizeof err);
    free(body);
    return body != NULL;
}

void th_broker_start(th_broker_t *broker)
{
    assert_int_equal(broker->pid, 0);
    char port[16];
    snprintf(port, sizeof port, "%d", broker->metrics_port);
    const char *argv[TH_MAX_ARGS + 16];
    int argc = 0;
    argv[argc++] = broker->binary;
    argv[argc++] = "run";
    argv[argc++] = "--broker.state_dir";
    argv[argc++] = broker->state_dir;
    argv[argc++] = "--broker.endpoint";
    argv[argc++] = broker->endpoint;
    argv[argc++] = "--broker.metrics_port";
    argv[argc++] = port;
    if (*broker->public_keys) {
        argv[argc++] = "--broker.public_keys";
        argv[argc++] = broker->public_keys;
    }
    for (int i = 0; i < broker->args_count; i++)
        argv[argc++] = broker->args[i];
    argv[argc] = NULL;

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        //  A failing (or killed) test must not leave brokers behind.
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int log = open(broker->log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (log >= 0)
            dup2(log, 2);
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0)
            dup2(null, 1);
        execv(broker->binary, (char *const *)argv);
        _exit(127);
    }
    broker->pid = pid;
    s_track(broker, true);
    int64_t deadline = th_now_ms() + 10000;
    while (!s_healthy(broker)) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            broker->pid = 0;
            s_track(broker, true);
            th_broker_dump_log(broker);
            fail_msg("broker exited at start (status %d)", status);
        }
        if (th_now_ms() > deadline) {
            th_broker_dump_log(broker);
            fail_msg("broker not healthy after 10 s");
        }
        usleep(5000);
    }
}

int th_broker_stop(th_broker_t *broker, int sig)
{
    assert_true(broker->pid > 0);
    kill(broker->pid, sig);
    int status = 0;
    assert_int_equal(waitpid(broker->pid, &status, 0), broker->pid);
    broker->pid = 0;
    s_track(broker, true);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void th_broker_cleanup(th_broker_t *broker)
{
    s_track(broker, false);
    if (broker->pid > 0) {
        kill(broker->pid, SIGKILL);
        waitpid(broker->pid, NULL, 0);
        broker->pid = 0;
    }
    s_remove_dir(broker->dir);
    broker->dir[0] = '\0';
}

void th_broker_dump_log(const th_broker_t *broker)
{
    FILE *log = fopen(broker->log_path, "r");
    if (!log)
        return;
    fprintf(stderr, "---- broker log %s ----\n", broker->log_path);
    char line[2048];
    while (fgets(line, sizeof line, log))
        fputs(line, stderr);
    fprintf(stderr, "---- end of broker log ----\n");
    fclose(log);
}

char *th_metrics_text(const th_broker_t *broker)
{
    char url[128], err[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", broker->metrics_port);
    char *text = broker_stats_fetch(url, err, sizeof err);
    if (!text)
        fail_msg("cannot fetch metrics: %s", err);
    return text;
}

double th_metric(const th_broker_t *broker, const char *name, const char *labels)
{
    char *text = th_metrics_text(broker);
    char prefix[512];
    if (labels && *labels)
        snprintf(prefix, sizeof prefix, "%s{%s} ", name, labels);
    else
        snprintf(prefix, sizeof prefix, "%s ", name);
    double value = -1;
    for (char *line = text; line && *line;) {
        char *next = strchr(line, '\n');
        if (strncmp(line, prefix, strlen(prefix)) == 0) {
            value = strtod(line + strlen(prefix), NULL);
            break;
        }
        line = next ? next + 1 : NULL;
    }
    free(text);
    return value;
}

//  ---------------------------------------------------------------------
//  Clients

static void s_open_socket(th_client_t *client)
{
    client->socket = zmq_socket(client->ctx, ZMQ_DEALER);
    assert_non_null(client->socket);
    int linger = 0;
    assert_int_equal(zmq_setsockopt(client->socket, ZMQ_LINGER, &linger, sizeof linger), 0);
    assert_int_equal(
        zmq_setsockopt(client->socket, ZMQ_CURVE_SERVERKEY, client->broker->server_key, 40), 0);
    assert_int_equal(zmq_setsockopt(client->socket, ZMQ_CURVE_PUBLICKEY, client->public_key, 40),
                     0);
    assert_int_equal(zmq_setsockopt(client->socket, ZMQ_CURVE_SECRETKEY, client->secret_key, 40),
                     0);
    assert_int_equal(zmq_connect(client->socket, client->broker->endpoint), 0);
    client->last_sent_ms = th_now_ms();
}

void th_client_init_keys(th_client_t *client, const th_broker_t *broker, const char *public_key,
                         const char *secret_key)
{
    memset(client, 0, sizeof *client);
    client->broker = broker;
    snprintf(client->public_key, sizeof client->public_key, "%s", public_key);
    snprintf(client->secret_key, sizeof client->secret_key, "%s", secret_key);
    client->ctx = zmq_ctx_new();
    assert_non_null(client->ctx);
    s_open_socket(client);
}

void th_client_init(th_client_t *client, const th_broker_t *broker)
{
    char pub[41], sec[41];
    assert_int_equal(zmq_curve_keypair(pub, sec), 0);
    th_client_init_keys(client, broker, pub, sec);
}

void th_client_reconnect(th_client_t *client)
{
    zmq_close(client->socket);
    s_open_socket(client);
}

void th_client_close(th_client_t *client)
{
    if (client->socket)
        zmq_close(client->socket);
    if (client->ctx)
        zmq_ctx_term(client->ctx);
    client->socket = NULL;
    client->ctx = NULL;
}

void th_send_raw(th_client_t *client, const void *data, size_t size)
{
    int rc = zmq_send(client->socket, data, size, 0);
    if (rc < 0)
        fail_msg("send: %s", zmq_strerror(zmq_errno()));
    client->last_sent_ms = th_now_ms();
}

void th_send(th_client_t *client, const proto_msg_t *msg)
{
    proto_buf_t buf;
    proto_buf_init(&buf);
    proto_error_t err;
    if (proto_msg_encode(msg, NULL, &buf, &err) != PROTO_OK)
        fail_msg("encode %s: %s", proto_type_name(msg->type), proto_error_str(&err));
    th_send_raw(client, buf.data, buf.size);
    proto_buf_release(&buf);
}

static void s_ping(th_client_t *client, proto_type_t type)
{
    proto_msg_t msg;
    proto_msg_init(&msg, type);
    th_send(client, &msg);
}

//  Receives the next message; PINGs are answered, PONGs returned only when
//  want_pong is set.
static bool s_recv(th_client_t *client, proto_msg_t *msg, int timeout_ms, bool want_pong)
{
    int64_t deadline = th_now_ms() + timeout_ms;
    while (true) {
        int64_t now = th_now_ms();
        if (now - client->last_sent_ms >= IDLE_PING_MS)
            s_ping(client, PROTO_PING);
        int64_t left = deadline - now;
        if (left < 0)
            return false;
        zmq_pollitem_t item = {client->socket, 0, ZMQ_POLLIN, 0};
        int wait = left < IDLE_PING_MS ? (int)left : IDLE_PING_MS;
        if (zmq_poll(&item, 1, wait) <= 0)
            continue;
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        assert_true(zmq_msg_recv(&frame, client->socket, 0) >= 0);
        proto_error_t err;
        proto_status_t rc =
            proto_msg_decode(zmq_msg_data(&frame), zmq_msg_size(&frame), NULL, msg, &err);
        zmq_msg_close(&frame);
        if (rc != PROTO_OK)
            fail_msg("broker sent an undecodable frame: %s", proto_error_str(&err));
        if (msg->type == PROTO_PING) {
            proto_msg_clear(msg);
            s_ping(client, PROTO_PONG);
            client->pings_answered++;
            continue;
        }
        if (msg->type == PROTO_PONG && !want_pong) {
            proto_msg_clear(msg);
            continue;
        }
        return true;
    }
}

bool th_recv(th_client_t *client, proto_msg_t *msg, int timeout_ms)
{
    return s_recv(client, msg, timeout_ms, false);
}

void th_sync(th_client_t *client)
{
    s_ping(client, PROTO_PING);
    proto_msg_t msg;
    while (s_recv(client, &msg, 5000, true)) {
        proto_type_t type = msg.type;
        if (type == PROTO_ERROR)
            fail_msg("ERROR %u before PONG: %s", msg.error.code, msg.error.text);
        proto_msg_clear(&msg);
        if (type == PROTO_PONG)
            return;
    }
    fail_msg("no PONG within 5 s");
}

size_t th_expect_stored(th_client_t *client, const char *conn, uint64_t upto)
{
    s_ping(client, PROTO_PING);
    proto_msg_t msg;
    size_t count = 0;
    uint64_t highest = 0;
    while (s_recv(client, &msg, 5000, true)) {
        proto_type_t type = msg.type;
        if (type == PROTO_PONG) {
            proto_msg_clear(&msg);
            if (highest != upto)
                fail_msg("STORED reached seq %llu, expected %llu", (unsigned long long)highest,
                         (unsigned long long)upto);
            return count;
        }
        if (type != PROTO_STORED)
            fail_msg("expected STORED, got %s", proto_type_name(type));
        if (strcmp(msg.stored.conn, conn) != 0 || msg.stored.seq > upto || msg.stored.seq == 0)
            fail_msg("unexpected STORED %s %llu (expected %s up to %llu)", msg.stored.conn,
                     (unsigned long long)msg.stored.seq, conn, (unsigned long long)upto);
        highest = msg.stored.seq > highest ? msg.stored.seq : highest;
        count++;
        proto_msg_clear(&msg);
    }
    fail_msg("no PONG within 5 s");
    return 0;
}

void th_expect(th_client_t *client, proto_type_t type, proto_msg_t *msg, int timeout_ms)
{
    if (!th_recv(client, msg, timeout_ms))
        fail_msg("expected %s, got nothing in %d ms", proto_type_name(type), timeout_ms);
    if (msg->type != type) {
        if (msg->type == PROTO_ERROR)
            fail_msg("expected %s, got ERROR %u: %s", proto_type_name(type), msg->error.code,
                     msg->error.text);
        fail_msg("expected %s, got %s", proto_type_name(type), proto_type_name(msg->type));
    }
}

void th_expect_error(th_client_t *client, uint16_t code, proto_msg_t *msg)
{
    proto_msg_t local;
    proto_msg_t *out = msg ? msg : &local;
    th_expect(client, PROTO_ERROR, out, 5000);
    if (out->error.code != code)
        fail_msg("expected ERROR %u, got %u: %s", code, out->error.code, out->error.text);
    if (!msg)
        proto_msg_clear(&local);
}

void th_expect_silence(th_client_t *client, int timeout_ms)
{
    proto_msg_t msg;
    if (th_recv(client, &msg, timeout_ms)) {
        if (msg.type == PROTO_DELIVER)
            fail_msg("expected silence, got DELIVER %s seq %llu", msg.deliver.conn,
                     (unsigned long long)msg.deliver.seq);
        fail_msg("expected silence, got %s", proto_type_name(msg.type));
    }
}

static void s_send_hello(th_client_t *client, const char *node, proto_role_t role,
                         const proto_conn_state_t *state)
{
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_HELLO);
    msg.hello.node = node;
    msg.hello.role = role;
    msg.hello.conns = state;
    msg.hello.conns_count = state ? 1 : 0;
    th_send(client, &msg);
}

void th_hello_reply(th_client_t *client, const char *node, proto_role_t role, proto_msg_t *reply)
{
    s_send_hello(client, node, role, NULL);
    if (!th_recv(client, reply, 5000))
        fail_msg("no answer to HELLO");
}

void th_hello(th_client_t *client, const char *node, proto_role_t role, const char *conn,
              uint64_t stored, uint64_t consumed)
{
    proto_conn_state_t state = {conn, stored, consumed, 0};
    s_send_hello(client, node, role, conn ? &state : NULL);
    proto_msg_t reply;
    th_expect(client, PROTO_WELCOME, &reply, 5000);
    assert_true(reply.welcome.heartbeat_ms > 0);
    assert_true(reply.welcome.credit > 0);
    proto_msg_clear(&reply);
    if (!conn)
        return;
    th_expect(client, PROTO_JOINED, &reply, 5000); //  the listed connection is joined
    assert_string_equal(reply.joined.conn, conn);
    proto_msg_clear(&reply);
}

void th_invite(th_client_t *client, const char *conn, const uint8_t token[32], uint64_t expires)
{
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_INVITE);
    msg.invite.conn = conn;
    SHA256(token, 32, msg.invite.token_hash);
    msg.invite.expires = expires;
    msg.invite.description = "public test node";
    th_send(client, &msg);
    proto_msg_t reply;
    th_expect(client, PROTO_INVITED, &reply, 5000);
    assert_string_equal(reply.invited.conn, conn);
    assert_int_equal(reply.invited.expires, expires);
    proto_msg_clear(&reply);
}

void th_join(th_client_t *client, const char *conn, const uint8_t token[32], proto_msg_t *reply)
{
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_JOIN);
    msg.join.conn = conn;
    memcpy(msg.join.token, token, 32);
    msg.join.description = "private test node";
    th_send(client, &msg);
    if (!th_recv(client, reply, 5000))
        fail_msg("no answer to JOIN");
}

void th_publish(th_client_t *client, const char *conn, uint64_t seq, const void *payload,
                size_t size)
{
    th_publish_kind(client, conn, seq, payload, size, false);
}

void th_publish_kind(th_client_t *client, const char *conn, uint64_t seq, const void *payload,
                     size_t size, bool file)
{
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_PUBLISH);
    msg.publish.conn = conn;
    msg.publish.seq = seq;
    msg.publish.payload = payload;
    msg.publish.payload_size = size;
    msg.publish.file = file ? PROTO_DATA_FILE : PROTO_DATA_RECORD;
    th_send(client, &msg);
}

void th_consumed(th_client_t *client, const char *conn, uint64_t seq)
{
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_CONSUMED);
    msg.consumed.conn = conn;
    msg.consumed.seq = seq;
    th_send(client, &msg);
}

//  ---------------------------------------------------------------------
//  Pairs

void th_pair_prepare(th_pair_t *pair, th_broker_t *broker, const char *conn)
{
    memset(pair, 0, sizeof *pair);
    snprintf(pair->conn, sizeof pair->conn, "%s", conn);
    assert_int_equal(zmq_curve_keypair(pair->pub.public_key, pair->pub.secret_key), 0);
    th_broker_add_public_key(broker, pair->pub.public_key);
}

void th_pair_connect_public(th_pair_t *pair, const th_broker_t *broker)
{
    char pub[41], sec[41];
    memcpy(pub, pair->pub.public_key, sizeof pub);
    memcpy(sec, pair->pub.secret_key, sizeof sec);
    th_client_init_keys(&pair->pub, broker, pub, sec);
    th_hello(&pair->pub, "node-public", PROTO_ROLE_PUBLIC, NULL, 0, 0);
}

void th_pair_connect(th_pair_t *pair, const th_broker_t *broker)
{
    th_pair_connect_public(pair, broker);
    uint8_t token[32];
    for (int i = 0; i < 32; i++)
        token[i] = (uint8_t)rand();
    th_invite(&pair->pub, pair->conn, token, (uint64_t)time(NULL) + 3600);

    th_client_init(&pair->priv, broker);
    th_hello(&pair->priv, "node-private", PROTO_ROLE_PRIVATE, NULL, 0, 0);
    proto_msg_t reply;
    th_join(&pair->priv, pair->conn, token, &reply);
    if (reply.type != PROTO_JOINED)
        fail_msg("JOIN refused: %s", reply.type == PROTO_ERROR ? reply.error.text : "?");
    assert_string_equal(reply.joined.conn, pair->conn);
    assert_string_equal(reply.joined.description, "public test node");
    proto_msg_clear(&reply);
    th_expect(&pair->pub, PROTO_JOINED, &reply, 5000);
    assert_string_equal(reply.joined.description, "private test node");
    proto_msg_clear(&reply);
}

void th_pair_close(th_pair_t *pair)
{
    th_client_close(&pair->pub);
    th_client_close(&pair->priv);
}
