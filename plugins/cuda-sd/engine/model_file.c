/* model_file.c - see model_file.h. safetensors: header JSON parsed with
 * jansson, every field checked before a pointer into the mapping is formed.
 * .ckpt: zip (engine/zip.h) + restricted pickle (engine/pickle.h); storages
 * that are stored uncompressed (torch.save's default) are used in place from
 * the mapping, deflated ones are inflated once, non-contiguous views are
 * copied into contiguous buffers. */
#include "model_file.h"

#include "error_text.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "half.h"
#include "pickle.h"
#include "zip.h"

/* The safetensors format caps the header at 100 MB. */
#define SAFETENSORS_MAX_HEADER (100u * 1000u * 1000u)

struct sd_model_file {
    char *path;
    const char *format;
    const unsigned char *base;  /* the whole file */
    size_t len;
    void *map;                  /* mmap'd region (NULL for memory images) */
    size_t map_len;
    unsigned char *mem;         /* malloc'd copy for open_memory */
    sd_tensor_info *tensors;    /* sorted by name; names owned */
    size_t n;
    void **owned;               /* inflated storages, contiguous copies */
    size_t n_owned, owned_cap;
    char **meta_keys, **meta_vals;
    size_t n_meta;
};


/* ---- dtypes ---------------------------------------------------------------- */
static const struct { const char *name; size_t size; } dtype_table[SD_DTYPE_COUNT] = {
    [SD_DTYPE_F32] = {"F32", 4},  [SD_DTYPE_F16] = {"F16", 2}, [SD_DTYPE_BF16] = {"BF16", 2},
    [SD_DTYPE_F64] = {"F64", 8},  [SD_DTYPE_I64] = {"I64", 8}, [SD_DTYPE_I32] = {"I32", 4},
    [SD_DTYPE_I16] = {"I16", 2},  [SD_DTYPE_I8] = {"I8", 1},   [SD_DTYPE_U8] = {"U8", 1},
    [SD_DTYPE_BOOL] = {"BOOL", 1},
};

size_t sd_dtype_size(sd_dtype t) { return (unsigned)t < SD_DTYPE_COUNT ? dtype_table[t].size : 0; }
const char *sd_dtype_name(sd_dtype t) { return (unsigned)t < SD_DTYPE_COUNT ? dtype_table[t].name : "?"; }

static int dtype_from_name(const char *s, sd_dtype *out)
{
    for (int i = 0; i < SD_DTYPE_COUNT; i++)
        if (strcmp(dtype_table[i].name, s) == 0) { *out = (sd_dtype)i; return 0; }
    return -1;
}

int64_t sd_tensor_numel(const sd_tensor_info *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* numel of a shape, or -1 on overflow past 2^62 */
static int64_t checked_numel(const int64_t *shape, int ndim)
{
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        if (__builtin_mul_overflow(n, (uint64_t)shape[i], &n) || n > ((uint64_t)1 << 62)) return -1;
    }
    return (int64_t)n;
}

/* ---- lifetime -------------------------------------------------------------- */
static sd_model_file *new_file(const char *path)
{
    sd_model_file *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->path = strdup(path ? path : "(memory)");
    if (!f->path) { free(f); return NULL; }
    return f;
}

void sd_model_file_close(sd_model_file *f)
{
    if (!f) return;
    for (size_t i = 0; i < f->n; i++) free((char *)f->tensors[i].name);
    free(f->tensors);
    for (size_t i = 0; i < f->n_owned; i++) free(f->owned[i]);
    free(f->owned);
    for (size_t i = 0; i < f->n_meta; i++) { free(f->meta_keys[i]); free(f->meta_vals[i]); }
    free(f->meta_keys);
    free(f->meta_vals);
    if (f->map) munmap(f->map, f->map_len);
    free(f->mem);
    free(f->path);
    free(f);
}

static int keep_owned(sd_model_file *f, void *p)
{
    if (f->n_owned == f->owned_cap) {
        size_t cap = f->owned_cap ? f->owned_cap * 2 : 16;
        void **no = realloc(f->owned, cap * sizeof *no);
        if (!no) return -1;
        f->owned = no;
        f->owned_cap = cap;
    }
    f->owned[f->n_owned++] = p;
    return 0;
}

