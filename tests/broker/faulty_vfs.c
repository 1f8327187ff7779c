/*  faulty_vfs.c: a pass-through SQLite VFS whose xSync can be made to fail
    (see faulty_vfs.h). Every file it opens is the default VFS's file placed
    right behind a small header; every method forwards to it.
*/
#include "faulty_vfs.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <unistd.h>
#include <string.h>

typedef struct {
    sqlite3_file base;  //  Our methods
    sqlite3_file *real; //  The wrapped file, stored right after this struct
} faulty_file_t;

static sqlite3_vfs s_vfs;
static sqlite3_vfs *s_real;
static atomic_bool s_fail_sync;  //  Set by the test thread, read by the store's sync thread
static atomic_uint s_sync_calls; //  Counted on both

#define REAL(f) (((faulty_file_t *)(f))->real)

static int s_close(sqlite3_file *f)
{
    return REAL(f)->pMethods->xClose(REAL(f));
}
static int s_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
    return REAL(f)->pMethods->xRead(REAL(f), buf, n, off);
}
static int s_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    return REAL(f)->pMethods->xWrite(REAL(f), buf, n, off);
}
static int s_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    return REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int s_sync(sqlite3_file *f, int flags)
{
    s_sync_calls++;
    if (s_fail_sync)
        return SQLITE_IOERR_FSYNC;
    return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int s_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    return REAL(f)->pMethods->xFileSize(REAL(f), size);
}
static int s_lock(sqlite3_file *f, int level)
{
    return REAL(f)->pMethods->xLock(REAL(f), level);
}
static int s_unlock(sqlite3_file *f, int level)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), level);
}
static int s_check_reserved(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int s_file_control(sqlite3_file *f, int op, void *arg)
{
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int s_sector_size(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int s_device_characteristics(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int s_shm_map(sqlite3_file *f, int page, int size, int extend, void volatile **out)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), page, size, extend, out);
}
static int s_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), offset, n, flags);
}
static void s_shm_barrier(sqlite3_file *f)
{
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int s_shm_unmap(sqlite3_file *f, int delete_flag)
{
    return REAL(f)->pMethods->xShmUnmap(REAL(f), delete_flag);
}
static int s_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **out)
{
    return REAL(f)->pMethods->xFetch(REAL(f), off, n, out);
}
static int s_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}

static const sqlite3_io_methods s_methods = {
    3,
    s_close,
    s_read,
    s_write,
    s_truncate,
    s_sync,
    s_file_size,
    s_lock,
    s_unlock,
    s_check_reserved,
    s_file_control,
    s_sector_size,
    s_device_characteristics,
    s_shm_map,
    s_shm_lock,
    s_shm_barrier,
    s_shm_unmap,
    s_fetch,
    s_unfetch,
};

static int s_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags)
{
    (void)vfs;
    faulty_file_t *file = (faulty_file_t *)f;
    file->real = (sqlite3_file *)(file + 1);
    memset(file->real, 0, (size_t)s_real->szOsFile);
    int rc = s_real->xOpen(s_real, name, file->real, flags, out_flags);
    file->base.pMethods = file->real->pMethods ? &s_methods : NULL;
    return rc;
}

static int s_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    (void)vfs;
    return s_real->xDelete(s_real, name, sync_dir);
}
static int s_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    (void)vfs;
    return s_real->xAccess(s_real, name, flags, out);
}
static int s_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
    (void)vfs;
    return s_real->xFullPathname(s_real, name, n, out);
}
static int s_randomness(sqlite3_vfs *vfs, int n, char *out)
{
    (void)vfs;
    return s_real->xRandomness(s_real, n, out);
}
static int s_sleep(sqlite3_vfs *vfs, int us)
{
    (void)vfs;
    return s_real->xSleep(s_real, us);
}
static int s_current_time(sqlite3_vfs *vfs, double *out)
{
    (void)vfs;
    return s_real->xCurrentTime(s_real, out);
}
static int s_last_error(sqlite3_vfs *vfs, int n, char *out)
{
    (void)vfs;
    return s_real->xGetLastError(s_real, n, out);
}
static int s_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    (void)vfs;
    return s_real->xCurrentTimeInt64(s_real, out);
}

int faulty_vfs_register(void)
{
    if (s_real)
        return 0;
    s_real = sqlite3_vfs_find(NULL);
    if (!s_real)
        return -1;
    s_vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int)sizeof(faulty_file_t) + s_real->szOsFile,
        .mxPathname = s_real->mxPathname,
        .zName = "faulty",
        .xOpen = s_open,
        .xDelete = s_delete,
        .xAccess = s_access,
        .xFullPathname = s_full_pathname,
        .xRandomness = s_randomness,
        .xSleep = s_sleep,
        .xCurrentTime = s_current_time,
        .xGetLastError = s_last_error,
        .xCurrentTimeInt64 = s_current_time64,
    };
    return sqlite3_vfs_register(&s_vfs, 0) == SQLITE_OK ? 0 : -1;
}

void faulty_vfs_fail_sync(bool fail)
{
    s_fail_sync = fail;
}

static pthread_mutex_t s_hold_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t s_hold_cond = PTHREAD_COND_INITIALIZER;
static bool s_hold; //  faulty_vfs_sync_fd waits while set (under s_hold_mtx)

void faulty_vfs_hold_sync(bool hold)
{
    pthread_mutex_lock(&s_hold_mtx);
    s_hold = hold;
    pthread_cond_broadcast(&s_hold_cond);
    pthread_mutex_unlock(&s_hold_mtx);
}

int faulty_vfs_sync_fd(int fd)
{
    pthread_mutex_lock(&s_hold_mtx);
    while (s_hold)
        pthread_cond_wait(&s_hold_cond, &s_hold_mtx);
    pthread_mutex_unlock(&s_hold_mtx);
    s_sync_calls++;
    if (s_fail_sync) {
        errno = EIO;
        return -1;
    }
    return fdatasync(fd);
}

unsigned faulty_vfs_sync_calls(void)
{
    return s_sync_calls;
}
