/*  ts_log.h: one line per event on stderr, in key=value form with a level.

      ts_log(TS_LOG_INFO, "connection active", "conn=%s peer=%s", id, peer);
      -> ts=2026-11-28T07:30:00.123Z level=info msg="connection active" conn=… peer=…

    Values that may hold spaces or quotes are passed through ts_log_quote() by the
    caller. Secrets never go into a log line: callers pass none.
*/
#ifndef TS_LOG_H
#define TS_LOG_H

#include <stddef.h>
#include <stdint.h>

typedef enum { TS_LOG_DEBUG = 0, TS_LOG_INFO, TS_LOG_WARN, TS_LOG_ERROR } ts_log_level_t;

//  Lines below this level are dropped (default TS_LOG_INFO).
void ts_log_set_level(ts_log_level_t level);
ts_log_level_t ts_log_get_level(void);

//  Parses "debug", "info", "warn"/"warning", "error"; returns 0, or -1 if unknown.
int ts_log_level_parse(const char *text, ts_log_level_t *level);

//  Writes one line: timestamp, level, msg="…", then the formatted key=value pairs
//  (fmt may be NULL). Thread-safe: each line is written with a single write().
void ts_log(ts_log_level_t level, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

//  Rate limiter for events a peer can trigger at will (bad frames, floods).
typedef struct {
    int64_t window_start_ms; //  start of the current one-second window
    unsigned count;          //  lines written in this window
    unsigned suppressed;     //  lines dropped since the last written one
    unsigned per_second;     //  lines allowed per window; 0 means 10
} ts_log_limiter_t;

//  Like ts_log, but writes at most limiter->per_second lines a second; the next
//  line written after drops carries suppressed=N.
void ts_log_limited(ts_log_limiter_t *limiter, ts_log_level_t level, const char *msg,
                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

//  Writes text into buf as a double-quoted value with ", \ and control bytes
//  escaped, truncated to fit; returns buf. For use as a %s argument.
const char *ts_log_quote(char *buf, size_t size, const char *text);

//  Milliseconds of CLOCK_REALTIME and CLOCK_MONOTONIC.
int64_t ts_now_ms(void);
int64_t ts_mono_ms(void);

#endif
