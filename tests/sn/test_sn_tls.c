/*  test_sn_tls.c: TLS settings of the ServiceNow client against `openssl
    s_server` with a self-signed certificate made for the run: verification is
    on by default (an unknown issuer is refused as a configuration error, not
    retried), the configured CA bundle is trusted, and turning verification off
    works. s_server -www answers any request with an HTML status page, which the
    client reports as an outage with HTTP 200: that answer proves the TLS
    handshake and the HTTP exchange went through. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "sn_client.h"
#include "sn_testproc.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SN_OPENSSL
#define SN_OPENSSL "openssl"
#endif

static char s_dir[64];
static char s_cert[128];
static char s_url[64];
static pid_t s_server;

//  A TCP port on loopback that was free a moment ago.
static int s_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
    close(fd);
    return ntohs(addr.sin_port);
}

static int s_accepts(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0;
    close(fd);
    return ok;
}

static int s_group_setup(void **state)
{
    (void)state;
    sn_testproc_no_proxy();
    snprintf(s_dir, sizeof s_dir, "/tmp/sn-tls-XXXXXX");
    assert_non_null(mkdtemp(s_dir));
    char key[128], log[128], accept[32];
    snprintf(key, sizeof key, "%s/key.pem", s_dir);
    snprintf(s_cert, sizeof s_cert, "%s/cert.pem", s_dir);
    snprintf(log, sizeof log, "%s/openssl.log", s_dir);
    const char *make_cert[] = {SN_OPENSSL,
                               "req",
                               "-x509",
                               "-newkey",
                               "ec",
                               "-pkeyopt",
                               "ec_paramgen_curve:P-256",
                               "-nodes",
                               "-keyout",
                               key,
                               "-out",
                               s_cert,
                               "-days",
                               "1",
                               "-subj",
                               "/CN=localhost",
                               "-addext",
                               "subjectAltName=DNS:localhost,IP:127.0.0.1",
                               NULL};
    sn_testproc_run(make_cert, log);
    int port = s_free_port();
    snprintf(accept, sizeof accept, "127.0.0.1:%d", port);
    const char *serve[] = {SN_OPENSSL, "s_server", "-accept", accept,   "-cert", s_cert,
                           "-key",     key,        "-www",    "-quiet", NULL};
    s_server = sn_testproc_spawn(serve, log);
    for (int waited = 0; waited < 10000 && !s_accepts(port); waited += 20) {
        if (!sn_testproc_alive(s_server))
            fail_msg("openssl s_server exited, see %s", log);
        sn_testproc_sleep_ms(20);
    }
    snprintf(s_url, sizeof s_url, "https://127.0.0.1:%d", port);
    return 0;
}

static int s_group_teardown(void **state)
{
    (void)state;
    sn_testproc_stop(s_server);
    const char *names[] = {"key.pem", "cert.pem", "openssl.log"};
    for (size_t i = 0; i < 3; i++) {
        char path[128];
        snprintf(path, sizeof path, "%s/%s", s_dir, names[i]);
        unlink(path);
    }
    rmdir(s_dir);
    return 0;
}

static sn_config_t s_config(void)
{
    sn_config_t cfg = {.instance_url = s_url,
                       .user = "sync",
                       .password = "Pw-123456",
                       .retry = {.max_attempts = 3,
                                 .base_backoff_ms = 1,
                                 .max_backoff_ms = 2,
                                 .max_total_wait_ms = 100}};
    return cfg;
}

//  One list request with cfg; returns its code and fills err and requests.
static sn_err_code_t s_list(const sn_config_t *cfg, sn_error_t *err, unsigned long *requests)
{
    sn_client_t *client = sn_client_new(cfg, err);
    assert_non_null(client);
    json_t *rows = NULL;
    sn_list_params_t params = {0};
    sn_err_code_t code = sn_table_list(client, "incident", &params, &rows, NULL, err);
    json_decref(rows);
    *requests = sn_client_stats(client).requests;
    sn_client_destroy(&client);
    return code;
}

static void test_unknown_issuer_is_refused_by_default(void **state)
{
    (void)state;
    sn_config_t cfg = s_config();
    sn_error_t err;
    unsigned long requests;
    assert_int_equal(s_list(&cfg, &err, &requests), SN_E_CONFIG);
    assert_non_null(strstr(err.message, "TLS verification"));
    assert_int_equal(err.http_status, 0);
    //  A certificate problem does not go away by retrying
    assert_int_equal(requests, 1);
}

static void test_configured_ca_bundle_is_trusted(void **state)
{
    (void)state;
    sn_config_t cfg = s_config();
    cfg.ca_bundle = s_cert;
    sn_error_t err;
    unsigned long requests;
    assert_int_equal(s_list(&cfg, &err, &requests), SN_E_UNAVAILABLE);
    assert_int_equal(err.http_status, 200);
    assert_non_null(strstr(err.message, "HTML"));
}

static void test_verification_can_be_turned_off(void **state)
{
    (void)state;
    sn_config_t cfg = s_config();
    cfg.tls_skip_verify = true;
    sn_error_t err;
    unsigned long requests;
    assert_int_equal(s_list(&cfg, &err, &requests), SN_E_UNAVAILABLE);
    assert_int_equal(err.http_status, 200);
}

static void test_missing_ca_bundle_is_a_config_error(void **state)
{
    (void)state;
    sn_config_t cfg = s_config();
    cfg.ca_bundle = "/nonexistent/ca.pem";
    sn_error_t err;
    unsigned long requests;
    assert_int_equal(s_list(&cfg, &err, &requests), SN_E_CONFIG);
    assert_int_equal(requests, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unknown_issuer_is_refused_by_default),
        cmocka_unit_test(test_configured_ca_bundle_is_trusted),
        cmocka_unit_test(test_verification_can_be_turned_off),
        cmocka_unit_test(test_missing_ca_bundle_is_a_config_error),
    };
    return cmocka_run_group_tests(tests, s_group_setup, s_group_teardown);
}
