/* Unit tests for pools (src/core/pool.h) and for the balancer that
 * picks from them (src/core/balance.h). Runs under ASan in CI, so a
 * missing or extra unref shows up as a leak or a use after free. Every
 * random test uses a fixed seed: deterministic, it cannot flake. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/balance.h"
#include "core/instance.h"
#include "core/pool.h"

/* cmocka.h needs these first; its own block so that sorting keeps it last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static zg_instance_t mk(const char *host, uint16_t port, bool tls,
                        const char *base_path, const char *name) {
  zg_instance_t inst;

  memset(&inst, 0, sizeof(inst));
  snprintf(inst.host, sizeof(inst.host), "%s", host);
  inst.port = port;
  inst.tls = tls;
  inst.is_ip = true;
  inst.format = ZG_FORMAT_HOSTPORT;
  if (base_path != NULL) {
    inst.base_path = strdup(base_path);
    assert_non_null(inst.base_path);
  }
  if (name != NULL) {
    inst.name = strdup(name);
    assert_non_null(inst.name);
  }
  return inst;
}

/* In service with the default weight, as the decoders give. */
static zg_instance_t mk_live(const char *host, uint16_t port, bool tls,
                             const char *base_path, const char *name) {
  zg_instance_t inst = mk(host, port, tls, base_path, name);
  inst.up = true;
  inst.weight = ZG_WEIGHT_DEFAULT;
  return inst;
}

static void clear_all(zg_instance_t *inst, size_t n) {
  for (size_t i = 0; i < n; i++)
    zg_instance_clear(&inst[i]);
}

static unsigned refs(zg_pool_t *pool) {
  return atomic_load(&pool->refs);
}

/* ----------------------------------------------------------------- pools */

static void test_pool_new_copies(void **state) {
  zg_instance_t src[2];
  zg_pool_t *pool;

  src[0] = mk("10.0.0.1", 80, false, "/base", "a0000000001");
  src[1] = mk("10.0.0.2", 81, true, NULL, "a0000000002");
  pool = zg_pool_new(src, 2, 7, 123456);
  assert_non_null(pool);
  assert_int_equal(refs(pool), 1);
  assert_int_equal(pool->version, 7);
  assert_int_equal(pool->created_ms, 123456);
  assert_int_equal(pool->n, 2);

  /* Deep copies: the source changes and goes away, the pool does not. */
  assert_ptr_not_equal(pool->inst[0].base_path, src[0].base_path);
  assert_ptr_not_equal(pool->inst[0].name, src[0].name);
  src[0].base_path[1] = 'X';
  src[0].name[0] = 'X';
  strcpy(src[0].host, "192.0.2.99");
  src[0].port = 9;
  src[1].tls = false;
  clear_all(src, 2);

  assert_string_equal(pool->inst[0].host, "10.0.0.1");
  assert_int_equal(pool->inst[0].port, 80);
  assert_false(pool->inst[0].tls);
  assert_string_equal(pool->inst[0].base_path, "/base");
  assert_string_equal(pool->inst[0].name, "a0000000001");
  assert_string_equal(pool->inst[1].host, "10.0.0.2");
  assert_int_equal(pool->inst[1].port, 81);
  assert_true(pool->inst[1].tls);
  assert_null(pool->inst[1].base_path);
  assert_string_equal(pool->inst[1].name, "a0000000002");
  zg_pool_unref(pool);
}

static void test_pool_sorted(void **state) {
  zg_instance_t src[4];
  zg_pool_t *pool;

  src[0] = mk("10.0.0.2", 80, false, NULL, NULL);
  src[1] = mk("10.0.0.1", 81, false, NULL, NULL);
  src[2] = mk("10.0.0.3", 1, false, NULL, NULL);
  src[3] = mk("10.0.0.1", 80, false, NULL, NULL);
  pool = zg_pool_new(src, 4, 1, 0);
  assert_non_null(pool);
  assert_int_equal(pool->n, 4);
  assert_string_equal(pool->inst[0].host, "10.0.0.1");
  assert_int_equal(pool->inst[0].port, 80);
  assert_string_equal(pool->inst[1].host, "10.0.0.1");
  assert_int_equal(pool->inst[1].port, 81);
  assert_string_equal(pool->inst[2].host, "10.0.0.2");
  assert_int_equal(pool->inst[2].port, 80);
  assert_string_equal(pool->inst[3].host, "10.0.0.3");
  assert_int_equal(pool->inst[3].port, 1);
  zg_pool_unref(pool);
  clear_all(src, 4);
}

static void test_pool_refcount(void **state) {
  zg_instance_t src = mk("10.0.0.1", 80, false, "/p", "n");
  zg_pool_t *pool = zg_pool_new(&src, 1, 1, 0);

  zg_instance_clear(&src);
  assert_non_null(pool);
  assert_int_equal(refs(pool), 1);
  assert_ptr_equal(zg_pool_ref(pool), pool);
  assert_int_equal(refs(pool), 2);
  assert_ptr_equal(zg_pool_ref(pool), pool);
  assert_int_equal(refs(pool), 3);
  zg_pool_unref(pool);
  assert_int_equal(refs(pool), 2);
  zg_pool_unref(pool);
  assert_int_equal(refs(pool), 1);
  /* Still usable with one reference left. */
  assert_string_equal(pool->inst[0].base_path, "/p");
  zg_pool_unref(pool); /* freed here: ASan reports a leak otherwise */
  zg_pool_unref(NULL);
}

static void test_pool_duplicates(void **state) {
  zg_instance_t src[5];
  zg_pool_t *pool;

  src[0] = mk("10.0.0.1", 80, false, NULL, "a1");
  src[1] = mk("10.0.0.2", 80, false, NULL, "a2");
  src[2] = mk("10.0.0.1", 80, false, NULL, "a3"); /* same address as a1 */
  src[3] = mk("10.0.0.1", 81, false, NULL, "a4"); /* another port */
  src[4] = mk("10.0.0.2", 80, true, "/x", "a5");  /* same address as a2 */
  pool = zg_pool_new(src, 5, 1, 0);
  assert_non_null(pool);
  assert_int_equal(pool->n, 3);
  assert_string_equal(pool->inst[0].host, "10.0.0.1");
  assert_int_equal(pool->inst[0].port, 80);
  assert_string_equal(pool->inst[1].host, "10.0.0.1");
  assert_int_equal(pool->inst[1].port, 81);
  assert_string_equal(pool->inst[2].host, "10.0.0.2");
  assert_int_equal(pool->inst[2].port, 80);
  zg_pool_unref(pool); /* the dropped copies must be freed too (ASan) */
  clear_all(src, 5);

  /* All the same: one left. */
  src[0] = mk("h.example.com", 443, true, NULL, NULL);
  src[1] = mk("h.example.com", 443, true, NULL, NULL);
  src[2] = mk("h.example.com", 443, true, NULL, NULL);
  pool = zg_pool_new(src, 3, 1, 0);
  assert_non_null(pool);
  assert_int_equal(pool->n, 1);
  assert_string_equal(pool->inst[0].host, "h.example.com");
  zg_pool_unref(pool);
  clear_all(src, 3);
}

static void test_pool_duplicates_order_free(void **state) {
  /* Which of two znodes for one address is kept must not depend on the
   * order the registry listed them in (ZooKeeper gives no order): the same
   * set of children is the same pool. */
  zg_instance_t ab[2], ba[2];
  zg_pool_t *p1, *p2;

  ab[0] = mk("10.0.0.2", 80, false, NULL, "a");
  ab[1] = mk("10.0.0.2", 80, true, "/x", "b");
  ba[0] = mk("10.0.0.2", 80, true, "/x", "b");
  ba[1] = mk("10.0.0.2", 80, false, NULL, "a");
  p1 = zg_pool_new(ab, 2, 1, 0);
  p2 = zg_pool_new(ba, 2, 1, 0);
  assert_non_null(p1);
  assert_non_null(p2);
  assert_int_equal(p1->n, 1);
  assert_int_equal(p2->n, 1);
  print_message("kept tls=%d / tls=%d\n", p1->inst[0].tls, p2->inst[0].tls);
  assert_int_equal(zg_pool_same(p1, p2), 1);
  zg_pool_unref(p1);
  zg_pool_unref(p2);
  clear_all(ab, 2);
  clear_all(ba, 2);
}

