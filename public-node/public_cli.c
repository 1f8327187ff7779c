/*  public_cli.c: the public node's own commands (see public_cli.h). */
#include "public_cli.h"

#include <stdio.h>

#include "public_initiate.h"

static int s_cmd_initiate(node_cli_t *cli)
{
    char err[1024];
    //  What the command line got wrong is status 2; what the configuration
    //  lacks (broker endpoint and key, ...) is status 78.
    if (public_initiate_check(cli->opts.name, cli->opts.mode, cli->opts.trigger, err, sizeof err))
        return node_cli_usage_error(cli, "connection initiate", "%s", err);
    if (node_config_check_run(&cli->cfg, err, sizeof err))
        return node_cli_config_error(cli, err);
    int status = node_cli_open(cli);
    if (status)
        return status;
    public_invitation_t invitation;
    int rc = public_initiate(cli->admin, cli->opts.name, cli->opts.mode, cli->opts.trigger,
                             cli->opts.wait_s * 1000, &invitation, err, sizeof err);
    if (rc) {
        public_invitation_clear(&invitation);
        return node_cli_fail(cli, "%s", err);
    }
    const node_conn_t *conn = &invitation.conn;
    const char *code = (const char *)invitation.code.data;
    char when[32];
    if (!conn->invite_sent)
        fprintf(stderr,
                "%s: warning: the daemon has not registered this invitation with the broker "
                "yet (is `%s run` running?); the code works once it has\n",
                cli->prog, cli->prog);
    if (cli->opts.json) {
        rc = node_cli_json_out(json_pack(
            "{s:s,s:s,s:s,s:s,s:b,s:s,s:s,s:s}", "id", conn->id, "name", conn->name, "mode",
            conn->mode, "status", "pending", "registered", conn->invite_sent, "expires",
            node_cli_time(conn->expires, when), "fingerprint", conn->fingerprint, "code", code));
    } else {
        //  The code alone goes to stdout, so that CODE=$(... initiate ...) works.
        fprintf(stderr,
                "connection %s (%s) is pending. Give this invitation code to the partner's "
                "admin (it carries secrets until the join: send it over a trusted channel); it "
                "expires %s. Then read this fingerprint to them by phone: their `connection "
                "accept` must show the same, else delete the connection.\n"
                "fingerprint: %s\n",
                conn->name, conn->id, node_cli_time(conn->expires, when), conn->fingerprint);
        printf("%s\n", code);
    }
    public_invitation_clear(&invitation);
    return rc;
}

//  `connection show`, and with --code the pending connection's code again.
static int s_cmd_show(node_cli_t *cli)
{
    int status = node_cli_open(cli);
    if (status)
        return status;
    node_admin_conn_t info;
    char err[1024];
    if (node_admin_conn_get(cli->admin, cli->args[0], &info, err, sizeof err))
        return node_cli_fail(cli, "%s", err);
    if (!cli->opts.code)
        return node_cli_show(cli, &info, NULL);
    proto_buf_t code;
    proto_buf_init(&code);
    if (public_invitation_code(cli->admin, &info.conn, &code, err, sizeof err)) {
        proto_buf_wipe(&code);
        return node_cli_fail(cli, "--code: %s", err);
    }
    int rc = node_cli_show(cli, &info, (const char *)code.data);
    proto_buf_wipe(&code);
    return rc;
}

static const node_cli_command_t s_commands[] = {
    {{"connection initiate", "", 0, 0, "name mode trigger wait json",
      "create a connection, print its invitation code"},
     s_cmd_initiate},
    {{"connection show", "CONN", 1, 1, "code json",
      "one connection in detail (--code: a pending connection's invitation code again)"},
     s_cmd_show},
    {{NULL, NULL, 0, 0, NULL, NULL}, NULL}};

const node_cli_command_t *public_cli_commands(void)
{
    return s_commands;
}
