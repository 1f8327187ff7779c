/*  node_rekey.h: a connection's key generations after the join, and the
    X25519 exchange that makes the next one (docs/protocol.md §8.4).

    STATE_DIR/keys/CONN.gens (mode 0600, written atomically) holds, once a
    rekey has started, every root secret the connection still needs, and
    replaces the join's key file (node_keys.h), which is removed then:

        current=N                     generation payloads are sealed in
        root=N:<64 hex digits>        its root
        root=M:<64 hex digits>        M = N - 1, until the other side's first
                                      payload sealed in N has arrived
        pending=G:<64 hex digits>     a rekey this node started: its X25519
                                      private key for G (until REKEY_ACK)
        answered=G:<64 hex digits>    the X25519 public key this node answered
                                      a REKEY for G with (to answer again
                                      after a crash; public, not secret)
        rotated_at=<unix seconds>     when N came into use
*/
#ifndef NODE_REKEY_H
#define NODE_REKEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto_limits.h"

typedef struct {
    uint32_t generation;          //  Generation number
    uint8_t root[PROTO_KEY_SIZE]; //  Its root secret
} node_rekey_root_t;

typedef struct {
    uint32_t current;                    //  Generation payloads are sealed in
    node_rekey_root_t roots[2];          //  [0]: current; [1]: the one before, if count 2
    size_t count;                        //  Roots held (1 or 2)
    uint32_t pending;                    //  Rekey started here to this generation, 0: none
    uint8_t pending_key[PROTO_KEY_SIZE]; //  Its X25519 private key
    uint32_t answered;                   //  Generation answered with answered_kx, 0: none
    uint8_t answered_kx[PROTO_KEY_SIZE]; //  The X25519 public key of that answer
    int64_t rotated_at;                  //  Unix seconds current came into use
} node_rekey_gens_t;

//  Reads the generations of conn. Returns 0, 1 when conn has none yet (the
//  join's key file still holds generation 0), or -1 with a reason in err.
int node_rekey_read(const char *state_dir, const char *conn, node_rekey_gens_t *out, char *err,
                    size_t errlen);

//  Writes the generations of conn (atomically, 0600). Returns 0 or -1 with
//  a reason in err.
int node_rekey_write(const char *state_dir, const char *conn, const node_rekey_gens_t *gens,
                     char *err, size_t errlen);

//  Deletes the generations file of conn (absent is fine). Returns 0 or -1.
int node_rekey_remove(const char *state_dir, const char *conn);

//  Overwrites *gens with zeros.
void node_rekey_wipe(node_rekey_gens_t *gens);

//  root = HKDF-SHA256(ikm = X25519(secret, peer), salt = previous root,
//  info = "twinsync rekey v1" || conn || generation (4 bytes, big-endian) ||
//  kx_rekey || kx_ack), through proto_kx_derive (key pairs come from
//  proto_kx_keypair). Returns 0, or -1 (crypto failure, or a peer key that
//  gives the all-zero shared secret).
int node_rekey_root(const uint8_t secret[PROTO_KEY_SIZE], const uint8_t peer[PROTO_KEY_SIZE],
                    const uint8_t previous[PROTO_KEY_SIZE], const char *conn, uint32_t generation,
                    const uint8_t kx_rekey[PROTO_KEY_SIZE], const uint8_t kx_ack[PROTO_KEY_SIZE],
                    uint8_t root[PROTO_KEY_SIZE]);

//  Makes generation the current one with root, keeping the current one as
//  the one before (any older is wiped); clears pending and answered for it.
void node_rekey_advance(node_rekey_gens_t *gens, uint32_t generation,
                        const uint8_t root[PROTO_KEY_SIZE], int64_t now);

//  Wipes the generation before the current one (the other side seals in the
//  current one now). True when there was one.
bool node_rekey_drop_previous(node_rekey_gens_t *gens);

#endif
