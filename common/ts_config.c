/*  ts_config.c: the configuration engine (see ts_config.h).

    How the parts fit: s_check_value is the one place a value is judged
    against its key (kind, range, choices, the key's own check); the file
    (ts_config_load) and the command line (ts_config_set) both go through it
    when a value arrives, and only differ in how they name the value in an
    error. ts_config_apply then only converts text already checked, so the
    order defaults < file < command line costs nothing but three lookups.
*/
#include "ts_config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "ts_ini.h"

struct ts_config_t {
    const ts_config_key_t *keys; //  The table (not owned)
    ts_ini_t *file;              //  Values of the file, NULL: none read
    ts_ini_t *flags;             //  Values of the command line
    char *path;                  //  File read, NULL: none
};

//  True when a and b are the same section (NULL is the options' section).
static bool s_same_section(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

static const ts_config_key_t *s_find(const ts_config_key_t *keys, const char *section,
                                     const char *key)
{
    for (const ts_config_key_t *k = keys; k->key; k++) {
        if (s_same_section(k->section, section) && strcmp(k->key, key) == 0)
            return k;
    }
    return NULL;
}

//  Whether a number kind: the ones ts_config_parse_number reads.
static bool s_numeric(ts_config_kind_t kind)
{
    return kind == TS_CONFIG_INT || kind == TS_CONFIG_DURATION_MS || kind == TS_CONFIG_BYTES;
}

//  The multiplier of a unit after a number of kind, or 0 when it is none of
//  that kind's units.
static long long s_unit(ts_config_kind_t kind, const char *unit)
{
    static const struct {
        ts_config_kind_t kind;
        const char *name;
        long long factor;
    } units[] = {
        {TS_CONFIG_DURATION_MS, "ms", 1},       {TS_CONFIG_DURATION_MS, "s", 1000},
        {TS_CONFIG_DURATION_MS, "min", 60000},  {TS_CONFIG_DURATION_MS, "h", 3600000},
        {TS_CONFIG_BYTES, "KiB", 1024},         {TS_CONFIG_BYTES, "MiB", 1024 * 1024},
        {TS_CONFIG_BYTES, "GiB", 1024LL << 20}, {TS_CONFIG_BYTES, "K", 1024},
        {TS_CONFIG_BYTES, "M", 1024 * 1024},    {TS_CONFIG_BYTES, "G", 1024LL << 20},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (units[i].kind == kind && strcmp(units[i].name, unit) == 0)
            return units[i].factor;
    }
    return 0;
}

//  What a number of kind looks like, for an error.
static const char *s_number_form(ts_config_kind_t kind)
{
    if (kind == TS_CONFIG_DURATION_MS)
        return "a duration (whole milliseconds, or with a unit: ms, s, min, h)";
    if (kind == TS_CONFIG_BYTES)
        return "a size (whole bytes, or with a unit: KiB, MiB, GiB)";
    return "a whole number";
}

int ts_config_parse_number(ts_config_kind_t kind, const char *text, long min, long max, long *out,
                           char *err, size_t errlen)
{
    //  strtoll skips leading blanks and accepts an empty string as 0: both
    //  are refused here, as is anything after the digits but a unit.
    char *end = NULL;
    errno = 0;
    long long value = *text && !isspace((unsigned char)*text) ? strtoll(text, &end, 10) : 0;
    if (!end || end == text) {
        snprintf(err, errlen, "'%s' is not %s", text, s_number_form(kind));
        return -1;
    }
    long long factor = *end ? s_unit(kind, end) : 1;
    if (factor == 0) {
        snprintf(err, errlen, "'%s' is not %s", text, s_number_form(kind));
        return -1;
    }
    bool bounded = min != 0 || max != 0;
    const char *unit = kind == TS_CONFIG_DURATION_MS ? " ms"
                       : kind == TS_CONFIG_BYTES     ? " bytes"
                                                     : "";
    if (errno == ERANGE || value > LONG_MAX / factor || value < LONG_MIN / factor ||
        (bounded && (value * factor < min || value * factor > max))) {
        if (bounded)
            snprintf(err, errlen, "%s is out of range (%ld to %ld%s)", text, min, max, unit);
        else
            snprintf(err, errlen, "%s is too large", text);
        return -1;
    }
    *out = (long)(value * factor);
    return 0;
}

//  True when name is one of the '|'-separated choices.
static bool s_choice(const char *choices, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = choices; p && *p;) {
        size_t len = strcspn(p, "|");
        if (len == n && strncmp(p, name, n) == 0)
            return true;
        p += len + (p[len] == '|');
    }
    return false;
}

