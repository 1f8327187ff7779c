/*  sn_client.c: configuration checks, the one request path with retries, and
    the generic Table API calls. See sn_client.h for the contract.

    sn_client_call() is the only place that talks to ServiceNow: every
    operation in sn_incident.c, sn_journal.c and sn_attachment.c ends up here,
    so retries, token refresh, logging, counters and the scrubbing of secrets
    from errors are done once. */

#include "sn_call.h"
#include "sn_client.h"
#include "sn_http.h"
#include "sn_query.h"
#include "sn_response.h"

#include <arpa/inet.h>
#include <assert.h>
#include <curl/curl.h>
#include <errno.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "ts_version.h"

#define SN_DEFAULT_CONNECT_MS 10000
#define SN_DEFAULT_REQUEST_MS 90000
#define SN_DEFAULT_PAGE_SIZE  500
#define SN_MAX_PAGE_SIZE      10000
#define SN_DEFAULT_MAX_BODY   ((size_t)64 << 20)
#define SN_DEFAULT_MARGIN_S   60

struct sn_client_t {
    char *base_url;          //  instance URL without trailing slash
    sn_http_t *http;         //  transport (one libcurl easy handle)
    sn_auth_t *auth;         //  credentials and OAuth tokens
    sn_retry_policy_t retry; //  retry policy of every call
    int page_size;           //  rows per list request
    sn_log_fn *log;          //  log sink, or NULL
    void *log_arg;           //  its argument
    uint64_t seed;           //  jitter seed, advanced per call
    sn_client_stats_t stats; //  counters
    time_t server_date;      //  Date of the last call's answer, 0 when none
};

static pthread_once_t s_curl_once = PTHREAD_ONCE_INIT;
static CURLcode s_curl_rc = CURLE_FAILED_INIT;

