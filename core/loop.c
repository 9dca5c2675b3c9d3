/* The main event loop, timers, signals, the work pool, and the inboxes that
 * carry results back to loop threads.
 *
 * Threads:
 *   - the main loop: one libevent base run by hn_loop_run (timers, signals,
 *     completions of work submitted from non-loop threads);
 *   - HTTP loops (http.c): each attaches its own base with
 *     hn_loop_attach_thread so that work it submits completes on it;
 *   - the pool: `pool_threads` workers running hn_api.work_submit jobs.
 *
 * Every loop has an inbox: a mutex-protected list of tasks plus an eventfd
 * watched by the loop. Posting appends under the mutex and writes the eventfd
 * only when the list was idle, so a burst of completions costs one wake-up.
 * This is the only cross-thread path: the HTTP bases are created without
 * libevent locks (http.c), and nothing but the inbox touches them from other
 * threads.
 *
 * Lifetime: an inbox is never freed before hn_loop_fini, so a job can keep a
 * pointer to the inbox it reports to even if that loop has gone. A detached
 * inbox refuses posts (-1); the pool then reports to the main loop instead. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "core.h"

/* One unit of work: a pool job (work then done) or an inbox task (fn). */
typedef struct task {
    struct task *next;
    hn_work_fn *work; /* pool jobs only */
    hn_work_fn *fn;   /* run on the loop: the done callback or a posted fn */
    void *arg;
    hn_loop_inbox *reply_to; /* pool jobs: where fn runs */
} task;

struct hn_loop_inbox {
    pthread_mutex_t lock;
    task *head, *tail;
    bool open;     /* false once detached: posts are refused */
    bool signaled; /* an eventfd write is pending; saves syscalls */
    int efd;
    struct event *ev;
    struct hn_loop_inbox *next_all; /* every inbox ever made, freed at fini */
};

typedef struct timer {
    struct timer *next;
    struct event *ev;
    unsigned interval_ms;
    hn_timer_fn *fn;
    void *state;
} timer;

static struct {
    struct event_base *base;
    hn_loop_inbox *main_inbox;
    pthread_t *workers;
    int nworkers;
    /* pool queue */
    pthread_mutex_t pool_lock;
    pthread_cond_t pool_cond;
    task *pool_head, *pool_tail;
    bool pool_stopping;
    /* timers and signals (main loop only) */
    timer *timers;
    struct event *sig_ev[3];
    void (*on_stop)(void *);
    void (*on_reload)(void *);
    void *sig_arg;
    atomic_bool stop_requested;
} g = {
    /* Static, never destroyed: work_submit may still be called (and refused)
     * after the pool is drained. */
    .pool_lock = PTHREAD_MUTEX_INITIALIZER,
    .pool_cond = PTHREAD_COND_INITIALIZER,
};

static pthread_mutex_t g_inboxes_lock = PTHREAD_MUTEX_INITIALIZER;
static hn_loop_inbox *g_inboxes;

/* The inbox of the loop running on this thread (main or attached). */
static _Thread_local hn_loop_inbox *tl_inbox;

/* ---- inboxes ---------------------------------------------------------------- */

static void inbox_run(task *t) {
    while (t != NULL) {
        task *next = t->next;
        t->fn(t->arg);
        free(t);
        t = next;
    }
}

static task *inbox_take(hn_loop_inbox *in) {
    pthread_mutex_lock(&in->lock);
    task *t = in->head;
    in->head = in->tail = NULL;
    in->signaled = false;
    pthread_mutex_unlock(&in->lock);
    return t;
}

static void inbox_cb(evutil_socket_t fd, short what, void *arg) {
    (void)what;
    uint64_t n;
    /* Drain the counter first: a post after inbox_take writes again. */
    while (read(fd, &n, sizeof n) < 0 && errno == EINTR) {
    }
    inbox_run(inbox_take(arg));
}

