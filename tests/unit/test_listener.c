/* Unit tests for the listener bookkeeping (src/net/listener.h): open and
 * close once with the closed callback, the address check of the first
 * worker (ZG_LISTEN_PROBE), and sets of listeners by address. Real
 * sockets on 127.0.0.1 and a real libuv loop. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "core/config.h"
#include "net/listener.h"

/* cmocka.h needs these first; its own block so that sorting keeps it last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static int closed_calls;
static zg_listener_t *closed_last;

static void on_closed(zg_listener_t *l) {
  closed_calls++;
  closed_last = l;
}

static void on_conn(uv_stream_t *server, int status) {
  (void)server;
  (void)status;
}

static zg_listen_addr_t addr_of(const char *text) {
  zg_listen_addr_t a;
  memset(&a, 0, sizeof(a));
  assert_int_equal(zg_parse_listen(text, &a), 0);
  return a;
}

/* 127.0.0.1:port; port 0 (any free port), which configurations refuse. */
static zg_listen_addr_t loopback(unsigned port) {
  zg_listen_addr_t a;
  memset(&a, 0, sizeof(a));
  assert_int_equal(
      uv_ip4_addr("127.0.0.1", (int)port, (struct sockaddr_in *)&a.ss), 0);
  snprintf(a.text, sizeof(a.text), "127.0.0.1:%u", port);
  return a;
}

/* The port the kernel gave a listener bound to port 0. */
static unsigned port_of(zg_listener_t *l) {
  struct sockaddr_in sin;
  int n = sizeof(sin);
  assert_int_equal(uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&sin, &n), 0);
  return ntohs(sin.sin_port);
}

static void test_open_close_once(void **state) {
  uv_loop_t loop;
  zg_listener_t l;
  zg_listen_addr_t a = loopback(0);
  int owner;
  (void)state;
  closed_calls = 0;
  assert_int_equal(uv_loop_init(&loop), 0);
  memset(&l, 0, sizeof(l));
  assert_int_equal(
      zg_listener_open(&l, &loop, &a, on_conn, 0, &owner, on_closed), 0);
  assert_ptr_equal(l.tcp.data, &owner); /* what the connection cb sees */
  assert_string_equal(l.addr.text, a.text);
  assert_true(l.handle_open);
  assert_true(l.listening);
  assert_true(port_of(&l) > 0);
  zg_listener_close(&l);
  zg_listener_close(&l); /* the second time: nothing */
  assert_false(l.listening);
  assert_true(l.handle_open); /* until the loop closed it */
  assert_int_equal(closed_calls, 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(closed_calls, 1);
  assert_ptr_equal(closed_last, &l);
  assert_false(l.handle_open);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* The first worker checks that nothing listens there yet (another zkgate
 * must not silently share the address); a failed open still closes
 * through the callback. */
static void test_probe_refuses_a_taken_address(void **state) {
  uv_loop_t loop;
  zg_listener_t first, second;
  zg_listen_addr_t a = loopback(0), b;
  (void)state;
  closed_calls = 0;
  assert_int_equal(uv_loop_init(&loop), 0);
  memset(&first, 0, sizeof(first));
  memset(&second, 0, sizeof(second));
  assert_int_equal(zg_listener_open(&first, &loop, &a, on_conn,
                                    ZG_LISTEN_SHARED, NULL, on_closed),
                   0);
  b = loopback(port_of(&first));
  assert_int_equal(zg_listener_open(&second, &loop, &b, on_conn,
                                    ZG_LISTEN_SHARED | ZG_LISTEN_PROBE, NULL,
                                    on_closed),
                   UV_EADDRINUSE);
  assert_true(second.handle_open);
  zg_listener_close(&second);
  zg_listener_close(&first);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(closed_calls, 2);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* Workers share an address: a second SHARED socket binds where the first
 * listens. */
static void test_shared_binds_twice(void **state) {
  uv_loop_t loop;
  zg_listener_t first, second;
  zg_listen_addr_t a = loopback(0), b;
  (void)state;
  closed_calls = 0;
  assert_int_equal(uv_loop_init(&loop), 0);
  memset(&first, 0, sizeof(first));
  memset(&second, 0, sizeof(second));
  assert_int_equal(zg_listener_open(&first, &loop, &a, on_conn,
                                    ZG_LISTEN_SHARED, NULL, on_closed),
                   0);
  b = loopback(port_of(&first));
  assert_int_equal(zg_listener_open(&second, &loop, &b, on_conn,
                                    ZG_LISTEN_SHARED, NULL, on_closed),
                   0);
  zg_listener_close(&first);
  zg_listener_close(&second);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(closed_calls, 2);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* Found by socket address, not by text: "[::1]:80" is "[0:0::1]:80". */
static void test_set_finds_by_address(void **state) {
  zg_listener_set_t set;
  zg_listener_t l[6];
  const char *texts[6] = {"127.0.0.1:8080", "127.0.0.1:8081", "[::1]:8080",
                          "0.0.0.0:8080",   "10.0.0.1:8080",  "[::]:8080"};
  zg_listen_addr_t q;
  (void)state;
  memset(&set, 0, sizeof(set));
  memset(l, 0, sizeof(l));
  q = addr_of(texts[0]);
  assert_null(zg_listener_set_find(&set, &q));
  for (int i = 0; i < 6; i++) {
    l[i].addr = addr_of(texts[i]);
    assert_int_equal(zg_listener_set_add(&set, &l[i]), 0); /* grows past 4 */
  }
  assert_int_equal(set.n, 6);
  for (int i = 0; i < 6; i++)
    assert_ptr_equal(zg_listener_set_find(&set, &l[i].addr), &l[i]);
  q = addr_of("[0:0::1]:8080");
  assert_ptr_equal(zg_listener_set_find(&set, &q), &l[2]);
  q = addr_of("127.0.0.1:8082");
  assert_null(zg_listener_set_find(&set, &q));
  q = addr_of("[::1]:8081");
  assert_null(zg_listener_set_find(&set, &q));
  zg_listener_set_clear(&set);
  assert_int_equal(set.n, 0);
  assert_null(set.items);
  assert_null(zg_listener_set_find(&set, &l[0].addr));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_open_close_once),
      cmocka_unit_test(test_probe_refuses_a_taken_address),
      cmocka_unit_test(test_shared_binds_twice),
      cmocka_unit_test(test_set_finds_by_address),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
