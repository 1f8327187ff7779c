/*  private_accept.c: accepting an invitation code (see private_accept.h).

    The private node's half of the join's key exchange happens here, at
    once: its X25519 pair is drawn, the root derived and the private key
    wiped before anything is written (proto_kx_accept). The key file gets
    the root, the token and what JOIN carries; the invitation secret is
    never written.
*/
#include "private_accept.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "node_keys.h"
#include "proto_invite.h"
#include "proto_kx.h"

//  The checks of a decoded invitation against what this node holds.
static int s_check(node_admin_t *admin, const proto_invite_t *invite, char *err, size_t errlen)
{
    node_state_t *state = node_admin_state(admin);
    node_conn_t old;
    if (strcmp(invite->mode, "basic") != 0) {
        snprintf(err, errlen,
                 "cannot accept invitation: mode '%s' is not supported by this release",
                 invite->mode);
        return -1;
    }
    if (node_state_conn_get(state, invite->conn, &old) == 0) {
        snprintf(err, errlen,
                 "cannot accept invitation: connection %s was accepted already (it is %s)",
                 old.name, node_conn_status_name(old.status));
        return -1;
    }
    if (node_state_conn_get(state, invite->name, &old) == 0) {
        snprintf(err, errlen, "cannot accept invitation: a connection named %s exists already",
                 invite->name);
        return -1;
    }
    return 0;
}

int private_accept(node_admin_t *admin, const char *code, const char *trigger, long wait_ms,
                   private_acceptance_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (trigger && !node_admin_trigger_ok(trigger)) {
        snprintf(err, errlen, "--trigger must be one line of encoded query (at most %d bytes)",
                 NODE_TEXT_MAX);
        return -1;
    }
    proto_invite_t invite;
    proto_error_t perr;
    if (proto_invite_decode(code, (uint64_t)time(NULL), &invite, &perr) != PROTO_OK) {
        snprintf(err, errlen, "%s", proto_error_str(&perr));
        return -1;
    }
    if (s_check(admin, &invite, err, errlen)) {
        proto_invite_clear(&invite);
        return -1;
    }
    const node_config_t *cfg = node_admin_config(admin);
    node_conn_t *conn = &out->conn;
    snprintf(conn->id, sizeof conn->id, "%s", invite.conn);
    snprintf(conn->name, sizeof conn->name, "%s", invite.name);
    snprintf(conn->mode, sizeof conn->mode, "%s", invite.mode);
    //  The public side's URL stays here (the code carried it by hand); the
    //  broker only ever hears node names.
    snprintf(conn->peer_url, sizeof conn->peer_url, "%s", invite.instance_url);
    snprintf(conn->peer_description, sizeof conn->peer_description, "%s", invite.node_name);
    //  From the code as received, before a configured endpoint replaces its
    //  own: what the public admin reads out is what the code said.
    proto_invite_fingerprint(&invite, conn->fingerprint);
    //  A configured endpoint wins: the private network may reach the broker
    //  by another address than the one the public side advertises.
    snprintf(conn->broker_endpoint, sizeof conn->broker_endpoint, "%s",
             *cfg->endpoint ? cfg->endpoint : invite.endpoint);
    snprintf(conn->trigger, sizeof conn->trigger, "%s", trigger ? trigger : "");
    zmq_z85_encode(conn->broker_key, invite.broker_key, PROTO_KEY_SIZE);
    conn->role = PROTO_ROLE_PRIVATE;
    conn->status = NODE_CONN_JOINING;
    conn->expires = (int64_t)invite.expires;
    node_keys_t keys = {.has_root = true, .has_token = true, .has_join = true};
    memcpy(keys.join_token, invite.join_token, PROTO_KEY_SIZE);
    proto_status_t prc = proto_kx_accept(&invite, keys.join_kx, keys.join_auth, keys.root);
    proto_invite_clear(&invite);
    if (prc != PROTO_OK) {
        node_keys_wipe(&keys);
        snprintf(err, errlen, "cannot accept invitation: the key exchange failed (%s)",
                 proto_status_str(prc));
        return -1;
    }
    int rc = node_keys_write(cfg->state_dir, conn->id, &keys, err, errlen);
    node_keys_wipe(&keys);
    if (rc)
        return -1;
    node_state_t *state = node_admin_state(admin);
    if (node_state_conn_insert(state, conn)) {
        snprintf(err, errlen, "%s", node_state_error(state));
        node_keys_remove(cfg->state_dir, conn->id);
        return -1;
    }
    node_admin_wait_conn(admin, conn, NODE_CONN_JOINING, false, wait_ms);
    if (conn->status == NODE_CONN_ERROR) {
        //  Refused by the broker (reused, expired, wrong token): undo, so
        //  that a good code can be accepted later.
        snprintf(err, errlen, "cannot accept invitation: %s", conn->error_text);
        node_state_conn_delete(state, conn->id);
        node_keys_remove(cfg->state_dir, conn->id);
        return -1;
    }
    out->active = conn->status == NODE_CONN_ACTIVE;
    out->daemon_running = out->active || node_admin_daemon_running(admin);
    return 0;
}
