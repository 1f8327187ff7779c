/*  proto_buf.h: the growable byte buffer encoders write into.

    A plain value the caller owns: declare one, proto_buf_init it, pass it to
    any number of encodes (each replaces the contents), proto_buf_release it.
    Buffers that held secrets (invitation codes, plaintexts) are cleared with
    proto_buf_wipe instead.
*/
#ifndef PROTO_BUF_H
#define PROTO_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t *data; //  Bytes, NULL until the first write; owned by the buffer
    size_t size;   //  Bytes in use
    size_t cap;    //  Bytes allocated
} proto_buf_t;

//  Makes an empty buffer.
void proto_buf_init(proto_buf_t *self);

//  Frees the memory and makes the buffer empty again; safe to call twice.
void proto_buf_release(proto_buf_t *self);

//  Overwrites the whole allocation with zeros (OPENSSL_cleanse), then releases.
void proto_buf_wipe(proto_buf_t *self);

//  Empties the buffer, keeping its memory.
void proto_buf_reset(proto_buf_t *self);

//  Makes room for at least extra more bytes. Returns 0, or -1 when out of
//  memory (the contents are then unchanged).
int proto_buf_reserve(proto_buf_t *self, size_t extra);

//  Appends size bytes. Returns 0, or -1 when out of memory.
int proto_buf_append(proto_buf_t *self, const void *data, size_t size);

#endif
