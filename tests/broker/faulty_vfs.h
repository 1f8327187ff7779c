/*  faulty_vfs.h: an SQLite VFS that wraps the default one and fails on demand.

    Registered as "faulty"; open a store with broker_store_options_t.vfs =
    "faulty". While faulty_vfs_fail_sync(true) is in force every xSync returns
    SQLITE_IOERR_FSYNC, as a disk that reports a write-back failure would.
    The store syncs its WAL itself (broker_store_options_t.sync): pass
    faulty_vfs_sync_fd there so that those syncs fail and count the same.
    Test helper only: never linked into the daemon.
*/
#ifndef FAULTY_VFS_H
#define FAULTY_VFS_H

#include <stdbool.h>

//  Registers the VFS (idempotent). Returns 0, or -1.
int faulty_vfs_register(void);

//  Makes every following xSync fail (true) or succeed (false).
void faulty_vfs_fail_sync(bool fail);

//  fdatasync, or -1 with EIO while faulty_vfs_fail_sync(true) is in force;
//  counted with the xSync calls. Thread-safe.
int faulty_vfs_sync_fd(int fd);

//  While hold is true, faulty_vfs_sync_fd blocks (a slow disk the test
//  controls); false releases it.
void faulty_vfs_hold_sync(bool hold);

//  Number of xSync and faulty_vfs_sync_fd calls since registration.
unsigned faulty_vfs_sync_calls(void);

#endif
