/*  node_cli.c: twinsync-public / twinsync-private commands (see node_cli.h).

    How the parts fit:
      s_parse          options common to every command (--config, --json,
                       --wait, --name, --mode, --trigger, config overrides)
      s_cmd_*          one function per command; each prints a table or
                       key: value lines for a person, or one JSON document
                       with --json; failures are one line on stderr
      s_commands       the dispatch table, also the --help text
*/
#include "node_cli.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "node_config.h"
#include "node_engine.h"
#include "node_keys.h"
#include "node_state.h"
#include "proto_invite.h"
#include "ts_log.h"
#include "ts_version.h"

#define S_WAIT_DEFAULT 30 //  Seconds a command waits for the daemon
#define S_DAEMON_FRESH 5  //  Seconds after which the daemon's heartbeat is stale

typedef struct {
    proto_role_t role;   //  Which binary
    const char *prog;    //  "twinsync-public"
    node_config_t cfg;   //  Configuration
    bool json;           //  --json
    long wait_s;         //  --wait
    const char *name;    //  --name
    const char *mode;    //  --mode
    const char *trigger; //  --trigger
    bool show_code;      //  --code
    char **args;         //  Positional arguments after the command words
    int nargs;           //  Entries in args
    node_state_t *state; //  Opened by s_open
} s_cli_t;

typedef int (*s_cmd_fn)(s_cli_t *cli);

typedef struct {
    const char *word1; //  First command word
    const char *word2; //  Second word, or NULL
    int role;          //  0 both, else the only proto_role_t allowed
    int nargs;         //  Positional arguments required
    s_cmd_fn fn;       //  Implementation
    const char *usage; //  Arguments, for --help
    const char *help;  //  One line, for --help
} s_command_t;

//  --- output helpers

__attribute__((format(printf, 2, 3))) static int s_fail(const s_cli_t *cli, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", cli->prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

//  Prints doc (and releases it) as the command's JSON answer.
static int s_json_out(json_t *doc)
{
    if (!doc)
        return 1;
    json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
    json_decref(doc);
    return 0;
}

//  "YYYY-MM-DD HH:MM:SSZ" of Unix seconds t, or "never" for 0.
static const char *s_time(int64_t t, char buf[32])
{
    if (t <= 0)
        return "never";
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, 32, "%Y-%m-%d %H:%M:%SZ", &tm);
    return buf;
}

//  --- state access

static int s_open(s_cli_t *cli)
{
    if (!*cli->cfg.state_dir)
        return s_fail(cli, "missing key node.state_dir (give --config FILE)");
    char err[512];
    cli->state = node_state_open(cli->cfg.state_dir, err, sizeof err);
    return cli->state ? 0 : s_fail(cli, "%s", err);
}

//  True when the daemon published a heartbeat in the last seconds.
static bool s_daemon_running(s_cli_t *cli)
{
    char seen[32];
    if (node_state_meta_get(cli->state, "daemon_seen", seen, sizeof seen))
        return false;
    return time(NULL) - strtoll(seen, NULL, 10) <= S_DAEMON_FRESH;
}

//  Reads connection id-or-name into *conn; prints the failure.
static int s_conn(s_cli_t *cli, const char *which, node_conn_t *conn)
{
    int rc = node_state_conn_get(cli->state, which, conn);
    if (rc < 0)
        return s_fail(cli, "%s", node_state_error(cli->state));
    if (rc == 1)
        return s_fail(cli, "no connection named %s (see `%s connection list`)", which, cli->prog);
    return 0;
}

static void s_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

//  --- connection initiate / accept

//  A new connection id: "c-" and 16 random hex digits.
static int s_new_id(char *id, size_t size)
{
    uint8_t bytes[8];
    if (RAND_bytes(bytes, sizeof bytes) != 1)
        return -1;
    snprintf(id, size, "c-");
    for (size_t i = 0; i < sizeof bytes; i++)
        snprintf(id + 2 + 2 * i, size - 2 - 2 * i, "%02x", bytes[i]);
    return 0;
}

//  A trigger is an encoded query; a line break would end it early.
static bool s_trigger_ok(const char *trigger)
{
    for (const char *c = trigger; *c; c++)
        if ((unsigned char)*c < 0x20)
            return false;
    return strlen(trigger) <= NODE_TEXT_MAX;
}

//  Builds the invitation code of a pending connection (from the database
//  and its key file) into out.
static int s_invite_code(s_cli_t *cli, const node_conn_t *conn, proto_buf_t *out)
{
    node_keys_t keys;
    char err[512];
    if (node_keys_read(cli->cfg.state_dir, conn->id, &keys, err, sizeof err) || !keys.has_token) {
        node_keys_wipe(&keys);
        return s_fail(cli, "cannot read the key file of %s: %s", conn->name,
                      *err ? err : "no join token (already joined?)");
    }
    proto_invite_t invite;
    proto_invite_init(&invite);
    invite.conn = conn->id;
    invite.name = conn->name;
    invite.mode = conn->mode;
    invite.node_name = cli->cfg.name;
    invite.instance_url = cli->cfg.url;
    invite.endpoint = conn->broker_endpoint;
    invite.expires = (uint64_t)conn->expires;
    memcpy(invite.join_token, keys.join_token, PROTO_KEY_SIZE);
    memcpy(invite.secret, keys.secret, PROTO_KEY_SIZE);
    node_keys_wipe(&keys);
    int rc = 0;
    proto_error_t perr;
    if (!zmq_z85_decode(invite.broker_key, conn->broker_key) ||
        proto_invite_encode(&invite, out, &perr) != PROTO_OK)
        rc = s_fail(cli, "cannot build the invitation code: %s", proto_error_str(&perr));
    proto_invite_clear(&invite);
    return rc;
}

