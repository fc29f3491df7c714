/* HTTP proxying: the listeners (one per address, shared by the HTTP
 * services on it, with their route tables) and the module's entry points
 * for the gateway. See http_proxy.h.
 *
 * What goes on a connection: the exchange (exchange.c: routing,
 * rewriting, connecting, retries, timeouts, metrics) between two codecs,
 * HTTP/1.1 on the client's side (h1_server.c) and on the instance's
 * (h1_client.c); exchange.h is what they share. */
#include "proxy/http_proxy.h"

#include "proxy/h1.h"
#include "proxy/h2.h"

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
  if (hl->refs > 0 || hl->l.handle_open)
    return;
  zg_route_table_free(hl->routes);
  targets_release(hl->targets, hl->n_targets);
  free(hl);
}

static void on_listener_closed(zg_listener_t *l) {
  listener_free_if_done(l->tcp.data);
}

void zg_http_listener_unref(zg_http_listener_t *hl) {
  if (--hl->refs == 0)
    listener_free_if_done(hl);
}

/* Closes and drops a listener (its sessions keep it until they end). */
static void listener_discard(zg_http_listener_t *hl) {
  zg_listener_close(&hl->l);
  zg_http_listener_unref(hl);
}

static zg_http_listener_t *listener_open(zg_proxy_ctx_t *gw,
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
  hl->refs = 1;
  rc = zg_listener_open(&hl->l, gw->loop, addr, zg_h1s_accept,
                        gw->hooks->listen_flags(gw->owner), hl,
                        on_listener_closed);
  if (rc != 0) {
    zg_error("gateway", "cannot listen on %s: %s", addr->text, uv_strerror(rc));
    listener_discard(hl);
    return NULL;
  }
  return hl;
}

static zg_http_listener_t *listener_at(const zg_proxy_ctx_t *gw, size_t i) {
  return gw->http->listeners.items[i]->tcp.data;
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
    if (sc->protocol != ZG_PROTO_HTTP ||
        !zg_config_same_sockaddr(&sc->listen, &hl->l.addr))
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
    n += s->h2 ? zg_h2s_instance_active(s, svc, key)
               : s->x.svc == svc && (s->x.up || s->x.ureq.c) &&
                     !strcmp(s->x.ureq.instance, key);
  }
  return n;
}

int zg_http_routes_update(zg_proxy_ctx_t *gw) {
  int rc = 0;
  for (size_t i = 0; i < gw->http->listeners.n; i++)
    if (listener_routes(gw, listener_at(gw, i)) != 0)
      rc = UV_ENOMEM;
  return rc;
}

static int addr_wanted(const zg_proxy_ctx_t *gw, const zg_listen_addr_t *addr) {
  size_t n_services;
  zg_service_t *const *services = gw->hooks->services(gw->owner, &n_services);
  for (size_t i = 0; i < n_services; i++)
    if (services[i]->conf->protocol == ZG_PROTO_HTTP &&
        zg_config_same_sockaddr(&services[i]->conf->listen, addr))
      return 1;
  for (size_t i = 0; i < gw->cfg->n_discovers; i++)
    if (zg_config_same_sockaddr(&gw->cfg->discovers[i].listen, addr))
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
    if (s->hl == hl && s->h2)
      zg_h2s_wind_down(s); /* GOAWAY: open streams finish */
    else if (s->hl == hl && zg_h1s_idle(s))
      zg_h1s_end(s, ZG_TERM_LISTENER_REMOVED);
  }
}

size_t zg_http_sessions_open(const zg_proxy_ctx_t *gw) {
  return zg_list_count(&gw->http->sessions);
}

/* The kind of listener this module keeps: what the reload steps of
 * net/listener.h (open the new addresses, sync, discard) ask of it. */
static size_t kind_n_addrs(const zg_config_t *cfg) {
  return cfg->n_services + cfg->n_discovers;
}

/* The services' HTTP addresses, then the [discover:] sections'. */
static const zg_listen_addr_t *kind_addr(const zg_config_t *cfg, size_t i) {
  if (i >= cfg->n_services)
    return &cfg->discovers[i - cfg->n_services].listen;
  return cfg->services[i].protocol == ZG_PROTO_HTTP ? &cfg->services[i].listen
                                                    : NULL;
}

