/* The gateway's life: start services, listeners and the registry from a
 * checked configuration; run the loop; on SIGTERM/SIGINT close listeners,
 * sessions and the ZooKeeper session (so that the server drops it at once)
 * and return once every handle is closed. */
#include "control/gateway.h"

#include "control/feed.h"
#include "core/error.h"
#include "proxy/http_proxy.h"
#include "proxy/proxy.h"
#include "net/listener.h"
#include "proxy/sni_proxy.h"
#include "control/shared.h"
#include "proxy/pipe_pool.h"
#include "proxy/tcp_proxy.h"
#include "net/tls.h"
#include "registry/etcd_source.h"
#include "registry/zk_source.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static int gateway_admit(void *owner, uv_stream_t *server, bool in_head,
                         zg_conn_ticket_t *t, const char *listener);
static int gateway_listen_flags(void *owner);

static zg_tls_server_t *gateway_tls(void *owner, const zg_listen_addr_t *addr) {
  return zg_gateway_tls(owner, addr);
}

static zg_service_t *const *gateway_services(void *owner, size_t *n) {
  zg_gateway_t *gw = owner;
  *n = gw->n_services;
  return gw->services;
}

/* What the proxies call the gateway for (proxy/proxy.h). */
static const zg_proxy_hooks_t gateway_hooks = {
    .admit = gateway_admit,
    .listen_flags = gateway_listen_flags,
    .tls = gateway_tls,
    .services = gateway_services,
};

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

static void peers_board_changed(zg_gateway_t *gw);

static void on_pool(void *arg, void *ctx, zg_pool_t *pool) {
  zg_service_t *svc = ctx;
  zg_gateway_t *gw = svc->px->owner;
  (void)arg;
  log_pool(svc, pool);
  if (svc->conf->balance == ZG_BALANCE_HASH)
    zg_pool_ring(pool); /* built once, here, before any worker picks */
  zg_feed_pool(gw->feed, svc->conf->name, svc->zk_pool, pool);
  zg_pool_unref(svc->zk_pool);
  svc->zk_pool = pool;
  if (gw->board) {
    zg_shared_post_pool(gw->sh, svc->conf->name,
                        zg_service_conf_path(svc->conf), svc->conf->endpoint,
                        pool);
    peers_board_changed(gw);
  }
}

static void on_handle_closed(uv_handle_t *h) {
  (void)h;
}

/* A TCP service's listener is on the heap: a reload hands it on to the
 * service that replaces it. */
static void on_tcp_listener_closed(zg_listener_t *l) {
  free(l);
}

static void tcp_listener_close(zg_service_t *svc) {
  if (svc->listener) {
    zg_listener_close(svc->listener);
    svc->listener = NULL;
  }
}

/* NULL (logged) when the address cannot be bound. Connections go to
 * zg_tcp_on_connection with tcp.data the service, set by the caller. */
static zg_listener_t *tcp_listener_open(zg_gateway_t *gw,
                                        const zg_service_conf_t *sc) {
  zg_listener_t *l = calloc(1, sizeof(*l));
  int rc;
  if (!l)
    return NULL;
  rc = zg_listener_open(l, gw->loop, &sc->listen, zg_tcp_on_connection,
                        gateway_listen_flags(gw), NULL, on_tcp_listener_closed);
  if (rc != 0) {
    zg_error("gateway", "service %s: cannot listen on %s: %s", sc->name,
             sc->listen.text, uv_strerror(rc));
    zg_listener_close(l);
    return NULL;
  }
  return l;
}

/* The admin listener, through the functions main gave (control/admin.h):
 * the control loop's only. */
static int admin_start(zg_gateway_t *gw) {
  if (!gw->cfg->admin.enabled)
    return 0;
  gw->admin = gw->admin_ops->open(gw, &gw->cfg->admin.listen);
  return gw->admin ? 0 : UV_EADDRINUSE;
}

static void admin_stop(zg_gateway_t *gw) {
  struct zg_admin *a = gw->admin;
  gw->admin = NULL;
  if (a)
    gw->admin_ops->discard(a);
}

static void peers_post(zg_gateway_t *gw, int what);
static void worker_gone(zg_gateway_t *gw);
enum { POST_BOARD = 1, POST_DRAIN = 2, POST_STOP = 4 };

/* Closes everything. The control loop stops the other workers too unless
 * it only finished its own drain (each worker drains on its own). */
static void gateway_stop_ex(zg_gateway_t *gw, const char *why, int peers) {
  if (gw->px.stopping)
    return;
  gw->px.stopping = 1;
  zg_info("gateway", "%s: stopping", why);
  if (peers)
    peers_post(gw, POST_STOP);
  if (gw->px.draining)
    uv_close((uv_handle_t *)&gw->drain_timer, on_handle_closed);
  for (size_t i = 0; i < gw->n_services; i++)
    tcp_listener_close(gw->services[i]);
  admin_stop(gw); /* first: its /events readers unsubscribe */
  zg_feed_close(gw->feed);
  gw->feed = NULL;
  zg_sni_stop(&gw->px);
  zg_tcp_close_all(&gw->px);
  zg_http_stop(&gw->px);
  zg_source_close(gw->registry);
  gw->registry = NULL;
  zg_source_close(gw->etcd);
  gw->etcd = NULL;
  if (gw->worker) {
    worker_gone(gw);
    return;
  }
  for (size_t i = 0; i < sizeof(gw->signals) / sizeof(gw->signals[0]); i++)
    if (!uv_is_closing((uv_handle_t *)&gw->signals[i]))
      uv_close((uv_handle_t *)&gw->signals[i], on_handle_closed);
}

static void gateway_stop(zg_gateway_t *gw, const char *why) {
  gateway_stop_ex(gw, why, 1);
}

/* Every client connection still open, whatever service or listener it
 * came through: a reload may have removed those since. */
static size_t sessions_left(const zg_gateway_t *gw) {
  return zg_sni_pending(&gw->px) + zg_tcp_sessions_open(&gw->px) +
         zg_http_sessions_open(&gw->px);
}

static size_t peers_live(zg_gateway_t *gw);

/* The same for every worker (the control loop: the others paused). */
static size_t all_sessions_left(zg_gateway_t *gw) {
  zg_gateway_t *peers[ZG_MAX_WORKERS];
  size_t left = sessions_left(gw), n;
  if (gw->worker || gw->n_peers == 0)
    return left;
  n = zg_gateway_isolate(gw, peers);
  for (size_t i = 0; i < n; i++)
    left += sessions_left(peers[i]);
  zg_gateway_release(gw);
  return left;
}

static void on_drain_timer(uv_timer_t *t) {
  zg_gateway_t *gw = t->data;
  size_t left = sessions_left(gw);
  /* The control loop waits for the other workers' drains too, so that
   * its signal handlers stay (a second signal still stops them all). */
  if (left == 0 && peers_live(gw) == 0) {
    gateway_stop_ex(gw, "drained", 0);
    return;
  }
  if (uv_now(gw->loop) - gw->drain_start_ms >=
      gw->cfg->proxy.drain_timeout_ms) {
    zg_warn("gateway",
            "drain_timeout (%llu ms) is over: closing the %zu connection(s) "
            "left",
            (unsigned long long)gw->cfg->proxy.drain_timeout_ms, left);
    gateway_stop_ex(gw, "drain over", 1);
  }
}

/* Stops accepting; idle keep-alive connections close at once, the others
 * after their current request (HTTP) or when they end (TCP), for at most
 * drain_timeout. A second signal stops at once. */
static void gateway_drain(zg_gateway_t *gw, const char *why) {
  if (gw->px.draining || gw->px.stopping) {
    gateway_stop(gw, why);
    return;
  }
  gw->px.draining = 1;
  gw->drain_start_ms = uv_now(gw->loop);
  peers_post(gw, POST_DRAIN);
  for (size_t i = 0; i < gw->n_services; i++)
    tcp_listener_close(gw->services[i]);
  zg_sni_drain(&gw->px);
  zg_http_drain(&gw->px);
  zg_info("gateway",
          "%s: draining: no new connections, %zu open one(s) may finish within "
          "%llu ms (signal again to stop at once)",
          why, all_sessions_left(gw),
          (unsigned long long)gw->cfg->proxy.drain_timeout_ms);
  uv_timer_init(gw->loop, &gw->drain_timer);
  gw->drain_timer.data = gw;
  uv_timer_start(&gw->drain_timer, on_drain_timer, 0, 50);
}

static void reload(zg_gateway_t *gw);
static void conn_limits_apply(zg_gateway_t *gw, const zg_config_t *cfg);

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
    if (!gw->px.draining && !gw->px.stopping)
      reload(gw);
    break;
  case SIGUSR1:
    /* The log goes to stderr; the access log may be a file. */
    if (gw->px.access_log)
      zg_access_log_reopen(gw->px.access_log);
    else
      zg_info("gateway", "SIGUSR1: no access log file to reopen");
    break;
  default:
    break;
  }
}

/* A configured service, from its section (copied). */
static zg_service_t *service_from(zg_gateway_t *gw,
                                  const zg_service_conf_t *sc) {
  zg_service_conf_t *c = calloc(1, sizeof(*c));
  if (!c || zg_service_conf_copy(c, sc) != 0) {
    free(c);
    return NULL;
  }
  return zg_service_new(&gw->svc_ctx, &gw->px, c);
}

static int list_push(zg_service_t ***list, size_t *n, size_t *cap,
                     zg_service_t *svc) {
  if (*n == *cap) {
    size_t nc = *cap ? *cap * 2 : 8;
    zg_service_t **nl = realloc(*list, nc * sizeof(*nl));
    if (!nl)
      return UV_ENOMEM;
    *list = nl;
    *cap = nc;
  }
  (*list)[(*n)++] = svc;
  return 0;
}

static zg_discover_t *discover_new(zg_gateway_t *gw,
                                   const zg_discover_conf_t *conf) {
  zg_discover_t *d = calloc(1, sizeof(*d));
  if (d) {
    d->gw = gw;
    d->conf = conf;
  }
  return d;
}

static void discover_free(zg_discover_t *d) {
  for (size_t k = 0; k < d->n_known; k++)
    free(d->known[k]);
  free(d->known);
  free(d);
}

