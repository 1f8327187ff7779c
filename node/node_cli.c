/*  node_cli.c: the nodes' command-line frame and shared commands (see
    node_cli.h).

    How the parts fit:
      s_option_keys  every option, as a ts_config table (kinds, ranges, help)
      s_cmd_*        one function per shared command: calls node_admin.h,
                     prints a table or key: value lines, or JSON with --json
      s_commands     the shared commands: dispatch, argument counts, the
                     options each takes, and the --help text
      s_main         argv -> options, keys and command words (ts_cli.h),
                     the checks of the command line (status 2), the
                     configuration (status 78), then the command
*/
#include "node_cli.h"

#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "node_engine.h"
#include "ts_log.h"
#include "ts_secret.h"
#include "ts_version.h"

#define OPTION(f) offsetof(node_cli_options_t, f)

static const ts_config_key_t s_option_keys[] = {
    {.key = "config",
     .kind = TS_CONFIG_PATH,
     .offset = OPTION(config),
     .arg = "FILE",
     .help = "configuration file (default: $TWINSYNC_CONFIG, else /etc/twinsync/ROLE.ini)"},
    TS_CLI_STANDARD_OPTIONS(node_cli_options_t),
    {.key = "json",
     .kind = TS_CONFIG_SWITCH,
     .offset = OPTION(json),
     .help = "one JSON document on stdout instead of text"},
    {.key = "wait",
     .kind = TS_CONFIG_INT,
     .fallback = "30",
     .min = 0,
     .max = 86400,
     .offset = OPTION(wait_s),
     .arg = "S",
     .help = "seconds to wait for the daemon's answer"},
    {.key = "name",
     .kind = TS_CONFIG_STRING,
     .offset = OPTION(name),
     .arg = "NAME",
     .help = "the connection's name (required)"},
    {.key = "mode",
     .kind = TS_CONFIG_ENUM,
     .fallback = "basic",
     .choices = "basic",
     .offset = OPTION(mode),
     .help = "what syncs (this release: basic only)"},
    {.key = "trigger",
     .kind = TS_CONFIG_STRING,
     .offset = OPTION(trigger),
     .arg = "QUERY",
     .help = "encoded query whose incidents start syncing (default: none)"},
    {.key = "code",
     .kind = TS_CONFIG_SWITCH,
     .offset = OPTION(code),
     .help = "print the pending connection's invitation code again"},
    {0}};

//  Options every command takes.
#define S_COMMON "config help"

//  How a usage line shows the configuration keys.
#define S_KEYS_HINT "[--SECTION.KEY VALUE ...]"

//  --- output helpers

int node_cli_fail(const node_cli_t *cli, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", cli->prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return TS_EXIT_FAILURE;
}

int node_cli_usage_error(const node_cli_t *cli, const char *words, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", cli->prog);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see %s%s%s --help)\n", cli->prog, words ? " " : "", words ? words : "");
    va_end(ap);
    return TS_EXIT_USAGE;
}

int node_cli_config_error(const node_cli_t *cli, const char *message)
{
    char err[1024];
    snprintf(err, sizeof err, "%s", message);
    node_config_blame(&cli->cfg, err, sizeof err);
    fprintf(stderr, "%s: %s\n", cli->prog, err);
    return TS_EXIT_CONFIG;
}

int node_cli_json_out(json_t *doc)
{
    if (!doc)
        return TS_EXIT_FAILURE;
    json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
    json_decref(doc);
    return TS_EXIT_OK;
}

const char *node_cli_time(int64_t t, char buf[32])
{
    if (t <= 0)
        return "never";
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, 32, "%Y-%m-%d %H:%M:%SZ", &tm);
    return buf;
}

int node_cli_open(node_cli_t *cli)
{
    char err[1024];
    if (cli->admin)
        return TS_EXIT_OK;
    if (!*cli->cfg.state_dir)
        return node_cli_config_error(cli, "missing key node.state_dir (give --config FILE)");
    cli->admin = node_admin_open(&cli->cfg, err, sizeof err);
    return cli->admin ? TS_EXIT_OK : node_cli_fail(cli, "%s", err);
}

//  --- connection list / show / activate / deactivate / delete

