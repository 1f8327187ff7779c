/*  test_common.c: unit tests for common/: INI parsing and lookups, secret files
    and their permission checks, private atomic writes, log quoting and rate
    limiting.
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

#include "ts_ini.h"
#include "ts_log.h"
#include "ts_secret.h"

static void test_ini_parse_sections_and_overrides(void **state)
{
    (void)state;
    char err[256];
    const char *text = "# comment\n"
                       "top = 1\n"
                       "[broker]\n"
                       "  bind = tcp://127.0.0.1:5570  \n"
                       "; another comment\n"
                       "name = \" padded \"\n"
                       "bind = tcp://0.0.0.0:5570\n";
    ts_ini_t *ini = ts_ini_parse(text, "t.ini", err, sizeof err);
    assert_non_null(ini);
    assert_string_equal(ts_ini_get(ini, "", "top"), "1");
    assert_string_equal(ts_ini_get(ini, "broker", "bind"), "tcp://0.0.0.0:5570");
    assert_string_equal(ts_ini_get(ini, "broker", "name"), " padded ");
    assert_null(ts_ini_get(ini, "broker", "top"));
    assert_string_equal(ts_ini_get_or(ini, "broker", "absent", "dflt"), "dflt");
    assert_int_equal(ts_ini_set(ini, "broker", "bind", "tcp://127.0.0.1:1"), 0);
    assert_string_equal(ts_ini_get(ini, "broker", "bind"), "tcp://127.0.0.1:1");
    assert_string_equal(ts_ini_source(ini), "t.ini");
    ts_ini_destroy(&ini);
    assert_null(ini);
    ts_ini_destroy(&ini);
}

static void test_ini_errors_name_file_and_line(void **state)
{
    (void)state;
    char err[256];
    assert_null(ts_ini_parse("a = 1\n[broken\n", "x.ini", err, sizeof err));
    assert_string_equal(err, "x.ini:2: section header must look like [name]");
    assert_null(ts_ini_parse("\n\njust words\n", "y.ini", err, sizeof err));
    assert_string_equal(err, "y.ini:3: expected 'key = value'");
    assert_null(ts_ini_parse("= v\n", "z.ini", err, sizeof err));
    assert_string_equal(err, "z.ini:1: empty key");
    assert_null(ts_ini_load("/nonexistent/twinsync.ini", err, sizeof err));
    assert_non_null(strstr(err, "cannot open config file /nonexistent/twinsync.ini"));
}

static void test_ini_remembers_lines(void **state)
{
    (void)state;
    char err[256];
    ts_ini_t *ini =
        ts_ini_parse("[s]\nn = 42\n\n# note\nbad = 4x\nn = 43\n", "n.ini", err, sizeof err);
    assert_non_null(ini);
    assert_int_equal(ts_ini_line(ini, "s", "bad"), 5);
    assert_int_equal(ts_ini_line(ini, "s", "n"), 6); //  the later assignment wins
    assert_int_equal(ts_ini_line(ini, "s", "absent"), 0);
    assert_int_equal(ts_ini_set(ini, "s", "bad", "4"), 0);
    assert_int_equal(ts_ini_line(ini, "s", "bad"), 0);
    ts_ini_destroy(&ini);
}

static int s_count_entries(const char *section, const char *key, const char *value, void *arg)
{
    (void)section;
    (void)key;
    (void)value;
    (*(int *)arg)++;
    return 0;
}

static void test_ini_each_visits_every_entry(void **state)
{
    (void)state;
    char err[64];
    ts_ini_t *ini = ts_ini_parse("a=1\n[x]\nb=2\nc=3\n", "e.ini", err, sizeof err);
    int count = 0;
    assert_int_equal(ts_ini_each(ini, s_count_entries, &count), 0);
    assert_int_equal(count, 3);
    ts_ini_destroy(&ini);
}

static void s_write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
}

static void test_secret_file_must_be_private(void **state)
{
    (void)state;
    char dir[] = "/tmp/ts_secret_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], err[256];
    snprintf(path, sizeof path, "%s/pw", dir);

    s_write_file(path, "hunter2\n", 0600);
    char *secret = ts_secret_read(path, err, sizeof err);
    assert_non_null(secret);
    assert_string_equal(secret, "hunter2");
    ts_secret_free(&secret);
    assert_null(secret);

    s_write_file(path, "hunter2\n", 0644);
    assert_null(ts_secret_read(path, err, sizeof err));
    assert_non_null(strstr(err, "readable by others (mode 644)"));
    assert_null(strstr(err, "hunter2"));

    s_write_file(path, "\n", 0600);
    assert_null(ts_secret_read(path, err, sizeof err));
    assert_non_null(strstr(err, "is empty"));

    unlink(path);
    assert_null(ts_secret_read(path, err, sizeof err));
    assert_non_null(strstr(err, "cannot read secret file"));
    rmdir(dir);
}

static void test_secret_from_environment(void **state)
{
    (void)state;
    char err[256];
    setenv("TS_TEST_SECRET", "s3cret", 1);
    char *secret = ts_secret_read("env:TS_TEST_SECRET", err, sizeof err);
    assert_non_null(secret);
    assert_string_equal(secret, "s3cret");
    ts_secret_free(&secret);
    unsetenv("TS_TEST_SECRET");
    assert_null(ts_secret_read("env:TS_TEST_SECRET", err, sizeof err));
    assert_string_equal(err, "environment variable TS_TEST_SECRET is not set or empty");
    assert_null(ts_secret_read("", err, sizeof err));
}

static void test_private_write_is_atomic_and_0600(void **state)
{
    (void)state;
    char dir[] = "/tmp/ts_write_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], err[256];
    snprintf(path, sizeof path, "%s/key", dir);
    assert_int_equal(ts_file_write_private(path, "abc", 3, err, sizeof err), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, 3);
    char *back = ts_secret_read(path, err, sizeof err);
    assert_string_equal(back, "abc");
    ts_secret_free(&back);
    unlink(path);
    snprintf(path, sizeof path, "%s/missing/key", dir);
    assert_int_equal(ts_file_write_private(path, "abc", 3, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot create"));
    rmdir(dir);
}

static void test_log_quote_escapes(void **state)
{
    (void)state;
    char buf[64];
    assert_string_equal(ts_log_quote(buf, sizeof buf, "a \"b\"\\\n"), "\"a \\\"b\\\"\\\\\\x0a\"");
    assert_string_equal(ts_log_quote(buf, 6, "abcdef"), "\"abc\"");
    assert_string_equal(ts_log_quote(buf, sizeof buf, NULL), "\"\"");
}

static void test_log_level_parse(void **state)
{
    (void)state;
    ts_log_level_t level;
    assert_int_equal(ts_log_level_parse("DEBUG", &level), 0);
    assert_int_equal(level, TS_LOG_DEBUG);
    assert_int_equal(ts_log_level_parse("warning", &level), 0);
    assert_int_equal(level, TS_LOG_WARN);
    assert_int_equal(ts_log_level_parse("loud", &level), -1);
}

//  Runs fn with stderr redirected to a pipe-backed temp file; returns what was written.
static char *s_capture_stderr(void (*fn)(void))
{
    fflush(stderr);
    int saved = dup(2);
    FILE *tmp = tmpfile();
    dup2(fileno(tmp), 2);
    fn();
    dup2(saved, 2);
    close(saved);
    long size = ftell(tmp) >= 0 ? lseek(fileno(tmp), 0, SEEK_END) : 0;
    char *text = calloc(1, (size_t)size + 1);
    lseek(fileno(tmp), 0, SEEK_SET);
    ssize_t got = read(fileno(tmp), text, (size_t)size);
    assert_int_equal(got, size);
    fclose(tmp);
    return text;
}

static void s_log_burst(void)
{
    ts_log_limiter_t limiter = {.per_second = 3};
    for (int i = 0; i < 10; i++)
        ts_log_limited(&limiter, TS_LOG_WARN, "bad frame", "peer=%d", i);
    ts_log(TS_LOG_DEBUG, "hidden", NULL);
    ts_log(TS_LOG_INFO, "shown line", "k=%s", "v");
}

static void test_log_format_and_rate_limit(void **state)
{
    (void)state;
    ts_log_set_level(TS_LOG_INFO);
    char *out = s_capture_stderr(s_log_burst);
    int lines = 0;
    for (char *p = out; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 4);
    assert_non_null(strstr(out, "level=warn msg=\"bad frame\" peer=0\n"));
    assert_non_null(strstr(out, "peer=2\n"));
    assert_null(strstr(out, "peer=3"));
    assert_null(strstr(out, "hidden"));
    assert_non_null(strstr(out, "level=info msg=\"shown line\" k=v\n"));
    assert_true(strncmp(out, "ts=", 3) == 0);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ini_parse_sections_and_overrides),
        cmocka_unit_test(test_ini_errors_name_file_and_line),
        cmocka_unit_test(test_ini_remembers_lines),
        cmocka_unit_test(test_ini_each_visits_every_entry),
        cmocka_unit_test(test_secret_file_must_be_private),
        cmocka_unit_test(test_secret_from_environment),
        cmocka_unit_test(test_private_write_is_atomic_and_0600),
        cmocka_unit_test(test_log_quote_escapes),
        cmocka_unit_test(test_log_level_parse),
        cmocka_unit_test(test_log_format_and_rate_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
