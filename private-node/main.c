/*  main.c: twinsync-private, the private node. Everything but the role lives in
    node/ (node_cli.h for the commands, node_engine.h for the daemon), so that
    both nodes behave the same way wherever the protocol does not tell them
    apart.
*/
#include "node_cli.h"

int main(int argc, char **argv)
{
    return node_cli_main(PROTO_ROLE_PRIVATE, argc, argv);
}
