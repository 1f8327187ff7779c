/*  mptext.h: msgpack from a compact text notation, for writing test inputs
    (valid, odd and malformed) as readable one-liners.

        {v:256,t:9,conn:"c1",seq:1,payload:b"\x01\x02"}

    Values: {k:v,...} map (bare-word keys are strings, other keys any value),
    [a,b] array, "text" string (\xHH escapes), b"..." bytes, 123 unsigned,
    -5 signed, nil, true, false, F (a double), S(n) string of n 'a',
    B(n) n bytes, D(n) n nested arrays, X(hex) raw bytes, M(n) / A(n) a bare
    map / array header claiming n entries.
*/
#ifndef MPTEXT_H
#define MPTEXT_H

#include "proto_buf.h"

//  Replaces out's contents with the msgpack of text; aborts on a syntax
//  error (a bug in the test).
void mptext(const char *text, proto_buf_t *out);

#endif
