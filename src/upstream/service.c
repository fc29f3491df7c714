/* Services at run time: pools, picking, passive health, counters. See
 * service.h. */
#include "upstream/service.h"

#include "core/instance.h"
#include "core/log.h"
#include "net/tls.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

void zg_service_ctx_tls_reset(zg_service_ctx_t *ctx) {
  zg_tls_client_unref(ctx->tls_default);
  ctx->tls_default = NULL;
}

int zg_service_mark_failed(zg_service_ctx_t *ctx, const char *key) {
  uint64_t ttl = (*ctx->cfg)->proxy.fail_timeout_ms;
  int fresh;
  if (ttl == 0)
    return 0;
  fresh = zg_marks_fail(ctx->marks, key, uv_now(ctx->loop), ttl);
  if (fresh)
    zg_warn("gateway", "instance %s failed: skipped for %llu ms", key,
            (unsigned long long)ttl);
  return fresh;
}

int zg_service_is_failed(zg_service_ctx_t *ctx, const char *key) {
  return zg_marks_is_failed(ctx->marks, key, uv_now(ctx->loop));
}

const char *zg_service_instance_key(const zg_service_t *svc,
                                    const zg_instance_t *inst, char *buf,
                                    size_t len) {
  uint16_t port;
  zg_instance_use_tls(inst, svc->conf->upstream_tls, &port);
  return zg_instance_addr_port_str(inst, port, buf, len);
}

static zg_instance_stats_t *stats_find(zg_instance_stats_t *t, const char *key,
                                       int add);

typedef struct {
  const zg_service_t *svc;
  const zg_pool_t *pool;
  uint64_t now_us; /* least_request_latency = ewma: the pick's time */
} load_arg_t;

static load_arg_t load_arg(const zg_service_t *svc, const zg_pool_t *pool) {
  load_arg_t a = {svc, pool, 0};
  if (svc->conf->latency_ewma)
    a.now_us = uv_hrtime() / 1000;
  return a;
}

/* This loop's requests in flight to pool->inst[i] (least_request), or
 * with least_request_latency = ewma, their cost (zg_ewma_cost). */
static uint64_t inst_load(void *arg, size_t i) {
  load_arg_t *a = arg;
  const zg_instance_stats_t *s;
  char key[ZG_HOST_MAX + 10];
  if (!a->svc->inst_stats)
    return 0;
  s = stats_find(
      a->svc->inst_stats,
      zg_service_instance_key(a->svc, &a->pool->inst[i], key, sizeof(key)), 0);
  if (!s)
    return 0;
  if (a->svc->conf->latency_ewma)
    return zg_ewma_cost(&s->latency, s->in_flight, a->now_us,
                        a->svc->conf->latency_decay_ms);
  return s->in_flight;
}

static size_t pick_least(zg_service_t *svc, const zg_pool_t *pool,
                         const size_t *skip, size_t n) {
  load_arg_t a = load_arg(svc, pool);
  return zg_balance_pick_least(&svc->ctx->rng, pool, skip, n, inst_load, &a);
}

/* Instances skipped by a pick: those tried, then the failed ones, every one
 * of them (a zone down can mark dozens); on the stack for small pools. */
#define SKIP_ON_STACK 64

size_t zg_service_pick(zg_service_t *svc, const zg_pool_t *pool,
                       const size_t *tried, size_t ntried) {
  return zg_service_pick_hash(svc, pool, tried, ntried, NULL);
}

static int skipped(size_t i, const size_t *skip, size_t n) {
  for (size_t k = 0; k < n; k++)
    if (skip[k] == i)
      return 1;
  return 0;
}

/* slow_start: some live instance of `pool` is younger than the window. */
static int ramping(const zg_service_t *svc, const zg_pool_t *pool,
                   uint64_t now) {
  uint64_t win = svc->conf->slow_start_ms;
  /* seen on the registry's loop, whose clock may run a little ahead */
  return win && pool && pool->newest_seen_ms &&
         (pool->newest_seen_ms >= now || now - pool->newest_seen_ms < win);
}

/* How long ago an instance first appeared (0: from the start, long ago;
 * a clock a little ahead: just now). */