static void log_tcp_service(const zg_service_conf_t *sc) {
  const char *path = zg_service_conf_path(sc);
  zg_info("gateway", "service %s: listening on %s (tcp), %s%s%s%s", sc->name,
          sc->listen.text, path ? "instances from " : "",
          sc->etcd_prefix ? "etcd " : "", path ? path : "",
          sc->n_instances
              ? (path ? " with static fallback" : "static instances")
              : "");
}

/* The registry source a service reads (NULL: none, or not running). */
static zg_source_t *source_of(const zg_gateway_t *gw,
                              const zg_service_conf_t *sc) {
  if (sc->etcd_prefix)
    return gw->etcd;
  return sc->zk_path ? gw->registry : NULL;
}

/* The registry a discover section lists. */
static zg_source_t *discover_source(const zg_gateway_t *gw,
                                    const zg_discover_conf_t *dc) {
  return dc->etcd_root ? gw->etcd : gw->registry;
}

/* Two services read the same registry path (same source, same path, same
 * endpoint): a watch and its pool can pass from one to the other. */
static int same_registry_path(const zg_service_conf_t *a,
                              const zg_service_conf_t *b) {
  if (!!a->etcd_prefix != !!b->etcd_prefix || !zg_service_conf_path(a) ||
      !zg_service_conf_path(b))
    return 0;
  return !strcmp(zg_service_conf_path(a), zg_service_conf_path(b)) &&
         ((!a->endpoint && !b->endpoint) ||
          (a->endpoint && b->endpoint && !strcmp(a->endpoint, b->endpoint)));
}

/* ---- TLS ------------------------------------------------------------------
 * One server (certificates chosen by SNI) per listen address that
 * terminates TLS, from the configured services of a configuration. Built
 * anew at start and on every reload, so that SIGHUP renews certificates
 * and keys even when the file did not change; connections keep the server
 * they began with. */

typedef struct {
  zg_tls_server_t **list;
  zg_listen_addr_t *addrs;
  size_t n;
} tls_set_t;

static void tls_set_free(tls_set_t *t) {
  for (size_t i = 0; i < t->n; i++)
    zg_tls_server_unref(t->list[i]);
  free(t->list);
  free(t->addrs);
  memset(t, 0, sizeof(*t));
}

zg_tls_server_t *zg_gateway_tls(const zg_gateway_t *gw,
                                const zg_listen_addr_t *addr) {
  for (size_t i = 0; i < gw->n_tls; i++)
    if (zg_config_same_sockaddr(&gw->tls_addrs[i], addr))
      return gw->tls[i];
  return NULL;
}

/* 0, or an error (logged, naming the service and the file). */
static int tls_build(zg_gateway_t *gw, const zg_config_t *cfg, tls_set_t *t) {
  const zg_service_conf_t **group;
  size_t n = cfg->n_services;
  memset(t, 0, sizeof(*t));
  group = calloc(n + 1, sizeof(*group));
  t->list = calloc(n + 1, sizeof(*t->list));
  t->addrs = calloc(n + 1, sizeof(*t->addrs));
  if (!group || !t->list || !t->addrs) {
    free(group);
    tls_set_free(t);
    return UV_ENOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    const zg_service_conf_t *sc = &cfg->services[i];
    size_t ng = 0;
    int seen = 0, rc;
    if (!sc->tls_cert || sc->protocol == ZG_PROTO_TLS_PASSTHROUGH)
      continue;
    for (size_t k = 0; k < t->n && !seen; k++)
      seen = zg_config_same_sockaddr(&t->addrs[k], &sc->listen);
    if (seen)
      continue;
    /* The services of this address in file order: the first certificate
     * is the default. */
    for (size_t k = i; k < n; k++)
      if (cfg->services[k].tls_cert &&
          zg_config_same_sockaddr(&cfg->services[k].listen, &sc->listen))
        group[ng++] = &cfg->services[k];
    rc = zg_tls_server_new(group, ng, sc->listen.text,
                           sc->protocol != ZG_PROTO_HTTP ? 0
                           : cfg->proxy.http2            ? ZG_TLS_ALPN_H2
                                                         : ZG_TLS_ALPN_H1,
                           zg_gateway_tls(gw, &sc->listen), &t->list[t->n]);
    if (rc != 0) {
      free(group);
      tls_set_free(t);
      return rc;
    }
    t->addrs[t->n++] = sc->listen;
    zg_info("gateway", "listen %s: TLS with %zu certificate%s", sc->listen.text,
            ng, ng == 1 ? "" : "s");
  }
  free(group);
  return 0;
}

/* Installs `t` (emptied) as the gateway's, dropping the old set. */
static void tls_install(zg_gateway_t *gw, tls_set_t *t) {
  tls_set_t old = {gw->tls, gw->tls_addrs, gw->n_tls};
  gw->tls = t->list;
  gw->tls_addrs = t->addrs;
  gw->n_tls = t->n;
  memset(t, 0, sizeof(*t));
  tls_set_free(&old);
}

/* ---- TLS to instances -------------------------------------------------
 * A service with its own upstream_ca, upstream_cert or upstream_verify = no
 * gets its own client context, made at start and on every reload (so that
 * SIGHUP re-reads the files); the others share the gateway's default. */

static int up_tls_own(const zg_service_conf_t *sc) {
  return sc->upstream_tls != ZG_UPSTREAM_TLS_OFF &&
         sc->protocol != ZG_PROTO_TLS_PASSTHROUGH &&
         (sc->upstream_ca || sc->upstream_cert || sc->upstream_noverify);
}

/* *out: the service's own context, or NULL when it needs none. 0, or an
 * error (logged). */
static int up_tls_build(const zg_service_conf_t *sc, zg_tls_client_t **out) {
  char err[512];
  int rc;
  *out = NULL;
  if (!up_tls_own(sc))
    return 0;
  if ((rc = zg_tls_client_new(sc, err, sizeof(err), out)) != 0) {
    zg_error("tls", "service %s: TLS to instances: %s", sc->name, err);
    return rc;
  }
  if (sc->upstream_noverify)
    zg_warn("tls",
            "service %s: upstream_verify = no: the certificates of its "
            "instances are not checked (anyone on the path can read and "
            "change its traffic)",
            sc->name);
  return 0;
}

/* `given`: the control loop's certificates for another worker (emptied),
 * NULL to load them. */
static int services_start(zg_gateway_t *gw, tls_set_t *given) {
  const zg_config_t *cfg = gw->cfg;
  tls_set_t tls;
  int rc;
  if (given) {
    tls = *given;
    memset(given, 0, sizeof(*given));
  } else if ((rc = tls_build(gw, cfg, &tls)) != 0) {
    return rc;
  }
  tls_install(gw, &tls);
  if (cfg->n_discovers > 0) {
    gw->discovers = calloc(cfg->n_discovers, sizeof(*gw->discovers));
    if (!gw->discovers)
      return UV_ENOMEM;
    for (size_t i = 0; i < cfg->n_discovers; i++) {
      if (!(gw->discovers[i] = discover_new(gw, &cfg->discovers[i])))
        return UV_ENOMEM;
      gw->n_discovers++;
    }
  }
  for (size_t i = 0; i < cfg->n_services; i++) {
    const zg_service_conf_t *sc = &cfg->services[i];
    zg_service_t *svc = service_from(gw, sc);
    if (!svc || list_push(&gw->services, &gw->n_services, &gw->cap_services,
                          svc) != 0) {
      zg_service_unref(svc);
      return UV_ENOMEM;
    }
    if ((rc = up_tls_build(sc, &svc->up_tls)) != 0)
      return rc;
    if (sc->protocol != ZG_PROTO_TCP)
      continue; /* listeners shared by address: zg_http_start, zg_sni_start */
    if (!(svc->listener = tcp_listener_open(gw, sc)))
      return UV_EADDRINUSE;
    svc->listener->tcp.data = svc;
    log_tcp_service(sc);
  }
  if ((rc = zg_http_start(&gw->px)) != 0)
    return rc;
  return zg_sni_start(&gw->px);
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
  const char *root = zg_discover_conf_root(d);
  size_t rlen = strlen(root), nlen = strlen(name);
  int ok;
  if (!c)
    return NULL;
  if (rlen == 1 && d->zk_root) /* "/" */
    rlen = 0;
  c->name = strdup(name);
  c->path_prefix = malloc(nlen + 3);
  if (d->etcd_root) { /* ROOT/NAME/: the root ends with '/' */
    if ((c->etcd_prefix = malloc(rlen + nlen + 2)) != NULL)
      snprintf(c->etcd_prefix, rlen + nlen + 2, "%s%s/", root, name);
  } else if ((c->zk_path = malloc(rlen + nlen + 2)) != NULL) {
    snprintf(c->zk_path, rlen + nlen + 2, "%.*s/%s", (int)rlen, root, name);
  }
  ok = c->name && zg_service_conf_path(c) && c->path_prefix;
  if (ok)
    snprintf(c->path_prefix, nlen + 3, "/%s/", name);
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
  c->hash_key = d->hash_key;
  memcpy(c->hash_name, d->hash_name, sizeof(c->hash_name));
  c->slow_start_ms = d->slow_start_ms;
  c->latency_ewma = d->latency_ewma;
  c->latency_decay_ms = d->latency_decay_ms;
  c->connect_timeout_ms = d->connect_timeout_ms;
  c->response_timeout_ms = d->response_timeout_ms;
  c->strip_prefix = true;
  c->line = d->line;
  return c;
}

/* The service that keeps `c` (a discovered service) from being there: one
 * of its name, or a configured one reading its path in the same registry. */
static zg_service_t *service_claiming(zg_gateway_t *gw,
                                      const zg_service_conf_t *c) {
  for (size_t i = 0; i < gw->n_services; i++) {
    zg_service_t *o = gw->services[i];
    const char *op = zg_service_conf_path(o->conf);
    if (!strcmp(o->conf->name, c->name) ||
        (!o->discover && op && !o->conf->etcd_prefix == !c->etcd_prefix &&
         !strcmp(op, zg_service_conf_path(c))))
      return o;
  }
  return NULL;
}

