/* broker: JSON-schema checks of the request bodies, with the public horde's
 * error shape.
 *
 * The horde validates bodies with flask-restx (jsonschema Draft 4) before any
 * other check and answers 400 {"message": "Input payload validation failed",
 * "errors": {"<dotted.path>": "<reason>"}}, each reason worded as jsonschema
 * words it ("513 is not a multiple of 64"). The schemas below are the
 * horde's GenerationInputStable, PopInputStable and SubmitInputStable, as
 * tables. We add "rc": "BadRequest" to that body (the horde sends none) so
 * that every 4xx of the node carries the envelope. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"

typedef enum ftype { T_BOOL, T_INT, T_NUM, T_STR, T_ARR, T_OBJ } ftype;

enum {
    F_REQ = 1u << 0,    /* required property */
    F_MIN = 1u << 1,    /* numeric minimum / string minLength */
    F_MAX = 1u << 2,    /* numeric maximum / string maxLength */
    F_MULT = 1u << 3,   /* multipleOf */
    F_UNIQUE = 1u << 4, /* array uniqueItems */
};

typedef struct field field;
struct field {
    const char *name;
    ftype type;
    unsigned flags;
    double min, max, mult;
    const char *const *enums; /* strings: allowed values (NULL-terminated) */
    const field *sub;         /* objects: their fields; arrays of objects: the item's */
    ftype item;               /* arrays: item type */
    const char *const *item_enums;
    double item_min_len, item_max_len; /* arrays of strings: each item's length (0 = none) */
};

#define END {NULL, T_BOOL, 0, 0, 0, 0, NULL, NULL, T_BOOL, NULL, 0, 0}

static const char *const samplers_enum[] = {
    "k_lms", "k_heun", "k_euler", "k_euler_a", "k_dpm_2", "k_dpm_2_a", "k_dpm_fast",
    "k_dpm_adaptive", "k_dpmpp_2s_a", "k_dpmpp_2m", "dpmsolver", "k_dpmpp_sde", "DDIM", "lcm",
    NULL};
static const char *const pp_enum[] = {
    "GFPGAN", "RealESRGAN_x4plus", "RealESRGAN_x2plus", "RealESRGAN_x4plus_anime_6B",
    "NMKD_Siax", "4x_AnimeSharp", "CodeFormers", "strip_background", "4xNomos8kSC",
    "4xLSDIRplus", "4xNomosWebPhoto_RealPLKSR", "4xNomos2_realplksr_dysample",
    "4xNomos2_hq_dat2", "2xModernSpanimationV1", "GFPGANv1.3", "RestoreFormer", NULL};
static const char *const control_enum[] = {"canny", "hed", "depth", "normal", "openpose",
                                           "seg", "scribble", "fakescribbles", "hough", NULL};
static const char *const inject_ti_enum[] = {"prompt", "negprompt", NULL};
static const char *const workflow_enum[] = {"qr_code", NULL};
static const char *const srcproc_enum[] = {"img2img", "inpainting", "outpainting", "remix",
                                           NULL};
static const char *const state_enum[] = {"ok", "censored", "faulted", "csam", NULL};
static const char *const meta_type_enum[] = {
    "lora", "ti", "censorship", "source_image", "source_mask", "extra_source_images",
    "batch_index", "information", "aesthetic_score", NULL};
static const char *const meta_value_enum[] = {"download_failed", "parse_failed",
                                              "baseline_mismatch", "csam", "nsfw", "see_ref",
                                              NULL};

