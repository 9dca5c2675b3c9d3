/* images-fs: files by key (see images_files.h). */
#include "images_files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define TEMP_PREFIX ".tmp-"

static int mkdir_p(const char *path) {
    char *copy = strdup(path);
    if (!copy)
        return -1;
    for (char *p = copy + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(copy, 0755) != 0 && errno != EEXIST) {
            free(copy);
            return -1;
        }
        *p = '/';
    }
    int rc = mkdir(copy, 0755) != 0 && errno != EEXIST ? -1 : 0;
    free(copy);
    return rc;
}

/* Temp files of puts that a crash interrupted: never renamed, so no key
 * points to them. */
static void remove_stale_temps(int dirfd) {
    int fd = dup(dirfd);
    if (fd < 0)
        return;
    DIR *dir = fdopendir(fd);
    if (!dir) {
        close(fd);
        return;
    }
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (strncmp(e->d_name, TEMP_PREFIX, strlen(TEMP_PREFIX)) == 0)
            unlinkat(dirfd, e->d_name, 0);
    }
    closedir(dir);
}

hn_rc images_dir_open(images_dir *d, const char *path, hn_error *err) {
    d->fd = -1;
    d->path = strdup(path);
    if (!d->path)
        return images_fail(err, 500, "OutOfMemory", "images-fs: out of memory");
    if (mkdir_p(path) != 0)
        return images_fail(err, 500, "ImageStoreError", "images-fs: cannot create %s: %s", path,
                           strerror(errno));
    d->fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d->fd < 0)
        return images_fail(err, 500, "ImageStoreError", "images-fs: cannot open %s: %s", path,
                           strerror(errno));
    remove_stale_temps(d->fd);
    return HN_OK;
}

void images_dir_close(images_dir *d) {
    if (d->fd >= 0)
        close(d->fd);
    d->fd = -1;
    free(d->path);
    d->path = NULL;
}

static bool write_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        p += w;
        len -= (size_t)w;
    }
    return true;
}

hn_rc images_file_put(const images_dir *d, const char *key, const void *data, size_t len,
                      hn_error *err) {
    if (!images_key_valid(key))
        return images_bad_key(err);
    unsigned char rnd[8];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        return images_fail(err, 500, "ImageStoreError", "images-fs: no randomness");
    char tmp[IMAGES_KEY_MAX + 40];
    snprintf(tmp, sizeof tmp, TEMP_PREFIX "%02x%02x%02x%02x%02x%02x%02x%02x-%s", rnd[0], rnd[1],
             rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7], key);
    int fd = openat(d->fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return images_fail(err, 500, "ImageStoreError", "images-fs: cannot create a file: %s",
                           strerror(errno));
    const char *what = NULL;
    if (!write_all(fd, data, len))
        what = "write";
    else if (fsync(fd) != 0)
        what = "fsync";
    int saved = errno;
    if (close(fd) != 0 && !what) {
        what = "close";
        saved = errno;
    }
    if (!what && renameat(d->fd, tmp, d->fd, key) != 0) {
        what = "rename";
        saved = errno;
    }
    if (what) {
        unlinkat(d->fd, tmp, 0);
        return images_fail(err, 500, "ImageStoreError", "images-fs: %s of %s failed: %s", what,
                           key, strerror(saved));
    }
    /* the rename itself is durable only once the directory is */
    if (fsync(d->fd) != 0)
        return images_fail(err, 500, "ImageStoreError", "images-fs: fsync of the directory: %s",
                           strerror(errno));
    return HN_OK;
}

hn_rc images_file_get(const images_dir *d, const char *key, void **data, size_t *len,
                      hn_error *err) {
    *data = NULL;
    *len = 0;
    if (!images_key_valid(key))
        return images_bad_key(err);
    int fd = openat(d->fd, key, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT || errno == ELOOP)
            return HN_DECLINED;
        return images_fail(err, 500, "ImageStoreError", "images-fs: open %s: %s", key,
                           strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return HN_DECLINED;
    }
    size_t size = (size_t)st.st_size;
    char *buf = malloc(size ? size : 1);
    if (!buf) {
        close(fd);
        return images_fail(err, 500, "OutOfMemory", "images-fs: out of memory");
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break; /* shorter than stat said: cannot happen with atomic replaces */
        got += (size_t)r;
    }
    close(fd);
    *data = buf;
    *len = got;
    return HN_OK;
}

hn_rc images_file_exists(const images_dir *d, const char *key, hn_error *err) {
    if (!images_key_valid(key))
        return images_bad_key(err);
    struct stat st;
    if (fstatat(d->fd, key, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT)
            return HN_DECLINED;
        return images_fail(err, 500, "ImageStoreError", "images-fs: stat %s: %s", key,
                           strerror(errno));
    }
    return S_ISREG(st.st_mode) ? HN_OK : HN_DECLINED;
}

hn_rc images_file_remove(const images_dir *d, const char *key, hn_error *err) {
    if (!images_key_valid(key))
        return images_bad_key(err);
    if (unlinkat(d->fd, key, 0) != 0) {
        if (errno == ENOENT)
            return HN_DECLINED;
        return images_fail(err, 500, "ImageStoreError", "images-fs: remove %s: %s", key,
                           strerror(errno));
    }
    return HN_OK;
}
