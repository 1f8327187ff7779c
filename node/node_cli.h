/*  node_cli.h: the command line of twinsync-public and twinsync-private.

    Both binaries are this one function with their role: `run` starts the
    daemon (node_engine.h); every other command is an admin command that
    works on the state database while the daemon runs (docs/architecture.md §2: no
    network port, no control socket). Commands that need ServiceNow
    (exalate, errors retry) queue a request and wait, bounded, for the
    daemon's answer. docs/sync.md lists every command and what it does.
*/
#ifndef NODE_CLI_H
#define NODE_CLI_H

#include "proto_msg.h"

//  Runs the command line of the binary of role. Returns the exit status:
//  0 success, 1 failure (one line on stderr says why), 2 bad usage.
int node_cli_main(proto_role_t role, int argc, char **argv);

#endif
