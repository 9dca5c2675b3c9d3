/* broker: IP timeouts (spec/horde-api.md §2 /operations, §5 "IP timeouts").
 *
 * A timeout is either one address (set by report_suspicion, or by
 * block_worker_ipaddr for an IPv4 worker) or a CIDR block (set by
 * moderators with POST /operations/ipaddr, a single address becoming its
 * /32 or /128, or by block_worker_ipaddr for an IPv6 worker: its /64).
 * Timed-out clients get 403 TimeoutIP on generate and pop.
 *
 * Addresses are kept as 16 bytes (IPv4 mapped into ::ffff:0:0/96) so one
 * prefix comparison serves both families. The list is small (moderator
 * actions) and scanned linearly; expired entries are dropped as they are met.
 * Rows live in mod_ip_timeouts; suspicion counters stay in memory (24 h). */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "moderation.h"

#define DAY_MS (24LL * 3600 * 1000)
#define LONG_TIMEOUT_S (4 * 24 * 3600) /* beyond this the message stays vague */

int br_ip_parse(const char *text, br_cidr *out, bool allow_prefix, char *canon, size_t len) {
    char buf[64];
    if (!text || strlen(text) >= sizeof(buf))
        return -1;
    snprintf(buf, sizeof(buf), "%s", text);
    int prefix = -1;
    char *slash = strchr(buf, '/');
    if (slash) {
        if (!allow_prefix)
            return -1;
        *slash = '\0';
        char *end;
        long p = strtol(slash + 1, &end, 10);
        if (!slash[1] || *end || p < 0 || p > 128)
            return -1;
        prefix = (int)p;
    }
    memset(out, 0, sizeof(*out));
    struct in_addr v4;
    struct in6_addr v6;
    bool is4 = inet_pton(AF_INET, buf, &v4) == 1;
    if (is4) {
        if (prefix > 32)
            return -1;
        out->addr[10] = out->addr[11] = 0xff;
        memcpy(out->addr + 12, &v4, 4);
        out->prefix = prefix < 0 ? 128 : 96 + prefix;
    } else if (inet_pton(AF_INET6, buf, &v6) == 1) {
        memcpy(out->addr, &v6, 16);
        out->prefix = prefix < 0 ? 128 : prefix;
    } else {
        return -1;
    }
    /* clear the host bits so that "10.0.0.7/24" is the block 10.0.0.0/24 */
    for (int bit = out->prefix; bit < 128; bit++)
        out->addr[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
    if (canon) {
        char a[INET6_ADDRSTRLEN];
        if (is4)
            inet_ntop(AF_INET, out->addr + 12, a, sizeof(a));
        else
            inet_ntop(AF_INET6, out->addr, a, sizeof(a));
        if (prefix < 0 && !allow_prefix)
            snprintf(canon, len, "%s", a);
        else
            snprintf(canon, len, "%s/%d", a, is4 ? out->prefix - 96 : out->prefix);
    }
    return 0;
}

static bool cidr_contains(const br_cidr *net, const br_cidr *ip) {
    int bits = net->prefix;
    int bytes = bits / 8;
    if (memcmp(net->addr, ip->addr, (size_t)bytes) != 0)
        return false;
    if (bits % 8 == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff00u >> (bits % 8));
    return (net->addr[bytes] & mask) == (ip->addr[bytes] & mask);
}

/* Drops expired entries (caller holds m->lock). */
static void expire_locked(br_mod *m, int64_t now) {
    size_t w = 0;
    for (size_t i = 0; i < m->n_timeouts; i++)
        if (m->timeouts[i].expires_ms > now)
            m->timeouts[w++] = m->timeouts[i];
    m->n_timeouts = w;
}

static br_ip_timeout *find_locked(br_mod *m, const char *key) {
    for (size_t i = 0; i < m->n_timeouts; i++)
        if (strcmp(m->timeouts[i].key, key) == 0)
            return &m->timeouts[i];
    return NULL;
}

/* Sets (or replaces) a timeout in memory; caller holds m->lock. */
static int set_locked(br_mod *m, const char *key, const br_cidr *net, bool block,
                      int64_t expires_ms) {
    br_ip_timeout *t = find_locked(m, key);
    if (!t) {
        if (br_mod_reserve(&m->timeouts, m->n_timeouts, &m->cap_timeouts,
                           sizeof(*m->timeouts)) != 0)
            return -1;
        t = &m->timeouts[m->n_timeouts++];
        memset(t, 0, sizeof(*t));
        snprintf(t->key, sizeof(t->key), "%s", key);
    }
    t->net = *net;
    t->block = block;
    t->expires_ms = expires_ms;
    return 0;
}

static hn_rc save_row(broker *b, const char *key, bool block, int64_t expires_ms, hn_error *err) {
    hn_db *db = br_mod_db(b, err);
    if (!db)
        return HN_ERROR;
    hn_value args[] = {HN_V_TEXT(key), HN_V_INT(block ? 1 : 0), HN_V_INT(expires_ms)};
    hn_rc rc = b->db->exec(db,
                           "INSERT INTO mod_ip_timeouts (ipaddr, is_block, expires_ms) VALUES "
                           "(?, ?, ?) ON CONFLICT (ipaddr) DO UPDATE SET is_block = "
                           "excluded.is_block, expires_ms = excluded.expires_ms",
                           args, 3, NULL, err);
    br_mod_db_release(b, db);
    return rc;
}

static hn_rc delete_row(broker *b, const char *key, hn_error *err) {
    hn_db *db = br_mod_db(b, err);
    if (!db)
        return HN_ERROR;
    hn_value args[] = {HN_V_TEXT(key)};
    hn_rc rc = b->db->exec(db, "DELETE FROM mod_ip_timeouts WHERE ipaddr = ?", args, 1, NULL, err);
    br_mod_db_release(b, db);
    return rc;
}

int br_ip_timeouts_load(broker *b, hn_db *db, hn_error *err) {
    br_mod *m = b->mod;
    int64_t now = br_now_ms();
    hn_value args[] = {HN_V_INT(now)};
    hn_stmt *st = b->db->query(
        db, "SELECT ipaddr, is_block, expires_ms FROM mod_ip_timeouts WHERE expires_ms > ?", args,
        1, err);
    if (!st)
        return -1;
    /* read into a list of our own, then swap it in (also a reload in cluster mode) */
    br_mod fresh;
    memset(&fresh, 0, sizeof(fresh));
    int rc;
    while ((rc = b->db->step(st, err)) == 1) {
        const char *key = b->db->col_text(st, 0);
        bool block = b->db->col_int(st, 1) != 0;
        br_cidr net;
        if (br_ip_parse(key, &net, block, NULL, 0) == 0)
            set_locked(&fresh, key, &net, block, b->db->col_int(st, 2));
    }
    b->db->finish(st);
    if (rc < 0) {
        free(fresh.timeouts);
        return -1;
    }
    pthread_mutex_lock(&m->lock);
    br_ip_timeout *old = m->timeouts;
    m->timeouts = fresh.timeouts;
    m->n_timeouts = fresh.n_timeouts;
    m->cap_timeouts = fresh.cap_timeouts;
    pthread_mutex_unlock(&m->lock);
    free(old);
    return 0;
}

/* Seconds left of the longest timeout covering ip (0: none). */
static int64_t timeout_left(broker *b, const char *ip) {
    br_mod *m = b->mod;
    br_cidr addr;
    if (!ip || br_ip_parse(ip, &addr, false, NULL, 0) != 0)
        return 0;
    int64_t now = br_now_ms(), until = 0;
    pthread_mutex_lock(&m->lock);
    expire_locked(m, now);
    for (size_t i = 0; i < m->n_timeouts; i++)
        if (cidr_contains(&m->timeouts[i].net, &addr) && m->timeouts[i].expires_ms > until)
            until = m->timeouts[i].expires_ms;
    pthread_mutex_unlock(&m->lock);
    return until > now ? (until - now + 999) / 1000 : 0;
}

int br_ip_check(broker *b, const char *ip, hn_error *err) {
    int64_t left = timeout_left(b, ip);
    if (left <= 0)
        return 0;
    if (left > LONG_TIMEOUT_S)
        b->api->error(err, 403, "TimeoutIP",
                      "Your IP address has been placed in a timeout due to suspicious activity. "
                      "Please contact the moderators if you think this is an error.");
    else
        b->api->error(err, 403, "TimeoutIP",
                      "Your IP address has been placed in a timeout for %lld more seconds due to "
                      "suspicious activity. Please try again later.",
                      (long long)left);
    return -1;
}

void br_ip_report_suspicion(broker *b, const char *ip) {
    br_mod *m = b->mod;
    br_cidr addr;
    char key[64];
    if (br_ip_parse(ip, &addr, false, key, sizeof(key)) != 0)
        return;
    int64_t now = br_now_ms();
    pthread_mutex_lock(&m->lock);
    br_ip_suspicion *s = NULL;
    for (size_t i = 0; i < m->n_suspicions; i++)
        if (strcmp(m->suspicions[i].ip, key) == 0)
            s = &m->suspicions[i];
    if (!s) {
        if (br_mod_reserve(&m->suspicions, m->n_suspicions, &m->cap_suspicions,
                           sizeof(*m->suspicions)) != 0) {
            pthread_mutex_unlock(&m->lock);
            return;
        }
        s = &m->suspicions[m->n_suspicions++];
        memset(s, 0, sizeof(*s));
        snprintf(s->ip, sizeof(s->ip), "%s", key);
        s->window_start_ms = now;
    }
    if (now - s->window_start_ms > DAY_MS) {
        s->count = 0;
        s->window_start_ms = now;
    }
    s->count++;
    int64_t expires = now + (int64_t)(2 * s->count + 1) * 3 * 60 * 1000;
    set_locked(m, key, &addr, false, expires);
    pthread_mutex_unlock(&m->lock);
    hn_error err;
    if (save_row(b, key, false, expires, &err) != HN_OK)
        b->api->log(b->self, HN_LOG_WARN, "cannot store the timeout of %s: %s", key, err.message);
}

/* ---- the endpoints ------------------------------------------------------------------------ */

static json_t *entry_json(const br_ip_timeout *t, int64_t now) {
    return json_pack("{s:s, s:I}", "ipaddr", t->key,
                     "seconds", (json_int_t)((t->expires_ms - now + 999) / 1000));
}

/* Ends the timeout of key in memory and storage; false when answered with
 * the storage error. */
static bool lift_timeout(broker *b, hn_request *req, const char *key) {
    br_mod *m = b->mod;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n_timeouts; i++) {
        if (strcmp(m->timeouts[i].key, key) == 0) {
            m->timeouts[i] = m->timeouts[--m->n_timeouts];
            break;
        }
    }
    pthread_mutex_unlock(&m->lock);
    hn_error err;
    if (delete_row(b, key, &err) != HN_OK) {
        b->api->respond_error(req, &err);
        return false;
    }
    return true;
}

