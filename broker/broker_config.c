/*  broker_config.c: configuration keys, defaults, file and flags (see
    broker_config.h). s_keys is the one table every part reads: the loader,
    the unknown-key check and --help.
*/
#include "broker_config.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "ts_ini.h"
#include "ts_log.h"

typedef enum { KEY_TEXT, KEY_LONG, KEY_KEYS } key_kind_t;

typedef struct {
    const char *name;     //  INI key; the flag is --name with '_' as '-'
    key_kind_t kind;      //  How the value is parsed
    const char *fallback; //  Default, as text
    long min, max;        //  Range of a KEY_LONG
    size_t offset;        //  Field in broker_config_t
    const char *help;     //  One line for --help
} config_key_t;

#define FIELD(f) offsetof(broker_config_t, f)

static const config_key_t s_keys[] = {
    {"endpoint", KEY_TEXT, "tcp://0.0.0.0:5570", 0, 0, FIELD(endpoint),
     "ZeroMQ endpoint the ROUTER socket binds"},
    {"state_dir", KEY_TEXT, "/var/lib/twinsync-broker", 0, 0, FIELD(state_dir),
     "directory of the store (broker.db) and the CURVE key pair (broker.key)"},
    {"id", KEY_TEXT, "broker", 0, 0, FIELD(id), "broker id sent to nodes in WELCOME"},
    {"public_keys", KEY_KEYS, "", 0, 0, FIELD(public_keys),
     "Z85 CURVE public keys of the public nodes allowed, comma-separated"},
    {"metrics_port", KEY_LONG, "9570", 0, 65535, FIELD(metrics_port),
     "port of /metrics and /healthz on 127.0.0.1 (0: off)"},
    {"heartbeat_ms", KEY_LONG, "1000", 50, 600000, FIELD(heartbeat_ms),
     "PING an idle peer this often (ms); nodes are told the same"},
    {"liveness", KEY_LONG, "3", 2, 100, FIELD(liveness),
     "heartbeats a peer may stay silent before it is dead"},
    {"credit", KEY_LONG, "64", 1, 65536, FIELD(credit),
     "most DELIVERs unconsumed per connection and direction"},
    {"publish_credit", KEY_LONG, "256", 1, 65536, FIELD(publish_credit),
     "most PUBLISHes a node may have un-STORED per connection (sent in WELCOME)"},
    {"max_frame", KEY_LONG, "1048576", 4096, 64 * 1024 * 1024, FIELD(max_frame),
     "largest frame accepted, bytes (larger: the peer is disconnected)"},
    {"max_queue_bytes", KEY_LONG, "268435456", 4096, 1L << 40, FIELD(max_queue_bytes),
     "payload bytes held per connection and direction before PUBLISH is refused"},
    {"max_peers", KEY_LONG, "1024", 2, 1000000, FIELD(max_peers),
     "sessions of known keys (listed public nodes, joined private nodes) at once"},
    {"max_guests", KEY_LONG, "64", 1, 1000000, FIELD(max_guests),
     "sessions of keys bound to no connection yet (private nodes about to JOIN) at once"},
    {"max_guests_per_address", KEY_LONG, "8", 1, 1000000, FIELD(max_guests_per_addr),
     "guest sessions from one network address at once"},
    {"guest_grace_ms", KEY_LONG, "5000", 100, 600000, FIELD(guest_grace_ms),
     "a guest session ends this long after its HELLO unless its JOIN bound the key (ms)"},
    {"max_connections", KEY_LONG, "10000", 1, 10000000, FIELD(max_connections),
     "connections registered by INVITE"},
    {"batch", KEY_LONG, "512", 1, 65536, FIELD(batch), "frames handled per group commit at most"},
    {"cache_kib", KEY_LONG, "8192", 256, 4 * 1024 * 1024, FIELD(cache_kib),
     "SQLite page cache bound, KiB"},
    {"log_level", KEY_TEXT, "info", 0, 0, FIELD(log_level), "debug, info, warn or error"},
};

