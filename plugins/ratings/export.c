/* ratings: the dataset export.
 *
 *   horde-node ratings export --format jsonl|csv DIR
 *       DIR/ratings.jsonl (or ratings.csv): one row per accepted rating;
 *       DIR/images/<image id>.<ext>: every image that has a row;
 *       DIR/README.md: the columns and the licence.
 *   GET /api/v1/download/ratings.jsonl | ratings.csv: the same rows, made on
 *       the fly (the images are at each row's url).
 *
 * Left out: captcha ratings, and every rating of a rater whose trust is below
 * min_export_trust (captcha failures, divergence; see trust.c). `mean` and
 * `count` are over the exported ratings of the image, so they never include
 * a distrusted rater. The rater is a salted SHA-256 of their id, as the
 * public export's user_id; the salt comes from export_salt or a random one
 * kept in DATA_DIR/ratings-export-salt. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>

#include <openssl/evp.h>

#include "ratings.h"

static const char *const COLUMNS[] = {
    "image_id", "url",    "dataset",   "prompt",    "model",        "seed",         "sampler",
    "width",    "height", "steps",     "cfg_scale", "rating",       "artifacts",    "mean",
    "count",    "rater",  "rater_trust", "trusted", "account_age",  "client_agent", "source",
    "created",  "file"};
#define N_COLUMNS (sizeof(COLUMNS) / sizeof(COLUMNS[0]))

static void salt_of(ratings *r, char *out, size_t len) {
    if (r->conf->export_salt && *r->conf->export_salt) {
        snprintf(out, len, "%s", r->conf->export_salt);
        return;
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s/ratings-export-salt", r->api->data_dir());
    FILE *f = fopen(path, "r");
    if (f) {
        if (!fgets(out, (int)len, f))
            out[0] = 0;
        fclose(f);
        out[strcspn(out, "\n")] = 0;
        if (out[0])
            return;
    }
    unsigned char b[16];
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
        memset(b, 0x5a, sizeof(b));
    for (size_t i = 0; i < sizeof(b) && 2 * i + 2 < len; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
    f = fopen(path, "w");
    if (f) {
        fprintf(f, "%s\n", out);
        fclose(f);
    }
}

static void hash_rater(const char *salt, const char *rater, char out[65]) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
        EVP_DigestUpdate(ctx, salt, strlen(salt)) && EVP_DigestUpdate(ctx, ":", 1) &&
        EVP_DigestUpdate(ctx, rater, strlen(rater)) && EVP_DigestFinal_ex(ctx, md, &n)) {
        for (unsigned i = 0; i < n && i < 32; i++)
            snprintf(out + 2 * i, 3, "%02x", md[i]);
    } else {
        out[0] = 0;
    }
    EVP_MD_CTX_free(ctx);
}

static const char *ext_of(const char *type) {
    return strcmp(type, "image/png") == 0    ? "png"
           : strcmp(type, "image/jpeg") == 0 ? "jpg"
           : strcmp(type, "image/webp") == 0 ? "webp"
                                             : "bin";
}

static void csv_field(FILE *out, const json_t *v) {
    if (json_is_string(v)) {
        fputc('"', out);
        for (const char *p = json_string_value(v); *p; p++) {
            if (*p == '"')
                fputc('"', out);
            fputc(*p, out);
        }
        fputc('"', out);
    } else if (json_is_integer(v)) {
        fprintf(out, "%lld", (long long)json_integer_value(v));
    } else if (json_is_real(v)) {
        fprintf(out, "%.4f", json_real_value(v));
    } else if (json_is_boolean(v)) {
        fputs(json_is_true(v) ? "true" : "false", out);
    } /* null: empty */
}

static void emit(FILE *out, bool csv, json_t *row) {
    if (!csv) {
        char *line = json_dumps(row, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (line)
            fprintf(out, "%s\n", line);
        free(line);
        return;
    }
    for (size_t i = 0; i < N_COLUMNS; i++) {
        if (i)
            fputc(',', out);
        csv_field(out, json_object_get(row, COLUMNS[i]));
    }
    fputc('\n', out);
}

/* Copies an image into images_dir; its file name (relative) goes to `file`. */
static void save_image(ratings *r, const char *images_dir, const char *id, const char *key,
                       char *file, size_t len) {
    void *data = NULL;
    size_t n = 0;
    hn_error err = {0};
    file[0] = 0;
    if (r->img->get(r->img_state, key, &data, &n, &err) != HN_OK)
        return;
    char path[4096];
    snprintf(file, len, "images/%s.%s", id, ext_of(rt_image_type(data, n)));
    snprintf(path, sizeof(path), "%s/%s.%s", images_dir, id, ext_of(rt_image_type(data, n)));
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n)
        file[0] = 0;
    if (f)
        fclose(f);
    free(data);
}

