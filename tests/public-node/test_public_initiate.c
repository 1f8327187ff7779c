/*  test_public_initiate.c: the checks of `connection initiate`
    (public_initiate_check): a name within PROTO_MAX_NAME bytes, mode basic
    only, a trigger of one line; each refusal names the problem.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "proto_limits.h"
#include "public_initiate.h"

static void test_good_arguments_pass(void **state)
{
    (void)state;
    char err[256] = "";
    assert_int_equal(public_initiate_check("acme-globex", "basic", "urgency=1", err, sizeof err),
                     0);
    assert_int_equal(public_initiate_check("acme-globex", NULL, NULL, err, sizeof err), 0);
    assert_int_equal(public_initiate_check("acme-globex", "basic", "", err, sizeof err), 0);
}

static void test_bad_arguments_are_named(void **state)
{
    (void)state;
    char err[256], name[PROTO_MAX_NAME + 2];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    struct {
        const char *name, *mode, *trigger, *says;
    } cases[] = {
        {"", "basic", NULL, "name"},
        {name, "basic", NULL, "name"},
        {"acme-globex", "advanced", NULL, "advanced"},
        {"acme-globex", "basic", "urgency=1\nactive=true", "trigger"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err[0] = '\0';
        assert_int_equal(
            public_initiate_check(cases[i].name, cases[i].mode, cases[i].trigger, err, sizeof err),
            -1);
        assert_non_null(strstr(err, cases[i].says));
        assert_null(strchr(err, '\n'));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_arguments_pass),
        cmocka_unit_test(test_bad_arguments_are_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
