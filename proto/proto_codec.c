/*  proto_codec.c: the schema-driven msgpack codec (see proto_codec.h).

    Three parts:
    - a strict reader over raw bytes (s_next, s_skip): every msgpack value
      is read only after its whole header and body are known to be inside
      the input; container counts are checked against the bytes left and
      limits->max_items before anyone loops or allocates on them;
    - the decoder (proto_codec_decode): pass one walks the whole map and
      reads "v" and "t", pass two fills the struct of that type's schema;
    - the checker and writer (proto_codec_check, proto_codec_encode) and the
      comparison (proto_codec_equal), driven by the same schemas.

    Value rules live in one place (s_check_*): the decoder runs
    proto_codec_check on what it decoded, the encoder runs it before writing.
    The decoder itself checks only what must be known before allocating:
    types, lengths and counts.
*/
#include <assert.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "proto_codec.h"

#define S_HARD_MAX_DEPTH 64 //  Ceiling on limits->max_depth (bounds recursion)

//  One decoded allocation; the list is freed as a whole.
struct proto_mem {
    struct proto_mem *next; //  Next block
    max_align_t data[];     //  The memory handed out
};

//  Path of the field being read or checked, for error messages
//  ("conns[2].conn"). It is a stack of segments, rendered into text only
//  when an error is reported: decoding a valid frame never formats it (a
//  snprintf per key was ~7 % of the broker's main thread).
#define S_PATH_TEXT_MAX 64 //  Rendered path, NUL included; longer ones are cut
#define S_PATH_SEGMENTS 32 //  Segments kept: more can never show in the text

typedef struct {
    const char *key; //  Key bytes (borrowed; live while the segment is), NULL for an index
    size_t len;      //  Bytes of key
    size_t index;    //  Array index when key is NULL
} s_segment_t;

typedef struct {
    s_segment_t seg[S_PATH_SEGMENTS]; //  The first segments
    size_t depth;                     //  Segments pushed (may exceed S_PATH_SEGMENTS)
} s_path_t;

typedef enum {
    S_NIL,
    S_BOOL,
    S_UINT,
    S_NEG, //  Negative integer
    S_FLOAT,
    S_STR,
    S_BIN,
    S_ARRAY,
    S_MAP,
    S_EXT
} s_vtype_t;

//  One msgpack value as the reader sees it.
typedef struct {
    s_vtype_t type;     //  What it is
    uint64_t u;         //  S_UINT value
    const uint8_t *ptr; //  S_STR, S_BIN, S_EXT: body inside the input
    uint64_t len;       //  Body length, or container count
} s_value_t;

typedef struct {
    const uint8_t *start;         //  Input
    const uint8_t *p;             //  Next byte to read
    const uint8_t *end;           //  One past the input
    const proto_limits_t *limits; //  Limits in force
    unsigned max_depth;           //  limits->max_depth, clamped
    proto_mem_t **mem;            //  Where decoded memory goes
    proto_error_t *err;           //  Report, or NULL
    s_path_t path;                //  Field being read
} s_reader_t;

//  --------------------------------------------------------------------------
//  Memory and paths

void proto_mem_free(proto_mem_t **mem_p)
{
    if (!mem_p)
        return;
    proto_mem_t *mem = *mem_p;
    while (mem) {
        proto_mem_t *next = mem->next;
        free(mem);
        mem = next;
    }
    *mem_p = NULL;
}

//  Returns size zeroed bytes owned by *mem, or NULL when out of memory.
static void *s_alloc(proto_mem_t **mem, size_t size)
{
    if (size > SIZE_MAX - sizeof(proto_mem_t))
        return NULL;
    proto_mem_t *block = calloc(1, sizeof(proto_mem_t) + size);
    if (!block)
        return NULL;
    block->next = *mem;
    *mem = block;
    return block->data;
}

//  Pushes a segment; returns the old depth for s_path_pop.
static size_t s_path_push(s_path_t *path, const char *key, size_t len, size_t index)
{
    size_t old = path->depth;
    if (old < S_PATH_SEGMENTS)
        path->seg[old] = (s_segment_t){key, len, index};
    path->depth++;
    return old;
}

//  Appends ".key" (or "key" at the root; nothing for "") to the path;
//  returns the old depth. key must live until the segment is popped.
static size_t s_path_key(s_path_t *path, const char *key, size_t key_len)
{
    if (key_len == 0)
        return path->depth;
    return s_path_push(path, key, key_len, 0);
}

//  Appends "[index]" to the path; returns the old depth.
static size_t s_path_index(s_path_t *path, size_t index)
{
    return s_path_push(path, NULL, 0, index);
}

static void s_path_pop(s_path_t *path, size_t depth)
{
    path->depth = depth;
}

//  Writes the path as text into buf (S_PATH_TEXT_MAX bytes): keys joined by
//  ".", each cut to 32 bytes, indexes as "[i]", the whole cut to fit.
static void s_path_render(const s_path_t *path, char *buf)
{
    size_t len = 0;
    buf[0] = '\0';
    size_t depth = path->depth < S_PATH_SEGMENTS ? path->depth : S_PATH_SEGMENTS;
    for (size_t i = 0; i < depth && len + 1 < S_PATH_TEXT_MAX; i++) {
        const s_segment_t *seg = &path->seg[i];
        if (seg->key)
            snprintf(buf + len, S_PATH_TEXT_MAX - len, "%s%.*s", len ? "." : "",
                     (int)(seg->len > 32 ? 32 : seg->len), seg->key);
        else
            snprintf(buf + len, S_PATH_TEXT_MAX - len, "[%zu]", seg->index);
        len += strlen(buf + len);
    }
}

static proto_status_t s_fail(s_path_t *path, proto_error_t *err, proto_status_t code, uint64_t got,
                             uint64_t max)
{
    if (!err)
        return code;
    char text[S_PATH_TEXT_MAX];
    s_path_render(path, text);
    return proto_error_set(err, code, text, got, max);
}

