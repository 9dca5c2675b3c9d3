/* broker: prompt filters (spec/horde-api.md §2 filters, §5 "Prompt filters").
 *
 * Moderators keep regexes by type (10..29). On every generation the positive
 * prompt is normalised (weights stripped, punctuation to spaces, spaced-out
 * letters joined) and matched case-insensitively against the type-10 and
 * type-11 regexes joined with `|` (suspicion group 1) and the type-20 ones
 * (group 2); each matching group adds 1 to the suspicion. At 2 the request
 * is either rewritten (replacement_filter, the default: the type-10
 * replacements applied and a negative prompt against minors added) or
 * refused 400 CorruptPrompt: the client's IP is reported as suspicious and
 * the user gets a CORRUPT_PROMPT suspicion (hook user_suspicion, auth).
 *
 * Requests for an nsfw model (the model reference's flag) and requests of
 * flagged users are rewritten before that, whatever their suspicion: youth
 * words become "adult" ("girl" "adult woman", "boy" "adult man") and the
 * type-10 replacements apply; a prompt left empty is refused CorruptPrompt.
 *
 * Regexes are PCRE2 (Perl syntax, close to Python's `re`), compiled once when
 * a filter is added or changed; the joined group patterns are recompiled
 * then too. Unidecode is not applied: non-ASCII letters are matched as sent. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <ctype.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "moderation.h"

#define MINOR_NEGATIVE "child, infant, underage, immature, teenager, tween"
#define CORRUPT_MESSAGE                                                                   \
    "This prompt appears to violate our terms of service and will be reported. Please " \
    "contact us if you think this is an error."
#define MAX_REPLACEMENT_PROMPT 7000

/* The horde's rewrite of youth words for nsfw models and flagged users. */
static const struct {
    const char *regex, *replacement;
} youth_rules[3] = {
    {"\\b(?:student|young|lit[tl]?le|lil|small|tiny)\\b", "adult"},
    {"\\b(?:girl|nina)\\b", "adult woman"},
    {"\\b(?:boys?|sons?)\\b", "adult man"},
};

static pcre2_code *compile(const char *pattern, char *msg, size_t len) {
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_CASELESS | PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &code,
                                   &off, NULL);
    if (!re && msg) {
        PCRE2_UCHAR text[256];
        pcre2_get_error_message(code, text, sizeof(text));
        snprintf(msg, len, "Invalid regex at offset %zu: %s", (size_t)off, (const char *)text);
    }
    return re;
}

/* Does re match text? Fills first match [*so, *eo) when given. */
static bool re_find(const pcre2_code *re, const char *text, size_t start, size_t *so,
                    size_t *eo) {
    if (!re)
        return false;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!md)
        return false;
    int rc = pcre2_match(re, (PCRE2_SPTR)text, strlen(text), start, 0, md, NULL);
    if (rc >= 0) {
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (so)
            *so = ov[0];
        if (eo)
            *eo = ov[1];
    }
    pcre2_match_data_free(md);
    return rc >= 0;
}

/* Rebuilds the two group patterns (caller holds m->lock). */
static void rebuild_groups(br_mod *m) {
    for (int g = 0; g < 2; g++) {
        pcre2_code_free(m->group_code[g]);
        m->group_code[g] = NULL;
        size_t len = 1;
        for (size_t i = 0; i < m->n_filters; i++)
            len += strlen(m->filters[i].regex) + 8;
        char *joined = malloc(len);
        if (!joined)
            continue;
        joined[0] = '\0';
        size_t o = 0;
        for (size_t i = 0; i < m->n_filters; i++) {
            int t = m->filters[i].filter_type;
            bool in = g == 0 ? (t == 10 || t == 11) : t == 20;
            if (!in)
                continue;
            o += (size_t)snprintf(joined + o, len - o, "%s(?:%s)", o ? "|" : "",
                                  m->filters[i].regex);
        }
        if (o > 0)
            m->group_code[g] = compile(joined, NULL, 0);
        free(joined);
    }
}

static void filter_clear(br_filter *f) {
    free(f->regex);
    free(f->description);
    free(f->replacement);
    free(f->user);
    pcre2_code_free(f->code);
    memset(f, 0, sizeof(*f));
}

