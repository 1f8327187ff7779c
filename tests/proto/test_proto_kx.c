/*  test_proto_kx.c: the join's key exchange (proto_kx.h).

    Proves: it is X25519 (the RFC 7748 §6.1 vectors); the authenticator and
    the root are the documented ones (HMAC and HKDF written out here, over a
    transcript built by hand); the private node's half and the public node's
    half derive the same root from fresh pairs; a join whose authenticator,
    private key, broker key, connection or invitation secret differs is
    refused (PROTO_E_JOIN_AUTH) and yields no root; and a leaked code opens
    nothing: with the whole code and everything the broker saw (JOIN's kx
    and auth, the sealed payloads), none of the roots in leak.h opens a
    payload sealed under the joined root, while that root does.
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

#include "leak.h"
#include "proto.h"
#include "samples.h"

static void s_unhex(const char *hex, uint8_t *out)
{
    for (size_t i = 0; i < strlen(hex) / 2; i++) {
        unsigned v = 0;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}

//  RFC 7748 §6.1.
static const char s_alice_secret[] =
    "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
static const char s_alice_public[] =
    "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
static const char s_bob_secret[] =
    "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb";
static const char s_bob_public[] =
    "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f";
static const char s_shared[] = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";

//  The transcript of docs/protocol.md §8.3, by hand.
static size_t s_transcript(const char *conn, const uint8_t *a, const uint8_t *b,
                           const uint8_t *broker, uint8_t *out)
{
    size_t n = 0, len = strlen(conn);
    memcpy(out, "twinsync join v1", 16);
    n = 16;
    out[n++] = (uint8_t)len;
    memcpy(out + n, conn, len);
    n += len;
    memcpy(out + n, a, 32);
    memcpy(out + n + 32, b, 32);
    memcpy(out + n + 64, broker, 32);
    return n + 96;
}

static void test_x25519_vectors_and_documented_derivation(void **state)
{
    (void)state;
    uint8_t a[32], A[32], b[32], B[32], K[32], got[32], broker[32], s[32];
    s_unhex(s_alice_secret, a);
    s_unhex(s_alice_public, A);
    s_unhex(s_bob_secret, b);
    s_unhex(s_bob_public, B);
    s_unhex(s_shared, K);
    assert_int_equal(proto_kx_public_key(a, got), PROTO_OK);
    assert_memory_equal(got, A, 32);
    assert_int_equal(proto_kx_public_key(b, got), PROTO_OK);
    assert_memory_equal(got, B, 32);
    for (int i = 0; i < 32; i++) {
        broker[i] = (uint8_t)(0xb0 + i);
        s[i] = (uint8_t)(0x80 + i);
    }
    proto_kx_transcript_t t = {.conn = "c-0123456789abcdef"};
    memcpy(t.public_kx, A, 32);
    memcpy(t.private_kx, B, 32);
    memcpy(t.broker_key, broker, 32);

    //  auth = HMAC-SHA256(key = s, transcript)
    uint8_t transcript[256], expected[32], auth[32];
    size_t tlen = s_transcript(t.conn, A, B, broker, transcript);
    unsigned int len = 0;
    HMAC(EVP_sha256(), s, 32, transcript, tlen, expected, &len);
    assert_int_equal(proto_kx_auth(s, &t, auth), PROTO_OK);
    assert_memory_equal(auth, expected, 32);

    //  root = HKDF-SHA256(ikm = K, salt = s, info = "twinsync root v1" ||
    //  transcript): prk = HMAC(s, K); root = HMAC(prk, info || 0x01).
    uint8_t prk[32], info[300];
    HMAC(EVP_sha256(), s, 32, K, 32, prk, &len);
    memcpy(info, "twinsync root v1", 16);
    memcpy(info + 16, transcript, tlen);
    info[16 + tlen] = 1;
    HMAC(EVP_sha256(), prk, 32, info, 16 + tlen + 1, expected, &len);
    assert_int_equal(proto_kx_root(a, B, s, &t, got), PROTO_OK); //  The public node's view
    assert_memory_equal(got, expected, 32);
    assert_int_equal(proto_kx_root(b, A, s, &t, got), PROTO_OK); //  The private node's view
    assert_memory_equal(got, expected, 32);
    assert_int_equal(proto_kx_finish(&t, a, s, auth, got), PROTO_OK);
    assert_memory_equal(got, expected, 32);

    //  A peer key of small order (zero) makes no root.
    uint8_t zero[32] = {0};
    assert_int_equal(proto_kx_root(a, zero, s, &t, got), PROTO_E_CRYPTO);
    assert_memory_equal(got, zero, 32);
    //  Nor does a transcript without a valid connection id.
    t.conn = "bad id!";
    assert_int_equal(proto_kx_auth(s, &t, auth), PROTO_E_VALUE);
    assert_int_equal(proto_kx_root(a, B, s, &t, got), PROTO_E_VALUE);
}

//  A join as the nodes do it: the public node's pair in the sample code,
//  the private node's half from the code. t is what JOINED brings.
typedef struct {
    proto_invite_t inv;                //  The code (sample, with a fresh kx)
    uint8_t kx_secret[PROTO_KEY_SIZE]; //  Public node's X25519 secret
    proto_kx_transcript_t t;           //  The transcript the public node checks
    uint8_t auth[PROTO_KEY_SIZE];      //  JOIN's authenticator
    uint8_t root[PROTO_KEY_SIZE];      //  The private node's root
} s_join_t;

static void s_join(s_join_t *j)
{
    samples_invite(&j->inv);
    assert_int_equal(proto_invite_generate_secrets(&j->inv), PROTO_OK);
    assert_int_equal(proto_kx_keypair(j->kx_secret, j->inv.kx), PROTO_OK);
    memset(&j->t, 0, sizeof j->t);
    j->t.conn = j->inv.conn;
    memcpy(j->t.public_kx, j->inv.kx, 32);
    memcpy(j->t.broker_key, j->inv.broker_key, 32);
    assert_int_equal(proto_kx_accept(&j->inv, j->t.private_kx, j->auth, j->root), PROTO_OK);
}

static void test_both_halves_agree(void **state)
{
    (void)state;
    s_join_t j, k;
    s_join(&j);
    uint8_t root[32], again[32];
    assert_int_equal(proto_kx_finish(&j.t, j.kx_secret, j.inv.secret, j.auth, root), PROTO_OK);
    assert_memory_equal(root, j.root, 32);
    //  The root is neither the secret nor the token, and each join has its own.
    assert_memory_not_equal(root, j.inv.secret, 32);
    assert_memory_not_equal(root, j.inv.join_token, 32);
    s_join(&k);
    assert_memory_not_equal(k.root, j.root, 32);
    //  Fresh pairs each time; the public key matches the secret.
    uint8_t s1[32], p1[32], s2[32], p2[32];
    assert_int_equal(proto_kx_keypair(s1, p1), PROTO_OK);
    assert_int_equal(proto_kx_keypair(s2, p2), PROTO_OK);
    assert_memory_not_equal(s1, s2, 32);
    assert_int_equal(proto_kx_public_key(s1, again), PROTO_OK);
    assert_memory_equal(again, p1, 32);
}

static void test_tampered_join_refused(void **state)
{
    (void)state;
    static const uint8_t zero[32];
    for (int what = 0; what < 6; what++) {
        s_join_t j;
        s_join(&j);
        uint8_t secret[32], root[32], other[32];
        memcpy(secret, j.inv.secret, 32);
        switch (what) {
        case 0: //  A flipped bit of the authenticator
            j.auth[13] ^= 0x04;
            break;
        case 1: //  The broker (or anyone) swaps in a key of its own
            assert_int_equal(proto_kx_keypair(other, j.t.private_kx), PROTO_OK);
            break;
        case 2: //  Another invitation secret (another code)
            secret[0] ^= 1;
            break;
        case 3: //  Another broker than the code named
            j.t.broker_key[0] ^= 1;
            break;
        case 4: //  Another connection
            j.t.conn = "c-other";
            break;
        default: //  Another public key than the code carried
            j.t.public_kx[5] ^= 1;
            break;
        }
        memset(root, 0xee, sizeof root);
        proto_status_t rc = proto_kx_finish(&j.t, j.kx_secret, secret, j.auth, root);
        if (rc != PROTO_E_JOIN_AUTH)
            fail_msg("tampering %d: got %s", what, proto_status_str(rc));
        assert_memory_equal(root, zero, 32);
    }
}

//  True when root opens payload seq of dir.
static bool s_opens(const uint8_t root[32], const char *conn, proto_dir_t dir, uint64_t seq,
                    const proto_buf_t *sealed)
{
    proto_seal_t *seal = proto_seal_new(root, conn);
    assert_non_null(seal);
    proto_buf_t plain;
    proto_buf_init(&plain);
    bool opened = proto_seal_open(seal, dir, seq, sealed->data, sealed->size, &plain) == PROTO_OK;
    proto_buf_wipe(&plain);
    proto_seal_destroy(&seal);
    return opened;
}

static void test_leaked_code_opens_nothing(void **state)
{
    (void)state;
    s_join_t j;
    s_join(&j);
    uint8_t root[32];
    assert_int_equal(proto_kx_finish(&j.t, j.kx_secret, j.inv.secret, j.auth, root), PROTO_OK);

    //  Payloads both ways, sealed by each node under the joined root.
    proto_seal_t *pub = proto_seal_new(root, j.inv.conn),
                 *priv = proto_seal_new(j.root, j.inv.conn);
    proto_buf_t sealed[4];
    for (int i = 0; i < 4; i++) {
        proto_buf_init(&sealed[i]);
        proto_seal_t *sealer = i < 2 ? pub : priv;
        proto_dir_t dir = i < 2 ? PROTO_DIR_PUB_TO_PRIV : PROTO_DIR_PRIV_TO_PUB;
        const char *text = "SYNC INC0010001: printer on fire";
        assert_int_equal(proto_seal_box(sealer, dir, (uint64_t)(i % 2 + 1), (const uint8_t *)text,
                                        strlen(text), &sealed[i]),
                         PROTO_OK);
    }

    //  The code leaks after the join: it is all the attacker has, with what
    //  the broker saw.
    proto_buf_t code;
    proto_buf_init(&code);
    assert_int_equal(proto_invite_encode(&j.inv, &code, NULL), PROTO_OK);
    proto_invite_t leaked;
    proto_error_t err;
    assert_int_equal(proto_invite_decode((const char *)code.data, SAMPLES_NOW, &leaked, &err),
                     PROTO_OK);
    leak_candidate_t tries[LEAK_MAX];
    size_t count = leak_candidates(&leaked, j.t.private_kx, j.auth, tries);
    assert_true(count >= 30);
    for (int i = 0; i < 4; i++) {
        proto_dir_t dir = i < 2 ? PROTO_DIR_PUB_TO_PRIV : PROTO_DIR_PRIV_TO_PUB;
        uint64_t seq = (uint64_t)(i % 2 + 1);
        for (size_t c = 0; c < count; c++)
            if (s_opens(tries[c].root, leaked.conn, dir, seq, &sealed[i]))
                fail_msg("payload %d opened with %s", i, tries[c].how);
        //  The probe is not blind: the joined root opens them all.
        assert_true(s_opens(root, leaked.conn, dir, seq, &sealed[i]));
        proto_buf_wipe(&sealed[i]);
    }
    //  Nor blind to the old scheme: when the code's secret was the root
    //  (before 1.2), the first candidate opens what was sealed under it.
    proto_seal_t *old = proto_seal_new(leaked.secret, leaked.conn);
    proto_buf_t then;
    proto_buf_init(&then);
    assert_int_equal(
        proto_seal_box(old, PROTO_DIR_PUB_TO_PRIV, 1, (const uint8_t *)"old", 3, &then), PROTO_OK);
    assert_true(s_opens(tries[0].root, leaked.conn, PROTO_DIR_PUB_TO_PRIV, 1, &then));
    proto_buf_wipe(&then);
    proto_seal_destroy(&old);
    proto_invite_clear(&leaked);
    proto_buf_wipe(&code);
    proto_seal_destroy(&pub);
    proto_seal_destroy(&priv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_x25519_vectors_and_documented_derivation),
        cmocka_unit_test(test_both_halves_agree),
        cmocka_unit_test(test_tampered_join_refused),
        cmocka_unit_test(test_leaked_code_opens_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
