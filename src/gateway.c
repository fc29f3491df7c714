/* The gateway's life: start services, listeners and the registry from a
 * checked configuration; run the loop; on SIGTERM/SIGINT close listeners,
 * sessions and the ZooKeeper session (so that the server drops it at once)
 * and return once every handle is closed. */
#include "zkgate/gateway.h"

#include "zkgate/error.h"
#include "zkgate/http_proxy.h"
#include "zkgate/listener.h"
#include "zkgate/tcp_proxy.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FREE_BUFS 256

typedef struct free_buf {
  struct free_buf *next;
} free_buf_t;

char *zg_buf_get(zg_gateway_t *gw) {
  free_buf_t *b = gw->free_bufs;
  if (b) {
    gw->free_bufs = b->next;
    gw->n_free_bufs--;
    return (char *)b;
  }
  return malloc(ZG_BUF_SIZE);
}

void zg_buf_put(zg_gateway_t *gw, char *p) {
  free_buf_t *b = (free_buf_t *)p;
  if (!p)
    return;
  if (gw->n_free_bufs >= MAX_FREE_BUFS) {
    free(p);
    return;
  }
  b->next = gw->free_bufs;
  gw->free_bufs = b;
  gw->n_free_bufs++;
}

void zg_buf_free_all(zg_gateway_t *gw) {
  while (gw->free_bufs) {
    free_buf_t *b = gw->free_bufs;
    gw->free_bufs = b->next;
    free(b);
  }
  gw->n_free_bufs = 0;
}

typedef struct zg_failed_instance {
  char key[ZG_HOST_MAX + 10];
  uint64_t until_ms;
} zg_failed_instance_t;

void zg_health_failed(zg_gateway_t *gw, const char *key) {
  uint64_t now = uv_now(gw->loop), ttl = gw->cfg->proxy.fail_timeout_ms;
  zg_failed_instance_t *slot = NULL;
  if (ttl == 0)
    return;
  for (size_t i = 0; i < gw->n_failed; i++) {
    if (!strcmp(gw->failed[i].key, key) || gw->failed[i].until_ms <= now) {
      slot = &gw->failed[i];
      break;
    }
  }
  if (!slot) {
    if (gw->n_failed == gw->cap_failed) {
      size_t cap = gw->cap_failed ? gw->cap_failed * 2 : 16;
      zg_failed_instance_t *n = realloc(gw->failed, cap * sizeof(*n));
      if (!n)
        return;
      gw->failed = n;
      gw->cap_failed = cap;
    }
    slot = &gw->failed[gw->n_failed++];
  }
  if (strcmp(slot->key, key) != 0 || slot->until_ms <= now)
    zg_warn("gateway", "instance %s failed: skipped for %llu ms", key,
            (unsigned long long)ttl);
  snprintf(slot->key, sizeof(slot->key), "%s", key);
  slot->until_ms = now + ttl;
}

int zg_health_is_failed(zg_gateway_t *gw, const char *key) {
  uint64_t now = uv_now(gw->loop);
  for (size_t i = 0; i < gw->n_failed; i++)
    if (gw->failed[i].until_ms > now && !strcmp(gw->failed[i].key, key))
      return 1;
  return 0;
}

size_t zg_service_pick(zg_service_t *svc, const zg_pool_t *pool,
                       const size_t *tried, size_t ntried) {
  zg_gateway_t *gw = svc->gw;
  size_t skip[16] = {0}, n = 0, i;
  char key[ZG_HOST_MAX + 10];
  for (size_t k = 0; k < ntried && n < 16; k++)
    skip[n++] = tried[k];
  if (gw->n_failed > 0 && pool)
    for (size_t k = 0; k < pool->n && n < 16; k++)
      if (zg_health_is_failed(
              gw, zg_instance_addr_str(&pool->inst[k], key, sizeof(key))))
        skip[n++] = k;
  i = zg_balance_pick_pool(svc->conf->balance, &gw->rng, &svc->rr_cursor, pool,
                           skip, n);
  if (i == ZG_PICK_NONE && n > ntried) /* only failed ones left: try them */
    i = zg_balance_pick_pool(svc->conf->balance, &gw->rng, &svc->rr_cursor,
                             pool, tried, ntried);
  return i;
}

