/*  node_transfer.c: the transfer thread (see node_transfer.h).

    How the parts fit: s_main loops on node_transfer_step, which picks the
    oldest file due (s_pick: a download of ours, else an upload of theirs,
    skipping those waiting out a back-off) and runs s_download or s_upload.
    Both end in s_commit_file, the read-change-write of the row inside one
    transaction.
*/
#include "node_transfer.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "node_replica.h"
#include "node_spool.h"
#include "sn_attachment.h"
#include "sn_record.h"
#include "ts_log.h"
#include "ts_secret.h"

#define S_IDLE_MS      200             //  Nap when nothing is due
#define S_MAX_DELAY_MS (5 * 60 * 1000) //  Longest back-off
#define S_HASH_BLOCK   (256 * 1024)    //  Bytes hashed at a time

//  A file waiting out a back-off after a failed attempt.
typedef struct {
    char conn[PROTO_MAX_ID + 1];       //  Its connection
    node_file_dir_t dir;               //  Its direction
    char file_id[PROTO_MAX_SN_ID + 1]; //  Its id
    int64_t at;                        //  Monotonic ms it is due again
    int64_t delay;                     //  The back-off that set at
} s_wait_t;

struct node_transfer {
    node_state_t *state;  //  Not owned
    sn_client_t *sn;      //  Not owned
    char *state_dir;      //  Owned copy
    char *sync_user;      //  Owned copy
    int64_t retry_ms;     //  First back-off
    s_wait_t *waits;      //  Files backing off
    size_t wait_count;    //  Entries in waits
    pthread_t thread;     //  The thread, once started
    bool started;         //  thread is valid
    atomic_bool stopping; //  Asked to stop
};

node_transfer_t *node_transfer_new(const node_transfer_config_t *cfg)
{
    node_transfer_t *self = calloc(1, sizeof(node_transfer_t));
    if (!self)
        return NULL;
    self->state = cfg->state;
    self->sn = cfg->sn;
    self->state_dir = strdup(cfg->state_dir);
    self->sync_user = strdup(cfg->sync_user);
    self->retry_ms = cfg->retry_ms > 0 ? cfg->retry_ms : 5000;
    atomic_init(&self->stopping, false);
    if (!self->state_dir || !self->sync_user)
        node_transfer_destroy(&self);
    return self;
}

void node_transfer_destroy(node_transfer_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    node_transfer_t *self = *self_p;
    atomic_store(&self->stopping, true);
    if (self->started)
        pthread_join(self->thread, NULL);
    free(self->waits);
    free(self->state_dir);
    free(self->sync_user);
    free(self);
    *self_p = NULL;
}

//  --- back-off

static s_wait_t *s_wait_find(node_transfer_t *self, const node_file_t *f)
{
    for (size_t i = 0; i < self->wait_count; i++) {
        s_wait_t *w = &self->waits[i];
        if (w->dir == f->dir && !strcmp(w->file_id, f->file_id) && !strcmp(w->conn, f->conn))
            return w;
    }
    return NULL;
}

//  f failed: due again after a back-off that doubles each time.
static void s_wait_add(node_transfer_t *self, const node_file_t *f)
{
    s_wait_t *w = s_wait_find(self, f);
    if (!w) {
        s_wait_t *grown = realloc(self->waits, (self->wait_count + 1) * sizeof(s_wait_t));
        if (!grown)
            return;
        self->waits = grown;
        w = &self->waits[self->wait_count++];
        memset(w, 0, sizeof *w);
        snprintf(w->conn, sizeof w->conn, "%s", f->conn);
        w->dir = f->dir;
        snprintf(w->file_id, sizeof w->file_id, "%s", f->file_id);
    }
    w->delay = w->delay ? w->delay * 2 : self->retry_ms;
    if (w->delay > S_MAX_DELAY_MS)
        w->delay = S_MAX_DELAY_MS;
    w->at = ts_mono_ms() + w->delay;
}

static void s_wait_clear(node_transfer_t *self, const node_file_t *f)
{
    s_wait_t *w = s_wait_find(self, f);
    if (w)
        *w = self->waits[--self->wait_count];
}

static bool s_waiting(node_transfer_t *self, const node_file_t *f)
{
    s_wait_t *w = s_wait_find(self, f);
    return w && ts_mono_ms() < w->at;
}

//  --- rows

