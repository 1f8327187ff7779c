/*  sn_response.c: classifies ServiceNow's HTTP answers into JSON or typed errors.
    See sn_response.h for the contract and the quirks it covers. */

#include "sn_response.h"
#include "sn_record.h"

#include <assert.h>
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void sn_response_reset(sn_response_t *resp)
{
    assert(resp);
    free(resp->body);
    free(resp->attachment_meta);
    memset(resp, 0, sizeof *resp);
    resp->total_count = -1;
}

static bool s_starts_with_nocase(const char *text, const char *prefix)
{
    return strncasecmp(text, prefix, strlen(prefix)) == 0;
}

static bool s_is_json_type(const char *content_type)
{
    if (s_starts_with_nocase(content_type, "application/json"))
        return true;
    //  application/problem+json and friends
    const char *semicolon = strchr(content_type, ';');
    size_t len = semicolon ? (size_t)(semicolon - content_type) : strlen(content_type);
    return len >= 5 && strncasecmp(content_type + len - 5, "+json", 5) == 0;
}

//  HTML by its Content-Type, or by its first byte when the type is missing.
static bool s_is_html(const sn_response_t *resp)
{
    if (s_starts_with_nocase(resp->content_type, "text/html") ||
        s_starts_with_nocase(resp->content_type, "application/xhtml"))
        return true;
    if (resp->content_type[0] != '\0' || !resp->body)
        return false;
    const char *c = resp->body;
    while (*c && isspace((unsigned char)*c))
        c++;
    return *c == '<';
}

//  Copies the page's <title> (printable ASCII only, at most size-1 bytes) into
//  title; "" when there is none.
static void s_html_title(const sn_response_t *resp, char *title, size_t size)
{
    title[0] = '\0';
    if (!resp->body)
        return;
    const char *start = strcasestr(resp->body, "<title>");
    if (!start)
        return;
    start += strlen("<title>");
    size_t used = 0;
    for (const char *c = start; *c && *c != '<' && used + 1 < size; c++)
        if (isprint((unsigned char)*c))
            title[used++] = *c;
    title[used] = '\0';
}

//  The code for a non-2xx status, given ServiceNow's message and detail.
static sn_err_code_t s_code_for_status(long status, const char *message, const char *detail)
{
    if (status == 401)
        return SN_E_AUTH;
    if (status == 403) {
        bool policy = strstr(detail, "Data Policy Exception") || strstr(message, "Data Policy");
        return policy ? SN_E_DATA_POLICY : SN_E_PERMISSION;
    }
    if (status == 404)
        return SN_E_NOT_FOUND;
    if (status == 408 || status == 504)
        return SN_E_TIMEOUT;
    if (status == 429)
        return SN_E_RATE_LIMITED;
    if (strstr(message, "Transaction cancelled") || strstr(detail, "maximum execution time"))
        return SN_E_TIMEOUT;
    if (status >= 500)
        return SN_E_UNAVAILABLE;
    if (status >= 300 && status < 400)
        return SN_E_CONFIG;
    return SN_E_BAD_REQUEST;
}

//  Reads message and detail out of a failure document: the Table API envelope
//  {"error":{"message","detail"}} or the OAuth {"error","error_description"}.
//  Pointers are borrowed from doc; "" when absent.
static void s_envelope_texts(json_t *doc, const char **message, const char **detail)
{
    *message = "";
    *detail = "";
    json_t *error = json_object_get(doc, "error");
    if (json_is_object(error)) {
        const char *text = json_string_value(json_object_get(error, "message"));
        *message = text ? text : "";
        text = json_string_value(json_object_get(error, "detail"));
        *detail = text ? text : "";
    } else if (json_is_string(error)) {
        const char *text = json_string_value(json_object_get(doc, "error_description"));
        *message = json_string_value(error);
        *detail = text ? text : "";
    }
}

//  Fills err for a non-2xx answer; doc is the parsed body or NULL.
static sn_err_code_t s_fail(const sn_response_t *resp, json_t *doc, sn_error_t *err)
{
    const char *message, *detail;
    s_envelope_texts(doc, &message, &detail);
    sn_err_code_t code = s_code_for_status(resp->status, message, detail);
    if (*message)
        sn_error_set(err, code, resp->status, message, "%s", detail);
    else {
        char summary[96];
        snprintf(summary, sizeof summary, "HTTP %ld from ServiceNow", resp->status);
        sn_error_set(err, code, resp->status, summary, "no error envelope (Content-Type '%s')",
                     resp->content_type);
    }
    if (code == SN_E_RATE_LIMITED)
        err->retry_after_s = resp->retry_after_s;
    return code;
}

static sn_err_code_t s_html_outage(const sn_response_t *resp, sn_error_t *err)
{
    char title[121];
    s_html_title(resp, title, sizeof title);
    return sn_error_set(err, SN_E_UNAVAILABLE, resp->status,
                        "instance unavailable: HTML page instead of JSON (hibernating?)",
                        "HTTP %ld, Content-Type '%s', page title '%s'", resp->status,
                        resp->content_type, title);
}

sn_err_code_t sn_response_decode(const sn_response_t *resp, json_t **doc_p, sn_error_t *err)
{
    assert(resp && doc_p && err);
    *doc_p = NULL;
    bool success = resp->status >= 200 && resp->status < 300;
    if (s_is_html(resp))
        return s_html_outage(resp, err);
    if (success && (resp->status == 204 || resp->body_len == 0))
        return SN_OK;
    if (!s_is_json_type(resp->content_type)) {
        if (!success)
            return s_fail(resp, NULL, err);
        return sn_error_set(err, SN_E_BAD_RESPONSE, resp->status, "response is not JSON",
                            "Content-Type '%s'", resp->content_type);
    }
    json_error_t jerr;
    json_t *doc = json_loadb(resp->body, resp->body_len, JSON_DECODE_ANY, &jerr);
    if (!success) {
        sn_err_code_t code = s_fail(resp, doc, err);
        json_decref(doc);
        return code;
    }
    if (!doc)
        return sn_error_set(err, SN_E_BAD_RESPONSE, resp->status, "invalid JSON in response",
                            "%s at line %d column %d", jerr.text, jerr.line, jerr.column);
    if (!json_is_object(doc)) {
        json_decref(doc);
        return sn_error_set(err, SN_E_BAD_RESPONSE, resp->status, "response JSON is not an object",
                            NULL);
    }
    *doc_p = doc;
    return SN_OK;
}

sn_err_code_t sn_response_result(json_t *doc, json_type type, json_t **result_p, sn_error_t *err)
{
    assert(result_p && err);
    assert(type == JSON_OBJECT || type == JSON_ARRAY);
    *result_p = NULL;
    json_t *result = json_object_get(doc, "result");
    if (!result || json_typeof(result) != type)
        return sn_error_set(err, SN_E_BAD_RESPONSE, 0, "unexpected response shape",
                            "expected \"result\" to be %s",
                            type == JSON_OBJECT ? "an object" : "an array");
    bool valid = true;
    if (type == JSON_OBJECT)
        valid = sn_record_normalise(result);
    else {
        size_t index;
        json_t *record;
        json_array_foreach(result, index, record) valid = valid && sn_record_normalise(record);
    }
    if (!valid)
        return sn_error_set(err, SN_E_BAD_RESPONSE, 0, "unexpected response shape",
                            "a record holds a value that is not a string or a reference");
    *result_p = json_incref(result);
    return SN_OK;
}
