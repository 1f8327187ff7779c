/*  sn_http.h: one HTTP exchange with ServiceNow over a libcurl easy handle.

    The handle is kept between requests so that connections are reused, and is
    reset before each one, so no option leaks from one request to the next.
    What every request gets: Accept: application/json, gzip accepted
    (CURLOPT_ACCEPT_ENCODING ""), a connect timeout and a total timeout, TLS
    verification unless the configuration turns it off, only http and https,
    no redirects followed, no cookie engine (a session cookie must never stand
    in for credentials), no signals (safe on a worker thread), and a cap on the
    response size. Credentials are passed per request and never logged.

    Streamed transfers (attachments, sn_attachment.c) never hold a file in
    memory: a request body can come from a read callback (CURLOPT_READFUNCTION,
    libcurl's default 64 KiB upload buffer) and an answer's body can go to a
    sink block by block (libcurl's default 16 KiB receive buffer). A streamed
    transfer has no total timeout, since a 1 GiB file over a slow link may
    rightly take long: it fails when no byte moved for request_timeout_ms
    instead (CURLOPT_LOW_SPEED_*). A request with a sink asks for no
    compression, so that a Range counts bytes of the content itself.

    No retry happens here: sn_client decides on retries. One sn_http_t is used
    by one thread at a time. */

#ifndef SN_HTTP_H
#define SN_HTTP_H

#include "sn_error.h"
#include "sn_response.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct sn_http_t sn_http_t;

//  Supplies the next bytes of a streamed request body: copies at most size
//  bytes into buffer and returns how many, 0 at the end, or -1 to abort the
//  request (a local read failure; the caller's arg keeps the reason).
typedef ssize_t(sn_http_read_fn)(void *arg, char *buffer, size_t size);

//  Receives the body of an answer as it arrives, instead of sn_http buffering
//  it (downloads).
typedef struct {
    //  Called once per answer, with its first block of body (never for an
    //  empty body), with the status, Content-Type and headers in resp: true
    //  takes the body, every block then goes to write and resp->body stays
    //  empty; false lets sn_http buffer the body as usual (an error envelope,
    //  an HTML page), up to the request's max_buffered.
    bool (*want)(void *arg, const sn_response_t *resp);
    //  One block of a taken body; false stops the transfer, and
    //  sn_http_perform fails with SN_E_CANCELLED (arg keeps the reason).
    bool (*write)(void *arg, const char *data, size_t len);
    void *arg; //  handed to both
} sn_http_sink_t;

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
    const char *accept;         //  Accept header; NULL for application/json
    uint64_t range_from;        //  > 0: ask for the body from this byte on (Range)
    sn_http_read_fn *read;      //  streams the body instead of body/body_len, or NULL
    void *read_arg;             //  handed to read
    uint64_t read_len;          //  bytes read supplies in all (Content-Length)
    const sn_http_sink_t *sink; //  takes the answer's body instead of buffering, or NULL
    size_t max_buffered;        //  with a sink: cap on a buffered body; 0 for max_response
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
//  the outcome is unknown. A read callback that returns -1 or a sink that
//  stops the transfer make the call fail with SN_E_CANCELLED.
sn_err_code_t sn_http_perform(sn_http_t *self, const sn_http_request_t *req, sn_response_t *resp,
                              bool *maybe_sent, sn_error_t *err);

#endif
