/*  sn_attachment.h: files attached to records, through ServiceNow's
    Attachment API (docs/servicenow-api.md §5).

    Every call uses the v1 paths, /api/now/v1/attachment... (§5.9), and the
    client's one request path (sn_call.h): the same credentials, retries,
    logging and scrubbing of secrets as the Table API calls.

    Metadata: a sys_attachment row as a jansson object of string fields
    (sn_record.h): sys_id, file_name, content_type, size_bytes, table_name,
    table_sys_id, sys_created_on, sys_created_by, hash (the SHA-256 of the
    content in 64 hex digits on instances that have it; may be empty, §5.4).
    Functions that return metadata give the caller one reference.

    Streaming: no call holds a file in memory. A download hands the content to
    the caller's sink in blocks of at most 16 KiB (libcurl's receive buffer);
    an upload reads the file with pread() as libcurl sends it. Memory stays at
    a few buffers whatever the size (up to the platform's 1 GiB, §5.1). A
    transfer fails when nothing moved for the client's request timeout,
    rather than after it in total.

    Idempotence: list, get and download are reads, retried like any read (a
    download resumes where it stopped, with a Range). Delete is retried too: a
    second delete of the same file answers 404. An upload is NOT idempotent
    (§5.6: the same request twice makes two attachments), and may cost a whole
    file to get wrong, so it is sent again only when it surely did not reach
    the instance: no connection made, or a 429. After any other failure on the
    way (connection lost, no answer, timeout, 5xx, an outage page) it fails
    with SN_E_UNAVAILABLE or SN_E_TIMEOUT and a message saying "outcome
    unknown": the caller lists the record's attachments (sn_attachment_list_record)
    and looks for the same file_name and hash before uploading again.

    Refusals of the file itself: a 400 that is not about the request's shape
    (a size or extension rule, "Rejected large REST payload", §5.1), 403 (an
    ACL or glide.attachment.role refusing sys_attachment), 413 and 415 are
    SN_E_FILE_REFUSED, whose message names the HTTP status and carries
    ServiceNow's own message, and whose detail is ServiceNow's detail. No retry
    fixes them: report the file and go on. */

#ifndef SN_ATTACHMENT_H
#define SN_ATTACHMENT_H

#include "sn_client.h"

#include <stddef.h>
#include <stdint.h>

//  The sys_attachment fields every list asks for.
#define SN_ATTACHMENT_FIELDS                                                                       \
    "sys_id,file_name,content_type,size_bytes,table_name,table_sys_id,sys_created_on,"             \
    "sys_created_by,hash"

//  Rows per list request at most: the Attachment API's own default (§5.3).
#define SN_ATTACHMENT_PAGE_MAX 1000

//  Longest file name accepted for an upload, in bytes (UTF-8).
#define SN_ATTACHMENT_NAME_MAX 1000

//  Every sys_attachment row matching query (an encoded query over
//  sys_attachment, e.g. "table_sys_id=ID^sys_created_on>=STAMP"; NULL or ""
//  for all), with the fields SN_ATTACHMENT_FIELDS, ordered by
//  (sys_created_on, sys_id). Keyset-paged (sn_pager.h) with the client's page
//  size (at most SN_ATTACHMENT_PAGE_MAX): a short or empty page does not end
//  the walk (§2.4, §5.3), and the query's own ORDERBY terms are dropped. On
//  SN_OK *rows_p is a new JSON array owned by the caller (possibly empty);
//  NULL on failure. SN_E_BAD_RESPONSE when the instance ignored the paging
//  conditions (rows out of key order). Blocks.
sn_err_code_t sn_attachment_list(sn_client_t *self, const char *query, json_t **rows_p,
                                 sn_error_t *err);

//  The attachments of one record: sn_attachment_list of
//  "table_name=TABLE^table_sys_id=ID". SN_E_BAD_REQUEST, before any request,
//  for a table name that is not [a-z0-9_]+ or an id that is not a sys_id.
sn_err_code_t sn_attachment_list_record(sn_client_t *self, const char *table,
                                        const char *table_sys_id, json_t **rows_p, sn_error_t *err);

//  GET /api/now/v1/attachment/{sys_id}: the metadata, a new reference in
//  *meta_p (NULL on failure). SN_E_NOT_FOUND when it does not exist or ACLs
//  hide it; SN_E_BAD_REQUEST for a malformed sys_id. Blocks.
sn_err_code_t sn_attachment_get(sn_client_t *self, const char *sys_id, json_t **meta_p,
                                sn_error_t *err);

//  Receives a download's content block by block, in order, from the offset
//  asked for: data[0..len) with len > 0. Returns 0 to go on; anything else
//  stops the download with SN_E_CANCELLED.
typedef int(sn_attachment_sink_fn)(const void *data, size_t len, void *arg);