/* Sets the timeout of key in memory and storage; false when answered with
 * the error. */
static bool put_timeout(broker *b, hn_request *req, const char *key, const br_cidr *net,
                        bool block, int64_t expires_ms) {
    br_mod *m = b->mod;
    hn_error err;
    pthread_mutex_lock(&m->lock);
    int rc = set_locked(m, key, net, block, expires_ms);
    pthread_mutex_unlock(&m->lock);
    if (rc != 0 || save_row(b, key, block, expires_ms, &err) != HN_OK) {
        if (rc != 0)
            b->api->error(&err, 500, "InternalServerError", "out of memory");
        b->api->respond_error(req, &err);
        return false;
    }
    return true;
}

/* body[key]: an integer from min to max in *out, else answered 400 with the
 * schema's message. */
static bool duration_arg(broker *b, hn_request *req, const json_t *body, const char *key,
                         int min, int max, json_int_t *out) {
    const json_t *v = json_object_get(body, key);
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        char msg[96];
        snprintf(msg, sizeof(msg), "%s must be an integer from %d to %d", key, min, max);
        br_respond_schema_errors(
            b, req,
            json_pack("{s:s}", key, v ? msg : "Missing required parameter in the JSON body"));
        return false;
    }
    *out = json_integer_value(v);
    return true;
}

