/*  core_rig.c: broker_core on a bench (see core_rig.h). */
#include "core_rig.h"

#include "faulty_vfs.h"

#include <errno.h>
#include <openssl/sha.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

//  Fixed keys (valid Z85, 40 characters) so that runs are reproducible.
static const char *s_keys[RIG_IDS] = {
    "rigPUBLICkey0000000000000000000000000000",
    "rigPRIVATEkey000000000000000000000000000",
    "rigSTRANGERkey00000000000000000000000000",
};

static int s_rig_send(void *arg, const uint8_t *rid, size_t rid_size, const uint8_t *data,
                      size_t size)
{
    core_rig_t *rig = arg;
    if (rig->fail_errno) {
        errno = rig->fail_errno;
        return -1;
    }
    if (rig->out_count == rig->out_cap) {
        size_t cap = rig->out_cap ? rig->out_cap * 2 : 64;
        rig_out_t *grown = realloc(rig->out, cap * sizeof *grown);
        if (!grown) {
            errno = EAGAIN;
            return -1;
        }
        rig->out = grown;
        rig->out_cap = cap;
    }
    rig_out_t *out = &rig->out[rig->out_count++];
    out->id = -1;
    out->rid_size = rid_size < RIG_RID_MAX ? rid_size : RIG_RID_MAX;
    memcpy(out->rid, rid, out->rid_size);
    for (int i = 0; i < RIG_IDS; i++) {
        if (rid_size == sizeof rig->rids[i] && memcmp(rid, rig->rids[i], rid_size) == 0)
            out->id = i;
    }
    out->decoded = proto_msg_decode(data, size, NULL, &out->msg, NULL) == PROTO_OK;
    return 0;
}

static int s_open(core_rig_t *rig, bool fast, const char *vfs)
{
    char err[512];
    broker_store_options_t options = {.no_sync = fast, .vfs = vfs};
    if (vfs && strcmp(vfs, "faulty") == 0)
        options.sync = faulty_vfs_sync_fd;
    rig->store = broker_store_open(rig->config.state_dir, &options, err, sizeof err);
    if (!rig->store) {
        fprintf(stderr, "rig: %s\n", err);
        return -1;
    }
    rig->core = broker_core_new(rig->store, &rig->config, s_rig_send, rig, err, sizeof err);
    if (!rig->core) {
        fprintf(stderr, "rig: %s\n", err);
        return -1;
    }
    return 0;
}

int core_rig_init(core_rig_t *rig, const char *const *extra_args, bool fast, const char *store_vfs)
{
    memset(rig, 0, sizeof *rig);
    const char *base = access("/dev/shm", W_OK) == 0 && fast ? "/dev/shm" : "/tmp";
    snprintf(rig->dir, sizeof rig->dir, "%s/core-rig.XXXXXX", base);
    if (!mkdtemp(rig->dir))
        return -1;
    for (int i = 0; i < RIG_IDS; i++) {
        snprintf(rig->keys[i], sizeof rig->keys[i], "%s", s_keys[i]);
        memcpy(rig->rids[i], "\0rid-id", 8);
        rig->rids[i][7] = (uint8_t)('0' + i);
        snprintf(rig->addresses[i], sizeof rig->addresses[i], "192.0.2.%d", 1 + i);
    }
    const char *argv[64] = {"twinsync-broker",      "run",
                            "--broker.state_dir",   rig->dir,
                            "--broker.public_keys", s_keys[RIG_PUBLIC],
                            "--broker.log_level",   "error"};
    int argc = 8;
    for (int i = 0; extra_args && extra_args[i] && argc < 63; i++)
        argv[argc++] = extra_args[i];
    argv[argc] = NULL;
    char err[512];
    if (broker_config_load(&rig->config, argc, (char **)argv, 2, err, sizeof err) != 0) {
        fprintf(stderr, "rig: %s\n", err);
        return -1;
    }
    rig->now_ms = 1700000000000;
    return s_open(rig, fast, store_vfs);
}

static int s_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

void core_rig_clear(core_rig_t *rig)
{
    for (size_t i = 0; i < rig->out_count; i++)
        proto_msg_clear(&rig->out[i].msg);
    rig->out_count = 0;
}

void core_rig_release(core_rig_t *rig)
{
    broker_core_destroy(&rig->core);
    broker_store_destroy(&rig->store);
    core_rig_clear(rig);
    free(rig->out);
    rig->out = NULL;
    rig->out_cap = 0;
    broker_config_release(&rig->config);
    if (*rig->dir)
        nftw(rig->dir, s_rm, 8, FTW_DEPTH | FTW_PHYS);
}

