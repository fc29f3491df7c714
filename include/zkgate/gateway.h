/* The gateway: process lifecycle. Owns the loop, the services and their
 * listeners, the registry and every session; starts them from a checked
 * configuration and stops them on SIGTERM/SIGINT. */
#ifndef ZKGATE_GATEWAY_H
#define ZKGATE_GATEWAY_H

#include <stdint.h>
#include <uv.h>

#include "zkgate/balance.h"
#include "zkgate/config.h"
#include "zkgate/log.h"
#include "zkgate/pool.h"
#include "zkgate/registry.h"

struct zg_gateway;
struct zg_tcp_session;

/* A service at run time: its configuration, its pools and its listener. */
typedef struct zg_service {
  struct zg_gateway *gw;
  const zg_service_conf_t *conf;
  zg_pool_t *zk_pool;     /* latest from the registry; NULL before the first */
  zg_pool_t *static_pool; /* from `instances =`; NULL when none */
  uint64_t rr_cursor;
  uv_tcp_t listener;
  int listening;
  /* counters */
  uint64_t accepted;
  uint64_t active;
  uint64_t no_instance;
  uint64_t connect_failures;
  zg_ratelimit_t no_instance_rl;
  zg_ratelimit_t connect_fail_rl;
} zg_service_t;

typedef struct zg_gateway {
  uv_loop_t *loop;
  const zg_config_t *cfg;
  zg_service_t *services;
  size_t n_services;
  zg_registry_t *registry;
  zg_rng_t rng;
  uv_signal_t signals[4];
  struct zg_tcp_session *sessions; /* every open TCP session */
  void *free_bufs;                 /* relay buffers ready for reuse */
  unsigned n_free_bufs;
  int stopping;
} zg_gateway_t;

/* Runs the gateway on `cfg` until a stop signal. Returns the process exit
 * code: 0 after a clean stop, 1 when it could not start. */
int zg_gateway_run(const zg_config_t *cfg);

/* The pool to pick from: the registry's while it has instances, else the
 * static one; NULL when neither has any. Borrowed, not referenced. */
zg_pool_t *zg_service_pool(zg_service_t *svc);

#endif
