/*  proto_invite.c: invitation codes (see proto_invite.h).

    Text layout, format 1:

        "tsi1." base64url-without-padding( checksum(8) || body )
        checksum = first 8 bytes of SHA-256(body)
        body     = msgpack map, schema s_invitation below ("t" = 48)

    The checksum comes first so that a cut anywhere lands inside the body: a
    code whose checksum fails and whose body is cut short is reported as
    incomplete, any other mismatch as altered. The base64url reader accepts
    only the canonical form (unused low bits zero, no length that base64
    cannot produce), so every single changed character either changes the
    decoded bytes, caught by the checksum, or breaks the canonical form.
*/
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "proto_codec.h"
#include "proto_invite.h"
#include "proto_model.h"

#define S_PREFIX_LEN (sizeof(PROTO_INVITE_PREFIX) - 1)
#define S_MAX_MODE   16

static const proto_fdef_t s_invitation_fields[] = {
    PROTO_S_FIELD(proto_invite_t, conn, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_ID, "Connection id"),
    PROTO_S_FIELD(proto_invite_t, name, PROTO_K_STR, PROTO_F_REQ, 0, PROTO_MAX_NAME,
                  "Connection name chosen by the admin"),
    PROTO_S_FIELD(proto_invite_t, mode, PROTO_K_STR, PROTO_S_ID, 0, S_MAX_MODE,
                  "Sync mode; `\"basic\"` in this release"),
    PROTO_S_FIELD(proto_invite_t, node_name, PROTO_K_STR, PROTO_F_REQ, 0, PROTO_MAX_NAME,
                  "Public node's name"),
    PROTO_S_FIELD(proto_invite_t, instance_url, PROTO_K_STR, PROTO_F_REQ, 0, PROTO_MAX_URL,
                  "Public side's ServiceNow URL"),
    PROTO_S_FIELD(proto_invite_t, endpoint, PROTO_K_STR, PROTO_F_REQ, 0, PROTO_MAX_URL,
                  "Broker endpoint, `tcp://host:port`"),
    PROTO_S_FIELD(proto_invite_t, broker_key, PROTO_K_KEY, PROTO_F_REQ, 0, 0,
                  "Broker's CURVE public key, raw (Z85 is 40 characters of it)"),
    PROTO_S_FIELD(proto_invite_t, kx, PROTO_K_KEY, PROTO_F_REQ, 0, 0,
                  "Public node's X25519 public key for the join's key exchange (§8.3)"),
    PROTO_S_FIELD(proto_invite_t, join_token, PROTO_K_KEY, PROTO_F_REQ, 0, 0,
                  "Single-use join token (random)"),
    PROTO_S_FIELD(proto_invite_t, secret, PROTO_K_KEY, PROTO_F_REQ, 0, 0,
                  "Invitation secret (random): authenticates the key exchange (§8.3); no "
                  "payload key derives from it alone"),
    PROTO_S_FIELD(proto_invite_t, expires, PROTO_K_U64, PROTO_F_REQ, 1, 0,
                  "Unix seconds; refused from then on"),
};
//  Made by the public node, carried to the private node's admin by hand.
static const proto_schema_t s_invitation = PROTO_S_MESSAGE(
    "INVITATION", PROTO_INVITATION, proto_invite_t, s_invitation_fields, NULL, PROTO_SENDER_PUBLIC,
    PROTO_SENDER_PRIVATE,
    "Everything the private node needs to join, handed over by the admins as an invitation code");
static const proto_schema_t *const s_schemas[] = {&s_invitation};
static const proto_dialect_t s_dialect = {PROTO_S_ARR(s_schemas)};

const proto_dialect_t *proto_invite_model(void)
{
    return &s_dialect;
}

static const char s_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

void proto_invite_init(proto_invite_t *self)
{
    memset(self, 0, sizeof(*self));
}

void proto_invite_clear(proto_invite_t *self)
{
    proto_mem_free(&self->mem);
    OPENSSL_cleanse(self, sizeof(*self));
}