static void s_curl_init(void)
{
    s_curl_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

//  -------------------------------------------------------------------------
//  Configuration

//  True when host (as libcurl extracts it, IPv6 in brackets) is loopback:
//  localhost, 127.0.0.0/8 or ::1.
static bool s_is_loopback(const char *host)
{
    if (strcasecmp(host, "localhost") == 0)
        return true;
    struct in_addr v4;
    if (inet_pton(AF_INET, host, &v4) == 1)
        return (ntohl(v4.s_addr) >> 24) == 127;
    char bare[64];
    size_t len = strlen(host);
    if (len >= 2 && len < sizeof bare && host[0] == '[' && host[len - 1] == ']') {
        memcpy(bare, host + 1, len - 2);
        bare[len - 2] = '\0';
        host = bare;
    }
    struct in6_addr v6;
    return inet_pton(AF_INET6, host, &v6) == 1 && memcmp(&v6, &in6addr_loopback, sizeof v6) == 0;
}

//  Checks the instance URL: http(s), a host, no credentials, no query; plain
//  http only to loopback unless allowed. Stores the URL without its trailing
//  slashes in *base_p (caller frees).
static sn_err_code_t s_check_url(const sn_config_t *cfg, char **base_p, sn_error_t *err)
{
    *base_p = NULL;
    if (!cfg->instance_url || !*cfg->instance_url)
        return sn_error_set(err, SN_E_CONFIG, 0, "no ServiceNow instance URL configured",
                            "set the instance URL, e.g. https://acme.service-now.com");
    CURLU *url = curl_url();
    char *scheme = NULL, *host = NULL, *user = NULL, *query = NULL;
    sn_err_code_t code = SN_OK;
    if (!url || curl_url_set(url, CURLUPART_URL, cfg->instance_url, 0) != CURLUE_OK ||
        curl_url_get(url, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(url, CURLUPART_HOST, &host, 0) != CURLUE_OK)
        code = sn_error_set(err, SN_E_CONFIG, 0, "invalid ServiceNow instance URL",
                            "cannot parse '%s' as an absolute URL", cfg->instance_url);
    else if (strcasecmp(scheme, "https") != 0 && strcasecmp(scheme, "http") != 0)
        code = sn_error_set(err, SN_E_CONFIG, 0, "invalid ServiceNow instance URL",
                            "scheme '%s' is not https", scheme);
    else if (curl_url_get(url, CURLUPART_USER, &user, 0) == CURLUE_OK)
        code = sn_error_set(err, SN_E_CONFIG, 0, "invalid ServiceNow instance URL",
                            "the URL holds credentials: configure user and password instead");
    else if (curl_url_get(url, CURLUPART_QUERY, &query, 0) == CURLUE_OK)
        code = sn_error_set(err, SN_E_CONFIG, 0, "invalid ServiceNow instance URL",
                            "the URL has a query part: give the instance base URL only");
    else if (strcasecmp(scheme, "http") == 0 && !s_is_loopback(host) && !cfg->allow_insecure_http)
        code = sn_error_set(err, SN_E_CONFIG, 0,
                            "refusing plain http to a ServiceNow host that is not loopback",
                            "host '%s' would see credentials and incidents unencrypted: use "
                            "https, or set allow_insecure_http to accept the risk",
                            host);
    curl_free(scheme);
    curl_free(host);
    curl_free(user);
    curl_free(query);
    curl_url_cleanup(url);
    if (code != SN_OK)
        return code;
    char *base = strdup(cfg->instance_url);
    if (!base)
        return sn_error_set(err, SN_E_CONFIG, 0, "out of memory", NULL);
    size_t len = strlen(base);
    while (len > 0 && base[len - 1] == '/')
        base[--len] = '\0';
    *base_p = base;
    return SN_OK;
}

//  Checks credentials and numeric values.
static sn_err_code_t s_check_values(const sn_config_t *cfg, const sn_retry_policy_t *retry,
                                    sn_error_t *err)
{
    if (!cfg->user || !*cfg->user || !cfg->password)
        return sn_error_set(err, SN_E_CONFIG, 0, "no ServiceNow credentials configured",
                            "set the integration user and its password");
    if (cfg->auth == SN_AUTH_OAUTH &&
        (!cfg->oauth_client_id || !*cfg->oauth_client_id || !cfg->oauth_client_secret))
        return sn_error_set(err, SN_E_CONFIG, 0, "OAuth needs a client id and secret",
                            "set the OAuth client id and client secret of the application "
                            "registry entry, or use basic auth");
    if (cfg->auth != SN_AUTH_BASIC && cfg->auth != SN_AUTH_OAUTH)
        return sn_error_set(err, SN_E_CONFIG, 0, "unknown auth kind", "%d", (int)cfg->auth);
    if (cfg->connect_timeout_ms < 0 || cfg->request_timeout_ms < 0 ||
        cfg->oauth_refresh_margin_s < 0)
        return sn_error_set(err, SN_E_CONFIG, 0, "negative timeout in ServiceNow settings", NULL);
    if (cfg->page_size < 0 || cfg->page_size > SN_MAX_PAGE_SIZE)
        return sn_error_set(err, SN_E_CONFIG, 0, "page size out of range", "%d is not within 1..%d",
                            cfg->page_size, SN_MAX_PAGE_SIZE);
    if (!sn_retry_policy_valid(retry))
        return sn_error_set(err, SN_E_CONFIG, 0, "invalid retry policy",
                            "need attempts >= 1, base >= 1 ms, cap >= base, total wait >= 0");
    return SN_OK;
}

static bool s_policy_is_zero(const sn_retry_policy_t *policy)
{
    return policy->max_attempts == 0 && policy->base_backoff_ms == 0 &&
           policy->max_backoff_ms == 0 && policy->max_total_wait_ms == 0;
}

//  Builds the transport and the credentials from a checked configuration.
static sn_err_code_t s_build(sn_client_t *self, const sn_config_t *cfg, sn_error_t *err)
{
    char user_agent[64];
    snprintf(user_agent, sizeof user_agent, "twinsync/%s", TS_VERSION);
    sn_http_options_t http = {
        .ca_bundle = cfg->ca_bundle,
        .tls_skip_verify = cfg->tls_skip_verify,
        .connect_timeout_ms =
            cfg->connect_timeout_ms ? cfg->connect_timeout_ms : SN_DEFAULT_CONNECT_MS,
        .request_timeout_ms =
            cfg->request_timeout_ms ? cfg->request_timeout_ms : SN_DEFAULT_REQUEST_MS,
        .user_agent = cfg->user_agent ? cfg->user_agent : user_agent,
        .max_response = cfg->max_response_bytes ? cfg->max_response_bytes : SN_DEFAULT_MAX_BODY,
    };
    char *token_url = NULL;
    if (cfg->auth == SN_AUTH_OAUTH && asprintf(&token_url, "%s/oauth_token.do", self->base_url) < 0)
        token_url = NULL;
    sn_auth_options_t auth = {
        .kind = cfg->auth,
        .user = cfg->user,
        .password = cfg->password,
        .client_id = cfg->oauth_client_id,
        .client_secret = cfg->oauth_client_secret,
        .token_url = token_url,
        .refresh_margin_s =
            cfg->oauth_refresh_margin_s ? cfg->oauth_refresh_margin_s : SN_DEFAULT_MARGIN_S,
    };
    self->http = sn_http_new(&http);
    if (cfg->auth == SN_AUTH_BASIC || token_url)
        self->auth = sn_auth_new(&auth);
    free(token_url);
    if (!self->http || !self->auth)
        return sn_error_set(err, SN_E_CONFIG, 0, "cannot create the ServiceNow client",
                            "out of memory, or libcurl failed to initialise");
    return SN_OK;
}

sn_client_t *sn_client_new(const sn_config_t *cfg, sn_error_t *err)
{
    assert(cfg && err);
    sn_error_reset(err);
    pthread_once(&s_curl_once, s_curl_init);
    if (s_curl_rc != CURLE_OK) {
        sn_error_set(err, SN_E_CONFIG, 0, "libcurl failed to initialise", "%s",
                     curl_easy_strerror(s_curl_rc));
        return NULL;
    }
    sn_retry_policy_t retry =
        s_policy_is_zero(&cfg->retry) ? sn_retry_policy_default() : cfg->retry;
    if (s_check_values(cfg, &retry, err) != SN_OK)
        return NULL;
    sn_client_t *self = calloc(1, sizeof *self);
    if (!self) {
        sn_error_set(err, SN_E_CONFIG, 0, "out of memory", NULL);
        return NULL;
    }
    if (s_check_url(cfg, &self->base_url, err) != SN_OK || s_build(self, cfg, err) != SN_OK) {
        sn_client_destroy(&self);
        return NULL;
    }
    self->retry = retry;
    self->page_size = cfg->page_size ? cfg->page_size : SN_DEFAULT_PAGE_SIZE;
    self->log = cfg->log;
    self->log_arg = cfg->log_arg;
    if (RAND_bytes((unsigned char *)&self->seed, sizeof self->seed) != 1)
        self->seed = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)self;
    return self;
}

void sn_client_destroy(sn_client_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    sn_client_t *self = *self_p;
    sn_http_destroy(&self->http);
    sn_auth_destroy(&self->auth);
    free(self->base_url);
    free(self);
    *self_p = NULL;
}

const char *sn_client_url(const sn_client_t *self)
{
    assert(self);
    return self->base_url;
}

int sn_client_page_size(const sn_client_t *self)
{
    assert(self);
    return self->page_size;
}

time_t sn_client_server_date(const sn_client_t *self)
{
    assert(self);
    return self->server_date;
}

sn_client_stats_t sn_client_stats(const sn_client_t *self)
{
    assert(self);
    sn_client_stats_t stats = self->stats;
    stats.token_requests = sn_auth_token_requests(self->auth);
    return stats;
}

//  -------------------------------------------------------------------------
//  The request path

static void s_sleep_ms(long ms)
{
    struct timespec left = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&left, &left) != 0 && errno == EINTR)
        ;
}

