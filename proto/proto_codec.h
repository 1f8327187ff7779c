/*  proto_codec.h: the schema-driven msgpack codec behind every proto map
    (internal to proto/; callers use proto_msg.h, proto_sync.h, proto_invite.h).

    The codec knows no message and no domain type: the domain modules
    (proto_msg, proto_sync, proto_invite) own their structs and their tables
    and call it; it includes none of their headers. What looks like a domain
    concept on the wire is a generic kind here, described by the table: a
    role is an enum of strings (PROTO_K_ENUM), a map of field names to values
    a map of pairs whose element struct the table lays out (PROTO_K_PAIRS).

    A message, payload or invitation body is a C struct described by a
    proto_schema_t: one proto_fdef_t per key, saying where the value lives in
    the struct, its kind and its limits. One engine then encodes, decodes,
    checks and compares every struct, so each rule is written once:

    - proto_codec_encode checks the struct (proto_codec_check) and writes one
      msgpack map: "v", "t", then the fields in schema order.
    - proto_codec_decode reads with a bounds-checked reader over the raw
      bytes. A first pass walks the whole map (so a truncated input is always
      PROTO_E_TRUNCATED) and reads "v" and "t"; the second decodes the known
      keys of that type's schema, skipping unknown ones. Every length is
      checked against the remaining bytes and its limit before anything is
      allocated; decoded strings and lists live in a proto_mem_t list freed
      by proto_mem_free.
*/
#ifndef PROTO_CODEC_H
#define PROTO_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto_buf.h"
#include "proto_error.h"
#include "proto_limits.h"

typedef struct proto_mem proto_mem_t;

//  What a value is on the wire and in the struct. The kinds are generic: a
//  domain concept (a role, a field map) is a kind plus what its table says.
typedef enum {
    PROTO_K_STR,  //  const char *; UTF-8 without NUL, or an id (PROTO_F_ID)
    PROTO_K_BIN,  //  const uint8_t * at off, size_t at aux
    PROTO_K_KEY,  //  uint8_t[PROTO_KEY_SIZE] inline, exactly that many bytes
    PROTO_K_U64,  //  uint64_t
    PROTO_K_U32,  //  uint32_t
    PROTO_K_U16,  //  uint16_t
    PROTO_K_ENUM, //  int (an enum) on the wire as the string names[value]; max is the
                  //  highest value, a NULL name a value that does not exist
    PROTO_K_LIST, //  array of sub structs: pointer at off, size_t count at aux
    PROTO_K_PAIRS //  map of key -> value: sub structs at off, size_t count at aux; sub has
                  //  two PROTO_K_STR fields, the map key and its value; keys are unique
} proto_kind_t;

enum {
    PROTO_F_REQ = 1,     //  Required
    PROTO_F_ID = 2,      //  String of [A-Za-z0-9._:-], not empty
    PROTO_F_LONG = 4,    //  String limit is limits->max_text (else max)
    PROTO_F_PAYLOAD = 8, //  Bytes limit is limits->max_payload (else max)
    PROTO_F_HAS = 16,    //  Optional number or key; bool presence flag at aux
    PROTO_F_OMIT0 = 32   //  Optional number; 0 means absent
};

typedef struct proto_schema proto_schema_t;

//  One key of a map.
typedef struct {
    const char *key;           //  Wire key, also the name in error messages
    proto_kind_t kind;         //  What the value is
    unsigned flags;            //  PROTO_F_*
    size_t off;                //  Offset of the value in the struct
    size_t aux;                //  Offset of the size, count or presence flag
    uint64_t min;              //  Numbers: smallest value allowed
    uint64_t max;              //  Numbers, enums: largest; strings, bytes, lists: most
    const proto_schema_t *sub; //  PROTO_K_LIST, PROTO_K_PAIRS: schema of an element
    const char *const *names;  //  PROTO_K_ENUM: wire string of each value 0..max
    const char *doc;           //  What the value means (docs/protocol.md)
} proto_fdef_t;

//  Cross-field rule run after the fields are read or before they are
//  written; returns PROTO_OK or an error set with proto_error_set.
typedef proto_status_t(proto_rule_fn)(const void *obj, proto_error_t *err);

//  One message type (or list element): the whole of what the protocol says
//  about it. The codec reads name, type, size, fields and rule; from, to and
//  doc are carried for the domain modules (who may send it) and for the
//  documentation, and mean nothing to the codec.
struct proto_schema {
    const char *name;          //  "HELLO", used in messages
    unsigned type;             //  Value of "t"; 0 for list elements
    size_t size;               //  sizeof the struct (list elements)
    const proto_fdef_t *fdefs; //  Keys, at most 32
    size_t fdefs_count;        //  Entries in fdefs
    proto_rule_fn *rule;       //  Extra rule, or NULL
    unsigned from;             //  Who may send it: a bit mask the domain module defines
    unsigned to;               //  Who it goes to, same bits
    const char *doc;           //  One line: what it is for (docs/protocol.md)
};

//  The schemas one decoder accepts, searched by "t".
typedef struct {
    const proto_schema_t *const *schemas; //  Accepted top-level schemas
    size_t count;                         //  Entries in schemas
} proto_dialect_t;

