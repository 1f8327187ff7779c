/*  proto_msg.h: the messages nodes and the broker exchange (docs/protocol.md §5).

    Each message is one ZeroMQ frame holding one msgpack map with at least
    "v" (version, see proto_limits.h) and "t" (message type, proto_type_t).
    docs/protocol.md is the reference for the dialogue, every key and limit.

    Each message type is one table in proto_msg.c (proto_sync.c and
    proto_invite.c for the sealed payloads and the invitation body): its
    name and number, who may send it, what it is for, and its keys with
    their kinds, limits and meanings. That table drives the codec below,
    proto_msg_may_send (the "who may send this" checks of the broker and the
    node link) and the message tables of docs/protocol.md (proto_doc).

    Ownership: proto_msg_t holds pointers. After proto_msg_decode every
    pointer points into memory owned by the message, released by
    proto_msg_clear. To encode, fill a proto_msg_t with pointers to your own
    memory (nothing is copied or freed); proto_msg_clear on such a message
    frees nothing of yours.

        proto_msg_t msg;
        proto_error_t err;
        if (proto_msg_decode(frame, size, &limits, &msg, &err) != PROTO_OK)
            log("bad frame: %s", proto_error_str(&err));  //  count, drop
        ...
        proto_msg_clear(&msg);
*/
#ifndef PROTO_MSG_H
#define PROTO_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto_buf.h"
#include "proto_error.h"
#include "proto_limits.h"

//  Value of key "t". Broker messages use 1..31, sealed payloads 32..47,
//  the invitation code body 48. Who sends each and what it carries is its
//  table (proto_msg.c; docs/protocol.md §5).
typedef enum {
    PROTO_HELLO = 1,         //  Opens a session
    PROTO_WELCOME = 2,       //  Session accepted
    PROTO_ERROR = 3,         //  A refusal or a failure
    PROTO_PING = 4,          //  Heartbeat
    PROTO_PONG = 5,          //  Heartbeat answer
    PROTO_INVITE = 6,        //  Register a join token
    PROTO_JOIN = 7,          //  Present a join token
    PROTO_JOINED = 8,        //  Connection bound
    PROTO_PUBLISH = 9,       //  A sealed payload to store
    PROTO_STORED = 10,       //  PUBLISH is durable
    PROTO_DELIVER = 11,      //  A stored payload
    PROTO_CONSUMED = 12,     //  DELIVER applied durably
    PROTO_INVITED = 13,      //  INVITE registered durably
    PROTO_SYNC = 32,         //  Sealed payload: one replica (proto_sync.h)
    PROTO_RECEIPT = 33,      //  Sealed payload: result of applying a SYNC
    PROTO_REKEY = 34,        //  Sealed payload: start a new key generation (X25519 share)
    PROTO_REKEY_ACK = 35,    //  Sealed payload: the answer that completes it
    PROTO_FILE_CHUNK = 36,   //  Sealed payload: a piece of an attachment
    PROTO_FILE_ACK = 37,     //  Sealed payload: how much of an attachment arrived
    PROTO_FILE_RECEIPT = 38, //  Sealed payload: what became of an attachment
    PROTO_FILE_DELETE = 39,  //  Sealed payload: an attachment was deleted at its source
    PROTO_INVITATION = 48    //  Body of an invitation code (proto_invite.h)
} proto_type_t;

//  The three kinds of sender, as bits: a message's table says which of them
//  may send it (proto_msg_may_send).
typedef enum {
    PROTO_SENDER_PUBLIC = 1,  //  A public node
    PROTO_SENDER_PRIVATE = 2, //  A private node
    PROTO_SENDER_BROKER = 4,  //  The broker
    PROTO_SENDER_NODE = 3     //  Either node (PUBLIC | PRIVATE)
} proto_sender_t;

typedef enum {
    PROTO_ROLE_PUBLIC = 1, //  "public" on the wire
    PROTO_ROLE_PRIVATE = 2 //  "private" on the wire
} proto_role_t;

//  Codes of the ERROR message (key "e"), in the spirit of HTTP status codes.
//  A receiver treats an unknown code by its hundred (4xx: the request was
//  refused, 5xx: the broker failed).
typedef enum {
    PROTO_ERR_BAD_FRAME = 400,      //  Frame could not be decoded; dropped
    PROTO_ERR_NOT_HELLO = 401,      //  Peer unknown (e.g. broker restart): send HELLO
    PROTO_ERR_FORBIDDEN = 403,      //  Sender's key does not belong to the connection
    PROTO_ERR_UNKNOWN_CONN = 404,   //  No such connection
    PROTO_ERR_JOIN_REUSED = 409,    //  Join token already used
    PROTO_ERR_JOIN_EXPIRED = 410,   //  Join token expired
    PROTO_ERR_JOIN_BAD_TOKEN = 412, //  Join token does not match the connection
    PROTO_ERR_TOO_BIG = 413,        //  Frame or payload above the broker's limit
    PROTO_ERR_OUT_OF_ORDER = 422,   //  PUBLISH seq skips ahead; "seq" is the one expected
    PROTO_ERR_VERSION = 426,        //  Major version not supported
    PROTO_ERR_QUEUE_FULL = 429,     //  Backpressure: queue full, retry later
    PROTO_ERR_INTERNAL = 500        //  Broker failure (store), retry later
} proto_err_code_t;

