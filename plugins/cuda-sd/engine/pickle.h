/* pickle.h - a restricted reader for the pickle inside a PyTorch checkpoint
 * (archive/data.pkl). It interprets pickle opcodes as data only and never
 * runs anything; it understands exactly the objects a state dict is made
 * of and refuses everything else.
 *
 * Accepted GLOBALs (anything else is refused with an error naming it):
 *   collections.OrderedDict              -> a dict
 *   torch._utils._rebuild_tensor_v2 / _rebuild_tensor / _rebuild_parameter,
 *   torch._tensor._rebuild_from_type_v2  -> a tensor view of a storage
 *   torch.{Float,Half,BFloat16,Double,Long,Int,Short,Char,Byte,Bool}Storage
 *                                        -> storage types (persistent ids)
 *   torch.Tensor, torch.nn.parameter.Parameter (type tags only)
 *   _codecs.encode                       -> bytes (how protocol 2 pickles bytes)
 *   inert records that real SD checkpoints carry next to the weights and
 *   whose contents are ignored: pytorch_lightning's ModelCheckpoint
 *   callback state, numpy scalar/dtype/ndarray reconstruction.
 * REDUCE/NEWOBJ/BUILD are only applied to those; INST, OBJ, EXT* and text
 * PERSID are refused.
 *
 * Result: the tensors of the state dict (the top-level dict, or its
 * "state_dict" entry when it has one), as references to storages by their
 * persistent-id key, plus top-level integer/string entries (global_step,
 * epoch, ...) as metadata text.
 */
#ifndef SD_ENGINE_PICKLE_H
#define SD_ENGINE_PICKLE_H

#include <stddef.h>
#include <stdint.h>

#include "model_file.h"

typedef struct sd_pickle_tensor {
    char *name;                 /* state-dict key */
    char *storage_key;          /* persistent id key: archive "data/<key>" */
    sd_dtype dtype;             /* from the storage type */
    int64_t storage_offset;     /* in elements */
    int ndim;
    int64_t shape[SD_MAX_DIMS];
    int64_t stride[SD_MAX_DIMS];/* in elements */
} sd_pickle_tensor;

typedef struct sd_pickle_meta {
    char *key;
    char *value;                /* decimal text for integers */
} sd_pickle_meta;

typedef struct sd_pickle_result {
    sd_pickle_tensor *tensors;  /* all owned by the result */
    size_t n_tensors;
    sd_pickle_meta *meta;
    size_t n_meta;
} sd_pickle_result;

/* Reads the pickle in data[0..len). fname names the file in messages.
 * 0 and *out filled, or -1 with err (and *out empty). */
int sd_pickle_read_state_dict(const unsigned char *data, size_t len, const char *fname,
                              sd_pickle_result *out, char *err, size_t errlen);
void sd_pickle_result_free(sd_pickle_result *r);

#endif
