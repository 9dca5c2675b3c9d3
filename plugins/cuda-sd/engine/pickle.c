/* pickle.c - see pickle.h. A small stack machine over pickle opcodes
 * (protocols 0-5, the binary forms torch.save writes plus the few text forms
 * old pickles use), whose only "callables" are the whitelisted constructors.
 *
 * Memory: every value is registered in vm.all and freed together at the end,
 * so shared and cyclic references (memo) need no reference counting. The
 * input bounds everything: each value costs at least one opcode byte. */
#include "pickle.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    PV_NONE, PV_BOOL, PV_INT, PV_FLOAT, PV_STR, PV_BYTES, PV_TUPLE, PV_LIST, PV_DICT,
    PV_GLOBAL, PV_STORAGE, PV_TENSOR, PV_OPAQUE
} pv_kind;

/* The whitelisted globals. */
typedef enum {
    G_ORDERED_DICT, G_REBUILD_V2, G_REBUILD, G_REBUILD_PARAM, G_REBUILD_FROM_TYPE_V2,
    G_STORAGE_TYPE, G_TYPE_TAG, G_CODECS_ENCODE, G_INERT
} global_id;

typedef struct pv pv;
struct pv {
    pv_kind kind;
    union {
        int64_t i;              /* BOOL, INT */
        double f;
        struct { char *s; size_t len; } str;           /* STR, BYTES (NUL-terminated) */
        struct { pv **items; size_t n, cap; } seq;     /* TUPLE, LIST; DICT: k,v pairs */
        struct { global_id id; sd_dtype dtype; char *qualname; } global;
        struct { sd_dtype dtype; char *key; } storage;
        struct {
            pv *storage;
            int64_t offset;
            int ndim;
            int64_t shape[SD_MAX_DIMS], stride[SD_MAX_DIMS];
        } tensor;
    } u;
};

typedef struct vm {
    const unsigned char *p, *end, *start;
    const char *fname;
    char *err;
    size_t errlen;
    pv **stack;
    size_t sp, stack_cap;
    size_t *marks;
    size_t n_marks, marks_cap;
    pv **memo;
    size_t memo_cap, memo_count;   /* count = set entries (MEMOIZE's index) */
    pv **all;
    size_t n_all, all_cap;
} vm;

#define MEMO_LIMIT (1u << 24)

