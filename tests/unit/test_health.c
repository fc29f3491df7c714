/* Unit tests for rise and fall counting (src/core/health.h). */
#include <stdbool.h>
#include <string.h>

#include "core/health.h"

/* cmocka.h needs these first; its own block so that sorting keeps it last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* Feeds "PPF..." (P: pass, F: fail) and returns the changes as "..U.D". */
static void feed(zg_health_t *h, const char *results, char *changes) {
  size_t i;
  for (i = 0; results[i]; i++) {
    zg_health_change_t c = zg_health_record(h, results[i] == 'P');
    changes[i] = c == ZG_HEALTH_UP ? 'U' : c == ZG_HEALTH_DOWN ? 'D' : '.';
  }
  changes[i] = '\0';
}

static void expect(unsigned rise, unsigned fall, bool healthy,
                   const char *results, const char *want) {
  zg_health_t h;
  char got[64];
  zg_health_init(&h, rise, fall, healthy);
  feed(&h, results, got);
  if (strcmp(got, want) != 0)
    fail_msg("rise %u fall %u from %s: %s gave %s, expected %s", rise, fall,
             healthy ? "healthy" : "unhealthy", results, got, want);
}

static void test_rise_and_fall(void **state) {
  (void)state;
  expect(2, 2, false, "PP", ".U");
  expect(2, 3, false, "PPFFFPP", ".U..D.U");
  expect(1, 1, false, "PFPF", "UDUD");
  expect(3, 2, true, "FFPPP", ".D..U");
  expect(2, 2, true, "PPPP", "....");
  expect(2, 2, false, "FFFF", "....");
}

/* Only results in a row count: scattered ones never flip the state. */
static void test_only_consecutive_results_count(void **state) {
  (void)state;
  expect(2, 2, true, "FPFPFPFP", "........");
  expect(2, 2, false, "PFPFPFPF", "........");
  expect(3, 3, true, "FFPFFPFF", "........");
  expect(3, 3, true, "FFPFFF", ".....D");
}

static void test_counts(void **state) {
  zg_health_t h;
  (void)state;
  zg_health_init(&h, 2, 3, false);
  zg_health_record(&h, true);
  assert_int_equal(h.passes, 1);
  assert_false(h.healthy);
  zg_health_record(&h, false);
  assert_int_equal(h.passes, 0);
  assert_int_equal(h.failures, 1);
  zg_health_init(&h, 0, 0, true); /* 0 means 1 */
  assert_int_equal(zg_health_record(&h, false), ZG_HEALTH_DOWN);
  assert_int_equal(zg_health_record(&h, true), ZG_HEALTH_UP);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rise_and_fall),
      cmocka_unit_test(test_only_consecutive_results_count),
      cmocka_unit_test(test_counts),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