//  True when the failed attempt may be made again. A request that is not
//  idempotent goes again only when the server surely did not act on it.
static bool s_retryable(const sn_error_t *err, sn_resend_t resend, bool maybe_sent)
{
    if (err->code != SN_E_RATE_LIMITED && err->code != SN_E_UNAVAILABLE &&
        err->code != SN_E_TIMEOUT)
        return false;
    if (resend == SN_RESEND_ALWAYS || !maybe_sent || err->code == SN_E_RATE_LIMITED)
        return true;
    if (resend == SN_RESEND_UNSENT)
        return false;
    long status = err->http_status;
    bool html_outage = err->code == SN_E_UNAVAILABLE && status > 0 && status < 500;
    return status == 502 || status == 503 || html_outage;
}

static void s_log_retry(sn_client_t *self, const char *method, const char *path,
                        const sn_error_t *err, int attempt, long delay_ms)
{
    if (!self->log)
        return;
    char line[768];
    snprintf(line, sizeof line,
             "level=warn msg=\"servicenow call failed, retrying\" method=%s path=%.*s "
             "status=%ld error=%s attempt=%d wait_ms=%ld",
             method, (int)strcspn(path, "?"), path, err->http_status, sn_err_name(err->code),
             attempt, delay_ms);
    self->log(self->log_arg, line);
}