void br_filters_free(br_mod *m) {
    for (size_t i = 0; i < m->n_filters; i++)
        filter_clear(&m->filters[i]);
    free(m->filters);
    m->filters = NULL;
    m->n_filters = 0;
    for (int g = 0; g < 2; g++) {
        pcre2_code_free(m->group_code[g]);
        m->group_code[g] = NULL;
    }
    for (int i = 0; i < 3; i++) {
        pcre2_code_free(m->youth_code[i]);
        m->youth_code[i] = NULL;
    }
}

static int filters_push(br_mod *m, const br_filter *f) {
    if (br_mod_reserve(&m->filters, m->n_filters, &m->cap_filters, sizeof(*m->filters)) != 0)
        return -1;
    m->filters[m->n_filters++] = *f;
    return 0;
}

int br_filters_load(broker *b, hn_db *db, hn_error *err) {
    br_mod *m = b->mod;
    hn_stmt *st = b->db->query(
        db, "SELECT id, regex, filter_type, description, replacement, username FROM mod_filters "
            "ORDER BY id",
        NULL, 0, err);
    if (!st)
        return -1;
    /* read into a list of our own, then swap it in (also a reload in cluster mode) */
    br_mod fresh;
    memset(&fresh, 0, sizeof(fresh));
    int rc;
    while ((rc = b->db->step(st, err)) == 1) {
        br_filter f = {0};
        f.id = b->db->col_int(st, 0);
        f.regex = strdup(b->db->col_text(st, 1));
        f.filter_type = (int)b->db->col_int(st, 2);
        f.description = b->db->col_is_null(st, 3) ? NULL : strdup(b->db->col_text(st, 3));
        f.replacement = strdup(b->db->col_text(st, 4));
        f.user = strdup(b->db->col_text(st, 5));
        f.code = compile(f.regex ? f.regex : "", NULL, 0);
        if (!f.regex || !f.replacement || !f.user || filters_push(&fresh, &f) != 0)
            filter_clear(&f);
    }
    b->db->finish(st);
    if (rc < 0) {
        br_filters_free(&fresh);
        return -1;
    }
    pthread_mutex_lock(&m->lock);
    for (int i = 0; i < 3; i++)
        if (!m->youth_code[i])
            m->youth_code[i] = compile(youth_rules[i].regex, NULL, 0);
    br_filter *old = m->filters;
    size_t n_old = m->n_filters;
    m->filters = fresh.filters;
    m->n_filters = fresh.n_filters;
    m->cap_filters = fresh.cap_filters;
    rebuild_groups(m);
    pthread_mutex_unlock(&m->lock);
    for (size_t i = 0; i < n_old; i++)
        filter_clear(&old[i]);
    free(old);
    return 0;
}

/* ---- the check on generate ---------------------------------------------------------- */

/* The horde's normalisation of a prompt before matching: "(word:1.2)" weights
 * dropped, punctuation to spaces, "c h i l d" joined, spaces collapsed.
 * Returns malloc'd text. */
static char *normalise_prompt(const char *p) {
    size_t n = strlen(p);
    char *a = malloc(n + 1), *out = malloc(n + 1);
    if (!a || !out) {
        free(a);
        free(out);
        return NULL;
    }
    size_t o = 0;
    bool last_single = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == ':' && i + 1 < n && (isdigit((unsigned char)p[i + 1]) || p[i + 1] == '.')) {
            /* a weight ":1.2": skip the number */
            while (i + 1 < n && (isdigit((unsigned char)p[i + 1]) || p[i + 1] == '.'))
                i++;
            a[o++] = ' ';
            continue;
        }
        a[o++] = (c < 0x80 && (ispunct(c) || isspace(c))) ? ' ' : (char)c;
    }
    a[o] = '\0';
    /* words split on spaces; a run of two or more one-letter words is joined
     * ("c h i l d" -> "child"); spaces collapse to one */
    size_t w = 0;
    size_t i = 0;
    while (i < o) {
        while (i < o && a[i] == ' ')
            i++;
        if (i >= o)
            break;
        size_t start = i;
        while (i < o && a[i] != ' ')
            i++;
        bool single = i - start == 1 && isalpha((unsigned char)a[start]);
        if (single && w > 0 && last_single)
            w--; /* drop the space: join to the previous letter */
        memcpy(out + w, a + start, i - start);
        w += i - start;
        last_single = single;
        out[w++] = ' ';
    }
    if (w > 0)
        w--;
    out[w] = '\0';
    free(a);
    return out;
}

