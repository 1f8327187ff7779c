/*  sn_query.c: encoded query composition and stamp arithmetic.
    See sn_query.h for the contract. */

#include "sn_query.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  Reads count digits at text into *value; false when one is not a digit.
static bool s_digits(const char *text, int count, int *value)
{
    *value = 0;
    for (int i = 0; i < count; i++) {
        if (!isdigit((unsigned char)text[i]))
            return false;
        *value = *value * 10 + (text[i] - '0');
    }
    return true;
}

//  Parses a stamp into tm (UTC); false when malformed or out of range.
static bool s_stamp_parse(const char *text, struct tm *tm)
{
    if (!text || strlen(text) != SN_STAMP_SIZE - 1)
        return false;
    if (text[4] != '-' || text[7] != '-' || text[10] != ' ' || text[13] != ':' || text[16] != ':')
        return false;
    int year, month, day, hour, minute, second;
    if (!s_digits(text, 4, &year) || !s_digits(text + 5, 2, &month) ||
        !s_digits(text + 8, 2, &day) || !s_digits(text + 11, 2, &hour) ||
        !s_digits(text + 14, 2, &minute) || !s_digits(text + 17, 2, &second))
        return false;
    if (year < 1970 || month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 ||
        second > 59)
        return false;
    memset(tm, 0, sizeof *tm);
    tm->tm_year = year - 1900;
    tm->tm_mon = month - 1;
    tm->tm_mday = day;
    tm->tm_hour = hour;
    tm->tm_min = minute;
    tm->tm_sec = second;
    return true;
}

bool sn_stamp_valid(const char *text)
{
    struct tm tm;
    return s_stamp_parse(text, &tm);
}

void sn_stamp_from_time(time_t t, char out[SN_STAMP_SIZE])
{
    struct tm tm;
    if (t < 0 || !gmtime_r(&t, &tm) || tm.tm_year + 1900 > 9999) {
        out[0] = '\0';
        return;
    }
    strftime(out, SN_STAMP_SIZE, "%Y-%m-%d %H:%M:%S", &tm);
}

bool sn_stamp_add(const char *stamp, long seconds, char out[SN_STAMP_SIZE])
{
    struct tm tm;
    out[0] = '\0';
    if (!s_stamp_parse(stamp, &tm))
        return false;
    time_t t = timegm(&tm) + seconds;
    if (t < 0)
        t = 0;
    sn_stamp_from_time(t, out);
    return out[0] != '\0';
}

bool sn_query_value_safe(const char *value)
{
    if (!value || !*value)
        return false;
    for (const char *c = value; *c; c++)
        if (*c == '^' || iscntrl((unsigned char)*c))
            return false;
    return true;
}

//  Appends text (len bytes) to the growing string *out of length *used.
static bool s_append(char **out, size_t *used, const char *text, size_t len)
{
    char *grown = realloc(*out, *used + len + 1);
    if (!grown)
        return false;
    memcpy(grown + *used, text, len);
    *used += len;
    grown[*used] = '\0';
    *out = grown;
    return true;
}

//  Appends one ^NQ part of the filter (len bytes at part) without its ORDERBY
//  and EQ terms, then the condition.
static bool s_append_part(char **out, size_t *used, const char *part, size_t len,
                          const char *condition)
{
    size_t terms = 0;
    const char *end = part + len;
    for (const char *term = part; term < end;) {
        const char *caret = memchr(term, '^', (size_t)(end - term));
        size_t term_len = caret ? (size_t)(caret - term) : (size_t)(end - term);
        bool drop = term_len == 0 || strncmp(term, "ORDERBY", 7) == 0 ||
                    strncmp(term, "GROUPBY", 7) == 0 || (term_len == 2 && !strncmp(term, "EQ", 2));
        if (!drop) {
            if (terms++ && !s_append(out, used, "^", 1))
                return false;
            if (!s_append(out, used, term, term_len))
                return false;
        }
        term += term_len + (caret ? 1 : 0);
    }
    if (!condition || !*condition)
        return true;
    if (terms && !s_append(out, used, "^", 1))
        return false;
    return s_append(out, used, condition, strlen(condition));
}

char *sn_query_and(const char *filter, const char *condition)
{
    char *out = NULL;
    size_t used = 0;
    if (!s_append(&out, &used, "", 0))
        return NULL;
    const char *part = filter ? filter : "";
    for (;;) {
        const char *next = strstr(part, "^NQ");
        size_t len = next ? (size_t)(next - part) : strlen(part);
        size_t before = used;
        if (used > 0 && !s_append(&out, &used, "^NQ", 3))
            goto oom;
        size_t start = used;
        if (!s_append_part(&out, &used, part, len, condition))
            goto oom;
        //  A part that was nothing but ORDERBY terms adds nothing
        if (used == start) {
            used = before;
            out[used] = '\0';
        }
        if (!next)
            break;
        part = next + 3;
    }
    return out;
oom:
    free(out);
    return NULL;
}

char *sn_query_escape(const char *text)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t len = strlen(text);
    char *out = malloc(len * 3 + 1);
    if (!out)
        return NULL;
    char *o = out;
    for (const unsigned char *c = (const unsigned char *)text; *c; c++) {
        bool unreserved = (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') ||
                          (*c >= '0' && *c <= '9') || *c == '-' || *c == '.' || *c == '_' ||
                          *c == '~';
        if (unreserved)
            *o++ = (char)*c;
        else {
            *o++ = '%';
            *o++ = hex[*c >> 4];
            *o++ = hex[*c & 15];
        }
    }
    *o = '\0';
    return out;
}