int core_rig_restart(core_rig_t *rig)
{
    if (broker_core_commit(rig->core) != 0) //  a clean stop, as on SIGTERM
        return -1;
    broker_core_destroy(&rig->core);
    broker_store_destroy(&rig->store);
    core_rig_clear(rig);
    return s_open(rig, false, NULL);
}

//  The sender with identity rid_id's routing id and address and key_id's key.
static broker_sender_t s_sender(const core_rig_t *rig, int rid_id, int key_id)
{
    return (broker_sender_t){rig->rids[rid_id], sizeof rig->rids[rid_id], rig->keys[key_id],
                             rig->addresses[rid_id]};
}

int core_rig_raw(core_rig_t *rig, int id, const void *data, size_t size)
{
    broker_sender_t from = s_sender(rig, id, id);
    return broker_core_handle(rig->core, &from, data, size, rig->now_ms);
}

int core_rig_send_from(core_rig_t *rig, const broker_sender_t *from, const proto_msg_t *msg)
{
    proto_buf_t buf;
    proto_buf_init(&buf);
    int rc = -1;
    if (proto_msg_encode(msg, NULL, &buf, NULL) == PROTO_OK)
        rc = broker_core_handle(rig->core, from, buf.data, buf.size, rig->now_ms);
    proto_buf_release(&buf);
    return rc;
}

int core_rig_send_as(core_rig_t *rig, int rid_id, int key_id, const proto_msg_t *msg)
{
    broker_sender_t from = s_sender(rig, rid_id, key_id);
    return core_rig_send_from(rig, &from, msg);
}

int core_rig_send(core_rig_t *rig, int id, const proto_msg_t *msg)
{
    return core_rig_send_as(rig, id, id, msg);
}

void core_rig_reconnect(core_rig_t *rig, int id)
{
    rig->rids[id][6]++; //  'd' -> 'e' -> ...: never an id this rig used before
}

size_t core_rig_count_rid(const core_rig_t *rig, const uint8_t *rid, size_t rid_size,
                          proto_type_t type)
{
    size_t count = 0;
    for (size_t i = 0; i < rig->out_count; i++) {
        const rig_out_t *out = &rig->out[i];
        if (out->rid_size == rid_size && memcmp(out->rid, rid, rid_size) == 0 && out->decoded &&
            out->msg.type == type)
            count++;
    }
    return count;
}

int core_rig_flush(core_rig_t *rig)
{
    return broker_core_flush(rig->core, rig->now_ms);
}

size_t core_rig_count(const core_rig_t *rig, int id, proto_type_t type)
{
    size_t count = 0;
    for (size_t i = 0; i < rig->out_count; i++) {
        if (rig->out[i].id == id && rig->out[i].decoded && rig->out[i].msg.type == type)
            count++;
    }
    return count;
}

const proto_msg_t *core_rig_find(const core_rig_t *rig, int id, proto_type_t type, size_t n)
{
    for (size_t i = 0; i < rig->out_count; i++) {
        if (rig->out[i].id == id && rig->out[i].decoded && rig->out[i].msg.type == type) {
            if (n == 0)
                return &rig->out[i].msg;
            n--;
        }
    }
    return NULL;
}

int core_rig_join(core_rig_t *rig)
{
    static const uint8_t token[32] = "core rig join token, 32 bytes!";
    proto_msg_t msg;
    proto_msg_init(&msg, PROTO_HELLO);
    msg.hello.node = "pub";
    msg.hello.role = PROTO_ROLE_PUBLIC;
    int rc = core_rig_send(rig, RIG_PUBLIC, &msg);
    proto_msg_init(&msg, PROTO_INVITE);
    msg.invite.conn = "c1";
    SHA256(token, sizeof token, msg.invite.token_hash);
    msg.invite.expires = (uint64_t)(rig->now_ms / 1000 + 600);
    msg.invite.description = "A";
    rc |= core_rig_send(rig, RIG_PUBLIC, &msg);
    proto_msg_init(&msg, PROTO_HELLO);
    msg.hello.node = "priv";
    msg.hello.role = PROTO_ROLE_PRIVATE;
    rc |= core_rig_send(rig, RIG_PRIVATE, &msg);
    proto_msg_init(&msg, PROTO_JOIN);
    msg.join.conn = "c1";
    memcpy(msg.join.token, token, sizeof token);
    msg.join.description = "B";
    rc |= core_rig_send(rig, RIG_PRIVATE, &msg);
    rc |= core_rig_flush(rig);
    bool joined = core_rig_count(rig, RIG_PUBLIC, PROTO_JOINED) == 1 &&
                  core_rig_count(rig, RIG_PRIVATE, PROTO_JOINED) == 1;
    core_rig_clear(rig);
    return rc == 0 && joined ? 0 : -1;
}
