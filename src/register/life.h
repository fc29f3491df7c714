/* What zkgate-register's two runtimes (register.c for ZooKeeper,
 * register_etcd.c for etcd) share around their own logic: the process's
 * life on one event loop (prepare, start, run until every handle is
 * closed, release), SIGTERM and SIGINT, and the instance's identity (a
 * fresh Curator id, the registration time). */
#ifndef ZKGATE_REGISTER_LIFE_H
#define ZKGATE_REGISTER_LIFE_H

#include "register/register_fmt.h"
#include "register/register_opts.h"

#include <uv.h>

typedef struct {
  /* What is fixed for the process's life; 0 or an error (logged here). */
  int (*prepare)(void *rt);
  /* Handles, the first requests; the loop runs after it. */
  void (*start)(void *rt);
  /* Frees what prepare made; after a failed prepare too. */
  void (*release)(void *rt);
} zg_reglife_ops_t;

/* SIGPIPE ignored (a check's peer closing while we write must not kill
 * the process), `loop` initialised, ops->prepare, ops->start, the loop run
 * until nothing is left (handles a stop left open are closed), then
 * ops->release. Returns the exit status: 0 after the loop ran, 1 when it
 * could not start. */
int zg_reglife_run(uv_loop_t *loop, const zg_reglife_ops_t *ops, void *rt);

/* SIGTERM and SIGINT call `cb`, with `data` in the handle's data. */
void zg_reglife_signals_start(uv_loop_t *loop, uv_signal_t *sigterm,
                              uv_signal_t *sigint, uv_signal_cb cb, void *data);
void zg_reglife_signals_close(uv_signal_t *sigterm, uv_signal_t *sigint);
/* "SIGTERM" or "SIGINT", for the logs. */
const char *zg_reglife_signame(int signum);

/* The instance of `opts` (format, address, scheme) under the parent
 * `path` (borrowed), with a fresh Curator id and the registration time
 * now. Returns 0 or a libuv error (no randomness). */
int zg_reglife_instance(const zg_register_opts_t *opts, const char *path,
                        zg_regfmt_instance_t *inst);

#endif
