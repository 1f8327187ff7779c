/*  node_config.h: the configuration of twinsync-public and twinsync-private.

    One INI file (sections [node], [servicenow], [broker]) and the same keys
    as flags: "--servicenow.url=https://acme.service-now.com" or
    "--servicenow.url https://..." (ts_cli.h). A flag wins over the file. The
    key table in node_config.c is the single source of truth for names,
    kinds, defaults, ranges and the --help text (ts_config.h does the work);
    docs/configuration.md repeats it (tests/install checks the two agree).
    Unknown keys are refused (a typo must not silently fall back to a
    default).

    Secrets never come from flags or the file itself: password_file /
    client_secret_file name a 0600 file, password_env / client_secret_env an
    environment variable (ts_secret.h).
*/
#ifndef NODE_CONFIG_H
#define NODE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "proto_msg.h"
#include "ts_config.h"

//  Every string is owned by the configuration and never NULL after a load
//  ("" when the key has no value).
typedef struct {
    char *path;                //  Configuration file (owned), NULL: flags only
    proto_role_t role;         //  Which binary
    char *name;                //  [node] name: node id at the broker
    char *state_dir;           //  [node] state_dir
    long poll_interval_ms;     //  [node] poll_interval_ms
    long rekey_interval_ms;    //  [node] rekey_interval (public node; 0: never)
    bool pad_payloads;         //  [node] pad_payloads: sealed payloads padded to size buckets
    char *attachments;         //  [node] attachments: all | none
    long attachment_max_bytes; //  [node] attachment_max_bytes
    long attachment_scan_ms;   //  [node] attachment_scan
    long lookback_s;           //  [node] lookback_s
    long invite_ttl_s;         //  [node] invite_ttl_s (public)
    char *log_level;           //  [node] log_level
    char *url;                 //  [servicenow] url
    char *instance;            //  [servicenow] instance (derived from url if absent)
    char *user;                //  [servicenow] user
    char *auth;                //  [servicenow] auth: basic | oauth
    char *password_file;       //  [servicenow] password_file
    char *password_env;        //  [servicenow] password_env
    char *client_id;           //  [servicenow] client_id (oauth)
    char *client_secret_file;  //  [servicenow] client_secret_file (oauth)
    char *client_secret_env;   //  [servicenow] client_secret_env (oauth)
    char *ca_file;             //  [servicenow] ca_file
    bool allow_insecure_http;  //  [servicenow] allow_insecure_http
    long request_timeout_ms;   //  [servicenow] request_timeout_ms
    long max_retry_wait_ms;    //  [servicenow] max_retry_wait_ms
    char *endpoint;            //  [broker] endpoint
    char *broker_key;          //  [broker] public_key (Z85)
    long heartbeat_ms;         //  [broker] heartbeat_ms
} node_config_t;

//  The key table, for ts_config_new: every key of [node], [servicenow] and
//  [broker]. A key's scope is the roles (proto_role_t values as bits) whose
//  help shows it; both roles accept every key.
const ts_config_key_t *node_config_keys(void);

//  Fills cfg for role from source (made with node_config_keys; its file read
//  and its flags set), all values checked already, and derives what a key
//  left out implies (servicenow.instance from the URL). Returns 0, or -1
//  with one line in err (out of memory). Release with node_config_release,
//  also after a failure.
int node_config_from(node_config_t *cfg, proto_role_t role, const ts_config_t *source, char *err,
                     size_t errlen);

//  Loads path (NULL: flags only) and applies the flags among argc entries of
//  argv (--section.key=value or --section.key value, walked by ts_cli.h);
//  the arguments that are no option are left in *rest, in order, with
//  *rest_count set (rest may alias argv); any other option is refused.
//  Checks every key against the table and every value's type and range.
//  Returns 0, or -1 with one line in err naming the key and, when the value
//  came from a file, the file and line ("/etc/twinsync/public.ini:7:
//  node.lookback_s: ..."); a bad flag is named as given. Release with
//  node_config_release. For tests and tools: the programs parse their
//  command line with node_cli.h and call node_config_from.
int node_config_load(node_config_t *cfg, proto_role_t role, const char *path, int argc, char **argv,
                     char **rest, int *rest_count, char *err, size_t errlen);

//  Frees what node_config_load allocated; safe on a zeroed or released value.
void node_config_release(node_config_t *cfg);

//  Checks that what the daemon (or `connection initiate`) needs is set and
//  well-formed: name (a protocol id), state_dir, url (http(s)://HOST...),
//  user, a password source; public: broker endpoint (tcp://HOST:PORT) and
//  key. Returns 0 or -1 with one line in err naming the file and the key.
int node_config_check_run(const node_config_t *cfg, char *err, size_t errlen);

//  Reads the ServiceNow password (and OAuth client secret) named by the
//  configuration. Returns 0 with strings owned by the caller
//  (ts_secret_free), or -1 with one line in err naming the configuration
//  file, the key and the secret file or variable.
int node_config_secrets(const node_config_t *cfg, char **password, char **client_secret, char *err,
                        size_t errlen);

//  Prefixes the message in err with the configuration file, when there is
//  one ("PATH: message"), so that an error found later (the broker link, the
//  ServiceNow client) names the file like the checks above. Returns -1.
int node_config_blame(const node_config_t *cfg, char *err, size_t errlen);

//  True when endpoint has the form tcp://HOST:PORT (HOST a name, an IPv4
//  address or [IPv6], PORT 1..65535): what a node may dial.
bool node_config_endpoint_ok(const char *endpoint);

//  Prints every key role uses with its meaning, default and range (the
//  --help text).
void node_config_print_help(FILE *out, proto_role_t role);

#endif
