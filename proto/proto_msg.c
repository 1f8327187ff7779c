/*  proto_msg.c: the broker dialogue messages (see proto_msg.h).

    Each message type is one table (proto_model.h): its name and number, who
    may send it and to whom, what it is for, and its keys with their kinds,
    limits and meanings, over the C struct that holds it. proto_codec.c does
    the reading and writing, proto_msg_may_send answers from the same table,
    and proto_doc prints it into docs/protocol.md; this file only says what
    each message is. Wire keys are the C member names, so an error message
    names the member too.
*/
#include <stddef.h>
#include <string.h>

#include "proto_codec.h"
#include "proto_model.h"
#include "proto_msg.h"

#define S_PUBLIC  PROTO_SENDER_PUBLIC
#define S_PRIVATE PROTO_SENDER_PRIVATE
#define S_BROKER  PROTO_SENDER_BROKER
#define S_NODE    PROTO_SENDER_NODE
#define S_ANYONE  (PROTO_SENDER_NODE | PROTO_SENDER_BROKER)

//  Wire names of proto_role_t, by value (the codec stores the role as an int).
static const char *const s_role_names[] = {NULL, "public", "private"};
_Static_assert(sizeof(proto_role_t) == sizeof(int), "a role is stored as an int");
_Static_assert(PROTO_ROLE_PUBLIC == 1 && PROTO_ROLE_PRIVATE == 2, "s_role_names");

static const proto_fdef_t s_hello_conn_fields[] = {
    PROTO_S_FIELD(proto_conn_state_t, conn, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_ID,
                  "Connection id"),
    PROTO_S_FIELD(proto_conn_state_t, stored, PROTO_K_U64, PROTO_F_REQ, 0, 0,
                  "Highest own seq seen STORED (0: none)"),
    PROTO_S_FIELD(proto_conn_state_t, consumed, PROTO_K_U64, PROTO_F_REQ, 0, 0,
                  "Highest inbound seq applied durably (0: none)"),
    PROTO_S_FIELD(proto_conn_state_t, next, PROTO_K_U64, PROTO_F_OMIT0, 0, 0,
                  "The next own seq the node will assign: every seq below it was assigned, "
                  "sent or not (absent or 0: not reported). Lets the broker see a node whose "
                  "state went back in time (§4.1)"),
};
static const proto_schema_t s_hello_conn =
    PROTO_S_ELEMENT("conn state", proto_conn_state_t, s_hello_conn_fields);

static const proto_fdef_t s_hello_fields[] = {
    PROTO_S_FIELD(proto_hello_t, node, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_ID,
                  "Node id, unique per broker"),
    PROTO_S_ENUM(proto_hello_t, role, PROTO_F_REQ, s_role_names, "The node's role"),
    PROTO_S_FIELD(proto_hello_t, credit, PROTO_K_U32, PROTO_F_OMIT0, 0, 0,
                  "DELIVERs accepted unconsumed per connection (§4.5); 0/absent: broker "
                  "default"),
    PROTO_S_LIST(proto_hello_t, conns, conns_count, PROTO_K_LIST, PROTO_F_REQ, 0, &s_hello_conn,
                 "One entry per connection served (may be empty)"),
    PROTO_S_FIELD(proto_hello_t, batch, PROTO_K_U32, PROTO_F_OMIT0, 0, 0,
                  "Most messages per `DELIVER` the node takes (§4.6); 0/absent: 1"),
};
static const proto_schema_t s_hello = PROTO_S_MESSAGE(
    "HELLO", PROTO_HELLO, proto_hello_t, s_hello_fields, NULL, S_NODE, S_BROKER,
    "Opens a session: who the node is, and where it stands on each connection (§4.1)");

//  WELCOME.conns has the struct of HELLO.conns, but other meanings and no
//  "next".
static const proto_fdef_t s_welcome_conn_fields[] = {
    PROTO_S_FIELD(proto_conn_state_t, conn, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_ID,
                  "Connection id"),
    PROTO_S_FIELD(proto_conn_state_t, stored, PROTO_K_U64, PROTO_F_REQ, 0, 0,
                  "Highest seq of this node the broker holds"),
    PROTO_S_FIELD(proto_conn_state_t, consumed, PROTO_K_U64, PROTO_F_REQ, 0, 0,
                  "Highest seq toward this node the broker has deleted (consumed)"),
};
static const proto_schema_t s_welcome_conn =
    PROTO_S_ELEMENT("conn state", proto_conn_state_t, s_welcome_conn_fields);