//  Applies change to the current row of f inside one transaction (the worker
//  writes the same rows). change returns 0 to write the row, 1 to leave it,
//  -1 on a failure. Returns 0, or -1 when the database failed.
static int s_commit_file(node_transfer_t *self, const node_file_t *f,
                         int (*change)(node_transfer_t *self, node_file_t *now, void *arg),
                         void *arg)
{
    if (node_state_begin(self->state))
        return -1;
    node_file_t now;
    int rc = node_state_file_get(self->state, f->conn, f->dir, f->file_id, &now);
    if (rc == 0)
        rc = change(self, &now, arg);
    if (rc == 0)
        rc = node_state_file_put(self->state, &now) < 0 ? -1 : 0;
    if (rc >= 0)
        return node_state_commit(self->state);
    node_state_rollback(self->state);
    return -1;
}

//  Whether conn is active (files move only then).
static bool s_active(node_transfer_t *self, const char *conn)
{
    node_conn_t c;
    return node_state_conn_get(self->state, conn, &c) == 0 && c.status == NODE_CONN_ACTIVE;
}

//  --- download (a file of ours into its spool)

//  Hashes while the download writes: the spool's bytes go through here.
typedef struct {
    sn_attachment_fd_t out; //  Where they go
    EVP_MD_CTX *md;         //  SHA-256 of everything from offset 0
    node_transfer_t *self;  //  To see a stop request
} s_sink_t;

static int s_sink(const void *data, size_t len, void *arg)
{
    s_sink_t *sink = arg;
    if (atomic_load(&sink->self->stopping))
        return -1;
    if (EVP_DigestUpdate(sink->md, data, len) != 1)
        return -1;
    return sn_attachment_fd_sink(data, len, &sink->out);
}

//  Feeds the first size bytes of fd to md. Returns 0 or -1.
static int s_hash_prefix(int fd, uint64_t size, EVP_MD_CTX *md)
{
    uint8_t *block = malloc(S_HASH_BLOCK);
    int rc = block ? 0 : -1;
    for (uint64_t at = 0; rc == 0 && at < size;) {
        size_t want = size - at < S_HASH_BLOCK ? (size_t)(size - at) : S_HASH_BLOCK;
        ssize_t got = pread(fd, block, want, (off_t)at);
        if (got <= 0 || EVP_DigestUpdate(md, block, (size_t)got) != 1)
            rc = -1;
        else
            at += (uint64_t)got;
    }
    free(block);
    return rc;
}

//  Changes of a download's row.
typedef struct {
    const char *hash; //  The SHA-256 computed (NULL: none)
    const char *text; //  Why it failed (NULL: it did not)
    int outcome;      //  0 done, 1 damaged (start over), 2 gone, 3 refused
} s_downloaded_t;

static int s_download_done(node_transfer_t *self, node_file_t *now, void *arg)
{
    const s_downloaded_t *d = arg;
    if (now->state != NODE_FILE_SENDING && now->state != NODE_FILE_QUEUED)
        return 1; //  deleted or answered meanwhile
    if (d->outcome == 0) {
        if (!*now->hash)
            snprintf(now->hash, sizeof now->hash, "%s", d->hash);
        now->state = NODE_FILE_SENDING;
        now->downloaded = true;
    } else if (d->outcome == 1) {
        //  The bytes read do not match the instance's hash: read it anew and
        //  send it from offset 0 (the receiver starts over there)
        node_spool_remove(self->state_dir, now);
        now->done = now->acked = 0;
        now->finished = false;
        now->downloaded = false;
    } else {
        bool told = now->done > 0;
        node_spool_remove(self->state_dir, now);
        now->state = d->outcome == 2 ? NODE_FILE_DELETED : NODE_FILE_REFUSED;
        now->notify = d->outcome == 2 && told;
        snprintf(now->text, sizeof now->text, "%s", d->text ? d->text : "");
    }
    return 0;
}

static int s_download_start(node_transfer_t *self, node_file_t *now, void *arg)
{
    (void)self;
    (void)arg;
    if (now->state != NODE_FILE_QUEUED)
        return 1;
    now->state = NODE_FILE_SENDING;
    return 0;
}

