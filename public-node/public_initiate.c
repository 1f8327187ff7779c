/*  public_initiate.c: initiating a connection, its invitation code and its
    fingerprint (see public_initiate.h).
*/
#include "public_initiate.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "node_keys.h"
#include "proto_invite.h"
#include "proto_kx.h"

//  A new connection id: "c-" and 16 random hex digits.
static int s_new_id(char *id, size_t size)
{
    uint8_t bytes[8];
    if (RAND_bytes(bytes, sizeof bytes) != 1)
        return -1;
    snprintf(id, size, "c-");
    for (size_t i = 0; i < sizeof bytes; i++)
        snprintf(id + 2 + 2 * i, size - 2 - 2 * i, "%02x", bytes[i]);
    return 0;
}

int public_initiate_check(const char *name, const char *mode, const char *trigger, char *err,
                          size_t errlen)
{
    if (!name || !*name) {
        snprintf(err, errlen, "connection initiate needs --name NAME");
        return -1;
    }
    if (strlen(name) > PROTO_MAX_NAME) {
        snprintf(err, errlen, "--name: at most %d bytes", PROTO_MAX_NAME);
        return -1;
    }
    if (mode && strcmp(mode, "basic") != 0) {
        snprintf(err, errlen, "unknown mode '%s': this release syncs in basic mode only", mode);
        return -1;
    }
    if (trigger && !node_admin_trigger_ok(trigger)) {
        snprintf(err, errlen, "--trigger must be one line of encoded query (at most %d bytes)",
                 NODE_TEXT_MAX);
        return -1;
    }
    return 0;
}

//  Fills *invite (proto_invite_init'ed) for conn from the configuration and
//  the pending connection's key file contents: what the code carries and
//  what its fingerprint covers. Strings point into cfg and conn. Returns 0,
//  or -1 with err.
static int s_invite(const node_config_t *cfg, const node_conn_t *conn, const node_keys_t *keys,
                    proto_invite_t *invite, char *err, size_t errlen)
{
    invite->conn = conn->id;
    invite->name = conn->name;
    invite->mode = conn->mode;
    invite->node_name = cfg->name;
    invite->instance_url = cfg->url;
    invite->endpoint = conn->broker_endpoint;
    invite->expires = (uint64_t)conn->expires;
    memcpy(invite->join_token, keys->join_token, PROTO_KEY_SIZE);
    memcpy(invite->secret, keys->invite_secret, PROTO_KEY_SIZE);
    if (strlen(conn->broker_key) != 40 || !zmq_z85_decode(invite->broker_key, conn->broker_key)) {
        snprintf(err, errlen, "the broker key of connection %s is not 40 Z85 characters",
                 conn->name);
        return -1;
    }
    if (proto_kx_public_key(keys->kx_secret, invite->kx) != PROTO_OK) {
        snprintf(err, errlen, "cannot compute the X25519 public key of connection %s", conn->name);
        return -1;
    }
    return 0;
}

int public_invitation_code(node_admin_t *admin, const node_conn_t *conn, proto_buf_t *code,
                           char *err, size_t errlen)
{
    const node_config_t *cfg = node_admin_config(admin);
    if (conn->role != PROTO_ROLE_PUBLIC) {
        snprintf(err, errlen,
                 "connection %s was accepted here: only the public node that initiated it had "
                 "a code",
                 conn->name);
        return -1;
    }
    if (conn->status != NODE_CONN_PENDING) {
        snprintf(err, errlen,
                 "connection %s is %s: an invitation code exists only while the connection is "
                 "pending (the join wiped its secrets)",
                 conn->name, node_conn_status_name(conn->status));
        return -1;
    }
    node_keys_t keys;
    char reason[512] = "";
    if (node_keys_read(cfg->state_dir, conn->id, &keys, reason, sizeof reason) || !keys.has_token ||
        !keys.has_invite || !keys.has_kx) {
        node_keys_wipe(&keys);
        snprintf(err, errlen, "cannot read the key file of %s: %s", conn->name,
                 *reason ? reason
                         : "no invitation secret, token or X25519 key (initiated by a twinsync "
                           "older than 1.2, or already joined?)");
        return -1;
    }
    proto_invite_t invite;
    proto_invite_init(&invite);
    int rc = s_invite(cfg, conn, &keys, &invite, err, errlen);
    node_keys_wipe(&keys);
    proto_error_t perr;
    memset(&perr, 0, sizeof perr);
    if (rc == 0 && proto_invite_encode(&invite, code, &perr) != PROTO_OK) {
        snprintf(err, errlen, "cannot build the invitation code: %s", proto_error_str(&perr));
        rc = -1;
    }
    proto_invite_clear(&invite);
    return rc;
}

