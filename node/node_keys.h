/*  node_keys.h: a connection's secrets, in a key file beside the database.

    STATE_DIR/keys/CONN.secret holds what the connection needs of its keys,
    one `name=<64 hex digits>` line each. It is mode 0600 in a 0700
    directory and always written whole and atomically (temporary file,
    fsync, rename, fsync of the directory): a crash leaves the old file or
    the new one, never a mix. Kept out of node.db so that a copy of the
    database (a backup, a support bundle) carries no secret. What it holds
    follows the join (docs/protocol.md §8.3, docs/security.md):

      public node, pending      invite=     invitation secret
                                token=      join token
                                kx=         X25519 private key
      private node, joining     root=       generation-0 root (derived at accept)
                                token=      join token (JOIN goes again after
                                            a reconnect until JOINED)
                                join_kx=    its X25519 public key, for JOIN
                                join_auth=  the join's authenticator, for JOIN
      either node, joined       root=       nothing else

    The private node never writes its X25519 private key: it derives the
    root when the admin accepts the code and wipes the key at once. Once the
    join is done (node_keys_join_public on the public node, then
    node_keys_forget_join on both), the file holds the root alone, so a
    leaked invitation code opens nothing. A line secret=<64 hex digits>, the
    end-to-end secret of a connection joined before twinsync 1.2 (the code
    carried it), is read as its root; no file is written with it.

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

//  A key file's contents; each value is meaningful when its has_ flag is.
typedef struct {
    bool has_root;                         //  root is present
    uint8_t root[PROTO_KEY_SIZE];          //  Generation-0 root (proto_seal.h)
    bool has_invite;                       //  invite_secret is present
    uint8_t invite_secret[PROTO_KEY_SIZE]; //  Public, pending: invitation secret
    bool has_token;                        //  join_token is present
    uint8_t join_token[PROTO_KEY_SIZE];    //  Join token, until the join
    bool has_kx;                           //  kx_secret is present
    uint8_t kx_secret[PROTO_KEY_SIZE];     //  Public, pending: X25519 private key
    bool has_join;                         //  join_kx and join_auth are present
    uint8_t join_kx[PROTO_KEY_SIZE];       //  Private, joining: X25519 public key for JOIN
    uint8_t join_auth[PROTO_KEY_SIZE];     //  Private, joining: authenticator for JOIN
} node_keys_t;

//  Writes the key file of conn. Returns 0, or -1 with a reason in err.
int node_keys_write(const char *state_dir, const char *conn, const node_keys_t *keys, char *err,
                    size_t errlen);

//  Reads the key file of conn into *out. Returns 0, 1 when there is no key
//  file, or -1 with a reason in err (bad permissions, damaged file).
int node_keys_read(const char *state_dir, const char *conn, node_keys_t *out, char *err,
                   size_t errlen);

//  Public node, on JOINED for a pending conn: completes the join's key
//  exchange (proto_kx_finish) with the key file's invitation secret and
//  X25519 key, the broker key the code carried (broker_key) and JOIN's kx
//  and auth, then rewrites the key file with the root alone. A file that
//  already holds a root and no X25519 key (JOINED again after a crash
//  before the database recorded the join) is done. Returns 0; 1 when the
//  join is refused (auth does not match, or the file holds no key
//  exchange), err saying why, the file unchanged; -1 with err when the file
//  cannot be read or written (try again at the next JOINED).
int node_keys_join_public(const char *state_dir, const char *conn,
                          const uint8_t broker_key[PROTO_KEY_SIZE],
                          const uint8_t kx[PROTO_KEY_SIZE], const uint8_t auth[PROTO_KEY_SIZE],
                          char *err, size_t errlen);

//  Either node, once conn is joined: rewrites its key file with the root
//  alone (token, invitation secret and key exchange gone); does nothing
//  when the file holds nothing else. Returns 0, or -1 with err (no key file,
//  no root, a read or write failure).
int node_keys_forget_join(const char *state_dir, const char *conn, char *err, size_t errlen);

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
