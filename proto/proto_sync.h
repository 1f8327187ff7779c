/*  proto_sync.h: the plaintexts sealed inside PUBLISH / DELIVER payloads.

    SYNC carries one replica (an incident's synced fields, its new comments,
    its ids on the sending side, the twin's id when known). RECEIPT answers a
    SYNC: the twin's id and number on the receiving side, or a per-entity
    error the sender shows its admin. Both are one msgpack map with "v" and
    "t" like the broker messages, decoded with the same strict rules; the
    broker never sees them (proto_seal.h seals them).

    Ownership follows proto_msg.h: decode fills pointers into memory owned by
    the payload (proto_payload_clear frees it); to encode, point at your own.
*/
#ifndef PROTO_SYNC_H
#define PROTO_SYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto_msg.h"

//  One synced field, ServiceNow column name -> value (every value a string).
typedef struct {
    const char *name;  //  Column name, e.g. "short_description"
    const char *value; //  Value, may be ""
} proto_field_t;

//  One additional comment from the source's sys_journal_field.
typedef struct {
    const char *journal_id; //  sys_journal_field.sys_id on the source
    const char *author;     //  sys_created_by on the source
    const char *created_on; //  sys_created_on, UTC "YYYY-MM-DD HH:MM:SS"
    const char *text;       //  Comment text
} proto_comment_t;

typedef struct {
    const char *table;               //  Source table, "incident"
    const char *sys_id;              //  Source record sys_id
    const char *number;              //  Source record number, "INC0010001"
    const char *instance;            //  Source instance name
    const char *twin_sys_id;         //  Twin's sys_id on the receiver, or NULL
    uint64_t base_seq;               //  Highest inbound seq the sender had applied when it
                                     //  built this replica (0: none); detects crossed updates
    const proto_field_t *fields;     //  Synced fields, each name at most once
    size_t fields_count;             //  Entries in fields
    const proto_comment_t *comments; //  New comments since the last SYNC, oldest first
    size_t comments_count;           //  Entries in comments
} proto_sync_t;

//  Codes of a RECEIPT error (key "e"); 0 means applied.
typedef enum {
    PROTO_RECEIPT_APPLIED = 0, //  Applied; twin ids are set
    PROTO_RECEIPT_REFUSED = 1, //  ServiceNow refused the write (data policy, ACL, validation)
    PROTO_RECEIPT_INVALID = 2, //  Replica cannot be applied (unknown field or value)
    PROTO_RECEIPT_GONE = 3,    //  The twin no longer exists
    PROTO_RECEIPT_INTERNAL = 4 //  Receiver failure not tied to the data
} proto_receipt_code_t;

typedef struct {
    uint64_t seq;            //  Sequence of the SYNC this answers
    const char *sys_id;      //  Sender's record sys_id (from the SYNC)
    uint16_t code;           //  proto_receipt_code_t; 0 = applied
    const char *twin_sys_id; //  Applied: twin's sys_id on the receiver
    const char *twin_number; //  Applied: twin's number on the receiver
    const char *error_text;  //  Error: ServiceNow's or the receiver's message
} proto_receipt_t;

//  REKEY and REKEY_ACK: one side's X25519 public key for key generation
//  `generation` (docs/protocol.md §8.4).
typedef struct {
    uint32_t generation;        //  The generation being made (current + 1)
    uint8_t kx[PROTO_KEY_SIZE]; //  The sender's X25519 public key for it
} proto_rekey_t;

//  Bytes of file content in one FILE_CHUNK: its sealed form fills the 512 KiB
//  size bucket (docs/protocol.md §8.5), so padding adds almost nothing.
#define PROTO_FILE_CHUNK_DATA (512 * 1024 - 1024)
#define PROTO_FILE_HASH_HEX   64 //  SHA-256 as lowercase hex

