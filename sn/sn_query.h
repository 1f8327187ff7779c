/*  sn_query.h: ServiceNow encoded queries and date-time stamps.

    A stamp is the Table API's raw date-time, "YYYY-MM-DD HH:MM:SS" in UTC, with
    one-second resolution; stamps compare correctly as strings.

    sn_query_and() joins a caller's filter (a connection's trigger, possibly with
    ^OR and ^NQ) with a condition of ours without changing the filter's meaning:
    ^OR binds tighter than ^, and ^NQ starts a new OR'd query, so the condition
    is appended to every ^NQ part. ORDERBY terms are dropped from the filter:
    the client's paging decides the order. Values placed in a query must pass
    sn_query_value_safe(): an encoded query has no quoting, so a '^' or a
    line break in a value would inject terms. */

#ifndef SN_QUERY_H
#define SN_QUERY_H

#include <stdbool.h>
#include <time.h>

#define SN_STAMP_SIZE 20 //  "YYYY-MM-DD HH:MM:SS" and its NUL

//  True when text is a well-formed stamp (fields in range).
bool sn_stamp_valid(const char *text);

//  Writes the stamp of UTC time t into out.
void sn_stamp_from_time(time_t t, char out[SN_STAMP_SIZE]);

//  Writes stamp + seconds (negative to go back) into out; false when stamp is
//  not valid, out is then "".
bool sn_stamp_add(const char *stamp, long seconds, char out[SN_STAMP_SIZE]);

//  filter AND condition, as a new string the caller frees. filter may be NULL
//  or "" (condition alone); condition may be NULL (the filter, stripped of its
//  ORDERBY terms). Returns NULL only when out of memory.
char *sn_query_and(const char *filter, const char *condition);

//  True when value can stand as a literal in an encoded query: not empty, no
//  '^', no control characters.
bool sn_query_value_safe(const char *value);

//  text percent-encoded for a URL query or a form body (everything but
//  A-Z a-z 0-9 - . _ ~ becomes %XX), as a new string the caller frees; NULL
//  when out of memory.
char *sn_query_escape(const char *text);

#endif
