/* golden.h - shared helpers for the cuda-sd C tests: find the reference
 * data (../shared, or $HN_SHARED), open golden safetensors files through the
 * engine's own reader, pull tensors out as float/double/int64 arrays, read
 * the JSON index files, and compare arrays.
 *
 * Header-only (static inline), for cmocka test programs: a missing file or
 * tensor fails the current test with a message naming it (fail_msg), so the
 * callers need no error plumbing. Every returned array is malloc'd and
 * owned by the caller (free()); golden_open() handles close with
 * sd_model_file_close(); golden_json() results are released with
 * json_decref().
 */
#ifndef CUDA_SD_TESTS_GOLDEN_H
#define CUDA_SD_TESTS_GOLDEN_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/model_file.h"

/* The shared folder: $HN_SHARED when set and non-empty, else "../shared"
 * (relative to the repository root, where `make` runs the tests). */
static inline const char *golden_shared_dir(void)
{
    const char *env = getenv("HN_SHARED");
    return (env && *env) ? env : "../shared";
}

/* "<shared>/<rel>" into buf (a PATH_MAX-ish buffer); returns buf. */
static inline char *golden_shared_path(char *buf, size_t len, const char *rel)
{
    snprintf(buf, len, "%s/%s", golden_shared_dir(), rel);
    return buf;
}

/* "<shared>/golden/<rel>" into buf; returns buf. */
static inline char *golden_path(char *buf, size_t len, const char *rel)
{
    snprintf(buf, len, "%s/golden/%s", golden_shared_dir(), rel);
    return buf;
}

/* Opens <shared>/golden/<rel> (a safetensors file); fails the test if it
 * cannot. */
static inline sd_model_file *golden_open(const char *rel)
{
    char path[1024], err[512];
    sd_model_file *f = NULL;
    golden_path(path, sizeof path, rel);
    if (sd_model_file_open(path, &f, err, sizeof err) != 0)
        fail_msg("cannot open golden file: %s", err);
    return f;
}

/* The tensor `name` of f; fails the test when absent. */
static inline const sd_tensor_info *golden_tensor(const sd_model_file *f, const char *name)
{
    const sd_tensor_info *t = sd_model_file_find(f, name);
    if (!t) fail_msg("%s: no tensor '%s'", sd_model_file_path(f), name);
    return t;
}

/* Whether f has tensor `name`. */
static inline int golden_has(const sd_model_file *f, const char *name)
{
    return sd_model_file_find(f, name) != NULL;
}

/* Tensor `name` as a malloc'd float array; *numel (may be NULL) gets the
 * element count. */
static inline float *golden_f32(const sd_model_file *f, const char *name, int64_t *numel)
{
    const sd_tensor_info *t = golden_tensor(f, name);
    int64_t n = sd_tensor_numel(t);
    float *out = (float *)malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!out) fail_msg("out of memory for '%s'", name);
    sd_tensor_to_f32(t, out);
    if (numel) *numel = n;
    return out;
}

static inline double *golden_f64(const sd_model_file *f, const char *name, int64_t *numel)
{
    const sd_tensor_info *t = golden_tensor(f, name);
    int64_t n = sd_tensor_numel(t);
    double *out = (double *)malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    if (!out) fail_msg("out of memory for '%s'", name);
    sd_tensor_to_f64(t, out);
    if (numel) *numel = n;
    return out;
}

static inline int64_t *golden_i64(const sd_model_file *f, const char *name, int64_t *numel)
{
    const sd_tensor_info *t = golden_tensor(f, name);
    int64_t n = sd_tensor_numel(t);
    int64_t *out = (int64_t *)malloc((size_t)(n > 0 ? n : 1) * sizeof(int64_t));
    if (!out) fail_msg("out of memory for '%s'", name);
    sd_tensor_to_i64(t, out);
    if (numel) *numel = n;
    return out;
}

/* Parses <shared>/golden/<rel> as JSON; fails the test if it cannot. */
static inline json_t *golden_json(const char *rel)
{
    char path[1024];
    json_error_t jerr;
    golden_path(path, sizeof path, rel);
    json_t *j = json_load_file(path, 0, &jerr);
    if (!j) fail_msg("%s: %s (line %d)", path, jerr.text, jerr.line);
    return j;
}

/* Largest |a[i] - b[i]| (NaN in either counts as infinite) and where. */
static inline double golden_max_abs_diff(const float *a, const float *b, size_t n, size_t *where)
{
    double worst = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d != d) d = INFINITY;
        if (d > worst) { worst = d; at = i; }
    }
    if (where) *where = at;
    return worst;
}

/* Fails the test when max |got - want| > tol, naming what and where. */
static inline void golden_assert_close(const char *what, const float *got, const float *want,
                                       size_t n, double tol)
{
    size_t at = 0;
    double d = golden_max_abs_diff(got, want, n, &at);
    if (!(d <= tol))
        fail_msg("%s: max abs diff %.3g at %zu (got %.9g, want %.9g), tolerance %.3g",
                 what, d, at, (double)got[at], (double)want[at], tol);
}

/* Fails the test unless got and want are bitwise identical. */
static inline void golden_assert_bits_equal(const char *what, const float *got,
                                            const float *want, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0)
            fail_msg("%s: element %zu differs: got %.9g, want %.9g", what, i,
                     (double)got[i], (double)want[i]);
    }
}

#endif
