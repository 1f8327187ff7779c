/*  ts_cli.c: argv through getopt_long into ts_config tables (see ts_cli.h).

    getopt_long runs in "return in order" mode (optstring starting with '-'):
    a positional argument comes back as option 1, so options may follow the
    command and its arguments without getopt permuting argv, whatever
    POSIXLY_CORRECT says. Its long options are built from the tables at each
    call; option number S_FIRST + i is flag i of the flattened tables.
*/
#include "ts_cli.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define S_FIRST 256 //  getopt_long value of the first long option (above every char)

typedef struct {
    ts_config_t *set;           //  Where the value goes
    const ts_config_key_t *key; //  Its key
    char name[128];             //  "section.key" or "key"
} s_flag_t;

//  True when name is one of the space-separated words of list.
static bool s_listed(const char *list, const char *name, size_t len)
{
    for (const char *p = list; p && *p;) {
        p += strspn(p, " ");
        size_t n = strcspn(p, " ");
        if (n && n == len && strncmp(p, name, len) == 0)
            return true;
        p += n;
    }
    return false;
}

//  The name part of an option as typed ("--wait=5" -> "wait", 4 chars).
static const char *s_typed_name(const char *text, size_t *len)
{
    const char *name = text + (strncmp(text, "--", 2) == 0 ? 2 : 1);
    *len = strcspn(name, "=");
    return name;
}

//  The one-line error for what getopt_long refused: c is '?' or ':'.
static void s_refused(int c, char **subv, const s_flag_t *flags, size_t count, char *err,
                      size_t errlen)
{
    const char *text = optind > 0 ? subv[optind - 1] : "";
    size_t len;
    if (strncmp(text, "--", 2) != 0) {
        snprintf(err, errlen, "unknown option -%c", optopt ? optopt : '?');
        return;
    }
    const char *name = s_typed_name(text, &len);
    if (c == ':') {
        snprintf(err, errlen, "--%.*s needs a value", (int)len, name);
        return;
    }
    for (size_t i = 0; i < count; i++) {
        if (strlen(flags[i].name) == len && strncmp(flags[i].name, name, len) == 0 &&
            name[len] == '=') {
            snprintf(err, errlen, "--%s takes no value", flags[i].name);
            return;
        }
    }
    //  A key typed in the older spelling (--max-frame for --broker.max_frame)
    //  or without its section: name the flag meant.
    for (size_t i = 0; i < count; i++) {
        const char *key = flags[i].key->key;
        if (!flags[i].key->section || strlen(key) != len)
            continue;
        size_t j = 0;
        while (j < len && (key[j] == name[j] || (key[j] == '_' && name[j] == '-')))
            j++;
        if (j == len) {
            snprintf(err, errlen, "unknown option --%.*s (did you mean --%s?)", (int)len, name,
                     flags[i].name);
            return;
        }
    }
    snprintf(err, errlen, "unknown option --%.*s", (int)len, name);
}

//  Refuses an abbreviation: the option as typed must be its whole name.
static int s_whole_name(char **subv, const s_flag_t *flag, char *err, size_t errlen)
{
    //  A value given as the next argument is subv[optind - 1] itself; the
    //  option is then the argument before it.
    int at = optarg && optarg == subv[optind - 1] ? optind - 2 : optind - 1;
    size_t len;
    const char *name = s_typed_name(subv[at], &len);
    if (strncmp(subv[at], "--", 2) != 0 ||
        (strlen(flag->name) == len && strncmp(flag->name, name, len) == 0))
        return 0;
    snprintf(err, errlen, "--%.*s: give the whole name, --%s", (int)len, name, flag->name);
    return -1;
}

