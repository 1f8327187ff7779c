/*  broker_main.c: the twinsync-broker command line (style of ts_cli.h).

        twinsync-broker run   [--config FILE] [--broker.KEY VALUE ...]   the daemon
        twinsync-broker key   [--config FILE] [--broker.state_dir DIR]   print the public key
        twinsync-broker stats [--watch] [--interval S] [--metrics URL]
                              [--config FILE] [--broker.KEY VALUE ...]   the metrics as tables
        twinsync-broker help [COMMAND] | COMMAND --help | version

    Every configuration key is also a flag (broker_config.h). Exit statuses:
    0 success, 1 failure, 2 bad command line, 78 bad configuration.
*/
#include <malloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker_config.h"
#include "broker_keys.h"
#include "broker_server.h"
#include "broker_stats.h"
#include "ts_cli.h"
#include "ts_log.h"
#include "ts_version.h"

#define S_PROG "twinsync-broker"

typedef struct {
    char *config;  //  --config FILE
    bool help;     //  --help, -h
    bool version;  //  --version
    bool watch;    //  --watch (stats)
    long interval; //  --interval S (stats)
    char *metrics; //  --metrics URL (stats)
} s_options_t;

#define OPTION(f) offsetof(s_options_t, f)

static const ts_config_key_t s_option_keys[] = {
    {.key = "config",
     .kind = TS_CONFIG_PATH,
     .offset = OPTION(config),
     .arg = "FILE",
     .help = "INI file with a [broker] section (default: none, every key at its default)"},
    TS_CLI_STANDARD_OPTIONS(s_options_t),
    {.key = "watch",
     .kind = TS_CONFIG_SWITCH,
     .offset = OPTION(watch),
     .help = "refresh every --interval seconds until interrupted"},
    {.key = "interval",
     .kind = TS_CONFIG_INT,
     .fallback = "2",
     .min = 1,
     .max = 3600,
     .offset = OPTION(interval),
     .arg = "S",
     .help = "seconds between two refreshes of --watch"},
    {.key = "metrics",
     .kind = TS_CONFIG_STRING,
     .offset = OPTION(metrics),
     .arg = "URL",
     .help = "where to read the figures (default: http://127.0.0.1:METRICS_PORT/metrics)"},
    {0}};

//  Options every command takes.
#define S_COMMON "config help"

typedef struct {
    s_options_t opts;     //  The options given
    ts_config_t *options; //  Their values as given (which ones were)
    ts_config_t *source;  //  The [broker] keys: file and flags
    char **args;          //  Arguments after the command words
    int nargs;            //  Entries in args
} s_cli_t;

typedef struct {
    ts_cli_command_t cmd;    //  Words, arguments, options, help
    int (*fn)(s_cli_t *cli); //  What runs it
} s_command_t;

static int s_run(s_cli_t *cli);
static int s_key(s_cli_t *cli);
static int s_stats(s_cli_t *cli);
static int s_help(s_cli_t *cli);
static int s_version(s_cli_t *cli);

static const s_command_t s_commands[] = {
    {{"run", "", 0, 0, "", "run the broker (stops on SIGTERM / SIGINT)"}, s_run},
    {{"key", "", 0, 0, "", "print the broker's CURVE public key (made on first use)"}, s_key},
    {{"stats", "", 0, 0, "watch interval metrics",
      "print queue, connection and store figures from /metrics"},
     s_stats},
    {{"help", "[COMMAND]", 0, 1, "", "this text, or the usage of COMMAND (also: COMMAND --help)"},
     s_help},
    {{"version", "", 0, 0, "", "print the version"}, s_version},
    {{NULL, NULL, 0, 0, NULL, NULL}, NULL}};

#define S_KEYS_HINT "[--broker.KEY VALUE ...]"