zg_pool_t *zg_service_pool(zg_service_t *svc) {
  if (svc->zk_pool && svc->zk_pool->n_live > 0)
    return svc->zk_pool;
  if (svc->static_pool && svc->static_pool->n_live > 0)
    return svc->static_pool;
  return NULL;
}

static void log_pool(const zg_service_t *svc, const zg_pool_t *pool) {
  char list[1024], addr[ZG_HOST_MAX + 10];
  size_t used = 0;
  list[0] = '\0';
  for (size_t i = 0; i < pool->n && used + 1 < sizeof(list); i++) {
    const zg_instance_t *in = &pool->inst[i];
    char note[32] = "";
    int n;
    if (!in->up)
      snprintf(note, sizeof(note), "(down)");
    else if (in->weight != ZG_WEIGHT_DEFAULT)
      snprintf(note, sizeof(note), "(weight %u)", in->weight);
    n = snprintf(list + used, sizeof(list) - used, "%s%s%s", i ? " " : "",
                 zg_instance_addr_str(in, addr, sizeof(addr)), note);
    if (n < 0)
      break;
    used += (size_t)n;
  }
  if (used >= sizeof(list))
    memcpy(list + sizeof(list) - 4, "...", 4);
  zg_info("gateway",
          "service %s: pool v%llu has %zu instance%s, %zu live%s%s%s "
          "[%u list%s, %u data read%s]",
          svc->conf->name, (unsigned long long)pool->version, pool->n,
          pool->n == 1 ? "" : "s", pool->n_live, pool->n ? ": " : "", list,
          pool->n_live == 0 && svc->static_pool ? " (static instances serve)"
                                                : "",
          pool->zk_lists, pool->zk_lists == 1 ? "" : "s", pool->zk_reads,
          pool->zk_reads == 1 ? "" : "s");
}

static void on_pool(void *arg, size_t id, zg_pool_t *pool) {
  zg_gateway_t *gw = arg;
  zg_service_t *svc = &gw->services[id];
  log_pool(svc, pool);
  zg_pool_unref(svc->zk_pool);
  svc->zk_pool = pool;
}

static void on_handle_closed(uv_handle_t *h) {
  (void)h;
}

static void gateway_stop(zg_gateway_t *gw, const char *why) {
  if (gw->stopping)
    return;
  gw->stopping = 1;
  zg_info("gateway", "%s: stopping", why);
  for (size_t i = 0; i < gw->n_services; i++)
    if (gw->services[i].listening) {
      uv_close((uv_handle_t *)&gw->services[i].listener, on_handle_closed);
      gw->services[i].listening = 0;
    }
  zg_tcp_close_all(gw);
  zg_http_stop(gw);
  zg_registry_close(gw->registry);
  gw->registry = NULL;
  for (size_t i = 0; i < sizeof(gw->signals) / sizeof(gw->signals[0]); i++)
    if (!uv_is_closing((uv_handle_t *)&gw->signals[i]))
      uv_close((uv_handle_t *)&gw->signals[i], on_handle_closed);
}

static void on_signal(uv_signal_t *h, int signum) {
  zg_gateway_t *gw = h->data;
  switch (signum) {
  case SIGTERM:
    gateway_stop(gw, "SIGTERM");
    break;
  case SIGINT:
    gateway_stop(gw, "SIGINT");
    break;
  case SIGHUP:
    zg_warn("gateway", "SIGHUP: reloading is not supported by this version; "
                       "the running configuration stays");
    break;
  case SIGUSR1:
    /* Logs go to stderr only: nothing to reopen. */
    zg_info("gateway", "SIGUSR1: logs go to stderr; nothing to reopen");
    break;
  default:
    break;
  }
}

