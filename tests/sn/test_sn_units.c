/*  test_sn_units.c: unit tests of the ServiceNow client's pure parts, no
    process and no network: error names and scrubbing, record shapes, response
    decoding (content types, envelopes, status mapping), retry delays, encoded
    query composition and stamps, the keyset pager, the de-duplication set, the
    configuration checks of sn_client_new, and the Attachment API's building
    blocks (paths, Content-Range, the classification of upload failures). */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "sn_attachment.h"
#include "sn_client.h"
#include "sn_incident.h"
#include "sn_pager.h"
#include "sn_query.h"
#include "sn_response.h"
#include "sn_retry.h"
#include "sn_seen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  -------------------------------------------------------------------------
//  Errors

static void test_error_names_are_distinct(void **state)
{
    (void)state;
    for (int a = SN_OK; a <= SN_E_FILE_REFUSED; a++) {
        assert_string_not_equal(sn_err_name((sn_err_code_t)a), "unknown");
        for (int b = a + 1; b <= SN_E_FILE_REFUSED; b++)
            assert_string_not_equal(sn_err_name((sn_err_code_t)a), sn_err_name((sn_err_code_t)b));
    }
    assert_string_equal(sn_err_name(SN_E_JOURNAL_UNREADABLE), "journal_unreadable");
    assert_string_equal(sn_err_name(SN_E_FILE_REFUSED), "file_refused");
    assert_string_equal(sn_err_name((sn_err_code_t)999), "unknown");
}

static void test_error_scopes(void **state)
{
    (void)state;
    assert_int_equal(sn_err_scope(SN_OK), SN_SCOPE_NONE);
    assert_int_equal(sn_err_scope(SN_E_RATE_LIMITED), SN_SCOPE_TRANSIENT);
    assert_int_equal(sn_err_scope(SN_E_UNAVAILABLE), SN_SCOPE_TRANSIENT);
    assert_int_equal(sn_err_scope(SN_E_TIMEOUT), SN_SCOPE_TRANSIENT);
    assert_int_equal(sn_err_scope(SN_E_DATA_POLICY), SN_SCOPE_RECORD);
    assert_int_equal(sn_err_scope(SN_E_NOT_FOUND), SN_SCOPE_RECORD);
    //  A refused file is that file's problem: the other files and records go on
    assert_int_equal(sn_err_scope(SN_E_FILE_REFUSED), SN_SCOPE_RECORD);
    assert_int_equal(sn_err_scope(SN_E_AUTH), SN_SCOPE_CONNECTION);
    assert_int_equal(sn_err_scope(SN_E_PERMISSION), SN_SCOPE_CONNECTION);
    assert_int_equal(sn_err_scope(SN_E_JOURNAL_UNREADABLE), SN_SCOPE_CONNECTION);
}

static void test_error_scrub_removes_secrets(void **state)
{
    (void)state;
    sn_error_t err;
    sn_error_set(&err, SN_E_AUTH, 401, "bad s3cretpw here", "s3cretpw and again s3cretpw!");
    sn_error_scrub(&err, "s3cretpw");
    assert_string_equal(err.message, "bad *** here");
    assert_string_equal(err.detail, "*** and again ***!");
    //  Too short to scrub safely: left alone
    sn_error_scrub(&err, "an");
    assert_string_equal(err.message, "bad *** here");
    sn_error_scrub(&err, NULL);
}

static void test_error_set_truncates(void **state)
{
    (void)state;
    char long_text[2000];
    memset(long_text, 'x', sizeof long_text - 1);
    long_text[sizeof long_text - 1] = '\0';
    sn_error_t err;
    assert_int_equal(sn_error_set(&err, SN_E_BAD_REQUEST, 400, long_text, "%s", long_text),
                     SN_E_BAD_REQUEST);
    assert_int_equal(strlen(err.message), sizeof err.message - 1);
    assert_int_equal(strlen(err.detail), sizeof err.detail - 1);
    assert_int_equal(err.http_status, 400);
    sn_error_reset(&err);
    assert_int_equal(err.code, SN_OK);
    assert_string_equal(err.message, "");
}

//  -------------------------------------------------------------------------
//  Records

static void test_record_normalise_makes_every_value_a_string(void **state)
{
    (void)state;
    json_t *record = json_loads("{\"a\":\"x\",\"ref\":{\"link\":\"https://i/x\",\"value\":\"abc\"},"
                                "\"n\":null,\"i\":4,\"t\":true,\"f\":false,\"r\":1.5}",
                                0, NULL);
    assert_true(sn_record_normalise(record));
    assert_string_equal(sn_field(record, "a"), "x");
    assert_string_equal(sn_field(record, "ref"), "abc");
    assert_string_equal(sn_field(record, "n"), "");
    assert_string_equal(sn_field(record, "i"), "4");
    assert_string_equal(sn_field(record, "t"), "true");
    assert_string_equal(sn_field(record, "f"), "false");
    assert_string_equal(sn_field(record, "r"), "1.5");
    assert_string_equal(sn_field(record, "absent"), "");
    json_decref(record);

    record = json_loads("{\"bad\":[1,2]}", 0, NULL);
    assert_false(sn_record_normalise(record));
    json_decref(record);
    record = json_loads("{\"bad\":{\"display_value\":\"x\"}}", 0, NULL);
    assert_false(sn_record_normalise(record));
    json_decref(record);
    assert_false(sn_record_normalise(NULL));
}

static void test_sys_id_shape(void **state)
{
    (void)state;
    assert_true(sn_is_sys_id("a9e30c7dc61122760116894de7bcc7bd"));
    assert_false(sn_is_sys_id("a9e30c7dc61122760116894de7bcc7b"));
    assert_false(sn_is_sys_id("a9e30c7dc61122760116894de7bcc7bd0"));
    assert_false(sn_is_sys_id("a9e30c7dc6112276011/894de7bcc7bd"));
    assert_false(sn_is_sys_id(NULL));
}