proto_status_t proto_invite_generate_secrets(proto_invite_t *self)
{
    if (RAND_bytes(self->join_token, PROTO_KEY_SIZE) != 1 ||
        RAND_bytes(self->secret, PROTO_KEY_SIZE) != 1)
        return PROTO_E_CRYPTO;
    return PROTO_OK;
}

void proto_invite_fingerprint(const proto_invite_t *self, char out[PROTO_INVITE_FINGERPRINT_SIZE])
{
    static const char label[] = "twinsync fingerprint v1";
    uint8_t input[sizeof label - 1 + 1 + PROTO_MAX_ID + 2 + PROTO_MAX_URL + 3 * PROTO_KEY_SIZE];
    size_t conn_len = self->conn ? strnlen(self->conn, PROTO_MAX_ID) : 0;
    size_t endpoint_len = self->endpoint ? strnlen(self->endpoint, PROTO_MAX_URL) : 0;
    size_t n = sizeof label - 1;
    memcpy(input, label, n);
    input[n++] = (uint8_t)conn_len;
    if (conn_len)
        memcpy(input + n, self->conn, conn_len);
    n += conn_len;
    input[n++] = (uint8_t)(endpoint_len >> 8);
    input[n++] = (uint8_t)endpoint_len;
    if (endpoint_len)
        memcpy(input + n, self->endpoint, endpoint_len);
    n += endpoint_len;
    memcpy(input + n, self->broker_key, PROTO_KEY_SIZE);
    memcpy(input + n + PROTO_KEY_SIZE, self->kx, PROTO_KEY_SIZE);
    memcpy(input + n + 2 * PROTO_KEY_SIZE, self->secret, PROTO_KEY_SIZE);
    n += 3 * PROTO_KEY_SIZE;
    uint8_t digest[SHA256_DIGEST_LENGTH];
    SHA256(input, n, digest);
    OPENSSL_cleanse(input, sizeof input);
    size_t at = 0;
    for (int group = 0; group < 5; group++) {
        const uint8_t *p = digest + 4 * group;
        uint32_t value = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        at += (size_t)snprintf(out + at, PROTO_INVITE_FINGERPRINT_SIZE - at, "%s%05u",
                               group ? " " : "", (unsigned)(value % 100000u));
    }
}

void proto_invite_token_hash(const uint8_t token[PROTO_KEY_SIZE], uint8_t hash[PROTO_KEY_SIZE])
{
    SHA256(token, PROTO_KEY_SIZE, hash);
}

bool proto_invite_token_matches(const uint8_t hash[PROTO_KEY_SIZE],
                                const uint8_t token[PROTO_KEY_SIZE])
{
    uint8_t computed[PROTO_KEY_SIZE];
    proto_invite_token_hash(token, computed);
    return CRYPTO_memcmp(computed, hash, PROTO_KEY_SIZE) == 0;
}

//  Appends base64url (no padding) of data to out. Returns 0 or -1.
static int s_b64_encode(const uint8_t *data, size_t size, proto_buf_t *out)
{
    if (proto_buf_reserve(out, (size + 2) / 3 * 4) != 0)
        return -1;
    char *p = (char *)out->data + out->size;
    size_t i = 0;
    for (; i + 3 <= size; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        *p++ = s_b64[v >> 18], *p++ = s_b64[(v >> 12) & 63];
        *p++ = s_b64[(v >> 6) & 63], *p++ = s_b64[v & 63];
    }
    if (size - i == 1) {
        uint32_t v = (uint32_t)data[i] << 16;
        *p++ = s_b64[v >> 18], *p++ = s_b64[(v >> 12) & 63];
    } else if (size - i == 2) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8;
        *p++ = s_b64[v >> 18], *p++ = s_b64[(v >> 12) & 63], *p++ = s_b64[(v >> 6) & 63];
    }
    out->size = (size_t)(p - (char *)out->data);
    return 0;
}