//  Reports an error found by the reader, with the offset where it stopped.
static proto_status_t s_rfail(s_reader_t *r, proto_status_t code, uint64_t got, uint64_t max)
{
    if (r->err)
        r->err->offset = (size_t)(r->p - r->start);
    return s_fail(&r->path, r->err, code, got, max);
}

//  --------------------------------------------------------------------------
//  Value rules, shared by the decoder and the encoder

static bool s_is_id_char(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == ':' || c == '-';
}

//  True when s[0..len) is well-formed UTF-8 (no overlong forms, no
//  surrogates, nothing above U+10FFFF) and holds no NUL.
static bool s_is_utf8(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) {
            n = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (len - i - 1 < n)
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

//  Most bytes a string or byte string of def may hold.
static uint64_t s_max_len(const proto_fdef_t *def, const proto_limits_t *limits)
{
    if (def->flags & PROTO_F_LONG)
        return limits->max_text;
    if (def->flags & PROTO_F_PAYLOAD)
        return limits->max_payload;
    return def->max;
}

//  Most elements a list or pair map of def may hold.
static uint64_t s_max_count(const proto_fdef_t *def, const proto_limits_t *limits)
{
    if (def->max && def->max < limits->max_items)
        return def->max;
    return limits->max_items;
}

static uint64_t s_max_number(const proto_fdef_t *def)
{
    if (def->max)
        return def->max;
    if (def->kind == PROTO_K_U16)
        return UINT16_MAX;
    if (def->kind == PROTO_K_U32)
        return UINT32_MAX;
    return UINT64_MAX;
}

//  Checks a string value of def (length, then charset or UTF-8).
static proto_status_t s_check_str(const proto_fdef_t *def, const char *s, size_t len,
                                  const proto_limits_t *limits, s_path_t *path, proto_error_t *err)
{
    uint64_t max = s_max_len(def, limits);
    if (len > max)
        return s_fail(path, err, PROTO_E_TOO_LONG, len, max);
    if (def->flags & PROTO_F_ID) {
        if (len == 0)
            return s_fail(path, err, PROTO_E_VALUE, 0, max);
        for (size_t i = 0; i < len; i++)
            if (!s_is_id_char((uint8_t)s[i]))
                return s_fail(path, err, PROTO_E_VALUE, 0, max);
        return PROTO_OK;
    }
    if (!s_is_utf8((const uint8_t *)s, len))
        return s_fail(path, err, PROTO_E_VALUE, 0, max);
    return PROTO_OK;
}

static proto_status_t s_check_number(const proto_fdef_t *def, uint64_t value, s_path_t *path,
                                     proto_error_t *err)
{
    uint64_t max = s_max_number(def);
    if (value < def->min || value > max)
        return s_fail(path, err, PROTO_E_VALUE, value, max);
    return PROTO_OK;
}

//  The string of PROTO_K_STR field def in the struct at base.
static const char *s_str_at(const proto_fdef_t *def, const char *base)
{
    return *(const char *const *)(base + def->off);
}

static int s_str_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

//  Refuses a pair map with the same key twice (sorting a copy of the key
//  pointers: n log n, whatever the input).
static proto_status_t s_check_pair_keys(const proto_schema_t *sub, const char *pairs, size_t count,
                                        s_path_t *path, proto_error_t *err)
{
    if (count < 2)
        return PROTO_OK;
    const char **sorted = malloc(count * sizeof(*sorted));
    if (!sorted)
        return s_fail(path, err, PROTO_E_NOMEM, 0, 0);
    for (size_t i = 0; i < count; i++)
        sorted[i] = s_str_at(&sub->fdefs[0], pairs + i * sub->size);
    qsort(sorted, count, sizeof(*sorted), s_str_cmp);
    proto_status_t rc = PROTO_OK;
    for (size_t i = 1; i < count && rc == PROTO_OK; i++) {
        if (strcmp(sorted[i - 1], sorted[i]) == 0) {
            const char *key = sorted[i];
            size_t old = s_path_key(path, key, strlen(key));
            rc = s_fail(path, err, PROTO_E_DUPLICATE, 0, 0);
            s_path_pop(path, old);
        }
    }
    free(sorted);
    return rc;
}

static proto_status_t s_check_obj(const proto_schema_t *schema, const void *obj,
                                  const proto_limits_t *limits, s_path_t *path, proto_error_t *err);

//  Checks the pairs of a PROTO_K_PAIRS field: the key by the element's
//  first field, the value by its second.
static proto_status_t s_check_pairs(const proto_fdef_t *def, const char *pairs, size_t count,
                                    const proto_limits_t *limits, s_path_t *path,
                                    proto_error_t *err)
{
    const proto_schema_t *sub = def->sub;
    assert(sub->fdefs_count == 2 && sub->fdefs[0].kind == PROTO_K_STR &&
           sub->fdefs[1].kind == PROTO_K_STR);
    const proto_fdef_t *key_def = &sub->fdefs[0];
    const proto_fdef_t *value_def = &sub->fdefs[1];
    for (size_t i = 0; i < count; i++) {
        const char *key = s_str_at(key_def, pairs + i * sub->size);
        const char *value = s_str_at(value_def, pairs + i * sub->size);
        if (!key || !value) {
            size_t old = s_path_index(path, i);
            proto_status_t rc = s_fail(path, err, PROTO_E_MISSING, 0, 0);
            s_path_pop(path, old);
            return rc;
        }
        size_t old = s_path_key(path, key, strlen(key));
        proto_status_t rc = s_check_str(key_def, key, strlen(key), limits, path, err);
        if (rc == PROTO_OK)
            rc = s_check_str(value_def, value, strlen(value), limits, path, err);
        s_path_pop(path, old);
        if (rc != PROTO_OK)
            return rc;
    }
    return s_check_pair_keys(sub, pairs, count, path, err);
}

//  Checks one field of obj.
static proto_status_t s_check_field(const proto_fdef_t *def, const void *obj,
                                    const proto_limits_t *limits, s_path_t *path,
                                    proto_error_t *err)
{
    const char *base = obj;
    bool required = def->flags & PROTO_F_REQ;
    switch (def->kind) {
    case PROTO_K_STR: {
        const char *s = *(const char *const *)(base + def->off);
        if (!s)
            return required ? s_fail(path, err, PROTO_E_MISSING, 0, 0) : PROTO_OK;
        return s_check_str(def, s, strlen(s), limits, path, err);
    }
    case PROTO_K_BIN: {
        const uint8_t *data = *(const uint8_t *const *)(base + def->off);
        size_t size = *(const size_t *)(base + def->aux);
        uint64_t max = s_max_len(def, limits);
        if (!data && size)
            return s_fail(path, err, PROTO_E_VALUE, size, max);
        if (!data)
            return required ? s_fail(path, err, PROTO_E_MISSING, 0, 0) : PROTO_OK;
        if (size > max)
            return s_fail(path, err, PROTO_E_TOO_LONG, size, max);
        return PROTO_OK;
    }
    case PROTO_K_KEY:
        return PROTO_OK;
    case PROTO_K_U64:
    case PROTO_K_U32:
    case PROTO_K_U16: {
        uint64_t value = def->kind == PROTO_K_U64   ? *(const uint64_t *)(base + def->off)
                         : def->kind == PROTO_K_U32 ? *(const uint32_t *)(base + def->off)
                                                    : *(const uint16_t *)(base + def->off);
        if ((def->flags & PROTO_F_HAS) && !*(const bool *)(base + def->aux))
            return PROTO_OK;
        if ((def->flags & PROTO_F_OMIT0) && value == 0)
            return PROTO_OK;
        return s_check_number(def, value, path, err);
    }
    case PROTO_K_ENUM: {
        int value = *(const int *)(base + def->off);
        if (value < 0 || (uint64_t)value > def->max || !def->names[value])
            return s_fail(path, err, PROTO_E_VALUE, (uint64_t)value, 0);
        return PROTO_OK;
    }
    case PROTO_K_LIST: {
        const char *items = *(const char *const *)(base + def->off);
        size_t count = *(const size_t *)(base + def->aux);
        uint64_t max = s_max_count(def, limits);
        if (count > max)
            return s_fail(path, err, PROTO_E_TOO_MANY, count, max);
        if (count && !items)
            return s_fail(path, err, PROTO_E_MISSING, 0, 0);
        for (size_t i = 0; i < count; i++) {
            size_t old = s_path_index(path, i);
            proto_status_t rc =
                s_check_obj(def->sub, items + i * def->sub->size, limits, path, err);
            s_path_pop(path, old);
            if (rc != PROTO_OK)
                return rc;
        }
        return PROTO_OK;
    }
    case PROTO_K_PAIRS: {
        const char *pairs = *(const char *const *)(base + def->off);
        size_t count = *(const size_t *)(base + def->aux);
        uint64_t max = s_max_count(def, limits);
        if (count > max)
            return s_fail(path, err, PROTO_E_TOO_MANY, count, max);
        if (count && !pairs)
            return s_fail(path, err, PROTO_E_MISSING, 0, 0);
        return s_check_pairs(def, pairs, count, limits, path, err);
    }
    }
    assert(!"unknown field kind");
    return PROTO_E_VALUE;
}

static proto_status_t s_check_obj(const proto_schema_t *schema, const void *obj,
                                  const proto_limits_t *limits, s_path_t *path, proto_error_t *err)
{
    for (size_t i = 0; i < schema->fdefs_count; i++) {
        const proto_fdef_t *def = &schema->fdefs[i];
        size_t old = s_path_key(path, def->key, strlen(def->key));
        proto_status_t rc = s_check_field(def, obj, limits, path, err);
        s_path_pop(path, old);
        if (rc != PROTO_OK)
            return rc;
    }
    if (schema->rule)
        return schema->rule(obj, err);
    return PROTO_OK;
}

proto_status_t proto_codec_check(const proto_schema_t *schema, const void *obj,
                                 const proto_limits_t *limits, proto_error_t *err)
{
    assert(schema && obj);
    proto_limits_t defaults = proto_limits_default();
    s_path_t path = {.depth = 0};
    return s_check_obj(schema, obj, limits ? limits : &defaults, &path, err);
}

//  --------------------------------------------------------------------------
//  Reader

static proto_status_t s_need(s_reader_t *r, size_t n)
{
    if ((size_t)(r->end - r->p) < n)
        return s_rfail(r, PROTO_E_TRUNCATED, 0, 0);
    return PROTO_OK;
}

//  Reads a big-endian unsigned of n bytes (1, 2, 4 or 8).
static proto_status_t s_read_be(s_reader_t *r, size_t n, uint64_t *out)
{
    if (s_need(r, n) != PROTO_OK)
        return PROTO_E_TRUNCATED;
    uint64_t value = 0;
    for (size_t i = 0; i < n; i++)
        value = (value << 8) | r->p[i];
    r->p += n;
    *out = value;
    return PROTO_OK;
}

//  Takes a body of len bytes (string, bytes, extension).
static proto_status_t s_read_body(s_reader_t *r, uint64_t len, s_value_t *v)
{
    if ((uint64_t)(r->end - r->p) < len)
        return s_rfail(r, PROTO_E_TRUNCATED, 0, 0);
    v->ptr = r->p;
    v->len = len;
    r->p += len;
    return PROTO_OK;
}

//  Checks a container count: its entries need at least min_bytes each.
static proto_status_t s_read_count(s_reader_t *r, uint64_t count, size_t min_bytes, s_value_t *v)
{
    if (count > (uint64_t)(r->end - r->p) / min_bytes)
        return s_rfail(r, PROTO_E_TRUNCATED, 0, 0);
    if (count > r->limits->max_items)
        return s_rfail(r, PROTO_E_TOO_MANY, count, r->limits->max_items);
    v->len = count;
    return PROTO_OK;
}

//  Reads the header of the next value; strings, bytes and extensions are
//  consumed whole, containers only up to their first element.
static proto_status_t s_next(s_reader_t *r, s_value_t *v)
{
    memset(v, 0, sizeof(*v));
    if (s_need(r, 1) != PROTO_OK)
        return PROTO_E_TRUNCATED;
    uint8_t b = *r->p++;
    uint64_t n = 0;
    if (b <= 0x7f) {
        v->type = S_UINT, v->u = b;
        return PROTO_OK;
    }
    if (b >= 0xe0) {
        v->type = S_NEG;
        return PROTO_OK;
    }
    if ((b & 0xf0) == 0x80) {
        v->type = S_MAP;
        return s_read_count(r, b & 0x0f, 2, v);
    }
    if ((b & 0xf0) == 0x90) {
        v->type = S_ARRAY;
        return s_read_count(r, b & 0x0f, 1, v);
    }
    if ((b & 0xe0) == 0xa0) {
        v->type = S_STR;
        return s_read_body(r, b & 0x1f, v);
    }
    switch (b) {
    case 0xc0:
        v->type = S_NIL;
        return PROTO_OK;
    case 0xc2:
    case 0xc3:
        v->type = S_BOOL;
        return PROTO_OK;
    case 0xc4:
    case 0xc5:
    case 0xc6:
        v->type = S_BIN;
        if (s_read_be(r, (size_t)1 << (b - 0xc4), &n) != PROTO_OK)
            return PROTO_E_TRUNCATED;
        return s_read_body(r, n, v);
    case 0xc7:
    case 0xc8:
    case 0xc9:
        v->type = S_EXT;
        if (s_read_be(r, (size_t)1 << (b - 0xc7), &n) != PROTO_OK)
            return PROTO_E_TRUNCATED;
        return s_read_body(r, n + 1, v);
    case 0xca:
    case 0xcb:
        v->type = S_FLOAT;
        return s_read_body(r, b == 0xca ? 4 : 8, v);
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf:
        v->type = S_UINT;
        return s_read_be(r, (size_t)1 << (b - 0xcc), &v->u);
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3: {
        size_t size = (size_t)1 << (b - 0xd0);
        if (s_read_be(r, size, &n) != PROTO_OK)
            return PROTO_E_TRUNCATED;
        bool negative = (n >> (size * 8 - 1)) & 1;
        v->type = negative ? S_NEG : S_UINT;
        v->u = negative ? 0 : n;
        return PROTO_OK;
    }
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        v->type = S_EXT;
        return s_read_body(r, 1 + ((size_t)1 << (b - 0xd4)), v);
    case 0xd9:
    case 0xda:
    case 0xdb:
        v->type = S_STR;
        if (s_read_be(r, (size_t)1 << (b - 0xd9), &n) != PROTO_OK)
            return PROTO_E_TRUNCATED;
        return s_read_body(r, n, v);
    case 0xdc:
    case 0xdd:
        v->type = S_ARRAY;
        if (s_read_be(r, b == 0xdc ? 2 : 4, &n) != PROTO_OK)
            return PROTO_E_TRUNCATED;
        return s_read_count(r, n, 1, v);
    case 0xde:
    case 0xdf:
        v->type = S_MAP;
        if (s_read_be(r, b == 0xde ? 2 : 4, &n) != PROTO_OK)
            return PROTO_E_TRUNCATED;
        return s_read_count(r, n, 2, v);
    default: //  0xc1, never used
        r->p--;
        return s_rfail(r, PROTO_E_TYPE, b, 0);
    }
}

//  Skips the rest of value v (read by s_next) found at nesting depth.
static proto_status_t s_skip_rest(s_reader_t *r, const s_value_t *v, unsigned depth)
{
    if (v->type != S_ARRAY && v->type != S_MAP)
        return PROTO_OK;
    if (depth >= r->max_depth)
        return s_rfail(r, PROTO_E_DEPTH, depth + 1, r->max_depth);
    uint64_t items = v->type == S_MAP ? 2 * (uint64_t)v->len : v->len;
    for (uint64_t i = 0; i < items; i++) {
        s_value_t child;
        proto_status_t rc = s_next(r, &child);
        if (rc == PROTO_OK)
            rc = s_skip_rest(r, &child, depth + 1);
        if (rc != PROTO_OK)
            return rc;
    }
    return PROTO_OK;
}

//  Reads a map key (a string) into *key.
static proto_status_t s_read_key(s_reader_t *r, s_value_t *key)
{
    proto_status_t rc = s_next(r, key);
    if (rc != PROTO_OK)
        return rc;
    if (key->type != S_STR) {
        size_t old = s_path_key(&r->path, "(key)", 5);
        rc = s_rfail(r, PROTO_E_TYPE, 0, 0);
        s_path_pop(&r->path, old);
        return rc;
    }
    return PROTO_OK;
}

static bool s_key_is(const s_value_t *key, const char *name)
{
    size_t len = strlen(name);
    return key->len == len && memcmp(key->ptr, name, len) == 0;
}

//  --------------------------------------------------------------------------
//  Decoder

static proto_status_t s_decode_map(s_reader_t *r, const proto_schema_t *schema, char *obj,
                                   const s_value_t *map, unsigned depth);

//  Reads a string value into a NUL-terminated copy; nil leaves an optional
//  field absent.
static proto_status_t s_decode_str(s_reader_t *r, const proto_fdef_t *def, const s_value_t *v,
                                   const char **out)
{
    if (v->type == S_NIL && !(def->flags & PROTO_F_REQ))
        return PROTO_OK;
    if (v->type != S_STR)
        return s_rfail(r, PROTO_E_TYPE, 0, 0);
    uint64_t max = s_max_len(def, r->limits);
    if (v->len > max)
        return s_rfail(r, PROTO_E_TOO_LONG, v->len, max);
    if (memchr(v->ptr, 0, v->len))
        return s_rfail(r, PROTO_E_VALUE, 0, 0);
    char *copy = s_alloc(r->mem, (size_t)v->len + 1);
    if (!copy)
        return s_rfail(r, PROTO_E_NOMEM, 0, 0);
    memcpy(copy, v->ptr, v->len);
    *out = copy;
    return PROTO_OK;
}

//  Reads an unsigned number; nil leaves an optional number absent.
static proto_status_t s_decode_number(s_reader_t *r, const proto_fdef_t *def, const s_value_t *v,
                                      char *obj)
{
    bool optional = def->flags & (PROTO_F_HAS | PROTO_F_OMIT0);
    if (v->type == S_NIL && optional)
        return PROTO_OK;
    if (v->type == S_NEG)
        return s_rfail(r, PROTO_E_VALUE, 0, s_max_number(def));
    if (v->type != S_UINT)
        return s_rfail(r, PROTO_E_TYPE, 0, 0);
    if (v->u > s_max_number(def))
        return s_rfail(r, PROTO_E_VALUE, v->u, s_max_number(def));
    if (def->kind == PROTO_K_U64)
        *(uint64_t *)(obj + def->off) = v->u;
    else if (def->kind == PROTO_K_U32)
        *(uint32_t *)(obj + def->off) = (uint32_t)v->u;
    else
        *(uint16_t *)(obj + def->off) = (uint16_t)v->u;
    if (def->flags & PROTO_F_HAS)
        *(bool *)(obj + def->aux) = true;
    return PROTO_OK;
}

static proto_status_t s_decode_list(s_reader_t *r, const proto_fdef_t *def, const s_value_t *v,
                                    char *obj, unsigned depth)
{
    if (v->type != S_ARRAY)
        return s_rfail(r, PROTO_E_TYPE, 0, 0);
    uint64_t max = s_max_count(def, r->limits);
    if (v->len > max)
        return s_rfail(r, PROTO_E_TOO_MANY, v->len, max);
    const proto_schema_t *sub = def->sub;
    char *items = s_alloc(r->mem, (size_t)v->len * sub->size);
    if (!items)
        return s_rfail(r, PROTO_E_NOMEM, 0, 0);
    for (uint64_t i = 0; i < v->len; i++) {
        size_t old = s_path_index(&r->path, i);
        s_value_t item;
        proto_status_t rc = s_next(r, &item);
        if (rc == PROTO_OK && item.type != S_MAP)
            rc = s_rfail(r, PROTO_E_TYPE, 0, 0);
        if (rc == PROTO_OK)
            rc = s_decode_map(r, sub, items + (size_t)i * sub->size, &item, depth + 2);
        if (rc != PROTO_OK)
            return rc;
        s_path_pop(&r->path, old);
    }
    *(char **)(obj + def->off) = items;
    *(size_t *)(obj + def->aux) = v->len;
    return PROTO_OK;
}

//  Reads a map of strings into elements of def->sub: each key into the
//  element's first field, its value into the second.
static proto_status_t s_decode_pairs(s_reader_t *r, const proto_fdef_t *def, const s_value_t *v,
                                     char *obj)
{
    if (v->type != S_MAP)
        return s_rfail(r, PROTO_E_TYPE, 0, 0);
    uint64_t max = s_max_count(def, r->limits);
    if (v->len > max)
        return s_rfail(r, PROTO_E_TOO_MANY, v->len, max);
    const proto_schema_t *sub = def->sub;
    assert(sub->fdefs_count == 2 && sub->fdefs[0].kind == PROTO_K_STR &&
           sub->fdefs[1].kind == PROTO_K_STR);
    const proto_fdef_t *key_def = &sub->fdefs[0];
    const proto_fdef_t *value_def = &sub->fdefs[1];
    char *pairs = s_alloc(r->mem, (size_t)v->len * sub->size);
    if (!pairs)
        return s_rfail(r, PROTO_E_NOMEM, 0, 0);
    for (uint64_t i = 0; i < v->len; i++) {
        char *pair = pairs + (size_t)i * sub->size;
        const char **value_p = (const char **)(pair + value_def->off);
        s_value_t key, value;
        proto_status_t rc = s_read_key(r, &key);
        if (rc != PROTO_OK)
            return rc;
        size_t old = s_path_key(&r->path, (const char *)key.ptr, key.len);
        rc = s_decode_str(r, key_def, &key, (const char **)(pair + key_def->off));
        if (rc == PROTO_OK)
            rc = s_next(r, &value);
        if (rc == PROTO_OK)
            rc = s_decode_str(r, value_def, &value, value_p);
        if (rc == PROTO_OK && !*value_p)
            rc = s_rfail(r, PROTO_E_TYPE, 0, 0); //  nil is no value
        if (rc != PROTO_OK)
            return rc;
        s_path_pop(&r->path, old);
    }
    *(char **)(obj + def->off) = pairs;
    *(size_t *)(obj + def->aux) = v->len;
    return PROTO_OK;
}

//  Decodes the value of one known key into obj.
static proto_status_t s_decode_field(s_reader_t *r, const proto_fdef_t *def, char *obj,
                                     unsigned depth)
{
    s_value_t v;
    proto_status_t rc = s_next(r, &v);
    if (rc != PROTO_OK)
        return rc;
    //  Containers where none belongs are a type error before anything else.
    bool container = v.type == S_MAP || v.type == S_ARRAY;
    if (container && def->kind != PROTO_K_LIST && def->kind != PROTO_K_PAIRS)
        return s_rfail(r, PROTO_E_TYPE, 0, 0);
    switch (def->kind) {
    case PROTO_K_STR:
        return s_decode_str(r, def, &v, (const char **)(obj + def->off));
    case PROTO_K_BIN: {
        if (v.type != S_BIN)
            return s_rfail(r, PROTO_E_TYPE, 0, 0);
        uint64_t max = s_max_len(def, r->limits);
        if (v.len > max)
            return s_rfail(r, PROTO_E_TOO_LONG, v.len, max);
        uint8_t *copy = s_alloc(r->mem, v.len ? v.len : 1);
        if (!copy)
            return s_rfail(r, PROTO_E_NOMEM, 0, 0);
        memcpy(copy, v.ptr, v.len);
        *(uint8_t **)(obj + def->off) = copy;
        *(size_t *)(obj + def->aux) = v.len;
        return PROTO_OK;
    }
    case PROTO_K_KEY:
        if (v.type == S_NIL && (def->flags & PROTO_F_HAS))
            return PROTO_OK; //  An optional key given as nil: absent
        if (v.type != S_BIN)
            return s_rfail(r, PROTO_E_TYPE, 0, 0);
        if (v.len != PROTO_KEY_SIZE)
            return s_rfail(r, PROTO_E_VALUE, v.len, PROTO_KEY_SIZE);
        memcpy(obj + def->off, v.ptr, PROTO_KEY_SIZE);
        if (def->flags & PROTO_F_HAS)
            *(bool *)(obj + def->aux) = true;
        return PROTO_OK;
    case PROTO_K_U64:
    case PROTO_K_U32:
    case PROTO_K_U16:
        return s_decode_number(r, def, &v, obj);
    case PROTO_K_ENUM:
        if (v.type != S_STR)
            return s_rfail(r, PROTO_E_TYPE, 0, 0);
        for (uint64_t value = 0; value <= def->max; value++) {
            if (def->names[value] && s_key_is(&v, def->names[value])) {
                *(int *)(obj + def->off) = (int)value;
                return PROTO_OK;
            }
        }
        return s_rfail(r, PROTO_E_VALUE, 0, 0);
    case PROTO_K_LIST:
        return s_decode_list(r, def, &v, obj, depth);
    case PROTO_K_PAIRS:
        return s_decode_pairs(r, def, &v, obj);
    }
    assert(!"unknown field kind");
    return PROTO_E_VALUE;
}

static const proto_fdef_t *s_find_fdef(const proto_schema_t *schema, const s_value_t *key,
                                       size_t *index)
{
    for (size_t i = 0; i < schema->fdefs_count; i++) {
        if (s_key_is(key, schema->fdefs[i].key)) {
            *index = i;
            return &schema->fdefs[i];
        }
    }
    return NULL;
}

//  Decodes the entries of map (header already read, at nesting depth) into
//  obj: known keys by schema, unknown keys skipped (so are "v" and "t" at the
//  top: pass one read them). Refuses duplicates and missing required keys.
//  Pass one has walked the input, so truncation and depth are known good.
static proto_status_t s_decode_map(s_reader_t *r, const proto_schema_t *schema, char *obj,
                                   const s_value_t *map, unsigned depth)
{
    assert(schema->fdefs_count <= 32);
    uint32_t seen = 0;
    for (uint64_t i = 0; i < map->len; i++) {
        s_value_t key;
        proto_status_t rc = s_read_key(r, &key);
        if (rc != PROTO_OK)
            return rc;
        size_t index = 0;
        const proto_fdef_t *def = s_find_fdef(schema, &key, &index);
        size_t old = s_path_key(&r->path, (const char *)key.ptr, key.len);
        if (def && (seen & (1u << index)))
            return s_rfail(r, PROTO_E_DUPLICATE, 0, 0);
        if (def) {
            seen |= 1u << index;
            rc = s_decode_field(r, def, obj, depth);
        } else {
            s_value_t v;
            rc = s_next(r, &v);
            if (rc == PROTO_OK)
                rc = s_skip_rest(r, &v, depth + 1);
        }
        if (rc != PROTO_OK)
            return rc;
        s_path_pop(&r->path, old);
    }
    for (size_t i = 0; i < schema->fdefs_count; i++) {
        const proto_fdef_t *def = &schema->fdefs[i];
        if ((def->flags & PROTO_F_REQ) && !(seen & (1u << i))) {
            size_t old = s_path_key(&r->path, def->key, strlen(def->key));
            proto_status_t rc = s_rfail(r, PROTO_E_MISSING, 0, 0);
            s_path_pop(&r->path, old);
            return rc;
        }
    }
    return PROTO_OK;
}

//  Reads the value of "v" or "t": an unsigned number up to max.
static proto_status_t s_read_header_number(s_reader_t *r, const s_value_t *key, uint64_t max,
                                           bool *seen, uint64_t *out)
{
    size_t old = s_path_key(&r->path, (const char *)key->ptr, key->len);
    s_value_t v;
    proto_status_t rc = PROTO_OK;
    if (*seen)
        rc = s_rfail(r, PROTO_E_DUPLICATE, 0, 0);
    if (rc == PROTO_OK)
        rc = s_next(r, &v);
    if (rc == PROTO_OK && v.type != S_UINT)
        rc = s_rfail(r, v.type == S_NEG ? PROTO_E_VALUE : PROTO_E_TYPE, 0, 0);
    if (rc == PROTO_OK && v.u > max)
        rc = s_rfail(r, PROTO_E_VALUE, v.u, max);
    if (rc != PROTO_OK)
        return rc;
    *seen = true;
    *out = v.u;
    s_path_pop(&r->path, old);
    return PROTO_OK;
}

//  Pass one: walks the whole top-level map, reads "v" and "t", refuses
//  trailing bytes. The map header is left in *map.
static proto_status_t s_scan_header(s_reader_t *r, s_value_t *map, uint64_t *version,
                                    uint64_t *type)
{
    proto_status_t rc = s_next(r, map);
    if (rc != PROTO_OK)
        return rc;
    if (map->type != S_MAP)
        return s_rfail(r, PROTO_E_NOT_MAP, 0, 0);
    bool seen_v = false, seen_t = false;
    for (uint64_t i = 0; i < map->len; i++) {
        s_value_t key, v;
        rc = s_read_key(r, &key);
        if (rc != PROTO_OK)
            return rc;
        if (s_key_is(&key, "v")) {
            rc = s_read_header_number(r, &key, UINT16_MAX, &seen_v, version);
        } else if (s_key_is(&key, "t")) {
            rc = s_read_header_number(r, &key, UINT16_MAX, &seen_t, type);
        } else {
            size_t old = s_path_key(&r->path, (const char *)key.ptr, key.len);
            rc = s_next(r, &v);
            if (rc == PROTO_OK)
                rc = s_skip_rest(r, &v, 1);
            if (rc == PROTO_OK)
                s_path_pop(&r->path, old);
        }
        if (rc != PROTO_OK)
            return rc;
    }
    if (r->p != r->end)
        return s_rfail(r, PROTO_E_TRAILING, (uint64_t)(r->end - r->p), 0);
    s_path_t *path = &r->path;
    if (!seen_v) {
        s_path_key(path, "v", 1);
        return s_rfail(r, PROTO_E_MISSING, 0, 0);
    }
    if ((*version >> 8) != PROTO_VERSION_MAJOR) {
        s_path_key(path, "v", 1);
        return s_rfail(r, PROTO_E_VERSION, *version, PROTO_VERSION_MAJOR);
    }
    if (!seen_t) {
        s_path_key(path, "t", 1);
        return s_rfail(r, PROTO_E_MISSING, 0, 0);
    }
    return PROTO_OK;
}

const proto_schema_t *proto_codec_find(const proto_dialect_t *dialect, unsigned type)
{
    for (size_t i = 0; i < dialect->count; i++)
        if (dialect->schemas[i]->type == type)
            return dialect->schemas[i];
    return NULL;
}

proto_status_t proto_codec_decode(const proto_dialect_t *dialect, const uint8_t *data, size_t size,
                                  const proto_limits_t *limits, size_t max_size, void *obj,
                                  size_t obj_size, const proto_schema_t **schema_out,
                                  uint16_t *version_out, proto_mem_t **mem, proto_error_t *err)
{
    assert(dialect && obj && schema_out && version_out && mem);
    proto_limits_t defaults = proto_limits_default();
    if (!limits)
        limits = &defaults;
    memset(obj, 0, obj_size);
    *mem = NULL;
    proto_error_clear(err);
    assert(data || size == 0);
    if (size > max_size)
        return proto_error_set(err, PROTO_E_FRAME_TOO_BIG, NULL, size, max_size);
    static const uint8_t empty[1] = {0};
    s_reader_t r = {.start = data ? data : empty,
                    .limits = limits,
                    .max_depth =
                        limits->max_depth < S_HARD_MAX_DEPTH ? limits->max_depth : S_HARD_MAX_DEPTH,
                    .mem = mem,
                    .err = err};
    r.p = r.start;
    r.end = r.start + size;

    s_value_t map;
    uint64_t version = 0, type = 0;
    proto_status_t rc = s_scan_header(&r, &map, &version, &type);
    if (rc != PROTO_OK)
        return rc;
    const proto_schema_t *schema =
        type <= UINT_MAX ? proto_codec_find(dialect, (unsigned)type) : NULL;
    if (!schema)
        return proto_error_set(err, PROTO_E_UNKNOWN_TYPE, "t", type, 0);

    r.p = r.start;
    s_next(&r, &map); //  Known good: pass one read it
    rc = s_decode_map(&r, schema, obj, &map, 0);
    if (rc == PROTO_OK)
        rc = s_check_obj(schema, obj, limits, &r.path, err);
    if (rc != PROTO_OK) {
        proto_mem_free(mem);
        memset(obj, 0, obj_size);
        return rc;
    }
    *schema_out = schema;
    *version_out = (uint16_t)version;
    return PROTO_OK;
}

//  --------------------------------------------------------------------------
//  Writer

static int s_write(void *data, const char *buf, size_t len)
{
    return proto_buf_append(data, buf, len);
}

static int s_pack_str(msgpack_packer *pk, const char *s)
{
    size_t len = strlen(s);
    return msgpack_pack_str(pk, len) || msgpack_pack_str_body(pk, s, len);
}

//  True when field def of obj is to be written.
static bool s_present(const proto_fdef_t *def, const char *obj)
{
    switch (def->kind) {
    case PROTO_K_STR:
    case PROTO_K_BIN:
        return *(const void *const *)(obj + def->off) != NULL;
    case PROTO_K_U64:
    case PROTO_K_U32:
    case PROTO_K_U16:
        if (def->flags & PROTO_F_HAS)
            return *(const bool *)(obj + def->aux);
        if (def->flags & PROTO_F_OMIT0)
            return def->kind == PROTO_K_U64   ? *(const uint64_t *)(obj + def->off) != 0
                   : def->kind == PROTO_K_U32 ? *(const uint32_t *)(obj + def->off) != 0
                                              : *(const uint16_t *)(obj + def->off) != 0;
        return true;
    case PROTO_K_KEY:
        return !(def->flags & PROTO_F_HAS) || *(const bool *)(obj + def->aux);
    case PROTO_K_LIST:
    case PROTO_K_PAIRS:
        return (def->flags & PROTO_F_REQ) || *(const size_t *)(obj + def->aux) != 0;
    default:
        return true;
    }
}

static int s_pack_obj(msgpack_packer *pk, const proto_schema_t *schema, const char *obj,
                      const uint64_t *header);

static int s_pack_field(msgpack_packer *pk, const proto_fdef_t *def, const char *obj)
{
    switch (def->kind) {
    case PROTO_K_STR:
        return s_pack_str(pk, *(const char *const *)(obj + def->off));
    case PROTO_K_BIN: {
        const uint8_t *data = *(const uint8_t *const *)(obj + def->off);
        size_t size = *(const size_t *)(obj + def->aux);
        return msgpack_pack_bin(pk, size) || msgpack_pack_bin_body(pk, data, size);
    }
    case PROTO_K_KEY:
        return msgpack_pack_bin(pk, PROTO_KEY_SIZE) ||
               msgpack_pack_bin_body(pk, obj + def->off, PROTO_KEY_SIZE);
    case PROTO_K_U64:
        return msgpack_pack_uint64(pk, *(const uint64_t *)(obj + def->off));
    case PROTO_K_U32:
        return msgpack_pack_uint64(pk, *(const uint32_t *)(obj + def->off));
    case PROTO_K_U16:
        return msgpack_pack_uint64(pk, *(const uint16_t *)(obj + def->off));
    case PROTO_K_ENUM: //  Checked before: a value with a name
        return s_pack_str(pk, def->names[*(const int *)(obj + def->off)]);
    case PROTO_K_LIST: {
        const char *items = *(const char *const *)(obj + def->off);
        size_t count = *(const size_t *)(obj + def->aux);
        int rc = msgpack_pack_array(pk, count);
        for (size_t i = 0; i < count && rc == 0; i++)
            rc = s_pack_obj(pk, def->sub, items + i * def->sub->size, NULL);
        return rc;
    }
    case PROTO_K_PAIRS: {
        const char *pairs = *(const char *const *)(obj + def->off);
        size_t count = *(const size_t *)(obj + def->aux);
        const proto_schema_t *sub = def->sub;
        int rc = msgpack_pack_map(pk, count);
        for (size_t i = 0; i < count && rc == 0; i++)
            rc = s_pack_str(pk, s_str_at(&sub->fdefs[0], pairs + i * sub->size)) ||
                 s_pack_str(pk, s_str_at(&sub->fdefs[1], pairs + i * sub->size));
        return rc;
    }
    }
    assert(!"unknown field kind");
    return -1;
}

//  Writes obj as a map; header, when not NULL, is {version, type} to write
//  first as "v" and "t".
static int s_pack_obj(msgpack_packer *pk, const proto_schema_t *schema, const char *obj,
                      const uint64_t *header)
{
    size_t count = header ? 2 : 0;
    for (size_t i = 0; i < schema->fdefs_count; i++)
        count += s_present(&schema->fdefs[i], obj);
    int rc = msgpack_pack_map(pk, count);
    if (header && rc == 0)
        rc = s_pack_str(pk, "v") || msgpack_pack_uint64(pk, header[0]) || s_pack_str(pk, "t") ||
             msgpack_pack_uint64(pk, header[1]);
    for (size_t i = 0; i < schema->fdefs_count && rc == 0; i++) {
        const proto_fdef_t *def = &schema->fdefs[i];
        if (s_present(def, obj))
            rc = s_pack_str(pk, def->key) || s_pack_field(pk, def, obj);
    }
    return rc;
}

proto_status_t proto_codec_encode(const proto_schema_t *schema, const void *obj,
                                  const proto_limits_t *limits, size_t max_size, proto_buf_t *out,
                                  proto_error_t *err)
{
    assert(schema && obj && out);
    proto_error_clear(err);
    proto_status_t rc = proto_codec_check(schema, obj, limits, err);
    if (rc != PROTO_OK)
        return rc;
    proto_buf_reset(out);
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, s_write);
    uint64_t header[2] = {PROTO_VERSION, schema->type};
    if (s_pack_obj(&pk, schema, obj, header) != 0) {
        proto_buf_reset(out);
        return proto_error_set(err, PROTO_E_NOMEM, NULL, 0, 0);
    }
    if (out->size > max_size) {
        uint64_t got = out->size;
        proto_buf_reset(out);
        return proto_error_set(err, PROTO_E_FRAME_TOO_BIG, NULL, got, max_size);
    }
    return PROTO_OK;
}

