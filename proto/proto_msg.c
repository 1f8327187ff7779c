/*  proto_msg.c: the broker dialogue messages (see proto_msg.h).

    Each message type is a schema: a table of its keys, their kinds and
    limits, over the C struct that holds it. proto_codec.c does the reading
    and writing; this file only says what each message is. Wire keys are the
    C member names, so an error message names the member too.
*/
#include <stddef.h>
#include <string.h>

#include "proto_codec.h"
#include "proto_msg.h"

static const proto_fdef_t s_conn_state_fields[] = {
    PROTO_S_FIELD(proto_conn_state_t, conn, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_ID),
    PROTO_S_FIELD(proto_conn_state_t, stored, PROTO_K_U64, PROTO_F_REQ, 0, 0),
    PROTO_S_FIELD(proto_conn_state_t, consumed, PROTO_K_U64, PROTO_F_REQ, 0, 0),
    PROTO_S_FIELD(proto_conn_state_t, next, PROTO_K_U64, PROTO_F_OMIT0, 0, 0),
};
static const proto_schema_t s_conn_state = {"conn state", 0, sizeof(proto_conn_state_t),
                                            PROTO_S_ARR(s_conn_state_fields), NULL};

static const proto_fdef_t s_hello_fields[] = {
    PROTO_S_FIELD(proto_hello_t, node, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_ID),
    PROTO_S_FIELD(proto_hello_t, role, PROTO_K_ROLE, PROTO_F_REQ, 0, 0),
    PROTO_S_FIELD(proto_hello_t, credit, PROTO_K_U32, PROTO_F_OMIT0, 0, 0),
    PROTO_S_LIST(proto_hello_t, conns, conns_count, PROTO_K_LIST, PROTO_F_REQ, 0, &s_conn_state),
    PROTO_S_FIELD(proto_hello_t, batch, PROTO_K_U32, PROTO_F_OMIT0, 0, 0),
};
static const proto_schema_t s_hello = {"HELLO", PROTO_HELLO, sizeof(proto_hello_t),
                                       PROTO_S_ARR(s_hello_fields), NULL};

static const proto_fdef_t s_welcome_fields[] = {
    PROTO_S_FIELD(proto_welcome_t, broker, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_ID),
    PROTO_S_FIELD(proto_welcome_t, heartbeat_ms, PROTO_K_U32, PROTO_F_REQ, 1, 0),
    PROTO_S_FIELD(proto_welcome_t, max_frame, PROTO_K_U32, PROTO_F_REQ, 1024, 0),
    PROTO_S_FIELD(proto_welcome_t, credit, PROTO_K_U32, PROTO_F_REQ, 1, 0),
    PROTO_S_LIST(proto_welcome_t, conns, conns_count, PROTO_K_LIST, 0, 0, &s_conn_state),
    PROTO_S_FIELD(proto_welcome_t, batch, PROTO_K_U32, PROTO_F_OMIT0, 0, 0),
};
static const proto_schema_t s_welcome = {"WELCOME", PROTO_WELCOME, sizeof(proto_welcome_t),
                                         PROTO_S_ARR(s_welcome_fields), NULL};

static const proto_fdef_t s_error_fields[] = {
    PROTO_S_FIELD(proto_msg_error_t, code, PROTO_K_U16, PROTO_F_REQ, 1, 0),
    PROTO_S_FIELD(proto_msg_error_t, text, PROTO_K_STR, PROTO_F_REQ, 0, PROTO_MAX_ERRTEXT),
    PROTO_S_FIELD(proto_msg_error_t, conn, PROTO_K_STR, PROTO_F_ID, 0, PROTO_MAX_ID),
    PROTO_S_FIELD_HAS(proto_msg_error_t, seq, has_seq, PROTO_K_U64, 0, 0),
};
static const proto_schema_t s_error = {"ERROR", PROTO_ERROR, sizeof(proto_msg_error_t),
                                       PROTO_S_ARR(s_error_fields), NULL};