/* Writes the rows (and, with images_dir, the images); *rows gets their count. */
static hn_rc export_rows(ratings *r, FILE *out, bool csv, const char *images_dir, long *rows,
                         hn_error *err) {
    *rows = 0;
    char salt[128];
    salt_of(r, salt, sizeof(salt));
    if (csv) {
        for (size_t i = 0; i < N_COLUMNS; i++)
            fprintf(out, "%s%s", i ? "," : "", COLUMNS[i]);
        fputc('\n', out);
    }
    hn_db *c = r->db->acquire(r->db_state, err);
    if (!c)
        return HN_ERROR;
    hn_stmt *st = r->db->query(
        c,
        "SELECT r.image_id, d.name, i.prompt, i.model, i.seed, i.sampler, i.width, i.height,"
        " i.steps, i.cfg_scale, r.rating, r.artifacts, r.rater, r.trusted, r.account_age,"
        " r.client_agent, r.source, r.created, i.image_key,"
        " COALESCE(t.captchas_failed, 0), COALESCE(t.suspect, 0), COALESCE(t.ratings, 0),"
        " COALESCE(t.excluded, 0)"
        " FROM ratings_ratings r JOIN ratings_images i ON i.id = r.image_id"
        " JOIN ratings_datasets d ON d.id = i.dataset_id"
        " LEFT JOIN ratings_raters t ON t.rater = r.rater"
        " WHERE r.captcha = 0 ORDER BY r.image_id, r.created, r.id",
        NULL, 0, err);
    if (!st) {
        r->db->release(r->db_state, c);
        return HN_ERROR;
    }
    /* rows of one image are buffered until its mean is known */
    json_t *pending = json_array();
    char current[RT_ID_LEN] = "", file[160] = "";
    double sum = 0;
    int got;
    for (;;) {
        got = r->db->step(st, err);
        const char *id = got == 1 ? r->db->col_text(st, 0) : "";
        if (got != 1 || strcmp(id, current) != 0) {
            size_t n = json_array_size(pending), i;
            json_t *row;
            json_array_foreach(pending, i, row) {
                json_object_set_new(row, "mean", json_real(round(sum / (double)n * 100) / 100));
                json_object_set_new(row, "count", json_integer((json_int_t)n));
                emit(out, csv, row);
                (*rows)++;
            }
            json_array_clear(pending);
            sum = 0;
            if (got != 1)
                break;
            snprintf(current, sizeof(current), "%s", id);
            file[0] = 0;
        }
        rt_rater_state rs = {0};
        rs.captchas_failed = (int)r->db->col_int(st, 19);
        rs.suspect = (int)r->db->col_int(st, 20);
        rs.ratings = r->db->col_int(st, 21);
        rs.excluded = r->db->col_int(st, 22) != 0;
        double trust = rt_trust(r->conf, &rs);
        if (trust < r->conf->min_export_trust)
            continue;
        if (images_dir && !file[0])
            save_image(r, images_dir, id, r->db->col_text(st, 18), file, sizeof(file));
        char url[512], rater[65];
        rt_image_url(r, id, url, sizeof(url));
        hash_rater(salt, r->db->col_text(st, 12), rater);
        int rating = (int)r->db->col_int(st, 10);
        sum += rating;
        json_t *row = json_object();
        json_object_set_new(row, "image_id", json_string(id));
        json_object_set_new(row, "url", json_string(url));
        json_object_set_new(row, "dataset", json_string(r->db->col_text(st, 1)));
        json_object_set_new(row, "prompt", json_string(r->db->col_text(st, 2)));
        json_object_set_new(row, "model", json_string(r->db->col_text(st, 3)));
        json_object_set_new(row, "seed", json_string(r->db->col_text(st, 4)));
        json_object_set_new(row, "sampler", json_string(r->db->col_text(st, 5)));
        json_object_set_new(row, "width", json_integer(r->db->col_int(st, 6)));
        json_object_set_new(row, "height", json_integer(r->db->col_int(st, 7)));
        json_object_set_new(row, "steps", json_integer(r->db->col_int(st, 8)));
        json_object_set_new(row, "cfg_scale", json_real(r->db->col_double(st, 9)));
        json_object_set_new(row, "rating", json_integer(rating));
        json_object_set_new(row, "artifacts", r->db->col_is_null(st, 11)
                                                  ? json_null()
                                                  : json_integer(r->db->col_int(st, 11)));
        json_object_set_new(row, "mean", json_null());
        json_object_set_new(row, "count", json_null());
        json_object_set_new(row, "rater", json_string(rater));
        json_object_set_new(row, "rater_trust", json_real(round(trust * 1000) / 1000));
        json_object_set_new(row, "trusted", json_boolean(r->db->col_int(st, 13) != 0));
        json_object_set_new(row, "account_age", json_integer(r->db->col_int(st, 14)));
        json_object_set_new(row, "client_agent", json_string(r->db->col_text(st, 15)));
        json_object_set_new(row, "source", json_string(r->db->col_text(st, 16)));
        json_object_set_new(row, "created", json_integer(r->db->col_int(st, 17)));
        json_object_set_new(row, "file", file[0] ? json_string(file) : json_null());
        json_array_append_new(pending, row);
    }
    json_decref(pending);
    r->db->finish(st);
    r->db->release(r->db_state, c);
    return got < 0 ? HN_ERROR : HN_OK;
}

