/*  test_sn_emulator.c: the ServiceNow client against the emulator
    (tests/snemu): one test per operation and one per fault the client must
    survive. Each test starts from an empty instance with no faults and an empty
    request log; the request log is the witness of what the client really sent. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "sn_client.h"
#include "sn_incident.h"
#include "sn_journal.h"
#include "sn_user.h"
#include "snemu_proc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define USER         "twinsync"
#define PASSWORD     "Tw1nsync-Passw0rd"
#define OAUTH_ID     "twinsync-app"
#define OAUTH_SECRET "App-S3cret-Value"

static snemu_proc_t *s_emu;

//  -------------------------------------------------------------------------
//  Helpers

static int s_group_setup(void **state)
{
    (void)state;
    const char *args[] = {"--instance",
                          "twinsync-test",
                          "--user",
                          USER ":" PASSWORD ":Twin Sync",
                          "--user",
                          "admin:admin:System Administrator",
                          "--oauth-client",
                          OAUTH_ID ":" OAUTH_SECRET,
                          "--token-ttl",
                          "2",
                          NULL};
    s_emu = snemu_proc_start(args);
    return 0;
}

static int s_group_teardown(void **state)
{
    (void)state;
    snemu_proc_stop(&s_emu);
    return 0;
}

static int s_setup(void **state)
{
    (void)state;
    snemu_proc_reset_all(s_emu);
    return 0;
}

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

//  A configuration for the emulator: basic auth, millisecond backoffs.
static sn_config_t s_config(void)
{
    sn_config_t cfg = {
        .instance_url = snemu_proc_url(s_emu),
        .user = USER,
        .password = PASSWORD,
        .connect_timeout_ms = 2000,
        .request_timeout_ms = 10000,
        .retry = {.max_attempts = 5,
                  .base_backoff_ms = 5,
                  .max_backoff_ms = 50,
                  .max_total_wait_ms = 5000,
                  .jitter = true},
    };
    return cfg;
}

static sn_client_t *s_client_with(const sn_config_t *cfg)
{
    sn_error_t err;
    sn_client_t *client = sn_client_new(cfg, &err);
    if (!client)
        fail_msg("sn_client_new: %s (%s)", err.message, err.detail);
    return client;
}

static sn_client_t *s_client(void)
{
    sn_config_t cfg = s_config();
    return s_client_with(&cfg);
}

//  Creates an incident with a short description and a tag in
//  correlation_display; returns its keys.
static sn_created_t s_create(sn_client_t *client, const char *description, const char *tag)
{
    json_t *fields = json_pack("{ssss}", "short_description", description, "correlation_display",
                               tag ? tag : "");
    sn_created_t created;
    sn_error_t err;
    sn_err_code_t code = sn_incident_create(client, fields, &created, NULL, &err);
    json_decref(fields);
    if (code != SN_OK)
        fail_msg("create: %s: %s (%s)", sn_err_name(code), err.message, err.detail);
    return created;
}

static void s_assert_ok(sn_err_code_t code, const sn_error_t *err)
{
    if (code != SN_OK)
        fail_msg("expected SN_OK, got %s (HTTP %ld): %s / %s", sn_err_name(code), err->http_status,
                 err->message, err->detail);
}

//  Sleeps until the wall clock is early in a second, so that the next few
//  writes are likely to share one second.
static void s_align_to_second(void)
{
    for (;;) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        if (ts.tv_nsec < 50000000L)
            return;
        struct timespec nap = {0, 1000000000L - ts.tv_nsec + 1000000L};
        nanosleep(&nap, NULL);
    }
}

//  Sleeps into the next wall-clock second. A poll reads only rows stamped
//  before the second it starts in (sn_poll.h), so a test that has just written
//  waits for that second to end before it polls.
static void s_settle(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct timespec nap = {0, 1000000000L - ts.tv_nsec + 20000000L};
    if (nap.tv_nsec >= 1000000000L) {
        nap.tv_sec++;
        nap.tv_nsec -= 1000000000L;
    }
    nanosleep(&nap, NULL);
}

//  The sys_updated_on of an incident.
static void s_updated_on(sn_client_t *client, const char *sys_id, char out[SN_STAMP_SIZE])
{
    json_t *record = NULL;
    sn_error_t err;
    s_assert_ok(sn_incident_get(client, sys_id, "sys_updated_on", &record, &err), &err);
    snprintf(out, SN_STAMP_SIZE, "%s", sn_field(record, "sys_updated_on"));
    json_decref(record);
}

//  True when the JSON array of records holds one with this sys_id.
static bool s_has(const json_t *records, const char *sys_id)
{
    size_t index;
    json_t *record;
    json_array_foreach(records, index,
                       record) if (strcmp(sn_field(record, "sys_id"), sys_id) == 0) return true;
    return false;
}

//  -------------------------------------------------------------------------
//  Operations

static void test_create_then_get_by_sys_id_and_number(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    json_t *fields = json_pack("{ssssssss}", "short_description", "Mail is down", "urgency", "1",
                               "impact", "2", "correlation_id", "remote-sys-id-1");
    sn_created_t created;
    json_t *record = NULL;
    sn_error_t err;
    s_assert_ok(sn_incident_create(client, fields, &created, &record, &err), &err);
    json_decref(fields);
    assert_true(sn_is_sys_id(created.sys_id));
    assert_string_equal(created.number, "INC0010001");
    assert_string_equal(sn_field(record, "priority"), "2");
    assert_string_equal(sn_field(record, "sys_mod_count"), "0");
    json_decref(record);

    json_t *got = NULL;
    s_assert_ok(sn_incident_get(client, created.sys_id, NULL, &got, &err), &err);
    assert_string_equal(sn_field(got, "short_description"), "Mail is down");
    assert_string_equal(sn_field(got, "correlation_id"), "remote-sys-id-1");
    //  References arrive as bare sys_ids (sysparm_exclude_reference_link)
    assert_true(sn_is_sys_id(sn_field(got, "opened_by")));
    json_decref(got);

    s_assert_ok(sn_incident_get_by_number(client, "INC0010001", "sys_id,number", &got, &err), &err);
    assert_string_equal(sn_field(got, "sys_id"), created.sys_id);
    assert_null(json_object_get(got, "short_description"));
    json_decref(got);
    sn_client_destroy(&client);
    assert_null(client);
}

static void test_get_unknown_sys_id_is_not_found(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    json_t *record = NULL;
    sn_error_t err;
    sn_err_code_t code =
        sn_incident_get(client, "0123456789abcdef0123456789abcdef", NULL, &record, &err);
    assert_int_equal(code, SN_E_NOT_FOUND);
    assert_int_equal(err.http_status, 404);
    assert_string_equal(err.message, "No Record found");
    assert_string_equal(err.detail, "Record doesn't exist or ACL restricts the record retrieval");
    assert_null(record);
    //  No retry for a 404
    assert_int_equal(snemu_proc_count(s_emu, "/api/now/table/incident", 0), 1);

    code = sn_incident_get_by_number(client, "INC9999999", NULL, &record, &err);
    assert_int_equal(code, SN_E_NOT_FOUND);
    assert_null(record);
    sn_client_destroy(&client);
}

static void test_find_by_correlation_returns_every_match_oldest_first(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    json_t *fields = json_pack("{ssss}", "short_description", "first", "correlation_id", "ext-42");
    sn_created_t first, second, other;
    sn_error_t err;
    s_assert_ok(sn_incident_create(client, fields, &first, NULL, &err), &err);
    json_object_set_new(fields, "short_description", json_string("second"));
    s_assert_ok(sn_incident_create(client, fields, &second, NULL, &err), &err);
    json_object_set_new(fields, "correlation_id", json_string("ext-43"));
    s_assert_ok(sn_incident_create(client, fields, &other, NULL, &err), &err);
    json_decref(fields);

    json_t *matches = NULL;
    s_assert_ok(sn_incident_find_by_correlation(client, "ext-42", "sys_id,short_description",
                                                &matches, &err),
                &err);
    assert_int_equal(json_array_size(matches), 2);
    assert_string_equal(sn_field(json_array_get(matches, 0), "sys_id"), first.sys_id);
    assert_string_equal(sn_field(json_array_get(matches, 1), "sys_id"), second.sys_id);
    json_decref(matches);

    s_assert_ok(sn_incident_find_by_correlation(client, "ext-none", NULL, &matches, &err), &err);
    assert_int_equal(json_array_size(matches), 0);
    json_decref(matches);

    //  A value that would inject query terms is refused before any request
    size_t before = snemu_proc_count(s_emu, "/api/", 0);
    assert_int_equal(
        sn_incident_find_by_correlation(client, "x^ORactive=true", NULL, &matches, &err),
        SN_E_BAD_REQUEST);
    assert_null(matches);
    assert_int_equal(snemu_proc_count(s_emu, "/api/", 0), before);
    sn_client_destroy(&client);
}

static void test_update_patches_fields(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_created_t created = s_create(client, "Printer jam", NULL);
    json_t *fields = json_pack("{ssss}", "urgency", "1", "impact", "1");
    json_t *record = NULL;
    sn_error_t err;
    s_assert_ok(sn_incident_update(client, created.sys_id, fields, &record, &err), &err);
    json_decref(fields);
    assert_string_equal(sn_field(record, "priority"), "1");
    assert_string_equal(sn_field(record, "sys_mod_count"), "1");
    assert_string_equal(sn_field(record, "short_description"), "Printer jam");
    json_decref(record);
    assert_int_equal(snemu_proc_count(s_emu, "/api/now/table/incident/", 200), 1);
    sn_client_destroy(&client);
}

static void test_resolve_without_close_fields_is_data_policy(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_created_t created = s_create(client, "VPN flaps", NULL);
    json_t *fields = json_pack("{ss}", "state", "6");
    sn_error_t err;
    sn_err_code_t code = sn_incident_update(client, created.sys_id, fields, NULL, &err);
    assert_int_equal(code, SN_E_DATA_POLICY);
    assert_int_equal(err.http_status, 403);
    assert_string_equal(err.message, "Operation Failed");
    assert_non_null(strstr(err.detail, "Data Policy Exception"));
    assert_non_null(strstr(err.detail, "Resolution code"));
    assert_int_equal(sn_err_scope(code), SN_SCOPE_RECORD);

    json_object_set_new(fields, "close_code", json_string("Solution provided"));
    json_object_set_new(fields, "close_notes", json_string("Rebooted the concentrator"));
    json_t *record = NULL;
    s_assert_ok(sn_incident_update(client, created.sys_id, fields, &record, &err), &err);
    assert_string_equal(sn_field(record, "state"), "6");
    json_decref(record);
    json_decref(fields);
    sn_client_destroy(&client);
}

static void test_unknown_table_is_bad_request(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_list_params_t params = {.query = "active=true"};
    json_t *rows = NULL;
    sn_error_t err;
    sn_err_code_t code = sn_table_list(client, "not_a_real_class", &params, &rows, NULL, &err);
    assert_int_equal(code, SN_E_BAD_REQUEST);
    assert_int_equal(err.http_status, 400);
    assert_string_equal(err.message, "Invalid table not_a_real_class");
    assert_null(rows);
    sn_client_destroy(&client);
}

static void test_comment_is_read_back_from_the_journal(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_created_t created = s_create(client, "Disk full", NULL);
    sn_error_t err;
    s_assert_ok(sn_incident_add_comment(client, created.sys_id, "Cleaned /var/log", NULL, &err),
                &err);
    json_t *fields = json_pack("{ss}", "work_notes", "internal: check the cron job");
    s_assert_ok(sn_incident_update(client, created.sys_id, fields, NULL, &err), &err);
    json_decref(fields);

    sn_seen_t *seen = sn_seen_new();
    const char *ids[] = {created.sys_id};
    sn_journal_poll_t poll = {.incident_ids = ids, .count = 1, .seen = seen};
    json_t *entries = NULL;
    sn_poll_result_t result;
    s_settle();
    s_assert_ok(sn_journal_poll_all(client, &poll, &entries, &result, &err), &err);
    //  Work notes stay out unless asked for
    assert_int_equal(json_array_size(entries), 1);
    json_t *entry = json_array_get(entries, 0);
    assert_string_equal(sn_field(entry, "value"), "Cleaned /var/log");
    assert_string_equal(sn_field(entry, "element"), "comments");
    assert_string_equal(sn_field(entry, "element_id"), created.sys_id);
    assert_string_equal(sn_field(entry, "sys_created_by"), USER);
    assert_string_equal(result.cursor, sn_field(entry, "sys_created_on"));
    json_decref(entries);

    sn_seen_t *seen_all = sn_seen_new();
    poll.include_work_notes = true;
    poll.seen = seen_all;
    s_settle();
    s_assert_ok(sn_journal_poll_all(client, &poll, &entries, &result, &err), &err);
    assert_int_equal(json_array_size(entries), 2);
    json_decref(entries);
    sn_seen_destroy(&seen);
    sn_seen_destroy(&seen_all);
    sn_client_destroy(&client);
}

static void test_journal_poll_delivers_each_entry_once(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_created_t created = s_create(client, "Slow wiki", NULL);
    sn_error_t err;
    s_assert_ok(sn_incident_add_comment(client, created.sys_id, "one", NULL, &err), &err);
    s_assert_ok(sn_incident_add_comment(client, created.sys_id, "two", NULL, &err), &err);
    sn_seen_t *seen = sn_seen_new();
    const char *ids[] = {created.sys_id};
    sn_journal_poll_t poll = {.incident_ids = ids, .count = 1, .lookback_s = 60, .seen = seen};
    json_t *entries = NULL;
    sn_poll_result_t result;
    s_settle();
    s_assert_ok(sn_journal_poll_all(client, &poll, &entries, &result, &err), &err);
    assert_int_equal(json_array_size(entries), 2);
    json_decref(entries);

    char cursor[SN_STAMP_SIZE];
    snprintf(cursor, sizeof cursor, "%s", result.cursor);
    poll.cursor = cursor;
    s_settle();
    s_assert_ok(sn_journal_poll_all(client, &poll, &entries, &result, &err), &err);
    assert_int_equal(json_array_size(entries), 0);
    assert_int_equal(result.duplicates, 2);

    s_assert_ok(sn_incident_add_comment(client, created.sys_id, "three", NULL, &err), &err);
    json_decref(entries);
    s_settle();
    s_assert_ok(sn_journal_poll_all(client, &poll, &entries, &result, &err), &err);
    assert_int_equal(json_array_size(entries), 1);
    assert_string_equal(sn_field(json_array_get(entries, 0), "value"), "three");
    json_decref(entries);
    sn_seen_destroy(&seen);
    sn_client_destroy(&client);
}

static void test_journal_without_comments_is_not_the_trap(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_created_t created = s_create(client, "No comments here", NULL);
    sn_seen_t *seen = sn_seen_new();
    const char *ids[] = {created.sys_id};
    sn_journal_poll_t poll = {.incident_ids = ids, .count = 1, .seen = seen};
    json_t *entries = NULL;
    sn_poll_result_t result;
    sn_error_t err;
    s_settle();
    s_assert_ok(sn_journal_poll_all(client, &poll, &entries, &result, &err), &err);
    assert_int_equal(json_array_size(entries), 0);
    json_decref(entries);
    sn_seen_destroy(&seen);
    sn_client_destroy(&client);
}

static void test_journal_acl_trap_is_reported(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_created_t created = s_create(client, "Badge reader broken", NULL);
    sn_error_t err;
    s_assert_ok(sn_incident_add_comment(client, created.sys_id, "Replaced the reader", NULL, &err),
                &err);
    snemu_proc_faults(s_emu, "{\"journal_acl\": true}");
    sn_seen_t *seen = sn_seen_new();
    const char *ids[] = {created.sys_id};
    sn_journal_poll_t poll = {.incident_ids = ids, .count = 1, .seen = seen};
    json_t *entries = NULL;
    sn_poll_result_t result;
    s_settle();
    sn_err_code_t code = sn_journal_poll_all(client, &poll, &entries, &result, &err);
    assert_int_equal(code, SN_E_JOURNAL_UNREADABLE);
    assert_int_equal(sn_err_scope(code), SN_SCOPE_CONNECTION);
    assert_non_null(strstr(err.detail, "sys_journal_field"));
    assert_int_equal(json_array_size(entries), 0);
    json_decref(entries);
    //  The cursor did not move past the hidden entries
    assert_string_equal(result.cursor, "");

    //  Once the ACL is fixed the same poll delivers the comment
    snemu_proc_faults(s_emu, "{\"journal_acl\": false}");
    s_settle();
    s_assert_ok(sn_journal_poll_all(client, &poll, &entries, &result, &err), &err);
    assert_int_equal(json_array_size(entries), 1);
    json_decref(entries);
    sn_seen_destroy(&seen);
    sn_client_destroy(&client);
}

static void test_user_found_by_user_name(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    json_t *user = NULL;
    sn_error_t err;
    s_assert_ok(sn_user_find(client, USER, NULL, &user, &err), &err);
    assert_string_equal(sn_field(user, "name"), "Twin Sync");
    assert_string_equal(sn_field(user, "user_name"), USER);
    assert_true(sn_is_sys_id(sn_field(user, "sys_id")));
    json_decref(user);
    assert_int_equal(sn_user_find(client, "nobody", NULL, &user, &err), SN_E_NOT_FOUND);
    assert_null(user);
    sn_client_destroy(&client);
}

//  -------------------------------------------------------------------------
//  Change polling

static void test_poll_reads_every_page_and_returns_the_cursor(void **state)
{
    (void)state;
    sn_config_t cfg = s_config();
    cfg.page_size = 3;
    sn_client_t *client = s_client_with(&cfg);
    sn_created_t created[7];
    for (int i = 0; i < 7; i++)
        created[i] = s_create(client, "paged", "tag-pages");
    s_create(client, "not in the trigger", "tag-other");

    sn_seen_t *seen = sn_seen_new();
    sn_incident_poll_t poll = {.trigger = "correlation_display=tag-pages", .seen = seen};
    json_t *records = NULL;
    sn_poll_result_t result;
    sn_error_t err;
    s_settle();
    s_assert_ok(sn_incident_poll_all(client, &poll, &records, &result, &err), &err);
    assert_int_equal(json_array_size(records), 7);
    for (int i = 0; i < 7; i++)
        assert_true(s_has(records, created[i].sys_id));
    char last[SN_STAMP_SIZE];
    s_updated_on(client, created[6].sys_id, last);
    assert_string_equal(result.cursor, last);
    assert_true(result.pages >= 3);
    json_decref(records);
    sn_seen_destroy(&seen);
    sn_client_destroy(&client);
}

//  A poll from a cursor moves the cursor up to its bound, the instance's clock
//  minus one second: once the instance is quiet for the look-back, a poll is
//  one one-row request that finds nothing, and no row is read again.
static void test_quiet_poll_moves_the_cursor_and_reads_nothing(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    for (int i = 0; i < 4; i++)
        s_create(client, "before the quiet", "tag-quiet");
    sn_seen_t *seen = sn_seen_new();
    sn_incident_poll_t poll = {.trigger = "correlation_display=tag-quiet", .seen = seen};
    json_t *records = NULL;
    sn_poll_result_t result;
    sn_error_t err;
    s_settle();
    s_assert_ok(sn_incident_poll_all(client, &poll, &records, &result, &err), &err);
    assert_int_equal(json_array_size(records), 4);
    json_decref(records);
    char cursor[SN_STAMP_SIZE];
    snprintf(cursor, sizeof cursor, "%s", result.cursor);

    //  Bounded poll: nothing new, the cursor moves to the bound
    s_settle();
    s_settle();
    poll.cursor = cursor;
    poll.lookback_s = 1;
    s_assert_ok(sn_incident_poll_all(client, &poll, &records, &result, &err), &err);
    json_decref(records);
    assert_true(result.until[0]);
    assert_string_equal(result.cursor, result.until);
    assert_true(strcmp(result.cursor, cursor) > 0);
    snprintf(cursor, sizeof cursor, "%s", result.cursor);

    //  Quiet for longer than the look-back: one request, no row
    s_settle();
    s_settle();
    json_decref(snemu_proc_control(s_emu, "DELETE", "/__snemu/log", NULL));
    s_assert_ok(sn_incident_poll_all(client, &poll, &records, &result, &err), &err);
    assert_int_equal(json_array_size(records), 0);
    assert_int_equal(result.rows, 0);
    assert_int_equal(result.pages, 1);
    assert_int_equal(snemu_proc_count(s_emu, "/api/now/table/incident", 0), 1);
    json_decref(records);

    //  A change after the quiet spell is read by the next poll
    snprintf(cursor, sizeof cursor, "%s", result.cursor);
    sn_created_t late = s_create(client, "after the quiet", "tag-quiet");
    s_settle();
    s_assert_ok(sn_incident_poll_all(client, &poll, &records, &result, &err), &err);
    assert_int_equal(json_array_size(records), 1);
    assert_true(s_has(records, late.sys_id));
    json_decref(records);
    sn_seen_destroy(&seen);
    sn_client_destroy(&client);
}

static void test_short_pages_do_not_end_paging(void **state)
{
    (void)state;
    sn_config_t cfg = s_config();
    cfg.page_size = 5;
    sn_client_t *client = s_client_with(&cfg);
    for (int i = 0; i < 7; i++)
        s_create(client, "short", NULL);
    snemu_proc_faults(s_emu, "{\"short_pages\": 2}");
    json_decref(snemu_proc_control(s_emu, "DELETE", "/__snemu/log", NULL));

    sn_seen_t *seen = sn_seen_new();
    sn_incident_poll_t poll = {.seen = seen};
    json_t *records = NULL;
    sn_poll_result_t result;
    sn_error_t err;
    s_settle();
    s_assert_ok(sn_incident_poll_all(client, &poll, &records, &result, &err), &err);
    assert_int_equal(json_array_size(records), 7);
    assert_int_equal(result.delivered, 7);
    //  At most two rows a page: at least four pages held rows
    assert_true(snemu_proc_count(s_emu, "/api/now/table/incident", 200) >= 4);
    json_decref(records);
    sn_seen_destroy(&seen);
    sn_client_destroy(&client);
}

//  Creates count incidents within one second (retrying the whole batch when
//  a second boundary splits it); returns their common sys_updated_on.
static void s_create_in_one_second(sn_client_t *client, const char *tag, sn_created_t *created,
                                   int count, char stamp[SN_STAMP_SIZE])
{
    for (int round = 0; round < 5; round++) {
        s_align_to_second();
        for (int i = 0; i < count; i++)
            created[i] = s_create(client, "same second", tag);
        char first[SN_STAMP_SIZE], last[SN_STAMP_SIZE];
        s_updated_on(client, created[0].sys_id, first);
        s_updated_on(client, created[count - 1].sys_id, last);
        if (strcmp(first, last) == 0) {
            snprintf(stamp, SN_STAMP_SIZE, "%s", first);
            return;
        }
        json_decref(snemu_proc_control(s_emu, "DELETE", "/__snemu/data", NULL));
    }
    fail_msg("could not create %d incidents within one second", count);
}

static void test_changes_in_one_second_are_all_seen(void **state)
{
    (void)state;
    sn_config_t cfg = s_config();
    cfg.page_size = 1; //  forces paging inside the shared second
    sn_client_t *client = s_client_with(&cfg);
    sn_created_t created[3];
    char stamp[SN_STAMP_SIZE];
    s_create_in_one_second(client, "tag-second", created, 3, stamp);

    sn_seen_t *seen = sn_seen_new();
    sn_incident_poll_t poll = {.trigger = "correlation_display=tag-second", .seen = seen};
    json_t *records = NULL;
    sn_poll_result_t result;
    sn_error_t err;
    s_settle();
    s_assert_ok(sn_incident_poll_all(client, &poll, &records, &result, &err), &err);
    assert_int_equal(json_array_size(records), 3);
    for (int i = 0; i < 3; i++)
        assert_true(s_has(records, created[i].sys_id));
    assert_string_equal(result.cursor, stamp);
    json_decref(records);
    sn_seen_destroy(&seen);
    sn_client_destroy(&client);
}

//  Sets the emulated clock so that it reads stamp now (0 restores real time).
static void s_clock_at(const char *stamp)
{
    long offset = 0;
    if (stamp) {
        struct tm tm = {0};
        assert_non_null(strptime(stamp, "%Y-%m-%d %H:%M:%S", &tm));
        offset = (long)(timegm(&tm) - time(NULL));
    }
    char body[64];
    snprintf(body, sizeof body, "{\"offset_seconds\": %ld}", offset);
    json_decref(snemu_proc_control(s_emu, "POST", "/__snemu/clock", body));
}

//  Polls once, lands a change in the cursor's second (a late commit: the
//  emulated clock is set back into that second for the write), polls again
//  from the cursor with lookback_s: the change must come, the first record
//  must not.
static void s_cursor_second_case(int lookback_s)
{
    sn_client_t *client = s_client();
    for (int round = 0; round < 5; round++) {
        sn_created_t first = s_create(client, "before the poll", NULL);
        sn_seen_t *seen = sn_seen_new();
        sn_incident_poll_t poll = {.lookback_s = lookback_s, .seen = seen};
        json_t *records = NULL;
        sn_poll_result_t result;
        sn_error_t err;
        s_settle();
        s_assert_ok(sn_incident_poll_all(client, &poll, &records, &result, &err), &err);
        assert_int_equal(json_array_size(records), 1);
        json_decref(records);
        char cursor[SN_STAMP_SIZE];
        snprintf(cursor, sizeof cursor, "%s", result.cursor);

        //  Same second as the cursor: a strict `>` would miss it
        s_clock_at(cursor);
        sn_created_t second = s_create(client, "after the poll", NULL);
        s_clock_at(NULL);
        char stamp[SN_STAMP_SIZE];
        s_updated_on(client, second.sys_id, stamp);
        poll.cursor = cursor;
        s_assert_ok(sn_incident_poll_all(client, &poll, &records, &result, &err), &err);
        bool same_second = strcmp(stamp, cursor) == 0;
        if (same_second) {
            assert_int_equal(json_array_size(records), 1);
            assert_true(s_has(records, second.sys_id));
            assert_false(s_has(records, first.sys_id));
            assert_int_equal(result.duplicates, 1);
        }
        json_decref(records);
        sn_seen_destroy(&seen);
        if (same_second) {
            sn_client_destroy(&client);
            return;
        }
        json_decref(snemu_proc_control(s_emu, "DELETE", "/__snemu/data", NULL));
    }
    fail_msg("could not land a change in the cursor's second");
}

static void test_change_in_the_cursor_second_is_not_lost(void **state)
{
    (void)state;
    //  Without look-back only `>=` keeps it; with look-back as well
    s_cursor_second_case(0);
    json_decref(snemu_proc_control(s_emu, "DELETE", "/__snemu/data", NULL));
    s_cursor_second_case(5);
}

//  What a poll and the writes racing it did (the callback's argument).
typedef struct {
    sn_client_t *writer; //  second client, writing while the poll runs
    json_t *setup;       //  sys_ids written before the poll (object as a set)
    json_t *during;      //  sys_ids written while the poll ran
    json_t *delivered;   //  rows the poll delivered
    int writes_left;     //  writes of one row per delivered row still allowed
    bool raced;          //  rows landed below the walk's key in its second
} s_race_t;

//  Writes one incident for the race and records it; returns its stamp.
static void s_race_write(s_race_t *race, char stamp[SN_STAMP_SIZE], char id[33])
{
    sn_created_t created = s_create(race->writer, "written during the poll", "tag-race");
    json_object_set_new(race->during, created.sys_id, json_true());
    s_updated_on(race->writer, created.sys_id, stamp);
    snprintf(id, 33, "%s", created.sys_id);
}

//  The poll's callback: each delivered row makes the writer add a row, as a
//  busy instance does. When the poll has caught up with the current second
//  at key (S, K), with K in the upper half, rows are written in S until three
//  of them sort below K: a walk without an upper bound has passed them and
//  never reads them. A row written two seconds later then moves such a
//  walk's cursor past S, so the next poll (look-back 1 s) skips S as well.
static int s_race_on_row(json_t *row, void *arg)
{
    s_race_t *race = arg;
    json_array_append(race->delivered, row);
    if (race->writes_left <= 0)
        return 0;
    race->writes_left--;
    char stamp[SN_STAMP_SIZE], id[33];
    s_race_write(race, stamp, id);
    const char *key_time = sn_field(row, "sys_updated_on");
    const char *key_id = sn_field(row, "sys_id");
    if (race->raced || strcmp(stamp, key_time) != 0 || key_id[0] < '8')
        return 0;
    int below = 0;
    for (int i = 0; i < 40 && below < 3 && strcmp(stamp, key_time) == 0; i++) {
        s_race_write(race, stamp, id);
        if (strcmp(stamp, key_time) == 0 && strcmp(id, key_id) < 0)
            below++;
    }
    if (below < 3)
        return 0;
    race->raced = true;
    sleep(2);
    s_race_write(race, stamp, id);
    return 0;
}

//  True when every sys_id of the set (object) is in one of the record arrays.
static bool s_all_in(const json_t *set, const json_t *a, const json_t *b, const char **missing)
{
    const char *id;
    json_t *value;
    json_object_foreach((json_t *)set, id, value)
    {
        if (!s_has(a, id) && (!b || !s_has(b, id))) {
            *missing = id;
            return false;
        }
    }
    return true;
}

static void test_rows_written_during_a_poll_are_not_lost(void **state)
{
    (void)state;
    sn_config_t cfg = s_config();
    cfg.page_size = 1; //  a slow walk, one row a page
    sn_client_t *client = s_client_with(&cfg);
    s_race_t race = {.writer = s_client(),
                     .setup = json_object(),
                     .during = json_object(),
                     .delivered = json_array(),
                     .writes_left = 60};
    for (int i = 0; i < 4; i++) {
        sn_created_t created = s_create(client, "before the poll", "tag-race");
        json_object_set_new(race.setup, created.sys_id, json_true());
    }
    s_settle();

    sn_seen_t *seen = sn_seen_new();
    sn_incident_poll_t poll = {.trigger = "correlation_display=tag-race",
                               .cursor = "2000-01-01 00:00:00",
                               .lookback_s = 1,
                               .seen = seen};
    sn_poll_result_t first;
    sn_error_t err;
    s_assert_ok(sn_incident_poll(client, &poll, s_race_on_row, &race, &first, &err), &err);
    //  The first poll read what existed when it began, and nothing newer
    const char *missing = NULL;
    assert_true(sn_stamp_valid(first.until));
    assert_true(strcmp(first.cursor, first.until) <= 0);
    size_t index;
    json_t *row;
    json_array_foreach(race.delivered, index, row)
    {
        assert_true(strcmp(sn_field(row, "sys_updated_on"), first.until) <= 0);
        if (!json_object_get(race.setup, sn_field(row, "sys_id")))
            fail_msg("the first poll returned %s, written while it ran", sn_field(row, "sys_id"));
    }
    if (!s_all_in(race.setup, race.delivered, NULL, &missing))
        fail_msg("the first poll missed %s", missing);
    assert_true(json_object_size(race.during) >= 4);

    //  The next poll, from the cursor less the look-back, reads every row
    //  written during the first: nothing is lost over the two
    char cursor[SN_STAMP_SIZE];
    snprintf(cursor, sizeof cursor, "%s", first.cursor);
    poll.cursor = cursor;
    json_t *second_rows = NULL;
    sn_poll_result_t second;
    s_settle();
    s_assert_ok(sn_incident_poll_all(client, &poll, &second_rows, &second, &err), &err);
    if (!s_all_in(race.during, second_rows, NULL, &missing))
        fail_msg("a row written during the first poll was lost: %s (%zu written)", missing,
                 json_object_size(race.during));
    json_decref(second_rows);
    json_decref(race.setup);
    json_decref(race.during);
    json_decref(race.delivered);
    sn_client_destroy(&race.writer);
    sn_seen_destroy(&seen);
    sn_client_destroy(&client);
}

static void test_unchanged_record_seen_twice_is_dropped(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_created_t created = s_create(client, "dedup me", NULL);
    sn_seen_t *seen = sn_seen_new();
    sn_incident_poll_t poll = {.lookback_s = 60, .seen = seen};
    json_t *records = NULL;
    sn_poll_result_t result;
    sn_error_t err;
    s_settle();
    s_assert_ok(sn_incident_poll_all(client, &poll, &records, &result, &err), &err);
    assert_int_equal(json_array_size(records), 1);
    json_decref(records);
    char cursor[SN_STAMP_SIZE];
    snprintf(cursor, sizeof cursor, "%s", result.cursor);

    //  The look-back reads the record again: it is dropped, not re-delivered
    poll.cursor = cursor;
    s_settle();
    s_assert_ok(sn_incident_poll_all(client, &poll, &records, &result, &err), &err);
    assert_int_equal(result.rows, 1);
    assert_int_equal(result.duplicates, 1);
    assert_int_equal(json_array_size(records), 0);
    json_decref(records);

    //  A new version of it goes through once
    json_t *fields = json_pack("{ss}", "urgency", "2");
    s_assert_ok(sn_incident_update(client, created.sys_id, fields, NULL, &err), &err);
    json_decref(fields);
    s_settle();
    s_assert_ok(sn_incident_poll_all(client, &poll, &records, &result, &err), &err);
    assert_int_equal(json_array_size(records), 1);
    assert_string_equal(sn_field(json_array_get(records, 0), "sys_mod_count"), "1");
    json_decref(records);
    sn_seen_destroy(&seen);
    sn_client_destroy(&client);
}

static void test_trigger_with_nq_keeps_its_meaning(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_created_t a = s_create(client, "a", "tag-a");
    sn_created_t b = s_create(client, "b", "tag-b");
    s_create(client, "c", "tag-c");
    sn_seen_t *seen = sn_seen_new();
    //  The poll's time condition must apply to both ^NQ groups, and the
    //  trigger's own ORDERBY must not disturb the key order
    sn_incident_poll_t poll = {
        .trigger = "correlation_display=tag-a^ORDERBYDESCnumber^NQcorrelation_display=tag-b",
        .cursor = "2000-01-01 00:00:00",
        .seen = seen};
    json_t *records = NULL;
    sn_poll_result_t result;
    sn_error_t err;
    s_settle();
    s_assert_ok(sn_incident_poll_all(client, &poll, &records, &result, &err), &err);
    assert_int_equal(json_array_size(records), 2);
    assert_true(s_has(records, a.sys_id));
    assert_true(s_has(records, b.sys_id));
    json_decref(records);

    //  A cursor after every change: nothing in either group
    sn_seen_t *fresh = sn_seen_new();
    poll.seen = fresh;
    poll.cursor = "2999-01-01 00:00:00";
    s_settle();
    s_assert_ok(sn_incident_poll_all(client, &poll, &records, &result, &err), &err);
    assert_int_equal(json_array_size(records), 0);
    json_decref(records);
    sn_seen_destroy(&seen);
    sn_seen_destroy(&fresh);
    sn_client_destroy(&client);
}

//  -------------------------------------------------------------------------
//  Faults

static void test_rate_limit_storm_is_waited_out(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_created_t created = s_create(client, "rate limited", NULL);
    json_decref(snemu_proc_control(s_emu, "DELETE", "/__snemu/log", NULL));
    snemu_proc_faults(s_emu, "{\"rate_limit\": {\"count\": 2, \"retry_after\": 1}}");
    double start = s_now();
    json_t *record = NULL;
    sn_error_t err;
    s_assert_ok(sn_incident_get(client, created.sys_id, NULL, &record, &err), &err);
    double elapsed = s_now() - start;
    json_decref(record);
    //  Retry-After was honoured (1 s each), not the millisecond backoff
    assert_true(elapsed >= 1.9);
    assert_int_equal(snemu_proc_count(s_emu, "/api/", 429), 2);
    assert_int_equal(snemu_proc_count(s_emu, "/api/", 200), 1);
    assert_int_equal(sn_client_stats(client).retries, 2);
    sn_client_destroy(&client);
}

//  Log sink of the tests: keeps the lines in a JSON array.
static void s_log_line(void *arg, const char *line)
{
    json_array_append_new(arg, json_string(line));
}

static void test_503_burst_is_retried_and_succeeds(void **state)
{
    (void)state;
    json_t *lines = json_array();
    sn_config_t cfg = s_config();
    cfg.log = s_log_line;
    cfg.log_arg = lines;
    sn_client_t *client = s_client_with(&cfg);
    sn_created_t created = s_create(client, "flaky", NULL);
    json_decref(snemu_proc_control(s_emu, "DELETE", "/__snemu/log", NULL));
    snemu_proc_faults(s_emu, "{\"fail_next\": {\"count\": 3, \"status\": 503}}");
    json_t *record = NULL;
    sn_error_t err;
    s_assert_ok(sn_incident_get(client, created.sys_id, NULL, &record, &err), &err);
    assert_string_equal(sn_field(record, "sys_id"), created.sys_id);
    json_decref(record);
    assert_int_equal(snemu_proc_count(s_emu, "/api/", 503), 3);
    assert_int_equal(snemu_proc_count(s_emu, "/api/", 200), 1);
    //  One log line per retry, key=value, without the query or a secret
    assert_int_equal(json_array_size(lines), 3);
    const char *line = json_string_value(json_array_get(lines, 0));
    assert_non_null(strstr(line, "level=warn"));
    assert_non_null(strstr(line, "status=503 error=unavailable attempt=1"));
    assert_null(strstr(line, "sysparm"));
    assert_null(strstr(line, PASSWORD));
    json_decref(lines);
    sn_client_destroy(&client);
}

static void test_create_is_not_repeated_after_a_500(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    //  A 500 may come after the insert happened: sending it again could
    //  create a duplicate, so the client reports it instead
    snemu_proc_faults(s_emu, "{\"fail_next\": {\"count\": 1, \"status\": 500}}");
    json_t *fields = json_pack("{ssss}", "short_description", "once", "correlation_id", "c-500");
    sn_created_t created;
    sn_error_t err;
    assert_int_equal(sn_incident_create(client, fields, &created, NULL, &err), SN_E_UNAVAILABLE);
    assert_int_equal(snemu_proc_count(s_emu, "/api/now/table/incident", 0), 1);

    //  A 503 from the proxy in front did not reach the instance: retried
    snemu_proc_faults(s_emu, "{\"fail_next\": {\"count\": 2, \"status\": 503}}");
    s_assert_ok(sn_incident_create(client, fields, &created, NULL, &err), &err);
    json_decref(fields);
    json_t *matches = NULL;
    s_assert_ok(sn_incident_find_by_correlation(client, "c-500", NULL, &matches, &err), &err);
    assert_int_equal(json_array_size(matches), 1);
    json_decref(matches);
    sn_client_destroy(&client);
}

//  The instance carries a write out, then the kept-alive connection closes
//  before any byte of the answer. libcurl would send the request again on a
//  new connection by itself; the client must not: the write goes once, the
//  call says its outcome is unknown, and the caller looks before writing again.
static void test_write_whose_answer_is_lost_is_not_sent_again(void **state)
{
    (void)state;
    json_t *lines = json_array();
    sn_config_t cfg = s_config();
    cfg.log = s_log_line;
    cfg.log_arg = lines;
    sn_client_t *client = s_client_with(&cfg);
    sn_created_t first = s_create(client, "keeps the connection", NULL); //  a connection to reuse
    snemu_proc_faults(s_emu, "{\"lose_answer\": {\"count\": 1, \"method\": \"POST\"}}");
    json_t *fields = json_pack("{ssss}", "short_description", "once", "correlation_id", "c-lost");
    sn_created_t created;
    sn_error_t err;
    assert_int_equal(sn_incident_create(client, fields, &created, NULL, &err), SN_E_UNAVAILABLE);
    json_decref(fields);
    assert_non_null(strstr(err.message, "outcome unknown"));
    assert_int_equal(sn_client_stats(client).unknown_writes, 1);
    json_t *matches = NULL;
    s_assert_ok(sn_incident_find_by_correlation(client, "c-lost", NULL, &matches, &err), &err);
    assert_int_equal(json_array_size(matches), 1);
    json_decref(matches);
    bool logged = false;
    for (size_t i = 0; i < json_array_size(lines); i++)
        logged |= strstr(json_string_value(json_array_get(lines, i)), "outcome unknown") != NULL;
    assert_true(logged);

    //  A comment (not idempotent either) is written once too
    snemu_proc_faults(s_emu, "{\"lose_answer\": {\"count\": 1, \"method\": \"PATCH\"}}");
    assert_int_equal(sn_incident_add_comment(client, first.sys_id, "said once", NULL, &err),
                     SN_E_UNAVAILABLE);
    assert_int_equal(sn_client_stats(client).unknown_writes, 2);
    json_t *record = NULL;
    s_assert_ok(sn_incident_get(client, first.sys_id, NULL, &record, &err), &err);
    assert_string_equal(sn_field(record, "sys_mod_count"), "1");
    json_decref(record);

    //  A read on a connection that dies unanswered is simply sent again
    snemu_proc_faults(s_emu, "{\"lose_answer\": {\"count\": 1, \"method\": \"GET\"}}");
    s_assert_ok(sn_incident_get(client, first.sys_id, NULL, &record, &err), &err);
    json_decref(record);
    assert_int_equal(sn_client_stats(client).unknown_writes, 2);
    json_decref(lines);
    sn_client_destroy(&client);
}

//  True when text holds any secret of the test configuration.
static bool s_leaks(const char *text)
{
    return strstr(text, PASSWORD) || strstr(text, OAUTH_SECRET) || strstr(text, "wrong-Pa55word") ||
           strstr(text, "Authorization") || strstr(text, "Bearer ");
}

//  -------------------------------------------------------------------------
//  Faults that end a read with an error: one row each, one runner

typedef struct {
    const char *name;         //  Test name cmocka prints
    const char *faults;       //  Emulator faults (JSON), or NULL
    const char *instance_url; //  Instead of the emulator's, or NULL
    const char *password;     //  Instead of the right one, or NULL
    long request_timeout_ms;  //  0: the default
    int max_attempts;         //  0: the default
    long max_total_wait_ms;   //  0: the default
    sn_err_code_t code;       //  The error the read ends with
    int scope;                //  Its sn_err_scope, or -1 for any
    long http_status;         //  err.http_status
    const char *message;      //  err.message exactly, or NULL
    const char *message_part; //  ...or a part of it, or NULL
    const char *detail_part;  //  A part of err.detail, or NULL
    long retry_after_s;       //  err.retry_after_s
    unsigned long requests;   //  HTTP requests the client made
    int logged;               //  Requests the emulator logged, -1 for none reached it
    long logged_status;       //  Status of each of them, 0 for any
    double max_seconds;       //  The call returned within this, 0 for no limit
} s_fault_case_t;

static const s_fault_case_t s_fault_cases[] = {
    {.name = "fault: persistent 500 gives up after max attempts",
     .faults = "{\"fail_next\": {\"count\": 10, \"status\": 500}}",
     .max_attempts = 3,
     .code = SN_E_UNAVAILABLE,
     .scope = -1,
     .http_status = 500,
     .requests = 3,
     .logged = 3,
     .logged_status = 500},
    {.name = "fault: hibernating instance is unavailable, an HTML page is never data",
     .faults = "{\"hibernate\": true}",
     .max_attempts = 2,
     .code = SN_E_UNAVAILABLE,
     .scope = SN_SCOPE_TRANSIENT,
     .http_status = 200,
     .message_part = "HTML",
     .detail_part = "Instance Hibernating page",
     .requests = 2,
     .logged = 2,
     .logged_status = 200},
    {.name = "fault: timeout is reported as timeout",
     .faults = "{\"latency_ms\": 1000}",
     .request_timeout_ms = 300,
     .max_attempts = 2,
     .code = SN_E_TIMEOUT,
     .scope = -1,
     .requests = 2,
     .logged = 2},
    {.name = "fault: connection refused is unavailable",
     .instance_url = "http://127.0.0.1:1",
     .max_attempts = 2,
     .code = SN_E_UNAVAILABLE,
     .scope = -1,
     .http_status = 0,
     .requests = 2,
     .logged = -1},
    {.name = "fault: rate limit beyond the budget gives up at once",
     .faults = "{\"rate_limit\": {\"count\": 5, \"retry_after\": 1}}",
     .max_total_wait_ms = 500, //  less than one Retry-After
     .code = SN_E_RATE_LIMITED,
     .scope = -1,
     .http_status = 429,
     .message = "Rate limit exceeded",
     .retry_after_s = 1,
     .requests = 1,
     .logged = 1,
     .logged_status = 429,
     .max_seconds = 0.9},
    {.name = "fault: basic 401 is an auth error without retry",
     .password = "wrong-Pa55word",
     .code = SN_E_AUTH,
     .scope = SN_SCOPE_CONNECTION,
     .http_status = 401,
     .message = "User Not Authenticated",
     .requests = 1,
     .logged = 1,
     .logged_status = 401},
};

#define S_FAULT_CASES (sizeof s_fault_cases / sizeof s_fault_cases[0])

//  Waits (up to 5 s) until the emulator has logged count requests under
//  /api/: it finishes an abandoned request later, and that entry belongs to
//  this test, not the next one.
static void s_wait_logged(size_t count)
{
    for (int waited = 0; waited < 5000 && snemu_proc_count(s_emu, "/api/", 0) < count; waited += 50)
        usleep(50 * 1000);
}

//  Runs one row of s_fault_cases: one list read under the fault.
static void s_run_fault_case(void **state)
{
    const s_fault_case_t *fc = *state;
    sn_config_t cfg = s_config();
    if (fc->instance_url)
        cfg.instance_url = fc->instance_url;
    if (fc->password)
        cfg.password = fc->password;
    if (fc->request_timeout_ms)
        cfg.request_timeout_ms = fc->request_timeout_ms;
    if (fc->max_attempts)
        cfg.retry.max_attempts = fc->max_attempts;
    if (fc->max_total_wait_ms)
        cfg.retry.max_total_wait_ms = fc->max_total_wait_ms;
    sn_client_t *client = s_client_with(&cfg);
    if (fc->faults)
        snemu_proc_faults(s_emu, fc->faults);
    json_t *rows = NULL;
    sn_list_params_t params = {0};
    sn_error_t err;
    double start = s_now();
    sn_err_code_t code = sn_table_list(client, "incident", &params, &rows, NULL, &err);
    double elapsed = s_now() - start;
    assert_int_equal(code, fc->code);
    assert_null(rows);
    if (fc->scope >= 0)
        assert_int_equal(sn_err_scope(code), fc->scope);
    if (fc->code != SN_E_TIMEOUT)
        assert_int_equal(err.http_status, fc->http_status);
    if (fc->message)
        assert_string_equal(err.message, fc->message);
    if (fc->message_part)
        assert_non_null(strstr(err.message, fc->message_part));
    if (fc->detail_part)
        assert_non_null(strstr(err.detail, fc->detail_part));
    assert_int_equal(err.retry_after_s, fc->retry_after_s);
    assert_int_equal(sn_client_stats(client).requests, fc->requests);
    if (fc->max_seconds > 0)
        assert_true(elapsed < fc->max_seconds);
    assert_false(s_leaks(err.message));
    assert_false(s_leaks(err.detail));
    if (fc->logged >= 0) {
        s_wait_logged((size_t)fc->logged);
        json_t *requests = snemu_proc_log(s_emu);
        assert_int_equal(json_array_size(requests), fc->logged);
        size_t index;
        json_t *entry;
        json_array_foreach(requests, index, entry)
        {
            assert_string_equal(json_string_value(json_object_get(entry, "method")), "GET");
            if (fc->logged_status)
                assert_int_equal(json_integer_value(json_object_get(entry, "status")),
                                 fc->logged_status);
        }
        json_decref(requests);
    }
    sn_client_destroy(&client);
}

static sn_config_t s_oauth_config(void)
{
    sn_config_t cfg = s_config();
    cfg.auth = SN_AUTH_OAUTH;
    cfg.oauth_client_id = OAUTH_ID;
    cfg.oauth_client_secret = OAUTH_SECRET;
    return cfg;
}

static void test_oauth_token_fetched_and_refreshed_when_expired(void **state)
{
    (void)state;
    sn_config_t cfg = s_oauth_config();
    sn_client_t *client = s_client_with(&cfg);
    json_t *rows = NULL;
    sn_list_params_t params = {.limit = 1};
    sn_error_t err;
    s_assert_ok(sn_table_list(client, "incident", &params, &rows, NULL, &err), &err);
    json_decref(rows);
    assert_int_equal(snemu_proc_count(s_emu, "/oauth_token.do", 200), 1);
    //  A second call within the token's life reuses it
    s_assert_ok(sn_table_list(client, "incident", &params, &rows, NULL, &err), &err);
    json_decref(rows);
    assert_int_equal(snemu_proc_count(s_emu, "/oauth_token.do", 0), 1);

    //  The token lives 2 s: after it, the client refreshes before calling
    usleep(2200 * 1000);
    s_assert_ok(sn_table_list(client, "incident", &params, &rows, NULL, &err), &err);
    json_decref(rows);
    assert_int_equal(snemu_proc_count(s_emu, "/oauth_token.do", 200), 2);
    assert_int_equal(snemu_proc_count(s_emu, "/api/", 401), 0);
    assert_int_equal(snemu_proc_count(s_emu, "/api/", 200), 3);
    assert_int_equal(sn_client_stats(client).token_requests, 2);
    sn_client_destroy(&client);
}

static void test_oauth_401_refreshes_once_then_succeeds(void **state)
{
    (void)state;
    sn_config_t cfg = s_oauth_config();
    sn_client_t *client = s_client_with(&cfg);
    json_t *rows = NULL;
    sn_list_params_t params = {.limit = 1};
    sn_error_t err;
    s_assert_ok(sn_table_list(client, "incident", &params, &rows, NULL, &err), &err);
    json_decref(rows);
    //  The instance's clock jumps: the token dies before the client expects
    json_decref(snemu_proc_control(s_emu, "POST", "/__snemu/clock", "{\"offset_seconds\": 3600}"));
    s_assert_ok(sn_table_list(client, "incident", &params, &rows, NULL, &err), &err);
    json_decref(rows);
    assert_int_equal(snemu_proc_count(s_emu, "/api/", 401), 1);
    assert_int_equal(snemu_proc_count(s_emu, "/oauth_token.do", 200), 2);
    assert_int_equal(snemu_proc_count(s_emu, "/api/", 200), 2);
    sn_client_destroy(&client);
}

static void test_oauth_refused_is_auth_error_without_secrets(void **state)
{
    (void)state;
    sn_config_t cfg = s_oauth_config();
    cfg.oauth_client_secret = "wrong-Pa55word";
    sn_client_t *client = s_client_with(&cfg);
    json_t *rows = NULL;
    sn_list_params_t params = {0};
    sn_error_t err;
    sn_err_code_t code = sn_table_list(client, "incident", &params, &rows, NULL, &err);
    assert_int_equal(code, SN_E_AUTH);
    assert_int_equal(err.http_status, 401);
    assert_string_equal(err.message, "OAuth token request refused");
    assert_non_null(strstr(err.detail, "access_denied"));
    assert_false(s_leaks(err.message));
    assert_false(s_leaks(err.detail));
    //  One token request, no API request, no loop
    assert_int_equal(snemu_proc_count(s_emu, "/oauth_token.do", 0), 1);
    assert_int_equal(snemu_proc_count(s_emu, "/api/", 0), 0);
    sn_client_destroy(&client);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_create_then_get_by_sys_id_and_number, s_setup),
        cmocka_unit_test_setup(test_get_unknown_sys_id_is_not_found, s_setup),
        cmocka_unit_test_setup(test_find_by_correlation_returns_every_match_oldest_first, s_setup),
        cmocka_unit_test_setup(test_update_patches_fields, s_setup),
        cmocka_unit_test_setup(test_resolve_without_close_fields_is_data_policy, s_setup),
        cmocka_unit_test_setup(test_unknown_table_is_bad_request, s_setup),
        cmocka_unit_test_setup(test_comment_is_read_back_from_the_journal, s_setup),
        cmocka_unit_test_setup(test_journal_poll_delivers_each_entry_once, s_setup),
        cmocka_unit_test_setup(test_journal_without_comments_is_not_the_trap, s_setup),
        cmocka_unit_test_setup(test_journal_acl_trap_is_reported, s_setup),
        cmocka_unit_test_setup(test_user_found_by_user_name, s_setup),
        cmocka_unit_test_setup(test_poll_reads_every_page_and_returns_the_cursor, s_setup),
        cmocka_unit_test_setup(test_quiet_poll_moves_the_cursor_and_reads_nothing, s_setup),
        cmocka_unit_test_setup(test_short_pages_do_not_end_paging, s_setup),
        cmocka_unit_test_setup(test_changes_in_one_second_are_all_seen, s_setup),
        cmocka_unit_test_setup(test_change_in_the_cursor_second_is_not_lost, s_setup),
        cmocka_unit_test_setup(test_rows_written_during_a_poll_are_not_lost, s_setup),
        cmocka_unit_test_setup(test_unchanged_record_seen_twice_is_dropped, s_setup),
        cmocka_unit_test_setup(test_trigger_with_nq_keeps_its_meaning, s_setup),
        cmocka_unit_test_setup(test_rate_limit_storm_is_waited_out, s_setup),
        cmocka_unit_test_setup(test_503_burst_is_retried_and_succeeds, s_setup),
        cmocka_unit_test_setup(test_create_is_not_repeated_after_a_500, s_setup),
        cmocka_unit_test_setup(test_write_whose_answer_is_lost_is_not_sent_again, s_setup),
        cmocka_unit_test_setup(test_oauth_token_fetched_and_refreshed_when_expired, s_setup),
        cmocka_unit_test_setup(test_oauth_401_refreshes_once_then_succeeds, s_setup),
        cmocka_unit_test_setup(test_oauth_refused_is_auth_error_without_secrets, s_setup),
    };
    //  The fixed tests, then one per row of s_fault_cases
    enum { FIXED = sizeof tests / sizeof tests[0] };
    struct CMUnitTest all[FIXED + S_FAULT_CASES];
    memcpy(all, tests, sizeof tests);
    for (size_t i = 0; i < S_FAULT_CASES; i++)
        all[FIXED + i] = (struct CMUnitTest){.name = s_fault_cases[i].name,
                                             .test_func = s_run_fault_case,
                                             .setup_func = s_setup,
                                             .initial_state = (void *)&s_fault_cases[i]};
    return _cmocka_run_group_tests("test_sn_emulator", all, FIXED + S_FAULT_CASES, s_group_setup,
                                   s_group_teardown);
}
