/*  ts_log.c: key=value event lines on stderr. See ts_log.h for the format.
    A line is built in a stack buffer and written with one write(2) so that lines
    from several threads never interleave.
*/
#include "ts_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static ts_log_level_t s_level = TS_LOG_INFO;
static const char *s_names[] = {"debug", "info", "warn", "error"};

void ts_log_set_level(ts_log_level_t level)
{
    s_level = level;
}

ts_log_level_t ts_log_get_level(void)
{
    return s_level;
}

int ts_log_level_parse(const char *text, ts_log_level_t *level)
{
    if (!text)
        return -1;
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(text, s_names[i]) == 0) {
            *level = (ts_log_level_t)i;
            return 0;
        }
    }
    if (strcasecmp(text, "warning") == 0) {
        *level = TS_LOG_WARN;
        return 0;
    }
    return -1;
}

int64_t ts_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ts_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *ts_log_quote(char *buf, size_t size, const char *text)
{
    if (size < 3) {
        if (size)
            buf[0] = '\0';
        return buf;
    }
    size_t at = 0;
    buf[at++] = '"';
    for (const unsigned char *p = (const unsigned char *)(text ? text : ""); *p; p++) {
        char esc[5];
        size_t n;
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            n = 2;
        } else if (*p < 0x20 || *p == 0x7f) {
            n = (size_t)snprintf(esc, sizeof esc, "\\x%02x", *p);
        } else {
            esc[0] = (char)*p;
            n = 1;
        }
        if (at + n + 2 > size)
            break;
        memcpy(buf + at, esc, n);
        at += n;
    }
    buf[at++] = '"';
    buf[at] = '\0';
    return buf;
}

//  Formats and writes one line; extra is appended verbatim (may be NULL).
__attribute__((format(printf, 4, 0))) static void
s_vlog(ts_log_level_t level, const char *msg, const char *extra, const char *fmt, va_list ap)
{
    char line[2048];
    char quoted[512];
    int64_t now = ts_now_ms();
    time_t secs = (time_t)(now / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    int n = snprintf(line, sizeof line, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03dZ level=%s msg=%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int)(now % 1000), s_names[level], ts_log_quote(quoted, sizeof quoted, msg));
    size_t at = n > 0 ? (size_t)n : 0;
    if (fmt && *fmt && at + 1 < sizeof line) {
        line[at++] = ' ';
        n = vsnprintf(line + at, sizeof line - at, fmt, ap);
        if (n > 0)
            at += (size_t)n;
    }
    if (extra && at < sizeof line) {
        n = snprintf(line + at, sizeof line - at, "%s", extra);
        if (n > 0)
            at += (size_t)n;
    }
    if (at > sizeof line - 2)
        at = sizeof line - 2;
    line[at++] = '\n';
    ssize_t ignored = write(STDERR_FILENO, line, at);
    (void)ignored;
}

void ts_log(ts_log_level_t level, const char *msg, const char *fmt, ...)
{
    if (level < s_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    s_vlog(level, msg, NULL, fmt, ap);
    va_end(ap);
}

void ts_log_limited(ts_log_limiter_t *limiter, ts_log_level_t level, const char *msg,
                    const char *fmt, ...)
{
    if (level < s_level)
        return;
    int64_t now = ts_mono_ms();
    unsigned allowed = limiter->per_second ? limiter->per_second : 10;
    if (now - limiter->window_start_ms >= 1000) {
        limiter->window_start_ms = now;
        limiter->count = 0;
    }
    if (limiter->count >= allowed) {
        limiter->suppressed++;
        return;
    }
    limiter->count++;
    char extra[64] = "";
    if (limiter->suppressed) {
        snprintf(extra, sizeof extra, " suppressed=%u", limiter->suppressed);
        limiter->suppressed = 0;
    }
    va_list ap;
    va_start(ap, fmt);
    s_vlog(level, msg, extra, fmt, ap);
    va_end(ap);
}
