/*  broker_server.c: sockets and the main loop of twinsync-broker (see
    broker_server.h). Everything about the protocol is in broker_core.c;
    this file moves frames between ZeroMQ and the core, each with the CURVE
    key and network address ZeroMQ tells for it.
*/
#include "broker_server.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "broker_core.h"
#include "broker_http.h"
#include "broker_keys.h"
#include "broker_monitor.h"
#include "broker_store.h"
#include "broker_zap.h"
#include "ts_log.h"

#define ZAP_DOMAIN "twinsync"
#define PEER_HWM   10000 //  Frames queued per peer in each direction
#define LINGER_MS  2000  //  Time to get replies out at shutdown

struct broker_server_t {
    const broker_config_t *config; //  Borrowed
    void *ctx;                     //  ZeroMQ context
    void *router;                  //  The ROUTER socket
    broker_zap_t *zap;             //  ZAP handler
    broker_monitor_t *monitor;     //  Failed handshakes of the ROUTER
    broker_store_t *store;         //  Durable store
    broker_core_t *core;           //  Protocol engine
    broker_http_t *http;           //  Metrics endpoint, or NULL
    proto_buf_t metrics;           //  Metrics text buffer
    char endpoint[512];            //  Endpoint bound (for unbind)
    char public_key[41];           //  Our CURVE public key (Z85)
    bool keys_created;             //  The key pair was made by this start
    rlim_t fd_limit;               //  Open files allowed (raised to the hard limit at start)
};

//  Self-pipe: the signal handler writes a byte, the loop polls the read end.
static int s_signal_pipe[2] = {-1, -1};

static void s_on_signal(int signo)
{
    (void)signo;
    int saved = errno;
    char byte = 1;
    if (write(s_signal_pipe[1], &byte, 1) < 0) {
        //  Pipe full: a stop is already pending.
    }
    errno = saved;
}

