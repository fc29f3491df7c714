/* What the proxies of one loop share (tcp_proxy, sni_proxy, http_proxy):
 * the loop, its configuration, the I/O buffers, the access log, the
 * draining and stopping flags, and hooks into whoever owns the loop
 * (control/gateway fills them in) for admission, listener flags, the TLS
 * certificates of an address and the services. Each proxy keeps its own
 * per-loop state behind an opaque pointer here, made and freed by that
 * proxy (zg_tcp_init, zg_sni_init, zg_http_init), so that the owner never
 * sees a proxy's sessions or listeners: it reads them through functions
 * and stats structs. */
#ifndef ZKGATE_PROXY_H
#define ZKGATE_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/access_log.h"
#include "core/bufpool.h"
#include "core/config.h"
#include "core/connlimit.h"
#include "upstream/service.h"

struct zg_tls_server;
struct zg_tcp_loop;
struct zg_sni_loop;
struct zg_http_loop;

/* Calls into the loop's owner; `owner` is zg_proxy_ctx_t.owner. */
typedef struct zg_proxy_hooks {
  /* Admission of a new client connection on `server` (the listener named
   * `listener`, for the log) against the process's connection caps; when
   * `in_head`, it has a request head or ClientHello to send first. 0:
   * admitted, *t holds it (released when the session ends). -1: refused
   * and already dropped (accepted and closed), counted and logged. */
  int (*admit)(void *owner, uv_stream_t *server, bool in_head,
               zg_conn_ticket_t *t, const char *listener);
  /* zg_listener_start flags for a new listener of this loop. */
  int (*listen_flags)(void *owner);
  /* The certificates new connections on `addr` get (borrowed: take a
   * reference to keep them), or NULL when it does not terminate TLS. */
  struct zg_tls_server *(*tls)(void *owner, const zg_listen_addr_t *addr);
  /* The loop's services (configured ones first, then discovered ones),
   * borrowed: valid until the owner changes the list, which it does only
   * between the proxies' calls; *n is their number. */
  zg_service_t *const *(*services)(void *owner, size_t *n);
} zg_proxy_hooks_t;

typedef struct zg_proxy_ctx {
  uv_loop_t *loop;
  /* The loop's current configuration: the owner's, set again by the owner
   * when a reload replaces it (before it calls zg_*_sync). */
  zg_config_t *cfg;
  zg_service_ctx_t *svc_ctx;   /* what this loop's services share */
  zg_access_log_t *access_log; /* the owner's; NULL: off */
  int draining;                /* set by the owner: finishing what is open */
  int stopping;                /* set by the owner: closing everything */
  zg_bufpool_t bufs;           /* ZG_BUF_SIZE relay and read buffers */
  const zg_proxy_hooks_t *hooks;
  void *owner;
  /* The process's caps (the owner's, shared by every loop): the TCP
   * relay's busy pipes count against its max_pipes. NULL: no cap. */
  zg_connlimit_t *limits;
  /* each proxy's own, opaque */
  struct zg_tcp_loop *tcp;
  struct zg_sni_loop *sni;
  struct zg_http_loop *http;
} zg_proxy_ctx_t;

/* A listener's counters, for the admin (HTTP and tls-passthrough). */
typedef struct zg_listener_stats {
  const char *addr; /* the listen address as configured; borrowed */
  uint64_t accepted, active;
  uint64_t not_tls, unknown_sni, timeouts; /* tls-passthrough: closed, by
                                              cause */
} zg_listener_stats_t;

/* Sets up the common part (the proxies' own come from zg_*_init). */
void zg_proxy_ctx_init(zg_proxy_ctx_t *px, uv_loop_t *loop, zg_config_t *cfg,
                       zg_service_ctx_t *svc_ctx, const zg_proxy_hooks_t *hooks,
                       void *owner);
/* Frees the buffers kept for reuse. */
void zg_proxy_ctx_clear(zg_proxy_ctx_t *px);

/* I/O buffers of ZG_BUF_SIZE bytes, kept on a free list for reuse (a few
 * hundred at most) so that the steady state allocates nothing. */
#define ZG_BUF_SIZE 16384
char *zg_buf_get(zg_proxy_ctx_t *px);           /* NULL when out of memory */
void zg_buf_put(zg_proxy_ctx_t *px, char *buf); /* NULL is fine */

#endif