static hn_loop_inbox *inbox_new(struct event_base *base, char *err, size_t errlen) {
    hn_loop_inbox *in = calloc(1, sizeof *in);
    if (in == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&in->lock, NULL);
    in->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (in->efd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    in->ev = event_new(base, in->efd, EV_READ | EV_PERSIST, inbox_cb, in);
    if (in->ev == NULL || event_add(in->ev, NULL) != 0) {
        snprintf(err, errlen, "cannot watch the loop's eventfd");
        goto fail;
    }
    in->open = true;
    pthread_mutex_lock(&g_inboxes_lock);
    in->next_all = g_inboxes;
    g_inboxes = in;
    pthread_mutex_unlock(&g_inboxes_lock);
    return in;
fail:
    if (in->ev != NULL)
        event_free(in->ev);
    if (in->efd >= 0)
        close(in->efd);
    pthread_mutex_destroy(&in->lock);
    free(in);
    return NULL;
}

/* Appends t; 0, or -1 (t untouched) when the inbox is closed. */
static int inbox_push(hn_loop_inbox *in, task *t) {
    t->next = NULL;
    pthread_mutex_lock(&in->lock);
    if (!in->open) {
        pthread_mutex_unlock(&in->lock);
        return -1;
    }
    if (in->tail != NULL)
        in->tail->next = t;
    else
        in->head = t;
    in->tail = t;
    bool wake = !in->signaled;
    in->signaled = true;
    pthread_mutex_unlock(&in->lock);
    if (wake) {
        uint64_t one = 1;
        while (write(in->efd, &one, sizeof one) < 0 && errno == EINTR) {
        }
    }
    return 0;
}

/* Refuses further posts, stops watching, and runs what was already queued
 * (on the calling thread, which must be the inbox's loop thread). */
static void inbox_close(hn_loop_inbox *in) {
    pthread_mutex_lock(&in->lock);
    in->open = false;
    pthread_mutex_unlock(&in->lock);
    /* Tasks may post more tasks here while running: they are refused, and
     * pool completions go to the main loop instead. */
    inbox_run(inbox_take(in));
    if (in->ev != NULL) {
        event_free(in->ev);
        in->ev = NULL;
    }
    if (in->efd >= 0) {
        close(in->efd);
        in->efd = -1;
    }
}

hn_loop_inbox *hn_loop_current(void) { return tl_inbox; }

int hn_loop_post(hn_loop_inbox *to, hn_work_fn *fn, void *arg) {
    if (to == NULL)
        to = g.main_inbox;
    if (to == NULL || fn == NULL)
        return -1;
    task *t = calloc(1, sizeof *t);
    if (t == NULL)
        return -1;
    t->fn = fn;
    t->arg = arg;
    if (inbox_push(to, t) != 0) {
        free(t);
        return -1;
    }
    return 0;
}

int hn_loop_attach_thread(struct event_base *base) {
    char err[256];
    if (tl_inbox != NULL)
        return -1;
    hn_loop_inbox *in = inbox_new(base, err, sizeof err);
    if (in == NULL) {
        hn_logf(NULL, HN_LOG_ERROR, "cannot attach a loop thread: %s", err);
        return -1;
    }
    tl_inbox = in;
    return 0;
}

void hn_loop_detach_thread(void) {
    hn_loop_inbox *in = tl_inbox;
    if (in == NULL || in == g.main_inbox)
        return;
    inbox_close(in);
    tl_inbox = NULL;
}

/* ---- the pool ----------------------------------------------------------------- */

static void *worker_main(void *arg) {
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&g.pool_lock);
        while (g.pool_head == NULL && !g.pool_stopping)
            pthread_cond_wait(&g.pool_cond, &g.pool_lock);
        task *t = g.pool_head;
        if (t == NULL) { /* stopping and nothing queued */
            pthread_mutex_unlock(&g.pool_lock);
            return NULL;
        }
        g.pool_head = t->next;
        if (g.pool_head == NULL)
            g.pool_tail = NULL;
        pthread_mutex_unlock(&g.pool_lock);

        t->work(t->arg);
        if (t->fn == NULL) {
            free(t);
            continue;
        }
        /* Report back: to the submitting loop, or the main loop if that
         * loop has gone. The main inbox stays open until the pool is joined. */
        if (inbox_push(t->reply_to, t) != 0 &&
            (t->reply_to == g.main_inbox || inbox_push(g.main_inbox, t) != 0)) {
            hn_logf(NULL, HN_LOG_ERROR, "work completion dropped: no loop to run it on");
            free(t);
        }
    }
}

