/* storage-contract: a test plugin that drives the node's `storage` provider
 * (whichever it is) from HTTP, so that one black-box suite checks
 * storage-sqlite and storage-pg against the same contract (storage.h).
 *
 *   GET  /contract/info  {"provider": name, "dialect": ...}
 *   POST /contract/run   {"steps": [step, ...]} -> {"results": [result, ...]}
 *
 * The steps run in order on one connection, on a pool thread (the request is
 * suspended meanwhile), so a transaction can span steps. A failed step does
 * not stop the run: every step gets a result, and the test decides; unless
 * the body says "abort_on_error": true, then the first failure rolls back and
 * the steps after it are skipped ({"ok": false, "skipped": true}).
 *   {"op": "begin" | "commit" | "rollback"}
 *   {"op": "exec",  "sql": S, "args": [...]}     -> {"ok", "changes"}
 *       with "expect_changes": N, another count is a failure (rc "UnexpectedChanges")
 *   {"op": "query", "sql": S, "args": [...]}     -> {"ok", "columns", "rows": [[cell...]...]}
 *   {"op": "migrate", "owner": O, "steps": [[version, sql], ...]}
 *   {"op": "version", "owner": O}                -> {"ok", "version"}
 *   {"op": "sleep", "ms": N}                     (hold the connection)
 *   {"op": "reacquire"}                          (release the connection, take one again)
 *   {"op": "nested", "outer": S, "inner": S}     -> {"ok", "pairs": [[o, i], ...]}: for each
 *       row of outer, inner runs with outer's first column as its one INT argument, while
 *       outer is still being stepped (queries nest on one connection)
 * And the `images` provider, when one is loaded (images-fs and images-db pass
 * the same checks):
 *   {"op": "image_put", "key": K, "hex": H}       -> {"ok"}
 *   {"op": "image_get" | "image_exists" | "image_remove", "key": K}
 *                                                 -> {"ok", "found", "hex" (get)}
 *   {"op": "image_url", "method": "GET"|"PUT", "key": K, "ttl": S} -> {"ok", "url"}
 * Arguments: null -> NULL, integer -> INT, real -> DOUBLE, string -> TEXT,
 *   {"hex": "..."} -> BLOB, {"sized": "..."} -> TEXT with an explicit length,
 *   {"double": "inf" | "-inf" | "nan"}.
 * A cell: {"null", "int", "double", "text" (null if not UTF-8), "hex" (col_blob)}.
 * A failure: {"ok": false, "status", "rc", "message"}.
 *
 * Not installed; built by plugins/storage-pg/plugin.mk for the tests only. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hn/hn.h>

typedef struct contract {
    hn_plugin *self;
    const hn_api *api;
} contract;

typedef struct run_job {
    contract *ct;
    hn_request *req;
    json_t *steps;    /* borrowed from the request's body (alive while suspended) */
    bool abort_on_error;
    json_t *results;  /* built on the pool thread, answered on the loop */
} run_job;

static json_t *failure(const hn_error *err) {
    return json_pack("{s:b, s:i, s:s, s:s}", "ok", 0, "status", err->status, "rc", err->rc,
                     "message", err->message);
}

static json_t *success(void) { return json_pack("{s:b}", "ok", 1); }

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Arguments from JSON. Blobs are decoded into `owned` (freed by the caller). */
static int make_args(const json_t *list, hn_value *out, size_t max, void **owned,
                     size_t *n_out) {
    size_t n = json_array_size(list);
    if (n > max)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const json_t *a = json_array_get(list, i);
        if (json_is_null(a)) {
            out[i] = HN_V_NULL;
        } else if (json_is_integer(a)) {
            out[i] = HN_V_INT(json_integer_value(a));
        } else if (json_is_real(a)) {
            out[i] = HN_V_DOUBLE(json_real_value(a));
        } else if (json_is_string(a)) {
            out[i] = HN_V_TEXT(json_string_value(a));
        } else if (json_is_object(a) && json_object_get(a, "hex")) {
            const char *hex = json_string_value(json_object_get(a, "hex"));
            size_t len = hex ? strlen(hex) / 2 : 0;
            unsigned char *b = malloc(len ? len : 1);
            if (!b)
                return -1;
            for (size_t k = 0; k < len; k++)
                b[k] = (unsigned char)(hexval(hex[2 * k]) * 16 + hexval(hex[2 * k + 1]));
            owned[i] = b;
            out[i] = HN_V_BLOB(b, len);
        } else if (json_is_object(a) && json_object_get(a, "sized")) {
            const json_t *s = json_object_get(a, "sized");
            out[i] = (hn_value){.type = HN_V_TEXT_T,
                                .u.b = {json_string_value(s), json_string_length(s)}};
        } else if (json_is_object(a) && json_object_get(a, "double")) {
            const char *d = json_string_value(json_object_get(a, "double"));
            double v = !d ? 0 : strcmp(d, "inf") == 0 ? INFINITY
                            : strcmp(d, "-inf") == 0  ? -INFINITY
                                                      : NAN;
            out[i] = HN_V_DOUBLE(v);
        } else {
            return -1;
        }
    }
    *n_out = n;
    return 0;
}