static int add_meta(sd_model_file *f, const char *k, const char *v)
{
    char **nk = realloc(f->meta_keys, (f->n_meta + 1) * sizeof *nk);
    if (!nk) return -1;
    f->meta_keys = nk;
    char **nv = realloc(f->meta_vals, (f->n_meta + 1) * sizeof *nv);
    if (!nv) return -1;
    f->meta_vals = nv;
    nk[f->n_meta] = strdup(k);
    nv[f->n_meta] = strdup(v);
    if (!nk[f->n_meta] || !nv[f->n_meta]) {
        free(nk[f->n_meta]);
        free(nv[f->n_meta]);
        return -1;
    }
    f->n_meta++;
    return 0;
}

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const sd_tensor_info *)a)->name, ((const sd_tensor_info *)b)->name);
}

static int sort_and_check(sd_model_file *f, char *err, size_t errlen)
{
    qsort(f->tensors, f->n, sizeof *f->tensors, cmp_tensor);
    for (size_t i = 1; i < f->n; i++)
        if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0)
            return sd_fail_in(err, errlen, f->path, "tensor '%s' appears twice", f->tensors[i].name);
    return 0;
}

/* ---- safetensors ----------------------------------------------------------- */
static int parse_safetensors(sd_model_file *f, char *err, size_t errlen)
{
    const char *fn = f->path;
    if (f->len < 8)
        return sd_fail_in(err, errlen, fn, "file is %zu bytes, too short for a safetensors header (needs at least 8)", f->len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | f->base[i];
    if (hlen > SAFETENSORS_MAX_HEADER)
        return sd_fail_in(err, errlen, fn, "safetensors header length %llu is implausible (limit %u; not a safetensors file?)",
                     (unsigned long long)hlen, SAFETENSORS_MAX_HEADER);
    if (hlen > f->len - 8)
        return sd_fail_in(err, errlen, fn, "safetensors header claims %llu bytes but only %zu follow (truncated file)",
                     (unsigned long long)hlen, f->len - 8);
    if (hlen < 2) return sd_fail_in(err, errlen, fn, "safetensors header is empty");
    const unsigned char *data = f->base + 8 + hlen;
    size_t data_len = f->len - 8 - (size_t)hlen;

    json_error_t jerr;
    json_t *root = json_loadb((const char *)f->base + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return sd_fail_in(err, errlen, fn, "safetensors header is not valid JSON: %s (header byte %d)", jerr.text,
                     jerr.position);
    if (!json_is_object(root)) {
        json_decref(root);
        return sd_fail_in(err, errlen, fn, "safetensors header is not a JSON object");
    }
    size_t count = json_object_size(root);
    f->tensors = calloc(count ? count : 1, sizeof *f->tensors);
    if (!f->tensors) {
        json_decref(root);
        return sd_fail_in(err, errlen, fn, "out of memory");
    }
    const char *key;
    json_t *val;
    int rc = 0;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(val)) { rc = sd_fail_in(err, errlen, fn, "__metadata__ is not an object"); break; }
            const char *mk;
            json_t *mv;
            json_object_foreach(val, mk, mv) {
                if (!json_is_string(mv)) continue;  /* the format says strings; tolerate others */
                if (add_meta(f, mk, json_string_value(mv))) { rc = sd_fail_in(err, errlen, fn, "out of memory"); break; }
            }
            if (rc) break;
            continue;
        }
        if (!json_is_object(val)) { rc = sd_fail_in(err, errlen, fn, "tensor '%s': entry is not an object", key); break; }
        json_t *jd = json_object_get(val, "dtype"), *js = json_object_get(val, "shape"),
               *jo = json_object_get(val, "data_offsets");
        sd_dtype dt;
        if (!json_is_string(jd)) { rc = sd_fail_in(err, errlen, fn, "tensor '%s': missing dtype", key); break; }
        if (dtype_from_name(json_string_value(jd), &dt)) {
            rc = sd_fail_in(err, errlen, fn, "tensor '%s': unsupported dtype '%s'", key, json_string_value(jd));
            break;
        }
        if (!json_is_array(js) || json_array_size(js) > SD_MAX_DIMS) {
            rc = sd_fail_in(err, errlen, fn, "tensor '%s': shape is missing or has more than %d dimensions", key, SD_MAX_DIMS);
            break;
        }
        if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) ||
            !json_is_integer(json_array_get(jo, 1))) {
            rc = sd_fail_in(err, errlen, fn, "tensor '%s': data_offsets must be two integers", key);
            break;
        }
        sd_tensor_info *t = &f->tensors[f->n];
        t->dtype = dt;
        t->ndim = (int)json_array_size(js);
        for (int i = 0; i < t->ndim; i++) {
            json_t *d = json_array_get(js, (size_t)i);
            if (!json_is_integer(d) || json_integer_value(d) < 0) {
                rc = sd_fail_in(err, errlen, fn, "tensor '%s': shape entry %d is not a non-negative integer", key, i);
                break;
            }
            t->shape[i] = json_integer_value(d);
        }
        if (rc) break;
        int64_t numel = checked_numel(t->shape, t->ndim);
        if (numel < 0) { rc = sd_fail_in(err, errlen, fn, "tensor '%s': shape is too large", key); break; }
        long long b = json_integer_value(json_array_get(jo, 0)), e = json_integer_value(json_array_get(jo, 1));
        if (b < 0 || e < b || (unsigned long long)e > data_len) {
            rc = sd_fail_in(err, errlen, fn, "tensor '%s': data_offsets [%lld, %lld) lie outside the %zu-byte data section%s",
                       key, b, e, data_len, (unsigned long long)e > data_len ? " (truncated file?)" : "");
            break;
        }
        uint64_t want = (uint64_t)numel * sd_dtype_size(dt);
        if ((uint64_t)(e - b) != want) {
            rc = sd_fail_in(err, errlen, fn, "tensor '%s': data_offsets span %lld bytes but %s%s needs %llu", key, e - b,
                       sd_dtype_name(dt), t->ndim ? " of its shape" : " scalar", (unsigned long long)want);
            break;
        }
        t->data = data + b;
        t->nbytes = (size_t)want;
        t->name = strdup(key);
        if (!t->name) { rc = sd_fail_in(err, errlen, fn, "out of memory"); break; }
        f->n++;
    }
    json_decref(root);
    if (rc) return rc;
    f->format = "safetensors";
    return sort_and_check(f, err, errlen);
}