int public_initiate(node_admin_t *admin, const char *name, const char *mode, const char *trigger,
                    long wait_ms, public_invitation_t *out, char *err, size_t errlen)
{
    const node_config_t *cfg = node_admin_config(admin);
    memset(out, 0, sizeof *out);
    proto_buf_init(&out->code);
    if (public_initiate_check(name, mode, trigger, err, errlen) ||
        node_config_check_run(cfg, err, errlen))
        return -1;
    node_conn_t *conn = &out->conn;
    node_keys_t keys = {.has_invite = true, .has_token = true, .has_kx = true};
    proto_invite_t invite;
    proto_invite_init(&invite);
    uint8_t kx_public[PROTO_KEY_SIZE];
    if (s_new_id(conn->id, sizeof conn->id) || proto_invite_generate_secrets(&invite) != PROTO_OK ||
        proto_kx_keypair(keys.kx_secret, kx_public) != PROTO_OK) {
        proto_invite_clear(&invite);
        node_keys_wipe(&keys);
        snprintf(err, errlen, "cannot draw random bytes");
        return -1;
    }
    memcpy(keys.join_token, invite.join_token, PROTO_KEY_SIZE);
    memcpy(keys.invite_secret, invite.secret, PROTO_KEY_SIZE);
    proto_invite_clear(&invite);
    snprintf(conn->name, sizeof conn->name, "%s", name);
    snprintf(conn->mode, sizeof conn->mode, "basic");
    snprintf(conn->trigger, sizeof conn->trigger, "%s", trigger ? trigger : "");
    snprintf(conn->broker_endpoint, sizeof conn->broker_endpoint, "%s", cfg->endpoint);
    snprintf(conn->broker_key, sizeof conn->broker_key, "%s", cfg->broker_key);
    conn->role = PROTO_ROLE_PUBLIC;
    conn->status = NODE_CONN_PENDING;
    conn->expires = (int64_t)time(NULL) + cfg->invite_ttl_s;
    //  The fingerprint the admins compare, from exactly what the code carries.
    int rc = s_invite(cfg, conn, &keys, &invite, err, errlen);
    if (rc == 0)
        proto_invite_fingerprint(&invite, conn->fingerprint);
    proto_invite_clear(&invite);
    if (rc == 0)
        rc = node_keys_write(cfg->state_dir, conn->id, &keys, err, errlen);
    node_keys_wipe(&keys);
    if (rc)
        return -1;
    node_state_t *state = node_admin_state(admin);
    rc = node_state_conn_insert(state, conn);
    if (rc) {
        node_keys_remove(cfg->state_dir, conn->id);
        if (rc == 1)
            snprintf(err, errlen, "a connection named %s exists already", conn->name);
        else
            snprintf(err, errlen, "%s", node_state_error(state));
        return -1;
    }
    node_admin_wait_conn(admin, conn, NODE_CONN_PENDING, true, wait_ms);
    if (conn->status == NODE_CONN_ERROR) {
        snprintf(err, errlen, "connection %s: %s", conn->name, conn->error_text);
        return -1;
    }
    return public_invitation_code(admin, conn, &out->code, err, errlen);
}

void public_invitation_clear(public_invitation_t *invitation)
{
    proto_buf_wipe(&invitation->code);
}
