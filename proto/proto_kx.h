/*  proto_kx.h: the join's key exchange (docs/protocol.md §8.3).

    Why: the invitation code travels by hand (mail, chat, a ticket) and may
    be kept there for ever. If it carried the end-to-end root, anyone who
    finds it later could open every payload anyone recorded. So the code
    carries the public node's X25519 public key and an invitation secret
    that only authenticates the exchange; the root comes from X25519 and is
    never written down anywhere but in the two nodes' key files.

        public node (initiate)   X25519 pair (a, A); code = {..., kx = A, secret = s}
        private node (accept)    X25519 pair (b, B); shared = X25519(b, A)
                                 auth = HMAC-SHA256(key = s, transcript)
                                 JOIN carries kx = B and auth; the broker
                                 relays both to the public node in JOINED
        public node (JOINED)     checks auth (constant time); shared = X25519(a, B)
        both                     root = HKDF-SHA256(ikm = shared, salt = s,
                                        info = "twinsync root v1" || transcript)

        transcript = "twinsync join v1" || len(conn) (1 byte) || conn
                     || A (32) || B (32) || broker key (32)

    Both sides then wipe a, b, s and the join token: a code found after the
    join opens nothing (tests/proto/test_proto_kx.c, tests/e2e/test_secrecy.py).
    The authenticator stops a broker (or anyone who sees JOIN) from
    swapping B for a key of its own: it would have to know s.
*/
#ifndef PROTO_KX_H
#define PROTO_KX_H

#include <stdint.h>

#include "proto_error.h"
#include "proto_invite.h"
#include "proto_limits.h"

#define PROTO_KX_JOIN_LABEL "twinsync join v1" //  First bytes of the transcript
#define PROTO_KX_ROOT_LABEL "twinsync root v1" //  First bytes of the root's HKDF info

//  What a join binds: the connection, both X25519 public keys and the
//  broker. Every member comes from the invitation code but private_kx,
//  which comes from JOIN.
typedef struct {
    const char *conn;                   //  Connection id (1..PROTO_MAX_ID bytes)
    uint8_t public_kx[PROTO_KEY_SIZE];  //  Public node's X25519 public key (the code's kx)
    uint8_t private_kx[PROTO_KEY_SIZE]; //  Private node's X25519 public key (JOIN's kx)
    uint8_t broker_key[PROTO_KEY_SIZE]; //  Broker's CURVE public key (the code's broker_key)
} proto_kx_transcript_t;

//  A fresh X25519 key pair (OpenSSL EVP_PKEY_X25519). Returns PROTO_OK, or
//  PROTO_E_CRYPTO with both outputs zeroed. The caller wipes secret_key.
proto_status_t proto_kx_keypair(uint8_t secret_key[PROTO_KEY_SIZE],
                                uint8_t public_key[PROTO_KEY_SIZE]);

//  The X25519 public key of secret_key. Returns PROTO_OK or PROTO_E_CRYPTO.
proto_status_t proto_kx_public_key(const uint8_t secret_key[PROTO_KEY_SIZE],
                                   uint8_t public_key[PROTO_KEY_SIZE]);

//  out = HKDF-SHA256(ikm, salt, info), 32 bytes: every key derivation of
//  the protocol (join root, rekey root, sealing keys). Returns 0 or -1 (the
//  crypto library failed).
int proto_hkdf(const uint8_t ikm[PROTO_KEY_SIZE], const void *salt, size_t salt_len,
               const void *info, size_t info_len, uint8_t out[PROTO_KEY_SIZE]);

//  out = HKDF-SHA256(ikm = X25519(my_secret, peer_public), salt, info),
//  the derivation under both the join's root and a rekey's
//  (docs/protocol.md §8.3, §8.4). Returns PROTO_OK, or PROTO_E_CRYPTO (also
//  for a peer key whose shared secret would be all zeros); out is zeroed on
//  failure.
proto_status_t proto_kx_derive(const uint8_t my_secret[PROTO_KEY_SIZE],
                               const uint8_t peer_public[PROTO_KEY_SIZE],
                               const uint8_t salt[PROTO_KEY_SIZE], const uint8_t *info,
                               size_t info_len, uint8_t out[PROTO_KEY_SIZE]);

//  auth = HMAC-SHA256(key = invite_secret, data = the transcript of t).
//  Returns PROTO_OK, PROTO_E_VALUE (t->conn is not a connection id) or
//  PROTO_E_CRYPTO.
proto_status_t proto_kx_auth(const uint8_t invite_secret[PROTO_KEY_SIZE],
                             const proto_kx_transcript_t *t, uint8_t auth[PROTO_KEY_SIZE]);

//  root = HKDF-SHA256(ikm = X25519(my_secret, peer_public), salt =
//  invite_secret, info = PROTO_KX_ROOT_LABEL || transcript of t). Returns
//  PROTO_OK, PROTO_E_VALUE (bad conn), or PROTO_E_CRYPTO (also for a peer
//  key whose shared secret would be all zeros). root is zeroed on failure.
proto_status_t proto_kx_root(const uint8_t my_secret[PROTO_KEY_SIZE],
                             const uint8_t peer_public[PROTO_KEY_SIZE],
                             const uint8_t invite_secret[PROTO_KEY_SIZE],
                             const proto_kx_transcript_t *t, uint8_t root[PROTO_KEY_SIZE]);

//  The private node's half, from a decoded invitation: draws its X25519
//  pair, and fills private_kx (for JOIN), auth (for JOIN) and root (the
//  generation-0 root). The private scalar never leaves this function (wiped
//  before it returns). Returns PROTO_OK, PROTO_E_VALUE or PROTO_E_CRYPTO
//  (outputs zeroed).
proto_status_t proto_kx_accept(const proto_invite_t *invite, uint8_t private_kx[PROTO_KEY_SIZE],
                               uint8_t auth[PROTO_KEY_SIZE], uint8_t root[PROTO_KEY_SIZE]);

//  The public node's half, on JOINED: checks auth against the transcript t
//  with invite_secret in constant time (CRYPTO_memcmp), then derives root
//  with its X25519 secret kx_secret and t->private_kx. Returns PROTO_OK;
//  PROTO_E_JOIN_AUTH when auth does not match (whoever joined does not
//  hold this connection's invitation secret, or something on the way
//  changed the keys: refuse the join); PROTO_E_VALUE or PROTO_E_CRYPTO.
//  root is zeroed on failure.
proto_status_t proto_kx_finish(const proto_kx_transcript_t *t,
                               const uint8_t kx_secret[PROTO_KEY_SIZE],
                               const uint8_t invite_secret[PROTO_KEY_SIZE],
                               const uint8_t auth[PROTO_KEY_SIZE], uint8_t root[PROTO_KEY_SIZE]);

#endif
