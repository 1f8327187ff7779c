/*  ts_ini.h: the daemons' configuration files.

    Format: "[section]" headers, "key = value" lines, "#" or ";" comments on their
    own line, blank lines. Keys outside any section belong to section "". A value
    may be wrapped in double quotes to keep leading or trailing spaces. Later
    assignments replace earlier ones. Command-line flags override file values
    with ts_ini_set(), so one lookup serves both.
*/
#ifndef TS_INI_H
#define TS_INI_H

#include <stddef.h>

typedef struct ts_ini_t ts_ini_t;

//  An empty configuration (for flags only). Never NULL unless out of memory.
ts_ini_t *ts_ini_new(void);

//  Loads path. Returns NULL on failure with "PATH:LINE: reason" (or the OS error)
//  in err. The caller owns the result.
ts_ini_t *ts_ini_load(const char *path, char *err, size_t errlen);

//  Parses text already in memory; name is used in error messages.
ts_ini_t *ts_ini_parse(const char *text, const char *name, char *err, size_t errlen);

//  Frees *self_p and sets it to NULL; accepts NULL.
void ts_ini_destroy(ts_ini_t **self_p);

//  The value of section/key, or NULL. The string stays owned by the ini.
const char *ts_ini_get(const ts_ini_t *self, const char *section, const char *key);

//  Like ts_ini_get, with a default for an absent key.
const char *ts_ini_get_or(const ts_ini_t *self, const char *section, const char *key,
                          const char *fallback);

//  Parses section/key as an integer in [min, max]; absent -> fallback.
//  Returns 0, or -1 with "section.key: reason" in err.
int ts_ini_get_long(const ts_ini_t *self, const char *section, const char *key, long fallback,
                    long min, long max, long *out, char *err, size_t errlen);

//  Sets (or replaces) section/key. Returns 0, or -1 when out of memory.
int ts_ini_set(ts_ini_t *self, const char *section, const char *key, const char *value);

//  Calls fn for every entry in file order; stops early when fn returns non-zero
//  and returns that value. Used to refuse unknown keys.
int ts_ini_each(const ts_ini_t *self,
                int (*fn)(const char *section, const char *key, const char *value, void *arg),
                void *arg);

//  The file the configuration came from ("" for ts_ini_new).
const char *ts_ini_source(const ts_ini_t *self);

#endif