/* Two entries for one address, one of them out of service (an old znode
 * of a restarted instance, still saying STOPPING or enabled=false, or with
 * weight 0): the one in service is kept, in either order, whatever else
 * would sort first (tls, base path, name). */
static void test_pool_duplicates_prefer_in_service(void **state) {
  for (int variant = 0; variant < 3; variant++) {
    for (int order = 0; order < 2; order++) {
      zg_instance_t src[2];
      zg_pool_t *pool;
      /* "a" sorts first on every other key: it is the one out of service. */
      zg_instance_t out = mk_live("10.0.0.5", 80, false, NULL, "a");
      zg_instance_t in = mk_live("10.0.0.5", 80, true, "/x", "b");
      if (variant == 0)
        out.up = false;
      else if (variant == 1)
        out.weight = 0;
      else
        out.up = false, out.weight = 0;
      src[order] = out;
      src[1 - order] = in;
      pool = zg_pool_new(src, 2, 1, 0);
      assert_non_null(pool);
      assert_int_equal(pool->n, 1);
      assert_string_equal(pool->inst[0].name, "b");
      assert_true(zg_pool_live(pool, 0));
      assert_int_equal(pool->n_live, 1);
      zg_pool_unref(pool);
      clear_all(src, 2);
    }
  }
  /* Both out of service: one is kept (known, not live); up before weight. */
  {
    zg_instance_t src[2] = {mk_live("10.0.0.5", 80, false, NULL, "a"),
                            mk_live("10.0.0.5", 80, false, NULL, "b")};
    zg_pool_t *pool;
    src[0].up = false;
    src[1].weight = 0;
    pool = zg_pool_new(src, 2, 1, 0);
    assert_non_null(pool);
    assert_int_equal(pool->n, 1);
    assert_string_equal(pool->inst[0].name, "b");
    assert_int_equal(pool->n_live, 0);
    zg_pool_unref(pool);
    clear_all(src, 2);
  }
}

static void test_pool_empty(void **state) {
  zg_pool_t *a = zg_pool_new(NULL, 0, 3, 42);
  zg_pool_t *b = zg_pool_new(NULL, 0, 4, 43);
  zg_instance_t one = mk("10.0.0.1", 80, false, NULL, NULL);
  zg_pool_t *c = zg_pool_new(&one, 1, 5, 44);

  assert_non_null(a);
  assert_non_null(b);
  assert_non_null(c);
  assert_int_equal(a->n, 0);
  assert_int_equal(a->version, 3);
  assert_int_equal(a->created_ms, 42);
  assert_int_equal(refs(a), 1);
  assert_int_equal(zg_pool_same(a, b), 1);
  assert_int_equal(zg_pool_same(a, c), 0);
  assert_int_equal(zg_pool_same(c, a), 0);
  zg_pool_unref(a);
  zg_pool_unref(b);
  zg_pool_unref(c);
  zg_instance_clear(&one);
}

/* zg_pool_same on two pools built from one instance each. */
static int same1(zg_instance_t x, zg_instance_t y) {
  zg_pool_t *a = zg_pool_new(&x, 1, 1, 0);
  zg_pool_t *b = zg_pool_new(&y, 1, 2, 100);
  int r1, r2;

  assert_non_null(a);
  assert_non_null(b);
  r1 = zg_pool_same(a, b);
  r2 = zg_pool_same(b, a);
  assert_int_equal(r1, r2);
  zg_pool_unref(a);
  zg_pool_unref(b);
  zg_instance_clear(&x);
  zg_instance_clear(&y);
  return r1;
}

/* The addresses built with the pool are what zg_instance_addr_port_str
 * writes, for the port and for the plain port, brackets for IPv6. */
static void test_pool_addr(void **state) {
  zg_instance_t src[3];
  zg_pool_t *pool;
  char want[ZG_HOST_MAX + 10];
  size_t len;

  src[0] = mk("10.0.0.1", 8443, true, NULL, NULL);
  src[0].plain_port = 8080;
  src[1] = mk("::1", 9000, false, NULL, NULL);
  src[2] = mk("backend.example.com", 65535, false, NULL, NULL);
  pool = zg_pool_new(src, 3, 1, 0);
  assert_non_null(pool);
  for (size_t i = 0; i < pool->n; i++) {
    const zg_instance_t *x = &pool->inst[i];
    uint16_t ports[2] = {x->port, x->plain_port ? x->plain_port : x->port};
    for (int k = 0; k < 2; k++) {
      const char *got = zg_pool_addr(pool, i, ports[k], &len);
      zg_instance_addr_port_str(x, ports[k], want, sizeof(want));
      assert_string_equal(got, want);
      assert_int_equal(len, strlen(want));
    }
  }
  /* sorted by host: "10.0.0.1", "::1", "backend.example.com" */
  assert_string_equal(zg_pool_addr(pool, 0, 8443, NULL), "10.0.0.1:8443");
  assert_string_equal(zg_pool_addr(pool, 0, 8080, NULL), "10.0.0.1:8080");
  assert_string_equal(zg_pool_addr(pool, 1, 9000, NULL), "[::1]:9000");
  assert_string_equal(zg_pool_addr(pool, 2, 65535, NULL),
                      "backend.example.com:65535");
  zg_pool_unref(pool);
  clear_all(src, ARRAY_LEN(src));
  (void)state;
}

