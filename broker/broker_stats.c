/*  broker_stats.c: fetch /metrics and print it as tables (see
    broker_stats.h). The parser reads exactly what broker_core.c writes:
    "name{label="value",...} number" lines; comments are skipped.
*/
#include "broker_stats.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_BODY (64 * 1024 * 1024)

typedef struct {
    char name[96];       //  Metric name
    char connection[72]; //  Label "connection", or ""
    char direction[24];  //  Label "direction", or ""
    char role[16];       //  Label "role", or ""
    char reason[32];     //  Label "reason", or ""
    char le[24];         //  Label "le", or ""
    char state[16];      //  Label "state", or ""
    double value;        //  Sample value
} sample_t;

typedef struct {
    sample_t *items; //  Samples
    size_t count;    //  In use
    size_t cap;      //  Allocated
} samples_t;

//  ---------------------------------------------------------------------
//  HTTP

//  Splits "http://host:port/path". Returns 0 or -1.
static int s_parse_url(const char *url, char *host, size_t hostlen, char *port, size_t portlen,
                       char *path, size_t pathlen)
{
    if (strncmp(url, "http://", 7) != 0)
        return -1;
    const char *at = url + 7;
    const char *slash = strchr(at, '/');
    const char *colon = strchr(at, ':');
    size_t hostpart = slash ? (size_t)(slash - at) : strlen(at);
    if (colon && (!slash || colon < slash)) {
        snprintf(host, hostlen, "%.*s", (int)(colon - at), at);
        snprintf(port, portlen, "%.*s", (int)(at + hostpart - colon - 1), colon + 1);
    } else {
        snprintf(host, hostlen, "%.*s", (int)hostpart, at);
        snprintf(port, portlen, "80");
    }
    snprintf(path, pathlen, "%s", slash ? slash : "/");
    return *host ? 0 : -1;
}

static int s_connect(const char *host, const char *port, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *list = NULL;
    int rc = getaddrinfo(host, port, &hints, &list);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *ai = list; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
            continue;
        struct timeval tv = {.tv_sec = 5};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(list);
    if (fd < 0)
        snprintf(err, errlen,
                 "cannot connect to %s:%s: %s (is the broker running with "
                 "metrics_port %s?)",
                 host, port, strerror(errno), port);
    return fd;
}

//  Reads the whole response (the server closes after it). Returns the
//  NUL-terminated bytes, or NULL.
static char *s_read_all(int fd, size_t *size, char *err, size_t errlen)
{
    size_t cap = 65536, used = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (used + 1 >= cap) {
            char *grown = cap < MAX_BODY ? realloc(buf, cap * 2) : NULL;
            if (!grown) {
                free(buf);
                snprintf(err, errlen, "response too large");
                return NULL;
            }
            buf = grown;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + used, cap - used - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, errlen, "cannot read the response: %s", strerror(errno));
            free(buf);
            return NULL;
        }
        if (n == 0)
            break;
        used += (size_t)n;
    }
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    buf[used] = '\0';
    *size = used;
    return buf;
}

