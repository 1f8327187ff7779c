/*  sn_attachment.c: the Attachment API: list, metadata, streamed download and
    upload, delete. See sn_attachment.h for the contract.

    How the parts fit: every request goes through sn_client_call (sn_call.h).
    Lists and metadata are JSON calls; a list walks sn_pager over
    sys_created_on. A download is one call whose prepare hook asks for a Range
    from the first byte the sink has not yet had and whose sink hooks
    (s_want, s_write) take the body as it arrives; its finish hook checks that
    the answer was the whole rest of the content. An upload is one call whose
    prepare hook rewinds a pread() source over the caller's fd, marked
    SN_RESEND_UNSENT so that nothing that may have been stored is sent again. */

#include "sn_attachment.h"
#include "sn_call.h"
#include "sn_pager.h"
#include "sn_query.h"
#include "sn_record.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define SN_ATTACHMENT_PATH "/api/now/v1/attachment"

//  An error envelope or an outage page is small; a download answer that is
//  not the content is never buffered beyond this.
#define SN_ATTACHMENT_MAX_BUFFERED ((size_t)1 << 20)

//  -------------------------------------------------------------------------
//  Building blocks

//  Appends "&name=escaped(value)" (or "?name=..." for the first) to *path.
static bool s_param(char **path, const char *name, const char *value)
{
    char *escaped = sn_query_escape(value);
    char *longer = NULL;
    bool ok = escaped && asprintf(&longer, "%s%c%s=%s", *path, strchr(*path, '?') ? '&' : '?', name,
                                  escaped) >= 0;
    free(escaped);
    if (!ok)
        return false;
    free(*path);
    *path = longer;
    return true;
}

char *sn_attachment_upload_path(const char *table, const char *table_sys_id, const char *file_name)
{
    assert(table && table_sys_id && file_name);
    char *path = strdup(SN_ATTACHMENT_PATH "/file");
    if (path && s_param(&path, "table_name", table) &&
        s_param(&path, "table_sys_id", table_sys_id) && s_param(&path, "file_name", file_name))
        return path;
    free(path);
    return NULL;
}

char *sn_attachment_list_path(const char *query, int limit)
{
    assert(query && limit > 0);
    char count[16];
    snprintf(count, sizeof count, "%d", limit);
    char *path = strdup(SN_ATTACHMENT_PATH);
    if (path && s_param(&path, "sysparm_query", query) && s_param(&path, "sysparm_limit", count) &&
        s_param(&path, "sysparm_fields", SN_ATTACHMENT_FIELDS))
        return path;
    free(path);
    return NULL;
}

//  Reads a decimal number of at least one digit at *text, advancing it; false
//  on no digit or overflow.
static bool s_number(const char **text, uint64_t *value_p)
{
    const char *c = *text;
    uint64_t value = 0;
    if (!isdigit((unsigned char)*c))
        return false;
    for (; isdigit((unsigned char)*c); c++) {
        unsigned digit = (unsigned)(*c - '0');
        if (value > (UINT64_MAX - digit) / 10)
            return false;
        value = value * 10 + digit;
    }
    *text = c;
    *value_p = value;
    return true;
}

bool sn_attachment_range_first(const char *text, uint64_t *first_p)
{
    assert(text && first_p);
    if (strncasecmp(text, "bytes", 5) != 0)
        return false;
    const char *c = text + 5;
    while (*c == ' ')
        c++;
    uint64_t first, last, total;
    if (!s_number(&c, &first) || *c++ != '-' || !s_number(&c, &last) || *c++ != '/' || last < first)
        return false;
    if (*c == '*')
        c++;
    else if (!s_number(&c, &total) || last >= total)
        return false;
    if (*c != '\0')
        return false;
    *first_p = first;
    return true;
}

//  True when text, anywhere and in any case, holds one of words (NULL-ended).
static bool s_mentions(const char *text, const char *const *words)
{
    for (size_t i = 0; words[i]; i++)
        if (strcasestr(text, words[i]))
            return true;
    return false;
}

//  True when a 400 answer to an upload is about the request's shape (a
//  parameter or the Content-Type missing, a table that does not exist, a path
//  that matches no API: §1.4, §5.2), not about the file.
static bool s_malformed_request(const sn_error_t *err)
{
    static const char *const words[] = {"missing", "required", "invalid table",
                                        "does not represent any resource", NULL};
    return s_mentions(err->message, words) || s_mentions(err->detail, words);
}

