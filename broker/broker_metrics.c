/*  broker_metrics.c: broker-wide counters and the Prometheus text writers
    (see broker_metrics.h).
*/
#include "broker_metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *s_reject_names[BROKER_REJECT_COUNT] = {
    [BROKER_REJECT_BAD_FRAME] = "bad_frame",
    [BROKER_REJECT_TOO_BIG] = "too_big",
    [BROKER_REJECT_VERSION] = "version",
    [BROKER_REJECT_UNKNOWN_TYPE] = "unknown_type",
    [BROKER_REJECT_UNEXPECTED_TYPE] = "unexpected_type",
    [BROKER_REJECT_MULTIPART] = "multipart",
    [BROKER_REJECT_NO_USER_ID] = "no_user_id",
    [BROKER_REJECT_NOT_HELLO] = "not_hello",
    [BROKER_REJECT_UNKNOWN_KEY] = "unknown_key",
    [BROKER_REJECT_KEY_MISMATCH] = "key_mismatch",
    [BROKER_REJECT_FOREIGN_CONN] = "foreign_connection",
    [BROKER_REJECT_UNKNOWN_CONN] = "unknown_connection",
    [BROKER_REJECT_JOIN_BAD_TOKEN] = "join_bad_token",
    [BROKER_REJECT_JOIN_EXPIRED] = "join_expired",
    [BROKER_REJECT_JOIN_REUSED] = "join_reused",
    [BROKER_REJECT_QUEUE_FULL] = "queue_full",
    [BROKER_REJECT_SEQUENCE_GAP] = "sequence_gap",
    [BROKER_REJECT_TOO_MANY_PEERS] = "too_many_peers",
    [BROKER_REJECT_TOO_MANY_CONNS] = "too_many_connections",
    [BROKER_REJECT_TOO_MANY_GUESTS] = "too_many_guests",
    [BROKER_REJECT_GUESTS_ADDRESS] = "too_many_guests_from_address",
};

static const char *s_handshake_names[BROKER_HANDSHAKE_COUNT] = {
    [BROKER_HANDSHAKE_PROTOCOL] = "protocol",
    [BROKER_HANDSHAKE_AUTH] = "auth",
    [BROKER_HANDSHAKE_OTHER] = "other",
};

//  Upper bounds (seconds) of the fsync histogram buckets, +Inf excluded.
static const double s_fsync_bounds[BROKER_FSYNC_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5,
};

const char *broker_reject_name(broker_reject_t reason)
{
    return reason < BROKER_REJECT_COUNT ? s_reject_names[reason] : "unknown";
}

const char *broker_handshake_name(broker_handshake_t reason)
{
    return reason < BROKER_HANDSHAKE_COUNT ? s_handshake_names[reason] : "other";
}

void broker_metrics_observe_fsync(broker_metrics_t *self, double seconds)
{
    self->fsync_count++;
    self->fsync_sum += seconds;
    for (int i = 0; i < BROKER_FSYNC_BUCKETS; i++) {
        if (seconds <= s_fsync_bounds[i]) {
            self->fsync_buckets[i]++;
            return;
        }
    }
}

static void s_printf(proto_buf_t *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void s_printf(proto_buf_t *out, const char *fmt, ...)
{
    char line[1024];
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(line, sizeof line, fmt, args);
    va_end(args);
    if (n > 0)
        proto_buf_append(out, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

void broker_prom_family(proto_buf_t *out, const char *name, const char *type, const char *help)
{
    s_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

//  Formats a value the way Prometheus reads it: integers without a point.
static void s_value(char *buf, size_t size, double value)
{
    if (isinf(value))
        snprintf(buf, size, "%s", value > 0 ? "+Inf" : "-Inf");
    else if (value == floor(value) && fabs(value) < 1e15)
        snprintf(buf, size, "%.0f", value);
    else
        snprintf(buf, size, "%.15g", value);
}

void broker_prom_sample(proto_buf_t *out, const char *name, const char *labels, double value)
{
    char text[64];
    s_value(text, sizeof text, value);
    if (labels && *labels)
        s_printf(out, "%s{%s} %s\n", name, labels, text);
    else
        s_printf(out, "%s %s\n", name, text);
}

void broker_prom_label(char *buf, size_t size, const char *key, const char *value)
{
    size_t at = strlen(buf);
    int n = snprintf(buf + at, size - at, "%s%s=\"", at ? "," : "", key);
    if (n < 0 || (size_t)n >= size - at)
        return;
    at += (size_t)n;
    for (const char *p = value; *p && at + 3 < size; p++) {
        if (*p == '\\' || *p == '"') {
            buf[at++] = '\\';
            buf[at++] = *p;
        } else if (*p == '\n') {
            buf[at++] = '\\';
            buf[at++] = 'n';
        } else {
            buf[at++] = *p;
        }
    }
    if (at + 2 <= size) {
        buf[at++] = '"';
        buf[at] = '\0';
    }
}

void broker_metrics_write_fsync(const broker_metrics_t *self, proto_buf_t *out, const char *name)
{
    broker_prom_family(out, name, "histogram",
                       "Time to make a group commit durable (SQLite COMMIT with WAL fsync).");
    uint64_t cumulative = 0;
    char metric[128];
    snprintf(metric, sizeof metric, "%s_bucket", name);
    for (int i = 0; i < BROKER_FSYNC_BUCKETS; i++) {
        cumulative += self->fsync_buckets[i];
        char le[32], labels[64] = "";
        s_value(le, sizeof le, s_fsync_bounds[i]);
        broker_prom_label(labels, sizeof labels, "le", le);
        broker_prom_sample(out, metric, labels, (double)cumulative);
    }
    broker_prom_sample(out, metric, "le=\"+Inf\"", (double)self->fsync_count);
    snprintf(metric, sizeof metric, "%s_sum", name);
    broker_prom_sample(out, metric, NULL, self->fsync_sum);
    snprintf(metric, sizeof metric, "%s_count", name);
    broker_prom_sample(out, metric, NULL, (double)self->fsync_count);
}

void broker_metrics_write_rejects(const broker_metrics_t *self, proto_buf_t *out, const char *name)
{
    broker_prom_family(out, name, "counter", "Frames refused, by reason.");
    for (int i = 0; i < BROKER_REJECT_COUNT; i++) {
        char labels[64] = "";
        broker_prom_label(labels, sizeof labels, "reason", s_reject_names[i]);
        broker_prom_sample(out, name, labels, (double)self->rejected[i]);
    }
}

void broker_metrics_write_handshakes(const broker_metrics_t *self, proto_buf_t *out,
                                     const char *name)
{
    broker_prom_family(out, name, "counter",
                       "CURVE handshakes that failed (wrong broker key, not CURVE), by reason.");
    for (int i = 0; i < BROKER_HANDSHAKE_COUNT; i++) {
        char labels[64] = "";
        broker_prom_label(labels, sizeof labels, "reason", s_handshake_names[i]);
        broker_prom_sample(out, name, labels, (double)self->handshakes_failed[i]);
    }
}
