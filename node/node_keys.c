/*  node_keys.c: connection key files (see node_keys.h). Reading goes
    through ts_secret_read, which refuses a file others can read.
*/
#include "node_keys.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

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

static void s_hex(const uint8_t *data, size_t size, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < size; i++) {
        out[2 * i] = digits[data[i] >> 4];
        out[2 * i + 1] = digits[data[i] & 15];
    }
    out[2 * size] = 0;
}

//  Parses exactly 2 * size hex digits. Returns 0 or -1.
static int s_unhex(const char *text, size_t len, uint8_t *out, size_t size)
{
    if (len != 2 * size)
        return -1;
    for (size_t i = 0; i < 2 * size; i++) {
        char c = text[i];
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0)
            return -1;
        out[i / 2] = (uint8_t)(i % 2 ? (out[i / 2] | v) : v << 4);
    }
    return 0;
}

int node_keys_write(const char *state_dir, const char *conn, const node_keys_t *keys, char *err,
                    size_t errlen)
{
    if (s_keys_dir(state_dir, err, errlen))
        return -1;
    char secret[2 * PROTO_KEY_SIZE + 1], token[2 * PROTO_KEY_SIZE + 1] = "";
    s_hex(keys->secret, PROTO_KEY_SIZE, secret);
    if (keys->has_token)
        s_hex(keys->join_token, PROTO_KEY_SIZE, token);
    char text[256];
    int size = snprintf(text, sizeof text, "secret=%s\n%s%s%s", secret, *token ? "token=" : "",
                        token, *token ? "\n" : "");
    char path[4200];
    s_path(state_dir, conn, path, sizeof path);
    int rc = ts_file_write_private(path, text, (size_t)size, err, errlen);
    OPENSSL_cleanse(text, sizeof text);
    OPENSSL_cleanse(secret, sizeof secret);
    OPENSSL_cleanse(token, sizeof token);
    return rc;
}

//  Reads "name=<hex>" lines of text into keys.
static int s_parse(char *text, node_keys_t *out)
{
    bool has_secret = false;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        size_t len = strlen(line);
        if (!strncmp(line, "secret=", 7)) {
            if (s_unhex(line + 7, len - 7, out->secret, PROTO_KEY_SIZE))
                return -1;
            has_secret = true;
        } else if (!strncmp(line, "token=", 6)) {
            if (s_unhex(line + 6, len - 6, out->join_token, PROTO_KEY_SIZE))
                return -1;
            out->has_token = true;
        } else if (len) {
            return -1;
        }
    }
    return has_secret ? 0 : -1;
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
        snprintf(err, errlen, "key file %s is damaged (expected secret=<64 hex digits>)", path);
    }
    return rc;
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
