/*  broker_metrics.h: what the broker counts, and the Prometheus text format.

    broker_metrics_t holds the broker-wide numbers (frames rejected by
    reason, fsync latency histogram); per-queue and per-peer numbers live
    with the queues and peers in broker_core.c, which renders everything
    with the writers below. Format: text exposition 0.0.4, families
    contiguous, HELP and TYPE before the samples, label values escaped.
*/
#ifndef BROKER_METRICS_H
#define BROKER_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "proto_buf.h"

//  Why a frame was refused; each has its own counter and label value.
typedef enum {
    BROKER_REJECT_BAD_FRAME,       //  Not a decodable message
    BROKER_REJECT_TOO_BIG,         //  Frame or payload above the limit
    BROKER_REJECT_VERSION,         //  Unsupported major version
    BROKER_REJECT_UNKNOWN_TYPE,    //  Type the broker does not know
    BROKER_REJECT_UNEXPECTED_TYPE, //  Known type a node may not send
    BROKER_REJECT_MULTIPART,       //  More than one frame after the routing id
    BROKER_REJECT_NO_USER_ID,      //  No CURVE key on the message
    BROKER_REJECT_NOT_HELLO,       //  Peer unknown: told to HELLO
    BROKER_REJECT_UNKNOWN_KEY,     //  Key not allowed for that role or action
    BROKER_REJECT_KEY_MISMATCH,    //  Key differs from the session's key
    BROKER_REJECT_FOREIGN_CONN,    //  Connection bound to another key
    BROKER_REJECT_UNKNOWN_CONN,    //  No such connection
    BROKER_REJECT_JOIN_BAD_TOKEN,  //  Join token does not match
    BROKER_REJECT_JOIN_EXPIRED,    //  Join token expired
    BROKER_REJECT_JOIN_REUSED,     //  Join token already used by another key
    BROKER_REJECT_QUEUE_FULL,      //  max_queue_bytes reached (backpressure)
    BROKER_REJECT_SEQUENCE_GAP,    //  PUBLISH seq beyond last stored + 1
    BROKER_REJECT_TOO_MANY_PEERS,  //  max_peers reached
    BROKER_REJECT_TOO_MANY_CONNS,  //  max_connections reached
    BROKER_REJECT_TOO_MANY_GUESTS, //  max_guests reached (a key bound to nothing said HELLO)
    BROKER_REJECT_GUESTS_ADDRESS,  //  max_guests_per_address reached for the sender's address
    BROKER_REJECT_COUNT
} broker_reject_t;

//  Why a CURVE handshake failed (libzmq monitor events).
typedef enum {
    BROKER_HANDSHAKE_PROTOCOL, //  Malformed or undecryptable (e.g. wrong broker key)
    BROKER_HANDSHAKE_AUTH,     //  Refused by the ZAP handler (not CURVE)
    BROKER_HANDSHAKE_OTHER,    //  Any other failure (no detail)
    BROKER_HANDSHAKE_COUNT
} broker_handshake_t;

#define BROKER_FSYNC_BUCKETS 13

typedef struct {
    uint64_t rejected[BROKER_REJECT_COUNT];       //  Frames refused, by reason
    uint64_t fsync_buckets[BROKER_FSYNC_BUCKETS]; //  Commits per latency bucket (not cumulative)
    uint64_t fsync_count;                         //  Commits observed
    double fsync_sum;                             //  Seconds spent committing
    uint64_t replies_dropped;                     //  Replies a full peer queue refused
    uint64_t handshakes_failed[BROKER_HANDSHAKE_COUNT]; //  Failed handshakes, by reason
    uint64_t hello_ahead;                               //  HELLOs claiming a STORED seq we lack
    uint64_t hello_behind;   //  HELLO connections whose node state is older than the queues
    uint64_t guests_expired; //  Guest sessions ended by guest_grace_ms
} broker_metrics_t;

//  The label value of a reason ("bad_frame").
const char *broker_reject_name(broker_reject_t reason);

//  The label value of a handshake failure ("protocol").
const char *broker_handshake_name(broker_handshake_t reason);

//  Records one commit that took seconds.
void broker_metrics_observe_fsync(broker_metrics_t *self, double seconds);

//  Writes "# HELP" and "# TYPE" lines of a family.
void broker_prom_family(proto_buf_t *out, const char *name, const char *type, const char *help);

//  Writes one sample. labels is NULL or preformatted 'k="v",k2="v2"' (use
//  broker_prom_label to build escaped pairs).
void broker_prom_sample(proto_buf_t *out, const char *name, const char *labels, double value);

//  Appends 'key="escaped value"' (with a leading comma when buf is not
//  empty) to the NUL-terminated label list in buf.
void broker_prom_label(char *buf, size_t size, const char *key, const char *value);

//  Writes the fsync latency histogram family (buckets, sum, count).
void broker_metrics_write_fsync(const broker_metrics_t *self, proto_buf_t *out, const char *name);

//  Writes the failed-handshakes counter family, one sample per reason.
void broker_metrics_write_handshakes(const broker_metrics_t *self, proto_buf_t *out,
                                     const char *name);

//  Writes the rejected-frames counter family, one sample per reason.
void broker_metrics_write_rejects(const broker_metrics_t *self, proto_buf_t *out, const char *name);

#endif
