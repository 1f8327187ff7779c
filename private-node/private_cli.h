/*  private_cli.h: the command only twinsync-private has, for node_cli_main.

        connection accept CODE|- [--trigger QUERY]

    It prints what private_accept.h returns; the frame and the shared
    commands are node_cli.h's.
*/
#ifndef PRIVATE_CLI_H
#define PRIVATE_CLI_H

#include "node_cli.h"

//  The private node's own commands, ended by an entry whose fn is NULL.
const node_cli_command_t *private_cli_commands(void);

#endif