//  -------------------------------------------------------------------------
//  Responses

//  A response with a copy of body (NUL-terminated, as sn_http leaves it).
static sn_response_t s_resp(long status, const char *content_type, const char *body)
{
    sn_response_t resp = {.status = status, .total_count = -1};
    snprintf(resp.content_type, sizeof resp.content_type, "%s", content_type);
    if (body) {
        resp.body = strdup(body);
        resp.body_len = strlen(body);
        resp.body_cap = resp.body_len + 1;
    }
    return resp;
}

//  Decodes and returns the code; *doc_p and err filled.
static sn_err_code_t s_decode(long status, const char *content_type, const char *body,
                              json_t **doc_p, sn_error_t *err)
{
    sn_response_t resp = s_resp(status, content_type, body);
    sn_error_reset(err);
    sn_err_code_t code = sn_response_decode(&resp, doc_p, err);
    sn_response_reset(&resp);
    return code;
}

static const char *s_json_type = "application/json;charset=UTF-8";

static void test_response_json_result_is_decoded(void **state)
{
    (void)state;
    json_t *doc = NULL;
    sn_error_t err;
    assert_int_equal(s_decode(200, s_json_type,
                              "{\"result\":[{\"sys_id\":\"x\",\"caller_id\":{\"link\":\"l\","
                              "\"value\":\"v\"}}]}",
                              &doc, &err),
                     SN_OK);
    json_t *rows = NULL;
    assert_int_equal(sn_response_result(doc, JSON_ARRAY, &rows, &err), SN_OK);
    assert_int_equal(json_array_size(rows), 1);
    assert_string_equal(sn_field(json_array_get(rows, 0), "caller_id"), "v");
    json_decref(rows);
    //  Asking for one record where a list came is a bad response
    json_t *record = NULL;
    assert_int_equal(sn_response_result(doc, JSON_OBJECT, &record, &err), SN_E_BAD_RESPONSE);
    assert_null(record);
    json_decref(doc);

    assert_int_equal(s_decode(204, "", NULL, &doc, &err), SN_OK);
    assert_null(doc);
}

static void test_response_html_is_an_outage_even_with_200(void **state)
{
    (void)state;
    json_t *doc = NULL;
    sn_error_t err;
    const char *page = "<html><head><title>Instance Hibernating page</title></head>"
                       "<body>Your instance is hibernating</body></html>";
    assert_int_equal(s_decode(200, "text/html;charset=UTF-8", page, &doc, &err), SN_E_UNAVAILABLE);
    assert_null(doc);
    assert_int_equal(err.http_status, 200);
    assert_non_null(strstr(err.detail, "Instance Hibernating page"));
    //  Without a Content-Type, the first byte gives HTML away
    assert_int_equal(s_decode(200, "", "  \n<!DOCTYPE html><html></html>", &doc, &err),
                     SN_E_UNAVAILABLE);
    //  A proxy's 502 page
    assert_int_equal(s_decode(502, "text/html", "<html>Bad gateway</html>", &doc, &err),
                     SN_E_UNAVAILABLE);
    assert_int_equal(err.http_status, 502);
}

static void test_response_not_json_is_bad_response(void **state)
{
    (void)state;
    json_t *doc = NULL;
    sn_error_t err;
    assert_int_equal(s_decode(200, "text/plain", "hello", &doc, &err), SN_E_BAD_RESPONSE);
    assert_int_equal(s_decode(200, s_json_type, "{\"result\":[", &doc, &err), SN_E_BAD_RESPONSE);
    assert_non_null(strstr(err.message, "invalid JSON"));
    assert_int_equal(s_decode(200, s_json_type, "[1,2]", &doc, &err), SN_E_BAD_RESPONSE);
    assert_int_equal(s_decode(200, "application/vnd.api+json", "{\"result\":{}}", &doc, &err),
                     SN_OK);
    json_decref(doc);
}

static void test_response_error_envelopes_map_to_codes(void **state)
{
    (void)state;
    json_t *doc = NULL;
    sn_error_t err;
    assert_int_equal(s_decode(401, s_json_type,
                              "{\"error\":{\"message\":\"User Not Authenticated\",\"detail\":"
                              "\"Required to provide Auth information\"},\"status\":\"failure\"}",
                              &doc, &err),
                     SN_E_AUTH);
    assert_string_equal(err.message, "User Not Authenticated");
    assert_string_equal(err.detail, "Required to provide Auth information");
    assert_int_equal(err.http_status, 401);

    assert_int_equal(s_decode(403, s_json_type,
                              "{\"error\":{\"message\":\"Operation Failed\",\"detail\":\"Data "
                              "Policy Exception: \\n\\tThe following fields are mandatory: "
                              "Resolution code\"},\"status\":\"failure\"}",
                              &doc, &err),
                     SN_E_DATA_POLICY);
    assert_string_equal(err.message, "Operation Failed");
    assert_int_equal(s_decode(403, s_json_type,
                              "{\"error\":{\"message\":\"Operation Failed\",\"detail\":\"ACL "
                              "Exception Update Failed due to security constraints\"},"
                              "\"status\":\"failure\"}",
                              &doc, &err),
                     SN_E_PERMISSION);
    assert_int_equal(s_decode(403, s_json_type,
                              "{\"error\":{\"message\":\"Insufficient rights to query records\","
                              "\"detail\":null},\"status\":\"failure\"}",
                              &doc, &err),
                     SN_E_PERMISSION);
    assert_string_equal(err.detail, "");
    assert_int_equal(s_decode(404, s_json_type,
                              "{\"error\":{\"message\":\"No Record found\",\"detail\":\"x\"},"
                              "\"status\":\"failure\"}",
                              &doc, &err),
                     SN_E_NOT_FOUND);
    assert_int_equal(s_decode(400, s_json_type,
                              "{\"error\":{\"message\":\"Invalid table x\",\"detail\":null},"
                              "\"status\":\"failure\"}",
                              &doc, &err),
                     SN_E_BAD_REQUEST);
    assert_string_equal(err.message, "Invalid table x");
    assert_int_equal(s_decode(500, s_json_type,
                              "{\"error\":{\"message\":\"Transaction cancelled: maximum "
                              "execution time exceeded\",\"detail\":\"x\"},\"status\":"
                              "\"failure\"}",
                              &doc, &err),
                     SN_E_TIMEOUT);
    assert_int_equal(s_decode(500, s_json_type, "not json at all", &doc, &err), SN_E_UNAVAILABLE);
    assert_string_equal(err.message, "HTTP 500 from ServiceNow");
    assert_int_equal(s_decode(302, "", NULL, &doc, &err), SN_E_CONFIG);
    assert_int_equal(s_decode(405, s_json_type, "{}", &doc, &err), SN_E_BAD_REQUEST);
    //  The token endpoint's own shape
    assert_int_equal(s_decode(401, "application/json",
                              "{\"error_description\":\"access_denied\",\"error\":"
                              "\"server_error\"}",
                              &doc, &err),
                     SN_E_AUTH);
    assert_string_equal(err.message, "server_error");
    assert_string_equal(err.detail, "access_denied");
    assert_null(doc);
}

