/*  samples.h: typical, valid values of every proto message, payload and
    invitation, shared by the unit tests and the fuzz corpus generator.
    Everything points to static data: nothing to free.
*/
#ifndef SAMPLES_H
#define SAMPLES_H

#include <stdbool.h>
#include <stddef.h>

#include "proto.h"

//  Every broker message type, in wire order.
extern const proto_type_t samples_types[];
extern const size_t samples_types_count;

//  Fills *msg with a typical message of type.
void samples_msg(proto_msg_t *msg, proto_type_t type);

//  A SYNC with four fields and two comments.
void samples_sync(proto_payload_t *payload);

//  A RECEIPT, applied or refused.
void samples_receipt(proto_payload_t *payload, bool applied);

#define SAMPLES_NOW     1700000000u          //  "Now" for invitation tests
#define SAMPLES_EXPIRES (SAMPLES_NOW + 3600) //  Expiry of samples_invite

//  An invitation with fixed keys, expiring at SAMPLES_EXPIRES.
void samples_invite(proto_invite_t *invite);

#endif
