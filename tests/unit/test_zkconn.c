/* Unit tests for the connect string's resolution (zg_zkhosts_t in
 * src/registry/zkconn.h): parsing, and addresses that need no resolver
 * are ready at once, in the form the ZooKeeper client parses (it splits
 * host and port at the last ':', so IPv6 goes without brackets), with the
 * chroot kept for zookeeper_init and left out for zoo_set_servers. */
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "registry/zkconn.h"

/* cmocka.h needs these first; its own block so that sorting keeps it last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static void test_addresses_ready_at_once(void **state) {
  uv_loop_t loop;
  zg_zkhosts_t zr;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(zg_zkhosts_init(&loop, &zr,
                                   "127.0.0.1:2181, [::1]:2182/apps/prod",
                                   "test", NULL, NULL),
                   0);
  assert_int_equal(zr.n, 2);
  assert_string_equal(zr.servers, "127.0.0.1:2181,::1:2182");
  assert_string_equal(zr.connect, "127.0.0.1:2181,::1:2182/apps/prod");
  /* Nothing to resolve: no request goes out. */
  zg_zkhosts_resolve(&zr);
  assert_null(zr.round);
  zg_zkhosts_close(&zr);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_names_wait_for_resolution(void **state) {
  uv_loop_t loop;
  zg_zkhosts_t zr;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(zg_zkhosts_init(&loop, &zr, "zk1.example:2181,10.0.0.2:2181",
                                   "test", NULL, NULL),
                   0);
  /* The literal address is usable before the name has resolved. */
  assert_string_equal(zr.connect, "10.0.0.2:2181");
  assert_string_equal(zr.host[0], "zk1.example");
  assert_string_equal(zr.port[0], "2181");
  zg_zkhosts_close(&zr);
  assert_int_equal(uv_loop_close(&loop), 0);

  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(
      zg_zkhosts_init(&loop, &zr, "zk1.example:2181/c", "test", NULL, NULL), 0);
  assert_null(zr.connect);
  zg_zkhosts_close(&zr);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_bad_connect_strings(void **state) {
  static const char *const bad[] = {"",          "zk1",       "zk1:",   ":2181",
                                    "[::1]2181", "[::1:2181", "/chroot"};
  uv_loop_t loop;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    zg_zkhosts_t zr;
    assert_int_equal(zg_zkhosts_init(&loop, &zr, bad[i], "test", NULL, NULL),
                     UV_EINVAL);
  }
  assert_int_equal(uv_loop_close(&loop), 0);
}

typedef struct {
  int calls, status;
} resolved_t;

static void on_resolved(zg_zkhosts_t *zr, int status, int changed) {
  resolved_t *r = zr->data;
  (void)changed;
  r->calls++;
  r->status = status;
}

/* The name is resolved on a thread of ours and the result lands on the
 * loop ("localhost" comes from /etc/hosts: no name server is asked). */
static void test_name_resolves_on_the_loop(void **state) {
  uv_loop_t loop;
  zg_zkhosts_t zr;
  resolved_t r = {0, 1};
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(
      zg_zkhosts_init(&loop, &zr, "localhost:2181/c", "test", on_resolved, &r),
      0);
  zg_zkhosts_resolve(&zr);
  assert_non_null(zr.round);
  assert_int_equal(r.calls, 0); /* never from inside zg_zkhosts_resolve */
  zg_zkhosts_resolve(&zr);      /* one out already: no second one */
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(r.calls, 1);
  assert_null(zr.round);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(zr.connect, ":2181"));
  assert_non_null(strstr(zr.connect, "/c"));
  zg_zkhosts_close(&zr);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* A resolution still out at close is abandoned: the loop ends at once (its
 * handle closes), the callback never runs, the thread frees the rest. */
static void test_close_abandons_a_resolution(void **state) {
  uv_loop_t loop;
  zg_zkhosts_t zr;
  resolved_t r = {0, 1};
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(zg_zkhosts_init(&loop, &zr, "localhost:2181,localhost:2182",
                                   "test", on_resolved, &r),
                   0);
  zg_zkhosts_resolve(&zr);
  assert_non_null(zr.round);
  zg_zkhosts_close(&zr);
  assert_null(zr.round);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(r.calls, 0);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* zg_zkconn (the one driver of the client, for the gateway's source and
 * zkgate-register): a connect string given up front is checked at once,
 * and zg_zkconn_close() says when the owner may free it, after every loop
 * handle it made (the poll of a live handle too) is closed. */
static int closed_calls;

static void on_closed(zg_zkconn_t *zc) {
  (void)zc;
  closed_calls++;
}

static void test_zkconn_hosts_and_close(void **state) {
  uv_loop_t loop;
  zg_zkconn_t *zc = malloc(sizeof(*zc));
  (void)state;
  assert_non_null(zc);
  assert_int_equal(uv_loop_init(&loop), 0);
  zg_zkconn_init(&loop, zc, NULL, NULL);
  assert_int_equal(zg_zkconn_set_hosts(zc, "no-port-here", "test", NULL),
                   UV_EINVAL);
  assert_int_equal(zg_zkconn_set_hosts(zc, "127.0.0.1:1/c", "test", NULL), 0);
  assert_string_equal(zc->hosts.connect, "127.0.0.1:1/c");
  /* Nothing listens on port 1: the handle exists and connects in vain. */
  assert_int_equal(zg_zkconn_open(zc, NULL, 10000, NULL, NULL), 0);
  assert_non_null(zc->zh);
  closed_calls = 0;
  zg_zkconn_close(zc, on_closed);
  assert_null(zc->zh);
  assert_int_equal(closed_calls, 0); /* not before the loop has closed it */
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(closed_calls, 1);
  free(zc); /* what the callback allows: nothing of zc is used after it */
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_addresses_ready_at_once),
      cmocka_unit_test(test_names_wait_for_resolution),
      cmocka_unit_test(test_bad_connect_strings),
      cmocka_unit_test(test_name_resolves_on_the_loop),
      cmocka_unit_test(test_close_abandons_a_resolution),
      cmocka_unit_test(test_zkconn_hosts_and_close),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