static void test_response_429_carries_retry_after(void **state)
{
    (void)state;
    sn_response_t resp = s_resp(429, s_json_type,
                                "{\"error\":{\"message\":\"Rate limit exceeded\",\"detail\":"
                                "\"Rate limit of 100 requests per hour for Table API exceeded\"},"
                                "\"status\":\"failure\"}");
    resp.retry_after_s = 7;
    json_t *doc = NULL;
    sn_error_t err;
    assert_int_equal(sn_response_decode(&resp, &doc, &err), SN_E_RATE_LIMITED);
    assert_int_equal(err.retry_after_s, 7);
    assert_string_equal(err.message, "Rate limit exceeded");
    sn_response_reset(&resp);
}

static void test_response_result_rejects_wrong_shapes(void **state)
{
    (void)state;
    sn_error_t err;
    json_t *result = NULL;
    json_t *doc = json_loads("{\"result\":{\"a\":[1]}}", 0, NULL);
    assert_int_equal(sn_response_result(doc, JSON_OBJECT, &result, &err), SN_E_BAD_RESPONSE);
    json_decref(doc);
    doc = json_loads("{\"result\":[\"not a record\"]}", 0, NULL);
    assert_int_equal(sn_response_result(doc, JSON_ARRAY, &result, &err), SN_E_BAD_RESPONSE);
    json_decref(doc);
    doc = json_loads("{\"records\":[]}", 0, NULL);
    assert_int_equal(sn_response_result(doc, JSON_ARRAY, &result, &err), SN_E_BAD_RESPONSE);
    json_decref(doc);
    assert_null(result);
}

//  -------------------------------------------------------------------------
//  Retries

static void test_retry_backoff_doubles_up_to_the_cap(void **state)
{
    (void)state;
    sn_retry_policy_t policy = {.max_attempts = 7,
                                .base_backoff_ms = 100,
                                .max_backoff_ms = 500,
                                .max_total_wait_ms = 100000,
                                .jitter = false};
    sn_retry_t retry;
    sn_retry_start(&retry, &policy, 1);
    assert_int_equal(sn_retry_next(&retry, 0), 100);
    assert_int_equal(sn_retry_next(&retry, 0), 200);
    assert_int_equal(sn_retry_next(&retry, 0), 400);
    assert_int_equal(sn_retry_next(&retry, 0), 500);
    assert_int_equal(sn_retry_next(&retry, 0), 500);
    assert_int_equal(sn_retry_next(&retry, 0), 500);
    //  Seventh failure: attempts spent
    assert_int_equal(sn_retry_next(&retry, 0), -1);
}

static void test_retry_total_wait_budget(void **state)
{
    (void)state;
    sn_retry_policy_t policy = {.max_attempts = 100,
                                .base_backoff_ms = 100,
                                .max_backoff_ms = 100,
                                .max_total_wait_ms = 250,
                                .jitter = false};
    sn_retry_t retry;
    sn_retry_start(&retry, &policy, 1);
    assert_int_equal(sn_retry_next(&retry, 0), 100);
    assert_int_equal(sn_retry_next(&retry, 0), 100);
    //  The last backoff is shortened to the budget left, then it is over
    assert_int_equal(sn_retry_next(&retry, 0), 50);
    assert_int_equal(sn_retry_next(&retry, 0), -1);
}

static void test_retry_after_is_honoured_or_given_up(void **state)
{
    (void)state;
    sn_retry_policy_t policy = {.max_attempts = 10,
                                .base_backoff_ms = 10,
                                .max_backoff_ms = 20,
                                .max_total_wait_ms = 2500,
                                .jitter = true};
    sn_retry_t retry;
    sn_retry_start(&retry, &policy, 1);
    assert_int_equal(sn_retry_next(&retry, 1), 1000);
    //  1 s more fits (2000 of 2500), another would not: waiting less is useless
    assert_int_equal(sn_retry_next(&retry, 1), 1000);
    assert_int_equal(sn_retry_next(&retry, 1), -1);
    sn_retry_start(&retry, &policy, 1);
    assert_int_equal(sn_retry_next(&retry, 3600), -1);
}

