/* Pool snapshots: built once, shared by reference, freed by the last
 * holder. The count is atomic so that a later multi-worker build can hand
 * the same snapshot to several loops. */
#include "core/pool.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

static int inst_cmp(const void *a, const void *b) {
  const zg_instance_t *x = a, *y = b;
  int c = strcmp(x->host, y->host);
  if (c)
    return c;
  return (int)x->port - (int)y->port;
}

static int str_cmp_null(const char *a, const char *b) {
  if (!a || !b)
    return (a != NULL) - (b != NULL);
  return strcmp(a, b);
}

/* Address first, then everything else, so that which of two entries for
 * one address is kept does not depend on the order they came in. Of two
 * entries for one address the one in service comes first and is kept: an
 * instance restarted while its old znode lingers (stopping, disabled, or
 * with weight 0) must not be taken out by the old one. */
static int inst_cmp_full(const void *a, const void *b) {
  const zg_instance_t *x = a, *y = b;
  int c = inst_cmp(a, b);
  int lx = x->up && x->weight > 0, ly = y->up && y->weight > 0;
  if (c)
    return c;
  if (lx != ly)
    return ly - lx;
  if (x->up != y->up)
    return (int)y->up - (int)x->up;
  if (x->tls != y->tls)
    return (int)x->tls - (int)y->tls;
  c = str_cmp_null(x->base_path, y->base_path);
  return c ? c : str_cmp_null(x->name, y->name);
}

/* Live count, total weight, and the cumulative weights that weighted
 * picks search, only when live weights differ. */
static int weigh(zg_pool_t *p) {
  uint32_t first = 0;
  int uniform = 1;
  p->n_live = 0;
  p->total_weight = 0;
  p->cum = NULL;
  p->zk_lists = 0;
  p->zk_reads = 0;
  for (size_t i = 0; i < p->n; i++) {
    if (!zg_pool_live(p, i))
      continue;
    if (p->n_live++ == 0)
      first = p->inst[i].weight;
    else if (p->inst[i].weight != first)
      uniform = 0;
    p->total_weight += p->inst[i].weight;
  }
  if (uniform)
    return 0;
  p->cum = malloc(p->n * sizeof(*p->cum));
  if (!p->cum)
    return UV_ENOMEM;
  uint64_t sum = 0;
  for (size_t i = 0; i < p->n; i++) {
    if (zg_pool_live(p, i))
      sum += p->inst[i].weight;
    p->cum[i] = sum;
  }
  return 0;
}

/* The addresses zg_pool_addr hands out, in one block after the offsets:
 * two per instance (its port, its plain port). */
static int build_addrs(zg_pool_t *p) {
  char one[ZG_HOST_MAX + 10];
  size_t total = 0, at = 0;
  p->addr_off = NULL;
  p->addr = NULL;
  if (p->n == 0)
    return 0;
  for (size_t i = 0; i < p->n; i++) {
    const zg_instance_t *x = &p->inst[i];
    total += strlen(zg_instance_addr_port_str(x, x->port, one, sizeof(one)));
    total += strlen(zg_instance_addr_port_str(
        x, x->plain_port ? x->plain_port : x->port, one, sizeof(one)));
    total += 2;
  }
  if (total > UINT32_MAX)
    return UV_ENOMEM;
  p->addr_off = malloc((2 * p->n + 1) * sizeof(*p->addr_off) + total);
  if (!p->addr_off)
    return UV_ENOMEM;
  p->addr = (char *)(p->addr_off + 2 * p->n + 1);
  for (size_t i = 0; i < p->n; i++) {
    const zg_instance_t *x = &p->inst[i];
    for (int plain = 0; plain < 2; plain++) {
      uint16_t port = plain && x->plain_port ? x->plain_port : x->port;
      size_t len =
          strlen(zg_instance_addr_port_str(x, port, one, sizeof(one))) + 1;
      p->addr_off[2 * i + (size_t)plain] = (uint32_t)at;
      memcpy(p->addr + at, one, len);
      at += len;
    }
  }
  p->addr_off[2 * p->n] = (uint32_t)at;
  return 0;
}

