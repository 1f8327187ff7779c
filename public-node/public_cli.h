/*  public_cli.h: the commands only twinsync-public has, for node_cli_main.

        connection initiate --name NAME [--mode basic] [--trigger QUERY]
        connection show CONN [--code]

    They print what public_initiate.h returns; the frame and the shared
    commands are node_cli.h's.
*/
#ifndef PUBLIC_CLI_H
#define PUBLIC_CLI_H

#include "node_cli.h"

//  The public node's own commands, ended by an entry whose fn is NULL.
const node_cli_command_t *public_cli_commands(void);

#endif