static json_t *cell(const hn_storage_vt *db, hn_stmt *st, int col) {
    json_t *c = json_object();
    json_object_set_new(c, "null", json_boolean(db->col_is_null(st, col)));
    json_object_set_new(c, "int", json_integer(db->col_int(st, col)));
    double d = db->col_double(st, col);
    json_object_set_new(c, "double", isfinite(d) ? json_real(d)
                                     : isnan(d)  ? json_string("nan")
                                                 : json_string(d > 0 ? "inf" : "-inf"));
    json_t *t = json_string(db->col_text(st, col)); /* NULL when not UTF-8 */
    json_object_set_new(c, "text", t ? t : json_null());
    size_t len = 0;
    const unsigned char *b = db->col_blob(st, col, &len);
    char *hex = malloc(2 * len + 1);
    if (hex) {
        for (size_t i = 0; i < len; i++)
            sprintf(hex + 2 * i, "%02x", b[i]);
        hex[2 * len] = '\0';
        json_object_set_new(c, "hex", json_string(hex));
        free(hex);
    }
    return c;
}

static json_t *run_query(const hn_storage_vt *db, hn_db *c, const char *sql,
                         const hn_value *args, size_t n) {
    hn_error err = {0};
    hn_stmt *st = db->query(c, sql, args, n, &err);
    if (!st)
        return failure(&err);
    json_t *rows = json_array();
    int r;
    while ((r = db->step(st, &err)) == 1) {
        json_t *row = json_array();
        for (int i = 0; i < db->col_count(st); i++)
            json_array_append_new(row, cell(db, st, i));
        json_array_append_new(rows, row);
    }
    int cols = db->col_count(st);
    db->finish(st);
    if (r < 0) {
        json_decref(rows);
        return failure(&err);
    }
    json_t *res = success();
    json_object_set_new(res, "rows", rows);
    json_object_set_new(res, "columns", json_integer(cols));
    return res;
}

static json_t *run_nested(const hn_storage_vt *db, hn_db *c, const char *outer,
                          const char *inner) {
    hn_error err = {0};
    hn_stmt *o = db->query(c, outer, NULL, 0, &err);
    if (!o)
        return failure(&err);
    json_t *pairs = json_array();
    int r;
    while ((r = db->step(o, &err)) == 1) {
        hn_value arg[] = {HN_V_INT(db->col_int(o, 0))};
        hn_stmt *in = db->query(c, inner, arg, 1, &err);
        if (!in)
            break;
        int ri = db->step(in, &err);
        json_array_append_new(pairs, json_pack("[I, I]", (json_int_t)db->col_int(o, 0),
                                               (json_int_t)(ri == 1 ? db->col_int(in, 0) : -1)));
        db->finish(in);
    }
    db->finish(o);
    if (r != 0) {
        json_decref(pairs);
        return failure(&err);
    }
    json_t *res = success();
    json_object_set_new(res, "pairs", pairs);
    return res;
}

static json_t *run_migrate(const hn_provider *p, const json_t *step) {
    const hn_storage_vt *db = p->vt;
    const json_t *list = json_object_get(step, "steps");
    size_t n = json_array_size(list);
    hn_migration *m = calloc(n ? n : 1, sizeof *m);
    if (!m)
        return json_pack("{s:b, s:s}", "ok", 0, "message", "out of memory");
    for (size_t i = 0; i < n; i++) {
        m[i].version = (int)json_integer_value(json_array_get(json_array_get(list, i), 0));
        m[i].sql = json_string_value(json_array_get(json_array_get(list, i), 1));
    }
    hn_error err = {0};
    hn_rc rc = db->migrate(p->state, json_string_value(json_object_get(step, "owner")), m, n,
                           &err);
    free(m);
    return rc == HN_OK ? success() : failure(&err);
}

static json_t *hex_json(const void *data, size_t len) {
    const unsigned char *b = data;
    char *hex = malloc(2 * len + 1);
    if (!hex)
        return json_null();
    for (size_t i = 0; i < len; i++)
        sprintf(hex + 2 * i, "%02x", b[i]);
    hex[2 * len] = '\0';
    json_t *j = json_string(hex);
    free(hex);
    return j;
}

