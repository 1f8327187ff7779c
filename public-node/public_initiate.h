/*  public_initiate.h: what only the public node does with connections:
    initiate one and hand out its invitation code.

    `connection initiate` draws the connection's id, join token,
    invitation secret and X25519 key pair (docs/protocol.md §8.3), writes
    the secrets to the key file (never to the database), inserts the
    connection as pending with its fingerprint (proto_invite_fingerprint,
    what the two admins compare) and waits, bounded, until the daemon has
    registered the invitation with the broker. The code built from it
    carries the X25519 public key, the token and the invitation secret,
    never an end-to-end key; `connection show --code` builds it again while
    the connection is pending, and refuses once the join wiped the secrets.
    These are functions that return data
    (no printing; node_admin.h's conventions), called by public_cli.h and
    callable by a web console.
*/
#ifndef PUBLIC_INITIATE_H
#define PUBLIC_INITIATE_H

#include <stdbool.h>
#include <stddef.h>

#include "node_admin.h"
#include "proto_buf.h"

//  A connection just initiated and its invitation code.
typedef struct {
    node_conn_t conn; //  The pending connection as stored (conn.fingerprint included)
    proto_buf_t code; //  The code: NUL-terminated text carrying secrets
} public_invitation_t;

//  Checks the arguments of an initiate and names the first problem in err:
//  a name (at most PROTO_MAX_NAME bytes), mode "basic" (NULL is basic), a
//  trigger of one line (NULL or "": none). Returns 0 or -1. public_initiate
//  calls it; a command line calls it first to tell its own errors from the
//  configuration's.
int public_initiate_check(const char *name, const char *mode, const char *trigger, char *err,
                          size_t errlen);

//  Initiates connection name (see public_initiate_check for the
//  arguments; the configuration must pass node_config_check_run) and waits at most wait_ms for the
//  daemon to register it with the broker (out->conn.invite_sent says whether it did; the code works
//  once it has). Returns 0 with *out filled (the caller wipes it with
//  public_invitation_clear), or -1 with err: a check, a name taken, the key
//  file or the database (nothing is stored then), or the broker refusing
//  the invitation (the connection stays, in status error, for `connection
//  show` and `connection delete`).
int public_initiate(node_admin_t *admin, const char *name, const char *mode, const char *trigger,
                    long wait_ms, public_invitation_t *out, char *err, size_t errlen);

//  Builds the invitation code of conn again, from the database and its key
//  file, into code (proto_buf_init'ed by the caller, wiped by it with
//  proto_buf_wipe). Only a pending connection of the public node has one:
//  any other is refused with one line saying why. Returns 0 or -1 with err.
int public_invitation_code(node_admin_t *admin, const node_conn_t *conn, proto_buf_t *code,
                           char *err, size_t errlen);

//  Wipes and frees the code of an invitation; safe twice.
void public_invitation_clear(public_invitation_t *invitation);

#endif