static json_t *s_conn_json(const node_admin_conn_t *info)
{
    const node_conn_t *conn = &info->conn;
    char poll[32], expires[32];
    json_t *doc = json_object();
    json_object_set_new(doc, "id", json_string(conn->id));
    json_object_set_new(doc, "name", json_string(conn->name));
    json_object_set_new(doc, "mode", json_string(conn->mode));
    json_object_set_new(doc, "role", json_string(proto_role_name(conn->role)));
    json_object_set_new(doc, "status", json_string(node_conn_status_name(conn->status)));
    json_object_set_new(doc, "error", json_string(conn->error_text));
    json_object_set_new(doc, "peer", json_string(conn->peer_description));
    json_object_set_new(doc, "peer_url", json_string(conn->peer_url));
    json_object_set_new(doc, "fingerprint", json_string(conn->fingerprint));
    json_object_set_new(doc, "trigger", json_string(conn->trigger));
    json_object_set_new(doc, "broker", json_string(conn->broker_endpoint));
    json_object_set_new(doc, "twins", json_integer((json_int_t)info->twins));
    json_object_set_new(doc, "under_sync", json_integer((json_int_t)info->under_sync));
    json_object_set_new(doc, "outbox", json_integer((json_int_t)info->outbox));
    json_object_set_new(doc, "errors", json_integer((json_int_t)info->errors));
    json_object_set_new(doc, "blocked", json_integer((json_int_t)info->blocked));
    json_object_set_new(doc, "last_poll",
                        json_string(node_cli_time(conn->last_poll_at / 1000, poll)));
    json_object_set_new(doc, "expires", json_string(node_cli_time(conn->expires, expires)));
    json_object_set_new(doc, "next_out_seq", json_integer((json_int_t)conn->next_out_seq));
    json_object_set_new(doc, "stored_seq", json_integer((json_int_t)conn->stored_seq));
    json_object_set_new(doc, "applied_in_seq", json_integer((json_int_t)conn->applied_in_seq));
    return doc;
}

//  The connections as a JSON array, for list and status.
static json_t *s_conns_json(const node_admin_conn_t *list, size_t count)
{
    json_t *array = json_array();
    for (size_t i = 0; i < count; i++)
        json_array_append_new(array, s_conn_json(&list[i]));
    return array;
}

static int s_cmd_list(node_cli_t *cli)
{
    int status = node_cli_open(cli);
    if (status)
        return status;
    node_admin_conn_t *list;
    size_t count;
    char err[512];
    if (node_admin_conn_list(cli->admin, &list, &count, err, sizeof err))
        return node_cli_fail(cli, "%s", err);
    if (cli->opts.json) {
        json_t *array = s_conns_json(list, count);
        free(list);
        return node_cli_json_out(json_pack("{s:o}", "connections", array));
    }
    printf("%-20s %-20s %-8s %-12s %6s %7s %6s  %s\n", "ID", "NAME", "ROLE", "STATUS", "TWINS",
           "OUTBOX", "ERRORS", "LAST POLL");
    for (size_t i = 0; i < count; i++) {
        const node_conn_t *c = &list[i].conn;
        char when[32];
        printf("%-20s %-20s %-8s %-12s %6" PRIu64 " %7" PRIu64 " %6" PRIu64 "  %s\n", c->id,
               c->name, proto_role_name(c->role), node_conn_status_name(c->status),
               list[i].under_sync, list[i].outbox, list[i].errors,
               node_cli_time(c->last_poll_at / 1000, when));
    }
    if (count == 0)
        printf("(no connections)\n");
    free(list);
    return TS_EXIT_OK;
}

int node_cli_show(const node_cli_t *cli, const node_admin_conn_t *info, const char *code)
{
    json_t *doc = s_conn_json(info);
    if (code)
        json_object_set_new(doc, "code", json_string(code));
    if (cli->opts.json)
        return node_cli_json_out(doc);
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
    return TS_EXIT_OK;
}

//  Opens the state and reads the connection named by the first argument
//  into *info. Returns TS_EXIT_OK, or the exit status of the failure (said).
static int s_open_conn(node_cli_t *cli, node_admin_conn_t *info)
{
    int status = node_cli_open(cli);
    if (status)
        return status;
    char err[512];
    if (node_admin_conn_get(cli->admin, cli->args[0], info, err, sizeof err))
        return node_cli_fail(cli, "%s", err);
    return TS_EXIT_OK;
}

static int s_cmd_show(node_cli_t *cli)
{
    node_admin_conn_t info;
    int status = s_open_conn(cli, &info);
    if (status)
        return status;
    return node_cli_show(cli, &info, NULL);
}

//  A node_admin operation on one connection that reports what it left.
typedef int(s_conn_op_fn)(node_admin_t *admin, const char *id_or_name, node_conn_t *conn, char *err,
                          size_t errlen);

//  Runs op on the connection named by the first argument, then prints what
//  it left: the connection and its status now (text says it for a person).
static int s_conn_op(node_cli_t *cli, s_conn_op_fn *op, const char *status, const char *text)
{
    int rc = node_cli_open(cli);
    if (rc)
        return rc;
    node_conn_t conn;
    char err[512];
    if (op(cli->admin, cli->args[0], &conn, err, sizeof err))
        return node_cli_fail(cli, "%s", err);
    if (cli->opts.json)
        return node_cli_json_out(
            json_pack("{s:s,s:s,s:s}", "id", conn.id, "name", conn.name, "status", status));
    printf("connection %s %s\n", conn.name, text);
    return TS_EXIT_OK;
}

static int s_cmd_deactivate(node_cli_t *cli)
{
    return s_conn_op(cli, node_admin_conn_deactivate, "deactivated",
                     "is deactivated (local changes wait and are sent on activation; nothing "
                     "is applied)");
}

