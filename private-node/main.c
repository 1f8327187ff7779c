/*  main.c: twinsync-private, the private node. The command only it has is
    private_cli.h's (accepting an invitation); everything both nodes share
    lives in node/ (node_cli.h for the command line, node_engine.h for the
    daemon), so that both behave the same wherever the protocol does not
    tell them apart.
*/
#include "private_cli.h"

int main(int argc, char **argv)
{
    return node_cli_main(PROTO_ROLE_PRIVATE, private_cli_commands(), argc, argv);
}
