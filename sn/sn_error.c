/*  sn_error.c: names, scopes and formatting of the ServiceNow client's errors.
    See sn_error.h for the contract. */

#include "sn_error.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *sn_err_name(sn_err_code_t code)
{
    switch (code) {
    case SN_OK:
        return "ok";
    case SN_E_AUTH:
        return "auth";
    case SN_E_PERMISSION:
        return "permission";
    case SN_E_NOT_FOUND:
        return "not_found";
    case SN_E_DATA_POLICY:
        return "data_policy";
    case SN_E_RATE_LIMITED:
        return "rate_limited";
    case SN_E_UNAVAILABLE:
        return "unavailable";
    case SN_E_BAD_RESPONSE:
        return "bad_response";
    case SN_E_TIMEOUT:
        return "timeout";
    case SN_E_CONFIG:
        return "config";
    case SN_E_BAD_REQUEST:
        return "bad_request";
    case SN_E_JOURNAL_UNREADABLE:
        return "journal_unreadable";
    case SN_E_CANCELLED:
        return "cancelled";
    case SN_E_FILE_REFUSED:
        return "file_refused";
    }
    return "unknown";
}

sn_err_scope_t sn_err_scope(sn_err_code_t code)
{
    switch (code) {
    case SN_OK:
        return SN_SCOPE_NONE;
    case SN_E_RATE_LIMITED:
    case SN_E_UNAVAILABLE:
    case SN_E_TIMEOUT:
    case SN_E_BAD_RESPONSE:
    case SN_E_CANCELLED:
        return SN_SCOPE_TRANSIENT;
    case SN_E_NOT_FOUND:
    case SN_E_DATA_POLICY:
    case SN_E_BAD_REQUEST:
    case SN_E_FILE_REFUSED:
        return SN_SCOPE_RECORD;
    case SN_E_AUTH:
    case SN_E_PERMISSION:
    case SN_E_CONFIG:
    case SN_E_JOURNAL_UNREADABLE:
        return SN_SCOPE_CONNECTION;
    }
    return SN_SCOPE_CONNECTION;
}

void sn_error_reset(sn_error_t *err)
{
    assert(err);
    memset(err, 0, sizeof *err);
}

sn_err_code_t sn_error_set(sn_error_t *err, sn_err_code_t code, long http_status,
                           const char *message, const char *detail_fmt, ...)
{
    assert(err);
    err->code = code;
    err->http_status = http_status;
    err->retry_after_s = 0;
    snprintf(err->message, sizeof err->message, "%s", message ? message : "");
    err->detail[0] = '\0';
    if (detail_fmt) {
        va_list args;
        va_start(args, detail_fmt);
        vsnprintf(err->detail, sizeof err->detail, detail_fmt, args);
        va_end(args);
    }
    return code;
}

//  Replaces each occurrence of secret in the NUL-terminated text with "***"; the replacement is
//  never longer than the secret (>= 4 bytes).
static void s_scrub_text(char *text, const char *secret)
{
    size_t secret_len = strlen(secret);
    char *hit;
    while ((hit = strstr(text, secret)) != NULL) {
        size_t tail = strlen(hit + secret_len);
        memcpy(hit, "***", 3);
        memmove(hit + 3, hit + secret_len, tail + 1);
    }
}

void sn_error_scrub(sn_error_t *err, const char *secret)
{
    assert(err);
    if (!secret || strlen(secret) < 4)
        return;
    s_scrub_text(err->message, secret);
    s_scrub_text(err->detail, secret);
}
