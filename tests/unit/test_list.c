/* Unit tests for the intrusive lists (src/core/list.h): zg_list_t and the
 * first-in first-out zg_queue_t, and zg_walk (a walk its body may change). */
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

/* ---- zg_walk: one pass that its body may change ------------------------ */

/* n heap items, ids 1..n, pushed so that the list reads 1..n. */
static void fill(zg_list_t *l, item_t **it, int n) {
  for (int i = n; i >= 1; i--) {
    it[i] = calloc(1, sizeof(item_t));
    assert_non_null(it[i]);
    it[i]->id = i;
    zg_list_push(l, &it[i]->link);
  }
}

static void drop(zg_walk_t *top, item_t **it, int id) {
  zg_walk_remove(top, &it[id]->link);
  free(it[id]);
  it[id] = NULL;
}

static void drain_list(zg_list_t *l) {
  zg_link_t *n;
  while ((n = l->first) != NULL) {
    zg_link_remove(n);
    free(item_of(n));
  }
}

static void test_walk_visits_each_once_in_order(void **state) {
  zg_list_t l = {0};
  item_t *it[6];
  zg_walk_t *top = NULL, w;
  zg_link_t *n;
  int got[8], k = 0;
  (void)state;
  fill(&l, it, 5);
  zg_walk_begin(&top, &w, &l);
  assert_ptr_equal(top, &w);
  while ((n = zg_walk_next(&w)) != NULL && k < 8)
    got[k++] = item_of(n)->id;
  zg_walk_end(&top, &w);
  assert_null(top);
  assert_int_equal(k, 5);
  for (int i = 0; i < 5; i++)
    assert_int_equal(got[i], i + 1);
  assert_null(zg_walk_next(&w)); /* stays at the end */
  drain_list(&l);
}

/* The body frees the element it visits, the one the walk was to visit
 * next, and one it visited before: the walk goes on with the one after,
 * and reads no freed element (ASan would tell). */
static void test_walk_body_frees_current_next_and_earlier(void **state) {
  zg_list_t l = {0};
  item_t *it[7];
  zg_walk_t *top = NULL, w;
  zg_link_t *n;
  int got[8], k = 0, left[8];
  (void)state;
  fill(&l, it, 6);
  zg_walk_begin(&top, &w, &l);
  while ((n = zg_walk_next(&w)) != NULL && k < 8) {
    int id = item_of(n)->id;
    got[k++] = id;
    if (id == 3) {
      drop(top, it, 3); /* itself */
      drop(top, it, 4); /* the next one */
      drop(top, it, 1); /* one visited */
    }
  }
  zg_walk_end(&top, &w);
  assert_int_equal(k, 5);
  assert_int_equal(got[0], 1);
  assert_int_equal(got[1], 2);
  assert_int_equal(got[2], 3);
  assert_int_equal(got[3], 5);
  assert_int_equal(got[4], 6);
  assert_int_equal(ids(&l, left, 8), 3);
  assert_int_equal(left[0], 2);
  assert_int_equal(left[1], 5);
  assert_int_equal(left[2], 6);
  drain_list(&l);
}

/* What the body pushes goes first, behind the walk: not visited. The
 * element visited taken out and pushed again (waits on) is not visited
 * again either: the walk ends. */
static void test_walk_pushes_go_behind_it(void **state) {
  zg_list_t l = {0};
  item_t *it[5], extra = {9, {0}};
  zg_walk_t *top = NULL, w;
  zg_link_t *n;
  int got[16], k = 0, left[8];
  (void)state;
  fill(&l, it, 4);
  zg_walk_begin(&top, &w, &l);
  while ((n = zg_walk_next(&w)) != NULL && k < 16) {
    got[k++] = item_of(n)->id;
    zg_walk_remove(top, n);
    zg_list_push(&l, n); /* every one waits on */
    if (item_of(n)->id == 2)
      zg_list_push(&l, &extra.link);
  }
  zg_walk_end(&top, &w);
  assert_int_equal(k, 4);
  for (int i = 0; i < 4; i++)
    assert_int_equal(got[i], i + 1);
  assert_int_equal(ids(&l, left, 8), 5);
  zg_link_remove(&extra.link);
  drain_list(&l);
}

/* A walk begun in the body of another frees what the outer one was to
 * visit next; the outer one goes on after them. */
static void test_walk_nested_removals_move_the_outer_walk(void **state) {
  zg_list_t l = {0};
  item_t *it[7];
  zg_walk_t *top = NULL, w;
  zg_link_t *n;
  int got[8], k = 0, inner = 0;
  (void)state;
  fill(&l, it, 6);
  zg_walk_begin(&top, &w, &l);
  while ((n = zg_walk_next(&w)) != NULL && k < 8) {
    got[k++] = item_of(n)->id;
    if (item_of(n)->id == 2) {
      zg_walk_t w2;
      zg_link_t *n2;
      zg_walk_begin(&top, &w2, &l);
      assert_ptr_equal(top, &w2);
      while ((n2 = zg_walk_next(&w2)) != NULL) {
        int id = item_of(n2)->id;
        inner++;
        if (id == 3 || id == 4)
          drop(top, it, id);
      }
      zg_walk_end(&top, &w2);
      assert_ptr_equal(top, &w);
    }
  }
  zg_walk_end(&top, &w);
  assert_null(top);
  assert_int_equal(inner, 6);
  assert_int_equal(k, 4);
  assert_int_equal(got[0], 1);
  assert_int_equal(got[1], 2);
  assert_int_equal(got[2], 5);
  assert_int_equal(got[3], 6);
  drain_list(&l);
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
      cmocka_unit_test(test_walk_visits_each_once_in_order),
      cmocka_unit_test(test_walk_body_frees_current_next_and_earlier),
      cmocka_unit_test(test_walk_pushes_go_behind_it),
      cmocka_unit_test(test_walk_nested_removals_move_the_outer_walk),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
