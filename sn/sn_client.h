/*  sn_client.h: a blocking client of one ServiceNow instance's REST Table API.

    The node runs it on a worker thread beside its ZeroMQ loop: every call
    blocks until it has an answer, including its retries (bounded by the retry
    policy's total wait). One client object is used by one thread at a time;
    distinct clients share nothing (the only global step, curl_global_init, is
    done once through pthread_once).

    Each call goes through one path (sn_client_call in sn_client.c, sn_call.h):
      credentials (sn_auth) -> one HTTP exchange (sn_http) -> decoding with
      Content-Type check and error envelope (sn_response) -> retry decision
      (sn_retry): 429 waits Retry-After, 5xx/timeouts/lost connections back off
      exponentially with jitter, a 401 with OAuth refreshes the token once.
    Requests that are not idempotent (create, add comment) are sent again only
    when the server surely did not act on them: no connection made, 429, 502,
    503, an HTML outage page. After a timeout the caller looks the record up by
    correlation_id (sn_incident.h) before creating it again.

    Operations of the sync engine are in sn_incident.h (incidents, change
    polling), sn_journal.h (comments) and sn_attachment.h (files, through the
    Attachment API on the same path). The generic table calls below serve them
    and anything else (sys_user lookups). */

#ifndef SN_CLIENT_H
#define SN_CLIENT_H

#include "sn_auth.h"
#include "sn_error.h"
#include "sn_record.h"
#include "sn_retry.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

typedef struct sn_client_t sn_client_t;

//  Log sink: one line in key=value form (docs/style.md), never holding a secret.
typedef void(sn_log_fn)(void *arg, const char *line);

//  Client configuration. Zero numeric fields take the default shown.
typedef struct {
    const char *instance_url;        //  "https://acme.service-now.com" (a path prefix is kept)
    sn_auth_kind_t auth;             //  SN_AUTH_BASIC (default) or SN_AUTH_OAUTH
    const char *user;                //  integration user's user_name
    const char *password;            //  its password
    const char *oauth_client_id;     //  OAuth only: application registry client id
    const char *oauth_client_secret; //  OAuth only: its client secret
    long oauth_refresh_margin_s;     //  refresh the token this early; default 60
    const char *ca_bundle;           //  PEM CA file; NULL for the system store
    bool tls_skip_verify;            //  turn TLS verification off (tests only)
    bool allow_insecure_http;        //  allow http:// to a host that is not loopback
    long connect_timeout_ms;         //  default 10000
    long request_timeout_ms;         //  whole exchange; default 90000
    sn_retry_policy_t retry;         //  all zero: sn_retry_policy_default()
    const char *user_agent;          //  NULL: "twinsync/VERSION"
    int page_size;                   //  rows per list request, 1..10000; default 500
    size_t max_response_bytes;       //  default 64 MiB
    sn_log_fn *log;                  //  NULL: no log lines
    void *log_arg;                   //  handed to log
} sn_config_t;

//  Counters of one client, for metrics and tests.
typedef struct {
    unsigned long calls;          //  client calls made (one per sn_client_call)
    unsigned long requests;       //  HTTP requests to the REST APIs, retries included
    unsigned long retries;        //  attempts after a failed one
    unsigned long token_requests; //  calls of oauth_token.do
    unsigned long unknown_writes; //  writes that may have been carried out, not re-sent
} sn_client_stats_t;

//  Checks cfg and builds a client holding copies of its strings. Returns NULL
//  and fills err (SN_E_CONFIG) when cfg is invalid: no instance URL, a URL that
//  is not http(s), credentials inside the URL, plain http to a host other than
//  localhost/127.0.0.0/8/::1 without allow_insecure_http, missing credentials,
//  values out of range. Makes no request.
sn_client_t *sn_client_new(const sn_config_t *cfg, sn_error_t *err);

//  Frees the client, wiping its secrets; sets *self_p to NULL; accepts NULL.
void sn_client_destroy(sn_client_t **self_p);

//  The instance URL in use (without trailing slash).
const char *sn_client_url(const sn_client_t *self);

//  Rows per list request.
int sn_client_page_size(const sn_client_t *self);

//  A copy of the client's counters.
sn_client_stats_t sn_client_stats(const sn_client_t *self);

//  The Date header of the last call's answer: the instance's own clock, which
//  change polling takes its upper bound from (sn_poll.h). 0 when the last call
//  got no answer or the answer had no Date.
time_t sn_client_server_date(const sn_client_t *self);

//  Parameters of a list request.
typedef struct {
    const char *query;  //  sysparm_query (encoded query), NULL for none
    const char *fields; //  sysparm_fields, NULL for every field
    int limit;          //  sysparm_limit; 0 for the client's page size
    bool display_value; //  sysparm_display_value=true instead of raw values
} sn_list_params_t;

//  GET /api/now/table/{table}: one page of rows matching params (no paging:
//  see sn_pager.h). On SN_OK *rows_p is a new JSON array of records (owned by
//  the caller, possibly empty). When total_p is not NULL the row count is asked
//  for and *total_p receives X-Total-Count (-1 when absent): ServiceNow counts
//  before ACLs filter rows, so it may exceed what a page can ever hold.
sn_err_code_t sn_table_list(sn_client_t *self, const char *table, const sn_list_params_t *params,
                            json_t **rows_p, long *total_p, sn_error_t *err);

//  GET /api/now/table/{table}/{sys_id}: the record, a new reference in
//  *record_p. fields as sysparm_fields, NULL for all. SN_E_NOT_FOUND when it
//  does not exist or ACLs hide it; SN_E_BAD_REQUEST for a malformed sys_id.
sn_err_code_t sn_table_get(sn_client_t *self, const char *table, const char *sys_id,
                           const char *fields, json_t **record_p, sn_error_t *err);

//  POST /api/now/table/{table} with fields (an object of strings): the created
//  record, a new reference in *record_p (record_p may be NULL). Not idempotent.
sn_err_code_t sn_table_insert(sn_client_t *self, const char *table, const json_t *fields,
                              json_t **record_p, sn_error_t *err);

//  PATCH /api/now/table/{table}/{sys_id} with fields: the updated record in
//  *record_p (may be NULL). Idempotent, and retried as such, unless fields
//  write a journal (comments, work_notes), which appends an entry.
sn_err_code_t sn_table_update(sn_client_t *self, const char *table, const char *sys_id,
                              const json_t *fields, json_t **record_p, sn_error_t *err);

#endif
