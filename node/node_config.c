/*  node_config.c: the nodes' configuration keys (see node_config.h).

    s_keys is the table every lookup, check and help line comes from.
*/
#include "node_config.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <zmq.h>

#include "ts_log.h"
#include "ts_secret.h"

typedef enum { S_TEXT, S_LONG, S_BOOL } s_type_t;

typedef struct {
    const char *section;  //  INI section
    const char *key;      //  Key
    s_type_t type;        //  Value type
    const char *fallback; //  Default ("" none)
    long min, max;        //  Range of a number
    const char *help;     //  One line for --help and docs
} s_key_t;

static const s_key_t s_keys[] = {
    {"node", "name", S_TEXT, "", 0, 0, "node id at the broker ([A-Za-z0-9._:-], unique)"},
    {"node", "state_dir", S_TEXT, "", 0, 0, "state directory (node.db, keys/)"},
    {"node", "poll_interval_ms", S_LONG, "2000", 100, 3600000, "ServiceNow poll interval"},
    {"node", "lookback_s", S_LONG, "10", 1, 3600, "seconds re-read before the poll cursor"},
    {"node", "invite_ttl_s", S_LONG, "604800", 60, 31536000,
     "invitation code lifetime (public node)"},
    {"node", "log_level", S_TEXT, "info", 0, 0, "debug, info, warn or error"},
    {"servicenow", "url", S_TEXT, "", 0, 0, "instance URL, https://NAME.service-now.com"},
    {"servicenow", "instance", S_TEXT, "", 0, 0,
     "short instance name shown in comments and correlation_display (default: URL host's "
     "first label)"},
    {"servicenow", "user", S_TEXT, "", 0, 0, "integration user's user_name"},
    {"servicenow", "auth", S_TEXT, "basic", 0, 0, "basic or oauth"},
    {"servicenow", "password_file", S_TEXT, "", 0, 0, "file (mode 0600) holding the password"},
    {"servicenow", "password_env", S_TEXT, "", 0, 0, "environment variable holding the password"},
    {"servicenow", "client_id", S_TEXT, "", 0, 0, "OAuth client id (auth = oauth)"},
    {"servicenow", "client_secret_file", S_TEXT, "", 0, 0,
     "file (mode 0600) holding the OAuth client secret"},
    {"servicenow", "client_secret_env", S_TEXT, "", 0, 0,
     "environment variable holding the OAuth client secret"},
    {"servicenow", "ca_file", S_TEXT, "", 0, 0, "PEM CA bundle (default: the system's)"},
    {"servicenow", "allow_insecure_http", S_BOOL, "false", 0, 0,
     "allow http:// to a host that is not loopback"},
    {"servicenow", "request_timeout_ms", S_LONG, "90000", 1000, 600000,
     "timeout of one HTTP exchange"},
    {"servicenow", "max_retry_wait_ms", S_LONG, "120000", 0, 3600000,
     "longest a call waits in retries (429, 5xx) before the engine backs off"},
    {"broker", "endpoint", S_TEXT, "", 0, 0,
     "broker endpoint tcp://HOST:PORT (private node: taken from the invitation when absent)"},
    {"broker", "public_key", S_TEXT, "", 0, 0,
     "broker's CURVE public key, Z85 (`twinsync-broker key`; private: from the invitation)"},
    {"broker", "heartbeat_ms", S_LONG, "5000", 100, 600000, "heartbeat until WELCOME says"},
    {NULL, NULL, S_TEXT, NULL, 0, 0, NULL}};

static const s_key_t *s_find(const char *section, const char *key)
{
    for (const s_key_t *k = s_keys; k->section; k++)
        if (!strcmp(k->section, section) && !strcmp(k->key, key))
            return k;
    return NULL;
}

typedef struct {
    char *err;     //  Where the first problem goes
    size_t errlen; //  Its size
} s_check_t;

//  ts_ini_each callback: refuses unknown keys and values of the wrong type.
static int s_check_entry(const char *section, const char *key, const char *value, void *arg)
{
    s_check_t *check = arg;
    const s_key_t *k = s_find(section, key);
    if (!k) {
        snprintf(check->err, check->errlen, "unknown configuration key %s.%s (see --help)", section,
                 key);
        return 1;
    }
    if (k->type == S_BOOL && strcmp(value, "true") && strcmp(value, "false")) {
        snprintf(check->err, check->errlen, "%s.%s: expected true or false, got '%s'", section, key,
                 value);
        return 1;
    }
    return 0;
}

