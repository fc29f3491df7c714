/* Unit tests for the intrusive list (src/core/list.h). */
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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_zeroed_list_is_empty),
      cmocka_unit_test(test_push_puts_the_latest_first),
      cmocka_unit_test(test_remove_anywhere),
      cmocka_unit_test(test_foreach_safe_removes_as_it_goes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
