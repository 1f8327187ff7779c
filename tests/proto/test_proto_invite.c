/*  test_proto_invite.c: invitation codes (proto_invite.h).

    Proves: a code round trips every field; surrounding white space is
    ignored; every single-character change of a code and every truncation
    is refused (never accepted, never a crash); expired codes, other format
    versions and text that is no code are refused with their own error and
    an actionable message; secrets are random; the token hash check works;
    a code made by a twinsync before the key exchange (no kx) is refused;
    the fingerprint is five groups of five digits, the same for the same
    code, and another for a code whose connection, endpoint, broker key, kx
    or secret was changed and re-encoded with a valid checksum (what a man
    in the middle would do).
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "mptext.h"
#include "proto.h"
#include "samples.h"

//  Encodes the sample into a malloc'ed string.
static char *s_code(void)
{
    proto_invite_t inv;
    samples_invite(&inv);
    proto_buf_t buf;
    proto_buf_init(&buf);
    proto_error_t err;
    if (proto_invite_encode(&inv, &buf, &err) != PROTO_OK)
        fail_msg("encode: %s", proto_error_str(&err));
    char *code = strdup((const char *)buf.data);
    assert_int_equal(strlen(code), buf.size);
    proto_buf_wipe(&buf);
    return code;
}

static void test_round_trip(void **state)
{
    (void)state;
    char *code = s_code();
    assert_memory_equal(code, "tsi1.", 5);
    assert_int_equal(strspn(code + 5, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                      "0123456789-_"),
                     strlen(code) - 5);
    proto_invite_t expected, got;
    samples_invite(&expected);
    proto_error_t err;
    assert_int_equal(proto_invite_decode(code, SAMPLES_NOW, &got, &err), PROTO_OK);
    assert_int_equal(got.version, PROTO_VERSION);
    assert_string_equal(got.conn, expected.conn);
    assert_string_equal(got.name, expected.name);
    assert_string_equal(got.mode, "basic");
    assert_string_equal(got.node_name, expected.node_name);
    assert_string_equal(got.instance_url, expected.instance_url);
    assert_string_equal(got.endpoint, expected.endpoint);
    assert_memory_equal(got.broker_key, expected.broker_key, PROTO_KEY_SIZE);
    assert_memory_equal(got.kx, expected.kx, PROTO_KEY_SIZE);
    assert_memory_equal(got.join_token, expected.join_token, PROTO_KEY_SIZE);
    assert_memory_equal(got.secret, expected.secret, PROTO_KEY_SIZE);
    assert_int_equal(got.expires, SAMPLES_EXPIRES);
    proto_invite_clear(&got);
    assert_null(got.conn);
    proto_invite_clear(&got);

    //  Pasted with a newline and spaces around it.
    char padded[4096];
    snprintf(padded, sizeof(padded), "  \t%s\r\n", code);
    assert_int_equal(proto_invite_decode(padded, SAMPLES_NOW, &got, &err), PROTO_OK);
    proto_invite_clear(&got);
    free(code);
}

static void test_every_single_change_refused(void **state)
{
    (void)state;
    char *code = s_code();
    size_t len = strlen(code);
    //  Every position, every printable replacement (and a few bytes that
    //  are not text at all).
    static const char extra[] = {'\t', '\n', '\x7f', '\x80', '\xff'};
    size_t tried = 0;
    for (size_t i = 0; i < len; i++) {
        char saved = code[i];
        for (int c = 0x20; c < 0x7f + (int)sizeof(extra); c++) {
            char repl = c < 0x7f ? (char)c : extra[c - 0x7f];
            if (repl == saved)
                continue;
            code[i] = repl;
            proto_invite_t got;
            proto_error_t err;
            proto_status_t rc = proto_invite_decode(code, SAMPLES_NOW, &got, &err);
            if (rc == PROTO_OK)
                fail_msg("accepted code with byte %zu changed to 0x%02x", i, (uint8_t)repl);
            assert_memory_equal(proto_error_str(&err), "cannot read invitation code: ", 29);
            assert_null(got.conn);
            tried++;
        }
        code[i] = saved;
    }
    assert_true(tried > len * 90);
    free(code);
}

static void test_every_truncation_refused(void **state)
{
    (void)state;
    char *code = s_code();
    size_t len = strlen(code);
    size_t incomplete = 0;
    for (size_t cut = 0; cut < len; cut++) {
        char *part = strndup(code, cut);
        proto_invite_t got;
        proto_error_t err;
        proto_status_t rc = proto_invite_decode(part, SAMPLES_NOW, &got, &err);
        if (rc == PROTO_OK)
            fail_msg("accepted code cut at %zu of %zu", cut, len);
        if (cut > 5) {
            assert_int_equal(rc, PROTO_E_TRUNCATED);
            assert_string_equal(proto_error_str(&err),
                                "cannot read invitation code: it is incomplete (was it copied "
                                "whole?)");
            incomplete++;
        }
        free(part);
    }
    assert_int_equal(incomplete, len - 6);
    free(code);
}

static void test_refusals_and_messages(void **state)
{
    (void)state;
    char *code = s_code();
    proto_invite_t got;
    proto_error_t err;

    //  Expired: at and after the expiry time.
    assert_int_equal(proto_invite_decode(code, SAMPLES_EXPIRES, &got, &err), PROTO_E_EXPIRED);
    assert_string_equal(proto_error_str(&err), "cannot read invitation code: it expired at "
                                               "2023-11-14T23:13:20Z; ask the other side for a "
                                               "new one");
    assert_null(got.conn);
    assert_int_equal(proto_invite_decode(code, SAMPLES_EXPIRES - 1, &got, &err), PROTO_OK);
    proto_invite_clear(&got);

    //  Another format version.
    code[3] = '2';
    assert_int_equal(proto_invite_decode(code, SAMPLES_NOW, &got, &err), PROTO_E_VERSION);
    assert_non_null(strstr(proto_error_str(&err), "upgrade"));
    code[3] = '1';

    //  Not a code at all.
    const char *not_codes[] = {"", "hello", "tsi", "TSI1.abc", "tsi1", "tsi.abc", NULL};
    for (size_t i = 0; not_codes[i]; i++) {
        assert_int_equal(proto_invite_decode(not_codes[i], SAMPLES_NOW, &got, &err),
                         PROTO_E_NOT_INVITE);
        assert_string_equal(proto_error_str(&err),
                            "cannot read invitation code: this is not a twinsync invitation "
                            "code (it starts with 'tsi1.')");
    }
    assert_int_equal(proto_invite_decode(NULL, SAMPLES_NOW, &got, &err), PROTO_E_NOT_INVITE);

    //  Altered: a changed character in the middle.
    size_t mid = strlen(code) / 2;
    code[mid] = code[mid] == 'A' ? 'B' : 'A';
    assert_int_equal(proto_invite_decode(code, SAMPLES_NOW, &got, &err), PROTO_E_CHECKSUM);
    assert_string_equal(proto_error_str(&err),
                        "cannot read invitation code: checksum mismatch (was it copied whole?)");
    free(code);

    //  Far too long.
    char *huge = malloc(PROTO_INVITE_MAX_TEXT + 16);
    memset(huge, 'A', PROTO_INVITE_MAX_TEXT + 15);
    memcpy(huge, "tsi1.", 5);
    huge[PROTO_INVITE_MAX_TEXT + 15] = '\0';
    assert_int_equal(proto_invite_decode(huge, SAMPLES_NOW, &got, &err), PROTO_E_NOT_INVITE);
    free(huge);
}

static void test_encoder_checks_fields(void **state)
{
    (void)state;
    proto_invite_t inv;
    proto_buf_t buf;
    proto_buf_init(&buf);
    proto_error_t err;
    samples_invite(&inv);
    inv.conn = "has space";
    assert_int_equal(proto_invite_encode(&inv, &buf, &err), PROTO_E_VALUE);
    assert_string_equal(err.field, "conn");
    assert_int_equal(buf.size, 0);
    samples_invite(&inv);
    inv.endpoint = NULL;
    assert_int_equal(proto_invite_encode(&inv, &buf, &err), PROTO_E_MISSING);
    assert_string_equal(err.field, "endpoint");
    samples_invite(&inv);
    inv.expires = 0;
    assert_int_equal(proto_invite_encode(&inv, &buf, &err), PROTO_E_VALUE);
    assert_string_equal(err.field, "expires");
    proto_buf_wipe(&buf);
}

static void test_secrets_and_token_hash(void **state)
{
    (void)state;
    proto_invite_t a, b;
    proto_invite_init(&a);
    proto_invite_init(&b);
    assert_int_equal(proto_invite_generate_secrets(&a), PROTO_OK);
    assert_int_equal(proto_invite_generate_secrets(&b), PROTO_OK);
    static const uint8_t zero[PROTO_KEY_SIZE];
    assert_memory_not_equal(a.join_token, zero, PROTO_KEY_SIZE);
    assert_memory_not_equal(a.secret, zero, PROTO_KEY_SIZE);
    assert_memory_not_equal(a.join_token, a.secret, PROTO_KEY_SIZE);
    assert_memory_not_equal(a.join_token, b.join_token, PROTO_KEY_SIZE);
    assert_memory_not_equal(a.secret, b.secret, PROTO_KEY_SIZE);

    //  SHA-256 of 32 zero bytes, a published test value.
    uint8_t hash[PROTO_KEY_SIZE];
    proto_invite_token_hash(zero, hash);
    static const uint8_t expected[PROTO_KEY_SIZE] = {
        0x66, 0x68, 0x7a, 0xad, 0xf8, 0x62, 0xbd, 0x77, 0x6c, 0x8f, 0xc1,
        0x8b, 0x8e, 0x9f, 0x8e, 0x20, 0x08, 0x97, 0x14, 0x85, 0x6e, 0xe2,
        0x33, 0xb3, 0x90, 0x2a, 0x59, 0x1d, 0x0d, 0x5f, 0x29, 0x25};
    assert_memory_equal(hash, expected, PROTO_KEY_SIZE);
    assert_true(proto_invite_token_matches(hash, zero));
    proto_invite_token_hash(a.join_token, hash);
    assert_true(proto_invite_token_matches(hash, a.join_token));
    assert_false(proto_invite_token_matches(hash, b.join_token));
    hash[31] ^= 1;
    assert_false(proto_invite_token_matches(hash, a.join_token));

    //  Clearing wipes the secrets.
    proto_invite_clear(&a);
    assert_memory_equal(a.secret, zero, PROTO_KEY_SIZE);
    assert_memory_equal(a.join_token, zero, PROTO_KEY_SIZE);
}

//  The fingerprint of inv after a trip through a code: what the private
//  admin sees for the code it got.
static void s_fingerprint_of_code(const proto_invite_t *inv, char fp[PROTO_INVITE_FINGERPRINT_SIZE])
{
    proto_buf_t buf;
    proto_buf_init(&buf);
    proto_error_t err;
    if (proto_invite_encode(inv, &buf, &err) != PROTO_OK)
        fail_msg("encode: %s", proto_error_str(&err));
    proto_invite_t got;
    assert_int_equal(proto_invite_decode((const char *)buf.data, SAMPLES_NOW, &got, &err),
                     PROTO_OK);
    proto_invite_fingerprint(&got, fp);
    proto_invite_clear(&got);
    proto_buf_wipe(&buf);
}

static void test_fingerprint(void **state)
{
    (void)state;
    proto_invite_t inv;
    samples_invite(&inv);
    char made[PROTO_INVITE_FINGERPRINT_SIZE], seen[PROTO_INVITE_FINGERPRINT_SIZE];
    proto_invite_fingerprint(&inv, made);
    //  Five groups of five digits, read over the phone.
    assert_int_equal(strlen(made), 29);
    for (int i = 0; i < 29; i++) {
        if (i % 6 == 5)
            assert_int_equal(made[i], ' ');
        else
            assert_true(made[i] >= '0' && made[i] <= '9');
    }
    //  The public admin's and the private admin's sides agree.
    s_fingerprint_of_code(&inv, seen);
    assert_string_equal(made, seen);
    //  What the admins do not compare does not change it.
    inv.name = "another name";
    inv.expires = SAMPLES_EXPIRES + 60;
    s_fingerprint_of_code(&inv, seen);
    assert_string_equal(made, seen);

    //  Everything a man in the middle would have to swap changes it, in a
    //  code that decodes fine (valid checksum).
    for (int what = 0; what < 6; what++) {
        samples_invite(&inv);
        switch (what) {
        case 0:
            inv.endpoint = "tcp://broker.evil.example:5560";
            break;
        case 1:
            inv.broker_key[7] ^= 0x01;
            break;
        case 2:
            inv.kx[31] ^= 0x80;
            break;
        case 3:
            inv.secret[0] ^= 0x01;
            break;
        case 4:
            inv.conn = "c-7f3a9c";
            break;
        default:
            inv.endpoint = "tcp://broker.acme.example:5561";
            break;
        }
        s_fingerprint_of_code(&inv, seen);
        if (strcmp(made, seen) == 0)
            fail_msg("change %d kept the fingerprint %s", what, made);
    }
}

//  A code without kx (made before the join had a key exchange) carried the
//  end-to-end secret itself: it is refused, never used as such.
static void test_code_without_kx_refused(void **state)
{
    (void)state;
    proto_invite_t inv;
    samples_invite(&inv);
    proto_buf_t body;
    proto_buf_init(&body);
    mptext("{v:257,t:48,conn:\"c-1\",name:\"n\",mode:\"basic\",node_name:\"p\","
           "instance_url:\"https://a.example\",endpoint:\"tcp://b:5560\",broker_key:B(32),"
           "join_token:B(32),secret:B(32),expires:4000000000}",
           &body);
    //  Wrap the body as a code: checksum first, then base64url.
    uint8_t digest[32];
    SHA256(body.data, body.size, digest);
    proto_buf_t raw;
    proto_buf_init(&raw);
    assert_int_equal(proto_buf_append(&raw, digest, PROTO_INVITE_CHECKSUM), 0);
    assert_int_equal(proto_buf_append(&raw, body.data, body.size), 0);
    char text[1024] = "tsi1.";
    size_t len = EVP_EncodeBlock((unsigned char *)text + 5, raw.data, (int)raw.size);
    for (size_t i = 5; i < 5 + len; i++)
        text[i] = text[i] == '+' ? '-' : text[i] == '/' ? '_' : text[i];
    while (text[4 + len] == '=')
        text[4 + len--] = '\0';
    proto_invite_t got;
    proto_error_t err;
    assert_int_equal(proto_invite_decode(text, SAMPLES_NOW, &got, &err), PROTO_E_MISSING);
    assert_string_equal(err.field, "kx");
    assert_non_null(strstr(proto_error_str(&err), "compatible twinsync"));
    proto_buf_wipe(&raw);
    proto_buf_wipe(&body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_every_single_change_refused),
        cmocka_unit_test(test_every_truncation_refused),
        cmocka_unit_test(test_refusals_and_messages),
        cmocka_unit_test(test_encoder_checks_fields),
        cmocka_unit_test(test_secrets_and_token_hash),
        cmocka_unit_test(test_fingerprint),
        cmocka_unit_test(test_code_without_kx_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