/* ---- .ckpt ----------------------------------------------------------------- */
typedef struct storage_ref {
    const char *key;            /* borrowed from the pickle result */
    const unsigned char *data;
    size_t len;
} storage_ref;

static int load_storage(sd_model_file *f, const sd_zip *z, const char *prefix, const char *key, storage_ref **cache,
                        size_t *n_cache, const storage_ref **out, char *err, size_t errlen)
{
    for (size_t i = 0; i < *n_cache; i++)
        if (strcmp((*cache)[i].key, key) == 0) { *out = &(*cache)[i]; return 0; }
    char name[1024];
    snprintf(name, sizeof name, "%s/data/%s", prefix, key);
    const sd_zip_entry *e = sd_zip_find(z, name);
    if (!e) return sd_fail_in(err, errlen, f->path, "storage '%s' referenced by the pickle is missing from the archive", name);
    const unsigned char *data;
    unsigned char *owned;
    if (sd_zip_read(z, e, 0, &data, &owned, err, errlen)) return -1;
    if (owned && keep_owned(f, owned)) {
        free(owned);
        return sd_fail_in(err, errlen, f->path, "out of memory");
    }
    storage_ref *nc = realloc(*cache, (*n_cache + 1) * sizeof *nc);
    if (!nc) return sd_fail_in(err, errlen, f->path, "out of memory");
    *cache = nc;
    nc[*n_cache].key = key;
    nc[*n_cache].data = data;
    nc[*n_cache].len = (size_t)e->size;
    *out = &nc[(*n_cache)++];
    return 0;
}

/* Points t at its elements: in place when the view is contiguous, else a
 * gathered copy. Checks the view lies inside the storage. */