/* Suspicion of a positive prompt (0..2) under m->lock; matches (may be NULL)
 * gets the matched texts. */
static int suspicion_locked(br_mod *m, const char *positive, json_t *matches) {
    char *norm = normalise_prompt(positive);
    if (!norm)
        return 0;
    int s = 0;
    for (int g = 0; g < 2; g++) {
        size_t so, eo;
        if (re_find(m->group_code[g], norm, 0, &so, &eo)) {
            s++;
            if (matches)
                json_array_append_new(matches, json_stringn(norm + so, eo - so));
        }
    }
    free(norm);
    return s;
}

/* Replaces every match of re in text by rep. Returns malloc'd text. */
static char *replace_all(const pcre2_code *re, const char *text, const char *rep) {
    if (!re)
        return strdup(text);
    PCRE2_SIZE outlen = strlen(text) * 2 + strlen(rep) * 16 + 64;
    for (int tries = 0; tries < 4; tries++) {
        PCRE2_UCHAR *out = malloc(outlen);
        if (!out)
            return NULL;
        PCRE2_SIZE len = outlen;
        int rc = pcre2_substitute(re, (PCRE2_SPTR)text, PCRE2_ZERO_TERMINATED, 0,
                                  PCRE2_SUBSTITUTE_GLOBAL | PCRE2_SUBSTITUTE_OVERFLOW_LENGTH,
                                  NULL, NULL, (PCRE2_SPTR)rep, PCRE2_ZERO_TERMINATED, out, &len);
        if (rc >= 0)
            return (char *)out;
        free(out);
        if (rc != PCRE2_ERROR_NOMEMORY)
            return strdup(text); /* a bad replacement string: leave the text */
        outlen = len + 1;
    }
    return NULL;
}

/* The type-10 filters' replacements applied to text, which is consumed
 * (caller holds m->lock). Returns malloc'd text, NULL out of memory (text
 * NULL: NULL). */
static char *replace_type10_locked(br_mod *m, char *text) {
    for (size_t i = 0; text && i < m->n_filters; i++) {
        const br_filter *f = &m->filters[i];
        if (f->filter_type != 10)
            continue;
        char *next = replace_all(f->code, text, f->replacement ? f->replacement : "");
        free(text);
        text = next;
    }
    return text;
}

/* The youth words and the type-10 replacements (caller holds m->lock).
 * Returns malloc'd text. */
static char *rewrite_nsfw_locked(br_mod *m, const char *positive) {
    char *text = strdup(positive);
    for (int i = 0; text && i < 3; i++) {
        char *next = replace_all(m->youth_code[i], text, youth_rules[i].replacement);
        free(text);
        text = next;
    }
    return replace_type10_locked(m, text);
}

static bool nsfw_context(broker *b, const hn_user *u, const json_t *stored) {
    if (u->roles & HN_ROLE_FLAGGED)
        return true;
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(stored, "models"), i, x) {
        if (json_is_string(x) && br_model_nsfw(b->ref, json_string_value(x)))
            return true;
    }
    return false;
}

static bool blank(const char *s) {
    for (; *s; s++)
        if (!isspace((unsigned char)*s))
            return false;
    return true;
}

/* The user's suspicion +1 (CORRUPT_PROMPT), on a pool thread: hook
 * user_suspicion blocks on storage, and the 400 does not wait for it. */
typedef struct suspicion_job {
    broker *b;
    int64_t user_id;
} suspicion_job;

static void suspicion_work(void *arg) {
    suspicion_job *j = arg;
    hn_error err = {0};
    if (hn_run_user_suspicion(j->b->api, j->user_id, HN_SUSPICION_CORRUPT_PROMPT, NULL, &err) ==
        HN_ERROR)
        j->b->api->log(j->b->self, HN_LOG_WARN, "suspicion of user %lld: %s",
                       (long long)j->user_id, err.message);
    free(j);
}