/* HN_OK / HN_DECLINED -> {"ok": true, "found": ...}; HN_ERROR -> a failure. */
static json_t *found(hn_rc rc, const hn_error *err) {
    if (rc == HN_ERROR)
        return failure(err);
    return json_pack("{s:b, s:b}", "ok", 1, "found", rc == HN_OK);
}

static json_t *run_images(const hn_provider *ip, const char *op, const json_t *step) {
    const hn_images_vt *im = ip->vt;
    const char *key = json_string_value(json_object_get(step, "key"));
    hn_error err = {0};
    if (strcmp(op, "image_put") == 0) {
        const char *hex = json_string_value(json_object_get(step, "hex"));
        size_t len = hex ? strlen(hex) / 2 : 0;
        unsigned char *b = malloc(len ? len : 1);
        if (!b)
            return json_pack("{s:b, s:s}", "ok", 0, "message", "out of memory");
        for (size_t k = 0; k < len; k++)
            b[k] = (unsigned char)(hexval(hex[2 * k]) * 16 + hexval(hex[2 * k + 1]));
        hn_rc rc = im->put(ip->state, key, b, len, &err);
        free(b);
        return rc == HN_OK ? success() : failure(&err);
    }
    if (strcmp(op, "image_get") == 0) {
        void *data = NULL;
        size_t len = 0;
        hn_rc rc = im->get(ip->state, key, &data, &len, &err);
        json_t *res = found(rc, &err);
        if (rc == HN_OK)
            json_object_set_new(res, "hex", hex_json(data, len));
        free(data);
        return res;
    }
    if (strcmp(op, "image_exists") == 0)
        return found(im->exists(ip->state, key, &err), &err);
    if (strcmp(op, "image_remove") == 0)
        return found(im->remove(ip->state, key, &err), &err);
    if (strcmp(op, "image_url") == 0) {
        char url[1024];
        const char *method = json_string_value(json_object_get(step, "method"));
        int ttl = (int)json_integer_value(json_object_get(step, "ttl"));
        hn_rc rc = method && strcmp(method, "PUT") == 0
                       ? im->url_put(ip->state, key, ttl, url, sizeof url, &err)
                       : im->url_get(ip->state, key, ttl, url, sizeof url, &err);
        return rc == HN_OK ? json_pack("{s:b, s:s}", "ok", 1, "url", url) : failure(&err);
    }
    return json_pack("{s:b, s:s}", "ok", 0, "message", "unknown op");
}

static json_t *run_step(const hn_api *api, const hn_provider *p, hn_db **c,
                        const json_t *step) {
    const char *op = json_string_value(json_object_get(step, "op"));
    hn_error err = {0};
    if (!op)
        return json_pack("{s:b, s:s}", "ok", 0, "message", "no op");
    if (strncmp(op, "image_", 6) == 0) {
        const hn_provider *ip = api->provider_get("images");
        return ip ? run_images(ip, op, step)
                  : json_pack("{s:b, s:s}", "ok", 0, "message", "no images provider");
    }
    if (!p)
        return json_pack("{s:b, s:s}", "ok", 0, "message", "no storage provider");
    const hn_storage_vt *db = p->vt;
    if (strcmp(op, "migrate") == 0)
        return run_migrate(p, step);
    if (strcmp(op, "version") == 0) {
        int v = db->schema_version(p->state, json_string_value(json_object_get(step, "owner")),
                                   &err);
        if (v < 0)
            return failure(&err);
        json_t *res = success();
        json_object_set_new(res, "version", json_integer(v));
        return res;
    }
    if (strcmp(op, "sleep") == 0) {
        long long ms = json_integer_value(json_object_get(step, "ms"));
        struct timespec t = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
        nanosleep(&t, NULL);
        return success();
    }
    if (strcmp(op, "reacquire") == 0) {
        if (*c)
            db->release(p->state, *c);
        *c = db->acquire(p->state, &err);
        return *c ? success() : failure(&err);
    }
    if (!*c) {
        *c = db->acquire(p->state, &err);
        if (!*c)
            return failure(&err);
    }
    hn_rc rc;
    if (strcmp(op, "begin") == 0)
        rc = db->begin(*c, &err);
    else if (strcmp(op, "commit") == 0)
        rc = db->commit(*c, &err);
    else if (strcmp(op, "rollback") == 0)
        rc = db->rollback(*c, &err);
    else if (strcmp(op, "nested") == 0)
        return run_nested(db, *c, json_string_value(json_object_get(step, "outer")),
                          json_string_value(json_object_get(step, "inner")));
    else if (strcmp(op, "exec") == 0 || strcmp(op, "query") == 0) {
        hn_value args[32];
        void *owned[32] = {0};
        size_t n = 0;
        const char *sql = json_string_value(json_object_get(step, "sql"));
        if (make_args(json_object_get(step, "args"), args, 32, owned, &n) != 0)
            return json_pack("{s:b, s:s}", "ok", 0, "message", "bad args");
        json_t *res;
        if (op[0] == 'q') {
            res = run_query(db, *c, sql, args, n);
        } else {
            int64_t changes = -1;
            /* "no_changes": the caller does not ask for the count (storage-pg
             * may then queue the statement inside a transaction) */
            bool count = !json_is_true(json_object_get(step, "no_changes"));
            rc = db->exec(*c, sql, args, n, count ? &changes : NULL, &err);
            const json_t *want = json_object_get(step, "expect_changes");
            if (rc == HN_OK && want && json_integer_value(want) != changes) {
                rc = HN_ERROR;
                err.status = 409;
                snprintf(err.rc, sizeof err.rc, "UnexpectedChanges");
                snprintf(err.message, sizeof err.message, "%lld rows changed",
                         (long long)changes);
            }
            res = rc == HN_OK ? success() : failure(&err);
            if (rc == HN_OK)
                json_object_set_new(res, "changes", json_integer(changes));
        }
        for (size_t i = 0; i < 32; i++)
            free(owned[i]);
        return res;
    } else
        return json_pack("{s:b, s:s}", "ok", 0, "message", "unknown op");
    return rc == HN_OK ? success() : failure(&err);
}

