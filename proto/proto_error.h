/*  proto_error.h: status codes and the decode error report of the proto library.

    Every function of proto/ that can fail at run time returns a proto_status_t
    (PROTO_OK is zero). Decoders also fill a proto_error_t that names the
    offending field and carries a message a person can act on, e.g.
    "field 'conn' too long (300 > 64 bytes)". The numbers of proto_status_t are
    local to this library: they never travel on the wire (the ERROR message has
    its own codes, see proto_msg.h).
*/
#ifndef PROTO_ERROR_H
#define PROTO_ERROR_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    PROTO_OK = 0,          //  Success
    PROTO_E_TRUNCATED,     //  Input ends inside a value
    PROTO_E_TYPE,          //  A value has the wrong msgpack type (field named)
    PROTO_E_TOO_LONG,      //  A string or byte string exceeds its limit
    PROTO_E_TOO_MANY,      //  A list or map has more items than its limit
    PROTO_E_MISSING,       //  A required field is absent
    PROTO_E_VERSION,       //  Unsupported major version
    PROTO_E_FRAME_TOO_BIG, //  Whole input larger than the configured maximum
    PROTO_E_UNKNOWN_TYPE,  //  The "t" key names no message this decoder knows
    PROTO_E_TRAILING,      //  Bytes left after the top-level map
    PROTO_E_DUPLICATE,     //  The same key twice in one map
    PROTO_E_DEPTH,         //  Unknown value nested deeper than the limit
    PROTO_E_VALUE,         //  Right type, bad value (range, charset, UTF-8, size)
    PROTO_E_NOT_MAP,       //  The input is not a msgpack map
    PROTO_E_NOMEM,         //  Out of memory
    PROTO_E_CHECKSUM,      //  Invitation code altered (checksum mismatch)
    PROTO_E_NOT_INVITE,    //  Text is not an invitation code at all
    PROTO_E_EXPIRED,       //  Invitation code past its expiry time
    PROTO_E_SEAL,          //  Sealed payload failed to open (altered, wrong key,
                           //  wrong direction or sequence)
    PROTO_E_CRYPTO,        //  The crypto library failed (RNG, KDF, cipher)
    PROTO_E_JOIN_AUTH      //  A join's authenticator does not match (proto_kx.h)
} proto_status_t;

//  What went wrong, filled by the decoders and encoders; a plain value the
//  caller owns (no allocation).
typedef struct {
    proto_status_t code; //  PROTO_OK when nothing went wrong
    char field[64];      //  Path of the offending field ("conns[2].conn"), or ""
    uint64_t got;        //  Size or value found, when meaningful
    uint64_t max;        //  Limit that was crossed, when meaningful
    size_t offset;       //  Byte offset in the input where decoding stopped
    char text[256];      //  Human message, see proto_error_str
} proto_error_t;

//  Returns a constant English name for a status code ("truncated input").
const char *proto_status_str(proto_status_t code);

//  Returns the human message of an error ("field 'conn' too long (300 > 64
//  bytes)"); "ok" for PROTO_OK. The string lives inside *err.
const char *proto_error_str(const proto_error_t *err);

//  Fills *err (when err is not NULL) and returns code. The message is built
//  from code, field (may be NULL), got and max. Used by the proto library
//  itself; callers may use it to report their own failures in the same shape.
proto_status_t proto_error_set(proto_error_t *err, proto_status_t code, const char *field,
                               uint64_t got, uint64_t max);

//  Resets *err to PROTO_OK.
void proto_error_clear(proto_error_t *err);

#endif