static int refuse_corrupt(broker *b, const hn_user *u, const char *client_ip, hn_error *err) {
    if (u->id > 0 && br_hooked(b, HN_HOOK_ID_user_suspicion)) {
        suspicion_job *j = malloc(sizeof(*j));
        if (j) {
            *j = (suspicion_job){b, u->id};
            if (b->api->work_submit(suspicion_work, NULL, j) != 0)
                free(j);
        }
    }
    if (!br_mod_is_moderator(u) && client_ip && *client_ip)
        br_ip_report_suspicion(b, client_ip);
    b->api->log(b->self, HN_LOG_WARN, "prompt of %s refused by the filters (CorruptPrompt)",
                u->username);
    b->api->error(err, 400, "CorruptPrompt", CORRUPT_MESSAGE);
    return -1;
}

int br_filters_apply(broker *b, const hn_user *u, const char *client_ip, bool replacement_filter,
                     json_t *stored, hn_error *err) {
    br_mod *m = b->mod;
    const char *prompt = br_jstr(stored, "prompt");
    if (!prompt)
        return 0;
    const char *sep = strstr(prompt, "###");
    size_t plen = sep ? (size_t)(sep - prompt) : strlen(prompt);
    char *positive = strndup(prompt, plen);
    if (!positive)
        return 0;
    char *negative = sep ? strdup(sep + 3) : NULL;
    if (nsfw_context(b, u, stored)) {
        pthread_mutex_lock(&m->lock);
        char *rewritten = rewrite_nsfw_locked(m, positive);
        pthread_mutex_unlock(&m->lock);
        if (rewritten && blank(rewritten)) {
            free(rewritten);
            free(positive);
            free(negative);
            return refuse_corrupt(b, u, client_ip, err);
        }
        if (rewritten && strcmp(rewritten, positive) != 0) {
            size_t need = strlen(rewritten) + (negative ? strlen(negative) : 0) + 4;
            char *full = malloc(need);
            if (full) {
                snprintf(full, need, "%s%s%s", rewritten, negative ? "###" : "",
                         negative ? negative : "");
                json_object_set_new(stored, "prompt", json_string(full));
                free(full);
            }
            free(positive);
            positive = rewritten;
            plen = strlen(positive);
        } else {
            free(rewritten);
        }
    }
    pthread_mutex_lock(&m->lock);
    int s = suspicion_locked(m, positive, NULL);
    if (s < 2) {
        pthread_mutex_unlock(&m->lock);
        free(positive);
        free(negative);
        return 0;
    }
    bool education = (u->roles & HN_ROLE_EDUCATION) != 0;
    char *rewritten = NULL;
    if ((replacement_filter || education) && plen <= MAX_REPLACEMENT_PROMPT) {
        rewritten = replace_type10_locked(m, strdup(positive));
        /* still suspicious after the replacements: nothing can be done */
        if (rewritten && suspicion_locked(m, rewritten, NULL) >= 2) {
            free(rewritten);
            rewritten = NULL;
        }
    }
    pthread_mutex_unlock(&m->lock);
    free(positive);
    if (!rewritten) {
        free(negative);
        return refuse_corrupt(b, u, client_ip, err);
    }
    size_t need = strlen(rewritten) + sizeof(MINOR_NEGATIVE) + (negative ? strlen(negative) : 0) + 8;
    char *final = malloc(need);
    if (!final) {
        free(rewritten);
        free(negative);
        b->api->error(err, 500, "InternalServerError", "out of memory");
        return -1;
    }
    if (negative && *negative)
        snprintf(final, need, "%s###%s, %s", rewritten, MINOR_NEGATIVE, negative);
    else
        snprintf(final, need, "%s###%s", rewritten, MINOR_NEGATIVE);
    json_object_set_new(stored, "prompt", json_string(final));
    free(final);
    free(rewritten);
    free(negative);
    return 0;
}

/* ---- the endpoints --------------------------------------------------------------------- */

static json_t *filter_json(const br_filter *f) {
    return json_pack("{s:I, s:s, s:i, s:s?, s:s, s:s}", "id", (json_int_t)f->id, "regex",
                     f->regex, "filter_type", f->filter_type, "description", f->description,
                     "replacement", f->replacement ? f->replacement : "", "user",
                     f->user ? f->user : "");
}

static br_filter *find_filter(br_mod *m, int64_t id) {
    for (size_t i = 0; i < m->n_filters; i++)
        if (m->filters[i].id == id)
            return &m->filters[i];
    return NULL;
}

