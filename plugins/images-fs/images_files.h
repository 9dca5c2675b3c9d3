/* images-fs: image files in one directory, by key.
 *
 * Keys follow images-fs/shared's rules (images_key_valid: [A-Za-z0-9._-]{1,128},
 * not starting with '.' and without ".."): a key is always a plain file name
 * inside the directory, never a path, and never one of our temp files
 * (".tmp-..."). Files are reached through a
 * descriptor of the directory (openat & co., O_NOFOLLOW), so a key cannot
 * leave it even if the checks above had a hole.
 *
 * Writes are atomic and durable: a temp file in the same directory, fsync,
 * rename over the key, fsync of the directory. A reader sees the old file or
 * the new one, never a half-written one, and a put that returned survives a
 * power cut.
 *
 * Thread-safe: no shared mutable state beyond the directory descriptor. */
#ifndef IMAGES_FILES_H
#define IMAGES_FILES_H

#include <stdbool.h>
#include <stddef.h>

#include <hn/types.h>

#include "images-fs/shared/images_url.h"

typedef struct images_dir {
    int fd;      /* O_DIRECTORY descriptor, -1 when closed */
    char *path;  /* owned */
} images_dir;

/* Creates the directory (and missing parents) if needed and opens it; removes
 * temp files a crash left behind. */
hn_rc images_dir_open(images_dir *d, const char *path, hn_error *err);
void images_dir_close(images_dir *d);

hn_rc images_file_put(const images_dir *d, const char *key, const void *data, size_t len,
                      hn_error *err);
/* *data is malloc'd (the caller frees). HN_DECLINED when there is no such file. */
hn_rc images_file_get(const images_dir *d, const char *key, void **data, size_t *len,
                      hn_error *err);
hn_rc images_file_exists(const images_dir *d, const char *key, hn_error *err);
hn_rc images_file_remove(const images_dir *d, const char *key, hn_error *err);

#endif