static int place_tensor(sd_model_file *f, const sd_pickle_tensor *pt, const storage_ref *s, sd_tensor_info *t,
                        char *err, size_t errlen)
{
    size_t es = sd_dtype_size(pt->dtype);
    uint64_t storage_elems = s->len / es;
    int64_t numel = checked_numel(pt->shape, pt->ndim);
    if (numel < 0) return sd_fail_in(err, errlen, f->path, "tensor '%s': bad shape", pt->name);
    if (pt->storage_offset < 0) return sd_fail_in(err, errlen, f->path, "tensor '%s': negative storage offset", pt->name);
    t->nbytes = (size_t)numel * es;
    if (numel == 0) {
        t->data = s->data;
        return 0;
    }
    uint64_t last = (uint64_t)pt->storage_offset;
    bool contiguous = true;
    int64_t expect = 1;
    for (int i = pt->ndim - 1; i >= 0; i--) {
        if (pt->stride[i] < 0) return sd_fail_in(err, errlen, f->path, "tensor '%s': negative stride", pt->name);
        uint64_t span;
        if (__builtin_mul_overflow((uint64_t)(pt->shape[i] - 1), (uint64_t)pt->stride[i], &span) ||
            __builtin_add_overflow(last, span, &last))
            return sd_fail_in(err, errlen, f->path, "tensor '%s': view overflows", pt->name);
        if (pt->shape[i] != 1 && pt->stride[i] != expect) contiguous = false;
        expect *= pt->shape[i];
    }
    if (last >= storage_elems)
        return sd_fail_in(err, errlen, f->path, "tensor '%s': view reaches element %llu of a %llu-element storage", pt->name,
                     (unsigned long long)last, (unsigned long long)storage_elems);
    const unsigned char *base = s->data + (size_t)pt->storage_offset * es;
    /* a strided view larger than its storage must overlap itself (stride 0
     * broadcasting): not something a checkpoint holds, and copying it
     * could take any amount of memory */
    if (!contiguous && (uint64_t)numel > storage_elems)
        return sd_fail_in(err, errlen, f->path, "tensor '%s': overlapping view of %lld elements on a %llu-element storage",
                     pt->name, (long long)numel, (unsigned long long)storage_elems);
    if (contiguous) {
        t->data = base;
        return 0;
    }
    unsigned char *copy = malloc(t->nbytes);
    if (!copy || keep_owned(f, copy)) {
        free(copy);
        return sd_fail_in(err, errlen, f->path, "out of memory");
    }
    int64_t idx[SD_MAX_DIMS] = {0};
    for (int64_t k = 0; k < numel; k++) {
        uint64_t off = 0;
        for (int i = 0; i < pt->ndim; i++) off += (uint64_t)idx[i] * (uint64_t)pt->stride[i];
        memcpy(copy + (size_t)k * es, base + off * es, es);
        for (int i = pt->ndim - 1; i >= 0; i--) {
            if (++idx[i] < pt->shape[i]) break;
            idx[i] = 0;
        }
    }
    t->data = copy;
    return 0;
}

static int parse_ckpt(sd_model_file *f, char *err, size_t errlen)
{
    sd_zip z;
    if (sd_zip_open(&z, f->base, f->len, f->path, err, errlen)) return -1;
    /* the pickle is "<prefix>/data.pkl"; storages are "<prefix>/data/<key>" */
    const sd_zip_entry *pkl = NULL;
    for (size_t i = 0; i < z.n_entries && !pkl; i++) {
        const char *nm = z.entries[i].name, *slash = strchr(nm, '/');
        if (slash && strcmp(slash, "/data.pkl") == 0) pkl = &z.entries[i];
    }
    if (!pkl) {
        sd_zip_close(&z);
        return sd_fail_in(err, errlen, f->path, "zip archive has no <name>/data.pkl: not a PyTorch checkpoint");
    }
    char prefix[512];
    size_t plen = (size_t)(strchr(pkl->name, '/') - pkl->name);
    if (plen >= sizeof prefix) {
        sd_zip_close(&z);
        return sd_fail_in(err, errlen, f->path, "archive folder name is too long");
    }
    memcpy(prefix, pkl->name, plen);
    prefix[plen] = '\0';

    char bo_name[600];
    snprintf(bo_name, sizeof bo_name, "%s/byteorder", prefix);
    const sd_zip_entry *bo = sd_zip_find(&z, bo_name);
    if (bo) {
        const unsigned char *d;
        unsigned char *o;
        if (sd_zip_read(&z, bo, 1, &d, &o, err, errlen)) { sd_zip_close(&z); return -1; }
        bool little = bo->size == 6 && memcmp(d, "little", 6) == 0;
        free(o);
        if (!little) {
            sd_zip_close(&z);
            return sd_fail_in(err, errlen, f->path, "checkpoint was saved big-endian; only little-endian is supported");
        }
    }

    const unsigned char *pdata;
    unsigned char *powned;
    if (sd_zip_read(&z, pkl, 1, &pdata, &powned, err, errlen)) { sd_zip_close(&z); return -1; }
    sd_pickle_result pr;
    int rc = sd_pickle_read_state_dict(pdata, (size_t)pkl->size, f->path, &pr, err, errlen);
    free(powned);
    if (rc) { sd_zip_close(&z); return -1; }

    storage_ref *cache = NULL;
    size_t n_cache = 0;
    f->tensors = calloc(pr.n_tensors ? pr.n_tensors : 1, sizeof *f->tensors);
    if (!f->tensors) rc = sd_fail_in(err, errlen, f->path, "out of memory");
    for (size_t i = 0; i < pr.n_tensors && rc == 0; i++) {
        const sd_pickle_tensor *pt = &pr.tensors[i];
        const storage_ref *s = NULL;
        if ((rc = load_storage(f, &z, prefix, pt->storage_key, &cache, &n_cache, &s, err, errlen))) break;
        sd_tensor_info *t = &f->tensors[f->n];
        t->dtype = pt->dtype;
        t->ndim = pt->ndim;
        memcpy(t->shape, pt->shape, sizeof t->shape);
        if ((rc = place_tensor(f, pt, s, t, err, errlen))) break;
        t->name = strdup(pt->name);
        if (!t->name) { rc = sd_fail_in(err, errlen, f->path, "out of memory"); break; }
        f->n++;
    }
    for (size_t i = 0; i < pr.n_meta && rc == 0; i++)
        if (add_meta(f, pr.meta[i].key, pr.meta[i].value)) rc = sd_fail_in(err, errlen, f->path, "out of memory");
    free(cache);
    sd_pickle_result_free(&pr);
    sd_zip_close(&z);
    if (rc) return rc;
    f->format = "ckpt";
    return sort_and_check(f, err, errlen);
}