sn_err_code_t sn_attachment_upload_error(sn_error_t *err, bool outcome_unknown)
{
    assert(err);
    long status = err->http_status;
    bool refusal_code = err->code == SN_E_BAD_REQUEST || err->code == SN_E_PERMISSION ||
                        err->code == SN_E_DATA_POLICY;
    bool refused = refusal_code && (status == 403 || status == 413 || status == 415 ||
                                    (status == 400 && !s_malformed_request(err)));
    char message[sizeof err->message];
    snprintf(message, sizeof message, "%s", err->message);
    if (refused) {
        err->code = SN_E_FILE_REFUSED;
        snprintf(err->message, sizeof err->message,
                 "attachment refused by ServiceNow (HTTP %ld): %.440s", status, message);
    } else if (outcome_unknown && (err->code == SN_E_UNAVAILABLE || err->code == SN_E_TIMEOUT) &&
               !strstr(message, "outcome unknown"))
        snprintf(err->message, sizeof err->message,
                 "attachment upload outcome unknown: %.400s; list the record's attachments before "
                 "sending it again",
                 message);
    return err->code;
}

//  -------------------------------------------------------------------------
//  JSON calls: list, metadata, delete

//  One JSON call; with type JSON_OBJECT or JSON_ARRAY extracts the "result" of
//  that type into *result_p, with 0 expects no particular body.
static sn_err_code_t s_json_call(sn_client_t *self, const char *method, const char *path,
                                 json_type type, json_t **result_p, sn_error_t *err)
{
    sn_call_t call = {.method = method, .path = path, .resend = SN_RESEND_ALWAYS};
    json_t *doc = NULL;
    sn_err_code_t code = sn_client_call(self, &call, &doc, NULL, err);
    if (code == SN_OK && result_p) {
        if (!doc)
            code = sn_error_set(err, SN_E_BAD_RESPONSE, 0, "empty answer from ServiceNow",
                                "%s %.*s", method, (int)strcspn(path, "?"), path);
        else
            code = sn_response_result(doc, type, result_p, err);
    }
    json_decref(doc);
    return code;
}

static sn_err_code_t s_check_id(const char *what, const char *sys_id, sn_error_t *err)
{
    if (sn_is_sys_id(sys_id))
        return SN_OK;
    return sn_error_set(err, SN_E_BAD_REQUEST, 0, "invalid sys_id",
                        "%s '%.64s' is not 32 letters and digits", what, sys_id ? sys_id : "");
}

sn_err_code_t sn_attachment_list(sn_client_t *self, const char *query, json_t **rows_p,
                                 sn_error_t *err)
{
    assert(self && rows_p && err);
    *rows_p = NULL;
    sn_error_reset(err);
    int limit = sn_client_page_size(self);
    if (limit > SN_ATTACHMENT_PAGE_MAX)
        limit = SN_ATTACHMENT_PAGE_MAX;
    sn_pager_t *pager = sn_pager_new(query, "sys_created_on", NULL);
    json_t *all = json_array();
    sn_err_code_t code = SN_OK;
    if (!pager || !all)
        code = sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
    while (code == SN_OK) {
        bool oom = false;
        const char *page_query = sn_pager_query(pager, &oom);
        if (!page_query) {
            if (oom)
                code = sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
            break;
        }
        char *path = sn_attachment_list_path(page_query, limit);
        json_t *rows = NULL;
        code = path ? s_json_call(self, "GET", path, JSON_ARRAY, &rows, err)
                    : sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
        free(path);
        if (code == SN_OK)
            code = sn_pager_advance(pager, rows, err);
        if (code == SN_OK && json_array_extend(all, rows) != 0)
            code = sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
        json_decref(rows);
    }
    sn_pager_destroy(&pager);
    if (code == SN_OK)
        *rows_p = all;
    else
        json_decref(all);
    return code;
}