static void run_work(void *arg) {
    run_job *job = arg;
    const hn_provider *p = job->ct->api->provider_get("storage");
    job->results = json_array();
    hn_db *c = NULL;
    size_t i;
    json_t *step;
    bool failed = false;
    json_array_foreach(job->steps, i, step) {
        if (failed) {
            json_array_append_new(job->results, json_pack("{s:b, s:b}", "ok", 0, "skipped", 1));
            continue;
        }
        json_t *res = run_step(job->ct->api, p, &c, step);
        if (job->abort_on_error && !json_is_true(json_object_get(res, "ok"))) {
            failed = true;
            hn_error ignored;
            if (c)
                ((const hn_storage_vt *)p->vt)->rollback(c, &ignored);
        }
        json_array_append_new(job->results, res);
    }
    if (c)
        ((const hn_storage_vt *)p->vt)->release(p->state, c);
}

static void run_done(void *arg) {
    run_job *job = arg;
    job->ct->api->respond_json(job->req, 200, json_pack("{s:o}", "results", job->results));
    free(job);
}

static void route_run(hn_request *req, void *state) {
    contract *ct = state;
    hn_error err = {0};
    json_t *body = ct->api->req_json(req, &err);
    if (!body) {
        ct->api->respond_error(req, &err);
        return;
    }
    run_job *job = calloc(1, sizeof *job);
    if (!job) {
        ct->api->error(&err, 500, "OutOfMemory", "out of memory");
        ct->api->respond_error(req, &err);
        return;
    }
    job->ct = ct;
    job->req = req;
    job->steps = json_object_get(body, "steps");
    job->abort_on_error = json_is_true(json_object_get(body, "abort_on_error"));
    ct->api->req_suspend(req);
    if (ct->api->work_submit(run_work, run_done, job) != 0) {
        ct->api->error(&err, 503, "ServiceUnavailable", "stopping");
        ct->api->respond_error(req, &err);
        free(job);
    }
}

static void route_info(hn_request *req, void *state) {
    contract *ct = state;
    const hn_provider *p = ct->api->provider_get("storage");
    const hn_storage_vt *db = p ? p->vt : NULL;
    ct->api->respond_json(req, 200,
                          json_pack("{s:s?, s:s?}", "provider", p ? p->name : NULL, "dialect",
                                    db ? db->dialect : NULL));
}

static hn_rc contract_init(hn_plugin *self, const hn_api *api, void *conf, void **state,
                           hn_error *err) {
    (void)conf;
    contract *ct = calloc(1, sizeof *ct);
    if (!ct)
        return api->error(err, 500, "OutOfMemory", "out of memory");
    ct->self = self;
    ct->api = api;
    *state = ct;
    if (api->route_add(self, HN_POST, "/contract/run", route_run, ct) != 0 ||
        api->route_add(self, HN_GET, "/contract/info", route_info, ct) != 0)
        return api->error(err, 500, "InitError", "storage-contract: a registration failed");
    return HN_OK;
}

static void contract_fini(void *state) { free(state); }

static const hn_plugin_desc contract_desc = {
    HN_PLUGIN_DESC_INIT,
    .name = "storage-contract",
    .version = "1.0.0",
    .description = "test plugin: drives the storage provider from HTTP",
    .init = contract_init,
    .fini = contract_fini,
};

HN_PLUGIN_EXPORT const hn_plugin_desc *hn_plugin_entry(void) { return &contract_desc; }
