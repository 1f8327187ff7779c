/*  sn_call.h: the client's one request path (sn_client.c), opened to the
    modules of sn/ that need more than a JSON body in and a JSON document out.

    The Attachment API (sn_attachment.c) streams files both ways, asks for
    ranges, and must not resend an upload that may have been stored. It still
    goes through the same path as every Table API call, so credentials, the
    token refresh after a 401, backoff and Retry-After, logging, counters and
    the scrubbing of secrets from errors stay in one place. What a call adds:

      prepare   finishes each attempt's request (a body source, a sink, a
                Range, the Accept header); it runs again before every retry,
                so a source rewinds there and a download resumes there;
      finish    turns an answer into the call's outcome instead of
                sn_response_decode (a download's body went to its sink);
      resend    which failures are tried again (see sn_resend_t);
      progress  a counter the hooks advance as a body moves: a failed attempt
                that moved it starts the retry budget afresh, so a long
                download over a flaky link keeps going while it progresses.

    node/ does not use this header: it calls the typed operations. */

#ifndef SN_CALL_H
#define SN_CALL_H

#include "sn_client.h"
#include "sn_http.h"
#include "sn_response.h"

#include <stdint.h>

//  Which failed attempts of a call are made again (all within the retry
//  policy, and only on rate limits, outages and timeouts).
typedef enum {
    SN_RESEND_ALWAYS = 0, //  idempotent: any such failure
    SN_RESEND_UNACTED,    //  the server surely did not act: nothing sent, 429, 502, 503, an HTML
                          //  outage page (creates, comments)
    SN_RESEND_UNSENT,     //  only nothing sent and 429: anything else may have been stored
                          //  (attachment uploads, where a duplicate costs a whole file)
} sn_resend_t;

typedef struct {
    const char *method; //  "GET", "POST", "PATCH", "DELETE"
    const char *path;   //  path and query, already escaped
    const json_t *body; //  JSON body, or NULL (a prepare hook may stream one instead)
    sn_resend_t resend; //  which failures are tried again
    //  Finishes the request of each attempt (req is filled with method, URL,
    //  credentials and the JSON body first); NULL for none.
    void (*prepare)(void *arg, sn_http_request_t *req);
    //  The outcome of an answer that arrived: SN_OK with *doc_p (a new
    //  reference or NULL), or a typed error; NULL for sn_response_decode.
    sn_err_code_t (*finish)(void *arg, const sn_response_t *resp, json_t **doc_p, sn_error_t *err);
    void *arg;                //  handed to the hooks
    const uint64_t *progress; //  a counter the hooks advance as the body moves, or NULL
    bool outcome_unknown;     //  out: the call failed after the server may have acted on it
} sn_call_t;

//  Runs call on the instance: every attempt, retry and token refresh. On SN_OK
//  *doc_p holds the decoded document (a new reference; NULL for an empty
//  answer) and *total_p (when not NULL) the X-Total-Count, -1 when absent.
//  Otherwise returns the code of the last attempt with err filled; sets
//  call->outcome_unknown when a call that is not SN_RESEND_ALWAYS failed on an
//  outage or a timeout after its request may have reached the server (it is
//  then logged and counted in unknown_writes). Blocks for the retries.
sn_err_code_t sn_client_call(sn_client_t *self, sn_call_t *call, json_t **doc_p, long *total_p,
                             sn_error_t *err);

#endif