sn_err_code_t sn_attachment_list_record(sn_client_t *self, const char *table,
                                        const char *table_sys_id, json_t **rows_p, sn_error_t *err)
{
    assert(self && rows_p && err);
    *rows_p = NULL;
    sn_error_reset(err);
    if (!sn_is_table_name(table))
        return sn_error_set(err, SN_E_BAD_REQUEST, 0, "invalid table name", "'%s'",
                            table ? table : "(null)");
    if (s_check_id("record", table_sys_id, err) != SN_OK)
        return err->code;
    char *query = NULL;
    if (asprintf(&query, "table_name=%s^table_sys_id=%s", table, table_sys_id) < 0)
        return sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
    sn_err_code_t code = sn_attachment_list(self, query, rows_p, err);
    free(query);
    return code;
}

sn_err_code_t sn_attachment_get(sn_client_t *self, const char *sys_id, json_t **meta_p,
                                sn_error_t *err)
{
    assert(self && meta_p && err);
    *meta_p = NULL;
    sn_error_reset(err);
    if (s_check_id("attachment", sys_id, err) != SN_OK)
        return err->code;
    char *path = NULL;
    if (asprintf(&path, SN_ATTACHMENT_PATH "/%s", sys_id) < 0)
        return sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
    sn_err_code_t code = s_json_call(self, "GET", path, JSON_OBJECT, meta_p, err);
    free(path);
    return code;
}

sn_err_code_t sn_attachment_delete(sn_client_t *self, const char *sys_id, sn_error_t *err)
{
    assert(self && err);
    sn_error_reset(err);
    if (s_check_id("attachment", sys_id, err) != SN_OK)
        return err->code;
    char *path = NULL;
    if (asprintf(&path, SN_ATTACHMENT_PATH "/%s", sys_id) < 0)
        return sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
    sn_err_code_t code = s_json_call(self, "DELETE", path, 0, NULL, err);
    free(path);
    return code;
}

//  -------------------------------------------------------------------------
//  Download

typedef struct {
    const char *sys_id;          //  the attachment asked for
    sn_attachment_sink_fn *sink; //  the caller's receiver
    void *sink_arg;              //  its argument
    uint64_t pos;                //  content offset of the next byte the sink gets
    uint64_t asked;              //  first byte this attempt's Range asks for
    uint64_t at;                 //  content offset of the answer's next body byte
    uint64_t size;               //  size_bytes of the content
    json_t *meta;                //  metadata of the first answer, NULL before one
    bool started;                //  this attempt's answer is the content
    sn_error_t failure;          //  why this attempt stopped the transfer
    sn_http_sink_t http_sink;    //  s_want and s_write on this
} s_download_t;

//  Stops the current attempt for a reason of ours; false, for the hooks to return.
static bool s_stop(s_download_t *dl, sn_err_code_t code, const char *message, const char *detail)
{
    if (dl->failure.code == SN_OK)
        sn_error_set(&dl->failure, code, 0, message, "attachment %s: %s", dl->sys_id, detail);
    return false;
}

//  The size_bytes of metadata; false when missing or not a number.
static bool s_meta_size(const json_t *meta, uint64_t *size_p)
{
    const char *text = sn_field(meta, "size_bytes");
    return s_number(&text, size_p) && *text == '\0';
}

//  Takes a 2xx answer that carries X-Attachment-Metadata as the content: reads
//  the metadata (the same file as any earlier attempt's), and where in the
//  content its body starts. False, with the failure set, when it cannot be.
static bool s_start(s_download_t *dl, const sn_response_t *resp)
{
    dl->started = true;
    json_t *meta = json_loads(resp->attachment_meta, 0, NULL);
    uint64_t size = 0;
    char detail[160];
    if (!json_is_object(meta) || !sn_record_normalise(meta) || !s_meta_size(meta, &size)) {
        json_decref(meta);
        return s_stop(dl, SN_E_BAD_RESPONSE, "unreadable X-Attachment-Metadata",
                      "not a JSON object of strings with a numeric size_bytes");
    }
    const char *id = sn_field(meta, "sys_id");
    bool other_file = *id && strcmp(id, dl->sys_id) != 0;
    if (!other_file && dl->meta)
        other_file = size != dl->size || strcmp(sn_field(meta, "hash"), sn_field(dl->meta, "hash"));
    if (other_file) {
        json_decref(meta);
        return s_stop(dl, SN_E_BAD_RESPONSE, "ServiceNow sent another file",
                      "the metadata differs from the file asked for or from the earlier answer");
    }
    if (!dl->meta) {
        dl->meta = meta;
        dl->size = size;
    } else
        json_decref(meta);
    if (dl->pos > dl->size) {
        snprintf(detail, sizeof detail, "offset %" PRIu64 " is beyond its %" PRIu64 " bytes",
                 dl->pos, dl->size);
        return s_stop(dl, SN_E_BAD_REQUEST, "download offset beyond the attachment's end", detail);
    }
    dl->at = 0;
    if (resp->status == 206) {
        uint64_t first = 0;
        if (!sn_attachment_range_first(resp->content_range, &first) || first != dl->asked) {
            snprintf(detail, sizeof detail, "Content-Range '%.60s' for a range from %" PRIu64,
                     resp->content_range, dl->asked);
            return s_stop(dl, SN_E_BAD_RESPONSE, "partial content at the wrong offset", detail);
        }
        dl->at = first;
    } else if (resp->status != 200) {
        snprintf(detail, sizeof detail, "HTTP %ld instead of 200 or 206", resp->status);
        return s_stop(dl, SN_E_BAD_RESPONSE, "unexpected answer to a download", detail);
    }
    return true;
}

