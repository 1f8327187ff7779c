/*  sn_http.c: libcurl easy transport for the ServiceNow client.
    See sn_http.h for the contract. */

#include "sn_http.h"

#include <assert.h>
#include <curl/curl.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct sn_http_t {
    CURL *curl;                   //  easy handle, reused for its connections
    sn_http_options_t opts;       //  options, strings owned below
    char *ca_bundle;              //  copy of opts.ca_bundle, or NULL
    char *user_agent;             //  copy of opts.user_agent
    char errbuf[CURL_ERROR_SIZE]; //  libcurl's message of the last failure
    const sn_http_request_t *req; //  request being performed
    sn_response_t *resp;          //  response being received
    size_t max_body;              //  cap on a buffered body for this request
    bool too_large;               //  the body passed max_body
    bool send_once;               //  the request may reach the server once
    int sends;                    //  times libcurl was about to send it
    bool sink_asked;              //  the sink saw this answer's first block
    bool sink_taken;              //  the sink takes this answer's body
    bool stopped;                 //  the read callback or the sink stopped the transfer
};

//  Longest X-Attachment-Metadata kept: the metadata of §5.4 is about 1 kB.
#define SN_HTTP_MAX_META 65536

sn_http_t *sn_http_new(const sn_http_options_t *opts)
{
    assert(opts && opts->connect_timeout_ms > 0 && opts->request_timeout_ms > 0);
    assert(opts->user_agent && opts->max_response > 0);
    sn_http_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->opts = *opts;
    self->curl = curl_easy_init();
    self->user_agent = strdup(opts->user_agent);
    self->ca_bundle = opts->ca_bundle ? strdup(opts->ca_bundle) : NULL;
    if (!self->curl || !self->user_agent || (opts->ca_bundle && !self->ca_bundle)) {
        sn_http_destroy(&self);
        return NULL;
    }
    return self;
}

void sn_http_destroy(sn_http_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    sn_http_t *self = *self_p;
    if (self->curl)
        curl_easy_cleanup(self->curl);
    free(self->ca_bundle);
    free(self->user_agent);
    free(self);
    *self_p = NULL;
}

//  Copies the answer's status and Content-Type from the handle into resp.
static void s_answer_head(sn_http_t *self, sn_response_t *resp)
{
    curl_easy_getinfo(self->curl, CURLINFO_RESPONSE_CODE, &resp->status);
    const char *content_type = NULL;
    curl_easy_getinfo(self->curl, CURLINFO_CONTENT_TYPE, &content_type);
    snprintf(resp->content_type, sizeof resp->content_type, "%s", content_type ? content_type : "");
}

//  libcurl write callback: hands the body to the request's sink when it takes
//  it, else appends it to the response body, up to the cap.
static size_t s_on_body(char *data, size_t size, size_t count, void *arg)
{
    sn_http_t *self = arg;
    sn_response_t *resp = self->resp;
    size_t len = size * count;
    const sn_http_sink_t *sink = self->req->sink;
    if (sink && !self->sink_asked) {
        self->sink_asked = true;
        s_answer_head(self, resp);
        self->sink_taken = sink->want(sink->arg, resp);
    }
    if (self->sink_taken) {
        if (sink->write(sink->arg, data, len))
            return len;
        self->stopped = true;
        return 0;
    }
    if (resp->body_len + len > self->max_body) {
        self->too_large = true;
        return 0;
    }
    if (resp->body_len + len + 1 > resp->body_cap) {
        size_t cap = resp->body_cap ? resp->body_cap : 16384;
        while (cap < resp->body_len + len + 1)
            cap *= 2;
        char *grown = realloc(resp->body, cap);
        if (!grown)
            return 0;
        resp->body = grown;
        resp->body_cap = cap;
    }
    memcpy(resp->body + resp->body_len, data, len);
    resp->body_len += len;
    resp->body[resp->body_len] = '\0';
    return len;
}