static void test_pool_same(void **state) {
  zg_instance_t s1[3], s2[3];
  zg_pool_t *a, *b;

  /* Same instances in another order, versions and times differ: same. */
  s1[0] = mk("10.0.0.1", 80, false, NULL, NULL);
  s1[1] = mk("10.0.0.2", 80, true, "/v1", NULL);
  s1[2] = mk("10.0.0.3", 80, false, NULL, NULL);
  s2[0] = mk("10.0.0.3", 80, false, NULL, NULL);
  s2[1] = mk("10.0.0.1", 80, false, NULL, NULL);
  s2[2] = mk("10.0.0.2", 80, true, "/v1", NULL);
  a = zg_pool_new(s1, 3, 1, 0);
  b = zg_pool_new(s2, 3, 9, 999);
  assert_non_null(a);
  assert_non_null(b);
  assert_int_equal(zg_pool_same(a, a), 1);
  assert_int_equal(zg_pool_same(a, b), 1);
  assert_int_equal(zg_pool_same(b, a), 1);
  zg_pool_unref(a);
  zg_pool_unref(b);

  /* One instance fewer: not the same. */
  a = zg_pool_new(s1, 3, 1, 0);
  b = zg_pool_new(s2, 2, 1, 0);
  assert_int_equal(zg_pool_same(a, b), 0);
  assert_int_equal(zg_pool_same(b, a), 0);
  zg_pool_unref(a);
  zg_pool_unref(b);
  clear_all(s1, 3);
  clear_all(s2, 3);

  assert_int_equal(same1(mk("10.0.0.1", 80, false, NULL, NULL),
                         mk("10.0.0.1", 80, false, NULL, NULL)),
                   1);
  assert_int_equal(same1(mk("10.0.0.1", 80, false, NULL, NULL),
                         mk("10.0.0.1", 81, false, NULL, NULL)),
                   0);
  assert_int_equal(same1(mk("10.0.0.1", 80, false, NULL, NULL),
                         mk("10.0.0.2", 80, false, NULL, NULL)),
                   0);
  assert_int_equal(same1(mk("10.0.0.1", 80, false, NULL, NULL),
                         mk("10.0.0.1", 80, true, NULL, NULL)),
                   0);
  assert_int_equal(same1(mk("10.0.0.1", 80, false, NULL, NULL),
                         mk("10.0.0.1", 80, false, "/v1", NULL)),
                   0);
  assert_int_equal(same1(mk("10.0.0.1", 80, false, "/v1", NULL),
                         mk("10.0.0.1", 80, false, "/v2", NULL)),
                   0);
  assert_int_equal(same1(mk("10.0.0.1", 80, false, "/v1", NULL),
                         mk("10.0.0.1", 80, false, "/v1", NULL)),
                   1);
  /* Data rewritten with the same bytes: a new data version (and mtime),
   * the same pool, so nothing is published. */
  {
    zg_instance_t x = mk("10.0.0.1", 80, false, NULL, NULL);
    zg_instance_t y = mk("10.0.0.1", 80, false, NULL, NULL);
    x.version = 3;
    x.mtime_ms = 1000;
    y.version = 4;
    y.mtime_ms = 2000;
    assert_int_equal(same1(x, y), 1);
  }
  /* What serves does count: status and weight. */
  {
    zg_instance_t x = mk_live("10.0.0.1", 80, false, NULL, NULL);
    zg_instance_t y = mk_live("10.0.0.1", 80, false, NULL, NULL);
    y.up = false;
    assert_int_equal(same1(x, y), 0);
    x = mk_live("10.0.0.1", 80, false, NULL, NULL);
    y = mk_live("10.0.0.1", 80, false, NULL, NULL);
    y.weight = 7;
    assert_int_equal(same1(x, y), 0);
  }
  /* The child name is not part of what a pool serves (pool.h: addresses,
   * tls, base paths): a re-registration under a new name is the same. */
  assert_int_equal(same1(mk("10.0.0.1", 80, false, NULL, "s0000000001"),
                         mk("10.0.0.1", 80, false, NULL, "s0000000002")),
                   1);
}

/* ------------------------------------------------------------------- rng */

static void test_rng_xoshiro256starstar(void **state) {
  /* Reference outputs of xoshiro256** (Blackman & Vigna) from the state
   * {1, 2, 3, 4}, computed with the authors' reference code. */
  static const uint64_t want[] = {0x0000000000002d00ULL, 0x0000000000000000ULL,
                                  0x000000005a007080ULL, 0x10e0000000009d80ULL};
  zg_rng_t rng = {{1, 2, 3, 4}};

  for (size_t i = 0; i < ARRAY_LEN(want); i++)
    assert_int_equal(zg_rng_next(&rng), want[i]);
}

static void test_rng_seed(void **state) {
  zg_rng_t a, b, c;
  bool differ = false;

  zg_rng_seed(&a, 42);
  zg_rng_seed(&b, 42);
  zg_rng_seed(&c, 43);
  /* A seed must not leave the all-zero state (xoshiro's fixed point). */
  assert_false(a.s[0] == 0 && a.s[1] == 0 && a.s[2] == 0 && a.s[3] == 0);
  zg_rng_seed(&c, 0);
  assert_false(c.s[0] == 0 && c.s[1] == 0 && c.s[2] == 0 && c.s[3] == 0);
  zg_rng_seed(&c, 43);
  for (int i = 0; i < 100; i++) {
    uint64_t x = zg_rng_next(&a);

    assert_int_equal(x, zg_rng_next(&b));
    if (x != zg_rng_next(&c))
      differ = true;
  }
  assert_true(differ);
}

static void test_rng_below_range(void **state) {
  static const uint64_t bounds[] = {
      1, 2, 3, 5, 7, 10, 1000, 1ULL << 32, (1ULL << 63) + 1, UINT64_MAX};
  zg_rng_t rng;

  zg_rng_seed(&rng, 1);
  for (size_t b = 0; b < ARRAY_LEN(bounds); b++) {
    for (int i = 0; i < 10000; i++) {
      uint64_t x = zg_rng_below(&rng, bounds[b]);

      if (x >= bounds[b]) {
        print_error("zg_rng_below(%llu) = %llu\n",
                    (unsigned long long)bounds[b], (unsigned long long)x);
        fail();
      }
    }
  }
  /* bound 1: always 0. */
  for (int i = 0; i < 100; i++)
    assert_int_equal(zg_rng_below(&rng, 1), 0);
}

/* Pearson's statistic of `counts` against a uniform expectation. */
static double chi_square(const unsigned *counts, size_t k, unsigned total) {
  double expected = (double)total / (double)k, x2 = 0;

  for (size_t i = 0; i < k; i++) {
    double d = (double)counts[i] - expected;

    x2 += d * d / expected;
  }
  return x2;
}

/* 16.27 is the 0.999 quantile of chi-square with 3 degrees of freedom: a
 * fair generator stays below it; the seed is fixed, so it cannot flake. */
#define CHI2_3DOF_999 16.27

static void test_rng_below_uniform(void **state) {
  unsigned counts[4] = {0};
  zg_rng_t rng;
  double x2;

  zg_rng_seed(&rng, 20261122);
  for (int i = 0; i < 40000; i++)
    counts[zg_rng_below(&rng, 4)]++;
  x2 = chi_square(counts, 4, 40000);
  print_message("counts %u %u %u %u, chi2 %.2f\n", counts[0], counts[1],
                counts[2], counts[3], x2);
  assert_true(x2 < CHI2_3DOF_999);
  /* And not suspiciously perfect (a counter, not a generator). */
  assert_true(x2 > 0.0);

  /* A bound that is not a power of two, where modulo would bias. */
  memset(counts, 0, sizeof(counts));
  zg_rng_seed(&rng, 7);
  for (int i = 0; i < 40000; i++) {
    uint64_t x = zg_rng_below(&rng, 3);

    assert_true(x < 3);
    counts[x]++;
  }
  /* 2 degrees of freedom: 0.999 quantile 13.82. */
  assert_true(chi_square(counts, 3, 40000) < 13.82);
}

/* --------------------------------------------------------------- balance */

static void test_pick_random_n1(void **state) {
  zg_rng_t rng;
  uint64_t cursor = 0;
  const size_t tried0[] = {0};

  zg_rng_seed(&rng, 5);
  for (int i = 0; i < 50; i++)
    assert_int_equal(
        zg_balance_pick(ZG_BALANCE_RANDOM, &rng, &cursor, 1, NULL, 0), 0);
  assert_int_equal(
      zg_balance_pick(ZG_BALANCE_RANDOM, &rng, &cursor, 1, tried0, 1),
      ZG_PICK_NONE);
  assert_int_equal(
      zg_balance_pick(ZG_BALANCE_RANDOM, &rng, &cursor, 0, NULL, 0),
      ZG_PICK_NONE);
}

static void test_pick_random_covers(void **state) {
  unsigned counts[5] = {0};
  zg_rng_t rng;
  uint64_t cursor = 0;

  zg_rng_seed(&rng, 12345);
  for (int i = 0; i < 200; i++) {
    size_t k = zg_balance_pick(ZG_BALANCE_RANDOM, &rng, &cursor, 5, NULL, 0);

    assert_true(k < 5);
    counts[k]++;
  }
  for (int k = 0; k < 5; k++) {
    print_message("index %d: %u\n", k, counts[k]);
    assert_true(counts[k] >= 1);
  }
}