//  --------------------------------------------------------------------------
//  Comparison

static bool s_str_equal(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

static bool s_field_equal(const proto_fdef_t *def, const char *a, const char *b)
{
    if (s_present(def, a) != s_present(def, b))
        return false;
    if (!s_present(def, a))
        return true;
    switch (def->kind) {
    case PROTO_K_STR:
        return s_str_equal(*(const char *const *)(a + def->off),
                           *(const char *const *)(b + def->off));
    case PROTO_K_BIN: {
        size_t size = *(const size_t *)(a + def->aux);
        if (size != *(const size_t *)(b + def->aux))
            return false;
        return size == 0 || memcmp(*(const uint8_t *const *)(a + def->off),
                                   *(const uint8_t *const *)(b + def->off), size) == 0;
    }
    case PROTO_K_KEY:
        return memcmp(a + def->off, b + def->off, PROTO_KEY_SIZE) == 0;
    case PROTO_K_U64:
        return *(const uint64_t *)(a + def->off) == *(const uint64_t *)(b + def->off);
    case PROTO_K_U32:
        return *(const uint32_t *)(a + def->off) == *(const uint32_t *)(b + def->off);
    case PROTO_K_U16:
        return *(const uint16_t *)(a + def->off) == *(const uint16_t *)(b + def->off);
    case PROTO_K_ENUM:
        return *(const int *)(a + def->off) == *(const int *)(b + def->off);
    case PROTO_K_LIST:
    case PROTO_K_PAIRS: { //  Pairs compare as elements of their two strings
        size_t count = *(const size_t *)(a + def->aux);
        if (count != *(const size_t *)(b + def->aux))
            return false;
        const char *ia = *(const char *const *)(a + def->off);
        const char *ib = *(const char *const *)(b + def->off);
        for (size_t i = 0; i < count; i++)
            if (!proto_codec_equal(def->sub, ia + i * def->sub->size, ib + i * def->sub->size))
                return false;
        return true;
    }
    }
    return false;
}

bool proto_codec_equal(const proto_schema_t *schema, const void *a, const void *b)
{
    for (size_t i = 0; i < schema->fdefs_count; i++)
        if (!s_field_equal(&schema->fdefs[i], a, b))
            return false;
    return true;
}