//  True when the header line data[0..len) is the header name (lower case);
//  *value_p and *value_len then delimit its value, without the blanks around it.
static bool s_header_is(const char *data, size_t len, const char *name, const char **value_p,
                        size_t *value_len)
{
    size_t name_len = strlen(name);
    if (len <= name_len || data[name_len] != ':' || strncasecmp(data, name, name_len) != 0)
        return false;
    const char *value = data + name_len + 1, *end = data + len;
    while (value < end && (*value == ' ' || *value == '\t'))
        value++;
    while (end > value && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *value_p = value;
    *value_len = (size_t)(end - value);
    return true;
}

//  libcurl header callback: picks X-Total-Count, Date (the instance's own
//  clock, which change polling bounds itself by), and for downloads
//  X-Attachment-Metadata and Content-Range out of the response headers.
static size_t s_on_header(char *data, size_t size, size_t count, void *arg)
{
    sn_http_t *self = arg;
    sn_response_t *resp = self->resp;
    size_t len = size * count;
    const char *value;
    size_t value_len;
    char text[64];
    if (s_header_is(data, len, "x-attachment-metadata", &value, &value_len)) {
        free(resp->attachment_meta);
        resp->attachment_meta = value_len <= SN_HTTP_MAX_META ? strndup(value, value_len) : NULL;
        return len;
    }
    if (s_header_is(data, len, "content-range", &value, &value_len)) {
        if (value_len < sizeof resp->content_range) {
            memcpy(resp->content_range, value, value_len);
            resp->content_range[value_len] = '\0';
        }
        return len;
    }
    bool total = s_header_is(data, len, "x-total-count", &value, &value_len);
    if (!total && !s_header_is(data, len, "date", &value, &value_len))
        return len;
    if (value_len >= sizeof text)
        return len;
    memcpy(text, value, value_len);
    text[value_len] = '\0';
    if (total) {
        char *end;
        long number = strtol(text, &end, 10);
        if (end != text && number >= 0)
            resp->total_count = number;
    } else {
        time_t date = curl_getdate(text, NULL);
        if (date > 0)
            resp->date = date;
    }
    return len;
}

//  libcurl read callback: the next bytes of a streamed request body.
static size_t s_on_read(char *buffer, size_t size, size_t count, void *arg)
{
    sn_http_t *self = arg;
    ssize_t got = self->req->read(self->req->read_arg, buffer, size * count);
    if (got < 0 || (size_t)got > size * count) {
        self->stopped = true;
        return CURL_READFUNC_ABORT;
    }
    return (size_t)got;
}

//  libcurl pre-request callback: called on a connection just before the
//  request goes out, again when libcurl re-sends it by itself (a reused
//  connection that closed before any byte of the answer). A request that may
//  be carried out once must not go twice without the caller knowing: the
//  second send is aborted and reported as an unknown outcome.
static int s_on_prereq(void *arg, char *primary_ip, char *local_ip, int primary_port,
                       int local_port)
{
    (void)primary_ip, (void)local_ip, (void)primary_port, (void)local_port;
    sn_http_t *self = arg;
    self->sends++;
    return self->send_once && self->sends > 1 ? CURL_PREREQFUNC_ABORT : CURL_PREREQFUNC_OK;
}

//  Frees a header list after wiping its entries: one of them may hold a token.
static void s_headers_free(struct curl_slist *headers)
{
    for (struct curl_slist *item = headers; item; item = item->next)
        OPENSSL_cleanse(item->data, strlen(item->data));
    curl_slist_free_all(headers);
}

//  The request headers: Accept, Content-Type with a body, Bearer token, and an
//  empty Expect (no 100-continue round trip). NULL when out of memory.
static struct curl_slist *s_headers(const sn_http_request_t *req)
{
    struct curl_slist *headers = NULL, *next;
    char line[4096];
    char accept[160];
    snprintf(accept, sizeof accept, "Accept: %s", req->accept ? req->accept : "application/json");
    const char *lines[4] = {accept, "Expect:", NULL, NULL};
    size_t count = 2;
    char content_type[160];
    if (req->content_type) {
        snprintf(content_type, sizeof content_type, "Content-Type: %s", req->content_type);
        lines[count++] = content_type;
    }
    if (req->bearer) {
        if ((size_t)snprintf(line, sizeof line, "Authorization: Bearer %s", req->bearer) >=
            sizeof line)
            return NULL;
        lines[count++] = line;
    }
    for (size_t i = 0; i < count; i++) {
        next = curl_slist_append(headers, lines[i]);
        if (!next) {
            s_headers_free(headers);
            headers = NULL;
            break;
        }
        headers = next;
    }
    OPENSSL_cleanse(line, sizeof line);
    return headers;
}

//  Sets every option of one request on the freshly reset handle.
static CURLcode s_setup(sn_http_t *self, const sn_http_request_t *req, struct curl_slist *headers)
{
    CURL *curl = self->curl;
    CURLcode rc = CURLE_OK;
#define SET(option, value)                                                                         \
    do {                                                                                           \
        if (rc == CURLE_OK)                                                                        \
            rc = curl_easy_setopt(curl, option, value);                                            \
    } while (0)
    SET(CURLOPT_URL, req->url);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_CONNECTTIMEOUT_MS, self->opts.connect_timeout_ms);
    if (req->read || req->sink) {
        //  A streamed file may rightly take long: fail on a stall instead
        long stall_s = self->opts.request_timeout_ms / 1000;
        SET(CURLOPT_LOW_SPEED_LIMIT, 1L);
        SET(CURLOPT_LOW_SPEED_TIME, stall_s > 0 ? stall_s : 1L);
    } else
        SET(CURLOPT_TIMEOUT_MS, self->opts.request_timeout_ms);
    SET(CURLOPT_USERAGENT, self->user_agent);
    //  Ranges count bytes of the content, not of a compressed form of it
    if (!req->sink)
        SET(CURLOPT_ACCEPT_ENCODING, "");
    char range[32];
    if (req->range_from > 0) {
        snprintf(range, sizeof range, "%" PRIu64 "-", req->range_from);
        SET(CURLOPT_RANGE, range);
    }
    SET(CURLOPT_SSL_VERIFYPEER, self->opts.tls_skip_verify ? 0L : 1L);
    SET(CURLOPT_SSL_VERIFYHOST, self->opts.tls_skip_verify ? 0L : 2L);
    if (self->ca_bundle)
        SET(CURLOPT_CAINFO, self->ca_bundle);
    SET(CURLOPT_HTTPHEADER, headers);
    SET(CURLOPT_ERRORBUFFER, self->errbuf);
    SET(CURLOPT_WRITEFUNCTION, s_on_body);
    SET(CURLOPT_WRITEDATA, self);
    SET(CURLOPT_HEADERFUNCTION, s_on_header);
    SET(CURLOPT_HEADERDATA, self);
    SET(CURLOPT_PREREQFUNCTION, s_on_prereq);
    SET(CURLOPT_PREREQDATA, self);
    if (req->basic_user) {
        SET(CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        SET(CURLOPT_USERNAME, req->basic_user);
        SET(CURLOPT_PASSWORD, req->basic_password ? req->basic_password : "");
    }
    if (strcmp(req->method, "GET") == 0)
        SET(CURLOPT_HTTPGET, 1L);
    else if (req->read) {
        if (strcmp(req->method, "POST") != 0)
            SET(CURLOPT_CUSTOMREQUEST, req->method);
        SET(CURLOPT_POST, 1L);
        SET(CURLOPT_READFUNCTION, s_on_read);
        SET(CURLOPT_READDATA, self);
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->read_len);
    } else {
        if (strcmp(req->method, "POST") != 0)
            SET(CURLOPT_CUSTOMREQUEST, req->method);
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        SET(CURLOPT_POSTFIELDS, req->body ? req->body : "");
    }
#undef SET
    return rc;
}

