/*  private_accept.h: what only the private node does with connections:
    accept an invitation code.

    The code is checked before anything is written: a truncated, altered,
    expired, wrong-version or non-code text, a mode this release does not
    sync, a connection accepted already or a name taken is refused. A good
    code becomes the private node's half of the key exchange (its root,
    docs/protocol.md §8.3), a key file (no secret enters the database; the
    invitation secret is not kept at all) and a joining connection with
    the fingerprint the admins compare; the daemon sends JOIN with the
    token and the key exchange, and the operation waits, bounded, for the
    broker's answer. A refusal (token used,
    expired, wrong) removes the connection again so that a good code can
    still be accepted. Functions that return data (no printing; node_admin.h's
    conventions), called by private_cli.h and callable by a web console.
*/
#ifndef PRIVATE_ACCEPT_H
#define PRIVATE_ACCEPT_H

#include <stdbool.h>
#include <stddef.h>

#include "node_admin.h"

//  What became of an accepted code.
typedef struct {
    node_conn_t conn;    //  The connection as stored (status active, or joining), with
                         //  its fingerprint
    bool active;         //  The broker accepted the join; false: still joining
    bool daemon_running; //  When still joining: whether a daemon runs at all
} private_acceptance_t;

//  Accepts the invitation code text (not kept: the caller wipes its copy)
//  with this side's trigger (NULL or "": none) and waits at most wait_ms for
//  the broker's answer. Returns 0 with *out filled (out->active false when
//  the answer has not come yet: the join completes once the daemon reaches
//  the broker), or -1 with one line in err naming what was refused; nothing
//  is stored then.
int private_accept(node_admin_t *admin, const char *code, const char *trigger, long wait_ms,
                   private_acceptance_t *out, char *err, size_t errlen);

#endif
