/* HTTP proxying: the listeners (one per address, shared by the HTTP
 * services on it, with their route tables) and the module's entry points
 * for the gateway. See http_proxy.h.
 *
 * What goes on a connection: the exchange (exchange.c: routing,
 * rewriting, connecting, retries, timeouts, metrics) between two codecs,
 * HTTP/1.1 on the client's side (h1_server.c) and on the instance's
 * (h1_client.c); exchange.h is what they share. */
#include "proxy/http_proxy.h"

#include "proxy/exchange.h"

#include "core/log.h"
#include "net/listener.h"
#include "upstream/service.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define MAX_IDLE_UPSTREAM 1024
#define MAX_FREE_WBLKS 256
#define MAX_FREE_SESSIONS 256

static void settings_init(void) {
  zg_h1s_settings_init();
  zg_h1c_settings_init();
}

static int same_addr(const zg_listen_addr_t *a, const zg_listen_addr_t *b) {
  return strcmp(a->text, b->text) == 0 ||
         (a->ss.ss_family == b->ss.ss_family &&
          memcmp(&a->ss, &b->ss,
                 a->ss.ss_family == AF_INET
                     ? sizeof(struct sockaddr_in)
                     : sizeof(struct sockaddr_in6)) == 0);
}

/* ---- listeners -----------------------------------------------------------
 * One per address, shared by the HTTP services (configured and discovered)
 * on it. Reference-counted: the gateway holds one while the address is in
 * use, each session one, so that a listener dropped by a reload keeps its
 * routes (and their services) for the connections it already has. */

static void targets_release(zg_http_target_t *t, size_t n) {
  for (size_t i = 0; i < n; i++)
    zg_service_unref(t[i].svc);
  free(t);
}

static void listener_free_if_done(zg_http_listener_t *hl) {
  if (hl->refs > 0 || hl->handle_open)
    return;
  zg_route_table_free(hl->routes);
  targets_release(hl->targets, hl->n_targets);
  free(hl);
}

static void on_listener_closed(uv_handle_t *h) {
  zg_http_listener_t *hl = h->data;
  hl->handle_open = 0;
  listener_free_if_done(hl);
}

void zg_http_listener_unref(zg_http_listener_t *hl) {
  if (--hl->refs == 0)
    listener_free_if_done(hl);
}

static void listener_close(zg_http_listener_t *hl) {
  if (hl->listening) {
    hl->listening = 0;
    uv_close((uv_handle_t *)&hl->tcp, on_listener_closed);
  }
}

static zg_http_listener_t *zg_http_listener_open(zg_proxy_ctx_t *gw,
                                                 const zg_listen_addr_t *addr) {
  zg_http_listener_t *hl = calloc(1, sizeof(*hl));
  int rc;
  if (!hl)
    return NULL;
  {
    static uv_once_t once = UV_ONCE_INIT; /* workers start on threads */
    uv_once(&once, settings_init);
  }
  hl->gw = gw;
  hl->addr = *addr;
  hl->refs = 1;
  rc = zg_listener_start(gw->loop, &hl->tcp, &hl->addr, zg_h1s_accept,
                         gw->hooks->listen_flags(gw->owner));
  hl->tcp.data = hl;
  hl->handle_open = 1;
  hl->listening = 1;
  if (rc != 0) {
    zg_error("gateway", "cannot listen on %s: %s", addr->text, uv_strerror(rc));
    listener_close(hl);
    zg_http_listener_unref(hl);
    return NULL;
  }
  return hl;
}

void zg_http_listener_discard(zg_http_listener_t *hl) {
  listener_close(hl);
  zg_http_listener_unref(hl);
}

static zg_http_listener_t *listener_find(zg_proxy_ctx_t *gw,
                                         const zg_listen_addr_t *addr) {
  for (size_t k = 0; k < gw->http->n_listeners; k++)
    if (same_addr(&gw->http->listeners[k]->addr, addr))
      return gw->http->listeners[k];
  return NULL;
}