static bool s_is_content(const sn_response_t *resp)
{
    return resp->status >= 200 && resp->status < 300 && resp->attachment_meta;
}

//  sn_http_sink_t.want: takes the body of an answer that is the content; any
//  other (an error envelope, an outage page) is buffered for
//  s_download_finish. An answer that fails s_start is taken too, so that
//  s_write stops it at once.
static bool s_want(void *arg, const sn_response_t *resp)
{
    s_download_t *dl = arg;
    if (!s_is_content(resp))
        return false;
    s_start(dl, resp);
    return true;
}

//  sn_http_sink_t.write: skips what the sink already has (an answer from 0
//  where a range was asked for), hands on the rest.
static bool s_write(void *arg, const char *data, size_t len)
{
    s_download_t *dl = arg;
    if (dl->failure.code != SN_OK)
        return false;
    if (dl->at < dl->pos) {
        uint64_t skip = dl->pos - dl->at < len ? dl->pos - dl->at : len;
        data += skip;
        len -= (size_t)skip;
        dl->at += skip;
    }
    if (len == 0)
        return true;
    if (len > dl->size - dl->at)
        return s_stop(dl, SN_E_BAD_RESPONSE, "download longer than the attachment",
                      "more bytes than its size_bytes");
    if (dl->sink(data, len, dl->sink_arg) != 0)
        return s_stop(dl, SN_E_CANCELLED, "download stopped by the caller", "the sink refused");
    dl->pos += len;
    dl->at += len;
    return true;
}

//  sn_call_t.prepare: asks for the content from one byte before the first the
//  sink has not had. A range that starts at the very end is unsatisfiable
//  (416), so a download resumed when every byte had already arrived would fail
//  instead of finding nothing left; with one byte before, it gets that byte,
//  skips it and ends complete. The byte costs nothing else: s_write skips it.
static void s_download_prepare(void *arg, sn_http_request_t *req)
{
    s_download_t *dl = arg;
    dl->started = false;
    sn_error_reset(&dl->failure);
    dl->asked = dl->pos > 0 ? dl->pos - 1 : 0;
    req->accept = "*/*";
    req->range_from = dl->asked;
    req->sink = &dl->http_sink;
    req->max_buffered = SN_ATTACHMENT_MAX_BUFFERED;
}