/* filter_type given as a query or body value: 10..29; -1 when absent. */
static int type_arg(broker *b, hn_request *req, const json_t *v, const char *text, bool *bad) {
    *bad = false;
    long t = -1;
    if (text && *text) {
        char *end;
        t = strtol(text, &end, 10);
        if (*end) {
            br_fail(b, req, 400, "BadRequest", "filter_type must be an integer.");
            *bad = true;
            return -1;
        }
    } else if (v) {
        if (!json_is_integer(v)) {
            br_respond_schema_errors(
                b, req, json_pack("{s:s}", "filter_type", "filter_type must be an integer"));
            *bad = true;
            return -1;
        }
        t = (long)json_integer_value(v);
    } else {
        return -1;
    }
    if (t < 10 || t > 29) {
        br_respond_schema_errors(
            b, req, json_pack("{s:s}", "filter_type", "filter_type must be between 10 and 29"));
        *bad = true;
        return -1;
    }
    return (int)t;
}

static void filters_list(broker *b, hn_request *req) {
    br_mod *m = b->mod;
    bool bad;
    int t = type_arg(b, req, NULL, b->api->req_query(req, "filter_type"), &bad);
    if (bad)
        return;
    const char *contains = b->api->req_query(req, "contains");
    json_t *out = json_array();
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n_filters; i++) {
        const br_filter *f = &m->filters[i];
        if (t >= 0 && f->filter_type != t)
            continue;
        if (contains && *contains && !strstr(f->regex, contains) &&
            !(f->description && strstr(f->description, contains)))
            continue;
        json_array_append_new(out, filter_json(f));
    }
    pthread_mutex_unlock(&m->lock);
    b->api->respond_json(req, 200, out);
}

static void filters_add(broker *b, hn_request *req, const hn_user *u) {
    br_mod *m = b->mod;
    json_t *body = br_mod_body(b, req);
    if (!body)
        return;
    const char *regex = br_jstr(body, "regex");
    if (!regex || !json_object_get(body, "filter_type")) {
        br_respond_schema_errors(b, req,
                                 json_pack("{s:s}", regex ? "filter_type" : "regex",
                                           "Missing required parameter in the JSON body"));
        return;
    }
    bool bad;
    int t = type_arg(b, req, json_object_get(body, "filter_type"), NULL, &bad);
    if (bad)
        return;
    if (!br_mod_text_ok(b, req, body, "description", 0, 1000, false) ||
        !br_mod_text_ok(b, req, body, "replacement", 0, 1000, false))
        return;
    char msg[320];
    pcre2_code *code = compile(regex, msg, sizeof(msg));
    if (!code) {
        br_fail(b, req, 400, "BadRequest", "%s", msg);
        return;
    }
    const char *desc = br_jstr(body, "description");
    const char *rep = br_jstr(body, "replacement");
    hn_error err;
    hn_db *db = br_mod_db(b, &err);
    if (!db) {
        pcre2_code_free(code);
        b->api->respond_error(req, &err);
        return;
    }
    hn_value args[] = {HN_V_TEXT(regex), HN_V_INT(t), desc ? HN_V_TEXT(desc) : HN_V_NULL,
                       HN_V_TEXT(rep ? rep : ""), HN_V_TEXT(u->username)};
    hn_stmt *st = b->db->query(db,
                               "INSERT INTO mod_filters (regex, filter_type, description, "
                               "replacement, username) VALUES (?, ?, ?, ?, ?) RETURNING id",
                               args, 5, &err);
    int64_t id = -1;
    if (st) {
        if (b->db->step(st, &err) == 1)
            id = b->db->col_int(st, 0);
        b->db->finish(st);
    }
    br_mod_db_release(b, db);
    if (id < 0) {
        pcre2_code_free(code);
        if (!err.status)
            err.status = 500;
        b->api->respond_error(req, &err);
        return;
    }
    br_filter f = {.id = id, .regex = strdup(regex), .filter_type = t,
                   .description = desc ? strdup(desc) : NULL, .replacement = strdup(rep ? rep : ""),
                   .user = strdup(u->username), .code = code};
    json_t *out = filter_json(&f);
    pthread_mutex_lock(&m->lock);
    if (filters_push(m, &f) != 0)
        filter_clear(&f);
    rebuild_groups(m);
    pthread_mutex_unlock(&m->lock);
    b->api->log(b->self, HN_LOG_INFO, "filter %lld added by %s", (long long)id, u->username);
    b->api->respond_json(req, 200, out);
}

