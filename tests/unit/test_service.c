/* Unit tests for the per-instance request counters of a service
 * (src/upstream/service.h: zg_service_instance_done and _stats): counted
 * by key, errors as 5xx or no response, and a full table starting over. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "upstream/service.h"

/* cmocka.h needs these first; its own block so that sorting keeps it last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static void test_counts_by_instance(void **state) {
  zg_service_t *svc = calloc(1, sizeof(*svc));
  zg_instance_stats_t st;
  (void)state;
  memset(&st, 0, sizeof(st));
  assert_int_equal(zg_service_instance_stats(svc, "10.0.0.1:80", &st), 0);
  zg_service_instance_done(svc, "10.0.0.1:80", 200, 1000);
  zg_service_instance_done(svc, "10.0.0.1:80", 503, 3000);
  zg_service_instance_done(svc, "10.0.0.1:80", 0, 0);   /* no response */
  zg_service_instance_done(svc, "10.0.0.1:80", 404, 0); /* not an error */
  zg_service_instance_done(svc, "10.0.0.2:80", 200, 500);
  zg_service_instance_done(svc, "", 200, 500); /* no instance: nothing */
  zg_service_instance_done(svc, NULL, 200, 500);
  assert_int_equal(zg_service_instance_stats(svc, "10.0.0.1:80", &st), 1);
  assert_int_equal(st.requests, 4);
  assert_int_equal(st.errors, 2);
  assert_int_equal(st.dur_sum_us, 4000);
  /* Adds up: the admin sums the workers' tables. */
  assert_int_equal(zg_service_instance_stats(svc, "10.0.0.2:80", &st), 1);
  assert_int_equal(st.requests, 5);
  assert_int_equal(st.dur_sum_us, 4500);
  free(svc->inst_stats);
  free(svc);
}

static void test_full_table_starts_over(void **state) {
  zg_service_t *svc = calloc(1, sizeof(*svc));
  zg_instance_stats_t st;
  char key[32];
  (void)state;
  for (int i = 0; i < ZG_INSTANCE_STATS_SLOTS; i++) {
    snprintf(key, sizeof(key), "10.0.1.%d:80", i);
    zg_service_instance_done(svc, key, 200, 1);
  }
  for (int i = 0; i < ZG_INSTANCE_STATS_SLOTS; i++) {
    memset(&st, 0, sizeof(st));
    snprintf(key, sizeof(key), "10.0.1.%d:80", i);
    assert_int_equal(zg_service_instance_stats(svc, key, &st), 1);
    assert_int_equal(st.requests, 1);
  }
  zg_service_instance_done(svc, "10.0.2.1:80", 200, 1); /* one too many */
  memset(&st, 0, sizeof(st));
  assert_int_equal(zg_service_instance_stats(svc, "10.0.2.1:80", &st), 1);
  assert_int_equal(st.requests, 1);
  assert_int_equal(zg_service_instance_stats(svc, "10.0.1.0:80", &st), 0);
  free(svc->inst_stats);
  free(svc);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_counts_by_instance),
      cmocka_unit_test(test_full_table_starts_over),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