static uint64_t age_of(uint64_t seen_ms, uint64_t now) {
  if (!seen_ms)
    return UINT64_MAX;
  return seen_ms < now ? now - seen_ms : 0;
}

/* A pick while instances ramp up: each one's weight scaled by its age
 * (zg_balance_slow_start_weight), computed per pick for the few seconds
 * this lasts; on the stack for pools up to 64. */
static size_t pick_ramp(zg_service_t *svc, const zg_pool_t *pool,
                        const size_t *skip, size_t n, uint64_t *cursor,
                        uint64_t now) {
  uint64_t stack[64] = {0}, *w = stack;
  load_arg_t a = load_arg(svc, pool);
  size_t i;
  if (pool->n > 64 && !(w = malloc(pool->n * sizeof(*w))))
    return zg_balance_pick_pool(svc->conf->balance, &svc->ctx->rng, cursor,
                                pool, skip, n); /* no memory: no ramp */
  for (i = 0; i < pool->n; i++) {
    const zg_instance_t *x = &pool->inst[i];
    w[i] =
        !zg_pool_live(pool, i) || skipped(i, skip, n)
            ? 0
            : zg_balance_slow_start_weight(x->weight, age_of(x->seen_ms, now),
                                           svc->conf->slow_start_ms);
  }
  i = zg_balance_pick_weights(svc->conf->balance, &svc->ctx->rng, cursor, w,
                              pool->n, inst_load, &a);
  if (w != stack)
    free(w);
  return i;
}

/* The pick itself, among the instances not in `skip`. */
static size_t pick_among(zg_service_t *svc, const zg_pool_t *pool,
                         const size_t *skip, size_t n, const uint64_t *hash,
                         uint64_t *cursor, uint64_t now) {
  const zg_ring_t *ring;
  if (svc->conf->slow_start_ms && svc->conf->balance != ZG_BALANCE_HASH &&
      ramping(svc, pool, now))
    return pick_ramp(svc, pool, skip, n, cursor, now);
  switch (svc->conf->balance) {
  case ZG_BALANCE_LEAST_REQUEST:
    return pick_least(svc, pool, skip, n);
  case ZG_BALANCE_HASH:
    if (hash && pool && (ring = zg_pool_ring(pool)) != NULL)
      return zg_ring_pick(ring, pool, *hash, skip, n);
    return zg_balance_pick_pool(ZG_BALANCE_RANDOM, &svc->ctx->rng, cursor, pool,
                                skip, n);
  default:
    return zg_balance_pick_pool(svc->conf->balance, &svc->ctx->rng, cursor,
                                pool, skip, n);
  }
}

size_t zg_service_pick_hash(zg_service_t *svc, const zg_pool_t *pool,
                            const size_t *tried, size_t ntried,
                            const uint64_t *hash) {
  zg_service_ctx_t *ctx = svc->ctx;
  size_t stack[SKIP_ON_STACK], *skip = stack, cap = SKIP_ON_STACK, n = 0, i;
  uint64_t now = uv_now(ctx->loop), cursor = 0;
  char key[ZG_HOST_MAX + 10];
  for (size_t k = 0; k < ntried && n < cap; k++)
    skip[n++] = tried[k];
  if (pool && zg_marks_any_failed(ctx->marks, now)) {
    size_t *heap;
    /* Out of memory: the first SKIP_ON_STACK are skipped, the rest may be
     * tried (and are retried elsewhere when they fail). */
    if (ntried + pool->n > cap &&
        (heap = malloc((ntried + pool->n) * sizeof(*heap))) != NULL) {
      memcpy(heap, skip, n * sizeof(*heap));
      skip = heap;
      cap = ntried + pool->n;
    }
    zg_marks_lock(ctx->marks);
    for (size_t k = 0; k < pool->n && n < cap; k++)
      if (zg_marks_is_failed_locked(
              ctx->marks,
              zg_service_instance_key(svc, &pool->inst[k], key, sizeof(key)),
              now))
        skip[n++] = k;
    zg_marks_unlock(ctx->marks);
  }
  /* Workers share the cursor: loaded and stored whole (two picks at the
   * same moment may go to the same instance; none is ever skipped for
   * long). */
  if (svc->conf->balance == ZG_BALANCE_ROUND_ROBIN)
    cursor = __atomic_load_n(&svc->shared->rr, __ATOMIC_RELAXED);
  if (svc->conf->balance <= ZG_BALANCE_ROUND_ROBIN &&
      !svc->conf->slow_start_ms) { /* the default: straight to the pool */
    i = zg_balance_pick_pool(svc->conf->balance, &ctx->rng, &cursor, pool, skip,
                             n);
    if (i == ZG_PICK_NONE && n > ntried) /* only failed ones left: try them */
      i = zg_balance_pick_pool(svc->conf->balance, &ctx->rng, &cursor, pool,
                               tried, ntried);
  } else {
    i = pick_among(svc, pool, skip, n, hash, &cursor, now);
    if (i == ZG_PICK_NONE && n > ntried)
      i = pick_among(svc, pool, tried, ntried, hash, &cursor, now);
  }
  if (svc->conf->balance == ZG_BALANCE_ROUND_ROBIN)
    __atomic_store_n(&svc->shared->rr, cursor, __ATOMIC_RELAXED);
  if (skip != stack)
    free(skip);
  return i;
}