//  Waits (bounded) until conn's status leaves from, or invite_sent for a
//  pending one. Fills *conn with the last state read.
static void s_wait_conn(s_cli_t *cli, node_conn_t *conn, node_conn_status_t from, bool invite)
{
    for (long waited = 0; waited < cli->wait_s * 1000; waited += 200) {
        if (node_state_conn_get(cli->state, conn->id, conn))
            return;
        if (conn->status != from || (invite && conn->invite_sent))
            return;
        s_sleep_ms(200);
    }
}

static int s_cmd_initiate(s_cli_t *cli)
{
    char err[512];
    if (!cli->name || !*cli->name)
        return s_fail(cli, "connection initiate needs --name NAME");
    if (cli->mode && strcmp(cli->mode, "basic"))
        return s_fail(cli, "unknown mode '%s': this release syncs in basic mode only", cli->mode);
    if (cli->trigger && !s_trigger_ok(cli->trigger))
        return s_fail(cli, "--trigger must be one line of encoded query (at most %d bytes)",
                      NODE_TEXT_MAX);
    if (node_config_check_run(&cli->cfg, err, sizeof err))
        return s_fail(cli, "%s", err);
    node_conn_t conn;
    memset(&conn, 0, sizeof conn);
    node_keys_t keys = {.has_token = true};
    proto_invite_t secrets;
    proto_invite_init(&secrets);
    if (s_new_id(conn.id, sizeof conn.id) || proto_invite_generate_secrets(&secrets) != PROTO_OK)
        return s_fail(cli, "cannot draw random bytes");
    memcpy(keys.join_token, secrets.join_token, PROTO_KEY_SIZE);
    memcpy(keys.secret, secrets.secret, PROTO_KEY_SIZE);
    proto_invite_clear(&secrets);
    snprintf(conn.name, sizeof conn.name, "%s", cli->name);
    snprintf(conn.mode, sizeof conn.mode, "basic");
    snprintf(conn.trigger, sizeof conn.trigger, "%s", cli->trigger ? cli->trigger : "");
    snprintf(conn.broker_endpoint, sizeof conn.broker_endpoint, "%s", cli->cfg.endpoint);
    snprintf(conn.broker_key, sizeof conn.broker_key, "%s", cli->cfg.broker_key);
    conn.role = PROTO_ROLE_PUBLIC;
    conn.status = NODE_CONN_PENDING;
    conn.expires = (int64_t)time(NULL) + cli->cfg.invite_ttl_s;
    int rc = node_keys_write(cli->cfg.state_dir, conn.id, &keys, err, sizeof err);
    node_keys_wipe(&keys);
    if (rc)
        return s_fail(cli, "%s", err);
    rc = node_state_conn_insert(cli->state, &conn);
    if (rc) {
        node_keys_remove(cli->cfg.state_dir, conn.id);
        return rc == 1 ? s_fail(cli, "a connection named %s exists already", conn.name)
                       : s_fail(cli, "%s", node_state_error(cli->state));
    }
    s_wait_conn(cli, &conn, NODE_CONN_PENDING, true);
    proto_buf_t code;
    proto_buf_init(&code);
    if (s_invite_code(cli, &conn, &code))
        return 1;
    char when[32];
    if (!conn.invite_sent)
        fprintf(stderr,
                "%s: warning: the daemon has not registered this invitation with the broker "
                "yet (is `%s run` running?); the code works once it has\n",
                cli->prog, cli->prog);
    if (cli->json) {
        rc = s_json_out(json_pack("{s:s,s:s,s:s,s:s,s:b,s:s,s:s}", "id", conn.id, "name", conn.name,
                                  "mode", conn.mode, "status", "pending", "registered",
                                  conn.invite_sent, "expires", s_time(conn.expires, when), "code",
                                  (const char *)code.data));
    } else {
        fprintf(stderr,
                "connection %s (%s) is pending. Give this invitation code to the partner's "
                "admin (it carries secrets: send it over a trusted channel); it expires %s:\n",
                conn.name, conn.id, s_time(conn.expires, when));
        printf("%s\n", (const char *)code.data);
    }
    proto_buf_wipe(&code);
    return rc;
}

//  Reads the invitation code: the argument, or stdin when it is "-".
static char *s_read_code(const char *arg)
{
    if (strcmp(arg, "-"))
        return strdup(arg);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len = getline(&line, &cap, stdin);
    if (len < 0) {
        free(line);
        return NULL;
    }
    return line;
}

