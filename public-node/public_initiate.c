/*  public_initiate.c: initiating a connection and its invitation code (see
    public_initiate.h).
*/
#include "public_initiate.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "node_keys.h"
#include "proto_invite.h"

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

int public_invitation_code(node_admin_t *admin, const node_conn_t *conn, proto_buf_t *code,
                           char *err, size_t errlen)
{
    const node_config_t *cfg = node_admin_config(admin);
    if (conn->role != PROTO_ROLE_PUBLIC || conn->status != NODE_CONN_PENDING) {
        snprintf(err, errlen,
                 "connection %s is %s: only a pending connection of the public node "
                 "has a code",
                 conn->name, node_conn_status_name(conn->status));
        return -1;
    }
    node_keys_t keys;
    char reason[512] = "";
    if (node_keys_read(cfg->state_dir, conn->id, &keys, reason, sizeof reason) || !keys.has_token) {
        node_keys_wipe(&keys);
        snprintf(err, errlen, "cannot read the key file of %s: %s", conn->name,
                 *reason ? reason : "no join token (already joined?)");
        return -1;
    }
    proto_invite_t invite;
    proto_invite_init(&invite);
    invite.conn = conn->id;
    invite.name = conn->name;
    invite.mode = conn->mode;
    invite.node_name = cfg->name;
    invite.instance_url = cfg->url;
    invite.endpoint = conn->broker_endpoint;
    invite.expires = (uint64_t)conn->expires;
    memcpy(invite.join_token, keys.join_token, PROTO_KEY_SIZE);
    memcpy(invite.secret, keys.secret, PROTO_KEY_SIZE);
    node_keys_wipe(&keys);
    int rc = 0;
    proto_error_t perr;
    memset(&perr, 0, sizeof perr);
    if (!zmq_z85_decode(invite.broker_key, conn->broker_key) ||
        proto_invite_encode(&invite, code, &perr) != PROTO_OK) {
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
    node_keys_t keys = {.has_token = true};
    proto_invite_t secrets;
    proto_invite_init(&secrets);
    if (s_new_id(conn->id, sizeof conn->id) ||
        proto_invite_generate_secrets(&secrets) != PROTO_OK) {
        proto_invite_clear(&secrets);
        snprintf(err, errlen, "cannot draw random bytes");
        return -1;
    }
    memcpy(keys.join_token, secrets.join_token, PROTO_KEY_SIZE);
    memcpy(keys.secret, secrets.secret, PROTO_KEY_SIZE);
    proto_invite_clear(&secrets);
    snprintf(conn->name, sizeof conn->name, "%s", name);
    snprintf(conn->mode, sizeof conn->mode, "basic");
    snprintf(conn->trigger, sizeof conn->trigger, "%s", trigger ? trigger : "");
    snprintf(conn->broker_endpoint, sizeof conn->broker_endpoint, "%s", cfg->endpoint);
    snprintf(conn->broker_key, sizeof conn->broker_key, "%s", cfg->broker_key);
    conn->role = PROTO_ROLE_PUBLIC;
    conn->status = NODE_CONN_PENDING;
    conn->expires = (int64_t)time(NULL) + cfg->invite_ttl_s;
    int rc = node_keys_write(cfg->state_dir, conn->id, &keys, err, errlen);
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
