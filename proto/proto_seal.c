/*  proto_seal.c: end-to-end sealing with HKDF-SHA256 and AES-256-GCM (see
    proto_seal.h for the construction; docs/protocol.md for the layout).

    A proto_seal_t holds the root secrets of up to four key generations, the
    epoch it seals in, and the keys derived last for sealing and opening in
    each direction (deriving costs an HKDF; a payload of the current epoch
    reuses its key). Roots and keys are wiped with OPENSSL_cleanse when they
    are replaced or the sealer is destroyed; plaintext left in an output
    buffer after a failed open is wiped too.
*/
#include <assert.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "proto_seal.h"

#include "proto_kx.h"

#include "proto_limits.h"

#define S_AD_MAX     (1 + PROTO_MAX_ID + 1 + 8 + PROTO_SEAL_HEADER_SIZE) //  Longest associated data
#define S_VERSION    2   //  Second byte of the header
#define S_MIN_BUCKET 256 //  Smallest padded sealed size

//  The root secret of one key generation.
typedef struct {
    bool used;                    //  Slot holds a generation
    uint32_t generation;          //  Its number
    uint8_t root[PROTO_KEY_SIZE]; //  Its root secret
} s_root_t;

//  A derived key and what it was derived for.
typedef struct {
    bool valid;                           //  Derived
    uint32_t generation;                  //  Of this generation
    uint8_t epoch[PROTO_SEAL_EPOCH_SIZE]; //  In this epoch
    uint8_t key[PROTO_KEY_SIZE];          //  AES-256-GCM key
} s_key_t;

struct proto_seal {
    s_root_t roots[PROTO_SEAL_GENERATIONS]; //  Known generations
    uint32_t generation;                    //  Generation payloads are sealed in
    uint8_t epoch[PROTO_SEAL_EPOCH_SIZE];   //  Epoch payloads are sealed in
    s_key_t out[2];                         //  [dir - 1]: sealing key
    bool sealed[2];                         //  [dir - 1]: sealed any in this epoch
    uint64_t top[2];                        //  [dir - 1]: highest seq sealed in it
    s_key_t in[2];                          //  [dir - 1]: last opening key
    bool pad;                               //  Pad to size buckets
    size_t max_sealed;                      //  Largest bucket
    proto_seal_trace_fn *trace;             //  Observer of each seal, or NULL
    void *trace_arg;                        //  Its argument
    char conn[PROTO_MAX_ID + 1];            //  Connection id the keys belong to
    size_t conn_len;                        //  strlen(conn)
};

static const char *s_info[2] = {"twinsync seal v2 public->private",
                                "twinsync seal v2 private->public"};

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

//  key = HKDF-SHA256(root, salt = conn, info = s_info[dir] || epoch).
//  Returns 0 or -1.
static int s_hkdf(const proto_seal_t *self, const uint8_t *root, proto_dir_t dir,
                  const uint8_t epoch[PROTO_SEAL_EPOCH_SIZE], uint8_t key[PROTO_KEY_SIZE])
{
    uint8_t info[64];
    size_t info_len = strlen(s_info[dir - 1]);
    memcpy(info, s_info[dir - 1], info_len);
    memcpy(info + info_len, epoch, PROTO_SEAL_EPOCH_SIZE);
    info_len += PROTO_SEAL_EPOCH_SIZE;
    return proto_hkdf(root, self->conn, self->conn_len, info, info_len, key);
}

//  The root of generation, or NULL when the sealer does not hold it.
static const uint8_t *s_root(const proto_seal_t *self, uint32_t generation)
{
    for (size_t i = 0; i < PROTO_SEAL_GENERATIONS; i++)
        if (self->roots[i].used && self->roots[i].generation == generation)
            return self->roots[i].root;
    return NULL;
}

//  Starts a new random epoch for sealing: every sealing key is derived again.
static proto_status_t s_new_epoch(proto_seal_t *self)
{
    if (RAND_bytes(self->epoch, sizeof self->epoch) != 1)
        return PROTO_E_CRYPTO;
    for (int i = 0; i < 2; i++) {
        OPENSSL_cleanse(&self->out[i], sizeof self->out[i]);
        self->sealed[i] = false;
        self->top[i] = 0;
    }
    return PROTO_OK;
}

