/* broker: the in-memory index. Every function here expects b->lock held
 * (except init/free, which run before threads start or after they stop). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"

int br_index_init(broker *b) {
    br_map_init(&b->requests);
    br_map_init(&b->jobs);
    br_map_init(&b->workers);
    br_map_init(&b->workers_by_name);
    br_map_init(&b->users);
    br_map_init(&b->model_stats);
    br_map_init(&b->model_queues);
    b->next_seq = 1;
    b->next_job_seq = 1;
    return pthread_mutex_init(&b->lock, NULL) == 0 ? 0 : -1;
}

static void job_free(br_job *j) {
    free(j->model);
    free(j->gen_metadata);
    free(j);
}

void br_request_free(br_request *r) {
    if (!r)
        return;
    free(r->links);
    free(r->body);
    free(r->client_ip);
    br_req_spec_free(&r->s);
    free(r);
}

void br_worker_attrs_free(br_worker_attrs *a) {
    free(a->bridge_agent);
    for (int i = 0; i < a->n_models; i++)
        free(a->models[i]);
    free(a->models);
    for (int i = 0; i < a->n_blacklist; i++)
        free(a->blacklist[i]);
    free(a->blacklist);
    free(a->ipaddr);
    memset(a, 0, sizeof(*a));
}

void br_worker_free(br_worker *w) {
    if (!w)
        return;
    br_worker_attrs_free(&w->a);
    free(w->name);
    free(w->maintenance_msg);
    free(w->info);
    free(w);
}

void br_index_free(broker *b) {
    size_t i = 0;
    void *v;
    while (br_map_next(&b->requests, &i, NULL, &v)) {
        br_request *r = v;
        for (br_job *j = r->jobs_head, *n; j; j = n) {
            n = j->rnext;
            job_free(j);
        }
        br_request_free(r);
    }
    i = 0;
    while (br_map_next(&b->workers, &i, NULL, &v))
        br_worker_free(v);
    i = 0;
    while (br_map_next(&b->users, &i, NULL, &v)) {
        br_user *u = v;
        size_t k = 0;
        void *mv;
        while (br_map_next(&u->model_waiting, &k, NULL, &mv))
            free(mv);
        br_map_free(&u->model_waiting);
        free(u);
    }
    i = 0;
    while (br_map_next(&b->model_stats, &i, NULL, &v)) {
        br_model_stat *m = v;
        free(m->name);
        free(m);
    }
    br_map_free(&b->requests);
    br_map_free(&b->jobs);
    br_map_free(&b->workers);
    br_map_free(&b->workers_by_name);
    br_map_free(&b->users);
    br_map_free(&b->model_stats);
    i = 0;
    while (br_map_next(&b->model_queues, &i, NULL, &v)) {
        br_mqueue *q = v;
        free(q->name);
        free(q);
    }
    br_map_free(&b->model_queues);
    free(b->exp_heap);
    pthread_mutex_destroy(&b->lock);
}

br_user *br_user_get(broker *b, int64_t id, bool create) {
    char key[24];
    snprintf(key, sizeof(key), "%lld", (long long)id);
    br_user *u = br_map_get(&b->users, key);
    if (u || !create)
        return u;
    u = calloc(1, sizeof(*u));
    if (!u)
        return NULL;
    u->id = id;
    memcpy(u->key, key, sizeof(key));
    br_map_init(&u->model_waiting);
    if (br_map_put(&b->users, u->key, u) != 0) {
        free(u);
        return NULL;
    }
    return u;
}

/* ---- the priority queue: a list sorted by (priority desc, seq asc) --------- */

bool br_queue_before(const br_request *a, const br_request *b) {
    if (a->priority != b->priority)
        return a->priority > b->priority;
    return a->seq < b->seq;
}

/* ---- the per-model queues ------------------------------------------------------- */

br_mqueue *br_model_queue(broker *b, const char *model) {
    return br_map_get(&b->model_queues, model);
}

static void mq_insert(br_mqueue *q, br_qlink *l, br_request *r) {
    br_qlink *p = q->tail;
    while (p && br_queue_before(r, p->r))
        p = p->prev;
    l->r = r;
    l->q = q;
    l->prev = p;
    l->next = p ? p->next : q->head;
    if (l->next)
        l->next->prev = l;
    else
        q->tail = l;
    if (p)
        p->next = l;
    else
        q->head = l;
    q->len++;
}