static const field lora_fields[] = {
    {"name", T_STR, F_REQ | F_MIN | F_MAX, 1, 255, 0, NULL, NULL, T_BOOL, NULL, 0, 0},
    {"model", T_NUM, F_MIN | F_MAX, -5, 5, 0, NULL, NULL, T_BOOL, NULL, 0, 0},
    {"clip", T_NUM, F_MIN | F_MAX, -5, 5, 0, NULL, NULL, T_BOOL, NULL, 0, 0},
    {"inject_trigger", T_STR, F_MIN | F_MAX, 1, 30, 0, NULL, NULL, T_BOOL, NULL, 0, 0},
    {"is_version", T_BOOL, 0, 0, 0, 0, NULL, NULL, T_BOOL, NULL, 0, 0},
    END,
};
static const field ti_fields[] = {
    {"name", T_STR, F_REQ | F_MIN | F_MAX, 1, 255, 0, NULL, NULL, T_BOOL, NULL, 0, 0},
    {"inject_ti", T_STR, 0, 0, 0, 0, inject_ti_enum, NULL, T_BOOL, NULL, 0, 0},
    {"strength", T_NUM, F_MIN | F_MAX, -5, 5, 0, NULL, NULL, T_BOOL, NULL, 0, 0},
    END,
};
static const field extra_text_fields[] = {
    {"text", T_STR, F_REQ | F_MIN, 1, 0, 0, NULL, NULL, T_BOOL, NULL, 0, 0},
    {"reference", T_STR, F_REQ | F_MIN, 3, 0, 0, NULL, NULL, T_BOOL, NULL, 0, 0},
    END,
};
static const field extra_source_fields[] = {
    {"image", T_STR, F_REQ | F_MIN, 1, 0, 0, NULL, NULL, T_BOOL, NULL, 0, 0},
    {"strength", T_NUM, 0, 0, 0, 0, NULL, NULL, T_BOOL, NULL, 0, 0},
    END,
};

#define B(n) {n, T_BOOL, 0, 0, 0, 0, NULL, NULL, T_BOOL, NULL, 0, 0}
#define S(n) {n, T_STR, 0, 0, 0, 0, NULL, NULL, T_BOOL, NULL, 0, 0}
#define SE(n, e) {n, T_STR, 0, 0, 0, 0, e, NULL, T_BOOL, NULL, 0, 0}
#define N(n, lo, hi) {n, T_NUM, F_MIN | F_MAX, lo, hi, 0, NULL, NULL, T_BOOL, NULL, 0, 0}
#define I(n, lo, hi) {n, T_INT, F_MIN | F_MAX, lo, hi, 0, NULL, NULL, T_BOOL, NULL, 0, 0}
#define AO(n, sub) {n, T_ARR, 0, 0, 0, 0, NULL, sub, T_OBJ, NULL, 0, 0}
#define AS(n) {n, T_ARR, 0, 0, 0, 0, NULL, NULL, T_STR, NULL, 0, 0}

static const field params_fields[] = {
    SE("sampler_name", samplers_enum),
    N("cfg_scale", 0, 100),
    N("denoising_strength", 0.01, 1.0),
    N("hires_fix_denoising_strength", 0.01, 1.0),
    S("seed"),
    {"height", T_INT, F_MIN | F_MAX | F_MULT, 64, 3072, 64, NULL, NULL, T_BOOL, NULL, 0, 0},
    {"width", T_INT, F_MIN | F_MAX | F_MULT, 64, 3072, 64, NULL, NULL, T_BOOL, NULL, 0, 0},
    I("seed_variation", 1, 1000),
    {"post_processing", T_ARR, F_UNIQUE, 0, 0, 0, NULL, NULL, T_STR, pp_enum, 0, 0},
    B("karras"),
    B("tiling"),
    B("hires_fix"),
    I("clip_skip", 1, 12),
    SE("control_type", control_enum),
    B("image_is_control"),
    B("return_control_map"),
    N("facefixer_strength", 0, 1),
    /* no maxItems on loras/tis: the horde answers TooManyLoras/TooManyTIs */
    AO("loras", lora_fields),
    AO("tis", ti_fields),
    {"special", T_OBJ, 0, 0, 0, 0, NULL, NULL, T_BOOL, NULL, 0, 0},
    SE("workflow", workflow_enum),
    B("transparent"),
    AO("extra_texts", extra_text_fields),
    I("steps", 1, 500),
    I("n", 1, 20),
    END,
};