static int s_b64_value(char c)
{
    const char *hit = c ? strchr(s_b64, c) : NULL;
    return hit ? (int)(hit - s_b64) : -1;
}

//  Decodes base64url without padding into out (contents replaced); sets
//  *canonical to false when the unused low bits of the last character are
//  not zero (an altered or cut code). Returns PROTO_OK, PROTO_E_CHECKSUM (a
//  character base64url does not use), PROTO_E_TRUNCATED (a length base64
//  cannot produce) or PROTO_E_NOMEM.
static proto_status_t s_b64_decode(const char *text, size_t len, proto_buf_t *out, bool *canonical)
{
    proto_buf_reset(out);
    if (len % 4 == 1)
        return PROTO_E_TRUNCATED;
    if (proto_buf_reserve(out, len / 4 * 3 + 3) != 0)
        return PROTO_E_NOMEM;
    uint32_t acc = 0;
    unsigned bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = s_b64_value(text[i]);
        if (v < 0)
            return PROTO_E_CHECKSUM;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out->data[out->size++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    *canonical = acc == 0;
    return PROTO_OK;
}

proto_status_t proto_invite_encode(const proto_invite_t *self, proto_buf_t *out, proto_error_t *err)
{
    proto_buf_t body, raw;
    proto_buf_init(&body);
    proto_buf_init(&raw);
    proto_buf_reset(out);
    proto_status_t rc =
        proto_codec_encode(&s_invitation, self, NULL, PROTO_INVITE_MAX_TEXT / 2, &body, err);
    uint8_t digest[SHA256_DIGEST_LENGTH];
    if (rc == PROTO_OK) {
        SHA256(body.data, body.size, digest);
        if (proto_buf_append(&raw, digest, PROTO_INVITE_CHECKSUM) ||
            proto_buf_append(&raw, body.data, body.size) ||
            proto_buf_append(out, PROTO_INVITE_PREFIX, S_PREFIX_LEN) ||
            s_b64_encode(raw.data, raw.size, out) || proto_buf_append(out, "", 1))
            rc = proto_error_set(err, PROTO_E_NOMEM, NULL, 0, 0);
        else
            out->size--; //  The NUL terminates, it does not count
    }
    if (rc != PROTO_OK)
        proto_buf_reset(out);
    proto_buf_wipe(&body);
    proto_buf_wipe(&raw);
    return rc;
}

//  Sets err to code with the user-facing message "cannot read invitation
//  code: ...".
static proto_status_t s_refuse(proto_error_t *err, proto_status_t code, const char *field,
                               const char *why)
{
    proto_error_set(err, code, field, 0, 0);
    if (err)
        snprintf(err->text, sizeof(err->text), "cannot read invitation code: %.220s", why);
    return code;
}

//  Checks the "tsiN." prefix. Returns PROTO_OK, PROTO_E_VERSION for another
//  format number, or PROTO_E_NOT_INVITE.
static proto_status_t s_check_prefix(const char *text, size_t len, proto_error_t *err)
{
    if (len >= S_PREFIX_LEN && memcmp(text, PROTO_INVITE_PREFIX, S_PREFIX_LEN) == 0)
        return PROTO_OK;
    size_t digits = 0;
    while (3 + digits < len && text[3 + digits] >= '0' && text[3 + digits] <= '9')
        digits++;
    if (len > 3 && memcmp(text, "tsi", 3) == 0 && digits > 0 && 3 + digits < len &&
        text[3 + digits] == '.')
        return s_refuse(err, PROTO_E_VERSION, NULL,
                        "it uses another invitation format than 'tsi1.'; upgrade the older of "
                        "the two twinsync installations");
    return s_refuse(err, PROTO_E_NOT_INVITE, NULL,
                    "this is not a twinsync invitation code (it starts with 'tsi1.')");
}

//  Reads the body of raw (checksum || body) into *out after checking the
//  checksum; a non-canonical text counts as a checksum failure.
static proto_status_t s_read_raw(const proto_buf_t *raw, bool canonical, proto_invite_t *out,
                                 proto_error_t *err)
{
    static const char *incomplete = "it is incomplete (was it copied whole?)";
    if (raw->size <= PROTO_INVITE_CHECKSUM)
        return s_refuse(err, PROTO_E_TRUNCATED, NULL, incomplete);
    const uint8_t *body = raw->data + PROTO_INVITE_CHECKSUM;
    size_t body_size = raw->size - PROTO_INVITE_CHECKSUM;
    uint8_t digest[SHA256_DIGEST_LENGTH];
    SHA256(body, body_size, digest);
    const proto_schema_t *schema = NULL;
    uint16_t version = 0;
    proto_error_t body_err;
    proto_status_t rc =
        proto_codec_decode(&s_dialect, body, body_size, NULL, PROTO_INVITE_MAX_TEXT, out,
                           sizeof(*out), &schema, &version, &out->mem, &body_err);
    if (!canonical || CRYPTO_memcmp(digest, raw->data, PROTO_INVITE_CHECKSUM) != 0) {
        proto_invite_clear(out);
        if (rc == PROTO_E_TRUNCATED)
            return s_refuse(err, PROTO_E_TRUNCATED, NULL, incomplete);
        return s_refuse(err, PROTO_E_CHECKSUM, NULL, "checksum mismatch (was it copied whole?)");
    }
    if (rc == PROTO_E_VERSION)
        return s_refuse(err, PROTO_E_VERSION, "v",
                        "it was made by an incompatible twinsync version; upgrade the older of "
                        "the two twinsync installations");
    if (rc != PROTO_OK) {
        char why[sizeof(body_err.text) + 64];
        snprintf(why, sizeof(why), "%s (was it made by a compatible twinsync?)",
                 proto_error_str(&body_err));
        return s_refuse(err, rc, body_err.field, why);
    }
    out->version = version;
    return PROTO_OK;
}

proto_status_t proto_invite_decode(const char *text, uint64_t now, proto_invite_t *out,
                                   proto_error_t *err)
{
    proto_invite_init(out);
    proto_error_clear(err);
    if (!text)
        return s_refuse(err, PROTO_E_NOT_INVITE, NULL, "no text given");
    size_t len = strlen(text);
    while (len && strchr(" \t\r\n", text[len - 1]))
        len--;
    while (len && strchr(" \t\r\n", *text))
        text++, len--;
    if (len > PROTO_INVITE_MAX_TEXT)
        return s_refuse(err, PROTO_E_NOT_INVITE, NULL,
                        "text too long to be a twinsync invitation code");
    proto_status_t rc = s_check_prefix(text, len, err);
    if (rc != PROTO_OK)
        return rc;

    proto_buf_t raw;
    proto_buf_init(&raw);
    bool canonical = true;
    rc = s_b64_decode(text + S_PREFIX_LEN, len - S_PREFIX_LEN, &raw, &canonical);
    if (rc == PROTO_E_TRUNCATED)
        s_refuse(err, rc, NULL, "it is incomplete (was it copied whole?)");
    else if (rc == PROTO_E_CHECKSUM)
        s_refuse(err, rc, NULL,
                 "it contains characters an invitation code cannot hold "
                 "(was it copied whole, without changes?)");
    else if (rc != PROTO_OK)
        s_refuse(err, rc, NULL, "out of memory");
    else
        rc = s_read_raw(&raw, canonical, out, err);
    proto_buf_wipe(&raw);
    if (rc == PROTO_OK && out->expires <= now) {
        char why[160];
        time_t at = (time_t)out->expires;
        struct tm tm;
        char when[32] = "?";
        if (gmtime_r(&at, &tm))
            strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(why, sizeof(why), "it expired at %s; ask the other side for a new one", when);
        proto_invite_clear(out);
        rc = s_refuse(err, PROTO_E_EXPIRED, "expires", why);
    }
    if (rc != PROTO_OK)
        proto_invite_clear(out);
    return rc;
}