static const proto_schema_t s_ping = {"PING", PROTO_PING, 0, NULL, 0, NULL};
static const proto_schema_t s_pong = {"PONG", PROTO_PONG, 0, NULL, 0, NULL};

static const proto_fdef_t s_invite_fields[] = {
    PROTO_S_FIELD(proto_invite_msg_t, conn, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_ID),
    PROTO_S_FIELD(proto_invite_msg_t, token_hash, PROTO_K_KEY, PROTO_F_REQ, 0, 0),
    PROTO_S_FIELD(proto_invite_msg_t, expires, PROTO_K_U64, PROTO_F_REQ, 0, 0),
    PROTO_S_FIELD(proto_invite_msg_t, description, PROTO_K_STR, 0, 0, PROTO_MAX_NAME),
};
static const proto_schema_t s_invite = {"INVITE", PROTO_INVITE, sizeof(proto_invite_msg_t),
                                        PROTO_S_ARR(s_invite_fields), NULL};

static const proto_fdef_t s_join_fields[] = {
    PROTO_S_FIELD(proto_join_t, conn, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_ID),
    PROTO_S_FIELD(proto_join_t, token, PROTO_K_KEY, PROTO_F_REQ, 0, 0),
    PROTO_S_FIELD(proto_join_t, description, PROTO_K_STR, PROTO_F_REQ, 0, PROTO_MAX_NAME),
};
static const proto_schema_t s_join = {"JOIN", PROTO_JOIN, sizeof(proto_join_t),
                                      PROTO_S_ARR(s_join_fields), NULL};

static const proto_fdef_t s_joined_fields[] = {
    PROTO_S_FIELD(proto_joined_t, conn, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_ID),
    PROTO_S_FIELD(proto_joined_t, description, PROTO_K_STR, PROTO_F_REQ, 0, PROTO_MAX_NAME),
};
static const proto_schema_t s_joined = {"JOINED", PROTO_JOINED, sizeof(proto_joined_t),
                                        PROTO_S_ARR(s_joined_fields), NULL};

static const proto_fdef_t s_item_fields[] = {
    PROTO_S_BYTES(proto_item_t, payload, payload_size, PROTO_F_REQ | PROTO_F_PAYLOAD, 0),
};
static const proto_schema_t s_item = {"item", 0, sizeof(proto_item_t), PROTO_S_ARR(s_item_fields),
                                      NULL};

static const proto_fdef_t s_data_fields[] = {
    PROTO_S_FIELD(proto_data_t, conn, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_ID),
    PROTO_S_FIELD(proto_data_t, seq, PROTO_K_U64, PROTO_F_REQ, 1, 0),
    PROTO_S_BYTES(proto_data_t, payload, payload_size, PROTO_F_REQ | PROTO_F_PAYLOAD, 0),
    PROTO_S_LIST(proto_data_t, more, more_count, PROTO_K_LIST, 0, 0, &s_item),
};
//  A batch's last sequence (seq + more_count) must exist.
static proto_status_t s_data_rule(const void *obj, proto_error_t *err)
{
    const proto_data_t *data = obj;
    if (data->more_count > UINT64_MAX - data->seq)
        return proto_error_set(err, PROTO_E_VALUE, "more", data->more_count,
                               UINT64_MAX - data->seq);
    return PROTO_OK;
}

static const proto_schema_t s_publish = {"PUBLISH", PROTO_PUBLISH, sizeof(proto_data_t),
                                         PROTO_S_ARR(s_data_fields), s_data_rule};
static const proto_schema_t s_deliver = {"DELIVER", PROTO_DELIVER, sizeof(proto_data_t),
                                         PROTO_S_ARR(s_data_fields), s_data_rule};

static const proto_fdef_t s_ack_fields[] = {
    PROTO_S_FIELD(proto_ack_t, conn, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_ID),
    PROTO_S_FIELD(proto_ack_t, seq, PROTO_K_U64, PROTO_F_REQ, 1, 0),
};
static const proto_schema_t s_stored = {"STORED", PROTO_STORED, sizeof(proto_ack_t),
                                        PROTO_S_ARR(s_ack_fields), NULL};