static int s_install_signals(char *err, size_t errlen)
{
    if (s_signal_pipe[0] < 0 && pipe2(s_signal_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return -1;
    }
    struct sigaction action = {.sa_handler = s_on_signal};
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

//  True when no message waits on the ROUTER socket (the core then syncs a
//  commit on this thread).
static bool s_idle(void *arg)
{
    broker_server_t *self = arg;
    int events = 0;
    size_t size = sizeof events;
    return zmq_getsockopt(self->router, ZMQ_EVENTS, &events, &size) == 0 && !(events & ZMQ_POLLIN);
}

//  The core's output: routing id frame, then the message frame.
static int s_send(void *arg, const uint8_t *rid, size_t rid_size, const uint8_t *data, size_t size)
{
    broker_server_t *self = arg;
    if (zmq_send(self->router, rid, rid_size, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1;
    if (zmq_send(self->router, data, size, ZMQ_DONTWAIT) < 0)
        return -1;
    return 0;
}

static int s_setopt_int(void *socket, int option, int value)
{
    return zmq_setsockopt(socket, option, &value, sizeof value);
}

//  Makes the ROUTER socket: CURVE server with our secret key, ZAP domain,
//  mandatory routing, frame limit; binds it. No ZMQ_ROUTER_HANDOVER: with it
//  a newcomer naming an existing routing id took that pipe over, and anyone
//  holding the broker's public key and a node's name could cut the node
//  off. ZeroMQ gives each pipe its own routing id instead, and the core
//  binds sessions to CURVE keys (broker_core.h).
static int s_bind_router(broker_server_t *self, const broker_keys_t *keys, char *err, size_t errlen)
{
    const broker_config_t *config = self->config;
    self->router = zmq_socket(self->ctx, ZMQ_ROUTER);
    if (!self->router) {
        snprintf(err, errlen, "cannot make the ROUTER socket: %s", zmq_strerror(zmq_errno()));
        return -1;
    }
    int64_t max_frame = config->max_frame;
    bool ok = s_setopt_int(self->router, ZMQ_CURVE_SERVER, 1) == 0 &&
              zmq_setsockopt(self->router, ZMQ_CURVE_SECRETKEY, keys->secret_z85, 40) == 0 &&
              zmq_setsockopt(self->router, ZMQ_ZAP_DOMAIN, ZAP_DOMAIN, strlen(ZAP_DOMAIN)) == 0 &&
              s_setopt_int(self->router, ZMQ_ROUTER_MANDATORY, 1) == 0 &&
              zmq_setsockopt(self->router, ZMQ_MAXMSGSIZE, &max_frame, sizeof max_frame) == 0 &&
              s_setopt_int(self->router, ZMQ_SNDHWM, PEER_HWM) == 0 &&
              s_setopt_int(self->router, ZMQ_RCVHWM, PEER_HWM) == 0 &&
              s_setopt_int(self->router, ZMQ_LINGER, LINGER_MS) == 0;
    if (!ok) {
        snprintf(err, errlen, "cannot set ROUTER options: %s (is libzmq built with CURVE?)",
                 zmq_strerror(zmq_errno()));
        return -1;
    }
    if (zmq_bind(self->router, config->endpoint) != 0) {
        snprintf(err, errlen, "endpoint: cannot bind %s: %s", config->endpoint,
                 zmq_strerror(zmq_errno()));
        return -1;
    }
    size_t size = sizeof self->endpoint;
    if (zmq_getsockopt(self->router, ZMQ_LAST_ENDPOINT, self->endpoint, &size) != 0)
        snprintf(self->endpoint, sizeof self->endpoint, "%s", config->endpoint);
    return 0;
}

//  Raises the soft limit of open files to the hard limit: every peer's
//  connection is a descriptor, and a flood of connections must not leave
//  none for the nodes (nor for the store). Returns the soft limit in force.
static rlim_t s_raise_fd_limit(void)
{
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0)
        return 0;
    if (limit.rlim_cur < limit.rlim_max) {
        rlim_t before = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &limit) != 0)
            return before;
    }
    return limit.rlim_cur;
}

//  Puts "KEY: " before the reason in err: a start-up failure names the
//  configuration key the operator has to look at. Returns -1.
static int s_blame_key(const char *key, char *err, size_t errlen)
{
    char reason[1024];
    snprintf(reason, sizeof reason, "%s", err);
    snprintf(err, errlen, "%s: %s", key, reason);
    return -1;
}

//  Makes the state directory, loads or makes the key pair, opens the store
//  and the core. A failure names state_dir in err.
static int s_open_state(broker_server_t *self, broker_keys_t *keys, char *err, size_t errlen)
{
    const broker_config_t *config = self->config;
    memset(keys, 0, sizeof *keys);
    if (mkdir(config->state_dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create state directory %s: %s", config->state_dir,
                 strerror(errno));
        return s_blame_key("state_dir", err, errlen);
    }
    if (broker_keys_load(keys, config->state_dir, true, &self->keys_created, err, errlen) != 0)
        return s_blame_key("state_dir", err, errlen);
    snprintf(self->public_key, sizeof self->public_key, "%s", keys->public_z85);
    broker_store_options_t options = {.cache_kib = config->cache_kib};
    self->store = broker_store_open(config->state_dir, &options, err, errlen);
    if (!self->store)
        return s_blame_key("state_dir", err, errlen);
    self->core = broker_core_new(self->store, config, s_send, self, err, errlen);
    if (self->core)
        broker_core_set_idle(self->core, s_idle, self);
    return self->core ? 0 : -1;
}

broker_server_t *broker_server_new(const broker_config_t *config, char *err, size_t errlen)
{
    broker_server_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->config = config;
    self->fd_limit = s_raise_fd_limit();
    proto_buf_init(&self->metrics);
    broker_keys_t keys;
    int rc = s_install_signals(err, errlen);
    if (rc == 0)
        rc = s_open_state(self, &keys, err, errlen);
    if (rc == 0) {
        self->ctx = zmq_ctx_new();
        self->zap = self->ctx ? broker_zap_new(self->ctx) : NULL;
        if (!self->zap) {
            snprintf(err, errlen, "cannot start the ZAP handler: %s", zmq_strerror(zmq_errno()));
            rc = -1;
        }
    }
    if (rc == 0)
        rc = s_bind_router(self, &keys, err, errlen);
    if (rc == 0) {
        self->monitor = broker_monitor_new(self->ctx, self->router);
        if (!self->monitor) {
            snprintf(err, errlen, "cannot monitor the ROUTER socket: %s",
                     zmq_strerror(zmq_errno()));
            rc = -1;
        }
    }
    broker_keys_wipe(&keys);
    if (rc == 0 && config->metrics_port > 0) {
        self->http = broker_http_new((int)config->metrics_port, err, errlen);
        rc = self->http ? 0 : s_blame_key("metrics_port", err, errlen);
    }
    if (rc != 0) {
        broker_server_destroy(&self);
        return NULL;
    }
    //  Logged only once the start succeeded: a failed start prints one line.
    if (self->keys_created)
        ts_log(TS_LOG_INFO, "key pair created", "public_key=%s dir=%s", self->public_key,
               config->state_dir);
    return self;
}

void broker_server_destroy(broker_server_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    broker_server_t *self = *self_p;
    broker_http_destroy(&self->http);
    broker_monitor_destroy(&self->monitor);
    if (self->router)
        zmq_close(self->router);
    broker_zap_destroy(&self->zap);
    if (self->ctx)
        zmq_ctx_term(self->ctx);
    broker_core_destroy(&self->core);
    broker_store_destroy(&self->store);
    proto_buf_release(&self->metrics);
    free(self);
    *self_p = NULL;
}

//  Reads one message: routing id and one data frame. Returns 1 when a
//  message was handed to the core, 0 when none was pending, -1 on a fatal
//  core failure.
static int s_read_one(broker_server_t *self, int64_t now_ms)
{
    zmq_msg_t rid, data;
    zmq_msg_init(&rid);
    if (zmq_msg_recv(&rid, self->router, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&rid);
        return 0;
    }
    int result = 1;
    zmq_msg_init(&data);
    if (!zmq_msg_more(&rid) || zmq_msg_recv(&data, self->router, 0) < 0) {
        broker_core_reject(self->core, BROKER_REJECT_BAD_FRAME, "message without a body");
    } else if (zmq_msg_more(&data)) {
        //  Drain the extra frames: the protocol has exactly one.
        zmq_msg_t extra;
        zmq_msg_init(&extra);
        while (zmq_msg_more(&data) && zmq_msg_recv(&extra, self->router, 0) >= 0)
            zmq_msg_move(&data, &extra);
        zmq_msg_close(&extra);
        broker_core_reject(self->core, BROKER_REJECT_MULTIPART, "message of several frames");
    } else {
        broker_sender_t from = {
            .rid = zmq_msg_data(&rid),
            .rid_size = zmq_msg_size(&rid),
            .key = zmq_msg_gets(&data, "User-Id"),          //  ZAP answers the client key
            .address = zmq_msg_gets(&data, "Peer-Address"), //  NULL on transports without one
        };
        if (broker_core_handle(self->core, &from, zmq_msg_data(&data), zmq_msg_size(&data),
                               now_ms) != 0)
            result = -1;
    }
    zmq_msg_close(&data);
    zmq_msg_close(&rid);
    return result;
}

//  Reads up to batch messages, then pumps: their commit starts (or waits
//  for the one in flight to end). Returns 0 or -1.
static int s_read_batch(broker_server_t *self)
{
    int64_t now_ms = ts_now_ms();
    for (long i = 0; i < self->config->batch; i++) {
        int rc = s_read_one(self, now_ms);
        if (rc < 0)
            return -1;
        if (rc == 0)
            break;
    }
    return broker_core_pump(self->core, now_ms);
}

static void s_publish_metrics(broker_server_t *self)
{
    broker_core_write_metrics(self->core, &self->metrics, ts_now_ms());
    broker_http_publish(self->http, self->metrics.data, self->metrics.size);
}

static void s_fatal_log(broker_server_t *self)
{
    char quoted[700];
    ts_log(TS_LOG_ERROR, "store failure, stopping",
           "error=%s hint=\"restart recovers from the store; check the disk\"",
           ts_log_quote(quoted, sizeof quoted, broker_core_error(self->core)));
}

//  Stops accepting peers, flushes what was read, lets replies drain.
static void s_shutdown(broker_server_t *self)
{
    zmq_unbind(self->router, self->endpoint);
    broker_core_flush(self->core, ts_now_ms());
    broker_core_commit(self->core);
    ts_log(TS_LOG_INFO, "broker stopping", "reason=signal peers=%zu",
           broker_core_peer_count(self->core));
}

int broker_server_run(broker_server_t *self)
{
    const broker_config_t *config = self->config;
    ts_log(TS_LOG_INFO, "broker started",
           "endpoint=%s public_key=%s state_dir=%s metrics_port=%ld fd_limit=%llu pid=%d",
           self->endpoint, self->public_key, config->state_dir, config->metrics_port,
           (unsigned long long)self->fd_limit, (int)getpid());
    int64_t tick_every = config->heartbeat_ms / 2 > 0 ? config->heartbeat_ms / 2 : 1;
    int64_t next_tick = ts_mono_ms() + tick_every;
    while (true) {
        zmq_pollitem_t items[6] = {
            {self->router, 0, ZMQ_POLLIN, 0},
            {broker_zap_socket(self->zap), 0, ZMQ_POLLIN, 0},
            {NULL, s_signal_pipe[0], ZMQ_POLLIN, 0},
            {broker_monitor_socket(self->monitor), 0, ZMQ_POLLIN, 0},
            {NULL, broker_store_sync_fd(self->store), ZMQ_POLLIN, 0},
            {NULL, self->http ? broker_http_wake_fd(self->http) : -1, ZMQ_POLLIN, 0},
        };
        int count = self->http ? 6 : 5;
        int64_t wait = next_tick - ts_mono_ms();
        if (zmq_poll(items, count, wait > 0 ? (long)wait : 0) < 0 && zmq_errno() != EINTR) {
            ts_log(TS_LOG_ERROR, "poll failed", "error=\"%s\"", zmq_strerror(zmq_errno()));
            return 1;
        }
        if (items[1].revents & ZMQ_POLLIN)
            broker_zap_handle(self->zap);
        if (items[3].revents & ZMQ_POLLIN)
            broker_monitor_handle(self->monitor, broker_core_metrics(self->core));
        //  The sync in flight is over: its replies go out, the next commit starts.
        if (items[4].revents & ZMQ_POLLIN && broker_core_pump(self->core, ts_now_ms()) != 0) {
            s_fatal_log(self);
            return 1;
        }
        if (items[0].revents & ZMQ_POLLIN && s_read_batch(self) != 0) {
            s_fatal_log(self);
            return 1;
        }
        if (items[2].revents & ZMQ_POLLIN) {
            s_shutdown(self);
            return 0;
        }
        int64_t now = ts_mono_ms();
        if (now >= next_tick) {
            next_tick = now + tick_every;
            if (broker_core_tick(self->core, ts_now_ms()) != 0) {
                s_fatal_log(self);
                return 1;
            }
        }
        if (self->http) {
            broker_http_alive(self->http, now);
            if (broker_http_wanted(self->http))
                s_publish_metrics(self);
        }
    }
}
