/*  broker_syncer.c: the sync thread of the store's pipelined group commit
    (see broker_syncer.h).

    Hand-over: the main thread sets `requested` under the mutex and signals;
    the thread runs the sync outside the lock, then sets `done` and
    `result`, signals, and writes the eventfd so that a poll loop wakes up.
    collect reads `done` under the mutex, so what the thread wrote before
    (the sync's result) is visible to the main thread after it.
*/
#include "broker_syncer.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct broker_syncer_t {
    int fd;              //  File made durable (borrowed)
    broker_sync_fn fn;   //  How
    int event_fd;        //  Readable when a sync is over
    pthread_t thread;    //  The sync thread
    pthread_mutex_t mtx; //  Guards the fields below
    pthread_cond_t cond; //  Signals requested / done / stop
    bool requested;      //  A sync is wanted and not yet done
    bool done;           //  The sync is over, not yet collected
    int result;          //  Its errno, 0 on success
    bool stop;           //  The thread must end
    bool busy;           //  Main thread only: started, not yet collected
};

static int s_fdatasync(int fd)
{
    return fdatasync(fd);
}

static void *s_run(void *arg)
{
    broker_syncer_t *self = arg;
    pthread_mutex_lock(&self->mtx);
    while (true) {
        while (!self->requested && !self->stop)
            pthread_cond_wait(&self->cond, &self->mtx);
        if (!self->requested)
            break; //  stop, nothing in flight
        pthread_mutex_unlock(&self->mtx);
        int result = self->fn(self->fd) == 0 ? 0 : (errno ? errno : EIO);
        pthread_mutex_lock(&self->mtx);
        self->requested = false;
        self->done = true;
        self->result = result;
        pthread_cond_broadcast(&self->cond);
        uint64_t one = 1;
        if (write(self->event_fd, &one, sizeof one) < 0) {
            //  Counter saturated: the fd is readable anyway.
        }
    }
    pthread_mutex_unlock(&self->mtx);
    return NULL;
}

broker_syncer_t *broker_syncer_new(int fd, broker_sync_fn fn, char *err, size_t errlen)
{
    broker_syncer_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->fd = fd;
    self->fn = fn ? fn : s_fdatasync;
    self->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (self->event_fd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        free(self);
        return NULL;
    }
    pthread_mutex_init(&self->mtx, NULL);
    pthread_cond_init(&self->cond, NULL);
    int rc = pthread_create(&self->thread, NULL, s_run, self);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the sync thread: %s", strerror(rc));
        pthread_cond_destroy(&self->cond);
        pthread_mutex_destroy(&self->mtx);
        close(self->event_fd);
        free(self);
        return NULL;
    }
    return self;
}

void broker_syncer_destroy(broker_syncer_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    broker_syncer_t *self = *self_p;
    pthread_mutex_lock(&self->mtx);
    self->stop = true;
    pthread_cond_broadcast(&self->cond);
    pthread_mutex_unlock(&self->mtx);
    pthread_join(self->thread, NULL); //  A sync in flight ends first
    pthread_cond_destroy(&self->cond);
    pthread_mutex_destroy(&self->mtx);
    close(self->event_fd);
    free(self);
    *self_p = NULL;
}

void broker_syncer_start(broker_syncer_t *self)
{
    assert(!self->busy);
    self->busy = true;
    pthread_mutex_lock(&self->mtx);
    self->requested = true;
    self->done = false;
    pthread_cond_broadcast(&self->cond);
    pthread_mutex_unlock(&self->mtx);
}

bool broker_syncer_busy(const broker_syncer_t *self)
{
    return self->busy;
}

int broker_syncer_fd(const broker_syncer_t *self)
{
    return self->event_fd;
}

int broker_syncer_collect(broker_syncer_t *self, bool wait)
{
    if (!self->busy)
        return 1;
    pthread_mutex_lock(&self->mtx);
    while (wait && !self->done)
        pthread_cond_wait(&self->cond, &self->mtx);
    bool done = self->done;
    int result = self->result;
    self->done = false;
    pthread_mutex_unlock(&self->mtx);
    if (!done)
        return 0;
    uint64_t count;
    if (read(self->event_fd, &count, sizeof count) < 0) {
        //  Already drained (EAGAIN): nothing to do.
    }
    self->busy = false;
    if (result != 0) {
        errno = result;
        return -1;
    }
    return 1;
}
