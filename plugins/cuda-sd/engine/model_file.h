/* model_file.h - read-only access to the tensors of a checkpoint file.
 *
 * Two container formats, one interface:
 *   - .safetensors: memory-mapped; every sd_tensor_info.data points into the
 *     mapping (no copy), so the file's weights cost page cache, not heap.
 *   - .ckpt / .pt / .pth (PyTorch zip + pickle): the pickle is read by a
 *     restricted reader (engine/pickle.h) that only understands tensor
 *     storage; each storage entry of the zip is read into memory once.
 *     A checkpoint that wraps its tensors in "state_dict" is unwrapped.
 * The format is chosen from the first bytes ("PK\3\4" = zip), not the name.
 *
 * Errors: every function that can fail returns 0 on success and -1 on
 * failure, with a message in err (when err != NULL) that names the file and
 * the problem ("model.safetensors: tensor 'x' data_offsets [10, 99) lie
 * outside the 64-byte data section"). Nothing is printed. Malformed or
 * truncated files never crash the reader.
 *
 * Ownership: the sd_model_file owns every sd_tensor_info, every name string
 * and every data byte; all stay valid until sd_model_file_close(). The
 * functions are safe to call from several threads at once on one open file
 * (the file is immutable after open).
 */
#ifndef SD_ENGINE_MODEL_FILE_H
#define SD_ENGINE_MODEL_FILE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Element types. The first three are the weight types an engine computes
 * with; the others appear in golden files and in checkpoints (I64
 * position_ids, F64 schedules, U8 images, BOOL masks) and can be read and
 * converted too. */
typedef enum {
    SD_DTYPE_F32 = 0,
    SD_DTYPE_F16,
    SD_DTYPE_BF16,
    SD_DTYPE_F64,
    SD_DTYPE_I64,
    SD_DTYPE_I32,
    SD_DTYPE_I16,
    SD_DTYPE_I8,
    SD_DTYPE_U8,
    SD_DTYPE_BOOL,
    SD_DTYPE_COUNT
} sd_dtype;

#define SD_MAX_DIMS 8

typedef struct sd_tensor_info {
    const char *name;            /* e.g. "model.diffusion_model.out.2.weight" */
    sd_dtype dtype;
    int ndim;                    /* 0 for a scalar */
    int64_t shape[SD_MAX_DIMS];  /* PyTorch order; unused entries are 0 */
    const void *data;            /* little-endian, C-contiguous; may be
                                    unaligned: read through memcpy or the
                                    conversion functions below */
    size_t nbytes;               /* = numel * sd_dtype_size(dtype) */
} sd_tensor_info;

typedef struct sd_model_file sd_model_file; /* opaque; owns the mapping */

/* Opens and validates a checkpoint. On success *out is a new handle the
 * caller closes with sd_model_file_close(). On failure *out is NULL. */
int sd_model_file_open(const char *path, sd_model_file **out, char *err, size_t errlen);

/* Opens a safetensors image held in memory (tests, fuzzing). The bytes are
 * copied; `name` is used in error messages only. */
int sd_model_file_open_memory(const void *bytes, size_t len, const char *name,
                              sd_model_file **out, char *err, size_t errlen);

void sd_model_file_close(sd_model_file *f);               /* NULL is fine */

size_t sd_model_file_count(const sd_model_file *f);
/* i-th tensor in sorted-name order; NULL when i >= count. */
const sd_tensor_info *sd_model_file_at(const sd_model_file *f, size_t i);
/* Exact name lookup (binary search); NULL when absent. */
const sd_tensor_info *sd_model_file_find(const sd_model_file *f, const char *name);

/* The path given to open (or the name given to open_memory). */
const char *sd_model_file_path(const sd_model_file *f);
/* "safetensors" or "ckpt". */
const char *sd_model_file_format(const sd_model_file *f);
/* A metadata value, or NULL: safetensors "__metadata__" strings; for .ckpt
 * the integer top-level entries such as "global_step" and "epoch", as
 * decimal text. Owned by the file. */
const char *sd_model_file_metadata(const sd_model_file *f, const char *key);

/* ---- element helpers ---------------------------------------------------- */
size_t sd_dtype_size(sd_dtype t);              /* bytes per element */
const char *sd_dtype_name(sd_dtype t);         /* "F32", "F16", "BF16", ... */
int64_t sd_tensor_numel(const sd_tensor_info *t);

/* Converts every element of t to float into out[numel] (caller-allocated).
 * Works for every dtype (integers convert as by a C cast). Returns 0, or -1
 * for a NULL argument. */
int sd_tensor_to_f32(const sd_tensor_info *t, float *out);
/* Same into doubles (exact for F64/F32/F16/BF16 and integers below 2^53). */
int sd_tensor_to_f64(const sd_tensor_info *t, double *out);
/* Same into int64 (floats truncate toward zero). */
int sd_tensor_to_i64(const sd_tensor_info *t, int64_t *out);
/* Converts elements [first, first+count) of t (flat index) to float. For
 * layer-by-layer conversion of large weights. Returns -1 if out of range. */
int sd_tensor_range_to_f32(const sd_tensor_info *t, int64_t first, int64_t count, float *out);

#ifdef __cplusplus
}
#endif
#endif
