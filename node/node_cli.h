/*  node_cli.h: the command-line frame of twinsync-public and
    twinsync-private, and the commands both share.

    Both programs are node_cli_main with their role and the commands only
    they have (public-node/, private-node/). The frame walks options and
    configuration keys with ts_cli.h, loads the configuration, opens the
    state for the commands that need it and runs one command; `run` starts
    the daemon (node_engine.h), every other command is an admin command that
    calls node_admin.h (or its role's own operations) and prints the result
    for a person, or one JSON document with --json. Failures are one line on
    stderr; the exit status is one of ts_cli.h's. docs/sync.md lists every
    command.
*/
#ifndef NODE_CLI_H
#define NODE_CLI_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "node_admin.h"
#include "node_config.h"
#include "proto_msg.h"
#include "ts_cli.h"

//  The options of the command line; a command takes those its entry names.
typedef struct {
    char *config;  //  --config FILE
    bool help;     //  --help, -h
    bool version;  //  --version
    bool json;     //  --json
    long wait_s;   //  --wait S
    char *name;    //  --name NAME
    char *mode;    //  --mode MODE
    char *trigger; //  --trigger QUERY ("" none)
    bool code;     //  --code
} node_cli_options_t;

//  One run of the command line, as a command sees it.
typedef struct {
    proto_role_t role;       //  Which program
    const char *prog;        //  "twinsync-public"
    node_cli_options_t opts; //  The options
    node_config_t cfg;       //  The configuration, loaded before the command runs
    node_admin_t *admin;     //  The state, once node_cli_open opened it
    char **args;             //  Arguments after the command words
    int nargs;               //  Entries in args
} node_cli_t;

typedef struct {
    ts_cli_command_t cmd;       //  Words, arguments, options, help
    int (*fn)(node_cli_t *cli); //  Runs it; returns an exit status (ts_cli.h)
} node_cli_command_t;

//  Runs the command line of the program of role. commands (ended by an
//  entry whose fn is NULL) are the role's own and are looked up before the
//  shared ones, so that a role may extend a shared command ("connection
//  show" with --code). Returns the exit status: 0 success, 1 failure, 2 bad
//  command line, 78 bad configuration (ts_cli.h).
int node_cli_main(proto_role_t role, const node_cli_command_t *commands, int argc, char **argv);

//  Opens the state for cli->admin, once the command has checked its own
//  arguments (a bad command line must leave nothing behind, not even a new
//  state directory). Returns 0, or after printing the error TS_EXIT_CONFIG
//  (node.state_dir not set) or TS_EXIT_FAILURE (it cannot be opened).
int node_cli_open(node_cli_t *cli);

//  Prints "PROG: message" on stderr. Returns TS_EXIT_FAILURE.
int node_cli_fail(const node_cli_t *cli, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

//  Prints "PROG: message (see PROG WORDS --help)" on stderr. Returns TS_EXIT_USAGE.
int node_cli_usage_error(const node_cli_t *cli, const char *words, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

//  Prints "PROG: FILE: message" on stderr (the configuration file, when
//  there is one). Returns TS_EXIT_CONFIG.
int node_cli_config_error(const node_cli_t *cli, const char *message);

//  Prints doc on stdout as the command's JSON answer and releases it.
//  Returns 0, or 1 when doc is NULL.
int node_cli_json_out(json_t *doc);

//  "YYYY-MM-DD HH:MM:SSZ" of Unix seconds t in buf, or "never" for 0.
const char *node_cli_time(int64_t t, char buf[32]);

//  Prints a connection as `connection show` does (key: value lines, or JSON
//  with --json), with code as its invitation code when it is not NULL.
//  Returns an exit status.
int node_cli_show(const node_cli_t *cli, const node_admin_conn_t *info, const char *code);

#endif