static int s_cmd_activate(node_cli_t *cli)
{
    return s_conn_op(cli, node_admin_conn_activate, "active", "is active");
}

static int s_cmd_delete(node_cli_t *cli)
{
    return s_conn_op(cli, node_admin_conn_delete, "deleted",
                     "deleted (its twins' data stays in ServiceNow; the other side keeps its own "
                     "copy of the connection)");
}

static int s_cmd_trigger_set(node_cli_t *cli)
{
    int status = node_cli_open(cli);
    if (status)
        return status;
    node_conn_t conn;
    char err[512];
    const char *trigger = cli->args[1];
    if (node_admin_trigger_set(cli->admin, cli->args[0], trigger, &conn, err, sizeof err))
        return node_cli_fail(cli, "%s", err);
    if (cli->opts.json)
        return node_cli_json_out(json_pack("{s:s,s:s}", "name", conn.name, "trigger", trigger));
    printf("connection %s: trigger %s%s\n", conn.name, *trigger ? "set to " : "removed", trigger);
    return TS_EXIT_OK;
}

//  --- sync start / stop, twins, queue

//  The connection and the number of `sync start|stop [CONN] NUMBER`.
static void s_conn_and_number(const node_cli_t *cli, const char **which, const char **number)
{
    *which = cli->nargs > 1 ? cli->args[0] : NULL;
    *number = cli->args[cli->nargs - 1];
}

static int s_cmd_rekey(node_cli_t *cli)
{
    int status = node_cli_open(cli);
    if (status)
        return status;
    node_admin_sync_t rekey;
    char err[1536];
    if (node_admin_conn_rekey(cli->admin, cli->nargs ? cli->args[0] : NULL, cli->opts.wait_s * 1000,
                              &rekey, err, sizeof err))
        return node_cli_fail(cli, "%s", err);
    if (!rekey.done)
        return node_cli_fail(cli, "rekey of %s queued; %s", rekey.conn.name,
                             rekey.daemon_running ? "the daemon has not started it yet"
                                                  : "the daemon is not running: it starts it "
                                                    "at start");
    if (cli->opts.json)
        return node_cli_json_out(
            json_pack("{s:s,s:s}", "connection", rekey.conn.name, "result", rekey.result));
    printf("%s\n", rekey.result);
    return TS_EXIT_OK;
}

static int s_cmd_sync_start(node_cli_t *cli)
{
    int status = node_cli_open(cli);
    if (status)
        return status;
    const char *which, *number;
    s_conn_and_number(cli, &which, &number);
    node_admin_sync_t sync;
    char err[1536];
    if (node_admin_sync_start(cli->admin, which, number, cli->opts.wait_s * 1000, &sync, err,
                              sizeof err))
        return node_cli_fail(cli, "%s", err);
    if (!sync.done)
        return node_cli_fail(cli, "sync start %s queued; %s", sync.number,
                             sync.daemon_running
                                 ? "the daemon has not done it yet (ServiceNow slow?)"
                                 : "the daemon is not running: it is done at start");
    if (cli->opts.json)
        return node_cli_json_out(json_pack("{s:s,s:s,s:s}", "connection", sync.conn.name, "number",
                                           sync.number, "result", sync.result));
    printf("%s\n", sync.result);
    return TS_EXIT_OK;
}

static int s_cmd_sync_stop(node_cli_t *cli)
{
    int status = node_cli_open(cli);
    if (status)
        return status;
    const char *which, *number;
    s_conn_and_number(cli, &which, &number);
    node_conn_t conn;
    node_admin_twin_t twin;
    char err[512];
    if (node_admin_sync_stop(cli->admin, which, number, &conn, &twin, err, sizeof err))
        return node_cli_fail(cli, "%s", err);
    const char *remote = *twin.remote_number ? twin.remote_number : "-";
    if (cli->opts.json)
        return node_cli_json_out(json_pack("{s:s,s:s,s:s,s:b}", "connection", conn.name, "local",
                                           twin.local_number, "remote", remote, "under_sync", 0));
    printf("%s (twin %s) is no longer under sync on %s; both incidents keep their data\n",
           twin.local_number, remote, conn.name);
    return TS_EXIT_OK;
}