static void filters_check(broker *b, hn_request *req) {
    br_mod *m = b->mod;
    json_t *body = br_mod_body(b, req);
    if (!body)
        return;
    const char *prompt = br_jstr(body, "prompt");
    if (!prompt) {
        br_respond_schema_errors(
            b, req, json_pack("{s:s}", "prompt", "Missing required parameter in the JSON body"));
        return;
    }
    bool bad;
    int t = type_arg(b, req, json_object_get(body, "filter_type"), NULL, &bad);
    if (bad)
        return;
    json_t *matches = json_array();
    int s = 0;
    pthread_mutex_lock(&m->lock);
    if (t < 0) {
        s = suspicion_locked(m, prompt, matches);
    } else {
        /* one type only: each of its filters that matches */
        char *norm = normalise_prompt(prompt);
        for (size_t i = 0; norm && i < m->n_filters; i++) {
            size_t so, eo;
            const br_filter *f = &m->filters[i];
            if (f->filter_type == t && re_find(f->code, norm, 0, &so, &eo)) {
                json_array_append_new(matches, json_stringn(norm + so, eo - so));
                s = 1;
            }
        }
        free(norm);
    }
    pthread_mutex_unlock(&m->lock);
    b->api->respond_json(req, 200, json_pack("{s:i, s:o}", "suspicion", s, "matches", matches));
}

void br_route_filters(hn_request *req, void *state) {
    broker *b = state;
    hn_user u;
    unsigned method = b->api->req_method(req);
    if (!br_mod_require_moderator(b, req, &u, "use the prompt filters"))
        return;
    if (method == HN_PUT)
        filters_add(b, req, &u);
    else if (method == HN_POST)
        filters_check(b, req);
    else
        filters_list(b, req);
}

void br_route_filters_regex(hn_request *req, void *state) {
    broker *b = state;
    br_mod *m = b->mod;
    hn_user u;
    if (!br_mod_require_moderator(b, req, &u, "see the prompt filters"))
        return;
    bool bad;
    int t = type_arg(b, req, NULL, b->api->req_query(req, "filter_type"), &bad);
    if (bad)
        return;
    json_t *out = json_array();
    pthread_mutex_lock(&m->lock);
    for (int type = 10; type <= 29; type++) {
        if (t >= 0 && type != t)
            continue;
        size_t len = 1, o = 0;
        for (size_t i = 0; i < m->n_filters; i++)
            if (m->filters[i].filter_type == type)
                len += strlen(m->filters[i].regex) + 1;
        if (len == 1)
            continue;
        char *joined = malloc(len);
        if (!joined)
            break;
        joined[0] = '\0';
        for (size_t i = 0; i < m->n_filters; i++)
            if (m->filters[i].filter_type == type)
                o += (size_t)snprintf(joined + o, len - o, "%s%s", o ? "|" : "",
                                      m->filters[i].regex);
        json_array_append_new(out, json_pack("{s:i, s:s}", "filter_type", type, "regex", joined));
        free(joined);
    }
    pthread_mutex_unlock(&m->lock);
    b->api->respond_json(req, 200, out);
}

static bool parse_id(const char *text, int64_t *id) {
    if (!text || !*text)
        return false;
    char *end;
    long long v = strtoll(text, &end, 10);
    if (*end || v < 0)
        return false;
    *id = v;
    return true;
}

