/*  test_config.c: unit tests for node_config's start-up errors (issue 6): each
    one is one line naming the key and the configuration file (and the secret
    file for secrets), the broker endpoint must read tcp://HOST:PORT, the
    instance URL http(s)://HOST, and node_config_blame names the file once.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node_config.h"

#define S_KEY "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"

typedef struct {
    char dir[64];     //  Temporary directory
    char ini[128];    //  Configuration file in it
    char secret[128]; //  A 0600 password file in it
} s_fixture_t;

static void s_write(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
}

static int s_setup(void **state)
{
    s_fixture_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/test-node-config-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->ini, sizeof f->ini, "%s/public.ini", f->dir);
    snprintf(f->secret, sizeof f->secret, "%s/public.password", f->dir);
    s_write(f->secret, "pw\n", 0600);
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    s_fixture_t *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

//  Writes a complete public node configuration with url, password_file and
//  endpoint as given (NULL: the key is left out), then loads and checks it.
//  Returns what node_config_check_run (then node_config_secrets) said, in err.
static int s_try(s_fixture_t *f, const char *url, const char *password_file, const char *endpoint,
                 char *err, size_t errlen)
{
    char text[1024];
    int n = snprintf(text, sizeof text,
                     "[node]\nname = acme\nstate_dir = %s/state\n"
                     "[servicenow]\nuser = sync\n",
                     f->dir);
    if (url)
        n += snprintf(text + n, sizeof text - (size_t)n, "url = %s\n", url);
    if (password_file)
        n += snprintf(text + n, sizeof text - (size_t)n, "password_file = %s\n", password_file);
    n += snprintf(text + n, sizeof text - (size_t)n, "[broker]\npublic_key = %s\n", S_KEY);
    if (endpoint)
        snprintf(text + n, sizeof text - (size_t)n, "endpoint = %s\n", endpoint);
    s_write(f->ini, text, 0600);
    node_config_t cfg;
    int rest_count = 0;
    char *rest[1];
    *err = '\0';
    assert_int_equal(
        node_config_load(&cfg, PROTO_ROLE_PUBLIC, f->ini, 0, rest, rest, &rest_count, err, errlen),
        0);
    int rc = node_config_check_run(&cfg, err, errlen);
    if (rc == 0) {
        char *password = NULL, *client_secret = NULL;
        rc = node_config_secrets(&cfg, &password, &client_secret, err, errlen);
        if (rc == 0) {
            assert_string_equal(password, "pw");
            free(password);
            free(client_secret);
        }
    }
    node_config_release(&cfg);
    return rc;
}

//  Asserts that err is one line holding each of the words.
static void s_names(const char *err, const char *a, const char *b, const char *c)
{
    assert_null(strchr(err, '\n'));
    const char *words[] = {a, b, c};
    for (size_t i = 0; i < 3; i++) {
        if (words[i] && !strstr(err, words[i]))
            fail_msg("'%s' does not name '%s'", err, words[i]);
    }
}

static void test_good_config_passes(void **state)
{
    s_fixture_t *f = *state;
    char err[1024];
    assert_int_equal(
        s_try(f, "https://acme.service-now.com", f->secret, "tcp://broker:5570", err, sizeof err),
        0);
    assert_int_equal(
        s_try(f, "http://127.0.0.1:8080/sub", f->secret, "tcp://[::1]:5570", err, sizeof err), 0);
}

static void test_missing_key_names_key_and_file(void **state)
{
    s_fixture_t *f = *state;
    char err[1024];
    assert_int_equal(s_try(f, NULL, f->secret, "tcp://broker:5570", err, sizeof err), -1);
    s_names(err, f->ini, "missing key servicenow.url", NULL);
    assert_int_equal(strncmp(err, f->ini, strlen(f->ini)), 0);
    assert_int_equal(s_try(f, "https://acme.service-now.com", f->secret, NULL, err, sizeof err),
                     -1);
    s_names(err, f->ini, "broker.endpoint", NULL);
}

static void test_secret_errors_name_key_secret_and_file(void **state)
{
    s_fixture_t *f = *state;
    char err[1024], open_secret[160], absent[160];
    snprintf(open_secret, sizeof open_secret, "%s/open.password", f->dir);
    snprintf(absent, sizeof absent, "%s/absent.password", f->dir);
    s_write(open_secret, "pw\n", 0644);
    const char *url = "https://acme.service-now.com", *ep = "tcp://broker:5570";
    assert_int_equal(s_try(f, url, open_secret, ep, err, sizeof err), -1);
    s_names(err, f->ini, "servicenow.password_file", "readable by others (mode 644)");
    s_names(err, open_secret, "chmod 600", NULL);
    assert_int_equal(s_try(f, url, absent, ep, err, sizeof err), -1);
    s_names(err, f->ini, "servicenow.password_file", absent);
    assert_int_equal(s_try(f, url, f->dir, ep, err, sizeof err), -1);
    s_names(err, f->ini, "servicenow.password_file", "not a regular file");
}

static void test_bad_url_names_key_and_file(void **state)
{
    s_fixture_t *f = *state;
    const char *bad[] = {
        "acme",           "htps:/acme service-now.com", "https://",
        "https://acme:0", "ftp://acme.service-now.com", "https://ac me.service-now.com"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[1024];
        if (s_try(f, bad[i], f->secret, "tcp://broker:5570", err, sizeof err) != -1)
            fail_msg("url '%s' was accepted", bad[i]);
        s_names(err, f->ini, "servicenow.url", bad[i]);
    }
}

static void test_endpoint_must_be_tcp_host_port(void **state)
{
    s_fixture_t *f = *state;
    const char *bad[] = {"broker:5570",       "tcp://broker",       "tcp://:5570",
                         "tcp://broker:0",    "tcp://broker:70000", "tcp://broker:55x",
                         "ipc:///tmp/broker", "tcp://bro ker:5570"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_false(node_config_endpoint_ok(bad[i]));
        char err[1024];
        assert_int_equal(
            s_try(f, "https://acme.service-now.com", f->secret, bad[i], err, sizeof err), -1);
        s_names(err, f->ini, "broker.endpoint", bad[i]);
    }
    assert_true(node_config_endpoint_ok("tcp://10.0.0.1:5570"));
    assert_true(node_config_endpoint_ok("tcp://broker.example.com:1"));
    assert_true(node_config_endpoint_ok("tcp://[fe80::1]:65535"));
}

static void test_load_errors_name_the_file(void **state)
{
    s_fixture_t *f = *state;
    s_write(f->ini, "[node]\nlookback_s = 0\n", 0600);
    node_config_t cfg;
    char err[512], *rest[1];
    int count = 0;
    assert_int_equal(
        node_config_load(&cfg, PROTO_ROLE_PUBLIC, f->ini, 0, rest, rest, &count, err, sizeof err),
        -1);
    s_names(err, f->ini, "lookback_s", NULL);
    s_write(f->ini, "[node]\ncolour = blue\n", 0600);
    assert_int_equal(
        node_config_load(&cfg, PROTO_ROLE_PUBLIC, f->ini, 0, rest, rest, &count, err, sizeof err),
        -1);
    s_names(err, f->ini, "node.colour", NULL);
}

static void test_blame_names_the_file_once(void **state)
{
    s_fixture_t *f = *state;
    s_write(f->ini, "[node]\nname = acme\n", 0600);
    node_config_t cfg;
    char err[512], *rest[1];
    int count = 0;
    assert_int_equal(
        node_config_load(&cfg, PROTO_ROLE_PUBLIC, f->ini, 0, rest, rest, &count, err, sizeof err),
        0);
    snprintf(err, sizeof err, "node.state_dir: cannot create");
    assert_int_equal(node_config_blame(&cfg, err, sizeof err), -1);
    assert_int_equal(node_config_blame(&cfg, err, sizeof err), -1);
    char want[512];
    snprintf(want, sizeof want, "%s: node.state_dir: cannot create", f->ini);
    assert_string_equal(err, want);
    node_config_release(&cfg);
    //  Flags only: nothing to name.
    assert_int_equal(
        node_config_load(&cfg, PROTO_ROLE_PUBLIC, NULL, 0, rest, rest, &count, err, sizeof err), 0);
    snprintf(err, sizeof err, "missing key node.name");
    node_config_blame(&cfg, err, sizeof err);
    assert_string_equal(err, "missing key node.name");
    node_config_release(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_good_config_passes, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_missing_key_names_key_and_file, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_secret_errors_name_key_secret_and_file, s_setup,
                                        s_teardown),
        cmocka_unit_test_setup_teardown(test_bad_url_names_key_and_file, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_endpoint_must_be_tcp_host_port, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_load_errors_name_the_file, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_blame_names_the_file_once, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
