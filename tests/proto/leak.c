/*  leak.c: the roots someone could try with a leaked invitation code (see
    leak.h).
*/
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "leak.h"

//  HKDF-SHA256 with one block of output, written out with HMAC (RFC 5869):
//  prk = HMAC(salt, ikm); okm = HMAC(prk, info || 0x01).
static void s_hkdf(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt, size_t salt_len,
                   const uint8_t *info, size_t info_len, uint8_t out[PROTO_KEY_SIZE])
{
    uint8_t prk[32], block[512];
    unsigned int len = 0;
    HMAC(EVP_sha256(), salt, (int)salt_len, ikm, ikm_len, prk, &len);
    memcpy(block, info, info_len);
    block[info_len] = 1;
    HMAC(EVP_sha256(), prk, 32, block, info_len + 1, out, &len);
}

//  The documented transcript, as the attacker can build it.
static size_t s_transcript(const proto_invite_t *inv, const uint8_t *private_kx, uint8_t *out)
{
    static const uint8_t zero[PROTO_KEY_SIZE];
    size_t n = strlen(PROTO_KX_JOIN_LABEL), conn_len = strlen(inv->conn);
    memcpy(out, PROTO_KX_JOIN_LABEL, n);
    out[n++] = (uint8_t)conn_len;
    memcpy(out + n, inv->conn, conn_len);
    n += conn_len;
    memcpy(out + n, inv->kx, PROTO_KEY_SIZE);
    memcpy(out + n + 32, private_kx ? private_kx : zero, PROTO_KEY_SIZE);
    memcpy(out + n + 64, inv->broker_key, PROTO_KEY_SIZE);
    return n + 96;
}

static void s_add(leak_candidate_t *out, size_t *count, const char *how, const uint8_t *root)
{
    if (*count >= LEAK_MAX)
        return;
    snprintf(out[*count].how, sizeof out[*count].how, "%s", how);
    memcpy(out[*count].root, root, PROTO_KEY_SIZE);
    (*count)++;
}

size_t leak_candidates(const proto_invite_t *inv, const uint8_t *private_kx, const uint8_t *auth,
                       leak_candidate_t *out)
{
    static const uint8_t zero[PROTO_KEY_SIZE];
    struct {
        const char *name;
        const uint8_t *bytes;
    } known[] = {
        {"code secret", inv->secret},
        {"code join token", inv->join_token},
        {"code kx", inv->kx},
        {"code broker key", inv->broker_key},
        {"JOIN kx", private_kx},
        {"JOIN auth", auth},
        {"zeros", zero},
    };
    size_t count = 0;
    char how[96];
    uint8_t root[PROTO_KEY_SIZE], info[512];
    size_t label_len = strlen(PROTO_KX_ROOT_LABEL);
    memcpy(info, PROTO_KX_ROOT_LABEL, label_len);
    size_t info_len = label_len + s_transcript(inv, private_kx, info + label_len);
    s_add(out, &count, "code secret used as the root (before the key exchange)", inv->secret);
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (!known[i].bytes)
            continue;
        snprintf(how, sizeof how, "%s as the root", known[i].name);
        s_add(out, &count, how, known[i].bytes);
        SHA256(known[i].bytes, PROTO_KEY_SIZE, root);
        snprintf(how, sizeof how, "SHA-256 of %s", known[i].name);
        s_add(out, &count, how, root);
        //  The documented derivation with a value the attacker has in place
        //  of the X25519 shared secret.
        s_hkdf(known[i].bytes, PROTO_KEY_SIZE, inv->secret, PROTO_KEY_SIZE, info, info_len, root);
        snprintf(how, sizeof how, "root derivation with %s as the shared secret", known[i].name);
        s_add(out, &count, how, root);
        s_hkdf(known[i].bytes, PROTO_KEY_SIZE, (const uint8_t *)inv->conn, strlen(inv->conn),
               (const uint8_t *)PROTO_KX_ROOT_LABEL, label_len, root);
        snprintf(how, sizeof how, "HKDF of %s, salt conn", known[i].name);
        s_add(out, &count, how, root);
    }
    //  X25519 with code bytes misused as a private scalar, against both
    //  public keys, through the documented derivation.
    proto_kx_transcript_t t = {.conn = inv->conn};
    memcpy(t.public_kx, inv->kx, PROTO_KEY_SIZE);
    memcpy(t.private_kx, private_kx ? private_kx : zero, PROTO_KEY_SIZE);
    memcpy(t.broker_key, inv->broker_key, PROTO_KEY_SIZE);
    const uint8_t *scalars[] = {inv->secret, inv->join_token, auth};
    const char *scalar_names[] = {"code secret", "code join token", "JOIN auth"};
    const uint8_t *peers[] = {inv->kx, private_kx};
    const char *peer_names[] = {"code kx", "JOIN kx"};
    for (size_t i = 0; i < 3; i++) {
        for (size_t j = 0; j < 2; j++) {
            if (!scalars[i] || !peers[j] ||
                proto_kx_root(scalars[i], peers[j], inv->secret, &t, root) != PROTO_OK)
                continue;
            snprintf(how, sizeof how, "X25519(%s, %s) through the root derivation", scalar_names[i],
                     peer_names[j]);
            s_add(out, &count, how, root);
        }
    }
    return count;
}