static int s_cmd_accept(s_cli_t *cli)
{
    if (cli->trigger && !s_trigger_ok(cli->trigger))
        return s_fail(cli, "--trigger must be one line of encoded query (at most %d bytes)",
                      NODE_TEXT_MAX);
    char *text = s_read_code(cli->args[0]);
    if (!text)
        return s_fail(cli, "cannot read invitation code from stdin");
    proto_invite_t invite;
    proto_error_t perr;
    proto_status_t status = proto_invite_decode(text, (uint64_t)time(NULL), &invite, &perr);
    memset(text, 0, strlen(text));
    free(text);
    if (status != PROTO_OK)
        return s_fail(cli, "%s", proto_error_str(&perr));
    int rc = 0;
    node_conn_t conn, old;
    memset(&conn, 0, sizeof conn);
    if (strcmp(invite.mode, "basic")) {
        rc = s_fail(cli, "cannot accept invitation: mode '%s' is not supported by this release",
                    invite.mode);
    } else if (node_state_conn_get(cli->state, invite.conn, &old) == 0) {
        rc = s_fail(cli, "cannot accept invitation: connection %s was accepted already (it is %s)",
                    old.name, node_conn_status_name(old.status));
    } else if (node_state_conn_get(cli->state, invite.name, &old) == 0) {
        rc = s_fail(cli, "cannot accept invitation: a connection named %s exists already",
                    invite.name);
    }
    if (rc) {
        proto_invite_clear(&invite);
        return rc;
    }
    snprintf(conn.id, sizeof conn.id, "%s", invite.conn);
    snprintf(conn.name, sizeof conn.name, "%s", invite.name);
    snprintf(conn.mode, sizeof conn.mode, "%s", invite.mode);
    snprintf(conn.peer_url, sizeof conn.peer_url, "%s", invite.instance_url);
    snprintf(conn.peer_description, sizeof conn.peer_description, "%s (%s)", invite.node_name,
             invite.instance_url);
    snprintf(conn.broker_endpoint, sizeof conn.broker_endpoint, "%s",
             *cli->cfg.endpoint ? cli->cfg.endpoint : invite.endpoint);
    snprintf(conn.trigger, sizeof conn.trigger, "%s", cli->trigger ? cli->trigger : "");
    zmq_z85_encode(conn.broker_key, invite.broker_key, PROTO_KEY_SIZE);
    conn.role = PROTO_ROLE_PRIVATE;
    conn.status = NODE_CONN_JOINING;
    conn.expires = (int64_t)invite.expires;
    node_keys_t keys = {.has_token = true};
    memcpy(keys.join_token, invite.join_token, PROTO_KEY_SIZE);
    memcpy(keys.secret, invite.secret, PROTO_KEY_SIZE);
    proto_invite_clear(&invite);
    char err[512];
    rc = node_keys_write(cli->cfg.state_dir, conn.id, &keys, err, sizeof err);
    node_keys_wipe(&keys);
    if (rc)
        return s_fail(cli, "%s", err);
    if (node_state_conn_insert(cli->state, &conn)) {
        node_keys_remove(cli->cfg.state_dir, conn.id);
        return s_fail(cli, "%s", node_state_error(cli->state));
    }
    s_wait_conn(cli, &conn, NODE_CONN_JOINING, false);
    if (conn.status == NODE_CONN_ERROR) {
        //  Refused by the broker (reused, expired, wrong token): undo, so
        //  that a good code can be accepted later.
        node_state_conn_delete(cli->state, conn.id);
        node_keys_remove(cli->cfg.state_dir, conn.id);
        return s_fail(cli, "cannot accept invitation: %s", conn.error_text);
    }
    if (conn.status != NODE_CONN_ACTIVE)
        return s_fail(cli, "connection %s is not active yet (still joining after %ld s): %s",
                      conn.name, cli->wait_s,
                      s_daemon_running(cli)
                          ? "the daemon cannot reach the broker yet; it keeps trying"
                          : "the daemon is not running; start it and the join completes");
    if (cli->json)
        return s_json_out(json_pack("{s:s,s:s,s:s,s:s}", "id", conn.id, "name", conn.name, "status",
                                    "active", "peer", conn.peer_description));
    printf("connection %s (%s) is active; peer: %s\n", conn.name, conn.id, conn.peer_description);
    return 0;
}

//  --- connection list / show / activate / deactivate / delete

typedef struct {
    uint64_t twins, synced, outbox, errors, blocked;
} s_counts_t;

static s_counts_t s_counts(s_cli_t *cli, const char *conn)
{
    s_counts_t c = {0};
    node_state_twin_count(cli->state, conn, &c.twins, &c.synced);
    node_state_outbox_count(cli->state, conn, &c.outbox);
    node_state_error_count(cli->state, conn, &c.errors);
    node_state_blocked_count(cli->state, conn, NULL, &c.blocked);
    return c;
}

static json_t *s_conn_json(s_cli_t *cli, const node_conn_t *conn)
{
    s_counts_t c = s_counts(cli, conn->id);
    char poll[32], expires[32];
    json_t *doc = json_object();
    json_object_set_new(doc, "id", json_string(conn->id));
    json_object_set_new(doc, "name", json_string(conn->name));
    json_object_set_new(doc, "mode", json_string(conn->mode));
    json_object_set_new(doc, "role", json_string(proto_role_name(conn->role)));
    json_object_set_new(doc, "status", json_string(node_conn_status_name(conn->status)));
    json_object_set_new(doc, "error", json_string(conn->error_text));
    json_object_set_new(doc, "peer", json_string(conn->peer_description));
    json_object_set_new(doc, "trigger", json_string(conn->trigger));
    json_object_set_new(doc, "broker", json_string(conn->broker_endpoint));
    json_object_set_new(doc, "twins", json_integer((json_int_t)c.twins));
    json_object_set_new(doc, "under_sync", json_integer((json_int_t)c.synced));
    json_object_set_new(doc, "outbox", json_integer((json_int_t)c.outbox));
    json_object_set_new(doc, "errors", json_integer((json_int_t)c.errors));
    json_object_set_new(doc, "blocked", json_integer((json_int_t)c.blocked));
    json_object_set_new(doc, "last_poll", json_string(s_time(conn->last_poll_at / 1000, poll)));
    json_object_set_new(doc, "expires", json_string(s_time(conn->expires, expires)));
    json_object_set_new(doc, "next_out_seq", json_integer((json_int_t)conn->next_out_seq));
    json_object_set_new(doc, "stored_seq", json_integer((json_int_t)conn->stored_seq));
    json_object_set_new(doc, "applied_in_seq", json_integer((json_int_t)conn->applied_in_seq));
    return doc;
}

