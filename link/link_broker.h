/*  link_broker.h: the node's side of the broker link.

    One link_t is one DEALER socket to twinsync-broker (CURVE client; no
    routing id of its own: the broker knows the node by its CURVE key) and
    the session on it, as docs/protocol.md §4 describes:

    - Session: HELLO (with, per connection, the highest own sequence seen
      STORED and the highest inbound sequence applied) -> WELCOME. ERROR 401
      (the broker forgot us, e.g. it restarted) -> HELLO again on the same
      socket.
    - Heartbeats: PING when nothing was sent for heartbeat_ms, PONG to the
      broker's PINGs. Nothing received for liveness x heartbeat_ms (no WELCOME
      after HELLO, or a silent broker) -> the broker is dead: the link closes
      the socket and opens a new one after a backoff that doubles from
      backoff_min_ms to backoff_max_ms and returns to the minimum on WELCOME.
    - Sending: link_publish hands the link one PUBLISH, saying whether its
      payload is file data (an attachment's chunk) or a record; the broker
      counts file bytes apart (docs/protocol.md §4.7). The link keeps a copy
      until STORED (link_window.h) and sends it again by itself after every
      new session and after a refusal, so the application never re-sends.
      The window per connection is bounded, in messages (config.window) and
      in payload bytes (config.window_bytes: file chunks are large): when it
      is full, link_publish answers LINK_FULL and the application keeps the
      message in its durable outbox until on_stored makes room. The bytes
      bound the node's memory and what the broker holds in flight for it. At most WELCOME.credit
      PUBLISHes are sent un-STORED per connection. ERROR 429 and 500 (the
      broker is full or failing) make the connection pause for retry_ms and
      then re-send from the refused sequence; ERROR 422 re-sends from the
      sequence the broker expects.
    - Receiving: DELIVER -> on_deliver. The callback returns LINK_APPLIED once
      the message is durably applied (or is a duplicate) and the link answers
      CONSUMED; LINK_LATER when the application applies it later and calls
      link_consume itself; LINK_REFUSED to answer nothing (a payload that does
      not open: the broker keeps it, the metrics show it). CONSUMED is
      cumulative (docs/protocol.md §4.4): for what is applied during one
      link_handle burst the link sends one CONSUMED per connection when the
      burst ends (or when half the credit is owed), carrying the highest
      sequence applied; link_consume outside link_handle sends at once.
    - Requests: link_invite / link_join send INVITE / JOIN and send them again
      after every new session until the broker answers INVITED / JOINED (or an
      ERROR naming the connection), which reach on_invited / on_joined /
      on_error. JOINED also arrives unasked (the public node learns that its
      partner joined, and every node after each HELLO).

    Durability stays with the application: it seeds each connection with its
    durable positions (link_conn_add), feeds link_publish from its outbox in
    sequence order, deletes outbox rows on on_stored, and after a restart
    offers again everything not yet STORED.

    Non-blocking, for the node's single ZeroMQ loop; the link owns no thread:

        for (;;) {
            int64_t now = ts_mono_ms();
            link_tick(link, now);                 //  reconnects, heartbeats, retries
            zmq_pollitem_t items[2] = {...};      //  the node's own sockets
            int n = link_pollitem(link, &items[0]) ? 1 : 0;   //  NULL while down
            zmq_poll(items + (1 - n), 1 + n, link_next_timeout_ms(link, now));
            if (n && (items[0].revents & ZMQ_POLLIN))
                link_handle(link, ts_mono_ms());
        }

    Times are milliseconds of one monotonic clock the caller chooses (the node
    uses ts_mono_ms()); the link reads no clock itself. Callbacks run inside
    link_handle / link_tick / link_publish; they may call link_publish,
    link_consume, link_invite, link_join and link_conn_add, never
    link_conn_remove or link_destroy.
*/
#ifndef LINK_BROKER_H
#define LINK_BROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "proto_limits.h"
#include "proto_msg.h"

typedef struct link_t link_t;

//  Results of link_publish and the other requests.
typedef enum {
    LINK_OK = 0,              //  Accepted
    LINK_FULL = 1,            //  Window full: offer it again after on_stored
    LINK_E_UNKNOWN_CONN = -1, //  No such connection (link_conn_add first)
    LINK_E_SEQ = -2,          //  Sequence not above the last one offered / stored
    LINK_E_INVALID = -3,      //  The message breaks a protocol rule or limit
    LINK_E_NOMEM = -4         //  Out of memory
} link_status_t;

//  What on_deliver answers.
typedef enum {
    LINK_APPLIED = 0, //  Applied durably (or a duplicate): send CONSUMED now
    LINK_LATER = 1,   //  The application calls link_consume when applied
    LINK_REFUSED = -1 //  Not applied and never will be as is: answer nothing
} link_apply_t;