//  One connection's position, as a node reports it in HELLO.
typedef struct {
    const char *conn;  //  Connection id
    uint64_t stored;   //  Highest own seq the broker confirmed STORED (0: none)
    uint64_t consumed; //  Highest inbound seq applied durably (0: none)
    uint64_t next;     //  Next own seq the node will assign (0: not reported)
} proto_conn_state_t;

typedef struct {
    const char *node;                //  Node id, unique per broker
    proto_role_t role;               //  Public or private
    uint32_t credit;                 //  DELIVERs the node accepts unconsumed, per
                                     //  connection; 0 (or absent): broker default
    const proto_conn_state_t *conns; //  Connections this node serves
    size_t conns_count;              //  Entries in conns
    uint32_t batch;                  //  Most messages per DELIVER the node takes (0 or
                                     //  absent: 1, one message per frame)
} proto_hello_t;

typedef struct {
    const char *broker;              //  Broker id
    uint32_t heartbeat_ms;           //  PING when idle this often; dead after 3 silent
    uint32_t max_frame;              //  Largest frame the broker accepts (bytes)
    uint32_t credit;                 //  PUBLISHes a node may have un-STORED, per connection
    const proto_conn_state_t *conns; //  Connections where the node's state is older than
                                     //  the broker's queues: stored = the broker's last seq
                                     //  of the node, consumed = the last one deleted toward
                                     //  it (docs/protocol.md §4.1); NULL when none
    size_t conns_count;              //  Entries in conns
    uint32_t batch;                  //  Most messages per PUBLISH the broker takes (0 or
                                     //  absent: 1, one message per frame)
} proto_welcome_t;

typedef struct {
    uint16_t code;    //  proto_err_code_t, or a newer code
    const char *text; //  Human explanation
    const char *conn; //  Connection concerned, or NULL
    bool has_seq;     //  seq is meaningful
    uint64_t seq;     //  Sequence concerned
} proto_msg_error_t;

typedef struct {
    const char *conn;                   //  Connection id
    uint8_t token_hash[PROTO_KEY_SIZE]; //  SHA-256 of the join token
    uint64_t expires;                   //  Unix seconds after which JOIN fails
    const char *description;            //  Public node description, or NULL
} proto_invite_msg_t;

//  JOIN. kx and auth are the private node's half of the join's key
//  exchange (proto_kx.h): opaque to the broker, which relays them to the
//  public node in JOINED. Both or neither.
typedef struct {
    const char *conn;              //  Connection id
    uint8_t token[PROTO_KEY_SIZE]; //  Join token from the invitation code
    const char *description;       //  Private node description (its name, no URL)
    uint8_t kx[PROTO_KEY_SIZE];    //  Private node's X25519 public key, if has_kx
    bool has_kx;                   //  kx is present
    uint8_t auth[PROTO_KEY_SIZE];  //  HMAC-SHA256 authenticator of the join, if has_auth
    bool has_auth;                 //  auth is present
} proto_join_t;

//  JOINED. kx and auth, relayed from the private node's JOIN, go to the
//  public node only. Both or neither.
typedef struct {
    const char *conn;             //  Connection id
    const char *description;      //  The other node's description
    uint8_t kx[PROTO_KEY_SIZE];   //  Private node's X25519 public key, if has_kx
    bool has_kx;                  //  kx is present
    uint8_t auth[PROTO_KEY_SIZE]; //  The join's authenticator, if has_auth
    bool has_auth;                //  auth is present
} proto_joined_t;

//  Room a PUBLISH / DELIVER needs besides its payloads, at most: the keys,
//  the connection id, the sequence, the file flag and the list header (about
//  130 bytes); and each message of a batch besides its payload (20: the map,
//  "payload" with a bin32 header, "file" and its value). A sender keeps
//  PROTO_DATA_OVERHEAD + sum(payload + PROTO_ITEM_OVERHEAD) within the frame
//  limit of the receiver.
#define PROTO_DATA_OVERHEAD 256
#define PROTO_ITEM_OVERHEAD 24

//  What a PUBLISH / DELIVER says its payload is ("file" on the wire, 1.3):
//  the broker counts file bytes apart from record bytes (docs/protocol.md
//  §4.7). Outside the seal: a receiver learns what a payload is from the
//  opened payload, never from this.
typedef enum {
    PROTO_DATA_RECORD = 0, //  A record's replica, a receipt, a rekey (absent on the wire)
    PROTO_DATA_FILE = 1    //  A piece of a file (an attachment's chunk)
} proto_data_kind_t;

