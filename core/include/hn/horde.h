/* horde-node plugin SDK: the `horde` provider interface.
 *
 * How a worker reaches a horde: `remote` over HTTP to any horde (horde-node
 * or the public AI Horde), `local` into the broker in the same process. Both
 * carry the same horde API v2 JSON. Calls block; make them from the worker's
 * own threads, never from a loop thread. */
#ifndef HN_HORDE_H
#define HN_HORDE_H

#include <jansson.h>

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HN_HORDE_VERSION 1

typedef struct hn_horde_vt {
    uint32_t size;
    uint32_t version;
    /* One API call: method "GET"/"POST"/..., path below /api (e.g.
     * "/v2/generate/pop"), body may be NULL. On HN_OK *status is the HTTP
     * status and *response a new reference (NULL if the body was not JSON).
     * HN_ERROR only when the horde could not be reached. */
    hn_rc (*call)(void *state, const char *method, const char *path, const char *apikey,
                  const json_t *body, int *status, json_t **response, hn_error *err);
    /* HTTP PUT of bytes to an upload URL (r2_upload). */
    hn_rc (*upload)(void *state, const char *url, const void *data, size_t len, int *status,
                    hn_error *err);
} hn_horde_vt;

#ifdef __cplusplus
}
#endif
#endif