static void discovered_add(zg_discover_t *d, const char *name) {
  zg_gateway_t *gw = d->gw;
  const zg_discover_conf_t *dc = d->conf;
  zg_service_conf_t *c;
  zg_service_t *svc, *other;
  zg_source_t *src;
  if (!discoverable(name)) {
    zg_warn("gateway",
            "discover %s: %s/%s is not a service name usable in a path and a "
            "host ([A-Za-z0-9_.-], up to 63 characters): skipped",
            dc->name, zg_discover_conf_root(dc), name);
    return;
  }
  if (!(c = discovered_conf(dc, name))) {
    zg_error("gateway", "discover %s: out of memory adding service %s",
             dc->name, name);
    return;
  }
  if ((other = service_claiming(gw, c)) != NULL) {
    zg_info("gateway",
            "discover %s: %s is served by %s service %s: the %s wins", dc->name,
            zg_service_conf_path(c),
            other->discover ? "discovered" : "configured", other->conf->name,
            other->discover ? "first discover section" : "[service:] section");
    zg_service_conf_clear(c);
    free(c);
    return;
  }
  if (!(svc = zg_service_new(&gw->svc_ctx, &gw->px, c)) ||
      list_push(&gw->services, &gw->n_services, &gw->cap_services, svc) != 0) {
    zg_error("gateway", "discover %s: out of memory adding service %s",
             dc->name, name);
    zg_service_unref(svc);
    return;
  }
  svc->discover = d;
  src = source_of(gw, c);
  if (src &&
      zg_source_watch(src, zg_service_conf_path(c), c->endpoint, svc) != 0) {
    zg_error("gateway", "discover %s: out of memory watching %s", dc->name,
             zg_service_conf_path(c));
    gw->n_services--;
    zg_service_unref(svc);
    return;
  }
  zg_info("gateway",
          "discover %s: service %s added: http on %s, path prefix %s "
          "(stripped)%s%s, instances from %s",
          dc->name, name, c->listen.text, c->path_prefix,
          c->host ? ", host " : "", c->host ? c->host : "",
          zg_service_conf_path(c));
}

/* The control loop stops watching svc's path for it: the registry and
 * the workers' board forget it. */
static void service_unwatch(zg_gateway_t *gw, zg_service_t *svc) {
  zg_source_t *src = source_of(gw, svc->conf);
  if (!src)
    return;
  zg_source_unwatch(src, svc);
  if (gw->board)
    zg_shared_forget_pool(gw->sh, svc->conf->name,
                          zg_service_conf_path(svc->conf), svc->conf->endpoint);
}

/* Takes service i out of the gateway's list (and the registry's). */
static void service_drop(zg_gateway_t *gw, size_t i, const char *why) {
  zg_service_t *svc = gw->services[i];
  service_unwatch(gw, svc);
  tcp_listener_close(svc);
  memmove(&gw->services[i], &gw->services[i + 1],
          (gw->n_services - i - 1) * sizeof(*gw->services));
  gw->n_services--;
  zg_info("gateway", "service %s removed (%s)%s", svc->conf->name, why,
          svc->active ? ": what is in flight finishes" : "");
  zg_service_unref(svc);
}

static zg_service_t *discovered_by(zg_gateway_t *gw, const zg_discover_t *d,
                                   const char *name) {
  for (size_t i = 0; i < gw->n_services; i++)
    if (gw->services[i]->discover == d &&
        !strcmp(gw->services[i]->conf->name, name))
      return gw->services[i];
  return NULL;
}

static void discovered_remove(zg_discover_t *d, const char *name) {
  zg_gateway_t *gw = d->gw;
  for (size_t i = 0; i < gw->n_services; i++) {
    zg_service_t *svc = gw->services[i];
    char why[300];
    if (svc->discover != d || strcmp(svc->conf->name, name) != 0)
      continue;
    snprintf(why, sizeof(why), "discover %s: %s is gone", d->conf->name,
             zg_service_conf_path(svc->conf));
    service_drop(gw, i, why);
    return;
  }
}

/* The board key of a discover section's children: its name and root. */
static void discover_key(const zg_discover_t *d, char *key, size_t len) {
  snprintf(key, len, "%s\n%s", d->conf->name, zg_discover_conf_root(d->conf));
}

/* `known` (sorted, owned from now on) are the root's children now. */
static void discover_apply(zg_discover_t *d, char **known, size_t n) {
  int changed = 0;
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
  if (changed && zg_http_routes_update(&d->gw->px) != 0)
    zg_error("gateway", "discover %s: out of memory updating routes",
             d->conf->name);
}

static void on_children(void *arg, void *ctx, const char *const *names,
                        size_t n) {
  zg_discover_t *d = ctx;
  zg_gateway_t *gw = d->gw;
  char **known;
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
  discover_apply(d, known, n);
  if (gw->board) {
    char key[1024];
    discover_key(d, key, sizeof(key));
    zg_shared_post_children(gw->sh, key, names, n);
    peers_board_changed(gw);
  }
}

/* A registry source for `cfg` (ZooKeeper's [zookeeper]), not started:
 * *out (NULL when no section needs a registry). 0 or UV_ENOMEM. */
static int registry_make(zg_gateway_t *gw, const zg_config_t *cfg,
                         zg_source_t **out) {
  return zg_zk_source_new(gw->loop, cfg, on_pool, on_children, gw, out);
}

/* The same for etcd ([etcd]; NULL when no service reads etcd). */
static int etcd_make(zg_gateway_t *gw, const zg_config_t *cfg,
                     zg_source_t **out) {
  return zg_etcd_source_new(gw->loop, cfg, on_pool, on_children, gw, out);
}

/* Installs `src` (made from gw->cfg), watches every etcd service's prefix,
 * and starts it. */
static int etcd_begin(zg_gateway_t *gw, zg_source_t *src) {
  int rc;
  gw->etcd = src;
  zg_etcd_conf_clear(&gw->etcd_conf);
  if ((rc = zg_etcd_conf_copy(&gw->etcd_conf, &gw->cfg->etcd)) != 0)
    return rc;
  for (size_t i = 0; i < gw->n_services; i++) {
    const zg_service_conf_t *sc = gw->services[i]->conf;
    if (sc->etcd_prefix &&
        (rc = zg_source_watch(src, sc->etcd_prefix, sc->endpoint,
                              gw->services[i])) != 0)
      return rc;
  }
  for (size_t i = 0; i < gw->n_discovers; i++)
    if (gw->discovers[i] && gw->discovers[i]->conf->etcd_root &&
        (rc = zg_source_watch_root(src, gw->discovers[i]->conf->etcd_root,
                                   gw->discovers[i])))
      return rc;
  return zg_source_start(src);
}

/* Installs `reg` (made from gw->cfg), watches every service's path and
 * discover root, and starts the session. */
static int registry_begin(zg_gateway_t *gw, zg_source_t *reg) {
  int rc;
  gw->registry = reg;
  gw->zk_cfg = gw->cfg;
  for (size_t i = 0; i < gw->n_services; i++)
    if (gw->services[i]->conf->zk_path &&
        (rc =
             zg_source_watch(gw->registry, gw->services[i]->conf->zk_path,
                             gw->services[i]->conf->endpoint, gw->services[i])))
      return rc;
  for (size_t i = 0; i < gw->n_discovers; i++)
    if (gw->discovers[i] && gw->discovers[i]->conf->zk_root &&
        (rc = zg_source_watch_root(
             gw->registry, gw->discovers[i]->conf->zk_root, gw->discovers[i])))
      return rc;
  return zg_source_start(gw->registry);
}

static int registry_start(zg_gateway_t *gw) {
  zg_source_t *reg;
  int rc = etcd_make(gw, gw->cfg, &reg);
  if (rc == 0 && reg)
    rc = etcd_begin(gw, reg);
  if (rc == 0)
    rc = registry_make(gw, gw->cfg, &reg);
  if (rc != 0 || !reg)
    return rc;
  return registry_begin(gw, reg);
}

/* ---- reload --------------------------------------------------------------
 * SIGHUP reads the file again. A file with errors, a change to [zookeeper]
 * or to workers, or a new address that cannot be bound rejects the whole
 * reload: the running configuration stays. Otherwise, for new connections:
 * a service whose section did not change is kept as it is (pool, counters,
 * watches); a changed one is replaced, taking over the pool and the watch
 * of its predecessor when zk_path and endpoint are the same; TCP listening
 * sockets are handed on by address, so that no connection is refused.
 * Connections already open keep the service, routes and timeouts they had. */

static int same_opt(const char *a, const char *b) {
  return (!a && !b) || (a && b && !strcmp(a, b));
}

static const char *fixed_part_changed(const zg_gateway_t *gw,
                                      const zg_config_t *b) {
  /* A first section that needs ZooKeeper starts the registry; one that
   * was running stays when nothing needs it any more, with the settings
   * it started with, which a later file must keep. */
  const zg_config_t *a = gw->registry ? gw->zk_cfg : gw->cfg;
  if (a->zk.hosts && b->zk.hosts &&
      (strcmp(a->zk.hosts, b->zk.hosts) ||
       a->zk.session_timeout_ms != b->zk.session_timeout_ms ||
       a->zk.coalesce_window_ms != b->zk.coalesce_window_ms ||
       !same_opt(a->zk.state_file, b->zk.state_file) ||
       a->zk.max_stale_ms != b->zk.max_stale_ms ||
       a->zk.max_watch_bytes != b->zk.max_watch_bytes ||
       a->zk.data_sweep_ms != b->zk.data_sweep_ms ||
       !same_opt(a->zk.auth, b->zk.auth)))
    return "[zookeeper] changed: that needs a restart";
  /* etcd likewise: kept with what it started with. */
  if (gw->etcd && b->etcd.endpoints &&
      !zg_etcd_conf_equal(&gw->etcd_conf, &b->etcd))
    return "[etcd] changed: that needs a restart";
  if (gw->cfg->proxy.workers != b->proxy.workers)
    return "[proxy] workers changed: that needs a restart";
  return NULL;
}

static zg_service_t *configured_named(zg_gateway_t *gw, const char *name) {
  for (size_t i = 0; i < gw->n_services; i++)
    if (!gw->services[i]->discover &&
        !strcmp(gw->services[i]->conf->name, name))
      return gw->services[i];
  return NULL;
}

