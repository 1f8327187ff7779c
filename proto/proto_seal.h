/*  proto_seal.h: end-to-end sealing of payloads between the two nodes.

    From the connection's 32-byte secret (carried by the invitation code)
    HKDF-SHA256 derives one AES-256-GCM key per direction (salt: connection
    id; info: "twinsync seal v1 public->private" or "... private->public").
    A payload with sequence seq in direction dir is sealed with

        nonce = dir (4 bytes, big-endian) || seq (8 bytes, big-endian)
        AD    = len(conn) (1 byte) || conn || dir (1 byte) || seq (8 bytes, big-endian)
        out   = ciphertext || 16-byte tag

    Each key serves one direction and a sender never reuses a seq, so no
    nonce repeats under one key. Opening fails on any changed byte, the wrong
    secret or connection, the wrong direction, or another seq (a replayed or
    reordered payload). The broker only ever sees the sealed form.
*/
#ifndef PROTO_SEAL_H
#define PROTO_SEAL_H

#include <stddef.h>
#include <stdint.h>

#include "proto_buf.h"
#include "proto_error.h"
#include "proto_msg.h"

#define PROTO_SEAL_TAG_SIZE   16 //  Bytes a sealed payload adds to its plaintext
#define PROTO_SEAL_NONCE_SIZE 12 //  AES-GCM nonce size

typedef enum {
    PROTO_DIR_PUB_TO_PRIV = 1, //  Sent by the public node
    PROTO_DIR_PRIV_TO_PUB = 2  //  Sent by the private node
} proto_dir_t;

//  The direction a node of this role sends in.
proto_dir_t proto_dir_outbound(proto_role_t role);

//  The direction a node of this role receives.
proto_dir_t proto_dir_inbound(proto_role_t role);

typedef struct proto_seal proto_seal_t;

//  Derives both direction keys from secret for connection conn. Returns a new
//  sealer owned by the caller (proto_seal_destroy), or NULL when conn is not a
//  valid connection id or the crypto library fails.
proto_seal_t *proto_seal_new(const uint8_t secret[PROTO_KEY_SIZE], const char *conn);

//  Wipes the keys, frees the sealer, sets *self_p to NULL; accepts NULL.
void proto_seal_destroy(proto_seal_t **self_p);

//  Seals size bytes of plain as payload seq of direction dir into out
//  (contents replaced; size + PROTO_SEAL_TAG_SIZE bytes). Returns PROTO_OK,
//  PROTO_E_TOO_LONG (size above INT_MAX - 16), PROTO_E_NOMEM or PROTO_E_CRYPTO.
proto_status_t proto_seal_box(proto_seal_t *self, proto_dir_t dir, uint64_t seq,
                              const uint8_t *plain, size_t size, proto_buf_t *out);

//  Opens a sealed payload into out (contents replaced). Returns PROTO_OK, or
//  PROTO_E_SEAL when it is not the authentic payload seq of direction dir of
//  this connection (out is then empty), PROTO_E_NOMEM or PROTO_E_CRYPTO.
proto_status_t proto_seal_open(proto_seal_t *self, proto_dir_t dir, uint64_t seq,
                               const uint8_t *sealed, size_t size, proto_buf_t *out);

#endif