static const proto_fdef_t s_welcome_fields[] = {
    PROTO_S_FIELD(proto_welcome_t, broker, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_ID, "Broker id"),
    PROTO_S_FIELD(proto_welcome_t, heartbeat_ms, PROTO_K_U32, PROTO_F_REQ, 1, 0,
                  "Heartbeat interval (§4.2)"),
    PROTO_S_FIELD(proto_welcome_t, max_frame, PROTO_K_U32, PROTO_F_REQ, 1024, 0,
                  "Largest frame the broker accepts"),
    PROTO_S_FIELD(proto_welcome_t, credit, PROTO_K_U32, PROTO_F_REQ, 1, 0,
                  "PUBLISHes a node may have un-STORED per connection (§4.5)"),
    PROTO_S_LIST(proto_welcome_t, conns, conns_count, PROTO_K_LIST, 0, 0, &s_welcome_conn,
                 "Connections where the node's state is older than the broker's queues (§4.1); "
                 "absent when none"),
    PROTO_S_FIELD(proto_welcome_t, batch, PROTO_K_U32, PROTO_F_OMIT0, 0, 0,
                  "Most messages per `PUBLISH` the broker takes (§4.6); 0/absent: 1"),
};
static const proto_schema_t s_welcome = PROTO_S_MESSAGE(
    "WELCOME", PROTO_WELCOME, proto_welcome_t, s_welcome_fields, NULL, S_BROKER, S_NODE,
    "Accepts a session: heartbeat, frame limit, credit, and where the broker stands when the "
    "node is behind (§4.1)");

static const proto_fdef_t s_error_fields[] = {
    PROTO_S_FIELD(proto_msg_error_t, code, PROTO_K_U16, PROTO_F_REQ, 1, 0, "Error code (below)"),
    PROTO_S_FIELD(proto_msg_error_t, text, PROTO_K_STR, PROTO_F_REQ, 0, PROTO_MAX_ERRTEXT,
                  "Human explanation, may be empty"),
    PROTO_S_FIELD(proto_msg_error_t, conn, PROTO_K_STR, PROTO_F_ID, 0, PROTO_MAX_ID,
                  "Connection concerned"),
    PROTO_S_FIELD_HAS(proto_msg_error_t, seq, has_seq, PROTO_K_U64, 0, 0,
                      "Sequence concerned (422: the one expected)"),
};
static const proto_schema_t s_error =
    PROTO_S_MESSAGE("ERROR", PROTO_ERROR, proto_msg_error_t, s_error_fields, NULL, S_ANYONE,
                    S_ANYONE, "A refusal or a failure; never answered with an ERROR");

static const proto_schema_t s_ping = {
    .name = "PING",
    .type = PROTO_PING,
    .from = S_ANYONE,
    .to = S_ANYONE,
    .doc = "Heartbeat, sent by a side that has sent nothing for `heartbeat_ms` (§4.2)"};
static const proto_schema_t s_pong = {.name = "PONG",
                                      .type = PROTO_PONG,
                                      .from = S_ANYONE,
                                      .to = S_ANYONE,
                                      .doc = "Answer to a PING (§4.2)"};

static const proto_fdef_t s_invite_fields[] = {
    PROTO_S_FIELD(proto_invite_msg_t, conn, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_ID,
                  "Connection id"),
    PROTO_S_FIELD(proto_invite_msg_t, token_hash, PROTO_K_KEY, PROTO_F_REQ, 0, 0,
                  "SHA-256 of the join token"),
    PROTO_S_FIELD(proto_invite_msg_t, expires, PROTO_K_U64, PROTO_F_REQ, 0, 0,
                  "Unix seconds; JOIN refused from then on"),
    PROTO_S_FIELD(proto_invite_msg_t, description, PROTO_K_STR, 0, 0, PROTO_MAX_NAME,
                  "Public node description, shown to the private side: its name, never a "
                  "URL (the broker stores it)"),
};
static const proto_schema_t s_invite =
    PROTO_S_MESSAGE("INVITE", PROTO_INVITE, proto_invite_msg_t, s_invite_fields, NULL, S_PUBLIC,
                    S_BROKER, "Registers a connection's join token and expiry (§4.3)");

//  kx and auth come together or not at all: one without the other is no
//  key exchange (docs/protocol.md §8.3).
static proto_status_t s_kx_pair_rule(bool has_kx, bool has_auth, proto_error_t *err)
{
    if (has_kx == has_auth)
        return PROTO_OK;
    return proto_error_set(err, PROTO_E_MISSING, has_kx ? "auth" : "kx", 0, 0);
}

