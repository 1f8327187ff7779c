/*  link_window.c: one connection's un-STORED PUBLISHes (see link_window.h).

    A ring of `capacity` entries: `head` is the oldest, `count` entries follow
    it, the first `sent` of them went out in this session.
*/
#include "link_window.h"

#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct link_window_t {
    link_entry_t *ring; //  capacity entries
    size_t capacity;    //  Places in ring
    size_t head;        //  Index of the oldest entry
    size_t count;       //  Entries held
    size_t sent;        //  Leading entries sent in this session
    size_t bytes;       //  Payload bytes of the entries held
    uint64_t last_seq;  //  Highest sequence pushed or acknowledged
};

//  The i-th entry from the oldest.
static link_entry_t *s_at(const link_window_t *self, size_t i)
{
    assert(i < self->count);
    return &self->ring[(self->head + i) % self->capacity];
}

link_window_t *link_window_new(size_t capacity)
{
    assert(capacity >= 1);
    link_window_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->ring = calloc(capacity, sizeof *self->ring);
    if (!self->ring) {
        free(self);
        return NULL;
    }
    self->capacity = capacity;
    return self;
}

void link_window_destroy(link_window_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    link_window_t *self = *self_p;
    link_window_ack(self, UINT64_MAX);
    free(self->ring);
    free(self);
    *self_p = NULL;
}

int link_window_push(link_window_t *self, uint64_t seq, const uint8_t *data, size_t size, bool file)
{
    if (self->count == self->capacity)
        return 1;
    if (seq <= self->last_seq)
        return -1;
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return -1;
    memcpy(copy, data, size);
    link_entry_t *entry = &self->ring[(self->head + self->count) % self->capacity];
    *entry = (link_entry_t){seq, copy, size, file};
    self->count++;
    self->bytes += size;
    self->last_seq = seq;
    return 0;
}

size_t link_window_ack(link_window_t *self, uint64_t seq)
{
    size_t removed = 0;
    while (self->count > 0 && s_at(self, 0)->seq <= seq) {
        link_entry_t *entry = s_at(self, 0);
        self->bytes -= entry->size;
        free(entry->data);
        *entry = (link_entry_t){0, NULL, 0, false};
        self->head = (self->head + 1) % self->capacity;
        self->count--;
        if (self->sent > 0)
            self->sent--;
        removed++;
    }
    if (seq != UINT64_MAX && seq > self->last_seq)
        self->last_seq = seq;
    return removed;
}

const link_entry_t *link_window_next(const link_window_t *self)
{
    return self->sent < self->count ? s_at(self, self->sent) : NULL;
}

const link_entry_t *link_window_waiting(const link_window_t *self, size_t i)
{
    return self->sent + i < self->count ? s_at(self, self->sent + i) : NULL;
}

void link_window_mark_sent(link_window_t *self)
{
    assert(self->sent < self->count);
    self->sent++;
}

int link_window_rewind(link_window_t *self, uint64_t seq)
{
    if (self->count == 0 || seq < s_at(self, 0)->seq)
        return -1;
    size_t i = 0;
    while (i < self->count && s_at(self, i)->seq < seq)
        i++;
    if (i < self->sent)
        self->sent = i;
    return 0;
}

void link_window_rewind_all(link_window_t *self)
{
    self->sent = 0;
}

size_t link_window_count(const link_window_t *self)
{
    return self->count;
}

size_t link_window_bytes(const link_window_t *self)
{
    return self->bytes;
}

size_t link_window_sent(const link_window_t *self)
{
    return self->sent;
}

size_t link_window_room(const link_window_t *self)
{
    return self->capacity - self->count;
}

uint64_t link_window_first_seq(const link_window_t *self)
{
    return self->count ? s_at(self, 0)->seq : 0;
}

uint64_t link_window_last_seq(const link_window_t *self)
{
    return self->last_seq;
}