static int work_submit(hn_work_fn *work, hn_work_fn *done, void *arg) {
    if (work == NULL || g.main_inbox == NULL)
        return -1;
    task *t = calloc(1, sizeof *t);
    if (t == NULL)
        return -1;
    t->work = work;
    t->fn = done;
    t->arg = arg;
    t->reply_to = tl_inbox != NULL ? tl_inbox : g.main_inbox;
    pthread_mutex_lock(&g.pool_lock);
    if (g.pool_stopping) {
        pthread_mutex_unlock(&g.pool_lock);
        free(t);
        return -1;
    }
    if (g.pool_tail != NULL)
        g.pool_tail->next = t;
    else
        g.pool_head = t;
    g.pool_tail = t;
    pthread_cond_signal(&g.pool_cond);
    pthread_mutex_unlock(&g.pool_lock);
    return 0;
}

void hn_loop_fill_api(hn_api *api) { api->work_submit = work_submit; }

/* Starts a thread with every signal blocked, so that signals are delivered to
 * the main thread (libevent's handler) and never interrupt plugin code. */
int hn_thread_start(pthread_t *t, void *(*fn)(void *), void *arg) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

/* ---- timers and signals ---------------------------------------------------------- */

static void timer_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    timer *t = arg;
    t->fn(t->state);
}

static int timer_arm(timer *t) {
    t->ev = event_new(g.base, -1, EV_PERSIST, timer_cb, t);
    if (t->ev == NULL)
        return -1;
    struct timeval tv = {.tv_sec = t->interval_ms / 1000,
                         .tv_usec = (suseconds_t)(t->interval_ms % 1000) * 1000};
    if (event_add(t->ev, &tv) != 0) {
        event_free(t->ev);
        t->ev = NULL;
        return -1;
    }
    return 0;
}

int hn_loop_timer_add(unsigned interval_ms, hn_timer_fn *fn, void *state) {
    if (interval_ms == 0 || fn == NULL)
        return -1;
    timer *t = calloc(1, sizeof *t);
    if (t == NULL)
        return -1;
    t->interval_ms = interval_ms;
    t->fn = fn;
    t->state = state;
    /* The main base is created with locks (evthread_use_pthreads), so
     * arming from another thread is safe. */
    if (g.base != NULL && timer_arm(t) != 0) {
        free(t);
        return -1;
    }
    t->next = g.timers;
    g.timers = t;
    return 0;
}

static void signal_cb(evutil_socket_t sig, short what, void *arg) {
    (void)what;
    (void)arg;
    if (sig == SIGHUP) {
        if (g.on_reload != NULL)
            g.on_reload(g.sig_arg);
    } else if (g.on_stop != NULL) {
        g.on_stop(g.sig_arg);
    } else {
        hn_loop_stop();
    }
}

static int signals_arm(void) {
    static const int sigs[3] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        if (g.sig_ev[i] != NULL)
            continue;
        g.sig_ev[i] = evsignal_new(g.base, sigs[i], signal_cb, NULL);
        if (g.sig_ev[i] == NULL || event_add(g.sig_ev[i], NULL) != 0)
            return -1;
    }
    return 0;
}

void hn_loop_on_signals(void (*on_stop)(void *), void (*on_reload)(void *), void *arg) {
    g.on_stop = on_stop;
    g.on_reload = on_reload;
    g.sig_arg = arg;
    if (g.base != NULL && signals_arm() != 0)
        hn_logf(NULL, HN_LOG_ERROR, "cannot watch SIGTERM/SIGINT/SIGHUP");
}

/* ---- the main loop ------------------------------------------------------------------ */