static void test_pick_random_skips_tried(void **state) {
  unsigned counts[5] = {0};
  const size_t tried[] = {3, 1};
  const size_t all[] = {4, 0, 2, 1, 3};
  zg_rng_t rng;
  uint64_t cursor = 0;

  zg_rng_seed(&rng, 99);
  for (int i = 0; i < 3000; i++) {
    size_t k = zg_balance_pick(ZG_BALANCE_RANDOM, &rng, &cursor, 5, tried,
                               ARRAY_LEN(tried));

    assert_true(k < 5);
    assert_true(k != 1 && k != 3);
    counts[k]++;
  }
  assert_true(counts[0] > 0 && counts[2] > 0 && counts[4] > 0);
  assert_int_equal(
      zg_balance_pick(ZG_BALANCE_RANDOM, &rng, &cursor, 5, all, ARRAY_LEN(all)),
      ZG_PICK_NONE);

  /* One left: always that one. */
  for (int i = 0; i < 50; i++)
    assert_int_equal(
        zg_balance_pick(ZG_BALANCE_RANDOM, &rng, &cursor, 5, all, 4), 3);
}

static void test_pick_tried_repeats(void **state) {
  /* The same index tried twice, or an index of an older, larger pool, must
   * not make the balancer think every instance has been tried. */
  const size_t twice[] = {1, 1};
  const size_t stale[] = {7, 2};
  zg_rng_t rng;
  uint64_t cursor = 0;

  zg_rng_seed(&rng, 3);
  for (int i = 0; i < 50; i++) {
    size_t k = zg_balance_pick(ZG_BALANCE_RANDOM, &rng, &cursor, 3, twice, 2);

    assert_true(k == 0 || k == 2);
    k = zg_balance_pick(ZG_BALANCE_RANDOM, &rng, &cursor, 2, stale, 2);
    assert_true(k == 0 || k == 1);
    k = zg_balance_pick(ZG_BALANCE_ROUND_ROBIN, &rng, &cursor, 2, twice, 2);
    assert_int_equal(k, 0);
  }
}

static void test_pick_random_uniform_over_rest(void **state) {
  /* With index 0 tried, 1, 2 and 3 each get a third: an implementation that
   * draws over all four and walks to the next untried one gives index 1
   * half of the picks. */
  unsigned counts[4] = {0};
  unsigned rest[3];
  const size_t tried[] = {0};
  zg_rng_t rng;
  uint64_t cursor = 0;

  zg_rng_seed(&rng, 4242);
  for (int i = 0; i < 30000; i++) {
    size_t k = zg_balance_pick(ZG_BALANCE_RANDOM, &rng, &cursor, 4, tried, 1);

    assert_true(k >= 1 && k < 4);
    counts[k]++;
  }
  rest[0] = counts[1];
  rest[1] = counts[2];
  rest[2] = counts[3];
  print_message("picks %u %u %u\n", rest[0], rest[1], rest[2]);
  assert_true(chi_square(rest, 3, 30000) < 13.82);
}

static void test_pick_round_robin(void **state) {
  zg_rng_t rng;
  uint64_t cursor = 0;
  static const size_t want[] = {0, 1, 2, 0, 1, 2, 0, 1, 2};

  zg_rng_seed(&rng, 1);
  for (size_t i = 0; i < ARRAY_LEN(want); i++)
    assert_int_equal(
        zg_balance_pick(ZG_BALANCE_ROUND_ROBIN, &rng, &cursor, 3, NULL, 0),
        want[i]);
}

static void test_pick_round_robin_skips_tried(void **state) {
  zg_rng_t rng;
  uint64_t cursor = 0;
  const size_t tried[] = {1};
  const size_t all[] = {0, 1, 2, 3};
  /* Each remaining instance once per turn: 1 is skipped, and 2 does not get
   * 1's turn as well. */
  static const size_t want[] = {0, 2, 3, 0, 2, 3, 0, 2, 3};

  zg_rng_seed(&rng, 1);
  for (size_t i = 0; i < ARRAY_LEN(want); i++)
    assert_int_equal(
        zg_balance_pick(ZG_BALANCE_ROUND_ROBIN, &rng, &cursor, 4, tried, 1),
        want[i]);
  assert_int_equal(
      zg_balance_pick(ZG_BALANCE_ROUND_ROBIN, &rng, &cursor, 4, all, 4),
      ZG_PICK_NONE);
  assert_int_equal(
      zg_balance_pick(ZG_BALANCE_ROUND_ROBIN, &rng, &cursor, 0, NULL, 0),
      ZG_PICK_NONE);
}

static void test_pick_round_robin_shrinking_pool(void **state) {
  /* The cursor outlives pools: a new, smaller pool must still get indices
   * in range. */
  zg_rng_t rng;
  uint64_t cursor = 0;

  zg_rng_seed(&rng, 1);
  for (int i = 0; i < 7; i++)
    assert_true(zg_balance_pick(ZG_BALANCE_ROUND_ROBIN, &rng, &cursor, 10, NULL,
                                0) < 10);
  for (int i = 0; i < 20; i++)
    assert_true(
        zg_balance_pick(ZG_BALANCE_ROUND_ROBIN, &rng, &cursor, 2, NULL, 0) < 2);
  cursor = UINT64_MAX; /* wrap-around */
  for (int i = 0; i < 5; i++)
    assert_true(
        zg_balance_pick(ZG_BALANCE_ROUND_ROBIN, &rng, &cursor, 3, NULL, 0) < 3);
}

/* ---- picks over pools: live instances and weights ---------------------- */

static zg_pool_t *pool_of(const bool *up, const uint32_t *weight, size_t n) {
  zg_instance_t inst[8];
  zg_pool_t *pool;
  assert_true(n <= 8);
  for (size_t i = 0; i < n; i++) {
    char host[32];
    snprintf(host, sizeof(host), "10.0.0.%zu", i + 1);
    inst[i] = mk(host, 80, false, NULL, NULL);
    inst[i].up = up[i];
    inst[i].weight = weight[i];
  }
  pool = zg_pool_new(inst, n, 1, 0);
  assert_non_null(pool);
  clear_all(inst, n);
  return pool;
}

static void test_pool_live_and_weights(void **state) {
  static const bool up[] = {true, false, true, true};
  static const uint32_t w[] = {1, 5, 3, 0};
  zg_pool_t *p = pool_of(up, w, 4);
  (void)state;
  assert_int_equal(p->n, 4);
  assert_int_equal(p->n_live, 2); /* down and weight 0 do not count */
  assert_int_equal(p->total_weight, 4);
  assert_non_null(p->cum);
  assert_int_equal(p->cum[0], 1);
  assert_int_equal(p->cum[1], 1);
  assert_int_equal(p->cum[2], 4);
  assert_int_equal(p->cum[3], 4);
  zg_pool_unref(p);
}

static void test_pool_uniform_weights_need_no_table(void **state) {
  static const bool up[] = {true, true, false};
  static const uint32_t w[] = {7, 7, 1};
  zg_pool_t *p = pool_of(up, w, 3);
  (void)state;
  assert_int_equal(p->n_live, 2);
  assert_null(p->cum);
  zg_pool_unref(p);
}

static void test_pick_pool_weighted_random(void **state) {
  static const bool up[] = {true, true, true};
  static const uint32_t w[] = {1, 3, 0};
  zg_pool_t *p = pool_of(up, w, 3);
  unsigned counts[3] = {0, 0, 0};
  zg_rng_t rng;
  uint64_t cursor = 0;
  (void)state;
  zg_rng_seed(&rng, 99);
  for (int i = 0; i < 40000; i++) {
    size_t k =
        zg_balance_pick_pool(ZG_BALANCE_RANDOM, &rng, &cursor, p, NULL, 0);
    assert_true(k < 3);
    counts[k]++;
  }
  assert_int_equal(counts[2], 0); /* weight 0: never */
  /* 1:3 within 3% of 40000 (fixed seed: cannot flake) */
  assert_in_range(counts[0], 9000, 11000);
  assert_in_range(counts[1], 29000, 31000);
  zg_pool_unref(p);
}

