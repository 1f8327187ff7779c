/*  node_keys.h: a connection's secrets, in a key file beside the database.

    STATE_DIR/keys/CONN.secret (mode 0600, written atomically) holds the
    connection's end-to-end secret and, on the public side until the partner
    joins, the join token (the private side keeps the token it presented).
    Kept out of node.db so that a copy of the database (a backup, a support
    bundle) carries no secret:

        secret=<64 hex digits>
        token=<64 hex digits>

    The node's own CURVE key pair (for the broker link) is made on first
    start and kept in STATE_DIR/keys/node.key (0600):

        public=<Z85, 40 characters>
        secret=<Z85, 40 characters>

    The directory STATE_DIR/keys is created with mode 0700.
*/
#ifndef NODE_KEYS_H
#define NODE_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto_limits.h"

typedef struct {
    uint8_t secret[PROTO_KEY_SIZE];     //  End-to-end secret (proto_seal.h)
    uint8_t join_token[PROTO_KEY_SIZE]; //  Join token, if has_token
    bool has_token;                     //  join_token is meaningful
} node_keys_t;

//  Writes the key file of conn. Returns 0, or -1 with a reason in err.
int node_keys_write(const char *state_dir, const char *conn, const node_keys_t *keys, char *err,
                    size_t errlen);

//  Reads the key file of conn into *out. Returns 0, 1 when there is no key
//  file, or -1 with a reason in err (bad permissions, damaged file).
int node_keys_read(const char *state_dir, const char *conn, node_keys_t *out, char *err,
                   size_t errlen);

//  Deletes the key file of conn (absent is fine). Returns 0 or -1.
int node_keys_remove(const char *state_dir, const char *conn);

//  The node's CURVE key pair: read from STATE_DIR/keys/node.key, or made
//  (zmq_curve_keypair) and written there when absent. public_z85 (41 bytes
//  with NUL) may be NULL. Returns 0, or -1 with a reason in err.
int node_keys_node_pair(const char *state_dir, uint8_t public_key[PROTO_KEY_SIZE],
                        uint8_t secret_key[PROTO_KEY_SIZE], char *public_z85, char *err,
                        size_t errlen);

//  Overwrites *keys with zeros.
void node_keys_wipe(node_keys_t *keys);

#endif
