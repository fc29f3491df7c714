/* Choosing an instance from a pool. Pure code. The PRNG is xoshiro256**,
 * seeded once per loop from the kernel; never rand(). */
#ifndef ZKGATE_BALANCE_H
#define ZKGATE_BALANCE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
  ZG_BALANCE_RANDOM = 0,
  ZG_BALANCE_ROUND_ROBIN,
  ZG_BALANCE_LEAST_REQUEST, /* power of two random choices on in-flight */
} zg_balance_t;

/* "random", "round_robin", ...: the configuration's word. */
const char *zg_balance_name(zg_balance_t how);

typedef struct {
  uint64_t s[4];
} zg_rng_t;

void zg_rng_seed(zg_rng_t *rng, uint64_t seed);
uint64_t zg_rng_next(zg_rng_t *rng);
/* Uniform in [0, bound); bound > 0. Unbiased (Lemire's method). */
uint64_t zg_rng_below(zg_rng_t *rng, uint64_t bound);

#define ZG_PICK_NONE ((size_t)-1)

/* Picks an index in [0, n) that is not among the `ntried` indices in
 * `tried` (retries go to another instance). Random: uniform over the
 * remaining ones. Round robin: the next remaining one after *cursor, which
 * is advanced. Returns ZG_PICK_NONE when none remains. */
size_t zg_balance_pick(zg_balance_t how, zg_rng_t *rng, uint64_t *cursor,
                       size_t n, const size_t *tried, size_t ntried);

/* Picks a live instance of `pool` not among `tried`: uniformly (random),
 * in turn (round robin), each in proportion to its weight when live
 * weights differ. Instances that are down or weigh 0 are never picked.
 * Returns an index into pool->inst or ZG_PICK_NONE. */
struct zg_pool;
size_t zg_balance_pick_pool(zg_balance_t how, zg_rng_t *rng, uint64_t *cursor,
                            const struct zg_pool *pool, const size_t *tried,
                            size_t ntried);

/* In-flight requests (or connections) of pool->inst[i], as the caller
 * counts them. */
typedef uint64_t (*zg_balance_load_fn)(void *arg, size_t i);

/* Least request, by the power of two random choices: two distinct live
 * instances not among `tried` are drawn as zg_balance_pick_pool draws
 * (in proportion to weight), and the one with the lower in_flight/weight
 * is taken (the first drawn on a tie, so that idle instances share in
 * proportion to weight). One left: that one. Returns an index into
 * pool->inst or ZG_PICK_NONE. */
size_t zg_balance_pick_least(zg_rng_t *rng, const struct zg_pool *pool,
                             const size_t *tried, size_t ntried,
                             zg_balance_load_fn load, void *arg);

#endif