static void test_retry_jitter_stays_within_half_to_full(void **state)
{
    (void)state;
    sn_retry_policy_t policy = {.max_attempts = 2,
                                .base_backoff_ms = 1000,
                                .max_backoff_ms = 1000,
                                .max_total_wait_ms = 100000,
                                .jitter = true};
    long low = 1000, high = 0;
    for (uint64_t seed = 1; seed < 500; seed++) {
        sn_retry_t retry;
        sn_retry_start(&retry, &policy, seed);
        long delay = sn_retry_next(&retry, 0);
        assert_true(delay >= 500 && delay <= 1000);
        low = delay < low ? delay : low;
        high = delay > high ? delay : high;
    }
    //  It does vary
    assert_true(high - low > 200);
}

static void test_retry_policy_validation(void **state)
{
    (void)state;
    sn_retry_policy_t policy = sn_retry_policy_default();
    assert_true(sn_retry_policy_valid(&policy));
    policy.max_backoff_ms = policy.base_backoff_ms - 1;
    assert_false(sn_retry_policy_valid(&policy));
    policy = sn_retry_policy_default();
    policy.max_attempts = 0;
    assert_false(sn_retry_policy_valid(&policy));
    policy = sn_retry_policy_default();
    policy.max_attempts = 1;
    sn_retry_t retry;
    sn_retry_start(&retry, &policy, 3);
    assert_int_equal(sn_retry_next(&retry, 0), -1);
}

//  -------------------------------------------------------------------------
//  Queries and stamps

static void s_assert_and(const char *filter, const char *condition, const char *expected)
{
    char *query = sn_query_and(filter, condition);
    assert_non_null(query);
    assert_string_equal(query, expected);
    free(query);
}

static void test_query_and_keeps_the_filter_meaning(void **state)
{
    (void)state;
    s_assert_and(NULL, "t>=1", "t>=1");
    s_assert_and("", "t>=1", "t>=1");
    s_assert_and("active=true", "t>=1", "active=true^t>=1");
    //  ^OR binds tighter than ^: appending keeps (a OR b) AND t
    s_assert_and("a=1^ORb=2", "t>=1", "a=1^ORb=2^t>=1");
    //  ^NQ: the condition goes into every group
    s_assert_and("a=1^NQb=2", "t>=1", "a=1^t>=1^NQb=2^t>=1");
    //  ORDERBY, GROUPBY and EQ terms are the pager's business
    s_assert_and("a=1^ORDERBYnumber^ORDERBYDESCpriority", "t>=1", "a=1^t>=1");
    s_assert_and("ORDERBYnumber", "t>=1", "t>=1");
    s_assert_and("a=1^EQ", NULL, "a=1");
    s_assert_and("ORDERBYx^NQb=2", NULL, "b=2");
    s_assert_and("a=1^^b=2", NULL, "a=1^b=2");
}

static void test_query_values_and_escaping(void **state)
{
    (void)state;
    assert_true(sn_query_value_safe("INC0010001"));
    assert_true(sn_query_value_safe("a b=c"));
    assert_false(sn_query_value_safe("x^ORactive=true"));
    assert_false(sn_query_value_safe("line\nbreak"));
    assert_false(sn_query_value_safe(""));
    assert_false(sn_query_value_safe(NULL));
    char *escaped = sn_query_escape("a=1^b 2&c/é~._-");
    assert_string_equal(escaped, "a%3D1%5Eb%202%26c%2F%C3%A9~._-");
    free(escaped);
}

static void test_stamps(void **state)
{
    (void)state;
    assert_true(sn_stamp_valid("2024-02-29 23:59:59"));
    assert_false(sn_stamp_valid("2024-02-29T23:59:59"));
    assert_false(sn_stamp_valid("2024-13-01 00:00:00"));
    assert_false(sn_stamp_valid("2024-01-01 24:00:00"));
    assert_false(sn_stamp_valid("2024-01-01 00:00:0"));
    assert_false(sn_stamp_valid("2024-01-01 00:00:00 "));
    assert_false(sn_stamp_valid(NULL));
    char out[SN_STAMP_SIZE];
    assert_true(sn_stamp_add("2024-01-01 00:00:30", -60, out));
    assert_string_equal(out, "2023-12-31 23:59:30");
    assert_true(sn_stamp_add("2024-02-28 23:59:59", 1, out));
    assert_string_equal(out, "2024-02-29 00:00:00");
    assert_false(sn_stamp_add("yesterday", 1, out));
    assert_string_equal(out, "");
    sn_stamp_from_time(0, out);
    assert_string_equal(out, "1970-01-01 00:00:00");
}

//  -------------------------------------------------------------------------
//  Pager

#define ID_A "00000000000000000000000000000aaa"
#define ID_B "00000000000000000000000000000bbb"
#define ID_C "00000000000000000000000000000ccc"

static json_t *s_rows(const char *text)
{
    json_t *rows = json_loads(text, 0, NULL);
    assert_non_null(rows);
    return rows;
}

static void s_advance_ok(sn_pager_t *pager, const char *rows_text)
{
    json_t *rows = s_rows(rows_text);
    sn_error_t err;
    assert_int_equal(sn_pager_advance(pager, rows, &err), SN_OK);
    json_decref(rows);
}