static int export_command(ratings *r, int argc, char **argv) {
    const char *format = "jsonl", *dir = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--format") == 0 && i + 1 < argc)
            format = argv[++i];
        else if (argv[i][0] != '-' && !dir)
            dir = argv[i];
        else
            dir = NULL, i = argc;
    }
    bool csv = strcmp(format, "csv") == 0;
    if (!dir || (!csv && strcmp(format, "jsonl") != 0)) {
        fprintf(stderr, "usage: horde-node ratings export --format jsonl|csv DIR\n");
        return 2;
    }
    char images[4096], path[4096];
    snprintf(images, sizeof(images), "%s/images", dir);
    if ((mkdir(dir, 0755) != 0 && errno != EEXIST) ||
        (mkdir(images, 0755) != 0 && errno != EEXIST)) {
        fprintf(stderr, "ratings export: %s: %s\n", images, strerror(errno));
        return 1;
    }
    snprintf(path, sizeof(path), "%s/ratings.%s", dir, csv ? "csv" : "jsonl");
    FILE *out = fopen(path, "w");
    if (!out) {
        fprintf(stderr, "ratings export: %s: %s\n", path, strerror(errno));
        return 1;
    }
    hn_error err = {0};
    long rows = 0;
    hn_rc rc = export_rows(r, out, csv, images, &rows, &err);
    if (fclose(out) != 0 || rc != HN_OK) {
        fprintf(stderr, "ratings export: %s\n", rc != HN_OK ? err.message : strerror(errno));
        return 1;
    }
    snprintf(path, sizeof(path), "%s/README.md", dir);
    FILE *readme = fopen(path, "w");
    if (readme) {
        fprintf(readme,
                "# Image ratings exported by horde-node\n\nLicence: %s.\n\n"
                "ratings.%s: one row per accepted rating (captchas and raters below trust %.2f "
                "left out).\nColumns:",
                r->conf->export_license, csv ? "csv" : "jsonl", r->conf->min_export_trust);
        for (size_t i = 0; i < N_COLUMNS; i++)
            fprintf(readme, " %s%s", COLUMNS[i], i + 1 < N_COLUMNS ? "," : ".\n");
        fprintf(readme, "`mean` and `count` are over the exported ratings of the image; `rater` "
                        "is a salted SHA-256 of the rater; `file` is the image under images/.\n");
        fclose(readme);
    }
    printf("exported %ld rating%s to %s\n", rows, rows == 1 ? "" : "s", dir);
    return 0;
}

static int ratings_command(int argc, char **argv, void *state) {
    ratings *r = state;
    if (argc >= 2 && strcmp(argv[1], "import") == 0)
        return rt_import(r, argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "export") == 0)
        return export_command(r, argc - 2, argv + 2);
    fprintf(stderr, "usage: horde-node ratings import DIR [--dataset NAME] [--description TEXT] "
                    "[--captcha]\n       horde-node ratings export --format jsonl|csv DIR\n");
    return 2;
}

static void route_download(hn_request *req, void *state) {
    ratings *r = state;
    if (!rt_ready(r, req))
        return;
    const char *name = r->api->req_param(req, "filename");
    bool csv = strcmp(name, "ratings.csv") == 0;
    if (!csv && strcmp(name, "ratings.jsonl") != 0) {
        rt_fail(r, req, 404, "FileNotFound", "No export named %.100s (ratings.jsonl, ratings.csv).",
                name);
        return;
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    hn_error err = {0};
    long rows = 0;
    hn_rc rc = out ? export_rows(r, out, csv, NULL, &rows, &err) : HN_ERROR;
    if (out)
        fclose(out);
    if (rc != HN_OK) {
        free(buf);
        rt_fail(r, req, 500, "InternalServerError", "The export failed.");
        return;
    }
    char disposition[128];
    snprintf(disposition, sizeof(disposition), "attachment; filename=\"%s\"", name);
    r->api->resp_header(req, "Content-Disposition", disposition);
    r->api->respond(req, 200, csv ? "text/csv; charset=utf-8" : "application/x-ndjson", buf, len);
    free(buf);
}

static void pay_all(void *state) {
    ratings *r = state;
    if (!r->started)
        return;
    rt_pay_pending(r);
    rt_pay_pending_own(r);
}

int rt_export_register(ratings *r) {
    int bad = 0;
    bad |= r->api->command_add(r->self, "ratings",
                               "import DIR [--dataset NAME] [--captcha] | export --format "
                               "jsonl|csv DIR",
                               HN_CMD_START, ratings_command, r);
    bad |= r->api->route_add(r->self, HN_GET, "/api/v1/download/{filename}", route_download, r);
    /* kudos of ratings whose payment failed are paid again (same refs) */
    bad |= r->api->timer_add(r->self, 10000, pay_all, r);
    return bad ? -1 : 0;
}