static const char *s_text(const node_config_t *cfg, const char *section, const char *key)
{
    const s_key_t *k = s_find(section, key);
    const char *value = ts_ini_get(cfg->ini, section, key);
    return value ? value : k->fallback;
}

static int s_long(const node_config_t *cfg, const char *section, const char *key, long *out,
                  char *err, size_t errlen)
{
    const s_key_t *k = s_find(section, key);
    return ts_ini_get_long(cfg->ini, section, key, strtol(k->fallback, NULL, 10), k->min, k->max,
                           out, err, errlen);
}

//  Applies the --section.key[=value] flags of argv to ini; keeps the rest.
static int s_flags(ts_ini_t *ini, int argc, char **argv, char **rest, int *rest_count, char *err,
                   size_t errlen)
{
    int kept = 0;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        const char *dot = !strncmp(arg, "--", 2) ? strchr(arg + 2, '.') : NULL;
        if (!dot) {
            rest[kept++] = argv[i];
            continue;
        }
        const char *eq = strchr(dot, '=');
        char section[64], key[128];
        snprintf(section, sizeof section, "%.*s", (int)(dot - arg - 2), arg + 2);
        snprintf(key, sizeof key, "%.*s", (int)(eq ? eq - dot - 1 : (long)strlen(dot + 1)),
                 dot + 1);
        const char *value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!value) {
            snprintf(err, errlen, "flag %s needs a value", arg);
            return -1;
        }
        if (!s_find(section, key)) {
            snprintf(err, errlen, "unknown flag --%s.%s (see --help)", section, key);
            return -1;
        }
        if (ts_ini_set(ini, section, key, value)) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    *rest_count = kept;
    return 0;
}

//  The first label of the URL's host ("acme" for https://acme.service-now.com).
static void s_derive_instance(node_config_t *cfg)
{
    const char *host = strstr(cfg->url, "://");
    host = host ? host + 3 : cfg->url;
    size_t len = strcspn(host, ".:/");
    snprintf(cfg->instance_buf, sizeof cfg->instance_buf, "%.*s", (int)len, host);
    bool numeric = len > 0 && (strspn(host, "0123456789") == len || host[0] == '[');
    if (numeric || len == 0 || !strncmp(host, "localhost", len))
        snprintf(cfg->instance_buf, sizeof cfg->instance_buf, "%s", cfg->name);
    cfg->instance = cfg->instance_buf;
}

int node_config_load(node_config_t *cfg, proto_role_t role, const char *path, int argc, char **argv,
                     char **rest, int *rest_count, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->role = role;
    cfg->ini = path ? ts_ini_load(path, err, errlen) : ts_ini_new();
    if (!cfg->ini) {
        if (!path)
            snprintf(err, errlen, "out of memory");
        return -1;
    }
    cfg->path = path ? strdup(path) : NULL;
    if ((path && !cfg->path) || s_flags(cfg->ini, argc, argv, rest, rest_count, err, errlen)) {
        if (path && !cfg->path)
            snprintf(err, errlen, "out of memory");
        node_config_release(cfg);
        return -1;
    }
    s_check_t check = {err, errlen};
    if (ts_ini_each(cfg->ini, s_check_entry, &check) ||
        s_long(cfg, "node", "poll_interval_ms", &cfg->poll_interval_ms, err, errlen) ||
        s_long(cfg, "node", "lookback_s", &cfg->lookback_s, err, errlen) ||
        s_long(cfg, "node", "invite_ttl_s", &cfg->invite_ttl_s, err, errlen) ||
        s_long(cfg, "servicenow", "request_timeout_ms", &cfg->request_timeout_ms, err, errlen) ||
        s_long(cfg, "servicenow", "max_retry_wait_ms", &cfg->max_retry_wait_ms, err, errlen) ||
        s_long(cfg, "broker", "heartbeat_ms", &cfg->heartbeat_ms, err, errlen)) {
        node_config_blame(cfg, err, errlen);
        node_config_release(cfg);
        return -1;
    }
    cfg->name = s_text(cfg, "node", "name");
    cfg->state_dir = s_text(cfg, "node", "state_dir");
    cfg->log_level = s_text(cfg, "node", "log_level");
    cfg->url = s_text(cfg, "servicenow", "url");
    cfg->instance = s_text(cfg, "servicenow", "instance");
    cfg->user = s_text(cfg, "servicenow", "user");
    cfg->auth = s_text(cfg, "servicenow", "auth");
    cfg->password_file = s_text(cfg, "servicenow", "password_file");
    cfg->password_env = s_text(cfg, "servicenow", "password_env");
    cfg->client_id = s_text(cfg, "servicenow", "client_id");
    cfg->client_secret_file = s_text(cfg, "servicenow", "client_secret_file");
    cfg->client_secret_env = s_text(cfg, "servicenow", "client_secret_env");
    cfg->ca_file = s_text(cfg, "servicenow", "ca_file");
    cfg->allow_insecure_http = !strcmp(s_text(cfg, "servicenow", "allow_insecure_http"), "true");
    cfg->endpoint = s_text(cfg, "broker", "endpoint");
    cfg->broker_key = s_text(cfg, "broker", "public_key");
    ts_log_level_t level;
    if (ts_log_level_parse(cfg->log_level, &level)) {
        snprintf(err, errlen, "node.log_level: expected debug, info, warn or error, got '%s'",
                 cfg->log_level);
        node_config_blame(cfg, err, errlen);
        node_config_release(cfg);
        return -1;
    }
    if (strcmp(cfg->auth, "basic") && strcmp(cfg->auth, "oauth")) {
        snprintf(err, errlen, "servicenow.auth: expected basic or oauth, got '%s'", cfg->auth);
        node_config_blame(cfg, err, errlen);
        node_config_release(cfg);
        return -1;
    }
    if (!*cfg->instance && *cfg->url)
        s_derive_instance(cfg);
    return 0;
}

