/* Connecting to a service's instances, for every proxy: pick an instance
 * not tried yet (zg_service_pick), resolve it when it is a host name,
 * connect within the service's connect_timeout, run the TLS handshake when
 * the instance or the service asks for TLS (upstream_tls), and on a failure
 * mark the instance (passive health), count and log it (rate-limited) and
 * try another, up to ZG_UPSTREAM_MAX_TRIES instances. The caller gets one
 * callback: a connected stream (with its TLS), or why there is none; it
 * may cancel before that. In the spirit of nginx's connect_peer and h2o's
 * socketpool.
 *
 * A loop's idle keep-alive connections wait in a zg_upidle_t, keyed by the
 * instance ("host:port") and, for TLS, by the client context and checked
 * name: a request that names one is given an idle connection to the
 * instance it picked before a new one is made. */
#ifndef ZKGATE_UPSTREAM_H
#define ZKGATE_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "core/instance.h"
#include "core/list.h"
#include "net/resolve.h"
#include "net/tls.h"
#include "upstream/service.h"

#define ZG_UPSTREAM_MAX_TRIES 3 /* the first instance and up to two others */

typedef enum {
  ZG_UP_OK = 0,
  ZG_UP_NO_INSTANCE, /* no live instance to try at all */
  ZG_UP_UNREACHABLE, /* every instance tried failed */
  ZG_UP_NO_TLS,      /* TLS is wanted and no client context can be made */
  ZG_UP_NOMEM,
} zg_upstream_err_t;

typedef struct zg_upconn zg_upconn_t;
typedef struct zg_upstream_req zg_upstream_req_t;
typedef struct zg_upidle zg_upidle_t;

/* `c` is the connection when err is ZG_UP_OK (the caller's from then on:
 * zg_upconn_close it), else NULL. */
typedef void (*zg_upstream_cb)(zg_upstream_req_t *r, zg_upconn_t *c,
                               zg_upstream_err_t err);

/* One connection to an instance. */
struct zg_upconn {
  uv_tcp_t tcp; /* tcp.data: the caller's block (conn_size), else r->data */
  zg_tls_conn_t *tls; /* TLS to the instance, or NULL */
  void *data;         /* the caller's */
  /* Called once the connection's handles are closed (write callbacks of
   * the stream have all run), just before its memory is freed. */
  void (*on_closed)(zg_upconn_t *c);
  char key[ZG_HOST_MAX + 10]; /* the instance, "host:port" */
  /* the module's */
  zg_upstream_req_t *req; /* while connecting */
  uv_timer_t timer;       /* connect timeout (resolve, connect, handshake) */
  uv_connect_t creq;
  zg_resolve_t *lookup; /* the instance's name, being resolved */
  size_t off;           /* where this lies in its allocation */
  zg_link_t link;       /* in `idle_in` */
  zg_upidle_t *idle_in; /* NULL: not idle */
  uint64_t idle_since_ms;
  unsigned handles;
  unsigned connected : 1;
  unsigned closing : 1;
  unsigned want_tls : 1;
  /* HTTP/2 (an HTTP caller's, alpn_http): the service's upstream_protocol
   * or the registration asks for it, or ALPN chose it. */
  unsigned h2 : 1;
  signed char want_h2; /* zg_instance_use_h2's answer when it was made */
  /* Streams in use on an HTTP/2 connection waiting in an idle pool for
   * more: neither the sweep nor zg_upidle_close_all closes it then. */
  unsigned busy;
};

/* A request for a connection, usually inside the caller's session. */
struct zg_upstream_req {
  /* Set by the caller before zg_upstream_connect: */
  zg_service_t *svc;
  /* The pool to pick from, referenced: taken from the service at the first
   * pick when NULL; the caller unrefs it once done with the request. */
  zg_pool_t *pool;
  zg_upstream_cb cb;
  void *data;
  /* Each connection is a block of conn_size bytes (0: just the
   * zg_upconn_t) with the zg_upconn_t at conn_off, so that a caller's own
   * per-connection state lives with it. */
  size_t conn_size, conn_off;
  bool alpn_http;    /* an HTTP caller: ALPN http/1.1 over TLS, h2 as the
                        service and the instance say (zg_instance_use_h2) */
  zg_upidle_t *idle; /* idle connections to take from first, or NULL */
  bool fresh;        /* a new connection even when an idle one waits */
  const char *tag;   /* the log's subsystem: "tcp", "http" */
  bool has_hash;     /* balance = hash: the request has a key, hashed: */
  uint64_t hash;
  /* Kept by the module: */
  size_t tried[ZG_UPSTREAM_MAX_TRIES];
  size_t ntried;
  zg_upconn_t *c;                  /* the attempt in flight */
  char instance[ZG_HOST_MAX + 10]; /* the instance picked last, or "" */
  bool counted; /* `instance` counts this request in flight (least_request)
                   until zg_upstream_done or the next pick */
};

/* Tries the next instance (the first one, or another after a failure the
 * caller saw on a connection it was given: ntried goes on) and calls r->cb
 * once, possibly before returning. */
void zg_upstream_connect(zg_upstream_req_t *r);
/* The request (TCP: the session) has ended: it no longer counts in flight
 * to its instance (least_request). Harmless when it never did; inline, so
 * that other balances pay one test per request. */
void zg_upstream_uncount(zg_upstream_req_t *r);
static inline void zg_upstream_done(zg_upstream_req_t *r) {
  if (r->counted)
    zg_upstream_uncount(r);
}
/* Gives up the attempt in flight, if any: no callback after this. */
void zg_upstream_cancel(zg_upstream_req_t *r);
/* Closes a connection (idle or not); c->on_closed runs once it is
 * closed. */
void zg_upconn_close(zg_upconn_t *c);

/* ---- idle keep-alive connections ---- */
struct zg_upidle {
  zg_list_t idle; /* zg_upconn_t, the latest first */
  unsigned n, max;
  uv_loop_t *loop;
  zg_config_t *const *cfg; /* [proxy] idle_timeout, read at each sweep */
  uv_timer_t sweep;        /* closes connections idle too long */
  int started;
};

/* Starts the sweep (at most `max` idle connections are kept). */
void zg_upidle_start(zg_upidle_t *p, uv_loop_t *loop, zg_config_t *const *cfg,
                     unsigned max);
/* Closes every idle connection (not the busy ones: their streams finish,
 * and they close after). */
void zg_upidle_close_all(zg_upidle_t *p);
/* Closes every idle connection and the sweep timer (on stop). */
void zg_upidle_stop(zg_upidle_t *p);
/* No room for another idle connection. */
static inline bool zg_upidle_full(const zg_upidle_t *p) {
  return p->n >= p->max;
}
/* `c` (reading, so that a close by the instance is seen) waits in `p`. */
void zg_upidle_put(zg_upidle_t *p, zg_upconn_t *c);
/* `c` leaves the pool it waits in (if any), still open. */
void zg_upidle_remove(zg_upconn_t *c);
/* An idle connection to `key`: plain when `cli` is NULL, else TLS with
 * that context and name (never one for the other); NULL when none. */
zg_upconn_t *zg_upidle_take(zg_upidle_t *p, const char *key,
                            const zg_tls_client_t *cli, const char *name);

#endif
