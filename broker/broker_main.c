/*  broker_main.c: the twinsync-broker command line.

        twinsync-broker run   [--config FILE] [--KEY VALUE ...]   the daemon
        twinsync-broker key   [--config FILE] [--state-dir DIR]   print the public key
        twinsync-broker stats [--watch] [--interval S] [--metrics URL]
                              [--config FILE] [--KEY VALUE ...]  the metrics as a table
        twinsync-broker help | --help | version

    Every configuration key is also a flag (broker_config.h).
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
#include "ts_log.h"
#include "ts_version.h"

static void s_usage(FILE *out)
{
    fprintf(out, "usage: twinsync-broker COMMAND [options]\n"
                 "\n"
                 "Commands:\n"
                 "  run     run the broker (stops on SIGTERM / SIGINT)\n"
                 "  key     print the broker's CURVE public key (made on first use)\n"
                 "  stats   print queue, connection and store figures from /metrics\n"
                 "          --watch          refresh every --interval seconds (default 2)\n"
                 "          --metrics URL    default http://127.0.0.1:METRICS_PORT/metrics\n"
                 "  version print the version\n"
                 "\n"
                 "Options of every command:\n"
                 "  --config FILE           INI file with a [broker] section\n"
                 "\n");
    broker_config_print_help(out);
}

static int s_load(broker_config_t *config, int argc, char **argv, int first)
{
    char err[512];
    if (broker_config_load(config, argc, argv, first, err, sizeof err) != 0) {
        fprintf(stderr, "twinsync-broker: %s\n", err);
        return -1;
    }
    ts_log_level_t level = TS_LOG_INFO;
    ts_log_level_parse(config->log_level, &level);
    ts_log_set_level(level);
    return 0;
}

static int s_run(int argc, char **argv)
{
    broker_config_t config;
    if (s_load(&config, argc, argv, 2) != 0)
        return 2;
    char err[1024];
    broker_server_t *server = broker_server_new(&config, err, sizeof err);
    if (!server) {
        //  One line, like a configuration error: the key and the file.
        broker_config_blame(&config, err, sizeof err);
        fprintf(stderr, "twinsync-broker: %s\n", err);
        broker_config_release(&config);
        return 1;
    }
    int status = broker_server_run(server);
    broker_server_destroy(&server);
    broker_config_release(&config);
    return status;
}

static int s_key(int argc, char **argv)
{
    broker_config_t config;
    if (s_load(&config, argc, argv, 2) != 0)
        return 2;
    broker_keys_t keys;
    char err[512];
    int status = 0;
    if (broker_keys_load(&keys, config.state_dir, true, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "twinsync-broker: %s\n", err);
        status = 1;
    } else {
        printf("%s\n", keys.public_z85);
    }
    broker_keys_wipe(&keys);
    broker_config_release(&config);
    return status;
}

//  Takes the stats-only flags out of argv (compacting it) and leaves the
//  configuration flags for broker_config_load.
static int s_stats(int argc, char **argv)
{
    bool watch = false;
    int interval = 2;
    const char *url = NULL;
    int kept = 2;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--watch") == 0) {
            watch = true;
        } else if (strcmp(argv[i], "--interval") == 0 && i + 1 < argc) {
            interval = (int)strtol(argv[++i], NULL, 10);
            if (interval < 1)
                interval = 1;
        } else if (strcmp(argv[i], "--metrics") == 0 && i + 1 < argc) {
            url = argv[++i];
        } else {
            argv[kept++] = argv[i];
        }
    }
    broker_config_t config;
    if (s_load(&config, kept, argv, 2) != 0)
        return 2;
    char fallback[128];
    if (!url) {
        if (config.metrics_port == 0) {
            fprintf(stderr, "twinsync-broker: metrics_port is 0 (metrics off); give --metrics "
                            "URL\n");
            broker_config_release(&config);
            return 2;
        }
        snprintf(fallback, sizeof fallback, "http://127.0.0.1:%ld/metrics", config.metrics_port);
        url = fallback;
    }
    int status = broker_stats_run(url, watch, interval);
    broker_config_release(&config);
    return status;
}

int main(int argc, char **argv)
{
    //  glibc gives the top of the heap back to the kernel whenever more than
    //  128 KiB are free there; the broker's frames and SQLite's pages free and
    //  take that much back every batch, which cost a brk call per ~4 messages
    //  (strace -c, 50,000 messages: 14,042 brk). 8 MiB kept: none.
    mallopt(M_TRIM_THRESHOLD, 8 << 20);
    mallopt(M_TOP_PAD, 1 << 20);
    if (argc < 2) {
        s_usage(stderr);
        return 2;
    }
    const char *command = argv[1];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            s_usage(stdout);
            return 0;
        }
    }
    if (strcmp(command, "run") == 0)
        return s_run(argc, argv);
    if (strcmp(command, "key") == 0)
        return s_key(argc, argv);
    if (strcmp(command, "stats") == 0)
        return s_stats(argc, argv);
    if (strcmp(command, "help") == 0) {
        s_usage(stdout);
        return 0;
    }
    if (strcmp(command, "version") == 0 || strcmp(command, "--version") == 0) {
        printf("twinsync-broker %s\n", TS_VERSION);
        return 0;
    }
    fprintf(stderr, "twinsync-broker: unknown command '%s' (try --help)\n", command);
    return 2;
}
