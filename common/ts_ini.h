/*  ts_ini.h: the text of the daemons' configuration files.

    Format: "[section]" headers, "key = value" lines, "#" or ";" comments on
    their own line, blank lines. Keys outside any section belong to section
    "". A value may be wrapped in double quotes to keep leading or trailing
    spaces. Later assignments replace earlier ones. Each entry remembers the
    line it came from, so that a check made later (ts_config.h) can name it.
    This module knows nothing of which keys exist or what their values mean:
    ts_config.h does.
*/
#ifndef TS_INI_H
#define TS_INI_H

#include <stddef.h>

typedef struct ts_ini_t ts_ini_t;

//  An empty configuration (for flags only). NULL only when out of memory.
ts_ini_t *ts_ini_new(void);

//  Loads path. Returns an ini owned by the caller, or NULL with "PATH:LINE:
//  reason" (or the OS error, naming the file) in err.
ts_ini_t *ts_ini_load(const char *path, char *err, size_t errlen);

//  Parses text already in memory; name stands for the file in error messages
//  and in ts_ini_source. Returns as ts_ini_load.
ts_ini_t *ts_ini_parse(const char *text, const char *name, char *err, size_t errlen);

//  Frees *self_p and sets it to NULL; accepts NULL or a pointer to NULL.
void ts_ini_destroy(ts_ini_t **self_p);

//  The value of section/key, or NULL. The string stays owned by the ini and
//  valid until the entry is set again or the ini destroyed.
const char *ts_ini_get(const ts_ini_t *self, const char *section, const char *key);

//  Like ts_ini_get, with a default for an absent key.
const char *ts_ini_get_or(const ts_ini_t *self, const char *section, const char *key,
                          const char *fallback);

//  The line of the file section/key was last set on; 0 when it was set by
//  ts_ini_set or is absent.
int ts_ini_line(const ts_ini_t *self, const char *section, const char *key);

//  Sets (or replaces) section/key. Returns 0, or -1 when out of memory.
int ts_ini_set(ts_ini_t *self, const char *section, const char *key, const char *value);

//  Calls fn for every entry in file order; stops early when fn returns
//  non-zero and returns that value, else 0.
int ts_ini_each(const ts_ini_t *self,
                int (*fn)(const char *section, const char *key, const char *value, void *arg),
                void *arg);

//  The file the configuration came from ("" for ts_ini_new).
const char *ts_ini_source(const ts_ini_t *self);

#endif