static const field async_fields[] = {
    {"prompt", T_STR, F_REQ | F_MIN, 1, 0, 0, NULL, NULL, T_BOOL, NULL, 0, 0},
    {"params", T_OBJ, 0, 0, 0, 0, NULL, params_fields, T_BOOL, NULL, 0, 0},
    B("nsfw"),
    B("trusted_workers"),
    B("validated_backends"),
    B("slow_workers"),
    B("extra_slow_workers"),
    B("censor_nsfw"),
    AS("workers"),
    B("worker_blacklist"),
    AS("models"),
    S("source_image"),
    SE("source_processing", srcproc_enum),
    S("source_mask"),
    AO("extra_source_images", extra_source_fields),
    B("r2"),
    B("shared"),
    B("replacement_filter"),
    B("dry_run"),
    S("proxied_account"),
    B("disable_batching"),
    B("allow_downgrade"),
    {"webhook", T_STR, F_MIN | F_MAX, 10, 1024, 0, NULL, NULL, T_BOOL, NULL, 0, 0},
    {"style", T_STR, F_MIN | F_MAX, 3, 1024, 0, NULL, NULL, T_BOOL, NULL, 0, 0},
    END,
};

static const field pop_fields[] = {
    {"name", T_STR, F_REQ, 0, 0, 0, NULL, NULL, T_BOOL, NULL, 0, 0},
    AS("priority_usernames"),
    B("nsfw"),
    {"models", T_ARR, 0, 0, 0, 0, NULL, NULL, T_STR, NULL, 3, 255},
    {"bridge_agent", T_STR, F_MAX, 0, 1000, 0, NULL, NULL, T_BOOL, NULL, 0, 0},
    {"bridge_version", T_INT, 0, 0, 0, 0, NULL, NULL, T_BOOL, NULL, 0, 0},
    I("threads", 1, 50),
    B("require_upfront_kudos"),
    I("amount", 1, 20),
    B("extra_slow_worker"),
    {"max_pixels", T_INT, 0, 0, 0, 0, NULL, NULL, T_BOOL, NULL, 0, 0},
    AS("blacklist"),
    B("allow_img2img"),
    B("allow_painting"),
    B("allow_unsafe_ipaddr"),
    B("allow_post_processing"),
    B("allow_controlnet"),
    B("allow_sdxl_controlnet"),
    B("allow_lora"),
    B("limit_max_steps"),
    END,
};

static const field meta_fields[] = {
    {"type", T_STR, F_REQ, 0, 0, 0, meta_type_enum, NULL, T_BOOL, NULL, 0, 0},
    {"value", T_STR, F_REQ, 0, 0, 0, meta_value_enum, NULL, T_BOOL, NULL, 0, 0},
    {"ref", T_STR, F_MAX, 0, 255, 0, NULL, NULL, T_BOOL, NULL, 0, 0},
    END,
};

static const field submit_fields[] = {
    {"id", T_STR, F_REQ, 0, 0, 0, NULL, NULL, T_BOOL, NULL, 0, 0},
    S("generation"),
    SE("state", state_enum),
    {"seed", T_INT, F_REQ, 0, 0, 0, NULL, NULL, T_BOOL, NULL, 0, 0},
    B("censored"),
    AO("gen_metadata", meta_fields),
    END,
};

/* ---- Python-style repr of JSON values, for the messages -------------------- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t nc = (b->cap ? b->cap * 2 : 128);
        while (nc < b->len + n + 1)
            nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np)
            return;
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}
static void sb_str(sbuf *b, const char *s) {
    sb_put(b, s, strlen(s));
}

static void repr_number(sbuf *b, double v) {
    char tmp[64];
    if (isinf(v)) {
        sb_str(b, v > 0 ? "inf" : "-inf");
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    sb_str(b, tmp);
    if (!strpbrk(tmp, ".en"))
        sb_str(b, ".0");
}

/* Long values are cut: a message is no place to echo a megabyte prompt. */
#define REPR_MAX 200