typedef enum {
    LINK_DOWN = 0, //  No socket: waiting for the backoff to pass
    LINK_HELLO,    //  HELLO sent, waiting for WELCOME
    LINK_READY     //  Session established
} link_state_t;

//  An ERROR from the broker, or a failure the link found itself (local).
typedef struct {
    uint16_t code;    //  proto_err_code_t (or a newer code)
    const char *text; //  Explanation, never NULL
    const char *conn; //  Connection concerned, or NULL
    bool has_seq;     //  seq is meaningful
    uint64_t seq;     //  Sequence concerned
    bool local;       //  True: found by the link (bad frame, lost message)
} link_error_t;

//  Every callback is optional (NULL: ignored; a NULL on_deliver refuses).
//  Strings passed in are valid only during the call.
typedef struct {
    //  The link changed state; reason says why, for the node's log.
    void (*on_state)(link_state_t state, const char *reason, void *arg);
    //  The broker stored every PUBLISH of conn up to seq: delete them from
    //  the outbox, offer more.
    void (*on_stored)(const char *conn, uint64_t seq, void *arg);
    //  A message of the other node. Returns a link_apply_t. CONSUMED goes
    //  out only for connections the link knows (link_conn_add, link_join).
    int (*on_deliver)(const char *conn, uint64_t seq, const uint8_t *payload, size_t size,
                      void *arg);
    //  INVITE registered durably.
    void (*on_invited)(const char *conn, uint64_t expires, void *arg);
    //  A connection is bound (JOINED as the broker sent it, lent for the
    //  call): joined->description is the other node's; to the public node,
    //  joined->kx and joined->auth (has_kx) are the private node's half of
    //  the join's key exchange (proto_kx.h), still to be checked.
    void (*on_joined)(const proto_joined_t *joined, void *arg);
    //  A refusal or failure the application should know about: a refused
    //  INVITE or JOIN (conn set), a refused HELLO (403, 426), a PUBLISH the
    //  broker will not take (403, 404, 413: the connection stops sending
    //  until the next session), a message the broker lost (local, 422 below
    //  the window), a bad frame (local, 400).
    void (*on_error)(const link_error_t *error, void *arg);
    //  WELCOME says the broker is past this connection's positions (the
    //  application's state went back in time, docs/protocol.md §4.1): it
    //  holds the application's messages up to stored, and deleted those to
    //  it up to consumed. Before LINK_READY is reported. The link already
    //  counts both as done; the application takes its next sequence above
    //  stored and counts the messages up to consumed as applied.
    void (*on_behind)(const char *conn, uint64_t stored, uint64_t consumed, void *arg);
    void *arg; //  Passed to every callback
} link_callbacks_t;

typedef struct {
    const char *endpoint;               //  Broker endpoint, tcp://host:port
    const char *node_id;                //  Node id, sent in HELLO
    proto_role_t role;                  //  Public or private
    uint8_t public_key[PROTO_KEY_SIZE]; //  Node's CURVE public key (raw)
    uint8_t secret_key[PROTO_KEY_SIZE]; //  Node's CURVE secret key (raw)
    uint8_t broker_key[PROTO_KEY_SIZE]; //  Broker's CURVE public key (raw)
    uint32_t credit;                    //  DELIVERs accepted unconsumed per
                                        //  connection (HELLO; 0: broker default)
    uint32_t window;                    //  PUBLISHes held un-STORED per connection
    size_t window_bytes;                //  Payload bytes held un-STORED per connection:
                                        //  no more is taken once reached (one message is
                                        //  always taken); 0: no bound
    uint32_t batch;                     //  Most messages per PUBLISH / DELIVER frame,
                                        //  when the broker takes batches (1: never batch)
    uint32_t heartbeat_ms;              //  Until WELCOME says otherwise
    uint32_t liveness;                  //  Silent heartbeats before death
    int64_t backoff_min_ms;             //  First reconnect delay
    int64_t backoff_max_ms;             //  Cap of the doubling delay
    int64_t retry_ms;                   //  Pause after ERROR 429 / 500
    proto_limits_t limits;              //  Decoder limits for the broker's frames
} link_config_t;

//  Fills *config with the defaults: window 256, window_bytes 8 MiB, batch 64,
//  heartbeat 5000 ms, liveness
//  3, backoff 1000 -> 32000 ms, retry 1000 ms, credit 0, default limits;
//  endpoint, node id, role and keys are left for the caller.
void link_config_defaults(link_config_t *config);

//  Creates a link on the ZeroMQ context zmq_ctx (not owned; it must outlive
//  the link). Opens no socket yet: the first link_tick does. Strings in
//  config are copied. Returns NULL with a reason in err on a bad config or
//  out of memory. The caller owns the link.
link_t *link_new(void *zmq_ctx, const link_config_t *config, const link_callbacks_t *callbacks,
                 char *err, size_t errlen);

