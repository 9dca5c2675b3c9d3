/* worker: model reference parsing, models_to_load resolution, local
 * checkpoints. See models.h. */
#include "models.h"

#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* ---- name lists ----------------------------------------------------------- */

void wk_names_free(wk_names *l) {
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

bool wk_names_has(const wk_names *l, const char *name) {
    for (size_t i = 0; l && i < l->n; i++)
        if (strcmp(l->v[i], name) == 0)
            return true;
    return false;
}

static int names_push(wk_names *l, const char *name) {
    char **v = realloc(l->v, (l->n + 1) * sizeof *v);
    if (!v)
        return -1;
    l->v = v;
    if (!(l->v[l->n] = strdup(name)))
        return -1;
    l->n++;
    return 0;
}

int wk_names_add(wk_names *l, const char *name) {
    return wk_names_has(l, name) ? 0 : names_push(l, name);
}

/* ---- the reference ---------------------------------------------------------- */

bool wk_safe_file_name(const char *name) {
    return name && name[0] && name[0] != '.' && !strchr(name, '/') && !strchr(name, '\\') &&
           strlen(name) < 255;
}

static bool is_weight_file(const char *path) {
    size_t n = strlen(path);
    return (n > 12 && strcasecmp(path + n - 12, ".safetensors") == 0) ||
           (n > 5 && strcasecmp(path + n - 5, ".ckpt") == 0);
}

static char *lower_hex(const char *s) {
    if (!s || !*s)
        return NULL;
    char *o = strdup(s);
    for (char *p = o; o && *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return o;
}

static void ref_model_free(wk_ref_model *m) {
    for (size_t i = 0; i < m->n_files; i++) {
        free(m->files[i].path);
        free(m->files[i].sha256);
        free(m->files[i].url);
    }
    free(m->files);
    free(m->name);
    free(m->baseline);
}

void wk_reference_free(wk_reference *ref) {
    if (!ref)
        return;
    for (size_t i = 0; i < ref->n; i++)
        ref_model_free(&ref->models[i]);
    free(ref->models);
    ref->models = NULL;
    ref->n = 0;
}

/* The download URL listed for a file name. */
static const char *url_for(const json_t *downloads, const char *file) {
    size_t i;
    const json_t *d;
    json_array_foreach(downloads, i, d) {
        const char *fn = json_string_value(json_object_get(d, "file_name"));
        const char *url = json_string_value(json_object_get(d, "file_url"));
        if (fn && url && strcmp(fn, file) == 0)
            return url;
    }
    return NULL;
}

static int parse_model(const char *name, const json_t *rec, wk_ref_model *m) {
    memset(m, 0, sizeof *m);
    const char *base = json_string_value(json_object_get(rec, "baseline"));
    m->name = strdup(name);
    m->baseline = strdup(base ? base : "");
    m->inpainting = json_is_true(json_object_get(rec, "inpainting"));
    m->nsfw = json_is_true(json_object_get(rec, "nsfw"));
    const json_t *size = json_object_get(rec, "size_on_disk_bytes");
    if (json_is_integer(size) && json_integer_value(size) > 0)
        m->size_on_disk = (uint64_t)json_integer_value(size);
    if (!m->name || !m->baseline)
        return -1;
    const json_t *config = json_object_get(rec, "config");
    const json_t *files = json_object_get(config, "files");
    const json_t *downloads = json_object_get(config, "download");
    size_t i;
    const json_t *f;
    /* two passes: weights first, then companions that have a download URL */
    for (int pass = 0; pass < 2; pass++) {
        json_array_foreach(files, i, f) {
            const char *path = json_string_value(json_object_get(f, "path"));
            /* a path that would leave the folder is not ours to write */
            if (!path || !wk_safe_file_name(path))
                continue;
            bool weight = is_weight_file(path);
            const char *url = url_for(downloads, path);
            if (weight != (pass == 0) || (!weight && !url))
                continue;
            wk_ref_file *nf = realloc(m->files, (m->n_files + 1) * sizeof *nf);
            if (!nf)
                return -1;
            m->files = nf;
            wk_ref_file *rf = &m->files[m->n_files++];
            memset(rf, 0, sizeof *rf);
            rf->path = strdup(path);
            rf->weight = weight;
            /* some references carry upper-case hex: compare case-insensitively */
            rf->sha256 = lower_hex(json_string_value(json_object_get(f, "sha256sum")));
            rf->url = url ? strdup(url) : NULL;
            if (!rf->path)
                return -1;
            m->n_weights += weight;
        }
    }
    return 0;
}

static int cmp_model(const void *a, const void *b) {
    return strcmp(((const wk_ref_model *)a)->name, ((const wk_ref_model *)b)->name);
}

int wk_reference_parse(const json_t *root, wk_reference *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (!json_is_object(root)) {
        snprintf(err, errlen, "the model reference is not a JSON object of models");
        return -1;
    }
    size_t n = json_object_size(root);
    out->models = calloc(n ? n : 1, sizeof *out->models);
    if (!out->models) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    const char *key;
    const json_t *rec;
    json_object_foreach((json_t *)root, key, rec) {
        if (!json_is_object(rec))
            continue;
        const char *name = json_string_value(json_object_get(rec, "name"));
        if (parse_model(name ? name : key, rec, &out->models[out->n]) != 0) {
            ref_model_free(&out->models[out->n]);
            wk_reference_free(out);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        out->n++;
    }
    qsort(out->models, out->n, sizeof *out->models, cmp_model);
    return 0;
}

const wk_ref_model *wk_reference_find(const wk_reference *ref, const char *name) {
    if (!ref || !ref->n || !name)
        return NULL;
    wk_ref_model key = {.name = (char *)name};
    return bsearch(&key, ref->models, ref->n, sizeof key, cmp_model);
}

/* ---- models_to_load ------------------------------------------------------------- */

typedef enum meta_kind {
    META_NONE, META_ALL, META_SDXL, META_SD15, META_SD21, META_SFW, META_NSFW,
    META_INPAINTING, META_TOP, META_BOTTOM
} meta_kind;

/* Matches the SDK's regexes: "all", "all model(s)", "all <x>", "all <x>
 * model(s)", "top N", "bottom N", case-insensitive. */
static meta_kind parse_meta(const char *s, long *count) {
    char buf[128];
    size_t n = strlen(s);
    if (n >= sizeof buf)
        return META_NONE;
    for (size_t i = 0; i <= n; i++)
        buf[i] = (char)tolower((unsigned char)s[i]);
    /* strip a trailing " model" / " models" */
    size_t len = n;
    if (len > 7 && strcmp(buf + len - 7, " models") == 0)
        buf[len -= 7] = '\0';
    else if (len > 6 && strcmp(buf + len - 6, " model") == 0)
        buf[len -= 6] = '\0';
    static const struct {
        const char *text;
        meta_kind kind;
    } alls[] = {{"all", META_ALL},         {"all sdxl", META_SDXL}, {"all sd15", META_SD15},
                {"all sd21", META_SD21},   {"all sfw", META_SFW},   {"all nsfw", META_NSFW},
                {"all inpainting", META_INPAINTING}};
    for (size_t i = 0; i < sizeof alls / sizeof alls[0]; i++)
        if (strcmp(buf, alls[i].text) == 0)
            return alls[i].kind;
    /* "top N" / "bottom N" (on the original text: "top 2 models" is not a form) */
    for (size_t i = 0; i <= n; i++)
        buf[i] = (char)tolower((unsigned char)s[i]);
    const char *num = NULL;
    meta_kind k = META_NONE;
    if (strncmp(buf, "top ", 4) == 0) {
        num = buf + 4;
        k = META_TOP;
    } else if (strncmp(buf, "bottom ", 7) == 0) {
        num = buf + 7;
        k = META_BOTTOM;
    }
    if (!num || !isdigit((unsigned char)*num))
        return META_NONE;
    char *end;
    *count = strtol(num, &end, 10);
    return *end == '\0' ? k : META_NONE;
}

static bool is_large(const wk_ref_model *m) {
    return strcmp(m->baseline, "stable_cascade") == 0 || strcmp(m->baseline, "flux_1") == 0;
}

static bool baseline_is(const wk_ref_model *m, meta_kind k) {
    const char *b = m->baseline;
    switch (k) {
    case META_SDXL:
        return strcmp(b, "stable_diffusion_xl") == 0;
    case META_SD15:
        return strcmp(b, "stable diffusion 1") == 0 || strcmp(b, "stable_diffusion_1") == 0;
    case META_SD21:
        return strcmp(b, "stable diffusion 2") == 0 || strcmp(b, "stable diffusion 2 512") == 0 ||
               strcmp(b, "stable_diffusion_2_768") == 0 ||
               strcmp(b, "stable_diffusion_2_512") == 0;
    case META_SFW:
        return !m->nsfw;
    case META_NSFW:
        return m->nsfw;
    case META_INPAINTING:
        return m->inpainting;
    default:
        return true;
    }
}

typedef struct ranked {
    const char *name;
    long long count;
} ranked;

static int cmp_ranked_desc(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->count != y->count)
        return x->count < y->count ? 1 : -1;
    return strcmp(x->name, y->name);
}

static void warnf(wk_warn_fn *warn, void *ud, const char *fmt, const char *arg) {
    if (!warn)
        return;
    char msg[512];
    snprintf(msg, sizeof msg, fmt, arg);
    warn(ud, msg);
}

/* TOP/BOTTOM N: the N most (least) used reference models of the month. */
static int add_ranked(const wk_reference *ref, const json_t *popularity, meta_kind k, long count,
                      bool load_large, wk_names *out) {
    size_t n = json_object_size(popularity);
    ranked *r = calloc(n ? n : 1, sizeof *r);
    if (!r)
        return -1;
    size_t m = 0;
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)popularity, key, v) {
        const wk_ref_model *rm = wk_reference_find(ref, key);
        if (!rm || !json_is_integer(v) || (!load_large && is_large(rm)))
            continue;
        r[m].name = rm->name;
        r[m].count = json_integer_value(v);
        m++;
    }
    qsort(r, m, sizeof *r, cmp_ranked_desc);
    int rc = 0;
    for (long i = 0; i < count && (size_t)i < m && rc == 0; i++)
        rc = wk_names_add(out, k == META_TOP ? r[i].name : r[m - 1 - (size_t)i].name);
    free(r);
    return rc;
}