static void test_pager_walks_first_same_after(void **state)
{
    (void)state;
    sn_pager_t *pager = sn_pager_new("active=true", "sys_updated_on", "2024-01-01 00:00:00");
    bool oom;
    assert_string_equal(sn_pager_query(pager, &oom),
                        "active=true^sys_updated_on>=2024-01-01 00:00:00"
                        "^ORDERBYsys_updated_on^ORDERBYsys_id");
    //  A page, even a short one, goes on within its last second
    s_advance_ok(pager, "[{\"sys_id\":\"" ID_A "\",\"sys_updated_on\":\"2024-01-01 00:00:05\"},"
                        "{\"sys_id\":\"" ID_B "\",\"sys_updated_on\":\"2024-01-01 00:00:07\"}]");
    assert_string_equal(sn_pager_query(pager, &oom),
                        "active=true^sys_updated_on=2024-01-01 00:00:07^sys_id>" ID_B
                        "^ORDERBYsys_updated_on^ORDERBYsys_id");
    s_advance_ok(pager, "[{\"sys_id\":\"" ID_C "\",\"sys_updated_on\":\"2024-01-01 00:00:07\"}]");
    assert_string_equal(sn_pager_query(pager, &oom),
                        "active=true^sys_updated_on=2024-01-01 00:00:07^sys_id>" ID_C
                        "^ORDERBYsys_updated_on^ORDERBYsys_id");
    //  The second is finished: move past it
    s_advance_ok(pager, "[]");
    assert_string_equal(sn_pager_query(pager, &oom),
                        "active=true^sys_updated_on>2024-01-01 00:00:07"
                        "^ORDERBYsys_updated_on^ORDERBYsys_id");
    s_advance_ok(pager, "[]");
    assert_null(sn_pager_query(pager, &oom));
    assert_false(oom);
    assert_string_equal(sn_pager_last_time(pager), "2024-01-01 00:00:07");
    sn_pager_destroy(&pager);
    assert_null(pager);
}

static void test_pager_without_lower_bound_or_filter(void **state)
{
    (void)state;
    sn_pager_t *pager = sn_pager_new(NULL, "sys_created_on", NULL);
    bool oom;
    assert_string_equal(sn_pager_query(pager, &oom), "ORDERBYsys_created_on^ORDERBYsys_id");
    s_advance_ok(pager, "[]");
    assert_null(sn_pager_query(pager, &oom));
    assert_string_equal(sn_pager_last_time(pager), "");
    sn_pager_destroy(&pager);

    pager = sn_pager_new("a=1^NQb=2", "sys_updated_on", "2024-01-01 00:00:00");
    assert_string_equal(sn_pager_query(pager, &oom),
                        "a=1^sys_updated_on>=2024-01-01 00:00:00^NQb=2^sys_updated_on>=2024-01-01 "
                        "00:00:00^ORDERBYsys_updated_on^ORDERBYsys_id");
    sn_pager_destroy(&pager);
}

static void s_advance_refused(const char *since, const char *first_page, const char *page)
{
    sn_pager_t *pager = sn_pager_new(NULL, "sys_updated_on", since);
    bool oom;
    assert_non_null(sn_pager_query(pager, &oom));
    if (first_page) {
        s_advance_ok(pager, first_page);
        assert_non_null(sn_pager_query(pager, &oom));
    }
    json_t *rows = s_rows(page);
    sn_error_t err;
    assert_int_equal(sn_pager_advance(pager, rows, &err), SN_E_BAD_RESPONSE);
    json_decref(rows);
    //  A refused walk is over: no endless loop on a server that ignores keys
    assert_null(sn_pager_query(pager, &oom));
    sn_pager_destroy(&pager);
}

static void test_pager_refuses_rows_that_do_not_advance(void **state)
{
    (void)state;
    const char *one = "[{\"sys_id\":\"" ID_B "\",\"sys_updated_on\":\"2024-01-01 00:00:07\"}]";
    //  The same row again (the server ignored sys_id>)
    s_advance_refused(NULL, one, one);
    //  Rows out of order within a page
    s_advance_refused(NULL, NULL,
                      "[{\"sys_id\":\"" ID_B "\",\"sys_updated_on\":\"2024-01-01 00:00:07\"},"
                      "{\"sys_id\":\"" ID_A "\",\"sys_updated_on\":\"2024-01-01 00:00:07\"}]");
    //  A row older than the lower bound
    s_advance_refused("2024-06-01 00:00:00", NULL,
                      "[{\"sys_id\":\"" ID_A "\",\"sys_updated_on\":\"2024-01-01 00:00:07\"}]");
    //  A later second while finishing one
    s_advance_refused(NULL, one,
                      "[{\"sys_id\":\"" ID_C "\",\"sys_updated_on\":\"2024-01-01 00:00:08\"}]");
    //  Keys missing or malformed
    s_advance_refused(NULL, NULL, "[{\"sys_updated_on\":\"2024-01-01 00:00:07\"}]");
    s_advance_refused(NULL, NULL, "[{\"sys_id\":\"" ID_A "\",\"sys_updated_on\":\"soon\"}]");
    s_advance_refused(NULL, NULL, "{\"not\":\"an array\"}");
}

//  -------------------------------------------------------------------------
//  Seen set

static void test_seen_set_tracks_versions_and_prunes(void **state)
{
    (void)state;
    sn_seen_t *seen = sn_seen_new();
    assert_true(sn_seen_is_new(seen, ID_A, "0"));
    assert_true(sn_seen_add(seen, ID_A, "0", "2024-01-01 00:00:01"));
    assert_false(sn_seen_is_new(seen, ID_A, "0"));
    assert_true(sn_seen_is_new(seen, ID_A, "1"));
    assert_true(sn_seen_add(seen, ID_A, "1", "2024-01-01 00:00:09"));
    assert_false(sn_seen_is_new(seen, ID_A, "1"));
    assert_true(sn_seen_add(seen, ID_B, "", "2024-01-01 00:00:05"));
    assert_int_equal(sn_seen_size(seen), 2);
    sn_seen_prune(seen, "2024-01-01 00:00:06");
    assert_int_equal(sn_seen_size(seen), 1);
    assert_true(sn_seen_is_new(seen, ID_B, ""));
    assert_false(sn_seen_is_new(seen, ID_A, "1"));
    sn_seen_destroy(&seen);
    assert_null(seen);
    sn_seen_destroy(&seen);
}