static int parse_any(sd_model_file *f, char *err, size_t errlen)
{
    if (sd_zip_looks_like(f->base, f->len)) return parse_ckpt(f, err, errlen);
    /* legacy (pre-1.6) torch.save files start with a pickle protocol byte */
    if (f->len >= 2 && f->base[0] == 0x80 && f->base[1] <= 5 && f->len > 8) {
        uint64_t h = 0;
        for (int i = 7; i >= 0; i--) h = (h << 8) | f->base[i];
        if (h > f->len)
            return sd_fail_in(err, errlen, f->path, "looks like a legacy (pre-zip) PyTorch file, which is not supported; "
                         "re-save it as .safetensors");
    }
    /* named like a torch checkpoint but not a zip: say so, rather than
     * complaining about a safetensors header */
    size_t pl = strlen(f->path);
    static const char *const torch_ext[] = {".ckpt", ".pt", ".pth", ".bin"};
    for (size_t i = 0; i < sizeof torch_ext / sizeof torch_ext[0]; i++) {
        size_t el = strlen(torch_ext[i]);
        if (pl > el && strcasecmp(f->path + pl - el, torch_ext[i]) == 0)
            return sd_fail_in(err, errlen, f->path, "not a PyTorch checkpoint: no zip signature at the start "
                         "(truncated, or another format)");
    }
    return parse_safetensors(f, err, errlen);
}

int sd_model_file_open(const char *path, sd_model_file **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!path) return sd_fail_in(err, errlen, "(null)", "no path given");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sd_fail_in(err, errlen, path, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return sd_fail_in(err, errlen, path, "cannot stat: %s", strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return sd_fail_in(err, errlen, path, "not a regular file");
    }
    if (st.st_size == 0) {
        close(fd);
        return sd_fail_in(err, errlen, path, "file is empty");
    }
    sd_model_file *f = new_file(path);
    if (!f) {
        close(fd);
        return sd_fail_in(err, errlen, path, "out of memory");
    }
    f->map_len = (size_t)st.st_size;
    f->map = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        sd_model_file_close(f);
        return sd_fail_in(err, errlen, path, "cannot map: %s", strerror(e));
    }
    f->base = f->map;
    f->len = f->map_len;
    if (parse_any(f, err, errlen)) {
        sd_model_file_close(f);
        return -1;
    }
    *out = f;
    return 0;
}

int sd_model_file_open_memory(const void *bytes, size_t len, const char *name, sd_model_file **out, char *err,
                              size_t errlen)
{
    *out = NULL;
    sd_model_file *f = new_file(name);
    if (!f) return sd_fail_in(err, errlen, name ? name : "(memory)", "out of memory");
    f->mem = malloc(len ? len : 1);
    if (!f->mem) {
        sd_model_file_close(f);
        return sd_fail_in(err, errlen, name ? name : "(memory)", "out of memory");
    }
    if (len) memcpy(f->mem, bytes, len);
    f->base = f->mem;
    f->len = len;
    if (parse_any(f, err, errlen)) {
        sd_model_file_close(f);
        return -1;
    }
    *out = f;
    return 0;
}