void br_route_ipaddr(hn_request *req, void *state) {
    broker *b = state;
    br_mod *m = b->mod;
    hn_user u;
    if (!br_mod_require_moderator(b, req, &u, "manage IP timeouts"))
        return;
    unsigned method = b->api->req_method(req);
    int64_t now = br_now_ms();
    if (method == HN_GET) {
        json_t *out = json_array();
        pthread_mutex_lock(&m->lock);
        expire_locked(m, now);
        for (size_t i = 0; i < m->n_timeouts; i++)
            if (m->timeouts[i].block)
                json_array_append_new(out, entry_json(&m->timeouts[i], now));
        pthread_mutex_unlock(&m->lock);
        b->api->respond_json(req, 200, out);
        return;
    }
    json_t *body = br_mod_body(b, req);
    if (!body)
        return;
    const char *ip = br_jstr(body, "ipaddr");
    if (!ip || strlen(ip) < 7 || strlen(ip) > 40) {
        br_respond_schema_errors(b, req,
                                 json_pack("{s:s}", "ipaddr",
                                           ip ? "ipaddr must be 7 to 40 characters"
                                              : "Missing required parameter in the JSON body"));
        return;
    }
    br_cidr net;
    char key[64];
    if (br_ip_parse(ip, &net, true, key, sizeof(key)) != 0) {
        br_fail(b, req, 400, "BadRequest", "Invalid IP address or CIDR block: %.60s", ip);
        return;
    }
    if (method == HN_DELETE) {
        if (!lift_timeout(b, req, key))
            return;
        b->api->log(b->self, HN_LOG_INFO, "IP timeout %s lifted by %s", key, u.username);
        br_mod_respond_ok(b, req);
        return;
    }
    json_int_t hours;
    if (!duration_arg(b, req, body, "hours", 1, 720, &hours) ||
        !put_timeout(b, req, key, &net, true, now + (int64_t)hours * 3600 * 1000))
        return;
    b->api->log(b->self, HN_LOG_INFO, "IP timeout %s for %lld h by %s", key, (long long)hours,
                u.username);
    br_mod_respond_ok(b, req);
}

