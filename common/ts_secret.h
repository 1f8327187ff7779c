/*  ts_secret.h: secrets (ServiceNow passwords, OAuth secrets, keys) come from a
    file that only its owner can read, or from an environment variable; never
    from the command line. This module reads them and writes private files.
*/
#ifndef TS_SECRET_H
#define TS_SECRET_H

#include <stddef.h>
#include <stdint.h>

//  Reads a secret named by spec: "env:NAME" reads environment variable NAME;
//  anything else is a file path, which must be a regular file with no group or
//  other permission bits (0600 or 0400). One trailing newline is removed.
//  Returns a NUL-terminated copy owned by the caller (free with ts_secret_free),
//  or NULL with a reason naming the file or variable in err.
char *ts_secret_read(const char *spec, char *err, size_t errlen);

//  Wipes and frees *secret_p, sets it to NULL; accepts NULL.
void ts_secret_free(char **secret_p);

//  Writes data to path atomically (temporary file, fsync, rename, fsync of the
//  directory) with mode 0600. Returns 0, or -1 with a reason in err.
int ts_file_write_private(const char *path, const void *data, size_t size, char *err,
                          size_t errlen);

//  Writes size bytes of data as 2 * size lowercase hex digits and a NUL to
//  out (2 * size + 1 bytes): how key files spell secrets.
void ts_hex_encode(const uint8_t *data, size_t size, char *out);

//  Reads exactly 2 * size lowercase hex digits (text, len bytes, no NUL
//  needed) into out. Returns 0, or -1 (another length, another character).
int ts_hex_decode(const char *text, size_t len, uint8_t *out, size_t size);

#endif