static void repr(sbuf *b, const json_t *v) {
    char tmp[64];
    switch (json_typeof(v)) {
    case JSON_STRING: {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        char q = (strchr(s, '\'') && !strchr(s, '"')) ? '"' : '\'';
        sb_put(b, &q, 1);
        for (size_t i = 0; i < n && i < REPR_MAX; i++) {
            char c = s[i];
            if (c == q || c == '\\') {
                sb_put(b, "\\", 1);
                sb_put(b, &c, 1);
            } else if (c == '\n') {
                sb_str(b, "\\n");
            } else if ((unsigned char)c < 0x20) {
                snprintf(tmp, sizeof(tmp), "\\x%02x", (unsigned char)c);
                sb_str(b, tmp);
            } else {
                sb_put(b, &c, 1);
            }
        }
        if (n > REPR_MAX)
            sb_str(b, "...");
        sb_put(b, &q, 1);
        break;
    }
    case JSON_INTEGER:
        snprintf(tmp, sizeof(tmp), "%lld", (long long)json_integer_value(v));
        sb_str(b, tmp);
        break;
    case JSON_REAL:
        repr_number(b, json_real_value(v));
        break;
    case JSON_TRUE:
        sb_str(b, "True");
        break;
    case JSON_FALSE:
        sb_str(b, "False");
        break;
    case JSON_NULL:
        sb_str(b, "None");
        break;
    case JSON_ARRAY: {
        sb_str(b, "[");
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            if (i)
                sb_str(b, ", ");
            if (b->len > REPR_MAX) {
                sb_str(b, "...");
                break;
            }
            repr(b, x);
        }
        sb_str(b, "]");
        break;
    }
    case JSON_OBJECT: {
        sb_str(b, "{");
        const char *k;
        json_t *x;
        bool first = true;
        json_object_foreach((json_t *)v, k, x) {
            if (!first)
                sb_str(b, ", ");
            first = false;
            if (b->len > REPR_MAX) {
                sb_str(b, "...");
                break;
            }
            json_t *ks = json_string(k);
            if (ks) {
                repr(b, ks);
                json_decref(ks);
            }
            sb_str(b, ": ");
            repr(b, x);
        }
        sb_str(b, "}");
        break;
    }
    }
}

static const char *type_name(ftype t) {
    switch (t) {
    case T_BOOL: return "boolean";
    case T_INT: return "integer";
    case T_NUM: return "number";
    case T_STR: return "string";
    case T_ARR: return "array";
    case T_OBJ: return "object";
    }
    return "?";
}

static bool type_ok(const json_t *v, ftype t) {
    switch (t) {
    case T_BOOL: return json_is_boolean(v);
    case T_INT:
        /* jsonschema counts 5.0 as an integer */
        return json_is_integer(v) ||
               (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
                isfinite(json_real_value(v)));
    case T_NUM: return json_is_number(v);
    case T_STR: return json_is_string(v);
    case T_ARR: return json_is_array(v);
    case T_OBJ: return json_is_object(v);
    }
    return false;
}

/* Records "path": message, keeping the first message per path. */
static void add_error(json_t *errors, const char *path, const json_t *value, const char *fmt,
                      const char *extra) {
    if (json_object_get(errors, path))
        return;
    sbuf b = {0};
    sbuf r = {0};
    if (value)
        repr(&r, value);
    char head[2048];
    snprintf(head, sizeof(head), fmt, r.p ? r.p : "", extra ? extra : "");
    sb_str(&b, head);
    json_object_set_new(errors, path, json_string(b.p ? b.p : ""));
    free(b.p);
    free(r.p);
}

/* "base.name" (or "name"), cut to fit: paths are short, the cut never shows */
static void join_path(char *out, size_t n, const char *base, const char *name) {
    size_t o = 0;
    for (const char *p = base ? base : ""; *p && o + 1 < n; p++)
        out[o++] = *p;
    if (base && *base && o + 1 < n)
        out[o++] = '.';
    for (const char *p = name; *p && o + 1 < n; p++)
        out[o++] = *p;
    out[o] = '\0';
}