static int services_start(zg_gateway_t *gw) {
  const zg_config_t *cfg = gw->cfg;
  gw->services =
      calloc(cfg->n_services ? cfg->n_services : 1, sizeof(*gw->services));
  if (!gw->services)
    return UV_ENOMEM;
  gw->n_services = cfg->n_services;
  for (size_t i = 0; i < cfg->n_services; i++) {
    zg_service_t *svc = &gw->services[i];
    const zg_service_conf_t *sc = &cfg->services[i];
    int rc;
    svc->gw = gw;
    svc->conf = sc;
    zg_ratelimit_init(&svc->no_instance_rl, 10000, 5);
    zg_ratelimit_init(&svc->connect_fail_rl, 10000, 5);
    if (sc->n_instances > 0) {
      svc->static_pool =
          zg_pool_new(sc->instances, sc->n_instances, 0, uv_now(gw->loop));
      if (!svc->static_pool)
        return UV_ENOMEM;
    }
    if (sc->protocol == ZG_PROTO_HTTP)
      continue; /* listeners shared by address: zg_http_start */
    rc = zg_listener_start(gw->loop, &svc->listener, &sc->listen,
                           zg_tcp_on_connection);
    svc->listener.data = svc;
    svc->listening = 1;
    if (rc != 0) {
      zg_error("gateway", "service %s: cannot listen on %s: %s", sc->name,
               sc->listen.text, uv_strerror(rc));
      return rc;
    }
    zg_info("gateway", "service %s: listening on %s (tcp), %s%s%s", sc->name,
            sc->listen.text, sc->zk_path ? "instances from " : "",
            sc->zk_path ? sc->zk_path : "",
            sc->n_instances
                ? (sc->zk_path ? " with static fallback" : "static instances")
                : "");
  }
  return zg_http_start(gw);
}

static int registry_start(zg_gateway_t *gw) {
  const zg_config_t *cfg = gw->cfg;
  int rc;
  if (!cfg->zk.hosts)
    return 0;
  gw->registry =
      zg_registry_new(gw->loop, cfg->zk.hosts, cfg->zk.session_timeout_ms,
                      cfg->zk.coalesce_window_ms, on_pool, gw);
  if (!gw->registry)
    return UV_ENOMEM;
  if ((rc = zg_registry_set_auth(gw->registry, cfg->zk.auth)) != 0)
    return rc;
  if ((rc = zg_registry_set_state(gw->registry, cfg->zk.state_file,
                                  cfg->zk.max_stale_ms)) != 0)
    return rc;
  for (size_t i = 0; i < cfg->n_services; i++)
    if (cfg->services[i].zk_path &&
        (rc = zg_registry_watch(gw->registry, cfg->services[i].zk_path,
                                cfg->services[i].endpoint, i)))
      return rc;
  return zg_registry_start(gw->registry);
}

static void walk_close(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, on_handle_closed);
}

int zg_gateway_run(const zg_config_t *cfg) {
  zg_gateway_t gw;
  uv_loop_t loop;
  uint64_t seed;
  int rc, exit_code = 0;
  static const int signums[4] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};

  memset(&gw, 0, sizeof(gw));
  /* A peer that closes while we write must not kill the process. */
  signal(SIGPIPE, SIG_IGN);
  if ((rc = uv_loop_init(&loop)) != 0) {
    zg_error("gateway", "cannot create the event loop: %s", uv_strerror(rc));
    return 1;
  }
  gw.loop = &loop;
  gw.cfg = cfg;
  if (uv_random(NULL, NULL, &seed, sizeof(seed), 0, NULL) != 0)
    seed = uv_hrtime() ^ (uint64_t)(uintptr_t)&gw;
  zg_rng_seed(&gw.rng, seed);

  for (size_t i = 0; i < 4; i++) {
    uv_signal_init(&loop, &gw.signals[i]);
    gw.signals[i].data = &gw;
    uv_signal_start(&gw.signals[i], on_signal, signums[i]);
  }

  rc = services_start(&gw);
  if (rc == 0)
    rc = registry_start(&gw);
  if (rc != 0) {
    exit_code = 1;
    gateway_stop(&gw, "start failed");
  } else {
    zg_info("gateway", "zkgate %s started with %zu service%s", ZKGATE_VERSION,
            gw.n_services, gw.n_services == 1 ? "" : "s");
  }
  uv_run(&loop, UV_RUN_DEFAULT);

  /* Anything still open (there should be nothing) is closed, so that the
   * loop can be closed and the sanitizers see no leak. */
  uv_walk(&loop, walk_close, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0)
    zg_warn("gateway", "event loop closed with handles still open");
  for (size_t i = 0; i < gw.n_services; i++) {
    zg_pool_unref(gw.services[i].zk_pool);
    zg_pool_unref(gw.services[i].static_pool);
  }
  zg_http_free(&gw);
  free(gw.failed);
  free(gw.services);
  zg_buf_free_all(&gw);
  if (exit_code == 0)
    zg_info("gateway", "stopped");
  return exit_code;
}