static void filter_patch(broker *b, hn_request *req, int64_t id) {
    br_mod *m = b->mod;
    json_t *body = br_mod_body(b, req);
    if (!body)
        return;
    const char *regex = br_jstr(body, "regex");
    const char *desc = br_jstr(body, "description");
    const char *rep = br_jstr(body, "replacement");
    const json_t *jt = json_object_get(body, "filter_type");
    bool bad;
    int t = type_arg(b, req, jt, NULL, &bad);
    if (bad)
        return;
    if (!br_mod_text_ok(b, req, body, "description", 0, 1000, false) ||
        !br_mod_text_ok(b, req, body, "replacement", 0, 1000, false))
        return;
    if (!regex && !desc && !rep && t < 0) {
        br_fail(b, req, 400, "NoFilterModSelected", "No filter modification selected!");
        return;
    }
    pcre2_code *code = NULL;
    if (regex) {
        char msg[320];
        code = compile(regex, msg, sizeof(msg));
        if (!code) {
            br_fail(b, req, 400, "BadRequest", "%s", msg);
            return;
        }
    }
    hn_error err;
    hn_db *db = br_mod_db(b, &err);
    if (!db) {
        pcre2_code_free(code);
        b->api->respond_error(req, &err);
        return;
    }
    pthread_mutex_lock(&m->lock);
    br_filter *f = find_filter(m, id);
    if (!f) {
        pthread_mutex_unlock(&m->lock);
        br_mod_db_release(b, db);
        pcre2_code_free(code);
        br_fail(b, req, 404, "FilterNotFound", "Filter with ID '%lld' not found.", (long long)id);
        return;
    }
    if (regex) {
        free(f->regex);
        f->regex = strdup(regex);
        pcre2_code_free(f->code);
        f->code = code;
    }
    if (desc) {
        free(f->description);
        f->description = strdup(desc);
    }
    if (rep) {
        free(f->replacement);
        f->replacement = strdup(rep);
    }
    if (t >= 0)
        f->filter_type = t;
    rebuild_groups(m);
    hn_value args[] = {HN_V_TEXT(f->regex ? f->regex : ""), HN_V_INT(f->filter_type),
                       f->description ? HN_V_TEXT(f->description) : HN_V_NULL,
                       HN_V_TEXT(f->replacement ? f->replacement : ""), HN_V_INT(id)};
    json_t *out = filter_json(f);
    /* the write-through happens under the lock so two PATCHes land in order */
    hn_rc rc = b->db->exec(db,
                           "UPDATE mod_filters SET regex = ?, filter_type = ?, description = ?, "
                           "replacement = ? WHERE id = ?",
                           args, 5, NULL, &err);
    pthread_mutex_unlock(&m->lock);
    br_mod_db_release(b, db);
    if (rc != HN_OK) {
        json_decref(out);
        b->api->respond_error(req, &err);
        return;
    }
    b->api->respond_json(req, 200, out);
}

void br_route_filter_single(hn_request *req, void *state) {
    broker *b = state;
    br_mod *m = b->mod;
    hn_user u;
    if (!br_mod_require_moderator(b, req, &u, "use the prompt filters"))
        return;
    const char *raw = b->api->req_param(req, "filter_id");
    int64_t id;
    if (!parse_id(raw, &id)) {
        br_fail(b, req, 404, "FilterNotFound", "Filter with ID '%.64s' not found.", raw);
        return;
    }
    unsigned method = b->api->req_method(req);
    if (method == HN_PATCH) {
        filter_patch(b, req, id);
        return;
    }
    pthread_mutex_lock(&m->lock);
    br_filter *f = find_filter(m, id);
    json_t *out = f ? filter_json(f) : NULL;
    pthread_mutex_unlock(&m->lock);
    if (!out) {
        br_fail(b, req, 404, "FilterNotFound", "Filter with ID '%lld' not found.", (long long)id);
        return;
    }
    if (method == HN_GET) {
        b->api->respond_json(req, 200, out);
        return;
    }
    json_decref(out);
    hn_error err;
    hn_db *db = br_mod_db(b, &err);
    if (!db) {
        b->api->respond_error(req, &err);
        return;
    }
    hn_value args[] = {HN_V_INT(id)};
    hn_rc rc = b->db->exec(db, "DELETE FROM mod_filters WHERE id = ?", args, 1, NULL, &err);
    br_mod_db_release(b, db);
    if (rc != HN_OK) {
        b->api->respond_error(req, &err);
        return;
    }
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n_filters; i++) {
        if (m->filters[i].id == id) {
            filter_clear(&m->filters[i]);
            memmove(&m->filters[i], &m->filters[i + 1],
                    (m->n_filters - i - 1) * sizeof(m->filters[0]));
            m->n_filters--;
            break;
        }
    }
    rebuild_groups(m);
    pthread_mutex_unlock(&m->lock);
    b->api->log(b->self, HN_LOG_INFO, "filter %lld deleted by %s", (long long)id, u.username);
    br_mod_respond_ok(b, req);
}