void node_config_release(node_config_t *cfg)
{
    ts_ini_destroy(&cfg->ini);
    free(cfg->path);
    memset(cfg, 0, sizeof *cfg);
}

int node_config_blame(const node_config_t *cfg, char *err, size_t errlen)
{
    if (!cfg->path || !strncmp(err, cfg->path, strlen(cfg->path)))
        return -1;
    char message[512];
    snprintf(message, sizeof message, "%s", err);
    snprintf(err, errlen, "%s: %s", cfg->path, message);
    return -1;
}

//  True when text[0..len) is a host: a DNS name or IPv4 address
//  ([A-Za-z0-9.-], not starting with '.' or '-'), or an [IPv6] literal.
static bool s_host_ok(const char *text, size_t len)
{
    if (len >= 2 && text[0] == '[' && text[len - 1] == ']')
        return strspn(text + 1, "0123456789abcdefABCDEF:.") == len - 2 && len > 2;
    return len > 0 && text[0] != '.' && text[0] != '-' &&
           strspn(text, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-") == len;
}

//  True when text is ":PORT" with PORT 1..65535 and nothing after it.
static bool s_port_ok(const char *text)
{
    if (text[0] != ':' || !isdigit((unsigned char)text[1]))
        return false;
    char *end = NULL;
    long port = strtol(text + 1, &end, 10);
    return *end == '\0' && port >= 1 && port <= 65535;
}

bool node_config_endpoint_ok(const char *endpoint)
{
    if (strncmp(endpoint, "tcp://", 6))
        return false;
    const char *host = endpoint + 6;
    const char *colon = strrchr(host, ':');
    return colon && s_host_ok(host, (size_t)(colon - host)) && s_port_ok(colon);
}

//  True when url looks like http(s)://HOST[:PORT][/PATH] with no blanks. The
//  ServiceNow client checks the rest (credentials, query, plain http).
static bool s_url_ok(const char *url)
{
    size_t scheme = !strncasecmp(url, "https://", 8) ? 8 : !strncasecmp(url, "http://", 7) ? 7 : 0;
    if (!scheme || strpbrk(url, " \t\r\n"))
        return false;
    const char *host = url + scheme;
    size_t len = strcspn(host, "/");
    const char *colon = host[0] == '[' ? strstr(host, "]:") : memchr(host, ':', len);
    if (colon && host[0] == '[')
        colon++;
    if (colon && colon < host + len) {
        char port[16];
        snprintf(port, sizeof port, "%.*s", (int)(host + len - colon), colon);
        return s_host_ok(host, (size_t)(colon - host)) && s_port_ok(port);
    }
    return s_host_ok(host, len);
}

//  The checks of node_config_check_run, with messages that name the key.
static int s_check_run(const node_config_t *cfg, char *err, size_t errlen)
{
    static const char *const required[][2] = {
        {"node", "name"}, {"node", "state_dir"}, {"servicenow", "url"}, {"servicenow", "user"}};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        if (!*s_text(cfg, required[i][0], required[i][1])) {
            snprintf(err, errlen, "missing key %s.%s", required[i][0], required[i][1]);
            return -1;
        }
    }
    if (!s_url_ok(cfg->url)) {
        snprintf(err, errlen,
                 "servicenow.url: '%s' is not an instance URL (https://NAME.service-now.com)",
                 cfg->url);
        return -1;
    }
    if (!*cfg->password_file && !*cfg->password_env) {
        snprintf(err, errlen,
                 "missing key servicenow.password_file or servicenow.password_env (secrets never "
                 "come from the command line)");
        return -1;
    }
    if (!strcmp(cfg->auth, "oauth") &&
        (!*cfg->client_id || (!*cfg->client_secret_file && !*cfg->client_secret_env))) {
        snprintf(err, errlen,
                 "servicenow.auth = oauth needs client_id and client_secret_file or "
                 "client_secret_env");
        return -1;
    }
    if (cfg->role == PROTO_ROLE_PUBLIC && (!*cfg->endpoint || !*cfg->broker_key)) {
        snprintf(err, errlen, "missing key broker.%s", *cfg->endpoint ? "public_key" : "endpoint");
        return -1;
    }
    if (*cfg->endpoint && !node_config_endpoint_ok(cfg->endpoint)) {
        snprintf(err, errlen, "broker.endpoint: '%s' is not tcp://HOST:PORT", cfg->endpoint);
        return -1;
    }
    uint8_t key[32];
    if (*cfg->broker_key &&
        (strlen(cfg->broker_key) != 40 || !zmq_z85_decode(key, cfg->broker_key))) {
        snprintf(err, errlen,
                 "broker.public_key: expected 40 Z85 characters "
                 "(`twinsync-broker key` prints it)");
        return -1;
    }
    return 0;
}