static int s_cmd_twins(node_cli_t *cli)
{
    int status = node_cli_open(cli);
    if (status)
        return status;
    node_conn_t conn;
    node_admin_twin_t *list;
    size_t count;
    char err[512];
    if (node_admin_twins(cli->admin, cli->args[0], &conn, &list, &count, err, sizeof err))
        return node_cli_fail(cli, "%s", err);
    json_t *rows = cli->opts.json ? json_array() : NULL;
    if (!rows)
        printf("%-12s     %-12s %-16s %s\n", "LOCAL", "REMOTE", "STATE", "LAST SYNC");
    for (size_t i = 0; i < count; i++) {
        const node_admin_twin_t *t = &list[i];
        char when[32];
        if (rows)
            json_array_append_new(rows, json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "local",
                                                  t->local_number, "local_sys_id", t->local_sys_id,
                                                  "remote", t->remote_number, "remote_sys_id",
                                                  t->remote_sys_id, "last_sync",
                                                  node_cli_time(t->last_sync_at, when), "state",
                                                  t->state, "replica", t->replica));
        else
            printf("%-12s <-> %-12s %-16s %s\n", t->local_number,
                   *t->remote_number ? t->remote_number : "(pending)", t->state,
                   node_cli_time(t->last_sync_at, when));
    }
    free(list);
    if (rows)
        return node_cli_json_out(json_pack("{s:s,s:o}", "connection", conn.name, "twins", rows));
    if (count == 0)
        printf("(no twins)\n");
    return TS_EXIT_OK;
}

//  What `attachments` shows of a file's progress: "12.0 of 200.0 MiB".
static const char *s_progress(const node_file_t *f, char *buf, size_t size)
{
    bool moving = f->state == NODE_FILE_SENDING || f->state == NODE_FILE_RECEIVING;
    if (moving)
        snprintf(buf, size, "%.1f of %.1f MiB", (double)f->done / 1048576.0,
                 (double)f->size / 1048576.0);
    else
        snprintf(buf, size, "%.1f MiB", (double)f->size / 1048576.0);
    return buf;
}

static int s_cmd_attachments(node_cli_t *cli)
{
    int status = node_cli_open(cli);
    if (status)
        return status;
    const char *which, *number;
    s_conn_and_number(cli, &which, &number);
    node_conn_t conn;
    node_admin_twin_t twin;
    node_file_t *list = NULL;
    size_t count = 0;
    char err[512];
    if (node_admin_attachments(cli->admin, which, number, &conn, &twin, &list, &count, err,
                               sizeof err))
        return node_cli_fail(cli, "%s", err);
    json_t *rows = cli->opts.json ? json_array() : NULL;
    if (!rows)
        printf("%-4s %-10s %-22s %-20s %s\n", "DIR", "STATE", "SIZE", "SHA-256", "NAME");
    for (size_t i = 0; i < count; i++) {
        const node_file_t *f = &list[i];
        const char *dir = f->dir == NODE_FILE_OUT ? "out" : "in";
        char size[64];
        if (rows) {
            json_array_append_new(
                rows,
                json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:s,s:s,s:s,s:s}", "direction", dir, "state",
                          node_file_state_name(f->state), "name", f->name, "content_type",
                          f->content_type, "size", (json_int_t)f->size, "transferred",
                          (json_int_t)f->done, "sha256", f->hash, "file_sys_id", f->file_id,
                          "copy_sys_id", f->twin_file, "reason", f->text));
            continue;
        }
        printf("%-4s %-10s %-22s %-20.16s %s\n", dir, node_file_state_name(f->state),
               s_progress(f, size, sizeof size), *f->hash ? f->hash : "-", f->name);
        if (*f->text)
            printf("     %s\n", f->text);
    }
    free(list);
    if (rows)
        return node_cli_json_out(json_pack("{s:s,s:s,s:s,s:o}", "connection", conn.name, "local",
                                           twin.local_number, "remote", twin.remote_number,
                                           "attachments", rows));
    if (count == 0)
        printf("(no attachments)\n");
    return TS_EXIT_OK;
}

static int s_cmd_attachments_set(node_cli_t *cli)
{
    int status = node_cli_open(cli);
    if (status)
        return status;
    node_conn_t conn;
    char err[512];
    if (node_admin_attachments_set(cli->admin, cli->args[0], cli->args[1],
                                   cli->nargs > 2 ? cli->args[2] : NULL, &conn, err, sizeof err))
        return node_cli_fail(cli, "%s", err);
    static const char *const modes[] = {"default", "all", "none"};
    if (cli->opts.json)
        return node_cli_json_out(json_pack("{s:s,s:s,s:I}", "name", conn.name, "attachments",
                                           modes[conn.attachments], "max_bytes",
                                           (json_int_t)conn.attachment_max));
    printf("connection %s: attachments %s, size cap %s\n", conn.name, modes[conn.attachments],
           conn.attachment_max ? cli->args[2] : "default");
    return TS_EXIT_OK;
}

static int s_cmd_queue(node_cli_t *cli)
{
    node_admin_conn_t info;
    int status = s_open_conn(cli, &info);
    if (status)
        return status;
    const node_conn_t *conn = &info.conn;
    uint64_t last = conn->next_out_seq ? conn->next_out_seq - 1 : 0;
    if (cli->opts.json)
        return node_cli_json_out(
            json_pack("{s:s,s:{s:I,s:I,s:I},s:{s:I,s:I}}", "connection", conn->name, "outbox",
                      "waiting", (json_int_t)info.outbox, "last_seq", (json_int_t)last,
                      "stored_seq", (json_int_t)conn->stored_seq, "inbox", "applied_seq",
                      (json_int_t)conn->applied_in_seq, "blocked", (json_int_t)info.blocked));
    printf("connection %s\n", conn->name);
    printf("  outbox: %" PRIu64 " message(s) not yet stored by the broker (last seq %" PRIu64
           ", stored up to %" PRIu64 ")\n",
           info.outbox, last, conn->stored_seq);
    printf("  inbox:  applied up to seq %" PRIu64 "; %" PRIu64
           " message(s) blocked behind twin errors (the broker holds what is not applied)\n",
           conn->applied_in_seq, info.blocked);
    return TS_EXIT_OK;
}

