/* Unit tests for block pools (src/core/bufpool.h). */
#include <stdlib.h>
#include <string.h>

#include "core/bufpool.h"

/* cmocka.h needs these first; its own block so that sorting keeps it last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* A steady state of get/put pairs allocates once, then reuses. */
static void test_reuse(void **state) {
  zg_bufpool_t p;
  char *a, *b;
  (void)state;
  zg_bufpool_init(&p, 1024, 4);
  a = zg_bufpool_get(&p);
  assert_non_null(a);
  memset(a, 'x', 1024); /* the whole block is the caller's */
  zg_bufpool_put(&p, a);
  for (int i = 0; i < 1000; i++) {
    b = zg_bufpool_get(&p);
    assert_ptr_equal(b, a);
    zg_bufpool_put(&p, b);
  }
  assert_int_equal(p.allocs, 1);
  assert_int_equal(p.n_out, 0);
  assert_int_equal(p.n_free, 1);
  zg_bufpool_clear(&p);
  assert_int_equal(p.n_free, 0);
}

/* No more than max_free blocks are kept: after a burst the rest go back
 * to the allocator. */
static void test_bounded(void **state) {
  zg_bufpool_t p;
  void *blocks[10];
  (void)state;
  zg_bufpool_init(&p, 64, 3);
  for (int i = 0; i < 10; i++)
    assert_non_null(blocks[i] = zg_bufpool_get(&p));
  assert_int_equal(p.n_out, 10);
  assert_int_equal(p.allocs, 10);
  for (int i = 0; i < 10; i++)
    zg_bufpool_put(&p, blocks[i]);
  assert_int_equal(p.n_out, 0);
  assert_int_equal(p.n_free, 3);
  /* Blocks come back last in, first out (warm in the cache). */
  assert_ptr_equal(zg_bufpool_get(&p), blocks[2]);
  assert_ptr_equal(zg_bufpool_get(&p), blocks[1]);
  assert_ptr_equal(zg_bufpool_get(&p), blocks[0]);
  assert_int_equal(p.n_free, 0);
  for (int i = 0; i < 3; i++)
    zg_bufpool_put(&p, blocks[i]);
  zg_bufpool_clear(&p);
}

/* NULL is a no-op; tiny sizes still hold the free-list link; max_free 0
 * keeps nothing. */
static void test_edges(void **state) {
  zg_bufpool_t p;
  void *a;
  (void)state;
  zg_bufpool_init(&p, 1, 0);
  assert_true(p.size >= sizeof(void *));
  zg_bufpool_put(&p, NULL);
  assert_int_equal(p.n_out, 0);
  a = zg_bufpool_get(&p);
  assert_non_null(a);
  zg_bufpool_put(&p, a);
  assert_int_equal(p.n_free, 0);
  assert_int_equal(p.n_out, 0);
  zg_bufpool_clear(&p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_reuse),
      cmocka_unit_test(test_bounded),
      cmocka_unit_test(test_edges),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