#define KEY_COUNT (sizeof s_keys / sizeof s_keys[0])

static const config_key_t *s_find(const char *name)
{
    for (size_t i = 0; i < KEY_COUNT; i++) {
        if (strcmp(s_keys[i].name, name) == 0)
            return &s_keys[i];
    }
    return NULL;
}

//  Frees the key list and sets it empty.
static void s_keys_free(broker_config_t *config)
{
    for (size_t i = 0; i < config->public_keys_count; i++)
        free(config->public_keys[i]);
    free(config->public_keys);
    config->public_keys = NULL;
    config->public_keys_count = 0;
}

//  Parses a comma- or space-separated list of Z85 keys into config.
static int s_parse_keys(broker_config_t *config, const char *text, char *err, size_t errlen)
{
    s_keys_free(config);
    char *copy = strdup(text);
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int result = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
        uint8_t raw[32];
        if (strlen(tok) != 40 || !zmq_z85_decode(raw, tok)) {
            snprintf(err, errlen,
                     "public_keys: '%.48s' is not a Z85 CURVE public key (40 characters, "
                     "as printed by the node)",
                     tok);
            result = -1;
            break;
        }
        char **grown = realloc(config->public_keys,
                               (config->public_keys_count + 1) * sizeof *config->public_keys);
        char *key = strdup(tok);
        if (!grown || !key) {
            free(key);
            if (grown)
                config->public_keys = grown;
            snprintf(err, errlen, "out of memory");
            result = -1;
            break;
        }
        config->public_keys = grown;
        config->public_keys[config->public_keys_count++] = key;
    }
    free(copy);
    return result;
}

