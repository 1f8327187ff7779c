/*  node_fields.h: a set of ServiceNow field values (name -> string value).

    The sync engine keeps, per twin, three such sets: what the local instance
    holds for the synced fields, the last replica received from the other
    side, and the fields it changed in SYNCs the other side has not yet
    acknowledged (node_replica.h explains the rules). A set is kept sorted by
    name so that it has one canonical byte form, stored as a BLOB in the state
    database and hashed (SHA-256) to name "what we wrote" in logs and `twins`:

        canonical = for each field, sorted by name: name 0x00 value 0x00

    Values are C strings (ServiceNow sends every value as a string; none holds
    a NUL byte). Ownership: the set owns copies of every name and value.
*/
#ifndef NODE_FIELDS_H
#define NODE_FIELDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto_buf.h"

#define NODE_FIELDS_HASH_SIZE 32 //  SHA-256

typedef struct node_fields node_fields_t;

//  A new empty set owned by the caller, or NULL when out of memory.
node_fields_t *node_fields_new(void);

//  Frees the set and sets *self_p to NULL; accepts NULL.
void node_fields_destroy(node_fields_t **self_p);

//  A deep copy owned by the caller, or NULL when out of memory. A NULL self
//  gives an empty set.
node_fields_t *node_fields_dup(const node_fields_t *self);

//  Sets name to value (both copied), replacing an earlier value. Returns 0,
//  or -1 when out of memory (the set is then unchanged).
int node_fields_set(node_fields_t *self, const char *name, const char *value);

//  Removes name if present.
void node_fields_remove(node_fields_t *self, const char *name);

//  The value of name, or NULL when absent. Owned by the set; valid until the
//  set changes. self may be NULL (absent).
const char *node_fields_get(const node_fields_t *self, const char *name);

//  Number of fields; 0 for NULL.
size_t node_fields_size(const node_fields_t *self);

//  Name and value of the index-th field in name order (index < size).
const char *node_fields_name(const node_fields_t *self, size_t index);
const char *node_fields_value(const node_fields_t *self, size_t index);

//  True when both sets hold the same names with the same values (NULL is the
//  empty set).
bool node_fields_equal(const node_fields_t *a, const node_fields_t *b);

//  Writes the canonical form into out (contents replaced). Returns 0, or -1
//  when out of memory.
int node_fields_encode(const node_fields_t *self, proto_buf_t *out);

//  Parses a canonical form. An empty input gives an empty set. Returns a set
//  owned by the caller, or NULL when data is not a canonical form (unsorted,
//  duplicate or empty names, missing terminator) or memory ran out.
node_fields_t *node_fields_decode(const uint8_t *data, size_t size);

//  SHA-256 of the canonical form.
void node_fields_hash(const node_fields_t *self, uint8_t hash[NODE_FIELDS_HASH_SIZE]);

//  The first 8 bytes of the hash as 16 lowercase hex digits plus NUL, for
//  logs and `twins` output. Returns buf.
const char *node_fields_hash_hex(const node_fields_t *self, char buf[17]);

#endif
