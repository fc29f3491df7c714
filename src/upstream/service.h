/* A service at run time: its configuration, its pools, picking an
 * instance (balance, passive health), its counters; and what the services
 * of one loop share (zg_service_ctx_t). Below the proxies: a proxy reads
 * services through this header, not through the gateway. */
#ifndef ZKGATE_SERVICE_H
#define ZKGATE_SERVICE_H

#include <stdint.h>
#include <uv.h>

#include "core/balance.h"
#include "core/config.h"
#include "core/http_msg.h"
#include "core/metrics.h"
#include "core/pool.h"
#include "net/listener.h"
#include "upstream/marks.h"

struct zg_proxy_ctx;
struct zg_discover;
struct zg_tls_client;

/* What the services of one loop share. */
typedef struct zg_service_ctx {
  uv_loop_t *loop;
  zg_marks_t *marks; /* the process's (every worker's) */
  zg_rng_t rng;      /* this loop's */
  /* The loop's current configuration ([proxy] fail_timeout): a reload
   * swaps the configuration this points to. */
  zg_config_t *const *cfg;
  /* TLS to instances for services without upstream_* settings: the system
   * store, verification on; made at first use, dropped on reload
   * (zg_service_ctx_tls_reset) */
  struct zg_tls_client *tls_default;
} zg_service_ctx_t;

/* Drops the default TLS client context (the next use makes a new one). */
void zg_service_ctx_tls_reset(zg_service_ctx_t *ctx);

/* A service: reference-counted: the gateway holds one while the service is
 * configured or discovered, each session one while it uses the service, so
 * that a service that goes away (discovery) lets its sessions finish. */
typedef struct zg_service {
  zg_service_ctx_t *ctx;
  /* the proxies' context of its loop (proxy/proxy.h; opaque here) */
  struct zg_proxy_ctx *px;
  const zg_service_conf_t *conf; /* = own_conf */
  zg_service_conf_t *own_conf;   /* its own copy, freed with it */
  struct zg_discover *discover;  /* NULL: from a [service:NAME] section */
  unsigned refs;
  zg_pool_t *zk_pool;     /* latest from the registry; NULL before the first */
  zg_pool_t *static_pool; /* from `instances =`; NULL when none */
  /* round-robin cursor, log rate limits: what the services of this name
   * share across workers (own_shared when out of memory) */
  zg_marks_svc_t *shared;
  zg_marks_svc_t own_shared;
  zg_listener_t *listener; /* TCP services: heap, handed on by a reload */
  /* counters */
  uint64_t accepted;
  uint64_t active;
  uint64_t no_instance;
  uint64_t connect_failures;
  /* TLS to instances: this service's client context when it has its own
   * upstream_* settings, else NULL (the context's default serves) */
  struct zg_tls_client *up_tls;
  uint64_t up_tls_handshakes; /* completed, of which resumed: */
  uint64_t up_tls_resumed;
  uint64_t up_tls_failures; /* handshakes or verifications that failed (also
                               counted in connect_failures) */
  zg_traffic_t traffic;
  struct zg_instance_stats *inst_stats; /* NULL until the first request */
  /* the slot of the last request's instance: consecutive requests to one
   * instance (one-instance services, hash keys) skip the hash lookup */
  struct zg_instance_stats *stats_last;
} zg_service_t;

/* A service of the loop whose proxies' context is `px`, with one
 * reference, owning `conf` (freed on failure too); NULL when out of
 * memory. */
zg_service_t *zg_service_new(zg_service_ctx_t *ctx, struct zg_proxy_ctx *px,
                             zg_service_conf_t *conf);
zg_service_t *zg_service_ref(zg_service_t *svc);
/* Frees the service with its last reference (its listener, if any, must be
 * closed by then). NULL is fine. */
void zg_service_unref(zg_service_t *svc);

/* The pool to pick from: the registry's while it has instances, else the
 * static one; NULL when neither has any. Borrowed, not referenced. */
zg_pool_t *zg_service_pool(const zg_service_t *svc);

/* Passive health: an instance that failed (refused, timed out, broke a
 * response) is skipped for [proxy] fail_timeout, unless nothing else is
 * left. Keyed by "host:port". */
/* Returns 1 when the instance was not marked before (an ejection). */
int zg_service_mark_failed(zg_service_ctx_t *ctx, const char *key);
int zg_service_is_failed(zg_service_ctx_t *ctx, const char *key);
/* The "host:port" of `inst` that `svc` connects to (the port
 * zg_instance_use_tls chooses: a Curator registration with sslPort and port
 * is reached on the plain port under upstream_tls = off): the key of its
 * passive health mark and of its idle connections. Returns buf. */
