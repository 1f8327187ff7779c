/*  proto.h: the twinsync wire library, everything in one include.

    proto_error   status codes and decode error reports
    proto_buf     growable byte buffer encoders write into
    proto_limits  protocol version, fixed limits, configurable decode limits
    proto_msg     broker dialogue messages (HELLO ... CONSUMED), msgpack codec
    proto_sync    sealed payload plaintexts (SYNC, RECEIPT)
    proto_invite  invitation codes and their fingerprint
    proto_kx      the join's key exchange (X25519, HMAC-SHA256, HKDF-SHA256)
    proto_seal    end-to-end sealing (HKDF-SHA256, AES-256-GCM)

    The library uses nothing else of twinsync; it links msgpack-c and OpenSSL
    libcrypto. docs/protocol.md is the specification it implements.
*/
#ifndef PROTO_H
#define PROTO_H

#include "proto_error.h"
#include "proto_buf.h"
#include "proto_limits.h"
#include "proto_msg.h"
#include "proto_sync.h"
#include "proto_invite.h"
#include "proto_kx.h"
#include "proto_seal.h"

#endif
