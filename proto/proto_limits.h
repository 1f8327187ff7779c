/*  proto_limits.h: protocol version, fixed protocol limits, and the limits a
    decoder is configured with.

    The fixed limits (PROTO_MAX_*) are part of the protocol: both ends agree on
    them and docs/protocol.md lists them. proto_limits_t holds the limits an
    operator may tune (frame size and what follows from it); a decoder refuses
    anything beyond them before it allocates a byte.
*/
#ifndef PROTO_LIMITS_H
#define PROTO_LIMITS_H

#include <stddef.h>
#include <stdint.h>

//  Version carried by every map in key "v" as major * 256 + minor. A decoder
//  accepts every minor of its major and refuses any other major.
#define PROTO_VERSION_MAJOR 1
#define PROTO_VERSION_MINOR 3
#define PROTO_VERSION       ((PROTO_VERSION_MAJOR << 8) | PROTO_VERSION_MINOR)

#define PROTO_MAX_ID       64   //  Ids: connection, node, broker (bytes, [A-Za-z0-9._:-])
#define PROTO_MAX_NAME     256  //  Names and descriptions (bytes, UTF-8)
#define PROTO_MAX_ERRTEXT  1024 //  Text of an ERROR message or a RECEIPT error
#define PROTO_MAX_URL      1024 //  URLs and ZeroMQ endpoints in invitation codes
#define PROTO_MAX_SN_ID    64   //  ServiceNow sys_id, number, journal id
#define PROTO_MAX_SN_FIELD 80   //  ServiceNow column name
#define PROTO_KEY_SIZE     32   //  Join token, its SHA-256, secrets, CURVE keys

typedef struct {
    size_t max_frame;   //  Largest input accepted by any decoder (bytes)
    size_t max_payload; //  Largest sealed payload in PUBLISH / DELIVER (bytes)
    size_t max_text;    //  Largest long text: SYNC field values, comments (bytes)
    size_t max_items;   //  Most elements in any list or map (HELLO conns,
                        //  SYNC fields and comments, skipped unknown values)
    unsigned max_depth; //  Deepest nesting of an unknown value being skipped
} proto_limits_t;

//  Returns the default limits: 1 MiB frames, payloads up to 1 MiB - 1 KiB,
//  texts up to 256 KiB, 4096 items, depth 16.
proto_limits_t proto_limits_default(void);

#endif
