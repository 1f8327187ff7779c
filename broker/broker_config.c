/*  broker_config.c: configuration keys, defaults, file and flags (see
    broker_config.h). s_keys is the one table every part reads: the loader,
    the unknown-key check, the flags and --help (ts_config.h does the work).
*/
#include "broker_config.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "ts_cli.h"

//  Frees the key list and sets it empty (the custom key's clear).
static void s_keys_clear(void *target)
{
    broker_config_t *config = target;
    for (size_t i = 0; i < config->public_keys_count; i++)
        free(config->public_keys[i]);
    free(config->public_keys);
    config->public_keys = NULL;
    config->public_keys_count = 0;
}

//  Parses a comma- or space-separated list of Z85 keys into target (a
//  broker_config_t), or only checks it when target is NULL.
static int s_keys_set(void *target, const char *text, char *err, size_t errlen)
{
    char *copy = strdup(text);
    char **keys = NULL;
    size_t count = 0;
    int result = copy ? 0 : -1;
    if (!copy)
        snprintf(err, errlen, "out of memory");
    char *save = NULL;
    for (char *tok = copy ? strtok_r(copy, ", \t", &save) : NULL; tok && result == 0;
         tok = strtok_r(NULL, ", \t", &save)) {
        uint8_t raw[32];
        if (strlen(tok) != 40 || !zmq_z85_decode(raw, tok)) {
            snprintf(err, errlen,
                     "'%.48s' is not a Z85 CURVE public key (40 characters, as printed by "
                     "`twinsync-public key`)",
                     tok);
            result = -1;
            break;
        }
        if (!target)
            continue;
        char **grown = realloc(keys, (count + 1) * sizeof *keys);
        char *key = strdup(tok);
        if (grown)
            keys = grown;
        if (!grown || !key) {
            free(key);
            snprintf(err, errlen, "out of memory");
            result = -1;
            break;
        }
        keys[count++] = key;
    }
    free(copy);
    if (result == 0 && target) {
        s_keys_clear(target);
        ((broker_config_t *)target)->public_keys = keys;
        ((broker_config_t *)target)->public_keys_count = count;
        return 0;
    }
    for (size_t i = 0; i < count; i++)
        free(keys[i]);
    free(keys);
    return result;
}

