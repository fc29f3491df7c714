/* Unit tests for the intrusive lists (src/core/list.h): zg_list_t and the
 * first-in first-out zg_queue_t. */
#include <stdlib.h>
#include <string.h>

#include "core/list.h"

/* cmocka.h needs these first; its own block so that sorting keeps it last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* The link is not the first member: ZG_LIST_ITEM must subtract its
 * offset. */
typedef struct {
  int id;
  zg_link_t link;
} item_t;

static item_t *item_of(zg_link_t *l) {
  return l ? ZG_LIST_ITEM(l, item_t, link) : NULL;
}

/* The ids in list order into out; how many. */
static size_t ids(const zg_list_t *l, int *out, size_t max) {
  size_t n = 0;
  ZG_LIST_FOREACH(it, l) {
    if (n < max)
      out[n] = item_of(it)->id;
    n++;
  }
  return n;
}

static void test_zeroed_list_is_empty(void **state) {
  zg_list_t l;
  zg_link_t n;
  (void)state;
  memset(&l, 0, sizeof(l));
  memset(&n, 0, sizeof(n));
  assert_true(zg_list_empty(&l));
  assert_int_equal(zg_list_count(&l), 0);
  assert_false(zg_link_linked(&n));
  zg_link_remove(&n); /* in no list: nothing */
  assert_false(zg_link_linked(&n));
  assert_true(zg_list_empty(&l));
}

static void test_push_puts_the_latest_first(void **state) {
  zg_list_t l = {0};
  item_t a = {1, {0}}, b = {2, {0}}, c = {3, {0}};
  int got[4];
  (void)state;
  zg_list_push(&l, &a.link);
  zg_list_push(&l, &b.link);
  zg_list_push(&l, &c.link);
  assert_false(zg_list_empty(&l));
  assert_int_equal(ids(&l, got, 4), 3);
  assert_int_equal(got[0], 3);
  assert_int_equal(got[1], 2);
  assert_int_equal(got[2], 1);
  assert_int_equal(zg_list_count(&l), 3);
  assert_ptr_equal(item_of(l.first), &c);
  assert_true(zg_link_linked(&a.link));
}

/* First, middle and last leave without the list being named, and the
 * others stay linked both ways. */
static void test_remove_anywhere(void **state) {
  zg_list_t l = {0};
  item_t it[5];
  int got[5];
  (void)state;
  for (int i = 0; i < 5; i++) {
    it[i] = (item_t){i, {0}};
    zg_list_push(&l, &it[i].link); /* order: 4 3 2 1 0 */
  }
  zg_link_remove(&it[2].link); /* middle */
  assert_int_equal(ids(&l, got, 5), 4);
  assert_int_equal(got[0], 4);
  assert_int_equal(got[1], 3);
  assert_int_equal(got[2], 1);
  assert_int_equal(got[3], 0);
  zg_link_remove(&it[4].link); /* first */
  assert_ptr_equal(item_of(l.first), &it[3]);
  assert_ptr_equal(it[3].link.pprev, &l.first);
  zg_link_remove(&it[0].link); /* last */
  assert_null(it[1].link.next);
  assert_int_equal(ids(&l, got, 5), 2);
  assert_int_equal(got[0], 3);
  assert_int_equal(got[1], 1);
  assert_false(zg_link_linked(&it[0].link));
  assert_null(it[0].link.next);
  zg_link_remove(&it[0].link); /* twice: nothing */
  assert_int_equal(zg_list_count(&l), 2);
  /* A removed link can join again. */
  zg_list_push(&l, &it[2].link);
  assert_int_equal(ids(&l, got, 5), 3);
  assert_int_equal(got[0], 2);
  zg_link_remove(&it[3].link);
  zg_link_remove(&it[1].link);
  zg_link_remove(&it[2].link);
  assert_true(zg_list_empty(&l));
}

/* The _SAFE walk survives removing (and freeing) the element it is on,
 * as the session lists do when a drain ends idle sessions. */
static void test_foreach_safe_removes_as_it_goes(void **state) {
  zg_list_t l = {0};
  int got[8];
  size_t kept = 0;
  (void)state;
  for (int i = 0; i < 8; i++) {
    item_t *x = malloc(sizeof(*x));
    assert_non_null(x);
    *x = (item_t){i, {0}};
    zg_list_push(&l, &x->link);
  }
  ZG_LIST_FOREACH_SAFE(it, &l) {
    item_t *x = item_of(it);
    if (x->id % 2 == 0) {
      zg_link_remove(it);
      memset(x, 0xA5, sizeof(*x)); /* a use after this would show */
      free(x);
    }
  }
  assert_int_equal(ids(&l, got, 8), 4);
  assert_int_equal(got[0], 7);
  assert_int_equal(got[1], 5);
  assert_int_equal(got[2], 3);
  assert_int_equal(got[3], 1);
  ZG_LIST_FOREACH_SAFE(it, &l) {
    zg_link_remove(it);
    free(item_of(it));
    kept++;
  }
  assert_int_equal(kept, 4);
  assert_true(zg_list_empty(&l));
}