static const proto_schema_t s_consumed = {"CONSUMED", PROTO_CONSUMED, sizeof(proto_ack_t),
                                          PROTO_S_ARR(s_ack_fields), NULL};

static const proto_fdef_t s_invited_fields[] = {
    PROTO_S_FIELD(proto_invited_t, conn, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_ID),
    PROTO_S_FIELD(proto_invited_t, expires, PROTO_K_U64, PROTO_F_REQ, 0, 0),
};
static const proto_schema_t s_invited = {"INVITED", PROTO_INVITED, sizeof(proto_invited_t),
                                         PROTO_S_ARR(s_invited_fields), NULL};

static const proto_schema_t *const s_schemas[] = {
    &s_hello,  &s_welcome, &s_error,  &s_ping,    &s_pong,     &s_invite,  &s_join,
    &s_joined, &s_publish, &s_stored, &s_deliver, &s_consumed, &s_invited,
};
static const proto_dialect_t s_dialect = {PROTO_S_ARR(s_schemas)};

//  Schema of a broker message type, or NULL.
static const proto_schema_t *s_schema(proto_type_t type)
{
    for (size_t i = 0; i < s_dialect.count; i++)
        if (s_schemas[i]->type == (unsigned)type)
            return s_schemas[i];
    return NULL;
}

void proto_msg_init(proto_msg_t *msg, proto_type_t type)
{
    memset(msg, 0, sizeof(*msg));
    msg->type = type;
}

void proto_msg_clear(proto_msg_t *msg)
{
    proto_mem_free(&msg->mem);
    memset(msg, 0, sizeof(*msg));
}

proto_status_t proto_msg_encode(const proto_msg_t *msg, const proto_limits_t *limits,
                                proto_buf_t *out, proto_error_t *err)
{
    proto_limits_t defaults = proto_limits_default();
    if (!limits)
        limits = &defaults;
    const proto_schema_t *schema = s_schema(msg->type);
    if (!schema)
        return proto_error_set(err, PROTO_E_UNKNOWN_TYPE, "t", msg->type, 0);
    return proto_codec_encode(schema, &msg->hello, limits, limits->max_frame, out, err);
}

proto_status_t proto_msg_decode(const uint8_t *data, size_t size, const proto_limits_t *limits,
                                proto_msg_t *out, proto_error_t *err)
{
    proto_limits_t defaults = proto_limits_default();
    if (!limits)
        limits = &defaults;
    memset(out, 0, sizeof(*out));
    const proto_schema_t *schema = NULL;
    uint16_t version = 0;
    proto_status_t rc =
        proto_codec_decode(&s_dialect, data, size, limits, limits->max_frame, &out->hello,
                           offsetof(proto_msg_t, mem) - offsetof(proto_msg_t, hello), &schema,
                           &version, &out->mem, err);
    if (rc != PROTO_OK)
        return rc;
    out->type = (proto_type_t)schema->type;
    out->version = version;
    return PROTO_OK;
}

bool proto_msg_equal(const proto_msg_t *a, const proto_msg_t *b)
{
    if (a->type != b->type)
        return false;
    const proto_schema_t *schema = s_schema(a->type);
    return schema && proto_codec_equal(schema, &a->hello, &b->hello);
}

const char *proto_type_name(proto_type_t type)
{
    switch (type) {
    case PROTO_SYNC:
        return "SYNC";
    case PROTO_RECEIPT:
        return "RECEIPT";
    case PROTO_INVITATION:
        return "INVITATION";
    default: {
        const proto_schema_t *schema = s_schema(type);
        return schema ? schema->name : "UNKNOWN";
    }
    }
}

const char *proto_role_name(proto_role_t role)
{
    if (role == PROTO_ROLE_PUBLIC)
        return "public";
    if (role == PROTO_ROLE_PRIVATE)
        return "private";
    return "unknown";
}
