/*  ts_ini.c: a small INI reader. Entries are kept in file order in a growable
    array; configurations hold tens of keys, so lookups are linear.
*/
#include "ts_ini.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *section; //  owned; "" outside any section
    char *key;     //  owned
    char *value;   //  owned
} s_entry_t;

struct ts_ini_t {
    s_entry_t *entries; //  in file order
    size_t count;       //  entries used
    size_t capacity;    //  entries allocated
    char *source;       //  owned; file name or ""
};

ts_ini_t *ts_ini_new(void)
{
    ts_ini_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->source = strdup("");
    if (!self->source) {
        free(self);
        return NULL;
    }
    return self;
}

void ts_ini_destroy(ts_ini_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ts_ini_t *self = *self_p;
    for (size_t i = 0; i < self->count; i++) {
        free(self->entries[i].section);
        free(self->entries[i].key);
        free(self->entries[i].value);
    }
    free(self->entries);
    free(self->source);
    free(self);
    *self_p = NULL;
}

static s_entry_t *s_find(const ts_ini_t *self, const char *section, const char *key)
{
    for (size_t i = 0; i < self->count; i++) {
        s_entry_t *e = &self->entries[i];
        if (strcmp(e->section, section ? section : "") == 0 && strcmp(e->key, key) == 0)
            return e;
    }
    return NULL;
}

int ts_ini_set(ts_ini_t *self, const char *section, const char *key, const char *value)
{
    s_entry_t *found = s_find(self, section, key);
    if (found) {
        char *copy = strdup(value);
        if (!copy)
            return -1;
        free(found->value);
        found->value = copy;
        return 0;
    }
    if (self->count == self->capacity) {
        size_t capacity = self->capacity ? self->capacity * 2 : 16;
        s_entry_t *grown = realloc(self->entries, capacity * sizeof *grown);
        if (!grown)
            return -1;
        self->entries = grown;
        self->capacity = capacity;
    }
    s_entry_t e = {strdup(section ? section : ""), strdup(key), strdup(value)};
    if (!e.section || !e.key || !e.value) {
        free(e.section);
        free(e.key);
        free(e.value);
        return -1;
    }
    self->entries[self->count++] = e;
    return 0;
}

const char *ts_ini_get(const ts_ini_t *self, const char *section, const char *key)
{
    const s_entry_t *e = self ? s_find(self, section, key) : NULL;
    return e ? e->value : NULL;
}

const char *ts_ini_get_or(const ts_ini_t *self, const char *section, const char *key,
                          const char *fallback)
{
    const char *value = ts_ini_get(self, section, key);
    return value ? value : fallback;
}

int ts_ini_get_long(const ts_ini_t *self, const char *section, const char *key, long fallback,
                    long min, long max, long *out, char *err, size_t errlen)
{
    const char *text = ts_ini_get(self, section, key);
    if (!text) {
        *out = fallback;
        return 0;
    }
    char *end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    const char *dot = section && *section ? "." : "";
    if (errno || end == text || *end != '\0') {
        snprintf(err, errlen, "%s%s%s: '%s' is not a whole number", section ? section : "", dot,
                 key, text);
        return -1;
    }
    if (value < min || value > max) {
        snprintf(err, errlen, "%s%s%s: %ld is out of range [%ld, %ld]", section ? section : "", dot,
                 key, value, min, max);
        return -1;
    }
    *out = value;
    return 0;
}

int ts_ini_each(const ts_ini_t *self,
                int (*fn)(const char *section, const char *key, const char *value, void *arg),
                void *arg)
{
    for (size_t i = 0; i < self->count; i++) {
        int rc = fn(self->entries[i].section, self->entries[i].key, self->entries[i].value, arg);
        if (rc)
            return rc;
    }
    return 0;
}

const char *ts_ini_source(const ts_ini_t *self)
{
    return self->source;
}

//  Trims spaces at both ends in place; returns the new start.
static char *s_trim(char *text)
{
    while (isspace((unsigned char)*text))
        text++;
    size_t n = strlen(text);
    while (n && isspace((unsigned char)text[n - 1]))
        text[--n] = '\0';
    return text;
}

//  Parses one line into self; returns NULL or a static reason.
static const char *s_parse_line(ts_ini_t *self, char *line, char **section)
{
    char *text = s_trim(line);
    if (*text == '\0' || *text == '#' || *text == ';')
        return NULL;
    if (*text == '[') {
        char *close = strchr(text, ']');
        if (!close || close[1] != '\0')
            return "section header must look like [name]";
        *close = '\0';
        char *name = s_trim(text + 1);
        if (!*name)
            return "empty section name";
        char *copy = strdup(name);
        if (!copy)
            return "out of memory";
        free(*section);
        *section = copy;
        return NULL;
    }
    char *eq = strchr(text, '=');
    if (!eq)
        return "expected 'key = value'";
    *eq = '\0';
    char *key = s_trim(text);
    char *value = s_trim(eq + 1);
    if (!*key)
        return "empty key";
    size_t n = strlen(value);
    if (n >= 2 && value[0] == '"' && value[n - 1] == '"') {
        value[n - 1] = '\0';
        value++;
    }
    if (ts_ini_set(self, *section, key, value) != 0)
        return "out of memory";
    return NULL;
}

ts_ini_t *ts_ini_parse(const char *text, const char *name, char *err, size_t errlen)
{
    ts_ini_t *self = ts_ini_new();
    char *copy = strdup(text);
    char *section = strdup("");
    if (!self || !copy || !section || !(self->source = (free(self->source), strdup(name)))) {
        snprintf(err, errlen, "%s: out of memory", name);
        goto fail;
    }
    int lineno = 0;
    char *save = NULL;
    for (char *p = copy; p; p = save) {
        save = strchr(p, '\n');
        if (save)
            *save++ = '\0';
        lineno++;
        const char *reason = s_parse_line(self, p, &section);
        if (reason) {
            snprintf(err, errlen, "%s:%d: %s", name, lineno, reason);
            goto fail;
        }
    }
    free(copy);
    free(section);
    return self;
fail:
    free(copy);
    free(section);
    ts_ini_destroy(&self);
    return NULL;
}

ts_ini_t *ts_ini_load(const char *path, char *err, size_t errlen)
{
    FILE *file = fopen(path, "r");
    if (!file) {
        snprintf(err, errlen, "cannot open config file %s: %s", path, strerror(errno));
        return NULL;
    }
    char *text = NULL;
    size_t size = 0;
    FILE *mem = open_memstream(&text, &size);
    char chunk[4096];
    size_t n;
    while (mem && (n = fread(chunk, 1, sizeof chunk, file)) > 0)
        fwrite(chunk, 1, n, mem);
    int read_error = ferror(file);
    fclose(file);
    if (!mem || fclose(mem) != 0 || read_error) {
        free(text);
        snprintf(err, errlen, "cannot read config file %s", path);
        return NULL;
    }
    ts_ini_t *self = ts_ini_parse(text, path, err, errlen);
    free(text);
    return self;
}