static void s_usage(FILE *out)
{
    fprintf(out, "usage: " S_PROG " COMMAND [options] " S_KEYS_HINT "\n\ncommands:\n");
    for (const s_command_t *c = s_commands; c->fn; c++)
        ts_cli_print_entry(&c->cmd, out);
    fprintf(out, "\noptions of every command:\n");
    for (const ts_config_key_t *k = s_option_keys; k->key; k++) {
        if (!strcmp(k->key, "config") || !strcmp(k->key, "help") || !strcmp(k->key, "version"))
            ts_config_print_key(k, out);
    }
    fprintf(out, "(the options of one command: " S_PROG " COMMAND --help)\n\n");
    broker_config_print_help(out);
    fprintf(out, "\nexit status: 0 success, 1 failure, 2 bad command line, 78 bad "
                 "configuration\n");
}

static void s_command_usage(const s_command_t *command, FILE *out)
{
    ts_cli_print_usage(S_PROG, &command->cmd, s_option_keys, S_COMMON, S_KEYS_HINT, out);
    fprintf(out, "\nconfiguration keys: " S_PROG " --help\n");
}

//  Reads the configuration file (--config) into the keys given as flags and
//  fills config. Returns 0, or the exit status of a configuration error
//  after printing it.
static int s_load(s_cli_t *cli, broker_config_t *config)
{
    char err[1024];
    memset(config, 0, sizeof *config);
    if ((*cli->opts.config && ts_config_load(cli->source, cli->opts.config, err, sizeof err)) ||
        broker_config_from(config, cli->source, err, sizeof err)) {
        fprintf(stderr, S_PROG ": %s\n", err);
        broker_config_release(config);
        return TS_EXIT_CONFIG;
    }
    ts_log_level_t level = TS_LOG_INFO;
    ts_log_level_parse(config->log_level, &level);
    ts_log_set_level(level);
    return 0;
}

static int s_run(s_cli_t *cli)
{
    broker_config_t config;
    int status = s_load(cli, &config);
    if (status)
        return status;
    char err[1024];
    broker_server_t *server = broker_server_new(&config, err, sizeof err);
    if (!server) {
        //  One line, like a configuration error: the key and the file. A
        //  port taken or a state directory that cannot be made may clear by
        //  itself: status 1, which systemd retries.
        broker_config_blame(&config, err, sizeof err);
        fprintf(stderr, S_PROG ": %s\n", err);
        broker_config_release(&config);
        return TS_EXIT_FAILURE;
    }
    status = broker_server_run(server);
    broker_server_destroy(&server);
    broker_config_release(&config);
    return status;
}

static int s_key(s_cli_t *cli)
{
    broker_config_t config;
    int status = s_load(cli, &config);
    if (status)
        return status;
    broker_keys_t keys;
    char err[512];
    if (broker_keys_load(&keys, config.state_dir, true, NULL, err, sizeof err) != 0) {
        fprintf(stderr, S_PROG ": %s\n", err);
        status = TS_EXIT_FAILURE;
    } else {
        printf("%s\n", keys.public_z85);
    }
    broker_keys_wipe(&keys);
    broker_config_release(&config);
    return status;
}

static int s_stats(s_cli_t *cli)
{
    broker_config_t config;
    int status = s_load(cli, &config);
    if (status)
        return status;
    const char *url = cli->opts.metrics;
    char fallback[128];
    if (!*url) {
        if (config.metrics_port == 0) {
            fprintf(stderr, S_PROG ": broker.metrics_port is 0 (metrics off); give --metrics "
                                   "URL\n");
            broker_config_release(&config);
            return TS_EXIT_USAGE;
        }
        snprintf(fallback, sizeof fallback, "http://127.0.0.1:%ld/metrics", config.metrics_port);
        url = fallback;
    }
    status = broker_stats_run(url, cli->opts.watch, (int)cli->opts.interval);
    broker_config_release(&config);
    return status;
}

//  The command the arguments name, with the number of words in *used.
static const s_command_t *s_find(char *const *args, int nargs, int *used)
{
    for (const s_command_t *c = s_commands; c->fn; c++) {
        *used = ts_cli_words(c->cmd.words, args, nargs);
        if (*used)
            return c;
    }
    return NULL;
}

