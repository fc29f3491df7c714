/* Pools: immutable, reference-counted snapshots of a service's live
 * instances. The registry builds a new pool on every change and publishes
 * it; a session holds a reference to the pool it picked from for as long
 * as it needs the instance, so a pool is never changed in place. */
#ifndef ZKGATE_POOL_H
#define ZKGATE_POOL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/instance.h"

typedef struct zg_pool {
  atomic_uint refs;
  uint64_t version;      /* increases with every publication of a service */
  uint64_t created_ms;   /* uv_now of the loop that built it */
  uint32_t zk_lists;     /* ZooKeeper lists and data reads this pool took */
  uint32_t zk_reads;     /* since the service's previous one (0: static) */
  size_t n_live;         /* instances that take new connections: up and
                            weight > 0 */
  uint64_t total_weight; /* sum of the live instances' weights */
  uint64_t *cum;         /* when live weights differ: cum[i] = sum of live
                            weights of inst[0..i]; NULL when uniform */
  /* balance = hash: the consistent-hash ring of the live instances, built
   * once (core/balance.h zg_pool_ring), freed with the pool; NULL until */
  _Atomic(struct zg_ring *) ring;
  uint64_t newest_seen_ms; /* the latest inst[].seen_ms of a live one */
  /* "host:port" of each instance, built once with the pool: the key its
   * upstream connections, health marks and logs go by, asked for on every
   * request (zg_pool_addr). addr_off[2i] is inst[i] on its port,
   * addr_off[2i + 1] on its plain_port (the same text when it has none);
   * entry k is addr + addr_off[k], addr_off[k + 1] - addr_off[k] - 1
   * bytes long. NULL when the pool has no instances. */
  uint32_t *addr_off;
  char *addr;
  size_t n;
  zg_instance_t inst[]; /* sorted by (host, port); down ones included */
} zg_pool_t;

/* 1 when inst[i] takes new connections. */
static inline int zg_pool_live(const zg_pool_t *p, size_t i) {
  return p->inst[i].up && p->inst[i].weight > 0;
}

/* Copies `n` instances into a new pool with one reference. Duplicate
 * addresses (same host and port) are kept once, preferring an entry in
 * service. NULL on allocation failure. */
zg_pool_t *zg_pool_new(const zg_instance_t *inst, size_t n, uint64_t version,
                       uint64_t created_ms);
/* Before publication: each instance of `pool` keeps the time its address
 * was first seen in `prev` (the service's pool before), and one new to it
 * is seen at now_ms; with no `prev` (the first pool) every instance is
 * there from the start (0), so that a gateway starting up ramps nothing.
 * Sets newest_seen_ms. */
void zg_pool_carry_seen(zg_pool_t *pool, const zg_pool_t *prev,
                        uint64_t now_ms);
/* inst[i]'s "host:port" for `port`, which is inst[i].port or its
 * plain_port (zg_instance_use_tls), as zg_instance_addr_port_str writes it;
 * *len (when not NULL) receives its length. */
static inline const char *zg_pool_addr(const zg_pool_t *p, size_t i,
                                       uint16_t port, size_t *len) {
  size_t k = 2 * i + (port != p->inst[i].port);
  if (len)
    *len = p->addr_off[k + 1] - p->addr_off[k] - 1;
  return p->addr + p->addr_off[k];
}
zg_pool_t *zg_pool_ref(zg_pool_t *pool);
void zg_pool_unref(zg_pool_t *pool); /* NULL is fine */
/* 1 when both hold the same instances (addresses, tls, base paths, status,
 * weight, znode), whatever the versions of their data. */
int zg_pool_same(const zg_pool_t *a, const zg_pool_t *b);

#endif
