/* Main loop, pool and inboxes: work completes on the loop thread that
 * submitted it, timers fire, signals reach their callbacks, stop works from
 * any thread and before the loop runs, fini runs what is still queued. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "core.h"

static hn_api api;

static int setup(void **st) {
    (void)st;
    char err[256];
    if (hn_loop_init(3, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    memset(&api, 0, sizeof api);
    hn_loop_fill_api(&api);
    return 0;
}

static int teardown(void **st) {
    (void)st;
    hn_loop_fini();
    return 0;
}

/* ---- work_submit completes on the submitting loop ------------------------------ */

typedef struct job {
    pthread_t submitter; /* the thread whose loop must run done */
    pthread_t worked_on;
    pthread_t done_on;
    atomic_int done;
    bool stop_after; /* stop the main loop from done */
} job;

static void job_work(void *arg) {
    job *j = arg;
    j->worked_on = pthread_self();
    usleep(1000);
}

static void job_done(void *arg) {
    job *j = arg;
    j->done_on = pthread_self();
    atomic_fetch_add(&j->done, 1);
    if (j->stop_after)
        hn_loop_stop();
}

static void submit_from_loop(void *arg) {
    job *j = arg;
    j->submitter = pthread_self();
    assert_int_equal(api.work_submit(job_work, job_done, j), 0);
}

static void test_done_runs_on_main_loop_thread(void **st) {
    (void)st;
    job j = {.stop_after = true};
    /* Submitted from inside the loop (a posted task runs there). */
    assert_int_equal(hn_loop_post(NULL, submit_from_loop, &j), 0);
    assert_int_equal(hn_loop_run(), 0);
    assert_int_equal(atomic_load(&j.done), 1);
    assert_true(pthread_equal(j.submitter, pthread_self()));
    assert_true(pthread_equal(j.done_on, pthread_self()));
    assert_false(pthread_equal(j.worked_on, pthread_self()));
}

static void *submit_from_plain_thread(void *arg) {
    job *j = arg;
    assert_null(hn_loop_current());
    assert_int_equal(api.work_submit(job_work, job_done, j), 0);
    return NULL;
}

static void test_done_from_other_thread_runs_on_main_loop(void **st) {
    (void)st;
    job j = {.stop_after = true};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, submit_from_plain_thread, &j), 0);
    pthread_join(t, NULL);
    assert_int_equal(hn_loop_run(), 0);
    assert_int_equal(atomic_load(&j.done), 1);
    assert_true(pthread_equal(j.done_on, pthread_self()));
}

/* A second loop on its own thread, like an HTTP loop. */
typedef struct side_loop {
    struct event_base *base;
    job jobs[8];
    atomic_int finished;
    bool detach_before_done;
    int polls; /* gives up after 5 s: a broken inbox fails, not hangs */
} side_loop;

static void side_done(void *arg) {
    job *j = arg;
    job_done(j);
}

static void side_submit(void *arg) {
    side_loop *s = arg;
    for (int i = 0; i < 8; i++) {
        s->jobs[i].submitter = pthread_self();
        assert_int_equal(api.work_submit(job_work, side_done, &s->jobs[i]), 0);
    }
}

static void side_check(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    side_loop *s = arg;
    int n = 0;
    for (int i = 0; i < 8; i++)
        n += atomic_load(&s->jobs[i].done);
    if (n == 8 || ++s->polls > 2500)
        event_base_loopbreak(s->base);
}

static void *side_main(void *arg) {
    side_loop *s = arg;
    s->base = event_base_new();
    assert_int_equal(hn_loop_attach_thread(s->base), 0);
    assert_non_null(hn_loop_current());
    assert_int_equal(hn_loop_attach_thread(s->base), -1); /* once per thread */
    assert_int_equal(hn_loop_post(hn_loop_current(), side_submit, s), 0);
    struct event *poll = event_new(s->base, -1, EV_PERSIST, side_check, s);
    struct timeval tv = {0, 2000};
    event_add(poll, &tv);
    event_base_dispatch(s->base);
    event_free(poll);
    hn_loop_detach_thread();
    assert_null(hn_loop_current());
    event_base_free(s->base);
    return NULL;
}

static void test_done_runs_on_attached_loop(void **st) {
    (void)st;
    side_loop s = {0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, side_main, &s), 0);
    pthread_join(t, NULL);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(atomic_load(&s.jobs[i].done), 1);
        assert_true(pthread_equal(s.jobs[i].done_on, s.jobs[i].submitter));
        assert_false(pthread_equal(s.jobs[i].worked_on, s.jobs[i].submitter));
        assert_false(pthread_equal(s.jobs[i].done_on, pthread_self()));
    }
}