static int listener_add(zg_proxy_ctx_t *gw, zg_http_listener_t *hl) {
  if (gw->http->n_listeners == gw->http->cap_listeners) {
    size_t cap = gw->http->cap_listeners ? gw->http->cap_listeners * 2 : 4;
    zg_http_listener_t **n = realloc(gw->http->listeners, cap * sizeof(*n));
    if (!n)
      return UV_ENOMEM;
    gw->http->listeners = n;
    gw->http->cap_listeners = cap;
  }
  gw->http->listeners[gw->http->n_listeners++] = hl;
  return 0;
}

/* The routes of one listener: every HTTP service on its address, the
 * configured ones first so that they win a tie with a discovered one. */
static int listener_routes(zg_proxy_ctx_t *gw, zg_http_listener_t *hl) {
  size_t cap = 0, n = 0;
  zg_route_t *routes;
  zg_http_target_t *targets;
  zg_route_table_t *table;
  size_t n_services;
  zg_service_t *const *services = gw->hooks->services(gw->owner, &n_services);
  for (size_t i = 0; i < n_services; i++)
    cap += services[i]->conf->protocol == ZG_PROTO_HTTP ? 2 : 0;
  routes = calloc(cap ? cap : 1, sizeof(*routes));
  targets = calloc(cap ? cap : 1, sizeof(*targets));
  if (!routes || !targets) {
    free(routes);
    free(targets);
    return UV_ENOMEM;
  }
  for (size_t i = 0; i < n_services; i++) {
    zg_service_t *svc = services[i];
    const zg_service_conf_t *sc = svc->conf;
    if (sc->protocol != ZG_PROTO_HTTP || !same_addr(&sc->listen, &hl->addr))
      continue;
    if (!svc->discover) {
      routes[n] = (zg_route_t){sc->host, sc->path_prefix, n, 0};
      targets[n++] = (zg_http_target_t){zg_service_ref(svc), sc->strip_prefix};
      continue;
    }
    /* Discovered: /NAME/ stripped on any host, and the virtual host
     * NAME.DOMAIN whole (configured routes of that exact host still
     * apply). */
    routes[n] = (zg_route_t){NULL, sc->path_prefix, n, 0};
    targets[n++] = (zg_http_target_t){zg_service_ref(svc), 1};
    if (sc->host) {
      routes[n] = (zg_route_t){sc->host, "/", n, 1};
      targets[n++] = (zg_http_target_t){zg_service_ref(svc), 0};
    }
  }
  table = zg_route_table_new(routes, n);
  free(routes);
  if (!table) {
    targets_release(targets, n);
    return UV_ENOMEM;
  }
  /* Lookups are synchronous: nothing holds the old table past this. */
  zg_route_table_free(hl->routes);
  targets_release(hl->targets, hl->n_targets);
  hl->routes = table;
  hl->targets = targets;
  hl->n_targets = n;
  return 0;
}

size_t zg_http_instance_active(zg_proxy_ctx_t *gw, const zg_service_t *svc,
                               const char *key) {
  size_t n = 0;
  ZG_LIST_FOREACH(it, &gw->http->sessions) {
    const zg_http_session_t *s = ZG_LIST_ITEM(it, zg_http_session_t, link);
    n += s->x.svc == svc && (s->x.up || s->x.ureq.c) &&
         !strcmp(s->x.ureq.instance, key);
  }
  return n;
}

int zg_http_routes_update(zg_proxy_ctx_t *gw) {
  int rc = 0;
  for (size_t i = 0; i < gw->http->n_listeners; i++)
    if (listener_routes(gw, gw->http->listeners[i]) != 0)
      rc = UV_ENOMEM;
  return rc;
}