static void mq_remove(broker *b, br_qlink *l) {
    br_mqueue *q = l->q;
    if (!q)
        return;
    if (l->prev)
        l->prev->next = l->next;
    else
        q->head = l->next;
    if (l->next)
        l->next->prev = l->prev;
    else
        q->tail = l->prev;
    l->prev = l->next = NULL;
    l->q = NULL;
    if (--q->len == 0 && q->name) { /* lists of models nobody waits for go away */
        br_map_del(&b->model_queues, q->name);
        free(q->name);
        free(q);
    }
}

/* Links r into the list of each model it names (each name once). */
static void models_link(broker *b, br_request *r) {
    int n = r->s.n_models > 0 ? r->s.n_models : 1;
    if (!r->links) {
        r->links = calloc((size_t)n, sizeof(br_qlink));
        if (!r->links)
            return; /* out of memory: no pop finds it until it is queued again */
    }
    r->n_links = 0;
    if (r->s.n_models == 0) {
        mq_insert(&b->any_queue, &r->links[r->n_links++], r);
        return;
    }
    for (int i = 0; i < r->s.n_models; i++) {
        bool dup = false;
        for (int k = 0; k < i; k++)
            if (strcmp(r->s.models[k], r->s.models[i]) == 0)
                dup = true;
        if (dup)
            continue;
        br_mqueue *q = br_map_get(&b->model_queues, r->s.models[i]);
        if (!q) {
            q = calloc(1, sizeof(*q));
            if (q)
                q->name = strdup(r->s.models[i]);
            if (!q || !q->name || br_map_put(&b->model_queues, q->name, q) != 0) {
                if (q)
                    free(q->name);
                free(q);
                continue;
            }
        }
        mq_insert(q, &r->links[r->n_links++], r);
    }
}

static void models_unlink(broker *b, br_request *r) {
    for (int i = 0; i < r->n_links; i++)
        mq_remove(b, &r->links[i]);
    r->n_links = 0;
}

static void queue_insert(broker *b, br_request *r) {
    /* Walk from the tail: new requests usually sort last (first come, first
     * served), so this is O(1) unless priorities differ. */
    br_request *p = b->q_tail;
    while (p && br_queue_before(r, p))
        p = p->qprev;
    r->qprev = p;
    r->qnext = p ? p->qnext : b->q_head;
    if (r->qnext)
        r->qnext->qprev = r;
    else
        b->q_tail = r;
    if (p)
        p->qnext = r;
    else
        b->q_head = r;
    r->queued = true;
    b->q_len++;
    b->queue_ver++;
    models_link(b, r);
    /* its place among the requests queued since the last snapshot: exact for
     * first-come-first-served until the next snapshot corrects it */
    b->post_count++;
    b->post_n += r->n;
    b->post_mps += r->s.things * r->n / 1e6;
    r->post_gen = b->snap_gen;
    r->post_pos = b->post_count;
    r->post_n = b->post_n;
    r->post_mps = b->post_mps;
}

static void queue_remove(broker *b, br_request *r) {
    if (r->qprev)
        r->qprev->qnext = r->qnext;
    else
        b->q_head = r->qnext;
    if (r->qnext)
        r->qnext->qprev = r->qprev;
    else
        b->q_tail = r->qprev;
    r->qprev = r->qnext = NULL;
    r->queued = false;
    b->q_len--;
    models_unlink(b, r);
}

/* A per-model waiting count of the anonymous user. */
typedef struct model_count {
    int n;
    char name[]; /* the map key */
} model_count;

static void model_waiting_add(br_user *u, const char *model, int delta) {
    model_count *mc = br_map_get(&u->model_waiting, model);
    if (!mc) {
        if (delta <= 0)
            return;
        size_t len = strlen(model);
        mc = malloc(sizeof(*mc) + len + 1);
        if (!mc)
            return;
        mc->n = 0;
        memcpy(mc->name, model, len + 1);
        if (br_map_put(&u->model_waiting, mc->name, mc) != 0) {
            free(mc);
            return;
        }
    }
    mc->n += delta;
    if (mc->n <= 0) {
        br_map_del(&u->model_waiting, mc->name);
        free(mc);
    }
}