//  Table-writing helpers for the schemas (wire key = C member name; the
//  last argument is always the field's meaning for the documentation).
#define PROTO_S_ID     (PROTO_F_REQ | PROTO_F_ID)
#define PROTO_S_ARR(a) (a), (sizeof(a) / sizeof((a)[0]))
//  A field of struct type T: key (= member), kind, flags, limits.
#define PROTO_S_FIELD(T, member, kind_, flags_, min_, max_, doc_)                                  \
    {                                                                                              \
        .key = #member, .kind = (kind_), .flags = (flags_), .off = offsetof(T, member),            \
        .min = (min_), .max = (max_), .doc = (doc_)                                                \
    }
//  An optional number (or PROTO_K_KEY) of T with its presence flag.
#define PROTO_S_FIELD_HAS(T, member, has, kind_, min_, max_, doc_)                                 \
    {                                                                                              \
        .key = #member, .kind = (kind_), .flags = PROTO_F_HAS, .off = offsetof(T, member),         \
        .aux = offsetof(T, has), .min = (min_), .max = (max_), .doc = (doc_)                       \
    }
//  Bytes of T with their size member.
#define PROTO_S_BYTES(T, member, size, flags_, max_, doc_)                                         \
    {                                                                                              \
        .key = #member, .kind = PROTO_K_BIN, .flags = (flags_), .off = offsetof(T, member),        \
        .aux = offsetof(T, size), .max = (max_), .doc = (doc_)                                     \
    }
//  An enum member of T (an int-sized enum) named by the array of strings
//  names_ (one per value from 0, NULL for a value that does not exist).
#define PROTO_S_ENUM(T, member, flags_, names_, doc_)                                              \
    {                                                                                              \
        .key = #member, .kind = PROTO_K_ENUM, .flags = (flags_), .off = offsetof(T, member),       \
        .max = sizeof(names_) / sizeof((names_)[0]) - 1, .names = (names_), .doc = (doc_)          \
    }
//  A list (or PROTO_K_PAIRS map) of T with its count member and element schema.
#define PROTO_S_LIST(T, member, count, kind_, flags_, max_, sub_, doc_)                            \
    {                                                                                              \
        .key = #member, .kind = (kind_), .flags = (flags_), .off = offsetof(T, member),            \
        .aux = offsetof(T, count), .max = (max_), .sub = (sub_), .doc = (doc_)                     \
    }
//  The table of a message type: name, "t", struct T, fields (an array),
//  rule (or NULL), who may send it (from), who it goes to (to), what it is for.
#define PROTO_S_MESSAGE(name_, type_, T, fdefs_, rule_, from_, to_, doc_)                          \
    {                                                                                              \
        .name = (name_), .type = (type_), .size = sizeof(T), .fdefs = (fdefs_),                    \
        .fdefs_count = sizeof(fdefs_) / sizeof((fdefs_)[0]), .rule = (rule_), .from = (from_),     \
        .to = (to_), .doc = (doc_)                                                                 \
    }
//  The table of a list element (or of a pair) of struct T.
#define PROTO_S_ELEMENT(name_, T, fdefs_)                                                          \
    {                                                                                              \
        .name = (name_), .size = sizeof(T), .fdefs = (fdefs_),                                     \
        .fdefs_count = sizeof(fdefs_) / sizeof((fdefs_)[0])                                        \
    }

//  Checks obj against schema and limits: required fields present, lengths,
//  charsets, number ranges, duplicates, the schema's rule.
proto_status_t proto_codec_check(const proto_schema_t *schema, const void *obj,
                                 const proto_limits_t *limits, proto_error_t *err);

//  Checks obj, then writes it into out (contents replaced) as one map with
//  "v" = PROTO_VERSION and "t" = schema->type. Refuses an encoding larger
//  than max_size with PROTO_E_FRAME_TOO_BIG.
proto_status_t proto_codec_encode(const proto_schema_t *schema, const void *obj,
                                  const proto_limits_t *limits, size_t max_size, proto_buf_t *out,
                                  proto_error_t *err);

//  Decodes one map of the dialect into obj (the struct of the schema "t"
//  names, which must be large enough for any of them; zeroed first). On
//  PROTO_OK *schema_out, *version_out are set and *mem owns what obj points
//  to; on error obj is zeroed and nothing is owned. max_size bounds the input.
proto_status_t proto_codec_decode(const proto_dialect_t *dialect, const uint8_t *data, size_t size,
                                  const proto_limits_t *limits, size_t max_size, void *obj,
                                  size_t obj_size, const proto_schema_t **schema_out,
                                  uint16_t *version_out, proto_mem_t **mem, proto_error_t *err);

//  The schema of dialect whose "t" is type, or NULL.
const proto_schema_t *proto_codec_find(const proto_dialect_t *dialect, unsigned type);

//  True when every field of a and b has the same value under schema.
bool proto_codec_equal(const proto_schema_t *schema, const void *a, const void *b);

//  Frees every block of the list and sets *mem_p to NULL; accepts NULL.
void proto_mem_free(proto_mem_t **mem_p);

#endif
