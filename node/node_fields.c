/*  node_fields.c: a sorted set of field values with a canonical byte form.

    A plain sorted array: sets hold a handful of fields (Basic mode syncs
    seven), so insertion by memmove beats any cleverness.
*/
#include "node_fields.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *name;  //  Column name, owned
    char *value; //  Value, owned
} s_field_t;

struct node_fields {
    s_field_t *items; //  Sorted by name, owned
    size_t count;     //  Entries in use
    size_t cap;       //  Entries allocated
};

node_fields_t *node_fields_new(void)
{
    return calloc(1, sizeof(node_fields_t));
}

void node_fields_destroy(node_fields_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    node_fields_t *self = *self_p;
    for (size_t i = 0; i < self->count; i++) {
        free(self->items[i].name);
        free(self->items[i].value);
    }
    free(self->items);
    free(self);
    *self_p = NULL;
}

//  Index of name, or of where it would be inserted; *found tells which.
static size_t s_find(const node_fields_t *self, const char *name, bool *found)
{
    size_t low = 0, high = self->count;
    while (low < high) {
        size_t mid = low + (high - low) / 2;
        int cmp = strcmp(self->items[mid].name, name);
        if (cmp == 0) {
            *found = true;
            return mid;
        }
        if (cmp < 0)
            low = mid + 1;
        else
            high = mid;
    }
    *found = false;
    return low;
}

int node_fields_set(node_fields_t *self, const char *name, const char *value)
{
    if (!self || !name || !value)
        return -1;
    bool found;
    size_t at = s_find(self, name, &found);
    char *copy = strdup(value);
    if (!copy)
        return -1;
    if (found) {
        free(self->items[at].value);
        self->items[at].value = copy;
        return 0;
    }
    if (self->count == self->cap) {
        size_t cap = self->cap ? self->cap * 2 : 8;
        s_field_t *items = realloc(self->items, cap * sizeof(s_field_t));
        if (!items) {
            free(copy);
            return -1;
        }
        self->items = items;
        self->cap = cap;
    }
    char *name_copy = strdup(name);
    if (!name_copy) {
        free(copy);
        return -1;
    }
    memmove(&self->items[at + 1], &self->items[at], (self->count - at) * sizeof(s_field_t));
    self->items[at].name = name_copy;
    self->items[at].value = copy;
    self->count++;
    return 0;
}

void node_fields_remove(node_fields_t *self, const char *name)
{
    if (!self)
        return;
    bool found;
    size_t at = s_find(self, name, &found);
    if (!found)
        return;
    free(self->items[at].name);
    free(self->items[at].value);
    memmove(&self->items[at], &self->items[at + 1], (self->count - at - 1) * sizeof(s_field_t));
    self->count--;
}

const char *node_fields_get(const node_fields_t *self, const char *name)
{
    if (!self || !name)
        return NULL;
    bool found;
    size_t at = s_find(self, name, &found);
    return found ? self->items[at].value : NULL;
}

size_t node_fields_size(const node_fields_t *self)
{
    return self ? self->count : 0;
}

const char *node_fields_name(const node_fields_t *self, size_t index)
{
    return index < node_fields_size(self) ? self->items[index].name : NULL;
}

const char *node_fields_value(const node_fields_t *self, size_t index)
{
    return index < node_fields_size(self) ? self->items[index].value : NULL;
}

node_fields_t *node_fields_dup(const node_fields_t *self)
{
    node_fields_t *copy = node_fields_new();
    for (size_t i = 0; copy && i < node_fields_size(self); i++)
        if (node_fields_set(copy, self->items[i].name, self->items[i].value))
            node_fields_destroy(&copy);
    return copy;
}

bool node_fields_equal(const node_fields_t *a, const node_fields_t *b)
{
    size_t count = node_fields_size(a);
    if (count != node_fields_size(b))
        return false;
    for (size_t i = 0; i < count; i++)
        if (strcmp(a->items[i].name, b->items[i].name) ||
            strcmp(a->items[i].value, b->items[i].value))
            return false;
    return true;
}

int node_fields_encode(const node_fields_t *self, proto_buf_t *out)
{
    proto_buf_reset(out);
    for (size_t i = 0; i < node_fields_size(self); i++) {
        const s_field_t *f = &self->items[i];
        if (proto_buf_append(out, f->name, strlen(f->name) + 1) ||
            proto_buf_append(out, f->value, strlen(f->value) + 1))
            return -1;
    }
    return 0;
}

//  Reads one NUL-terminated string at *pos; NULL when there is no terminator.
static const char *s_take(const uint8_t *data, size_t size, size_t *pos)
{
    const uint8_t *nul = memchr(data + *pos, 0, size - *pos);
    if (!nul)
        return NULL;
    const char *text = (const char *)data + *pos;
    *pos = (size_t)(nul - data) + 1;
    return text;
}

node_fields_t *node_fields_decode(const uint8_t *data, size_t size)
{
    node_fields_t *self = node_fields_new();
    if (!self)
        return NULL;
    const char *previous = NULL;
    size_t pos = 0;
    while (pos < size) {
        const char *name = s_take(data, size, &pos);
        const char *value = name && pos < size ? s_take(data, size, &pos) : NULL;
        bool ordered = name && *name && (!previous || strcmp(previous, name) < 0);
        if (!value || !ordered || node_fields_set(self, name, value)) {
            node_fields_destroy(&self);
            return NULL;
        }
        previous = name;
    }
    return self;
}

void node_fields_hash(const node_fields_t *self, uint8_t hash[NODE_FIELDS_HASH_SIZE])
{
    //  Hashing the encoded form keeps one definition of "canonical"; when
    //  memory runs out the hash of the empty input is returned, which only
    //  costs a redundant SYNC later, never a lost one.
    proto_buf_t buf;
    proto_buf_init(&buf);
    if (node_fields_encode(self, &buf))
        proto_buf_reset(&buf);
    unsigned int size = 0;
    if (!EVP_Digest(buf.data ? buf.data : (const uint8_t *)"", buf.size, hash, &size, EVP_sha256(),
                    NULL))
        memset(hash, 0, NODE_FIELDS_HASH_SIZE);
    proto_buf_release(&buf);
}

const char *node_fields_hash_hex(const node_fields_t *self, char buf[17])
{
    static const char digits[] = "0123456789abcdef";
    uint8_t hash[NODE_FIELDS_HASH_SIZE];
    node_fields_hash(self, hash);
    for (int i = 0; i < 8; i++) {
        buf[2 * i] = digits[hash[i] >> 4];
        buf[2 * i + 1] = digits[hash[i] & 15];
    }
    buf[16] = 0;
    return buf;
}