static void check_object(const json_t *obj, const field *fields, const char *base,
                         json_t *errors);

static void check_string(const json_t *v, const field *f, const char *path, json_t *errors,
                         const char *const *enums, double min_len, double max_len,
                         bool has_min, bool has_max) {
    size_t len = json_string_length(v);
    /* jsonschema counts characters, not bytes */
    const unsigned char *s = (const unsigned char *)json_string_value(v);
    size_t chars = 0;
    for (size_t i = 0; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            chars++;
    (void)f;
    if (has_min && (double)chars < min_len)
        add_error(errors, path, v, "%s is too short%s", NULL);
    if (has_max && (double)chars > max_len)
        add_error(errors, path, v, "%s is too long%s", NULL);
    if (enums) {
        bool found = false;
        for (const char *const *e = enums; *e; e++)
            if (strcmp(*e, (const char *)s) == 0)
                found = true;
        if (!found) {
            sbuf list = {0};
            sb_str(&list, " is not one of [");
            for (const char *const *e = enums; *e; e++) {
                if (e != enums)
                    sb_str(&list, ", ");
                sb_str(&list, "'");
                sb_str(&list, *e);
                sb_str(&list, "'");
            }
            sb_str(&list, "]");
            add_error(errors, path, v, "%s%s", list.p);
            free(list.p);
        }
    }
}

static void fmt_num(char *out, size_t n, double v) {
    if (v == floor(v) && fabs(v) < 1e15)
        snprintf(out, n, "%lld", (long long)v);
    else
        snprintf(out, n, "%g", v);
}

static void check_value(const json_t *v, const field *f, const char *path, json_t *errors) {
    char num[64];
    if (!type_ok(v, f->type)) {
        add_error(errors, path, v, "%s is not of type '%s'", type_name(f->type));
        return;
    }
    switch (f->type) {
    case T_INT:
    case T_NUM: {
        double d = json_number_value(v);
        if ((f->flags & F_MIN) && d < f->min) {
            fmt_num(num, sizeof(num), f->min);
            add_error(errors, path, v, "%s is less than the minimum of %s", num);
        } else if ((f->flags & F_MAX) && d > f->max) {
            fmt_num(num, sizeof(num), f->max);
            add_error(errors, path, v, "%s is greater than the maximum of %s", num);
        } else if ((f->flags & F_MULT) && fmod(d, f->mult) != 0) {
            fmt_num(num, sizeof(num), f->mult);
            add_error(errors, path, v, "%s is not a multiple of %s", num);
        }
        break;
    }
    case T_STR:
        check_string(v, f, path, errors, f->enums, f->min, f->max, (f->flags & F_MIN) != 0,
                     (f->flags & F_MAX) != 0);
        break;
    case T_OBJ:
        if (f->sub)
            check_object(v, f->sub, path, errors);
        break;
    case T_ARR: {
        size_t i;
        json_t *x;
        char ipath[512];
        json_array_foreach(v, i, x) {
            char idx[32];
            snprintf(idx, sizeof(idx), "%zu", i);
            join_path(ipath, sizeof(ipath), path, idx);
            if (!type_ok(x, f->item)) {
                add_error(errors, ipath, x, "%s is not of type '%s'", type_name(f->item));
                continue;
            }
            if (f->item == T_OBJ && f->sub)
                check_object(x, f->sub, ipath, errors);
            if (f->item == T_STR)
                check_string(x, f, ipath, errors, f->item_enums, f->item_min_len,
                             f->item_max_len, f->item_min_len > 0, f->item_max_len > 0);
        }
        if (f->flags & F_UNIQUE) {
            for (size_t a = 0; a < json_array_size(v); a++)
                for (size_t c = a + 1; c < json_array_size(v); c++)
                    if (json_equal(json_array_get(v, a), json_array_get(v, c))) {
                        add_error(errors, path, v, "%s has non-unique elements%s", NULL);
                        a = c = json_array_size(v);
                    }
        }
        break;
    }
    case T_BOOL:
        break;
    }
}

static void check_object(const json_t *obj, const field *fields, const char *base,
                         json_t *errors) {
    char path[512];
    for (const field *f = fields; f->name; f++) {
        const json_t *v = json_object_get(obj, f->name);
        join_path(path, sizeof(path), base, f->name);
        if (!v) {
            if (f->flags & F_REQ) {
                char msg[300];
                snprintf(msg, sizeof(msg), "'%s' is a required property", f->name);
                if (!json_object_get(errors, path))
                    json_object_set_new(errors, path, json_string(msg));
            }
            continue;
        }
        check_value(v, f, path, errors);
    }
}

static json_t *validate_body(const json_t *body, const field *fields) {
    json_t *errors = json_object();
    if (!errors)
        return NULL;
    if (!json_is_object(body)) {
        add_error(errors, "", body, "%s is not of type '%s'", "object");
    } else {
        check_object(body, fields, "", errors);
    }
    if (json_object_size(errors) == 0) {
        json_decref(errors);
        return NULL;
    }
    return errors;
}

static const field worker_put_fields[] = {
    B("maintenance"),
    {"maintenance_msg", T_STR, F_MAX, 0, 1000, 0, NULL, NULL, T_BOOL, NULL, 0, 0},
    B("paused"),
    {"info", T_STR, F_MAX, 0, 1000, 0, NULL, NULL, T_BOOL, NULL, 0, 0},
    {"name", T_STR, F_MIN | F_MAX, 5, 100, 0, NULL, NULL, T_BOOL, NULL, 0, 0},
    {"team", T_STR, F_MAX, 0, 36, 0, NULL, NULL, T_BOOL, NULL, 0, 0},
    END,
};

json_t *br_validate_worker_put_schema(const json_t *body) {
    return validate_body(body, worker_put_fields);
}

json_t *br_validate_async_schema(const json_t *body) {
    return validate_body(body, async_fields);
}
json_t *br_validate_pop_schema(const json_t *body) {
    return validate_body(body, pop_fields);
}
json_t *br_validate_submit_schema(const json_t *body) {
    return validate_body(body, submit_fields);
}

void br_respond_schema_errors(broker *b, hn_request *req, json_t *errors) {
    json_t *resp = json_pack("{s:s, s:o, s:s}", "message", "Input payload validation failed",
                             "errors", errors, "rc", "BadRequest");
    b->api->respond_json(req, 400, resp);
}

json_t *br_checked_body(broker *b, hn_request *req, json_t *(*validate)(const json_t *body),
                        const char *apikey_what) {
    hn_error err;
    if (!b->started) {
        br_fail(b, req, 503, "ServiceUnavailable", "The broker is starting.");
        return NULL;
    }
    json_t *body = b->api->req_json(req, &err);
    if (!body) {
        b->api->respond_error(req, &err);
        return NULL;
    }
    json_t *errors = validate(body);
    if (errors) {
        br_respond_schema_errors(b, req, errors);
        return NULL;
    }
    /* the key is checked after the body, as the horde's schema does */
    if (!b->api->req_header(req, "apikey")) {
        char why[200];
        snprintf(why, sizeof(why), "%s Missing required parameter in the HTTP headers",
                 apikey_what);
        br_respond_schema_errors(b, req, json_pack("{s:s}", "apikey", why));
        return NULL;
    }
    return body;
}

/* ---- the same tables as Swagger 2.0 definitions (swagger.c) ----------------------- */

/* Each table with the name /api/swagger.json gives it (the horde's model
 * names, which the horde SDK checks). A table without a name is inlined. */
static const struct {
    const field *fields;
    const char *name;
} named_tables[] = {
    {async_fields, "GenerationInputStable"},
    {params_fields, "ModelGenerationInputStable"},
    {lora_fields, "ModelPayloadLorasStable"},
    {ti_fields, "ModelPayloadTextualInversionsStable"},
    {extra_text_fields, "ExtraText"},
    {extra_source_fields, "ExtraSourceImage"},
    {pop_fields, "PopInputStable"},
    {meta_fields, "GenerationMetadataStable"},
    {submit_fields, "SubmitInputStable"},
    {worker_put_fields, "ModifyWorkerInput"},
};

static json_t *object_schema(const field *fields, json_t *defs);

static const char *table_name(const field *fields) {
    for (size_t i = 0; i < sizeof(named_tables) / sizeof(named_tables[0]); i++)
        if (named_tables[i].fields == fields)
            return named_tables[i].name;
    return NULL;
}

/* A $ref to a named table (its definition added once), else the schema inline. */
static json_t *table_ref(const field *fields, json_t *defs) {
    const char *name = table_name(fields);
    if (!name)
        return object_schema(fields, defs);
    if (!json_object_get(defs, name)) {
        json_object_set_new(defs, name, json_object()); /* placeholder against cycles */
        json_object_set_new(defs, name, object_schema(fields, defs));
    }
    char ref[128];
    snprintf(ref, sizeof(ref), "#/definitions/%s", name);
    return json_pack("{s:s}", "$ref", ref);
}

static json_t *enum_array(const char *const *e) {
    json_t *a = json_array();
    for (; e && *e; e++)
        json_array_append_new(a, json_string(*e));
    return a;
}

static json_t *field_schema(const field *f, json_t *defs) {
    if ((f->type == T_OBJ) && f->sub)
        return table_ref(f->sub, defs);
    json_t *s = json_pack("{s:s}", "type", type_name(f->type));
    if (f->type == T_STR) {
        if (f->flags & F_MIN)
            json_object_set_new(s, "minLength", json_integer((json_int_t)f->min));
        if (f->flags & F_MAX)
            json_object_set_new(s, "maxLength", json_integer((json_int_t)f->max));
    } else if (f->type == T_INT || f->type == T_NUM) {
        if (f->flags & F_MIN)
            json_object_set_new(s, "minimum", json_real(f->min));
        if (f->flags & F_MAX)
            json_object_set_new(s, "maximum", json_real(f->max));
        if (f->flags & F_MULT)
            json_object_set_new(s, "multipleOf", json_real(f->mult));
    }
    if (f->enums)
        json_object_set_new(s, "enum", enum_array(f->enums));
    if (f->type == T_ARR) {
        json_t *items;
        if (f->item == T_OBJ && f->sub) {
            items = table_ref(f->sub, defs);
        } else {
            items = json_pack("{s:s}", "type", type_name(f->item));
            if (f->item_enums)
                json_object_set_new(items, "enum", enum_array(f->item_enums));
            if (f->item_min_len > 0)
                json_object_set_new(items, "minLength", json_integer((json_int_t)f->item_min_len));
            if (f->item_max_len > 0)
                json_object_set_new(items, "maxLength", json_integer((json_int_t)f->item_max_len));
        }
        json_object_set_new(s, "items", items);
        if (f->flags & F_UNIQUE)
            json_object_set_new(s, "uniqueItems", json_true());
    }
    return s;
}

static json_t *object_schema(const field *fields, json_t *defs) {
    json_t *props = json_object(), *required = json_array();
    for (const field *f = fields; f->name; f++) {
        json_object_set_new(props, f->name, field_schema(f, defs));
        if (f->flags & F_REQ)
            json_array_append_new(required, json_string(f->name));
    }
    json_t *s = json_pack("{s:s, s:o}", "type", "object", "properties", props);
    if (json_array_size(required) > 0)
        json_object_set_new(s, "required", required);
    else
        json_decref(required);
    return s;
}

void br_schema_definitions(json_t *definitions) {
    for (size_t i = 0; i < sizeof(named_tables) / sizeof(named_tables[0]); i++)
        json_decref(table_ref(named_tables[i].fields, definitions));
}