char *broker_stats_fetch(const char *url, char *err, size_t errlen)
{
    char host[256], port[16], path[512];
    if (s_parse_url(url, host, sizeof host, port, sizeof port, path, sizeof path) != 0) {
        snprintf(err, errlen, "cannot use URL '%s' (expected http://HOST:PORT/metrics)", url);
        return NULL;
    }
    int fd = s_connect(host, port, err, errlen);
    if (fd < 0)
        return NULL;
    char request[1024];
    int n = snprintf(request, sizeof request,
                     "GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host);
    if (write(fd, request, (size_t)n) != n) {
        snprintf(err, errlen, "cannot send the request: %s", strerror(errno));
        close(fd);
        return NULL;
    }
    size_t size = 0;
    char *response = s_read_all(fd, &size, err, errlen);
    close(fd);
    if (!response)
        return NULL;
    int status = 0;
    char *body = strstr(response, "\r\n\r\n");
    if (sscanf(response, "HTTP/%*s %d", &status) != 1 || status != 200 || !body) {
        snprintf(err, errlen, "%s answered HTTP status %d", url, status);
        free(response);
        return NULL;
    }
    body += 4;
    memmove(response, body, strlen(body) + 1);
    return response;
}

//  ---------------------------------------------------------------------
//  Parsing

//  Reads one label value (after the opening quote) into out; returns the
//  position after the closing quote, or NULL.
static const char *s_label_value(const char *p, char *out, size_t size)
{
    size_t at = 0;
    while (*p && *p != '"') {
        char c = *p++;
        if (c == '\\' && *p) {
            c = *p++;
            if (c == 'n')
                c = '\n';
        }
        if (at + 1 < size)
            out[at++] = c;
    }
    out[at] = '\0';
    return *p == '"' ? p + 1 : NULL;
}

static void s_put_label(sample_t *s, const char *key, const char *value)
{
    struct {
        const char *key;
        char *field;
        size_t size;
    } map[] = {
        {"connection", s->connection, sizeof s->connection},
        {"direction", s->direction, sizeof s->direction},
        {"role", s->role, sizeof s->role},
        {"reason", s->reason, sizeof s->reason},
        {"le", s->le, sizeof s->le},
        {"state", s->state, sizeof s->state},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        if (strcmp(map[i].key, key) == 0) {
            size_t n = strnlen(value, map[i].size - 1); //  a longer label is cut
            memcpy(map[i].field, value, n);
            map[i].field[n] = '\0';
        }
    }
}

//  Parses one sample line. Returns true when it was one.
static bool s_parse_line(const char *line, sample_t *s)
{
    memset(s, 0, sizeof *s);
    size_t n = strcspn(line, "{ ");
    if (n == 0 || n >= sizeof s->name)
        return false;
    memcpy(s->name, line, n);
    const char *p = line + n;
    if (*p == '{') {
        p++;
        while (*p && *p != '}') {
            char key[32];
            size_t k = strcspn(p, "=");
            if (k == 0 || k >= sizeof key || p[k] != '=' || p[k + 1] != '"')
                return false;
            memcpy(key, p, k);
            key[k] = '\0';
            char value[128];
            p = s_label_value(p + k + 2, value, sizeof value);
            if (!p)
                return false;
            s_put_label(s, key, value);
            if (*p == ',')
                p++;
        }
        if (*p != '}')
            return false;
        p++;
    }
    char *end = NULL;
    s->value = strtod(p, &end);
    return end != p;
}

static void s_parse(const char *text, samples_t *out)
{
    const char *line = text;
    while (line && *line) {
        const char *next = strchr(line, '\n');
        size_t len = next ? (size_t)(next - line) : strlen(line);
        char buf[512];
        if (line[0] != '#' && len > 0 && len < sizeof buf) {
            memcpy(buf, line, len);
            buf[len] = '\0';
            sample_t sample;
            if (s_parse_line(buf, &sample)) {
                if (out->count == out->cap) {
                    size_t cap = out->cap ? out->cap * 2 : 256;
                    sample_t *grown = realloc(out->items, cap * sizeof *grown);
                    if (!grown)
                        return;
                    out->items = grown;
                    out->cap = cap;
                }
                out->items[out->count++] = sample;
            }
        }
        line = next ? next + 1 : NULL;
    }
}

//  The value of name with the given connection/direction/role (NULL: any),
//  or 0.
static double s_get(const samples_t *samples, const char *name, const char *conn, const char *dir,
                    const char *role)
{
    for (size_t i = 0; i < samples->count; i++) {
        const sample_t *s = &samples->items[i];
        if (strcmp(s->name, name) != 0)
            continue;
        if ((conn && strcmp(s->connection, conn) != 0) || (dir && strcmp(s->direction, dir) != 0) ||
            (role && strcmp(s->role, role) != 0))
            continue;
        return s->value;
    }
    return 0;
}

static double s_get_state(const samples_t *samples, const char *name, const char *state)
{
    for (size_t i = 0; i < samples->count; i++) {
        if (strcmp(samples->items[i].name, name) == 0 &&
            strcmp(samples->items[i].state, state) == 0)
            return samples->items[i].value;
    }
    return 0;
}

//  ---------------------------------------------------------------------
//  Printing

static const char *s_bytes(double bytes, char *buf, size_t size)
{
    const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int unit = 0;
    while (bytes >= 1024 && unit < 4) {
        bytes /= 1024;
        unit++;
    }
    snprintf(buf, size, unit ? "%.1f %s" : "%.0f %s", bytes, units[unit]);
    return buf;
}

static const char *s_ago(double timestamp, char *buf, size_t size)
{
    if (timestamp <= 0) {
        snprintf(buf, size, "never");
        return buf;
    }
    double ago = (double)time(NULL) - timestamp;
    snprintf(buf, size, "%.0fs ago", ago < 0 ? 0 : ago);
    return buf;
}

//  The latency bound under which fraction q of the commits fell.
static double s_quantile(const samples_t *samples, double q)
{
    double total = s_get(samples, "twinsync_broker_store_fsync_seconds_count", NULL, NULL, NULL);
    if (total <= 0)
        return 0;
    for (size_t i = 0; i < samples->count; i++) {
        const sample_t *s = &samples->items[i];
        if (strcmp(s->name, "twinsync_broker_store_fsync_seconds_bucket") == 0 &&
            s->value >= q * total)
            return strcmp(s->le, "+Inf") == 0 ? INFINITY : strtod(s->le, NULL);
    }
    return 0;
}

static void s_print_queues(FILE *out, const samples_t *samples)
{
    fprintf(out, "%-24s %-18s %8s %8s %9s %10s %10s %7s %10s %10s %10s %10s %8s %6s\n",
            "CONNECTION", "DIRECTION", "READY", "UNACKED", "OLDEST", "BYTES", "FILE BYTES", "FILES",
            "PUBLISHED", "STORED", "DELIVERED", "CONSUMED", "REDELIV", "DUPS");
    for (size_t i = 0; i < samples->count; i++) {
        const sample_t *s = &samples->items[i];
        if (strcmp(s->name, "twinsync_broker_queue_messages_ready") != 0)
            continue;
        const char *c = s->connection, *d = s->direction;
        char bytes[32], file_bytes[32];
        fprintf(
            out,
            "%-24.24s %-18s %8.0f %8.0f %8.1fs %10s %10s %7.0f %10.0f %10.0f %10.0f %10.0f %8.0f "
            "%6.0f\n",
            c, d, s->value, s_get(samples, "twinsync_broker_queue_messages_unacked", c, d, NULL),
            s_get(samples, "twinsync_broker_queue_oldest_message_age_seconds", c, d, NULL),
            s_bytes(s_get(samples, "twinsync_broker_queue_bytes", c, d, NULL), bytes, sizeof bytes),
            s_bytes(s_get(samples, "twinsync_broker_queue_file_bytes", c, d, NULL), file_bytes,
                    sizeof file_bytes),
            s_get(samples, "twinsync_broker_queue_file_messages", c, d, NULL),
            s_get(samples, "twinsync_broker_queue_published_total", c, d, NULL),
            s_get(samples, "twinsync_broker_queue_stored_total", c, d, NULL),
            s_get(samples, "twinsync_broker_queue_delivered_total", c, d, NULL),
            s_get(samples, "twinsync_broker_queue_consumed_total", c, d, NULL),
            s_get(samples, "twinsync_broker_queue_redelivered_total", c, d, NULL),
            s_get(samples, "twinsync_broker_queue_duplicates_total", c, d, NULL));
    }
}

static void s_print_connections(FILE *out, const samples_t *samples)
{
    fprintf(out, "\n%-24s %-8s %6s %-16s %-16s\n", "CONNECTION", "STATE", "PEERS", "PUBLIC SEEN",
            "PRIVATE SEEN");
    for (size_t i = 0; i < samples->count; i++) {
        const sample_t *s = &samples->items[i];
        if (strcmp(s->name, "twinsync_broker_connection_peers_connected") != 0)
            continue;
        const char *c = s->connection;
        char pub[32], priv[32];
        bool joined = s_get(samples, "twinsync_broker_connection_joined", c, NULL, NULL) > 0;
        fprintf(out, "%-24.24s %-8s %4.0f/2 %-16s %-16s\n", c, joined ? "active" : "pending",
                s->value,
                s_ago(s_get(samples, "twinsync_broker_connection_last_seen_timestamp_seconds", c,
                            NULL, "public"),
                      pub, sizeof pub),
                s_ago(s_get(samples, "twinsync_broker_connection_last_seen_timestamp_seconds", c,
                            NULL, "private"),
                      priv, sizeof priv));
    }
}

static void s_print_broker(FILE *out, const samples_t *samples)
{
    char bytes[32];
    double commits = s_get(samples, "twinsync_broker_store_fsync_seconds_count", NULL, NULL, NULL);
    double sum = s_get(samples, "twinsync_broker_store_fsync_seconds_sum", NULL, NULL, NULL);
    char file_bytes[32];
    fprintf(out,
            "\nBROKER  peers %.0f   connections %.0f active / %.0f pending   store %s   files "
            "queued %s in %.0f messages\n",
            s_get(samples, "twinsync_broker_peers", NULL, NULL, NULL),
            s_get_state(samples, "twinsync_broker_connections", "active"),
            s_get_state(samples, "twinsync_broker_connections", "pending"),
            s_bytes(s_get(samples, "twinsync_broker_store_bytes", NULL, NULL, NULL), bytes,
                    sizeof bytes),
            s_bytes(s_get(samples, "twinsync_broker_queues_file_bytes", NULL, NULL, NULL),
                    file_bytes, sizeof file_bytes),
            s_get(samples, "twinsync_broker_queues_file_messages", NULL, NULL, NULL));
    fprintf(out, "COMMITS %.0f   mean %.2f ms   p50 <= %.2f ms   p99 <= %.2f ms\n", commits,
            commits > 0 ? sum / commits * 1000 : 0, s_quantile(samples, 0.5) * 1000,
            s_quantile(samples, 0.99) * 1000);
    fprintf(out, "REJECTED");
    int shown = 0;
    for (size_t i = 0; i < samples->count; i++) {
        const sample_t *s = &samples->items[i];
        if (strcmp(s->name, "twinsync_broker_frames_rejected_total") == 0 && s->value > 0) {
            fprintf(out, "  %s=%.0f", s->reason, s->value);
            shown++;
        }
    }
    fprintf(out, "%s\n", shown ? "" : "  none");
}

void broker_stats_print(FILE *out, const char *metrics_text)
{
    samples_t samples = {0};
    s_parse(metrics_text, &samples);
    s_print_queues(out, &samples);
    s_print_connections(out, &samples);
    s_print_broker(out, &samples);
    free(samples.items);
}

static volatile sig_atomic_t s_stop;

static void s_on_signal(int signo)
{
    (void)signo;
    s_stop = 1;
}

int broker_stats_run(const char *url, int watch, int interval_s)
{
    if (watch)
        signal(SIGINT, s_on_signal);
    do {
        char err[512];
        char *text = broker_stats_fetch(url, err, sizeof err);
        if (watch)
            printf("\033[H\033[2J");
        if (!text) {
            fprintf(stderr, "twinsync-broker stats: %s\n", err);
            if (!watch)
                return 1;
        } else {
            broker_stats_print(stdout, text);
            free(text);
        }
        fflush(stdout);
        for (int i = 0; watch && i < interval_s * 10 && !s_stop; i++)
            usleep(100000);
    } while (watch && !s_stop);
    return 0;
}
