/* The access log writer. Lines are formatted by zg_access_format into a
 * buffer kept for reuse and written with one write(2) each, so lines never
 * interleave and a rotated file is never half-written by us. */
#include "core/access_log.h"

#include "core/log.h"

#include <errno.h>
#include <stdatomic.h>
#include <uv.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct zg_access_log {
  uv_mutex_t mu; /* workers write from their threads */
  atomic_uint refs;
  int fd;
  char *path; /* NULL: stderr */
  bool json;
  zg_text_t line;
  zg_ratelimit_t error_rl;
};

static int open_file(const char *path) {
  return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

zg_access_log_t *zg_access_log_open(const char *where, bool json) {
  zg_access_log_t *log = calloc(1, sizeof(*log));
  if (!log)
    return NULL;
  if (uv_mutex_init(&log->mu) != 0) {
    free(log);
    return NULL;
  }
  atomic_init(&log->refs, 1);
  log->json = json;
  zg_ratelimit_init(&log->error_rl, 10000, 3);
  if (!strcmp(where, "stderr")) {
    log->fd = STDERR_FILENO;
    return log;
  }
  log->fd = open_file(where);
  if (log->fd < 0 || !(log->path = strdup(where))) {
    zg_error("access_log", "cannot open %s: %s", where, strerror(errno));
    if (log->fd >= 0)
      close(log->fd);
    uv_mutex_destroy(&log->mu);
    free(log);
    return NULL;
  }
  return log;
}

void zg_access_log_write(zg_access_log_t *log, const zg_access_entry_t *e) {
  ssize_t n;
  uint64_t dropped;
  if (!log)
    return;
  uv_mutex_lock(&log->mu);
  log->line.len = 0;
  zg_access_format(&log->line, e, log->json);
  if (log->line.oom) {
    log->line.oom = false;
    uv_mutex_unlock(&log->mu);
    return;
  }
  do
    n = write(log->fd, log->line.p, log->line.len);
  while (n < 0 && errno == EINTR);
  if (n < 0 &&
      zg_ratelimit_allow(&log->error_rl, (uint64_t)e->time_ms, &dropped))
    zg_error("access_log", "cannot write to %s: %s (%llu more lost)",
             log->path ? log->path : "stderr", strerror(errno),
             (unsigned long long)dropped);
  uv_mutex_unlock(&log->mu);
}

int zg_access_log_reopen(zg_access_log_t *log) {
  int fd;
  if (!log || !log->path)
    return 0;
  if ((fd = open_file(log->path)) < 0) {
    int err = -errno;
    zg_error("access_log", "cannot reopen %s: %s; writing on to the old file",
             log->path, strerror(errno));
    return err;
  }
  uv_mutex_lock(&log->mu);
  close(log->fd);
  log->fd = fd;
  uv_mutex_unlock(&log->mu);
  zg_info("access_log", "reopened %s", log->path);
  return 0;
}

zg_access_log_t *zg_access_log_ref(zg_access_log_t *log) {
  if (log)
    atomic_fetch_add_explicit(&log->refs, 1, memory_order_relaxed);
  return log;
}

void zg_access_log_close(zg_access_log_t *log) {
  if (!log ||
      atomic_fetch_sub_explicit(&log->refs, 1, memory_order_acq_rel) != 1)
    return;
  uv_mutex_destroy(&log->mu);
  if (log->path)
    close(log->fd);
  free(log->path);
  zg_text_free(&log->line);
  free(log);
}
