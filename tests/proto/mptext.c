/*  mptext.c: msgpack from text notation, for tests (see mptext.h). */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "mptext.h"

typedef struct {
    const char *text; //  Whole input, for error messages
    const char *p;    //  Next character
} s_parser_t;

static void s_die(s_parser_t *ps, const char *what)
{
    fprintf(stderr, "mptext: %s at offset %ld in: %s\n", what, (long)(ps->p - ps->text), ps->text);
    abort();
}

static int s_write(void *data, const char *buf, size_t len)
{
    return proto_buf_append(data, buf, len);
}

static void s_skip_space(s_parser_t *ps)
{
    while (isspace((unsigned char)*ps->p))
        ps->p++;
}

static unsigned long long s_number(s_parser_t *ps)
{
    char *end;
    unsigned long long n = strtoull(ps->p, &end, 0);
    if (end == ps->p)
        s_die(ps, "number expected");
    ps->p = end;
    return n;
}

//  Reads "(n)" after a function letter.
static unsigned long long s_arg(s_parser_t *ps)
{
    if (*ps->p++ != '(')
        s_die(ps, "'(' expected");
    unsigned long long n = s_number(ps);
    if (*ps->p++ != ')')
        s_die(ps, "')' expected");
    return n;
}

static int s_hex(s_parser_t *ps, char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    s_die(ps, "hex digit expected");
    return 0;
}

//  Reads a quoted string with \xHH, \" and \\ escapes into buf.
static void s_quoted(s_parser_t *ps, proto_buf_t *buf)
{
    if (*ps->p++ != '"')
        s_die(ps, "'\"' expected");
    while (*ps->p != '"') {
        if (!*ps->p)
            s_die(ps, "unterminated string");
        uint8_t c = (uint8_t)*ps->p++;
        if (c == '\\') {
            if (*ps->p == 'x') {
                c = (uint8_t)(s_hex(ps, ps->p[1]) * 16 + s_hex(ps, ps->p[2]));
                ps->p += 3;
            } else {
                c = (uint8_t)*ps->p++;
            }
        }
        proto_buf_append(buf, &c, 1);
    }
    ps->p++;
}

static void s_value(s_parser_t *ps, msgpack_packer *pk);

//  Parses the elements of a map or array up to close into a buffer of their
//  own, then writes header and elements.
static void s_container(s_parser_t *ps, msgpack_packer *pk, char close)
{
    proto_buf_t inner;
    proto_buf_init(&inner);
    msgpack_packer ipk;
    msgpack_packer_init(&ipk, &inner, s_write);
    size_t count = 0;
    s_skip_space(ps);
    while (*ps->p != close) {
        if (count && *ps->p++ != ',')
            s_die(ps, "',' expected");
        s_skip_space(ps);
        if (close == '}') {
            const char *start = ps->p;
            while (isalnum((unsigned char)*ps->p) || *ps->p == '_')
                ps->p++;
            bool word = ps->p > start && !isdigit((unsigned char)*start) && *ps->p != '(';
            if (word) {
                msgpack_pack_str(&ipk, (size_t)(ps->p - start));
                msgpack_pack_str_body(&ipk, start, (size_t)(ps->p - start));
            } else {
                ps->p = start;
                s_value(ps, &ipk);
            }
            s_skip_space(ps);
            if (*ps->p++ != ':')
                s_die(ps, "':' expected");
        }
        s_value(ps, &ipk);
        s_skip_space(ps);
        count++;
    }
    ps->p++;
    if (close == '}')
        msgpack_pack_map(pk, count);
    else
        msgpack_pack_array(pk, count);
    if (inner.size)
        pk->callback(pk->data, (const char *)inner.data, inner.size);
    proto_buf_release(&inner);
}

static void s_value(s_parser_t *ps, msgpack_packer *pk)
{
    s_skip_space(ps);
    char c = *ps->p;
    if (c == '{' || c == '[') {
        ps->p++;
        s_container(ps, pk, c == '{' ? '}' : ']');
    } else if (c == '"' || (c == 'b' && ps->p[1] == '"')) {
        proto_buf_t s;
        proto_buf_init(&s);
        if (c == 'b')
            ps->p++;
        s_quoted(ps, &s);
        if (c == 'b')
            msgpack_pack_bin(pk, s.size), msgpack_pack_bin_body(pk, s.data, s.size);
        else
            msgpack_pack_str(pk, s.size), msgpack_pack_str_body(pk, s.data, s.size);
        proto_buf_release(&s);
    } else if (isdigit((unsigned char)c)) {
        msgpack_pack_uint64(pk, s_number(ps));
    } else if (c == '-') {
        ps->p++;
        msgpack_pack_int64(pk, -(long long)s_number(ps));
    } else if (strncmp(ps->p, "nil", 3) == 0) {
        ps->p += 3, msgpack_pack_nil(pk);
    } else if (strncmp(ps->p, "true", 4) == 0) {
        ps->p += 4, msgpack_pack_true(pk);
    } else if (strncmp(ps->p, "false", 5) == 0) {
        ps->p += 5, msgpack_pack_false(pk);
    } else if (c == 'F') {
        ps->p++, msgpack_pack_double(pk, 1.5);
    } else if (c == 'S' || c == 'B' || c == 'D' || c == 'M' || c == 'A') {
        ps->p++;
        unsigned long long n = s_arg(ps);
        if (c == 'M')
            msgpack_pack_map(pk, n);
        else if (c == 'A')
            msgpack_pack_array(pk, n);
        else if (c == 'D') {
            for (unsigned long long i = 0; i < n; i++)
                msgpack_pack_array(pk, i + 1 < n ? 1 : 0);
        } else {
            char *fill = malloc(n ? n : 1);
            for (unsigned long long i = 0; i < n; i++)
                fill[i] = c == 'S' ? 'a' : (char)i;
            if (c == 'S')
                msgpack_pack_str(pk, n), msgpack_pack_str_body(pk, fill, n);
            else
                msgpack_pack_bin(pk, n), msgpack_pack_bin_body(pk, fill, n);
            free(fill);
        }
    } else if (c == 'X') {
        ps->p++;
        if (*ps->p++ != '(')
            s_die(ps, "'(' expected");
        while (*ps->p != ')') {
            uint8_t byte = (uint8_t)(s_hex(ps, ps->p[0]) * 16 + s_hex(ps, ps->p[1]));
            ps->p += 2;
            pk->callback(pk->data, (const char *)&byte, 1);
        }
        ps->p++;
    } else {
        s_die(ps, "value expected");
    }
}

void mptext(const char *text, proto_buf_t *out)
{
    s_parser_t ps = {text, text};
    proto_buf_reset(out);
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, s_write);
    while (*ps.p) {
        s_value(&ps, &pk);
        s_skip_space(&ps);
    }
}
