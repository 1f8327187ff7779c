/*  test_sn_attachment.c: the Attachment API of the ServiceNow client
    (sn_attachment.h) against the emulator (tests/snemu), and against a small
    server of quirks the emulator does not have (tests/sn/attachment_quirks.py:
    a 200 that ignores the Range, an answer cut in the middle, a wrong
    Content-Range, a body longer than its size, another file on a resumed
    attempt).

    Each emulator test starts from an empty instance with no faults and an
    empty request log; the request log is the witness of what the client really
    sent, the SHA-256 of the bytes the witness of what arrived. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "sn_attachment.h"
#include "sn_incident.h"
#include "sn_testproc.h"
#include "snemu_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef SN_QUIRKS_PY
#error "SN_QUIRKS_PY (path of tests/sn/attachment_quirks.py) must be defined by CMake"
#endif
#ifndef SNEMU_PYTHON
#define SNEMU_PYTHON "python3"
#endif

#define USER     "twinsync"
#define PASSWORD "Tw1nsync-Passw0rd"

static snemu_proc_t *s_emu;

//  -------------------------------------------------------------------------
//  Helpers

static int s_group_setup(void **state)
{
    (void)state;
    const char *args[] = {"--instance", "twinsync-att", "--user", USER ":" PASSWORD ":Twin Sync",
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

static sn_config_t s_config_for(const char *url)
{
    sn_config_t cfg = {
        .instance_url = url,
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
    sn_config_t cfg = s_config_for(snemu_proc_url(s_emu));
    return s_client_with(&cfg);
}

static void s_assert_ok(sn_err_code_t code, const sn_error_t *err)
{
    if (code != SN_OK)
        fail_msg("expected SN_OK, got %s (HTTP %ld): %s / %s", sn_err_name(code), err->http_status,
                 err->message, err->detail);
}

static sn_created_t s_incident(sn_client_t *client, const char *description)
{
    json_t *fields = json_pack("{ss}", "short_description", description);
    sn_created_t created;
    sn_error_t err;
    s_assert_ok(sn_incident_create(client, fields, &created, NULL, &err), &err);
    json_decref(fields);
    return created;
}

//  The SHA-256 of data in 64 lower-case hex digits.
static void s_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char digest[32];
    unsigned int digest_len = 0;
    assert_int_equal(EVP_Digest(data, len, digest, &digest_len, EVP_sha256(), NULL), 1);
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", digest[i]);
}

//  A file holding data, already unlinked: the fd is the only name it has.
static int s_temp_file(const void *data, size_t len)
{
    char path[] = "/tmp/sn-att-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    return fd;
}

//  len bytes of a pattern that differs with seed, so two files never match.
static unsigned char *s_bytes(size_t len, unsigned seed)
{
    unsigned char *data = malloc(len ? len : 1);
    assert_non_null(data);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data[i] = (unsigned char)x;
    }
    return data;
}

//  Uploads data under name to the incident; returns the metadata (caller decrefs).
static json_t *s_upload(sn_client_t *client, const char *incident, const char *name,
                        const char *type, const void *data, size_t len)
{
    int fd = s_temp_file(data, len);
    sn_attachment_file_t file = {.table = "incident",
                                 .table_sys_id = incident,
                                 .file_name = name,
                                 .content_type = type,
                                 .fd = fd,
                                 .size = len};
    json_t *meta = NULL;
    sn_error_t err;
    s_assert_ok(sn_attachment_upload(client, &file, &meta, &err), &err);
    close(fd);
    assert_non_null(meta);
    return meta;
}

//  A sink that keeps what it gets in memory (small files only).
typedef struct {
    unsigned char *data; //  bytes received
    size_t len;          //  how many
    size_t blocks;       //  calls made
    size_t stop_after;   //  refuse the call after this many blocks; 0 never
} s_memory_t;

static int s_memory_sink(const void *data, size_t len, void *arg)
{
    s_memory_t *memory = arg;
    if (memory->stop_after && memory->blocks >= memory->stop_after)
        return 1;
    assert_true(len > 0);
    unsigned char *grown = realloc(memory->data, memory->len + len);
    assert_non_null(grown);
    memcpy(grown + memory->len, data, len);
    memory->data = grown;
    memory->len += len;
    memory->blocks++;
    return 0;
}

//  Downloads attachment sys_id from offset into memory; returns the code.
static sn_err_code_t s_download(sn_client_t *client, const char *sys_id, uint64_t offset,
                                s_memory_t *memory, json_t **meta_p, sn_error_t *err)
{
    uint64_t written = 0;
    sn_err_code_t code = sn_attachment_download(client, sys_id, offset, s_memory_sink, memory,
                                                &written, meta_p, err);
    assert_int_equal(written, memory->len);
    return code;
}

//  Log entries of method on paths starting with prefix, with status (0: any).
static size_t s_count(const char *method, const char *prefix, long status)
{
    json_t *requests = snemu_proc_log(s_emu);
    size_t count = 0, index;
    json_t *entry;
    json_array_foreach(requests, index, entry)
    {
        const char *path = json_string_value(json_object_get(entry, "path"));
        if (strcmp(json_string_value(json_object_get(entry, "method")), method) == 0 && path &&
            strncmp(path, prefix, strlen(prefix)) == 0 &&
            (!status || json_integer_value(json_object_get(entry, "status")) == status))
            count++;
    }
    json_decref(requests);
    return count;
}

//  The attachments of an incident (caller decrefs).
static json_t *s_list(sn_client_t *client, const char *incident)
{
    json_t *rows = NULL;
    sn_error_t err;
    s_assert_ok(sn_attachment_list_record(client, "incident", incident, &rows, &err), &err);
    return rows;
}

//  -------------------------------------------------------------------------
//  Listing and metadata

static void test_list_by_record_and_by_query(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_created_t first = s_incident(client, "has three files");
    sn_created_t second = s_incident(client, "has one file");
    const char *names[] = {"a.txt", "b.log", "c.txt"};
    for (unsigned i = 0; i < 3; i++) {
        unsigned char *data = s_bytes(100 + i, i);
        json_decref(s_upload(client, first.sys_id, names[i], "text/plain", data, 100 + i));
        free(data);
    }
    json_decref(s_upload(client, second.sys_id, "c.txt", "text/plain", "x", 1));

    json_t *rows = s_list(client, first.sys_id);
    assert_int_equal(json_array_size(rows), 3);
    size_t index;
    json_t *row;
    json_array_foreach(rows, index, row)
    {
        assert_string_equal(sn_field(row, "table_name"), "incident");
        assert_string_equal(sn_field(row, "table_sys_id"), first.sys_id);
        assert_string_equal(sn_field(row, "sys_created_by"), USER);
        assert_int_equal(strlen(sn_field(row, "hash")), 64);
        assert_true(sn_is_sys_id(sn_field(row, "sys_id")));
        assert_true(*sn_field(row, "sys_created_on"));
        assert_string_equal(sn_field(row, "content_type"), "text/plain");
    }
    json_decref(rows);
    rows = s_list(client, second.sys_id);
    assert_int_equal(json_array_size(rows), 1);
    assert_string_equal(sn_field(json_array_get(rows, 0), "size_bytes"), "1");
    json_decref(rows);

    //  An encoded query of the caller's, across records; its ORDERBY gives way
    //  to the paging order
    sn_error_t err;
    s_assert_ok(sn_attachment_list(client, "file_name=c.txt^ORDERBYDESCfile_name", &rows, &err),
                &err);
    assert_int_equal(json_array_size(rows), 2);
    json_decref(rows);
    s_assert_ok(sn_attachment_list(client, NULL, &rows, &err), &err);
    assert_int_equal(json_array_size(rows), 4);
    json_decref(rows);
    //  Every list went to the v1 path
    assert_int_equal(s_count("GET", "/api/now/v1/attachment", 200), s_count("GET", "/api/", 0));

    //  A record id that would inject query terms is refused before any request
    size_t before = s_count("GET", "/api/", 0);
    assert_int_equal(
        sn_attachment_list_record(client, "incident", "x^ORtable_name=sys_user", &rows, &err),
        SN_E_BAD_REQUEST);
    assert_null(rows);
    assert_int_equal(s_count("GET", "/api/", 0), before);
    sn_client_destroy(&client);
}

static void test_list_pages_across_many_pages_and_short_pages(void **state)
{
    (void)state;
    sn_config_t cfg = s_config_for(snemu_proc_url(s_emu));
    cfg.page_size = 2;
    sn_client_t *client = s_client_with(&cfg);
    sn_created_t incident = s_incident(client, "many files");
    enum { FILES = 7 };
    char ids[FILES][33];
    for (unsigned i = 0; i < FILES; i++) {
        char name[32];
        snprintf(name, sizeof name, "file-%u.bin", i);
        unsigned char *data = s_bytes(10, 100 + i);
        json_t *meta = s_upload(client, incident.sys_id, name, NULL, data, 10);
        snprintf(ids[i], sizeof ids[i], "%s", sn_field(meta, "sys_id"));
        json_decref(meta);
        free(data);
    }
    json_decref(snemu_proc_control(s_emu, "DELETE", "/__snemu/log", NULL));
    json_t *rows = s_list(client, incident.sys_id);
    assert_int_equal(json_array_size(rows), FILES);
    //  Each file once, in (sys_created_on, sys_id) order
    for (unsigned i = 0; i < FILES; i++) {
        unsigned seen = 0;
        for (size_t r = 0; r < FILES; r++)
            seen += strcmp(sn_field(json_array_get(rows, r), "sys_id"), ids[i]) == 0;
        assert_int_equal(seen, 1);
    }
    for (size_t r = 1; r < FILES; r++) {
        const json_t *a = json_array_get(rows, r - 1), *b = json_array_get(rows, r);
        int order = strcmp(sn_field(a, "sys_created_on"), sn_field(b, "sys_created_on"));
        assert_true(order < 0 ||
                    (order == 0 && strcmp(sn_field(a, "sys_id"), sn_field(b, "sys_id")) < 0));
    }
    json_decref(rows);
    size_t pages = s_count("GET", "/api/now/v1/attachment", 200);
    assert_true(pages >= FILES / 2 + 1);
    //  Every page asked for 2 rows and the fields
    json_t *requests = snemu_proc_log(s_emu);
    size_t index;
    json_t *entry;
    json_array_foreach(requests, index, entry)
    {
        const char *query = json_string_value(json_object_get(entry, "query"));
        assert_non_null(strstr(query, "sysparm_limit=2"));
        assert_non_null(strstr(query, "sysparm_fields=sys_id%2Cfile_name"));
    }
    json_decref(requests);

    //  Pages of one row while the limit says two: a short page ends nothing
    snemu_proc_faults(s_emu, "{\"short_pages\": 1}");
    rows = s_list(client, incident.sys_id);
    assert_int_equal(json_array_size(rows), FILES);
    json_decref(rows);
    sn_client_destroy(&client);
}

static void test_get_metadata_and_unknown_is_not_found(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_created_t incident = s_incident(client, "one file");
    json_t *uploaded = s_upload(client, incident.sys_id, "notes.txt", "text/plain", "hello", 5);
    json_t *meta = NULL;
    sn_error_t err;
    s_assert_ok(sn_attachment_get(client, sn_field(uploaded, "sys_id"), &meta, &err), &err);
    assert_string_equal(sn_field(meta, "file_name"), "notes.txt");
    assert_string_equal(sn_field(meta, "size_bytes"), "5");
    char hash[65];
    s_sha256_hex("hello", 5, hash);
    assert_string_equal(sn_field(meta, "hash"), hash);
    json_decref(meta);
    json_decref(uploaded);

    assert_int_equal(sn_attachment_get(client, "0123456789abcdef0123456789abcdef", &meta, &err),
                     SN_E_NOT_FOUND);
    assert_int_equal(err.http_status, 404);
    assert_null(meta);
    //  No retry for a 404
    assert_int_equal(s_count("GET", "/api/now/v1/attachment/0123", 0), 1);
    assert_int_equal(sn_attachment_get(client, "not-an-id", &meta, &err), SN_E_BAD_REQUEST);
    sn_client_destroy(&client);
}

//  -------------------------------------------------------------------------
//  Download

static void test_download_whole_and_from_an_offset(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_created_t incident = s_incident(client, "a file to read back");
    enum { SIZE = 300000, OFFSET = 123457 };
    unsigned char *data = s_bytes(SIZE, 7);
    json_t *uploaded =
        s_upload(client, incident.sys_id, "dump.bin", "application/octet-stream", data, SIZE);
    const char *id = sn_field(uploaded, "sys_id");

    s_memory_t whole = {0};
    json_t *meta = NULL;
    sn_error_t err;
    s_assert_ok(s_download(client, id, 0, &whole, &meta, &err), &err);
    assert_int_equal(whole.len, SIZE);
    assert_memory_equal(whole.data, data, SIZE);
    //  Blocks, not one buffer: the body was never held whole
    assert_true(whole.blocks > 1);
    char hash[65];
    s_sha256_hex(whole.data, whole.len, hash);
    assert_string_equal(sn_field(meta, "hash"), hash);
    assert_string_equal(sn_field(meta, "sys_id"), id);
    json_decref(meta);

    s_memory_t tail = {0};
    s_assert_ok(s_download(client, id, OFFSET, &tail, NULL, &err), &err);
    assert_int_equal(tail.len, SIZE - OFFSET);
    assert_memory_equal(tail.data, data + OFFSET, SIZE - OFFSET);
    //  The emulator answered the range with 206 (Range: bytes=OFFSET-1-)
    assert_int_equal(s_count("GET", "/api/now/v1/attachment/", 206), 1);

    //  From the very end: nothing; past it: a bad request
    s_memory_t none = {0};
    s_assert_ok(s_download(client, id, SIZE, &none, NULL, &err), &err);
    assert_int_equal(none.len, 0);
    assert_int_equal(s_download(client, id, SIZE + 1, &none, NULL, &err), SN_E_BAD_REQUEST);
    free(whole.data);
    free(tail.data);
    free(data);
    json_decref(uploaded);
    sn_client_destroy(&client);
}

static void test_download_of_an_empty_file(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_created_t incident = s_incident(client, "empty file");
    json_t *uploaded = s_upload(client, incident.sys_id, "empty.txt", "text/plain", "", 0);
    assert_string_equal(sn_field(uploaded, "size_bytes"), "0");
    s_memory_t got = {0};
    json_t *meta = NULL;
    sn_error_t err;
    s_assert_ok(s_download(client, sn_field(uploaded, "sys_id"), 0, &got, &meta, &err), &err);
    assert_int_equal(got.len, 0);
    assert_int_equal(got.blocks, 0);
    char hash[65];
    s_sha256_hex("", 0, hash);
    assert_string_equal(sn_field(meta, "hash"), hash);
    json_decref(meta);
    json_decref(uploaded);
    sn_client_destroy(&client);
}

static void test_download_into_a_file_descriptor(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_created_t incident = s_incident(client, "to a file");
    enum { SIZE = 70000, OFFSET = 1000 };
    unsigned char *data = s_bytes(SIZE, 8);
    json_t *uploaded = s_upload(client, incident.sys_id, "f.bin", NULL, data, SIZE);
    char path[] = "/tmp/sn-att-out-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    //  The first OFFSET bytes are already there: resume after them
    assert_int_equal(pwrite(fd, data, OFFSET, 0), OFFSET);
    sn_attachment_fd_t out = {.fd = fd, .at = OFFSET};
    uint64_t written = 0;
    sn_error_t err;
    s_assert_ok(sn_attachment_download(client, sn_field(uploaded, "sys_id"), OFFSET,
                                       sn_attachment_fd_sink, &out, &written, NULL, &err),
                &err);
    assert_int_equal(written, SIZE - OFFSET);
    assert_int_equal(out.at, SIZE);
    assert_int_equal(out.error, 0);
    unsigned char *back = malloc(SIZE);
    assert_non_null(back);
    assert_int_equal(pread(fd, back, SIZE, 0), SIZE);
    assert_memory_equal(back, data, SIZE);

    //  A write that fails stops the download with the errno kept
    sn_attachment_fd_t bad = {.fd = -1};
    assert_int_equal(sn_attachment_download(client, sn_field(uploaded, "sys_id"), 0,
                                            sn_attachment_fd_sink, &bad, &written, NULL, &err),
                     SN_E_CANCELLED);
    assert_int_equal(bad.error, EBADF);
    assert_int_equal(written, 0);
    free(back);
    close(fd);
    free(data);
    json_decref(uploaded);
    sn_client_destroy(&client);
}

static void test_download_stopped_by_the_sink(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_created_t incident = s_incident(client, "stop early");
    enum { SIZE = 200000 };
    unsigned char *data = s_bytes(SIZE, 9);
    json_t *uploaded = s_upload(client, incident.sys_id, "big.bin", NULL, data, SIZE);
    json_decref(snemu_proc_control(s_emu, "DELETE", "/__snemu/log", NULL));
    s_memory_t got = {.stop_after = 2};
    sn_error_t err;
    assert_int_equal(s_download(client, sn_field(uploaded, "sys_id"), 0, &got, NULL, &err),
                     SN_E_CANCELLED);
    assert_int_equal(got.blocks, 2);
    assert_memory_equal(got.data, data, got.len);
    //  Not retried: the caller asked to stop
    assert_int_equal(s_count("GET", "/api/now/v1/attachment/", 0), 1);
    free(got.data);
    free(data);
    json_decref(uploaded);
    sn_client_destroy(&client);
}

static void test_download_from_a_hibernating_instance_is_unavailable(void **state)
{
    (void)state;
    sn_config_t cfg = s_config_for(snemu_proc_url(s_emu));
    cfg.retry.max_attempts = 2;
    sn_client_t *client = s_client_with(&cfg);
    sn_created_t incident = s_incident(client, "asleep");
    json_t *uploaded = s_upload(client, incident.sys_id, "page.html", "text/html", "<p>hi</p>", 9);
    snemu_proc_faults(s_emu, "{\"hibernate\": true}");
    s_memory_t got = {0};
    sn_error_t err;
    assert_int_equal(s_download(client, sn_field(uploaded, "sys_id"), 0, &got, NULL, &err),
                     SN_E_UNAVAILABLE);
    //  The page never reached the sink
    assert_int_equal(got.len, 0);
    assert_non_null(strstr(err.detail, "Instance Hibernating page"));
    assert_int_equal(sn_err_scope(err.code), SN_SCOPE_TRANSIENT);
    //  Retried like any read
    assert_int_equal(s_count("GET", "/api/now/v1/attachment/", 200), 2);

    //  An HTML attachment itself is content, told apart by its metadata header
    snemu_proc_faults(s_emu, "{\"hibernate\": false}");
    s_assert_ok(s_download(client, sn_field(uploaded, "sys_id"), 0, &got, NULL, &err), &err);
    assert_int_equal(got.len, 9);
    assert_memory_equal(got.data, "<p>hi</p>", 9);
    free(got.data);
    json_decref(uploaded);
    sn_client_destroy(&client);
}

static void test_download_retries_an_outage_and_not_a_404(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_created_t incident = s_incident(client, "flaky");
    json_t *uploaded = s_upload(client, incident.sys_id, "a.txt", "text/plain", "abc", 3);
    snemu_proc_faults(s_emu,
                      "{\"fail_next\": {\"count\": 2, \"status\": 503, \"method\": \"GET\"}}");
    s_memory_t got = {0};
    sn_error_t err;
    s_assert_ok(s_download(client, sn_field(uploaded, "sys_id"), 0, &got, NULL, &err), &err);
    assert_int_equal(got.len, 3);
    assert_int_equal(s_count("GET", "/api/now/v1/attachment/", 503), 2);
    free(got.data);

    s_memory_t none = {0};
    assert_int_equal(s_download(client, "0123456789abcdef0123456789abcdef", 0, &none, NULL, &err),
                     SN_E_NOT_FOUND);
    assert_int_equal(s_count("GET", "/api/now/v1/attachment/0123", 0), 1);
    json_decref(uploaded);
    sn_client_destroy(&client);
}

//  -------------------------------------------------------------------------
//  Upload

static void test_upload_of_awkward_names_and_types(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_created_t incident = s_incident(client, "awkward names");
    char long_name[201];
    memset(long_name, 'n', 196);
    memcpy(long_name + 196, ".txt", 5);
    assert_int_equal(strlen(long_name), 200);
    const struct {
        const char *name; //  file name sent
        const char *type; //  content type sent
        const char *kept; //  content type stored
    } cases[] = {
        {"\xc3\x9c"
         "berweisung \xe2\x80\x93 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xe2\x9c\x93.txt",
         "text/plain; charset=utf-8", "text/plain; charset=utf-8"},
        {"quarterly report (final) + notes & more #2 100%.pdf", "application/pdf",
         "application/pdf"},
        {"../../etc/passwd", "", "application/octet-stream"},
        {"..", NULL, "application/octet-stream"},
        {"a=b?c;d,e'f\"g\\h.txt", "text/plain", "text/plain"},
        {long_name, "image/png", "image/png"},
    };
    for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = 1000 + i;
        unsigned char *data = s_bytes(len, 20 + i);
        json_t *meta = s_upload(client, incident.sys_id, cases[i].name, cases[i].type, data, len);
        assert_string_equal(sn_field(meta, "file_name"), cases[i].name);
        assert_string_equal(sn_field(meta, "content_type"), cases[i].kept);
        assert_string_equal(sn_field(meta, "table_sys_id"), incident.sys_id);
        char hash[65], size[16];
        s_sha256_hex(data, len, hash);
        snprintf(size, sizeof size, "%zu", len);
        assert_string_equal(sn_field(meta, "hash"), hash);
        assert_string_equal(sn_field(meta, "size_bytes"), size);
        s_memory_t got = {0};
        sn_error_t err;
        s_assert_ok(s_download(client, sn_field(meta, "sys_id"), 0, &got, NULL, &err), &err);
        assert_int_equal(got.len, len);
        assert_memory_equal(got.data, data, len);
        free(got.data);
        free(data);
        json_decref(meta);
    }
    json_t *rows = s_list(client, incident.sys_id);
    assert_int_equal(json_array_size(rows), sizeof cases / sizeof cases[0]);
    json_decref(rows);
    //  Each went once, to the v1 path
    assert_int_equal(s_count("POST", "/api/now/v1/attachment/file", 201),
                     sizeof cases / sizeof cases[0]);
    sn_client_destroy(&client);
}

static void test_upload_arguments_are_checked_before_any_request(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_created_t incident = s_incident(client, "checks");
    int fd = s_temp_file("x", 1);
    char too_long[SN_ATTACHMENT_NAME_MAX + 2];
    memset(too_long, 'x', sizeof too_long - 1);
    too_long[sizeof too_long - 1] = '\0';
    const sn_attachment_file_t bad[] = {
        {"Incident", incident.sys_id, "a.txt", NULL, fd, 1},
        {"incident", "short", "a.txt", NULL, fd, 1},
        {"incident", incident.sys_id, "", NULL, fd, 1},
        {"incident", incident.sys_id, "line\nbreak.txt", NULL, fd, 1},
        {"incident", incident.sys_id, too_long, NULL, fd, 1},
        {"incident", incident.sys_id, "a.txt", "text/plain\r\nX-Evil: 1", fd, 1},
        {"incident", incident.sys_id, "a.txt", "plain", fd, 1},
        {"incident", incident.sys_id, "a.txt", NULL, -1, 1},
    };
    size_t before = s_count("POST", "/api/", 0);
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *meta = NULL;
        sn_error_t err;
        assert_int_equal(sn_attachment_upload(client, &bad[i], &meta, &err), SN_E_BAD_REQUEST);
        assert_null(meta);
    }
    assert_int_equal(s_count("POST", "/api/", 0), before);

    //  A file shorter than the size given: the body is cut short of its
    //  Content-Length, so nothing is stored
    sn_attachment_file_t shorter = {"incident", incident.sys_id, "short.txt", NULL, fd, 1000};
    sn_error_t err;
    assert_int_equal(sn_attachment_upload(client, &shorter, NULL, &err), SN_E_BAD_REQUEST);
    assert_non_null(strstr(err.detail, "shorter"));
    json_t *rows = s_list(client, incident.sys_id);
    assert_int_equal(json_array_size(rows), 0);
    json_decref(rows);
    close(fd);
    sn_client_destroy(&client);
}

static void test_upload_refused_by_the_extension_rule(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_created_t incident = s_incident(client, "extensions");
    snemu_proc_faults(s_emu, "{\"attachment_extensions\": \"txt,pdf\"}");
    int fd = s_temp_file("MZ", 2);
    sn_attachment_file_t file = {"incident", incident.sys_id, "setup.exe", NULL, fd, 2};
    json_t *meta = NULL;
    sn_error_t err;
    assert_int_equal(sn_attachment_upload(client, &file, &meta, &err), SN_E_FILE_REFUSED);
    assert_null(meta);
    assert_int_equal(err.http_status, 400);
    assert_non_null(strstr(err.message, "HTTP 400"));
    assert_non_null(strstr(err.message, "extension exe is not allowed"));
    assert_non_null(strstr(err.detail, "txt,pdf"));
    assert_int_equal(sn_err_scope(err.code), SN_SCOPE_RECORD);
    assert_string_equal(sn_err_name(err.code), "file_refused");
    //  Sent once: no retry fixes it
    assert_int_equal(s_count("POST", "/api/now/v1/attachment/file", 0), 1);
    json_t *rows = s_list(client, incident.sys_id);
    assert_int_equal(json_array_size(rows), 0);
    json_decref(rows);
    //  The same connection serves the next upload (the refused body was drained)
    file.file_name = "setup.txt";
    s_assert_ok(sn_attachment_upload(client, &file, NULL, &err), &err);
    close(fd);
    sn_client_destroy(&client);
}

static void test_upload_refused_by_the_size_limit(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_created_t incident = s_incident(client, "sizes");
    snemu_proc_faults(s_emu, "{\"attachment_max_bytes\": 4096}");
    enum { SIZE = 600000 };
    unsigned char *data = s_bytes(SIZE, 30);
    int fd = s_temp_file(data, SIZE);
    sn_attachment_file_t file = {"incident", incident.sys_id, "large.bin", NULL, fd, SIZE};
    sn_error_t err;
    assert_int_equal(sn_attachment_upload(client, &file, NULL, &err), SN_E_FILE_REFUSED);
    assert_int_equal(err.http_status, 413);
    assert_non_null(strstr(err.message, "HTTP 413"));
    assert_non_null(strstr(err.message, "Maximum file size"));
    assert_non_null(strstr(err.detail, "max_size"));
    assert_int_equal(s_count("POST", "/api/now/v1/attachment/file", 0), 1);
    //  At the limit it goes
    file.size = 4096;
    s_assert_ok(sn_attachment_upload(client, &file, NULL, &err), &err);
    json_t *rows = s_list(client, incident.sys_id);
    assert_int_equal(json_array_size(rows), 1);
    assert_string_equal(sn_field(json_array_get(rows, 0), "size_bytes"), "4096");
    json_decref(rows);
    close(fd);
    free(data);
    sn_client_destroy(&client);
}

static void test_upload_refused_by_an_acl_and_to_a_missing_record(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_created_t incident = s_incident(client, "acl");
    int fd = s_temp_file("data", 4);
    sn_attachment_file_t file = {"incident", incident.sys_id, "a.txt", "text/plain", fd, 4};
    snemu_proc_faults(s_emu, "{\"attachment_acl\": [\"" USER "\"]}");
    sn_error_t err;
    assert_int_equal(sn_attachment_upload(client, &file, NULL, &err), SN_E_FILE_REFUSED);
    assert_int_equal(err.http_status, 403);
    assert_non_null(strstr(err.message, "HTTP 403"));
    assert_non_null(strstr(err.detail, "ACL Exception Insert"));
    //  A read under the same ACL stays a permission error: the whole connection
    json_t *rows = NULL;
    assert_int_equal(sn_attachment_list_record(client, "incident", incident.sys_id, &rows, &err),
                     SN_E_PERMISSION);
    assert_int_equal(sn_err_scope(err.code), SN_SCOPE_CONNECTION);
    snemu_proc_faults(s_emu, "{\"attachment_acl\": null}");

    file.table_sys_id = "0123456789abcdef0123456789abcdef";
    assert_int_equal(sn_attachment_upload(client, &file, NULL, &err), SN_E_NOT_FOUND);
    assert_int_equal(err.http_status, 404);
    assert_int_equal(s_count("POST", "/api/now/v1/attachment/file", 0), 2);
    close(fd);
    sn_client_destroy(&client);
}

static void test_upload_whose_answer_is_lost_is_not_sent_again(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_created_t incident = s_incident(client, "lost answer");
    enum { SIZE = 50000 };
    unsigned char *data = s_bytes(SIZE, 40);
    int fd = s_temp_file(data, SIZE);
    sn_attachment_file_t file = {"incident", incident.sys_id, "report.pdf", "application/pdf", fd,
                                 SIZE};
    //  A connection used before, so that libcurl would resend by itself
    json_decref(s_list(client, incident.sys_id));
    snemu_proc_faults(s_emu, "{\"lose_answer\": {\"count\": 1, \"method\": \"POST\"}}");
    json_t *meta = NULL;
    sn_error_t err;
    assert_int_equal(sn_attachment_upload(client, &file, &meta, &err), SN_E_UNAVAILABLE);
    assert_null(meta);
    assert_non_null(strstr(err.message, "outcome unknown"));
    assert_int_equal(sn_client_stats(client).unknown_writes, 1);
    assert_int_equal(s_count("POST", "/api/now/v1/attachment/file", 0), 1);
    //  What the caller then does: look for the same name and hash
    char hash[65];
    s_sha256_hex(data, SIZE, hash);
    json_t *rows = s_list(client, incident.sys_id);
    assert_int_equal(json_array_size(rows), 1);
    assert_string_equal(sn_field(json_array_get(rows, 0), "file_name"), "report.pdf");
    assert_string_equal(sn_field(json_array_get(rows, 0), "hash"), hash);
    json_decref(rows);
    close(fd);
    free(data);
    sn_client_destroy(&client);
}

static void test_upload_after_a_5xx_is_not_sent_again(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_created_t incident = s_incident(client, "5xx");
    int fd = s_temp_file("content", 7);
    sn_attachment_file_t file = {"incident", incident.sys_id, "a.txt", "text/plain", fd, 7};
    const long statuses[] = {500, 503};
    for (unsigned i = 0; i < 2; i++) {
        char faults[128];
        snprintf(faults, sizeof faults,
                 "{\"fail_next\": {\"count\": 1, \"status\": %ld, \"method\": \"POST\"}}",
                 statuses[i]);
        snemu_proc_faults(s_emu, faults);
        sn_error_t err;
        assert_int_equal(sn_attachment_upload(client, &file, NULL, &err), SN_E_UNAVAILABLE);
        assert_int_equal(err.http_status, statuses[i]);
        assert_non_null(strstr(err.message, "outcome unknown"));
        assert_int_equal(s_count("POST", "/api/now/v1/attachment/file", 0), i + 1);
    }
    assert_int_equal(sn_client_stats(client).unknown_writes, 2);
    close(fd);
    sn_client_destroy(&client);
}

static void test_upload_after_a_429_is_retried(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_created_t incident = s_incident(client, "rate limited");
    enum { SIZE = 100000 };
    unsigned char *data = s_bytes(SIZE, 50);
    int fd = s_temp_file(data, SIZE);
    sn_attachment_file_t file = {"incident", incident.sys_id, "a.bin", NULL, fd, SIZE};
    snemu_proc_faults(s_emu, "{\"rate_limit\": {\"count\": 1, \"retry_after\": 1}}");
    json_t *meta = NULL;
    sn_error_t err;
    s_assert_ok(sn_attachment_upload(client, &file, &meta, &err), &err);
    assert_int_equal(s_count("POST", "/api/now/v1/attachment/file", 429), 1);
    assert_int_equal(s_count("POST", "/api/now/v1/attachment/file", 201), 1);
    //  The second attempt sent the whole file again, from its start
    char hash[65];
    s_sha256_hex(data, SIZE, hash);
    assert_string_equal(sn_field(meta, "hash"), hash);
    json_decref(meta);
    json_t *rows = s_list(client, incident.sys_id);
    assert_int_equal(json_array_size(rows), 1);
    json_decref(rows);
    close(fd);
    free(data);
    sn_client_destroy(&client);
}

//  -------------------------------------------------------------------------
//  Delete

static void test_delete_then_not_found(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_created_t incident = s_incident(client, "delete");
    json_t *uploaded = s_upload(client, incident.sys_id, "gone.txt", "text/plain", "bye", 3);
    char id[33];
    snprintf(id, sizeof id, "%s", sn_field(uploaded, "sys_id"));
    json_decref(uploaded);
    sn_error_t err;
    s_assert_ok(sn_attachment_delete(client, id, &err), &err);
    assert_int_equal(s_count("DELETE", "/api/now/v1/attachment/", 204), 1);
    json_t *meta = NULL;
    assert_int_equal(sn_attachment_get(client, id, &meta, &err), SN_E_NOT_FOUND);
    assert_int_equal(sn_attachment_delete(client, id, &err), SN_E_NOT_FOUND);
    assert_int_equal(err.http_status, 404);
    json_t *rows = s_list(client, incident.sys_id);
    assert_int_equal(json_array_size(rows), 0);
    json_decref(rows);
    sn_client_destroy(&client);
}

//  -------------------------------------------------------------------------
//  A large file through a small memory

//  Starts the process's peak resident set afresh at its current size, so that
//  a peak reached before (another test's buffers) cannot hide a growth.
static void s_peak_rss_reset(void)
{
    FILE *clear = fopen("/proc/self/clear_refs", "w");
    assert_non_null(clear);
    assert_true(fputs("5", clear) >= 0);
    assert_int_equal(fclose(clear), 0);
}

//  The process's peak resident set (VmHWM) in bytes.
static long s_peak_rss(void)
{
    FILE *status = fopen("/proc/self/status", "r");
    assert_non_null(status);
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, status))
        if (strncmp(line, "VmHWM:", 6) == 0) {
            char *end;
            kib = strtol(line + 6, &end, 10);
        }
    fclose(status);
    assert_true(kib > 0);
    return kib * 1024;
}

//  SHA-256 of a file's first size bytes, read in blocks.
static void s_sha256_fd(int fd, uint64_t size, char out[65])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    assert_non_null(md);
    assert_int_equal(EVP_DigestInit_ex(md, EVP_sha256(), NULL), 1);
    unsigned char block[65536];
    for (uint64_t at = 0; at < size;) {
        ssize_t got = pread(fd, block, sizeof block, (off_t)at);
        assert_true(got > 0);
        EVP_DigestUpdate(md, block, (size_t)got);
        at += (uint64_t)got;
    }
    unsigned char digest[32];
    unsigned int len = 0;
    EVP_DigestFinal_ex(md, digest, &len);
    EVP_MD_CTX_free(md);
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", digest[i]);
}

static void test_large_file_goes_both_ways_in_small_memory(void **state)
{
    (void)state;
    sn_client_t *client = s_client();
    sn_created_t incident = s_incident(client, "large");
    const uint64_t size = (uint64_t)64 << 20;
    char path[] = "/tmp/sn-att-large-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    //  Written in 1 MiB blocks, each different
    for (unsigned block = 0; block < size >> 20; block++) {
        unsigned char *data = s_bytes((size_t)1 << 20, 1000 + block);
        assert_int_equal(pwrite(fd, data, (size_t)1 << 20, (off_t)block << 20), 1 << 20);
        free(data);
    }
    char hash[65];
    s_sha256_fd(fd, size, hash);
    s_peak_rss_reset();
    long before = s_peak_rss();

    sn_attachment_file_t file = {"incident", incident.sys_id, "large.bin", NULL, fd, size};
    json_t *meta = NULL;
    sn_error_t err;
    s_assert_ok(sn_attachment_upload(client, &file, &meta, &err), &err);
    assert_string_equal(sn_field(meta, "hash"), hash);
    char out_path[] = "/tmp/sn-att-large-out-XXXXXX";
    int out_fd = mkstemp(out_path);
    assert_true(out_fd >= 0);
    unlink(out_path);
    sn_attachment_fd_t out = {.fd = out_fd};
    uint64_t written = 0;
    s_assert_ok(sn_attachment_download(client, sn_field(meta, "sys_id"), 0, sn_attachment_fd_sink,
                                       &out, &written, NULL, &err),
                &err);
    long growth = s_peak_rss() - before;
    assert_int_equal(written, size);
    char back[65];
    s_sha256_fd(out_fd, size, back);
    assert_string_equal(back, hash);
    //  Neither transfer held the file: 64 MiB went each way
    if (growth >= 16L << 20)
        fail_msg("peak RSS grew by %ld bytes moving a 64 MiB file", growth);
    json_decref(meta);
    close(out_fd);
    close(fd);
    sn_client_destroy(&client);
}

//  -------------------------------------------------------------------------
//  Quirks the emulator does not have (tests/sn/attachment_quirks.py)

typedef struct {
    pid_t pid;          //  the server
    char port_file[64]; //  where it writes its port
    char log_file[64];  //  the requests it served, "LETTER RANGE" a line
    char url[64];       //  its base URL
} s_quirks_t;

static s_quirks_t s_quirks;

//  Starts the quirks server before the test; s_quirks_teardown stops it even
//  when the test fails.
static int s_quirks_setup(void **state)
{
    (void)state;
    s_quirks_t *quirks = &s_quirks;
    memset(quirks, 0, sizeof *quirks);
    snprintf(quirks->port_file, sizeof quirks->port_file, "/tmp/sn-quirks-%d.port", (int)getpid());
    snprintf(quirks->log_file, sizeof quirks->log_file, "/tmp/sn-quirks-%d.log", (int)getpid());
    unlink(quirks->port_file);
    unlink(quirks->log_file);
    const char *argv[] = {SNEMU_PYTHON, SN_QUIRKS_PY,     "--port-file", quirks->port_file,
                          "--log",      quirks->log_file, NULL};
    quirks->pid = sn_testproc_spawn(argv, NULL);
    int port = 0;
    for (int waited = 0; waited < 15000 && !port && sn_testproc_alive(quirks->pid); waited += 20) {
        sn_testproc_sleep_ms(20);
        FILE *file = fopen(quirks->port_file, "r");
        if (file) {
            if (fscanf(file, "%d", &port) != 1)
                port = 0;
            fclose(file);
        }
    }
    if (!port) {
        sn_testproc_stop(quirks->pid);
        fail_msg("attachment_quirks.py did not start");
    }
    snprintf(quirks->url, sizeof quirks->url, "http://127.0.0.1:%d", port);
    return 0;
}

static int s_quirks_teardown(void **state)
{
    (void)state;
    sn_testproc_stop(s_quirks.pid);
    unlink(s_quirks.port_file);
    unlink(s_quirks.log_file);
    return 0;
}

//  The Range headers the quirks server got for letter, "-" for none, each
//  followed by a space.
static void s_quirk_ranges(const s_quirks_t *quirks, char letter, char *out, size_t size)
{
    FILE *log = fopen(quirks->log_file, "r");
    assert_non_null(log);
    char line[128];
    size_t used = 0;
    out[0] = '\0';
    while (fgets(line, sizeof line, log))
        if (line[0] == letter && line[1] == ' ') {
            line[strcspn(line, "\n")] = '\0';
            used += (size_t)snprintf(out + used, size - used, "%s ", line + 2);
            assert_true(used < size);
        }
    fclose(log);
}

//  The content every quirk serves: byte i is (i * 7) mod 251, QUIRK_SIZE bytes.
#define QUIRK_SIZE 100000

static unsigned char *s_quirk_content(void)
{
    unsigned char *data = malloc(QUIRK_SIZE);
    assert_non_null(data);
    for (size_t i = 0; i < QUIRK_SIZE; i++)
        data[i] = (unsigned char)((i * 7) % 251);
    return data;
}

//  The quirk named by a sys_id of 32 times letter.
static const char *s_quirk_id(char letter)
{
    static char id[33];
    memset(id, letter, 32);
    id[32] = '\0';
    return id;
}

static void test_download_quirks_of_other_servers(void **state)
{
    (void)state;
    const s_quirks_t quirks = s_quirks;
    sn_config_t cfg = s_config_for(quirks.url);
    sn_client_t *client = s_client_with(&cfg);
    unsigned char *content = s_quirk_content();
    sn_error_t err;

    //  'a': a 200 with the whole content whatever the Range: the first bytes
    //  are skipped, the sink gets exactly the rest
    s_memory_t got = {0};
    s_assert_ok(s_download(client, s_quirk_id('a'), 40000, &got, NULL, &err), &err);
    assert_int_equal(got.len, QUIRK_SIZE - 40000);
    assert_memory_equal(got.data, content + 40000, got.len);
    free(got.data);

    //  'b': the first answer stops after 30000 bytes and closes; the retry
    //  resumes with a Range from there and the sink sees every byte once
    memset(&got, 0, sizeof got);
    json_t *meta = NULL;
    s_assert_ok(s_download(client, s_quirk_id('b'), 0, &got, &meta, &err), &err);
    assert_int_equal(got.len, QUIRK_SIZE);
    assert_memory_equal(got.data, content, QUIRK_SIZE);
    char hash[65];
    s_sha256_hex(got.data, got.len, hash);
    assert_string_equal(sn_field(meta, "hash"), hash);
    json_decref(meta);
    free(got.data);
    //  'g': as 'b', but the body ends cleanly (chunked) before its size: also resumed
    memset(&got, 0, sizeof got);
    s_assert_ok(s_download(client, s_quirk_id('g'), 0, &got, NULL, &err), &err);
    assert_int_equal(got.len, QUIRK_SIZE);
    assert_memory_equal(got.data, content, QUIRK_SIZE);
    free(got.data);

    //  'c': a 206 at another offset than asked
    memset(&got, 0, sizeof got);
    assert_int_equal(s_download(client, s_quirk_id('c'), 500, &got, NULL, &err), SN_E_BAD_RESPONSE);
    assert_int_equal(got.len, 0);
    assert_non_null(strstr(err.message, "wrong offset"));

    //  'd': more bytes than size_bytes
    assert_int_equal(s_download(client, s_quirk_id('d'), 0, &got, NULL, &err), SN_E_BAD_RESPONSE);
    assert_non_null(strstr(err.message, "longer"));
    assert_true(got.len <= 1000);
    free(got.data);

    //  'e': a 200 without X-Attachment-Metadata is not the content
    memset(&got, 0, sizeof got);
    assert_int_equal(s_download(client, s_quirk_id('e'), 0, &got, NULL, &err), SN_E_UNAVAILABLE);
    assert_int_equal(got.len, 0);
    assert_non_null(strstr(err.detail, "X-Attachment-Metadata"));

    //  'f': the resumed attempt brings another file (another hash)
    assert_int_equal(s_download(client, s_quirk_id('f'), 0, &got, NULL, &err), SN_E_BAD_RESPONSE);
    assert_non_null(strstr(err.message, "another file"));
    free(got.data);

    //  What the server saw: the Range of each attempt, from one byte before
    //  the first byte the sink still needs
    char ranges[256];
    s_quirk_ranges(&quirks, 'a', ranges, sizeof ranges);
    assert_string_equal(ranges, "bytes=39999- ");
    s_quirk_ranges(&quirks, 'b', ranges, sizeof ranges);
    assert_string_equal(ranges, "- bytes=29999- ");
    s_quirk_ranges(&quirks, 'g', ranges, sizeof ranges);
    assert_string_equal(ranges, "- bytes=29999- ");
    s_quirk_ranges(&quirks, 'f', ranges, sizeof ranges);
    assert_string_equal(ranges, "- bytes=29999- ");
    //  Nothing resent for the wrong offset or the long body: not transient
    s_quirk_ranges(&quirks, 'c', ranges, sizeof ranges);
    assert_string_equal(ranges, "bytes=499- ");
    s_quirk_ranges(&quirks, 'd', ranges, sizeof ranges);
    assert_string_equal(ranges, "- ");
    //  An answer that is not the content is retried like an outage
    s_quirk_ranges(&quirks, 'e', ranges, sizeof ranges);
    assert_string_equal(ranges, "- - - - - ");
    free(content);
    sn_client_destroy(&client);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_list_by_record_and_by_query, s_setup),
        cmocka_unit_test_setup(test_list_pages_across_many_pages_and_short_pages, s_setup),
        cmocka_unit_test_setup(test_get_metadata_and_unknown_is_not_found, s_setup),
        cmocka_unit_test_setup(test_download_whole_and_from_an_offset, s_setup),
        cmocka_unit_test_setup(test_download_of_an_empty_file, s_setup),
        cmocka_unit_test_setup(test_download_into_a_file_descriptor, s_setup),
        cmocka_unit_test_setup(test_download_stopped_by_the_sink, s_setup),
        cmocka_unit_test_setup(test_download_from_a_hibernating_instance_is_unavailable, s_setup),
        cmocka_unit_test_setup(test_download_retries_an_outage_and_not_a_404, s_setup),
        cmocka_unit_test_setup(test_upload_of_awkward_names_and_types, s_setup),
        cmocka_unit_test_setup(test_upload_arguments_are_checked_before_any_request, s_setup),
        cmocka_unit_test_setup(test_upload_refused_by_the_extension_rule, s_setup),
        cmocka_unit_test_setup(test_upload_refused_by_the_size_limit, s_setup),
        cmocka_unit_test_setup(test_upload_refused_by_an_acl_and_to_a_missing_record, s_setup),
        cmocka_unit_test_setup(test_upload_whose_answer_is_lost_is_not_sent_again, s_setup),
        cmocka_unit_test_setup(test_upload_after_a_5xx_is_not_sent_again, s_setup),
        cmocka_unit_test_setup(test_upload_after_a_429_is_retried, s_setup),
        cmocka_unit_test_setup(test_delete_then_not_found, s_setup),
        cmocka_unit_test_setup(test_large_file_goes_both_ways_in_small_memory, s_setup),
        cmocka_unit_test_setup_teardown(test_download_quirks_of_other_servers, s_quirks_setup,
                                        s_quirks_teardown),
    };
    return cmocka_run_group_tests_name("test_sn_attachment", tests, s_group_setup,
                                       s_group_teardown);
}
