/*  node_keys.c: connection key files (see node_keys.h). Reading goes
    through ts_secret_read, which refuses a file others can read; writing
    through ts_file_write_private (atomic, 0600). Every buffer that held a
    key is wiped before it is left.
*/
#include "node_keys.h"

#include <errno.h>
#include <stddef.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "proto_kx.h"
#include "ts_secret.h"

//  Creates STATE_DIR and STATE_DIR/keys (0700) when missing. Returns 0 or -1
//  with a reason in err.
static int s_keys_dir(const char *state_dir, char *err, size_t errlen)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/keys", state_dir);
    if (mkdir(state_dir, 0700) && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", state_dir, strerror(errno));
        return -1;
    }
    if (mkdir(dir, 0700) && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

static void s_path(const char *state_dir, const char *conn, char *path, size_t size)
{
    snprintf(path, size, "%s/keys/%s.secret", state_dir, conn);
}

//  The lines of a key file: name and where its value lives. secret= is
//  read only (the root of a connection joined before the key exchange).
typedef struct {
    const char *name; //  Before the '='
    size_t value;     //  Offset of the 32 bytes in node_keys_t
    size_t flag;      //  Offset of the has_ flag in node_keys_t
} s_line_t;

static const s_line_t s_lines[] = {
    {"root", offsetof(node_keys_t, root), offsetof(node_keys_t, has_root)},
    {"invite", offsetof(node_keys_t, invite_secret), offsetof(node_keys_t, has_invite)},
    {"token", offsetof(node_keys_t, join_token), offsetof(node_keys_t, has_token)},
    {"kx", offsetof(node_keys_t, kx_secret), offsetof(node_keys_t, has_kx)},
    {"join_kx", offsetof(node_keys_t, join_kx), offsetof(node_keys_t, has_join)},
    {"join_auth", offsetof(node_keys_t, join_auth), offsetof(node_keys_t, has_join)},
    {"secret", offsetof(node_keys_t, root), offsetof(node_keys_t, has_root)},
};
#define S_WRITTEN_LINES 6 //  The first six; secret= is never written

int node_keys_write(const char *state_dir, const char *conn, const node_keys_t *keys, char *err,
                    size_t errlen)
{
    if (s_keys_dir(state_dir, err, errlen))
        return -1;
    char text[S_WRITTEN_LINES * (12 + 2 * PROTO_KEY_SIZE)];
    size_t size = 0;
    for (size_t i = 0; i < S_WRITTEN_LINES; i++) {
        const s_line_t *line = &s_lines[i];
        if (!*(const bool *)((const char *)keys + line->flag))
            continue;
        char hex[2 * PROTO_KEY_SIZE + 1];
        ts_hex_encode((const uint8_t *)keys + line->value, PROTO_KEY_SIZE, hex);
        size += (size_t)snprintf(text + size, sizeof text - size, "%s=%s\n", line->name, hex);
        OPENSSL_cleanse(hex, sizeof hex);
    }
    char path[4200];
    s_path(state_dir, conn, path, sizeof path);
    int rc = ts_file_write_private(path, text, size, err, errlen);
    OPENSSL_cleanse(text, sizeof text);
    return rc;
}

//  Reads "name=<hex>" lines of text into keys. Returns 0, or -1 for an
//  unknown or malformed line, half a JOIN (join_kx without join_auth), or
//  a file with nothing in it.
static int s_parse(char *text, node_keys_t *out)
{
    bool any = false, kx = false, auth = false;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        size_t len = strlen(line);
        if (!len)
            continue;
        const s_line_t *known = NULL;
        for (size_t i = 0; !known && i < sizeof s_lines / sizeof s_lines[0]; i++) {
            size_t name_len = strlen(s_lines[i].name);
            if (len > name_len && !strncmp(line, s_lines[i].name, name_len) &&
                line[name_len] == '=')
                known = &s_lines[i];
        }
        if (!known)
            return -1;
        size_t name_len = strlen(known->name) + 1;
        if (ts_hex_decode(line + name_len, len - name_len, (uint8_t *)out + known->value,
                          PROTO_KEY_SIZE))
            return -1;
        *(bool *)((char *)out + known->flag) = true;
        kx |= known->value == offsetof(node_keys_t, join_kx);
        auth |= known->value == offsetof(node_keys_t, join_auth);
        any = true;
    }
    return any && kx == auth ? 0 : -1;
}

int node_keys_read(const char *state_dir, const char *conn, node_keys_t *out, char *err,
                   size_t errlen)
{
    memset(out, 0, sizeof *out);
    char path[4200];
    s_path(state_dir, conn, path, sizeof path);
    if (access(path, F_OK) != 0 && errno == ENOENT)
        return 1;
    char *text = ts_secret_read(path, err, errlen);
    if (!text)
        return -1;
    int rc = s_parse(text, out);
    ts_secret_free(&text);
    if (rc) {
        node_keys_wipe(out);
        snprintf(err, errlen,
                 "key file %s is damaged (expected lines name=<64 hex digits>, name one of "
                 "root, invite, token, kx, join_kx, join_auth)",
                 path);
    }
    return rc;
}

//  Writes conn's key file with root alone. Returns 0 or -1 with err.
static int s_write_root(const char *state_dir, const char *conn, const uint8_t root[PROTO_KEY_SIZE],
                        char *err, size_t errlen)
{
    node_keys_t only = {.has_root = true};
    memcpy(only.root, root, PROTO_KEY_SIZE);
    int rc = node_keys_write(state_dir, conn, &only, err, errlen);
    node_keys_wipe(&only);
    return rc;
}

