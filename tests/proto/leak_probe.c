/*  leak_probe.c: tries to open sealed payloads with what a leaked
    invitation code gives (leak.h); for tests/e2e/test_secrecy.py, which
    feeds it the real code and payloads read from a real broker's store.

    Reads lines on stdin:

        code TEXT                 the invitation code (expiry ignored)
        join KX_HEX AUTH_HEX      what JOIN carried (optional)
        root HEX                  the joined root, a control (optional)
        payload DIR SEQ HEX       a sealed payload of direction DIR (1, 2)

    Prints one line per payload and exits 0 when no candidate opened any
    payload (and the control root, if given, opened every one), 1 when one
    did (or the control failed), 2 on bad input.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "leak.h"

//  Parses hex into out (at most max bytes). Returns the byte count, or -1.
static long s_unhex(const char *hex, uint8_t *out, size_t max)
{
    size_t len = strlen(hex);
    if (len % 2 || len / 2 > max)
        return -1;
    for (size_t i = 0; i < len / 2; i++) {
        char pair[3] = {hex[2 * i], hex[2 * i + 1], 0};
        char *end = NULL;
        unsigned long v = strtoul(pair, &end, 16);
        if (*end)
            return -1;
        out[i] = (uint8_t)v;
    }
    return (long)(len / 2);
}

static bool s_opens(const uint8_t *root, const char *conn, int dir, uint64_t seq,
                    const uint8_t *sealed, size_t size)
{
    proto_seal_t *seal = proto_seal_new(root, conn);
    if (!seal)
        return false;
    proto_buf_t plain;
    proto_buf_init(&plain);
    bool opened = proto_seal_open(seal, (proto_dir_t)dir, seq, sealed, size, &plain) == PROTO_OK;
    proto_buf_wipe(&plain);
    proto_seal_destroy(&seal);
    return opened;
}

int main(void)
{
    static char line[4 * 1024 * 1024];
    static uint8_t payload[2 * 1024 * 1024];
    proto_invite_t inv;
    proto_invite_init(&inv);
    bool have_code = false, have_join = false, have_root = false, failed = false;
    uint8_t kx[PROTO_KEY_SIZE], auth[PROTO_KEY_SIZE], root[PROTO_KEY_SIZE];
    leak_candidate_t tries[LEAK_MAX];
    size_t count = 0, payloads = 0;
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *save = NULL, *word = strtok_r(line, " ", &save);
        if (!word)
            continue;
        if (!strcmp(word, "code")) {
            proto_error_t err;
            if (proto_invite_decode(strtok_r(NULL, " ", &save), 0, &inv, &err) != PROTO_OK) {
                fprintf(stderr, "leak_probe: %s\n", proto_error_str(&err));
                return 2;
            }
            have_code = true;
        } else if (!strcmp(word, "join")) {
            const char *k = strtok_r(NULL, " ", &save), *a = strtok_r(NULL, " ", &save);
            if (!k || !a || s_unhex(k, kx, 32) != 32 || s_unhex(a, auth, 32) != 32)
                return 2;
            have_join = true;
        } else if (!strcmp(word, "root")) {
            const char *r = strtok_r(NULL, " ", &save);
            if (!r || s_unhex(r, root, 32) != 32)
                return 2;
            have_root = true;
        } else if (!strcmp(word, "payload")) {
            const char *d = strtok_r(NULL, " ", &save), *s = strtok_r(NULL, " ", &save),
                       *h = strtok_r(NULL, " ", &save);
            if (!have_code || !d || !s || !h)
                return 2;
            int dir = (int)strtol(d, NULL, 10);
            uint64_t seq = strtoull(s, NULL, 10);
            long size = s_unhex(h, payload, sizeof payload);
            if (size < 0 || (dir != 1 && dir != 2))
                return 2;
            if (count == 0)
                count =
                    leak_candidates(&inv, have_join ? kx : NULL, have_join ? auth : NULL, tries);
            const char *opened = NULL;
            for (size_t c = 0; c < count && !opened; c++)
                if (s_opens(tries[c].root, inv.conn, dir, seq, payload, (size_t)size))
                    opened = tries[c].how;
            bool control = have_root && s_opens(root, inv.conn, dir, seq, payload, (size_t)size);
            printf("payload dir=%d seq=%llu bytes=%ld: %s%s\n", dir, (unsigned long long)seq, size,
                   opened ? "OPENED by " : "opened by none of the candidates",
                   opened ? opened : "");
            if (have_root)
                printf("  control: the joined root %s it\n", control ? "opens" : "does NOT open");
            failed |= opened != NULL || (have_root && !control);
            payloads++;
        } else {
            return 2;
        }
    }
    printf("%zu payloads, %zu candidates each\n", payloads, count);
    proto_invite_clear(&inv);
    return failed || payloads == 0 ? 1 : 0;
}