//  The connections as a JSON array, for list and status; frees conns.
static json_t *s_conns_json(s_cli_t *cli, node_conn_t *conns, size_t count)
{
    json_t *list = json_array();
    for (size_t i = 0; i < count; i++)
        json_array_append_new(list, s_conn_json(cli, &conns[i]));
    free(conns);
    return list;
}

static int s_cmd_list(s_cli_t *cli)
{
    node_conn_t *conns;
    size_t count;
    if (node_state_conn_list(cli->state, &conns, &count))
        return s_fail(cli, "%s", node_state_error(cli->state));
    if (cli->json) {
        json_t *list = s_conns_json(cli, conns, count);
        return s_json_out(json_pack("{s:o}", "connections", list));
    }
    printf("%-20s %-20s %-8s %-12s %6s %7s %6s  %s\n", "ID", "NAME", "ROLE", "STATUS", "TWINS",
           "OUTBOX", "ERRORS", "LAST POLL");
    for (size_t i = 0; i < count; i++) {
        s_counts_t c = s_counts(cli, conns[i].id);
        char when[32];
        printf("%-20s %-20s %-8s %-12s %6" PRIu64 " %7" PRIu64 " %6" PRIu64 "  %s\n", conns[i].id,
               conns[i].name, proto_role_name(conns[i].role),
               node_conn_status_name(conns[i].status), c.synced, c.outbox, c.errors,
               s_time(conns[i].last_poll_at / 1000, when));
    }
    if (count == 0)
        printf("(no connections)\n");
    free(conns);
    return 0;
}

static int s_cmd_show(s_cli_t *cli)
{
    node_conn_t conn;
    if (s_conn(cli, cli->args[0], &conn))
        return 1;
    proto_buf_t code;
    proto_buf_init(&code);
    if (cli->show_code && (conn.role != PROTO_ROLE_PUBLIC || conn.status != NODE_CONN_PENDING))
        return s_fail(cli, "--code: only a pending connection of the public node has a code");
    if (cli->show_code && s_invite_code(cli, &conn, &code))
        return 1;
    json_t *doc = s_conn_json(cli, &conn);
    if (cli->show_code)
        json_object_set_new(doc, "code", json_string((const char *)code.data));
    proto_buf_wipe(&code);
    if (cli->json)
        return s_json_out(doc);
    const char *key;
    json_t *value;
    json_object_foreach(doc, key, value)
    {
        if (json_is_string(value))
            printf("%-15s %s\n", key, *json_string_value(value) ? json_string_value(value) : "-");
        else
            printf("%-15s %" JSON_INTEGER_FORMAT "\n", key, json_integer_value(value));
    }
    json_decref(doc);
    return 0;
}

//  Moves a connection to status to, when its status is one of from.
static int s_set_status(s_cli_t *cli, node_conn_status_t to, node_conn_status_t from1,
                        node_conn_status_t from2, const char *verb)
{
    node_conn_t conn;
    if (s_conn(cli, cli->args[0], &conn))
        return 1;
    if (conn.status != from1 && conn.status != from2)
        return s_fail(cli, "connection %s is %s: cannot %s it", conn.name,
                      node_conn_status_name(conn.status), verb);
    if (node_state_conn_set_status(cli->state, conn.id, to, NULL) < 0)
        return s_fail(cli, "%s", node_state_error(cli->state));
    if (cli->json)
        return s_json_out(json_pack("{s:s,s:s,s:s}", "id", conn.id, "name", conn.name, "status",
                                    node_conn_status_name(to)));
    printf("connection %s is %s%s\n", conn.name, node_conn_status_name(to),
           to == NODE_CONN_DEACTIVATED
               ? " (local changes wait and are sent on activation; nothing is applied)"
               : "");
    return 0;
}

static int s_cmd_deactivate(s_cli_t *cli)
{
    return s_set_status(cli, NODE_CONN_DEACTIVATED, NODE_CONN_ACTIVE, NODE_CONN_ERROR,
                        "deactivate");
}

static int s_cmd_activate(s_cli_t *cli)
{
    return s_set_status(cli, NODE_CONN_ACTIVE, NODE_CONN_DEACTIVATED, NODE_CONN_ERROR, "activate");
}

static int s_cmd_delete(s_cli_t *cli)
{
    node_conn_t conn;
    if (s_conn(cli, cli->args[0], &conn))
        return 1;
    if (node_state_conn_delete(cli->state, conn.id) < 0)
        return s_fail(cli, "%s", node_state_error(cli->state));
    node_keys_remove(cli->cfg.state_dir, conn.id);
    if (cli->json)
        return s_json_out(
            json_pack("{s:s,s:s,s:s}", "id", conn.id, "name", conn.name, "status", "deleted"));
    printf("connection %s deleted (its twins' data stays in ServiceNow; the other side keeps "
           "its own copy of the connection)\n",
           conn.name);
    return 0;
}

static int s_cmd_trigger_set(s_cli_t *cli)
{
    node_conn_t conn;
    if (s_conn(cli, cli->args[0], &conn))
        return 1;
    const char *trigger = cli->args[1];
    if (!s_trigger_ok(trigger))
        return s_fail(cli, "the trigger must be one line of encoded query (at most %d bytes)",
                      NODE_TEXT_MAX);
    if (node_state_conn_set_trigger(cli->state, conn.id, trigger) < 0)
        return s_fail(cli, "%s", node_state_error(cli->state));
    if (cli->json)
        return s_json_out(json_pack("{s:s,s:s}", "name", conn.name, "trigger", trigger));
    printf("connection %s: trigger %s%s\n", conn.name, *trigger ? "set to " : "removed", trigger);
    return 0;
}

