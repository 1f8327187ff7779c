/*  node_spool.h: the spool files of attachments in transfer.

    A file crossing to the twin lives on disk on both nodes while it is
    under way, never whole in memory: the sending node reads it from its
    instance into STATE_DIR/files/CONN/out-FILEID and cuts chunks from there;
    the receiving node writes the chunks into STATE_DIR/files/CONN/in-FILEID
    and uploads the file once it is whole and its SHA-256 matches. The
    directories are 0700, the files 0600. A spool file goes when its file is
    done (sent, uploaded, deleted at the source); a refused file's spool stays
    for `errors retry`.
*/
#ifndef NODE_SPOOL_H
#define NODE_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "node_state.h"

//  The spool path of file (its connection, direction and id) under
//  state_dir into buf, creating the directories. Returns 0, or -1 with a
//  reason in err.
int node_spool_path(const char *state_dir, const node_file_t *file, char *buf, size_t size,
                    char *err, size_t errlen);

//  SHA-256 of the first size bytes of path as lowercase hex into hex.
//  Returns 0, 1 when the file holds fewer bytes, -1 with a reason in err.
int node_spool_hash(const char *path, uint64_t size, char hex[65], char *err, size_t errlen);

//  Removes the spool of file; a missing one is not an error.
void node_spool_remove(const char *state_dir, const node_file_t *file);

//  Removes the spool directory of connection conn with what it holds.
void node_spool_remove_conn(const char *state_dir, const char *conn);

#endif