static int s_help(s_cli_t *cli)
{
    int used = 0;
    const s_command_t *command = cli->nargs ? s_find(cli->args, cli->nargs, &used) : NULL;
    if (cli->nargs && !command) {
        fprintf(stderr, S_PROG ": no command '%s' (see " S_PROG " --help)\n", cli->args[0]);
        return TS_EXIT_USAGE;
    }
    if (command)
        s_command_usage(command, stdout);
    else
        s_usage(stdout);
    return TS_EXIT_OK;
}

static int s_version(s_cli_t *cli)
{
    (void)cli;
    printf(S_PROG " %s\n", TS_VERSION);
    return TS_EXIT_OK;
}

//  Parses the command line and runs the command it names.
static int s_main(s_cli_t *cli, int argc, char **argv)
{
    char err[1024];
    ts_config_t *sets[] = {cli->options, cli->source};
    int used = 0;
    if (ts_cli_parse(sets, 2, argc, argv, 1, cli->args, &cli->nargs, err, sizeof err) ||
        ts_config_apply(cli->options, &cli->opts, err, sizeof err)) {
        //  Point at the command's own help when its name came before the error.
        const s_command_t *command = s_find(cli->args, cli->nargs, &used);
        fprintf(stderr, S_PROG ": %s (see " S_PROG "%s%s --help)\n", err, command ? " " : "",
                command ? command->cmd.words : "");
        return TS_EXIT_USAGE;
    }
    if (cli->nargs == 0 && (cli->opts.help || cli->opts.version))
        return cli->opts.help ? s_help(cli) : s_version(cli);
    if (cli->nargs == 0) {
        s_usage(stderr);
        return TS_EXIT_USAGE;
    }
    const s_command_t *command = s_find(cli->args, cli->nargs, &used);
    if (!command) {
        fprintf(stderr, S_PROG ": unknown command '%s' (see " S_PROG " --help)\n", cli->args[0]);
        return TS_EXIT_USAGE;
    }
    cli->args += used;
    cli->nargs -= used;
    if (cli->opts.help) {
        s_command_usage(command, stdout);
        return TS_EXIT_OK;
    }
    if (ts_cli_check(&command->cmd, cli->options, S_COMMON, cli->nargs, err, sizeof err)) {
        fprintf(stderr, S_PROG ": %s (see " S_PROG " %s --help)\n", err, command->cmd.words);
        return TS_EXIT_USAGE;
    }
    return command->fn(cli);
}

int main(int argc, char **argv)
{
    //  glibc gives the top of the heap back to the kernel whenever more than
    //  128 KiB are free there; the broker's frames and SQLite's pages free and
    //  take that much back every batch, which cost a brk call per ~4 messages
    //  (strace -c, 50,000 messages: 14,042 brk). 8 MiB kept: none.
    mallopt(M_TRIM_THRESHOLD, 8 << 20);
    mallopt(M_TOP_PAD, 1 << 20);
    //  Setting the trim threshold fixes the mmap threshold at 128 KiB: every
    //  file chunk (512 KiB) and its frame was then a fresh mmap, zeroed page
    //  by page (perf: about 16 % of the broker's samples in page faults while
    //  a file crossed). From the heap they are reused.
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    char err[512];
    s_cli_t cli;
    memset(&cli, 0, sizeof cli);
    cli.options = ts_config_new(s_option_keys, err, sizeof err);
    cli.source = cli.options ? ts_config_new(broker_config_keys(), err, sizeof err) : NULL;
    char **args = calloc((size_t)argc + 1, sizeof *args);
    int status = TS_EXIT_FAILURE;
    if (!cli.source || !args) {
        fprintf(stderr, S_PROG ": %s\n", args ? err : "out of memory");
    } else {
        cli.args = args;
        status = s_main(&cli, argc, argv);
    }
    ts_config_clear(s_option_keys, &cli.opts);
    ts_config_destroy(&cli.options);
    ts_config_destroy(&cli.source);
    free(args);
    return status;
}
