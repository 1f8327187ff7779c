/*  test_private_accept.c: `connection accept` (private_accept) refuses a
    code that is not one, a damaged or truncated code, and a trigger of more
    than one line, each with one line naming the problem, and stores no
    connection then.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "node_admin.h"
#include "node_config.h"
#include "private_accept.h"

typedef struct {
    char dir[64];        //  State directory
    node_config_t cfg;   //  Its configuration
    node_admin_t *admin; //  Opened on it
} s_fixture_t;

static int s_setup(void **state)
{
    setenv("TS_TEST_PASSWORD", "pw", 1);
    s_fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/test-private-accept-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char state_dir[96];
    snprintf(state_dir, sizeof state_dir, "--node.state_dir=%s", f->dir);
    char *argv[] = {"--node.name=globex-node", state_dir, "--servicenow.url=http://127.0.0.1:1",
                    "--servicenow.user=sync", "--servicenow.password_env=TS_TEST_PASSWORD"};
    char *rest[5];
    int count = 0;
    char err[512];
    if (node_config_load(&f->cfg, PROTO_ROLE_PRIVATE, NULL, 5, argv, rest, &count, err, sizeof err))
        fail_msg("config: %s", err);
    f->admin = node_admin_open(&f->cfg, err, sizeof err);
    if (!f->admin)
        fail_msg("admin: %s", err);
    *state = f;
    return 0;
}

static int s_teardown(void **state)
{
    s_fixture_t *f = *state;
    node_admin_destroy(&f->admin);
    node_config_release(&f->cfg);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

//  No connection is stored.
static void s_assert_nothing_stored(s_fixture_t *f)
{
    node_admin_status_t status;
    char err[256];
    assert_int_equal(node_admin_status(f->admin, &status, err, sizeof err), 0);
    assert_int_equal(status.count, 0);
    node_admin_status_clear(&status);
}

static void test_bad_codes_are_refused(void **state)
{
    s_fixture_t *f = *state;
    const char *codes[] = {"", "hello", "tsi1.", "tsi1.AAAA", "tsi2.AAAAAAAAAAAAAAAAAAAAAA"};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        private_acceptance_t out;
        char err[256] = "";
        assert_int_equal(private_accept(f->admin, codes[i], NULL, 0, &out, err, sizeof err), -1);
        assert_true(err[0]);
        assert_null(strchr(err, '\n'));
    }
    s_assert_nothing_stored(f);
}

static void test_trigger_of_two_lines_is_refused(void **state)
{
    s_fixture_t *f = *state;
    private_acceptance_t out;
    char err[256] = "";
    assert_int_equal(
        private_accept(f->admin, "tsi1.AAAA", "urgency=1\nactive=true", 0, &out, err, sizeof err),
        -1);
    assert_non_null(strstr(err, "--trigger"));
    s_assert_nothing_stored(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bad_codes_are_refused, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_trigger_of_two_lines_is_refused, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
