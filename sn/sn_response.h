/*  sn_response.h: one HTTP answer from ServiceNow and what it means.

    sn_http fills an sn_response_t; sn_response_decode() turns it into JSON or a
    typed error, surviving the instance's quirks (docs/servicenow-api.md §1.4):
      - the Content-Type is checked before anything is parsed: an HTML page is an
        outage (a hibernating instance answers 200 with HTML), never data;
      - the failure envelope {"error":{"message","detail"},"status":"failure"} is
        read on any status, with detail null allowed, and so is the OAuth token
        endpoint's {"error":"...","error_description":"..."};
      - a 403 whose text says "Data Policy Exception" is SN_E_DATA_POLICY, any
        other 403 SN_E_PERMISSION; "Transaction cancelled: maximum execution
        time exceeded" is SN_E_TIMEOUT.
    These functions are pure (no I/O), so the fuzzer drives them directly. */

#ifndef SN_RESPONSE_H
#define SN_RESPONSE_H

#include "sn_error.h"

#include <jansson.h>
#include <stddef.h>
#include <time.h>

typedef struct {
    long status;            //  HTTP status, 0 before an answer arrived
    char content_type[128]; //  Content-Type header, "" when absent
    long retry_after_s;     //  Retry-After in seconds, 0 when absent
    long total_count;       //  X-Total-Count, -1 when absent
    time_t date;            //  Date header (the server's clock), 0 when absent
    char *attachment_meta;  //  X-Attachment-Metadata header (downloads), NULL when absent
    char content_range[80]; //  Content-Range header (ranged downloads), "" when absent
    char *body;             //  body bytes, NUL-terminated at body_len; NULL when empty
    size_t body_len;        //  bytes in body, without the terminator
    size_t body_cap;        //  allocated bytes of body
} sn_response_t;

//  Empties resp (total_count -1) and frees its body and attachment_meta.
void sn_response_reset(sn_response_t *resp);

//  Decodes resp. On a 2xx JSON answer stores the parsed document (a new
//  reference, owned by the caller) in *doc_p and returns SN_OK; on 204 or an
//  empty 2xx body stores NULL. Otherwise returns the error code and fills err
//  with the status and ServiceNow's message and detail.
sn_err_code_t sn_response_decode(const sn_response_t *resp, json_t **doc_p, sn_error_t *err);

//  The "result" member of a Table API document, checked to be of type
//  (JSON_OBJECT for one record, JSON_ARRAY for a list) and normalised to string
//  fields in place (sn_record.h). Returns SN_OK and a new reference to it in
//  *result_p, or SN_E_BAD_RESPONSE. doc keeps its own reference.
sn_err_code_t sn_response_result(json_t *doc, json_type type, json_t **result_p, sn_error_t *err);

#endif