//  A write that may have been carried out, and is not sent again here: the
//  caller looks before it writes again (twin by correlation_id, comment in
//  the journal).
static void s_log_unknown(sn_client_t *self, const char *method, const char *path,
                          const sn_error_t *err)
{
    self->stats.unknown_writes++;
    if (!self->log)
        return;
    char line[768];
    snprintf(line, sizeof line,
             "level=warn msg=\"servicenow write outcome unknown, not sent again\" method=%s "
             "path=%.*s status=%ld error=%s",
             method, (int)strcspn(path, "?"), path, err->http_status, sn_err_name(err->code));
    self->log(self->log_arg, line);
}

sn_err_code_t sn_client_call(sn_client_t *self, sn_call_t *call, json_t **doc_p, long *total_p,
                             sn_error_t *err)
{
    assert(self && call && call->method && call->path && doc_p && err);
    const char *method = call->method, *path = call->path;
    *doc_p = NULL;
    call->outcome_unknown = false;
    sn_error_reset(err);
    self->stats.calls++;
    self->server_date = 0;
    char *url = NULL, *text = NULL;
    if (asprintf(&url, "%s%s", self->base_url, path) < 0)
        return sn_error_set(err, SN_E_CONFIG, 0, "out of memory", NULL);
    if (call->body && !(text = json_dumps(call->body, JSON_COMPACT))) {
        free(url);
        return sn_error_set(err, SN_E_BAD_REQUEST, 0, "cannot encode the request body", NULL);
    }
    sn_retry_t retry;
    sn_retry_start(&retry, &self->retry, self->seed++);
    bool reauthenticated = false;
    sn_response_t resp = {.total_count = -1};
    sn_err_code_t code;
    for (;;) {
        sn_http_request_t req = {.method = method,
                                 .url = url,
                                 .content_type = text ? "application/json" : NULL,
                                 .body = text,
                                 .body_len = text ? strlen(text) : 0,
                                 .send_once = call->resend != SN_RESEND_ALWAYS};
        if (call->prepare)
            call->prepare(call->arg, &req);
        uint64_t progress = call->progress ? *call->progress : 0;
        bool maybe_sent = false;
        code = sn_auth_apply(self->auth, self->http, &req, err);
        if (code == SN_OK) {
            self->stats.requests++;
            code = sn_http_perform(self->http, &req, &resp, &maybe_sent, err);
        }
        if (code == SN_OK)
            code = call->finish ? call->finish(call->arg, &resp, doc_p, err)
                                : sn_response_decode(&resp, doc_p, err);
        if (code == SN_OK)
            break;
        if (code == SN_E_AUTH && req.bearer && !reauthenticated && sn_auth_reject(self->auth)) {
            reauthenticated = true;
            continue;
        }
        if (!s_retryable(err, call->resend, maybe_sent)) {
            if (call->resend != SN_RESEND_ALWAYS && maybe_sent &&
                (code == SN_E_UNAVAILABLE || code == SN_E_TIMEOUT)) {
                call->outcome_unknown = true;
                s_log_unknown(self, method, path, err);
            }
            break;
        }
        //  A transfer that moved forward before it failed earns a fresh budget:
        //  each such attempt gets further, and the file's size bounds them all
        if (call->progress && *call->progress != progress)
            sn_retry_start(&retry, &self->retry, self->seed++);
        long delay = sn_retry_next(&retry, code == SN_E_RATE_LIMITED ? err->retry_after_s : 0);
        if (delay < 0)
            break;
        s_log_retry(self, method, path, err, retry.attempts, delay);
        self->stats.retries++;
        s_sleep_ms(delay);
    }
    if (total_p)
        *total_p = resp.total_count;
    self->server_date = resp.date;
    sn_response_reset(&resp);
    free(url);
    free(text);
    sn_auth_scrub(self->auth, err);
    return code;
}