static proto_status_t s_join_rule(const void *obj, proto_error_t *err)
{
    const proto_join_t *join = obj;
    return s_kx_pair_rule(join->has_kx, join->has_auth, err);
}

static proto_status_t s_joined_rule(const void *obj, proto_error_t *err)
{
    const proto_joined_t *joined = obj;
    return s_kx_pair_rule(joined->has_kx, joined->has_auth, err);
}

static const proto_fdef_t s_join_fields[] = {
    PROTO_S_FIELD(proto_join_t, conn, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_ID,
                  "Connection id from the invitation code"),
    PROTO_S_FIELD(proto_join_t, token, PROTO_K_KEY, PROTO_F_REQ, 0, 0,
                  "Join token from the invitation code"),
    PROTO_S_FIELD(proto_join_t, description, PROTO_K_STR, PROTO_F_REQ, 0, PROTO_MAX_NAME,
                  "Private node description: its name, never a URL (the broker stores it)"),
    PROTO_S_FIELD_HAS(proto_join_t, kx, has_kx, PROTO_K_KEY, 0, 0,
                      "Private node's X25519 public key for the join's key exchange (§8.3); "
                      "opaque to the broker, relayed in JOINED. With `auth` (1.2); a 1.2 "
                      "public node refuses a join without them"),
    PROTO_S_FIELD_HAS(proto_join_t, auth, has_auth, PROTO_K_KEY, 0, 0,
                      "HMAC-SHA256 under the invitation secret of the join's transcript "
                      "(§8.3); opaque to the broker, relayed in JOINED. With `kx`"),
};
static const proto_schema_t s_join = PROTO_S_MESSAGE(
    "JOIN", PROTO_JOIN, proto_join_t, s_join_fields, s_join_rule, S_PRIVATE, S_BROKER,
    "Presents the join token of an invitation code: binds the private node's key to the "
    "connection (§4.3)");

static const proto_fdef_t s_joined_fields[] = {
    PROTO_S_FIELD(proto_joined_t, conn, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_ID,
                  "Connection now bound"),
    PROTO_S_FIELD(proto_joined_t, description, PROTO_K_STR, PROTO_F_REQ, 0, PROTO_MAX_NAME,
                  "The other node's description"),
    PROTO_S_FIELD_HAS(proto_joined_t, kx, has_kx, PROTO_K_KEY, 0, 0,
                      "To the public node: JOIN's `kx`, byte for byte (§8.3); absent toward "
                      "the private node. With `auth`"),
    PROTO_S_FIELD_HAS(proto_joined_t, auth, has_auth, PROTO_K_KEY, 0, 0,
                      "To the public node: JOIN's `auth`, byte for byte; the public node "
                      "checks it before it derives the root. With `kx`"),
};
static const proto_schema_t s_joined = PROTO_S_MESSAGE(
    "JOINED", PROTO_JOINED, proto_joined_t, s_joined_fields, s_joined_rule, S_BROKER, S_NODE,
    "The connection is bound; sent to both nodes when the private node joins, and again after "
    "each HELLO (§4.1, §4.3)");

//  The file flag: 0 or 1 (proto_data_kind_t), absent when 0 so that a
//  record's frame is what 1.2 sent.
#define S_FILE_DOC                                                                                 \
    "1: the payload is file data (an attachment's chunk); 0/absent: a record (§4.7). The broker " \
    "counts the bytes of each kind; not covered by the seal, so a receiver goes by the opened "    \
    "payload"

static const proto_fdef_t s_item_fields[] = {
    PROTO_S_BYTES(proto_item_t, payload, payload_size, PROTO_F_REQ | PROTO_F_PAYLOAD, 0,
                  "Sealed payload of message `seq + 1 + i`"),
    PROTO_S_FIELD(proto_item_t, file, PROTO_K_U16, PROTO_F_OMIT0, 0, PROTO_DATA_FILE,
                  "Message `seq + 1 + i` is file data, as `file` above"),
};
static const proto_schema_t s_item = PROTO_S_ELEMENT("item", proto_item_t, s_item_fields);

