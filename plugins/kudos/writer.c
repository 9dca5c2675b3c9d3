/* kudos: the writer thread. Broker notifications (a request queued, a job
 * submitted, an uptime reward, ...) become kd_events; the writer takes every
 * event queued so far (up to MAX_BATCH), applies them in posting order inside
 * one storage transaction, each under its own savepoint (an event that fails
 * is rolled back alone and logged), and commits once: the group commit the
 * broker also does, so a busy node pays one durable commit per batch rather
 * than per event. One thread also means events apply in the order they were
 * posted (a request's activation before its first settlement). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kudos.h"

/* Events per transaction. Bigger batches mean fewer commits but hold the
 * store's single write lock longer, and the broker's own writer waits behind
 * it: 512 gave the broker's full cycle a p99 of 400+ ms at 64 connections, 64
 * about 100-130 ms (a loaded 2-core machine). */
#define MAX_BATCH 64
#define COMMIT_TRIES 3

kd_event *kd_event_new(kd_event_kind kind) {
    kd_event *ev = calloc(1, sizeof(*ev));
    if (ev) {
        ev->kind = kind;
        ev->now = (int64_t)time(NULL);
    }
    return ev;
}

/* Owner lookups go through auth (another plugin, another connection): done
 * before the batch's transaction so that it stays short. */
static void prepare(kudos *k, kd_event *ev) {
    if (ev->kind != KD_EV_SETTLE && ev->kind != KD_EV_UPTIME)
        return;
    int64_t id = ev->kind == KD_EV_SETTLE ? ev->owner_id : ev->user_id;
    hn_user u;
    ev->owner = kd_lookup_user(k, id, &u) ? kd_owner_of(&u) : (kd_owner){id, false, 0, false};
}

static hn_rc apply(kudos *k, kd_tx *tx, kd_event *ev) {
    tx->now = ev->now;
    ev->promoted = false; /* this attempt's outcome only */
    switch (ev->kind) {
    case KD_EV_ACTIVATE: {
        kd_request_info r = {ev->id, ev->user_id, ev->amount, ev->burn, ev->n, ev->tax,
                             ev->token[0] ? ev->token : NULL, ev->style_owner};
        return kd_apply_activate(tx, &r);
    }
    case KD_EV_SETTLE: {
        kd_job_settle s = {
            .job_id = ev->id,
            .request_id = ev->request[0] ? ev->request : NULL,
            .worker_id = ev->worker,
            .bridge_agent = ev->bridge[0] ? ev->bridge : NULL,
            .requester_id = ev->user_id,
            .owner = ev->owner,
            .gen_kudos = ev->amount,
            .censored = ev->censored,
        };
        kd_settled out;
        if (kd_apply_settle_job(tx, &s, &k->trust, &out) != HN_OK)
            return HN_ERROR;
        if (!out.duplicate && !out.request_known)
            k->api->log(k->self, HN_LOG_WARN,
                        "job %s: request %s not on record, charged without its burn multipliers",
                        ev->id, ev->request);
        if (out.promoted)
            k->api->log(k->self, HN_LOG_INFO, "user %lld passed evaluation: trusted",
                        (long long)ev->owner_id);
        ev->promoted = out.promoted;
        return HN_OK;
    }
    case KD_EV_UPTIME: {
        char event[128];
        snprintf(event, sizeof(event), "uptime:%s:%lld", ev->id, (long long)ev->now);
        bool promoted = false;
        if (kd_apply_uptime(tx, ev->id, &ev->owner, ev->amount, &k->trust, event, &promoted) !=
            HN_OK)
            return HN_ERROR;
        if (promoted)
            k->api->log(k->self, HN_LOG_INFO, "user %lld passed evaluation: trusted",
                        (long long)ev->user_id);
        ev->promoted = promoted;
        return HN_OK;
    }
    case KD_EV_SEEN:
        return kd_apply_worker_seen(tx, ev->id, ev->user_id, ev->bridge);
    case KD_EV_TOUCH:
        return kd_apply_touch(tx, ev->id);
    case KD_EV_END:
        return kd_apply_release(tx, ev->id);
    }
    return HN_OK;
}

static const char *kind_name(kd_event_kind kind) {
    static const char *const names[] = {"activation", "settlement", "uptime reward", "worker record",
                                        "touch", "release"};
    return (unsigned)kind < sizeof(names) / sizeof(*names) ? names[kind] : "event";
}

/* One attempt at the whole batch. HN_OK: committed. */
static hn_rc run_once(kudos *k, kd_event *batch, hn_error *err) {
    kd_tx tx;
    if (kd_tx_begin(&k->ledger, &tx, (int64_t)time(NULL), err) != HN_OK)
        return HN_ERROR;
    for (kd_event *ev = batch; ev; ev = ev->next) {
        hn_error ev_err = {0};
        tx.err = &ev_err;
        if (kd_tx_exec(&tx, "SAVEPOINT kd_event", NULL, 0, NULL) != HN_OK) {
            *err = ev_err;
            kd_tx_abort(&tx);
            return HN_ERROR;
        }
        if (apply(k, &tx, ev) == HN_OK) {
            if (kd_tx_exec(&tx, "RELEASE SAVEPOINT kd_event", NULL, 0, NULL) != HN_OK) {
                *err = ev_err;
                kd_tx_abort(&tx);
                return HN_ERROR;
            }
            continue;
        }
        /* this event alone is undone; the batch goes on */
        ev->promoted = false;
        k->api->log(k->self, HN_LOG_ERROR, "%s %s: %s", kind_name(ev->kind), ev->id,
                    ev_err.message);
        hn_error ignored = {0};
        tx.err = &ignored;
        if (kd_tx_exec(&tx, "ROLLBACK TO SAVEPOINT kd_event", NULL, 0, NULL) != HN_OK ||
            kd_tx_exec(&tx, "RELEASE SAVEPOINT kd_event", NULL, 0, NULL) != HN_OK) {
            *err = ignored;
            kd_tx_abort(&tx);
            return HN_ERROR;
        }
    }
    tx.err = err;
    return kd_tx_commit(&tx);
}