//  -------------------------------------------------------------------------
//  Configuration

static sn_config_t s_config(const char *url)
{
    sn_config_t cfg = {.instance_url = url, .user = "sync", .password = "Pw-123456"};
    return cfg;
}

//  sn_client_new must refuse cfg with SN_E_CONFIG and a message holding
//  `expected`, and never echo the password.
static void s_refused(const sn_config_t *cfg, const char *expected)
{
    sn_error_t err;
    sn_client_t *client = sn_client_new(cfg, &err);
    assert_null(client);
    assert_int_equal(err.code, SN_E_CONFIG);
    if (!strstr(err.message, expected) && !strstr(err.detail, expected))
        fail_msg("'%s' / '%s' does not mention '%s'", err.message, err.detail, expected);
    assert_null(strstr(err.message, "Pw-123456"));
    assert_null(strstr(err.detail, "Pw-123456"));
}

static void s_accepted(const sn_config_t *cfg)
{
    sn_error_t err;
    sn_client_t *client = sn_client_new(cfg, &err);
    if (!client)
        fail_msg("refused %s: %s (%s)", cfg->instance_url, err.message, err.detail);
    sn_client_destroy(&client);
    assert_null(client);
}

static void test_config_refuses_plain_http_to_remote_hosts(void **state)
{
    (void)state;
    sn_config_t cfg = s_config("http://acme.service-now.com");
    s_refused(&cfg, "plain http");
    cfg.instance_url = "http://10.0.0.5:8080";
    s_refused(&cfg, "plain http");
    cfg.instance_url = "http://127.example.com";
    s_refused(&cfg, "plain http");
    cfg.allow_insecure_http = true;
    s_accepted(&cfg);

    cfg = s_config("http://127.0.0.1:8080");
    s_accepted(&cfg);
    cfg.instance_url = "http://127.9.8.7";
    s_accepted(&cfg);
    cfg.instance_url = "http://localhost:1234/";
    s_accepted(&cfg);
    cfg.instance_url = "http://[::1]:8080";
    s_accepted(&cfg);
    cfg.instance_url = "https://acme.service-now.com";
    s_accepted(&cfg);
}

static void test_config_refuses_bad_urls_and_values(void **state)
{
    (void)state;
    sn_config_t cfg = s_config(NULL);
    s_refused(&cfg, "instance URL");
    cfg.instance_url = "ftp://acme.service-now.com";
    s_refused(&cfg, "ftp");
    cfg.instance_url = "https://sync:Pw-123456@acme.service-now.com";
    s_refused(&cfg, "credentials");
    cfg.instance_url = "https://acme.service-now.com/?x=1";
    s_refused(&cfg, "query");
    cfg.instance_url = "not a url";
    s_refused(&cfg, "URL");

    cfg = s_config("https://acme.service-now.com");
    cfg.password = NULL;
    s_refused(&cfg, "credentials");
    cfg = s_config("https://acme.service-now.com");
    cfg.auth = SN_AUTH_OAUTH;
    cfg.oauth_client_id = "app";
    s_refused(&cfg, "client id and secret");
    cfg = s_config("https://acme.service-now.com");
    cfg.page_size = 20000;
    s_refused(&cfg, "page size");
    cfg = s_config("https://acme.service-now.com");
    cfg.retry.max_attempts = 3;
    cfg.retry.base_backoff_ms = 100;
    cfg.retry.max_backoff_ms = 10;
    s_refused(&cfg, "retry policy");
    cfg = s_config("https://acme.service-now.com");
    cfg.request_timeout_ms = -1;
    s_refused(&cfg, "timeout");
}

static void test_client_keeps_the_url_without_trailing_slash(void **state)
{
    (void)state;
    sn_config_t cfg = s_config("https://acme.service-now.com/sn//");
    sn_error_t err;
    sn_client_t *client = sn_client_new(&cfg, &err);
    assert_non_null(client);
    assert_string_equal(sn_client_url(client), "https://acme.service-now.com/sn");
    assert_int_equal(sn_client_page_size(client), 500);
    sn_client_destroy(&client);
}

static void test_invalid_arguments_make_no_request(void **state)
{
    (void)state;
    //  Port 1 on loopback: any request would fail as unavailable
    sn_config_t cfg = s_config("http://127.0.0.1:1");
    sn_error_t err;
    sn_client_t *client = sn_client_new(&cfg, &err);
    assert_non_null(client);
    json_t *record = NULL;
    assert_int_equal(sn_incident_get(client, "../sys_user", NULL, &record, &err), SN_E_BAD_REQUEST);
    assert_int_equal(sn_incident_get_by_number(client, "INC1^ORactive=true", NULL, &record, &err),
                     SN_E_BAD_REQUEST);
    json_t *rows = NULL;
    sn_list_params_t params = {0};
    assert_int_equal(sn_table_list(client, "incident?x=1", &params, &rows, NULL, &err),
                     SN_E_BAD_REQUEST);
    json_t *fields = json_pack("[s]", "not an object");
    assert_int_equal(sn_table_insert(client, "incident", fields, NULL, &err), SN_E_BAD_REQUEST);
    json_decref(fields);
    sn_seen_t *seen = sn_seen_new();
    sn_incident_poll_t poll = {.cursor = "last tuesday", .seen = seen};
    sn_poll_result_t result;
    assert_int_equal(sn_incident_poll_all(client, &poll, &rows, &result, &err), SN_E_BAD_REQUEST);
    json_decref(rows);
    sn_seen_destroy(&seen);
    assert_int_equal(sn_client_stats(client).requests, 0);
    sn_client_destroy(&client);
}

