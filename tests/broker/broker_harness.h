/*  broker_harness.h: what the broker's integration tests share.

    - th_broker_*: start the real twinsync-broker binary (fork/exec) on
      127.0.0.1 with free ports and a temporary state directory, wait until
      it serves, stop it with a signal, restart it on the same state.
    - th_client_*: a node as the broker sees it: a DEALER socket with its
      own CURVE key pair, sending and receiving proto messages; it answers
      the broker's PINGs and pings when idle, like a real node.
    - th_metric: one number from /metrics.

    Everything fails loudly (cmocka assertions) so that a test reads as the
    scenario it checks.
*/
#ifndef BROKER_HARNESS_H
#define BROKER_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto_msg.h"

#define TH_MAX_ARGS 32

struct CMUnitTest;

//  The one main of the broker's integration tests: the single argument is
//  the path of twinsync-broker (exit 2 with a usage line without it); seeds
//  rand(), runs the tests as one cmocka group and returns its status. A test
//  reaches the binary through th_binary().
int th_main(int argc, char **argv, const struct CMUnitTest *tests, size_t count);

//  Runs th_main over a test array in scope.
#define TH_MAIN(tests) th_main(argc, argv, (tests), sizeof(tests) / sizeof((tests)[0]))

//  The twinsync-broker binary th_main was given.
const char *th_binary(void);

typedef struct {
    const char *binary;            //  Path of twinsync-broker
    char dir[128];                 //  Temporary directory (removed by th_broker_cleanup)
    char state_dir[192];           //  dir/state
    char log_path[192];            //  dir/broker.log: the broker's stderr, appended
    char endpoint[64];             //  tcp://127.0.0.1:PORT
    int metrics_port;              //  Port of /metrics
    char server_key[41];           //  The broker's CURVE public key (Z85)
    const char *args[TH_MAX_ARGS]; //  Extra "--key value" arguments
    int args_count;                //  Entries in args
    char public_keys[1024];        //  --broker.public_keys value (th_broker_add_public_key)
    pid_t pid;                     //  Running process, or 0
} th_broker_t;

//  Prepares a broker description: temp dir, free ports, key pair (through
//  `twinsync-broker key`). Does not start it.
void th_broker_init(th_broker_t *broker, const char *binary);

//  Adds "--name value" to the command line of the next starts.
void th_broker_arg(th_broker_t *broker, const char *name, const char *value);

//  Allows a public node key (Z85) on the next starts.
void th_broker_add_public_key(th_broker_t *broker, const char *key);

//  Starts the broker and waits (up to 10 s) until /healthz answers.
void th_broker_start(th_broker_t *broker);

//  Sends sig and waits for the process. Returns its exit status (0-255)
//  or 128 + signal number when killed.
int th_broker_stop(th_broker_t *broker, int sig);

//  Stops the broker if running (SIGKILL) and removes the directory.
void th_broker_cleanup(th_broker_t *broker);

//  Prints the broker's log to stderr (for a failing test).
void th_broker_dump_log(const th_broker_t *broker);

//  The value of metric name with labels (e.g. 'connection="c1",direction=
//  "public_to_private"', or NULL for none) from /metrics; -1 when absent.
double th_metric(const th_broker_t *broker, const char *name, const char *labels);

//  The whole /metrics text (caller frees).
char *th_metrics_text(const th_broker_t *broker);

typedef struct {
    void *ctx;                 //  ZeroMQ context (owned by the client)
    void *socket;              //  DEALER
    const th_broker_t *broker; //  Where it connects
    char public_key[41];       //  Own CURVE key pair (Z85)
    char secret_key[41];
    int64_t last_sent_ms;    //  For idle pings
    unsigned pings_answered; //  Broker PINGs answered with PONG
} th_client_t;

//  A client with a fresh key pair, connected (not yet HELLO).
void th_client_init(th_client_t *client, const th_broker_t *broker);

//  Same, with a given key pair (e.g. a configured public node key).
void th_client_init_keys(th_client_t *client, const th_broker_t *broker, const char *public_key,
                         const char *secret_key);

