/*  ts_secret.c: reading secrets from private files or the environment, and
    writing private files atomically. See ts_secret.h.
*/
#include "ts_secret.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TS_SECRET_MAX 65536

//  Overwrites memory in a way the compiler may not drop.
static void s_wipe(void *data, size_t size)
{
    volatile unsigned char *p = data;
    while (size--)
        *p++ = 0;
}

void ts_secret_free(char **secret_p)
{
    if (!secret_p || !*secret_p)
        return;
    s_wipe(*secret_p, strlen(*secret_p));
    free(*secret_p);
    *secret_p = NULL;
}

static char *s_strip_newline(char *text)
{
    size_t n = strlen(text);
    if (n && text[n - 1] == '\n')
        text[--n] = '\0';
    if (n && text[n - 1] == '\r')
        text[--n] = '\0';
    return text;
}

static char *s_read_env(const char *name, char *err, size_t errlen)
{
    const char *value = getenv(name);
    if (!value || !*value) {
        snprintf(err, errlen, "environment variable %s is not set or empty", name);
        return NULL;
    }
    char *copy = strdup(value);
    if (!copy)
        snprintf(err, errlen, "out of memory reading %s", name);
    return copy ? s_strip_newline(copy) : NULL;
}

static char *s_read_file(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        snprintf(err, errlen, "cannot read secret file %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "secret file %s is not a regular file", path);
        close(fd);
        return NULL;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        snprintf(err, errlen, "secret file %s is readable by others (mode %03o): run chmod 600 %s",
                 path, (unsigned)(st.st_mode & 0777), path);
        close(fd);
        return NULL;
    }
    if (st.st_size > TS_SECRET_MAX) {
        snprintf(err, errlen, "secret file %s is too large (%lld bytes)", path,
                 (long long)st.st_size);
        close(fd);
        return NULL;
    }
    char *text = calloc(1, (size_t)st.st_size + 1);
    ssize_t got = text ? read(fd, text, (size_t)st.st_size) : -1;
    close(fd);
    if (got != st.st_size) {
        snprintf(err, errlen, "cannot read secret file %s", path);
        if (text)
            s_wipe(text, (size_t)st.st_size);
        free(text);
        return NULL;
    }
    s_strip_newline(text);
    if (!*text) {
        snprintf(err, errlen, "secret file %s is empty", path);
        free(text);
        return NULL;
    }
    return text;
}

char *ts_secret_read(const char *spec, char *err, size_t errlen)
{
    if (!spec || !*spec) {
        snprintf(err, errlen, "no secret configured");
        return NULL;
    }
    if (strncmp(spec, "env:", 4) == 0)
        return s_read_env(spec + 4, err, errlen);
    return s_read_file(spec, err, errlen);
}

int ts_file_write_private(const char *path, const void *data, size_t size, char *err, size_t errlen)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) {
        snprintf(err, errlen, "path too long: %s", path);
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    const char *p = data;
    size_t left = size;
    while (left) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        p += n;
        left -= (size_t)n;
    }
    if (left || fsync(fd) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        int rc = fsync(dfd);
        close(dfd);
        if (rc != 0) {
            snprintf(err, errlen, "cannot sync directory of %s: %s", path, strerror(errno));
            return -1;
        }
    }
    return 0;
}

void ts_hex_encode(const uint8_t *data, size_t size, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < size; i++) {
        out[2 * i] = digits[data[i] >> 4];
        out[2 * i + 1] = digits[data[i] & 15];
    }
    out[2 * size] = 0;
}

int ts_hex_decode(const char *text, size_t len, uint8_t *out, size_t size)
{
    if (len != 2 * size)
        return -1;
    for (size_t i = 0; i < 2 * size; i++) {
        char c = text[i];
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0)
            return -1;
        out[i / 2] = (uint8_t)(i % 2 ? (out[i / 2] | v) : v << 4);
    }
    return 0;
}
