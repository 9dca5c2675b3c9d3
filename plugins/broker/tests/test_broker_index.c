/* broker: unit tests of the in-memory index: queue order by priority then
 * arrival, re-queueing, per-user sums, the anonymous per-model counts and the
 * lazy expiry heap. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "broker.h"

static br_request *req(broker *b, int64_t user, double prio, int n, int64_t expiry,
                       const char *model) {
    br_request *r = calloc(1, sizeof(*r));
    br_uuid4(r->id);
    r->user_id = user;
    r->priority = prio;
    r->n = r->jobs = n;
    r->seq = b->next_seq++;
    r->expiry_ms = expiry;
    r->s.models = calloc(1, sizeof(char *));
    r->s.models[0] = strdup(model);
    r->s.n_models = 1;
    br_request_add(b, r);
    return r;
}

static void queue_ids(broker *b, br_request **out, int max, int *n) {
    *n = 0;
    for (br_request *r = b->q_head; r && *n < max; r = r->qnext)
        out[(*n)++] = r;
}

static void test_queue_order_and_sums(void **st) {
    (void)st;
    broker b;
    memset(&b, 0, sizeof(b));
    assert_int_equal(br_index_init(&b), 0);
    pthread_mutex_lock(&b.lock);
    br_request *a = req(&b, 1, 0, 2, 1000, "m");
    br_request *c = req(&b, 2, 5, 1, 1000, "m");
    br_request *d = req(&b, 1, 0, 3, 1000, "m");
    br_request *e = req(&b, 3, 5, 1, 1000, "m");
    br_request *q[8];
    int n;
    queue_ids(&b, q, 8, &n);
    /* priority first, then first come first served */
    assert_int_equal(n, 4);
    assert_ptr_equal(q[0], c);
    assert_ptr_equal(q[1], e);
    assert_ptr_equal(q[2], a);
    assert_ptr_equal(q[3], d);
    assert_int_equal(br_user_get(&b, 1, false)->waiting_n, 5);
    assert_int_equal(br_user_get(&b, 1, false)->waiting_reqs, 2);
    /* handing out every image leaves the queue; a fault brings it back in place */
    a->n = 0;
    br_request_requeue(&b, a);
    assert_int_equal(br_user_get(&b, 1, false)->waiting_n, 3);
    queue_ids(&b, q, 8, &n);
    assert_int_equal(n, 3);
    a->n = 1;
    br_request_requeue(&b, a);
    queue_ids(&b, q, 8, &n);
    assert_int_equal(n, 4);
    assert_ptr_equal(q[2], a);
    assert_int_equal(br_user_get(&b, 1, false)->waiting_n, 4);
    /* the per-model queue holds the same requests in the same order */
    br_mqueue *mq = br_model_queue(&b, "m");
    assert_non_null(mq);
    assert_int_equal(mq->len, 4);
    assert_ptr_equal(mq->head->r, c);
    assert_ptr_equal(mq->tail->r, d);
    br_request_drop(&b, d);
    assert_int_equal(br_user_get(&b, 1, false)->waiting_n, 1);
    assert_int_equal(b.q_len, 3);
    assert_int_equal(mq->len, 3);
    assert_null(br_model_queue(&b, "other"));
    pthread_mutex_unlock(&b.lock);
    br_index_free(&b);
}

static void test_model_queues_come_and_go(void **st) {
    (void)st;
    broker b;
    memset(&b, 0, sizeof(b));
    assert_int_equal(br_index_init(&b), 0);
    br_request *x = req(&b, 1, 0, 1, 1000, "x");
    br_request *any = req(&b, 1, 0, 1, 1000, "x");
    /* a request naming no model waits in the any-model list */
    free(any->s.models[0]);
    any->s.n_models = 0;
    any->n = 0;
    br_request_requeue(&b, any);
    any->n = 1;
    br_request_requeue(&b, any);
    assert_int_equal(b.any_queue.len, 1);
    assert_int_equal(br_model_queue(&b, "x")->len, 1);
    x->n = 0;
    br_request_requeue(&b, x);
    assert_null(br_model_queue(&b, "x")); /* empty lists are dropped */
    br_request_drop(&b, any);
    assert_int_equal(b.any_queue.len, 0);
    br_index_free(&b);
}

static void test_anonymous_counts_per_model(void **st) {
    (void)st;
    broker b;
    memset(&b, 0, sizeof(b));
    assert_int_equal(br_index_init(&b), 0);
    br_request *x = req(&b, 0, 0, 4, 1000, "x");
    req(&b, 0, 0, 2, 1000, "y");
    br_user *anon = br_user_get(&b, 0, false);
    assert_int_equal(br_user_model_waiting(anon, "x"), 4);
    assert_int_equal(br_user_model_waiting(anon, "y"), 2);
    assert_int_equal(br_user_model_waiting(anon, "z"), 0);
    x->n = 1;
    br_request_requeue(&b, x);
    assert_int_equal(br_user_model_waiting(anon, "x"), 1);
    br_request_drop(&b, x);
    assert_int_equal(br_user_model_waiting(anon, "x"), 0);
    br_index_free(&b);
}

static void test_expiry_heap_is_lazy(void **st) {
    (void)st;
    broker b;
    memset(&b, 0, sizeof(b));
    assert_int_equal(br_index_init(&b), 0);
    br_request *early = req(&b, 1, 0, 1, 100, "m");
    br_request *late = req(&b, 1, 0, 1, 300, "m");
    br_request *pushed = req(&b, 1, 0, 1, 50, "m");
    pushed->expiry_ms = 500; /* a pop pushed it back */
    assert_null(br_request_next_expired(&b, 40));
    assert_ptr_equal(br_request_next_expired(&b, 200), early);
    br_request_drop(&b, early);
    assert_null(br_request_next_expired(&b, 200)); /* `pushed` went back in at 500 */
    assert_ptr_equal(br_request_next_expired(&b, 400), late);
    br_request_drop(&b, late);
    assert_ptr_equal(br_request_next_expired(&b, 600), pushed);
    br_request_drop(&b, pushed);
    assert_null(br_request_next_expired(&b, 10000));
    /* many, out of order: they come out sorted */
    int64_t last = 0;
    for (int i = 0; i < 500; i++)
        req(&b, 2, 0, 1, (i * 7919) % 1000, "m");
    br_request *r;
    int count = 0;
    while ((r = br_request_next_expired(&b, 5000)) != NULL) {
        assert_true(r->expiry_ms >= last);
        last = r->expiry_ms;
        br_request_drop(&b, r);
        count++;
    }
    assert_int_equal(count, 500);
    br_index_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_queue_order_and_sums),
        cmocka_unit_test(test_model_queues_come_and_go),
        cmocka_unit_test(test_anonymous_counts_per_model),
        cmocka_unit_test(test_expiry_heap_is_lazy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