static void run_batch(kudos *k, kd_event *batch) {
    for (kd_event *ev = batch; ev; ev = ev->next)
        prepare(k, ev);
    hn_error err = {0};
    for (int attempt = 1; attempt <= COMMIT_TRIES; attempt++) {
        memset(&err, 0, sizeof(err));
        if (run_once(k, batch, &err) == HN_OK) {
            /* committed: promotions now reach auth's roles */
            for (kd_event *ev = batch; ev; ev = ev->next)
                if (ev->promoted)
                    kd_roles_promote(k, ev->kind == KD_EV_SETTLE ? ev->owner_id : ev->user_id);
            return;
        }
        usleep(50000u * (unsigned)attempt); /* a busy store: give it a moment */
    }
    int n = 0;
    for (kd_event *ev = batch; ev; ev = ev->next)
        n++;
    k->api->log(k->self, HN_LOG_ERROR, "%d ledger event(s) lost: %s", n, err.message);
}

static void free_batch(kd_event *ev) {
    while (ev) {
        kd_event *next = ev->next;
        free(ev);
        ev = next;
    }
}

/* writer_delay_ms (tests): holds the batch back, unless the node stops.
 * Called and returns with wq_lock held. */
static void delay(kudos *k) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    long long ns = until.tv_nsec + (k->conf->writer_delay_ms % 1000) * 1000000LL;
    until.tv_sec += (time_t)(k->conf->writer_delay_ms / 1000 + ns / 1000000000LL);
    until.tv_nsec = (long)(ns % 1000000000LL);
    while (!k->wq_stop && pthread_cond_timedwait(&k->wq_cond, &k->wq_lock, &until) == 0)
        ;
}

static void *writer_main(void *arg) {
    kudos *k = arg;
    pthread_mutex_lock(&k->wq_lock);
    for (;;) {
        while (!k->wq_head && !k->wq_stop)
            pthread_cond_wait(&k->wq_cond, &k->wq_lock);
        if (!k->wq_head)
            break; /* stopping, and everything is written */
        if (k->conf->writer_delay_ms > 0)
            delay(k);
        kd_event *batch = k->wq_head, *last = batch;
        int n = 1;
        while (last->next && n < MAX_BATCH) {
            last = last->next;
            n++;
        }
        k->wq_head = last->next;
        if (!k->wq_head)
            k->wq_tail = NULL;
        last->next = NULL;
        k->batches++;
        k->events += (uint64_t)n;
        pthread_mutex_unlock(&k->wq_lock);
        run_batch(k, batch);
        free_batch(batch);
        pthread_mutex_lock(&k->wq_lock);
    }
    pthread_mutex_unlock(&k->wq_lock);
    return NULL;
}

int kd_writer_start(kudos *k) {
    pthread_mutex_lock(&k->wq_lock);
    k->wq_stop = false;
    int rc = pthread_create(&k->writer, NULL, writer_main, k);
    k->writer_running = rc == 0;
    pthread_mutex_unlock(&k->wq_lock);
    return rc == 0 ? 0 : -1;
}

void kd_writer_stop(kudos *k) {
    pthread_mutex_lock(&k->wq_lock);
    bool running = k->writer_running;
    k->wq_stop = true;
    pthread_cond_signal(&k->wq_cond);
    pthread_mutex_unlock(&k->wq_lock);
    if (!running)
        return;
    pthread_join(k->writer, NULL);
    pthread_mutex_lock(&k->wq_lock);
    k->writer_running = false;
    pthread_mutex_unlock(&k->wq_lock);
    k->api->log(k->self, HN_LOG_INFO, "ledger writer: %llu events in %llu commits",
                (unsigned long long)k->events, (unsigned long long)k->batches);
}

void kd_writer_post(kudos *k, kd_event *ev) {
    ev->next = NULL;
    pthread_mutex_lock(&k->wq_lock);
    /* before start (the broker re-announces its record from its own start,
     * maybe before ours) events wait in the queue for the writer */
    if ((k->writer_running || !k->started) && !k->wq_stop) {
        if (k->wq_tail)
            k->wq_tail->next = ev;
        else
            k->wq_head = ev;
        k->wq_tail = ev;
        pthread_cond_signal(&k->wq_cond);
        pthread_mutex_unlock(&k->wq_lock);
        return;
    }
    pthread_mutex_unlock(&k->wq_lock);
    /* no writer (a command, or the node is stopping): now, in this thread */
    if (k->started)
        run_batch(k, ev);
    else
        k->api->log(k->self, HN_LOG_WARN, "stopped: %s %s dropped", kind_name(ev->kind), ev->id);
    free(ev);
}
