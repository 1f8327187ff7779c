/*  samples.c: valid sample values for tests and corpus (see samples.h). */
#include <string.h>

#include "samples.h"

const proto_type_t samples_types[] = {
    PROTO_HELLO,   PROTO_WELCOME,  PROTO_ERROR,   PROTO_PING,    PROTO_PONG,
    PROTO_INVITE,  PROTO_JOIN,     PROTO_JOINED,  PROTO_PUBLISH, PROTO_STORED,
    PROTO_DELIVER, PROTO_CONSUMED, PROTO_INVITED,
};
const size_t samples_types_count = sizeof(samples_types) / sizeof(samples_types[0]);

static const uint8_t s_payload[] = {0xde, 0xad, 0xbe, 0xef, 0x00, 0xff};
//  A batch of a file chunk (42, 43) and a record (44).
static const proto_item_t s_more[] = {{s_payload, 3, PROTO_DATA_FILE}, {s_payload + 3, 0, 0}};
static const proto_conn_state_t s_conns[] = {
    {"conn-1", 10, 7, 11},
    {"conn.2:x_Y", 0, UINT64_MAX, 0},
};

void samples_msg(proto_msg_t *msg, proto_type_t type)
{
    proto_msg_init(msg, type);
    switch (type) {
    case PROTO_HELLO:
        msg->hello = (proto_hello_t){"node-a", PROTO_ROLE_PRIVATE, 32, s_conns, 2, 16};
        break;
    case PROTO_WELCOME:
        msg->welcome = (proto_welcome_t){"broker-1", 1000, 1048576, 64, s_conns, 1, 8};
        break;
    case PROTO_ERROR:
        msg->error = (proto_msg_error_t){PROTO_ERR_QUEUE_FULL, "queue full", "conn-1", true, 9};
        break;
    case PROTO_INVITE:
        msg->invite.conn = "conn-1";
        memset(msg->invite.token_hash, 0xab, PROTO_KEY_SIZE);
        msg->invite.expires = 1700000000;
        msg->invite.description = "public node \xc3\xa9t\xc3\xa9";
        break;
    case PROTO_JOIN:
        msg->join.conn = "conn-1";
        memset(msg->join.token, 0x5a, PROTO_KEY_SIZE);
        msg->join.description = "private node";
        memset(msg->join.kx, 0x6b, PROTO_KEY_SIZE);
        msg->join.has_kx = true;
        memset(msg->join.auth, 0x7c, PROTO_KEY_SIZE);
        msg->join.has_auth = true;
        break;
    case PROTO_JOINED:
        msg->joined.conn = "conn-1";
        msg->joined.description = "the other side";
        memset(msg->joined.kx, 0x6b, PROTO_KEY_SIZE);
        msg->joined.has_kx = true;
        memset(msg->joined.auth, 0x7c, PROTO_KEY_SIZE);
        msg->joined.has_auth = true;
        break;
    case PROTO_PUBLISH:
    case PROTO_DELIVER:
        msg->publish =
            (proto_data_t){"conn-1", 42, s_payload, sizeof(s_payload), s_more, 2, PROTO_DATA_FILE};
        break;
    case PROTO_STORED:
    case PROTO_CONSUMED:
        msg->stored = (proto_ack_t){"conn-1", 42};
        break;
    case PROTO_INVITED:
        msg->invited = (proto_invited_t){"conn-1", 1700000000};
        break;
    default:
        break;
    }
}

static const proto_field_t s_fields[] = {
    {"short_description", "Printer on fire"},
    {"description", "Floor 3, next to the kitchen.\nSmoke \xe2\x80\x94 lots."},
    {"urgency", "1"},
    {"state", ""},
};
static const proto_comment_t s_comments[] = {
    {"0123456789abcdef0123456789abcdef", "beth.anglin", "2024-05-01 12:00:00", "On it."},
    {"fedcba9876543210fedcba9876543210", "abel.tuter", "2024-05-01 12:01:09",
     "\xf0\x9f\x94\xa5 still burning"},
};

void samples_sync(proto_payload_t *p)
{
    proto_payload_init(p, PROTO_SYNC);
    p->sync = (proto_sync_t){.table = "incident",
                             .sys_id = "9d385017c611228701d22104cc95c371",
                             .number = "INC0010001",
                             .instance = "dev12345.service-now.com",
                             .fields = s_fields,
                             .fields_count = 4,
                             .comments = s_comments,
                             .comments_count = 2};
}

void samples_receipt(proto_payload_t *p, bool applied)
{
    proto_payload_init(p, PROTO_RECEIPT);
    if (applied)
        p->receipt = (proto_receipt_t){17,
                                       "9d385017c611228701d22104cc95c371",
                                       0,
                                       "a1b2c3d4e5f60718293a4b5c6d7e8f90",
                                       "INC0020002",
                                       NULL};
    else
        p->receipt = (proto_receipt_t){18,
                                       "9d385017c611228701d22104cc95c371",
                                       PROTO_RECEIPT_REFUSED,
                                       NULL,
                                       NULL,
                                       "Data Policy Exception: close_code is mandatory"};
}

void samples_invite(proto_invite_t *inv)
{
    proto_invite_init(inv);
    inv->conn = "c-7f3a9b";
    inv->name = "Acme \xe2\x87\x84 Globex";
    inv->mode = "basic";
    inv->node_name = "acme-public";
    inv->instance_url = "https://acme.service-now.com";
    inv->endpoint = "tcp://broker.acme.example:5560";
    for (int i = 0; i < PROTO_KEY_SIZE; i++) {
        inv->broker_key[i] = (uint8_t)i;
        inv->kx[i] = (uint8_t)(0x20 + i);
        inv->join_token[i] = (uint8_t)(0x40 + i);
        inv->secret[i] = (uint8_t)(0x80 + i);
    }
    inv->expires = SAMPLES_EXPIRES;
}