//  True when libcurl failed before the request could reach the server.
static bool s_surely_unsent(CURL *curl, CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        return true;
    case CURLE_OPERATION_TIMEDOUT: {
        //  Timed out before the request went out (still connecting)?
        curl_off_t pretransfer = 0;
        curl_easy_getinfo(curl, CURLINFO_PRETRANSFER_TIME_T, &pretransfer);
        return pretransfer == 0;
    }
    default:
        return false;
    }
}

//  The typed error of a libcurl failure.
static sn_err_code_t s_fail(sn_http_t *self, const sn_http_request_t *req, CURLcode rc,
                            sn_error_t *err)
{
    const char *reason = self->errbuf[0] ? self->errbuf : curl_easy_strerror(rc);
    //  The URL without its query: host and path say enough
    int path_len = (int)strcspn(req->url, "?");
    if (self->send_once &&
        (self->sends > 1 || rc == CURLE_GOT_NOTHING || rc == CURLE_SEND_FAIL_REWIND))
        return sn_error_set(err, SN_E_UNAVAILABLE, 0,
                            "connection closed before ServiceNow answered: outcome unknown",
                            "%s %.*s: the instance may have carried the request out", req->method,
                            path_len, req->url);
    if (self->stopped)
        return sn_error_set(err, SN_E_CANCELLED, 0, "transfer stopped by the caller", "%s %.*s: %s",
                            req->method, path_len, req->url,
                            req->read && !self->sink_taken ? "the request body could not be read"
                                                           : "the receiver refused the answer");
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return sn_error_set(err, SN_E_TIMEOUT, 0, "request to ServiceNow timed out", "%s %.*s: %s",
                            req->method, path_len, req->url, reason);
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
        return sn_error_set(err, SN_E_CONFIG, 0, "TLS verification of ServiceNow failed",
                            "%.*s: %s (check the CA bundle setting)", path_len, req->url, reason);
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        return sn_error_set(err, SN_E_CONFIG, 0, "invalid ServiceNow URL", "%.*s: %s", path_len,
                            req->url, reason);
    case CURLE_WRITE_ERROR:
    case CURLE_BAD_CONTENT_ENCODING:
        if (self->too_large)
            return sn_error_set(err, SN_E_BAD_RESPONSE, 0, "response from ServiceNow too large",
                                "%s %.*s: more than %zu bytes", req->method, path_len, req->url,
                                self->max_body);
        return sn_error_set(err, SN_E_BAD_RESPONSE, 0, "cannot read response from ServiceNow",
                            "%s %.*s: %s", req->method, path_len, req->url, reason);
    default:
        return sn_error_set(err, SN_E_UNAVAILABLE, 0, "cannot reach ServiceNow", "%s %.*s: %s",
                            req->method, path_len, req->url, reason);
    }
}

