/* Unit tests for the listener bookkeeping (src/net/listener.h): open and
 * close once with the closed callback, the address check of the first
 * worker (ZG_LISTEN_PROBE) and sets of listeners by address, on real
 * sockets on 127.0.0.1 and a real libuv loop; and the reload steps of a
 * set (open the new addresses, sync, discard) with a fake kind of
 * listener that records what the set asked of it, no sockets. */
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

/* ---- reload steps, with a fake kind ------------------------------------
 * The configuration's HTTP services are the kind's addresses; the others
 * are another kind's (the kind returns NULL for them). */

typedef struct {
  zg_listener_t l;
  int discarded, retired;
} fake_listener_t;

typedef struct {
  fake_listener_t pool[8];
  size_t n_made;
  const char *refuse;    /* open fails on this address */
  const char *wanted[8]; /* addresses the running services use */
  char events[256];      /* "o:ADDR d:ADDR r:ADDR " in order */
} fake_ctx_t;

static void note(fake_ctx_t *c, char what, const zg_listen_addr_t *a) {
  size_t len = strlen(c->events);
  snprintf(c->events + len, sizeof(c->events) - len, "%c:%s ", what, a->text);
}

static size_t fake_n_addrs(const zg_config_t *cfg) {
  return cfg->n_services;
}

static const zg_listen_addr_t *fake_addr(const zg_config_t *cfg, size_t i) {
  return cfg->services[i].protocol == ZG_PROTO_HTTP ? &cfg->services[i].listen
                                                    : NULL;
}

static zg_listener_t *fake_open(void *ctx, const zg_listen_addr_t *addr) {
  fake_ctx_t *c = ctx;
  fake_listener_t *f;
  if (c->refuse && !strcmp(addr->text, c->refuse))
    return NULL;
  assert_true(c->n_made < 8);
  f = &c->pool[c->n_made++];
  f->l.addr = *addr;
  note(c, 'o', addr);
  return &f->l;
}

static void fake_discard(void *ctx, zg_listener_t *l) {
  fake_listener_t *f = (fake_listener_t *)l;
  assert_int_equal(f->discarded, 0); /* once */
  f->discarded = 1;
  note(ctx, 'd', &l->addr);
}

static int fake_wanted(void *ctx, const zg_listen_addr_t *addr) {
  fake_ctx_t *c = ctx;
  for (size_t i = 0; i < 8 && c->wanted[i]; i++) {
    zg_listen_addr_t w = addr_of(c->wanted[i]);
    if (zg_config_same_sockaddr(&w, addr))
      return 1;
  }
  return 0;
}

static void fake_retire(void *ctx, zg_listener_t *l) {
  ((fake_listener_t *)l)->retired = 1;
  note(ctx, 'r', &l->addr);
}

static const zg_listener_kind_t fake_kind = {
    "fake",       fake_n_addrs, fake_addr,  fake_open,
    fake_discard, fake_wanted,  fake_retire};

/* A configuration whose services listen on `addrs` (NULL-terminated);
 * those starting with '!' are of another protocol. */
typedef struct {
  zg_config_t cfg;
  zg_service_conf_t svcs[8];
} fake_cfg_t;

static void cfg_of(fake_cfg_t *fc, const char *const *addrs) {
  memset(fc, 0, sizeof(*fc));
  fc->cfg.services = fc->svcs;
  for (size_t i = 0; addrs[i]; i++) {
    int other = addrs[i][0] == '!';
    fc->svcs[i].listen = addr_of(addrs[i] + other);
    fc->svcs[i].protocol = other ? ZG_PROTO_TCP : ZG_PROTO_HTTP;
    fc->cfg.n_services++;
  }
}

/* Only addresses no listener has yet, each once, skipping other kinds. */
static void test_open_new_skips_bound_and_repeated(void **state) {
  fake_ctx_t c;
  fake_cfg_t fc;
  zg_listener_set_t live, out;
  const char *addrs[] = {"127.0.0.1:8080",
                         "127.0.0.1:8081",
                         "!127.0.0.1:9000",
                         "[::1]:8082",
                         "127.0.0.1:8081",
                         "[0:0::1]:8082",
                         NULL};
  (void)state;
  memset(&c, 0, sizeof(c));
  memset(&live, 0, sizeof(live));
  cfg_of(&fc, addrs);
  c.pool[7].l.addr = addr_of("127.0.0.1:8080"); /* bound already */
  assert_int_equal(zg_listener_set_add(&live, &c.pool[7].l), 0);
  memset(&out, 0xff, sizeof(out)); /* made empty first */
  assert_int_equal(
      zg_listener_set_open_new(&live, &fake_kind, &c, &fc.cfg, &out), 0);
  assert_string_equal(c.events, "o:127.0.0.1:8081 o:[::1]:8082 ");
  assert_int_equal(out.n, 2);
  assert_ptr_equal(out.items[0], &c.pool[0].l);
  assert_ptr_equal(out.items[1], &c.pool[1].l);
  assert_int_equal(live.n, 1); /* untouched */
  zg_listener_set_clear(&out);
  zg_listener_set_clear(&live);
}

/* All or none: one address that cannot be bound discards those opened
 * before it, and the live set is as it was. */