//  A protocol id: 1-64 of [A-Za-z0-9._:-].
static int s_check_id(const char *text, char *err, size_t errlen)
{
    size_t n = strlen(text);
    if (n > 0 && n <= 64 &&
        strspn(text, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-") == n)
        return 0;
    snprintf(err, errlen, "'%s' must be 1-64 characters of A-Z a-z 0-9 . _ : -", text);
    return -1;
}

#define FIELD(f) offsetof(broker_config_t, f)

static const ts_config_key_t s_keys[] = {
    {.section = "broker",
     .key = "endpoint",
     .kind = TS_CONFIG_STRING,
     .fallback = "tcp://0.0.0.0:5570",
     .offset = FIELD(endpoint),
     .arg = "ENDPOINT",
     .help = "ZeroMQ endpoint the ROUTER socket binds"},
    {.section = "broker",
     .key = "state_dir",
     .kind = TS_CONFIG_PATH,
     .fallback = "/var/lib/twinsync-broker",
     .offset = FIELD(state_dir),
     .arg = "DIR",
     .help = "directory of the store (broker.db) and the CURVE key pair (broker.key)"},
    {.section = "broker",
     .key = "id",
     .kind = TS_CONFIG_STRING,
     .fallback = "broker",
     .offset = FIELD(id),
     .check = s_check_id,
     .help = "broker id sent to nodes in WELCOME"},
    {.section = "broker",
     .key = "public_keys",
     .kind = TS_CONFIG_CUSTOM,
     .set = s_keys_set,
     .clear = s_keys_clear,
     .arg = "KEYS",
     .help = "Z85 CURVE public keys of the public nodes allowed, comma-separated"},
    {.section = "broker",
     .key = "metrics_port",
     .kind = TS_CONFIG_INT,
     .fallback = "9570",
     .min = 0,
     .max = 65535,
     .offset = FIELD(metrics_port),
     .arg = "PORT",
     .help = "port of /metrics and /healthz on 127.0.0.1 (0: off)"},
    {.section = "broker",
     .key = "heartbeat_ms",
     .kind = TS_CONFIG_DURATION_MS,
     .fallback = "1000",
     .min = 50,
     .max = 600000,
     .offset = FIELD(heartbeat_ms),
     .help = "PING an idle peer this often; nodes are told the same"},
    {.section = "broker",
     .key = "liveness",
     .kind = TS_CONFIG_INT,
     .fallback = "3",
     .min = 2,
     .max = 100,
     .offset = FIELD(liveness),
     .help = "heartbeats a peer may stay silent before it is dead"},
    {.section = "broker",
     .key = "credit",
     .kind = TS_CONFIG_INT,
     .fallback = "64",
     .min = 1,
     .max = 65536,
     .offset = FIELD(credit),
     .help = "most DELIVERs unconsumed per connection and direction"},
    {.section = "broker",
     .key = "publish_credit",
     .kind = TS_CONFIG_INT,
     .fallback = "256",
     .min = 1,
     .max = 65536,
     .offset = FIELD(publish_credit),
     .help = "most PUBLISHes a node may have un-STORED per connection (sent in WELCOME)"},
    {.section = "broker",
     .key = "max_frame",
     .kind = TS_CONFIG_BYTES,
     .fallback = "1048576",
     .min = 4096,
     .max = 64 * 1024 * 1024,
     .offset = FIELD(max_frame),
     .help = "largest frame accepted (larger: the peer is disconnected)"},
    {.section = "broker",
     .key = "max_queue_bytes",
     .kind = TS_CONFIG_BYTES,
     .fallback = "268435456",
     .min = 4096,
     .max = 1L << 40,
     .offset = FIELD(max_queue_bytes),
     .help = "payload bytes held per connection and direction (records and files) before "
             "PUBLISH is refused"},
    {.section = "broker",
     .key = "max_peers",
     .kind = TS_CONFIG_INT,
     .fallback = "1024",
     .min = 2,
     .max = 1000000,
     .offset = FIELD(max_peers),
     .help = "sessions of known keys (listed public nodes, joined private nodes) at once"},
    {.section = "broker",
     .key = "max_guests",
     .kind = TS_CONFIG_INT,
     .fallback = "64",
     .min = 1,
     .max = 1000000,
     .offset = FIELD(max_guests),
     .help = "sessions of keys bound to no connection yet (private nodes about to JOIN) at once"},
    {.section = "broker",
     .key = "max_guests_per_address",
     .kind = TS_CONFIG_INT,
     .fallback = "8",
     .min = 1,
     .max = 1000000,
     .offset = FIELD(max_guests_per_addr),
     .help = "guest sessions from one network address at once"},
    {.section = "broker",
     .key = "guest_grace_ms",
     .kind = TS_CONFIG_DURATION_MS,
     .fallback = "5000",
     .min = 100,
     .max = 600000,
     .offset = FIELD(guest_grace_ms),
     .help = "a guest session ends this long after its HELLO unless its JOIN bound the key"},
    {.section = "broker",
     .key = "max_connections",
     .kind = TS_CONFIG_INT,
     .fallback = "10000",
     .min = 1,
     .max = 10000000,
     .offset = FIELD(max_connections),
     .help = "connections registered by INVITE"},
    {.section = "broker",
     .key = "batch",
     .kind = TS_CONFIG_INT,
     .fallback = "512",
     .min = 1,
     .max = 65536,
     .offset = FIELD(batch),
     .help = "frames handled per group commit at most"},
    {.section = "broker",
     .key = "cache_kib",
     .kind = TS_CONFIG_INT,
     .fallback = "8192",
     .min = 256,
     .max = 4 * 1024 * 1024,
     .offset = FIELD(cache_kib),
     .arg = "KIB",
     .help = "SQLite page cache bound, KiB"},
    {.section = "broker",
     .key = "log_level",
     .kind = TS_CONFIG_ENUM,
     .fallback = "info",
     .choices = "debug|info|warn|error",
     .offset = FIELD(log_level),
     .help = "lowest level logged to stderr"},
    {0}};

//  The options broker_config_load takes besides the keys.
typedef struct {
    char *config; //  --config FILE
} s_options_t;

static const ts_config_key_t s_option_keys[] = {{.key = "config",
                                                 .kind = TS_CONFIG_PATH,
                                                 .offset = offsetof(s_options_t, config),
                                                 .arg = "FILE",
                                                 .help = "INI file with a [broker] section"},
                                                {0}};

const ts_config_key_t *broker_config_keys(void)
{
    return s_keys;
}

int broker_config_from(broker_config_t *config, const ts_config_t *source, char *err, size_t errlen)
{
    memset(config, 0, sizeof *config);
    const char *path = ts_config_path(source);
    config->path = path ? strdup(path) : NULL;
    if (path && !config->path) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return ts_config_apply(source, config, err, errlen) ? broker_config_blame(config, err, errlen)
                                                        : 0;
}

int broker_config_load(broker_config_t *config, int argc, char **argv, int first, char *err,
                       size_t errlen)
{
    memset(config, 0, sizeof *config);
    ts_config_t *options = ts_config_new(s_option_keys, err, errlen);
    ts_config_t *source = options ? ts_config_new(s_keys, err, errlen) : NULL;
    char **args = calloc((size_t)argc + 1, sizeof *args);
    s_options_t opts = {NULL};
    int nargs = 0;
    int result = -1;
    ts_config_t *sets[] = {options, source};
    if (!source || !args) {
        if (!args)
            snprintf(err, errlen, "out of memory");
    } else if (ts_cli_parse(sets, 2, argc, argv, first, args, &nargs, err, errlen) == 0 &&
               ts_config_apply(options, &opts, err, errlen) == 0) {
        if (nargs > 0)
            snprintf(err, errlen, "unexpected argument '%s' (flags are --broker.KEY VALUE)",
                     args[0]);
        else if (!*opts.config || ts_config_load(source, opts.config, err, errlen) == 0)
            result = broker_config_from(config, source, err, errlen);
    }
    if (result != 0)
        broker_config_release(config);
    ts_config_clear(s_option_keys, &opts);
    ts_config_destroy(&options);
    ts_config_destroy(&source);
    free(args);
    return result;
}

int broker_config_blame(const broker_config_t *config, char *err, size_t errlen)
{
    if (!config->path || strncmp(err, config->path, strlen(config->path)) == 0)
        return -1;
    char message[1024];
    snprintf(message, sizeof message, "%s", err);
    snprintf(err, errlen, "%s: %s", config->path, message);
    return -1;
}

void broker_config_release(broker_config_t *config)
{
    free(config->path);
    config->path = NULL;
    ts_config_clear(s_keys, config);
}

int broker_config_is_public_key(const broker_config_t *config, const char *key)
{
    for (size_t i = 0; i < config->public_keys_count; i++) {
        if (strcmp(config->public_keys[i], key) == 0)
            return 1;
    }
    return 0;
}

void broker_config_print_help(FILE *out)
{
    fprintf(out, "configuration keys (in the file: [broker] KEY = VALUE; on the command line: "
                 "--broker.KEY VALUE\nor --broker.KEY=VALUE, which wins over the file):\n");
    ts_config_print_help(s_keys, 0, out);
}
