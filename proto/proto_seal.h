/*  proto_seal.h: end-to-end sealing of payloads between the two nodes.

    Keys. A connection has a root secret per key generation (generation 0
    comes from the join; a rekey adds the next). A sealer picks a random
    16-byte epoch when it is made, and again whenever it is asked to seal a
    sequence that is not above every sequence it sealed in that epoch and
    direction (a restore, a broker that lies about positions). The key of a
    payload is

        HKDF-SHA256(ikm = root[generation], salt = connection id,
                    info = "twinsync seal v2 public->private" || epoch)

    (or "... private->public"), so no (key, nonce) pair is ever used twice:
    within an epoch the sequence only rises, and a new epoch is a new key.

    Layout of a sealed payload (docs/protocol.md §8):

        header = 'T' 0x02 || generation (4 bytes, big-endian) || epoch (16)
        nonce  = 00 00 00 dir || seq (8 bytes, big-endian)
        AD     = len(conn) || conn || dir || seq (8, big-endian) || header
        sealed = header || AES-256-GCM(plain || 0x80 || 00 * n) || tag (16)

    The 0x80 marker and the zeros pad the plaintext up to a size bucket
    (256 bytes doubling up to the largest payload), so the broker learns a
    bucket, not a size; with padding off only the marker is added. Opening
    fails on any changed byte, the wrong secret, connection, direction or
    sequence (a replayed or reordered payload), or an unknown generation.
    The broker only ever sees the sealed form.
*/
#ifndef PROTO_SEAL_H
#define PROTO_SEAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto_buf.h"
#include "proto_error.h"
#include "proto_msg.h"

#define PROTO_SEAL_TAG_SIZE    16 //  AES-GCM tag
#define PROTO_SEAL_NONCE_SIZE  12 //  AES-GCM nonce size
#define PROTO_SEAL_EPOCH_SIZE  16 //  Random bytes of an epoch
#define PROTO_SEAL_HEADER_SIZE 22 //  'T', version, generation, epoch
#define PROTO_SEAL_KEY_ID_SIZE 8  //  Bytes of a key's fingerprint (tracing)
#define PROTO_SEAL_GENERATIONS 4  //  Generations a sealer keeps at once

//  Bytes a sealed payload adds to its plaintext at least (header, padding
//  marker, tag); padding adds more.
#define PROTO_SEAL_OVERHEAD (PROTO_SEAL_HEADER_SIZE + 1 + PROTO_SEAL_TAG_SIZE)

typedef enum {
    PROTO_DIR_PUB_TO_PRIV = 1, //  Sent by the public node
    PROTO_DIR_PRIV_TO_PUB = 2  //  Sent by the private node
} proto_dir_t;

//  The direction a node of this role sends in.
proto_dir_t proto_dir_outbound(proto_role_t role);

//  The direction a node of this role receives.
proto_dir_t proto_dir_inbound(proto_role_t role);

typedef struct proto_seal proto_seal_t;

//  Called for every payload sealed: a fingerprint of the key (the first 8
//  bytes of SHA-256 of it) and the nonce. Lets a test prove that no pair
//  repeats; reveals nothing of the key.
typedef void(proto_seal_trace_fn)(const uint8_t key_id[PROTO_SEAL_KEY_ID_SIZE],
                                  const uint8_t nonce[PROTO_SEAL_NONCE_SIZE], void *arg);

//  A sealer for connection conn whose generation 0 root is secret, sealing
//  in generation 0, with padding on up to the default largest payload, and a
//  fresh random epoch. Returns a new sealer owned by the caller
//  (proto_seal_destroy), or NULL when conn is not a valid connection id or
//  the crypto library fails.
proto_seal_t *proto_seal_new(const uint8_t secret[PROTO_KEY_SIZE], const char *conn);

//  Wipes the keys, frees the sealer, sets *self_p to NULL; accepts NULL.
void proto_seal_destroy(proto_seal_t **self_p);

//  Adds (or replaces) the root secret of generation. Keeps at most
//  PROTO_SEAL_GENERATIONS: the oldest is wiped to make room. Returns PROTO_OK
//  or PROTO_E_CRYPTO.
proto_status_t proto_seal_add_generation(proto_seal_t *self, uint32_t generation,
                                         const uint8_t secret[PROTO_KEY_SIZE]);

//  Seals in generation from now on (and starts a new epoch). Returns
//  PROTO_OK, or PROTO_E_SEAL when the sealer has no root for it.
proto_status_t proto_seal_use_generation(proto_seal_t *self, uint32_t generation);

//  Wipes every generation below generation.
void proto_seal_forget_before(proto_seal_t *self, uint32_t generation);

//  The generation a payload was sealed in, or -1 when sealed is not a v2
//  sealed payload.
int64_t proto_seal_generation_of(const uint8_t *sealed, size_t size);

//  Padding on (to size buckets) or off (marker only); max_sealed is the
//  largest sealed payload a bucket may reach (the protocol's max_payload).
void proto_seal_set_padding(proto_seal_t *self, bool on, size_t max_sealed);

//  Calls fn for every payload sealed from now on (NULL stops it).
void proto_seal_set_trace(proto_seal_t *self, proto_seal_trace_fn *fn, void *arg);

//  Seals size bytes of plain as payload seq of direction dir into out
//  (contents replaced). Returns PROTO_OK, PROTO_E_TOO_LONG (the sealed form
//  would pass INT_MAX), PROTO_E_NOMEM or PROTO_E_CRYPTO.
proto_status_t proto_seal_box(proto_seal_t *self, proto_dir_t dir, uint64_t seq,
                              const uint8_t *plain, size_t size, proto_buf_t *out);

//  Opens a sealed payload into out (contents replaced, padding removed).
//  Returns PROTO_OK, or PROTO_E_SEAL when it is not the authentic payload
//  seq of direction dir of this connection in a generation the sealer holds
//  (out is then empty), PROTO_E_NOMEM or PROTO_E_CRYPTO.
proto_status_t proto_seal_open(proto_seal_t *self, proto_dir_t dir, uint64_t seq,
                               const uint8_t *sealed, size_t size, proto_buf_t *out);

#endif