static void test_pick_pool_weighted_skips_tried(void **state) {
  static const bool up[] = {true, true, true};
  static const uint32_t w[] = {2, 5, 1};
  zg_pool_t *p = pool_of(up, w, 3);
  zg_rng_t rng;
  uint64_t cursor = 0;
  size_t tried1[] = {1}, tried2[] = {1, 0}, tried3[] = {2, 1, 0};
  unsigned counts[3] = {0, 0, 0};
  (void)state;
  zg_rng_seed(&rng, 3);
  for (int i = 0; i < 3000; i++)
    counts[zg_balance_pick_pool(ZG_BALANCE_RANDOM, &rng, &cursor, p, tried1,
                                1)]++;
  assert_int_equal(counts[1], 0);
  assert_in_range(counts[0], 1800, 2200); /* 2:1 among the rest */
  for (int i = 0; i < 100; i++)
    assert_int_equal(
        zg_balance_pick_pool(ZG_BALANCE_RANDOM, &rng, &cursor, p, tried2, 2),
        2);
  assert_int_equal(
      zg_balance_pick_pool(ZG_BALANCE_RANDOM, &rng, &cursor, p, tried3, 3),
      ZG_PICK_NONE);
  zg_pool_unref(p);
}

static void test_pick_pool_never_down(void **state) {
  static const bool up[] = {false, true, false, true};
  static const uint32_t w[] = {1, 1, 1, 1};
  zg_pool_t *p = pool_of(up, w, 4);
  zg_rng_t rng;
  uint64_t cursor = 0;
  unsigned counts[4] = {0, 0, 0, 0};
  size_t tried[] = {3};
  (void)state;
  zg_rng_seed(&rng, 11);
  for (int i = 0; i < 1000; i++)
    counts[zg_balance_pick_pool(ZG_BALANCE_RANDOM, &rng, &cursor, p, NULL,
                                0)]++;
  assert_int_equal(counts[0] + counts[2], 0);
  assert_true(counts[1] > 400 && counts[3] > 400);
  for (int i = 0; i < 50; i++)
    assert_int_equal(zg_balance_pick_pool(ZG_BALANCE_ROUND_ROBIN, &rng, &cursor,
                                          p, tried, 1),
                     1);
  zg_pool_unref(p);
}

static void test_pick_pool_none_live(void **state) {
  static const bool up[] = {false, true};
  static const uint32_t w[] = {1, 0};
  zg_pool_t *p = pool_of(up, w, 2);
  zg_rng_t rng;
  uint64_t cursor = 0;
  (void)state;
  zg_rng_seed(&rng, 1);
  assert_int_equal(p->n_live, 0);
  assert_int_equal(
      zg_balance_pick_pool(ZG_BALANCE_RANDOM, &rng, &cursor, p, NULL, 0),
      ZG_PICK_NONE);
  assert_int_equal(
      zg_balance_pick_pool(ZG_BALANCE_RANDOM, &rng, &cursor, NULL, NULL, 0),
      ZG_PICK_NONE);
  zg_pool_unref(p);
}

static void test_pick_pool_weighted_round_robin(void **state) {
  static const bool up[] = {true, true};
  static const uint32_t w[] = {1, 2};
  zg_pool_t *p = pool_of(up, w, 2);
  zg_rng_t rng;
  uint64_t cursor = 0;
  unsigned counts[2] = {0, 0};
  (void)state;
  zg_rng_seed(&rng, 1);
  for (int i = 0; i < 300; i++)
    counts[zg_balance_pick_pool(ZG_BALANCE_ROUND_ROBIN, &rng, &cursor, p, NULL,
                                0)]++;
  assert_int_equal(counts[0], 100); /* exactly by weight over whole cycles */
  assert_int_equal(counts[1], 200);
  zg_pool_unref(p);
}

/* ---- least request (power of two random choices) ----------------------- */

static uint64_t load_of(void *arg, size_t i) {
  return ((const uint64_t *)arg)[i];
}

static void test_pick_least_prefers_less_loaded(void **state) {
  static const bool up[] = {true, true, true, false};
  static const uint32_t w[] = {1, 1, 1, 1};
  uint64_t load[] = {3, 1, 2, 0}; /* the down one is the least loaded */
  zg_pool_t *p = pool_of(up, w, 4);
  unsigned counts[4] = {0, 0, 0, 0};
  zg_rng_t rng;
  (void)state;
  zg_rng_seed(&rng, 7);
  for (int i = 0; i < 30000; i++) {
    size_t k = zg_balance_pick_least(&rng, p, NULL, 0, load_of, load);
    assert_true(k < 4);
    counts[k]++;
  }
  assert_int_equal(counts[3], 0); /* down: never, however idle */
  assert_int_equal(counts[0], 0); /* the busiest loses every pair */
  /* 1 wins each pair it is in (2/3), 2 the pair {0, 2} (1/3) */
  assert_in_range(counts[1], 19000, 21000);
  assert_in_range(counts[2], 9000, 11000);
  /* two live ones: always the less loaded */
  load[0] = 0;
  load[1] = 5;
  load[2] = 9;
  for (int i = 0; i < 1000; i++) {
    static const size_t tried[] = {2};
    assert_int_equal(zg_balance_pick_least(&rng, p, tried, 1, load_of, load),
                     0);
  }
  zg_pool_unref(p);
}

static void test_pick_least_weights_and_tried(void **state) {
  static const bool up[] = {true, true};
  static const uint32_t w[] = {2, 1};
  uint64_t load[] = {4, 1};
  static const size_t tried1[] = {1}, both[] = {0, 1};
  zg_pool_t *p = pool_of(up, w, 2);
  unsigned counts[2] = {0, 0};
  zg_rng_t rng;
  (void)state;
  zg_rng_seed(&rng, 11);
  /* 4/2 > 1/1: the lighter one, whatever the weights say */
  for (int i = 0; i < 1000; i++)
    assert_int_equal(zg_balance_pick_least(&rng, p, NULL, 0, load_of, load), 1);
  /* 3/2 < 2/1: the heavier instance takes more in flight */
  load[0] = 3;
  load[1] = 2;
  for (int i = 0; i < 1000; i++)
    assert_int_equal(zg_balance_pick_least(&rng, p, NULL, 0, load_of, load), 0);
  /* tried: never again, even when the least loaded */
  load[1] = 0;
  for (int i = 0; i < 1000; i++)
    assert_int_equal(zg_balance_pick_least(&rng, p, tried1, 1, load_of, load),
                     0);
  assert_int_equal(zg_balance_pick_least(&rng, p, both, 2, load_of, load),
                   ZG_PICK_NONE);
  /* idle (a tie): shares follow the weights, 2:1 */
  load[0] = load[1] = 0;
  for (int i = 0; i < 30000; i++)
    counts[zg_balance_pick_least(&rng, p, NULL, 0, load_of, load)]++;
  assert_in_range(counts[0], 19000, 21000);
  zg_pool_unref(p);
}

/* ---- latency EWMA (least_request_latency = ewma) ----------------------- */

#define SEC_US 1000000ull

static void test_ewma_decay(void **state) {
  zg_ewma_t e;
  (void)state;
  memset(&e, 0, sizeof(e));
  assert_true(zg_ewma_value(&e, 5 * SEC_US, 10000) == 0); /* no sample */
  zg_ewma_observe(&e, 8000, 100 * SEC_US, 10000);
  assert_true(zg_ewma_value(&e, 100 * SEC_US, 10000) == 8000);
  /* read later: exp(-t/decay) of it, towards 0 */
  assert_float_equal(zg_ewma_value(&e, 110 * SEC_US, 10000), 8000 * 0.36788,
                     1.0);
  assert_float_equal(zg_ewma_value(&e, 100 * SEC_US + 6931472, 10000), 4000,
                     1.0); /* half after decay * ln 2 */
  assert_true(zg_ewma_value(&e, 200 * SEC_US, 10000) < 1);
  /* a clock read before the sample (another thread's): not decayed */
  assert_true(zg_ewma_value(&e, 99 * SEC_US, 10000) == 8000);
}