sn_err_code_t sn_http_perform(sn_http_t *self, const sn_http_request_t *req, sn_response_t *resp,
                              bool *maybe_sent, sn_error_t *err)
{
    assert(self && req && req->method && req->url && resp && maybe_sent && err);
    sn_response_reset(resp);
    *maybe_sent = false;
    curl_easy_reset(self->curl);
    self->errbuf[0] = '\0';
    self->req = req;
    self->resp = resp;
    self->max_body = req->sink && req->max_buffered ? req->max_buffered : self->opts.max_response;
    self->too_large = false;
    self->send_once = req->send_once;
    self->sends = 0;
    self->sink_asked = false;
    self->sink_taken = false;
    self->stopped = false;
    struct curl_slist *headers = s_headers(req);
    if (!headers)
        return sn_error_set(err, SN_E_CONFIG, 0, "cannot build request headers",
                            "out of memory or an access token longer than 4000 bytes");
    CURLcode rc = s_setup(self, req, headers);
    if (rc == CURLE_OK)
        rc = curl_easy_perform(self->curl);
    //  Drop every reference to the request's credentials from the handle
    curl_easy_setopt(self->curl, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(self->curl, CURLOPT_PASSWORD, NULL);
    s_headers_free(headers);
    self->resp = NULL;
    self->req = NULL;
    if (rc != CURLE_OK) {
        *maybe_sent = !s_surely_unsent(self->curl, rc);
        return s_fail(self, req, rc, err);
    }
    *maybe_sent = true;
    s_answer_head(self, resp);
    curl_off_t retry_after = 0;
    if (curl_easy_getinfo(self->curl, CURLINFO_RETRY_AFTER, &retry_after) == CURLE_OK &&
        retry_after > 0)
        resp->retry_after_s = (long)retry_after;
    return SN_OK;
}
