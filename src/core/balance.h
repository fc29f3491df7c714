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
  ZG_BALANCE_HASH,          /* consistent hash of a request key */
} zg_balance_t;

/* What balance = hash hashes (hash_key =). */
typedef enum {
  ZG_HASH_NONE = 0,
  ZG_HASH_HEADER, /* header:NAME, the first field of that name */
  ZG_HASH_COOKIE, /* cookie:NAME */
  ZG_HASH_PATH,   /* the request path, without the query */
  ZG_HASH_CLIENT, /* the client's IP address */
} zg_hash_key_t;

#define ZG_HASH_NAME_MAX 64 /* header and cookie names, with the NUL */

/* "random", "round_robin", ...: the configuration's word. */
const char *zg_balance_name(zg_balance_t how);
/* "header", "cookie", "path", "client"; NULL for ZG_HASH_NONE. */
const char *zg_hash_key_name(zg_hash_key_t key);

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

/* ---- latency (least_request_latency = ewma) ----
 * A "peak EWMA" of an instance's response latency, as Finagle and Linkerd
 * balance on: a sample above the estimate replaces it at once (a slowdown
 * shows in one response), one below it is averaged in with the weight of
 * the time since the last sample, 1 - exp(-dt/decay) (a time constant, not
 * a count of samples, so that busy and quiet instances forget at the same
 * pace). Read between samples, the estimate decays towards 0 by
 * exp(-age/decay): an instance left alone because it was slow is tried
 * again after a few decay periods, and its next response updates it. */
typedef struct {
  double us;         /* the estimate when last sampled, microseconds */
  uint64_t stamp_us; /* the last sample's time (a monotonic clock) */
  int seen;          /* 0: no sample yet */
} zg_ewma_t;

/* The estimate at now_us (decayed since the last sample); 0 without one.
 * decay_ms is the time constant (0: no memory, no decay). */
double zg_ewma_value(const zg_ewma_t *e, uint64_t now_us, uint64_t decay_ms);
/* One response latency sample, taken at now_us. */
void zg_ewma_observe(zg_ewma_t *e, double sample_us, uint64_t now_us,
                     uint64_t decay_ms);
/* A request that ended without a response, elapsed_us after it was passed
 * on, because of the instance (a reset, a close, a stream error; a
 * response timeout is a plain sample, zg_ewma_observe): its time counts,
 * as Finagle's and Linkerd's peak EWMA count a failed request's, but never
 * lowers the estimate. It counts as max(elapsed_us, the estimate as last
 * sampled) while that sample is at most one decay period old: a fast
 * failure (a reset after 1 ms) keeps the estimate where the last answer
 * put it, from now (the fading since undone, and stopped while failures go
 * on), so that an instance that fails fast never looks faster for failing
 * and draws no more than its share until passive health takes it out (not
 * a "black hole"). An older sample is not brought back: the failure holds
 * the decayed value (one failure after a minute's quiet does not restore
 * the peak of a minute ago). An instance without an estimate stays
 * without one: a fast failure says nothing of its speed. */
void zg_ewma_observe_failure(zg_ewma_t *e, double elapsed_us, uint64_t now_us,
                             uint64_t decay_ms);
/* What least_request compares, per unit of weight: the estimate times the
 * requests in flight plus one, in microseconds (at least in_flight + 1, so
 * that an estimate decayed to nothing still counts the requests). The
 * estimate decays only while the instance holds no request: one that
 * stops answering keeps its last estimate as its requests pile up. An
 * instance with no sample yet costs 0 while it holds nothing and a penalty
 * above any measured cost while it holds requests: it gets one request at
 * a time until its first response says how fast it is. */
uint64_t zg_ewma_cost(const zg_ewma_t *e, uint64_t in_flight, uint64_t now_us,
                      uint64_t decay_ms);
#define ZG_EWMA_PENALTY ((uint64_t)1 << 40)

/* ---- slow start ----
 * An instance's effective weight, in thousandths of its weight units, age_ms
 * after it first appeared: from 10% at 0 linearly to 100% at window_ms
 * (and after; window 0: always 100%). The floor keeps a new instance
 * warming up rather than idle. */
uint64_t zg_balance_slow_start_weight(uint32_t weight, uint64_t age_ms,
                                      uint64_t window_ms);

/* A pick over explicit weights w[0..n) (0: not eligible: down, tried or
 * failed), linear in n: random (in proportion to w), round robin (by
 * *cursor, weighted), least request (two drawn in proportion to w, the
 * lower load/w taken; `load` may be NULL for the others). ZG_PICK_NONE when
 * every weight is 0. For slow start, where weights change with time. */
size_t zg_balance_pick_weights(zg_balance_t how, zg_rng_t *rng,
                               uint64_t *cursor, const uint64_t *w, size_t n,
                               zg_balance_load_fn load, void *arg);

/* ---- consistent hashing (balance = hash) ----
 * A ring of points: each live instance has points in proportion to its
 * weight (ZG_RING_POINTS for a weight equal to the pool's mean), placed by
 * a hash of its address only, so that one instance added to or removed
 * from N moves about 1/(N+1) of the keys, those of its own arcs. A key
 * goes to the instance of the first point at or after its hash. */
#define ZG_RING_POINTS 160

typedef struct {
  uint64_t pos;
  uint64_t addr_hash; /* orders points at one position (never in practice) */
  uint32_t inst;      /* index into the pool */
} zg_ring_point_t;

typedef struct zg_ring {
  size_t n;
  zg_ring_point_t pt[];
} zg_ring_t;

/* 64-bit hash of bytes (FNV-1a, then a splitmix64 finaliser so that close
 * inputs land far apart). */
uint64_t zg_hash64(const void *data, size_t len);
/* The ring of `pool`'s live instances; NULL when out of memory. */
zg_ring_t *zg_ring_build(const struct zg_pool *pool);
/* NULL is fine. A ring is one malloc block: core/pool.c frees a pool's with
 * free() (pool.h cannot include this header). */
void zg_ring_free(zg_ring_t *ring);
/* The instance for `hash`: the first point at or after it whose instance
 * is live and not among `tried` (a retry goes on to the next distinct
 * instance round the ring). ZG_PICK_NONE when none. */
size_t zg_ring_pick(const zg_ring_t *ring, const struct zg_pool *pool,
                    uint64_t hash, const size_t *tried, size_t ntried);
/* The pool's ring, built at the first call and kept with the pool (pools
 * are immutable, so it never changes; safe from several loops at once:
 * the first one stored wins). NULL when out of memory. */
const zg_ring_t *zg_pool_ring(const struct zg_pool *pool);

#endif