static void test_ewma_peak_and_average(void **state) {
  zg_ewma_t e;
  uint64_t t = 50 * SEC_US;
  (void)state;
  memset(&e, 0, sizeof(e));
  zg_ewma_observe(&e, 1000, t, 10000);
  /* a peak is taken whole, at once */
  zg_ewma_observe(&e, 50000, t + 1000, 10000);
  assert_true(e.us == 50000);
  /* below: averaged with the weight of the time since the last sample;
   * 10 s later with decay 10 s, the old estimate weighs 1/e */
  zg_ewma_observe(&e, 1000, t + 1000 + 10 * SEC_US, 10000);
  assert_float_equal(e.us, 50000 * 0.36788 + 1000 * 0.63212, 5.0);
  /* a steady stream of 1 ms samples, one per 10 ms for 20 s (two decay
   * periods): most of the way back to 1 ms (1 + 17.4 e^-2 ~ 3.4 ms) */
  t += 1000 + 10 * SEC_US;
  for (int i = 1; i <= 2000; i++)
    zg_ewma_observe(&e, 1000, t + (uint64_t)i * 10000, 10000);
  assert_in_range((uint64_t)e.us, 3000, 3800);
  /* samples at one instant (several responses in one clock tick): the time
   * weight is 0, the estimate stays put until time moves */
  memset(&e, 0, sizeof(e));
  zg_ewma_observe(&e, 4000, t, 10000);
  zg_ewma_observe(&e, 2000, t, 10000);
  assert_true(e.us == 4000);
  /* nonsense samples are 0, never negative */
  zg_ewma_observe(&e, -5, t + SEC_US, 10000);
  assert_true(e.us >= 0 && e.us < 4000);
}

static void test_ewma_cost(void **state) {
  zg_ewma_t e;
  uint64_t t = 7 * SEC_US;
  (void)state;
  memset(&e, 0, sizeof(e));
  /* no sample: free while idle, then one request at a time */
  assert_int_equal(zg_ewma_cost(&e, 0, t, 10000), 0);
  assert_true(zg_ewma_cost(&e, 1, t, 10000) > ZG_EWMA_PENALTY);
  assert_true(zg_ewma_cost(&e, 3, t, 10000) > zg_ewma_cost(&e, 1, t, 10000));
  /* estimate x (in flight + 1), plus in flight + 1 */
  zg_ewma_observe(&e, 2000, t, 10000);
  assert_int_equal(zg_ewma_cost(&e, 0, t, 10000), 2001);
  assert_int_equal(zg_ewma_cost(&e, 4, t, 10000), 10005);
  assert_true(zg_ewma_cost(&e, 1000, t, 10000) < ZG_EWMA_PENALTY);
  /* left alone: decayed to nothing, only a request counts */
  assert_int_equal(zg_ewma_cost(&e, 0, t + 1000 * SEC_US, 10000), 1);
  /* holding requests and not answering: the estimate is kept, not decayed
   * (a hung instance must not look faster as its requests pile up) */
  assert_int_equal(zg_ewma_cost(&e, 2, t + 1000 * SEC_US, 10000), 6003);
  /* huge estimates stay below the penalty of an unmeasured one */
  zg_ewma_observe(&e, 1e15, t, 10000);
  assert_int_equal(zg_ewma_cost(&e, 9, t, 10000), ZG_EWMA_PENALTY - 1);
}

/* A request that ended without a response because of the instance: its
 * time raises the estimate like any peak, but a fast failure never lowers
 * it, and holds it from fading while failures go on. */
static void test_ewma_failure(void **state) {
  zg_ewma_t e, ok;
  uint64_t t = 20 * SEC_US;
  (void)state;
  memset(&e, 0, sizeof(e));
  /* no estimate yet: a failure says nothing of the instance's speed */
  zg_ewma_observe_failure(&e, 250000, t, 10000);
  zg_ewma_observe_failure(&e, 1000, t, 10000);
  assert_false(e.seen);
  /* a response timeout is a plain sample (the caller's) */
  zg_ewma_observe(&e, 250000, t, 10000);
  assert_true(e.seen && e.us == 250000 && e.stamp_us == t);
  /* a slower failure is a peak: taken whole */
  zg_ewma_observe_failure(&e, 400000, t + SEC_US, 10000);
  assert_true(e.us == 400000 && e.stamp_us == t + SEC_US);
  /* a fast failure (a reset after 1 ms), 10 s later: the estimate stays
   * 400 ms and counts from now; an answer of 1 ms would have averaged it
   * down to about 148 ms */
  ok = e;
  zg_ewma_observe(&ok, 1000, t + 11 * SEC_US, 10000);
  assert_float_equal(ok.us, 400000 * 0.36788 + 1000 * 0.63212, 5.0);
  zg_ewma_observe_failure(&e, 1000, t + 11 * SEC_US, 10000);
  assert_true(e.us == 400000 && e.stamp_us == t + 11 * SEC_US);
  assert_true(zg_ewma_value(&e, t + 11 * SEC_US, 10000) == 400000);
  /* failing fast for a minute, one failure a second: never cheaper than
   * when it began (left alone as long, it would be 400 ms x e^-6) */
  for (int i = 12; i <= 71; i++)
    zg_ewma_observe_failure(&e, 1000, t + (uint64_t)i * SEC_US, 10000);
  assert_true(e.us == 400000);
  assert_int_equal(zg_ewma_cost(&e, 0, t + 71 * SEC_US, 10000), 400001);
  /* a clock read before the last sample (another thread's) moves nothing
   * back */
  zg_ewma_observe_failure(&e, 1000, t, 10000);
  assert_true(e.us == 400000 && e.stamp_us == t + 71 * SEC_US);
  /* a failure after more than a decay period without a sample does not
   * bring the old peak back: it holds the decayed value (400 ms x e^-6
   * a minute later), and a slower failure than that is a peak again */
  zg_ewma_observe_failure(&e, 500, t + 131 * SEC_US, 10000);
  assert_float_equal(e.us, 400000 * exp(-6.0), 1.0);
  assert_true(e.stamp_us == t + 131 * SEC_US);
  zg_ewma_observe_failure(&e, 5000, t + 131 * SEC_US, 10000);
  assert_true(e.us == 5000);
  /* nonsense times are 0, never negative: held, not sampled */
  zg_ewma_observe_failure(&e, -5, t + 132 * SEC_US, 10000);
  assert_true(e.us == 5000);
}

/* Two instances, equal in flight: the slower one loses every pair, until
 * its estimate decays below the faster one's. */