//  Closes the socket and opens a new one with the same keys (a node
//  restarting, or reconnecting after a broker restart).
void th_client_reconnect(th_client_t *client);

void th_client_close(th_client_t *client);

//  Encodes and sends msg. Asserts on failure.
void th_send(th_client_t *client, const proto_msg_t *msg);

//  Sends raw bytes as one frame.
void th_send_raw(th_client_t *client, const void *data, size_t size);

//  Receives the next message that is not a PING (PINGs are answered).
//  Returns true with *msg filled (free with proto_msg_clear), or false
//  after timeout_ms.
bool th_recv(th_client_t *client, proto_msg_t *msg, int timeout_ms);

//  Sends PING and waits for its PONG: everything sent before was handled
//  (and committed). Fails on an ERROR in between.
void th_sync(th_client_t *client);

//  STORED is cumulative (docs/protocol.md §4.4): after PUBLISHes up to
//  upto on conn, sends PING and reads until its PONG, expecting only
//  STOREDs of conn that never name a seq above upto and reach upto.
//  Returns how many STOREDs came (at least 1).
size_t th_expect_stored(th_client_t *client, const char *conn, uint64_t upto);

//  Receives and asserts the type; returns the message (caller clears).
void th_expect(th_client_t *client, proto_type_t type, proto_msg_t *msg, int timeout_ms);

//  Expects an ERROR with code. When msg is not NULL the message is handed
//  over (caller clears); otherwise it is freed.
void th_expect_error(th_client_t *client, uint16_t code, proto_msg_t *msg);

//  Asserts that nothing but PINGs arrives within timeout_ms.
void th_expect_silence(th_client_t *client, int timeout_ms);

//  Sends HELLO (role, node id, one connection state when conn is not
//  NULL) and expects WELCOME, then JOINED for conn (which must be joined).
void th_hello(th_client_t *client, const char *node, proto_role_t role, const char *conn,
              uint64_t stored, uint64_t consumed);

//  Sends HELLO and returns whatever comes back first (WELCOME or ERROR).
void th_hello_reply(th_client_t *client, const char *node, proto_role_t role, proto_msg_t *reply);

//  Public node registers conn with token (expiring at expires, Unix s);
//  expects INVITED.
void th_invite(th_client_t *client, const char *conn, const uint8_t token[32], uint64_t expires);

//  Private node presents token; returns the reply (JOINED or ERROR).
void th_join(th_client_t *client, const char *conn, const uint8_t token[32], proto_msg_t *reply);

//  Sends PUBLISH of payload (a record).
void th_publish(th_client_t *client, const char *conn, uint64_t seq, const void *payload,
                size_t size);

//  Sends PUBLISH of payload, flagged as file data when file is set
//  (docs/protocol.md §4.7).
void th_publish_kind(th_client_t *client, const char *conn, uint64_t seq, const void *payload,
                     size_t size, bool file);

//  Sends CONSUMED.
void th_consumed(th_client_t *client, const char *conn, uint64_t seq);

//  A connected pair on connection conn: public node (configured key) and
//  private node (joined with a token), both past HELLO and JOINED.
typedef struct {
    th_client_t pub;  //  Public node
    th_client_t priv; //  Private node
    char conn[64];    //  Connection id
} th_pair_t;

//  Adds the key of a public node to the broker's arguments (call before
//  th_broker_start) and remembers it in pair; th_pair_connect then uses it.
void th_pair_prepare(th_pair_t *pair, th_broker_t *broker, const char *conn);

//  Connects the public node only (HELLO done, nothing invited).
void th_pair_connect_public(th_pair_t *pair, const th_broker_t *broker);

//  Connects both nodes and joins the connection.
void th_pair_connect(th_pair_t *pair, const th_broker_t *broker);

void th_pair_close(th_pair_t *pair);

//  Milliseconds of CLOCK_MONOTONIC.
int64_t th_now_ms(void);

#endif
