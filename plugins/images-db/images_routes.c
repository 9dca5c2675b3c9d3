/* images-db: GET /images/{key} and PUT /upload/{key}, the targets of the
 * signed URLs, answering exactly as images-fs does: an invalid key or a
 * missing image 404 ImageNotFound, a bad signature 403 InvalidSignature, an
 * expired one 403 ExpiredSignature, a body over max_upload 413
 * PayloadTooLarge, an empty one 400 BadRequest; a database failure passes
 * the storage provider's error on (e.g. 503 StorageUnavailable).
 *
 * Database work runs on the node's pool: the request is suspended and
 * answered from the done callback on its loop. The body pointer stays valid
 * while the request is suspended (the request owns it until answered). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "images_db.h"

typedef struct image_job {
    images_db *s;
    hn_request *req;
    char key[IMAGES_KEY_MAX + 1];
    int64_t expires;
    const void *body; /* PUT: the request's body (borrowed) */
    size_t len;
    void *data;       /* GET: the image, malloc'd */
    char content_type[64];
    hn_rc rc;
    hn_error err;
} image_job;

static void refuse(images_db *s, hn_request *req, int status, const char *rc, const char *msg) {
    hn_error err = {0};
    images_fail(&err, status, rc, "%s", msg);
    s->api->respond_error(req, &err);
}

/* Checks key and signature; answers the request and returns false if bad. */
static bool admit(images_db *s, hn_request *req, const char *method, image_job *job) {
    const char *key = s->api->req_param(req, "key");
    if (!images_key_valid(key)) {
        refuse(s, req, 404, "ImageNotFound", "Image not found.");
        return false;
    }
    const char *expires = s->api->req_query(req, "expires");
    switch (images_verify(s->secret, method, key, expires, s->api->req_query(req, "sig"),
                          (int64_t)time(NULL))) {
    case IMAGES_SIG_OK:
        break;
    case IMAGES_SIG_EXPIRED:
        refuse(s, req, 403, "ExpiredSignature", "This image URL has expired.");
        return false;
    default:
        refuse(s, req, 403, "InvalidSignature", "This image URL is not validly signed.");
        return false;
    }
    snprintf(job->key, sizeof job->key, "%s", key);
    job->expires = strtoll(expires, NULL, 10);
    job->s = s;
    job->req = req;
    return true;
}

static void submit(image_job *job, hn_work_fn *work, hn_work_fn *done) {
    images_db *s = job->s;
    s->api->req_suspend(job->req);
    if (s->api->work_submit(work, done, job) != 0) {
        refuse(s, job->req, 503, "ServiceUnavailable", "The node is stopping.");
        free(job);
    }
}

static void respond_failure(image_job *job) {
    if (job->rc == HN_DECLINED)
        refuse(job->s, job->req, 404, "ImageNotFound", "Image not found.");
    else
        job->s->api->respond_error(job->req, &job->err);
}

/* ---- GET ------------------------------------------------------------------ */

static void get_work(void *arg) {
    image_job *job = arg;
    job->rc = images_store_get(&job->s->store, job->key, &job->data, &job->len,
                               job->content_type, &job->err);
}

static void get_done(void *arg) {
    image_job *job = arg;
    const hn_api *api = job->s->api;
    if (job->rc == HN_OK) {
        /* cacheable by the client until the URL expires, and no further */
        int64_t left = job->expires - (int64_t)time(NULL);
        char cache[64];
        snprintf(cache, sizeof cache, "private, max-age=%" PRId64, left > 0 ? left : 0);
        api->resp_header(job->req, "Cache-Control", cache);
        api->respond(job->req, 200, job->content_type, job->data, job->len);
    } else {
        respond_failure(job);
    }
    free(job->data);
    free(job);
}

void images_db_route_get(hn_request *req, void *state) {
    images_db *s = state;
    image_job *job = calloc(1, sizeof *job);
    if (!job) {
        refuse(s, req, 500, "OutOfMemory", "Out of memory.");
        return;
    }
    if (!admit(s, req, "GET", job)) {
        free(job);
        return;
    }
    submit(job, get_work, get_done);
}

/* ---- PUT ------------------------------------------------------------------ */

static void put_work(void *arg) {
    image_job *job = arg;
    job->rc = images_store_put(&job->s->store, job->key, job->body, job->len, &job->err);
}

static void put_done(void *arg) {
    image_job *job = arg;
    if (job->rc == HN_OK) /* like R2/S3: 200 with an empty body */
        job->s->api->respond(job->req, 200, "text/plain; charset=utf-8", "", 0);
    else
        respond_failure(job);
    free(job);
}

void images_db_route_put(hn_request *req, void *state) {
    images_db *s = state;
    image_job *job = calloc(1, sizeof *job);
    if (!job) {
        refuse(s, req, 500, "OutOfMemory", "Out of memory.");
        return;
    }
    if (!admit(s, req, "PUT", job)) {
        free(job);
        return;
    }
    job->body = s->api->req_body(req, &job->len);
    if (job->len > (size_t)s->conf->max_upload) {
        char msg[128];
        snprintf(msg, sizeof msg, "Uploads are limited to %lld bytes.", s->conf->max_upload);
        refuse(s, req, 413, "PayloadTooLarge", msg);
        free(job);
        return;
    }
    if (job->len == 0 || !job->body) {
        refuse(s, req, 400, "BadRequest", "The upload is empty.");
        free(job);
        return;
    }
    submit(job, put_work, put_done);
}
