/* Unit tests for the health marks and per-service-name state the workers
 * share (src/upstream/marks.h). Times are given, not read from a clock. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "upstream/marks.h"

/* cmocka.h needs these first; its own block so that sorting keeps it last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static void test_mark_is_fresh_once_until_it_expires(void **state) {
  zg_marks_t *m = zg_marks_new();
  (void)state;
  assert_non_null(m);
  assert_false(zg_marks_any_failed(m, 1000));
  assert_int_equal(zg_marks_fail(m, "10.0.0.1:80", 1000, 500), 1);
  /* Marked again while marked: not a new ejection, but extended. */
  assert_int_equal(zg_marks_fail(m, "10.0.0.1:80", 1200, 500), 0);
  assert_true(zg_marks_any_failed(m, 1600));
  assert_true(zg_marks_is_failed(m, "10.0.0.1:80", 1699));
  assert_false(zg_marks_is_failed(m, "10.0.0.2:80", 1699));
  assert_false(zg_marks_is_failed(m, "10.0.0.1:80", 1700));
  assert_false(zg_marks_any_failed(m, 1700));
  /* Expired: the next failure is an ejection again. */
  assert_int_equal(zg_marks_fail(m, "10.0.0.1:80", 1700, 500), 1);
  zg_marks_free(m);
}

static void
test_marked_again_behind_an_expired_slot_is_not_fresh(void **state) {
  zg_marks_t *m = zg_marks_new();
  (void)state;
  assert_non_null(m);
  assert_int_equal(zg_marks_fail(m, "10.0.0.1:80", 1000, 100), 1);
  assert_int_equal(zg_marks_fail(m, "10.0.0.2:80", 1050, 1000), 1);
  /* The first slot has expired; the second instance, still marked, fails
   * again: extended, not a new ejection (no second warning, no second
   * count in zkgate_health_ejections_total), and it stays marked as long
   * as the new failure says. */
  assert_int_equal(zg_marks_fail(m, "10.0.0.2:80", 1200, 1000), 0);
  assert_true(zg_marks_is_failed(m, "10.0.0.2:80", 2199));
  assert_false(zg_marks_is_failed(m, "10.0.0.2:80", 2200));
  assert_false(zg_marks_is_failed(m, "10.0.0.1:80", 1200));
  zg_marks_free(m);
}

static void test_expired_slots_are_reused(void **state) {
  zg_marks_t *m = zg_marks_new();
  char key[32];
  (void)state;
  assert_non_null(m);
  for (int i = 0; i < 40; i++) {
    snprintf(key, sizeof(key), "10.0.0.%d:80", i);
    assert_int_equal(zg_marks_fail(m, key, 1000 + (uint64_t)i * 100, 50), 1);
    /* Each earlier mark has expired by now: only this one holds. */
    assert_true(zg_marks_is_failed(m, key, 1000 + (uint64_t)i * 100 + 10));
    if (i > 0) {
      snprintf(key, sizeof(key), "10.0.0.%d:80", i - 1);
      assert_false(zg_marks_is_failed(m, key, 1000 + (uint64_t)i * 100 + 10));
    }
  }
  /* The lock-free check keeps the latest end, not the last written. */
  assert_int_equal(zg_marks_fail(m, "a:1", 10000, 5000), 1);
  assert_int_equal(zg_marks_fail(m, "b:1", 10001, 10), 1);
  assert_true(zg_marks_any_failed(m, 14000));
  zg_marks_lock(m);
  assert_true(zg_marks_is_failed_locked(m, "a:1", 14000));
  assert_false(zg_marks_is_failed_locked(m, "b:1", 14000));
  zg_marks_unlock(m);
  zg_marks_free(m);
}

static void test_service_state_is_one_per_name(void **state) {
  zg_marks_t *m = zg_marks_new();
  zg_marks_svc_t *a, *b, *a2;
  char name[32];
  uint64_t dropped = 0;
  (void)state;
  assert_non_null(m);
  a = zg_marks_service(m, "web");
  b = zg_marks_service(m, "api");
  assert_non_null(a);
  assert_non_null(b);
  assert_ptr_not_equal(a, b);
  a->rr = 7;
  /* Many more names (the table grows): "web" keeps its address. */
  for (int i = 0; i < 50; i++) {
    snprintf(name, sizeof(name), "svc%d", i);
    assert_non_null(zg_marks_service(m, name));
  }
  a2 = zg_marks_service(m, "web");
  assert_ptr_equal(a, a2);
  assert_int_equal(a2->rr, 7);
  /* The log limiters start open. */
  assert_true(zg_marks_log_allowed(m, &a->connect_fail_rl, &dropped));
  assert_int_equal(dropped, 0);
  zg_marks_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mark_is_fresh_once_until_it_expires),
      cmocka_unit_test(test_marked_again_behind_an_expired_slot_is_not_fresh),
      cmocka_unit_test(test_expired_slots_are_reused),
      cmocka_unit_test(test_service_state_is_one_per_name),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
