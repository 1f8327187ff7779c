/*  test_config.c: unit tests for the configuration engine (ts_config) and the command line
    over it (ts_cli): numbers are parsed strictly, a table with a bad default
    is refused, the order defaults < file < command line holds, every error
    is one line naming the file and line or the flag, and argv is walked the
    same way whatever the order of options and arguments.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ts_cli.h"
#include "ts_config.h"

//  A small program's configuration: one of each kind.
typedef struct {
    char *name;       //  [s] name
    long count;       //  [s] count
    long wait_ms;     //  [s] wait_ms
    long size;        //  [s] size
    bool loud;        //  [s] loud
    char *level;      //  [s] level
    char *file;       //  [t] file
    char **items;     //  [t] items, comma-separated
    size_t items_len; //  Entries in items
} s_conf_t;

static void s_items_clear(void *target)
{
    s_conf_t *conf = target;
    for (size_t i = 0; i < conf->items_len; i++)
        free(conf->items[i]);
    free(conf->items);
    conf->items = NULL;
    conf->items_len = 0;
}

//  A list of words without digits: the custom kind's check and store.
static int s_items_set(void *target, const char *value, char *err, size_t errlen)
{
    if (strpbrk(value, "0123456789")) {
        snprintf(err, errlen, "'%s' holds a digit", value);
        return -1;
    }
    if (!target)
        return 0;
    s_items_clear(target);
    s_conf_t *conf = target;
    char *copy = strdup(value), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        conf->items = realloc(conf->items, (conf->items_len + 1) * sizeof *conf->items);
        conf->items[conf->items_len++] = strdup(tok);
    }
    free(copy);
    return 0;
}

static int s_no_spaces(const char *value, char *err, size_t errlen)
{
    if (!strchr(value, ' '))
        return 0;
    snprintf(err, errlen, "'%s' has a space", value);
    return -1;
}

#define F(member) offsetof(s_conf_t, member)

static const ts_config_key_t s_keys[] = {{.section = "s",
                                          .key = "name",
                                          .kind = TS_CONFIG_STRING,
                                          .fallback = "anon",
                                          .offset = F(name),
                                          .check = s_no_spaces,
                                          .help = "who"},
                                         {.section = "s",
                                          .key = "count",
                                          .kind = TS_CONFIG_INT,
                                          .fallback = "3",
                                          .min = 1,
                                          .max = 10,
                                          .offset = F(count),
                                          .help = "how many"},
                                         {.section = "s",
                                          .key = "wait_ms",
                                          .kind = TS_CONFIG_DURATION_MS,
                                          .fallback = "1s",
                                          .min = 50,
                                          .max = 600000,
                                          .offset = F(wait_ms),
                                          .help = "how long"},
                                         {.section = "s",
                                          .key = "size",
                                          .kind = TS_CONFIG_BYTES,
                                          .fallback = "1MiB",
                                          .min = 4096,
                                          .max = 64 << 20,
                                          .offset = F(size),
                                          .help = "how big"},
                                         {.section = "s",
                                          .key = "loud",
                                          .kind = TS_CONFIG_BOOL,
                                          .fallback = "false",
                                          .offset = F(loud),
                                          .help = "shout"},
                                         {.section = "s",
                                          .key = "level",
                                          .kind = TS_CONFIG_ENUM,
                                          .fallback = "info",
                                          .choices = "debug|info|warn",
                                          .offset = F(level),
                                          .help = "log level",
                                          .scope = 1},
                                         {.section = "t",
                                          .key = "file",
                                          .kind = TS_CONFIG_PATH,
                                          .offset = F(file),
                                          .help = "a file",
                                          .scope = 2},
                                         {.section = "t",
                                          .key = "items",
                                          .kind = TS_CONFIG_CUSTOM,
                                          .set = s_items_set,
                                          .clear = s_items_clear,
                                          .help = "words"},
                                         {0}};

//  The options of a command: what --help, --wait and --json would be.
typedef struct {
    bool help;   //  --help, -h
    long wait_s; //  --wait S
    bool json;   //  --json
    char *to;    //  --to NAME
} s_opts_t;

static const ts_config_key_t s_option_keys[] = {
    {.key = "help",
     .kind = TS_CONFIG_SWITCH,
     .offset = offsetof(s_opts_t, help),
     .letter = 'h',
     .help = "this text"},
    {.key = "wait",
     .kind = TS_CONFIG_INT,
     .fallback = "30",
     .min = 0,
     .max = 3600,
     .arg = "S",
     .offset = offsetof(s_opts_t, wait_s),
     .help = "seconds to wait"},
    {.key = "json", .kind = TS_CONFIG_SWITCH, .offset = offsetof(s_opts_t, json), .help = "JSON"},
    {.key = "to", .kind = TS_CONFIG_STRING, .offset = offsetof(s_opts_t, to), .help = "whom"},
    {0}};

static char s_path[64];

static int s_setup(void **state)
{
    (void)state;
    snprintf(s_path, sizeof s_path, "/tmp/test-ts-config-XXXXXX");
    int fd = mkstemp(s_path);
    assert_true(fd >= 0);
    close(fd);
    return 0;
}

static int s_teardown(void **state)
{
    (void)state;
    unlink(s_path);
    return 0;
}

static void s_write(const char *text)
{
    FILE *f = fopen(s_path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static ts_config_t *s_new(const ts_config_key_t *keys)
{
    char err[256];
    ts_config_t *config = ts_config_new(keys, err, sizeof err);
    if (!config)
        fail_msg("table refused: %s", err);
    return config;
}

//  Asserts that err is one line starting with prefix and holding word.
static void s_says(const char *err, const char *prefix, const char *word)
{
    assert_null(strchr(err, '\n'));
    if (strncmp(err, prefix, strlen(prefix)) != 0 || !strstr(err, word))
        fail_msg("'%s' does not start with '%s' and name '%s'", err, prefix, word);
}

static void test_numbers_are_strict(void **state)
{
    (void)state;
    char err[256];
    long v = 0;
    assert_int_equal(ts_config_parse_number(TS_CONFIG_INT, "42", 0, 100, &v, err, sizeof err), 0);
    assert_int_equal(v, 42);
    assert_int_equal(ts_config_parse_number(TS_CONFIG_INT, "-7", 0, 0, &v, err, sizeof err), 0);
    assert_int_equal(v, -7);
    const char *bad[] = {"", "abc", "12x", "4x", " 5", "5 ", "1e3", "0x10", "1.5", "--1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 99;
        if (ts_config_parse_number(TS_CONFIG_INT, bad[i], 0, 100, &v, err, sizeof err) != -1)
            fail_msg("'%s' was read as a number", bad[i]);
        assert_int_equal(v, 99);
        assert_non_null(strstr(err, "is not a whole number"));
    }
    assert_int_equal(ts_config_parse_number(TS_CONFIG_INT, "4x", 0, 100, &v, err, sizeof err), -1);
    assert_string_equal(err, "'4x' is not a whole number");
    assert_int_equal(ts_config_parse_number(TS_CONFIG_INT, "99999", 0, 100, &v, err, sizeof err),
                     -1);
    assert_string_equal(err, "99999 is out of range (0 to 100)");
    assert_int_equal(ts_config_parse_number(TS_CONFIG_INT, "0", 1, 10, &v, err, sizeof err), -1);
    assert_int_equal(ts_config_parse_number(TS_CONFIG_INT, "-1", 1, 10, &v, err, sizeof err), -1);
    assert_int_equal(
        ts_config_parse_number(TS_CONFIG_INT, "9223372036854775808", 0, 0, &v, err, sizeof err),
        -1);
}

static void test_durations_and_sizes_take_units(void **state)
{
    (void)state;
    char err[256];
    long v = 0;
    struct {
        ts_config_kind_t kind;
        const char *text;
        long want;
    } good[] = {
        {TS_CONFIG_DURATION_MS, "250", 250},    {TS_CONFIG_DURATION_MS, "250ms", 250},
        {TS_CONFIG_DURATION_MS, "2s", 2000},    {TS_CONFIG_DURATION_MS, "3min", 180000},
        {TS_CONFIG_DURATION_MS, "1h", 3600000}, {TS_CONFIG_BYTES, "4096", 4096},
        {TS_CONFIG_BYTES, "4KiB", 4096},        {TS_CONFIG_BYTES, "64MiB", 64L << 20},
        {TS_CONFIG_BYTES, "1G", 1L << 30},      {TS_CONFIG_BYTES, "2M", 2L << 20},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        assert_int_equal(
            ts_config_parse_number(good[i].kind, good[i].text, 0, 0, &v, err, sizeof err), 0);
        assert_int_equal(v, good[i].want);
    }
    const char *bad_durations[] = {"2 s", "2sec", "2m", "s", "2KiB", "1.5s"};
    for (size_t i = 0; i < sizeof bad_durations / sizeof bad_durations[0]; i++) {
        assert_int_equal(ts_config_parse_number(TS_CONFIG_DURATION_MS, bad_durations[i], 0, 0, &v,
                                                err, sizeof err),
                         -1);
        assert_non_null(strstr(err, "is not a duration"));
    }
    assert_int_equal(ts_config_parse_number(TS_CONFIG_BYTES, "5ms", 0, 0, &v, err, sizeof err), -1);
    assert_non_null(strstr(err, "is not a size"));
    assert_int_equal(
        ts_config_parse_number(TS_CONFIG_BYTES, "65MiB", 4096, 64 << 20, &v, err, sizeof err), -1);
    assert_string_equal(err, "65MiB is out of range (4096 to 67108864 bytes)");
    assert_int_equal(
        ts_config_parse_number(TS_CONFIG_BYTES, "9999999999G", 0, 0, &v, err, sizeof err), -1);
}

static void test_table_is_checked(void **state)
{
    (void)state;
    char err[256];
    const ts_config_key_t bad_default[] = {
        {.section = "s", .key = "n", .kind = TS_CONFIG_INT, .fallback = "0", .min = 1, .max = 9},
        {0}};
    assert_null(ts_config_new(bad_default, err, sizeof err));
    s_says(err, "configuration table: s.n: default", "out of range");
    const ts_config_key_t twice[] = {{.section = "s", .key = "n", .kind = TS_CONFIG_STRING},
                                     {.section = "s", .key = "n", .kind = TS_CONFIG_STRING},
                                     {0}};
    assert_null(ts_config_new(twice, err, sizeof err));
    s_says(err, "configuration table: s.n", "twice");
    const ts_config_key_t no_choices[] = {{.section = "s", .key = "e", .kind = TS_CONFIG_ENUM},
                                          {0}};
    assert_null(ts_config_new(no_choices, err, sizeof err));
    s_says(err, "configuration table: s.e", "choices");
    const ts_config_key_t bad_enum[] = {
        {.section = "s", .key = "e", .kind = TS_CONFIG_ENUM, .choices = "a|b", .fallback = "c"},
        {0}};
    assert_null(ts_config_new(bad_enum, err, sizeof err));
    s_says(err, "configuration table: s.e: default", "'c' is not one of a,b");
}

static void test_defaults_then_file_then_flags(void **state)
{
    (void)state;
    char err[256];
    ts_config_t *config = s_new(s_keys);
    s_conf_t conf;
    memset(&conf, 0, sizeof conf);
    assert_int_equal(ts_config_apply(config, &conf, err, sizeof err), 0);
    assert_string_equal(conf.name, "anon");
    assert_int_equal(conf.count, 3);
    assert_int_equal(conf.wait_ms, 1000);
    assert_int_equal(conf.size, 1 << 20);
    assert_false(conf.loud);
    assert_string_equal(conf.level, "info");
    assert_string_equal(conf.file, ""); //  no default: empty, never NULL
    assert_int_equal(conf.items_len, 0);
    assert_null(ts_config_path(config));

    s_write("[s]\nname = filed\ncount = 5\nwait_ms = 2s\nloud = true\n"
            "[t]\nitems = a,b,c\nfile = /etc/x\n");
    assert_int_equal(ts_config_load(config, s_path, err, sizeof err), 0);
    assert_string_equal(ts_config_path(config), s_path);
    const ts_config_key_t *count = ts_config_find(config, "s", "count");
    assert_non_null(count);
    assert_null(ts_config_find(config, "s", "absent"));
    assert_null(ts_config_find(config, NULL, "count"));
    assert_int_equal(ts_config_set(config, count, "7", err, sizeof err), 0);
    assert_true(ts_config_given(config, count));
    assert_false(ts_config_given(config, ts_config_find(config, "s", "name")));
    assert_int_equal(ts_config_apply(config, &conf, err, sizeof err), 0);
    assert_string_equal(conf.name, "filed");
    assert_int_equal(conf.count, 7); //  the flag wins over the file
    assert_int_equal(conf.wait_ms, 2000);
    assert_true(conf.loud);
    assert_string_equal(conf.file, "/etc/x");
    assert_int_equal(conf.items_len, 3);
    assert_string_equal(conf.items[2], "c");

    //  A file read later does not undo the command line.
    s_write("[s]\ncount = 2\n");
    assert_int_equal(ts_config_load(config, s_path, err, sizeof err), 0);
    assert_int_equal(ts_config_apply(config, &conf, err, sizeof err), 0);
    assert_int_equal(conf.count, 7);
    assert_string_equal(conf.name, "anon");
    ts_config_clear(s_keys, &conf);
    assert_null(conf.name);
    assert_null(conf.items);
    ts_config_clear(s_keys, &conf);
    ts_config_destroy(&config);
    assert_null(config);
    ts_config_destroy(&config);
}

static void test_file_errors_name_file_line_and_key(void **state)
{
    (void)state;
    struct {
        const char *text;  //  The file
        const char *line;  //  "PATH:LINE" suffix it must start with
        const char *words; //  And hold
    } cases[] = {
        {"[s]\ncolour = blue\n", ":2: ", "unknown key s.colour"},
        {"[s]\ncount = 3\n[colours]\nred = 1\n", ":4: ", "unknown section [colours]"},
        {"colour = blue\n", ":1: ", "colour is outside any section (sections: s, t)"},
        {"[s]\n\ncount = abc\n", ":3: ", "s.count: 'abc' is not a whole number"},
        {"[s]\ncount = 12x\n", ":2: ", "s.count: '12x'"},
        {"[s]\ncount =\n", ":2: ", "s.count: '' is not a whole number"},
        {"[s]\ncount = 11\n", ":2: ", "s.count: 11 is out of range (1 to 10)"},
        {"[s]\nwait_ms = 10\n", ":2: ", "s.wait_ms: 10 is out of range (50 to 600000 ms)"},
        {"[s]\nloud = yes\n", ":2: ", "s.loud: expected true or false, got 'yes'"},
        {"[s]\nlevel = loud\n", ":2: ", "s.level: 'loud' is not one of debug,info,warn"},
        {"[s]\nname = two words\n", ":2: ", "s.name: 'two words' has a space"},
        {"[t]\nitems = a,b2\n", ":2: ", "t.items: 'a,b2' holds a digit"},
        {"[s]\n[broken\n", ":2: ", "section header"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ts_config_t *config = s_new(s_keys);
        char err[512], prefix[128];
        s_write(cases[i].text);
        assert_int_equal(ts_config_load(config, s_path, err, sizeof err), -1);
        snprintf(prefix, sizeof prefix, "%s%s", s_path, cases[i].line);
        s_says(err, prefix, cases[i].words);
        assert_null(ts_config_path(config)); //  a refused file is not kept
        ts_config_destroy(&config);
    }
    ts_config_t *config = s_new(s_keys);
    char err[512];
    assert_int_equal(ts_config_load(config, "/nonexistent/x.ini", err, sizeof err), -1);
    s_says(err, "cannot open config file /nonexistent/x.ini", "No such file");
    ts_config_destroy(&config);
}

static void test_flag_errors_name_the_flag(void **state)
{
    (void)state;
    ts_config_t *config = s_new(s_keys);
    char err[512];
    assert_int_equal(
        ts_config_set(config, ts_config_find(config, "s", "count"), "abc", err, sizeof err), -1);
    assert_string_equal(err, "--s.count: 'abc' is not a whole number");
    assert_int_equal(
        ts_config_set(config, ts_config_find(config, "t", "items"), "x1", err, sizeof err), -1);
    assert_string_equal(err, "--t.items: 'x1' holds a digit");
    assert_int_equal(
        ts_config_set(config, ts_config_find(config, "s", "count"), NULL, err, sizeof err), -1);
    assert_string_equal(err, "--s.count needs a value");
    assert_false(ts_config_given(config, ts_config_find(config, "s", "count")));
    ts_config_destroy(&config);
}

//  Parses args (NULL-terminated, after a program name) into a fresh set of
//  options and of s_keys; returns ts_cli_parse's result.
static int s_parse(const char **argv, ts_config_t **options, ts_config_t **config, char **args,
                   int *nargs, char *err, size_t errlen)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    *options = s_new(s_option_keys);
    *config = s_new(s_keys);
    ts_config_t *sets[] = {*options, *config};
    return ts_cli_parse(sets, 2, argc, (char **)argv, 1, args, nargs, err, errlen);
}

static void test_cli_options_anywhere(void **state)
{
    (void)state;
    const char *argv[] = {"prog", "--wait=5", "connection", "show", "--s.count",     "9",
                          "c-1",  "-h",       "--json",     "-",    "--t.items=x,y", "--to",
                          "--",   "--",       "--json",     NULL};
    ts_config_t *options, *config;
    char *args[16], err[256];
    int nargs = -1;
    assert_int_equal(s_parse(argv, &options, &config, args, &nargs, err, sizeof err), 0);
    //  "--to --" gives --to the value "--"; the second "--" ends the
    //  options, so the last "--json" is an argument.
    assert_int_equal(nargs, 5);
    assert_string_equal(args[0], "connection");
    assert_string_equal(args[1], "show");
    assert_string_equal(args[2], "c-1");
    assert_string_equal(args[3], "-");
    assert_string_equal(args[4], "--json");
    assert_int_equal(ts_cli_words("connection show", args, nargs), 2);
    assert_int_equal(ts_cli_words("connection list", args, nargs), 0);
    assert_int_equal(ts_cli_words("connection", args, nargs), 1);
    assert_int_equal(ts_cli_words("connection show c-1 - --json extra", args, nargs), 0);
    s_opts_t opts = {0};
    s_conf_t conf;
    memset(&conf, 0, sizeof conf);
    assert_int_equal(ts_config_apply(options, &opts, err, sizeof err), 0);
    assert_int_equal(ts_config_apply(config, &conf, err, sizeof err), 0);
    assert_true(opts.help);
    assert_true(opts.json);
    assert_int_equal(opts.wait_s, 5);
    assert_string_equal(opts.to, "--");
    assert_int_equal(conf.count, 9);
    assert_int_equal(conf.items_len, 2);
    ts_cli_command_t show = {"connection show", "CONN", 1, 1, "wait json to", "one connection"};
    assert_int_equal(ts_cli_check(&show, options, "help", 3, err, sizeof err), -1);
    assert_string_equal(err, "connection show takes CONN");
    show.max_args = 3;
    assert_int_equal(ts_cli_check(&show, options, "help", 3, err, sizeof err), 0);
    show.options = "wait to";
    assert_int_equal(ts_cli_check(&show, options, "help", 3, err, sizeof err), -1);
    assert_string_equal(err, "--json does not apply to connection show");
    show.options = "wait json";
    assert_int_equal(ts_cli_check(&show, options, "help to", 3, err, sizeof err), 0);
    ts_config_clear(s_option_keys, &opts);
    ts_config_clear(s_keys, &conf);
    ts_config_destroy(&options);
    ts_config_destroy(&config);
}

static void test_cli_errors_are_one_line(void **state)
{
    (void)state;
    struct {
        const char *argv[6]; //  After the program's name
        const char *want;    //  The whole message
    } cases[] = {
        {{"list", "--colour", "blue"}, "unknown option --colour"},
        {{"list", "--colour=blue"}, "unknown option --colour"},
        {{"-x", "list"}, "unknown option -x"},
        {{"list", "--wait"}, "--wait needs a value"},
        {{"list", "--wait", "abc"}, "--wait: 'abc' is not a whole number"},
        {{"list", "--wait=-1"}, "--wait: -1 is out of range (0 to 3600)"},
        {{"list", "--wait", ""}, "--wait: '' is not a whole number"},
        {{"list", "--wai", "3"}, "--wai: give the whole name, --wait"},
        {{"list", "--s.cou=3"}, "--s.cou: give the whole name, --s.count"},
        {{"list", "--json=yes"}, "--json takes no value"},
        {{"--s.count", "0"}, "--s.count: 0 is out of range (1 to 10)"},
        {{"--s.level", "loud"}, "--s.level: 'loud' is not one of debug,info,warn"},
        {{"--wait-ms", "5"}, "unknown option --wait-ms (did you mean --s.wait_ms?)"},
        {{"--count=5"}, "unknown option --count (did you mean --s.count?)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *argv[8] = {"prog"};
        for (int j = 0; cases[i].argv[j]; j++)
            argv[j + 1] = cases[i].argv[j];
        ts_config_t *options, *config;
        char *args[8], err[256] = "";
        int nargs;
        if (s_parse(argv, &options, &config, args, &nargs, err, sizeof err) != -1)
            fail_msg("case %zu was accepted", i);
        if (strcmp(err, cases[i].want) != 0)
            fail_msg("case %zu: '%s', not '%s'", i, err, cases[i].want);
        ts_config_destroy(&options);
        ts_config_destroy(&config);
    }
}

static void test_cli_parses_twice(void **state)
{
    //  getopt_long keeps global state: each parse starts afresh.
    (void)state;
    for (int round = 0; round < 3; round++) {
        const char *argv[] = {"prog", "run", "--wait", "7", NULL};
        ts_config_t *options, *config;
        char *args[4], err[256];
        int nargs;
        assert_int_equal(s_parse(argv, &options, &config, args, &nargs, err, sizeof err), 0);
        assert_int_equal(nargs, 1);
        assert_string_equal(args[0], "run");
        ts_config_destroy(&options);
        ts_config_destroy(&config);
    }
}

static void test_help_shows_keys_defaults_and_ranges(void **state)
{
    (void)state;
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    ts_config_print_help(s_keys, 1, out);
    ts_cli_command_t show = {"connection show", "CONN", 1, 1, "wait", "one connection"};
    ts_cli_print_usage("prog", &show, s_option_keys, "help", "[--SECTION.KEY VALUE ...]", out);
    ts_cli_print_entry(&show, out);
    fclose(out);
    assert_non_null(
        strstr(text, "usage: prog connection show CONN [--wait S] [--SECTION.KEY VALUE ...]\n\n"
                     "one connection\n"));
    assert_non_null(strstr(text, "\n  connection show CONN "));
    assert_non_null(strstr(text, "  s.count "));
    assert_non_null(strstr(text, "how many (default 3; 1 to 10)"));
    assert_non_null(strstr(text, "how long (default 1s; 50 to 600000 ms)"));
    assert_non_null(strstr(text, "log level (debug|info|warn; default info)"));
    assert_non_null(strstr(text, "  t.items "));
    assert_null(strstr(text, "t.file")); //  scope 2 only
    assert_non_null(strstr(text, "  -h, --help "));
    assert_non_null(strstr(text, "  --wait S "));
    assert_null(strstr(text, "--json"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numbers_are_strict),
        cmocka_unit_test(test_durations_and_sizes_take_units),
        cmocka_unit_test(test_table_is_checked),
        cmocka_unit_test_setup_teardown(test_defaults_then_file_then_flags, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_file_errors_name_file_line_and_key, s_setup,
                                        s_teardown),
        cmocka_unit_test(test_flag_errors_name_the_flag),
        cmocka_unit_test(test_cli_options_anywhere),
        cmocka_unit_test(test_cli_errors_are_one_line),
        cmocka_unit_test(test_cli_parses_twice),
        cmocka_unit_test(test_help_shows_keys_defaults_and_ranges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
