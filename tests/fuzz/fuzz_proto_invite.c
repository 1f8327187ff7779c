/*  fuzz_proto_invite.c: libFuzzer target for invitation code reading.

    Any text must be read or refused with a "cannot read invitation code: "
    message, without a crash or leak. A code that is read must encode back
    to a code that reads to the same fields.

    An input starting with a zero byte is taken as a msgpack body instead:
    the target wraps it in a code with a correct checksum, so the fuzzer
    reaches the body decoder, which the checksum would otherwise guard.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "proto.h"

//  Returns a malloc'ed invitation code text for body (checksum || body, base64url).
static char *s_wrap(const uint8_t *body, size_t size)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t raw_size = PROTO_INVITE_CHECKSUM + size;
    uint8_t *raw = malloc(raw_size);
    char *text = malloc(5 + (raw_size + 2) / 3 * 4 + 1);
    if (!raw || !text) {
        free(raw);
        free(text);
        return NULL;
    }
    uint8_t digest[SHA256_DIGEST_LENGTH];
    SHA256(body, size, digest);
    memcpy(raw, digest, PROTO_INVITE_CHECKSUM);
    memcpy(raw + PROTO_INVITE_CHECKSUM, body, size);
    char *p = text;
    memcpy(p, "tsi1.", 5);
    p += 5;
    uint32_t acc = 0;
    unsigned bits = 0;
    for (size_t i = 0; i < raw_size; i++) {
        acc = (acc << 8) | raw[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            *p++ = b64[(acc >> bits) & 63];
        }
    }
    if (bits)
        *p++ = b64[(acc << (6 - bits)) & 63];
    *p = '\0';
    free(raw);
    return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = NULL;
    if (size > 0 && data[0] == 0) {
        text = s_wrap(data + 1, size - 1);
    } else if ((text = malloc(size + 1)) != NULL) {
        memcpy(text, data, size);
        text[size] = '\0';
    }
    if (!text)
        return 0;
    proto_invite_t inv;
    proto_error_t err;
    proto_status_t rc = proto_invite_decode(text, 1, &inv, &err);
    free(text);
    if (rc != PROTO_OK) {
        if (inv.mem != NULL ||
            strncmp(proto_error_str(&err), "cannot read invitation code: ", 29) != 0)
            abort();
        return 0;
    }
    proto_buf_t buf;
    proto_buf_init(&buf);
    if (proto_invite_encode(&inv, &buf, &err) != PROTO_OK)
        abort();
    proto_invite_t again;
    if (proto_invite_decode((const char *)buf.data, 1, &again, &err) != PROTO_OK)
        abort();
    if (strcmp(inv.conn, again.conn) || strcmp(inv.name, again.name) ||
        strcmp(inv.endpoint, again.endpoint) || inv.expires != again.expires ||
        memcmp(inv.secret, again.secret, PROTO_KEY_SIZE) ||
        memcmp(inv.kx, again.kx, PROTO_KEY_SIZE) ||
        memcmp(inv.join_token, again.join_token, PROTO_KEY_SIZE))
        abort();
    proto_invite_clear(&again);
    proto_invite_clear(&inv);
    proto_buf_wipe(&buf);
    return 0;
}