static const proto_fdef_t s_data_fields[] = {
    PROTO_S_FIELD(proto_data_t, conn, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_ID, "Connection id"),
    PROTO_S_FIELD(proto_data_t, seq, PROTO_K_U64, PROTO_F_REQ, 1, 0,
                  "Sender's sequence in its direction"),
    PROTO_S_BYTES(proto_data_t, payload, payload_size, PROTO_F_REQ | PROTO_F_PAYLOAD, 0,
                  "Sealed payload (§8), opaque to the broker"),
    PROTO_S_FIELD(proto_data_t, file, PROTO_K_U16, PROTO_F_OMIT0, 0, PROTO_DATA_FILE, S_FILE_DOC),
    PROTO_S_LIST(proto_data_t, more, more_count, PROTO_K_LIST, 0, 0, &s_item,
                 "A batch (§4.6): the messages `seq + 1`, `seq + 2`, … in order; "
                 "`seq + len(more)` must not pass 2^64 − 1"),
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

static const proto_schema_t s_publish =
    PROTO_S_MESSAGE("PUBLISH", PROTO_PUBLISH, proto_data_t, s_data_fields, s_data_rule, S_NODE,
                    S_BROKER, "A sealed payload to store, or a batch of them (§4.4, §4.6)");
static const proto_schema_t s_deliver =
    PROTO_S_MESSAGE("DELIVER", PROTO_DELIVER, proto_data_t, s_data_fields, s_data_rule, S_BROKER,
                    S_NODE, "A stored payload for the receiver, or a batch of them (§4.4, §4.6)");

static const proto_fdef_t s_ack_fields[] = {
    PROTO_S_FIELD(proto_ack_t, conn, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_ID, "Connection id"),
    PROTO_S_FIELD(proto_ack_t, seq, PROTO_K_U64, PROTO_F_REQ, 1, 0,
                  "Highest sequence stored durably / applied durably (cumulative, §4.4)"),
};
static const proto_schema_t s_stored =
    PROTO_S_MESSAGE("STORED", PROTO_STORED, proto_ack_t, s_ack_fields, NULL, S_BROKER, S_NODE,
                    "Every PUBLISH of the connection up to `seq` is durable");
static const proto_schema_t s_consumed =
    PROTO_S_MESSAGE("CONSUMED", PROTO_CONSUMED, proto_ack_t, s_ack_fields, NULL, S_NODE, S_BROKER,
                    "Every DELIVER of the connection up to `seq` is applied durably");

static const proto_fdef_t s_invited_fields[] = {
    PROTO_S_FIELD(proto_invited_t, conn, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_ID,
                  "Connection registered durably"),
    PROTO_S_FIELD(proto_invited_t, expires, PROTO_K_U64, PROTO_F_REQ, 0, 0, "Expiry as registered"),
};
static const proto_schema_t s_invited = PROTO_S_MESSAGE(
    "INVITED", PROTO_INVITED, proto_invited_t, s_invited_fields, NULL, S_BROKER, S_PUBLIC,
    "The INVITE is registered durably: the code may be handed out (§4.3)");

//  In the order of docs/protocol.md §5.
static const proto_schema_t *const s_schemas[] = {
    &s_hello, &s_welcome, &s_error,   &s_ping,    &s_pong,   &s_invite,   &s_invited,
    &s_join,  &s_joined,  &s_publish, &s_deliver, &s_stored, &s_consumed,
};
static const proto_dialect_t s_dialect = {PROTO_S_ARR(s_schemas)};

const proto_dialect_t *proto_msg_model(void)
{
    return &s_dialect;
}

//  Schema of a broker message type, or NULL.
static const proto_schema_t *s_schema(proto_type_t type)
{
    return proto_codec_find(&s_dialect, (unsigned)type);
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
    const proto_schema_t *schema = proto_model_find((unsigned)type);
    return schema ? schema->name : "UNKNOWN";
}

const char *proto_role_name(proto_role_t role)
{
    size_t count = sizeof(s_role_names) / sizeof(s_role_names[0]);
    if ((int)role < 0 || (size_t)role >= count || !s_role_names[role])
        return "unknown";
    return s_role_names[role];
}

bool proto_msg_may_send(proto_type_t type, proto_sender_t sender)
{
    const proto_schema_t *schema = proto_model_find((unsigned)type);
    return schema && (schema->from & (unsigned)sender) != 0;
}

proto_sender_t proto_sender_of_role(proto_role_t role)
{
    if (role == PROTO_ROLE_PUBLIC)
        return PROTO_SENDER_PUBLIC;
    if (role == PROTO_ROLE_PRIVATE)
        return PROTO_SENDER_PRIVATE;
    return (proto_sender_t)0;
}