static void test_pick_least_ewma(void **state) {
  static const bool up[] = {true, true, true};
  static const uint32_t w[] = {1, 1, 2};
  zg_ewma_t lat[3];
  uint64_t cost[3], t = 1000 * SEC_US;
  zg_pool_t *p = pool_of(up, w, 2);
  zg_rng_t rng;
  unsigned counts[3] = {0, 0, 0};
  (void)state;
  zg_rng_seed(&rng, 5);
  memset(lat, 0, sizeof(lat));
  zg_ewma_observe(&lat[0], 1000, t, 10000);   /* fast: 1 ms */
  zg_ewma_observe(&lat[1], 100000, t, 10000); /* slow: 100 ms */
  for (int i = 0; i < 3; i++)
    cost[i] = zg_ewma_cost(&lat[i], 2, t, 10000);
  for (int i = 0; i < 1000; i++)
    assert_int_equal(zg_balance_pick_least(&rng, p, NULL, 0, load_of, cost), 0);
  /* the fast one holds 150 requests, the slow one 0: 151 ms > 100 ms */
  cost[0] = zg_ewma_cost(&lat[0], 150, t, 10000);
  cost[1] = zg_ewma_cost(&lat[1], 0, t, 10000);
  for (int i = 0; i < 1000; i++)
    assert_int_equal(zg_balance_pick_least(&rng, p, NULL, 0, load_of, cost), 1);
  /* left alone 50 s (5 decays: 100 ms -> 0.67 ms): tried again */
  cost[0] = zg_ewma_cost(&lat[0], 0, t, 10000);
  cost[1] = zg_ewma_cost(&lat[1], 0, t + 50 * SEC_US, 10000);
  assert_int_equal(zg_balance_pick_least(&rng, p, NULL, 0, load_of, cost), 1);
  zg_pool_unref(p);
  /* weights divide the cost: equal latency, weight 2 takes twice the
   * requests in flight before it costs more */
  p = pool_of(up, w, 3);
  zg_ewma_observe(&lat[2], 1000, t, 10000);
  lat[1] = lat[0];
  cost[0] = zg_ewma_cost(&lat[0], 2, t, 10000);
  cost[1] = zg_ewma_cost(&lat[1], 2, t, 10000);
  cost[2] = zg_ewma_cost(&lat[2], 4, t, 10000);
  for (int i = 0; i < 30000; i++)
    counts[zg_balance_pick_least(&rng, p, NULL, 0, load_of, cost)]++;
  /* 2 weighs 5005/2 < 3003: it wins whenever drawn */
  assert_true(counts[2] > counts[0] + counts[1]);
  zg_pool_unref(p);
}

/* ---- consistent hashing (balance = hash) -------------------------------- */

/* Instances 10.0.1.FIRST .. 10.0.1.(FIRST + N - 1), weights w (NULL: 1). */
static zg_pool_t *ring_pool(size_t first, size_t n, const uint32_t *w) {
  zg_instance_t inst[16];
  zg_pool_t *pool;
  assert_true(n <= 16);
  for (size_t i = 0; i < n; i++) {
    char host[32];
    snprintf(host, sizeof(host), "10.0.1.%zu", first + i);
    inst[i] = mk_live(host, 8080, false, NULL, NULL);
    if (w)
      inst[i].weight = w[i];
  }
  pool = zg_pool_new(inst, n, 1, 0);
  assert_non_null(pool);
  clear_all(inst, n);
  return pool;
}

static uint64_t key_hash(unsigned k) {
  char key[32];
  int len = snprintf(key, sizeof(key), "user-%u", k);
  return zg_hash64(key, (size_t)len);
}

/* The fraction of 10,000 keys whose instance (by address) differs. */
static double moved(const zg_pool_t *a, const zg_pool_t *b) {
  const zg_ring_t *ra = zg_pool_ring(a), *rb = zg_pool_ring(b);
  unsigned n = 0;
  assert_non_null(ra);
  assert_non_null(rb);
  for (unsigned k = 0; k < 10000; k++) {
    size_t i = zg_ring_pick(ra, a, key_hash(k), NULL, 0);
    size_t j = zg_ring_pick(rb, b, key_hash(k), NULL, 0);
    assert_true(i < a->n && j < b->n);
    n += strcmp(a->inst[i].host, b->inst[j].host) != 0;
  }
  return n / 10000.0;
}

static void test_ring_remaps_about_one_in_n(void **state) {
  zg_pool_t *ten = ring_pool(1, 10, NULL), *eleven = ring_pool(1, 11, NULL);
  zg_pool_t *nine = ring_pool(2, 9, NULL); /* 10.0.1.1 removed */
  double add = moved(ten, eleven), del = moved(ten, nine);
  (void)state;
  print_message("10 -> 11 moved %.4f, 10 -> 9 moved %.4f\n", add, del);
  /* ideal: 1/11 = 0.091 and 1/10 = 0.1 */
  assert_true(add >= 0.05 && add <= 0.15);
  assert_true(del >= 0.05 && del <= 0.15);
  /* and the same keys stay put when nothing changes */
  assert_true(moved(ten, ten) == 0.0);
  zg_pool_unref(ten);
  zg_pool_unref(eleven);
  zg_pool_unref(nine);
}

static void test_ring_weights_share(void **state) {
  static const uint32_t w[] = {2, 1, 2, 1};
  zg_pool_t *p = ring_pool(1, 4, w);
  const zg_ring_t *r = zg_pool_ring(p);
  unsigned counts[4] = {0, 0, 0, 0};
  (void)state;
  assert_ptr_equal(zg_pool_ring(p), r); /* built once */
  for (unsigned k = 0; k < 30000; k++)
    counts[zg_ring_pick(r, p, key_hash(k), NULL, 0)]++;
  print_message("shares %u %u %u %u\n", counts[0], counts[1], counts[2],
                counts[3]);
  /* 2:1: weight-2 instances together take ~2/3 (20,000) */
  assert_in_range(counts[0] + counts[2], 18500, 21500);
  assert_in_range(counts[0] * 10 / (counts[1] + 1), 14, 28); /* ~2x */
  zg_pool_unref(p);
}

/* zg_pool_ring from several threads at once on a fresh pool (workers that
 * pick from a pool nobody built the ring of yet): every one gets the same
 * ring, the losers' rings are freed (ASan: no leak), and the ring read
 * after the CAS is the whole one (TSan, scripts/test.sh, runs this: a
 * release/acquire pair missing would show as a race on its points). */
#define RING_RACERS 4

typedef struct {
  const zg_pool_t *pool;
  pthread_barrier_t *go;
  const zg_ring_t *got;
  size_t picks[64];
} racer_t;

static void *ring_racer(void *arg) {
  racer_t *r = arg;
  pthread_barrier_wait(r->go);
  r->got = zg_pool_ring(r->pool);
  for (unsigned k = 0; k < 64; k++)
    r->picks[k] = zg_ring_pick(r->got, r->pool, key_hash(k), NULL, 0);
  return NULL;
}

static void test_ring_built_once_under_a_race(void **state) {
  (void)state;
  for (int round = 0; round < 20; round++) {
    zg_pool_t *pool = ring_pool(1, 12, NULL);
    pthread_barrier_t go;
    pthread_t th[RING_RACERS];
    racer_t r[RING_RACERS];
    assert_int_equal(pthread_barrier_init(&go, NULL, RING_RACERS), 0);
    for (int i = 0; i < RING_RACERS; i++) {
      memset(&r[i], 0, sizeof(r[i]));
      r[i].pool = pool;
      r[i].go = &go;
      assert_int_equal(pthread_create(&th[i], NULL, ring_racer, &r[i]), 0);
    }
    for (int i = 0; i < RING_RACERS; i++)
      assert_int_equal(pthread_join(th[i], NULL), 0);
    pthread_barrier_destroy(&go);
    assert_non_null(r[0].got);
    assert_ptr_equal(zg_pool_ring(pool), r[0].got);
    for (int i = 1; i < RING_RACERS; i++) {
      assert_ptr_equal(r[i].got, r[0].got);
      assert_memory_equal(r[i].picks, r[0].picks, sizeof(r[0].picks));
    }
    assert_int_equal(r[0].got->n, 12 * ZG_RING_POINTS);
    zg_pool_unref(pool);
  }
}

