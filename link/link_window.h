/*  link_window.h: one connection's un-STORED PUBLISHes, in sequence order.

    The link (link_broker.h) keeps every PUBLISH it accepted until the broker
    answers STORED, so that it can send it again after a reconnect, a broker
    restart (ERROR 401) or a refusal (ERROR 429 / 422 / 500) without asking
    the application. The window is bounded: the application offers more only
    when there is room, and keeps the rest in its durable outbox.

    Entries hold the sealed payload of each PUBLISH; the link encodes frames
    (one message, or a batch of consecutive ones) when it sends. They are
    split in two runs: the first `sent` entries went out in this session, the
    rest wait for their turn (link_window_next). A rewind moves entries back
    from sent to waiting; STORED removes them from the front.

        link_window_t *w = link_window_new(64);
        link_window_push(w, 1, payload, size, false);  //  accepted: the window copies it
        const link_entry_t *e = link_window_next(w);
        ... send e->data ...; link_window_mark_sent(w);
        link_window_ack(w, 1);                     //  STORED 1: gone
        link_window_destroy(&w);
*/
#ifndef LINK_WINDOW_H
#define LINK_WINDOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t seq;  //  Sequence of the PUBLISH
    uint8_t *data; //  Sealed payload, owned by the window
    size_t size;   //  Bytes in data
    bool file;     //  File data: sent with PUBLISH "file" (docs/protocol.md §4.7)
} link_entry_t;

typedef struct link_window_t link_window_t;

//  A window holding at most capacity (>= 1) entries, or NULL when out of
//  memory.
link_window_t *link_window_new(size_t capacity);

//  Frees the window and every payload in it; sets *self_p to NULL; accepts NULL.
void link_window_destroy(link_window_t **self_p);

//  Appends a copy of data as entry seq, waiting to be sent; file says it is
//  file data. Returns 0; 1 when the window is full; -1 when seq is not above
//  the last entry's (or the last acknowledged sequence), or out of memory.
int link_window_push(link_window_t *self, uint64_t seq, const uint8_t *data, size_t size,
                     bool file);

//  STORED seq: removes every entry with a sequence <= seq (STORED is
//  cumulative, docs/protocol.md §4.4). Returns the number removed.
size_t link_window_ack(link_window_t *self, uint64_t seq);

//  The first waiting entry, or NULL when every entry was sent. The pointer is
//  valid until the next call that changes the window.
const link_entry_t *link_window_next(const link_window_t *self);

//  The i-th waiting entry (0: the one link_window_next returns), or NULL
//  past the last. Valid until the next call that changes the window.
const link_entry_t *link_window_waiting(const link_window_t *self, size_t i);

//  Marks the entry link_window_next returned as sent.
void link_window_mark_sent(link_window_t *self);

//  Makes every entry with a sequence >= seq wait again (sent ones included).
//  Returns 0, or -1 when the window holds nothing at or after seq's place
//  (seq is below the first entry: the window no longer has it).
int link_window_rewind(link_window_t *self, uint64_t seq);

//  Makes every entry wait again (new session).
void link_window_rewind_all(link_window_t *self);

//  Entries held; entries sent and not yet acknowledged; free places; payload
//  bytes of the entries held.
size_t link_window_count(const link_window_t *self);
size_t link_window_bytes(const link_window_t *self);
size_t link_window_sent(const link_window_t *self);
size_t link_window_room(const link_window_t *self);

//  Sequence of the first entry, or 0 when empty.
uint64_t link_window_first_seq(const link_window_t *self);

//  Highest sequence ever pushed or acknowledged (0: none).
uint64_t link_window_last_seq(const link_window_t *self);

#endif
