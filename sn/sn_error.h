/*  sn_error.h: the typed errors of the ServiceNow client.

    Every sn_* call that can fail returns an sn_err_code_t (SN_OK is 0) and fills
    an sn_error_t owned by the caller. The error carries ServiceNow's own words
    (error.message and error.detail of the failure envelope) when the instance
    gave them, or a one-line description of ours otherwise. No error text ever
    holds a password, a client secret, a token or an Authorization header: the
    client builds messages without them and scrubs every error once more before
    handing it back (sn_error_scrub).

    sn_err_scope() tells the sync engine what an error means for it: try again
    later, park this one record, or stop the whole connection. */

#ifndef SN_ERROR_H
#define SN_ERROR_H

#include <stdbool.h>

typedef enum {
    SN_OK = 0,               //  success
    SN_E_AUTH,               //  401: bad credentials, OAuth token refused
    SN_E_PERMISSION,         //  403 from an ACL: the integration user lacks a role
    SN_E_NOT_FOUND,          //  404, or no record matches a lookup by key
    SN_E_DATA_POLICY,        //  403 "Data Policy Exception": the record refuses the change
    SN_E_RATE_LIMITED,       //  429 still there when the retry budget ran out
    SN_E_UNAVAILABLE,        //  HTML page (hibernating), 5xx after retries, no connection
    SN_E_BAD_RESPONSE,       //  not JSON, or JSON of the wrong shape
    SN_E_TIMEOUT,            //  connect/request timeout, transaction cancelled by quota
    SN_E_CONFIG,             //  the client configuration is invalid or refused
    SN_E_BAD_REQUEST,        //  400 and other 4xx: the request itself is wrong
    SN_E_JOURNAL_UNREADABLE, //  sys_journal_field hides entries the incident shows
    SN_E_CANCELLED,          //  the caller's callback asked to stop
    SN_E_FILE_REFUSED,       //  an attachment upload refused for the file itself (size,
                             //  extension, type, ACL on sys_attachment): no retry fixes it
} sn_err_code_t;

//  What an error means to the sync engine.
typedef enum {
    SN_SCOPE_NONE = 0,   //  SN_OK
    SN_SCOPE_TRANSIENT,  //  try the same call again later (outage, rate limit, timeout)
    SN_SCOPE_RECORD,     //  this record or request is refused; other records go on
    SN_SCOPE_CONNECTION, //  nothing will work until an admin fixes credentials/roles/config
} sn_err_scope_t;

typedef struct {
    sn_err_code_t code; //  SN_OK when the call succeeded
    long http_status;   //  last HTTP status received, 0 when none
    long retry_after_s; //  SN_E_RATE_LIMITED: the server's Retry-After, else 0
    char message[512];  //  ServiceNow's error.message, or our one-line summary
    char detail[512];   //  ServiceNow's error.detail, or context such as a hint
} sn_error_t;

//  Short stable name of a code for logs ("auth", "data_policy", ...). Never NULL.
const char *sn_err_name(sn_err_code_t code);

//  How the sync engine should treat an error of this code.
sn_err_scope_t sn_err_scope(sn_err_code_t code);

//  Sets err to SN_OK with empty texts.
void sn_error_reset(sn_error_t *err);

//  Fills err (code, HTTP status, message, printf-style detail; detail_fmt may be
//  NULL) and returns code, so that callers can write `return sn_error_set(...)`.
//  Texts longer than the buffers are truncated.
sn_err_code_t sn_error_set(sn_error_t *err, sn_err_code_t code, long http_status,
                           const char *message, const char *detail_fmt, ...)
    __attribute__((format(printf, 5, 6)));

//  Replaces every occurrence of secret (when non-NULL and at least 4 bytes long)
//  in err's message and detail with "***".
void sn_error_scrub(sn_error_t *err, const char *secret);

#endif