static int s_apply(broker_config_t *config, const config_key_t *key, const ts_ini_t *ini, char *err,
                   size_t errlen)
{
    char *base = (char *)config;
    if (key->kind == KEY_LONG) {
        long fallback = strtol(key->fallback, NULL, 10);
        return ts_ini_get_long(ini, BROKER_CONFIG_SECTION, key->name, fallback, key->min, key->max,
                               (long *)(base + key->offset), err, errlen);
    }
    const char *value = ts_ini_get_or(ini, BROKER_CONFIG_SECTION, key->name, key->fallback);
    if (key->kind == KEY_KEYS)
        return s_parse_keys(config, value, err, errlen);
    char **field = (char **)(base + key->offset);
    free(*field);
    *field = strdup(value);
    if (!*field) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

typedef struct {
    char *err;
    size_t errlen;
} check_t;

static int s_check_known(const char *section, const char *key, const char *value, void *arg)
{
    (void)value;
    check_t *check = arg;
    if (strcmp(section, BROKER_CONFIG_SECTION) != 0) {
        snprintf(check->err, check->errlen, "unknown section [%s] (the broker reads [%s])", section,
                 BROKER_CONFIG_SECTION);
        return -1;
    }
    if (!s_find(key)) {
        snprintf(check->err, check->errlen, "unknown key %s in [%s] (see --help)", key, section);
        return -1;
    }
    return 0;
}

//  Turns "--max-frame" into "max_frame" in buf; returns NULL if arg is no flag.
static const char *s_flag_key(const char *arg, char *buf, size_t size)
{
    if (strncmp(arg, "--", 2) != 0 || !arg[2])
        return NULL;
    snprintf(buf, size, "%s", arg + 2);
    for (char *p = buf; *p; p++) {
        if (*p == '-')
            *p = '_';
    }
    return buf;
}

//  Reads "--config FILE" from the arguments, loads it (noting its name in
//  config->path) or makes an empty ini.
static ts_ini_t *s_load_file(broker_config_t *config, int argc, char **argv, int first, char *err,
                             size_t errlen)
{
    for (int i = first; i < argc; i++) {
        if (strcmp(argv[i], "--config") != 0)
            continue;
        if (i + 1 >= argc) {
            snprintf(err, errlen, "--config needs a file name");
            return NULL;
        }
        config->path = strdup(argv[i + 1]);
        if (!config->path) {
            snprintf(err, errlen, "out of memory");
            return NULL;
        }
        return ts_ini_load(argv[i + 1], err, errlen);
    }
    ts_ini_t *ini = ts_ini_new();
    if (!ini)
        snprintf(err, errlen, "out of memory");
    return ini;
}

//  Applies every "--key value" flag (but --config) on top of the file.
static int s_apply_flags(ts_ini_t *ini, int argc, char **argv, int first, char *err, size_t errlen)
{
    for (int i = first; i < argc; i += 2) {
        char name[64];
        const char *key = s_flag_key(argv[i], name, sizeof name);
        if (!key) {
            snprintf(err, errlen, "unexpected argument '%s' (flags are --key value)", argv[i]);
            return -1;
        }
        if (strcmp(key, "config") != 0 && !s_find(key)) {
            snprintf(err, errlen, "unknown flag '%s' (see --help)", argv[i]);
            return -1;
        }
        if (i + 1 >= argc) {
            snprintf(err, errlen, "flag '%s' needs a value", argv[i]);
            return -1;
        }
        if (strcmp(key, "config") == 0)
            continue;
        if (ts_ini_set(ini, BROKER_CONFIG_SECTION, key, argv[i + 1]) != 0) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    return 0;
}

//  True when text is a protocol id: 1-64 of [A-Za-z0-9._:-].
static bool s_valid_id(const char *text)
{
    size_t n = strlen(text);
    return n > 0 && n <= 64 &&
           strspn(text, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-") == n;
}

int broker_config_load(broker_config_t *config, int argc, char **argv, int first, char *err,
                       size_t errlen)
{
    memset(config, 0, sizeof *config);
    ts_ini_t *ini = s_load_file(config, argc, argv, first, err, errlen);
    if (!ini) {
        broker_config_release(config);
        return -1;
    }
    check_t check = {err, errlen};
    int result = ts_ini_each(ini, s_check_known, &check) != 0
                     ? broker_config_blame(config, err, errlen)
                     : s_apply_flags(ini, argc, argv, first, err, errlen);
    if (result != 0) {
        ts_ini_destroy(&ini);
        broker_config_release(config);
        return -1;
    }
    for (size_t i = 0; result == 0 && i < KEY_COUNT; i++)
        result = s_apply(config, &s_keys[i], ini, err, errlen);
    ts_log_level_t level;
    if (result == 0 && ts_log_level_parse(config->log_level, &level) != 0) {
        snprintf(err, errlen, "log_level: '%s' is not debug, info, warn or error",
                 config->log_level);
        result = -1;
    }
    if (result == 0 && !s_valid_id(config->id)) {
        snprintf(err, errlen, "id: '%s' must be 1-64 characters of A-Z a-z 0-9 . _ : -",
                 config->id);
        result = -1;
    }
    ts_ini_destroy(&ini);
    if (result != 0) {
        broker_config_blame(config, err, errlen);
        broker_config_release(config);
    }
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
    for (size_t i = 0; i < KEY_COUNT; i++) {
        if (s_keys[i].kind == KEY_TEXT) {
            char **field = (char **)((char *)config + s_keys[i].offset);
            free(*field);
            *field = NULL;
        }
    }
    s_keys_free(config);
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
    fprintf(out, "Configuration keys (file section [%s], or flags --key-name VALUE):\n",
            BROKER_CONFIG_SECTION);
    for (size_t i = 0; i < KEY_COUNT; i++) {
        char flag[64];
        snprintf(flag, sizeof flag, "--%s", s_keys[i].name);
        for (char *p = flag + 2; *p; p++) {
            if (*p == '_')
                *p = '-';
        }
        fprintf(out, "  %-20s %s (default: %s)\n", flag, s_keys[i].help,
                *s_keys[i].fallback ? s_keys[i].fallback : "none");
    }
}
