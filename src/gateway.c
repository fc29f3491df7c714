/* The gateway's life: start services, listeners and the registry from a
 * checked configuration; run the loop; on SIGTERM/SIGINT close listeners,
 * sessions and the ZooKeeper session (so that the server drops it at once)
 * and return once every handle is closed. */
#include "zkgate/gateway.h"

#include "zkgate/admin.h"
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

int zg_health_failed(zg_gateway_t *gw, const char *key) {
  uint64_t now = uv_now(gw->loop), ttl = gw->cfg->proxy.fail_timeout_ms;
  zg_failed_instance_t *slot = NULL;
  int fresh;
  if (ttl == 0)
    return 0;
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
        return 0;
      gw->failed = n;
      gw->cap_failed = cap;
    }
    slot = &gw->failed[gw->n_failed++];
  }
  fresh = strcmp(slot->key, key) != 0 || slot->until_ms <= now;
  if (fresh)
    zg_warn("gateway", "instance %s failed: skipped for %llu ms", key,
            (unsigned long long)ttl);
  snprintf(slot->key, sizeof(slot->key), "%s", key);
  slot->until_ms = now + ttl;
  return fresh;
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

zg_pool_t *zg_service_pool(const zg_service_t *svc) {
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

static void on_pool(void *arg, void *ctx, zg_pool_t *pool) {
  zg_service_t *svc = ctx;
  (void)arg;
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
  if (gw->draining)
    uv_close((uv_handle_t *)&gw->drain_timer, on_handle_closed);
  for (size_t i = 0; i < gw->n_services; i++)
    if (gw->services[i]->listening) {
      uv_close((uv_handle_t *)&gw->services[i]->listener, on_handle_closed);
      gw->services[i]->listening = 0;
    }
  zg_admin_stop(gw);
  zg_tcp_close_all(gw);
  zg_http_stop(gw);
  zg_registry_close(gw->registry);
  gw->registry = NULL;
  for (size_t i = 0; i < sizeof(gw->signals) / sizeof(gw->signals[0]); i++)
    if (!uv_is_closing((uv_handle_t *)&gw->signals[i]))
      uv_close((uv_handle_t *)&gw->signals[i], on_handle_closed);
}

static size_t sessions_left(const zg_gateway_t *gw) {
  size_t n = 0;
  for (size_t i = 0; i < gw->n_services; i++)
    n += gw->services[i]->conf->protocol == ZG_PROTO_TCP
             ? gw->services[i]->active
             : 0;
  for (size_t i = 0; i < gw->n_http_listeners; i++)
    n += gw->http_listeners[i].active;
  return n;
}

static void on_drain_timer(uv_timer_t *t) {
  zg_gateway_t *gw = t->data;
  size_t left = sessions_left(gw);
  if (left == 0) {
    gateway_stop(gw, "drained");
    return;
  }
  if (uv_now(gw->loop) - gw->drain_start_ms >=
      gw->cfg->proxy.drain_timeout_ms) {
    zg_warn("gateway",
            "drain_timeout (%llu ms) is over: closing the %zu connection(s) "
            "left",
            (unsigned long long)gw->cfg->proxy.drain_timeout_ms, left);
    gateway_stop(gw, "drain over");
  }
}

/* Stops accepting; idle keep-alive connections close at once, the others
 * after their current request (HTTP) or when they end (TCP), for at most
 * drain_timeout. A second signal stops at once. */
static void gateway_drain(zg_gateway_t *gw, const char *why) {
  if (gw->draining || gw->stopping) {
    gateway_stop(gw, why);
    return;
  }
  gw->draining = 1;
  gw->drain_start_ms = uv_now(gw->loop);
  for (size_t i = 0; i < gw->n_services; i++)
    if (gw->services[i]->listening) {
      uv_close((uv_handle_t *)&gw->services[i]->listener, on_handle_closed);
      gw->services[i]->listening = 0;
    }
  zg_http_drain(gw);
  zg_info("gateway",
          "%s: draining: no new connections, %zu open one(s) may finish within "
          "%llu ms (signal again to stop at once)",
          why, sessions_left(gw),
          (unsigned long long)gw->cfg->proxy.drain_timeout_ms);
  uv_timer_init(gw->loop, &gw->drain_timer);
  gw->drain_timer.data = gw;
  uv_timer_start(&gw->drain_timer, on_drain_timer, 0, 50);
}

static void on_signal(uv_signal_t *h, int signum) {
  zg_gateway_t *gw = h->data;
  switch (signum) {
  case SIGTERM:
    gateway_drain(gw, "SIGTERM");
    break;
  case SIGINT:
    gateway_drain(gw, "SIGINT");
    break;
  case SIGHUP:
    zg_warn("gateway", "SIGHUP: reloading is not supported by this version; "
                       "the running configuration stays");
    break;
  case SIGUSR1:
    /* The log goes to stderr; the access log may be a file. */
    if (gw->access_log)
      zg_access_log_reopen(gw->access_log);
    else
      zg_info("gateway", "SIGUSR1: no access log file to reopen");
    break;
  default:
    break;
  }
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
  if (svc->own_conf) {
    zg_service_conf_clear(svc->own_conf);
    free(svc->own_conf);
  }
  free(svc);
}

/* A new service with the gateway's reference, appended to its list. */
static zg_service_t *service_add(zg_gateway_t *gw,
                                 const zg_service_conf_t *sc) {
  zg_service_t *svc;
  if (gw->n_services == gw->cap_services) {
    size_t cap = gw->cap_services ? gw->cap_services * 2 : 8;
    zg_service_t **ns = realloc(gw->services, cap * sizeof(*ns));
    if (!ns)
      return NULL;
    gw->services = ns;
    gw->cap_services = cap;
  }
  if (!(svc = calloc(1, sizeof(*svc))))
    return NULL;
  svc->gw = gw;
  svc->conf = sc;
  svc->refs = 1;
  zg_ratelimit_init(&svc->no_instance_rl, 10000, 5);
  zg_ratelimit_init(&svc->connect_fail_rl, 10000, 5);
  if (sc->n_instances > 0 &&
      !(svc->static_pool =
            zg_pool_new(sc->instances, sc->n_instances, 0, uv_now(gw->loop)))) {
    free(svc);
    return NULL;
  }
  gw->services[gw->n_services++] = svc;
  return svc;
}

static int services_start(zg_gateway_t *gw) {
  const zg_config_t *cfg = gw->cfg;
  if (cfg->n_discovers > 0) {
    gw->discovers = calloc(cfg->n_discovers, sizeof(*gw->discovers));
    if (!gw->discovers)
      return UV_ENOMEM;
    gw->n_discovers = cfg->n_discovers;
    for (size_t i = 0; i < cfg->n_discovers; i++) {
      gw->discovers[i].gw = gw;
      gw->discovers[i].conf = &cfg->discovers[i];
    }
  }
  for (size_t i = 0; i < cfg->n_services; i++) {
    const zg_service_conf_t *sc = &cfg->services[i];
    zg_service_t *svc = service_add(gw, sc);
    int rc;
    if (!svc)
      return UV_ENOMEM;
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

/* ---- discovery ---------------------------------------------------------
 * Each child of a [discover:] root is an HTTP service of the same name,
 * unless a configured service (or an earlier discover section) already has
 * that name or watches that path: configured sections win. */

static int name_cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int sorted_has(char *const *names, size_t n, const char *name) {
  return n > 0 && bsearch(&name, names, n, sizeof(*names), name_cmp) != NULL;
}

static zg_service_t *service_named(zg_gateway_t *gw, const char *name) {
  for (size_t i = 0; i < gw->n_services; i++)
    if (!strcmp(gw->services[i]->conf->name, name))
      return gw->services[i];
  return NULL;
}

/* A child name usable as a path segment and a host label. */
static int discoverable(const char *name) {
  size_t n = strlen(name);
  if (n == 0 || n > 63)
    return 0;
  for (const char *c = name; *c; c++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
          (*c >= '0' && *c <= '9') || *c == '_' || *c == '-' || *c == '.'))
      return 0;
  return name[0] != '.' && name[n - 1] != '.';
}

static zg_service_conf_t *discovered_conf(const zg_discover_conf_t *d,
                                          const char *name) {
  zg_service_conf_t *c = calloc(1, sizeof(*c));
  size_t rlen = strlen(d->zk_root), nlen = strlen(name);
  int ok;
  if (!c)
    return NULL;
  if (rlen == 1) /* "/" */
    rlen = 0;
  c->name = strdup(name);
  c->zk_path = malloc(rlen + nlen + 2);
  c->path_prefix = malloc(nlen + 3);
  ok = c->name && c->zk_path && c->path_prefix;
  if (ok) {
    snprintf(c->zk_path, rlen + nlen + 2, "%.*s/%s", (int)rlen, d->zk_root,
             name);
    snprintf(c->path_prefix, nlen + 3, "/%s/", name);
  }
  if (ok && d->domain) {
    size_t hlen = nlen + strlen(d->domain) + 2;
    if ((c->host = malloc(hlen)) != NULL) {
      snprintf(c->host, hlen, "%s.%s", name, d->domain);
      for (char *h = c->host; *h; h++)
        if (*h >= 'A' && *h <= 'Z')
          *h = (char)(*h - 'A' + 'a');
    }
    ok = c->host != NULL;
  }
  if (ok && d->endpoint)
    ok = (c->endpoint = strdup(d->endpoint)) != NULL;
  if (!ok) {
    zg_service_conf_clear(c);
    free(c);
    return NULL;
  }
  c->protocol = ZG_PROTO_HTTP;
  c->listen = d->listen;
  c->balance = d->balance;
  c->connect_timeout_ms = d->connect_timeout_ms;
  c->response_timeout_ms = d->response_timeout_ms;
  c->strip_prefix = true;
  c->line = d->line;
  return c;
}

static void discovered_add(zg_discover_t *d, const char *name) {
  zg_gateway_t *gw = d->gw;
  const zg_discover_conf_t *dc = d->conf;
  zg_service_conf_t *c;
  zg_service_t *svc, *other;
  if (!discoverable(name)) {
    zg_warn("gateway",
            "discover %s: %s/%s is not a service name usable in a path and a "
            "host ([A-Za-z0-9_.-], up to 63 characters): skipped",
            dc->name, dc->zk_root, name);
    return;
  }
  if (!(c = discovered_conf(dc, name))) {
    zg_error("gateway", "discover %s: out of memory adding service %s",
             dc->name, name);
    return;
  }
  other = service_named(gw, name);
  for (size_t i = 0; !other && i < gw->n_services; i++)
    if (!gw->services[i]->discover && gw->services[i]->conf->zk_path &&
        !strcmp(gw->services[i]->conf->zk_path, c->zk_path))
      other = gw->services[i];
  if (other) {
    zg_info("gateway",
            "discover %s: %s is served by %s service %s: the %s wins", dc->name,
            c->zk_path, other->discover ? "discovered" : "configured",
            other->conf->name,
            other->discover ? "first discover section" : "[service:] section");
    zg_service_conf_clear(c);
    free(c);
    return;
  }
  if (!(svc = service_add(gw, c))) {
    zg_error("gateway", "discover %s: out of memory adding service %s",
             dc->name, name);
    zg_service_conf_clear(c);
    free(c);
    return;
  }
  svc->own_conf = c;
  svc->discover = d;
  if (zg_registry_watch(gw->registry, c->zk_path, c->endpoint, svc) != 0) {
    zg_error("gateway", "discover %s: out of memory watching %s", dc->name,
             c->zk_path);
    gw->n_services--;
    zg_service_unref(svc);
    return;
  }
  zg_info("gateway",
          "discover %s: service %s added: http on %s, path prefix %s "
          "(stripped)%s%s, instances from %s",
          dc->name, name, c->listen.text, c->path_prefix,
          c->host ? ", host " : "", c->host ? c->host : "", c->zk_path);
}

static void discovered_remove(zg_discover_t *d, const char *name) {
  zg_gateway_t *gw = d->gw;
  for (size_t i = 0; i < gw->n_services; i++) {
    zg_service_t *svc = gw->services[i];
    if (svc->discover != d || strcmp(svc->conf->name, name) != 0)
      continue;
    zg_registry_unwatch(gw->registry, svc);
    memmove(&gw->services[i], &gw->services[i + 1],
            (gw->n_services - i - 1) * sizeof(*gw->services));
    gw->n_services--;
    zg_info("gateway", "discover %s: service %s removed (%s is gone)%s",
            d->conf->name, name, svc->conf->zk_path,
            svc->active ? ": requests in flight finish" : "");
    zg_service_unref(svc);
    return;
  }
}

static void on_children(void *arg, void *ctx, const char *const *names,
                        size_t n) {
  zg_discover_t *d = ctx;
  char **known;
  int changed = 0;
  (void)arg;
  if (!(known = calloc(n ? n : 1, sizeof(*known))))
    return; /* the next list tries again */
  for (size_t i = 0; i < n; i++)
    if (!(known[i] = strdup(names[i]))) {
      while (i-- > 0)
        free(known[i]);
      free(known);
      return;
    }
  for (size_t i = 0; i < d->n_known; i++)
    if (!sorted_has(known, n, d->known[i])) {
      discovered_remove(d, d->known[i]);
      changed = 1;
    }
  for (size_t i = 0; i < n; i++)
    if (!sorted_has(d->known, d->n_known, known[i])) {
      discovered_add(d, known[i]);
      changed = 1;
    }
  for (size_t i = 0; i < d->n_known; i++)
    free(d->known[i]);
  free(d->known);
  d->known = known;
  d->n_known = n;
  d->listed = 1;
  if (changed && zg_http_routes_update(d->gw) != 0)
    zg_error("gateway", "discover %s: out of memory updating routes",
             d->conf->name);
}

static int registry_start(zg_gateway_t *gw) {
  const zg_config_t *cfg = gw->cfg;
  int rc;
  if (!cfg->zk.hosts)
    return 0;
  gw->registry =
      zg_registry_new(gw->loop, cfg->zk.hosts, cfg->zk.session_timeout_ms,
                      cfg->zk.coalesce_window_ms, on_pool, on_children, gw);
  if (!gw->registry)
    return UV_ENOMEM;
  if ((rc = zg_registry_set_state(gw->registry, cfg->zk.state_file,
                                  cfg->zk.max_stale_ms)) != 0)
    return rc;
  for (size_t i = 0; i < gw->n_services; i++)
    if (gw->services[i]->conf->zk_path &&
        (rc = zg_registry_watch(gw->registry, gw->services[i]->conf->zk_path,
                                gw->services[i]->conf->endpoint,
                                gw->services[i])))
      return rc;
  for (size_t i = 0; i < gw->n_discovers; i++)
    if ((rc = zg_registry_watch_root(
             gw->registry, gw->discovers[i].conf->zk_root, &gw->discovers[i])))
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

  gw.started_wall_ms = (int64_t)(uv_hrtime() / 1000000);
  {
    uv_timeval64_t tv;
    if (uv_gettimeofday(&tv) == 0)
      gw.started_wall_ms = tv.tv_sec * 1000 + tv.tv_usec / 1000;
  }
  rc = 0;
  if (cfg->proxy.access_log &&
      !(gw.access_log = zg_access_log_open(cfg->proxy.access_log,
                                           cfg->proxy.access_log_json)))
    rc = ZG_ECONFIG;
  if (rc == 0)
    rc = services_start(&gw);
  if (rc == 0)
    rc = registry_start(&gw);
  if (rc == 0)
    rc = zg_admin_start(&gw);
  if (rc != 0) {
    exit_code = 1;
    gateway_stop(&gw, "start failed");
  } else {
    zg_info("gateway", "zkgate %s started with %zu service%s%s", ZKGATE_VERSION,
            gw.n_services, gw.n_services == 1 ? "" : "s",
            gw.n_discovers ? " (and discovery: more to come)" : "");
  }
  uv_run(&loop, UV_RUN_DEFAULT);

  /* Anything still open (there should be nothing) is closed, so that the
   * loop can be closed and the sanitizers see no leak. */
  uv_walk(&loop, walk_close, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0)
    zg_warn("gateway", "event loop closed with handles still open");
  zg_http_free(&gw);
  for (size_t i = 0; i < gw.n_services; i++)
    zg_service_unref(gw.services[i]);
  for (size_t i = 0; i < gw.n_discovers; i++) {
    for (size_t k = 0; k < gw.discovers[i].n_known; k++)
      free(gw.discovers[i].known[k]);
    free(gw.discovers[i].known);
  }
  free(gw.discovers);
  zg_access_log_close(gw.access_log);
  free(gw.failed);
  free(gw.services);
  zg_buf_free_all(&gw);
  if (exit_code == 0)
    zg_info("gateway", "stopped");
  return exit_code;
}