/* A reload is a plan: reload_prepare does everything that can fail (the
 * certificates, the new listening sockets, the admin listener, the access
 * log, the new services and discover sections, memory) without changing
 * anything that runs; reload_commit then swaps it in and has nothing left
 * that can reject it; reload_discard drops what a rejected plan holds. */
typedef struct {
  zg_config_t *cfg;         /* owned until committed */
  size_t n_conf;            /* its services */
  tls_set_t tls;            /* certificates per TLS address */
  zg_tls_client_t **up_tls; /* per configured service, or NULL */
  zg_listener_set_t http;   /* new HTTP addresses, bound */
  zg_listener_set_t sni;    /* new tls-passthrough addresses, bound */
  zg_listener_t **tcp;      /* per configured TCP service: a new socket,
                               or NULL when one is handed on */
  int admin_moves, log_moves;
  zg_source_t *registry;  /* the first section that needs ZooKeeper
                             starts it: made here, started at commit */
  zg_source_t *etcd;      /* the same for etcd */
  struct zg_admin *admin; /* the new admin listener, if it moves */
  const zg_gateway_admin_ops_t *admin_ops; /* what made it */
  zg_access_log_t *log;                    /* the new access log, if it moves */
  zg_service_t **news; /* per configured service (referenced), with
                          room for the discovered ones after them */
  size_t n_new, cap_new;
  zg_discover_t **discs; /* per discover section: kept or new */
  bool *disc_fresh;      /* discs[i] was made by this plan */
  unsigned added, changed, kept, removed;
} reload_plan_t;

static void reload_discard(zg_gateway_t *gw, reload_plan_t *p) {
  const size_t n_cfg = p->n_conf;
  zg_http_opened_discard(&gw->px, &p->http);
  zg_sni_opened_discard(&gw->px, &p->sni);
  zg_source_close(p->registry); /* never started: freed at once */
  zg_source_close(p->etcd);
  if (p->admin)
    p->admin_ops->discard(p->admin);
  zg_access_log_close(p->log);
  for (size_t i = 0; p->tcp && i < n_cfg; i++)
    if (p->tcp[i])
      zg_listener_close(p->tcp[i]);
  free(p->tcp);
  for (size_t i = 0; i < p->n_new; i++)
    zg_service_unref(p->news[i]);
  free(p->news);
  /* Committed, discs is NULL (the gateway has them) and so is cfg. */
  for (size_t i = 0; p->discs && p->disc_fresh && i < p->cfg->n_discovers; i++)
    if (p->disc_fresh[i])
      discover_free(p->discs[i]);
  free(p->discs);
  free(p->disc_fresh);
  tls_set_free(&p->tls);
  for (size_t i = 0; p->up_tls && i < n_cfg; i++)
    zg_tls_client_unref(p->up_tls[i]);
  free(p->up_tls);
  zg_config_free(p->cfg);
  memset(p, 0, sizeof(*p));
}

/* Certificates and keys, read again (renewed or not), for clients and for
 * TLS to instances. */
static int plan_tls(zg_gateway_t *gw, reload_plan_t *p, tls_set_t *given) {
  const zg_config_t *cfg = p->cfg;
  if (given) {
    p->tls = *given;
    memset(given, 0, sizeof(*given));
  } else if (tls_build(gw, cfg, &p->tls) != 0) {
    zg_error("gateway", "reload rejected: a certificate or key cannot be "
                        "loaded (above); the running configuration stays, "
                        "with the certificates it has");
    return -1;
  }
  if (!(p->up_tls = calloc(cfg->n_services + 1, sizeof(*p->up_tls))))
    return UV_ENOMEM;
  for (size_t i = 0; i < cfg->n_services; i++)
    if (up_tls_build(&cfg->services[i], &p->up_tls[i]) != 0) {
      zg_error("gateway", "reload rejected: a file for TLS to instances "
                          "cannot be loaded (above); the running "
                          "configuration stays");
      return -1;
    }
  return 0;
}

/* The admin listener (control loop only) and the access log follow their
 * keys; both are opened before anything changes. Another worker takes the
 * control loop's log, whatever it is: `given` (a reference of its own). */
static int plan_operations(zg_gateway_t *gw, reload_plan_t *p,
                           zg_access_log_t *given) {
  const zg_config_t *old = gw->cfg, *cfg = p->cfg;
  p->admin_ops = gw->admin_ops;
  p->admin_moves =
      !gw->worker &&
      (old->admin.enabled != cfg->admin.enabled ||
       (cfg->admin.enabled &&
        !zg_config_same_sockaddr(&old->admin.listen, &cfg->admin.listen)));
  if (p->admin_moves && cfg->admin.enabled &&
      !(p->admin = gw->admin_ops->open(gw, &cfg->admin.listen))) {
    zg_error("gateway",
             "reload rejected: the admin listener cannot move to "
             "%s; the running configuration stays",
             cfg->admin.listen.text);
    return -1;
  }
  if (gw->worker) {
    p->log_moves = 1;
    p->log = given;
    return 0;
  }
  p->log_moves = !same_opt(old->proxy.access_log, cfg->proxy.access_log) ||
                 old->proxy.access_log_json != cfg->proxy.access_log_json;
  if (p->log_moves && cfg->proxy.access_log &&
      !(p->log = zg_access_log_open(cfg->proxy.access_log,
                                    cfg->proxy.access_log_json))) {
    zg_error("gateway",
             "reload rejected: the access log %s cannot be opened; "
             "the running configuration stays",
             cfg->proxy.access_log);
    return -1;
  }
  return 0;
}

/* A TCP service's socket: a new one unless a TCP service listens on its
 * address already (that one is handed on at commit). */
static int plan_tcp_listeners(zg_gateway_t *gw, reload_plan_t *p) {
  const zg_config_t *cfg = p->cfg;
  if (!(p->tcp = calloc(cfg->n_services + 1, sizeof(*p->tcp))))
    return UV_ENOMEM;
  for (size_t i = 0; i < cfg->n_services; i++) {
    const zg_service_conf_t *sc = &cfg->services[i];
    int have = 0;
    if (sc->protocol != ZG_PROTO_TCP)
      continue;
    for (size_t k = 0; k < gw->n_services && !have; k++)
      have =
          gw->services[k]->listener &&
          zg_config_same_sockaddr(&gw->services[k]->conf->listen, &sc->listen);
    if (!have && !(p->tcp[i] = tcp_listener_open(gw, sc))) {
      zg_error("gateway",
               "reload rejected: service %s cannot listen on %s; "
               "the running configuration stays",
               sc->name, sc->listen.text);
      return -1;
    }
  }
  return 0;
}

/* Every configured service of the new file: the running one when its
 * section did not change, else a new one. The list has room for the
 * discovered services that stay, so that commit allocates nothing. */
static int plan_services(zg_gateway_t *gw, reload_plan_t *p) {
  const zg_config_t *cfg = p->cfg;
  p->cap_new = cfg->n_services + gw->n_services + 1;
  if (!(p->news = calloc(p->cap_new, sizeof(*p->news))))
    return UV_ENOMEM;
  for (size_t i = 0; i < cfg->n_services; i++) {
    const zg_service_conf_t *sc = &cfg->services[i];
    zg_service_t *old = configured_named(gw, sc->name);
    if (old && zg_service_conf_equal(old->conf, sc)) {
      p->news[p->n_new++] = zg_service_ref(old);
      continue;
    }
    if (!(p->news[p->n_new] = service_from(gw, sc)))
      return UV_ENOMEM;
    p->n_new++;
  }
  return 0;
}

/* Discover sections: the running one when unchanged (with its services),
 * else a new one (its root is watched at commit). */
static int plan_discovers(zg_gateway_t *gw, reload_plan_t *p) {
  const zg_config_t *cfg = p->cfg;
  bool *taken = calloc(gw->n_discovers + 1, sizeof(*taken));
  p->discs = calloc(cfg->n_discovers + 1, sizeof(*p->discs));
  p->disc_fresh = calloc(cfg->n_discovers + 1, sizeof(*p->disc_fresh));
  if (!taken || !p->discs || !p->disc_fresh) {
    free(taken);
    return UV_ENOMEM;
  }
  for (size_t i = 0; i < cfg->n_discovers; i++) {
    const zg_discover_conf_t *dc = &cfg->discovers[i];
    for (size_t k = 0; k < gw->n_discovers && !p->discs[i]; k++)
      if (gw->discovers[k] && !taken[k] &&
          zg_discover_conf_equal(gw->discovers[k]->conf, dc)) {
        taken[k] = true;
        p->discs[i] = gw->discovers[k];
      }
    if (p->discs[i])
      continue;
    if (!(p->discs[i] = discover_new(gw, dc))) {
      free(taken);
      return UV_ENOMEM;
    }
    p->disc_fresh[i] = true;
  }
  free(taken);
  return 0;
}

/* Everything that can fail, in the order an operator reads the reasons.
 * 0, or -1 when rejected (logged): the running configuration is as it
 * was, and reload_discard drops what the plan holds. */
static int reload_prepare(zg_gateway_t *gw, reload_plan_t *p,
                          tls_set_t *given_tls, zg_access_log_t *given_log) {
  int rc = plan_tls(gw, p, given_tls);
  if (rc == 0 && !gw->worker && !gw->registry)
    rc = registry_make(gw, p->cfg, &p->registry);
  if (rc == 0 && !gw->worker && !gw->etcd &&
      (rc = etcd_make(gw, p->cfg, &p->etcd)) == ZG_ECONFIG) {
    zg_error("gateway", "reload rejected: [etcd] TLS files cannot be "
                        "loaded; the running configuration stays");
    rc = -1;
  }
  if (rc == 0 && (zg_http_addrs_to_open(&gw->px, p->cfg, &p->http) != 0 ||
                  zg_sni_addrs_to_open(&gw->px, p->cfg, &p->sni) != 0)) {
    zg_error("gateway", "reload rejected: a new address cannot be bound; the "
                        "running configuration stays");
    rc = -1;
  }
  if (rc == 0)
    rc = plan_operations(gw, p, given_log);
  else
    zg_access_log_close(given_log);
  if (rc == 0)
    rc = plan_tcp_listeners(gw, p);
  if (rc == 0)
    rc = plan_services(gw, p);
  if (rc == 0)
    rc = plan_discovers(gw, p);
  if (rc == UV_ENOMEM)
    zg_error("gateway", "reload rejected: out of memory; the running "
                        "configuration stays");
  return rc == 0 ? 0 : -1;
}

