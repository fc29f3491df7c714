/* Connecting to instances: pick, resolve, connect, TLS, retry, passive
 * health. See upstream.h. */
#include "upstream/upstream.h"

#include "core/log.h"
#include "net/resolve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void attempt(zg_upstream_req_t *r);

/* Instance names are resolved on threads of our own, at most 4 lookups at
 * once in the process (every worker's loop shares them), the rest waiting
 * in order: not on libuv's pool, which cannot cancel a running
 * getaddrinfo(), keeps the loop (and so SIGTERM) waiting for it, and whose
 * four threads also write the state file (net/resolve.h). A lookup counts
 * against connect_timeout like the connect itself; a connection closed
 * before the answer (timeout, client gone, shutdown) lets go of it. */
static zg_resolver_t instance_resolver = ZG_RESOLVER_INIT(4);

/* ---- a connection's memory and handles ------------------------------- */

static void conn_free_if_done(zg_upconn_t *c) {
  if (c->handles > 0)
    return;
  if (c->on_closed)
    c->on_closed(c);
  free((char *)c - c->off);
}

static void on_tcp_closed(uv_handle_t *h) {
  zg_upconn_t *c = (zg_upconn_t *)((char *)h - offsetof(zg_upconn_t, tcp));
  c->handles--;
  conn_free_if_done(c);
}

static void on_timer_closed(uv_handle_t *h) {
  zg_upconn_t *c = h->data;
  c->handles--;
  conn_free_if_done(c);
}

static void idle_unlink(zg_upconn_t *c) {
  zg_upidle_t *p = c->idle_in;
  if (!p)
    return;
  zg_link_remove(&c->link);
  c->idle_in = NULL;
  p->n--;
}