//  --- exalate / unexalate / twins / queue

static int s_cmd_exalate(s_cli_t *cli)
{
    node_conn_t conn;
    if (s_conn(cli, cli->args[0], &conn))
        return 1;
    node_request_t req = {.kind = NODE_REQ_EXALATE};
    snprintf(req.conn, sizeof req.conn, "%s", conn.id);
    snprintf(req.arg, sizeof req.arg, "%s", cli->args[1]);
    if (node_state_request_add(cli->state, &req))
        return s_fail(cli, "%s", node_state_error(cli->state));
    for (long waited = 0; waited < cli->wait_s * 1000 && req.status == NODE_REQ_QUEUED;
         waited += 200) {
        s_sleep_ms(200);
        if (node_state_request_get(cli->state, req.id, &req))
            break;
    }
    if (req.status == NODE_REQ_QUEUED)
        return s_fail(cli, "exalate %s queued; %s", req.arg,
                      s_daemon_running(cli) ? "the daemon has not done it yet (ServiceNow slow?)"
                                            : "the daemon is not running: it is done at start");
    if (req.status == NODE_REQ_FAILED)
        return s_fail(cli, "cannot exalate %s: %s", req.arg, req.result);
    if (cli->json)
        return s_json_out(json_pack("{s:s,s:s,s:s}", "connection", conn.name, "number", req.arg,
                                    "result", req.result));
    printf("%s\n", req.result);
    return 0;
}

static int s_cmd_unexalate(s_cli_t *cli)
{
    node_conn_t conn;
    if (s_conn(cli, cli->args[0], &conn))
        return 1;
    node_twin_t twin = {0};
    int rc = node_state_twin_by_number(cli->state, conn.id, cli->args[1], &twin);
    if (rc)
        return rc < 0 ? s_fail(cli, "%s", node_state_error(cli->state))
                      : s_fail(cli, "%s is not a twin on connection %s", cli->args[1], conn.name);
    rc = node_state_twin_set_sync(cli->state, conn.id, twin.local_sys_id, false);
    char local[PROTO_MAX_SN_ID + 1], remote[PROTO_MAX_SN_ID + 1];
    snprintf(local, sizeof local, "%s", twin.local_number);
    snprintf(remote, sizeof remote, "%s", *twin.remote_number ? twin.remote_number : "-");
    node_twin_clear(&twin);
    if (rc < 0)
        return s_fail(cli, "%s", node_state_error(cli->state));
    if (cli->json)
        return s_json_out(json_pack("{s:s,s:s,s:s,s:b}", "connection", conn.name, "local", local,
                                    "remote", remote, "under_sync", 0));
    printf("%s (twin %s) is no longer under sync on %s; both incidents keep their data\n", local,
           remote, conn.name);
    return 0;
}

typedef struct {
    s_cli_t *cli; //  Command
    json_t *list; //  JSON rows (--json)
    size_t count; //  Rows
} s_twins_t;

//  The state of a twin for a person: synced, waiting for the other side,
//  refused, stopped.
static const char *s_twin_state(s_cli_t *cli, const node_twin_t *twin)
{
    node_error_t e;
    if (!twin->under_sync)
        return "unexalated";
    if (twin->peer_stopped)
        return "stopped-by-peer";
    if (node_state_error_for_twin(cli->state, twin->conn, twin->local_sys_id, "local", &e) == 0 ||
        node_state_error_for_twin(cli->state, twin->conn, twin->remote_sys_id, "local", &e) == 0 ||
        node_state_error_for_twin(cli->state, twin->conn, twin->local_sys_id, "remote", &e) == 0)
        return "error";
    if (!*twin->remote_sys_id || twin->acked_seq < twin->last_sent_seq)
        return "pending";
    return "synced";
}

static int s_twin_row(const node_twin_t *twin, void *arg)
{
    s_twins_t *t = arg;
    char when[32], hash[17];
    const char *state = s_twin_state(t->cli, twin);
    t->count++;
    if (t->list) {
        json_array_append_new(
            t->list,
            json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "local", twin->local_number, "local_sys_id",
                      twin->local_sys_id, "remote", twin->remote_number, "remote_sys_id",
                      twin->remote_sys_id, "last_sync", s_time(twin->last_sync_at, when), "state",
                      state, "replica", node_fields_hash_hex(twin->local, hash)));
        return 0;
    }
    printf("%-12s <-> %-12s %-16s %s\n", twin->local_number,
           *twin->remote_number ? twin->remote_number : "(pending)", state,
           s_time(twin->last_sync_at, when));
    return 0;
}

static int s_cmd_twins(s_cli_t *cli)
{
    node_conn_t conn;
    if (s_conn(cli, cli->args[0], &conn))
        return 1;
    s_twins_t t = {cli, cli->json ? json_array() : NULL, 0};
    if (!cli->json)
        printf("%-12s     %-12s %-16s %s\n", "LOCAL", "REMOTE", "STATE", "LAST SYNC");
    if (node_state_twin_each(cli->state, conn.id, s_twin_row, &t)) {
        json_decref(t.list);
        return s_fail(cli, "%s", node_state_error(cli->state));
    }
    if (cli->json)
        return s_json_out(json_pack("{s:s,s:o}", "connection", conn.name, "twins", t.list));
    if (t.count == 0)
        printf("(no twins)\n");
    return 0;
}

