/*  proto_sync.c: the sealed payload plaintexts SYNC, RECEIPT, REKEY and
    REKEY_ACK (see proto_sync.h).

    Like proto_msg.c, each type is one table over its C struct (the model,
    proto_model.h) and proto_codec.c does the work. RECEIPT has one rule a
    table cannot say: applied receipts carry the twin's ids, error receipts
    carry the text.
*/
#include <stddef.h>
#include <string.h>

#include "proto_codec.h"
#include "proto_model.h"
#include "proto_seal.h"
#include "proto_sync.h"

#define S_MAX_TABLE 80 //  ServiceNow table name
#define S_MAX_TIME  32 //  "YYYY-MM-DD HH:MM:SS" and room for variants

//  A SYNC travels from one node to the other, sealed: the broker only
//  stores it.
#define S_NODE PROTO_SENDER_NODE

static const proto_fdef_t s_comment_fields[] = {
    PROTO_S_FIELD(proto_comment_t, journal_id, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_SN_ID,
                  "`sys_journal_field.sys_id` on the source"),
    PROTO_S_FIELD(proto_comment_t, author, PROTO_K_STR, PROTO_F_REQ, 0, PROTO_MAX_NAME,
                  "`sys_created_by`"),
    PROTO_S_FIELD(proto_comment_t, created_on, PROTO_K_STR, PROTO_F_REQ, 0, S_MAX_TIME,
                  "`sys_created_on`, UTC `YYYY-MM-DD HH:MM:SS`"),
    PROTO_S_FIELD(proto_comment_t, text, PROTO_K_STR, PROTO_F_REQ | PROTO_F_LONG, 0, 0,
                  "Comment text"),
};
static const proto_schema_t s_comment =
    PROTO_S_ELEMENT("comment", proto_comment_t, s_comment_fields);

//  One entry of SYNC.fields: the map key is the column name, its value the
//  field's value.
static const proto_fdef_t s_field_fields[] = {
    PROTO_S_FIELD(proto_field_t, name, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_SN_FIELD,
                  "ServiceNow column name, e.g. `short_description`"),
    PROTO_S_FIELD(proto_field_t, value, PROTO_K_STR, PROTO_F_REQ | PROTO_F_LONG, 0, 0,
                  "The field's value, may be empty"),
};
static const proto_schema_t s_field = PROTO_S_ELEMENT("field", proto_field_t, s_field_fields);

static const proto_fdef_t s_sync_fields[] = {
    PROTO_S_FIELD(proto_sync_t, table, PROTO_K_STR, PROTO_S_ID, 0, S_MAX_TABLE,
                  "Source table, `\"incident\"`"),
    PROTO_S_FIELD(proto_sync_t, sys_id, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_SN_ID,
                  "Source record sys_id"),
    PROTO_S_FIELD(proto_sync_t, number, PROTO_K_STR, PROTO_F_REQ, 0, PROTO_MAX_SN_ID,
                  "Source record number, `INC0010001`"),
    PROTO_S_FIELD(proto_sync_t, instance, PROTO_K_STR, PROTO_F_REQ, 0, PROTO_MAX_NAME,
                  "Source instance name"),
    PROTO_S_FIELD(proto_sync_t, twin_sys_id, PROTO_K_STR, PROTO_F_ID, 0, PROTO_MAX_SN_ID,
                  "The twin's sys_id on the receiver, when known"),
    PROTO_S_FIELD(proto_sync_t, base_seq, PROTO_K_U64, PROTO_F_OMIT0, 0, 0,
                  "Highest inbound sequence the sender had applied when it built this replica; "
                  "absent means 0. A receiver whose own last SYNC for this record has a higher "
                  "sequence knows the two updates crossed (docs/sync.md, concurrent updates)"),
    PROTO_S_LIST(proto_sync_t, fields, fields_count, PROTO_K_PAIRS, PROTO_F_REQ, 0, &s_field,
                 "Synced fields, column name → value; each name once"),
    PROTO_S_LIST(proto_sync_t, comments, comments_count, PROTO_K_LIST, PROTO_F_REQ, 0, &s_comment,
                 "New comments since the last SYNC, oldest first"),
};
static const proto_schema_t s_sync =
    PROTO_S_MESSAGE("SYNC", PROTO_SYNC, proto_sync_t, s_sync_fields, NULL, S_NODE, S_NODE,
                    "One replica of a record: its synced fields and its new comments");

