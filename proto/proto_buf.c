/*  proto_buf.c: growable byte buffer (see proto_buf.h).

    Capacity doubles so appends are amortised O(1); every size computation
    is checked for overflow, and a failed growth leaves the buffer intact.
*/
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "proto_buf.h"

void proto_buf_init(proto_buf_t *self)
{
    self->data = NULL;
    self->size = 0;
    self->cap = 0;
}

void proto_buf_release(proto_buf_t *self)
{
    free(self->data);
    proto_buf_init(self);
}

void proto_buf_wipe(proto_buf_t *self)
{
    if (self->data)
        OPENSSL_cleanse(self->data, self->cap);
    proto_buf_release(self);
}

void proto_buf_reset(proto_buf_t *self)
{
    self->size = 0;
}

int proto_buf_reserve(proto_buf_t *self, size_t extra)
{
    if (extra <= self->cap - self->size)
        return 0;
    if (extra > SIZE_MAX / 2 - self->size)
        return -1;
    size_t want = self->size + extra;
    size_t cap = self->cap ? self->cap : 64;
    while (cap < want)
        cap *= 2;
    uint8_t *data = realloc(self->data, cap);
    if (!data)
        return -1;
    self->data = data;
    self->cap = cap;
    return 0;
}

int proto_buf_append(proto_buf_t *self, const void *data, size_t size)
{
    if (size == 0)
        return 0;
    if (proto_buf_reserve(self, size) != 0)
        return -1;
    memcpy(self->data + self->size, data, size);
    self->size += size;
    return 0;
}
