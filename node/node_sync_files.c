/*  node_sync_files.c: the attachment half of node_sync, on the worker
    thread (docs/sync.md "Attachments" has the rules, docs/protocol.md §8.5 the
    messages).

    How the parts fit. A file crosses in three hands:
      1. This file finds it (s_discover: the attachments created since the
         connection's file cursor; s_scan_twins: every attachment of a new
         twin; s_scan_deleted: which sent files are gone) and records it as
         queued.
      2. The transfer thread (node_transfer.c) reads it from our instance into
         its spool file; node_sync_files_pump cuts the spool into FILE_CHUNKs
         within a window of bytes the receiver has not yet acknowledged, so
         fields and comments never queue behind more than that window.
      3. On the other node node_sync_files_in writes the chunks into its
         spool; the transfer thread there checks the SHA-256 and uploads;
         the pump sends the FILE_RECEIPT it owes.
    Every read-change-write of a file row happens inside one transaction,
    because the transfer thread writes the same rows.
*/
#include "node_sync_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "node_replica.h"
#include "node_spool.h"
#include "node_transfer.h"
#include "proto_sync.h"
#include "sn_attachment.h"
#include "sn_record.h"
#include "ts_log.h"

#define S_WINDOW        (8u * 1024 * 1024) //  File bytes in flight per file, unacknowledged
#define S_ACK_EVERY     (2u * 1024 * 1024) //  The receiver acknowledges this often
#define S_IDS_PER_QUERY 50                 //  sys_ids in one table_sys_idIN query
#define S_DEFAULT_MAX   (1024ull * 1024 * 1024)

//  --- settings

//  The size cap of this side of conn.
static uint64_t s_max_bytes(const node_sync_t *self, const node_conn_t *conn)
{
    if (conn->attachment_max)
        return conn->attachment_max;
    return self->attachment_max ? self->attachment_max : S_DEFAULT_MAX;
}

//  Whether this side of conn sends or takes a file of size bytes; when not,
//  why into why.
static bool s_takes(const node_sync_t *self, const node_conn_t *conn, uint64_t size, char *why,
                    size_t n)
{
    bool none = conn->attachments == NODE_ATTACH_NONE ||
                (conn->attachments == NODE_ATTACH_DEFAULT && self->attachments_none);
    if (none) {
        snprintf(why, n, "attachments are off on %s (attachments = none)", self->instance);
        return false;
    }
    uint64_t max = s_max_bytes(self, conn);
    if (size > max) {
        snprintf(why, n, "%" PRIu64 " bytes, larger than the cap of %" PRIu64 " bytes on %s", size,
                 max, self->instance);
        return false;
    }
    return true;
}

//  --- finding files (worker, per poll)

//  Records a sys_attachment row as a file to send when it belongs to a twin
//  of conn under sync and a person attached it. Inside a transaction.
//  Returns 1 when recorded, 0 when not for us, -1 on a database failure.
static int s_found(node_sync_t *self, const node_conn_t *conn, const json_t *row)
{
    if (strcmp(sn_field(row, "table_name"), NODE_REPLICA_TABLE) ||
        !strcmp(sn_field(row, "sys_created_by"), self->sync_user))
        return 0; //  what the integration user attached came from the twin: never back
    node_twin_t twin = {0};
    int rc = node_state_twin_by_local(self->state, conn->id, sn_field(row, "table_sys_id"), &twin);
    bool ours = rc == 0 && twin.under_sync && !twin.peer_stopped;
    node_twin_clear(&twin);
    if (rc < 0)
        return -1;
    if (!ours)
        return 0;
    node_file_t f;
    memset(&f, 0, sizeof f);
    snprintf(f.conn, sizeof f.conn, "%s", conn->id);
    f.dir = NODE_FILE_OUT;
    snprintf(f.file_id, sizeof f.file_id, "%s", sn_field(row, "sys_id"));
    snprintf(f.record, sizeof f.record, "%s", sn_field(row, "table_sys_id"));
    snprintf(f.name, sizeof f.name, "%s", sn_field(row, "file_name"));
    snprintf(f.content_type, sizeof f.content_type, "%s", sn_field(row, "content_type"));
    f.size = strtoull(sn_field(row, "size_bytes"), NULL, 10);
    const char *hash = sn_field(row, "hash");
    if (strlen(hash) == PROTO_FILE_HASH_HEX)
        snprintf(f.hash, sizeof f.hash, "%s", hash);
    if (!*f.file_id || !*f.record)
        return 0;
    f.state =
        s_takes(self, conn, f.size, f.text, sizeof f.text) ? NODE_FILE_QUEUED : NODE_FILE_SKIPPED;
    rc = node_state_file_add(self->state, &f);
    if (rc == 0)
        ts_log(TS_LOG_INFO, "attachment found",
               "conn=%s file=%s record=%s size=%" PRIu64 " state=%s", conn->id, f.file_id, f.record,
               f.size, node_file_state_name(f.state));
    return rc < 0 ? -1 : rc == 0;
}

