/*  node_spool.c: the spool files of attachments in transfer (see
    node_spool.h).
*/
#include "node_spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ts_secret.h"

#define S_BLOCK (256 * 1024) //  Bytes read at a time while hashing

static int s_mkdir(const char *path, char *err, size_t errlen)
{
    if (mkdir(path, 0700) == 0 || errno == EEXIST)
        return 0;
    snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
    return -1;
}

int node_spool_path(const char *state_dir, const node_file_t *file, char *buf, size_t size,
                    char *err, size_t errlen)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/files", state_dir);
    if (s_mkdir(dir, err, errlen))
        return -1;
    snprintf(dir, sizeof dir, "%s/files/%s", state_dir, file->conn);
    if (s_mkdir(dir, err, errlen))
        return -1;
    int n = snprintf(buf, size, "%s/%s-%s", dir, file->dir == NODE_FILE_OUT ? "out" : "in",
                     file->file_id);
    if (n < 0 || (size_t)n >= size) {
        snprintf(err, errlen, "spool path too long under %s", dir);
        return -1;
    }
    return 0;
}

int node_spool_hash(const char *path, uint64_t size, char hex[65], char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char *block = malloc(S_BLOCK); //  both node threads hash: not static
    int rc = block && md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 ? 0 : -1;
    if (rc)
        snprintf(err, errlen, "SHA-256 failed");
    uint64_t left = size;
    while (rc == 0 && left > 0) {
        ssize_t got = read(fd, block, left < S_BLOCK ? (size_t)left : S_BLOCK);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            rc = -1;
        } else if (got == 0) {
            rc = 1;
        } else if (EVP_DigestUpdate(md, block, (size_t)got) != 1) {
            snprintf(err, errlen, "SHA-256 failed");
            rc = -1;
        } else {
            left -= (uint64_t)got;
        }
    }
    unsigned char digest[32];
    unsigned int len = 0;
    if (rc == 0 && EVP_DigestFinal_ex(md, digest, &len) != 1) {
        snprintf(err, errlen, "SHA-256 failed");
        rc = -1;
    }
    if (rc == 0)
        ts_hex_encode(digest, sizeof digest, hex);
    EVP_MD_CTX_free(md);
    free(block);
    close(fd);
    return rc;
}

void node_spool_remove(const char *state_dir, const node_file_t *file)
{
    char path[4096], err[256];
    if (node_spool_path(state_dir, file, path, sizeof path, err, sizeof err) == 0)
        unlink(path);
}

void node_spool_remove_conn(const char *state_dir, const char *conn)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/files/%s", state_dir, conn);
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *entry;
    while ((entry = readdir(d))) {
        if (entry->d_name[0] == '.')
            continue;
        char path[4096 + 256];
        snprintf(path, sizeof path, "%s/%s", dir, entry->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}