static int s_cmd_queue(s_cli_t *cli)
{
    node_conn_t conn;
    if (s_conn(cli, cli->args[0], &conn))
        return 1;
    s_counts_t c = s_counts(cli, conn.id);
    uint64_t last = conn.next_out_seq ? conn.next_out_seq - 1 : 0;
    if (cli->json)
        return s_json_out(json_pack("{s:s,s:{s:I,s:I,s:I},s:{s:I,s:I}}", "connection", conn.name,
                                    "outbox", "waiting", (json_int_t)c.outbox, "last_seq",
                                    (json_int_t)last, "stored_seq", (json_int_t)conn.stored_seq,
                                    "inbox", "applied_seq", (json_int_t)conn.applied_in_seq,
                                    "blocked", (json_int_t)c.blocked));
    printf("connection %s\n", conn.name);
    printf("  outbox: %" PRIu64 " message(s) not yet stored by the broker (last seq %" PRIu64
           ", stored up to %" PRIu64 ")\n",
           c.outbox, last, conn.stored_seq);
    printf("  inbox:  applied up to seq %" PRIu64 "; %" PRIu64
           " message(s) blocked behind twin errors (the broker holds what is not applied)\n",
           conn.applied_in_seq, c.blocked);
    return 0;
}

//  --- errors

static int s_cmd_errors_list(s_cli_t *cli)
{
    node_conn_t conn;
    const char *conn_id = NULL;
    if (cli->nargs > 0) {
        if (s_conn(cli, cli->args[0], &conn))
            return 1;
        conn_id = conn.id;
    }
    node_error_t *list;
    size_t count;
    if (node_state_error_list(cli->state, conn_id, &list, &count))
        return s_fail(cli, "%s", node_state_error(cli->state));
    json_t *rows = cli->json ? json_array() : NULL;
    if (!cli->json)
        printf("%-5s %-20s %-12s %-12s %-7s %-12s %7s  %s\n", "ID", "CONNECTION", "LOCAL", "REMOTE",
               "ORIGIN", "CODE", "RETRIES", "MESSAGE");
    for (size_t i = 0; i < count; i++) {
        node_error_t *e = &list[i];
        char when[32];
        if (rows) {
            json_array_append_new(
                rows,
                json_pack("{s:I,s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:i,s:s,s:s,s:b}", "id",
                          (json_int_t)e->id, "connection", e->conn, "local", e->local_number,
                          "remote", e->remote_number, "origin", e->origin, "code", e->code,
                          "message", e->message, "seq", (json_int_t)e->seq, "retries", e->retries,
                          "created", s_time(e->created_at, when), "updated",
                          s_time(e->updated_at, when), "retry_requested", e->retry_requested));
            continue;
        }
        char message[NODE_TEXT_MAX + 1];
        snprintf(message, sizeof message, "%s", e->message);
        for (char *c = message; *c; c++)
            if (*c == '\n' || *c == '\t')
                *c = ' ';
        printf("%-5" PRId64 " %-20s %-12s %-12s %-7s %-12s %7d  %s\n", e->id, e->conn,
               *e->local_number ? e->local_number : "-", *e->remote_number ? e->remote_number : "-",
               e->origin, e->code, e->retries, message);
    }
    free(list);
    if (rows)
        return s_json_out(json_pack("{s:o}", "errors", rows));
    if (count == 0)
        printf("(no errors)\n");
    return 0;
}

static int s_cmd_errors_retry(s_cli_t *cli)
{
    char *end = NULL;
    long long id = strtoll(cli->args[0], &end, 10);
    if (!end || *end || id <= 0)
        return s_fail(cli, "errors retry needs an error id (see `%s errors list`)", cli->prog);
    node_error_t before, after;
    int rc = node_state_error_get(cli->state, id, &before);
    if (rc)
        return rc < 0 ? s_fail(cli, "%s", node_state_error(cli->state))
                      : s_fail(cli, "no error %lld (see `%s errors list`)", id, cli->prog);
    if (node_state_error_request_retry(cli->state, id) < 0)
        return s_fail(cli, "%s", node_state_error(cli->state));
    for (long waited = 0; waited < cli->wait_s * 1000; waited += 200) {
        s_sleep_ms(200);
        rc = node_state_error_get(cli->state, id, &after);
        if (rc != 0 || !after.retry_requested)
            break;
    }
    const char *outcome = rc == 1 ? "resolved"
                          : rc == 0 && !after.retry_requested && !strcmp(before.origin, "remote")
                              ? "sent again"
                          : rc == 0 && !after.retry_requested ? "failed again"
                                                              : "queued";
    if (cli->json)
        return s_json_out(json_pack("{s:I,s:s,s:s}", "id", (json_int_t)id, "outcome", outcome,
                                    "message", rc == 0 ? after.message : ""));
    if (!strcmp(outcome, "resolved")) {
        printf("error %lld resolved: the twin is in sync again\n", id);
        return 0;
    }
    if (!strcmp(outcome, "sent again")) {
        printf("error %lld: the replica was sent again; the other side retries it on arrival\n",
               id);
        return 0;
    }
    if (!strcmp(outcome, "failed again"))
        return s_fail(cli, "error %lld failed again: %s", id, after.message);
    return s_fail(cli, "error %lld marked for retry; %s", id,
                  s_daemon_running(cli) ? "the daemon has not retried it yet"
                                        : "the daemon is not running: it retries at start");
}

//  --- status, key