//  Reads f from our instance into its spool, from where the spool ends.
//  Returns 0 or -1 (database).
static int s_download(node_transfer_t *self, node_file_t *f)
{
    if (f->state == NODE_FILE_QUEUED && s_commit_file(self, f, s_download_start, NULL))
        return -1;
    char path[4096], why[512];
    if (node_spool_path(self->state_dir, f, path, sizeof path, why, sizeof why)) {
        ts_log(TS_LOG_ERROR, "attachment spool", "conn=%s file=%s reason=\"%s\"", f->conn,
               f->file_id, why);
        s_wait_add(self, f);
        return 0;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) {
        ts_log(TS_LOG_ERROR, "attachment spool", "path=%s reason=\"%s\"", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        s_wait_add(self, f);
        return 0;
    }
    uint64_t have = (uint64_t)st.st_size;
    if (have > f->size && ftruncate(fd, 0) == 0)
        have = 0;
    s_sink_t sink = {.out = {.fd = fd, .at = have}, .md = EVP_MD_CTX_new(), .self = self};
    int ok = sink.md && EVP_DigestInit_ex(sink.md, EVP_sha256(), NULL) == 1 &&
             s_hash_prefix(fd, have, sink.md) == 0;
    sn_error_t err;
    sn_error_reset(&err);
    sn_err_code_t rc = SN_OK;
    if (ok && have < f->size)
        rc = sn_attachment_download(self->sn, f->file_id, have, s_sink, &sink, NULL, NULL, &err);
    else if (ok && have == 0 && f->size == 0)
        rc = SN_OK; //  nothing to read
    char hex[65] = "";
    unsigned char digest[32];
    unsigned int len = 0;
    s_downloaded_t d = {0};
    if (!ok) {
        ts_log(TS_LOG_ERROR, "attachment spool", "path=%s reason=\"cannot hash\"", path);
        d.outcome = -1;
    } else if (rc == SN_OK) {
        if (fdatasync(fd) == 0 && EVP_DigestFinal_ex(sink.md, digest, &len) == 1) {
            ts_hex_encode(digest, sizeof digest, hex);
            d.hash = hex;
            d.outcome = *f->hash && strcmp(f->hash, hex) ? 1 : 0;
        } else {
            d.outcome = -1;
        }
    } else if (rc == SN_E_NOT_FOUND) {
        d.outcome = 2;
        d.text = "deleted at the source";
    } else if (rc == SN_E_PERMISSION) {
        d.outcome = 3;
        d.text = "our instance refused to give the file (403)";
    } else {
        d.outcome = -1;
    }
    EVP_MD_CTX_free(sink.md);
    close(fd);
    if (d.outcome < 0) {
        if (rc != SN_E_CANCELLED)
            ts_log(TS_LOG_WARN, "attachment download failed, retried later",
                   "conn=%s file=%s error=%s reason=\"%s\"", f->conn, f->file_id, sn_err_name(rc),
                   err.message);
        s_wait_add(self, f);
        return 0;
    }
    if (d.outcome == 1) {
        ts_log(TS_LOG_WARN, "attachment read damaged, read again", "conn=%s file=%s", f->conn,
               f->file_id);
        s_wait_add(self, f);
    } else {
        s_wait_clear(self, f);
        ts_log(TS_LOG_INFO, "attachment read", "conn=%s file=%s size=%" PRIu64 " outcome=%d",
               f->conn, f->file_id, f->size, d.outcome);
    }
    return s_commit_file(self, f, s_download_done, &d);
}

//  --- upload (a file of theirs from its spool to its twin incident)

typedef struct {
    int outcome;           //  0 uploaded, 1 damaged, 2 refused
    const char *twin_file; //  Uploaded: its sys_id here
    const char *text;      //  Damaged, refused: why
    const char *local;     //  The twin incident here
    const char *number;    //  Its number
} s_uploaded_t;

static int s_upload_done(node_transfer_t *self, node_file_t *now, void *arg)
{
    const s_uploaded_t *u = arg;
    if (now->state == NODE_FILE_DELETED && u->outcome == 0) {
        //  Deleted at the source while it was uploading: it goes again
        sn_error_t err;
        sn_error_reset(&err);
        sn_attachment_delete(self->sn, u->twin_file, &err);
        return 1;
    }
    if (now->state != NODE_FILE_COMPLETE)
        return 1;
    now->notify = true;
    if (u->outcome == 0) {
        now->state = NODE_FILE_RECEIVED;
        snprintf(now->twin_file, sizeof now->twin_file, "%s", u->twin_file);
        node_spool_remove(self->state_dir, now);
        return 0;
    }
    snprintf(now->text, sizeof now->text, "file %.256s: %.700s", now->name, u->text);
    if (u->outcome == 1) {
        now->state = NODE_FILE_FAILED;
        return 0;
    }
    now->state = NODE_FILE_REFUSED; //  the spool stays for `errors retry`
    node_error_t e;
    memset(&e, 0, sizeof e);
    snprintf(e.conn, sizeof e.conn, "%s", now->conn);
    snprintf(e.local_sys_id, sizeof e.local_sys_id, "%s", u->local);
    snprintf(e.local_number, sizeof e.local_number, "%s", u->number);
    snprintf(e.remote_sys_id, sizeof e.remote_sys_id, "%s", now->record);
    snprintf(e.origin, sizeof e.origin, "file");
    snprintf(e.code, sizeof e.code, "file_refused");
    snprintf(e.message, sizeof e.message, "%s", now->text);
    return node_state_error_add(self->state, &e) ? -1 : 0;
}

int node_transfer_find_copy(node_state_t *state, sn_client_t *sn, const char *sync_user,
                            const node_file_t *f, const char *local, char *out, size_t size,
                            sn_error_t *err)
{
    json_t *rows = NULL;
    sn_err_code_t rc = sn_attachment_list_record(sn, NODE_REPLICA_TABLE, local, &rows, err);
    if (rc != SN_OK)
        return -1;
    node_file_t *all = NULL;
    size_t count = 0;
    if (node_state_file_list(state, f->conn, NODE_FILE_IN, NULL, 0, f->record, 0, &all, &count)) {
        json_decref(rows);
        return -1;
    }
    int found = 0;
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        if (found || strcmp(sn_field(row, "file_name"), f->name) ||
            strcmp(sn_field(row, "hash"), f->hash) ||
            strcmp(sn_field(row, "sys_created_by"), sync_user))
            continue;
        //  Claimed by another file of ours (two identical files attached)?
        bool claimed = false;
        for (size_t k = 0; k < count && !claimed; k++)
            claimed = !strcmp(all[k].twin_file, sn_field(row, "sys_id"));
        if (!claimed) {
            snprintf(out, size, "%s", sn_field(row, "sys_id"));
            found = 1;
        }
    }
    free(all);
    json_decref(rows);
    return found;
}

