/*  broker_keys.c: load or make the broker's CURVE key pair (broker_keys.h). */
#include "broker_keys.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "ts_ini.h"
#include "ts_secret.h"

static void s_wipe(void *data, size_t size)
{
    volatile unsigned char *p = data;
    while (size--)
        *p++ = 0;
}

void broker_keys_wipe(broker_keys_t *keys)
{
    s_wipe(keys->secret_z85, sizeof keys->secret_z85);
}

static bool s_valid_z85_key(const char *text)
{
    uint8_t raw[32];
    return text && strlen(text) == 40 && zmq_z85_decode(raw, text) != NULL;
}

//  Parses the key file's text into keys. Returns 0 or -1.
static int s_parse(broker_keys_t *keys, const char *text, const char *path, char *err,
                   size_t errlen)
{
    char perr[256];
    ts_ini_t *ini = ts_ini_parse(text, path, perr, sizeof perr);
    if (!ini) {
        snprintf(err, errlen, "cannot read key file %s: %s", path, perr);
        return -1;
    }
    const char *pub = ts_ini_get(ini, "", "public");
    const char *sec = ts_ini_get(ini, "", "secret");
    int result = 0;
    if (!s_valid_z85_key(pub) || !s_valid_z85_key(sec)) {
        snprintf(err, errlen,
                 "key file %s is damaged: it needs 'public = Z85' and 'secret = Z85' (40 "
                 "characters each); move it away to make a new pair",
                 path);
        result = -1;
    } else {
        snprintf(keys->public_z85, sizeof keys->public_z85, "%s", pub);
        snprintf(keys->secret_z85, sizeof keys->secret_z85, "%s", sec);
    }
    ts_ini_destroy(&ini);
    return result;
}

static int s_make(broker_keys_t *keys, const char *state_dir, const char *path, char *err,
                  size_t errlen)
{
    if (mkdir(state_dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create state directory %s: %s", state_dir, strerror(errno));
        return -1;
    }
    if (zmq_curve_keypair(keys->public_z85, keys->secret_z85) != 0) {
        snprintf(err, errlen, "cannot make a CURVE key pair: %s (is libzmq built with CURVE?)",
                 zmq_strerror(zmq_errno()));
        return -1;
    }
    char text[128];
    int n = snprintf(text, sizeof text, "public = %s\nsecret = %s\n", keys->public_z85,
                     keys->secret_z85);
    int result = ts_file_write_private(path, text, (size_t)n, err, errlen);
    s_wipe(text, sizeof text);
    return result;
}

int broker_keys_load(broker_keys_t *keys, const char *state_dir, bool create, bool *created,
                     char *err, size_t errlen)
{
    memset(keys, 0, sizeof *keys);
    if (created)
        *created = false;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", state_dir, BROKER_KEY_FILE);
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno != ENOENT || !create) {
            snprintf(err, errlen, "cannot read key file %s: %s", path, strerror(errno));
            return -1;
        }
        if (s_make(keys, state_dir, path, err, errlen) != 0)
            return -1;
        if (created)
            *created = true;
        return 0;
    }
    char *text = ts_secret_read(path, err, errlen);
    if (!text)
        return -1;
    int result = s_parse(keys, text, path, err, errlen);
    ts_secret_free(&text);
    return result;
}