static int s_cmd_status(s_cli_t *cli)
{
    bool running = s_daemon_running(cli);
    char link[32] = "unknown", reason[256] = "";
    node_state_meta_get(cli->state, "link_state", link, sizeof link);
    node_state_meta_get(cli->state, "link_reason", reason, sizeof reason);
    node_conn_t *conns;
    size_t count;
    if (node_state_conn_list(cli->state, &conns, &count))
        return s_fail(cli, "%s", node_state_error(cli->state));
    if (cli->json) {
        json_t *list = s_conns_json(cli, conns, count);
        return s_json_out(json_pack("{s:s,s:s,s:b,s:s,s:s,s:o}", "node", cli->cfg.name, "role",
                                    proto_role_name(cli->role), "daemon_running", running, "link",
                                    running ? link : "down", "link_reason", reason, "connections",
                                    list));
    }
    printf("node %s (%s): daemon %s, broker link %s%s%s%s\n", cli->cfg.name,
           proto_role_name(cli->role), running ? "running" : "NOT RUNNING", running ? link : "down",
           *reason ? " (" : "", reason, *reason ? ")" : "");
    for (size_t i = 0; i < count; i++) {
        s_counts_t c = s_counts(cli, conns[i].id);
        char when[32];
        printf("  %s: %s; twins %" PRIu64 " (%" PRIu64
               " under sync); last poll %s; pending %" PRIu64 " out; errors %" PRIu64 "%s%s\n",
               conns[i].name, node_conn_status_name(conns[i].status), c.twins, c.synced,
               s_time(conns[i].last_poll_at / 1000, when), c.outbox, c.errors,
               *conns[i].error_text ? "; " : "", conns[i].error_text);
    }
    if (count == 0)
        printf("  (no connections)\n");
    free(conns);
    return 0;
}

static int s_cmd_key(s_cli_t *cli)
{
    uint8_t pub[PROTO_KEY_SIZE], sec[PROTO_KEY_SIZE];
    char z85[41], err[512];
    if (!*cli->cfg.state_dir)
        return s_fail(cli, "missing key node.state_dir (give --config FILE)");
    if (node_keys_node_pair(cli->cfg.state_dir, pub, sec, z85, err, sizeof err))
        return s_fail(cli, "%s", err);
    memset(sec, 0, sizeof sec);
    if (cli->json)
        return s_json_out(json_pack("{s:s}", "public_key", z85));
    printf("%s\n", z85);
    return 0;
}

//  --- run

static volatile sig_atomic_t s_stop = 0;

static void s_on_signal(int signum)
{
    (void)signum;
    s_stop = 1;
}

static int s_cmd_run(s_cli_t *cli)
{
    ts_log_level_t level;
    if (ts_log_level_parse(cli->cfg.log_level, &level) == 0)
        ts_log_set_level(level);
    char err[512];
    node_engine_t *engine = node_engine_new(&cli->cfg, err, sizeof err);
    if (!engine)
        return s_fail(cli, "%s", err);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    int rc = node_engine_run(engine, &s_stop);
    node_engine_destroy(&engine);
    return rc;
}

//  --- dispatch

static int s_cmd_help(s_cli_t *cli);

static int s_cmd_version(s_cli_t *cli)
{
    printf("%s %s\n", cli->prog, TS_VERSION);
    return 0;
}

static const s_command_t s_commands[] = {
    {"run", NULL, 0, 0, s_cmd_run, "", "the daemon: poll, send, apply (until SIGTERM)"},
    {"connection", "initiate", PROTO_ROLE_PUBLIC, 0, s_cmd_initiate,
     "--name NAME [--mode basic] [--trigger QUERY]",
     "create a connection, print its invitation code"},
    {"connection", "accept", PROTO_ROLE_PRIVATE, 1, s_cmd_accept, "CODE|- [--trigger QUERY]",
     "accept an invitation code (- reads it from stdin)"},
    {"connection", "list", 0, 0, s_cmd_list, "", "connections with status and counts"},
    {"connection", "show", 0, 1, s_cmd_show, "CONN [--code]",
     "one connection in detail (--code: the pending invitation code again)"},
    {"connection", "deactivate", 0, 1, s_cmd_deactivate, "CONN",
     "pause: nothing sent or applied; local changes wait"},
    {"connection", "activate", 0, 1, s_cmd_activate, "CONN", "resume a deactivated connection"},
    {"connection", "delete", 0, 1, s_cmd_delete, "CONN",
     "forget a connection and its twins (ServiceNow data stays)"},
    {"trigger", "set", 0, 2, s_cmd_trigger_set, "CONN QUERY",
     "encoded query whose incidents start syncing (\"\" for none)"},
    {"exalate", NULL, 0, 2, s_cmd_exalate, "CONN NUMBER", "start syncing one incident"},
    {"unexalate", NULL, 0, 2, s_cmd_unexalate, "CONN NUMBER",
     "stop syncing one incident (its data stays)"},
    {"twins", NULL, 0, 1, s_cmd_twins, "CONN", "local number <-> remote number, state, last sync"},
    {"queue", NULL, 0, 1, s_cmd_queue, "CONN", "outbox and inbox of a connection"},
    {"errors", "list", 0, 0, s_cmd_errors_list, "[CONN]", "per-twin and payload errors"},
    {"errors", "retry", 0, 1, s_cmd_errors_retry, "ID", "retry one error now"},
    {"status", NULL, 0, 0, s_cmd_status, "", "daemon, broker link, and every connection"},
    {"key", NULL, 0, 0, s_cmd_key, "",
     "print this node's CURVE public key (made on first use) for the broker's public_keys"},
    {"help", NULL, 0, 0, s_cmd_help, "", "this text"},
    {"version", NULL, 0, 0, s_cmd_version, "", "print the version"},
    {NULL, NULL, 0, 0, NULL, NULL, NULL}};

