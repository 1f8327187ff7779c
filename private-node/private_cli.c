/*  private_cli.c: the private node's own command (see private_cli.h). */
#include "private_cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "private_accept.h"

//  Reads the invitation code: the argument, or a line of stdin for "-" (so
//  that the code stays out of ps and the shell's history).
static char *s_read_code(const char *arg)
{
    if (strcmp(arg, "-") != 0)
        return strdup(arg);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len = getline(&line, &cap, stdin);
    if (len < 0) {
        free(line);
        return NULL;
    }
    line[strcspn(line, "\r\n")] = '\0';
    return line;
}

static int s_cmd_accept(node_cli_t *cli)
{
    if (!node_admin_trigger_ok(cli->opts.trigger))
        return node_cli_usage_error(cli, "connection accept",
                                    "--trigger must be one line of encoded query (at most %d "
                                    "bytes)",
                                    NODE_TEXT_MAX);
    int status = node_cli_open(cli);
    if (status)
        return status;
    char *code = s_read_code(cli->args[0]);
    if (!code)
        return node_cli_fail(cli, "cannot read invitation code from stdin");
    private_acceptance_t accepted;
    char err[1024];
    int rc = private_accept(cli->admin, code, cli->opts.trigger, cli->opts.wait_s * 1000, &accepted,
                            err, sizeof err);
    memset(code, 0, strlen(code));
    free(code);
    if (rc)
        return node_cli_fail(cli, "%s", err);
    const node_conn_t *conn = &accepted.conn;
    if (!accepted.active)
        return node_cli_fail(cli, "connection %s is not active yet (still joining after %ld s): %s",
                             conn->name, cli->opts.wait_s,
                             accepted.daemon_running
                                 ? "the daemon cannot reach the broker yet; it keeps trying"
                                 : "the daemon is not running; start it and the join completes");
    if (cli->opts.json)
        return node_cli_json_out(
            json_pack("{s:s,s:s,s:s,s:s,s:s}", "id", conn->id, "name", conn->name, "status",
                      "active", "peer", conn->peer_description, "fingerprint", conn->fingerprint));
    printf("connection %s (%s) is active; peer: %s\n"
           "fingerprint: %s (the public admin's `connection initiate` showed the same; if "
           "not, the code was altered: delete the connection)\n",
           conn->name, conn->id, conn->peer_description, conn->fingerprint);
    return TS_EXIT_OK;
}

static const node_cli_command_t s_commands[] = {
    {{"connection accept", "CODE|-", 1, 1, "trigger wait json",
      "accept an invitation code (- reads it from stdin)"},
     s_cmd_accept},
    {{NULL, NULL, 0, 0, NULL, NULL}, NULL}};

const node_cli_command_t *private_cli_commands(void)
{
    return s_commands;
}