//  --- errors

static int s_cmd_errors_list(node_cli_t *cli)
{
    int status = node_cli_open(cli);
    if (status)
        return status;
    node_error_t *list;
    size_t count;
    char err[512];
    if (node_admin_errors(cli->admin, cli->nargs ? cli->args[0] : NULL, &list, &count, err,
                          sizeof err))
        return node_cli_fail(cli, "%s", err);
    json_t *rows = cli->opts.json ? json_array() : NULL;
    if (!rows)
        printf("%-5s %-20s %-12s %-12s %-7s %-12s %7s  %s\n", "ID", "CONNECTION", "LOCAL", "REMOTE",
               "ORIGIN", "CODE", "RETRIES", "MESSAGE");
    for (size_t i = 0; i < count; i++) {
        node_error_t *e = &list[i];
        char when[32], updated[32];
        if (rows) {
            json_array_append_new(
                rows, json_pack("{s:I,s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:i,s:s,s:s,s:b}", "id",
                                (json_int_t)e->id, "connection", e->conn, "local", e->local_number,
                                "remote", e->remote_number, "origin", e->origin, "code", e->code,
                                "message", e->message, "seq", (json_int_t)e->seq, "retries",
                                e->retries, "created", node_cli_time(e->created_at, when),
                                "updated", node_cli_time(e->updated_at, updated), "retry_requested",
                                e->retry_requested));
            continue;
        }
        char message[NODE_TEXT_MAX + 1];
        snprintf(message, sizeof message, "%s", e->message);
        for (char *c = message; *c; c++) {
            if (*c == '\n' || *c == '\t')
                *c = ' ';
        }
        printf("%-5" PRId64 " %-20s %-12s %-12s %-7s %-12s %7d  %s\n", e->id, e->conn,
               *e->local_number ? e->local_number : "-", *e->remote_number ? e->remote_number : "-",
               e->origin, e->code, e->retries, message);
    }
    free(list);
    if (rows)
        return node_cli_json_out(json_pack("{s:o}", "errors", rows));
    if (count == 0)
        printf("(no errors)\n");
    return TS_EXIT_OK;
}

static int s_cmd_errors_retry(node_cli_t *cli)
{
    long id;
    char err[1536];
    if (ts_config_parse_number(TS_CONFIG_INT, cli->args[0], 1, 0x7fffffffffffffffL, &id, err,
                               sizeof err))
        return node_cli_usage_error(cli, "errors retry", "error id: %s", err);
    int status = node_cli_open(cli);
    if (status)
        return status;
    node_admin_retry_t retry;
    if (node_admin_error_retry(cli->admin, id, cli->opts.wait_s * 1000, &retry, err, sizeof err))
        return node_cli_fail(cli, "%s", err);
    static const char *const outcomes[] = {"resolved", "sent again", "failed again", "queued"};
    const char *outcome = outcomes[retry.outcome];
    if (cli->opts.json)
        return node_cli_json_out(json_pack("{s:I,s:s,s:s}", "id", (json_int_t)id, "outcome",
                                           outcome, "message", retry.message));
    switch (retry.outcome) {
    case NODE_ADMIN_RESOLVED:
        printf("error %ld resolved: the twin is in sync again\n", id);
        return TS_EXIT_OK;
    case NODE_ADMIN_SENT_AGAIN:
        printf("error %ld: the replica was sent again; the other side retries it on arrival\n", id);
        return TS_EXIT_OK;
    case NODE_ADMIN_FAILED_AGAIN:
        return node_cli_fail(cli, "error %ld failed again: %s", id, retry.message);
    case NODE_ADMIN_RETRY_QUEUED:
        break;
    }
    return node_cli_fail(cli, "error %ld marked for retry; %s", id,
                         retry.daemon_running ? "the daemon has not retried it yet"
                                              : "the daemon is not running: it retries at start");
}

//  --- status, key

