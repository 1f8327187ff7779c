/*  core_rig.h: the broker's protocol engine (broker_core) on a test bench,
    without sockets or processes; shared by the core unit test and the
    frame-handler fuzzer.

    The rig owns a temporary state directory, a configuration made through
    the real loader, the store, and a core whose output is captured: every
    frame the core sends is decoded and kept with its routing id. A test can
    make the next sends fail (EHOSTUNREACH: peer gone, EAGAIN: peer full).
    Three identities are ready: RIG_PUBLIC (a configured public key),
    RIG_PRIVATE and RIG_STRANGER (unknown keys), each with its routing id
    and network address. Every frame carries its sender's key, as ZAP's
    User-Id does on the socket: a test can send with one identity's routing
    id and another's key (an impostor), give an identity a new routing id
    (a node that restarted: a new socket), or send from any key, routing id
    and address (a flood of strangers).
*/
#ifndef CORE_RIG_H
#define CORE_RIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker_config.h"
#include "broker_core.h"
#include "broker_store.h"
#include "proto_msg.h"

enum { RIG_PUBLIC = 0, RIG_PRIVATE = 1, RIG_STRANGER = 2, RIG_IDS = 3 };

#define RIG_RID_MAX 32 //  Longest routing id a captured frame keeps

typedef struct {
    int id;                   //  Which identity it was sent to (-1: another routing id)
    uint8_t rid[RIG_RID_MAX]; //  The routing id it was sent to (first RIG_RID_MAX bytes)
    size_t rid_size;          //  Its size
    proto_msg_t msg;          //  Decoded frame (owned)
    bool decoded;             //  The frame decoded (the core must only send valid frames)
} rig_out_t;

typedef struct {
    char dir[128];               //  Temporary state directory
    broker_config_t config;      //  Loaded through broker_config_load
    broker_store_t *store;       //  The store
    broker_core_t *core;         //  The engine
    char keys[RIG_IDS][41];      //  Z85 public keys of the identities
    uint8_t rids[RIG_IDS][8];    //  Their routing ids (core_rig_reconnect changes one)
    char addresses[RIG_IDS][16]; //  Their network addresses
    rig_out_t *out;              //  Captured frames
    size_t out_count;            //  Entries in out
    size_t out_cap;              //  Allocated entries
    int fail_errno;              //  Next sends fail with this errno (0: succeed)
    int64_t now_ms;              //  Clock handed to the core
} core_rig_t;

//  Makes the rig. extra_args are more "--key value" flags (NULL-terminated,
//  may be NULL). fast turns fsync off (fuzzing). store_vfs picks an SQLite
//  VFS (NULL: default). Returns 0, or -1 with a message on stderr.
int core_rig_init(core_rig_t *rig, const char *const *extra_args, bool fast, const char *store_vfs);

//  Destroys core and store, removes the directory.
void core_rig_release(core_rig_t *rig);

//  Commits what the core left uncommitted (as the daemon does on SIGTERM),
//  then destroys and re-makes core and store on the same directory.
int core_rig_restart(core_rig_t *rig);

//  Hands a raw frame from identity id to the core. Returns its result.
int core_rig_raw(core_rig_t *rig, int id, const void *data, size_t size);

//  Encodes msg and hands it to the core as from identity id.
int core_rig_send(core_rig_t *rig, int id, const proto_msg_t *msg);

//  Encodes msg and hands it to the core with identity rid_id's routing id
//  and address but identity key_id's CURVE key.
int core_rig_send_as(core_rig_t *rig, int rid_id, int key_id, const proto_msg_t *msg);

//  Encodes msg and hands it to the core as from any sender.
int core_rig_send_from(core_rig_t *rig, const broker_sender_t *from, const proto_msg_t *msg);

//  Gives identity id a routing id it never had, as ZeroMQ does for a node's
//  new socket; frames to its old routing id are captured with id -1.
void core_rig_reconnect(core_rig_t *rig, int id);

//  Number of captured frames of type sent to routing id rid.
size_t core_rig_count_rid(const core_rig_t *rig, const uint8_t *rid, size_t rid_size,
                          proto_type_t type);

//  broker_core_flush with the rig's clock.
int core_rig_flush(core_rig_t *rig);

//  Public and private node say HELLO, the public node INVITEs connection
//  "c1" with the rig's token, the private node JOINs it; flushed. Returns
//  0, or -1 when something in that went wrong.
int core_rig_join(core_rig_t *rig);

//  Frees every captured frame.
void core_rig_clear(core_rig_t *rig);

//  Number of captured frames of type sent to id.
size_t core_rig_count(const core_rig_t *rig, int id, proto_type_t type);

//  The n-th captured frame of type sent to id, or NULL.
const proto_msg_t *core_rig_find(const core_rig_t *rig, int id, proto_type_t type, size_t n);

#endif