//  sn_call_t.finish: the outcome of an answer that arrived.
static sn_err_code_t s_download_finish(void *arg, const sn_response_t *resp, json_t **doc_p,
                                       sn_error_t *err)
{
    s_download_t *dl = arg;
    *doc_p = NULL;
    //  An empty content has no body, so s_want never saw it
    if (!dl->started && s_is_content(resp) && resp->body_len == 0)
        s_start(dl, resp);
    if (dl->failure.code != SN_OK) {
        *err = dl->failure;
        err->http_status = resp->status;
        return err->code;
    }
    if (dl->started) {
        if (dl->at == dl->size)
            return SN_OK;
        //  Cut short: transient, and the next attempt resumes at dl->pos
        return sn_error_set(err, SN_E_UNAVAILABLE, resp->status, "download ended early",
                            "attachment %s: the answer stopped at byte %" PRIu64 " of %" PRIu64,
                            dl->sys_id, dl->at, dl->size);
    }
    json_t *doc = NULL;
    sn_err_code_t code = sn_response_decode(resp, &doc, err);
    json_decref(doc);
    bool success = resp->status >= 200 && resp->status < 300;
    if (success && (code == SN_OK || code == SN_E_BAD_RESPONSE))
        return sn_error_set(err, SN_E_UNAVAILABLE, resp->status,
                            "answer is not the attachment's content",
                            "attachment %s: HTTP %ld without X-Attachment-Metadata, Content-Type "
                            "'%s' (an outage page or a proxy?)",
                            dl->sys_id, resp->status, resp->content_type);
    if (resp->status == 416)
        return sn_error_set(
            err, SN_E_BAD_REQUEST, 416, "download offset beyond the attachment's end",
            "attachment %s: range from %" PRIu64 " not satisfiable", dl->sys_id, dl->asked);
    return code;
}

sn_err_code_t sn_attachment_download(sn_client_t *self, const char *sys_id, uint64_t offset,
                                     sn_attachment_sink_fn *sink, void *arg, uint64_t *written_p,
                                     json_t **meta_p, sn_error_t *err)
{
    assert(self && sink && err);
    if (written_p)
        *written_p = 0;
    if (meta_p)
        *meta_p = NULL;
    sn_error_reset(err);
    if (s_check_id("attachment", sys_id, err) != SN_OK)
        return err->code;
    char *path = NULL;
    if (asprintf(&path, SN_ATTACHMENT_PATH "/%s/file", sys_id) < 0)
        return sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
    s_download_t dl = {.sys_id = sys_id, .sink = sink, .sink_arg = arg, .pos = offset};
    dl.http_sink = (sn_http_sink_t){.want = s_want, .write = s_write, .arg = &dl};
    sn_call_t call = {.method = "GET",
                      .path = path,
                      .resend = SN_RESEND_ALWAYS,
                      .prepare = s_download_prepare,
                      .finish = s_download_finish,
                      .arg = &dl,
                      .progress = &dl.pos};
    json_t *doc = NULL;
    sn_err_code_t code = sn_client_call(self, &call, &doc, NULL, err);
    json_decref(doc);
    free(path);
    //  The sink's stop reaches sn_client_call as a failed transfer: ours is the reason
    if (code == SN_E_CANCELLED && dl.failure.code != SN_OK) {
        *err = dl.failure;
        code = err->code;
    }
    if (written_p)
        *written_p = dl.pos - offset;
    if (code == SN_OK && meta_p)
        *meta_p = json_incref(dl.meta);
    json_decref(dl.meta);
    return code;
}

int sn_attachment_fd_sink(const void *data, size_t len, void *arg)
{
    sn_attachment_fd_t *out = arg;
    const char *bytes = data;
    while (len > 0) {
        ssize_t wrote = pwrite(out->fd, bytes, len, (off_t)out->at);
        if (wrote < 0 && errno == EINTR)
            continue;
        if (wrote <= 0) {
            out->error = wrote < 0 ? errno : EIO;
            return -1;
        }
        bytes += wrote;
        len -= (size_t)wrote;
        out->at += (uint64_t)wrote;
    }
    return 0;
}

//  -------------------------------------------------------------------------
//  Upload

typedef struct {
    const sn_attachment_file_t *file; //  what is sent
    const char *content_type;         //  its type, defaulted
    uint64_t sent;                    //  bytes read from fd in this attempt
    int error;                        //  errno of a failed read, -1 for a short file, 0 when fine
} s_upload_t;

//  sn_http_read_fn: the next bytes of the file, from where this attempt is.
static ssize_t s_upload_read(void *arg, char *buffer, size_t size)
{
    s_upload_t *up = arg;
    uint64_t left = up->file->size - up->sent;
    size_t want = left < size ? (size_t)left : size;
    if (want == 0)
        return 0;
    ssize_t got;
    do
        got = pread(up->file->fd, buffer, want, (off_t)up->sent);
    while (got < 0 && errno == EINTR);
    if (got <= 0) {
        up->error = got < 0 ? errno : -1;
        return -1;
    }
    up->sent += (uint64_t)got;
    return got;
}