//  Makes *slot the key of (generation, epoch) in direction dir, deriving it
//  when it holds another. Returns PROTO_OK, PROTO_E_SEAL (unknown generation)
//  or PROTO_E_CRYPTO.
static proto_status_t s_key(const proto_seal_t *self, proto_dir_t dir, uint32_t generation,
                            const uint8_t epoch[PROTO_SEAL_EPOCH_SIZE], s_key_t *slot)
{
    if (slot->valid && slot->generation == generation &&
        memcmp(slot->epoch, epoch, PROTO_SEAL_EPOCH_SIZE) == 0)
        return PROTO_OK;
    const uint8_t *root = s_root(self, generation);
    if (!root)
        return PROTO_E_SEAL;
    OPENSSL_cleanse(slot, sizeof *slot);
    if (s_hkdf(self, root, dir, epoch, slot->key) != 0)
        return PROTO_E_CRYPTO;
    slot->valid = true;
    slot->generation = generation;
    memcpy(slot->epoch, epoch, PROTO_SEAL_EPOCH_SIZE);
    return PROTO_OK;
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
    self->pad = true;
    self->max_sealed = proto_limits_default().max_payload;
    if (proto_seal_add_generation(self, 0, secret) != PROTO_OK || s_new_epoch(self) != PROTO_OK)
        proto_seal_destroy(&self);
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

proto_status_t proto_seal_add_generation(proto_seal_t *self, uint32_t generation,
                                         const uint8_t secret[PROTO_KEY_SIZE])
{
    assert(self && secret);
    s_root_t *slot = NULL;
    for (size_t i = 0; i < PROTO_SEAL_GENERATIONS && !slot; i++)
        if (self->roots[i].used && self->roots[i].generation == generation)
            slot = &self->roots[i];
    for (size_t i = 0; i < PROTO_SEAL_GENERATIONS && !slot; i++)
        if (!self->roots[i].used)
            slot = &self->roots[i];
    for (size_t i = 0; i < PROTO_SEAL_GENERATIONS && !slot; i++)
        if (self->roots[i].generation != self->generation &&
            (!slot || self->roots[i].generation < slot->generation))
            slot = &self->roots[i];
    if (!slot)
        return PROTO_E_CRYPTO;
    OPENSSL_cleanse(slot, sizeof *slot);
    slot->used = true;
    slot->generation = generation;
    memcpy(slot->root, secret, PROTO_KEY_SIZE);
    //  Keys derived from a replaced root must go
    for (int i = 0; i < 2; i++) {
        if (self->out[i].generation == generation)
            OPENSSL_cleanse(&self->out[i], sizeof self->out[i]);
        if (self->in[i].generation == generation)
            OPENSSL_cleanse(&self->in[i], sizeof self->in[i]);
    }
    return PROTO_OK;
}

proto_status_t proto_seal_use_generation(proto_seal_t *self, uint32_t generation)
{
    assert(self);
    if (!s_root(self, generation))
        return PROTO_E_SEAL;
    self->generation = generation;
    return s_new_epoch(self);
}

void proto_seal_forget_before(proto_seal_t *self, uint32_t generation)
{
    assert(self);
    for (size_t i = 0; i < PROTO_SEAL_GENERATIONS; i++)
        if (self->roots[i].used && self->roots[i].generation < generation &&
            self->roots[i].generation != self->generation)
            OPENSSL_cleanse(&self->roots[i], sizeof self->roots[i]);
    for (int i = 0; i < 2; i++)
        if (self->in[i].valid && self->in[i].generation < generation)
            OPENSSL_cleanse(&self->in[i], sizeof self->in[i]);
}

static uint32_t s_get_be32(const uint8_t *in)
{
    return (uint32_t)in[0] << 24 | (uint32_t)in[1] << 16 | (uint32_t)in[2] << 8 | in[3];
}

int64_t proto_seal_generation_of(const uint8_t *sealed, size_t size)
{
    if (!sealed || size < PROTO_SEAL_OVERHEAD || sealed[0] != 'T' || sealed[1] != S_VERSION)
        return -1;
    return s_get_be32(sealed + 2);
}

void proto_seal_set_padding(proto_seal_t *self, bool on, size_t max_sealed)
{
    assert(self);
    self->pad = on;
    self->max_sealed = max_sealed;
}

void proto_seal_set_trace(proto_seal_t *self, proto_seal_trace_fn *fn, void *arg)
{
    assert(self);
    self->trace = fn;
    self->trace_arg = arg;
}

static void s_put_be64(uint8_t *out, uint64_t value)
{
    for (int i = 7; i >= 0; i--, value >>= 8)
        out[i] = (uint8_t)value;
}

static void s_put_be32(uint8_t *out, uint32_t value)
{
    for (int i = 3; i >= 0; i--, value >>= 8)
        out[i] = (uint8_t)value;
}

//  Builds the nonce and associated data of payload seq in direction dir
//  under header. Returns the length of the associated data.
static size_t s_nonce_ad(const proto_seal_t *self, proto_dir_t dir, uint64_t seq,
                         const uint8_t header[PROTO_SEAL_HEADER_SIZE],
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
    n += 8;
    memcpy(ad + n, header, PROTO_SEAL_HEADER_SIZE);
    return n + PROTO_SEAL_HEADER_SIZE;
}

//  Runs AES-256-GCM with key over in[0..size) into out (same size) for
//  payload seq of direction dir under header; encrypting writes the tag to
//  tag, decrypting checks it. Returns PROTO_OK, PROTO_E_SEAL (tag mismatch)
//  or PROTO_E_CRYPTO.
static proto_status_t s_gcm(const proto_seal_t *self, const uint8_t *key, bool encrypt,
                            proto_dir_t dir, uint64_t seq,
                            const uint8_t header[PROTO_SEAL_HEADER_SIZE], const uint8_t *in,
                            size_t size, uint8_t *out, uint8_t tag[PROTO_SEAL_TAG_SIZE])
{
    uint8_t nonce[PROTO_SEAL_NONCE_SIZE], ad[S_AD_MAX];
    size_t ad_len = s_nonce_ad(self, dir, seq, header, nonce, ad);
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

//  Bytes the padded plaintext of a size-byte plaintext takes: the marker
//  always, then zeros up to the bucket when padding is on.
static size_t s_padded(const proto_seal_t *self, size_t size)
{
    size_t fixed = PROTO_SEAL_HEADER_SIZE + PROTO_SEAL_TAG_SIZE;
    size_t least = size + 1;
    if (!self->pad || fixed + least > self->max_sealed)
        return least;
    size_t bucket = S_MIN_BUCKET;
    while (bucket < fixed + least && bucket <= self->max_sealed / 2)
        bucket *= 2;
    if (bucket > self->max_sealed || bucket < fixed + least)
        bucket = self->max_sealed;
    return bucket - fixed;
}

//  Tells the observer which key and nonce sealed payload seq.
static void s_trace(const proto_seal_t *self, const uint8_t *key, proto_dir_t dir, uint64_t seq)
{
    uint8_t digest[EVP_MAX_MD_SIZE], nonce[PROTO_SEAL_NONCE_SIZE] = {0, 0, 0, (uint8_t)dir};
    unsigned int len = 0;
    if (EVP_Digest(key, PROTO_KEY_SIZE, digest, &len, EVP_sha256(), NULL) != 1)
        memset(digest, 0, sizeof digest);
    s_put_be64(nonce + 4, seq);
    self->trace(digest, nonce, self->trace_arg);
}

proto_status_t proto_seal_box(proto_seal_t *self, proto_dir_t dir, uint64_t seq,
                              const uint8_t *plain, size_t size, proto_buf_t *out)
{
    assert(self && out && (plain || size == 0));
    assert(dir == PROTO_DIR_PUB_TO_PRIV || dir == PROTO_DIR_PRIV_TO_PUB);
    proto_buf_reset(out);
    if (size > INT_MAX - PROTO_SEAL_OVERHEAD)
        return PROTO_E_TOO_LONG;
    size_t padded = s_padded(self, size);
    if (padded > (size_t)INT_MAX - PROTO_SEAL_HEADER_SIZE - PROTO_SEAL_TAG_SIZE)
        return PROTO_E_TOO_LONG;
    //  A sequence at or below one already sealed in this epoch (a restore,
    //  a broker that lied): a new epoch, so the nonce is fresh under its key
    if (self->sealed[dir - 1] && seq <= self->top[dir - 1] && s_new_epoch(self) != PROTO_OK)
        return PROTO_E_CRYPTO;
    proto_status_t rc = s_key(self, dir, self->generation, self->epoch, &self->out[dir - 1]);
    if (rc != PROTO_OK)
        return rc == PROTO_E_SEAL ? PROTO_E_CRYPTO : rc;
    size_t total = PROTO_SEAL_HEADER_SIZE + padded + PROTO_SEAL_TAG_SIZE;
    if (proto_buf_reserve(out, total) != 0)
        return PROTO_E_NOMEM;
    uint8_t *header = out->data, *body = out->data + PROTO_SEAL_HEADER_SIZE;
    header[0] = 'T';
    header[1] = S_VERSION;
    s_put_be32(header + 2, self->generation);
    memcpy(header + 6, self->epoch, PROTO_SEAL_EPOCH_SIZE);
    //  Encrypted in place: plaintext, marker and zeros first
    if (size)
        memcpy(body, plain, size);
    body[size] = 0x80;
    memset(body + size + 1, 0, padded - size - 1);
    rc = s_gcm(self, self->out[dir - 1].key, true, dir, seq, header, body, padded, body,
               body + padded);
    if (rc != PROTO_OK) {
        OPENSSL_cleanse(out->data, total);
        return rc;
    }
    out->size = total;
    self->sealed[dir - 1] = true;
    self->top[dir - 1] = seq;
    if (self->trace)
        s_trace(self, self->out[dir - 1].key, dir, seq);
    return PROTO_OK;
}

proto_status_t proto_seal_open(proto_seal_t *self, proto_dir_t dir, uint64_t seq,
                               const uint8_t *sealed, size_t size, proto_buf_t *out)
{
    assert(self && out && (sealed || size == 0));
    assert(dir == PROTO_DIR_PUB_TO_PRIV || dir == PROTO_DIR_PRIV_TO_PUB);
    proto_buf_reset(out);
    int64_t generation = proto_seal_generation_of(sealed, size);
    if (generation < 0 || size > INT_MAX)
        return PROTO_E_SEAL;
    proto_status_t rc = s_key(self, dir, (uint32_t)generation, sealed + 6, &self->in[dir - 1]);
    if (rc != PROTO_OK)
        return rc;
    size_t padded = size - PROTO_SEAL_HEADER_SIZE - PROTO_SEAL_TAG_SIZE;
    if (proto_buf_reserve(out, padded + 1) != 0)
        return PROTO_E_NOMEM;
    uint8_t tag[PROTO_SEAL_TAG_SIZE];
    memcpy(tag, sealed + size - PROTO_SEAL_TAG_SIZE, PROTO_SEAL_TAG_SIZE);
    rc = s_gcm(self, self->in[dir - 1].key, false, dir, seq, sealed,
               sealed + PROTO_SEAL_HEADER_SIZE, padded, out->data, tag);
    //  Authentic; the padding is the marker after the last non-zero byte
    size_t end = padded;
    while (rc == PROTO_OK && end > 0 && out->data[end - 1] == 0)
        end--;
    if (rc == PROTO_OK && (end == 0 || out->data[end - 1] != 0x80))
        rc = PROTO_E_SEAL;
    if (rc != PROTO_OK) {
        OPENSSL_cleanse(out->data, padded);
        return rc;
    }
    out->size = end - 1;
    return PROTO_OK;
}