//  Judges value against key. Returns 0, or -1 with the reason in err.
static int s_check_value(const ts_config_key_t *key, const char *value, char *err, size_t errlen)
{
    long number;
    switch (key->kind) {
    case TS_CONFIG_INT:
    case TS_CONFIG_DURATION_MS:
    case TS_CONFIG_BYTES:
        if (ts_config_parse_number(key->kind, value, key->min, key->max, &number, err, errlen))
            return -1;
        break;
    case TS_CONFIG_BOOL:
        if (strcmp(value, "true") != 0 && strcmp(value, "false") != 0) {
            snprintf(err, errlen, "expected true or false, got '%s'", value);
            return -1;
        }
        break;
    case TS_CONFIG_ENUM:
        if (!s_choice(key->choices, value)) {
            char list[256];
            snprintf(list, sizeof list, "%s", key->choices);
            for (char *p = strchr(list, '|'); p; p = strchr(p, '|'))
                *p = ',';
            snprintf(err, errlen, "'%s' is not one of %s", value, list);
            return -1;
        }
        break;
    case TS_CONFIG_PATH:
        for (const char *c = value; *c; c++) {
            if ((unsigned char)*c < 0x20 || *c == 0x7f) {
                snprintf(err, errlen, "a file name cannot hold control characters");
                return -1;
            }
        }
        break;
    case TS_CONFIG_CUSTOM:
        if (key->set(NULL, value, err, errlen))
            return -1;
        break;
    case TS_CONFIG_STRING:
    case TS_CONFIG_SWITCH:
        break;
    }
    return key->check && key->kind != TS_CONFIG_SWITCH ? key->check(value, err, errlen) : 0;
}

char *ts_config_flag_name(const ts_config_key_t *key, char *buf, size_t size)
{
    snprintf(buf, size, "%s%s%s", key->section ? key->section : "", key->section ? "." : "",
             key->key);
    return buf;
}

//  Checks one entry of the table; the first problem goes to err.
static int s_check_key(const ts_config_key_t *keys, const ts_config_key_t *key, char *err,
                       size_t errlen)
{
    char name[128], reason[256];
    ts_config_flag_name(key, name, sizeof name);
    const char *problem = NULL;
    if (s_find(keys, key->section, key->key) != key)
        problem = "named twice";
    else if (key->kind == TS_CONFIG_ENUM && !key->choices)
        problem = "an enum without choices";
    else if (key->kind == TS_CONFIG_CUSTOM && (!key->set || !key->clear))
        problem = "a custom key without set and clear";
    else if (key->kind == TS_CONFIG_SWITCH && (key->section || key->fallback))
        problem = "a switch is an option without a default";
    else if (key->letter && key->section)
        problem = "only options have a short form";
    else if (key->section && !*key->section)
        problem = "an empty section";
    if (problem) {
        snprintf(err, errlen, "configuration table: %s: %s", name, problem);
        return -1;
    }
    if (key->fallback && s_check_value(key, key->fallback, reason, sizeof reason)) {
        snprintf(err, errlen, "configuration table: %s: default %s", name, reason);
        return -1;
    }
    return 0;
}

