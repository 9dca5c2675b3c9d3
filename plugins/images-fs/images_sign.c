/* images-fs: URL signatures and the node secret (see images_sign.h). */
#include "images_sign.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "images_files.h"

void images_sign(const char *secret, const char *method, const char *key, int64_t expires,
                 char out[IMAGES_SIG_HEX + 1]) {
    char msg[IMAGES_KEY_MAX + 64];
    int n = snprintf(msg, sizeof msg, "%s\n%s\n%" PRId64, method, key, expires);
    if (n < 0 || (size_t)n >= sizeof msg)
        n = (int)sizeof msg - 1; /* keys are <= 128, so never: sign what fits */
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)msg, (size_t)n, md,
         &md_len);
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[IMAGES_SIG_HEX] = '\0';
}

images_sig_rc images_verify(const char *secret, const char *method, const char *key,
                            const char *expires, const char *sig, int64_t now) {
    if (!expires || !sig || strlen(sig) != IMAGES_SIG_HEX)
        return IMAGES_SIG_BAD;
    size_t n = strlen(expires);
    if (n == 0 || n > 15)
        return IMAGES_SIG_BAD;
    for (size_t i = 0; i < n; i++) {
        if (expires[i] < '0' || expires[i] > '9')
            return IMAGES_SIG_BAD;
    }
    int64_t when = strtoll(expires, NULL, 10);
    /* sign the decimal we parsed: "0123" and "123" must not both verify */
    char canon[24];
    snprintf(canon, sizeof canon, "%" PRId64, when);
    if (strcmp(canon, expires) != 0)
        return IMAGES_SIG_BAD;
    char want[IMAGES_SIG_HEX + 1], got[IMAGES_SIG_HEX + 1];
    images_sign(secret, method, key, when, want);
    for (size_t i = 0; i < IMAGES_SIG_HEX; i++) /* accept upper-case hex too */
        got[i] = (char)((sig[i] >= 'A' && sig[i] <= 'F') ? sig[i] - 'A' + 'a' : sig[i]);
    got[IMAGES_SIG_HEX] = '\0';
    if (CRYPTO_memcmp(want, got, IMAGES_SIG_HEX) != 0)
        return IMAGES_SIG_BAD;
    return when < now ? IMAGES_SIG_EXPIRED : IMAGES_SIG_OK;
}

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
