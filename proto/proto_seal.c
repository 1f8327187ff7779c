/*  proto_seal.c: end-to-end sealing with HKDF-SHA256 and AES-256-GCM (see
    proto_seal.h for the construction; docs/protocol.md for the layout).

    A proto_seal_t holds the two derived direction keys and the connection id
    they were derived for. Keys are wiped with OPENSSL_cleanse when the
    sealer is destroyed; plaintext left in an output buffer after a failed
    open is wiped too.
*/
#include <assert.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include "proto_seal.h"

#define S_AD_MAX (1 + PROTO_MAX_ID + 1 + 8) //  Longest associated data

struct proto_seal {
    uint8_t keys[2][PROTO_KEY_SIZE]; //  [dir - 1]: PUB_TO_PRIV, PRIV_TO_PUB
    char conn[PROTO_MAX_ID + 1];     //  Connection id the keys belong to
    size_t conn_len;                 //  strlen(conn)
};

static const char *s_info[2] = {"twinsync seal v1 public->private",
                                "twinsync seal v1 private->public"};

proto_dir_t proto_dir_outbound(proto_role_t role)
{
    return role == PROTO_ROLE_PUBLIC ? PROTO_DIR_PUB_TO_PRIV : PROTO_DIR_PRIV_TO_PUB;
}

proto_dir_t proto_dir_inbound(proto_role_t role)
{
    return role == PROTO_ROLE_PUBLIC ? PROTO_DIR_PRIV_TO_PUB : PROTO_DIR_PUB_TO_PRIV;
}

//  True when conn is a valid connection id (1..PROTO_MAX_ID of [A-Za-z0-9._:-]).
static bool s_valid_conn(const char *conn)
{
    size_t len = strlen(conn);
    if (len == 0 || len > PROTO_MAX_ID)
        return false;
    return strspn(conn, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-") ==
           len;
}

//  key = HKDF-SHA256(secret, salt = conn, info). Returns 0 or -1.
static int s_hkdf(const uint8_t *secret, const char *conn, size_t conn_len, const char *info,
                  uint8_t key[PROTO_KEY_SIZE])
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
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, PROTO_KEY_SIZE),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)conn, conn_len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, strlen(info)),
        OSSL_PARAM_construct_end(),
    };
    int rc = EVP_KDF_derive(ctx, key, PROTO_KEY_SIZE, params) == 1 ? 0 : -1;
    EVP_KDF_CTX_free(ctx);
    return rc;
}

proto_seal_t *proto_seal_new(const uint8_t secret[PROTO_KEY_SIZE], const char *conn)
{
    assert(secret && conn);
    if (!s_valid_conn(conn))
        return NULL;
    proto_seal_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    self->conn_len = strlen(conn);
    memcpy(self->conn, conn, self->conn_len + 1);
    for (int i = 0; i < 2; i++) {
        if (s_hkdf(secret, conn, self->conn_len, s_info[i], self->keys[i]) != 0) {
            proto_seal_destroy(&self);
            return NULL;
        }
    }
    return self;
}

void proto_seal_destroy(proto_seal_t **self_p)
{
    assert(self_p);
    if (!*self_p)
        return;
    OPENSSL_cleanse(*self_p, sizeof(**self_p));
    free(*self_p);
    *self_p = NULL;
}

static void s_put_be64(uint8_t *out, uint64_t value)
{
    for (int i = 7; i >= 0; i--, value >>= 8)
        out[i] = (uint8_t)value;
}

//  Builds the nonce and associated data of payload seq in direction dir.
//  Returns the length of the associated data.
static size_t s_nonce_ad(const proto_seal_t *self, proto_dir_t dir, uint64_t seq,
                         uint8_t nonce[PROTO_SEAL_NONCE_SIZE], uint8_t ad[S_AD_MAX])
{
    nonce[0] = nonce[1] = nonce[2] = 0;
    nonce[3] = (uint8_t)dir;
    s_put_be64(nonce + 4, seq);
    size_t n = 0;
    ad[n++] = (uint8_t)self->conn_len;
    memcpy(ad + n, self->conn, self->conn_len);
    n += self->conn_len;
    ad[n++] = (uint8_t)dir;
    s_put_be64(ad + n, seq);
    return n + 8;
}