//  A file deleted at its source while its upload's outcome was unknown: the
//  copy that attempt may have stored goes too.
static void s_delete_unknown_copy(node_transfer_t *self, const node_file_t *f, const char *local)
{
    node_file_t now;
    if (node_state_file_get(self->state, f->conn, f->dir, f->file_id, &now) ||
        now.state != NODE_FILE_DELETED)
        return;
    char copy[PROTO_MAX_SN_ID + 1];
    sn_error_t err;
    sn_error_reset(&err);
    if (node_transfer_find_copy(self->state, self->sn, self->sync_user, f, local, copy, sizeof copy,
                                &err) == 1 &&
        sn_attachment_delete(self->sn, copy, &err) == SN_OK)
        ts_log(TS_LOG_INFO, "attachment deleted", "conn=%s file=%s copy=%s", f->conn, f->file_id,
               copy);
}

//  Checks f's spool and uploads it to its twin. Returns 0 or -1 (database).
static int s_upload(node_transfer_t *self, node_file_t *f)
{
    node_twin_t twin = {0};
    int got = node_state_twin_by_remote(self->state, f->conn, f->record, &twin);
    char local[PROTO_MAX_SN_ID + 1], number[PROTO_MAX_SN_ID + 1];
    snprintf(local, sizeof local, "%s", twin.local_sys_id);
    snprintf(number, sizeof number, "%s", twin.local_number);
    node_twin_clear(&twin);
    if (got < 0)
        return -1;
    if (got == 1 || !*local) {
        s_wait_add(self, f); //  its twin is not made yet
        return 0;
    }
    char path[4096], why[512], hex[65] = "";
    if (node_spool_path(self->state_dir, f, path, sizeof path, why, sizeof why)) {
        s_wait_add(self, f);
        return 0;
    }
    s_uploaded_t u = {.local = local, .number = number};
    int hashed = node_spool_hash(path, f->size, hex, why, sizeof why);
    struct stat st;
    if (hashed == 0 && stat(path, &st) == 0 && (uint64_t)st.st_size != f->size)
        hashed = 1;
    if (hashed || strcmp(hex, f->hash)) {
        //  Only a whole file with the sender's SHA-256 goes up
        ts_log(TS_LOG_WARN, "attachment arrived damaged, asked for again",
               "conn=%s file=%s reason=\"%s\"", f->conn, f->file_id,
               hashed ? why : "SHA-256 differs");
        u.outcome = 1;
        u.text = "arrived damaged (SHA-256 differs); sent again";
        return s_commit_file(self, f, s_upload_done, &u);
    }
    sn_error_t err;
    sn_error_reset(&err);
    char copy[PROTO_MAX_SN_ID + 1] = "";
    int before = node_transfer_find_copy(self->state, self->sn, self->sync_user, f, local, copy,
                                         sizeof copy, &err);
    sn_err_code_t rc = before < 0 ? err.code : SN_OK;
    json_t *meta = NULL;
    if (before == 0) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        sn_attachment_file_t file = {.table = NODE_REPLICA_TABLE,
                                     .table_sys_id = local,
                                     .file_name = f->name,
                                     .content_type = f->content_type,
                                     .fd = fd,
                                     .size = f->size};
        rc = fd < 0 ? sn_error_set(&err, SN_E_UNAVAILABLE, 0, "cannot open the spool", "%s", path)
                    : sn_attachment_upload(self->sn, &file, &meta, &err);
        if (fd >= 0)
            close(fd);
        if (rc == SN_OK)
            snprintf(copy, sizeof copy, "%s", sn_field(meta, "sys_id"));
        json_decref(meta);
    }
    if (before < 0 && !*err.message)
        return -1;
    if (rc == SN_OK && *copy) {
        s_wait_clear(self, f);
        ts_log(TS_LOG_INFO, "attachment uploaded", "conn=%s file=%s copy=%s twin=%s size=%" PRIu64,
               f->conn, f->file_id, copy, number, f->size);
        u.outcome = 0;
        u.twin_file = copy;
        return s_commit_file(self, f, s_upload_done, &u);
    }
    //  A 403 on sys_attachment (its list or the upload) refuses the file as
    //  surely as the extension rule: no retry helps until the admin acts.
    if (rc == SN_E_FILE_REFUSED || rc == SN_E_NOT_FOUND || rc == SN_E_BAD_REQUEST ||
        rc == SN_E_PERMISSION) {
        char text[NODE_TEXT_MAX + 1];
        snprintf(text, sizeof text, "%s%s%s", err.message, *err.detail ? ": " : "", err.detail);
        ts_log(TS_LOG_WARN, "attachment refused", "conn=%s file=%s twin=%s reason=\"%s\"", f->conn,
               f->file_id, number, text);
        s_wait_clear(self, f);
        u.outcome = 2;
        u.text = text;
        return s_commit_file(self, f, s_upload_done, &u);
    }
    ts_log(TS_LOG_WARN, "attachment upload failed, retried later",
           "conn=%s file=%s error=%s reason=\"%s\"", f->conn, f->file_id, sn_err_name(rc),
           err.message);
    s_delete_unknown_copy(self, f, local);
    s_wait_add(self, f);
    return 0;
}