//  Records every row of rows (s_found) in one transaction.
static int s_found_all(node_sync_t *self, const node_conn_t *conn, const json_t *rows)
{
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        if (s_found(self, conn, row) < 0)
            return -1;
    }
    return 0;
}

//  "YYYY-MM-DD HH:MM:SS" of stamp minus seconds (UTC) into out; an empty or
//  bad stamp gives unix time fallback instead.
static void s_stamp_minus(const char *stamp, int seconds, int64_t fallback, char *out, size_t n)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    time_t t = (time_t)fallback;
    if (stamp && *stamp && strptime(stamp, "%Y-%m-%d %H:%M:%S", &tm))
        t = timegm(&tm);
    t -= seconds;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%d %H:%M:%S", &tm);
}

//  The attachments created on our incidents since the file cursor (minus
//  the look-back): new files of existing twins.
static sn_err_code_t s_discover(node_sync_t *self, const node_conn_t *conn, sn_error_t *err)
{
    char from[NODE_CURSOR_SIZE], query[128];
    s_stamp_minus(*conn->file_cursor ? conn->file_cursor : conn->poll_cursor, self->lookback_s,
                  conn->joined_at ? conn->joined_at : (int64_t)time(NULL), from, sizeof from);
    snprintf(query, sizeof query, "table_name=%s^sys_created_on>=%s", NODE_REPLICA_TABLE, from);
    json_t *rows = NULL;
    sn_err_code_t rc = sn_attachment_list(self->sn, query, &rows, err);
    if (rc != SN_OK) {
        json_decref(rows);
        return rc;
    }
    char cursor[NODE_CURSOR_SIZE];
    snprintf(cursor, sizeof cursor, "%s", *conn->file_cursor ? conn->file_cursor : from);
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        const char *created = sn_field(row, "sys_created_on");
        if (strlen(created) == NODE_CURSOR_SIZE - 1 && strcmp(created, cursor) > 0)
            snprintf(cursor, sizeof cursor, "%s", created);
    }
    int failed = node_state_begin(self->state) || s_found_all(self, conn, rows) ||
                 node_state_conn_set_file_cursor(self->state, conn->id, cursor) < 0 ||
                 node_state_commit(self->state);
    json_decref(rows);
    if (failed) {
        node_state_rollback(self->state);
        return sn_error_set(err, SN_E_CANCELLED, 0, "state database failure", NULL);
    }
    return SN_OK;
}

//  "table_sys_idINa,b,c" of ids into a string owned by the caller.
static char *s_in_query(char (*ids)[PROTO_MAX_SN_ID + 1], size_t count)
{
    char *query = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&query, &len);
    if (!out)
        return NULL;
    fputs("table_sys_idIN", out);
    for (size_t i = 0; i < count; i++)
        fprintf(out, "%s%s", i ? "," : "", ids[i]);
    fclose(out);
    return query;
}