//  Prints the usage, the commands, the options and the keys to out.
static void s_help(const s_cli_t *cli, FILE *out)
{
    fprintf(out,
            "usage: %s COMMAND [ARGS] [--config FILE] [--json] [--wait S] [--SECTION.KEY=VALUE]\n\n"
            "commands:\n",
            cli->prog);
    for (const s_command_t *c = s_commands; c->word1; c++) {
        if (c->role && c->role != (int)cli->role)
            continue;
        char words[128];
        snprintf(words, sizeof words, "%s%s%s %s", c->word1, c->word2 ? " " : "",
                 c->word2 ? c->word2 : "", c->usage);
        //  Long usages get the help on the next line rather than being cut.
        if (strlen(words) > 52)
            fprintf(out, "  %s\n  %-52s %s\n", words, "", c->help);
        else
            fprintf(out, "  %-52s %s\n", words, c->help);
    }
    fprintf(
        out,
        "\noptions:\n"
        "  --config FILE   configuration (default $TWINSYNC_CONFIG, else /etc/twinsync/%s.ini)\n"
        "  --json          machine-readable output\n"
        "  --wait S        seconds a command waits for the daemon (default %d)\n"
        "  --help, --version\n\n",
        proto_role_name(cli->role), S_WAIT_DEFAULT);
    node_config_print_help(out, cli->role);
}

static int s_cmd_help(s_cli_t *cli)
{
    s_help(cli, stdout);
    return 0;
}

//  Takes the command options out of argv into cli; leaves positionals.
static int s_parse_options(s_cli_t *cli, char **argv, int argc)
{
    int kept = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
        if (!strcmp(a, "--json")) {
            cli->json = true;
        } else if (!strcmp(a, "--code")) {
            cli->show_code = true;
        } else if (!strcmp(a, "--wait") && has_value) {
            cli->wait_s = strtol(argv[++i], NULL, 10);
        } else if (!strcmp(a, "--name") && has_value) {
            cli->name = argv[++i];
        } else if (!strcmp(a, "--mode") && has_value) {
            cli->mode = argv[++i];
        } else if (!strcmp(a, "--trigger") && has_value) {
            cli->trigger = argv[++i];
        } else if (!strncmp(a, "--", 2) && strcmp(a, "--")) {
            return s_fail(cli, "unknown option %s (see --help)", a), -1;
        } else {
            argv[kept++] = argv[i];
        }
    }
    cli->args = argv;
    cli->nargs = kept;
    return 0;
}

//  The configuration file: --config FILE (taken out of argv), else
//  $TWINSYNC_CONFIG, else the default path when it exists.
static const char *s_config_path(s_cli_t *cli, char **argv, int *argc, char *buf, size_t size)
{
    const char *path = NULL;
    int kept = 0;
    for (int i = 0; i < *argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < *argc)
            path = argv[++i];
        else if (!strncmp(argv[i], "--config=", 9))
            path = argv[i] + 9;
        else
            argv[kept++] = argv[i];
    }
    *argc = kept;
    if (path)
        return path;
    if (getenv("TWINSYNC_CONFIG"))
        return getenv("TWINSYNC_CONFIG");
    snprintf(buf, size, "/etc/twinsync/%s.ini", proto_role_name(cli->role));
    return access(buf, R_OK) == 0 ? buf : NULL;
}

static const s_command_t *s_find_command(s_cli_t *cli, int *used)
{
    assert(cli->nargs > 0);
    const char *w1 = cli->args[0];
    const char *w2 = cli->nargs > 1 ? cli->args[1] : "";
    for (const s_command_t *c = s_commands; c->word1; c++) {
        if (strcmp(c->word1, w1) || (c->word2 && strcmp(c->word2, w2)))
            continue;
        if (c->role && c->role != (int)cli->role)
            continue;
        *used = c->word2 ? 2 : 1;
        return c;
    }
    return NULL;
}

int node_cli_main(proto_role_t role, int argc, char **argv)
{
    s_cli_t cli = {.role = role,
                   .prog = role == PROTO_ROLE_PUBLIC ? "twinsync-public" : "twinsync-private",
                   .wait_s = S_WAIT_DEFAULT};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return s_cmd_help(&cli);
        if (!strcmp(argv[i], "--version"))
            return s_cmd_version(&cli);
    }
    if (argc < 2) {
        s_help(&cli, stderr);
        return 2;
    }
    int count = argc - 1;
    char **args = argv + 1;
    char buf[256], err[512];
    const char *path = s_config_path(&cli, args, &count, buf, sizeof buf);
    if (node_config_load(&cli.cfg, role, path, count, args, args, &count, err, sizeof err))
        return s_fail(&cli, "%s", err) + 1;
    int rc = 2;
    if (s_parse_options(&cli, args, count))
        goto done;
    if (cli.nargs == 0) {
        s_fail(&cli, "no command given (see --help)");
        goto done;
    }
    int used = 0;
    const s_command_t *cmd = s_find_command(&cli, &used);
    if (!cmd) {
        s_fail(&cli, "unknown command '%s%s%s' (see --help)", cli.nargs ? cli.args[0] : "",
               cli.nargs > 1 ? " " : "", cli.nargs > 1 ? cli.args[1] : "");
        goto done;
    }
    cli.args += used;
    cli.nargs -= used;
    if (cli.nargs < cmd->nargs) {
        s_fail(&cli, "usage: %s %s%s%s %s", cli.prog, cmd->word1, cmd->word2 ? " " : "",
               cmd->word2 ? cmd->word2 : "", cmd->usage);
        goto done;
    }
    bool needs_state = cmd->fn != s_cmd_run && cmd->fn != s_cmd_help && cmd->fn != s_cmd_version &&
                       cmd->fn != s_cmd_key;
    rc = needs_state && s_open(&cli) ? 1 : cmd->fn(&cli);
done:
    node_state_destroy(&cli.state);
    node_config_release(&cli.cfg);
    return rc;
}