int br_user_model_waiting(br_user *u, const char *model) {
    model_count *mc = br_map_get(&u->model_waiting, model);
    return mc ? mc->n : 0;
}

void br_request_requeue(broker *b, br_request *r) {
    int eff = (r->state == BR_REQ_ACTIVE && r->n > 0 && !r->deleted) ? r->n : 0;
    br_user *u = br_user_get(b, r->user_id, true);
    if (u && r->user_id == 0 && eff != r->counted_n)
        for (int i = 0; i < r->s.n_models; i++)
            model_waiting_add(u, r->s.models[i], eff - r->counted_n);
    if (u) {
        u->waiting_n += eff - r->counted_n;
        if (eff > 0 && r->counted_n == 0)
            u->waiting_reqs++;
        else if (eff == 0 && r->counted_n > 0)
            u->waiting_reqs--;
    }
    r->counted_n = eff;
    if (eff > 0 && !r->queued)
        queue_insert(b, r);
    else if (eff == 0 && r->queued)
        queue_remove(b, r);
}

/* ---- the expiry heap --------------------------------------------------------- */

static void exp_push(broker *b, int64_t at, const char *id) {
    if (b->exp_len == b->exp_cap) {
        size_t nc = b->exp_cap ? b->exp_cap * 2 : 256;
        br_exp_entry *nh = realloc(b->exp_heap, nc * sizeof(*nh));
        if (!nh)
            return; /* the request then lives until the next restart */
        b->exp_heap = nh;
        b->exp_cap = nc;
    }
    size_t i = b->exp_len++;
    while (i > 0 && b->exp_heap[(i - 1) / 2].at > at) {
        b->exp_heap[i] = b->exp_heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    b->exp_heap[i].at = at;
    memcpy(b->exp_heap[i].id, id, BR_ID_LEN);
}

static void exp_pop(broker *b) {
    br_exp_entry last = b->exp_heap[--b->exp_len];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= b->exp_len)
            break;
        if (c + 1 < b->exp_len && b->exp_heap[c + 1].at < b->exp_heap[c].at)
            c++;
        if (b->exp_heap[c].at >= last.at)
            break;
        b->exp_heap[i] = b->exp_heap[c];
        i = c;
    }
    if (b->exp_len > 0)
        b->exp_heap[i] = last;
}

br_request *br_request_next_expired(broker *b, int64_t now_ms) {
    while (b->exp_len > 0 && b->exp_heap[0].at < now_ms) {
        char id[BR_ID_LEN];
        memcpy(id, b->exp_heap[0].id, BR_ID_LEN);
        exp_pop(b);
        br_request *r = br_request_find(b, id);
        if (!r)
            continue;
        if (r->expiry_ms >= now_ms) { /* pushed back by a pop since */
            exp_push(b, r->expiry_ms, r->id);
            continue;
        }
        return r;
    }
    return NULL;
}

void br_request_add(broker *b, br_request *r) {
    br_map_put(&b->requests, r->id, r);
    br_user *u = br_user_get(b, r->user_id, true);
    if (u) {
        r->unext = u->reqs;
        r->uprev = NULL;
        if (u->reqs)
            u->reqs->uprev = r;
        u->reqs = r;
    }
    if (r->seq >= b->next_seq)
        b->next_seq = r->seq + 1;
    r->counted_n = 0;
    br_request_requeue(b, r);
    exp_push(b, r->expiry_ms, r->id);
}

br_request *br_request_find(broker *b, const char *id) {
    return br_map_get(&b->requests, id);
}

static void inflight_remove(broker *b, br_job *j) {
    if (j->iprev)
        j->iprev->inext = j->inext;
    else if (b->inflight_head == j)
        b->inflight_head = j->inext;
    if (j->inext)
        j->inext->iprev = j->iprev;
    j->iprev = j->inext = NULL;
}

void br_request_drop(broker *b, br_request *r) {
    r->deleted = true;
    br_request_requeue(b, r);
    br_user *u = br_user_get(b, r->user_id, false);
    if (u) {
        if (r->uprev)
            r->uprev->unext = r->unext;
        else if (u->reqs == r)
            u->reqs = r->unext;
        if (r->unext)
            r->unext->uprev = r->uprev;
    }
    for (br_job *j = r->jobs_head, *n; j; j = n) {
        n = j->rnext;
        if (j->state == BR_JOB_PROCESSING)
            inflight_remove(b, j);
        br_map_del(&b->jobs, j->id);
        job_free(j);
    }
    br_map_del(&b->requests, r->id);
    br_request_free(r);
}

