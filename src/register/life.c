/* The process's life shared by zkgate-register's runtimes: see life.h. */
#include "register/life.h"

#include "core/error.h"
#include "core/log.h"

#include <signal.h>
#include <string.h>

static void walk_close(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

int zg_reglife_run(uv_loop_t *loop, const zg_reglife_ops_t *ops, void *rt) {
  int rc;
  signal(SIGPIPE, SIG_IGN);
  if ((rc = uv_loop_init(loop)) != 0) {
    zg_error("register", "cannot create the event loop: %s", uv_strerror(rc));
    return 1;
  }
  if ((rc = ops->prepare(rt)) != 0) {
    zg_error("register", "cannot prepare the registration: %s",
             zg_strerror(rc));
    ops->release(rt);
    uv_loop_close(loop);
    return 1;
  }
  ops->start(rt);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_walk(loop, walk_close, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  if (uv_loop_close(loop) != 0)
    zg_warn("register", "event loop closed with handles still open");
  ops->release(rt);
  zg_info("register", "stopped");
  return 0;
}

void zg_reglife_signals_start(uv_loop_t *loop, uv_signal_t *sigterm,
                              uv_signal_t *sigint, uv_signal_cb cb,
                              void *data) {
  uv_signal_init(loop, sigterm);
  uv_signal_init(loop, sigint);
  sigterm->data = sigint->data = data;
  uv_signal_start(sigterm, cb, SIGTERM);
  uv_signal_start(sigint, cb, SIGINT);
}

void zg_reglife_signals_close(uv_signal_t *sigterm, uv_signal_t *sigint) {
  uv_close((uv_handle_t *)sigterm, NULL);
  uv_close((uv_handle_t *)sigint, NULL);
}

const char *zg_reglife_signame(int signum) {
  return signum == SIGTERM ? "SIGTERM" : "SIGINT";
}

static int64_t wall_ms(void) {
  uv_timeval64_t tv;
  if (uv_gettimeofday(&tv) != 0)
    return 0;
  return tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

int zg_reglife_instance(const zg_register_opts_t *opts, const char *path,
                        zg_regfmt_instance_t *inst) {
  uint8_t rnd[16];
  int rc;
  memset(inst, 0, sizeof(*inst));
  inst->format = opts->format;
  inst->zk_path = path;
  inst->host = opts->address.host;
  inst->port = opts->address.port;
  inst->tls = opts->tls;
  inst->registration_ms = wall_ms();
  if ((rc = uv_random(NULL, NULL, rnd, sizeof(rnd), 0, NULL)) != 0)
    return rc;
  zg_register_fmt_uuid(rnd, inst->id);
  return 0;
}
