/* The gateway: process lifecycle. Owns the loop, the services and their
 * TCP listeners, the registry, and the proxies' context of its loop
 * (proxy/proxy.h: the proxies keep their sessions and listeners there,
 * behind pointers this module does not open); starts them from a checked
 * configuration and stops them on SIGTERM/SIGINT. */
#ifndef ZKGATE_GATEWAY_H
#define ZKGATE_GATEWAY_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "core/config.h"
#include "core/log.h"
#include "registry/source.h"
#include "control/shared.h"
#include "proxy/proxy.h"
#include "upstream/service.h"

struct zg_admin;
struct zg_gateway;
struct zg_tls_server;
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

/* The admin listener ([admin] listen) as the gateway drives it: given to
 * zg_gateway_run by main (control/admin.h: zg_admin_ops), so that the
 * gateway does not include the admin module, which reads the gateway. */
typedef struct zg_gateway_admin_ops {
  /* A listener on `addr`, not yet gw->admin (a reload binds first, then
   * swaps); NULL when it cannot listen (logged). */
  struct zg_admin *(*open)(struct zg_gateway *gw, const zg_listen_addr_t *addr);
  /* Closes one that `open` made: the running one (stop, or a reload
   * moves it) or one a rejected reload bound. */
  void (*discard)(struct zg_admin *a);
} zg_gateway_admin_ops_t;

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
  zg_source_t *registry; /* ZooKeeper: services with zk_path, discovery */
  /* The configuration the registry was started with, kept while it runs:
   * a reload compares [zookeeper] with it, not with the last file read. */
  zg_config_t *zk_cfg;
  zg_source_t *etcd;        /* etcd: services with etcd_prefix; NULL: none */
  zg_etcd_conf_t etcd_conf; /* what etcd was started with (a copy) */
  zg_service_ctx_t svc_ctx; /* what this loop's services share */
  /* What the proxies of this loop share: px.cfg is kept equal to cfg;
   * px.stopping, px.draining (SIGTERM: finishing what is open, accepting
   * nothing) and px.access_log (NULL: off) are the gateway's, set here. */
  zg_proxy_ctx_t px;
  uv_signal_t signals[4];
  struct zg_tls_server **tls;  /* per TLS-terminating address */
  zg_listen_addr_t *tls_addrs; /* the address of each */
  size_t n_tls;
  uint64_t drain_start_ms;
  uv_timer_t drain_timer;
  /* operations */
  struct zg_admin *admin; /* NULL: no [admin] listen */
  struct zg_feed *feed;   /* control loop: the change feed (control/feed.h;
                             NULL on the other workers) */
  const zg_gateway_admin_ops_t *admin_ops;
  int64_t started_wall_ms;
  uint64_t reloads_ok, reloads_failed;
} zg_gateway_t;

/* Runs the gateway on `cfg` (which it owns from then on, and frees) until a
 * stop signal; SIGHUP reloads the file cfg->path. Returns the process exit
 * code: 0 after a clean stop, 1 when it could not start. */
int zg_gateway_run(zg_config_t *cfg, const zg_gateway_admin_ops_t *admin);

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
/* 0 for the control loop, 1..N-1 for the others. */
unsigned zg_gateway_worker_id(const zg_gateway_t *gw);

/* The gateway's own counters and state, for the admin. */
typedef struct zg_gateway_stats {
  unsigned worker; /* zg_gateway_worker_id */
  int stopping, draining;
  int64_t started_wall_ms;
  uint64_t reloads_ok, reloads_failed;
} zg_gateway_stats_t;

void zg_gateway_stats(const zg_gateway_t *gw, zg_gateway_stats_t *st);

#endif
