/* The gateway: process lifecycle. Owns the loop, the services and their
 * listeners, the registry and every session; starts them from a checked
 * configuration and stops them on SIGTERM/SIGINT. */
#ifndef ZKGATE_GATEWAY_H
#define ZKGATE_GATEWAY_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "core/balance.h"
#include "core/bufpool.h"
#include "core/config.h"
#include "core/access_log.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/pool.h"
#include "registry/source.h"
#include "control/shared.h"
#include "upstream/service.h"
#include "upstream/upstream.h"

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
  /* control: the registry's pools and children go on the board for the
   * workers (there are, or are about to be, other workers) */
  bool board;
  zg_config_t *cfg;        /* owned; replaced by a reload */
  zg_service_t **services; /* configured ones first, in file order, then
                              discovered ones */
  size_t n_services, cap_services;
  zg_discover_t **discovers;
  size_t n_discovers;
  zg_source_t *registry;
  /* The configuration the registry was started with, kept while it runs:
   * a reload compares [zookeeper] with it, not with the last file read. */
  zg_config_t *zk_cfg;
  zg_service_ctx_t svc_ctx; /* what this loop's services share */
  uv_signal_t signals[4];
  struct zg_tcp_session *sessions; /* every open TCP session */
  struct zg_http_listener **http_listeners;
  size_t n_http_listeners, cap_http_listeners;
  struct zg_http_session *http_sessions;  /* every open HTTP session */
  struct zg_sni_listener **sni_listeners; /* tls-passthrough, by address */
  size_t n_sni_listeners, cap_sni_listeners;
  struct zg_sni_session *sni_sessions; /* reading their ClientHello */
  struct zg_tls_server **tls;          /* per TLS-terminating address */
  zg_listen_addr_t *tls_addrs;         /* the address of each */
  size_t n_tls;
  zg_upidle_t up_idle; /* idle upstream connections (HTTP keep-alive) */
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

/* The certificates new connections on `addr` get (borrowed: take a
 * reference to keep them), or NULL when the address does not terminate
 * TLS. */
struct zg_tls_server *zg_gateway_tls(const zg_gateway_t *gw,
                                     const zg_listen_addr_t *addr);

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

#endif
