/*  node_config.c: the nodes' configuration keys (see node_config.h).

    s_keys is the table every lookup, check and help line comes from
    (ts_config.h); this file adds what the table cannot say: the checks
    that need several keys at once (node_config_check_run) and the secrets.
*/
#include "node_config.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <zmq.h>

#include "ts_cli.h"
#include "ts_log.h"
#include "ts_secret.h"

#define FIELD(f) offsetof(node_config_t, f)

static const ts_config_key_t s_keys[] = {
    {.section = "node",
     .key = "name",
     .kind = TS_CONFIG_STRING,
     .offset = FIELD(name),
     .help = "node id at the broker ([A-Za-z0-9._:-], unique; required)"},
    {.section = "node",
     .key = "state_dir",
     .kind = TS_CONFIG_PATH,
     .offset = FIELD(state_dir),
     .arg = "DIR",
     .help = "state directory (node.db, keys/; required)"},
    {.section = "node",
     .key = "poll_interval_ms",
     .kind = TS_CONFIG_DURATION_MS,
     .fallback = "2000",
     .min = 100,
     .max = 3600000,
     .offset = FIELD(poll_interval_ms),
     .help = "ServiceNow poll interval"},
    {.section = "node",
     .key = "rekey_interval",
     .kind = TS_CONFIG_DURATION_MS,
     .fallback = "168h",
     .min = 0,
     .max = 8760L * 3600000L,
     .offset = FIELD(rekey_interval_ms),
     .help = "the public node rotates each connection's keys this often (0: only on "
             "`connection rekey`)"},
    {.section = "node",
     .key = "pad_payloads",
     .kind = TS_CONFIG_BOOL,
     .fallback = "true",
     .offset = FIELD(pad_payloads),
     .help = "pad sealed payloads to size buckets, so that the broker learns a bucket, not a "
             "size"},
    {.section = "node",
     .key = "attachments",
     .kind = TS_CONFIG_ENUM,
     .choices = "all|none",
     .fallback = "all",
     .offset = FIELD(attachments),
     .help = "attachments this side sends and takes by default (a connection may say "
             "otherwise: `connection attachments`)"},
    {.section = "node",
     .key = "attachment_max_bytes",
     .kind = TS_CONFIG_BYTES,
     .fallback = "1GiB",
     .min = 0,
     .max = 1024L * 1024 * 1024,
     .offset = FIELD(attachment_max_bytes),
     .help = "largest attachment this side sends or takes by default (ServiceNow's own cap "
             "is 1 GiB)"},
    {.section = "node",
     .key = "attachment_scan",
     .kind = TS_CONFIG_DURATION_MS,
     .fallback = "60s",
     .min = 1000,
     .max = 86400000,
     .offset = FIELD(attachment_scan_ms),
     .help = "how often the attachments sent are checked for deletion at their source (one "
             "list request per 50 incidents)"},
    {.section = "node",
     .key = "lookback_s",
     .kind = TS_CONFIG_INT,
     .fallback = "10",
     .min = 1,
     .max = 3600,
     .offset = FIELD(lookback_s),
     .arg = "S",
     .help = "seconds re-read before the poll cursor"},
    {.section = "node",
     .key = "invite_ttl_s",
     .kind = TS_CONFIG_INT,
     .fallback = "604800",
     .min = 60,
     .max = 31536000,
     .offset = FIELD(invite_ttl_s),
     .arg = "S",
     .help = "invitation code lifetime, seconds",
     .scope = PROTO_ROLE_PUBLIC},
    {.section = "node",
     .key = "log_level",
     .kind = TS_CONFIG_ENUM,
     .fallback = "info",
     .choices = "debug|info|warn|error",
     .offset = FIELD(log_level),
     .help = "lowest level logged to stderr"},
    {.section = "servicenow",
     .key = "url",
     .kind = TS_CONFIG_STRING,
     .offset = FIELD(url),
     .arg = "URL",
     .help = "instance URL, https://NAME.service-now.com (required)"},
    {.section = "servicenow",
     .key = "instance",
     .kind = TS_CONFIG_STRING,
     .offset = FIELD(instance),
     .help = "short instance name shown in comments and correlation_display (default: URL "
             "host's first label)"},
    {.section = "servicenow",
     .key = "user",
     .kind = TS_CONFIG_STRING,
     .offset = FIELD(user),
     .help = "integration user's user_name (required)"},
    {.section = "servicenow",
     .key = "auth",
     .kind = TS_CONFIG_ENUM,
     .fallback = "basic",
     .choices = "basic|oauth",
     .offset = FIELD(auth),
     .help = "how to sign in"},
    {.section = "servicenow",
     .key = "password_file",
     .kind = TS_CONFIG_PATH,
     .offset = FIELD(password_file),
     .help = "file (mode 0600) holding the password"},
    {.section = "servicenow",
     .key = "password_env",
     .kind = TS_CONFIG_STRING,
     .offset = FIELD(password_env),
     .arg = "NAME",
     .help = "environment variable holding the password"},
    {.section = "servicenow",
     .key = "client_id",
     .kind = TS_CONFIG_STRING,
     .offset = FIELD(client_id),
     .help = "OAuth client id (auth = oauth)"},
    {.section = "servicenow",
     .key = "client_secret_file",
     .kind = TS_CONFIG_PATH,
     .offset = FIELD(client_secret_file),
     .help = "file (mode 0600) holding the OAuth client secret"},
    {.section = "servicenow",
     .key = "client_secret_env",
     .kind = TS_CONFIG_STRING,
     .offset = FIELD(client_secret_env),
     .arg = "NAME",
     .help = "environment variable holding the OAuth client secret"},
    {.section = "servicenow",
     .key = "ca_file",
     .kind = TS_CONFIG_PATH,
     .offset = FIELD(ca_file),
     .help = "PEM CA bundle (default: the system's)"},
    {.section = "servicenow",
     .key = "allow_insecure_http",
     .kind = TS_CONFIG_BOOL,
     .fallback = "false",
     .offset = FIELD(allow_insecure_http),
     .help = "allow http:// to a host that is not loopback"},
    {.section = "servicenow",
     .key = "request_timeout_ms",
     .kind = TS_CONFIG_DURATION_MS,
     .fallback = "90000",
     .min = 1000,
     .max = 600000,
     .offset = FIELD(request_timeout_ms),
     .help = "timeout of one HTTP exchange"},
    {.section = "servicenow",
     .key = "max_retry_wait_ms",
     .kind = TS_CONFIG_DURATION_MS,
     .fallback = "120000",
     .min = 0,
     .max = 3600000,
     .offset = FIELD(max_retry_wait_ms),
     .help = "longest a call waits in retries (429, 5xx) before the engine backs off"},
    {.section = "broker",
     .key = "endpoint",
     .kind = TS_CONFIG_STRING,
     .offset = FIELD(endpoint),
     .arg = "ENDPOINT",
     .help = "broker endpoint tcp://HOST:PORT (public: required; private: taken from the "
             "invitation when absent)"},
    {.section = "broker",
     .key = "public_key",
     .kind = TS_CONFIG_STRING,
     .offset = FIELD(broker_key),
     .arg = "KEY",
     .help = "broker's CURVE public key, Z85 (`twinsync-broker key`; private: from the "
             "invitation)"},
    {.section = "broker",
     .key = "heartbeat_ms",
     .kind = TS_CONFIG_DURATION_MS,
     .fallback = "5000",
     .min = 100,
     .max = 600000,
     .offset = FIELD(heartbeat_ms),
     .help = "heartbeat until the broker's WELCOME gives its own"},
    {0}};