/* The new service takes over what its predecessor (NULL: none) has: the
 * registry watch and pool of the same path, else another's pool of that
 * path until its own watch reports. */
static void commit_watch(zg_gateway_t *gw, zg_service_t *svc,
                         zg_service_t *old) {
  const zg_service_conf_t *sc = svc->conf;
  zg_source_t *src = source_of(gw, sc);
  if (old && same_registry_path(old->conf, sc)) {
    /* The same registry path: the watch and its pool carry over. */
    svc->zk_pool = old->zk_pool ? zg_pool_ref(old->zk_pool) : NULL;
    if (src)
      zg_source_retarget(src, old, svc);
  } else if (zg_service_conf_path(sc)) {
    /* A path another service watches already (one renamed, say): its
     * pool serves until this watch has its own. */
    for (size_t k = 0; k < gw->n_services && !svc->zk_pool; k++) {
      const zg_service_t *o = gw->services[k];
      if (o->zk_pool && same_registry_path(o->conf, sc))
        svc->zk_pool = zg_pool_ref(o->zk_pool);
    }
    if (src &&
        zg_source_watch(src, zg_service_conf_path(sc), sc->endpoint, svc) != 0)
      zg_error("gateway", "service %s: out of memory watching %s", sc->name,
               zg_service_conf_path(sc));
  }
}

/* A new TCP service's socket: the one the plan bound, else the one of the
 * running service that listens on its address, handed on. */
static void commit_tcp_listener(zg_gateway_t *gw, zg_service_t *svc,
                                zg_listener_t **opened) {
  const zg_service_conf_t *sc = svc->conf;
  if (*opened) {
    svc->listener = *opened;
    *opened = NULL;
  } else {
    for (size_t k = 0; k < gw->n_services; k++) {
      zg_service_t *o = gw->services[k];
      if (o->listener &&
          zg_config_same_sockaddr(&o->conf->listen, &sc->listen)) {
        svc->listener = o->listener;
        o->listener = NULL;
        break;
      }
    }
  }
  if (svc->listener)
    svc->listener->tcp.data = svc;
  log_tcp_service(sc);
}

/* Registry watches and pools, TCP sockets of the new and changed
 * services (gw->services is still the running list). */
static void commit_services(zg_gateway_t *gw, reload_plan_t *p) {
  for (size_t i = 0; i < p->n_new; i++) {
    zg_service_t *svc = p->news[i],
                 *old = configured_named(gw, svc->conf->name);
    if (old == svc) {
      p->kept++;
      continue;
    }
    old ? p->changed++ : p->added++;
    commit_watch(gw, svc, old);
    if (svc->conf->protocol == ZG_PROTO_TCP)
      commit_tcp_listener(gw, svc, &p->tcp[i]);
  }
}

static const zg_service_conf_t *plan_named(const reload_plan_t *p,
                                           const char *name) {
  const zg_service_conf_t *nc = NULL;
  for (size_t k = 0; k < p->n_new; k++)
    if (!strcmp(p->news[k]->conf->name, name))
      nc = p->news[k]->conf;
  return nc;
}

/* Takes service i out of gw->services without a word: kept (the plan
 * holds it) or replaced by one that took its watch over. */
static void services_remove(zg_gateway_t *gw, size_t i) {
  zg_service_t *o = gw->services[i];
  memmove(&gw->services[i], &gw->services[i + 1],
          (gw->n_services - i - 1) * sizeof(*gw->services));
  gw->n_services--;
  zg_service_unref(o);
}

/* Old configured services leave gw->services (then it holds discovered
 * services only); those not kept go (their sessions finish on them); a
 * retargeted watch already belongs to the new one. */
static void commit_old_services(zg_gateway_t *gw, reload_plan_t *p) {
  for (size_t i = gw->n_services; i-- > 0;) {
    zg_service_t *o = gw->services[i];
    const zg_service_conf_t *nc;
    int keep = 0;
    if (o->discover)
      continue;
    for (size_t k = 0; k < p->n_new && !keep; k++)
      keep = p->news[k] == o;
    if (keep) {
      services_remove(gw, i); /* the plan holds it */
      continue;
    }
    if (!(nc = plan_named(p, o->conf->name)))
      p->removed++;
    if (nc && same_registry_path(nc, o->conf)) {
      tcp_listener_close(o); /* retargeted: nothing to unwatch */
      services_remove(gw, i);
      continue;
    }
    service_drop(gw, i,
                 nc ? "replaced by the new configuration"
                    : "not in the new configuration");
  }
}

/* Discover sections that changed or went stop being watched, with their
 * services; kept ones take their new section. */
static void commit_discovers(zg_gateway_t *gw, reload_plan_t *p) {
  for (size_t i = 0; i < p->cfg->n_discovers; i++)
    for (size_t k = 0; !p->disc_fresh[i] && k < gw->n_discovers; k++)
      if (gw->discovers[k] == p->discs[i]) {
        gw->discovers[k] = NULL;
        p->discs[i]->conf = &p->cfg->discovers[i];
      }
  for (size_t k = 0; k < gw->n_discovers; k++) {
    zg_discover_t *d = gw->discovers[k];
    if (!d)
      continue;
    zg_source_t *src = discover_source(gw, d->conf);
    if (src)
      zg_source_unwatch(src, d);
    if (gw->board) {
      char key[1024];
      discover_key(d, key, sizeof(key));
      zg_shared_forget_children(gw->sh, key);
    }
    for (size_t i = gw->n_services; i-- > 0;)
      if (gw->services[i]->discover == d)
        service_drop(gw, i, "its discover section changed");
    discover_free(d);
  }
  free(gw->discovers);
  gw->discovers = p->discs;
  gw->n_discovers = p->cfg->n_discovers;
  p->discs = NULL;
}

/* The new list: configured services first, then discovered ones that no
 * configured service claims now (the plan made room for them). */
static void commit_service_list(zg_gateway_t *gw, reload_plan_t *p) {
  zg_service_t **disc = gw->services;
  size_t n_disc = gw->n_services;
  gw->services = p->news;
  gw->n_services = p->n_new;
  gw->cap_services = p->cap_new;
  p->news = NULL;
  p->n_new = 0;
  for (size_t i = 0; i < n_disc; i++) {
    zg_service_t *svc = disc[i];
    if (service_claiming(gw, svc->conf) ||
        list_push(&gw->services, &gw->n_services, &gw->cap_services, svc)) {
      service_unwatch(gw, svc);
      zg_info("gateway",
              "service %s removed (a configured service claims "
              "it now)",
              svc->conf->name);
      zg_service_unref(svc);
    }
  }
  free(disc);
}

/* New handshakes get the new certificates; new connections to instances
 * get contexts made from the files as they are now (kept services too);
 * open ones keep theirs. */
static void commit_tls(zg_gateway_t *gw, reload_plan_t *p) {
  tls_install(gw, &p->tls);
  for (size_t i = 0; i < p->n_conf; i++) {
    zg_tls_client_unref(gw->services[i]->up_tls);
    gw->services[i]->up_tls = p->up_tls[i];
    p->up_tls[i] = NULL;
  }
  zg_service_ctx_tls_reset(&gw->svc_ctx);
}

/* New discover sections watch their roots; children a configured service
 * claimed until now become discovered services again when that section
 * is gone. */
static void commit_discovered(zg_gateway_t *gw, reload_plan_t *p) {
  for (size_t i = 0; i < gw->n_discovers; i++) {
    zg_discover_t *d = gw->discovers[i];
    zg_source_t *src = discover_source(gw, d->conf);
    if (p->disc_fresh[i] && src &&
        zg_source_watch_root(src, zg_discover_conf_root(d->conf), d) != 0)
      zg_error("gateway", "discover %s: out of memory", d->conf->name);
  }
  for (size_t i = 0; i < gw->n_discovers; i++) {
    zg_discover_t *d = gw->discovers[i];
    for (size_t k = 0; k < d->n_known; k++)
      if (!discovered_by(gw, d, d->known[k]))
        discovered_add(d, d->known[k]);
  }
}

/* HTTP and tls-passthrough listeners: addresses no longer used close,
 * the bound ones join, the tables take the new services; listeners whose
 * address stays are kept, so no client is refused. */
static void commit_listeners(zg_gateway_t *gw, reload_plan_t *p) {
  if (zg_http_sync(&gw->px, &p->http) != 0)
    zg_error("gateway", "reload: out of memory building routes");
  if (zg_sni_sync(&gw->px, &p->sni) != 0)
    zg_error("gateway", "reload: out of memory building sni tables");
}

static void commit_operations(zg_gateway_t *gw, reload_plan_t *p) {
  if (p->log_moves) {
    zg_access_log_close(gw->px.access_log);
    gw->px.access_log = p->log;
    p->log = NULL;
  }
  if (p->admin_moves) {
    admin_stop(gw);
    gw->admin = p->admin;
    p->admin = NULL;
  }
  if (!gw->worker) /* the caps are the process's: set once */
    conn_limits_apply(gw, gw->cfg);
}

/* Swaps the plan in. What is left to fail here is memory only: registry
 * watches, route tables (the old ones stay, as when discovery changes
 * them), discovered services added back, starting the registry (its
 * hosts were checked with the file); logged, the reload stands. */
static void reload_commit(zg_gateway_t *gw, reload_plan_t *p, char *summary,
                          size_t summary_len) {
  zg_config_t *old_cfg = gw->cfg;
  commit_services(gw, p);
  commit_old_services(gw, p);
  commit_discovers(gw, p);
  commit_service_list(gw, p);
  commit_tls(gw, p);
  gw->cfg = p->cfg;
  gw->px.cfg = gw->cfg;
  p->cfg = NULL;
  zg_log_set_level(gw->cfg->proxy.log_level);
  zg_log_set_json(gw->cfg->proxy.log_json);
  commit_discovered(gw, p);
  if (p->registry && registry_begin(gw, p->registry) != 0)
    zg_error("gateway", "reload: cannot start the registry");
  p->registry = NULL;
  if (p->etcd && etcd_begin(gw, p->etcd) != 0)
    zg_error("gateway", "reload: cannot start the etcd source");
  p->etcd = NULL;
  commit_listeners(gw, p);
  commit_operations(gw, p);
  if (old_cfg != gw->zk_cfg)
    zg_config_free(old_cfg);
  snprintf(summary, summary_len,
           "reloaded: %u service(s) added, %u changed, %u removed, %u kept",
           p->added, p->changed, p->removed, p->kept);
}