//  -------------------------------------------------------------------------
//  Attachments

static void test_attachment_paths_escape_every_value(void **state)
{
    (void)state;
    char *path = sn_attachment_upload_path("incident", "0123456789abcdef0123456789abcdef",
                                           "../a b&c=d+e?f#g%h/\xc3\xbc\xe6\x97\xa5.txt");
    assert_string_equal(path,
                        "/api/now/v1/attachment/file?table_name=incident"
                        "&table_sys_id=0123456789abcdef0123456789abcdef"
                        "&file_name=..%2Fa%20b%26c%3Dd%2Be%3Ff%23g%25h%2F%C3%BC%E6%97%A5.txt");
    free(path);
    path = sn_attachment_list_path("table_sys_id=X^ORDERBYsys_created_on", 2);
    assert_string_equal(path, "/api/now/v1/attachment?sysparm_query=table_sys_id%3DX%5EORDERBY"
                              "sys_created_on&sysparm_limit=2&sysparm_fields=sys_id%2Cfile_name"
                              "%2Ccontent_type%2Csize_bytes%2Ctable_name%2Ctable_sys_id%2C"
                              "sys_created_on%2Csys_created_by%2Chash");
    free(path);
}

static void test_attachment_content_range(void **state)
{
    (void)state;
    uint64_t first = 99;
    assert_true(sn_attachment_range_first("bytes 100-199/200", &first));
    assert_int_equal(first, 100);
    assert_true(sn_attachment_range_first("bytes 0-0/1", &first));
    assert_int_equal(first, 0);
    assert_true(sn_attachment_range_first("bytes 5-9/*", &first));
    assert_int_equal(first, 5);
    assert_true(sn_attachment_range_first("BYTES 1073741823-1073741823/1073741824", &first));
    assert_int_equal(first, 1073741823);
    const char *bad[] = {"",
                         "bytes */200",
                         "bytes 5-4/10",
                         "bytes 1-10/10",
                         "bytes 1-2/3x",
                         "items 1-2/3",
                         "bytes 1-/3",
                         "bytes -1-2/3",
                         "bytes 99999999999999999999-99999999999999999999/*",
                         NULL};
    for (size_t i = 0; bad[i]; i++) {
        first = 77;
        assert_false(sn_attachment_range_first(bad[i], &first));
        assert_int_equal(first, 77);
    }
}

//  The code sn_attachment_upload_error makes of an upload failure.
static sn_err_code_t s_upload_code(sn_err_code_t code, long status, const char *message,
                                   const char *detail, bool unknown, sn_error_t *err)
{
    sn_error_set(err, code, status, message, "%s", detail);
    return sn_attachment_upload_error(err, unknown);
}

static void test_attachment_upload_failures_are_classified(void **state)
{
    (void)state;
    sn_error_t err;
    //  Refusals of the file itself, whatever code the status gave
    assert_int_equal(s_upload_code(SN_E_BAD_REQUEST, 400,
                                   "Attachment refused: extension exe is not allowed",
                                   "glide.attachment.extensions allows: txt", false, &err),
                     SN_E_FILE_REFUSED);
    assert_string_equal(err.message, "attachment refused by ServiceNow (HTTP 400): Attachment "
                                     "refused: extension exe is not allowed");
    assert_string_equal(err.detail, "glide.attachment.extensions allows: txt");
    assert_int_equal(err.http_status, 400);
    assert_int_equal(s_upload_code(SN_E_BAD_REQUEST, 400, "Exception while reading request",
                                   "Rejected large REST payload with content-length = 20971520 "
                                   "bytes. Max allowed: 10485760 bytes.",
                                   true, &err),
                     SN_E_FILE_REFUSED);
    assert_int_equal(s_upload_code(SN_E_PERMISSION, 403, "Operation Failed",
                                   "ACL Exception Insert Failed due to security constraints", false,
                                   &err),
                     SN_E_FILE_REFUSED);
    assert_non_null(strstr(err.message, "HTTP 403"));
    assert_int_equal(s_upload_code(SN_E_DATA_POLICY, 403, "Operation Failed",
                                   "Data Policy Exception: x", false, &err),
                     SN_E_FILE_REFUSED);
    assert_int_equal(
        s_upload_code(SN_E_BAD_REQUEST, 413, "Maximum file size exceeded", "", false, &err),
        SN_E_FILE_REFUSED);
    assert_int_equal(
        s_upload_code(SN_E_BAD_REQUEST, 415, "HTTP 415 from ServiceNow", "", false, &err),
        SN_E_FILE_REFUSED);
    //  A malformed request is the client's bug, not the file's
    assert_int_equal(s_upload_code(SN_E_BAD_REQUEST, 400, "Missing parameter: file_name",
                                   "table_name, table_sys_id and file_name are required", false,
                                   &err),
                     SN_E_BAD_REQUEST);
    assert_string_equal(err.message, "Missing parameter: file_name");
    assert_int_equal(s_upload_code(SN_E_BAD_REQUEST, 400, "Invalid table nope", "", false, &err),
                     SN_E_BAD_REQUEST);
    assert_int_equal(s_upload_code(SN_E_BAD_REQUEST, 400,
                                   "Requested URI does not represent any resource", "", false,
                                   &err),
                     SN_E_BAD_REQUEST);
    //  Other codes keep their meaning
    assert_int_equal(s_upload_code(SN_E_NOT_FOUND, 404, "No Record found", "", false, &err),
                     SN_E_NOT_FOUND);
    assert_int_equal(s_upload_code(SN_E_AUTH, 401, "User Not Authenticated", "", false, &err),
                     SN_E_AUTH);
    assert_int_equal(s_upload_code(SN_E_RATE_LIMITED, 429, "Rate limit exceeded", "", false, &err),
                     SN_E_RATE_LIMITED);
    //  A transaction cancelled by its quota, even on a 400, is a timeout
    assert_int_equal(s_upload_code(SN_E_TIMEOUT, 400,
                                   "Transaction cancelled: maximum execution time exceeded", "",
                                   true, &err),
                     SN_E_TIMEOUT);
    assert_non_null(strstr(err.message, "outcome unknown"));
    //  Outages after the body may have gone: "outcome unknown", said once
    assert_int_equal(
        s_upload_code(SN_E_UNAVAILABLE, 503, "instance unavailable: HTML page", "", true, &err),
        SN_E_UNAVAILABLE);
    assert_string_equal(err.message, "attachment upload outcome unknown: instance unavailable: "
                                     "HTML page; list the record's attachments before sending "
                                     "it again");
    assert_int_equal(s_upload_code(SN_E_UNAVAILABLE, 0,
                                   "connection closed before ServiceNow answered: outcome unknown",
                                   "", true, &err),
                     SN_E_UNAVAILABLE);
    assert_string_equal(err.message,
                        "connection closed before ServiceNow answered: outcome unknown");
    //  ...and not when nothing was sent
    assert_int_equal(s_upload_code(SN_E_UNAVAILABLE, 0, "cannot reach ServiceNow", "", false, &err),
                     SN_E_UNAVAILABLE);
    assert_string_equal(err.message, "cannot reach ServiceNow");
}

