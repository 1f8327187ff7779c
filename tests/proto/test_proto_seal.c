/*  test_proto_seal.c: end-to-end sealing (proto_seal.h).

    Proves: the construction is the documented one (keys computed
    independently with Python's hmac/hashlib HKDF, then AES-256-GCM with the
    documented nonce and associated data gives the same bytes); sealing
    round trips, including empty plaintexts; every flipped bit of ciphertext
    or tag, a swapped direction, another sequence (replay, reorder), another
    connection and another secret are all refused and leave no plaintext.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "proto.h"

//  HKDF-SHA256 (RFC 5869) written out with HMAC, independently of the
//  sealer: prk = HMAC(salt, secret); okm = HMAC(prk, info || 0x01).
static void s_reference_key(const uint8_t secret[32], const char *conn, const char *label,
                            const uint8_t epoch[16], uint8_t key[32])
{
    uint8_t prk[32], info[80];
    unsigned int len = 0;
    assert_non_null(HMAC(EVP_sha256(), conn, (int)strlen(conn), secret, 32, prk, &len));
    size_t n = strlen(label);
    memcpy(info, label, n);
    memcpy(info + n, epoch, 16);
    info[n + 16] = 1;
    assert_non_null(HMAC(EVP_sha256(), prk, 32, info, n + 17, key, &len));
    assert_int_equal(len, 32);
}

static const char s_plain[] = "SYNC INC0010001: printer on fire";

static void s_secret(uint8_t secret[PROTO_KEY_SIZE])
{
    for (int i = 0; i < PROTO_KEY_SIZE; i++)
        secret[i] = (uint8_t)i;
}

static proto_seal_t *s_sealer(void)
{
    uint8_t secret[PROTO_KEY_SIZE];
    s_secret(secret);
    proto_seal_t *seal = proto_seal_new(secret, "conn-1");
    assert_non_null(seal);
    return seal;
}

//  AES-256-GCM by hand with the documented nonce, associated data and
//  padding: out = header || ciphertext || tag, sealed_size bytes in all.
static void s_reference_seal(const uint8_t key[32], const uint8_t header[22], uint8_t dir,
                             uint64_t seq, const uint8_t *plain, size_t size, size_t sealed_size,
                             uint8_t *out)
{
    uint8_t nonce[12] = {0, 0, 0, dir};
    uint8_t ad[1 + 6 + 1 + 8 + 22] = {6, 'c', 'o', 'n', 'n', '-', '1', dir};
    for (int i = 0; i < 8; i++) {
        nonce[4 + i] = (uint8_t)(seq >> (56 - 8 * i));
        ad[8 + i] = (uint8_t)(seq >> (56 - 8 * i));
    }
    memcpy(ad + 16, header, 22);
    size_t padded = sealed_size - 22 - 16;
    uint8_t *body = calloc(1, padded);
    memcpy(body, plain, size);
    body[size] = 0x80;
    memcpy(out, header, 22);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int len;
    assert_int_equal(EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce), 1);
    assert_int_equal(EVP_EncryptUpdate(ctx, NULL, &len, ad, sizeof(ad)), 1);
    assert_int_equal(EVP_EncryptUpdate(ctx, out + 22, &len, body, (int)padded), 1);
    assert_int_equal(EVP_EncryptFinal_ex(ctx, out + 22 + len, &len), 1);
    assert_int_equal(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, out + 22 + padded), 1);
    EVP_CIPHER_CTX_free(ctx);
    free(body);
}

static void test_construction_matches_document(void **state)
{
    (void)state;
    proto_seal_t *seal = s_sealer();
    proto_buf_t out;
    proto_buf_init(&out);
    size_t size = strlen(s_plain);
    uint8_t secret[32];
    s_secret(secret);
    struct {
        proto_dir_t dir;
        const char *label;
        uint64_t seq;
    } cases[] = {{PROTO_DIR_PUB_TO_PRIV, "twinsync seal v2 public->private", 1},
                 {PROTO_DIR_PRIV_TO_PUB, "twinsync seal v2 private->public", 0x0102030405060708ull},
                 {PROTO_DIR_PUB_TO_PRIV, "twinsync seal v2 public->private", UINT64_MAX}};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(
            proto_seal_box(seal, cases[i].dir, cases[i].seq, (const uint8_t *)s_plain, size, &out),
            PROTO_OK);
        assert_int_equal(out.size, 256); //  The smallest bucket
        //  Header: 'T', version 2, generation 0, the sealer's epoch
        assert_int_equal(out.data[0], 'T');
        assert_int_equal(out.data[1], 2);
        assert_int_equal(proto_seal_generation_of(out.data, out.size), 0);
        uint8_t key[32], expected[256];
        s_reference_key(secret, "conn-1", cases[i].label, out.data + 6, key);
        s_reference_seal(key, out.data, (uint8_t)cases[i].dir, cases[i].seq,
                         (const uint8_t *)s_plain, size, out.size, expected);
        assert_memory_equal(out.data, expected, out.size);
    }
    proto_buf_release(&out);
    proto_seal_destroy(&seal);
    assert_null(seal);
    proto_seal_destroy(&seal); //  Idempotent
}

static void test_round_trip(void **state)
{
    (void)state;
    proto_seal_t *sender = s_sealer();
    proto_seal_t *receiver = s_sealer(); //  The other node, same secret
    proto_buf_t sealed, opened;
    proto_buf_init(&sealed);
    proto_buf_init(&opened);
    size_t sizes[] = {0, 1, 15, 16, 17, 1000, 100000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint8_t *plain = malloc(sizes[i] + 1);
        for (size_t k = 0; k < sizes[i]; k++)
            plain[k] = (uint8_t)(k * 7);
        assert_int_equal(
            proto_seal_box(sender, PROTO_DIR_PRIV_TO_PUB, i + 1, plain, sizes[i], &sealed),
            PROTO_OK);
        if (sizes[i])
            assert_memory_not_equal(sealed.data, plain, sizes[i]);
        assert_int_equal(proto_seal_open(receiver, PROTO_DIR_PRIV_TO_PUB, i + 1, sealed.data,
                                         sealed.size, &opened),
                         PROTO_OK);
        assert_int_equal(opened.size, sizes[i]);
        if (sizes[i])
            assert_memory_equal(opened.data, plain, sizes[i]);
        free(plain);
    }
    assert_int_equal(proto_dir_outbound(PROTO_ROLE_PUBLIC), PROTO_DIR_PUB_TO_PRIV);
    assert_int_equal(proto_dir_inbound(PROTO_ROLE_PUBLIC), PROTO_DIR_PRIV_TO_PUB);
    assert_int_equal(proto_dir_outbound(PROTO_ROLE_PRIVATE), PROTO_DIR_PRIV_TO_PUB);
    assert_int_equal(proto_dir_inbound(PROTO_ROLE_PRIVATE), PROTO_DIR_PUB_TO_PRIV);
    proto_buf_release(&sealed);
    proto_buf_wipe(&opened);
    proto_seal_destroy(&sender);
    proto_seal_destroy(&receiver);
}

//  Asserts that opening sealed[0..size) as (dir, seq) with seal fails and
//  leaves no plaintext.
static void s_refused(proto_seal_t *seal, proto_dir_t dir, uint64_t seq, const uint8_t *sealed,
                      size_t size)
{
    proto_buf_t opened;
    proto_buf_init(&opened);
    assert_int_equal(proto_seal_open(seal, dir, seq, sealed, size, &opened), PROTO_E_SEAL);
    assert_int_equal(opened.size, 0);
    if (opened.data && size > PROTO_SEAL_TAG_SIZE) //  Nothing of the plaintext left behind
        assert_memory_not_equal(opened.data, s_plain, 4);
    proto_buf_release(&opened);
}

//  The sample payload sealed by seal as (public->private, 5) into *sealed
//  (initialised here; the caller releases it).
static void s_sample(proto_seal_t *seal, proto_buf_t *sealed)
{
    proto_buf_init(sealed);
    assert_int_equal(proto_seal_box(seal, PROTO_DIR_PUB_TO_PRIV, 5, (const uint8_t *)s_plain,
                                    strlen(s_plain), sealed),
                     PROTO_OK);
}

static void test_every_flipped_bit_refused(void **state)
{
    (void)state;
    proto_seal_t *seal = s_sealer();
    proto_buf_t sealed;
    s_sample(seal, &sealed);
    uint8_t *copy = malloc(sealed.size);
    for (size_t bit = 0; bit < sealed.size * 8; bit++) {
        memcpy(copy, sealed.data, sealed.size);
        copy[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        s_refused(seal, PROTO_DIR_PUB_TO_PRIV, 5, copy, sealed.size);
    }
    //  Cut short, extended, or shorter than a tag.
    for (size_t size = 0; size < sealed.size; size++)
        s_refused(seal, PROTO_DIR_PUB_TO_PRIV, 5, sealed.data, size);
    uint8_t *longer = calloc(1, sealed.size + 1);
    memcpy(longer, sealed.data, sealed.size);
    s_refused(seal, PROTO_DIR_PUB_TO_PRIV, 5, longer, sealed.size + 1);
    free(longer);
    free(copy);
    proto_buf_release(&sealed);
    proto_seal_destroy(&seal);
}

static void test_wrong_context_refused(void **state)
{
    (void)state;
    proto_seal_t *seal = s_sealer();
    proto_buf_t sealed;
    s_sample(seal, &sealed);
    //  Swapped direction (a reflected payload).
    s_refused(seal, PROTO_DIR_PRIV_TO_PUB, 5, sealed.data, sealed.size);
    //  Another sequence: replayed as a later one, or reordered as an earlier one.
    s_refused(seal, PROTO_DIR_PUB_TO_PRIV, 6, sealed.data, sealed.size);
    s_refused(seal, PROTO_DIR_PUB_TO_PRIV, 4, sealed.data, sealed.size);
    s_refused(seal, PROTO_DIR_PUB_TO_PRIV, 5 + (1ull << 32), sealed.data, sealed.size);
    //  Another connection with the same secret.
    uint8_t secret[PROTO_KEY_SIZE];
    s_secret(secret);
    proto_seal_t *other_conn = proto_seal_new(secret, "conn-2");
    assert_non_null(other_conn);
    s_refused(other_conn, PROTO_DIR_PUB_TO_PRIV, 5, sealed.data, sealed.size);
    //  Another secret, same connection.
    secret[0] ^= 1;
    proto_seal_t *other_secret = proto_seal_new(secret, "conn-1");
    s_refused(other_secret, PROTO_DIR_PUB_TO_PRIV, 5, sealed.data, sealed.size);
    //  The original still opens.
    proto_buf_t opened;
    proto_buf_init(&opened);
    assert_int_equal(
        proto_seal_open(seal, PROTO_DIR_PUB_TO_PRIV, 5, sealed.data, sealed.size, &opened),
        PROTO_OK);
    proto_buf_wipe(&opened);
    proto_buf_release(&sealed);
    proto_seal_destroy(&other_conn);
    proto_seal_destroy(&other_secret);
    proto_seal_destroy(&seal);
}

//  Every (key, nonce) pair a sealer used, as the trace hook reports them.
typedef struct {
    uint8_t pairs[64][PROTO_SEAL_KEY_ID_SIZE + PROTO_SEAL_NONCE_SIZE];
    size_t count;
} s_pairs_t;

static void s_record_pair(const uint8_t key_id[PROTO_SEAL_KEY_ID_SIZE],
                          const uint8_t nonce[PROTO_SEAL_NONCE_SIZE], void *arg)
{
    s_pairs_t *pairs = arg;
    assert_true(pairs->count < 64);
    memcpy(pairs->pairs[pairs->count], key_id, PROTO_SEAL_KEY_ID_SIZE);
    memcpy(pairs->pairs[pairs->count++] + PROTO_SEAL_KEY_ID_SIZE, nonce, PROTO_SEAL_NONCE_SIZE);
}

static void s_assert_no_pair_twice(const s_pairs_t *pairs)
{
    for (size_t i = 0; i < pairs->count; i++)
        for (size_t k = i + 1; k < pairs->count; k++)
            assert_memory_not_equal(pairs->pairs[i], pairs->pairs[k], sizeof pairs->pairs[i]);
}

//  A sequence sealed again (a restore, a broker that lied about positions)
//  goes out under a new epoch, hence a new key: no (key, nonce) pair twice,
//  and the other node opens both.
static void test_sequence_again_gets_a_new_epoch(void **state)
{
    (void)state;
    proto_seal_t *seal = s_sealer(), *peer = s_sealer();
    s_pairs_t pairs = {0};
    proto_seal_set_trace(seal, s_record_pair, &pairs);
    proto_buf_t sealed[6], opened;
    proto_buf_init(&opened);
    uint64_t seqs[6] = {1, 2, 3, 2, 3, 3}; //  Rolled back twice
    for (size_t i = 0; i < 6; i++) {
        proto_buf_init(&sealed[i]);
        assert_int_equal(proto_seal_box(seal, PROTO_DIR_PUB_TO_PRIV, seqs[i],
                                        (const uint8_t *)s_plain, i, &sealed[i]),
                         PROTO_OK);
    }
    assert_int_equal(pairs.count, 6);
    s_assert_no_pair_twice(&pairs);
    //  Same epoch while the sequence rises, a new one after each roll-back
    assert_memory_equal(sealed[0].data + 6, sealed[2].data + 6, PROTO_SEAL_EPOCH_SIZE);
    assert_memory_not_equal(sealed[2].data + 6, sealed[3].data + 6, PROTO_SEAL_EPOCH_SIZE);
    assert_memory_not_equal(sealed[4].data + 6, sealed[5].data + 6, PROTO_SEAL_EPOCH_SIZE);
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(proto_seal_open(peer, PROTO_DIR_PUB_TO_PRIV, seqs[i], sealed[i].data,
                                         sealed[i].size, &opened),
                         PROTO_OK);
        assert_int_equal(opened.size, i);
        proto_buf_release(&sealed[i]);
    }
    //  Another sealer with the same secret (the node restarted): its own epoch
    proto_seal_t *restarted = s_sealer();
    proto_seal_set_trace(restarted, s_record_pair, &pairs);
    assert_int_equal(proto_seal_box(restarted, PROTO_DIR_PUB_TO_PRIV, 1, (const uint8_t *)s_plain,
                                    0, &sealed[0]),
                     PROTO_OK);
    s_assert_no_pair_twice(&pairs);
    proto_buf_release(&sealed[0]);
    proto_buf_wipe(&opened);
    proto_seal_destroy(&restarted);
    proto_seal_destroy(&peer);
    proto_seal_destroy(&seal);
}

//  The broker sees a bucket, not a size; padding off shows the size.
static void test_padding_hides_the_size(void **state)
{
    (void)state;
    proto_seal_t *seal = s_sealer(), *peer = s_sealer();
    proto_buf_t sealed, opened;
    proto_buf_init(&sealed);
    proto_buf_init(&opened);
    struct {
        bool pad;
        size_t max, size, sealed;
    } cases[] = {
        {true, 4096, 0, 256},
        {true, 4096, 1, 256},
        {true, 4096, 217, 256},
        {true, 4096, 218, 512},
        {true, 4096, 985, 1024},
        {true, 4096, 3000, 4096},
        {true, 4096, 4057, 4096},
        {true, 4096, 4058, 4058 + PROTO_SEAL_OVERHEAD},
        {true, 3000, 2000, 2048},
        {true, 3000, 2500, 3000},
        {false, 4096, 0, PROTO_SEAL_OVERHEAD},
        {false, 4096, 100, 100 + PROTO_SEAL_OVERHEAD},
    };
    uint64_t seq = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t *plain = calloc(1, cases[i].size + 1); //  Zeros: the padding's own byte
        proto_seal_set_padding(seal, cases[i].pad, cases[i].max);
        assert_int_equal(
            proto_seal_box(seal, PROTO_DIR_PRIV_TO_PUB, ++seq, plain, cases[i].size, &sealed),
            PROTO_OK);
        assert_int_equal(sealed.size, cases[i].sealed);
        assert_int_equal(
            proto_seal_open(peer, PROTO_DIR_PRIV_TO_PUB, seq, sealed.data, sealed.size, &opened),
            PROTO_OK);
        assert_int_equal(opened.size, cases[i].size);
        if (cases[i].size)
            assert_memory_equal(opened.data, plain, cases[i].size);
        free(plain);
    }
    proto_buf_release(&sealed);
    proto_buf_wipe(&opened);
    proto_seal_destroy(&peer);
    proto_seal_destroy(&seal);
}

//  A rekey: both sides add generation 1; the sender switches; the receiver
//  opens both generations until it forgets the old one.
static void test_generations(void **state)
{
    (void)state;
    proto_seal_t *seal = s_sealer(), *peer = s_sealer();
    uint8_t next[PROTO_KEY_SIZE];
    memset(next, 0x5a, sizeof next);
    proto_buf_t old, young, opened;
    proto_buf_init(&old);
    proto_buf_init(&young);
    proto_buf_init(&opened);
    assert_int_equal(proto_seal_use_generation(seal, 1), PROTO_E_SEAL); //  Not known yet
    assert_int_equal(
        proto_seal_box(seal, PROTO_DIR_PUB_TO_PRIV, 1, (const uint8_t *)s_plain, 3, &old),
        PROTO_OK);
    assert_int_equal(proto_seal_add_generation(seal, 1, next), PROTO_OK);
    assert_int_equal(proto_seal_use_generation(seal, 1), PROTO_OK);
    assert_int_equal(
        proto_seal_box(seal, PROTO_DIR_PUB_TO_PRIV, 2, (const uint8_t *)s_plain, 4, &young),
        PROTO_OK);
    assert_int_equal(proto_seal_generation_of(old.data, old.size), 0);
    assert_int_equal(proto_seal_generation_of(young.data, young.size), 1);
    //  The peer without generation 1 refuses it, then takes it once added
    s_refused(peer, PROTO_DIR_PUB_TO_PRIV, 2, young.data, young.size);
    assert_int_equal(proto_seal_add_generation(peer, 1, next), PROTO_OK);
    assert_int_equal(proto_seal_open(peer, PROTO_DIR_PUB_TO_PRIV, 1, old.data, old.size, &opened),
                     PROTO_OK);
    assert_int_equal(
        proto_seal_open(peer, PROTO_DIR_PUB_TO_PRIV, 2, young.data, young.size, &opened), PROTO_OK);
    assert_int_equal(opened.size, 4);
    //  Generation 0 forgotten (never the one a sealer seals in): its
    //  payloads no longer open
    proto_seal_forget_before(peer, 1);
    assert_int_equal(proto_seal_open(peer, PROTO_DIR_PUB_TO_PRIV, 1, old.data, old.size, &opened),
                     PROTO_OK);
    assert_int_equal(proto_seal_use_generation(peer, 1), PROTO_OK);
    proto_seal_forget_before(peer, 1);
    s_refused(peer, PROTO_DIR_PUB_TO_PRIV, 1, old.data, old.size);
    assert_int_equal(proto_seal_generation_of(old.data, 3), -1);
    proto_buf_release(&old);
    proto_buf_release(&young);
    proto_buf_wipe(&opened);
    proto_seal_destroy(&peer);
    proto_seal_destroy(&seal);
}

static void test_bad_connection_id(void **state)
{
    (void)state;
    uint8_t secret[PROTO_KEY_SIZE] = {0};
    assert_null(proto_seal_new(secret, ""));
    assert_null(proto_seal_new(secret, "a b"));
    char long_id[PROTO_MAX_ID + 2];
    memset(long_id, 'a', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    assert_null(proto_seal_new(secret, long_id));
    long_id[PROTO_MAX_ID] = '\0';
    proto_seal_t *seal = proto_seal_new(secret, long_id);
    assert_non_null(seal);
    proto_seal_destroy(&seal);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_construction_matches_document),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_every_flipped_bit_refused),
        cmocka_unit_test(test_wrong_context_refused),
        cmocka_unit_test(test_sequence_again_gets_a_new_epoch),
        cmocka_unit_test(test_padding_hides_the_size),
        cmocka_unit_test(test_generations),
        cmocka_unit_test(test_bad_connection_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
