/*  snemu_proc.c: the emulator as a child process of a cmocka test.
    See snemu_proc.h for the contract. */

#include "snemu_proc.h"
#include "sn_testproc.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef SNEMU_PY
#error "SNEMU_PY (path of tests/snemu/snemu.py) must be defined by CMake"
#endif
#ifndef SNEMU_PYTHON
#define SNEMU_PYTHON "python3"
#endif

struct snemu_proc_t {
    pid_t pid;          //  emulator process
    char port_file[64]; //  where it writes its port
    char log_file[64];  //  its stderr
    char url[64];       //  its base URL
    CURL *curl;         //  handle for control calls
};

//  Reads the port file; 0 while it does not exist yet.
static int s_read_port(const char *path)
{
    FILE *file = fopen(path, "r");
    if (!file)
        return 0;
    int port = 0;
    if (fscanf(file, "%d", &port) != 1)
        port = 0;
    fclose(file);
    return port;
}

snemu_proc_t *snemu_proc_start(const char *const *extra_args)
{
    sn_testproc_no_proxy();
    snemu_proc_t *self = calloc(1, sizeof *self);
    assert_non_null(self);
    snprintf(self->port_file, sizeof self->port_file, "/tmp/snemu-sn-%d.port", (int)getpid());
    snprintf(self->log_file, sizeof self->log_file, "/tmp/snemu-sn-%d.log", (int)getpid());
    unlink(self->port_file);
    unlink(self->log_file);
    const char *argv[64] = {SNEMU_PYTHON, SNEMU_PY, "--port", "0", "--port-file", self->port_file};
    size_t argc = 6;
    for (size_t i = 0; extra_args && extra_args[i]; i++) {
        assert_true(argc < 62);
        argv[argc++] = extra_args[i];
    }
    argv[argc] = NULL;
    //  Its stderr (start line, tracebacks of requests the client abandoned)
    //  goes to a file, named when it fails to start
    self->pid = sn_testproc_spawn(argv, self->log_file);
    int port = 0;
    for (int waited = 0; waited < 15000 && !port; waited += 20) {
        sn_testproc_sleep_ms(20);
        port = s_read_port(self->port_file);
        if (!port && !sn_testproc_alive(self->pid))
            fail_msg("the emulator exited before listening, see %s", self->log_file);
    }
    if (!port)
        fail_msg("the emulator did not write %s within 15 s, see %s", self->port_file,
                 self->log_file);
    snprintf(self->url, sizeof self->url, "http://127.0.0.1:%d", port);
    self->curl = curl_easy_init();
    assert_non_null(self->curl);
    return self;
}

void snemu_proc_stop(snemu_proc_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    snemu_proc_t *self = *self_p;
    sn_testproc_stop(self->pid);
    unlink(self->port_file);
    unlink(self->log_file);
    if (self->curl)
        curl_easy_cleanup(self->curl);
    free(self);
    *self_p = NULL;
}

const char *snemu_proc_url(const snemu_proc_t *self)
{
    return self->url;
}

static size_t s_on_body(char *data, size_t size, size_t count, void *arg)
{
    FILE *sink = arg;
    return fwrite(data, size, count, sink);
}

json_t *snemu_proc_control(snemu_proc_t *self, const char *method, const char *path,
                           const char *body)
{
    char url[256];
    snprintf(url, sizeof url, "%s%s", self->url, path);
    char *text = NULL;
    size_t text_len = 0;
    FILE *sink = open_memstream(&text, &text_len);
    assert_non_null(sink);
    CURL *curl = self->curl;
    curl_easy_reset(curl);
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 20L);
    if (body)
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, s_on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, sink);
    CURLcode rc = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(headers);
    fclose(sink);
    if (rc != CURLE_OK || status != 200)
        fail_msg("control %s %s failed: curl %d, HTTP %ld: %s", method, path, (int)rc, status,
                 text ? text : "");
    json_t *doc = json_loads(text, 0, NULL);
    free(text);
    assert_non_null(doc);
    return doc;
}

void snemu_proc_faults(snemu_proc_t *self, const char *faults)
{
    json_decref(snemu_proc_control(self, "POST", "/__snemu/faults", faults));
}

void snemu_proc_reset_all(snemu_proc_t *self)
{
    json_decref(snemu_proc_control(self, "POST", "/__snemu/reset", "{}"));
    json_decref(snemu_proc_control(self, "POST", "/__snemu/clock", "{\"offset_seconds\":0}"));
    json_decref(snemu_proc_control(self, "DELETE", "/__snemu/data", NULL));
    json_decref(snemu_proc_control(self, "DELETE", "/__snemu/log", NULL));
}

json_t *snemu_proc_log(snemu_proc_t *self)
{
    json_t *doc = snemu_proc_control(self, "GET", "/__snemu/log", NULL);
    json_t *requests = json_incref(json_object_get(doc, "requests"));
    json_decref(doc);
    assert_true(json_is_array(requests));
    return requests;
}

size_t snemu_proc_count(snemu_proc_t *self, const char *path_prefix, long status)
{
    json_t *requests = snemu_proc_log(self);
    size_t count = 0, index;
    json_t *entry;
    json_array_foreach(requests, index, entry)
    {
        const char *path = json_string_value(json_object_get(entry, "path"));
        long entry_status = (long)json_integer_value(json_object_get(entry, "status"));
        if (path && strncmp(path, path_prefix, strlen(path_prefix)) == 0 &&
            (status == 0 || status == entry_status))
            count++;
    }
    json_decref(requests);
    return count;
}
