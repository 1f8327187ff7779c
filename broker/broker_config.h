/*  broker_config.h: twinsync-broker's configuration.

    One INI file (section [broker]) and the same keys as flags, spelt as in
    the file: key "max_frame" is also "--broker.max_frame N"; a flag wins
    over the file (ts_cli.h). The key table in broker_config.c is the single
    source of truth for names, kinds, defaults, limits and the --help text;
    docs/configuration.md repeats it (tests/install checks the two agree).
*/
#ifndef BROKER_CONFIG_H
#define BROKER_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "ts_config.h"

#define BROKER_CONFIG_SECTION "broker"

typedef struct {
    char *path;               //  Configuration file (--config), NULL: none
    char *endpoint;           //  ZeroMQ endpoint the ROUTER binds
    char *state_dir;          //  Store, key pair
    char *id;                 //  Broker id sent in WELCOME
    char **public_keys;       //  Z85 CURVE keys of allowed public nodes
    size_t public_keys_count; //  Entries in public_keys
    long metrics_port;        //  Loopback HTTP port for /metrics, 0: off
    long heartbeat_ms;        //  PING when idle this often
    long liveness;            //  Silent heartbeats before a peer is dead
    long credit;              //  Largest delivery window per connection/direction
    long publish_credit;      //  PUBLISHes a node may have un-STORED (WELCOME)
    long max_frame;           //  Largest frame accepted (bytes)
    long max_queue_bytes;     //  Payload bytes held per connection/direction
    long max_peers;           //  Sessions of known keys at once (guests not counted)
    long max_guests;          //  Sessions of guests (keys bound to no connection) at once
    long max_guests_per_addr; //  Guest sessions from one network address at once
    long guest_grace_ms;      //  A guest's session ends this long after its HELLO
    long max_connections;     //  Connections (INVITEd ids) in the store
    long batch;               //  Frames read per group commit at most
    long cache_kib;           //  SQLite page cache bound (KiB)
    char *log_level;          //  debug, info, warn, error
} broker_config_t;

//  The key table, for ts_config_new: every key of section [broker].
const ts_config_key_t *broker_config_keys(void);

//  Fills config from source (made with broker_config_keys; its file read and
//  its flags set): the defaults, then the file, then the flags, all checked
//  already. Returns 0, or -1 with one line in err (out of memory). The
//  caller releases with broker_config_release, also after a failure.
int broker_config_from(broker_config_t *config, const ts_config_t *source, char *err,
                       size_t errlen);

//  Loads the configuration from a command line: defaults, then the file
//  named by "--config FILE" (if any), then every "--broker.KEY VALUE" flag.
//  argv[first..argc) are the arguments after the subcommand; anything else
//  in them is refused. Returns 0, or -1 with one line in err naming the key
//  and, when the value came from the file, the file and line
//  ("/etc/twinsync/broker.ini:4: broker.metrics_port: ..."); a bad flag is
//  named as given. The caller releases with broker_config_release. For tests
//  and tools; twinsync-broker itself parses its command line with ts_cli.h
//  and calls broker_config_from.
int broker_config_load(broker_config_t *config, int argc, char **argv, int first, char *err,
                       size_t errlen);

//  Frees what broker_config_load allocated; safe on a zeroed or released value.
void broker_config_release(broker_config_t *config);

//  Prefixes the message in err with the configuration file, when there is
//  one ("PATH: message"): a start-up failure found after loading (bind,
//  state_dir) names the file too. Returns -1.
int broker_config_blame(const broker_config_t *config, char *err, size_t errlen);

//  True when key (Z85) is one of the configured public node keys.
int broker_config_is_public_key(const broker_config_t *config, const char *key);

//  Prints every key with its meaning, default and range, as --help shows them.
void broker_config_print_help(FILE *out);

#endif
