/* The gateway: process lifecycle. Owns the loop, the services and their
 * listeners, the registry and every session; starts them from a checked
 * configuration and stops them on SIGTERM/SIGINT. */
#ifndef ZKGATE_GATEWAY_H
#define ZKGATE_GATEWAY_H

#include <stdint.h>
#include <uv.h>

#include "core/balance.h"
#include "core/bufpool.h"
#include "core/config.h"
#include "core/access_log.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/pool.h"
#include "registry/registry.h"
#include "control/shared.h"

struct zg_gateway;
struct zg_tcp_session;
struct zg_http_listener;
struct zg_http_session;
struct zg_http_upstream;
struct zg_sni_listener;
struct zg_sni_session;
struct zg_tls_server;
struct zg_tls_client;

struct zg_discover;
struct zg_worker;

/* A service at run time: its configuration, its pools and its listener.
 * Reference-counted: the gateway holds one while the service is configured
 * or discovered, each session one while it uses the service, so that a
 * service that goes away (discovery) lets its sessions finish. */
typedef struct zg_service {
  struct zg_gateway *gw;
  const zg_service_conf_t *conf; /* = own_conf */
  zg_service_conf_t *own_conf;   /* its own copy, freed with it */
  struct zg_discover *discover;  /* NULL: from a [service:NAME] section */
  unsigned refs;
  zg_pool_t *zk_pool;     /* latest from the registry; NULL before the first */
  zg_pool_t *static_pool; /* from `instances =`; NULL when none */
  /* round-robin cursor, log rate limits: what the services of this name
   * share across workers (own_shared when out of memory) */
  zg_shared_svc_t *shared;
  zg_shared_svc_t own_shared;
  uv_tcp_t *listener; /* TCP services: heap, handed on by a reload */
  /* counters */
  uint64_t accepted;
  uint64_t active;
  uint64_t no_instance;
  uint64_t connect_failures;
  /* TLS to instances: this service's client context when it has its own
   * upstream_* settings, else NULL (the gateway's default serves) */
  struct zg_tls_client *up_tls;
  uint64_t up_tls_handshakes; /* completed, of which resumed: */
  uint64_t up_tls_resumed;
  uint64_t up_tls_failures; /* handshakes or verifications that failed (also
                               counted in connect_failures) */
  zg_traffic_t traffic;
} zg_service_t;

/* A [discover:NAME] section at run time: the children of its zk_root
 * last reported, sorted, and whether each became a service. */
typedef struct zg_discover {
  struct zg_gateway *gw;
  const zg_discover_conf_t *conf;
  char **known;
  size_t n_known;
  int listed;         /* the root's children were reported at least once */
  uint64_t board_seq; /* workers: the list taken from the board last */
} zg_discover_t;

typedef struct zg_gateway {
  uv_loop_t *loop;
  /* Workers ([proxy] workers = N): the control loop (worker 0, this one
   * when `worker` is NULL) runs the registry, the admin listener and the
   * signals besides its share of connections; each other worker is a
   * gateway of its own on its own thread, with registry == NULL, taking
   * pools and children from the board and reloads by message. */
  zg_shared_t *sh;
  struct zg_worker *worker; /* NULL: the control loop */
  struct zg_worker **peers; /* control: the other workers */
  size_t n_peers;
  zg_config_t *cfg;        /* owned; replaced by a reload */
  zg_service_t **services; /* configured ones first, in file order, then
                              discovered ones */
  size_t n_services, cap_services;
  zg_discover_t **discovers;
  size_t n_discovers;
  zg_registry_t *registry;
  /* The configuration the registry was started with, kept while it runs:
   * a reload compares [zookeeper] with it, not with the last file read. */
  zg_config_t *zk_cfg;
  zg_rng_t rng;
  uv_signal_t signals[4];
  struct zg_tcp_session *sessions; /* every open TCP session */
  struct zg_http_listener **http_listeners;
  size_t n_http_listeners, cap_http_listeners;
  struct zg_http_session *http_sessions;  /* every open HTTP session */
  struct zg_http_upstream *http_idle;     /* idle upstream connections */
  struct zg_sni_listener **sni_listeners; /* tls-passthrough, by address */
  size_t n_sni_listeners, cap_sni_listeners;
  struct zg_sni_session *sni_sessions; /* reading their ClientHello */
  struct zg_tls_server **tls;          /* per TLS-terminating address */
  /* TLS to instances for services without upstream_* settings: the system
   * store, verification on; made at first use, dropped on reload */
  struct zg_tls_client *up_tls_default;
  zg_listen_addr_t *tls_addrs; /* the address of each */
  size_t n_tls;
  unsigned n_http_idle;
  uv_timer_t http_sweep; /* closes idle upstream connections in time */
  int http_started;
  zg_bufpool_t bufs;       /* ZG_BUF_SIZE relay and read buffers */
  zg_bufpool_t http_wblks; /* HTTP write blocks (http_proxy.c) */
  zg_bufpool_t http_spool; /* HTTP sessions, reused (http_proxy.c) */
  zg_bufpool_t http_heads; /* parsed request heads (http_proxy.c) */
  int stopping;
  int draining; /* SIGTERM: finishing what is open, accepting nothing */
  uint64_t drain_start_ms;
  uv_timer_t drain_timer;
  /* operations */
  zg_access_log_t *access_log; /* NULL: off */
  struct zg_admin *admin;      /* NULL: no [admin] listen */
  zg_traffic_t unrouted;       /* HTTP requests that reached no service */
  int64_t started_wall_ms;
  uint64_t reloads_ok, reloads_failed;
} zg_gateway_t;