//  Applied receipts name the twin and carry no error text; error receipts
//  carry the text.
static proto_status_t s_receipt_rule(const void *obj, proto_error_t *err)
{
    const proto_receipt_t *receipt = obj;
    if (receipt->code == PROTO_RECEIPT_APPLIED) {
        if (!receipt->twin_sys_id)
            return proto_error_set(err, PROTO_E_MISSING, "twin_sys_id", 0, 0);
        if (!receipt->twin_number)
            return proto_error_set(err, PROTO_E_MISSING, "twin_number", 0, 0);
        if (receipt->error_text)
            return proto_error_set(err, PROTO_E_VALUE, "error_text", 0, 0);
        return PROTO_OK;
    }
    if (!receipt->error_text)
        return proto_error_set(err, PROTO_E_MISSING, "error_text", 0, 0);
    return PROTO_OK;
}

static const proto_fdef_t s_receipt_fields[] = {
    PROTO_S_FIELD(proto_receipt_t, seq, PROTO_K_U64, PROTO_F_REQ, 1, 0,
                  "Sequence of the SYNC answered (in the other direction)"),
    PROTO_S_FIELD(proto_receipt_t, sys_id, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_SN_ID,
                  "The sender's record sys_id, from the SYNC"),
    PROTO_S_FIELD(proto_receipt_t, code, PROTO_K_U16, PROTO_F_REQ, 0, 0,
                  "0 applied; 1 refused by ServiceNow; 2 invalid replica; 3 twin gone; "
                  "4 receiver failure"),
    PROTO_S_FIELD(proto_receipt_t, twin_sys_id, PROTO_K_STR, PROTO_F_ID, 0, PROTO_MAX_SN_ID,
                  "The twin's sys_id on the receiver; required when `code` is 0"),
    PROTO_S_FIELD(proto_receipt_t, twin_number, PROTO_K_STR, 0, 0, PROTO_MAX_SN_ID,
                  "The twin's number on the receiver; required when `code` is 0"),
    PROTO_S_FIELD(proto_receipt_t, error_text, PROTO_K_STR, 0, 0, PROTO_MAX_ERRTEXT,
                  "ServiceNow's or the receiver's message; required when `code` is not 0, "
                  "absent when it is"),
};
static const proto_schema_t s_receipt = PROTO_S_MESSAGE(
    "RECEIPT", PROTO_RECEIPT, proto_receipt_t, s_receipt_fields, s_receipt_rule, S_NODE, S_NODE,
    "The result of applying a SYNC, sent back as a normal PUBLISH in the other direction");

static const proto_fdef_t s_rekey_fields[] = {
    PROTO_S_FIELD(proto_rekey_t, generation, PROTO_K_U32, PROTO_F_REQ, 1, 0,
                  "The key generation being made: the sender's current one + 1"),
    PROTO_S_FIELD(proto_rekey_t, kx, PROTO_K_KEY, PROTO_F_REQ, 0, 0,
                  "The sender's X25519 public key for this generation (32 bytes)"),
};
static const proto_schema_t s_rekey =
    PROTO_S_MESSAGE("REKEY", PROTO_REKEY, proto_rekey_t, s_rekey_fields, NULL, S_NODE, S_NODE,
                    "Starts a new key generation: an X25519 share, sealed in the current one");
static const proto_schema_t s_rekey_ack = PROTO_S_MESSAGE(
    "REKEY_ACK", PROTO_REKEY_ACK, proto_rekey_t, s_rekey_fields, NULL, S_NODE, S_NODE,
    "Completes a new key generation: the other X25519 share, sealed in the old one; the "
    "sender seals in the new generation from its next message on");

//  --- attachments (docs/protocol.md §8.5)

#define S_MAX_FILE_NAME 1024 //  File names: ServiceNow allows long ones, in UTF-8
#define S_MAX_TYPE      256  //  MIME types