static int s_cmd_status(node_cli_t *cli)
{
    int opened = node_cli_open(cli);
    if (opened)
        return opened;
    node_admin_status_t status;
    char err[512];
    if (node_admin_status(cli->admin, &status, err, sizeof err))
        return node_cli_fail(cli, "%s", err);
    if (cli->opts.json) {
        json_t *list = s_conns_json(status.conns, status.count);
        json_t *doc =
            json_pack("{s:s,s:s,s:b,s:s,s:s,s:o}", "node", cli->cfg.name, "role",
                      proto_role_name(cli->role), "daemon_running", status.daemon_running, "link",
                      status.link, "link_reason", status.link_reason, "connections", list);
        node_admin_status_clear(&status);
        return node_cli_json_out(doc);
    }
    const char *reason = status.link_reason;
    printf("node %s (%s): daemon %s, broker link %s%s%s%s\n", cli->cfg.name,
           proto_role_name(cli->role), status.daemon_running ? "running" : "NOT RUNNING",
           status.link, *reason ? " (" : "", reason, *reason ? ")" : "");
    for (size_t i = 0; i < status.count; i++) {
        const node_admin_conn_t *c = &status.conns[i];
        char when[32];
        printf("  %s: %s; twins %" PRIu64 " (%" PRIu64
               " under sync); last poll %s; pending %" PRIu64 " out; errors %" PRIu64 "%s%s\n",
               c->conn.name, node_conn_status_name(c->conn.status), c->twins, c->under_sync,
               node_cli_time(c->conn.last_poll_at / 1000, when), c->outbox, c->errors,
               *c->conn.error_text ? "; " : "", c->conn.error_text);
    }
    if (status.count == 0)
        printf("  (no connections)\n");
    node_admin_status_clear(&status);
    return TS_EXIT_OK;
}

static int s_cmd_key(node_cli_t *cli)
{
    char z85[41], err[512];
    if (!*cli->cfg.state_dir)
        return node_cli_config_error(cli, "missing key node.state_dir (give --config FILE)");
    if (node_admin_key(&cli->cfg, z85, err, sizeof err))
        return node_cli_fail(cli, "%s", err);
    if (cli->opts.json)
        return node_cli_json_out(json_pack("{s:s}", "public_key", z85));
    printf("%s\n", z85);
    return TS_EXIT_OK;
}

//  --- run

static volatile sig_atomic_t s_stop = 0;

static void s_on_signal(int signum)
{
    (void)signum;
    s_stop = 1;
}

static int s_cmd_run(node_cli_t *cli)
{
    //  What the configuration alone can tell is checked first, so that it
    //  exits 78 (systemd does not restart it); what fails after that (the
    //  state directory, the engine) may clear by itself and exits 1.
    char err[1024], *password = NULL, *client_secret = NULL;
    if (node_config_check_run(&cli->cfg, err, sizeof err) ||
        node_config_secrets(&cli->cfg, &password, &client_secret, err, sizeof err))
        return node_cli_config_error(cli, err);
    ts_secret_free(&password);
    ts_secret_free(&client_secret);
    ts_log_level_t level;
    if (ts_log_level_parse(cli->cfg.log_level, &level) == 0)
        ts_log_set_level(level);
    node_engine_t *engine = node_engine_new(&cli->cfg, err, sizeof err);
    if (!engine)
        return node_cli_fail(cli, "%s", err);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    int rc = node_engine_run(engine, &s_stop);
    node_engine_destroy(&engine);
    return rc ? TS_EXIT_FAILURE : TS_EXIT_OK;
}

//  --- dispatch

static int s_cmd_help(node_cli_t *cli);

static int s_cmd_version(node_cli_t *cli)
{
    printf("%s %s\n", cli->prog, TS_VERSION);
    return TS_EXIT_OK;
}

static const node_cli_command_t s_commands[] = {
    {{"run", "", 0, 0, "", "the daemon: poll, send, apply (until SIGTERM)"}, s_cmd_run},
    {{"connection list", "", 0, 0, "json", "connections with status and counts"}, s_cmd_list},
    {{"connection show", "CONN", 1, 1, "json", "one connection in detail"}, s_cmd_show},
    {{"connection deactivate", "CONN", 1, 1, "json",
      "pause: nothing sent or applied; local changes wait"},
     s_cmd_deactivate},
    {{"connection activate", "CONN", 1, 1, "json", "resume a deactivated connection"},
     s_cmd_activate},
    {{"connection delete", "CONN", 1, 1, "json",
      "forget a connection and its twins (ServiceNow data stays)"},
     s_cmd_delete},
    {{"connection rekey", "[CONN]", 0, 1, "json wait",
      "rotate the connection's keys now (new X25519 exchange; the old keys are wiped)"},
     s_cmd_rekey},
    {{"trigger set", "CONN QUERY", 2, 2, "json",
      "encoded query whose incidents start syncing (\"\" for none)"},
     s_cmd_trigger_set},
    {{"sync start", "[CONN] NUMBER", 1, 2, "json wait",
      "start syncing one incident now (CONN: needed when the node has several connections)"},
     s_cmd_sync_start},
    {{"sync stop", "[CONN] NUMBER", 1, 2, "json",
      "stop syncing one incident, by local or remote number (its data stays)"},
     s_cmd_sync_stop},
    {{"exalate", "CONN NUMBER", 2, 2, "json wait", "the older name of sync start"},
     s_cmd_sync_start},
    {{"unexalate", "CONN NUMBER", 2, 2, "json", "the older name of sync stop"}, s_cmd_sync_stop},
    {{"connection attachments", "CONN all|none|default [MAX_SIZE]", 2, 3, "json",
      "what this side sends and takes, and the size cap (e.g. 50MiB; default: the node's)"},
     s_cmd_attachments_set},
    {{"attachments", "[CONN] NUMBER", 1, 2, "json",
      "the files of a twin: direction, state (sent, received, refused, skipped, ...), size, "
      "SHA-256"},
     s_cmd_attachments},
    {{"twins", "CONN", 1, 1, "json", "local number <-> remote number, state, last sync"},
     s_cmd_twins},
    {{"queue", "CONN", 1, 1, "json", "outbox and inbox of a connection"}, s_cmd_queue},
    {{"errors list", "[CONN]", 0, 1, "json", "per-twin and payload errors"}, s_cmd_errors_list},
    {{"errors retry", "ID", 1, 1, "json wait", "retry one error now"}, s_cmd_errors_retry},
    {{"status", "", 0, 0, "json", "daemon, broker link, and every connection"}, s_cmd_status},
    {{"key", "", 0, 0, "json",
      "print this node's CURVE public key (made on first use) for the broker's public_keys"},
     s_cmd_key},
    {{"help", "[COMMAND]", 0, 2, "", "this text, or the usage of COMMAND (also: COMMAND --help)"},
     s_cmd_help},
    {{"version", "", 0, 0, "", "print the version"}, s_cmd_version},
    {{NULL, NULL, 0, 0, NULL, NULL}, NULL}};

