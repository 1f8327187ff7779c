/*  ts_cli.h: the command-line style of the three programs.

        PROGRAM COMMAND [WORD] [ARGUMENTS] [--option VALUE] [--section.key VALUE]

    Options and configuration keys may stand anywhere after the program's
    name, before or after the command, as --name VALUE or --name=VALUE
    (getopt_long); "--" ends them. Every configuration key is also a flag,
    named as in the file: [broker] credit is --broker.credit, so one spelling
    serves the three programs and their files. The options and keys
    themselves are ts_config.h tables; this module only walks argv. Names are
    spelt in full: getopt_long's abbreviations are refused, so that a key
    added later cannot change what a script's abbreviation meant.

    The exit statuses below are the same for the three programs and every
    command (docs/operations.md).
*/
#ifndef TS_CLI_H
#define TS_CLI_H

#include <stddef.h>
#include <stdio.h>

#include "ts_config.h"

#define TS_EXIT_OK      0  //  Success
#define TS_EXIT_FAILURE 1  //  The command ran and failed; one line on stderr says why
#define TS_EXIT_USAGE   2  //  The command line is wrong: unknown command or option, bad number
#define TS_EXIT_CONFIG  78 //  The configuration is wrong (EX_CONFIG, sysexits.h): file, key, secret

//  Parses argv[first..argc) against the keys of the tables of sets (each
//  made by ts_config_new): an option (a key of section NULL) is --key or
//  -letter, a configuration key --section.key, and each value goes to its
//  set through ts_config_set, checked. The positional arguments are stored
//  in order in args (room for argc entries; they point into argv), their
//  count in *nargs. Returns 0, or -1 with one line in err: an unknown or
//  abbreviated option, a value missing or given to a switch, a value
//  ts_config_set refuses (args then holds the arguments before the error,
//  so that the caller can name the command). Uses getopt_long, whose state is global: call it
//  from one thread at a time.
int ts_cli_parse(ts_config_t *const *sets, size_t nsets, int argc, char **argv, int first,
                 char **args, int *nargs, char *err, size_t errlen);

//  What a program says of one of its commands; a program's own command
//  type holds one of these beside what runs the command.
typedef struct {
    const char *words;   //  The command words, "connection show"
    const char *args;    //  Its arguments for usage, "CONN [--code]"; "" none
    int min_args;        //  Arguments it needs after the words
    int max_args;        //  Arguments it takes at most
    const char *options; //  Options it takes besides the program's common ones ("wait json")
    const char *help;    //  One line
} ts_cli_command_t;

//  The number of command words (words, space-separated: "connection show")
//  that the first args spell: all of them, or 0 when they differ.
int ts_cli_words(const char *words, char *const *args, int nargs);

//  Checks a command line against command: every option given (in options)
//  is one of the command's or of common (space-separated), and nargs (the
//  arguments after the words) is within its range. Returns 0, or -1 with one
//  line in err ("--code does not apply to connection list", "connection show
//  takes CONN [--code]").
int ts_cli_check(const ts_cli_command_t *command, const ts_config_t *options, const char *common,
                 int nargs, char *err, size_t errlen);

//  Prints the usage of command: "usage: PROG WORDS ARGS [--option ARG] ...
//  [keys]", its help, and the help line of each of its options and of the
//  common ones, taken from the table keys.
void ts_cli_print_usage(const char *prog, const ts_cli_command_t *command,
                        const ts_config_key_t *keys, const char *common, const char *keys_hint,
                        FILE *out);

//  Prints command as one line of a program's list of commands.
void ts_cli_print_entry(const ts_cli_command_t *command, FILE *out);

//  The two options every program has, as entries of an option table over
//  the struct T, whose bool members help and version they set.
#define TS_CLI_STANDARD_OPTIONS(T)                                                                 \
    {.key = "help",                                                                                \
     .kind = TS_CONFIG_SWITCH,                                                                     \
     .offset = offsetof(T, help),                                                                  \
     .letter = 'h',                                                                                \
     .help = "print the usage of the program, or of the command"},                                 \
    {                                                                                              \
        .key = "version", .kind = TS_CONFIG_SWITCH, .offset = offsetof(T, version),                \
        .help = "print the version"                                                                \
    }

#endif