//  sn_call_t.prepare: streams the file from its start (again, after a 429).
static void s_upload_prepare(void *arg, sn_http_request_t *req)
{
    s_upload_t *up = arg;
    up->sent = 0;
    up->error = 0;
    req->content_type = up->content_type;
    req->read = s_upload_read;
    req->read_arg = up;
    req->read_len = up->file->size;
}

//  True when text is a MIME type fit for a header: printable ASCII, a '/'.
static bool s_type_valid(const char *text)
{
    size_t len = strlen(text);
    if (len > 127 || !strchr(text, '/'))
        return false;
    for (const char *c = text; *c; c++)
        if (*c < 0x20 || *c > 0x7e)
            return false;
    return true;
}

//  True when name can be uploaded: 1..SN_ATTACHMENT_NAME_MAX bytes, no
//  control characters.
static bool s_name_valid(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > SN_ATTACHMENT_NAME_MAX)
        return false;
    for (const unsigned char *c = (const unsigned char *)name; *c; c++)
        if (*c < 0x20 || *c == 0x7f)
            return false;
    return true;
}

static sn_err_code_t s_check_file(const sn_attachment_file_t *file, sn_error_t *err)
{
    if (!sn_is_table_name(file->table))
        return sn_error_set(err, SN_E_BAD_REQUEST, 0, "invalid table name", "'%s'",
                            file->table ? file->table : "(null)");
    if (s_check_id("record", file->table_sys_id, err) != SN_OK)
        return err->code;
    if (!file->file_name || !s_name_valid(file->file_name))
        return sn_error_set(err, SN_E_BAD_REQUEST, 0, "invalid attachment file name",
                            "need 1 to %d bytes without control characters",
                            SN_ATTACHMENT_NAME_MAX);
    if (file->content_type && *file->content_type && !s_type_valid(file->content_type))
        return sn_error_set(err, SN_E_BAD_REQUEST, 0, "invalid attachment content type",
                            "'%.64s' is not a MIME type of printable ASCII", file->content_type);
    if (file->fd < 0)
        return sn_error_set(err, SN_E_BAD_REQUEST, 0, "no file to upload", "negative fd");
    return SN_OK;
}

sn_err_code_t sn_attachment_upload(sn_client_t *self, const sn_attachment_file_t *file,
                                   json_t **meta_p, sn_error_t *err)
{
    assert(self && file && err);
    if (meta_p)
        *meta_p = NULL;
    sn_error_reset(err);
    if (s_check_file(file, err) != SN_OK)
        return err->code;
    char *path = sn_attachment_upload_path(file->table, file->table_sys_id, file->file_name);
    if (!path)
        return sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
    s_upload_t up = {.file = file,
                     .content_type = file->content_type && *file->content_type
                                         ? file->content_type
                                         : "application/octet-stream"};
    sn_call_t call = {.method = "POST",
                      .path = path,
                      .resend = SN_RESEND_UNSENT,
                      .prepare = s_upload_prepare,
                      .arg = &up,
                      .progress = NULL};
    json_t *doc = NULL;
    sn_err_code_t code = sn_client_call(self, &call, &doc, NULL, err);
    free(path);
    if (code == SN_E_CANCELLED && up.error != 0)
        //  The body was cut short of its Content-Length: nothing can have been stored
        code = sn_error_set(err, SN_E_BAD_REQUEST, 0, "cannot read the file to upload",
                            "'%.200s': %s", file->file_name,
                            up.error > 0 ? strerror(up.error) : "shorter than the size given");
    else if (code != SN_OK)
        code = sn_attachment_upload_error(err, call.outcome_unknown);
    json_t *meta = NULL;
    if (code == SN_OK && !doc)
        code = sn_error_set(err, SN_E_BAD_RESPONSE, 0, "empty answer to an attachment upload",
                            "the file may be stored: list the record's attachments");
    if (code == SN_OK)
        code = sn_response_result(doc, JSON_OBJECT, &meta, err);
    if (code == SN_OK && !sn_is_sys_id(sn_field(meta, "sys_id")))
        code = sn_error_set(err, SN_E_BAD_RESPONSE, 0, "attachment upload answer has no sys_id",
                            "the file may be stored: list the record's attachments");
    json_decref(doc);
    if (code == SN_OK && meta_p)
        *meta_p = meta;
    else
        json_decref(meta);
    return code;
}
