/*  broker_http.c: the metrics endpoint (see broker_http.h). */
#include "broker_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "ts_log.h"

#define HEALTHY_WITHIN_MS 5000
#define SNAPSHOT_WAIT_MS  1000

struct broker_http_t {
    struct MHD_Daemon *daemon; //  libmicrohttpd server
    int wake_fd;               //  eventfd the main loop polls
    pthread_mutex_t lock;      //  Guards everything below
    pthread_cond_t fresh;      //  Signalled on every publish
    char *snapshot;            //  Latest metrics text (owned)
    size_t snapshot_size;      //  Bytes in snapshot
    uint64_t generation;       //  Publishes so far
    bool wanted;               //  A request waits for a snapshot
    int64_t alive_ms;          //  Main loop's last sign of life
};

static int64_t s_mono_ms(void)
{
    return ts_mono_ms();
}

static enum MHD_Result s_respond(struct MHD_Connection *connection, unsigned status,
                                 const char *type, const void *body, size_t size)
{
    struct MHD_Response *response =
        MHD_create_response_from_buffer(size, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!response)
        return MHD_NO;
    MHD_add_response_header(response, "Content-Type", type);
    enum MHD_Result result = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return result;
}

//  Asks the main loop for a snapshot and waits for it (bounded); then
//  answers with whatever snapshot is newest.
static enum MHD_Result s_metrics(broker_http_t *self, struct MHD_Connection *connection)
{
    pthread_mutex_lock(&self->lock);
    uint64_t generation = self->generation;
    if (!self->wanted) {
        self->wanted = true;
        uint64_t one = 1;
        if (write(self->wake_fd, &one, sizeof one) < 0) {
            //  The counter is saturated: the main loop has a wake-up pending anyway.
        }
    }
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_nsec += (long)SNAPSHOT_WAIT_MS * 1000000L;
    deadline.tv_sec += deadline.tv_nsec / 1000000000L;
    deadline.tv_nsec %= 1000000000L;
    while (self->generation == generation) {
        if (pthread_cond_timedwait(&self->fresh, &self->lock, &deadline) == ETIMEDOUT)
            break;
    }
    enum MHD_Result result;
    if (self->snapshot)
        result = s_respond(connection, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
                           self->snapshot, self->snapshot_size);
    else
        result = s_respond(connection, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain", "starting\n", 9);
    pthread_mutex_unlock(&self->lock);
    return result;
}

static enum MHD_Result s_healthz(broker_http_t *self, struct MHD_Connection *connection)
{
    pthread_mutex_lock(&self->lock);
    bool healthy = s_mono_ms() - self->alive_ms < HEALTHY_WITHIN_MS;
    pthread_mutex_unlock(&self->lock);
    if (healthy)
        return s_respond(connection, MHD_HTTP_OK, "text/plain", "ok\n", 3);
    return s_respond(connection, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain", "main loop stalled\n",
                     18);
}

static enum MHD_Result s_handler(void *cls, struct MHD_Connection *connection, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    (void)version, (void)upload_data, (void)con_cls;
    broker_http_t *self = cls;
    if (*upload_data_size)
        return MHD_NO; //  No request here has a body
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return s_respond(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", "GET only\n", 9);
    if (strcmp(url, "/metrics") == 0)
        return s_metrics(self, connection);
    if (strcmp(url, "/healthz") == 0)
        return s_healthz(self, connection);
    return s_respond(connection, MHD_HTTP_NOT_FOUND, "text/plain",
                     "not found: try /metrics or /healthz\n", 36);
}

broker_http_t *broker_http_new(int port, char *err, size_t errlen)
{
    broker_http_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&self->lock, NULL);
    pthread_cond_init(&self->fresh, NULL);
    self->alive_ms = s_mono_ms();
    self->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (self->wake_fd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        broker_http_destroy(&self);
        return NULL;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    self->daemon =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, (uint16_t)port, NULL, NULL,
                         s_handler, self, MHD_OPTION_SOCK_ADDR, &addr, MHD_OPTION_CONNECTION_LIMIT,
                         16U, MHD_OPTION_CONNECTION_TIMEOUT, 10U, MHD_OPTION_END);
    if (!self->daemon) {
        snprintf(err, errlen, "cannot listen on 127.0.0.1:%d for metrics (port in use?)", port);
        broker_http_destroy(&self);
        return NULL;
    }
    return self;
}

void broker_http_destroy(broker_http_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    broker_http_t *self = *self_p;
    if (self->daemon)
        MHD_stop_daemon(self->daemon);
    if (self->wake_fd >= 0)
        close(self->wake_fd);
    pthread_cond_destroy(&self->fresh);
    pthread_mutex_destroy(&self->lock);
    free(self->snapshot);
    free(self);
    *self_p = NULL;
}

int broker_http_wake_fd(const broker_http_t *self)
{
    return self->wake_fd;
}

bool broker_http_wanted(broker_http_t *self)
{
    uint64_t count;
    while (read(self->wake_fd, &count, sizeof count) > 0)
        ;
    pthread_mutex_lock(&self->lock);
    bool wanted = self->wanted;
    self->wanted = false;
    pthread_mutex_unlock(&self->lock);
    return wanted;
}

void broker_http_publish(broker_http_t *self, const void *text, size_t size)
{
    char *copy = malloc(size ? size : 1);
    if (!copy)
        return;
    memcpy(copy, text, size);
    pthread_mutex_lock(&self->lock);
    free(self->snapshot);
    self->snapshot = copy;
    self->snapshot_size = size;
    self->generation++;
    pthread_cond_broadcast(&self->fresh);
    pthread_mutex_unlock(&self->lock);
}

void broker_http_alive(broker_http_t *self, int64_t now_ms)
{
    pthread_mutex_lock(&self->lock);
    self->alive_ms = now_ms;
    pthread_mutex_unlock(&self->lock);
}