const ts_config_key_t *node_config_keys(void)
{
    return s_keys;
}

//  The first label of the URL's host ("acme" for https://acme.service-now.com),
//  or the node's name when the host is an address or localhost.
static char *s_derive_instance(const node_config_t *cfg)
{
    const char *host = strstr(cfg->url, "://");
    host = host ? host + 3 : cfg->url;
    size_t len = strcspn(host, ".:/");
    bool numeric = len > 0 && (strspn(host, "0123456789") == len || host[0] == '[');
    if (numeric || len == 0 || !strncmp(host, "localhost", len))
        return strndup(cfg->name, 63);
    return strndup(host, len < 63 ? len : 63);
}

int node_config_from(node_config_t *cfg, proto_role_t role, const ts_config_t *source, char *err,
                     size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->role = role;
    const char *path = ts_config_path(source);
    cfg->path = path ? strdup(path) : NULL;
    if (path && !cfg->path) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (ts_config_apply(source, cfg, err, errlen))
        return node_config_blame(cfg, err, errlen);
    if (!*cfg->instance && *cfg->url) {
        char *derived = s_derive_instance(cfg);
        if (!derived) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        free(cfg->instance);
        cfg->instance = derived;
    }
    return 0;
}

//  Applies the --section.key[=value] flags of argv to source (ts_cli.h);
//  keeps the other arguments in rest.
static int s_flags(ts_config_t *source, int argc, char **argv, char **rest, int *rest_count,
                   char *err, size_t errlen)
{
    //  ts_cli_parse reads from index 1, like a main's argv.
    char **vector = calloc((size_t)argc + 2, sizeof *vector);
    char **args = calloc((size_t)argc + 1, sizeof *args);
    int nargs = 0, rc = -1;
    if (!vector || !args) {
        snprintf(err, errlen, "out of memory");
    } else {
        vector[0] = "node_config";
        memcpy(vector + 1, argv, (size_t)argc * sizeof *argv);
        rc = ts_cli_parse(&source, 1, argc + 1, vector, 1, args, &nargs, err, errlen);
    }
    for (int i = 0; rc == 0 && i < nargs; i++)
        rest[i] = args[i];
    if (rc == 0)
        *rest_count = nargs;
    free(vector);
    free(args);
    return rc;
}