static void test_attachment_arguments_make_no_request(void **state)
{
    (void)state;
    sn_config_t cfg = s_config("http://127.0.0.1:1");
    sn_error_t err;
    sn_client_t *client = sn_client_new(&cfg, &err);
    assert_non_null(client);
    json_t *meta = NULL;
    assert_int_equal(sn_attachment_get(client, "../../table/incident", &meta, &err),
                     SN_E_BAD_REQUEST);
    assert_null(meta);
    assert_int_equal(sn_attachment_delete(client, "x", &err), SN_E_BAD_REQUEST);
    uint64_t written = 9;
    sn_attachment_fd_t out = {.fd = 1};
    assert_int_equal(sn_attachment_download(client, "0123456789abcdef0123456789abcde/", 0,
                                            sn_attachment_fd_sink, &out, &written, &meta, &err),
                     SN_E_BAD_REQUEST);
    assert_int_equal(written, 0);
    json_t *rows = NULL;
    assert_int_equal(sn_attachment_list_record(client, "incident/x",
                                               "0123456789abcdef0123456789abcdef", &rows, &err),
                     SN_E_BAD_REQUEST);
    assert_null(rows);
    sn_attachment_file_t file = {.table = "incident",
                                 .table_sys_id = "0123456789abcdef0123456789abcdef",
                                 .file_name = "tab\there.txt",
                                 .fd = 0,
                                 .size = 1};
    assert_int_equal(sn_attachment_upload(client, &file, &meta, &err), SN_E_BAD_REQUEST);
    file.file_name = "ok.txt";
    file.content_type = "text/plain\nX-Injected: 1";
    assert_int_equal(sn_attachment_upload(client, &file, &meta, &err), SN_E_BAD_REQUEST);
    assert_int_equal(sn_client_stats(client).requests, 0);
    assert_true(sn_is_table_name("sys_attachment"));
    assert_false(sn_is_table_name("Incident"));
    assert_false(sn_is_table_name(""));
    sn_client_destroy(&client);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_names_are_distinct),
        cmocka_unit_test(test_error_scopes),
        cmocka_unit_test(test_error_scrub_removes_secrets),
        cmocka_unit_test(test_error_set_truncates),
        cmocka_unit_test(test_record_normalise_makes_every_value_a_string),
        cmocka_unit_test(test_sys_id_shape),
        cmocka_unit_test(test_response_json_result_is_decoded),
        cmocka_unit_test(test_response_html_is_an_outage_even_with_200),
        cmocka_unit_test(test_response_not_json_is_bad_response),
        cmocka_unit_test(test_response_error_envelopes_map_to_codes),
        cmocka_unit_test(test_response_429_carries_retry_after),
        cmocka_unit_test(test_response_result_rejects_wrong_shapes),
        cmocka_unit_test(test_retry_backoff_doubles_up_to_the_cap),
        cmocka_unit_test(test_retry_total_wait_budget),
        cmocka_unit_test(test_retry_after_is_honoured_or_given_up),
        cmocka_unit_test(test_retry_jitter_stays_within_half_to_full),
        cmocka_unit_test(test_retry_policy_validation),
        cmocka_unit_test(test_query_and_keeps_the_filter_meaning),
        cmocka_unit_test(test_query_values_and_escaping),
        cmocka_unit_test(test_stamps),
        cmocka_unit_test(test_pager_walks_first_same_after),
        cmocka_unit_test(test_pager_without_lower_bound_or_filter),
        cmocka_unit_test(test_pager_refuses_rows_that_do_not_advance),
        cmocka_unit_test(test_seen_set_tracks_versions_and_prunes),
        cmocka_unit_test(test_config_refuses_plain_http_to_remote_hosts),
        cmocka_unit_test(test_config_refuses_bad_urls_and_values),
        cmocka_unit_test(test_client_keeps_the_url_without_trailing_slash),
        cmocka_unit_test(test_invalid_arguments_make_no_request),
        cmocka_unit_test(test_attachment_paths_escape_every_value),
        cmocka_unit_test(test_attachment_content_range),
        cmocka_unit_test(test_attachment_upload_failures_are_classified),
        cmocka_unit_test(test_attachment_arguments_make_no_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