int node_config_check_run(const node_config_t *cfg, char *err, size_t errlen)
{
    return s_check_run(cfg, err, errlen) ? node_config_blame(cfg, err, errlen) : 0;
}

//  Reads the secret named by [servicenow] NAME_file or NAME_env (one of
//  them set), "" when neither; a failure names the key in err.
static char *s_secret(const node_config_t *cfg, const char *name, char *err, size_t errlen)
{
    char file_key[64], env_key[64];
    snprintf(file_key, sizeof file_key, "%s_file", name);
    snprintf(env_key, sizeof env_key, "%s_env", name);
    const char *file = s_text(cfg, "servicenow", file_key);
    const char *env = s_text(cfg, "servicenow", env_key);
    if (!*file && !*env)
        return strdup("");
    char spec[512], reason[512] = "";
    snprintf(spec, sizeof spec, "%s%s", *file ? "" : "env:", *file ? file : env);
    char *secret = ts_secret_read(spec, reason, sizeof reason);
    if (!secret) {
        snprintf(err, errlen, "servicenow.%s: %s", *file ? file_key : env_key, reason);
        node_config_blame(cfg, err, errlen);
    }
    return secret;
}

int node_config_secrets(const node_config_t *cfg, char **password, char **client_secret, char *err,
                        size_t errlen)
{
    *password = s_secret(cfg, "password", err, errlen);
    *client_secret = *password ? s_secret(cfg, "client_secret", err, errlen) : NULL;
    if (*password && *client_secret)
        return 0;
    ts_secret_free(password);
    ts_secret_free(client_secret);
    return -1;
}

void node_config_print_help(FILE *out, proto_role_t role)
{
    fprintf(out, "configuration keys (file sections, or flags --SECTION.KEY=VALUE):\n");
    for (const s_key_t *k = s_keys; k->section; k++) {
        if (role == PROTO_ROLE_PRIVATE && !strcmp(k->key, "invite_ttl_s"))
            continue;
        char name[64];
        snprintf(name, sizeof name, "%s.%s", k->section, k->key);
        fprintf(out, "  %-32s %s%s%s%s\n", name, k->help, *k->fallback ? " (default " : "",
                k->fallback, *k->fallback ? ")" : "");
    }
}