//  The role's own commands of this run (node_cli_main's argument).
static const node_cli_command_t *s_extra;

//  The command the first args name, with the number of its words in *used:
//  the role's own commands first, then the shared ones.
static const node_cli_command_t *s_find(char *const *args, int nargs, int *used)
{
    const node_cli_command_t *tables[] = {s_extra, s_commands};
    for (size_t t = 0; t < 2; t++) {
        for (const node_cli_command_t *c = tables[t]; c && c->fn; c++) {
            *used = ts_cli_words(c->cmd.words, args, nargs);
            if (*used)
                return c;
        }
    }
    return NULL;
}

//  True when option is one of the space-separated names of list.
static bool s_takes(const char *list, const char *option)
{
    size_t len = strlen(option);
    for (const char *p = strstr(list, option); p; p = strstr(p + 1, option)) {
        if ((p == list || p[-1] == ' ') && (p[len] == ' ' || p[len] == '\0'))
            return true;
    }
    return false;
}

//  The role's command that replaces shared command c, or NULL.
static const node_cli_command_t *s_override(const node_cli_command_t *c)
{
    for (const node_cli_command_t *e = s_extra; e && e->fn; e++) {
        if (strcmp(e->cmd.words, c->cmd.words) == 0)
            return e;
    }
    return NULL;
}

//  True when the role's command e replaces no shared command.
static bool s_is_new(const node_cli_command_t *e)
{
    for (const node_cli_command_t *c = s_commands; c->fn; c++) {
        if (strcmp(e->cmd.words, c->cmd.words) == 0)
            return false;
    }
    return true;
}

//  Prints the usage, the commands, the options and the keys to out. A
//  role's command stands where the shared one it replaces would, or first
//  among the shared ones that start with the same word.
static void s_usage(const node_cli_t *cli, FILE *out)
{
    fprintf(out, "usage: %s COMMAND [ARGS] [options] " S_KEYS_HINT "\n\ncommands:\n", cli->prog);
    bool placed[16] = {false};
    for (const node_cli_command_t *c = s_commands; c->fn; c++) {
        size_t word = strcspn(c->cmd.words, " ");
        for (size_t i = 0; s_extra && s_extra[i].fn && i < 16; i++) {
            if (!placed[i] && s_is_new(&s_extra[i]) &&
                strncmp(s_extra[i].cmd.words, c->cmd.words, word) == 0 &&
                strcspn(s_extra[i].cmd.words, " ") == word) {
                ts_cli_print_entry(&s_extra[i].cmd, out);
                placed[i] = true;
            }
        }
        const node_cli_command_t *shown = s_override(c);
        ts_cli_print_entry(shown ? &shown->cmd : &c->cmd, out);
    }
    for (size_t i = 0; s_extra && s_extra[i].fn && i < 16; i++) {
        if (!placed[i] && s_is_new(&s_extra[i]))
            ts_cli_print_entry(&s_extra[i].cmd, out);
    }
    fprintf(out, "\noptions (a command takes those its usage shows: %s COMMAND --help):\n",
            cli->prog);
    for (const ts_config_key_t *k = s_option_keys; k->key; k++) {
        bool used = s_takes(S_COMMON " version", k->key);
        for (const node_cli_command_t *c = s_extra; c && c->fn && !used; c++)
            used = s_takes(c->cmd.options, k->key);
        for (const node_cli_command_t *c = s_commands; c->fn && !used; c++)
            used = s_takes(c->cmd.options, k->key);
        if (used)
            ts_config_print_key(k, out);
    }
    fputc('\n', out);
    node_config_print_help(out, cli->role);
    fprintf(out, "\nexit status: 0 success, 1 failure, 2 bad command line, 78 bad "
                 "configuration\n");
}

