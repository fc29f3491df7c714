/* Unit tests for the idle keep-alive pool of src/upstream/upstream.h: its
 * bookkeeping (which connection a request is given, the cap), without
 * sockets: the connections are never connected or closed here. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "upstream/upstream.h"

/* cmocka.h needs these first; its own block so that sorting keeps it last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static zg_upconn_t mk(const char *key) {
  zg_upconn_t c;
  memset(&c, 0, sizeof(c));
  snprintf(c.key, sizeof(c.key), "%s", key);
  return c;
}

static void pool_init(zg_upidle_t *p, uv_loop_t *loop, unsigned max) {
  memset(p, 0, sizeof(*p));
  p->loop = loop;
  p->max = max;
}

static void test_take_gives_the_latest_for_the_key(void **state) {
  uv_loop_t loop;
  zg_upidle_t p;
  zg_upconn_t a1 = mk("10.0.0.1:80"), b = mk("10.0.0.2:80"),
              a2 = mk("10.0.0.1:80");
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  pool_init(&p, &loop, 8);
  zg_upidle_put(&p, &a1);
  zg_upidle_put(&p, &b);
  zg_upidle_put(&p, &a2);
  assert_int_equal(p.n, 3);
  assert_ptr_equal(a2.idle_in, &p);
  assert_ptr_equal(zg_upidle_take(&p, "10.0.0.1:80", NULL, "x"), &a2);
  assert_null(a2.idle_in);
  assert_ptr_equal(zg_upidle_take(&p, "10.0.0.1:80", NULL, "x"), &a1);
  assert_null(zg_upidle_take(&p, "10.0.0.1:80", NULL, "x"));
  assert_null(zg_upidle_take(&p, "10.0.0.3:80", NULL, "x"));
  assert_int_equal(p.n, 1);
  assert_ptr_equal(p.idle.first, &b.link);
  assert_ptr_equal(b.link.pprev, &p.idle.first);
  assert_null(b.link.next);
  assert_ptr_equal(zg_upidle_take(&p, "10.0.0.2:80", NULL, "x"), &b);
  assert_true(zg_list_empty(&p.idle));
  assert_false(zg_link_linked(&b.link));
  assert_int_equal(p.n, 0);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_plain_is_never_given_for_tls(void **state) {
  uv_loop_t loop;
  zg_upidle_t p;
  zg_upconn_t a = mk("10.0.0.1:443");
  /* Any non-NULL context: a plain connection must not match it. */
  const zg_tls_client_t *cli = (const zg_tls_client_t *)&loop;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  pool_init(&p, &loop, 8);
  zg_upidle_put(&p, &a);
  assert_null(zg_upidle_take(&p, "10.0.0.1:443", cli, "example.com"));
  assert_int_equal(p.n, 1);
  assert_ptr_equal(zg_upidle_take(&p, "10.0.0.1:443", NULL, "example.com"), &a);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_full_at_max_and_closing_ones_skipped(void **state) {
  uv_loop_t loop;
  zg_upidle_t p;
  zg_upconn_t a = mk("h:1"), b = mk("h:1");
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  pool_init(&p, &loop, 2);
  assert_false(zg_upidle_full(&p));
  zg_upidle_put(&p, &a);
  assert_false(zg_upidle_full(&p));
  zg_upidle_put(&p, &b);
  assert_true(zg_upidle_full(&p));
  b.closing = 1; /* on its way out: not to be handed to anyone */
  assert_ptr_equal(zg_upidle_take(&p, "h:1", NULL, "h"), &a);
  assert_false(zg_upidle_full(&p));
  assert_null(zg_upidle_take(&p, "h:1", NULL, "h"));
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_take_gives_the_latest_for_the_key),
      cmocka_unit_test(test_plain_is_never_given_for_tls),
      cmocka_unit_test(test_full_at_max_and_closing_ones_skipped),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