/* ---- queries --------------------------------------------------------------- */
size_t sd_model_file_count(const sd_model_file *f) { return f ? f->n : 0; }

const sd_tensor_info *sd_model_file_at(const sd_model_file *f, size_t i)
{
    return (f && i < f->n) ? &f->tensors[i] : NULL;
}

const sd_tensor_info *sd_model_file_find(const sd_model_file *f, const char *name)
{
    if (!f || !name) return NULL;
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->tensors[mid].name, name);
        if (c == 0) return &f->tensors[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const char *sd_model_file_path(const sd_model_file *f) { return f ? f->path : NULL; }
const char *sd_model_file_format(const sd_model_file *f) { return f ? f->format : NULL; }

const char *sd_model_file_metadata(const sd_model_file *f, const char *key)
{
    if (!f || !key) return NULL;
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_vals[i];
    return NULL;
}

/* ---- conversion ------------------------------------------------------------ */
/* Element i of t as double / int64 (unaligned-safe). */
static double elem_f64(const sd_tensor_info *t, int64_t i)
{
    const unsigned char *p = (const unsigned char *)t->data + (size_t)i * sd_dtype_size(t->dtype);
    switch (t->dtype) {
    case SD_DTYPE_F32: { float v; memcpy(&v, p, 4); return v; }
    case SD_DTYPE_F16: { uint16_t h; memcpy(&h, p, 2); return sd_f16_to_f32(h); }
    case SD_DTYPE_BF16: { uint16_t h; memcpy(&h, p, 2); return sd_bf16_to_f32(h); }
    case SD_DTYPE_F64: { double v; memcpy(&v, p, 8); return v; }
    case SD_DTYPE_I64: { int64_t v; memcpy(&v, p, 8); return (double)v; }
    case SD_DTYPE_I32: { int32_t v; memcpy(&v, p, 4); return v; }
    case SD_DTYPE_I16: { int16_t v; memcpy(&v, p, 2); return v; }
    case SD_DTYPE_I8: return (int8_t)p[0];
    case SD_DTYPE_U8: return p[0];
    case SD_DTYPE_BOOL: return p[0] != 0;
    default: return 0;
    }
}

int sd_tensor_range_to_f32(const sd_tensor_info *t, int64_t first, int64_t count, float *out)
{
    if (!t || !out || first < 0 || count < 0 || first + count > sd_tensor_numel(t)) return -1;
    const unsigned char *p = (const unsigned char *)t->data + (size_t)first * sd_dtype_size(t->dtype);
    switch (t->dtype) {
    case SD_DTYPE_F32: memcpy(out, p, (size_t)count * 4); return 0;
    case SD_DTYPE_F16: sd_f16_to_f32_n(p, out, (size_t)count); return 0;
    case SD_DTYPE_BF16: sd_bf16_to_f32_n(p, out, (size_t)count); return 0;
    default:
        for (int64_t i = 0; i < count; i++) out[i] = (float)elem_f64(t, first + i);
        return 0;
    }
}

int sd_tensor_to_f32(const sd_tensor_info *t, float *out)
{
    if (!t || !out) return -1;
    return sd_tensor_range_to_f32(t, 0, sd_tensor_numel(t), out);
}

int sd_tensor_to_f64(const sd_tensor_info *t, double *out)
{
    if (!t || !out) return -1;
    int64_t n = sd_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) out[i] = elem_f64(t, i);
    return 0;
}

int sd_tensor_to_i64(const sd_tensor_info *t, int64_t *out)
{
    if (!t || !out) return -1;
    int64_t n = sd_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) {
        if (t->dtype == SD_DTYPE_I64) {
            memcpy(&out[i], (const unsigned char *)t->data + (size_t)i * 8, 8);
        } else {
            double v = elem_f64(t, i);
            /* truncate toward zero, saturating (a C cast of an out-of-range
             * double is undefined) */
            out[i] = v != v ? 0 : v >= 9.2e18 ? INT64_MAX : v <= -9.2e18 ? INT64_MIN : (int64_t)v;
        }
    }
    return 0;
}
