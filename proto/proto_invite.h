/*  proto_invite.h: invitation codes (docs/protocol.md §7).

    The public node's admin initiates a connection and gets one line of text
    to hand to the partner admin:

        tsi1.<base64url, no padding, of: msgpack body || first 8 bytes of SHA-256(body)>

    The body is a msgpack map (keys in docs/protocol.md) holding everything the
    private node needs to join: connection id and name, mode, the public
    node's name and instance URL, the broker endpoint and CURVE public key,
    the public node's X25519 public key, a single-use join token and the
    invitation secret. The code holds no end-to-end key: the invitation
    secret only authenticates the join's key exchange (proto_kx.h), so a
    code found after the join opens nothing. Decoding refuses text
    that is not an invitation code, was truncated or altered (any single
    changed character is caught: canonical base64url plus a 64-bit
    checksum), has an unknown version, or has expired.

    The code carries secrets until the join: callers wipe buffers that held
    it (proto_buf_wipe) and proto_invite_clear wipes the decoded secrets.

    Both admins see the connection's fingerprint (proto_invite_fingerprint)
    when the code is made and when it is accepted, and compare it by phone:
    a code altered on its way (another broker, another key) shows another.
*/
#ifndef PROTO_INVITE_H
#define PROTO_INVITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto_buf.h"
#include "proto_error.h"
#include "proto_limits.h"
#include "proto_msg.h"

#define PROTO_INVITE_PREFIX   "tsi1." //  Text prefix of format version 1
#define PROTO_INVITE_CHECKSUM 8       //  Bytes of SHA-256 appended to the body
#define PROTO_INVITE_MAX_TEXT 8192    //  Longest code text accepted

//  "ddddd ddddd ddddd ddddd ddddd" and its NUL.
#define PROTO_INVITE_FINGERPRINT_SIZE 30

typedef struct {
    uint16_t version;                   //  Body version ("v"); encode writes PROTO_VERSION
    const char *conn;                   //  Connection id ([A-Za-z0-9._:-], <= 64)
    const char *name;                   //  Connection name chosen by the admin
    const char *mode;                   //  Sync mode, "basic"
    const char *node_name;              //  Public node's name
    const char *instance_url;           //  Public side's ServiceNow URL
    const char *endpoint;               //  Broker endpoint, "tcp://host:port"
    uint8_t broker_key[PROTO_KEY_SIZE]; //  Broker's CURVE public key (raw; Z85 with zmq_z85_encode)
    uint8_t kx[PROTO_KEY_SIZE];         //  Public node's X25519 public key (proto_kx.h)
    uint8_t join_token[PROTO_KEY_SIZE]; //  Single-use join token
    uint8_t secret[PROTO_KEY_SIZE];     //  Invitation secret: authenticates the join (proto_kx.h)
    uint64_t expires;                   //  Unix seconds; refused from then on
    proto_mem_t *mem;                   //  Memory owned after decode; private
} proto_invite_t;

//  Zeroes *self.
void proto_invite_init(proto_invite_t *self);

//  Frees what a decode allocated, wipes the token and secret, zeroes *self.
void proto_invite_clear(proto_invite_t *self);

//  Fills join_token and secret with fresh random bytes (RAND_bytes). Returns
//  PROTO_OK or PROTO_E_CRYPTO.
proto_status_t proto_invite_generate_secrets(proto_invite_t *self);

//  Writes the invitation code text into out (contents replaced, NUL-terminated;
//  out->size excludes the NUL). Checks the fields first. Returns PROTO_OK,
//  PROTO_E_MISSING / PROTO_E_TOO_LONG / PROTO_E_VALUE (err names the field),
//  or PROTO_E_NOMEM.
proto_status_t proto_invite_encode(const proto_invite_t *self, proto_buf_t *out,
                                   proto_error_t *err);

//  Reads an invitation code (leading and trailing white space ignored). now
//  is the current Unix time; a code with expires <= now is refused with
//  PROTO_E_EXPIRED (the fields are still decoded into *out only on PROTO_OK).
//  Returns PROTO_OK with *out owned by the caller (proto_invite_clear), or
//  PROTO_E_NOT_INVITE, PROTO_E_TRUNCATED, PROTO_E_CHECKSUM, PROTO_E_VERSION,
//  PROTO_E_EXPIRED, a body decoding error, or PROTO_E_NOMEM; err's message
//  starts with "cannot read invitation code: " and says what to do.
proto_status_t proto_invite_decode(const char *text, uint64_t now, proto_invite_t *out,
                                   proto_error_t *err);

//  The connection's fingerprint into out: five groups of five digits
//  ("01234 56789 ...") that the two admins read to each other. It covers
//  everything a man in the middle would have to swap: SHA-256 over
//
//      "twinsync fingerprint v1" || len(conn) (1 byte) || conn
//      || len(endpoint) (2 bytes, big-endian) || endpoint
//      || broker_key (32) || kx (32) || secret (32)
//
//  whose first 20 bytes, read as five 32-bit big-endian numbers, give the
//  groups (each modulo 100000). The same on both sides, so a web console
//  shows the same. conn and endpoint longer than their limits count as
//  cut at the limit (the encoder refuses them anyway).
void proto_invite_fingerprint(const proto_invite_t *self, char out[PROTO_INVITE_FINGERPRINT_SIZE]);

//  hash = SHA-256(token): what the public node registers with INVITE.
void proto_invite_token_hash(const uint8_t token[PROTO_KEY_SIZE], uint8_t hash[PROTO_KEY_SIZE]);

//  True when SHA-256(token) equals hash, compared in constant time (broker's
//  JOIN check).
bool proto_invite_token_matches(const uint8_t hash[PROTO_KEY_SIZE],
                                const uint8_t token[PROTO_KEY_SIZE]);

#endif