//  One call with an optional JSON body: see sn_client_call.
static sn_err_code_t s_call(sn_client_t *self, const char *method, const char *path,
                            const json_t *body, bool idempotent, json_t **doc_p, long *total_p,
                            sn_error_t *err)
{
    sn_call_t call = {.method = method,
                      .path = path,
                      .body = body,
                      .resend = idempotent ? SN_RESEND_ALWAYS : SN_RESEND_UNACTED};
    return sn_client_call(self, &call, doc_p, total_p, err);
}

//  -------------------------------------------------------------------------
//  Table API

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

//  "/api/now/table/{table}[/{sys_id}]" with the parameters every read sends,
//  as a new string; NULL when out of memory.
static char *s_table_path(const char *table, const char *sys_id, const char *fields)
{
    char *path = NULL;
    if (asprintf(&path, "/api/now/table/%s%s%s", table, sys_id ? "/" : "", sys_id ? sys_id : "") <
        0)
        return NULL;
    bool ok = s_param(&path, "sysparm_exclude_reference_link", "true");
    if (ok && fields)
        ok = s_param(&path, "sysparm_fields", fields);
    if (!ok) {
        free(path);
        return NULL;
    }
    return path;
}

static sn_err_code_t s_check_target(const char *table, const char *sys_id, sn_error_t *err)
{
    if (!sn_is_table_name(table))
        return sn_error_set(err, SN_E_BAD_REQUEST, 0, "invalid table name", "'%s'",
                            table ? table : "(null)");
    if (sys_id && !sn_is_sys_id(sys_id))
        return sn_error_set(err, SN_E_BAD_REQUEST, 0, "invalid sys_id",
                            "'%.64s' is not 32 letters and digits", sys_id);
    return SN_OK;
}

//  Runs one call and extracts its "result" of the given type.
static sn_err_code_t s_call_result(sn_client_t *self, const char *method, const char *path,
                                   const json_t *body, bool idempotent, json_type type,
                                   json_t **result_p, long *total_p, sn_error_t *err)
{
    json_t *doc = NULL;
    sn_err_code_t code = s_call(self, method, path, body, idempotent, &doc, total_p, err);
    if (code == SN_OK && !doc)
        code = sn_error_set(err, SN_E_BAD_RESPONSE, 0, "empty answer from ServiceNow", "%s %.*s",
                            method, (int)strcspn(path, "?"), path);
    if (code == SN_OK)
        code = sn_response_result(doc, type, result_p, err);
    json_decref(doc);
    return code;
}

