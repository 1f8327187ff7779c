/*  sn_http.h: one HTTP exchange with ServiceNow over a libcurl easy handle.

    The handle is kept between requests so that connections are reused, and is
    reset before each one, so no option leaks from one request to the next.
    What every request gets: Accept: application/json, gzip accepted
    (CURLOPT_ACCEPT_ENCODING ""), a connect timeout and a total timeout, TLS
    verification unless the configuration turns it off, only http and https,
    no redirects followed, no cookie engine (a session cookie must never stand
    in for credentials), no signals (safe on a worker thread), and a cap on the
    response size. Credentials are passed per request and never logged.

    No retry happens here: sn_client decides on retries. One sn_http_t is used
    by one thread at a time. */

#ifndef SN_HTTP_H
#define SN_HTTP_H

#include "sn_error.h"
#include "sn_response.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct sn_http_t sn_http_t;

typedef struct {
    const char *ca_bundle;   //  CA file (PEM), NULL for the system store
    bool tls_skip_verify;    //  true turns peer and host verification off
    long connect_timeout_ms; //  > 0
    long request_timeout_ms; //  > 0, the whole exchange
    const char *user_agent;  //  User-Agent header
    size_t max_response;     //  larger bodies fail with SN_E_BAD_RESPONSE
} sn_http_options_t;

typedef struct {
    const char *method;         //  "GET", "POST", "PATCH", "DELETE"
    const char *url;            //  absolute URL, query included
    const char *content_type;   //  type of body, NULL when there is none
    const char *body;           //  request body, or NULL
    size_t body_len;            //  bytes in body
    const char *basic_user;     //  Basic auth user, or NULL
    const char *basic_password; //  Basic auth password
    const char *bearer;         //  OAuth access token, or NULL
    bool send_once;             //  never re-sent by the transport (not idempotent)
} sn_http_request_t;

//  A new transport with a copy of opts' strings, or NULL when out of memory.
sn_http_t *sn_http_new(const sn_http_options_t *opts);

//  Frees the transport and sets *self_p to NULL; accepts NULL and *self_p NULL.
void sn_http_destroy(sn_http_t **self_p);

//  Performs one request. Returns SN_OK when an HTTP answer arrived, whatever
//  its status, with resp filled (resp is reset first; the caller resets it when
//  done). Otherwise returns SN_E_UNAVAILABLE (no connection, connection lost),
//  SN_E_TIMEOUT, SN_E_CONFIG (TLS verification, bad URL) or SN_E_BAD_RESPONSE
//  (too large, bad encoding). *maybe_sent is false only when the request surely
//  did not reach the server (no connection was made): a request that is not
//  idempotent may then be sent again. With req->send_once, the request goes
//  out at most once: when a reused connection closes before answering, libcurl
//  would send it again by itself; that second send is aborted instead and the
//  call fails with SN_E_UNAVAILABLE, *maybe_sent true, and a message saying
//  the outcome is unknown.
sn_err_code_t sn_http_perform(sn_http_t *self, const sn_http_request_t *req, sn_response_t *resp,
                              bool *maybe_sent, sn_error_t *err);

#endif