//  Closes the socket (unsent messages are dropped: they are all re-sent by
//  the next session of the next process), frees everything, sets *self_p to
//  NULL; accepts NULL.
void link_destroy(link_t **self_p);

//  Adds connection conn with the application's durable positions: stored,
//  the highest own sequence the broker confirmed, and consumed, the highest
//  inbound sequence applied. Adding a known connection raises its positions
//  to these when higher. The connection is in the next HELLO. Returns
//  LINK_OK, LINK_E_INVALID (bad id) or LINK_E_NOMEM.
int link_conn_add(link_t *self, const char *conn, uint64_t stored, uint64_t consumed);

//  Forgets conn and its un-STORED messages. Returns LINK_OK or
//  LINK_E_UNKNOWN_CONN.
int link_conn_remove(link_t *self, const char *conn);

//  Between link_cork and link_uncork, link_publish only queues: the burst
//  leaves at link_uncork, consecutive messages of a connection batched into
//  one PUBLISH when the broker takes batches (WELCOME.batch). Without a cork
//  each link_publish sends at once.
void link_cork(link_t *self);
void link_uncork(link_t *self);

//  The next sequence the application will assign on conn (every lower one
//  was assigned, sent or not), for HELLO: it lets the broker tell a node
//  whose state went back in time (on_behind). 0: not reported. Returns
//  LINK_OK or LINK_E_UNKNOWN_CONN.
int link_conn_set_next(link_t *self, const char *conn, uint64_t next);

//  Offers PUBLISH (conn, seq, payload); file says the payload is file data
//  (an attachment's chunk: PUBLISH "file", docs/protocol.md §4.7), false a
//  record, a receipt or anything else. The flag goes with the message
//  whenever it is sent, batched or not; it only informs the broker's
//  counters (it is outside the seal). seq must be above every sequence
//  offered or stored before on conn. On LINK_OK the link holds a copy and
//  sends it as soon as the session and the credit allow, again and again
//  until STORED. Returns a link_status_t.
int link_publish(link_t *self, const char *conn, uint64_t seq, const uint8_t *payload, size_t size,
                 bool file);

//  Free places in conn's window (0 for an unknown connection, and while it
//  holds window_bytes or more): link_publish takes a message, whatever its
//  size, while this is not 0.
size_t link_room(const link_t *self, const char *conn);

//  Messages of conn not yet STORED (0 for an unknown connection).
size_t link_unstored(const link_t *self, const char *conn);

//  Reports inbound (conn, seq) applied durably (and, the receiver applying
//  in order, everything before it): raises conn's consumed position and
//  sends CONSUMED with it when the link is up (otherwise the next HELLO
//  carries it). Called from a callback inside link_handle, the CONSUMED
//  waits for the end of the burst, so that one frame covers many messages.
//  Returns a link_status_t.
int link_consume(link_t *self, const char *conn, uint64_t seq);

//  Registers a join token with the broker (public node): INVITE until
//  INVITED or ERROR. Returns a link_status_t.
int link_invite(link_t *self, const char *conn, const uint8_t token_hash[PROTO_KEY_SIZE],
                uint64_t expires, const char *description);

//  Presents a join token (private node): JOIN until JOINED or ERROR, with
//  this node's half of the key exchange, kx and auth (proto_kx_accept; both
//  NULL: none, as a 1.1 node). Adds conn to the link's connections. Returns
//  a link_status_t.
int link_join(link_t *self, const char *conn, const uint8_t token[PROTO_KEY_SIZE],
              const uint8_t *kx, const uint8_t *auth, const char *description);

//  Fills *item to poll the socket for input and returns true; returns false
//  while the link has no socket (LINK_DOWN). The socket changes across
//  reconnects: fill the item on every turn of the loop.
bool link_pollitem(const link_t *self, zmq_pollitem_t *item);

//  The socket, or NULL while down (for callers that poll it themselves).
void *link_socket(const link_t *self);

//  Reads and handles every message waiting on the socket (without
//  blocking), then sends what the window and credit allow. Returns the
//  number of messages handled, or -1 on a socket failure (the link then
//  reconnects by itself).
int link_handle(link_t *self, int64_t now_ms);

//  Does what time asks for: opens the socket when the backoff has passed,
//  declares a silent broker dead, sends PING when idle, resumes paused
//  connections.
void link_tick(link_t *self, int64_t now_ms);

//  Milliseconds until link_tick has something to do (>= 0).
long link_next_timeout_ms(const link_t *self, int64_t now_ms);

//  Current state.
link_state_t link_state(const link_t *self);

//  Name of a state ("down", "hello", "ready") and of a status.
const char *link_state_name(link_state_t state);
const char *link_status_str(int status);

//  Heartbeat interval in force (WELCOME's, or the configured one before).
uint32_t link_heartbeat_ms(const link_t *self);

#endif