void br_route_ipaddr_single(hn_request *req, void *state) {
    broker *b = state;
    br_mod *m = b->mod;
    hn_user u;
    if (!br_mod_require_moderator(b, req, &u, "see IP timeouts"))
        return;
    const char *ip = b->api->req_param(req, "ipaddr");
    br_cidr addr;
    if (br_ip_parse(ip, &addr, false, NULL, 0) != 0) {
        br_fail(b, req, 400, "BadRequest", "Invalid IP address: %.60s", ip);
        return;
    }
    int64_t now = br_now_ms();
    json_t *out = json_array();
    pthread_mutex_lock(&m->lock);
    expire_locked(m, now);
    for (size_t i = 0; i < m->n_timeouts; i++)
        if (cidr_contains(&m->timeouts[i].net, &addr))
            json_array_append_new(out, entry_json(&m->timeouts[i], now));
    pthread_mutex_unlock(&m->lock);
    b->api->respond_json(req, 200, out);
}

void br_route_block_worker_ip(hn_request *req, void *state) {
    broker *b = state;
    hn_user u;
    if (!br_mod_require_moderator(b, req, &u, "block workers' IPs"))
        return;
    const char *raw = b->api->req_param(req, "worker_id");
    char id[BR_ID_LEN];
    char ip[64] = "";
    bool found = false;
    if (br_uuid_parse(raw, id)) {
        pthread_mutex_lock(&b->lock);
        br_worker *w = br_worker_find(b, id);
        if (w) {
            found = true;
            snprintf(ip, sizeof(ip), "%s", w->a.ipaddr ? w->a.ipaddr : "");
        }
        pthread_mutex_unlock(&b->lock);
    }
    if (!found) {
        br_fail(b, req, 404, "WorkerNotFound", "Worker with ID '%.100s' not found.", raw);
        return;
    }
    br_cidr net;
    char key[64];
    if (br_ip_parse(ip, &net, false, NULL, 0) != 0) {
        br_fail(b, req, 400, "BadRequest", "The worker has no known IP address.");
        return;
    }
    /* IPv6: the worker's /64 (one host usually owns the whole /64) */
    bool v6 = !(net.addr[10] == 0xff && net.addr[11] == 0xff &&
                memcmp(net.addr, "\0\0\0\0\0\0\0\0\0\0", 10) == 0);
    if (v6) {
        char with_prefix[80];
        snprintf(with_prefix, sizeof(with_prefix), "%s/64", ip);
        br_ip_parse(with_prefix, &net, true, key, sizeof(key));
    } else {
        br_ip_parse(ip, &net, false, key, sizeof(key));
    }
    if (b->api->req_method(req) == HN_DELETE) {
        if (lift_timeout(b, req, key))
            br_mod_respond_ok(b, req);
        return;
    }
    json_t *body = br_mod_body(b, req);
    json_int_t days;
    if (!body || !duration_arg(b, req, body, "days", 1, 30, &days) ||
        !put_timeout(b, req, key, &net, v6, br_now_ms() + (int64_t)days * DAY_MS))
        return;
    b->api->log(b->self, HN_LOG_INFO, "worker %s's IP %s blocked for %lld days by %s", id, key,
                (long long)days, u.username);
    br_mod_respond_ok(b, req);
}
