/*  sn_seen.h: the records a change stream has already handed out.

    Polling with sys_updated_on >= cursor - look-back returns again the records
    of the look-back window. sn_seen remembers, per record key (sys_id), the
    version handed out (sys_mod_count; "" for rows that never change, such as
    journal entries) and its time stamp, so that a row seen again unchanged is
    dropped while a new version of the same record goes through.

    One sn_seen_t per change stream (per connection and table): sharing one
    between two triggers would drop records one of them has not seen. It holds
    only the look-back window: sn_seen_prune() forgets entries older than the
    next poll's lower bound, which the query can no longer return unchanged.
    The set lives in memory; after a restart the window is delivered once more,
    and the sync engine's own "last replica sent" check absorbs that. */

#ifndef SN_SEEN_H
#define SN_SEEN_H

#include <stdbool.h>
#include <stddef.h>

typedef struct sn_seen_t sn_seen_t;

//  A new, empty set, or NULL when out of memory.
sn_seen_t *sn_seen_new(void);

//  Frees the set and sets *self_p to NULL; accepts NULL and *self_p NULL.
void sn_seen_destroy(sn_seen_t **self_p);

//  True when (key, version) has not been recorded: key unknown or known with
//  another version.
bool sn_seen_is_new(const sn_seen_t *self, const char *key, const char *version);

//  Records key at version, seen with time stamp (sn_query.h); returns false
//  only when out of memory.
bool sn_seen_add(sn_seen_t *self, const char *key, const char *version, const char *stamp);

//  Forgets every entry whose stamp sorts before `before`.
void sn_seen_prune(sn_seen_t *self, const char *before);

//  Number of keys remembered.
size_t sn_seen_size(const sn_seen_t *self);

#endif