int hn_loop_init(int pool_threads, char *err, size_t errlen) {
    if (g.base != NULL) {
        snprintf(err, errlen, "event loop already initialised");
        return -1;
    }
    if (pool_threads < 1)
        pool_threads = 1;
    /* A peer closing a socket must be an error on write, not a killed node. */
    signal(SIGPIPE, SIG_IGN);
    /* Locks for the main base only: http.c opts its bases out (NOLOCK). */
    if (evthread_use_pthreads() != 0) {
        snprintf(err, errlen, "libevent has no pthreads support");
        return -1;
    }
    g.base = event_base_new();
    if (g.base == NULL) {
        snprintf(err, errlen, "cannot create the main event base");
        return -1;
    }
    g.main_inbox = inbox_new(g.base, err, errlen);
    if (g.main_inbox == NULL)
        goto fail;
    for (timer *t = g.timers; t != NULL; t = t->next) {
        if (t->ev == NULL && timer_arm(t) != 0) {
            snprintf(err, errlen, "cannot arm a timer");
            goto fail;
        }
    }
    if ((g.on_stop != NULL || g.on_reload != NULL) && signals_arm() != 0) {
        snprintf(err, errlen, "cannot watch signals");
        goto fail;
    }
    g.pool_stopping = false;
    g.workers = calloc((size_t)pool_threads, sizeof *g.workers);
    if (g.workers == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (int i = 0; i < pool_threads; i++) {
        if (hn_thread_start(&g.workers[i], worker_main, NULL) != 0) {
            snprintf(err, errlen, "cannot start pool thread %d: %s", i, strerror(errno));
            goto fail;
        }
        g.nworkers++;
    }
    atomic_store(&g.stop_requested, false);
    return 0;
fail:
    hn_loop_fini();
    return -1;
}

struct event_base *hn_loop_main_base(void) {
    return g.base;
}

int hn_loop_run(void) {
    if (g.base == NULL)
        return -1;
    hn_loop_inbox *saved = tl_inbox;
    tl_inbox = g.main_inbox;
    int rc = 0;
    /* A stop requested before the loop started returns at once. */
    if (!atomic_exchange(&g.stop_requested, false))
        rc = event_base_loop(g.base, EVLOOP_NO_EXIT_ON_EMPTY) < 0 ? -1 : 0;
    tl_inbox = saved;
    return rc;
}

/* Runs on the main loop. The flag is consumed here so that a stop that
 * hn_loop_run already honoured does not break a later run. */
static void stop_task(void *arg) {
    (void)arg;
    if (atomic_exchange(&g.stop_requested, false))
        event_base_loopbreak(g.base);
}

void hn_loop_stop(void) {
    atomic_store(&g.stop_requested, true);
    /* Posted rather than event_base_loopbreak here: a loopbreak that lands
     * just before event_base_loop starts would be cleared and lost. */
    hn_loop_post(NULL, stop_task, NULL);
}

void hn_loop_drain(void) {
    /* 1. Let the pool finish what is queued, then join it. */
    if (g.workers != NULL) {
        pthread_mutex_lock(&g.pool_lock);
        g.pool_stopping = true;
        pthread_cond_broadcast(&g.pool_cond);
        pthread_mutex_unlock(&g.pool_lock);
        for (int i = 0; i < g.nworkers; i++)
            pthread_join(g.workers[i], NULL);
        free(g.workers);
        g.workers = NULL;
        g.nworkers = 0;
    }
    /* 2. Run the completions that reached the main loop (on this thread:
     * the loop no longer runs), then close it. */
    if (g.main_inbox != NULL) {
        hn_loop_inbox *saved = tl_inbox;
        tl_inbox = g.main_inbox;
        inbox_close(g.main_inbox);
        tl_inbox = saved;
    }
}

void hn_loop_fini(void) {
    hn_loop_drain();
    /* 3. Free events, then the base. */
    for (timer *t = g.timers; t != NULL;) {
        timer *next = t->next;
        if (t->ev != NULL)
            event_free(t->ev);
        free(t);
        t = next;
    }
    g.timers = NULL;
    for (int i = 0; i < 3; i++) {
        if (g.sig_ev[i] != NULL)
            event_free(g.sig_ev[i]);
        g.sig_ev[i] = NULL;
    }
    g.on_stop = g.on_reload = NULL;
    g.sig_arg = NULL;
    /* Inboxes of loops that have gone (their events were freed on detach). */
    pthread_mutex_lock(&g_inboxes_lock);
    for (hn_loop_inbox *in = g_inboxes; in != NULL;) {
        hn_loop_inbox *next = in->next_all;
        if (in->ev != NULL) /* a loop never detached: leave it, it may run */
            hn_logf(NULL, HN_LOG_WARN, "a loop thread is still attached at shutdown");
        else {
            pthread_mutex_destroy(&in->lock);
            free(in);
        }
        in = next;
    }
    g_inboxes = NULL;
    pthread_mutex_unlock(&g_inboxes_lock);
    g.main_inbox = NULL;
    if (g.base != NULL)
        event_base_free(g.base);
    g.base = NULL;
}