int node_keys_join_public(const char *state_dir, const char *conn,
                          const uint8_t broker_key[PROTO_KEY_SIZE],
                          const uint8_t kx[PROTO_KEY_SIZE], const uint8_t auth[PROTO_KEY_SIZE],
                          char *err, size_t errlen)
{
    node_keys_t keys;
    int rc = node_keys_read(state_dir, conn, &keys, err, errlen);
    if (rc == 1)
        snprintf(err, errlen, "no key file for connection %s", conn);
    if (rc)
        return -1;
    if (keys.has_root && !keys.has_kx) {
        node_keys_wipe(&keys);
        return 0; //  Done before: the file was rewritten, the database not yet
    }
    if (!keys.has_invite || !keys.has_kx) {
        node_keys_wipe(&keys);
        snprintf(err, errlen,
                 "the key file of %s holds no key exchange (initiated by a twinsync older than "
                 "1.2?): delete the connection and initiate a new one",
                 conn);
        return 1;
    }
    proto_kx_transcript_t t = {.conn = conn};
    memcpy(t.private_kx, kx, PROTO_KEY_SIZE);
    memcpy(t.broker_key, broker_key, PROTO_KEY_SIZE);
    uint8_t root[PROTO_KEY_SIZE];
    proto_status_t prc = proto_kx_public_key(keys.kx_secret, t.public_kx);
    if (prc == PROTO_OK)
        prc = proto_kx_finish(&t, keys.kx_secret, keys.invite_secret, auth, root);
    node_keys_wipe(&keys);
    if (prc == PROTO_E_JOIN_AUTH) {
        snprintf(err, errlen,
                 "the partner's join is not authenticated by this connection's invitation "
                 "secret (the code was altered on its way, or someone else used its join "
                 "token): compare the fingerprints, delete the connection and initiate a new "
                 "one");
        return 1;
    }
    if (prc != PROTO_OK) {
        snprintf(err, errlen, "cannot derive the connection's root: %s", proto_status_str(prc));
        return 1;
    }
    rc = s_write_root(state_dir, conn, root, err, errlen);
    OPENSSL_cleanse(root, sizeof root);
    return rc;
}

int node_keys_forget_join(const char *state_dir, const char *conn, char *err, size_t errlen)
{
    node_keys_t keys;
    int rc = node_keys_read(state_dir, conn, &keys, err, errlen);
    if (rc == 1)
        snprintf(err, errlen, "no key file for connection %s", conn);
    if (rc == 0 && !keys.has_root) {
        snprintf(err, errlen, "the key file of %s holds no root", conn);
        rc = -1;
    }
    if (rc == 0 && (keys.has_invite || keys.has_token || keys.has_kx || keys.has_join))
        rc = s_write_root(state_dir, conn, keys.root, err, errlen);
    node_keys_wipe(&keys);
    return rc ? -1 : 0;
}

int node_keys_remove(const char *state_dir, const char *conn)
{
    char path[4200];
    s_path(state_dir, conn, path, sizeof path);
    return unlink(path) == 0 || errno == ENOENT ? 0 : -1;
}

//  Parses "public=Z85\nsecret=Z85\n" into raw keys. Returns 0 or -1.
static int s_parse_pair(char *text, uint8_t *public_key, uint8_t *secret_key, char *public_z85)
{
    int found = 0;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        bool is_public = !strncmp(line, "public=", 7), is_secret = !strncmp(line, "secret=", 7);
        if ((!is_public && !is_secret) || strlen(line + 7) != 40)
            return -1;
        if (!zmq_z85_decode(is_public ? public_key : secret_key, line + 7))
            return -1;
        if (is_public && public_z85)
            memcpy(public_z85, line + 7, 41);
        found |= is_public ? 1 : 2;
    }
    return found == 3 ? 0 : -1;
}

int node_keys_node_pair(const char *state_dir, uint8_t public_key[PROTO_KEY_SIZE],
                        uint8_t secret_key[PROTO_KEY_SIZE], char *public_z85, char *err,
                        size_t errlen)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/keys/node.key", state_dir);
    if (access(path, F_OK) == 0) {
        char *text = ts_secret_read(path, err, errlen);
        if (!text)
            return -1;
        int rc = s_parse_pair(text, public_key, secret_key, public_z85);
        ts_secret_free(&text);
        if (rc)
            snprintf(err, errlen, "key file %s is damaged (expected public= and secret= lines)",
                     path);
        return rc;
    }
    char pub[41], sec[41], text[128];
    if (s_keys_dir(state_dir, err, errlen))
        return -1;
    if (zmq_curve_keypair(pub, sec)) {
        snprintf(err, errlen, "cannot make a CURVE key pair: %s", zmq_strerror(zmq_errno()));
        return -1;
    }
    int size = snprintf(text, sizeof text, "public=%s\nsecret=%s\n", pub, sec);
    int rc = ts_file_write_private(path, text, (size_t)size, err, errlen);
    if (rc == 0)
        rc = s_parse_pair(text, public_key, secret_key, public_z85);
    OPENSSL_cleanse(text, sizeof text);
    OPENSSL_cleanse(sec, sizeof sec);
    return rc;
}

void node_keys_wipe(node_keys_t *keys)
{
    OPENSSL_cleanse(keys, sizeof *keys);
}