zg_pool_t *zg_pool_new(const zg_instance_t *inst, size_t n, uint64_t version,
                       uint64_t created_ms) {
  zg_pool_t *p = malloc(sizeof(*p) + n * sizeof(p->inst[0]));
  size_t kept = 0;
  if (!p)
    return NULL;
  p->cum = NULL;
  p->addr_off = NULL;
  p->addr = NULL;
  atomic_init(&p->ring, NULL);
  p->newest_seen_ms = 0;
  atomic_init(&p->refs, 1);
  p->version = version;
  p->created_ms = created_ms;
  p->n = 0;
  for (size_t i = 0; i < n; i++) {
    if (zg_instance_copy(&p->inst[kept], &inst[i]) != 0) {
      p->n = kept;
      zg_pool_unref(p);
      return NULL;
    }
    p->inst[kept].seen_ms = 0; /* zg_pool_carry_seen's to set */
    kept++;
  }
  qsort(p->inst, kept, sizeof(p->inst[0]), inst_cmp_full);
  /* Keep each address once: two znodes for one instance (a restart racing
   * its old session's expiry) must not double its share. */
  p->n = 0;
  for (size_t i = 0; i < kept; i++) {
    if (p->n > 0 && inst_cmp(&p->inst[p->n - 1], &p->inst[i]) == 0) {
      zg_instance_clear(&p->inst[i]);
      continue;
    }
    if (p->n != i)
      p->inst[p->n] = p->inst[i];
    p->n++;
  }
  if (weigh(p) != 0 || build_addrs(p) != 0) {
    zg_pool_unref(p);
    return NULL;
  }
  return p;
}

void zg_pool_carry_seen(zg_pool_t *pool, const zg_pool_t *prev,
                        uint64_t now_ms) {
  size_t j = 0;
  pool->newest_seen_ms = 0;
  /* Both sorted by address: one merge walk. */
  for (size_t i = 0; i < pool->n; i++) {
    zg_instance_t *x = &pool->inst[i];
    int c = 1;
    while (prev && j < prev->n && (c = inst_cmp(&prev->inst[j], x)) < 0)
      j++;
    x->seen_ms = !prev ? 0 : c == 0 ? prev->inst[j].seen_ms : now_ms;
    if (zg_pool_live(pool, i) && x->seen_ms > pool->newest_seen_ms)
      pool->newest_seen_ms = x->seen_ms;
  }
}

zg_pool_t *zg_pool_ref(zg_pool_t *pool) {
  atomic_fetch_add_explicit(&pool->refs, 1, memory_order_relaxed);
  return pool;
}

void zg_pool_unref(zg_pool_t *pool) {
  if (!pool)
    return;
  if (atomic_fetch_sub_explicit(&pool->refs, 1, memory_order_acq_rel) != 1)
    return;
  for (size_t i = 0; i < pool->n; i++)
    zg_instance_clear(&pool->inst[i]);
  free(pool->cum);
  free(pool->addr_off); /* addr is in the same block */
  /* one block (core/balance.c builds it; not included here: no cycle) */
  free(atomic_load_explicit(&pool->ring, memory_order_relaxed));
  free(pool);
}

static int str_eq(const char *a, const char *b) {
  return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* The data version is not compared: data rewritten with the same bytes (a
 * registrar that re-asserts its registration) bumps it and changes nothing
 * that serves, so it publishes nothing. The published entry keeps the
 * provenance of the data that last changed it. */
int zg_pool_same(const zg_pool_t *a, const zg_pool_t *b) {
  if (a->n != b->n)
    return 0;
  for (size_t i = 0; i < a->n; i++) {
    const zg_instance_t *x = &a->inst[i], *y = &b->inst[i];
    if (inst_cmp(x, y) != 0 || x->tls != y->tls ||
        x->plain_port != y->plain_port || x->up != y->up ||
        x->weight != y->weight || !str_eq(x->base_path, y->base_path) ||
        !str_eq(x->key, y->key))
      return 0;
  }
  return 1;
}
