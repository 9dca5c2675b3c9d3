/* images-fs: the node secret (see images_sign.h). */
#include "images_sign.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "images_files.h"

static hn_rc read_secret(const char *path, char out[IMAGES_SECRET_MAX + 1], bool *loose,
                         hn_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? HN_DECLINED
                               : images_fail(err, 500, "ConfigError", "images-fs: %s: %s", path,
                                             strerror(errno));
    struct stat st;
    if (fstat(fd, &st) == 0)
        *loose = (st.st_mode & 077) != 0;
    ssize_t n = read(fd, out, IMAGES_SECRET_MAX);
    close(fd);
    if (n < 0)
        return images_fail(err, 500, "ConfigError", "images-fs: %s: %s", path, strerror(errno));
    out[n] = '\0';
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' '))
        out[--n] = '\0';
    if (n < IMAGES_SECRET_MIN || memchr(out, '\0', (size_t)n))
        return images_fail(err, 500, "ConfigError",
                           "images-fs: %s must hold a secret of at least %d characters", path,
                           IMAGES_SECRET_MIN);
    return HN_OK;
}

hn_rc images_secret_load(const char *path, char out[IMAGES_SECRET_MAX + 1], bool *loose,
                         hn_error *err) {
    *loose = false;
    hn_rc rc = read_secret(path, out, loose, err);
    if (rc != HN_DECLINED)
        return rc;
    unsigned char rnd[32];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        return images_fail(err, 500, "ConfigError", "images-fs: no randomness for the secret");
    char text[2 * sizeof rnd + 2];
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof rnd; i++) {
        text[2 * i] = hex[rnd[i] >> 4];
        text[2 * i + 1] = hex[rnd[i] & 15];
    }
    text[2 * sizeof rnd] = '\n';
    text[2 * sizeof rnd + 1] = '\0';
    OPENSSL_cleanse(rnd, sizeof rnd);
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    if (!tmp)
        return images_fail(err, 500, "OutOfMemory", "images-fs: out of memory");
    snprintf(tmp, plen + 32, "%s.tmp-%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    bool ok = fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text) && fsync(fd) == 0;
    if (fd >= 0)
        close(fd);
    OPENSSL_cleanse(text, sizeof text);
    /* link() fails if the file appeared meanwhile: then the other process's
     * secret wins and we read it */
    int linked = ok ? link(tmp, path) : -1;
    int saved = errno;
    unlink(tmp);
    free(tmp);
    if (!ok || (linked != 0 && saved != EEXIST))
        return images_fail(err, 500, "ConfigError", "images-fs: cannot write %s: %s", path,
                           strerror(ok ? saved : errno));
    char *dir = strdup(path);
    if (dir) {
        int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        free(dir);
    }
    rc = read_secret(path, out, loose, err);
    return rc == HN_DECLINED ? images_fail(err, 500, "ConfigError", "images-fs: %s vanished", path)
                             : rc;
}