ts_config_t *ts_config_new(const ts_config_key_t *keys, char *err, size_t errlen)
{
    for (const ts_config_key_t *k = keys; k->key; k++) {
        if (s_check_key(keys, k, err, errlen))
            return NULL;
    }
    ts_config_t *self = calloc(1, sizeof *self);
    if (self)
        self->flags = ts_ini_new();
    if (!self || !self->flags) {
        ts_config_destroy(&self);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->keys = keys;
    return self;
}

void ts_config_destroy(ts_config_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ts_config_t *self = *self_p;
    ts_ini_destroy(&self->file);
    ts_ini_destroy(&self->flags);
    free(self->path);
    free(self);
    *self_p = NULL;
}

const ts_config_key_t *ts_config_keys(const ts_config_t *self)
{
    return self->keys;
}

const ts_config_key_t *ts_config_find(const ts_config_t *self, const char *section, const char *key)
{
    return s_find(self->keys, section, key);
}

const char *ts_config_path(const ts_config_t *self)
{
    return self->path;
}

//  "node, servicenow, broker": the table's sections, for an error.
static void s_sections(const ts_config_key_t *keys, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (const ts_config_key_t *k = keys; k->key; k++) {
        if (!k->section)
            continue;
        bool seen = false;
        for (const ts_config_key_t *e = keys; e < k && !seen; e++)
            seen = s_same_section(e->section, k->section);
        if (!seen && used < size)
            used += (size_t)snprintf(buf + used, size - used, "%s%s", used ? ", " : "", k->section);
    }
}

typedef struct {
    const ts_config_t *self; //  Whose table
    const ts_ini_t *ini;     //  The file
    char *err;               //  Where the problem goes
    size_t errlen;           //  Its size
} s_load_t;

//  ts_ini_each callback: one entry of the file against the table.
static int s_check_entry(const char *section, const char *key, const char *value, void *arg)
{
    s_load_t *load = arg;
    const char *path = ts_ini_source(load->ini);
    int line = ts_ini_line(load->ini, section, key);
    char sections[256], reason[512];
    s_sections(load->self->keys, sections, sizeof sections);
    const ts_config_key_t *k = *section ? s_find(load->self->keys, section, key) : NULL;
    if (!*section) {
        snprintf(load->err, load->errlen, "%s:%d: key %s is outside any section (sections: %s)",
                 path, line, key, sections);
        return -1;
    }
    if (!k) {
        bool known = false;
        for (const ts_config_key_t *e = load->self->keys; e->key && !known; e++)
            known = s_same_section(e->section, section);
        if (known)
            snprintf(load->err, load->errlen, "%s:%d: unknown key %s.%s (see --help)", path, line,
                     section, key);
        else
            snprintf(load->err, load->errlen,
                     "%s:%d: unknown section [%s] holding key %s (sections: %s)", path, line,
                     section, key, sections);
        return -1;
    }
    if (s_check_value(k, value, reason, sizeof reason)) {
        snprintf(load->err, load->errlen, "%s:%d: %s.%s: %s", path, line, section, key, reason);
        return -1;
    }
    return 0;
}

int ts_config_load(ts_config_t *self, const char *path, char *err, size_t errlen)
{
    ts_ini_t *ini = ts_ini_load(path, err, errlen);
    if (!ini)
        return -1;
    s_load_t load = {self, ini, err, errlen};
    char *copy = strdup(path);
    if (!copy) {
        snprintf(err, errlen, "%s: out of memory", path);
        ts_ini_destroy(&ini);
        return -1;
    }
    if (ts_ini_each(ini, s_check_entry, &load) != 0) {
        free(copy);
        ts_ini_destroy(&ini);
        return -1;
    }
    ts_ini_destroy(&self->file);
    free(self->path);
    self->file = ini;
    self->path = copy;
    return 0;
}

int ts_config_set(ts_config_t *self, const ts_config_key_t *key, const char *value, char *err,
                  size_t errlen)
{
    char name[128], reason[512];
    ts_config_flag_name(key, name, sizeof name);
    if (key->kind == TS_CONFIG_SWITCH)
        value = "true";
    if (!value) {
        snprintf(err, errlen, "--%s needs a value", name);
        return -1;
    }
    if (s_check_value(key, value, reason, sizeof reason)) {
        snprintf(err, errlen, "--%s: %s", name, reason);
        return -1;
    }
    if (ts_ini_set(self->flags, key->section, key->key, value)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

bool ts_config_given(const ts_config_t *self, const ts_config_key_t *key)
{
    return ts_ini_get(self->flags, key->section, key->key) != NULL;
}

//  Stores text (already checked) as key's value in target.
static int s_store(const ts_config_key_t *key, const char *text, void *target, char *err,
                   size_t errlen)
{
    char *field = (char *)target + key->offset;
    long number = 0;
    switch (key->kind) {
    case TS_CONFIG_INT:
    case TS_CONFIG_DURATION_MS:
    case TS_CONFIG_BYTES:
        if (*text &&
            ts_config_parse_number(key->kind, text, key->min, key->max, &number, err, errlen))
            return -1;
        *(long *)field = number;
        return 0;
    case TS_CONFIG_BOOL:
    case TS_CONFIG_SWITCH:
        *(bool *)field = strcmp(text, "true") == 0;
        return 0;
    case TS_CONFIG_STRING:
    case TS_CONFIG_PATH:
    case TS_CONFIG_ENUM: {
        char *copy = strdup(text);
        if (!copy) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        free(*(char **)field);
        *(char **)field = copy;
        return 0;
    }
    case TS_CONFIG_CUSTOM:
        return key->set(target, text, err, errlen);
    }
    return 0;
}

int ts_config_apply(const ts_config_t *self, void *target, char *err, size_t errlen)
{
    for (const ts_config_key_t *k = self->keys; k->key; k++) {
        const char *text = ts_ini_get(self->flags, k->section, k->key);
        if (!text && k->section)
            text = ts_ini_get(self->file, k->section, k->key);
        if (!text)
            text = k->fallback ? k->fallback : "";
        char reason[512];
        if (s_store(k, text, target, reason, sizeof reason)) {
            char name[128];
            snprintf(err, errlen, "%s: %s", ts_config_flag_name(k, name, sizeof name), reason);
            return -1;
        }
    }
    return 0;
}

void ts_config_clear(const ts_config_key_t *keys, void *target)
{
    for (const ts_config_key_t *k = keys; k->key; k++) {
        if (k->kind == TS_CONFIG_CUSTOM) {
            k->clear(target);
        } else if (k->kind == TS_CONFIG_STRING || k->kind == TS_CONFIG_PATH ||
                   k->kind == TS_CONFIG_ENUM) {
            char **field = (char **)((char *)target + k->offset);
            free(*field);
            *field = NULL;
        }
    }
}

//  The value's name in help: the key's own, else one from its kind.
static const char *s_arg(const ts_config_key_t *key)
{
    if (key->arg)
        return key->arg;
    switch (key->kind) {
    case TS_CONFIG_INT:
        return "N";
    case TS_CONFIG_DURATION_MS:
        return "MS";
    case TS_CONFIG_BYTES:
        return "BYTES";
    case TS_CONFIG_BOOL:
        return "true|false";
    case TS_CONFIG_PATH:
        return "FILE";
    case TS_CONFIG_ENUM:
        return key->choices;
    case TS_CONFIG_SWITCH:
        return "";
    case TS_CONFIG_STRING:
    case TS_CONFIG_CUSTOM:
        break;
    }
    return "VALUE";
}

void ts_config_print_key(const ts_config_key_t *key, FILE *out)
{
    char name[160], extra[256] = "";
    size_t used = 0;
    if (key->section)
        ts_config_flag_name(key, name, sizeof name);
    else if (key->letter)
        snprintf(name, sizeof name, "-%c, --%s%s%s", key->letter, key->key, *s_arg(key) ? " " : "",
                 s_arg(key));
    else
        snprintf(name, sizeof name, "--%s%s%s", key->key, *s_arg(key) ? " " : "", s_arg(key));
    if (key->kind == TS_CONFIG_ENUM && key->section)
        used += (size_t)snprintf(extra + used, sizeof extra - used, "%s", key->choices);
    if (key->fallback && *key->fallback && used < sizeof extra)
        used += (size_t)snprintf(extra + used, sizeof extra - used, "%sdefault %s",
                                 used ? "; " : "", key->fallback);
    if (s_numeric(key->kind) && (key->min || key->max) && used < sizeof extra)
        snprintf(extra + used, sizeof extra - used, "%s%ld to %ld%s", used ? "; " : "", key->min,
                 key->max,
                 key->kind == TS_CONFIG_DURATION_MS ? " ms"
                 : key->kind == TS_CONFIG_BYTES     ? " bytes"
                                                    : "");
    //  A long name gets its help on the next line rather than a ragged column.
    if (strlen(name) > 30) {
        fprintf(out, "  %s\n", name);
        name[0] = '\0';
    }
    fprintf(out, "  %-30s %s%s%s%s\n", name, key->help ? key->help : "", *extra ? " (" : "", extra,
            *extra ? ")" : "");
}

void ts_config_print_help(const ts_config_key_t *keys, unsigned scope, FILE *out)
{
    for (const ts_config_key_t *k = keys; k->key; k++) {
        if (k->section && (!k->scope || (k->scope & scope)))
            ts_config_print_key(k, out);
    }
}