static int addr_wanted(const zg_proxy_ctx_t *gw, const zg_listen_addr_t *addr) {
  size_t n_services;
  zg_service_t *const *services = gw->hooks->services(gw->owner, &n_services);
  for (size_t i = 0; i < n_services; i++)
    if (services[i]->conf->protocol == ZG_PROTO_HTTP &&
        same_addr(&services[i]->conf->listen, addr))
      return 1;
  for (size_t i = 0; i < gw->cfg->n_discovers; i++)
    if (same_addr(&gw->cfg->discovers[i].listen, addr))
      return 1;
  return 0;
}

/* A listener a reload removes: its keep-alive connections take no new
 * request (the routes they would use are gone with it); idle ones close
 * now, busy ones after their response (Connection: close). */
static void retire(zg_proxy_ctx_t *gw, zg_http_listener_t *hl) {
  hl->retired = 1;
  ZG_LIST_FOREACH_SAFE(it, &gw->http->sessions) {
    zg_http_session_t *s = ZG_LIST_ITEM(it, zg_http_session_t, link);
    if (s->hl == hl && zg_h1s_idle(s))
      zg_h1s_end(s, ZG_TERM_LISTENER_REMOVED);
  }
}

size_t zg_http_sessions_open(const zg_proxy_ctx_t *gw) {
  return zg_list_count(&gw->http->sessions);
}

int zg_http_sync(zg_proxy_ctx_t *gw, zg_http_listener_t **opened, size_t n) {
  size_t kept = 0;
  int rc = 0;
  if (!gw->http->started) {
    zg_bufpool_init(&gw->http->wblks, sizeof(wblk_t), MAX_FREE_WBLKS);
    zg_bufpool_init(&gw->http->spool, sizeof(zg_http_session_t),
                    MAX_FREE_SESSIONS);
    zg_bufpool_init(&gw->http->heads, sizeof(zg_http_head_t),
                    MAX_FREE_SESSIONS);
    zg_upidle_start(&gw->http->up_idle, gw->loop, &gw->cfg, MAX_IDLE_UPSTREAM);
    gw->http->started = 1;
  }
  /* Addresses no longer in use close; their connections go on. */
  for (size_t i = 0; i < gw->http->n_listeners; i++) {
    zg_http_listener_t *hl = gw->http->listeners[i];
    if (addr_wanted(gw, &hl->addr)) {
      gw->http->listeners[kept++] = hl;
      continue;
    }
    zg_info("gateway", "no longer listening on %s (http)", hl->addr.text);
    retire(gw, hl);
    zg_http_listener_discard(hl);
  }
  gw->http->n_listeners = kept;
  for (size_t i = 0; i < n; i++) {
    if (opened[i] && listener_add(gw, opened[i]) != 0) {
      zg_http_listener_discard(opened[i]);
      rc = UV_ENOMEM;
    }
  }
  if (zg_http_routes_update(gw) != 0)
    rc = UV_ENOMEM;
  return rc;
}

int zg_http_addrs_to_open(zg_proxy_ctx_t *gw, const zg_config_t *cfg,
                          zg_http_listener_t ***out, size_t *n_out) {
  zg_http_listener_t **list;
  size_t n = 0, cap = cfg->n_services + cfg->n_discovers;
  *out = NULL;
  *n_out = 0;
  if (cap == 0)
    return 0;
  if (!(list = calloc(cap, sizeof(*list))))
    return UV_ENOMEM;
  for (size_t i = 0; i < cap; i++) {
    const zg_listen_addr_t *addr;
    int dup = 0;
    if (i < cfg->n_services) {
      if (cfg->services[i].protocol != ZG_PROTO_HTTP)
        continue;
      addr = &cfg->services[i].listen;
    } else {
      addr = &cfg->discovers[i - cfg->n_services].listen;
    }
    if (listener_find(gw, addr))
      continue;
    for (size_t k = 0; k < n; k++)
      dup |= same_addr(&list[k]->addr, addr);
    if (dup)
      continue;
    if (!(list[n] = zg_http_listener_open(gw, addr))) {
      for (size_t k = 0; k < n; k++)
        zg_http_listener_discard(list[k]);
      free(list);
      return UV_EADDRINUSE;
    }
    n++;
  }
  *out = list;
  *n_out = n;
  return 0;
}

