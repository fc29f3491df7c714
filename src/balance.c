/* Balancing: a fast seeded PRNG and the pick among untried instances.
 * xoshiro256** (Blackman and Vigna) seeded through splitmix64; bounded
 * draws by Lemire's multiply-and-reject, so no modulo bias. */
#include "zkgate/balance.h"

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
