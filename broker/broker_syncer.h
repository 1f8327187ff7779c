/*  broker_syncer.h: a thread that makes one file durable while the main
    thread goes on working (the store's pipelined group commit).

    The store commits a transaction with synchronous=NORMAL, which writes
    its WAL frames without waiting for the disk, then asks the syncer to
    fdatasync the WAL. While the disk works, the main thread reads and
    writes the next batch. When the sync is over the syncer's eventfd
    becomes readable; broker_syncer_collect then says whether it worked.
    Nothing of the transaction may be answered before collect returned 1.

    At most one sync is in flight. The thread touches nothing but the file
    descriptor it was given, so it needs no lock around the store.
*/
#ifndef BROKER_SYNCER_H
#define BROKER_SYNCER_H

#include <stdbool.h>
#include <stddef.h>

//  Makes fd durable; returns 0, or -1 with errno. fdatasync by default;
//  tests pass their own to inject failures and delays.
typedef int (*broker_sync_fn)(int fd);

typedef struct broker_syncer_t broker_syncer_t;

//  Starts the thread that will sync fd (borrowed: it must stay open until
//  the syncer is destroyed) with fn (NULL: fdatasync). Returns NULL with a
//  reason in err.
broker_syncer_t *broker_syncer_new(int fd, broker_sync_fn fn, char *err, size_t errlen);

//  Waits for a sync in flight, stops and joins the thread, sets *self_p to
//  NULL; accepts NULL.
void broker_syncer_destroy(broker_syncer_t **self_p);

//  Starts one sync. Only when none is in flight (broker_syncer_busy false).
void broker_syncer_start(broker_syncer_t *self);

//  True from broker_syncer_start until broker_syncer_collect returned
//  non-zero.
bool broker_syncer_busy(const broker_syncer_t *self);

//  An eventfd, readable once the sync in flight is over (for poll).
int broker_syncer_fd(const broker_syncer_t *self);

//  Collects the sync in flight: returns 1 when it is over and the file is
//  durable, 0 when it still runs (only when wait is false), -1 when it
//  failed (errno set; fatal for the caller: after a failed fsync the
//  page cache's state is unknown). Returns 1 at once when none is in
//  flight.
int broker_syncer_collect(broker_syncer_t *self, bool wait);

#endif