sn_err_code_t sn_table_list(sn_client_t *self, const char *table, const sn_list_params_t *params,
                            json_t **rows_p, long *total_p, sn_error_t *err)
{
    assert(self && params && rows_p && err);
    *rows_p = NULL;
    if (total_p)
        *total_p = -1;
    sn_error_reset(err);
    if (s_check_target(table, NULL, err) != SN_OK)
        return err->code;
    char limit[16];
    snprintf(limit, sizeof limit, "%d", params->limit > 0 ? params->limit : self->page_size);
    char *path = s_table_path(table, NULL, params->fields);
    bool ok = path && s_param(&path, "sysparm_limit", limit) &&
              (total_p || s_param(&path, "sysparm_no_count", "true")) &&
              s_param(&path, "sysparm_suppress_pagination_header", "true") &&
              (!params->query || s_param(&path, "sysparm_query", params->query)) &&
              (!params->display_value || s_param(&path, "sysparm_display_value", "true"));
    if (!ok) {
        free(path);
        return sn_error_set(err, SN_E_BAD_REQUEST, 0, "out of memory building a request", NULL);
    }
    sn_err_code_t code =
        s_call_result(self, "GET", path, NULL, true, JSON_ARRAY, rows_p, total_p, err);
    free(path);
    return code;
}

sn_err_code_t sn_table_get(sn_client_t *self, const char *table, const char *sys_id,
                           const char *fields, json_t **record_p, sn_error_t *err)
{
    assert(self && sys_id && record_p && err);
    *record_p = NULL;
    sn_error_reset(err);
    if (s_check_target(table, sys_id, err) != SN_OK)
        return err->code;
    char *path = s_table_path(table, sys_id, fields);
    if (!path)
        return sn_error_set(err, SN_E_BAD_REQUEST, 0, "out of memory building a request", NULL);
    sn_err_code_t code =
        s_call_result(self, "GET", path, NULL, true, JSON_OBJECT, record_p, NULL, err);
    free(path);
    return code;
}

//  POST or PATCH of fields; record_p may be NULL.
static sn_err_code_t s_write(sn_client_t *self, const char *method, const char *table,
                             const char *sys_id, const json_t *fields, bool idempotent,
                             json_t **record_p, sn_error_t *err)
{
    if (record_p)
        *record_p = NULL;
    sn_error_reset(err);
    if (s_check_target(table, sys_id, err) != SN_OK)
        return err->code;
    if (!json_is_object(fields))
        return sn_error_set(err, SN_E_BAD_REQUEST, 0, "record fields must be a JSON object", NULL);
    char *path = s_table_path(table, sys_id, NULL);
    if (!path)
        return sn_error_set(err, SN_E_BAD_REQUEST, 0, "out of memory building a request", NULL);
    json_t *record = NULL;
    sn_err_code_t code =
        s_call_result(self, method, path, fields, idempotent, JSON_OBJECT, &record, NULL, err);
    free(path);
    if (record_p)
        *record_p = record;
    else
        json_decref(record);
    return code;
}

sn_err_code_t sn_table_insert(sn_client_t *self, const char *table, const json_t *fields,
                              json_t **record_p, sn_error_t *err)
{
    assert(self && fields && err);
    return s_write(self, "POST", table, NULL, fields, false, record_p, err);
}

sn_err_code_t sn_table_update(sn_client_t *self, const char *table, const char *sys_id,
                              const json_t *fields, json_t **record_p, sn_error_t *err)
{
    assert(self && sys_id && fields && err);
    bool journal = json_object_get(fields, "comments") || json_object_get(fields, "work_notes");
    return s_write(self, "PATCH", table, sys_id, fields, !journal, record_p, err);
}