//  FILE_CHUNK: bytes [offset, offset + data_size) of attachment `file` of
//  record `record` on the sender's instance. The chunk at offset 0 also
//  names the file; chunks travel in order, and offset 0 again restarts the
//  file (the sender read it anew).
typedef struct {
    const char *file;         //  Source attachment sys_id
    const char *record;       //  Source record (incident) sys_id
    uint64_t offset;          //  Where data starts in the file
    uint64_t size;            //  Size of the whole file
    const uint8_t *data;      //  The bytes
    size_t data_size;         //  Bytes in data (0 only for an empty file)
    const char *name;         //  Offset 0: file name
    const char *content_type; //  Offset 0: MIME type
    const char *hash;         //  Offset 0: SHA-256 of the whole file, lowercase hex
} proto_file_chunk_t;

//  FILE_ACK: the receiver holds the first `received` bytes of `file`.
typedef struct {
    const char *file;   //  Source attachment sys_id
    const char *record; //  Source record sys_id
    uint64_t received;  //  Bytes stored durably on the receiver
} proto_file_ack_t;

//  Codes of a FILE_RECEIPT.
typedef enum {
    PROTO_FILE_UPLOADED = 0, //  On the twin; twin_file names it
    PROTO_FILE_REFUSED = 1,  //  The receiver's ServiceNow refused it (error_text)
    PROTO_FILE_SKIPPED = 2,  //  The receiver takes no such file (attachments none, size cap)
    PROTO_FILE_FAILED = 3    //  Arrived damaged or not at all (error_text): sent again
} proto_file_code_t;

//  FILE_RECEIPT: what became of `file` on the receiver.
typedef struct {
    const char *file;       //  Source attachment sys_id
    const char *record;     //  Source record sys_id
    uint16_t code;          //  proto_file_code_t
    const char *twin_file;  //  Uploaded: the attachment's sys_id on the receiver
    const char *error_text; //  Refused, skipped, failed: why
} proto_file_receipt_t;

//  FILE_DELETE: `file` was deleted on the sender's instance.
typedef struct {
    const char *file;   //  Source attachment sys_id
    const char *record; //  Source record sys_id
} proto_file_delete_t;

typedef struct {
    proto_type_t type; //  PROTO_SYNC, PROTO_RECEIPT, PROTO_REKEY, PROTO_REKEY_ACK, PROTO_FILE_*
    uint16_t version;  //  Decoded "v"
    union {
        proto_sync_t sync;                 //  PROTO_SYNC
        proto_receipt_t receipt;           //  PROTO_RECEIPT
        proto_rekey_t rekey;               //  PROTO_REKEY, PROTO_REKEY_ACK
        proto_file_chunk_t file_chunk;     //  PROTO_FILE_CHUNK
        proto_file_ack_t file_ack;         //  PROTO_FILE_ACK
        proto_file_receipt_t file_receipt; //  PROTO_FILE_RECEIPT
        proto_file_delete_t file_delete;   //  PROTO_FILE_DELETE
    };
    proto_mem_t *mem; //  Memory owned after decode; private
} proto_payload_t;

//  Zeroes *payload and sets its type.
void proto_payload_init(proto_payload_t *payload, proto_type_t type);

//  Frees what a decode allocated and zeroes *payload; safe to call twice.
void proto_payload_clear(proto_payload_t *payload);

//  Encodes a SYNC or RECEIPT into out (contents replaced), after checking it
//  against the rules and limits (NULL: defaults). Same returns as
//  proto_msg_encode.
proto_status_t proto_payload_encode(const proto_payload_t *payload, const proto_limits_t *limits,
                                    proto_buf_t *out, proto_error_t *err);

//  Decodes an opened (unsealed) payload; same contract as proto_msg_decode.
//  Input larger than limits->max_payload is refused.
proto_status_t proto_payload_decode(const uint8_t *data, size_t size, const proto_limits_t *limits,
                                    proto_payload_t *out, proto_error_t *err);

//  True when a and b carry the same type and field values.
bool proto_payload_equal(const proto_payload_t *a, const proto_payload_t *b);

//  Value of field name in a SYNC, or NULL when absent.
const char *proto_sync_field(const proto_sync_t *sync, const char *name);

#endif