const char *zg_service_instance_key(const zg_service_t *svc,
                                    const zg_instance_t *inst, char *buf,
                                    size_t len);
/* Picks like zg_balance_pick_pool, avoiding failed instances while others
 * remain. */
size_t zg_service_pick(zg_service_t *svc, const zg_pool_t *pool,
                       const size_t *tried, size_t ntried);
/* The same with the request's key hash for balance = hash (NULL: no key,
 * random): the key's instance on the pool's ring, else the next distinct
 * one round it (tried, failed). */
size_t zg_service_pick_hash(zg_service_t *svc, const zg_pool_t *pool,
                            const size_t *tried, size_t ntried,
                            const uint64_t *hash);

/* balance = hash: the hash of the request's hash_key (a header, a cookie,
 * the path, the client's IP address); 1 and *out when the request has
 * one, 0 when not (a missing header or cookie: the pick is random). */
int zg_service_hash_http(const zg_service_t *svc, const zg_http_head_t *req,
                         const char *client_ip, uint64_t *out);
/* hash_key = client for TCP: the address "IP:PORT" (or "[IP]:PORT")
 * hashed without its port. */
int zg_service_hash_client(const zg_service_t *svc, const char *addr,
                           uint64_t *out);

/* A refusal for want of an instance: counted (no_instance) and 1 when a
 * line may be logged (rate-limited across workers); *total: refusals so
 * far by all workers. */
int zg_service_refused(zg_service_t *svc, uint64_t *total);
/* 1 when a failed connect to an instance may be logged; *dropped: lines
 * not logged since the last one. */
int zg_service_log_connect_fail(zg_service_t *svc, uint64_t *dropped);

/* Per-instance request counters (HTTP) for the dashboard: one loop's,
 * keyed by "host:port" (zg_service_instance_key), in a fixed table of
 * ZG_INSTANCE_STATS_SLOTS that starts over, all counters at zero, when an
 * instance finds it full (instances come and go; readers take rates from
 * differences and see a restart as counters going down). */
#define ZG_INSTANCE_STATS_SLOTS 64
typedef struct zg_instance_stats {
  char key[ZG_HOST_MAX + 10]; /* "" : free */
  uint64_t requests;
  uint64_t errors; /* 5xx, or no response */
  uint64_t dur_sum_us;
  uint64_t in_flight; /* requests (TCP: connections) now, least_request */
  zg_ewma_t latency;  /* least_request_latency = ewma */
} zg_instance_stats_t;

/* One more (delta > 0) or one fewer request in flight to `key` on this
 * loop: what least_request compares. Per loop: with workers = N each
 * worker balances on its own counts (no shared cache line per request).
 * Never below 0 (a table that started over forgot the count). */
void zg_service_inflight(zg_service_t *svc, const char *key, int delta);

/* least_request_latency = ewma: a response head came from `key`
 * `latency_us` after the request was passed on to it (proxy/exchange.c
 * says from when); averaged into this loop's estimate for it (per loop, as
 * in_flight is). */
void zg_service_latency(zg_service_t *svc, const char *key,
                        uint64_t latency_us);
/* least_request_latency = ewma: a request passed on to `key` ended
 * `elapsed_us` after it went out without a response head, the instance's
 * doing (proxy/exchange.c says which ends): a sample that never lowers the
 * estimate (zg_ewma_observe_failure). */
void zg_service_latency_failed(zg_service_t *svc, const char *key,
                               uint64_t elapsed_us);
/* This loop's latency estimate of `key` now, microseconds (0: none). */
double zg_service_latency_us(const zg_service_t *svc, const char *key);

/* A request that went to instance `key` ended with `status` (0: none). */
void zg_service_instance_done(zg_service_t *svc, const char *key, int status,
                              uint64_t dur_us);
/* Adds the counters of `key` to *acc; 0 when there are none. */
int zg_service_instance_stats(const zg_service_t *svc, const char *key,
                              zg_instance_stats_t *acc);

/* A service's counters, for the admin (one loop's: the admin sums them
 * over the workers). */
typedef struct zg_service_stats {
  uint64_t accepted, active, no_instance, connect_failures;
  uint64_t up_tls_handshakes, up_tls_resumed, up_tls_failures;
  zg_traffic_t traffic;
} zg_service_stats_t;

void zg_service_stats(const zg_service_t *svc, zg_service_stats_t *st);

/* The client context for TLS to `svc`'s instances (borrowed), or NULL
 * when none can be made (logged). */
struct zg_tls_client *zg_service_tls_client(zg_service_t *svc);

#endif
