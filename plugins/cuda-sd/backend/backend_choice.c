/* backend_choice.c - the default backend: probe for a usable GPU (see
 * backend_choice.h). */
#include "backend/backend_choice.h"

#include <stdio.h>
#include <string.h>

#include "backend/cuda_backend.h"

static void set_name(sd_backend_choice *c, const char *name)
{
    snprintf(c->name, sizeof c->name, "%s", name);
}

int sd_backend_choose(const char *requested, sd_backend_choice *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (requested && (strcmp(requested, "cpu") == 0 || strcmp(requested, "cuda") == 0)) {
        set_name(out, requested);
        snprintf(out->why, sizeof out->why, "explicit");
        return 0;
    }
    if (requested && requested[0] && strcmp(requested, "auto") != 0) {
        if (err && errlen)
            snprintf(err, errlen, "unknown backend \"%s\" (cpu, cuda or auto)", requested);
        return -1;
    }
    out->automatic = true;
    sd_cuda_info info;
    char why[512] = "";
    if (sd_cuda_probe(NULL, &info, why, sizeof why) != 0) {
        set_name(out, "cpu");
        snprintf(out->why, sizeof out->why, "no usable GPU: %.480s", why);
        return 0;
    }
    bool old = info.cc_major < SD_CUDA_MIN_CC_MAJOR ||
               (info.cc_major == SD_CUDA_MIN_CC_MAJOR && info.cc_minor < SD_CUDA_MIN_CC_MINOR);
    if (old) {
        set_name(out, "cpu");
        snprintf(out->why, sizeof out->why,
                 "no usable GPU: %.200s has compute %d.%d, the CUDA backend needs %d.%d",
                 info.name, info.cc_major, info.cc_minor, SD_CUDA_MIN_CC_MAJOR,
                 SD_CUDA_MIN_CC_MINOR);
        return 0;
    }
    set_name(out, "cuda");
    snprintf(out->why, sizeof out->why, "%.200s, compute %d.%d, %zu MB", info.name,
             info.cc_major, info.cc_minor, info.total_mem >> 20);
    return 0;
}

void sd_backend_choice_describe(const sd_backend_choice *c, char *buf, size_t len)
{
    snprintf(buf, len, "%s (%s%s)", c->name, c->automatic ? "auto: " : "", c->why);
}
