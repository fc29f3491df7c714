/* zkgate-register's health check of the instance, shared by the
 * ZooKeeper and the etcd modes: `tcp` connects to the address, `http:/PATH`
 * sends GET /PATH (2xx or 3xx is healthy); one check every interval, which
 * is also its time limit; `rise` passes or `fall` failures in a row flip
 * health.healthy (core/health), logged. Without a check the instance is
 * healthy from the start and nothing runs. */
#ifndef ZKGATE_REGISTER_CHECK_H
#define ZKGATE_REGISTER_CHECK_H

#include "core/health.h"
#include "register/register_opts.h"

#include <uv.h>

typedef struct check check_t;

typedef struct {
  uv_loop_t *loop;
  const zg_register_opts_t *opts;
  const char *addr;   /* host:port, for logs and the Host header */
  zg_health_t health; /* health.healthy: the instance should be registered */
  check_t *check;     /* in progress, or NULL */
  uv_timer_t timer;
  int stopping;
  void (*cb)(void *arg); /* after every result */
  /* What is registered now, for the logs, or NULL. */
  const char *(*registered)(void *arg);
  void *arg;
} zg_regcheck_t;

/* Starts checking (the first check at once). */
void zg_regcheck_start(zg_regcheck_t *r, uv_loop_t *loop,
                       const zg_register_opts_t *opts, const char *addr,
                       void (*cb)(void *arg),
                       const char *(*registered)(void *arg), void *arg);
/* Stops: a check in progress is abandoned, the timer closed. */
void zg_regcheck_stop(zg_regcheck_t *r);

#endif