static void s_command_usage(const node_cli_t *cli, const node_cli_command_t *command, FILE *out)
{
    ts_cli_print_usage(cli->prog, &command->cmd, s_option_keys, S_COMMON, S_KEYS_HINT, out);
    fprintf(out, "\nconfiguration keys: %s --help\n", cli->prog);
}

static int s_cmd_help(node_cli_t *cli)
{
    int used = 0;
    const node_cli_command_t *command = cli->nargs ? s_find(cli->args, cli->nargs, &used) : NULL;
    if (cli->nargs && (!command || used != cli->nargs))
        return node_cli_usage_error(cli, NULL, "no command '%s%s%s'", cli->args[0],
                                    cli->nargs > 1 ? " " : "", cli->nargs > 1 ? cli->args[1] : "");
    if (command)
        s_command_usage(cli, command, stdout);
    else
        s_usage(cli, stdout);
    return TS_EXIT_OK;
}

//  Reads the configuration file (--config, else $TWINSYNC_CONFIG, else the
//  role's default file when it exists) into the keys given as flags and
//  fills cli->cfg. Returns 0, or TS_EXIT_CONFIG after printing the error.
static int s_load(node_cli_t *cli, ts_config_t *source)
{
    char buf[256], err[1024];
    const char *path = *cli->opts.config ? cli->opts.config : getenv("TWINSYNC_CONFIG");
    if (!path) {
        snprintf(buf, sizeof buf, "/etc/twinsync/%s.ini", proto_role_name(cli->role));
        path = access(buf, R_OK) == 0 ? buf : NULL;
    }
    if ((path && ts_config_load(source, path, err, sizeof err)) ||
        node_config_from(&cli->cfg, cli->role, source, err, sizeof err))
        return node_cli_config_error(cli, err);
    return 0;
}

//  Parses the command line and runs the command it names.
static int s_main(node_cli_t *cli, ts_config_t *options, ts_config_t *source, int argc, char **argv)
{
    char err[1024];
    ts_config_t *sets[] = {options, source};
    int used = 0;
    if (ts_cli_parse(sets, 2, argc, argv, 1, cli->args, &cli->nargs, err, sizeof err) ||
        ts_config_apply(options, &cli->opts, err, sizeof err)) {
        //  Point at the command's own help when its words came before the error.
        const node_cli_command_t *command = s_find(cli->args, cli->nargs, &used);
        return node_cli_usage_error(cli, command ? command->cmd.words : NULL, "%s", err);
    }
    if (cli->nargs == 0 && (cli->opts.help || cli->opts.version))
        return cli->opts.help ? s_cmd_help(cli) : s_cmd_version(cli);
    if (cli->nargs == 0) {
        s_usage(cli, stderr);
        return TS_EXIT_USAGE;
    }
    const node_cli_command_t *command = s_find(cli->args, cli->nargs, &used);
    if (!command)
        return node_cli_usage_error(cli, NULL, "unknown command '%s%s%s'", cli->args[0],
                                    cli->nargs > 1 ? " " : "", cli->nargs > 1 ? cli->args[1] : "");
    cli->args += used;
    cli->nargs -= used;
    if (cli->opts.help) {
        s_command_usage(cli, command, stdout);
        return TS_EXIT_OK;
    }
    if (ts_cli_check(&command->cmd, options, S_COMMON, cli->nargs, err, sizeof err))
        return node_cli_usage_error(cli, command->cmd.words, "%s", err);
    int status = s_load(cli, source);
    if (status)
        return status;
    return command->fn(cli);
}

int node_cli_main(proto_role_t role, const node_cli_command_t *commands, int argc, char **argv)
{
    node_cli_t cli;
    memset(&cli, 0, sizeof cli);
    cli.role = role;
    cli.prog = role == PROTO_ROLE_PUBLIC ? "twinsync-public" : "twinsync-private";
    s_extra = commands;
    char err[512];
    ts_config_t *options = ts_config_new(s_option_keys, err, sizeof err);
    ts_config_t *source = options ? ts_config_new(node_config_keys(), err, sizeof err) : NULL;
    cli.args = calloc((size_t)argc + 1, sizeof *cli.args);
    char **args = cli.args;
    int status = TS_EXIT_FAILURE;
    if (!source || !args)
        node_cli_fail(&cli, "%s", args ? err : "out of memory");
    else
        status = s_main(&cli, options, source, argc, argv);
    node_admin_destroy(&cli.admin);
    node_config_release(&cli.cfg);
    ts_config_clear(s_option_keys, &cli.opts);
    ts_config_destroy(&options);
    ts_config_destroy(&source);
    free(args);
    return status;
}
