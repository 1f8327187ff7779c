/*  test_broker_config.c: unit tests for broker_config's errors (issue 6): a
    problem in the file is one line naming the file and the key; a bad flag is
    named as given; and broker_config_blame puts the file before a later
    start-up failure once.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker_config.h"

static char s_path[64];

static int s_setup(void **state)
{
    (void)state;
    snprintf(s_path, sizeof s_path, "/tmp/test-broker-config-XXXXXX");
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

//  Writes text as the file, loads it with extra flags; returns the result.
static int s_load(const char *text, char **flags, int nflags, broker_config_t *config, char *err,
                  size_t errlen)
{
    FILE *f = fopen(s_path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    char *argv[8] = {"twinsync-broker", "run", "--config", s_path};
    for (int i = 0; i < nflags; i++)
        argv[4 + i] = flags[i];
    return broker_config_load(config, 4 + nflags, argv, 2, err, errlen);
}

static void s_names(const char *err, const char *a, const char *b)
{
    assert_null(strchr(err, '\n'));
    if (!strstr(err, a) || (b && !strstr(err, b)))
        fail_msg("'%s' does not name '%s' and '%s'", err, a, b ? b : "");
}

static void test_file_errors_name_file_and_key(void **state)
{
    (void)state;
    broker_config_t config;
    char err[1024];
    assert_int_equal(s_load("[broker]\ncolour = blue\n", NULL, 0, &config, err, sizeof err), -1);
    s_names(err, s_path, "colour");
    assert_int_equal(s_load("[broker]\nmetrics_port = 99999\n", NULL, 0, &config, err, sizeof err),
                     -1);
    s_names(err, s_path, "metrics_port");
    assert_int_equal(s_load("[broker]\npublic_keys = abc\n", NULL, 0, &config, err, sizeof err),
                     -1);
    s_names(err, s_path, "public_keys");
    assert_int_equal(s_load("[broker]\nlog_level = loud\n", NULL, 0, &config, err, sizeof err), -1);
    s_names(err, s_path, "log_level");
    assert_null(config.path);
}

static void test_flag_errors_name_the_flag(void **state)
{
    (void)state;
    broker_config_t config;
    char err[1024], *flags[] = {"--colour", "blue"};
    assert_int_equal(s_load("[broker]\n", flags, 2, &config, err, sizeof err), -1);
    s_names(err, "--colour", NULL);
    assert_null(strstr(err, s_path));
}

static void test_blame_names_the_file_once(void **state)
{
    (void)state;
    broker_config_t config;
    char err[1024];
    assert_int_equal(s_load("[broker]\nmetrics_port = 0\n", NULL, 0, &config, err, sizeof err), 0);
    assert_string_equal(config.path, s_path);
    snprintf(err, sizeof err, "endpoint: cannot bind tcp://192.0.2.1:5570");
    assert_int_equal(broker_config_blame(&config, err, sizeof err), -1);
    assert_int_equal(broker_config_blame(&config, err, sizeof err), -1);
    char want[1024];
    snprintf(want, sizeof want, "%s: endpoint: cannot bind tcp://192.0.2.1:5570", s_path);
    assert_string_equal(err, want);
    broker_config_release(&config);
    assert_null(config.path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_file_errors_name_file_and_key, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_flag_errors_name_the_flag, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_blame_names_the_file_once, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
