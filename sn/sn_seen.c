/*  sn_seen.c: de-duplication set of a change stream, keyed by sys_id.
    See sn_seen.h for the contract. Entries live in a jansson object (a hash
    table): key -> ["version", "stamp"]. */

#include "sn_seen.h"

#include <assert.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

struct sn_seen_t {
    json_t *entries; //  key -> [version, stamp]
};

sn_seen_t *sn_seen_new(void)
{
    sn_seen_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->entries = json_object();
    if (!self->entries) {
        free(self);
        return NULL;
    }
    return self;
}

void sn_seen_destroy(sn_seen_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    sn_seen_t *self = *self_p;
    json_decref(self->entries);
    free(self);
    *self_p = NULL;
}

bool sn_seen_is_new(const sn_seen_t *self, const char *key, const char *version)
{
    assert(self && key && version);
    json_t *entry = json_object_get(self->entries, key);
    if (!entry)
        return true;
    const char *known = json_string_value(json_array_get(entry, 0));
    return !known || strcmp(known, version) != 0;
}

bool sn_seen_add(sn_seen_t *self, const char *key, const char *version, const char *stamp)
{
    assert(self && key && version && stamp);
    json_t *entry = json_pack("[ss]", version, stamp);
    return entry && json_object_set_new(self->entries, key, entry) == 0;
}

void sn_seen_prune(sn_seen_t *self, const char *before)
{
    assert(self && before);
    const char *key;
    json_t *entry;
    void *tmp;
    json_object_foreach_safe(self->entries, tmp, key, entry)
    {
        const char *stamp = json_string_value(json_array_get(entry, 1));
        if (!stamp || strcmp(stamp, before) < 0)
            json_object_del(self->entries, key);
    }
}

size_t sn_seen_size(const sn_seen_t *self)
{
    assert(self);
    return json_object_size(self->entries);
}