//  Every attachment of twins whose attachments were never listed: a new twin
//  receives the files its source already has.
static sn_err_code_t s_scan_twins(node_sync_t *self, const node_conn_t *conn, sn_error_t *err)
{
    char ids[S_IDS_PER_QUERY][PROTO_MAX_SN_ID + 1];
    size_t count = 0;
    if (node_state_twin_unscanned(self->state, conn->id, S_IDS_PER_QUERY, ids, &count))
        return sn_error_set(err, SN_E_CANCELLED, 0, "state database failure", NULL);
    if (count == 0)
        return SN_OK;
    char *query = s_in_query(ids, count);
    json_t *rows = NULL;
    sn_err_code_t rc = query ? sn_attachment_list(self->sn, query, &rows, err)
                             : sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
    free(query);
    int failed = rc == SN_OK && (node_state_begin(self->state) || s_found_all(self, conn, rows));
    for (size_t i = 0; rc == SN_OK && !failed && i < count; i++)
        failed = node_state_twin_set_scanned(self->state, conn->id, ids[i]) < 0;
    if (rc == SN_OK && !failed)
        failed = node_state_commit(self->state) != 0;
    json_decref(rows);
    if (failed) {
        node_state_rollback(self->state);
        return sn_error_set(err, SN_E_CANCELLED, 0, "state database failure", NULL);
    }
    return rc;
}

//  A file of ours that its source no longer lists: deleted at the source.
//  Inside a transaction. Nothing was sent yet: forgotten; chunks or a copy
//  went: a FILE_DELETE is owed (the pump sends it).
static int s_gone(node_sync_t *self, node_file_t *f)
{
    bool told = f->state == NODE_FILE_SENT || f->state == NODE_FILE_REFUSED || f->done > 0;
    ts_log(TS_LOG_INFO, "attachment deleted at its source", "conn=%s file=%s record=%s", f->conn,
           f->file_id, f->record);
    node_spool_remove(self->state_dir, f);
    f->state = NODE_FILE_DELETED;
    f->notify = told;
    return node_state_file_put(self->state, f) < 0 ? -1 : 0;
}

//  Which of our files still out there were deleted at the source: one list
//  per 50 incidents, every node.attachment_scan_s.
static sn_err_code_t s_scan_deleted(node_sync_t *self, const node_conn_t *conn, sn_error_t *err)
{
    static const node_file_state_t live[] = {NODE_FILE_QUEUED, NODE_FILE_SENDING, NODE_FILE_SENT,
                                             NODE_FILE_REFUSED};
    node_file_t *files = NULL;
    size_t count = 0;
    if (node_state_file_list(self->state, conn->id, NODE_FILE_OUT, live, 4, NULL, 0, &files,
                             &count))
        return sn_error_set(err, SN_E_CANCELLED, 0, "state database failure", NULL);
    sn_err_code_t rc = SN_OK;
    for (size_t start = 0; start < count && rc == SN_OK;) {
        char ids[S_IDS_PER_QUERY][PROTO_MAX_SN_ID + 1];
        size_t n = 0, end = start;
        for (; end < count && n < S_IDS_PER_QUERY; end++) {
            bool dup = false;
            for (size_t k = 0; k < n && !dup; k++)
                dup = !strcmp(ids[k], files[end].record);
            if (!dup)
                snprintf(ids[n++], sizeof ids[0], "%s", files[end].record);
        }
        char *query = s_in_query(ids, n);
        json_t *rows = NULL;
        rc = query ? sn_attachment_list(self->sn, query, &rows, err)
                   : sn_error_set(err, SN_E_CANCELLED, 0, "out of memory", NULL);
        free(query);
        int failed = rc == SN_OK && node_state_begin(self->state);
        for (size_t i = start; rc == SN_OK && !failed && i < end; i++) {
            bool listed = false;
            size_t j;
            json_t *row;
            json_array_foreach(rows, j, row)
            {
                if (!strcmp(sn_field(row, "sys_id"), files[i].file_id))
                    listed = true;
            }
            node_file_t now;
            int got = listed ? 1
                             : node_state_file_get(self->state, conn->id, NODE_FILE_OUT,
                                                   files[i].file_id, &now);
            failed = got < 0 || (got == 0 && now.state != NODE_FILE_DELETED && s_gone(self, &now));
        }
        if (rc == SN_OK && !failed)
            failed = node_state_commit(self->state) != 0;
        json_decref(rows);
        if (failed) {
            node_state_rollback(self->state);
            rc = sn_error_set(err, SN_E_CANCELLED, 0, "state database failure", NULL);
        }
        start = end;
    }
    free(files);
    return rc;
}