/* ---- balance = hash: the request's key --------------------------------- */

/* The value of cookie `name` in a Cookie field value ("a=1; b=2", RFC 6265
 * §4.2.1), or NULL. */
static const char *cookie_value(const char *v, size_t len, const char *name,
                                size_t *out_len) {
  size_t nlen = strlen(name), i = 0;
  while (i < len) {
    size_t start, end;
    while (i < len && (v[i] == ' ' || v[i] == ';'))
      i++;
    start = i;
    while (i < len && v[i] != ';')
      i++;
    end = i;
    if (end - start > nlen && v[start + nlen] == '=' &&
        !memcmp(v + start, name, nlen)) {
      *out_len = end - start - nlen - 1;
      return v + start + nlen + 1;
    }
  }
  return NULL;
}

int zg_service_hash_http(const zg_service_t *svc, const zg_http_head_t *req,
                         const char *client_ip, uint64_t *out) {
  const zg_hdr_t *h;
  const char *v;
  size_t len;
  switch (svc->conf->hash_key) {
  case ZG_HASH_HEADER:
    if (!(h = zg_http_find(req, svc->conf->hash_name)))
      return 0;
    *out = zg_hash64(req->buf + h->value_off, h->value_len);
    return 1;
  case ZG_HASH_COOKIE:
    /* HTTP/2 may split cookies over several fields (RFC 9113 §8.2.3). */
    for (size_t k = 0; k < req->n_hdr; k++) {
      h = &req->hdr[k];
      if (h->name_len != 6 || strncasecmp(req->buf + h->name_off, "cookie", 6))
        continue;
      if ((v = cookie_value(req->buf + h->value_off, h->value_len,
                            svc->conf->hash_name, &len)) != NULL) {
        *out = zg_hash64(v, len);
        return 1;
      }
    }
    return 0;
  case ZG_HASH_PATH:
    v = req->buf + req->url_off;
    for (len = 0; len < req->url_len && v[len] != '?' && v[len] != '#'; len++)
      ;
    *out = zg_hash64(v, len);
    return 1;
  case ZG_HASH_CLIENT:
    if (!client_ip || !client_ip[0])
      return 0;
    *out = zg_hash64(client_ip, strlen(client_ip));
    return 1;
  default:
    return 0;
  }
}

int zg_service_hash_client(const zg_service_t *svc, const char *addr,
                           uint64_t *out) {
  const char *colon = strrchr(addr, ':');
  size_t len = colon ? (size_t)(colon - addr) : strlen(addr);
  if (svc->conf->hash_key != ZG_HASH_CLIENT || len == 0)
    return 0;
  if (addr[0] == '[' && len >= 2 && addr[len - 1] == ']') {
    addr++; /* the same IP as HTTP's client_ip, without brackets */
    len -= 2;
  }
  *out = zg_hash64(addr, len);
  return 1;
}

