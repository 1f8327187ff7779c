/*  broker_stats.h: `twinsync-broker stats`, the metrics as a table a person
    reads at a glance.

    Fetches /metrics from the running broker (plain HTTP GET over a socket;
    the endpoint is on loopback), parses the Prometheus text and prints one
    row per connection and direction, one per connection's nodes, and the
    broker-wide numbers.
*/
#ifndef BROKER_STATS_H
#define BROKER_STATS_H

#include <stddef.h>
#include <stdio.h>

//  Fetches url ("http://127.0.0.1:9570/metrics") into a NUL-terminated body
//  the caller frees. Returns NULL with a reason in err.
char *broker_stats_fetch(const char *url, char *err, size_t errlen);

//  Prints the table for a metrics text to out.
void broker_stats_print(FILE *out, const char *metrics_text);

//  The subcommand: fetches and prints once, or every interval_s seconds
//  until interrupted when watch is set. Returns the process exit status.
int broker_stats_run(const char *url, int watch, int interval_s);

#endif