/* ---- zg_queue_t ---------------------------------------------------- */

/* The ids in queue order into out; how many. */
static size_t qids(const zg_queue_t *q, int *out, size_t max) {
  size_t n = 0;
  for (zg_link_t *it = q->first; it; it = it->next) {
    if (n < max)
      out[n] = item_of(it)->id;
    n++;
  }
  return n;
}

static void test_queue_zeroed_is_empty(void **state) {
  zg_queue_t q;
  zg_link_t n;
  (void)state;
  memset(&q, 0, sizeof(q));
  memset(&n, 0, sizeof(n));
  assert_true(zg_queue_empty(&q));
  assert_null(zg_queue_pop(&q));
  zg_queue_remove(&q, &n); /* in no list: nothing */
  assert_true(zg_queue_empty(&q));
  assert_false(zg_link_linked(&n));
}

/* First in, first out; emptied, it takes links again. */
static void test_queue_pops_in_push_order(void **state) {
  zg_queue_t q = {0};
  item_t it[4];
  int got[4];
  (void)state;
  for (int round = 0; round < 2; round++) {
    for (int i = 0; i < 4; i++) {
      it[i] = (item_t){i + 10 * round, {0}};
      zg_queue_push(&q, &it[i].link);
    }
    assert_int_equal(qids(&q, got, 4), 4);
    assert_int_equal(got[0], 10 * round);
    assert_int_equal(got[3], 3 + 10 * round);
    for (int i = 0; i < 4; i++) {
      zg_link_t *n = zg_queue_pop(&q);
      assert_ptr_equal(item_of(n), &it[i]);
      assert_false(zg_link_linked(n));
    }
    assert_true(zg_queue_empty(&q));
    assert_null(zg_queue_pop(&q));
  }
}

/* Links leave from anywhere; the end follows when the last one leaves, so
 * that the next push lands after the new last. */
static void test_queue_remove_anywhere_keeps_the_end(void **state) {
  zg_queue_t q = {0};
  item_t it[6];
  int got[6];
  (void)state;
  for (int i = 0; i < 5; i++) {
    it[i] = (item_t){i, {0}};
    zg_queue_push(&q, &it[i].link); /* 0 1 2 3 4 */
  }
  zg_queue_remove(&q, &it[2].link); /* middle */
  zg_queue_remove(&q, &it[4].link); /* last */
  zg_queue_remove(&q, &it[4].link); /* twice: nothing */
  it[5] = (item_t){5, {0}};
  zg_queue_push(&q, &it[5].link);
  assert_int_equal(qids(&q, got, 6), 4);
  assert_int_equal(got[0], 0);
  assert_int_equal(got[1], 1);
  assert_int_equal(got[2], 3);
  assert_int_equal(got[3], 5);
  zg_queue_remove(&q, &it[0].link); /* first */
  assert_ptr_equal(item_of(q.first), &it[1]);
  assert_ptr_equal(it[1].link.pprev, &q.first);
  /* Down to one link, which is first and last: removing it empties the
   * queue, and a push is first again. */
  zg_queue_remove(&q, &it[1].link);
  zg_queue_remove(&q, &it[5].link);
  assert_ptr_equal(item_of(zg_queue_pop(&q)), &it[3]);
  assert_true(zg_queue_empty(&q));
  zg_queue_push(&q, &it[2].link);
  assert_ptr_equal(item_of(q.first), &it[2]);
  assert_int_equal(qids(&q, got, 6), 1);
  zg_queue_push(&q, &it[4].link);
  assert_int_equal(qids(&q, got, 6), 2);
  assert_int_equal(got[1], 4);
  zg_queue_remove(&q, &it[4].link);
  zg_queue_remove(&q, &it[2].link);
  assert_true(zg_queue_empty(&q));
  zg_queue_push(&q, &it[0].link);
  assert_ptr_equal(zg_queue_pop(&q), &it[0].link);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_zeroed_list_is_empty),
      cmocka_unit_test(test_push_puts_the_latest_first),
      cmocka_unit_test(test_remove_anywhere),
      cmocka_unit_test(test_foreach_safe_removes_as_it_goes),
      cmocka_unit_test(test_queue_zeroed_is_empty),
      cmocka_unit_test(test_queue_pops_in_push_order),
      cmocka_unit_test(test_queue_remove_anywhere_keeps_the_end),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
