/* images-fs/shared: GET /images/{key} and PUT /upload/{key}, the targets of the
 * signed URLs (answers: images_service.h). The backend's work runs on the
 * node's pool; the request is suspended meanwhile and answered from the done
 * callback on its loop. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "images_service.h"

typedef struct image_job {
    images_service *svc;
    hn_request *req;
    char key[IMAGES_KEY_MAX + 1];
    int64_t expires;
    const void *body; /* PUT: the request's body (borrowed: the request owns it until answered) */
    size_t len;
    void *data;       /* GET: the image, malloc'd by the backend, freed here */
    char content_type[64];
    hn_rc rc;
    hn_error err;
} image_job;

static void refuse(const images_service *svc, hn_request *req, int status, const char *rc,
                   const char *msg) {
    hn_error err = {0};
    images_fail(&err, status, rc, "%s", msg);
    svc->api->respond_error(req, &err);
}

/* A job for a request whose key and signature check out, or NULL once the
 * request has been answered (500, 404 or 403). */
static image_job *admit(images_service *svc, hn_request *req, const char *method) {
    const hn_api *api = svc->api;
    image_job *job = calloc(1, sizeof *job);
    if (!job) {
        refuse(svc, req, 500, "OutOfMemory", "Out of memory.");
        return NULL;
    }
    const char *key = api->req_param(req, "key");
    const char *expires = api->req_query(req, "expires");
    if (!images_key_valid(key)) {
        refuse(svc, req, 404, "ImageNotFound", "Image not found.");
    } else {
        switch (images_verify(svc->secret, method, key, expires, api->req_query(req, "sig"),
                              (int64_t)time(NULL))) {
        case IMAGES_SIG_OK:
            snprintf(job->key, sizeof job->key, "%s", key);
            job->expires = strtoll(expires, NULL, 10);
            job->svc = svc;
            job->req = req;
            return job;
        case IMAGES_SIG_EXPIRED:
            refuse(svc, req, 403, "ExpiredSignature", "This image URL has expired.");
            break;
        default:
            refuse(svc, req, 403, "InvalidSignature", "This image URL is not validly signed.");
            break;
        }
    }
    free(job);
    return NULL;
}

static void submit(image_job *job, hn_work_fn *work, hn_work_fn *done) {
    const images_service *svc = job->svc;
    svc->api->req_suspend(job->req);
    if (svc->api->work_submit(work, done, job) != 0) {
        refuse(svc, job->req, 503, "ServiceUnavailable", "The node is stopping.");
        free(job);
    }
}

static void respond_failure(image_job *job) {
    if (job->rc == HN_DECLINED)
        refuse(job->svc, job->req, 404, "ImageNotFound", "Image not found.");
    else
        job->svc->api->respond_error(job->req, &job->err);
}

/* ---- GET ------------------------------------------------------------------ */

static void get_work(void *arg) {
    image_job *job = arg;
    const images_service *svc = job->svc;
    job->rc = svc->backend->get(svc->store, job->key, &job->data, &job->len, job->content_type,
                                &job->err);
}

static void get_done(void *arg) {
    image_job *job = arg;
    const hn_api *api = job->svc->api;
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

void images_route_get(hn_request *req, void *state) {
    image_job *job = admit(state, req, "GET");
    if (job)
        submit(job, get_work, get_done);
}

/* ---- PUT ------------------------------------------------------------------ */

static void put_work(void *arg) {
    image_job *job = arg;
    const images_service *svc = job->svc;
    job->rc = svc->backend->put(svc->store, job->key, job->body, job->len, &job->err);
}

static void put_done(void *arg) {
    image_job *job = arg;
    if (job->rc == HN_OK) /* like R2/S3: 200 with an empty body */
        job->svc->api->respond(job->req, 200, "text/plain; charset=utf-8", "", 0);
    else
        respond_failure(job);
    free(job);
}

void images_route_put(hn_request *req, void *state) {
    images_service *svc = state;
    image_job *job = admit(svc, req, "PUT");
    if (!job)
        return;
    job->body = svc->api->req_body(req, &job->len);
    if (job->len > (size_t)svc->max_upload) {
        char msg[128];
        snprintf(msg, sizeof msg, "Uploads are limited to %lld bytes.", svc->max_upload);
        refuse(svc, req, 413, "PayloadTooLarge", msg);
        free(job);
        return;
    }
    if (job->len == 0 || !job->body) {
        refuse(svc, req, 400, "BadRequest", "The upload is empty.");
        free(job);
        return;
    }
    submit(job, put_work, put_done);
}