int zg_http_start(zg_proxy_ctx_t *gw) {
  const zg_config_t *cfg = gw->cfg;
  zg_http_listener_t **opened;
  size_t n;
  int rc;
  for (size_t i = 0; i < cfg->n_services; i++) {
    const zg_service_conf_t *sc = &cfg->services[i];
    if (sc->protocol == ZG_PROTO_HTTP)
      zg_info("gateway", "service %s: http on %s, host %s, path prefix %s%s",
              sc->name, sc->listen.text, sc->host ? sc->host : "*",
              sc->path_prefix, sc->strip_prefix ? " (stripped)" : "");
  }
  for (size_t i = 0; i < cfg->n_discovers; i++) {
    const zg_discover_conf_t *d = &cfg->discovers[i];
    zg_info("gateway",
            "discover %s: every child of %s is a service on %s (http), path "
            "prefix /CHILD/ (stripped)%s%s",
            d->name, d->zk_root, d->listen.text,
            d->domain ? ", host CHILD." : "", d->domain ? d->domain : "");
  }
  if ((rc = zg_http_addrs_to_open(gw, cfg, &opened, &n)) != 0)
    return rc;
  rc = zg_http_sync(gw, opened, n);
  free(opened);
  return rc;
}

void zg_http_drain(zg_proxy_ctx_t *gw) {
  for (size_t i = 0; i < gw->http->n_listeners; i++)
    listener_close(gw->http->listeners[i]);
  ZG_LIST_FOREACH_SAFE(it, &gw->http->sessions) {
    zg_http_session_t *s = ZG_LIST_ITEM(it, zg_http_session_t, link);
    if (zg_h1s_idle(s))
      zg_h1s_end(s, ZG_TERM_IDLE_AT_DRAIN);
  }
  zg_upidle_close_all(&gw->http->up_idle);
}

void zg_http_stop(zg_proxy_ctx_t *gw) {
  for (size_t i = 0; i < gw->http->n_listeners; i++)
    listener_close(gw->http->listeners[i]);
  while (!zg_list_empty(&gw->http->sessions))
    zg_h1s_end(ZG_LIST_ITEM(gw->http->sessions.first, zg_http_session_t, link),
               ZG_TERM_GATEWAY_STOPPING);
  zg_upidle_stop(&gw->http->up_idle);
}

int zg_http_init(zg_proxy_ctx_t *gw) {
  gw->http = calloc(1, sizeof(*gw->http));
  return gw->http ? 0 : UV_ENOMEM;
}

size_t zg_http_listener_count(const zg_proxy_ctx_t *gw) {
  return gw->http->n_listeners;
}

void zg_http_listener_stats(const zg_proxy_ctx_t *gw, size_t i,
                            zg_listener_stats_t *st) {
  const zg_http_listener_t *hl = gw->http->listeners[i];
  memset(st, 0, sizeof(*st));
  st->addr = hl->addr.text;
  st->accepted = hl->accepted;
  st->active = hl->active;
}

const zg_traffic_t *zg_http_unrouted(const zg_proxy_ctx_t *gw) {
  return &gw->http->unrouted;
}

void zg_http_free(zg_proxy_ctx_t *gw) {
  if (!gw->http)
    return;
  zg_bufpool_clear(&gw->http->wblks);
  zg_bufpool_clear(&gw->http->spool);
  zg_bufpool_clear(&gw->http->heads);
  for (size_t i = 0; i < gw->http->n_listeners; i++)
    zg_http_listener_unref(gw->http->listeners[i]);
  free(gw->http->listeners);
  free(gw->http);
  gw->http = NULL;
}