/* Runs the gateway on `cfg` (which it owns from then on, and frees) until a
 * stop signal; SIGHUP reloads the file cfg->path. Returns the process exit
 * code: 0 after a clean stop, 1 when it could not start. */
int zg_gateway_run(zg_config_t *cfg);

/* I/O buffers of ZG_BUF_SIZE bytes, kept on a free list for reuse (a few
 * hundred at most) so that the steady state allocates nothing. */
#define ZG_BUF_SIZE 16384
char *zg_buf_get(zg_gateway_t *gw);           /* NULL when out of memory */
void zg_buf_put(zg_gateway_t *gw, char *buf); /* NULL is fine */
void zg_buf_free_all(zg_gateway_t *gw);

/* Passive health: an instance that failed (refused, timed out, broke a
 * response) is skipped for [proxy] fail_timeout, unless nothing else is
 * left. Keyed by "host:port". */
/* Returns 1 when the instance was not marked before (an ejection). */
int zg_health_failed(zg_gateway_t *gw, const char *key);
int zg_health_is_failed(zg_gateway_t *gw, const char *key);
/* Picks like zg_balance_pick_pool, avoiding failed instances while others
 * remain. */
size_t zg_service_pick(zg_service_t *svc, const zg_pool_t *pool,
                       const size_t *tried, size_t ntried);

/* The certificates new connections on `addr` get (borrowed: take a
 * reference to keep them), or NULL when the address does not terminate
 * TLS. */
struct zg_tls_server *zg_gateway_tls(const zg_gateway_t *gw,
                                     const zg_listen_addr_t *addr);

/* The client context for TLS to `svc`'s instances (borrowed), or NULL
 * when none can be made (logged). */
struct zg_tls_client *zg_service_tls_client(zg_service_t *svc);

/* Admin (control loop): pauses the other workers and puts their gateways
 * in out[] (room for [proxy] workers), to be read until
 * zg_gateway_release; returns how many. A worker that is stopping is left
 * out. */
size_t zg_gateway_isolate(zg_gateway_t *gw, zg_gateway_t **out);
void zg_gateway_release(zg_gateway_t *gw);
/* zg_listener_start flags for gw's listeners: shared between workers when
 * there are several, checked for another listener by the control loop. */
int zg_gateway_listen_flags(const zg_gateway_t *gw);
/* Admission of a new client connection on `server` (the listener named
 * `listener`, for the log) against [proxy] max_connections and, when
 * `in_head` (it has a request head or ClientHello to send first),
 * max_head_connections. 0: admitted, *t holds it (release it when the
 * session ends). -1: refused, and already dropped: accepted and closed at
 * once, before any session is allocated; counted, logged rate-limited. */
int zg_gateway_admit(zg_gateway_t *gw, uv_stream_t *server, bool in_head,
                     zg_conn_ticket_t *t, const char *listener);
/* 0 for the control loop, 1..N-1 for the others. */
unsigned zg_gateway_worker_id(const zg_gateway_t *gw);

/* A refusal for want of an instance: counted (no_instance) and 1 when a
 * line may be logged (rate-limited across workers); *total: refusals so
 * far by all workers. */
int zg_service_refused(zg_service_t *svc, uint64_t *total);
/* 1 when a failed connect to an instance may be logged; *dropped: lines
 * not logged since the last one. */
int zg_service_log_connect_fail(zg_service_t *svc, uint64_t *dropped);

zg_service_t *zg_service_ref(zg_service_t *svc);
/* Frees the service with its last reference (its listener, if any, must be
 * closed by then). NULL is fine. */
void zg_service_unref(zg_service_t *svc);

/* The pool to pick from: the registry's while it has instances, else the
 * static one; NULL when neither has any. Borrowed, not referenced. */
zg_pool_t *zg_service_pool(const zg_service_t *svc);

#endif
