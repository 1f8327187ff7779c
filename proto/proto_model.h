/*  proto_model.h: the one model of the protocol (internal to proto/).

    Every message type has one table, a proto_schema_t (proto_codec.h), kept
    by the module that owns its struct: the broker dialogue in proto_msg.c,
    the sealed payloads in proto_sync.c, the invitation body in
    proto_invite.c. A table says the type's name and number, who may send it
    and to whom (proto_sender_t bits in from and to), what it is for, and
    its keys with their kinds, limits and meanings. The same tables drive
    the codec, proto_msg_may_send (the "who may send this" checks of the
    broker and the node link) and the message tables of docs/protocol.md
    (proto_doc.c prints them).
*/
#ifndef PROTO_MODEL_H
#define PROTO_MODEL_H

#include "proto_codec.h"

//  The broker dialogue's tables (HELLO ... INVITED), in the order
//  docs/protocol.md shows them.
const proto_dialect_t *proto_msg_model(void);

//  The sealed payloads' tables (SYNC, RECEIPT).
const proto_dialect_t *proto_sync_model(void);

//  The invitation code body's table (INVITATION).
const proto_dialect_t *proto_invite_model(void);

//  The table of message type type, whichever module has it, or NULL.
const proto_schema_t *proto_model_find(unsigned type);

#endif
