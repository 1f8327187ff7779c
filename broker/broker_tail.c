/*  broker_tail.c: the newest messages of one queue in memory (see
    broker_tail.h).

    Two rings. Headers: `entries[max_count]`, the oldest at `head`, `count`
    of them. Bytes: `ring[capacity]`; payloads are stored contiguously, each
    at `offset`; a payload that does not fit before the end of the ring
    starts again at 0 (the gap left at the end is never used). Free space is
    the distance from the newest payload's end (`write`) to the oldest
    payload's start, going forward; dropping the oldest entry moves that
    start. Entries are contiguous in sequence, so finding seq is one
    subtraction.
*/
#include "broker_tail.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t seq;  //  Sequence
    size_t offset; //  Payload's place in ring
    size_t size;   //  Payload bytes
    bool file;     //  File data
} s_entry_t;

struct broker_tail_t {
    uint8_t *ring;      //  Payload bytes, NULL until the first push
    size_t capacity;    //  Bytes in ring
    size_t write;       //  Where the newest payload ends
    s_entry_t *entries; //  Header ring
    size_t max_count;   //  Places in entries
    size_t head;        //  Index of the oldest entry
    size_t count;       //  Entries held
};

broker_tail_t *broker_tail_new(size_t capacity, size_t max_count)
{
    assert(capacity > 0 && max_count > 0);
    broker_tail_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->entries = calloc(max_count, sizeof *self->entries);
    if (!self->entries) {
        free(self);
        return NULL;
    }
    self->capacity = capacity;
    self->max_count = max_count;
    return self;
}

void broker_tail_destroy(broker_tail_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    broker_tail_t *self = *self_p;
    free(self->ring);
    free(self->entries);
    free(self);
    *self_p = NULL;
}

static s_entry_t *s_entry(const broker_tail_t *self, size_t i)
{
    return &self->entries[(self->head + i) % self->max_count];
}

static void s_drop_oldest(broker_tail_t *self)
{
    self->head = (self->head + 1) % self->max_count;
    self->count--;
    if (self->count == 0)
        self->write = 0;
}

//  Where a payload of size bytes would go without dropping anything. The
//  entries are not wrapped when the oldest starts before the newest ends:
//  free are [write, capacity) and [0, oldest). Otherwise (the newest ones
//  start again at 0) free is [write, oldest). Returns true with *at set
//  when the payload fits.
static bool s_room(const broker_tail_t *self, size_t size, size_t *at)
{
    if (self->count == 0) {
        *at = 0;
        return true;
    }
    size_t oldest = s_entry(self, 0)->offset;
    if (oldest < self->write) {
        if (self->write + size <= self->capacity) {
            *at = self->write;
            return true;
        }
        *at = 0;
        return size <= oldest;
    }
    *at = self->write;
    return self->write + size <= oldest;
}

bool broker_tail_push(broker_tail_t *self, uint64_t seq, const void *payload, size_t size,
                      bool file)
{
    if (self->count > 0 && seq != s_entry(self, self->count - 1)->seq + 1)
        broker_tail_release(self); //  Not contiguous: start again at seq
    if (size > self->capacity || size == 0) {
        broker_tail_release(self);
        return false;
    }
    if (!self->ring) {
        self->ring = malloc(self->capacity);
        if (!self->ring)
            return false;
    }
    size_t at;
    while (self->count == self->max_count || !s_room(self, size, &at))
        s_drop_oldest(self);
    memcpy(self->ring + at, payload, size);
    *s_entry(self, self->count) = (s_entry_t){seq, at, size, file};
    self->count++;
    self->write = at + size;
    return true;
}

bool broker_tail_find(const broker_tail_t *self, uint64_t seq, broker_tail_entry_t *entry)
{
    if (self->count == 0)
        return false;
    uint64_t first = s_entry(self, 0)->seq;
    if (seq < first || seq - first >= self->count)
        return false;
    const s_entry_t *found = s_entry(self, (size_t)(seq - first));
    *entry =
        (broker_tail_entry_t){found->seq, self->ring + found->offset, found->size, found->file};
    return true;
}

void broker_tail_release(broker_tail_t *self)
{
    free(self->ring);
    self->ring = NULL;
    self->head = 0;
    self->count = 0;
    self->write = 0;
}

size_t broker_tail_count(const broker_tail_t *self)
{
    return self->count;
}

size_t broker_tail_allocated(const broker_tail_t *self)
{
    return self->ring ? self->capacity : 0;
}
