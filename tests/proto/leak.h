/*  leak.h: the roots someone could try with a leaked invitation code.

    An attacker who finds an invitation code after the join, and who also
    holds everything the broker saw (the JOIN's kx and auth, every sealed
    payload), has no private X25519 scalar. What they can compute is listed
    here: the code's secret used as the root the way twinsync used it
    before the key exchange, every other 32 bytes of the code and of the
    JOIN used as a root, their SHA-256, the documented root derivation fed
    with public values in place of the X25519 shared secret, and X25519
    with code bytes misused as a private scalar. tests/proto/test_proto_kx.c
    and tests/e2e/test_secrecy.py (through proto_leak_probe) prove that
    none of them opens a payload.
*/
#ifndef LEAK_H
#define LEAK_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

#define LEAK_MAX 64 //  Most candidates leak_candidates makes

//  One root to try and how it was made.
typedef struct {
    char how[96];                 //  "code secret (the old root)", ...
    uint8_t root[PROTO_KEY_SIZE]; //  The candidate root
} leak_candidate_t;

//  Fills out (LEAK_MAX entries) with the candidates computable from the
//  decoded code inv and, when not NULL, the JOIN's private_kx and auth.
//  Returns how many.
size_t leak_candidates(const proto_invite_t *inv, const uint8_t *private_kx, const uint8_t *auth,
                       leak_candidate_t *out);

#endif