node_sync_rc_t node_sync_files_poll(node_sync_t *self, const node_conn_t *conn,
                                    node_sync_ctx_t *ctx)
{
    sn_error_t err;
    sn_error_reset(&err);
    sn_err_code_t rc = s_discover(self, conn, &err);
    if (rc == SN_OK)
        rc = s_scan_twins(self, conn, &err);
    int64_t now = ts_mono_ms();
    if (rc == SN_OK && now >= ctx->files_scan_at) {
        rc = s_scan_deleted(self, conn, &err);
        if (rc == SN_OK)
            ctx->files_scan_at = now + self->attachment_scan_ms;
    }
    if (rc == SN_E_CANCELLED)
        return node_sync_fatal(self, "attachments");
    //  Files never hold up fields and comments: a list that fails (a 403 on
    //  sys_attachment, an outage) is logged and tried again at the next
    //  poll, from the same cursor, without putting the connection in error.
    if (rc != SN_OK)
        ts_log(TS_LOG_WARN, "attachments not listed, tried again at the next poll",
               "conn=%s error=%s reason=\"%s\"", conn->id, sn_err_name(rc), err.message);
    return NODE_SYNC_OK;
}

//  --- sending chunks and owed messages (worker, every tick)

//  Queues the next chunks of f within the window (inside a transaction).
//  Returns the number queued, or -1.
static int s_top_up(node_sync_t *self, const node_conn_t *conn, node_sync_ctx_t *ctx,
                    node_file_t *f)
{
    if (f->state != NODE_FILE_SENDING || f->finished || !*f->hash)
        return 0;
    char path[4096], why[512];
    if (node_spool_path(self->state_dir, f, path, sizeof path, why, sizeof why)) {
        ts_log(TS_LOG_ERROR, "attachment spool", "conn=%s file=%s reason=\"%s\"", f->conn,
               f->file_id, why);
        return 0;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0; //  the transfer thread has not started it
    struct stat st;
    uint64_t have = fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    if (have > f->size)
        have = f->size;
    uint8_t *buf = malloc(PROTO_FILE_CHUNK_DATA);
    int queued = buf ? 0 : -1;
    while (queued >= 0 && !f->finished && f->done - f->acked < S_WINDOW) {
        uint64_t left = f->size - f->done;
        size_t len = left < PROTO_FILE_CHUNK_DATA ? (size_t)left : PROTO_FILE_CHUNK_DATA;
        bool last = f->done + len == f->size;
        //  Never a short chunk but the last, and the last only once the
        //  whole file was read and its SHA-256 checked.
        if (f->done + len > have || (last && !f->downloaded))
            break;
        if (len && pread(fd, buf, len, (off_t)f->done) != (ssize_t)len)
            break;
        proto_payload_t p;
        proto_payload_init(&p, PROTO_FILE_CHUNK);
        p.file_chunk = (proto_file_chunk_t){.file = f->file_id,
                                            .record = f->record,
                                            .offset = f->done,
                                            .size = f->size,
                                            .data = buf,
                                            .data_size = len};
        if (f->done == 0) {
            p.file_chunk.name = f->name;
            p.file_chunk.content_type = f->content_type;
            p.file_chunk.hash = f->hash;
        }
        uint64_t seq = 0;
        proto_error_t perr;
        int rc = node_sync_queue(self, conn, ctx, &p, &seq, &perr);
        if (rc) {
            if (rc > 0)
                ts_log(TS_LOG_ERROR, "attachment chunk not encodable",
                       "conn=%s file=%s reason=\"%s\"", f->conn, f->file_id,
                       proto_error_str(&perr));
            queued = rc < 0 ? -1 : queued;
            break;
        }
        f->done += len;
        f->finished = last;
        queued++;
    }
    free(buf);
    close(fd);
    if (queued > 0 && node_state_file_put(self->state, f) < 0)
        return -1;
    return queued;
}

//  Queues a message of ours about f (inside a transaction). Returns 0 or -1.
static int s_queue(node_sync_t *self, const node_conn_t *conn, node_sync_ctx_t *ctx,
                   const proto_payload_t *p)
{
    uint64_t seq = 0;
    proto_error_t perr;
    int rc = node_sync_queue(self, conn, ctx, p, &seq, &perr);
    if (rc > 0)
        ts_log(TS_LOG_ERROR, "attachment message not encodable", "conn=%s reason=\"%s\"", conn->id,
               proto_error_str(&perr));
    return rc < 0 ? -1 : 0;
}

//  Sends what f owes the other side (inside a transaction): the FILE_DELETE
//  of one of ours, the FILE_RECEIPT of one of theirs. A damaged file is
//  asked for again. Returns 0 or -1.
static int s_owed(node_sync_t *self, const node_conn_t *conn, node_sync_ctx_t *ctx, node_file_t *f)
{
    proto_payload_t p;
    if (f->dir == NODE_FILE_OUT) {
        proto_payload_init(&p, PROTO_FILE_DELETE);
        p.file_delete = (proto_file_delete_t){f->file_id, f->record};
    } else {
        proto_payload_init(&p, PROTO_FILE_RECEIPT);
        p.file_receipt.file = f->file_id;
        p.file_receipt.record = f->record;
        p.file_receipt.code = f->state == NODE_FILE_RECEIVED  ? PROTO_FILE_UPLOADED
                              : f->state == NODE_FILE_REFUSED ? PROTO_FILE_REFUSED
                              : f->state == NODE_FILE_SKIPPED ? PROTO_FILE_SKIPPED
                                                              : PROTO_FILE_FAILED;
        if (p.file_receipt.code == PROTO_FILE_UPLOADED)
            p.file_receipt.twin_file = f->twin_file;
        else
            p.file_receipt.error_text = *f->text ? f->text : "not uploaded";
    }
    if (s_queue(self, conn, ctx, &p))
        return -1;
    f->notify = false;
    if (f->dir == NODE_FILE_IN && f->state == NODE_FILE_FAILED) {
        //  Sent again from offset 0: the spool starts over
        node_spool_remove(self->state_dir, f);
        f->state = NODE_FILE_RECEIVING;
        f->done = f->acked = 0;
    }
    return node_state_file_put(self->state, f) < 0 ? -1 : 0;
}

//  Pumps the files of conn: chunks within the window, owed messages.
static int s_pump_conn(node_sync_t *self, const node_conn_t *conn, bool *sent)
{
    static const node_file_state_t pumped[] = {NODE_FILE_SENDING};
    node_sync_ctx_t *ctx = node_sync_ctx(self, conn->id);
    if (!ctx)
        return 0;
    node_file_t *files = NULL;
    size_t count = 0;
    if (node_state_begin(self->state))
        return -1;
    int rc = node_state_file_list(self->state, conn->id, NODE_FILE_OUT, pumped, 1, NULL, 0, &files,
                                  &count);
    for (size_t i = 0; rc == 0 && i < count; i++) {
        int n = s_top_up(self, conn, ctx, &files[i]);
        rc = n < 0 ? -1 : 0;
        *sent |= n > 0;
    }
    free(files);
    files = NULL;
    if (rc == 0 && node_state_file_list_owed(self->state, conn->id, &files, &count))
        rc = -1;
    for (size_t i = 0; rc == 0 && i < count; i++) {
        rc = s_owed(self, conn, ctx, &files[i]);
        *sent = true;
    }
    free(files);
    if (rc == 0)
        return node_state_commit(self->state);
    node_state_rollback(self->state);
    return -1;
}

node_sync_rc_t node_sync_files_pump(node_sync_t *self, bool *sent)
{
    node_conn_t *conns = NULL;
    size_t count = 0;
    if (node_state_conn_list(self->state, &conns, &count))
        return node_sync_fatal(self, "attachments");
    int rc = 0;
    for (size_t i = 0; i < count && rc == 0; i++)
        if (conns[i].status == NODE_CONN_ACTIVE)
            rc = s_pump_conn(self, &conns[i], sent);
    free(conns);
    return rc ? node_sync_fatal(self, "attachments") : NODE_SYNC_OK;
}

//  --- inbound (worker, inside the apply's transaction)

//  Writes size bytes of data at offset of f's spool (truncating it first at
//  offset 0). Returns 0 or -1.
static int s_spool_write(node_sync_t *self, const node_file_t *f, uint64_t offset,
                         const uint8_t *data, size_t size)
{
    char path[4096], why[512];
    if (node_spool_path(self->state_dir, f, path, sizeof path, why, sizeof why)) {
        ts_log(TS_LOG_ERROR, "attachment spool", "conn=%s file=%s reason=\"%s\"", f->conn,
               f->file_id, why);
        return -1;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (offset == 0 ? O_TRUNC : 0), 0600);
    if (fd < 0) {
        ts_log(TS_LOG_ERROR, "attachment spool", "path=%s reason=\"%s\"", path, strerror(errno));
        return -1;
    }
    ssize_t put = size ? pwrite(fd, data, size, (off_t)offset) : 0;
    int rc = put == (ssize_t)size ? 0 : -1;
    if (rc)
        ts_log(TS_LOG_ERROR, "attachment spool", "path=%s reason=\"%s\"", path,
               put < 0 ? strerror(errno) : "short write");
    close(fd);
    return rc;
}

//  A chunk of one of their files. Returns 0 or -1.
static int s_chunk_in(node_sync_t *self, const node_conn_t *conn, node_sync_ctx_t *ctx,
                      const proto_file_chunk_t *c)
{
    node_file_t f;
    int found = node_state_file_get(self->state, conn->id, NODE_FILE_IN, c->file, &f);
    if (found < 0)
        return -1;
    if (c->offset == 0) {
        //  The file starts (or starts over: the sender read it anew)
        if (found == 1) {
            memset(&f, 0, sizeof f);
            snprintf(f.conn, sizeof f.conn, "%s", conn->id);
            f.dir = NODE_FILE_IN;
            snprintf(f.file_id, sizeof f.file_id, "%s", c->file);
            snprintf(f.record, sizeof f.record, "%s", c->record);
            f.state = NODE_FILE_RECEIVING;
            if (node_state_file_add(self->state, &f) < 0)
                return -1;
        } else if (f.state != NODE_FILE_RECEIVING && f.state != NODE_FILE_FAILED) {
            return 0; //  done with already, skipped or deleted: a replay
        }
        snprintf(f.name, sizeof f.name, "%s", c->name);
        snprintf(f.content_type, sizeof f.content_type, "%s", c->content_type);
        snprintf(f.hash, sizeof f.hash, "%s", c->hash);
        f.size = c->size;
        f.done = f.acked = 0;
        f.notify = false;
        *f.text = '\0';
        char why[512];
        if (!s_takes(self, conn, c->size, why, sizeof why)) {
            f.state = NODE_FILE_SKIPPED;
            f.notify = true;
            snprintf(f.text, sizeof f.text, "file %.256s: %s", f.name, why);
            ts_log(TS_LOG_INFO, "attachment skipped", "conn=%s file=%s reason=\"%s\"", conn->id,
                   f.file_id, why);
            return node_state_file_put(self->state, &f) < 0 ? -1 : 0;
        }
        f.state = NODE_FILE_RECEIVING;
    } else if (found == 1 || f.state != NODE_FILE_RECEIVING || c->offset < f.done) {
        return 0; //  skipped, deleted or a chunk written before a crash
    } else if (c->offset > f.done) {
        //  A gap cannot come in order; ask for the file again
        f.state = NODE_FILE_FAILED;
        f.notify = true;
        snprintf(f.text, sizeof f.text,
                 "file %.256s: chunk at %" PRIu64 " while %" PRIu64 " bytes had arrived", f.name,
                 c->offset, f.done);
        return node_state_file_put(self->state, &f) < 0 ? -1 : 0;
    }
    if (s_spool_write(self, &f, c->offset, c->data, c->data_size))
        return -1;
    f.done = c->offset + c->data_size;
    if (f.done == f.size)
        f.state = NODE_FILE_COMPLETE; //  the transfer thread checks the hash, then uploads
    if (f.done - f.acked >= S_ACK_EVERY || f.done == f.size) {
        proto_payload_t p;
        proto_payload_init(&p, PROTO_FILE_ACK);
        p.file_ack = (proto_file_ack_t){f.file_id, f.record, f.done};
        if (s_queue(self, conn, ctx, &p))
            return -1;
        f.acked = f.done;
    }
    return node_state_file_put(self->state, &f) < 0 ? -1 : 0;
}

//  The receiver's word on one of our files.
static int s_ack_in(node_sync_t *self, const node_conn_t *conn, node_sync_ctx_t *ctx,
                    const proto_file_ack_t *a)
{
    node_file_t f;
    int found = node_state_file_get(self->state, conn->id, NODE_FILE_OUT, a->file, &f);
    if (found)
        return found < 0 ? -1 : 0;
    uint64_t received = a->received < f.done ? a->received : f.done;
    if (received > f.acked)
        f.acked = received;
    if (node_state_file_put(self->state, &f) < 0)
        return -1;
    return s_top_up(self, conn, ctx, &f) < 0 ? -1 : 0;
}

static int s_receipt_in(node_sync_t *self, const node_conn_t *conn, const proto_file_receipt_t *r)
{
    node_file_t f;
    int found = node_state_file_get(self->state, conn->id, NODE_FILE_OUT, r->file, &f);
    if (found)
        return found < 0 ? -1 : 0;
    if (f.state == NODE_FILE_DELETED)
        return 0;
    *f.text = '\0';
    if (r->code == PROTO_FILE_UPLOADED) {
        f.state = NODE_FILE_SENT;
        snprintf(f.twin_file, sizeof f.twin_file, "%s", r->twin_file);
    } else if (r->code == PROTO_FILE_FAILED) {
        //  Arrived damaged: from offset 0 again, from the spool if it is whole
        f.done = f.acked = 0;
        f.finished = false;
        snprintf(f.text, sizeof f.text, "%s", r->error_text);
    } else {
        f.state = r->code == PROTO_FILE_REFUSED ? NODE_FILE_REFUSED : NODE_FILE_SKIPPED;
        snprintf(f.text, sizeof f.text, "%s", r->error_text);
    }
    ts_log(TS_LOG_INFO, "attachment receipt", "conn=%s file=%s code=%u state=%s", conn->id,
           f.file_id, (unsigned)r->code, node_file_state_name(f.state));
    if (f.state != NODE_FILE_SENDING)
        node_spool_remove(self->state_dir, &f);
    return node_state_file_put(self->state, &f) < 0 ? -1 : 0;
}

int node_sync_files_in(node_sync_t *self, const node_conn_t *conn, node_sync_ctx_t *ctx,
                       const proto_payload_t *p)
{
    switch (p->type) {
    case PROTO_FILE_CHUNK:
        return s_chunk_in(self, conn, ctx, &p->file_chunk);
    case PROTO_FILE_ACK:
        return s_ack_in(self, conn, ctx, &p->file_ack);
    case PROTO_FILE_RECEIPT:
        return s_receipt_in(self, conn, &p->file_receipt);
    default:
        return 0;
    }
}

node_sync_rc_t node_sync_files_delete_in(node_sync_t *self, const node_conn_t *conn,
                                         const proto_file_delete_t *d)
{
    node_file_t f;
    int found = node_state_file_get(self->state, conn->id, NODE_FILE_IN, d->file, &f);
    if (found)
        return found < 0 ? node_sync_fatal(self, "attachments") : NODE_SYNC_OK;
    if (f.state == NODE_FILE_COMPLETE) {
        //  An upload whose answer was lost may have stored it: that copy goes
        node_twin_t twin = {0};
        int got = node_state_twin_by_remote(self->state, conn->id, f.record, &twin);
        char local[PROTO_MAX_SN_ID + 1];
        snprintf(local, sizeof local, "%s", twin.local_sys_id);
        node_twin_clear(&twin);
        sn_error_t err;
        sn_error_reset(&err);
        int copy = got == 0 && *local
                       ? node_transfer_find_copy(self->state, self->sn, self->sync_user, &f, local,
                                                 f.twin_file, sizeof f.twin_file, &err)
                       : 0;
        if (copy < 0)
            return *err.message ? node_sync_fail_sn(self, conn->id, &err, "attachment delete")
                                : node_sync_fatal(self, "attachments");
        if (copy == 1)
            f.state = NODE_FILE_RECEIVED; //  deleted just below
    }
    if (f.state == NODE_FILE_RECEIVED && *f.twin_file) {
        //  Our copy was put here by twinsync: it goes too. A file a person
        //  attached here is in no row, so never deleted.
        sn_error_t err;
        sn_error_reset(&err);
        sn_err_code_t rc = sn_attachment_delete(self->sn, f.twin_file, &err);
        if (rc != SN_OK && rc != SN_E_NOT_FOUND)
            return node_sync_fail_sn(self, conn->id, &err, "attachment delete");
        ts_log(TS_LOG_INFO, "attachment deleted", "conn=%s file=%s copy=%s", conn->id, f.file_id,
               f.twin_file);
    }
    return NODE_SYNC_OK;
}

int node_sync_files_deleted(node_sync_t *self, const node_conn_t *conn,
                            const proto_file_delete_t *d)
{
    node_file_t f;
    int found = node_state_file_get(self->state, conn->id, NODE_FILE_IN, d->file, &f);
    if (found)
        return found < 0 ? -1 : 0;
    if (f.state == NODE_FILE_REFUSED) {
        node_error_t e;
        int has = node_state_error_for_twin(self->state, conn->id, f.record, "file", &e);
        if (has < 0 || (has == 0 && node_state_error_remove(self->state, e.id)))
            return -1;
    }
    node_spool_remove(self->state_dir, &f);
    f.state = NODE_FILE_DELETED;
    f.notify = false;
    return node_state_file_put(self->state, &f) < 0 ? -1 : 0;
}

int node_sync_files_retry(node_sync_t *self, const node_error_t *e)
{
    static const node_file_state_t refused[] = {NODE_FILE_REFUSED};
    node_file_t *files = NULL;
    size_t count = 0;
    if (node_state_begin(self->state))
        return -1;
    int rc = node_state_file_list(self->state, e->conn, NODE_FILE_IN, refused, 1, e->remote_sys_id,
                                  0, &files, &count);
    for (size_t i = 0; rc == 0 && i < count; i++) {
        files[i].state = NODE_FILE_COMPLETE;
        *files[i].text = '\0';
        rc = node_state_file_put(self->state, &files[i]) < 0 ? -1 : 0;
    }
    free(files);
    if (rc == 0)
        rc = node_state_error_remove(self->state, e->id);
    if (rc == 0)
        return node_state_commit(self->state);
    node_state_rollback(self->state);
    return -1;
}

void node_sync_files_forget(node_sync_t *self, const char *conn)
{
    node_spool_remove_conn(self->state_dir, conn);
}