/* Applies `cfg` (owned from then on, freed when rejected). The control
 * loop builds certificates and opens the access log itself; another
 * worker gets them from it: `given_tls` (emptied) and `given_log` (a
 * reference of its own, or NULL for none). 0, or -1 when rejected
 * (logged; the running configuration stays). */
static int reload_apply(zg_gateway_t *gw, zg_config_t *cfg,
                        tls_set_t *given_tls, zg_access_log_t *given_log,
                        char *summary, size_t summary_len) {
  reload_plan_t plan;
  int rc;
  memset(&plan, 0, sizeof(plan));
  plan.cfg = cfg;
  plan.n_conf = cfg->n_services;
  if ((rc = reload_prepare(gw, &plan, given_tls, given_log)) == 0)
    reload_commit(gw, &plan, summary, summary_len);
  reload_discard(gw, &plan);
  return rc;
}

static void peers_reload(zg_gateway_t *gw);

/* SIGHUP on the control loop: read, check, apply; then the other workers
 * apply the same text. */
static void reload(zg_gateway_t *gw) {
  zg_config_t *cfg = NULL;
  zg_config_errors_t errs;
  const char *why;
  char summary[160];
  int rc;

  zg_info("gateway", "SIGHUP: reloading %s", gw->cfg->path);
  rc = zg_config_load(gw->cfg->path, zg_tls_config_checks(), &cfg, &errs);
  if (rc != 0) {
    size_t n = errs.n;
    char first[128];
    snprintf(first, sizeof(first), "%s", n ? errs.lines[0] : "");
    for (size_t i = 0; i < errs.n; i++)
      zg_error("config", "%s", errs.lines[i]);
    zg_config_errors_free(&errs);
    zg_error("gateway",
             "reload rejected: %zu error(s); the running "
             "configuration stays",
             n);
    snprintf(summary, sizeof(summary), "%zu error(s)%s%.100s", n,
             n ? ", the first: " : "", first);
    zg_feed_reload(gw->feed, 0, summary);
    gw->reloads_failed++;
    return;
  }
  zg_config_errors_free(&errs);
  if ((why = fixed_part_changed(gw, cfg)) != NULL) {
    zg_error("gateway", "reload rejected: %s; the running configuration stays",
             why);
    zg_feed_reload(gw->feed, 0, why);
    zg_config_free(cfg);
    gw->reloads_failed++;
    return;
  }
  if (reload_apply(gw, cfg, NULL, NULL, summary, sizeof(summary)) != 0) {
    zg_feed_reload(gw->feed, 0,
                   "a listener, certificate or log could not "
                   "be opened (see the log)");
    gw->reloads_failed++;
    return;
  }
  zg_feed_reload(gw->feed, 1, summary);
  gw->reloads_ok++;
  /* Told once every worker has it: from then on no worker serves the old
   * configuration (a removed address refuses everywhere). */
  peers_reload(gw);
  zg_info("gateway", "%s", summary);
}

/* ---- workers -----------------------------------------------------------
 * [proxy] workers = N: the control loop is worker 0 and N-1 others run on
 * threads, each a gateway of its own (registry == NULL) with listeners
 * bound with SO_REUSEPORT, its own sessions, buffers and upstream
 * connections. What they take from the control loop comes under the
 * shared lock: the configuration text (parsed by the control loop, as
 * inih is not thread-safe), the TLS servers (shared: one session cache and
 * one set of ticket keys for all), the access log, and flags: the board
 * changed, drain, stop. The request path takes no lock. */

typedef struct zg_worker {
  zg_gateway_t gw;
  uv_loop_t loop;
  uv_thread_t thread;
  uv_async_t wake;
  zg_shared_peer_t peer;
  unsigned id;
  /* handed over under the shared lock */
  int started, start_rc;
  tls_set_t start_tls;
  uint64_t reload_gen, reload_done; /* posted, applied (or rejected) */
  zg_config_t *reload_cfg; /* the latest reload not yet applied, with: */
  tls_set_t reload_tls;
  zg_access_log_t *reload_log;
  int posted; /* POST_* flags */
} zg_worker_t;

static int tls_set_copy(const zg_gateway_t *gw, tls_set_t *t) {
  memset(t, 0, sizeof(*t));
  if (gw->n_tls == 0)
    return 0;
  t->list = calloc(gw->n_tls, sizeof(*t->list));
  t->addrs = calloc(gw->n_tls, sizeof(*t->addrs));
  if (!t->list || !t->addrs) {
    tls_set_free(t);
    return UV_ENOMEM;
  }
  for (size_t i = 0; i < gw->n_tls; i++) {
    t->list[i] = zg_tls_server_ref(gw->tls[i]);
    t->addrs[i] = gw->tls_addrs[i];
  }
  t->n = gw->n_tls;
  return 0;
}

static void peers_post(zg_gateway_t *gw, int what) {
  if (gw->n_peers == 0)
    return;
  zg_shared_lock(gw->sh);
  for (size_t i = 0; i < gw->n_peers; i++) {
    zg_worker_t *w = gw->peers[i];
    w->posted |= what;
    if (w->peer.live)
      uv_async_send(&w->wake);
  }
  zg_shared_unlock(gw->sh);
}

/* Workers other than this one whose loops still answer. */
static size_t peers_live(zg_gateway_t *gw) {
  size_t n = 0;
  if (gw->n_peers == 0)
    return 0;
  zg_shared_lock(gw->sh);
  for (size_t i = 0; i < gw->n_peers; i++)
    n += gw->peers[i]->peer.live;
  zg_shared_unlock(gw->sh);
  return n;
}

static void peers_board_changed(zg_gateway_t *gw) {
  peers_post(gw, POST_BOARD);
}

/* After a reload of the control loop: the same text for every worker. */
static void peers_reload(zg_gateway_t *gw) {
  for (size_t i = 0; i < gw->n_peers; i++) {
    zg_worker_t *w = gw->peers[i];
    zg_config_t *cfg = NULL, *stale_cfg;
    zg_config_errors_t errs;
    tls_set_t tls, stale_tls;
    zg_access_log_t *stale_log;
    if (zg_config_load_string(gw->cfg->text, gw->cfg->path,
                              zg_tls_config_checks(), &cfg, &errs) != 0 ||
        tls_set_copy(gw, &tls) != 0) {
      zg_config_errors_free(&errs);
      zg_config_free(cfg);
      zg_error("gateway",
               "worker %u keeps its configuration: the new one could not be "
               "handed to it (out of memory)",
               w->id);
      continue;
    }
    zg_config_errors_free(&errs);
    zg_shared_lock(gw->sh);
    stale_cfg = w->reload_cfg;
    stale_tls = w->reload_tls;
    stale_log = w->reload_log;
    w->reload_cfg = cfg;
    w->reload_tls = tls;
    w->reload_log = zg_access_log_ref(gw->px.access_log);
    w->reload_gen++;
    if (w->peer.live)
      uv_async_send(&w->wake);
    zg_shared_unlock(gw->sh);
    /* One not applied yet is replaced: the latest is what counts. */
    zg_config_free(stale_cfg);
    tls_set_free(&stale_tls);
    zg_access_log_close(stale_log);
  }
  /* Wait for each (a worker that stops is not waited for). */
  zg_shared_lock(gw->sh);
  for (size_t i = 0; i < gw->n_peers; i++) {
    zg_worker_t *w = gw->peers[i];
    while (w->peer.live && w->reload_done < w->reload_gen)
      zg_shared_wait(gw->sh);
  }
  zg_shared_unlock(gw->sh);
}

typedef struct {
  zg_discover_t *d;
  char **names;
  size_t n;
  uint64_t seq;
} taken_list_t;