//  Runs AES-256-GCM over in[0..size) into out (same size) in direction dir
//  for payload seq; encrypting writes the tag to tag, decrypting checks it.
//  Returns PROTO_OK, PROTO_E_SEAL (tag mismatch) or PROTO_E_CRYPTO.
static proto_status_t s_gcm(const proto_seal_t *self, bool encrypt, proto_dir_t dir, uint64_t seq,
                            const uint8_t *in, size_t size, uint8_t *out,
                            uint8_t tag[PROTO_SEAL_TAG_SIZE])
{
    uint8_t nonce[PROTO_SEAL_NONCE_SIZE], ad[S_AD_MAX];
    size_t ad_len = s_nonce_ad(self, dir, seq, nonce, ad);
    const uint8_t *key = self->keys[dir - 1];
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx)
        return PROTO_E_CRYPTO;
    int len = 0;
    bool ok = EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, encrypt) == 1 &&
              EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, PROTO_SEAL_NONCE_SIZE, NULL) == 1 &&
              EVP_CipherInit_ex(ctx, NULL, NULL, key, nonce, encrypt) == 1 &&
              EVP_CipherUpdate(ctx, NULL, &len, ad, (int)ad_len) == 1 &&
              (size == 0 || EVP_CipherUpdate(ctx, out, &len, in, (int)size) == 1);
    if (ok && !encrypt)
        ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, PROTO_SEAL_TAG_SIZE, tag) == 1;
    proto_status_t rc = ok ? PROTO_OK : PROTO_E_CRYPTO;
    if (ok && EVP_CipherFinal_ex(ctx, out + (size ? len : 0), &len) != 1)
        rc = encrypt ? PROTO_E_CRYPTO : PROTO_E_SEAL;
    if (rc == PROTO_OK && encrypt &&
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, PROTO_SEAL_TAG_SIZE, tag) != 1)
        rc = PROTO_E_CRYPTO;
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

proto_status_t proto_seal_box(proto_seal_t *self, proto_dir_t dir, uint64_t seq,
                              const uint8_t *plain, size_t size, proto_buf_t *out)
{
    assert(self && out && (plain || size == 0));
    assert(dir == PROTO_DIR_PUB_TO_PRIV || dir == PROTO_DIR_PRIV_TO_PUB);
    proto_buf_reset(out);
    if (size > INT_MAX - PROTO_SEAL_TAG_SIZE)
        return PROTO_E_TOO_LONG;
    if (proto_buf_reserve(out, size + PROTO_SEAL_TAG_SIZE) != 0)
        return PROTO_E_NOMEM;
    proto_status_t rc = s_gcm(self, true, dir, seq, plain, size, out->data, out->data + size);
    if (rc == PROTO_OK)
        out->size = size + PROTO_SEAL_TAG_SIZE;
    return rc;
}

proto_status_t proto_seal_open(proto_seal_t *self, proto_dir_t dir, uint64_t seq,
                               const uint8_t *sealed, size_t size, proto_buf_t *out)
{
    assert(self && out && (sealed || size == 0));
    assert(dir == PROTO_DIR_PUB_TO_PRIV || dir == PROTO_DIR_PRIV_TO_PUB);
    proto_buf_reset(out);
    if (size < PROTO_SEAL_TAG_SIZE)
        return PROTO_E_SEAL;
    if (size > INT_MAX)
        return PROTO_E_SEAL;
    size_t plain_size = size - PROTO_SEAL_TAG_SIZE;
    if (proto_buf_reserve(out, plain_size + 1) != 0)
        return PROTO_E_NOMEM;
    uint8_t tag[PROTO_SEAL_TAG_SIZE];
    memcpy(tag, sealed + plain_size, PROTO_SEAL_TAG_SIZE);
    proto_status_t rc = s_gcm(self, false, dir, seq, sealed, plain_size, out->data, tag);
    if (rc != PROTO_OK) {
        OPENSSL_cleanse(out->data, plain_size);
        return rc;
    }
    out->size = plain_size;
    return PROTO_OK;
}