static void test_ring_retry_and_down(void **state) {
  zg_pool_t *p = ring_pool(1, 5, NULL);
  const zg_ring_t *r = zg_pool_ring(p);
  zg_instance_t inst[5];
  zg_pool_t *down;
  (void)state;
  for (unsigned k = 0; k < 2000; k++) {
    uint64_t h = key_hash(k);
    size_t first = zg_ring_pick(r, p, h, NULL, 0);
    size_t tried[2] = {first, 0};
    size_t second = zg_ring_pick(r, p, h, tried, 1);
    assert_true(first < 5 && second < 5 && second != first);
    /* the retry is deterministic too: the next distinct one round */
    assert_int_equal(zg_ring_pick(r, p, h, tried, 1), second);
    tried[1] = second;
    assert_true(zg_ring_pick(r, p, h, tried, 2) != first);
  }
  size_t all[] = {0, 1, 2, 3, 4};
  assert_int_equal(zg_ring_pick(r, p, 42, all, 5), ZG_PICK_NONE);
  /* a down instance holds no point: never picked */
  for (size_t i = 0; i < 5; i++)
    zg_instance_copy(&inst[i], &p->inst[i]);
  inst[2].up = false;
  down = zg_pool_new(inst, 5, 2, 0);
  assert_non_null(down);
  clear_all(inst, 5);
  for (unsigned k = 0; k < 5000; k++)
    assert_true(zg_ring_pick(zg_pool_ring(down), down, key_hash(k), NULL, 0) !=
                2);
  zg_pool_unref(down);
  zg_pool_unref(p);
}

/* ---- slow start ------------------------------------------------------------
 */

static void test_slow_start_curve(void **state) {
  (void)state;
  /* thousandths of the weight: 10% at 0, 55% at half time, 100% at full */
  assert_int_equal(zg_balance_slow_start_weight(4, 0, 30000), 400);
  assert_int_equal(zg_balance_slow_start_weight(4, 15000, 30000), 2200);
  assert_int_equal(zg_balance_slow_start_weight(4, 30000, 30000), 4000);
  assert_int_equal(zg_balance_slow_start_weight(4, 99999, 30000), 4000);
  assert_int_equal(zg_balance_slow_start_weight(1, 7500, 30000), 325);
  /* linear: every step up, never past the weight */
  for (uint64_t t = 0, prev = 0; t <= 30000; t += 100) {
    uint64_t w = zg_balance_slow_start_weight(1, t, 30000);
    assert_true(w >= prev && w <= 1000);
    prev = w;
  }
  /* off */
  assert_int_equal(zg_balance_slow_start_weight(3, 0, 0), 3000);
}

static void test_pick_weights_follows_ramp(void **state) {
  /* an old instance (1000) and a new one at 10% (100): ~10:1 */
  uint64_t w[3] = {1000, 0, 100};
  uint64_t load[3] = {0, 0, 0};
  unsigned counts[3] = {0, 0, 0};
  zg_rng_t rng;
  uint64_t cursor = 0;
  (void)state;
  zg_rng_seed(&rng, 5);
  for (int i = 0; i < 22000; i++)
    counts[zg_balance_pick_weights(ZG_BALANCE_RANDOM, &rng, &cursor, w, 3, NULL,
                                   NULL)]++;
  assert_int_equal(counts[1], 0); /* weight 0: down, tried or failed */
  assert_in_range(counts[2], 1600, 2400);
  counts[0] = counts[2] = 0;
  for (int i = 0; i < 1100; i++)
    counts[zg_balance_pick_weights(ZG_BALANCE_ROUND_ROBIN, &rng, &cursor, w, 3,
                                   NULL, NULL)]++;
  assert_int_equal(counts[0], 1000); /* weighted round robin: exact */
  assert_int_equal(counts[2], 100);
  /* least request: load compared per ramped weight: 1 in flight on the
   * new one (1/100) is more than 5 on the old one (5/1000) */
  load[0] = 5;
  load[2] = 1;
  for (int i = 0; i < 1000; i++)
    assert_int_equal(zg_balance_pick_weights(ZG_BALANCE_LEAST_REQUEST, &rng,
                                             &cursor, w, 3, load_of, load),
                     0);
  w[0] = w[2] = 0;
  assert_int_equal(zg_balance_pick_weights(ZG_BALANCE_RANDOM, &rng, &cursor, w,
                                           3, NULL, NULL),
                   ZG_PICK_NONE);
}

static void test_pool_carry_seen(void **state) {
  zg_pool_t *first = ring_pool(1, 3, NULL), *second = ring_pool(2, 3, NULL);
  zg_pool_t *third = ring_pool(1, 4, NULL);
  (void)state;
  zg_pool_carry_seen(first, NULL, 500); /* the first pool: from the start */
  for (size_t i = 0; i < 3; i++)
    assert_int_equal(first->inst[i].seen_ms, 0);
  assert_int_equal(first->newest_seen_ms, 0);
  /* 10.0.1.1 leaves, 10.0.1.4 comes at 1000 */
  zg_pool_carry_seen(second, first, 1000);
  assert_string_equal(second->inst[2].host, "10.0.1.4");
  assert_int_equal(second->inst[0].seen_ms, 0);
  assert_int_equal(second->inst[1].seen_ms, 0);
  assert_int_equal(second->inst[2].seen_ms, 1000);
  assert_int_equal(second->newest_seen_ms, 1000);
  /* at 2000 10.0.1.1 is back (new again), 10.0.1.4 keeps 1000 */
  zg_pool_carry_seen(third, second, 2000);
  assert_int_equal(third->inst[0].seen_ms, 2000);
  assert_int_equal(third->inst[3].seen_ms, 1000);
  assert_int_equal(third->inst[1].seen_ms, 0);
  assert_int_equal(third->newest_seen_ms, 2000);
  zg_pool_unref(first);
  zg_pool_unref(second);
  zg_pool_unref(third);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pool_new_copies),
      cmocka_unit_test(test_pool_sorted),
      cmocka_unit_test(test_pool_refcount),
      cmocka_unit_test(test_pool_duplicates),
      cmocka_unit_test(test_pool_duplicates_order_free),
      cmocka_unit_test(test_pool_duplicates_prefer_in_service),
      cmocka_unit_test(test_pool_empty),
      cmocka_unit_test(test_pool_addr),
      cmocka_unit_test(test_pool_same),
      cmocka_unit_test(test_rng_xoshiro256starstar),
      cmocka_unit_test(test_rng_seed),
      cmocka_unit_test(test_rng_below_range),
      cmocka_unit_test(test_rng_below_uniform),
      cmocka_unit_test(test_pick_random_n1),
      cmocka_unit_test(test_pick_random_covers),
      cmocka_unit_test(test_pick_random_skips_tried),
      cmocka_unit_test(test_pick_tried_repeats),
      cmocka_unit_test(test_pick_random_uniform_over_rest),
      cmocka_unit_test(test_pick_round_robin),
      cmocka_unit_test(test_pick_round_robin_skips_tried),
      cmocka_unit_test(test_pick_round_robin_shrinking_pool),
      cmocka_unit_test(test_pool_live_and_weights),
      cmocka_unit_test(test_pool_uniform_weights_need_no_table),
      cmocka_unit_test(test_pick_pool_weighted_random),
      cmocka_unit_test(test_pick_pool_weighted_skips_tried),
      cmocka_unit_test(test_pick_pool_never_down),
      cmocka_unit_test(test_pick_pool_none_live),
      cmocka_unit_test(test_pick_pool_weighted_round_robin),
      cmocka_unit_test(test_pick_least_prefers_less_loaded),
      cmocka_unit_test(test_pick_least_weights_and_tried),
      cmocka_unit_test(test_ewma_decay),
      cmocka_unit_test(test_ewma_peak_and_average),
      cmocka_unit_test(test_ewma_cost),
      cmocka_unit_test(test_ewma_failure),
      cmocka_unit_test(test_pick_least_ewma),
      cmocka_unit_test(test_ring_remaps_about_one_in_n),
      cmocka_unit_test(test_ring_weights_share),
      cmocka_unit_test(test_ring_retry_and_down),
      cmocka_unit_test(test_ring_built_once_under_a_race),
      cmocka_unit_test(test_slow_start_curve),
      cmocka_unit_test(test_pick_weights_follows_ramp),
      cmocka_unit_test(test_pool_carry_seen),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