int zg_service_refused(zg_service_t *svc, uint64_t *total) {
  uint64_t dropped;
  svc->no_instance++;
  *total = __atomic_add_fetch(&svc->shared->refused, 1, __ATOMIC_RELAXED);
  return zg_marks_log_allowed(svc->ctx->marks, &svc->shared->no_instance_rl,
                              &dropped);
}

int zg_service_log_connect_fail(zg_service_t *svc, uint64_t *dropped) {
  return zg_marks_log_allowed(svc->ctx->marks, &svc->shared->connect_fail_rl,
                              dropped);
}

zg_pool_t *zg_service_pool(const zg_service_t *svc) {
  if (svc->zk_pool && svc->zk_pool->n_live > 0)
    return svc->zk_pool;
  if (svc->static_pool && svc->static_pool->n_live > 0)
    return svc->static_pool;
  return NULL;
}

zg_service_t *zg_service_ref(zg_service_t *svc) {
  svc->refs++;
  return svc;
}

void zg_service_unref(zg_service_t *svc) {
  if (!svc || --svc->refs > 0)
    return;
  zg_pool_unref(svc->zk_pool);
  zg_pool_unref(svc->static_pool);
  zg_tls_client_unref(svc->up_tls);
  free(svc->inst_stats);
  if (svc->own_conf) {
    zg_service_conf_clear(svc->own_conf);
    free(svc->own_conf);
  }
  free(svc);
}

zg_service_t *zg_service_new(zg_service_ctx_t *ctx, struct zg_proxy_ctx *px,
                             zg_service_conf_t *conf) {
  zg_service_t *svc = calloc(1, sizeof(*svc));
  if (!svc) {
    zg_service_conf_clear(conf);
    free(conf);
    return NULL;
  }
  svc->ctx = ctx;
  svc->px = px;
  svc->conf = svc->own_conf = conf;
  svc->refs = 1;
  zg_marks_svc_init(&svc->own_shared);
  if (!(svc->shared = zg_marks_service(ctx->marks, conf->name)))
    svc->shared = &svc->own_shared; /* out of memory: per worker */
  if (conf->n_instances > 0 &&
      !(svc->static_pool = zg_pool_new(conf->instances, conf->n_instances, 0,
                                       uv_now(ctx->loop)))) {
    zg_service_unref(svc);
    return NULL;
  }
  if (svc->static_pool && conf->balance == ZG_BALANCE_HASH)
    zg_pool_ring(svc->static_pool); /* now, not at the first request */
  return svc;
}

zg_tls_client_t *zg_service_tls_client(zg_service_t *svc) {
  zg_service_ctx_t *ctx = svc->ctx;
  char err[512];
  if (svc->up_tls)
    return svc->up_tls;
  if (!ctx->tls_default &&
      zg_tls_client_new(NULL, err, sizeof(err), &ctx->tls_default) != 0) {
    zg_error("tls", "TLS to instances: %s", err);
    return NULL;
  }
  return ctx->tls_default;
}

void zg_service_stats(const zg_service_t *svc, zg_service_stats_t *st) {
  st->accepted = svc->accepted;
  st->active = svc->active;
  st->no_instance = svc->no_instance;
  st->connect_failures = svc->connect_failures;
  st->up_tls_handshakes = svc->up_tls_handshakes;
  st->up_tls_resumed = svc->up_tls_resumed;
  st->up_tls_failures = svc->up_tls_failures;
  st->traffic = svc->traffic;
}

/* ---- per-instance counters --------------------------------------------- */

static size_t stats_slot(const char *key) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (const unsigned char *c = (const unsigned char *)key; *c; c++)
    h = (h ^ *c) * 16777619u;
  return h % ZG_INSTANCE_STATS_SLOTS;
}

/* The slot of `key`, or NULL; with `add`, a free one is taken for it. */
static zg_instance_stats_t *stats_find(zg_instance_stats_t *t, const char *key,
                                       int add) {
  size_t i = stats_slot(key);
  for (size_t probe = 0; probe < ZG_INSTANCE_STATS_SLOTS; probe++) {
    zg_instance_stats_t *s = &t[(i + probe) % ZG_INSTANCE_STATS_SLOTS];
    if (!strcmp(s->key, key))
      return s;
    if (!s->key[0]) {
      if (!add)
        return NULL;
      snprintf(s->key, sizeof(s->key), "%s", key);
      return s;
    }
  }
  return NULL;
}