static int vfail(vm *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int vfail(vm *m, const char *fmt, ...)
{
    if (m->err && m->errlen) {
        int n = snprintf(m->err, m->errlen, "%s: pickle: ", m->fname ? m->fname : "(pickle)");
        if (n < 0) n = 0;
        if ((size_t)n < m->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(m->err + n, m->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return -1;
}

static size_t offset_of(const vm *m) { return (size_t)(m->p - m->start); }

static pv *pv_new(vm *m, pv_kind kind)
{
    if (m->n_all == m->all_cap) {
        size_t cap = m->all_cap ? m->all_cap * 2 : 256;
        pv **na = realloc(m->all, cap * sizeof *na);
        if (!na) return NULL;
        m->all = na;
        m->all_cap = cap;
    }
    pv *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    v->kind = kind;
    m->all[m->n_all++] = v;
    return v;
}

static void pv_free(pv *v)
{
    switch (v->kind) {
    case PV_STR: case PV_BYTES: free(v->u.str.s); break;
    case PV_TUPLE: case PV_LIST: case PV_DICT: free(v->u.seq.items); break;
    case PV_GLOBAL: free(v->u.global.qualname); break;
    case PV_STORAGE: free(v->u.storage.key); break;
    default: break;
    }
    free(v);
}

static int seq_push(pv *c, pv *item)
{
    if (c->u.seq.n == c->u.seq.cap) {
        size_t cap = c->u.seq.cap ? c->u.seq.cap * 2 : 4;
        pv **ni = realloc(c->u.seq.items, cap * sizeof *ni);
        if (!ni) return -1;
        c->u.seq.items = ni;
        c->u.seq.cap = cap;
    }
    c->u.seq.items[c->u.seq.n++] = item;
    return 0;
}

static int push(vm *m, pv *v)
{
    if (!v) return vfail(m, "out of memory");
    if (m->sp == m->stack_cap) {
        size_t cap = m->stack_cap ? m->stack_cap * 2 : 64;
        pv **ns = realloc(m->stack, cap * sizeof *ns);
        if (!ns) return vfail(m, "out of memory");
        m->stack = ns;
        m->stack_cap = cap;
    }
    m->stack[m->sp++] = v;
    return 0;
}

static pv *pop(vm *m)
{
    size_t floor = m->n_marks ? m->marks[m->n_marks - 1] : 0;
    if (m->sp <= floor) {
        vfail(m, "stack underflow at offset %zu", offset_of(m));
        return NULL;
    }
    return m->stack[--m->sp];
}

static pv *top(vm *m)
{
    size_t floor = m->n_marks ? m->marks[m->n_marks - 1] : 0;
    if (m->sp <= floor) {
        vfail(m, "stack underflow at offset %zu", offset_of(m));
        return NULL;
    }
    return m->stack[m->sp - 1];
}

/* The object just below index `from` (the target of SETITEMS/APPENDS), or
 * NULL when that would cross an older MARK. */
static pv *below(vm *m, size_t from)
{
    size_t floor = m->n_marks ? m->marks[m->n_marks - 1] : 0;
    if (from <= floor) {
        vfail(m, "stack underflow at offset %zu", offset_of(m));
        return NULL;
    }
    return m->stack[from - 1];
}

/* Pops everything above the newest MARK; returns its stack index. */
static int pop_mark(vm *m, size_t *from)
{
    if (m->n_marks == 0) return vfail(m, "no MARK for opcode at offset %zu", offset_of(m));
    *from = m->marks[--m->n_marks];
    return 0;
}

static int need(vm *m, size_t n)
{
    if ((size_t)(m->end - m->p) < n) return vfail(m, "truncated: needs %zu more bytes at offset %zu", n, offset_of(m));
    return 0;
}

static uint64_t le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static pv *new_str(vm *m, pv_kind kind, const unsigned char *s, size_t len)
{
    pv *v = pv_new(m, kind);
    if (!v) return NULL;
    v->u.str.s = malloc(len + 1);
    if (!v->u.str.s) return NULL;
    memcpy(v->u.str.s, s, len);
    v->u.str.s[len] = '\0';
    v->u.str.len = len;
    return v;
}

static pv *new_int(vm *m, int64_t i, pv_kind kind)
{
    pv *v = pv_new(m, kind);
    if (v) v->u.i = i;
    return v;
}

static int memo_put(vm *m, uint64_t idx, pv *v)
{
    /* real pickles number memo entries from 0 up, far fewer than their
     * bytes; a larger index would only serve to make us allocate */
    if (idx >= MEMO_LIMIT || idx > (uint64_t)(m->end - m->start) + 1024)
        return vfail(m, "memo index %llu too large", (unsigned long long)idx);
    if (idx >= m->memo_cap) {
        size_t cap = m->memo_cap ? m->memo_cap : 64;
        while (cap <= idx) cap *= 2;
        pv **nm = realloc(m->memo, cap * sizeof *nm);
        if (!nm) return vfail(m, "out of memory");
        memset(nm + m->memo_cap, 0, (cap - m->memo_cap) * sizeof *nm);
        m->memo = nm;
        m->memo_cap = cap;
    }
    if (!m->memo[idx]) m->memo_count++;
    m->memo[idx] = v;
    return 0;
}

static int memo_get(vm *m, uint64_t idx)
{
    if (idx >= m->memo_cap || !m->memo[idx])
        return vfail(m, "memo entry %llu used before it was set", (unsigned long long)idx);
    return push(m, m->memo[idx]);
}

/* A text line (protocol-0 operand) without its '\n'. */
static int read_line(vm *m, const unsigned char **s, size_t *len)
{
    const unsigned char *nl = memchr(m->p, '\n', (size_t)(m->end - m->p));
    if (!nl) return vfail(m, "truncated text operand at offset %zu", offset_of(m));
    *s = m->p;
    *len = (size_t)(nl - m->p);
    m->p = nl + 1;
    return 0;
}

static int parse_dec(const unsigned char *s, size_t len, int64_t *out)
{
    char buf[32];
    if (len == 0 || len >= sizeof buf) return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (buf[len - 1] == 'L') buf[len - 1] = '\0';   /* protocol-0 long suffix */
    char *e;
    long long v = strtoll(buf, &e, 10);
    if (*e || e == buf) return -1;
    *out = v;
    return 0;
}

/* ---- the whitelist --------------------------------------------------------- */
static const struct { const char *module, *name; global_id id; sd_dtype dtype; } known_globals[] = {
    {"collections", "OrderedDict", G_ORDERED_DICT, 0},
    {"torch._utils", "_rebuild_tensor_v2", G_REBUILD_V2, 0},
    {"torch._utils", "_rebuild_tensor", G_REBUILD, 0},
    {"torch._utils", "_rebuild_parameter", G_REBUILD_PARAM, 0},
    {"torch._tensor", "_rebuild_from_type_v2", G_REBUILD_FROM_TYPE_V2, 0},
    {"torch", "FloatStorage", G_STORAGE_TYPE, SD_DTYPE_F32},
    {"torch", "HalfStorage", G_STORAGE_TYPE, SD_DTYPE_F16},
    {"torch", "BFloat16Storage", G_STORAGE_TYPE, SD_DTYPE_BF16},
    {"torch", "DoubleStorage", G_STORAGE_TYPE, SD_DTYPE_F64},
    {"torch", "LongStorage", G_STORAGE_TYPE, SD_DTYPE_I64},
    {"torch", "IntStorage", G_STORAGE_TYPE, SD_DTYPE_I32},
    {"torch", "ShortStorage", G_STORAGE_TYPE, SD_DTYPE_I16},
    {"torch", "CharStorage", G_STORAGE_TYPE, SD_DTYPE_I8},
    {"torch", "ByteStorage", G_STORAGE_TYPE, SD_DTYPE_U8},
    {"torch", "BoolStorage", G_STORAGE_TYPE, SD_DTYPE_BOOL},
    {"torch", "Tensor", G_TYPE_TAG, 0},
    {"torch.nn.parameter", "Parameter", G_TYPE_TAG, 0},
    {"_codecs", "encode", G_CODECS_ENCODE, 0},
    {"pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint", G_INERT, 0},
    {"numpy.core.multiarray", "scalar", G_INERT, 0},
    {"numpy.core.multiarray", "_reconstruct", G_INERT, 0},
    {"numpy", "dtype", G_INERT, 0},
    {"numpy", "ndarray", G_INERT, 0},
};

static int push_global(vm *m, const char *module, size_t mlen, const char *name, size_t nlen)
{
    for (size_t i = 0; i < sizeof known_globals / sizeof known_globals[0]; i++) {
        if (strlen(known_globals[i].module) == mlen && memcmp(known_globals[i].module, module, mlen) == 0 &&
            strlen(known_globals[i].name) == nlen && memcmp(known_globals[i].name, name, nlen) == 0) {
            pv *g = pv_new(m, PV_GLOBAL);
            if (!g) return vfail(m, "out of memory");
            g->u.global.id = known_globals[i].id;
            g->u.global.dtype = known_globals[i].dtype;
            g->u.global.qualname = malloc(mlen + nlen + 2);
            if (!g->u.global.qualname) return vfail(m, "out of memory");
            snprintf(g->u.global.qualname, mlen + nlen + 2, "%.*s.%.*s", (int)mlen, module, (int)nlen, name);
            return push(m, g);
        }
    }
    /* print at most 80 bytes of each, escaping nothing: the names came from
     * the file and go into an error message only */
    return vfail(m, "refusing forbidden GLOBAL '%.*s.%.*s' at offset %zu (only tensor storage is allowed; "
                 "this file may try to run code)",
                 (int)(mlen > 80 ? 80 : mlen), module, (int)(nlen > 80 ? 80 : nlen), name, offset_of(m));
}

static int int_tuple(const pv *t, int64_t *out, int *n)
{
    if (!t || (t->kind != PV_TUPLE && t->kind != PV_LIST) || t->u.seq.n > SD_MAX_DIMS) return -1;
    for (size_t i = 0; i < t->u.seq.n; i++) {
        if (t->u.seq.items[i]->kind != PV_INT) return -1;
        out[i] = t->u.seq.items[i]->u.i;
    }
    *n = (int)t->u.seq.n;
    return 0;
}

static pv *make_tensor(vm *m, pv **args, size_t nargs)
{
    if (nargs < 4 || args[0]->kind != PV_STORAGE || args[1]->kind != PV_INT) {
        vfail(m, "tensor rebuild with unexpected arguments at offset %zu", offset_of(m));
        return NULL;
    }
    pv *t = pv_new(m, PV_TENSOR);
    if (!t) { vfail(m, "out of memory"); return NULL; }
    int nd_shape = 0, nd_stride = 0;
    if (int_tuple(args[2], t->u.tensor.shape, &nd_shape) || int_tuple(args[3], t->u.tensor.stride, &nd_stride) ||
        nd_shape != nd_stride) {
        vfail(m, "tensor rebuild with a bad size/stride (or more than %d dims) at offset %zu", SD_MAX_DIMS,
              offset_of(m));
        return NULL;
    }
    t->u.tensor.storage = args[0];
    t->u.tensor.offset = args[1]->u.i;
    t->u.tensor.ndim = nd_shape;
    return t;
}

/* Applies a whitelisted callable. */
static pv *call(vm *m, pv *fn, pv *args)
{
    if (fn->kind != PV_GLOBAL) {
        vfail(m, "REDUCE of a non-callable at offset %zu refused", offset_of(m));
        return NULL;
    }
    if (args->kind != PV_TUPLE) {
        vfail(m, "REDUCE of '%s' with non-tuple arguments refused", fn->u.global.qualname);
        return NULL;
    }
    pv **a = args->u.seq.items;
    size_t n = args->u.seq.n;
    switch (fn->u.global.id) {
    case G_ORDERED_DICT:
        if (n != 0) break;
        return pv_new(m, PV_DICT);
    case G_REBUILD_V2:
    case G_REBUILD:
        return make_tensor(m, a, n);
    case G_REBUILD_PARAM:
        if (n >= 1 && a[0]->kind == PV_TENSOR) return a[0];
        break;
    case G_REBUILD_FROM_TYPE_V2:
        /* (func, new_type, args, state): the tensor is func(*args) */
        if (n >= 3 && a[0]->kind == PV_GLOBAL && a[2]->kind == PV_TUPLE &&
            (a[0]->u.global.id == G_REBUILD_V2 || a[0]->u.global.id == G_REBUILD))
            return call(m, a[0], a[2]);
        break;
    case G_CODECS_ENCODE:
        /* (text, "latin1"): code points < 256 become bytes */
        if (n == 2 && a[0]->kind == PV_STR && a[1]->kind == PV_STR) {
            pv *b = new_str(m, PV_BYTES, (const unsigned char *)"", 0);
            if (!b) { vfail(m, "out of memory"); return NULL; }
            unsigned char *out = realloc(b->u.str.s, a[0]->u.str.len + 1);
            if (!out) { vfail(m, "out of memory"); return NULL; }
            b->u.str.s = (char *)out;
            size_t k = 0;
            const unsigned char *s = (const unsigned char *)a[0]->u.str.s;
            for (size_t i = 0; i < a[0]->u.str.len; i++) {
                if (s[i] < 0x80) out[k++] = s[i];
                else if ((s[i] & 0xe0) == 0xc0 && i + 1 < a[0]->u.str.len) {
                    out[k++] = (unsigned char)(((s[i] & 0x1f) << 6) | (s[i + 1] & 0x3f));
                    i++;
                } else {
                    vfail(m, "_codecs.encode of a non-latin1 string refused");
                    return NULL;
                }
            }
            out[k] = '\0';
            b->u.str.len = k;
            return b;
        }
        break;
    case G_INERT:
        return pv_new(m, PV_OPAQUE);
    case G_STORAGE_TYPE:
    case G_TYPE_TAG:
        break;
    }
    vfail(m, "REDUCE of '%s' with these arguments refused at offset %zu", fn->u.global.qualname, offset_of(m));
    return NULL;
}

static int persistent_load(vm *m, pv *pid)
{
    /* ('storage', storage_type, key, location, numel) */
    if (pid->kind != PV_TUPLE || pid->u.seq.n < 3) return vfail(m, "unsupported persistent id at offset %zu", offset_of(m));
    pv **a = pid->u.seq.items;
    if (a[0]->kind != PV_STR || strcmp(a[0]->u.str.s, "storage") != 0 || a[1]->kind != PV_GLOBAL ||
        a[1]->u.global.id != G_STORAGE_TYPE || a[2]->kind != PV_STR)
        return vfail(m, "unsupported persistent id at offset %zu (not a typed storage)", offset_of(m));
    const char *key = a[2]->u.str.s;
    if (!*key || strchr(key, '/') || strstr(key, ".."))
        return vfail(m, "storage key '%.40s' is not a plain name", key);
    pv *s = pv_new(m, PV_STORAGE);
    if (!s) return vfail(m, "out of memory");
    s->u.storage.dtype = a[1]->u.global.dtype;
    s->u.storage.key = strdup(key);
    if (!s->u.storage.key) return vfail(m, "out of memory");
    return push(m, s);
}

/* A tuple/list of the n stack items from index `from`. Indexes, not a
 * pointer: the stack is still NULL before the first push, and NULL + 0 is
 * undefined behaviour (found by fuzz_pickle). */
static pv *make_seq(vm *m, pv_kind kind, size_t from, size_t n)
{
    pv *t = pv_new(m, kind);
    if (!t) return NULL;
    for (size_t i = 0; i < n; i++)
        if (seq_push(t, m->stack[from + i])) return NULL;
    return t;
}

static int dict_set(vm *m, pv *d, pv *k, pv *v)
{
    if (d->kind == PV_OPAQUE) return 0;      /* state of an ignored record */
    if (d->kind != PV_DICT) return vfail(m, "SETITEM on a non-dict at offset %zu", offset_of(m));
    /* replace an existing string key (later wins, as in Python) */
    if (k->kind == PV_STR) {
        for (size_t i = 0; i + 1 < d->u.seq.n; i += 2) {
            pv *ek = d->u.seq.items[i];
            if (ek->kind == PV_STR && ek->u.str.len == k->u.str.len && memcmp(ek->u.str.s, k->u.str.s, k->u.str.len) == 0) {
                d->u.seq.items[i + 1] = v;
                return 0;
            }
        }
    }
    if (seq_push(d, k) || seq_push(d, v)) return vfail(m, "out of memory");
    return 0;
}

/* Runs the machine to STOP; *result is the value left on the stack. */
static int run(vm *m, pv **result)
{
    while (m->p < m->end) {
        unsigned char op = *m->p++;
        const unsigned char *s = NULL;
        size_t len = 0;
        pv *a, *b, *c;
        size_t from = 0;
        int64_t iv = 0;
        switch (op) {
        case 0x80: /* PROTO */
            if (need(m, 1)) return -1;
            if (m->p[0] > 5) return vfail(m, "unsupported pickle protocol %u", m->p[0]);
            m->p += 1;
            break;
        case 0x95: /* FRAME */
            if (need(m, 8)) return -1;
            m->p += 8;
            break;
        case '.': /* STOP */
            if (!(a = pop(m))) return -1;
            *result = a;
            return 0;
        case '}': if (push(m, pv_new(m, PV_DICT))) return -1; break;
        case ']': if (push(m, pv_new(m, PV_LIST))) return -1; break;
        case ')': if (push(m, pv_new(m, PV_TUPLE))) return -1; break;
        case 0x8f: /* EMPTY_SET: kept as a list */
            if (push(m, pv_new(m, PV_LIST))) return -1;
            break;
        case 'N': if (push(m, pv_new(m, PV_NONE))) return -1; break;
        case 0x88: if (push(m, new_int(m, 1, PV_BOOL))) return -1; break;
        case 0x89: if (push(m, new_int(m, 0, PV_BOOL))) return -1; break;
        case '(': /* MARK */
            if (m->n_marks == m->marks_cap) {
                size_t cap = m->marks_cap ? m->marks_cap * 2 : 16;
                size_t *nm = realloc(m->marks, cap * sizeof *nm);
                if (!nm) return vfail(m, "out of memory");
                m->marks = nm;
                m->marks_cap = cap;
            }
            m->marks[m->n_marks++] = m->sp;
            break;
        case 'q': if (need(m, 1) || !top(m) || memo_put(m, m->p[0], m->stack[m->sp - 1])) return -1; m->p += 1; break;
        case 'r': if (need(m, 4) || !top(m) || memo_put(m, le(m->p, 4), m->stack[m->sp - 1])) return -1; m->p += 4; break;
        case 0x94: /* MEMOIZE: next free index = count of memo entries so far */
            if (!top(m) || memo_put(m, m->memo_count, m->stack[m->sp - 1])) return -1;
            break;
        case 'p': /* PUT (text) */
            if (read_line(m, &s, &len) || parse_dec(s, len, &iv) || iv < 0) return vfail(m, "bad PUT operand");
            if (!top(m) || memo_put(m, (uint64_t)iv, m->stack[m->sp - 1])) return -1;
            break;
        case 'h': if (need(m, 1) || memo_get(m, m->p[0])) return -1; m->p += 1; break;
        case 'j': if (need(m, 4) || memo_get(m, le(m->p, 4))) return -1; m->p += 4; break;
        case 'g': /* GET (text) */
            if (read_line(m, &s, &len) || parse_dec(s, len, &iv) || iv < 0) return vfail(m, "bad GET operand");
            if (memo_get(m, (uint64_t)iv)) return -1;
            break;
        case 'X': case 'T': case 0x8d: case 0x8c: case 'U': case 'B': case 'C': case 0x8e: {
            int lw = (op == 0x8c || op == 'U' || op == 'C') ? 1 : (op == 0x8d || op == 0x8e) ? 8 : 4;
            if (need(m, (size_t)lw)) return -1;
            uint64_t n = le(m->p, lw);
            m->p += lw;
            if (n > (uint64_t)(m->end - m->p)) return vfail(m, "string of %llu bytes runs past the end (truncated?)", (unsigned long long)n);
            pv_kind k = (op == 'B' || op == 'C' || op == 0x8e) ? PV_BYTES : PV_STR;
            if (push(m, new_str(m, k, m->p, (size_t)n))) return -1;
            m->p += n;
            break;
        }
        case 'J': if (need(m, 4)) return -1; if (push(m, new_int(m, (int32_t)(uint32_t)le(m->p, 4), PV_INT))) return -1; m->p += 4; break;
        case 'K': if (need(m, 1)) return -1; if (push(m, new_int(m, m->p[0], PV_INT))) return -1; m->p += 1; break;
        case 'M': if (need(m, 2)) return -1; if (push(m, new_int(m, (int64_t)le(m->p, 2), PV_INT))) return -1; m->p += 2; break;
        case 0x8a: case 0x8b: { /* LONG1 / LONG4: little-endian two's complement */
            int lw = op == 0x8a ? 1 : 4;
            if (need(m, (size_t)lw)) return -1;
            uint64_t n = le(m->p, lw);
            m->p += lw;
            if (n > 8) return vfail(m, "integer of %llu bytes is too large", (unsigned long long)n);
            if (need(m, (size_t)n)) return -1;
            uint64_t u = le(m->p, (int)n);
            if (n > 0 && n < 8 && (m->p[n - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * n);
            m->p += n;
            if (push(m, new_int(m, (int64_t)u, PV_INT))) return -1;
            break;
        }
        case 'I': case 'L': /* INT / LONG (text); "I01"/"I00" are booleans */
            if (read_line(m, &s, &len)) return -1;
            if (op == 'I' && len == 2 && s[0] == '0' && (s[1] == '0' || s[1] == '1')) {
                if (push(m, new_int(m, s[1] == '1', PV_BOOL))) return -1;
                break;
            }
            if (parse_dec(s, len, &iv)) return vfail(m, "bad integer text at offset %zu", offset_of(m));
            if (push(m, new_int(m, iv, PV_INT))) return -1;
            break;
        case 'G': { /* BINFLOAT: big-endian double */
            if (need(m, 8)) return -1;
            uint64_t u = 0;
            for (int i = 0; i < 8; i++) u = (u << 8) | m->p[i];
            m->p += 8;
            pv *f = pv_new(m, PV_FLOAT);
            if (!f) return vfail(m, "out of memory");
            memcpy(&f->u.f, &u, 8);
            if (push(m, f)) return -1;
            break;
        }
        case 't': /* TUPLE */
            if (pop_mark(m, &from)) return -1;
            c = make_seq(m, PV_TUPLE, from, m->sp - from);
            m->sp = from;
            if (push(m, c)) return -1;
            break;
        case 0x85: case 0x86: case 0x87: { /* TUPLE1..3 */
            size_t n = (size_t)(op - 0x84);
            size_t floor = m->n_marks ? m->marks[m->n_marks - 1] : 0;
            if (m->sp < floor + n) return vfail(m, "stack underflow at offset %zu", offset_of(m));
            c = make_seq(m, PV_TUPLE, m->sp - n, n);
            m->sp -= n;
            if (push(m, c)) return -1;
            break;
        }
        case 'l': /* LIST (text protocols) */
            if (pop_mark(m, &from)) return -1;
            c = make_seq(m, PV_LIST, from, m->sp - from);
            m->sp = from;
            if (push(m, c)) return -1;
            break;
        case 'd': /* DICT */
            if (pop_mark(m, &from)) return -1;
            if ((m->sp - from) % 2) return vfail(m, "DICT with an odd item count");
            c = pv_new(m, PV_DICT);
            if (!c) return vfail(m, "out of memory");
            for (size_t i = from; i < m->sp; i += 2)
                if (dict_set(m, c, m->stack[i], m->stack[i + 1])) return -1;
            m->sp = from;
            if (push(m, c)) return -1;
            break;
        case 's': /* SETITEM */
            if (!(b = pop(m)) || !(a = pop(m)) || !(c = top(m))) return -1;
            if (dict_set(m, c, a, b)) return -1;
            break;
        case 'u': /* SETITEMS */
            if (pop_mark(m, &from)) return -1;
            if ((m->sp - from) % 2) return vfail(m, "SETITEMS with an odd item count");
            if (!(c = below(m, from))) return -1;
            for (size_t i = from; i < m->sp; i += 2)
                if (dict_set(m, c, m->stack[i], m->stack[i + 1])) return -1;
            m->sp = from;
            break;
        case 'a': /* APPEND */
            if (!(b = pop(m)) || !(c = top(m))) return -1;
            if (c->kind != PV_LIST) return vfail(m, "APPEND to a non-list at offset %zu", offset_of(m));
            if (seq_push(c, b)) return vfail(m, "out of memory");
            break;
        case 'e': case 0x90: /* APPENDS / ADDITEMS */
            if (pop_mark(m, &from)) return -1;
            if (!(c = below(m, from))) return -1;
            if (c->kind != PV_LIST) return vfail(m, "APPENDS to a non-list at offset %zu", offset_of(m));
            for (size_t i = from; i < m->sp; i++)
                if (seq_push(c, m->stack[i])) return vfail(m, "out of memory");
            m->sp = from;
            break;
        case 0x91: /* FROZENSET */
            if (pop_mark(m, &from)) return -1;
            c = make_seq(m, PV_LIST, from, m->sp - from);
            m->sp = from;
            if (push(m, c)) return -1;
            break;
        case '0': if (!pop(m)) return -1; break;
        case '1': if (pop_mark(m, &from)) return -1; m->sp = from; break;
        case '2': if (!(a = top(m)) || push(m, a)) return -1; break;
        case 'c': { /* GLOBAL "module\nname\n" */
            const unsigned char *mod = NULL, *name = NULL;
            size_t mlen = 0, nlen = 0;
            if (read_line(m, &mod, &mlen) || read_line(m, &name, &nlen)) return -1;
            if (push_global(m, (const char *)mod, mlen, (const char *)name, nlen)) return -1;
            break;
        }
        case 0x93: /* STACK_GLOBAL */
            if (!(b = pop(m)) || !(a = pop(m))) return -1;
            if (a->kind != PV_STR || b->kind != PV_STR) return vfail(m, "STACK_GLOBAL with non-string operands");
            if (push_global(m, a->u.str.s, a->u.str.len, b->u.str.s, b->u.str.len)) return -1;
            break;
        case 'R': /* REDUCE */
            if (!(b = pop(m)) || !(a = pop(m))) return -1;
            if (push(m, call(m, a, b))) return -1;
            break;
        case 0x81: /* NEWOBJ: cls.__new__(cls, *args) */
            if (!(b = pop(m)) || !(a = pop(m))) return -1;
            if (a->kind == PV_GLOBAL && a->u.global.id == G_INERT) {
                if (push(m, pv_new(m, PV_OPAQUE))) return -1;
            } else if (a->kind == PV_GLOBAL && a->u.global.id == G_ORDERED_DICT) {
                if (push(m, pv_new(m, PV_DICT))) return -1;
            } else {
                return vfail(m, "NEWOBJ of '%s' refused", a->kind == PV_GLOBAL ? a->u.global.qualname : "a non-class");
            }
            break;
        case 'b': /* BUILD: only state for records we ignore anyway */
            if (!(b = pop(m)) || !(a = top(m))) return -1;
            if (a->kind != PV_OPAQUE && a->kind != PV_TENSOR && a->kind != PV_DICT)
                return vfail(m, "BUILD on an unsupported object at offset %zu refused", offset_of(m));
            break;
        case 'Q': /* BINPERSID */
            if (!(a = pop(m))) return -1;
            if (persistent_load(m, a)) return -1;
            break;
        default:
            return vfail(m, "unsupported or forbidden opcode 0x%02x at offset %zu", op, offset_of(m) - 1);
        }
    }
    return vfail(m, "ends without STOP (truncated?)");
}

static char *dup_text(const char *s)
{
    return strdup(s ? s : "");
}

static int collect(vm *m, pv *root, sd_pickle_result *out)
{
    if (root->kind != PV_DICT) return vfail(m, "top-level object is not a dict");
    pv *sd = root;
    for (size_t i = 0; i + 1 < root->u.seq.n; i += 2) {
        pv *k = root->u.seq.items[i], *v = root->u.seq.items[i + 1];
        if (k->kind == PV_STR && strcmp(k->u.str.s, "state_dict") == 0 && v->kind == PV_DICT) sd = v;
    }
    /* metadata: top-level scalars */
    for (size_t i = 0; i + 1 < root->u.seq.n; i += 2) {
        pv *k = root->u.seq.items[i], *v = root->u.seq.items[i + 1];
        if (k->kind != PV_STR || (v->kind != PV_INT && v->kind != PV_STR)) continue;
        sd_pickle_meta *nm = realloc(out->meta, (out->n_meta + 1) * sizeof *nm);
        if (!nm) return vfail(m, "out of memory");
        out->meta = nm;
        char num[32];
        if (v->kind == PV_INT) snprintf(num, sizeof num, "%lld", (long long)v->u.i);
        nm[out->n_meta].key = dup_text(k->u.str.s);
        nm[out->n_meta].value = dup_text(v->kind == PV_INT ? num : v->u.str.s);
        out->n_meta++;
        if (!nm[out->n_meta - 1].key || !nm[out->n_meta - 1].value) return vfail(m, "out of memory");
    }
    size_t n = 0;
    for (size_t i = 0; i + 1 < sd->u.seq.n; i += 2)
        if (sd->u.seq.items[i]->kind == PV_STR && sd->u.seq.items[i + 1]->kind == PV_TENSOR) n++;
    out->tensors = calloc(n ? n : 1, sizeof *out->tensors);
    if (!out->tensors) return vfail(m, "out of memory");
    for (size_t i = 0; i + 1 < sd->u.seq.n; i += 2) {
        pv *k = sd->u.seq.items[i], *v = sd->u.seq.items[i + 1];
        if (k->kind != PV_STR || v->kind != PV_TENSOR) continue;
        sd_pickle_tensor *t = &out->tensors[out->n_tensors++];
        t->name = dup_text(k->u.str.s);
        t->storage_key = dup_text(v->u.tensor.storage->u.storage.key);
        if (!t->name || !t->storage_key) return vfail(m, "out of memory");
        t->dtype = v->u.tensor.storage->u.storage.dtype;
        t->storage_offset = v->u.tensor.offset;
        t->ndim = v->u.tensor.ndim;
        memcpy(t->shape, v->u.tensor.shape, sizeof t->shape);
        memcpy(t->stride, v->u.tensor.stride, sizeof t->stride);
    }
    return 0;
}

void sd_pickle_result_free(sd_pickle_result *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n_tensors; i++) {
        free(r->tensors[i].name);
        free(r->tensors[i].storage_key);
    }
    free(r->tensors);
    for (size_t i = 0; i < r->n_meta; i++) {
        free(r->meta[i].key);
        free(r->meta[i].value);
    }
    free(r->meta);
    memset(r, 0, sizeof *r);
}

int sd_pickle_read_state_dict(const unsigned char *data, size_t len, const char *fname, sd_pickle_result *out,
                              char *err, size_t errlen)
{
    vm m;
    memset(&m, 0, sizeof m);
    memset(out, 0, sizeof *out);
    m.p = m.start = data;
    m.end = data + len;
    m.fname = fname;
    m.err = err;
    m.errlen = errlen;
    pv *root = NULL;
    int rc = run(&m, &root);
    if (rc == 0) rc = collect(&m, root, out);
    if (rc != 0) sd_pickle_result_free(out);
    for (size_t i = 0; i < m.n_all; i++) pv_free(m.all[i]);
    free(m.all);
    free(m.stack);
    free(m.marks);
    free(m.memo);
    return rc;
}
