/*  proto_kx.c: the join's key exchange with X25519, HMAC-SHA256 and
    HKDF-SHA256 (see proto_kx.h for the construction; docs/protocol.md §8.3).

    Every buffer that held a private scalar, the shared secret or the root
    on a failure path is wiped with OPENSSL_cleanse before it is left.
*/
#include <stdbool.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include "proto_kx.h"

#define S_LABEL_LEN (sizeof(PROTO_KX_JOIN_LABEL) - 1)
//  Longest transcript: label, length byte, the longest id, three keys.
#define S_TRANSCRIPT_MAX (S_LABEL_LEN + 1 + PROTO_MAX_ID + 3 * PROTO_KEY_SIZE)
#define S_INFO_MAX       (sizeof(PROTO_KX_ROOT_LABEL) - 1 + S_TRANSCRIPT_MAX)

//  Writes the transcript of t into out (S_TRANSCRIPT_MAX bytes of room).
//  Returns its length, or 0 when t->conn is not a connection id.
static size_t s_transcript(const proto_kx_transcript_t *t, uint8_t *out)
{
    static const char id_chars[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-";
    size_t conn_len = t->conn ? strlen(t->conn) : 0;
    if (conn_len == 0 || conn_len > PROTO_MAX_ID || strspn(t->conn, id_chars) != conn_len)
        return 0;
    size_t at = 0;
    memcpy(out, PROTO_KX_JOIN_LABEL, S_LABEL_LEN);
    at += S_LABEL_LEN;
    out[at++] = (uint8_t)conn_len;
    memcpy(out + at, t->conn, conn_len);
    at += conn_len;
    memcpy(out + at, t->public_kx, PROTO_KEY_SIZE);
    at += PROTO_KEY_SIZE;
    memcpy(out + at, t->private_kx, PROTO_KEY_SIZE);
    at += PROTO_KEY_SIZE;
    memcpy(out + at, t->broker_key, PROTO_KEY_SIZE);
    return at + PROTO_KEY_SIZE;
}

proto_status_t proto_kx_keypair(uint8_t secret_key[PROTO_KEY_SIZE],
                                uint8_t public_key[PROTO_KEY_SIZE])
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_X25519, NULL);
    EVP_PKEY *pkey = NULL;
    size_t secret_len = PROTO_KEY_SIZE, public_len = PROTO_KEY_SIZE;
    bool ok = ctx && EVP_PKEY_keygen_init(ctx) == 1 && EVP_PKEY_keygen(ctx, &pkey) == 1 &&
              EVP_PKEY_get_raw_private_key(pkey, secret_key, &secret_len) == 1 &&
              EVP_PKEY_get_raw_public_key(pkey, public_key, &public_len) == 1 &&
              secret_len == PROTO_KEY_SIZE && public_len == PROTO_KEY_SIZE;
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(ctx);
    if (ok)
        return PROTO_OK;
    OPENSSL_cleanse(secret_key, PROTO_KEY_SIZE);
    memset(public_key, 0, PROTO_KEY_SIZE);
    return PROTO_E_CRYPTO;
}

proto_status_t proto_kx_public_key(const uint8_t secret_key[PROTO_KEY_SIZE],
                                   uint8_t public_key[PROTO_KEY_SIZE])
{
    EVP_PKEY *pkey =
        EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, secret_key, PROTO_KEY_SIZE);
    size_t len = PROTO_KEY_SIZE;
    bool ok =
        pkey && EVP_PKEY_get_raw_public_key(pkey, public_key, &len) == 1 && len == PROTO_KEY_SIZE;
    EVP_PKEY_free(pkey);
    if (!ok)
        memset(public_key, 0, PROTO_KEY_SIZE);
    return ok ? PROTO_OK : PROTO_E_CRYPTO;
}

proto_status_t proto_kx_auth(const uint8_t invite_secret[PROTO_KEY_SIZE],
                             const proto_kx_transcript_t *t, uint8_t auth[PROTO_KEY_SIZE])
{
    uint8_t transcript[S_TRANSCRIPT_MAX];
    size_t len = s_transcript(t, transcript);
    if (len == 0)
        return PROTO_E_VALUE;
    unsigned int out_len = 0;
    if (!HMAC(EVP_sha256(), invite_secret, PROTO_KEY_SIZE, transcript, len, auth, &out_len) ||
        out_len != PROTO_KEY_SIZE) {
        OPENSSL_cleanse(auth, PROTO_KEY_SIZE);
        return PROTO_E_CRYPTO;
    }
    return PROTO_OK;
}

//  shared = X25519(my_secret, peer_public). Returns 0, or -1 (also when
//  OpenSSL refuses a peer key that makes the result all zeros).
static int s_x25519(const uint8_t my_secret[PROTO_KEY_SIZE],
                    const uint8_t peer_public[PROTO_KEY_SIZE], uint8_t shared[PROTO_KEY_SIZE])
{
    EVP_PKEY *mine = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, my_secret, PROTO_KEY_SIZE);
    EVP_PKEY *peer =
        EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, peer_public, PROTO_KEY_SIZE);
    EVP_PKEY_CTX *ctx = mine ? EVP_PKEY_CTX_new(mine, NULL) : NULL;
    size_t len = PROTO_KEY_SIZE;
    bool ok = ctx && peer && EVP_PKEY_derive_init(ctx) == 1 &&
              EVP_PKEY_derive_set_peer(ctx, peer) == 1 && EVP_PKEY_derive(ctx, shared, &len) == 1 &&
              len == PROTO_KEY_SIZE;
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(peer);
    EVP_PKEY_free(mine);
    if (!ok)
        OPENSSL_cleanse(shared, PROTO_KEY_SIZE);
    return ok ? 0 : -1;
}

