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

#include "proto.h"

//  HKDF-SHA256(secret = 00..1f, salt = "conn-1", info), from Python:
//  prk = hmac(salt, secret); okm = hmac(prk, info || 0x01).
static const uint8_t s_key_pub_to_priv[32] = {
    0xd6, 0xf3, 0xd9, 0xc9, 0x06, 0x1f, 0xcd, 0x06, 0xae, 0xaa, 0xb4, 0x48, 0xaf, 0x42, 0x89, 0x62,
    0xa0, 0xad, 0xca, 0x43, 0xb2, 0x4f, 0xef, 0x19, 0xe4, 0x82, 0xae, 0xbe, 0x0d, 0xd8, 0xfa, 0xd7};
static const uint8_t s_key_priv_to_pub[32] = {
    0x1e, 0xc5, 0x03, 0x31, 0x23, 0x97, 0xb5, 0x5f, 0x9d, 0x3f, 0x8b, 0x52, 0x66, 0x43, 0x0c, 0xd9,
    0x03, 0xde, 0xc0, 0x0c, 0xca, 0x24, 0xda, 0x06, 0xcf, 0x4c, 0xb1, 0x36, 0x08, 0xbb, 0x8b, 0x33};

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

//  AES-256-GCM by hand with the documented nonce and associated data.
static void s_reference_seal(const uint8_t key[32], uint8_t dir, uint64_t seq, const uint8_t *plain,
                             size_t size, uint8_t *out)
{
    uint8_t nonce[12] = {0, 0, 0, dir};
    uint8_t ad[1 + 6 + 1 + 8] = {6, 'c', 'o', 'n', 'n', '-', '1', dir};
    for (int i = 0; i < 8; i++) {
        nonce[4 + i] = (uint8_t)(seq >> (56 - 8 * i));
        ad[8 + i] = (uint8_t)(seq >> (56 - 8 * i));
    }
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int len;
    assert_int_equal(EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce), 1);
    assert_int_equal(EVP_EncryptUpdate(ctx, NULL, &len, ad, sizeof(ad)), 1);
    assert_int_equal(EVP_EncryptUpdate(ctx, out, &len, plain, (int)size), 1);
    assert_int_equal(EVP_EncryptFinal_ex(ctx, out + len, &len), 1);
    assert_int_equal(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, out + size), 1);
    EVP_CIPHER_CTX_free(ctx);
}

static void test_construction_matches_document(void **state)
{
    (void)state;
    proto_seal_t *seal = s_sealer();
    proto_buf_t out;
    proto_buf_init(&out);
    size_t size = strlen(s_plain);
    uint8_t expected[sizeof(s_plain) + PROTO_SEAL_TAG_SIZE];
    struct {
        proto_dir_t dir;
        const uint8_t *key;
        uint64_t seq;
    } cases[] = {{PROTO_DIR_PUB_TO_PRIV, s_key_pub_to_priv, 1},
                 {PROTO_DIR_PRIV_TO_PUB, s_key_priv_to_pub, 0x0102030405060708ull},
                 {PROTO_DIR_PUB_TO_PRIV, s_key_pub_to_priv, UINT64_MAX}};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(
            proto_seal_box(seal, cases[i].dir, cases[i].seq, (const uint8_t *)s_plain, size, &out),
            PROTO_OK);
        assert_int_equal(out.size, size + PROTO_SEAL_TAG_SIZE);
        s_reference_seal(cases[i].key, (uint8_t)cases[i].dir, cases[i].seq,
                         (const uint8_t *)s_plain, size, expected);
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

static void test_every_flipped_bit_refused(void **state)
{
    (void)state;
    proto_seal_t *seal = s_sealer();
    proto_buf_t sealed;
    proto_buf_init(&sealed);
    assert_int_equal(proto_seal_box(seal, PROTO_DIR_PUB_TO_PRIV, 5, (const uint8_t *)s_plain,
                                    strlen(s_plain), &sealed),
                     PROTO_OK);
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
    proto_buf_init(&sealed);
    assert_int_equal(proto_seal_box(seal, PROTO_DIR_PUB_TO_PRIV, 5, (const uint8_t *)s_plain,
                                    strlen(s_plain), &sealed),
                     PROTO_OK);
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
        cmocka_unit_test(test_bad_connection_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