int ts_cli_parse(ts_config_t *const *sets, size_t nsets, int argc, char **argv, int first,
                 char **args, int *nargs, char *err, size_t errlen)
{
    size_t count = 0;
    for (size_t s = 0; s < nsets; s++) {
        for (const ts_config_key_t *k = ts_config_keys(sets[s]); k->key; k++)
            count++;
    }
    s_flag_t *flags = calloc(count + 1, sizeof *flags);
    struct option *longopts = calloc(count + 1, sizeof *longopts);
    *nargs = 0;
    if (!flags || !longopts) {
        free(flags);
        free(longopts);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char shortopts[64] = "-:";
    size_t shorts = 2;
    size_t i = 0;
    for (size_t s = 0; s < nsets; s++) {
        for (const ts_config_key_t *k = ts_config_keys(sets[s]); k->key; k++, i++) {
            flags[i].set = sets[s];
            flags[i].key = k;
            ts_config_flag_name(k, flags[i].name, sizeof flags[i].name);
            longopts[i] = (struct option){
                flags[i].name, k->kind == TS_CONFIG_SWITCH ? no_argument : required_argument, NULL,
                S_FIRST + (int)i};
            if (k->letter && shorts + 3 < sizeof shortopts) {
                shortopts[shorts++] = k->letter;
                if (k->kind != TS_CONFIG_SWITCH)
                    shortopts[shorts++] = ':';
                shortopts[shorts] = '\0';
            }
        }
    }
    //  getopt_long reads from index 1: the argument before the first one
    //  stands in for the program's name.
    int subc = argc - first + 1;
    char **subv = argv + first - 1;
    int rc = 0, n = 0;
    optind = 0;
    opterr = 0;
    while (rc == 0) {
        int c = getopt_long(subc, subv, shortopts, longopts, NULL);
        if (c == -1)
            break;
        if (c == 1) {
            args[n++] = optarg;
            continue;
        }
        if (c == '?' || c == ':') {
            s_refused(c, subv, flags, count, err, errlen);
            rc = -1;
            break;
        }
        size_t at = count;
        if (c >= S_FIRST) {
            at = (size_t)(c - S_FIRST);
            rc = s_whole_name(subv, &flags[at], err, errlen);
        } else {
            for (size_t j = 0; j < count && at == count; j++)
                at = flags[j].key->letter == c ? j : count;
        }
        if (rc == 0 && at < count)
            rc = ts_config_set(flags[at].set, flags[at].key, optarg, err, errlen);
    }
    //  After "--" getopt_long stops: the rest is positional.
    while (rc == 0 && optind < subc)
        args[n++] = subv[optind++];
    *nargs = n;
    free(flags);
    free(longopts);
    return rc;
}

int ts_cli_words(const char *words, char *const *args, int nargs)
{
    int used = 0;
    for (const char *p = words; *p;) {
        p += strspn(p, " ");
        size_t len = strcspn(p, " ");
        if (!len)
            break;
        if (used >= nargs || strlen(args[used]) != len || strncmp(args[used], p, len) != 0)
            return 0;
        used++;
        p += len;
    }
    return used;
}

int ts_cli_check(const ts_cli_command_t *command, const ts_config_t *options, const char *common,
                 int nargs, char *err, size_t errlen)
{
    for (const ts_config_key_t *k = ts_config_keys(options); k->key; k++) {
        size_t len = strlen(k->key);
        if (ts_config_given(options, k) && !s_listed(command->options, k->key, len) &&
            !s_listed(common, k->key, len)) {
            snprintf(err, errlen, "--%s does not apply to %s", k->key, command->words);
            return -1;
        }
    }
    if (nargs < command->min_args || nargs > command->max_args) {
        if (!*command->args)
            snprintf(err, errlen, "%s takes no arguments", command->words);
        else
            snprintf(err, errlen, "%s takes %s", command->words, command->args);
        return -1;
    }
    return 0;
}

//  Prints "[--name ARG]" for each option of keys named in names.
static void s_usage_options(const ts_config_key_t *keys, const char *names, FILE *out)
{
    for (const ts_config_key_t *k = keys; k->key; k++) {
        if (k->section || !s_listed(names, k->key, strlen(k->key)) || strcmp(k->key, "help") == 0)
            continue;
        if (k->kind == TS_CONFIG_SWITCH)
            fprintf(out, " [--%s]", k->key);
        else
            fprintf(out, " [--%s %s]", k->key, k->arg ? k->arg : "VALUE");
    }
}

//  Prints the help line of each option of keys named in names.
static void s_option_lines(const ts_config_key_t *keys, const char *names, FILE *out)
{
    for (const ts_config_key_t *k = keys; k->key; k++) {
        if (!k->section && s_listed(names, k->key, strlen(k->key)))
            ts_config_print_key(k, out);
    }
}

void ts_cli_print_usage(const char *prog, const ts_cli_command_t *command,
                        const ts_config_key_t *keys, const char *common, const char *keys_hint,
                        FILE *out)
{
    fprintf(out, "usage: %s %s%s%s", prog, command->words, *command->args ? " " : "",
            command->args);
    s_usage_options(keys, command->options, out);
    s_usage_options(keys, common, out);
    fprintf(out, "%s%s\n\n%s\n\noptions:\n", keys_hint ? " " : "", keys_hint ? keys_hint : "",
            command->help);
    s_option_lines(keys, command->options, out);
    s_option_lines(keys, common, out);
}

void ts_cli_print_entry(const ts_cli_command_t *command, FILE *out)
{
    char usage[160];
    snprintf(usage, sizeof usage, "%s%s%s", command->words, *command->args ? " " : "",
             command->args);
    //  A long usage gets its help on the next line rather than being cut.
    if (strlen(usage) > 44)
        fprintf(out, "  %s\n  %-44s %s\n", usage, "", command->help);
    else
        fprintf(out, "  %-44s %s\n", usage, command->help);
}