int node_config_load(node_config_t *cfg, proto_role_t role, const char *path, int argc, char **argv,
                     char **rest, int *rest_count, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    ts_config_t *source = ts_config_new(s_keys, err, errlen);
    int rc = !source || s_flags(source, argc, argv, rest, rest_count, err, errlen) ||
                     (path && ts_config_load(source, path, err, errlen))
                 ? -1
                 : node_config_from(cfg, role, source, err, errlen);
    ts_config_destroy(&source);
    if (rc)
        node_config_release(cfg);
    return rc;
}

void node_config_release(node_config_t *cfg)
{
    free(cfg->path);
    ts_config_clear(s_keys, cfg);
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
    const struct {
        const char *name;  //  section.key
        const char *value; //  Its value
    } required[] = {{"node.name", cfg->name},
                    {"node.state_dir", cfg->state_dir},
                    {"servicenow.url", cfg->url},
                    {"servicenow.user", cfg->user}};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        if (!*required[i].value) {
            snprintf(err, errlen, "missing key %s", required[i].name);
            return -1;
        }
    }
    size_t n = strlen(cfg->name);
    if (n > 64 ||
        strspn(cfg->name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-") !=
            n) {
        snprintf(err, errlen, "node.name: '%.80s' must be 1-64 characters of A-Z a-z 0-9 . _ : -",
                 cfg->name);
        return -1;
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

//  Reads the secret named by [servicenow] NAME_file or NAME_env (file or
//  env, one of them set), "" when neither; a failure names the key in err.
static char *s_secret(const node_config_t *cfg, const char *name, const char *file, const char *env,
                      char *err, size_t errlen)
{
    char file_key[64], env_key[64];
    snprintf(file_key, sizeof file_key, "%s_file", name);
    snprintf(env_key, sizeof env_key, "%s_env", name);
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
    *password = s_secret(cfg, "password", cfg->password_file, cfg->password_env, err, errlen);
    *client_secret = *password ? s_secret(cfg, "client_secret", cfg->client_secret_file,
                                          cfg->client_secret_env, err, errlen)
                               : NULL;
    if (*password && *client_secret)
        return 0;
    ts_secret_free(password);
    ts_secret_free(client_secret);
    return -1;
}

void node_config_print_help(FILE *out, proto_role_t role)
{
    fprintf(out, "configuration keys (in the file: [SECTION] KEY = VALUE; on the command line: "
                 "--SECTION.KEY VALUE\nor --SECTION.KEY=VALUE, which wins over the file):\n");
    ts_config_print_help(s_keys, (unsigned)role, out);
}