//  GET /api/now/v1/attachment/{sys_id}/file, from byte offset on, handed to
//  sink. With offset > 0 the request asks for a Range from one byte before
//  (bytes=offset-1-, so that an offset at the very end finds nothing left
//  instead of a 416) and skips what the sink must not see; an instance that
//  answers 200 with the whole content instead of 206 has its first offset
//  bytes skipped the same way.
//  A failed attempt (429, 5xx, timeout, connection lost mid-body) is retried
//  like any read and resumes where the sink stopped getting bytes, so the sink
//  sees every byte once. *written_p (may be NULL) receives the bytes the sink
//  took, on failure too. On SN_OK the content is complete: exactly size_bytes
//  - offset bytes went to the sink; *meta_p (may be NULL) then holds the
//  metadata the instance sent with the content (X-Attachment-Metadata, a new
//  reference) so the caller can check the hash it computed.
//  Errors: SN_E_NOT_FOUND (404); SN_E_UNAVAILABLE when an answer is not the
//  content: an HTML page (hibernating instance) or any answer without
//  X-Attachment-Metadata (§5.5: its Content-Type cannot tell), or when the
//  body ended early and the retries ran out; SN_E_BAD_REQUEST for an offset
//  beyond the end (at the end is fine: nothing to hand on); SN_E_BAD_RESPONSE when the instance
//  sent more bytes than size_bytes, a Content-Range at another offset, or a different file on a
//  resumed attempt; SN_E_CANCELLED when sink stopped. Blocks for the whole
//  transfer.
sn_err_code_t sn_attachment_download(sn_client_t *self, const char *sys_id, uint64_t offset,
                                     sn_attachment_sink_fn *sink, void *arg, uint64_t *written_p,
                                     json_t **meta_p, sn_error_t *err);

//  A ready-made sink that writes a download into a file descriptor with
//  pwrite(), at the file offset `at` (start it at the download's offset, so a
//  resumed download lands where the earlier part stopped).
typedef struct {
    int fd;      //  where the content goes
    uint64_t at; //  file offset of the next block; advanced by each block
    int error;   //  errno of the write that failed and stopped the download, else 0
} sn_attachment_fd_t;

//  sn_attachment_sink_fn for an sn_attachment_fd_t (arg): writes the whole
//  block at arg->at and advances it; on a write error stores errno in
//  arg->error and returns -1 (the download then fails with SN_E_CANCELLED).
int sn_attachment_fd_sink(const void *data, size_t len, void *arg);

//  One file to upload.
typedef struct {
    const char *table;        //  the record's table, "incident"
    const char *table_sys_id; //  the record's sys_id
    const char *file_name;    //  any UTF-8 name, 1..SN_ATTACHMENT_NAME_MAX bytes, no control chars
    const char *content_type; //  the file's MIME type; NULL or "" for application/octet-stream
    int fd;                   //  the content, read with pread() from offset 0 (a regular file)
    uint64_t size;            //  bytes to send from fd
} sn_attachment_file_t;

//  POST /api/now/v1/attachment/file?table_name=&table_sys_id=&file_name= with
//  the raw content as body (Content-Type: the file's type), streamed from fd:
//  the fd's own position is neither used nor moved. On SN_OK the new
//  attachment's metadata is in *meta_p (a new reference; meta_p may be NULL).
//  Not idempotent, see above. Errors:
//    SN_E_FILE_REFUSED  the instance refuses this file (400 other than a
//                       malformed request, 403, 413, 415): no retry helps;
//    SN_E_NOT_FOUND     the record does not exist or ACLs hide it (404);
//    SN_E_UNAVAILABLE, SN_E_TIMEOUT   the outcome may be unknown: when the
//                       message says "outcome unknown", list before sending
//                       again (the file may be stored);
//    SN_E_RATE_LIMITED  429 still there when the retry budget ran out (not
//                       stored);
//    SN_E_BAD_REQUEST   an invalid table, sys_id, name or type (before any
//                       request), fd unreadable or shorter than size (the
//                       body was cut short, so nothing was stored), or a 400
//                       naming a malformed request;
//    SN_E_BAD_RESPONSE  a 2xx answer that is not the metadata (the file may be
//                       stored: list before sending again).
//  Blocks for the whole transfer.
sn_err_code_t sn_attachment_upload(sn_client_t *self, const sn_attachment_file_t *file,
                                   json_t **meta_p, sn_error_t *err);

//  DELETE /api/now/v1/attachment/{sys_id} (204). SN_E_NOT_FOUND when it does
//  not exist (any more: a delete retried after a lost answer sees its own
//  effect as a 404, so a caller that wants the file gone takes it as done).
//  Blocks.
sn_err_code_t sn_attachment_delete(sn_client_t *self, const char *sys_id, sn_error_t *err);

//  -------------------------------------------------------------------------
//  Building blocks, pure (exposed for the unit tests)

//  The path and query of an upload, "/api/now/v1/attachment/file?table_name=
//  T&table_sys_id=ID&file_name=NAME" with every value percent-encoded, as a
//  new string the caller frees; NULL when out of memory. Checks nothing.
char *sn_attachment_upload_path(const char *table, const char *table_sys_id, const char *file_name);

//  The path and query of one list page for the encoded query, as a new
//  string the caller frees; NULL when out of memory.
char *sn_attachment_list_path(const char *query, int limit);

//  Reads the first byte position of a Content-Range "bytes FIRST-LAST/TOTAL"
//  (TOTAL may be "*") into *first_p. False when text is not of that form or
//  LAST < FIRST.
bool sn_attachment_range_first(const char *text, uint64_t *first_p);

//  Rewrites err, the error of a failed upload, into the codes promised above:
//  a refusal of the file becomes SN_E_FILE_REFUSED (message "attachment
//  refused by ServiceNow (HTTP N): <ServiceNow's message>"), and with
//  outcome_unknown an outage or timeout says "outcome unknown" in its
//  message. Returns the (possibly new) code.
sn_err_code_t sn_attachment_upload_error(sn_error_t *err, bool outcome_unknown);

#endif