void zg_service_instance_done(zg_service_t *svc, const char *key, int status,
                              uint64_t dur_us) {
  zg_instance_stats_t *s;
  if (!key || !key[0])
    return;
  if ((s = svc->stats_last) != NULL && !strcmp(s->key, key))
    goto found; /* a table that started over has "" there: no match */
  if (!svc->inst_stats && !(svc->inst_stats = calloc(ZG_INSTANCE_STATS_SLOTS,
                                                     sizeof(*svc->inst_stats))))
    return;
  if (!(s = stats_find(svc->inst_stats, key, 1))) {
    memset(svc->inst_stats, 0,
           ZG_INSTANCE_STATS_SLOTS * sizeof(*svc->inst_stats));
    if (!(s = stats_find(svc->inst_stats, key, 1)))
      return; /* not after a reset; for the compiler's sake */
  }
  svc->stats_last = s;
found:
  s->requests++;
  s->errors += status == 0 || status >= 500;
  s->dur_sum_us += dur_us;
}

/* The slot of `key` in this loop's table, made when absent (the table
 * starts over when full); NULL when out of memory. */
static zg_instance_stats_t *stats_slot_for(zg_service_t *svc, const char *key) {
  zg_instance_stats_t *s;
  if (!svc->inst_stats && !(svc->inst_stats = calloc(ZG_INSTANCE_STATS_SLOTS,
                                                     sizeof(*svc->inst_stats))))
    return NULL;
  if ((s = stats_find(svc->inst_stats, key, 1)) != NULL)
    return s;
  memset(svc->inst_stats, 0,
         ZG_INSTANCE_STATS_SLOTS * sizeof(*svc->inst_stats));
  return stats_find(svc->inst_stats, key, 1);
}

void zg_service_latency(zg_service_t *svc, const char *key,
                        uint64_t latency_us) {
  zg_instance_stats_t *s;
  if (!key || !key[0] || !(s = stats_slot_for(svc, key)))
    return;
  zg_ewma_observe(&s->latency, (double)latency_us, uv_hrtime() / 1000,
                  svc->conf->latency_decay_ms);
}

void zg_service_latency_failed(zg_service_t *svc, const char *key,
                               uint64_t elapsed_us) {
  zg_instance_stats_t *s;
  if (!key || !key[0] || !(s = stats_slot_for(svc, key)))
    return;
  zg_ewma_observe_failure(&s->latency, (double)elapsed_us, uv_hrtime() / 1000,
                          svc->conf->latency_decay_ms);
}

double zg_service_latency_us(const zg_service_t *svc, const char *key) {
  const zg_instance_stats_t *s;
  if (!svc->inst_stats || !(s = stats_find(svc->inst_stats, key, 0)))
    return 0;
  return zg_ewma_value(&s->latency, uv_hrtime() / 1000,
                       svc->conf->latency_decay_ms);
}

void zg_service_inflight(zg_service_t *svc, const char *key, int delta) {
  zg_instance_stats_t *s;
  if (!key || !key[0])
    return;
  if (delta > 0) {
    if ((s = stats_slot_for(svc, key)) != NULL)
      s->in_flight++;
  } else if (svc->inst_stats &&
             (s = stats_find(svc->inst_stats, key, 0)) != NULL &&
             s->in_flight > 0) { /* absent: the table started over, 0 */
    s->in_flight--;
  }
}

int zg_service_instance_stats(const zg_service_t *svc, const char *key,
                              zg_instance_stats_t *acc) {
  const zg_instance_stats_t *s;
  if (!svc->inst_stats || !(s = stats_find(svc->inst_stats, key, 0)))
    return 0;
  acc->requests += s->requests;
  acc->errors += s->errors;
  acc->dur_sum_us += s->dur_sum_us;
  return 1;
}