int proto_hkdf(const uint8_t ikm[PROTO_KEY_SIZE], const void *salt, size_t salt_len,
               const void *info, size_t info_len, uint8_t out[PROTO_KEY_SIZE])
{
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    if (!kdf)
        return -1;
    EVP_KDF_CTX *ctx = EVP_KDF_CTX_new(kdf);
    EVP_KDF_free(kdf);
    if (!ctx)
        return -1;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, PROTO_KEY_SIZE),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, salt_len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, info_len),
        OSSL_PARAM_construct_end(),
    };
    int rc = EVP_KDF_derive(ctx, out, PROTO_KEY_SIZE, params) == 1 ? 0 : -1;
    EVP_KDF_CTX_free(ctx);
    return rc;
}

proto_status_t proto_kx_derive(const uint8_t my_secret[PROTO_KEY_SIZE],
                               const uint8_t peer_public[PROTO_KEY_SIZE],
                               const uint8_t salt[PROTO_KEY_SIZE], const uint8_t *info,
                               size_t info_len, uint8_t out[PROTO_KEY_SIZE])
{
    uint8_t shared[PROTO_KEY_SIZE];
    proto_status_t rc = PROTO_OK;
    if (s_x25519(my_secret, peer_public, shared) != 0 ||
        proto_hkdf(shared, salt, PROTO_KEY_SIZE, info, info_len, out) != 0) {
        OPENSSL_cleanse(out, PROTO_KEY_SIZE);
        rc = PROTO_E_CRYPTO;
    }
    OPENSSL_cleanse(shared, sizeof shared);
    return rc;
}

proto_status_t proto_kx_root(const uint8_t my_secret[PROTO_KEY_SIZE],
                             const uint8_t peer_public[PROTO_KEY_SIZE],
                             const uint8_t invite_secret[PROTO_KEY_SIZE],
                             const proto_kx_transcript_t *t, uint8_t root[PROTO_KEY_SIZE])
{
    uint8_t info[S_INFO_MAX];
    size_t label_len = sizeof(PROTO_KX_ROOT_LABEL) - 1;
    memcpy(info, PROTO_KX_ROOT_LABEL, label_len);
    size_t len = s_transcript(t, info + label_len);
    memset(root, 0, PROTO_KEY_SIZE);
    if (len == 0)
        return PROTO_E_VALUE;
    return proto_kx_derive(my_secret, peer_public, invite_secret, info, label_len + len, root);
}

proto_status_t proto_kx_accept(const proto_invite_t *invite, uint8_t private_kx[PROTO_KEY_SIZE],
                               uint8_t auth[PROTO_KEY_SIZE], uint8_t root[PROTO_KEY_SIZE])
{
    proto_kx_transcript_t t = {.conn = invite->conn};
    memcpy(t.public_kx, invite->kx, PROTO_KEY_SIZE);
    memcpy(t.broker_key, invite->broker_key, PROTO_KEY_SIZE);
    uint8_t secret[PROTO_KEY_SIZE];
    proto_status_t rc = proto_kx_keypair(secret, t.private_kx);
    if (rc == PROTO_OK)
        rc = proto_kx_auth(invite->secret, &t, auth);
    if (rc == PROTO_OK)
        rc = proto_kx_root(secret, invite->kx, invite->secret, &t, root);
    OPENSSL_cleanse(secret, sizeof secret);
    if (rc == PROTO_OK) {
        memcpy(private_kx, t.private_kx, PROTO_KEY_SIZE);
        return PROTO_OK;
    }
    memset(private_kx, 0, PROTO_KEY_SIZE);
    OPENSSL_cleanse(auth, PROTO_KEY_SIZE);
    OPENSSL_cleanse(root, PROTO_KEY_SIZE);
    return rc;
}

proto_status_t proto_kx_finish(const proto_kx_transcript_t *t,
                               const uint8_t kx_secret[PROTO_KEY_SIZE],
                               const uint8_t invite_secret[PROTO_KEY_SIZE],
                               const uint8_t auth[PROTO_KEY_SIZE], uint8_t root[PROTO_KEY_SIZE])
{
    uint8_t expected[PROTO_KEY_SIZE];
    memset(root, 0, PROTO_KEY_SIZE);
    proto_status_t rc = proto_kx_auth(invite_secret, t, expected);
    if (rc == PROTO_OK && CRYPTO_memcmp(expected, auth, PROTO_KEY_SIZE) != 0)
        rc = PROTO_E_JOIN_AUTH;
    OPENSSL_cleanse(expected, sizeof expected);
    if (rc != PROTO_OK)
        return rc;
    return proto_kx_root(kx_secret, t->private_kx, invite_secret, t, root);
}