int wk_models_resolve(const wk_reference *ref, const char *const *load, const char *const *skip,
                      const json_t *popularity, bool load_large, const wk_names *local,
                      wk_names *out, wk_warn_fn *warn, void *ud) {
    memset(out, 0, sizeof *out);
    wk_names all = {0};
    int rc = 0;
    for (size_t i = 0; load && load[i] && rc == 0; i++) {
        long count = 0;
        meta_kind k = parse_meta(load[i], &count);
        if (k == META_NONE) {
            if ((ref && wk_reference_find(ref, load[i])) || wk_names_has(local, load[i]))
                rc = wk_names_add(&all, load[i]);
            else
                warnf(warn, ud,
                      "models_to_load: \"%s\" is neither in the model reference nor a local "
                      "checkpoint; skipped",
                      load[i]);
            continue;
        }
        if (!ref || ref->n == 0) {
            warnf(warn, ud, "models_to_load: \"%s\" needs a model_reference; skipped", load[i]);
            continue;
        }
        if (k == META_TOP || k == META_BOTTOM) {
            if (!json_is_object(popularity)) {
                warnf(warn, ud,
                      "models_to_load: \"%s\" needs the horde's model statistics, which could "
                      "not be read; skipped",
                      load[i]);
                continue;
            }
            rc = add_ranked(ref, popularity, k, count, load_large, &all);
            continue;
        }
        for (size_t j = 0; j < ref->n && rc == 0; j++) {
            const wk_ref_model *m = &ref->models[j];
            if ((load_large || !is_large(m)) && baseline_is(m, k))
                rc = wk_names_add(&all, m->name);
        }
    }
    /* minus models_to_skip; the public workers always skip this one */
    for (size_t i = 0; i < all.n && rc == 0; i++) {
        bool skipped = strcmp(all.v[i], "SDXL_beta::stability.ai#6901") == 0;
        for (size_t j = 0; skip && skip[j] && !skipped; j++)
            skipped = strcmp(all.v[i], skip[j]) == 0;
        if (!skipped)
            rc = names_push(out, all.v[i]);
    }
    wk_names_free(&all);
    if (rc != 0)
        wk_names_free(out);
    return rc;
}

