/*  node_rekey.c: key generations file and the X25519 exchange of a rekey
    (see node_rekey.h). The file is read through ts_secret_read, which
    refuses a file others can read, and written with ts_file_write_private.
*/
#include "node_rekey.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "proto_kx.h"
#include "ts_secret.h"

static void s_path(const char *state_dir, const char *conn, char *path, size_t size)
{
    snprintf(path, size, "%s/keys/%s.gens", state_dir, conn);
}

//  Parses "G:<64 hex digits>" into *generation and key. Returns 0 or -1.
static int s_parse_keyed(const char *text, uint32_t *generation, uint8_t key[PROTO_KEY_SIZE])
{
    char *end = NULL;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno || end == text || *end != ':' || value > UINT32_MAX ||
        ts_hex_decode(end + 1, strlen(end + 1), key, PROTO_KEY_SIZE))
        return -1;
    *generation = (uint32_t)value;
    return 0;
}

//  Parses a whole number line value. Returns 0 or -1.
static int s_parse_number(const char *text, int64_t max, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (errno || end == text || *end || value < 0 || value > max)
        return -1;
    *out = value;
    return 0;
}

//  Reads the lines of text into *out. Returns 0 or -1.
static int s_parse(char *text, node_rekey_gens_t *out)
{
    bool has_current = false;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        int64_t number = 0;
        int rc = 0;
        if (!strncmp(line, "current=", 8)) {
            rc = s_parse_number(line + 8, UINT32_MAX, &number);
            out->current = (uint32_t)number;
            has_current = true;
        } else if (!strncmp(line, "root=", 5)) {
            if (out->count == 2)
                return -1;
            node_rekey_root_t *root = &out->roots[out->count++];
            rc = s_parse_keyed(line + 5, &root->generation, root->root);
        } else if (!strncmp(line, "pending=", 8)) {
            rc = s_parse_keyed(line + 8, &out->pending, out->pending_key);
        } else if (!strncmp(line, "answered=", 9)) {
            rc = s_parse_keyed(line + 9, &out->answered, out->answered_kx);
        } else if (!strncmp(line, "rotated_at=", 11)) {
            rc = s_parse_number(line + 11, INT64_MAX, &out->rotated_at);
        } else if (*line) {
            return -1;
        }
        if (rc)
            return -1;
    }
    //  The current generation's root comes first
    if (!has_current || out->count == 0 || out->roots[0].generation != out->current)
        return -1;
    return 0;
}

int node_rekey_read(const char *state_dir, const char *conn, node_rekey_gens_t *out, char *err,
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
        node_rekey_wipe(out);
        snprintf(err, errlen, "key generations file %s is damaged", path);
    }
    return rc;
}

int node_rekey_write(const char *state_dir, const char *conn, const node_rekey_gens_t *gens,
                     char *err, size_t errlen)
{
    char text[1024], hex[2 * PROTO_KEY_SIZE + 1];
    size_t n = (size_t)snprintf(text, sizeof text, "current=%" PRIu32 "\n", gens->current);
    for (size_t i = 0; i < gens->count; i++) {
        ts_hex_encode(gens->roots[i].root, PROTO_KEY_SIZE, hex);
        n += (size_t)snprintf(text + n, sizeof text - n, "root=%" PRIu32 ":%s\n",
                              gens->roots[i].generation, hex);
    }
    if (gens->pending) {
        ts_hex_encode(gens->pending_key, PROTO_KEY_SIZE, hex);
        n += (size_t)snprintf(text + n, sizeof text - n, "pending=%" PRIu32 ":%s\n", gens->pending,
                              hex);
    }
    if (gens->answered) {
        ts_hex_encode(gens->answered_kx, PROTO_KEY_SIZE, hex);
        n += (size_t)snprintf(text + n, sizeof text - n, "answered=%" PRIu32 ":%s\n",
                              gens->answered, hex);
    }
    n += (size_t)snprintf(text + n, sizeof text - n, "rotated_at=%" PRId64 "\n", gens->rotated_at);
    char path[4200];
    s_path(state_dir, conn, path, sizeof path);
    int rc = ts_file_write_private(path, text, n, err, errlen);
    OPENSSL_cleanse(text, sizeof text);
    OPENSSL_cleanse(hex, sizeof hex);
    return rc;
}

int node_rekey_remove(const char *state_dir, const char *conn)
{
    char path[4200];
    s_path(state_dir, conn, path, sizeof path);
    return unlink(path) == 0 || errno == ENOENT ? 0 : -1;
}

void node_rekey_wipe(node_rekey_gens_t *gens)
{
    OPENSSL_cleanse(gens, sizeof *gens);
}

int node_rekey_root(const uint8_t secret[PROTO_KEY_SIZE], const uint8_t peer[PROTO_KEY_SIZE],
                    const uint8_t previous[PROTO_KEY_SIZE], const char *conn, uint32_t generation,
                    const uint8_t kx_rekey[PROTO_KEY_SIZE], const uint8_t kx_ack[PROTO_KEY_SIZE],
                    uint8_t root[PROTO_KEY_SIZE])
{
    uint8_t info[256];
    static const char label[] = "twinsync rekey v1";
    size_t conn_len = strlen(conn), n = 0;
    if (conn_len > PROTO_MAX_ID)
        return -1;
    memcpy(info + n, label, sizeof label - 1);
    n += sizeof label - 1;
    memcpy(info + n, conn, conn_len);
    n += conn_len;
    for (int i = 3; i >= 0; i--)
        info[n++] = (uint8_t)(generation >> (8 * i));
    memcpy(info + n, kx_rekey, PROTO_KEY_SIZE);
    n += PROTO_KEY_SIZE;
    memcpy(info + n, kx_ack, PROTO_KEY_SIZE);
    n += PROTO_KEY_SIZE;
    return proto_kx_derive(secret, peer, previous, info, n, root) == PROTO_OK ? 0 : -1;
}

void node_rekey_advance(node_rekey_gens_t *gens, uint32_t generation,
                        const uint8_t root[PROTO_KEY_SIZE], int64_t now)
{
    gens->roots[1] = gens->roots[0];
    gens->roots[0].generation = generation;
    memcpy(gens->roots[0].root, root, PROTO_KEY_SIZE);
    gens->count = 2;
    gens->current = generation;
    gens->rotated_at = now;
    if (gens->pending <= generation) {
        gens->pending = 0;
        OPENSSL_cleanse(gens->pending_key, sizeof gens->pending_key);
    }
}

bool node_rekey_drop_previous(node_rekey_gens_t *gens)
{
    if (gens->count < 2)
        return false;
    OPENSSL_cleanse(&gens->roots[1], sizeof gens->roots[1]);
    gens->count = 1;
    gens->answered = 0;
    memset(gens->answered_kx, 0, sizeof gens->answered_kx);
    return true;
}