void br_job_add(broker *b, br_job *j) {
    br_request *r = j->req;
    if (j->seq == 0)
        j->seq = b->next_job_seq++;
    else if (j->seq >= b->next_job_seq)
        b->next_job_seq = j->seq + 1;
    br_map_put(&b->jobs, j->id, j);
    j->rnext = NULL;
    if (r->jobs_tail)
        r->jobs_tail->rnext = j;
    else
        r->jobs_head = j;
    r->jobs_tail = j;
    switch (j->state) {
    case BR_JOB_PROCESSING:
        r->processing++;
        j->iprev = NULL;
        j->inext = b->inflight_head;
        if (b->inflight_head)
            b->inflight_head->iprev = j;
        b->inflight_head = j;
        break;
    case BR_JOB_DONE:
        r->finished++;
        break;
    case BR_JOB_FAULTED:
        r->restarted++;
        break;
    }
}

br_job *br_job_find(broker *b, const char *id) {
    return br_map_get(&b->jobs, id);
}

void br_job_finish(broker *b, br_job *j, br_job_state st) {
    if (j->state != BR_JOB_PROCESSING)
        return;
    inflight_remove(b, j);
    j->req->processing--;
    if (st == BR_JOB_DONE)
        j->req->finished++;
    else
        j->req->restarted++;
    j->state = st;
}

/* ---- workers ----------------------------------------------------------------- */

br_worker *br_worker_find(broker *b, const char *id) {
    return br_map_get(&b->workers, id);
}

br_worker *br_worker_find_name(broker *b, const char *name) {
    return br_map_get(&b->workers_by_name, name);
}

void br_worker_add(broker *b, br_worker *w) {
    br_map_put(&b->workers, w->id, w);
    br_map_put(&b->workers_by_name, w->name, w);
    br_user *u = br_user_get(b, w->user_id, true);
    if (u)
        u->worker_count++;
    b->workers_ver++;
}

void br_worker_add_sample(br_worker *w, double v) {
    w->samples[w->sample_pos] = v;
    w->sample_pos = (w->sample_pos + 1) % BR_SPEED_SAMPLES;
    if (w->n_samples < BR_SPEED_SAMPLES)
        w->n_samples++;
    double sum = 0;
    for (int i = 0; i < w->n_samples; i++)
        sum += w->samples[i];
    w->speed = sum / w->n_samples;
}

bool br_worker_online(broker *b, const br_worker *w, int64_t now_ms) {
    return now_ms - w->last_checkin_ms <= b->conf->worker_online_s * 1000;
}

void br_model_add_sample(broker *b, const char *model, double v) {
    br_model_stat *m = br_map_get(&b->model_stats, model);
    if (!m) {
        m = calloc(1, sizeof(*m));
        if (!m)
            return;
        m->name = strdup(model);
        if (!m->name || br_map_put(&b->model_stats, m->name, m) != 0) {
            free(m->name);
            free(m);
            return;
        }
    }
    m->samples[m->pos] = v;
    m->pos = (m->pos + 1) % BR_SPEED_SAMPLES;
    if (m->n_samples < BR_SPEED_SAMPLES)
        m->n_samples++;
}

double br_model_performance(broker *b, const char *model) {
    br_model_stat *m = br_map_get(&b->model_stats, model);
    if (!m || m->n_samples == 0)
        return 0;
    double sum = 0;
    for (int i = 0; i < m->n_samples; i++)
        sum += m->samples[i];
    return sum / m->n_samples;
}

void br_past_minute_add(broker *b, int64_t now_ms, double pixelsteps) {
    int64_t sec = now_ms / 1000;
    int slot = (int)(sec % 60);
    if (b->past_minute_sec[slot] != sec) {
        b->past_minute_sec[slot] = sec;
        b->past_minute[slot] = 0;
    }
    b->past_minute[slot] += pixelsteps;
}

double br_past_minute_total(broker *b, int64_t now_ms) {
    int64_t sec = now_ms / 1000;
    double sum = 0;
    for (int i = 0; i < 60; i++)
        if (sec - b->past_minute_sec[i] < 60)
            sum += b->past_minute[i];
    return sum;
}