/* ---- local checkpoints ------------------------------------------------------------ */

static const char *checkpoint_ext(const char *file) {
    size_t n = strlen(file);
    if (n > 12 && strcmp(file + n - 12, ".safetensors") == 0)
        return file + n - 12;
    if (n > 5 && strcmp(file + n - 5, ".ckpt") == 0)
        return file + n - 5;
    return NULL;
}

int wk_scan_checkpoints(const char *dir, wk_names *names, wk_names *paths) {
    memset(names, 0, sizeof *names);
    memset(paths, 0, sizeof *paths);
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        const char *ext = checkpoint_ext(e->d_name);
        if (!ext || e->d_name[0] == '.')
            continue;
        char path[4096];
        int pn = snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (pn < 0 || (size_t)pn >= sizeof path || stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(ext - e->d_name), e->d_name);
        size_t k = 0;
        while (k < names->n && strcmp(names->v[k], name) != 0)
            k++;
        if (k < names->n) {
            /* the same name twice: the .safetensors one wins */
            if (strcmp(ext, ".safetensors") == 0) {
                char *p = strdup(path);
                if (!p) {
                    rc = -1;
                    break;
                }
                free(paths->v[k]);
                paths->v[k] = p;
            }
            continue;
        }
        if (names_push(names, name) != 0 || names_push(paths, path) != 0)
            rc = -1;
    }
    closedir(d);
    if (rc != 0) {
        wk_names_free(names);
        wk_names_free(paths);
    }
    return rc;
}

const char *wk_checkpoint_sane(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return "cannot be opened";
    unsigned char head[16] = {0};
    size_t got = fread(head, 1, sizeof head, f);
    struct stat st;
    int fst = fstat(fileno(f), &st);
    fclose(f);
    if (fst != 0)
        return "cannot be read";
    const char *ext = checkpoint_ext(path);
    if (ext && strcmp(ext, ".safetensors") == 0) {
        if (got < 9)
            return "is too short for a safetensors file";
        uint64_t hlen = 0;
        for (int i = 7; i >= 0; i--)
            hlen = hlen << 8 | head[i];
        if (hlen < 2 || hlen > (uint64_t)st.st_size - 8)
            return "has a safetensors header longer than the file (truncated?)";
        if (head[8] != '{')
            return "does not start with a safetensors JSON header";
        return NULL;
    }
    if (got < 4)
        return "is too short for a checkpoint";
    if (head[0] == 'P' && head[1] == 'K')
        return NULL; /* a PyTorch zip */
    if (head[0] == 0x80)
        return NULL; /* a bare pickle */
    return "is neither a zip nor a pickle (not a .ckpt)";
}