//  One more message of a batched PUBLISH / DELIVER.
typedef struct {
    const uint8_t *payload; //  Sealed payload
    size_t payload_size;    //  Bytes in payload
    uint16_t file;          //  proto_data_kind_t of this message
} proto_item_t;

//  PUBLISH and DELIVER: one message, or a batch of consecutive ones (the
//  receiver said it takes batches: HELLO.batch, WELCOME.batch).
typedef struct {
    const char *conn;         //  Connection id
    uint64_t seq;             //  Sender's sequence, >= 1
    const uint8_t *payload;   //  Sealed payload (proto_seal.h), opaque to the broker
    size_t payload_size;      //  Bytes in payload
    const proto_item_t *more; //  Messages seq + 1, seq + 2, ... (NULL: none)
    size_t more_count;        //  Entries in more
    uint16_t file;            //  proto_data_kind_t of the first message (seq)
} proto_data_t;

//  STORED and CONSUMED (cumulative: every seq up to this one).
typedef struct {
    const char *conn; //  Connection id
    uint64_t seq;     //  Sequence acknowledged, >= 1
} proto_ack_t;

typedef struct {
    const char *conn; //  Connection id
    uint64_t expires; //  Expiry the broker registered (unix seconds)
} proto_invited_t;

typedef struct proto_mem proto_mem_t;

typedef struct {
    proto_type_t type; //  Which member of the union is valid
    uint16_t version;  //  Decoded "v"; encode always writes PROTO_VERSION
    union {
        proto_hello_t hello;       //  PROTO_HELLO
        proto_welcome_t welcome;   //  PROTO_WELCOME
        proto_msg_error_t error;   //  PROTO_ERROR
        proto_invite_msg_t invite; //  PROTO_INVITE
        proto_join_t join;         //  PROTO_JOIN
        proto_joined_t joined;     //  PROTO_JOINED
        proto_data_t publish;      //  PROTO_PUBLISH
        proto_data_t deliver;      //  PROTO_DELIVER
        proto_ack_t stored;        //  PROTO_STORED
        proto_ack_t consumed;      //  PROTO_CONSUMED
        proto_invited_t invited;   //  PROTO_INVITED
    };                             //  (PING and PONG carry no fields)
    proto_mem_t *mem;              //  Memory owned after decode; private
} proto_msg_t;

//  Zeroes *msg and sets its type (ready to fill and encode).
void proto_msg_init(proto_msg_t *msg, proto_type_t type);

//  Frees what a decode allocated and zeroes *msg. Safe on a message that was
//  only initialised, filled by hand, or already cleared.
void proto_msg_clear(proto_msg_t *msg);

//  Encodes msg into out (contents replaced) as one msgpack map. Checks the
//  message first against the protocol rules and limits (NULL: defaults), so
//  nothing leaves that the other side would refuse. Returns PROTO_OK; the
//  code a decoder would give (PROTO_E_MISSING, PROTO_E_TOO_LONG,
//  PROTO_E_TOO_MANY, PROTO_E_VALUE, PROTO_E_FRAME_TOO_BIG) with err naming
//  the field; PROTO_E_UNKNOWN_TYPE for a type that is not a broker message;
//  or PROTO_E_NOMEM. err may be NULL.
proto_status_t proto_msg_encode(const proto_msg_t *msg, const proto_limits_t *limits,
                                proto_buf_t *out, proto_error_t *err);

//  Decodes one frame. Strict and total: returns PROTO_OK with *out filled
//  (owned by out, free with proto_msg_clear), or an error code with *out
//  zeroed and err (may be NULL) naming the reason and field. Never reads
//  outside [data, data + size), never allocates more than the input could
//  justify within limits (NULL: defaults). Unknown keys are skipped.
proto_status_t proto_msg_decode(const uint8_t *data, size_t size, const proto_limits_t *limits,
                                proto_msg_t *out, proto_error_t *err);

//  True when a and b carry the same type and the same field values (the
//  decoded version is not compared).
bool proto_msg_equal(const proto_msg_t *a, const proto_msg_t *b);

//  Name of a message type ("PUBLISH"), or "UNKNOWN".
const char *proto_type_name(proto_type_t type);

//  "public" / "private" / "unknown".
const char *proto_role_name(proto_role_t role);

//  True when the protocol lets sender send messages of type, according to
//  that type's table; for a mask of several senders (PROTO_SENDER_NODE),
//  true when any of them may. False for a type the protocol does not have.
//  The broker refuses a frame a node may not send with this, the node link
//  a frame the broker may not send (docs/protocol.md §5 lists who may send
//  what).
bool proto_msg_may_send(proto_type_t type, proto_sender_t sender);

//  The sender a node of role is: PROTO_SENDER_PUBLIC or
//  PROTO_SENDER_PRIVATE; 0 (nobody) for a value that is no role.
proto_sender_t proto_sender_of_role(proto_role_t role);

#endif