static zg_listener_t *kind_open(void *ctx, const zg_listen_addr_t *addr) {
  zg_http_listener_t *hl = listener_open(ctx, addr);
  return hl ? &hl->l : NULL;
}

static void kind_discard(void *ctx, zg_listener_t *l) {
  (void)ctx;
  listener_discard(l->tcp.data);
}

static int kind_wanted(void *ctx, const zg_listen_addr_t *addr) {
  return addr_wanted(ctx, addr);
}

static void kind_retire(void *ctx, zg_listener_t *l) {
  retire(ctx, l->tcp.data);
}

static const zg_listener_kind_t http_kind = {
    "http",       kind_n_addrs, kind_addr,  kind_open,
    kind_discard, kind_wanted,  kind_retire};

void zg_http_opened_discard(zg_proxy_ctx_t *gw, zg_listener_set_t *opened) {
  zg_listener_set_discard(opened, &http_kind, gw);
}

int zg_http_addrs_to_open(zg_proxy_ctx_t *gw, const zg_config_t *cfg,
                          zg_listener_set_t *out) {
  return zg_listener_set_open_new(&gw->http->listeners, &http_kind, gw, cfg,
                                  out);
}

int zg_http_sync(zg_proxy_ctx_t *gw, zg_listener_set_t *opened) {
  int rc;
  if (!gw->http->started) {
    zg_bufpool_init(&gw->http->wblks, sizeof(wblk_t), MAX_FREE_WBLKS);
    zg_bufpool_init(&gw->http->spool, sizeof(zg_http_session_t),
                    MAX_FREE_SESSIONS);
    zg_bufpool_init(&gw->http->heads, sizeof(zg_http_head_t),
                    MAX_FREE_SESSIONS);
    zg_upidle_start(&gw->http->up_idle, gw->loop, &gw->cfg, MAX_IDLE_UPSTREAM);
    gw->http->started = 1;
  }
  rc = zg_listener_set_sync(&gw->http->listeners, &http_kind, gw, opened);
  if (zg_http_routes_update(gw) != 0)
    rc = UV_ENOMEM;
  return rc;
}

int zg_http_start(zg_proxy_ctx_t *gw) {
  const zg_config_t *cfg = gw->cfg;
  zg_listener_set_t opened;
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
  if ((rc = zg_http_addrs_to_open(gw, cfg, &opened)) != 0)
    return rc;
  return zg_http_sync(gw, &opened);
}

void zg_http_drain(zg_proxy_ctx_t *gw) {
  for (size_t i = 0; i < gw->http->listeners.n; i++)
    zg_listener_close(gw->http->listeners.items[i]);
  ZG_LIST_FOREACH_SAFE(it, &gw->http->sessions) {
    zg_http_session_t *s = ZG_LIST_ITEM(it, zg_http_session_t, link);
    if (s->h2)
      zg_h2s_wind_down(s); /* GOAWAY: open streams finish */
    else if (zg_h1s_idle(s))
      zg_h1s_end(s, ZG_TERM_IDLE_AT_DRAIN);
  }
  zg_upidle_close_all(&gw->http->up_idle);
}

void zg_http_stop(zg_proxy_ctx_t *gw) {
  for (size_t i = 0; i < gw->http->listeners.n; i++)
    zg_listener_close(gw->http->listeners.items[i]);
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
  return gw->http->listeners.n;
}

void zg_http_listener_stats(const zg_proxy_ctx_t *gw, size_t i,
                            zg_listener_stats_t *st) {
  const zg_http_listener_t *hl = listener_at(gw, i);
  memset(st, 0, sizeof(*st));
  st->addr = hl->l.addr.text;
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
  for (size_t i = 0; i < gw->http->listeners.n; i++)
    zg_http_listener_unref(listener_at(gw, i));
  zg_listener_set_clear(&gw->http->listeners);
  free(gw->http);
  gw->http = NULL;
}
