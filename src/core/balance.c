/* Balancing: a fast seeded PRNG and the pick among untried instances.
 * xoshiro256** (Blackman and Vigna) seeded through splitmix64; bounded
 * draws by Lemire's multiply-and-reject, so no modulo bias. */
#include "core/balance.h"

#include "core/pool.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *zg_balance_name(zg_balance_t how) {
  switch (how) {
  case ZG_BALANCE_ROUND_ROBIN:
    return "round_robin";
  case ZG_BALANCE_LEAST_REQUEST:
    return "least_request";
  case ZG_BALANCE_HASH:
    return "hash";
  default:
    return "random";
  }
}

const char *zg_hash_key_name(zg_hash_key_t key) {
  switch (key) {
  case ZG_HASH_HEADER:
    return "header";
  case ZG_HASH_COOKIE:
    return "cookie";
  case ZG_HASH_PATH:
    return "path";
  case ZG_HASH_CLIENT:
    return "client";
  default:
    return NULL;
  }
}

static uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void zg_rng_seed(zg_rng_t *rng, uint64_t seed) {
  for (int i = 0; i < 4; i++)
    rng->s[i] = splitmix64(&seed);
}

uint64_t zg_rng_next(zg_rng_t *rng) {
  uint64_t *s = rng->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

uint64_t zg_rng_below(zg_rng_t *rng, uint64_t bound) {
  /* 32-bit variant: pools are far smaller than 2^32. */
  uint32_t b = (uint32_t)bound;
  uint64_t m;
  uint32_t low;
  if (bound > UINT32_MAX) {
    uint64_t r, limit = UINT64_MAX - UINT64_MAX % bound;
    do
      r = zg_rng_next(rng);
    while (r >= limit);
    return r % bound;
  }
  m = (zg_rng_next(rng) >> 32) * b;
  low = (uint32_t)m;
  if (low < b) {
    uint32_t threshold = (uint32_t)(-b) % b;
    while (low < threshold) {
      m = (zg_rng_next(rng) >> 32) * b;
      low = (uint32_t)m;
    }
  }
  return m >> 32;
}

static int was_tried(size_t i, const size_t *tried, size_t ntried) {
  for (size_t k = 0; k < ntried; k++)
    if (tried[k] == i)
      return 1;
  return 0;
}

size_t zg_balance_pick(zg_balance_t how, zg_rng_t *rng, uint64_t *cursor,
                       size_t n, const size_t *tried, size_t ntried) {
  size_t left = n, skip;
  for (size_t k = 0; k < ntried; k++)
    if (tried[k] < n && !was_tried(tried[k], tried, k))
      left--;
  if (left == 0)
    return ZG_PICK_NONE;
  if (how == ZG_BALANCE_ROUND_ROBIN) {
    for (size_t step = 0; step < n; step++) {
      size_t i = (size_t)((*cursor)++ % n);
      if (!was_tried(i, tried, ntried))
        return i;
    }
    return ZG_PICK_NONE;
  }
  /* The skip-th untried index, uniformly. */
  skip = (size_t)zg_rng_below(rng, left);
  if (ntried == 0)
    return skip;
  for (size_t i = 0; i < n; i++) {
    if (was_tried(i, tried, ntried))
      continue;
    if (skip-- == 0)
      return i;
  }
  return ZG_PICK_NONE;
}

/* The first index whose cumulative weight exceeds r. */
static size_t cum_search(const uint64_t *cum, size_t n, uint64_t r) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (cum[mid] > r)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

/* Weighted: a point in [0, total) minus the tried instances' shares, moved
 * past each tried instance's span (in index order), then found by binary
 * search over the cumulative weights. */
static size_t pick_weighted(zg_balance_t how, zg_rng_t *rng, uint64_t *cursor,
                            const zg_pool_t *p, const size_t *tried,
                            size_t ntried) {
  size_t order[8], k = 0, i;
  uint64_t excluded = 0, r;
  for (size_t t = 0; t < ntried && k < 8; t++) {
    if (tried[t] >= p->n || !zg_pool_live(p, tried[t]) ||
        was_tried(tried[t], tried, t))
      continue;
    /* insertion sort by index */
    i = k++;
    while (i > 0 && order[i - 1] > tried[t]) {
      order[i] = order[i - 1];
      i--;
    }
    order[i] = tried[t];
    excluded += p->inst[tried[t]].weight;
  }
  if (excluded >= p->total_weight)
    return ZG_PICK_NONE;
  if (how == ZG_BALANCE_ROUND_ROBIN)
    r = (*cursor)++ % (p->total_weight - excluded);
  else
    r = zg_rng_below(rng, p->total_weight - excluded);
  for (size_t t = 0; t < k; t++)
    if (r >= p->cum[order[t]] - p->inst[order[t]].weight)
      r += p->inst[order[t]].weight;
  i = cum_search(p->cum, p->n, r);
  return i < p->n ? i : ZG_PICK_NONE;
}

size_t zg_balance_pick_pool(zg_balance_t how, zg_rng_t *rng, uint64_t *cursor,
                            const zg_pool_t *pool, const size_t *tried,
                            size_t ntried) {
  size_t left, skip;
  if (!pool || pool->n_live == 0)
    return ZG_PICK_NONE;
  if (pool->cum)
    return pick_weighted(how, rng, cursor, pool, tried, ntried);
  if (pool->n_live == pool->n)
    return zg_balance_pick(how, rng, cursor, pool->n, tried, ntried);
  /* Some are down: the same choice over the live, untried ones. */
  left = 0;
  for (size_t i = 0; i < pool->n; i++)
    if (zg_pool_live(pool, i) && !was_tried(i, tried, ntried))
      left++;
  if (left == 0)
    return ZG_PICK_NONE;
  skip = how == ZG_BALANCE_ROUND_ROBIN ? (size_t)((*cursor)++ % left)
                                       : (size_t)zg_rng_below(rng, left);
  for (size_t i = 0; i < pool->n; i++) {
    if (!zg_pool_live(pool, i) || was_tried(i, tried, ntried))
      continue;
    if (skip-- == 0)
      return i;
  }
  return ZG_PICK_NONE;
}

/* lb/wb < la/wa, without division. Loads are in-flight counts (small) or
 * EWMA costs (up to ZG_EWMA_PENALTY, 2^40) and weights up to 10^9
 * (slow-start thousandths): the products may pass 2^64, so they are
 * compared in 128 bits. */
static int cheaper(uint64_t lb, uint64_t wb, uint64_t la, uint64_t wa) {
#ifdef __SIZEOF_INT128__
  return (unsigned __int128)lb * wa < (unsigned __int128)la * wb;
#else /* 32-bit targets: exact below 2^64, as in-flight counts are */
  return (long double)lb * wa < (long double)la * wb;
#endif
}

/* The second draw skips the first pick too: `tried` plus one, on the stack
 * for the usual short lists. */
#define LEAST_SKIP_ON_STACK 65

size_t zg_balance_pick_least(zg_rng_t *rng, const zg_pool_t *pool,
                             const size_t *tried, size_t ntried,
                             zg_balance_load_fn load, void *arg) {
  size_t stack[LEAST_SKIP_ON_STACK], *skip = stack, a, b;
  uint64_t la, lb, wa, wb;
  a = zg_balance_pick_pool(ZG_BALANCE_RANDOM, rng, NULL, pool, tried, ntried);
  if (a == ZG_PICK_NONE)
    return a;
  if (ntried + 1 > LEAST_SKIP_ON_STACK &&
      !(skip = malloc((ntried + 1) * sizeof(*skip))))
    return a; /* out of memory: one random choice */
  if (ntried)
    memcpy(skip, tried, ntried * sizeof(*skip));
  skip[ntried] = a;
  b = zg_balance_pick_pool(ZG_BALANCE_RANDOM, rng, NULL, pool, skip,
                           ntried + 1);
  if (skip != stack)
    free(skip);
  if (b == ZG_PICK_NONE)
    return a;
  la = load(arg, a);
  lb = load(arg, b);
  wa = pool->inst[a].weight;
  wb = pool->inst[b].weight;
  return cheaper(lb, wb, la, wa) ? b : a;
}

/* ---- latency EWMA ------------------------------------------------------ */

/* exp(-dt/decay); times in microseconds (a millisecond clock would see
 * most samples of a busy instance at dt = 0, which would never move the
 * average). */
static double decay_weight(uint64_t then_us, uint64_t now_us,
                           uint64_t decay_ms) {
  if (now_us <= then_us)
    return 1.0;
  if (decay_ms == 0)
    return 0.0;
  return exp(-(double)(now_us - then_us) / ((double)decay_ms * 1000.0));
}

double zg_ewma_value(const zg_ewma_t *e, uint64_t now_us, uint64_t decay_ms) {
  if (!e->seen)
    return 0;
  return e->us * decay_weight(e->stamp_us, now_us, decay_ms);
}

void zg_ewma_observe(zg_ewma_t *e, double sample_us, uint64_t now_us,
                     uint64_t decay_ms) {
  double w;
  if (!(sample_us > 0)) /* negative or NaN: a clock oddity, taken as 0 */
    sample_us = 0;
  if (!e->seen || sample_us > e->us) {
    e->us = sample_us; /* the first, or a peak: taken whole */
  } else {
    w = decay_weight(e->stamp_us, now_us, decay_ms);
    e->us = e->us * w + sample_us * (1.0 - w);
  }
  if (!e->seen || now_us > e->stamp_us)
    e->stamp_us = now_us;
  e->seen = 1;
}

void zg_ewma_observe_failure(zg_ewma_t *e, double elapsed_us, uint64_t now_us,
                             uint64_t decay_ms) {
  double held;
  if (!e->seen)
    return;
  held =
      now_us > e->stamp_us && now_us - e->stamp_us > decay_ms * (uint64_t)1000
          ? zg_ewma_value(e, now_us, decay_ms)
          : e->us;
  if (elapsed_us > held) {
    e->us = held;
    zg_ewma_observe(e, elapsed_us, now_us, decay_ms);
    return;
  }
  /* max(elapsed, held) is `held`: it stays, and only its time moves (no
   * rounding through the average) */
  e->us = held;
  if (now_us > e->stamp_us)
    e->stamp_us = now_us;
}

uint64_t zg_ewma_cost(const zg_ewma_t *e, uint64_t in_flight, uint64_t now_us,
                      uint64_t decay_ms) {
  double c;
  if (!e->seen)
    return in_flight ? ZG_EWMA_PENALTY + in_flight : 0;
  /* Decayed only while it holds nothing: an instance that stops answering
   * keeps its last estimate while its requests pile up. */
  c = (in_flight ? e->us : zg_ewma_value(e, now_us, decay_ms)) *
      (double)(in_flight + 1);
  if (c >= (double)(ZG_EWMA_PENALTY - in_flight - 1))
    return ZG_EWMA_PENALTY - 1;
  return (uint64_t)c + in_flight + 1;
}

/* ---- slow start --------------------------------------------------------- */

uint64_t zg_balance_slow_start_weight(uint32_t weight, uint64_t age_ms,
                                      uint64_t window_ms) {
  if (window_ms == 0 || age_ms >= window_ms)
    return (uint64_t)weight * 1000;
  return (uint64_t)weight * (100 + 900 * age_ms / window_ms);
}

/* The index where the cumulative weight passes r, skipping zeros. */
static size_t weight_at(const uint64_t *w, size_t n, uint64_t r) {
  for (size_t i = 0; i < n; i++) {
    if (r < w[i])
      return i;
    r -= w[i];
  }
  return ZG_PICK_NONE;
}

size_t zg_balance_pick_weights(zg_balance_t how, zg_rng_t *rng,
                               uint64_t *cursor, const uint64_t *w, size_t n,
                               zg_balance_load_fn load, void *arg) {
  uint64_t total = 0, la, lb, r;
  size_t a, b;
  for (size_t i = 0; i < n; i++)
    total += w[i];
  if (total == 0)
    return ZG_PICK_NONE;
  if (how == ZG_BALANCE_ROUND_ROBIN)
    return weight_at(w, n, (*cursor)++ % total);
  a = weight_at(w, n, zg_rng_below(rng, total));
  if (how != ZG_BALANCE_LEAST_REQUEST || !load || total == w[a])
    return a;
  /* the second, in proportion to w among the others */
  r = zg_rng_below(rng, total - w[a]);
  b = ZG_PICK_NONE;
  for (size_t i = 0; i < n && b == ZG_PICK_NONE; i++) {
    if (i == a)
      continue;
    if (r < w[i])
      b = i;
    else
      r -= w[i];
  }
  if (b == ZG_PICK_NONE)
    return a;
  la = load(arg, a);
  lb = load(arg, b);
  return cheaper(lb, w[b], la, w[a]) ? b : a;
}

/* ---- consistent hashing ------------------------------------------------- */

static uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t zg_hash64(const void *data, size_t len) {
  const unsigned char *c = data;
  uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a 64 */
  for (size_t i = 0; i < len; i++)
    h = (h ^ c[i]) * 0x100000001b3ULL;
  return mix64(h ^ len);
}

static int point_cmp(const void *a, const void *b) {
  const zg_ring_point_t *x = a, *y = b;
  if (x->pos != y->pos)
    return x->pos < y->pos ? -1 : 1;
  if (x->addr_hash != y->addr_hash)
    return x->addr_hash < y->addr_hash ? -1 : 1;
  return 0;
}

/* Points of a weight-w instance: ZG_RING_POINTS at the mean weight, at
 * least 1; fewer per instance in very large pools, so that a ring stays
 * under about a million points. */
static size_t ring_points(const zg_pool_t *p, uint32_t w) {
  uint64_t per = ZG_RING_POINTS, v;
  if (p->n_live * per > (1u << 20))
    per = (1u << 20) / p->n_live;
  if (per < 4)
    per = 4;
  v = (per * p->n_live * w + p->total_weight / 2) / p->total_weight;
  return v ? (size_t)v : 1;
}

zg_ring_t *zg_ring_build(const zg_pool_t *pool) {
  size_t total = 0, k = 0;
  zg_ring_t *ring;
  for (size_t i = 0; i < pool->n; i++)
    if (zg_pool_live(pool, i))
      total += ring_points(pool, pool->inst[i].weight);
  ring = malloc(sizeof(*ring) + total * sizeof(ring->pt[0]));
  if (!ring)
    return NULL;
  for (size_t i = 0; i < pool->n; i++) {
    char addr[ZG_HOST_MAX + 8];
    int len;
    uint64_t h;
    size_t pts;
    if (!zg_pool_live(pool, i))
      continue;
    len = snprintf(addr, sizeof(addr), "%s:%u", pool->inst[i].host,
                   pool->inst[i].port);
    h = zg_hash64(addr, (size_t)len);
    pts = ring_points(pool, pool->inst[i].weight);
    for (size_t v = 0; v < pts; v++) {
      ring->pt[k].pos = mix64(h + (v + 1) * 0x9e3779b97f4a7c15ULL);
      ring->pt[k].addr_hash = h;
      ring->pt[k].inst = (uint32_t)i;
      k++;
    }
  }
  ring->n = k;
  qsort(ring->pt, k, sizeof(ring->pt[0]), point_cmp);
  return ring;
}

void zg_ring_free(zg_ring_t *ring) {
  free(ring);
}

size_t zg_ring_pick(const zg_ring_t *ring, const zg_pool_t *pool, uint64_t hash,
                    const size_t *tried, size_t ntried) {
  size_t lo = 0, hi;
  if (!ring || ring->n == 0)
    return ZG_PICK_NONE;
  hi = ring->n;
  while (lo < hi) { /* the first point at or after hash */
    size_t mid = lo + (hi - lo) / 2;
    if (ring->pt[mid].pos < hash)
      lo = mid + 1;
    else
      hi = mid;
  }
  for (size_t step = 0; step < ring->n; step++) {
    size_t i = ring->pt[(lo + step) % ring->n].inst;
    if (i < pool->n && zg_pool_live(pool, i) && !was_tried(i, tried, ntried))
      return i;
  }
  return ZG_PICK_NONE;
}

const zg_ring_t *zg_pool_ring(const zg_pool_t *pool) {
  /* The ring is a cache of a pure function of the immutable pool: the
   * cast only lets the first caller store it. */
  zg_pool_t *p = (zg_pool_t *)(uintptr_t)pool;
  zg_ring_t *ring = atomic_load_explicit(&p->ring, memory_order_acquire), *mine;
  zg_ring_t *expected = NULL;
  if (ring)
    return ring;
  if (!(mine = zg_ring_build(pool)))
    return NULL;
  if (atomic_compare_exchange_strong_explicit(&p->ring, &expected, mine,
                                              memory_order_acq_rel,
                                              memory_order_acquire))
    return mine;
  zg_ring_free(mine); /* another loop stored one first */
  return expected;
}