static void test_open_new_all_or_none(void **state) {
  fake_ctx_t c;
  fake_cfg_t fc;
  zg_listener_set_t live, out;
  const char *addrs[] = {"127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083",
                         "127.0.0.1:8084", NULL};
  (void)state;
  memset(&c, 0, sizeof(c));
  memset(&live, 0, sizeof(live));
  cfg_of(&fc, addrs);
  c.refuse = "127.0.0.1:8083";
  assert_int_equal(
      zg_listener_set_open_new(&live, &fake_kind, &c, &fc.cfg, &out),
      UV_EADDRINUSE);
  assert_string_equal(c.events, "o:127.0.0.1:8081 o:127.0.0.1:8082 "
                                "d:127.0.0.1:8081 d:127.0.0.1:8082 ");
  assert_int_equal(out.n, 0);
  assert_null(out.items);
  assert_int_equal(live.n, 0);
  assert_false(c.pool[0].retired); /* never in use: not retired */
}

/* Addresses still wanted keep their listener and place; the others are
 * retired, then discarded; the opened ones join at the end. */
static void test_sync_keeps_retires_and_joins(void **state) {
  fake_ctx_t c;
  fake_cfg_t fc;
  zg_listener_set_t live, opened;
  const char *before[] = {"127.0.0.1:8080", "127.0.0.1:8081", "[::1]:8082",
                          NULL};
  const char *after[] = {"[::1]:8082", "127.0.0.1:8080", "127.0.0.1:8090",
                         NULL};
  (void)state;
  memset(&c, 0, sizeof(c));
  memset(&live, 0, sizeof(live));
  cfg_of(&fc, before);
  assert_int_equal(
      zg_listener_set_open_new(&live, &fake_kind, &c, &fc.cfg, &opened), 0);
  c.wanted[0] = "127.0.0.1:8080";
  c.wanted[1] = "127.0.0.1:8081";
  c.wanted[2] = "[::1]:8082";
  assert_int_equal(zg_listener_set_sync(&live, &fake_kind, &c, &opened), 0);
  assert_int_equal(live.n, 3);
  assert_int_equal(opened.n, 0);
  assert_null(opened.items);
  /* The reload: 8081 goes, 8090 comes. */
  c.events[0] = '\0';
  cfg_of(&fc, after);
  assert_int_equal(
      zg_listener_set_open_new(&live, &fake_kind, &c, &fc.cfg, &opened), 0);
  assert_int_equal(opened.n, 1);
  c.wanted[0] = "[::1]:8082";
  c.wanted[1] = "127.0.0.1:8080";
  c.wanted[2] = "127.0.0.1:8090";
  assert_int_equal(zg_listener_set_sync(&live, &fake_kind, &c, &opened), 0);
  assert_string_equal(c.events,
                      "o:127.0.0.1:8090 r:127.0.0.1:8081 d:127.0.0.1:8081 ");
  assert_int_equal(live.n, 3);
  assert_ptr_equal(live.items[0], &c.pool[0].l); /* 8080 */
  assert_ptr_equal(live.items[1], &c.pool[2].l); /* [::1]:8082 */
  assert_ptr_equal(live.items[2], &c.pool[3].l); /* 8090 */
  assert_true(c.pool[1].retired && c.pool[1].discarded);
  assert_false(c.pool[0].retired || c.pool[0].discarded);
  assert_int_equal(opened.n, 0);
  /* Stopping: discard the rest, each once. */
  c.events[0] = '\0';
  zg_listener_set_discard(&live, &fake_kind, &c);
  assert_string_equal(c.events, "d:127.0.0.1:8080 d:[::1]:8082 "
                                "d:127.0.0.1:8090 ");
  assert_int_equal(live.n, 0);
  assert_null(live.items);
}

/* A kind without a retire step: unwanted listeners are only discarded. */
static void test_sync_without_retire(void **state) {
  fake_ctx_t c;
  fake_cfg_t fc;
  zg_listener_set_t live, opened;
  zg_listener_kind_t kind = fake_kind;
  const char *addrs[] = {"127.0.0.1:8080", "127.0.0.1:8081", NULL};
  (void)state;
  kind.retire = NULL;
  memset(&c, 0, sizeof(c));
  memset(&live, 0, sizeof(live));
  cfg_of(&fc, addrs);
  assert_int_equal(zg_listener_set_open_new(&live, &kind, &c, &fc.cfg, &opened),
                   0);
  c.wanted[0] = "127.0.0.1:8081"; /* 8080 is gone before it ever joins */
  assert_int_equal(zg_listener_set_sync(&live, &kind, &c, &opened), 0);
  assert_int_equal(live.n, 2); /* the opened ones join unconditionally */
  c.events[0] = '\0';
  assert_int_equal(zg_listener_set_sync(&live, &kind, &c, &opened), 0);
  assert_string_equal(c.events, "d:127.0.0.1:8080 ");
  assert_false(c.pool[0].retired);
  assert_int_equal(live.n, 1);
  assert_ptr_equal(live.items[0], &c.pool[1].l);
  zg_listener_set_clear(&live);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_open_close_once),
      cmocka_unit_test(test_probe_refuses_a_taken_address),
      cmocka_unit_test(test_shared_binds_twice),
      cmocka_unit_test(test_set_finds_by_address),
      cmocka_unit_test(test_open_new_skips_bound_and_repeated),
      cmocka_unit_test(test_open_new_all_or_none),
      cmocka_unit_test(test_sync_keeps_retires_and_joins),
      cmocka_unit_test(test_sync_without_retire),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
