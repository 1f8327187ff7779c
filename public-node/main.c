/*  main.c: twinsync-public, the public node. The commands only it has are
    public_cli.h's (initiating connections); everything both nodes share
    lives in node/ (node_cli.h for the command line, node_engine.h for the
    daemon), so that both behave the same wherever the protocol does not
    tell them apart.
*/
#include "public_cli.h"

int main(int argc, char **argv)
{
    return node_cli_main(PROTO_ROLE_PUBLIC, public_cli_commands(), argc, argv);
}
