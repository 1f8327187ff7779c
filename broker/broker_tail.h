/*  broker_tail.h: the newest messages of one queue, kept in memory so that
    delivering a message just stored does not read it back from SQLite.

    A tail holds a contiguous run of sequences that ends at the newest message
    stored: broker_tail_push appends last + 1 and, when the buffer is full,
    drops the oldest entries to make room. The core delivers from the tail
    when the next sequence to deliver is in it, and from the store otherwise
    (a receiver far behind, a redelivery after a reconnect); the store stays
    the only source of truth, the tail is a copy of committed rows.

    Memory is bounded: one byte ring of `capacity` bytes, allocated at the
    first push and freed by broker_tail_release, plus a fixed ring of entry
    headers. A payload larger than the ring is not kept (the tail empties and
    starts again after it).

        broker_tail_t *tail = broker_tail_new(256 * 1024, 512);
        broker_tail_push(tail, 1, payload, size, false);
        broker_tail_entry_t entry;
        if (broker_tail_find(tail, 1, &entry)) ... entry.payload, entry.size ...
        broker_tail_release(tail);             //  receiver gone: give memory back
        broker_tail_destroy(&tail);

    Not thread-safe: the broker's main thread owns every tail.
*/
#ifndef BROKER_TAIL_H
#define BROKER_TAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct broker_tail_t broker_tail_t;

//  One message in the tail. payload points into the tail's ring.
typedef struct {
    uint64_t seq;           //  Sequence
    const uint8_t *payload; //  Bytes, valid until the next push or release
    size_t size;            //  Bytes in payload
    bool file;              //  File data, as pushed
} broker_tail_entry_t;

//  Makes an empty tail of at most capacity payload bytes and max_count
//  entries (both >= 1). Allocates no ring yet. Returns NULL when out of
//  memory. The caller owns the result.
broker_tail_t *broker_tail_new(size_t capacity, size_t max_count);

//  Frees the tail and sets *self_p to NULL; accepts NULL.
void broker_tail_destroy(broker_tail_t **self_p);

//  Appends message seq (file: whether it is file data, given back by
//  broker_tail_find). seq must be the last sequence + 1 when the tail is
//  not empty; otherwise the tail restarts at seq. Drops the oldest entries
//  to make room. Returns true when the message is kept, false when it is not
//  (larger than the ring, or out of memory: the tail is then empty).
bool broker_tail_push(broker_tail_t *self, uint64_t seq, const void *payload, size_t size,
                      bool file);

//  Fills *entry with message seq and returns true, or returns false when the
//  tail does not hold it. entry->payload is valid until the next push or
//  release.
bool broker_tail_find(const broker_tail_t *self, uint64_t seq, broker_tail_entry_t *entry);

//  Forgets every entry and frees the ring (the headers stay).
void broker_tail_release(broker_tail_t *self);

//  Entries held; bytes of the ring allocated (0 after release).
size_t broker_tail_count(const broker_tail_t *self);
size_t broker_tail_allocated(const broker_tail_t *self);

#endif