//  --- the loop

//  The oldest file due in direction dir among states, into *out. Returns 1
//  found, 0 none, -1.
static int s_pick(node_transfer_t *self, node_file_dir_t dir, const node_file_state_t *states,
                  size_t n, node_file_t *out)
{
    node_file_t *files = NULL;
    size_t count = 0;
    if (node_state_file_list(self->state, NULL, dir, states, n, NULL, 0, &files, &count))
        return -1;
    int found = 0;
    for (size_t i = 0; i < count && !found; i++) {
        if ((dir == NODE_FILE_OUT && files[i].downloaded) || s_waiting(self, &files[i]) ||
            !s_active(self, files[i].conn))
            continue;
        *out = files[i];
        found = 1;
    }
    free(files);
    return found;
}

int node_transfer_step(node_transfer_t *self)
{
    static const node_file_state_t down[] = {NODE_FILE_QUEUED, NODE_FILE_SENDING};
    static const node_file_state_t up[] = {NODE_FILE_COMPLETE};
    node_file_t f;
    int found = s_pick(self, NODE_FILE_OUT, down, 2, &f);
    if (found == 1)
        return s_download(self, &f) ? -1 : 1;
    if (found == 0)
        found = s_pick(self, NODE_FILE_IN, up, 1, &f);
    if (found == 1)
        return s_upload(self, &f) ? -1 : 1;
    return found;
}

static void *s_main(void *arg)
{
    node_transfer_t *self = arg;
    while (!atomic_load(&self->stopping)) {
        int rc = node_transfer_step(self);
        if (rc < 0)
            ts_log(TS_LOG_ERROR, "transfer thread: state database failure", "reason=\"%s\"",
                   node_state_error(self->state));
        if (rc == 1)
            continue;
        for (int waited = 0; waited < S_IDLE_MS && !atomic_load(&self->stopping); waited += 20) {
            struct timespec nap = {0, 20 * 1000 * 1000};
            nanosleep(&nap, NULL);
        }
    }
    return NULL;
}

int node_transfer_start(node_transfer_t *self)
{
    if (pthread_create(&self->thread, NULL, s_main, self))
        return -1;
    self->started = true;
    return 0;
}