static int taken_cmp(const void *a, const void *b) {
  const taken_list_t *x = a, *y = b;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* A worker takes the board's pools and children lists that are new to it.
 * Lists go in the order the control loop applied them: when two sections
 * see the same child name, the one that listed it first has it in every
 * worker. */
static void board_take(zg_gateway_t *gw) {
  taken_list_t *lists = NULL;
  size_t n_lists = 0;
  if (gw->n_discovers > 0 && !(lists = calloc(gw->n_discovers, sizeof(*lists))))
    return; /* the next wake-up tries again */
  for (size_t i = 0; i < gw->n_discovers; i++) {
    zg_discover_t *d = gw->discovers[i];
    char key[1024];
    taken_list_t *t = &lists[n_lists];
    if (!d)
      continue;
    discover_key(d, key, sizeof(key));
    if (zg_shared_children(gw->sh, key, &d->board_seq, &t->names, &t->n)) {
      t->d = d;
      t->seq = d->board_seq;
      n_lists++;
    }
  }
  if (n_lists > 1)
    qsort(lists, n_lists, sizeof(*lists), taken_cmp);
  for (size_t i = 0; i < n_lists; i++)
    discover_apply(lists[i].d, lists[i].names, lists[i].n);
  free(lists);
  for (size_t i = 0; i < gw->n_services; i++) {
    zg_service_t *svc = gw->services[i];
    zg_pool_t *p;
    if (!zg_service_conf_path(svc->conf))
      continue;
    p = zg_shared_pool(gw->sh, svc->conf->name, zg_service_conf_path(svc->conf),
                       svc->conf->endpoint);
    if (p && p != svc->zk_pool) {
      zg_pool_unref(svc->zk_pool);
      svc->zk_pool = p;
    } else {
      zg_pool_unref(p);
    }
  }
}

static void on_wake_closed(uv_handle_t *h) {
  (void)h;
}

/* The worker's loop stops answering: no more wake-ups, no more pauses. */
static void worker_gone(zg_gateway_t *gw) {
  zg_worker_t *w = gw->worker;
  zg_shared_lock(gw->sh);
  zg_shared_peer_gone(gw->sh, &w->peer);
  zg_shared_unlock(gw->sh);
  if (w->peer.wake && !uv_is_closing((uv_handle_t *)&w->wake))
    uv_close((uv_handle_t *)&w->wake, on_wake_closed);
}

static void on_wake(uv_async_t *h) {
  zg_worker_t *w = h->data;
  zg_gateway_t *gw = &w->gw;
  zg_config_t *cfg;
  tls_set_t tls;
  zg_access_log_t *log;
  char summary[160];
  uint64_t gen;
  int posted;
  zg_shared_lock(gw->sh);
  zg_shared_pause_point(gw->sh, &w->peer);
  gen = w->reload_gen;
  cfg = w->reload_cfg;
  tls = w->reload_tls;
  log = w->reload_log;
  posted = w->posted;
  w->reload_cfg = NULL;
  memset(&w->reload_tls, 0, sizeof(w->reload_tls));
  w->reload_log = NULL;
  w->posted = 0;
  zg_shared_unlock(gw->sh);
  if (gw->px.stopping) {
    zg_config_free(cfg);
    tls_set_free(&tls);
    zg_access_log_close(log);
    return;
  }
  if (cfg && reload_apply(gw, cfg, &tls, log, summary, sizeof(summary)) == 0) {
    zg_info("gateway", "worker %u: %s", w->id, summary);
  } else if (cfg) {
    gw->reloads_failed++; /* zkgate_worker_reloads_rejected_total */
    zg_error("gateway",
             "worker %u: the reload was rejected (above): it "
             "keeps its configuration",
             w->id);
  }
  tls_set_free(&tls); /* what reload_apply did not take */
  if (cfg) {          /* the control loop waits for this */
    zg_shared_lock(gw->sh);
    w->reload_done = gen;
    zg_shared_wake_all(gw->sh);
    zg_shared_unlock(gw->sh);
  }
  if (cfg || (posted & POST_BOARD))
    board_take(gw);
  if (posted & POST_STOP)
    gateway_stop(gw, "stop");
  else if ((posted & POST_DRAIN) && !gw->px.draining)
    gateway_drain(gw, "drain");
}

/* The proxies' state of gw's loop, once its handles are closed. */
static void proxies_free(zg_gateway_t *gw) {
  zg_http_free(&gw->px);
  zg_sni_free(&gw->px);
  zg_tcp_free(&gw->px);
  zg_proxy_ctx_clear(&gw->px);
}

/* 0, or UV_ENOMEM: then proxies_free frees what was made. */
static int gateway_init(zg_gateway_t *gw, uv_loop_t *loop, zg_config_t *cfg,
                        zg_shared_t *sh) {
  uint64_t seed;
  memset(gw, 0, sizeof(*gw));
  gw->loop = loop;
  gw->cfg = cfg;
  gw->sh = sh;
  if (uv_random(NULL, NULL, &seed, sizeof(seed), 0, NULL) != 0)
    seed = uv_hrtime() ^ (uint64_t)(uintptr_t)gw;
  zg_rng_seed(&gw->svc_ctx.rng, seed);
  gw->svc_ctx.loop = loop;
  gw->svc_ctx.marks = zg_shared_marks(sh);
  gw->svc_ctx.cfg = &gw->cfg;
  zg_proxy_ctx_init(&gw->px, loop, cfg, &gw->svc_ctx, &gateway_hooks, gw);
  gw->px.limits = zg_shared_connlimit(sh);
  if (zg_tcp_init(&gw->px) != 0 || zg_sni_init(&gw->px) != 0 ||
      zg_http_init(&gw->px) != 0)
    return UV_ENOMEM;
  return 0;
}

static void walk_close(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, on_handle_closed);
}

/* After its loop ended: closes what is left, frees everything. */
static void gateway_free(zg_gateway_t *gw) {
  /* Anything still open (there should be nothing) is closed, so that the
   * loop can be closed and the sanitizers see no leak. */
  uv_walk(gw->loop, walk_close, NULL);
  uv_run(gw->loop, UV_RUN_DEFAULT);
  if (uv_loop_close(gw->loop) != 0)
    zg_warn("gateway", "event loop closed with handles still open");
  proxies_free(gw);
  for (size_t i = 0; i < gw->n_services; i++)
    zg_service_unref(gw->services[i]);
  for (size_t i = 0; i < gw->n_discovers; i++)
    if (gw->discovers[i])
      discover_free(gw->discovers[i]);
  free(gw->discovers);
  zg_access_log_close(gw->px.access_log);
  {
    tls_set_t t = {gw->tls, gw->tls_addrs, gw->n_tls};
    tls_set_free(&t);
  }
  zg_service_ctx_tls_reset(&gw->svc_ctx);
  free(gw->services);
  if (gw->zk_cfg != gw->cfg)
    zg_config_free(gw->zk_cfg);
  zg_config_free(gw->cfg);
  zg_etcd_conf_clear(&gw->etcd_conf);
}

static void worker_main(void *arg) {
  zg_worker_t *w = arg;
  zg_gateway_t *gw = &w->gw;
  int rc;
  zg_log_thread_quiet(1); /* the control loop tells what all do */
  int async_rc = uv_async_init(&w->loop, &w->wake, on_wake);
  w->wake.data = w;
  rc = async_rc;
  if (rc == 0)
    rc = services_start(gw, &w->start_tls);
  tls_set_free(&w->start_tls);
  zg_shared_lock(gw->sh);
  w->started = 1;
  w->start_rc = rc;
  w->peer.wake = async_rc == 0 ? &w->wake : NULL;
  w->peer.live = rc == 0;
  if (w->peer.live && w->posted) /* posted before it could be woken */
    uv_async_send(&w->wake);
  zg_shared_wake_all(gw->sh);
  zg_shared_unlock(gw->sh);
  if (rc == 0)
    board_take(gw);
  else
    gateway_stop(gw, "start failed");
  uv_run(&w->loop, UV_RUN_DEFAULT);
  gateway_free(gw);
}

/* Starts workers 1..N-1 (the control loop has started). 0, or an error
 * (logged) with those started stopped again. */
static int peers_start(zg_gateway_t *gw) {
  unsigned n = gw->cfg->proxy.workers;
  int rc = 0;
  if (n <= 1)
    return 0;
  if (!gw->cfg->text) {
    zg_error("gateway", "workers: the configuration text is not at hand");
    return ZG_ECONFIG;
  }
  if (!(gw->peers = calloc(n - 1, sizeof(*gw->peers))))
    return UV_ENOMEM;
  for (unsigned i = 1; i < n && rc == 0; i++) {
    zg_worker_t *w = calloc(1, sizeof(*w));
    zg_config_t *cfg = NULL;
    zg_config_errors_t errs;
    if (!w) {
      rc = UV_ENOMEM;
      break; /* those started are waited for, then stopped */
    }
    w->id = i;
    if ((rc = zg_config_load_string(gw->cfg->text, gw->cfg->path,
                                    zg_tls_config_checks(), &cfg, &errs)) !=
            0 ||
        (rc = uv_loop_init(&w->loop)) != 0) {
      zg_config_errors_free(&errs);
      zg_config_free(cfg);
      free(w);
      zg_error("gateway", "worker %u: cannot be set up: %s", i,
               uv_strerror(rc));
      break;
    }
    zg_config_errors_free(&errs);
    rc = gateway_init(&w->gw, &w->loop, cfg, gw->sh);
    w->gw.worker = w;
    w->gw.admin_ops = gw->admin_ops;
    w->gw.px.access_log = zg_access_log_ref(gw->px.access_log);
    if (rc != 0 || (rc = tls_set_copy(gw, &w->start_tls)) != 0 ||
        (rc = uv_thread_create(&w->thread, worker_main, w)) != 0) {
      zg_error("gateway", "worker %u: cannot start: %s", i, uv_strerror(rc));
      tls_set_free(&w->start_tls);
      zg_access_log_close(w->gw.px.access_log);
      proxies_free(&w->gw);
      zg_config_free(cfg);
      uv_loop_close(&w->loop);
      free(w);
      break;
    }
    gw->peers[gw->n_peers++] = w;
  }
  /* Each binds its listeners: wait for all to be listening (or failed). */
  zg_shared_lock(gw->sh);
  for (size_t i = 0; i < gw->n_peers; i++) {
    while (!gw->peers[i]->started)
      zg_shared_wait(gw->sh);
    if (gw->peers[i]->start_rc != 0 && rc == 0) {
      rc = gw->peers[i]->start_rc;
      zg_error("gateway", "worker %u could not start: %s", gw->peers[i]->id,
               uv_strerror(rc));
    }
  }
  zg_shared_unlock(gw->sh);
  return rc;
}

static void peers_join(zg_gateway_t *gw) {
  for (size_t i = 0; i < gw->n_peers; i++) {
    zg_worker_t *w = gw->peers[i];
    uv_thread_join(&w->thread);
    zg_config_free(w->reload_cfg);
    tls_set_free(&w->reload_tls);
    zg_access_log_close(w->reload_log);
    free(w);
  }
  free(gw->peers);
  gw->peers = NULL;
  gw->n_peers = 0;
}

size_t zg_gateway_isolate(zg_gateway_t *gw, zg_gateway_t **out) {
  zg_shared_peer_t *list[ZG_MAX_WORKERS];
  size_t n = 0;
  if (gw->n_peers == 0)
    return 0;
  for (size_t i = 0; i < gw->n_peers; i++)
    list[i] = &gw->peers[i]->peer;
  zg_shared_isolate(gw->sh, list, gw->n_peers);
  zg_shared_lock(gw->sh);
  for (size_t i = 0; i < gw->n_peers; i++)
    if (gw->peers[i]->peer.paused)
      out[n++] = &gw->peers[i]->gw;
  zg_shared_unlock(gw->sh);
  return n;
}

/* ---- connection caps ----------------------------------------------------
 * Global per process (connlimit.h), set by the control loop at start and
 * on reload. A connection over a cap is accepted and closed at once, as
 * nginx does past worker_connections, rather than left in the backlog as
 * HAProxy does past maxconn: the client learns at once and can go
 * elsewhere, the accept loop keeps draining the backlog, and a session is
 * never allocated for it. */

