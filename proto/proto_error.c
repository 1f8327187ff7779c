/*  proto_error.c: names of status codes and the human messages of errors.

    The message of an error is built once, when the error is set, into the
    caller's proto_error_t, so reporting never allocates.
*/
#include <stdio.h>
#include <string.h>

#include "proto_error.h"

const char *proto_status_str(proto_status_t code)
{
    switch (code) {
    case PROTO_OK:
        return "ok";
    case PROTO_E_TRUNCATED:
        return "truncated input";
    case PROTO_E_TYPE:
        return "wrong type";
    case PROTO_E_TOO_MANY:
        return "too many items";
    case PROTO_E_TOO_LONG:
        return "too long";
    case PROTO_E_MISSING:
        return "missing required field";
    case PROTO_E_VERSION:
        return "unsupported version";
    case PROTO_E_FRAME_TOO_BIG:
        return "frame too big";
    case PROTO_E_UNKNOWN_TYPE:
        return "unknown message type";
    case PROTO_E_TRAILING:
        return "trailing bytes after the message";
    case PROTO_E_DUPLICATE:
        return "duplicate key";
    case PROTO_E_DEPTH:
        return "nesting too deep";
    case PROTO_E_VALUE:
        return "invalid value";
    case PROTO_E_NOT_MAP:
        return "not a msgpack map";
    case PROTO_E_NOMEM:
        return "out of memory";
    case PROTO_E_CHECKSUM:
        return "checksum mismatch";
    case PROTO_E_NOT_INVITE:
        return "not an invitation code";
    case PROTO_E_EXPIRED:
        return "expired";
    case PROTO_E_SEAL:
        return "sealed payload failed to open";
    case PROTO_E_CRYPTO:
        return "crypto library failure";
    case PROTO_E_JOIN_AUTH:
        return "join authenticator does not match";
    }
    return "unknown status";
}

const char *proto_error_str(const proto_error_t *err)
{
    if (!err || err->code == PROTO_OK)
        return "ok";
    return err->text;
}

void proto_error_clear(proto_error_t *err)
{
    if (err)
        memset(err, 0, sizeof(*err));
}

//  Writes the message for code into err->text from the other members.
static void s_format(proto_error_t *err)
{
    const char *f = err->field;
    char *t = err->text;
    size_t n = sizeof(err->text);
    unsigned long long got = err->got, max = err->max;
    switch (err->code) {
    case PROTO_E_TRUNCATED:
        if (*f)
            snprintf(t, n, "truncated input in field '%s' (at byte %zu)", f, err->offset);
        else
            snprintf(t, n, "truncated input (at byte %zu)", err->offset);
        break;
    case PROTO_E_TYPE:
        snprintf(t, n, "wrong type for field '%s'", f);
        break;
    case PROTO_E_TOO_LONG:
        snprintf(t, n, "field '%s' too long (%llu > %llu bytes)", f, got, max);
        break;
    case PROTO_E_TOO_MANY:
        snprintf(t, n, "field '%s' has too many items (%llu > %llu)", f, got, max);
        break;
    case PROTO_E_MISSING:
        snprintf(t, n, "missing required field '%s'", f);
        break;
    case PROTO_E_VERSION:
        snprintf(t, n, "unsupported version %llu.%llu (this side speaks %llu.x)", got >> 8,
                 got & 0xff, max);
        break;
    case PROTO_E_FRAME_TOO_BIG:
        snprintf(t, n, "frame too big (%llu > %llu bytes)", got, max);
        break;
    case PROTO_E_UNKNOWN_TYPE:
        snprintf(t, n, "unknown message type %llu", got);
        break;
    case PROTO_E_TRAILING:
        snprintf(t, n, "%llu trailing bytes after the message", got);
        break;
    case PROTO_E_DUPLICATE:
        snprintf(t, n, "duplicate key '%s'", f);
        break;
    case PROTO_E_DEPTH:
        snprintf(t, n, "value nested too deep in field '%s' (limit %llu)", f, max);
        break;
    case PROTO_E_VALUE:
        snprintf(t, n, "invalid value for field '%s'", f);
        break;
    default:
        if (*f)
            snprintf(t, n, "%s (field '%s')", proto_status_str(err->code), f);
        else
            snprintf(t, n, "%s", proto_status_str(err->code));
        break;
    }
}

proto_status_t proto_error_set(proto_error_t *err, proto_status_t code, const char *field,
                               uint64_t got, uint64_t max)
{
    if (!err)
        return code;
    size_t offset = err->offset;
    memset(err, 0, sizeof(*err));
    err->code = code;
    err->offset = offset;
    if (field)
        snprintf(err->field, sizeof(err->field), "%s", field);
    err->got = got;
    err->max = max;
    s_format(err);
    return code;
}