void zg_upconn_close(zg_upconn_t *c) {
  if (c->closing)
    return;
  c->closing = 1;
  c->req = NULL;
  idle_unlink(c);
  zg_resolve_cancel(c->lookup); /* its answer, if one comes, is dropped */
  c->lookup = NULL;
  zg_tls_conn_free(c->tls); /* gives tcp.data back */
  c->tls = NULL;
  uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
  uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

/* A new connection for `r`, its handles initialised; NULL when out of
 * memory. */
static zg_upconn_t *conn_new(zg_upstream_req_t *r) {
  uv_loop_t *loop = r->svc->ctx->loop;
  size_t size = r->conn_size ? r->conn_size : sizeof(zg_upconn_t);
  char *block = calloc(1, size);
  zg_upconn_t *c;
  if (!block)
    return NULL;
  c = (zg_upconn_t *)(block + r->conn_off);
  c->off = r->conn_off;
  c->req = r;
  uv_tcp_init(loop, &c->tcp);
  uv_timer_init(loop, &c->timer);
  c->handles = 2;
  /* Set before TLS attaches: it hands this value back around its
   * callbacks (tls.h). */
  c->tcp.data = r->conn_size ? (void *)block : r->data;
  c->timer.data = c;
  c->creq.data = c;
  return c;
}

/* ---- the outcome ----------------------------------------------------- */

static void finish(zg_upstream_req_t *r, zg_upconn_t *c,
                   zg_upstream_err_t err) {
  r->c = NULL;
  if (c) {
    uv_timer_stop(&c->timer);
    c->req = NULL;
  }
  r->cb(r, c, err);
}

/* The instance of `c` could not be had: counted, marked for passive
 * health, logged (rate-limited), and another one tried. */
static void failed(zg_upconn_t *c, const char *why) {
  zg_upstream_req_t *r = c->req;
  zg_service_t *svc = r->svc;
  uint64_t dropped;
  svc->connect_failures++;
  if (zg_service_mark_failed(svc->ctx, c->key))
    svc->traffic.ejections++;
  if (zg_service_log_connect_fail(svc, &dropped))
    zg_warn(r->tag, "service %s: cannot connect to instance %s: %s%s",
            svc->conf->name, c->key, why,
            dropped ? " (and earlier failures not logged)" : "");
  r->c = NULL;
  zg_upconn_close(c);
  attempt(r);
}

/* ---- TLS ------------------------------------------------------------- */

static void on_handshake(zg_tls_conn_t *t, int status, void *arg) {
  zg_upconn_t *c = arg;
  zg_upstream_req_t *r = c->req;
  char why[256];
  if (c->closing || !r)
    return;
  if (status < 0) {
    r->svc->up_tls_failures++;
    snprintf(why, sizeof(why), "TLS handshake failed: %s",
             zg_tls_conn_error(t));
    failed(c, why);
    return;
  }
  r->svc->up_tls_handshakes++;
  if (r->alpn_http && c->want_h2 == -1 && zg_tls_conn_h2(t))
    c->h2 = 1; /* the instance chose h2 among what we offered */
  if (zg_tls_conn_resumed(t))
    r->svc->up_tls_resumed++;
  finish(r, c, ZG_UP_OK);
}

/* TLS over the connection just made, to the instance last picked; the
 * connect timeout runs on. */
static void tls_start(zg_upconn_t *c) {
  zg_upstream_req_t *r = c->req;
  const zg_instance_t *inst = &r->pool->inst[r->tried[r->ntried - 1]];
  const char *sni = r->svc->conf->upstream_sni;
  zg_tls_client_t *cli = zg_service_tls_client(r->svc);
  char why[256];
  int alpn = !r->alpn_http      ? ZG_ALPN_NONE
             : c->want_h2 == 1  ? ZG_ALPN_H2
             : c->want_h2 == -1 ? ZG_ALPN_H2_HTTP1
                                : ZG_ALPN_HTTP1;
  if (!cli ||
      !(c->tls = zg_tls_conn_client(cli, &c->tcp, sni ? sni : inst->host,
                                    !sni && inst->is_ip, c->key, alpn))) {
    failed(c, "TLS: out of memory or no TLS context");
    return;
  }
  if (zg_tls_handshake(c->tls, on_handshake, c) != 0) {
    r->svc->up_tls_failures++;
    snprintf(why, sizeof(why), "TLS handshake failed: %s",
             zg_tls_conn_error(c->tls));
    failed(c, why);
  }
}

/* ---- connecting ------------------------------------------------------ */

static void on_connect(uv_connect_t *req, int status) {
  zg_upconn_t *c = req->data;
  if (status == UV_ECANCELED || c->closing || !c->req)
    return; /* closed under it */
  if (status < 0) {
    failed(c, uv_strerror(status));
    return;
  }
  c->connected = 1;
  uv_tcp_nodelay(&c->tcp, 1);
  if (c->want_tls) {
    tls_start(c);
    return;
  }
  finish(c->req, c, ZG_UP_OK);
}

static void on_timeout(uv_timer_t *t) {
  zg_upconn_t *c = t->data;
  if (c->closing || !c->req)
    return;
  if (!c->connected) {
    /* A lookup still out is cancelled by the close. */
    failed(c, "connect timeout");
  } else if (c->tls && !zg_tls_established(c->tls)) {
    zg_tls_handshake_timed_out(c->tls);
    c->req->svc->up_tls_failures++;
    failed(c, "TLS handshake timeout");
  }
}

static void connect_to(zg_upconn_t *c, const struct sockaddr *sa) {
  int rc = uv_tcp_connect(&c->creq, &c->tcp, sa, on_connect);
  if (rc < 0)
    failed(c, uv_strerror(rc));
}

/* Never called for a closed connection: its close cancelled the lookup. */
static void on_resolved(void *data, int status, struct addrinfo *res) {
  zg_upconn_t *c = data;
  c->lookup = NULL;
  if (status < 0 || !res) {
    if (res)
      freeaddrinfo(res);
    failed(c, status < 0 ? uv_strerror(status) : "no address");
    return;
  }
  connect_to(c, res->ai_addr);
  freeaddrinfo(res);
}

/* r->instance: pool instance i's "host:port", built with the pool (no
 * formatting per request). */
static void set_instance(zg_upstream_req_t *r, size_t i, uint16_t port) {
  size_t len;
  const char *addr = zg_pool_addr(r->pool, i, port, &len);
  if (len >= sizeof(r->instance))
    len = sizeof(r->instance) - 1;
  memcpy(r->instance, addr, len);
  r->instance[len] = '\0';
}

/* Picks an instance not tried yet (and not failed, while others remain)
 * and starts connecting to it. */
static void attempt(zg_upstream_req_t *r) {
  zg_service_t *svc = r->svc;
  const zg_instance_t *inst;
  zg_upconn_t *c;
  zg_tls_client_t *cli = NULL;
  size_t i;
  uint16_t port;
  int rc, tls;

  if (!r->pool) {
    zg_pool_t *p = zg_service_pool(svc);
    if (p)
      r->pool = zg_pool_ref(p);
  }
  i = r->ntried < ZG_UPSTREAM_MAX_TRIES
          ? zg_service_pick_hash(svc, r->pool, r->tried, r->ntried,
                                 r->has_hash ? &r->hash : NULL)
          : ZG_PICK_NONE;
  if (i == ZG_PICK_NONE) {
    finish(r, NULL, r->ntried == 0 ? ZG_UP_NO_INSTANCE : ZG_UP_UNREACHABLE);
    return;
  }
  if (r->ntried > 0)
    svc->traffic.retries++;
  r->tried[r->ntried++] = i;
  inst = &r->pool->inst[i];
  tls = zg_instance_use_tls(inst, svc->conf->upstream_tls, &port);
  zg_upstream_done(r); /* a retry: no longer in flight to the one before */
  set_instance(r, i, port);
  if (svc->conf->balance == ZG_BALANCE_LEAST_REQUEST) {
    zg_service_inflight(svc, r->instance, 1);
    r->counted = true;
  }
  /* No context to speak TLS with is not the instance's fault: not marked. */
  if (tls && !(cli = zg_service_tls_client(svc))) {
    finish(r, NULL, ZG_UP_NO_TLS);
    return;
  }
  if (r->idle && !r->fresh &&
      (c = zg_upidle_take(r->idle, r->instance, cli,
                          svc->conf->upstream_sni ? svc->conf->upstream_sni
                                                  : inst->host)) != NULL) {
    finish(r, c, ZG_UP_OK);
    return;
  }
  if (!(c = conn_new(r))) {
    finish(r, NULL, ZG_UP_NOMEM);
    return;
  }
  r->c = c;
  c->want_tls = tls ? 1 : 0;
  if (r->alpn_http) {
    c->want_h2 = (signed char)zg_instance_use_h2(
        inst, (zg_upstream_proto_t)svc->conf->upstream_protocol);
    c->h2 = c->want_h2 == 1;
  }
  memcpy(c->key, r->instance, sizeof(c->key));
  uv_timer_start(&c->timer, on_timeout, svc->conf->connect_timeout_ms, 0);
  if (inst->is_ip) {
    struct sockaddr_storage ss;
    rc = strchr(inst->host, ':')
             ? uv_ip6_addr(inst->host, port, (struct sockaddr_in6 *)&ss)
             : uv_ip4_addr(inst->host, port, (struct sockaddr_in *)&ss);
    if (rc < 0)
      failed(c, uv_strerror(rc));
    else
      connect_to(c, (const struct sockaddr *)&ss);
  } else {
    char service[8];
    snprintf(service, sizeof(service), "%u", port);
    rc = zg_resolve_start(&instance_resolver, svc->ctx->loop, inst->host,
                          service, 0, on_resolved, c, &c->lookup);
    if (rc < 0)
      failed(c, uv_strerror(rc));
  }
}

void zg_upstream_connect(zg_upstream_req_t *r) {
  attempt(r);
}

void zg_upstream_uncount(zg_upstream_req_t *r) {
  r->counted = false;
  zg_service_inflight(r->svc, r->instance, -1);
}

void zg_upstream_cancel(zg_upstream_req_t *r) {
  zg_upconn_t *c = r->c;
  if (!c)
    return;
  r->c = NULL;
  zg_upconn_close(c);
}

/* ---- idle keep-alive connections ------------------------------------- */

#define SWEEP_MS 1000

static void on_sweep(uv_timer_t *t) {
  zg_upidle_t *p = t->data;
  uint64_t now = uv_now(p->loop), idle = (*p->cfg)->proxy.idle_timeout_ms;
  if (idle == 0)
    return;
  ZG_LIST_FOREACH_SAFE(it, &p->idle) {
    zg_upconn_t *c = ZG_LIST_ITEM(it, zg_upconn_t, link);
    if (c->busy)
      c->idle_since_ms = now; /* in use: idle from its last stream on */
    else if (now - c->idle_since_ms >= idle)
      zg_upconn_close(c);
  }
}

void zg_upidle_start(zg_upidle_t *p, uv_loop_t *loop, zg_config_t *const *cfg,
                     unsigned max) {
  p->loop = loop;
  p->cfg = cfg;
  p->max = max;
  uv_timer_init(loop, &p->sweep);
  p->sweep.data = p;
  uv_timer_start(&p->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
  p->started = 1;
}

void zg_upidle_close_all(zg_upidle_t *p) {
  ZG_LIST_FOREACH_SAFE(it, &p->idle) {
    zg_upconn_t *c = ZG_LIST_ITEM(it, zg_upconn_t, link);
    if (c->busy)
      zg_upidle_remove(c); /* closed by its codec after its streams */
    else
      zg_upconn_close(c);
  }
}

void zg_upidle_remove(zg_upconn_t *c) {
  idle_unlink(c);
}

static void on_closed_noop(uv_handle_t *h) {
  (void)h;
}

void zg_upidle_stop(zg_upidle_t *p) {
  zg_upidle_close_all(p);
  if (p->started && !uv_is_closing((uv_handle_t *)&p->sweep))
    uv_close((uv_handle_t *)&p->sweep, on_closed_noop);
}

void zg_upidle_put(zg_upidle_t *p, zg_upconn_t *c) {
  c->idle_in = p;
  c->idle_since_ms = uv_now(p->loop);
  zg_list_push(&p->idle, &c->link);
  p->n++;
}

zg_upconn_t *zg_upidle_take(zg_upidle_t *p, const char *key,
                            const zg_tls_client_t *cli, const char *name) {
  ZG_LIST_FOREACH(it, &p->idle) {
    zg_upconn_t *c = ZG_LIST_ITEM(it, zg_upconn_t, link);
    if (!strcmp(c->key, key) && !c->closing &&
        ((!c->tls && !cli) || zg_tls_conn_reusable(c->tls, cli, name))) {
      idle_unlink(c);
      return c;
    }
  }
  return NULL;
}