/* Descriptors the process needs besides the clients' and instances': per
 * worker its listeners, the loop's own (epoll, eventfd, signal pipe, a
 * few) and the empty splice pipes it keeps, plus ZooKeeper, admin and its
 * clients, logs, the state file. */
static uint64_t fd_reserve(const zg_config_t *cfg) {
  return 100 + (uint64_t)cfg->proxy.workers *
                   (cfg->n_services + cfg->n_discovers + 8 + 2 * ZG_PIPE_KEEP);
}

/* Raises the soft open-file limit to the hard one, as HAProxy does for
 * its maxconn: the soft default (often 1024, kept low for select(), which
 * zkgate does not use) would cap connections far below what the operator
 * allowed. Returns the soft limit in force, 0 when unknown. */
static uint64_t nofile_raise(void) {
  struct rlimit rl;

  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return 0;
  if (rl.rlim_cur < rl.rlim_max && rl.rlim_max != RLIM_INFINITY) {
    struct rlimit up = {rl.rlim_max, rl.rlim_max};

    if (setrlimit(RLIMIT_NOFILE, &up) == 0)
      rl.rlim_cur = rl.rlim_max;
  }
  return rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX / 4 : (uint64_t)rl.rlim_cur;
}

/* The caps: max_connections and max_pipes from the open-file limit when
 * auto (2 descriptors a connection, 2 a busy pipe, the reserve), and a
 * warning when the limit leaves too little room for them. */
static void conn_limits_apply(zg_gateway_t *gw, const zg_config_t *cfg) {
  uint64_t nofile = nofile_raise();
  uint64_t reserve = fd_reserve(cfg);
  uint64_t max_open = cfg->proxy.max_connections;
  uint64_t max_head = cfg->proxy.max_head_connections;
  uint64_t pipes = cfg->proxy.max_pipes == ZG_MAX_PIPES_AUTO
                       ? ZG_PIPES_AUTO
                       : cfg->proxy.max_pipes;

  if (max_open == 0 && nofile &&
      zg_connlimit_auto_floored(nofile, reserve, pipes))
    zg_warn("gateway",
            "the open-file limit (%llu) leaves little room beside what %zu "
            "services and %u workers hold%s: max_connections = auto is a "
            "quarter of it; raise the limit (LimitNOFILE=, ulimit -n) or set "
            "max_connections",
            (unsigned long long)nofile, cfg->n_services, cfg->proxy.workers,
            pipes == ZG_PIPES_AUTO ? "" : " and max_pipes");
  if (max_open == 0)
    max_open = nofile ? zg_connlimit_auto_open(nofile, reserve, pipes)
                      : 1024; /* no limit known: nginx's default */
  if (pipes == ZG_PIPES_AUTO)
    pipes = zg_connlimit_auto_pipes(max_open);
  if (cfg->proxy.max_connections && nofile &&
      2 * max_open + 2 * pipes + reserve > nofile)
    /* Set by hand past the limit: near the caps, accepts and connects
     * to instances may fail with EMFILE (pipes fall back to copying). */
    zg_warn("gateway",
            "max_connections %llu and max_pipes %llu may need %llu "
            "descriptors (the gateway's own %llu included), more than the "
            "open-file limit (%llu): near the caps, accepts and connects "
            "may fail",
            (unsigned long long)max_open, (unsigned long long)pipes,
            (unsigned long long)(2 * max_open + 2 * pipes + reserve),
            (unsigned long long)reserve, (unsigned long long)nofile);
  if (max_head == 0)
    max_head = zg_connlimit_auto_head(max_open);
  if (max_head > max_open) /* auto max_connections below a set head cap */
    max_head = max_open;
  zg_connlimit_set(zg_shared_connlimit(gw->sh), max_open, max_head);
  zg_connlimit_set_pipes(zg_shared_connlimit(gw->sh), pipes);
  zg_info("gateway",
          "client connections capped at %llu%s, %llu of them in their "
          "head%s, %llu busy splice pipes%s (open-file limit %llu)",
          (unsigned long long)max_open,
          cfg->proxy.max_connections ? "" : " (auto)",
          (unsigned long long)max_head,
          cfg->proxy.max_head_connections ? "" : " (auto)",
          (unsigned long long)pipes,
          cfg->proxy.max_pipes == ZG_MAX_PIPES_AUTO ? " (auto)" : "",
          (unsigned long long)nofile);
}

/* Admission of a new client connection on `server` (the listener named
 * `listener`, for the log) against [proxy] max_connections and, when
 * `in_head` (it has a request head or ClientHello to send first),
 * max_head_connections. 0: admitted, *t holds it (released when the
 * session ends). -1: refused, and already dropped: accepted and closed at
 * once, before any session is allocated; counted, logged rate-limited. */
static int gateway_admit(void *owner, uv_stream_t *server, bool in_head,
                         zg_conn_ticket_t *t, const char *listener) {
  zg_gateway_t *gw = owner;
  zg_connlimit_t *l = zg_shared_connlimit(gw->sh);
  zg_conn_admit_t rc = zg_connlimit_admit(l, in_head, t);
  uint64_t dropped;

  if (rc == ZG_CONN_ADMITTED)
    return 0;
  zg_listener_drop(server);
  if (zg_shared_log_allowed(gw->sh, &l->log_rl, &dropped))
    zg_warn("gateway",
            "listener %s: connection refused: %s reached (%llu refused so "
            "far%s)",
            listener,
            rc == ZG_CONN_REFUSED_OPEN ? "max_connections"
                                       : "max_head_connections",
            (unsigned long long)(__atomic_load_n(&l->refused_open,
                                                 __ATOMIC_RELAXED) +
                                 __atomic_load_n(&l->refused_head,
                                                 __ATOMIC_RELAXED)),
            dropped ? "; earlier lines not logged" : "");
  return -1;
}

/* zg_listener_start flags for gw's listeners: shared between workers when
 * there are several, checked for another listener by the control loop. */
static int gateway_listen_flags(void *owner) {
  const zg_gateway_t *gw = owner;
  if (gw->cfg->proxy.workers <= 1)
    return 0;
  return ZG_LISTEN_SHARED | (gw->worker ? 0 : ZG_LISTEN_PROBE);
}

unsigned zg_gateway_worker_id(const zg_gateway_t *gw) {
  return gw->worker ? gw->worker->id : 0;
}

void zg_gateway_stats(const zg_gateway_t *gw, zg_gateway_stats_t *st) {
  st->worker = zg_gateway_worker_id(gw);
  st->stopping = gw->px.stopping;
  st->draining = gw->px.draining;
  st->started_wall_ms = gw->started_wall_ms;
  st->reloads_ok = gw->reloads_ok;
  st->reloads_failed = gw->reloads_failed;
}

void zg_gateway_release(zg_gateway_t *gw) {
  if (gw->n_peers > 0)
    zg_shared_release(gw->sh);
}

/* The change feed's look at the registry (control/feed.h). */
static json_t *feed_probe(void *arg, int which, zg_source_stats_t *st) {
  zg_gateway_t *gw = arg;
  zg_source_t *src = which == ZG_FEED_ETCD ? gw->etcd : gw->registry;
  json_t *names;
  if (!src || !(names = json_array()))
    return NULL;
  zg_source_stats(src, st);
  for (size_t i = 0; i < gw->n_services; i++) {
    const zg_service_conf_t *c = gw->services[i]->conf;
    if (which == ZG_FEED_ETCD ? c->etcd_prefix != NULL : c->zk_path != NULL)
      json_array_append_new(names, json_string(c->name));
  }
  return names;
}

int zg_gateway_run(zg_config_t *cfg, const zg_gateway_admin_ops_t *admin) {
  zg_gateway_t gw;
  uv_loop_t loop;
  zg_shared_t *sh;
  int rc, exit_code = 0;
  static const int signums[4] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};

  /* A peer that closes while we write must not kill the process. */
  signal(SIGPIPE, SIG_IGN);
  if (!(sh = zg_shared_new())) {
    zg_error("gateway", "out of memory");
    zg_config_free(cfg);
    return 1;
  }
  if ((rc = uv_loop_init(&loop)) != 0) {
    zg_error("gateway", "cannot create the event loop: %s", uv_strerror(rc));
    zg_shared_free(sh);
    zg_config_free(cfg);
    return 1;
  }
  if (gateway_init(&gw, &loop, cfg, sh) != 0) {
    zg_error("gateway", "out of memory");
    proxies_free(&gw);
    uv_loop_close(&loop);
    zg_shared_free(sh);
    zg_config_free(cfg);
    return 1;
  }
  gw.admin_ops = admin;
  /* Before the registry starts: the state file's pools are events too. */
  if (!(gw.feed = zg_feed_new(&loop, zg_shared_marks(sh), feed_probe, &gw)))
    zg_warn("gateway", "no change feed (/events): out of memory");

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
      !(gw.px.access_log = zg_access_log_open(cfg->proxy.access_log,
                                              cfg->proxy.access_log_json)))
    rc = ZG_ECONFIG;
  if (rc == 0) {
    conn_limits_apply(&gw, cfg);
    rc = services_start(&gw, NULL);
  }
  /* The registry first: the state file's pools and children are on the
   * board before the other workers start, so that none of them accepts a
   * connection for a discovered service it does not know yet. */
  gw.board = cfg->proxy.workers > 1;
  if (rc == 0)
    rc = registry_start(&gw);
  if (rc == 0)
    rc = peers_start(&gw);
  if (rc == 0)
    rc = admin_start(&gw);
  if (rc != 0) {
    exit_code = 1;
    gateway_stop(&gw, "start failed");
  } else {
    zg_info("gateway", "zkgate %s started with %zu service%s%s", ZKGATE_VERSION,
            gw.n_services, gw.n_services == 1 ? "" : "s",
            gw.n_discovers ? " (and discovery: more to come)" : "");
    if (gw.n_peers)
      zg_info("gateway", "%zu workers, each listening on every address",
              gw.n_peers + 1);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  peers_join(&gw);
  gateway_free(&gw);
  zg_shared_free(sh);
  if (exit_code == 0)
    zg_info("gateway", "stopped");
  return exit_code;
}