/* A loop that detaches before its work completes: done goes to the main
 * loop, not nowhere. */
static void slow_work(void *arg) {
    job *j = arg;
    j->worked_on = pthread_self();
    usleep(50 * 1000);
}

static void *short_lived_loop(void *arg) {
    job *j = arg;
    struct event_base *base = event_base_new();
    assert_int_equal(hn_loop_attach_thread(base), 0);
    j->submitter = pthread_self();
    assert_int_equal(api.work_submit(slow_work, job_done, j), 0);
    hn_loop_detach_thread();
    event_base_free(base);
    /* Posting to a detached inbox is refused. */
    return NULL;
}

static void test_done_of_gone_loop_runs_on_main(void **st) {
    (void)st;
    job j = {.stop_after = true};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, short_lived_loop, &j), 0);
    pthread_join(t, NULL);
    assert_int_equal(hn_loop_run(), 0);
    assert_int_equal(atomic_load(&j.done), 1);
    assert_true(pthread_equal(j.done_on, pthread_self()));
}

static void test_fini_runs_queued_completions(void **st) {
    (void)st;
    job j[4] = {0};
    for (int i = 0; i < 4; i++)
        assert_int_equal(api.work_submit(slow_work, job_done, &j[i]), 0);
    hn_loop_fini(); /* never ran the loop: completions still happen */
    for (int i = 0; i < 4; i++)
        assert_int_equal(atomic_load(&j[i].done), 1);
    /* A stopped node refuses work. */
    assert_int_equal(api.work_submit(slow_work, job_done, &j[0]), -1);
    assert_int_equal(hn_loop_post(NULL, job_done, &j[0]), -1);
    setup(st); /* for teardown */
}

/* ---- timers, stop, signals --------------------------------------------------------- */

static atomic_int ticks;

static void count_tick(void *state) {
    (void)state;
    if (atomic_fetch_add(&ticks, 1) + 1 == 3)
        hn_loop_stop();
}

static void test_timers_fire_repeatedly(void **st) {
    (void)st;
    atomic_store(&ticks, 0);
    assert_int_equal(hn_loop_timer_add(5, count_tick, NULL), 0);
    assert_int_equal(hn_loop_timer_add(0, count_tick, NULL), -1);
    assert_int_equal(hn_loop_run(), 0);
    assert_int_equal(atomic_load(&ticks), 3);
}

static void *stop_later(void *arg) {
    (void)arg;
    usleep(20 * 1000);
    hn_loop_stop();
    return NULL;
}

static void test_stop_from_another_thread(void **st) {
    (void)st;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, stop_later, NULL), 0);
    assert_int_equal(hn_loop_run(), 0); /* would hang without the stop */
    pthread_join(t, NULL);
    /* A stop before run makes run return at once, and only once. */
    hn_loop_stop();
    assert_int_equal(hn_loop_run(), 0);
    atomic_store(&ticks, 0);
    assert_int_equal(hn_loop_timer_add(5, count_tick, NULL), 0);
    assert_int_equal(hn_loop_run(), 0);
    assert_int_equal(atomic_load(&ticks), 3);
}

static atomic_int reloads, stops;

static void on_reload(void *arg) {
    assert_ptr_equal(arg, &reloads);
    if (atomic_fetch_add(&reloads, 1) == 0)
        kill(getpid(), SIGTERM);
}

static void on_stop(void *arg) {
    assert_ptr_equal(arg, &reloads);
    atomic_fetch_add(&stops, 1);
    hn_loop_stop();
}

static void send_hup(void *state) {
    static bool sent;
    (void)state;
    if (!sent)
        kill(getpid(), SIGHUP);
    sent = true;
}

static void test_signals_reach_callbacks(void **st) {
    (void)st;
    hn_loop_on_signals(on_stop, on_reload, &reloads);
    assert_int_equal(hn_loop_timer_add(5, send_hup, NULL), 0);
    assert_int_equal(hn_loop_run(), 0);
    assert_int_equal(atomic_load(&reloads), 1);
    assert_int_equal(atomic_load(&stops), 1);
    /* SIGPIPE is ignored: a write to a closed pipe fails instead. */
    int p[2];
    assert_int_equal(pipe(p), 0);
    close(p[0]);
    assert_int_equal(write(p[1], "x", 1), -1);
    close(p[1]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_done_runs_on_main_loop_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_done_from_other_thread_runs_on_main_loop, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_done_runs_on_attached_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_done_of_gone_loop_runs_on_main, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fini_runs_queued_completions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timers_fire_repeatedly, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_from_another_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_signals_reach_callbacks, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