static bool s_is_hash(const char *hash)
{
    if (strlen(hash) != PROTO_FILE_HASH_HEX)
        return false;
    for (const char *c = hash; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
            return false;
    return true;
}

//  The chunk at offset 0 names the file; later ones must not. Every chunk
//  lies inside the file, and only an empty file has an empty chunk.
static proto_status_t s_chunk_rule(const void *obj, proto_error_t *err)
{
    const proto_file_chunk_t *chunk = obj;
    if (chunk->offset == 0) {
        if (!chunk->name || !*chunk->name)
            return proto_error_set(err, PROTO_E_MISSING, "name", 0, 0);
        if (!chunk->content_type)
            return proto_error_set(err, PROTO_E_MISSING, "content_type", 0, 0);
        if (!chunk->hash)
            return proto_error_set(err, PROTO_E_MISSING, "hash", 0, 0);
        if (!s_is_hash(chunk->hash))
            return proto_error_set(err, PROTO_E_VALUE, "hash", 0, 0);
    } else if (chunk->name || chunk->content_type || chunk->hash) {
        return proto_error_set(err, PROTO_E_VALUE, chunk->name ? "name" : "hash", 0, 0);
    }
    if (chunk->offset > chunk->size || chunk->data_size > chunk->size - chunk->offset)
        return proto_error_set(err, PROTO_E_VALUE, "data", chunk->offset, chunk->size);
    if (chunk->data_size == 0 && chunk->size != 0)
        return proto_error_set(err, PROTO_E_VALUE, "data", 0, 0);
    return PROTO_OK;
}

static const proto_fdef_t s_chunk_fields[] = {
    PROTO_S_FIELD(proto_file_chunk_t, file, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_SN_ID,
                  "The attachment's `sys_id` on the sender's instance"),
    PROTO_S_FIELD(proto_file_chunk_t, record, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_SN_ID,
                  "The record it is attached to, on the sender's instance (its `sys_id`)"),
    PROTO_S_FIELD(proto_file_chunk_t, offset, PROTO_K_U64, PROTO_F_REQ, 0, 0,
                  "Where `data` starts in the file; 0 starts (or restarts) the file"),
    PROTO_S_FIELD(proto_file_chunk_t, size, PROTO_K_U64, PROTO_F_REQ, 0, 0,
                  "Size of the whole file in bytes"),
    PROTO_S_BYTES(proto_file_chunk_t, data, data_size, PROTO_F_REQ | PROTO_F_PAYLOAD, 0,
                  "The bytes: at most 523,264 (512 KiB - 1 KiB), empty only for an empty file"),
    PROTO_S_FIELD(proto_file_chunk_t, name, PROTO_K_STR, 0, 0, S_MAX_FILE_NAME,
                  "At offset 0 only: the file name (UTF-8)"),
    PROTO_S_FIELD(proto_file_chunk_t, content_type, PROTO_K_STR, 0, 0, S_MAX_TYPE,
                  "At offset 0 only: the MIME type declared on the sender's instance"),
    PROTO_S_FIELD(proto_file_chunk_t, hash, PROTO_K_STR, 0, 0, PROTO_FILE_HASH_HEX,
                  "At offset 0 only: SHA-256 of the whole file, 64 lowercase hex digits"),
};
static const proto_schema_t s_file_chunk = PROTO_S_MESSAGE(
    "FILE_CHUNK", PROTO_FILE_CHUNK, proto_file_chunk_t, s_chunk_fields, s_chunk_rule, S_NODE,
    S_NODE,
    "A piece of an attachment, in order; the receiver keeps it on disk until the file "
    "is whole and its SHA-256 matches");

static const proto_fdef_t s_ack_fields[] = {
    PROTO_S_FIELD(proto_file_ack_t, file, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_SN_ID,
                  "The attachment's `sys_id` on the other side (from FILE_CHUNK)"),
    PROTO_S_FIELD(proto_file_ack_t, record, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_SN_ID,
                  "Its record's `sys_id` on the other side"),
    PROTO_S_FIELD(proto_file_ack_t, received, PROTO_K_U64, PROTO_F_REQ, 0, 0,
                  "Bytes of the file the receiver has stored"),
};
static const proto_schema_t s_file_ack = PROTO_S_MESSAGE(
    "FILE_ACK", PROTO_FILE_ACK, proto_file_ack_t, s_ack_fields, NULL, S_NODE, S_NODE,
    "Flow control: how much of a file arrived; the sender keeps at most a window of bytes "
    "beyond it in flight");

//  Uploaded receipts name the twin's file; the others say why not.
static proto_status_t s_file_receipt_rule(const void *obj, proto_error_t *err)
{
    const proto_file_receipt_t *r = obj;
    if (r->code > PROTO_FILE_FAILED)
        return proto_error_set(err, PROTO_E_VALUE, "code", r->code, PROTO_FILE_FAILED);
    if (r->code == PROTO_FILE_UPLOADED)
        return r->twin_file ? PROTO_OK : proto_error_set(err, PROTO_E_MISSING, "twin_file", 0, 0);
    return r->error_text ? PROTO_OK : proto_error_set(err, PROTO_E_MISSING, "error_text", 0, 0);
}

static const proto_fdef_t s_file_receipt_fields[] = {
    PROTO_S_FIELD(proto_file_receipt_t, file, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_SN_ID,
                  "The attachment's `sys_id` on the other side (from FILE_CHUNK)"),
    PROTO_S_FIELD(proto_file_receipt_t, record, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_SN_ID,
                  "Its record's `sys_id` on the other side"),
    PROTO_S_FIELD(proto_file_receipt_t, code, PROTO_K_U16, PROTO_F_REQ, 0, 0,
                  "0 uploaded; 1 refused by the receiver's ServiceNow; 2 skipped by the "
                  "receiver's rules (attachments none, size cap); 3 failed (damaged): send "
                  "it again"),
    PROTO_S_FIELD(proto_file_receipt_t, twin_file, PROTO_K_STR, PROTO_F_ID, 0, PROTO_MAX_SN_ID,
                  "Code 0: the new attachment's `sys_id` on the receiver"),
    PROTO_S_FIELD(proto_file_receipt_t, error_text, PROTO_K_STR, 0, 0, PROTO_MAX_ERRTEXT,
                  "Codes 1 to 3: why, naming the file"),
};
static const proto_schema_t s_file_receipt = PROTO_S_MESSAGE(
    "FILE_RECEIPT", PROTO_FILE_RECEIPT, proto_file_receipt_t, s_file_receipt_fields,
    s_file_receipt_rule, S_NODE, S_NODE, "What became of an attachment on the receiver");

static const proto_fdef_t s_file_delete_fields[] = {
    PROTO_S_FIELD(proto_file_delete_t, file, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_SN_ID,
                  "The attachment's `sys_id` on the sender's instance"),
    PROTO_S_FIELD(proto_file_delete_t, record, PROTO_K_STR, PROTO_S_ID, 0, PROTO_MAX_SN_ID,
                  "Its record's `sys_id` on the sender's instance"),
};
static const proto_schema_t s_file_delete = PROTO_S_MESSAGE(
    "FILE_DELETE", PROTO_FILE_DELETE, proto_file_delete_t, s_file_delete_fields, NULL, S_NODE,
    S_NODE,
    "An attachment was deleted at its source: the receiver deletes its copy if twinsync "
    "put it there, and stops a transfer under way");

static const proto_schema_t *const s_schemas[] = {&s_sync,         &s_receipt,    &s_rekey,
                                                  &s_rekey_ack,    &s_file_chunk, &s_file_ack,
                                                  &s_file_receipt, &s_file_delete};
static const proto_dialect_t s_dialect = {PROTO_S_ARR(s_schemas)};

const proto_dialect_t *proto_sync_model(void)
{
    return &s_dialect;
}

static const proto_schema_t *s_schema(proto_type_t type)
{
    return proto_codec_find(&s_dialect, (unsigned)type);
}

void proto_payload_init(proto_payload_t *payload, proto_type_t type)
{
    memset(payload, 0, sizeof(*payload));
    payload->type = type;
}

void proto_payload_clear(proto_payload_t *payload)
{
    proto_mem_free(&payload->mem);
    memset(payload, 0, sizeof(*payload));
}

proto_status_t proto_payload_encode(const proto_payload_t *payload, const proto_limits_t *limits,
                                    proto_buf_t *out, proto_error_t *err)
{
    proto_limits_t defaults = proto_limits_default();
    if (!limits)
        limits = &defaults;
    const proto_schema_t *schema = s_schema(payload->type);
    if (!schema)
        return proto_error_set(err, PROTO_E_UNKNOWN_TYPE, "t", payload->type, 0);
    //  The sealed form adds at least PROTO_SEAL_OVERHEAD bytes and must fit a payload.
    size_t max =
        limits->max_payload > PROTO_SEAL_OVERHEAD ? limits->max_payload - PROTO_SEAL_OVERHEAD : 0;
    return proto_codec_encode(schema, &payload->sync, limits, max, out, err);
}

proto_status_t proto_payload_decode(const uint8_t *data, size_t size, const proto_limits_t *limits,
                                    proto_payload_t *out, proto_error_t *err)
{
    proto_limits_t defaults = proto_limits_default();
    if (!limits)
        limits = &defaults;
    memset(out, 0, sizeof(*out));
    const proto_schema_t *schema = NULL;
    uint16_t version = 0;
    proto_status_t rc =
        proto_codec_decode(&s_dialect, data, size, limits, limits->max_payload, &out->sync,
                           offsetof(proto_payload_t, mem) - offsetof(proto_payload_t, sync),
                           &schema, &version, &out->mem, err);
    if (rc != PROTO_OK)
        return rc;
    out->type = (proto_type_t)schema->type;
    out->version = version;
    return PROTO_OK;
}

bool proto_payload_equal(const proto_payload_t *a, const proto_payload_t *b)
{
    if (a->type != b->type)
        return false;
    const proto_schema_t *schema = s_schema(a->type);
    return schema && proto_codec_equal(schema, &a->sync, &b->sync);
}

const char *proto_sync_field(const proto_sync_t *sync, const char *name)
{
    for (size_t i = 0; i < sync->fields_count; i++)
        if (strcmp(sync->fields[i].name, name) == 0)
            return sync->fields[i].value;
    return NULL;
}
