/* Pipes for splice(2), reused. See pipe_pool.h. Linux only: elsewhere
 * zg_pipe_get always fails with ENOSYS and the TCP proxy copies. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pipe2, F_SETPIPE_SZ */
#endif
#include "proxy/pipe_pool.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

void zg_pipe_pool_init(zg_pipe_pool_t *p, size_t size, unsigned max_free,
                       zg_connlimit_t *limits) {
  p->n_free = 0;
  p->max_free = max_free < ZG_PIPE_KEEP ? max_free : ZG_PIPE_KEEP;
  p->size = size;
  p->n_busy = 0;
  p->created = 0;
  p->failures = 0;
  p->capped = 0;
  p->limits = limits;
}

#ifdef __linux__
static int pipe_new(zg_pipe_pool_t *p, zg_pipe_t *out) {
  int fds[2];
  int cap;
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0)
    return -errno;
  /* Bigger than the default 64 KiB moves more per splice() pair; past
   * pipe-user-pages-soft the kernel refuses (EPERM) and the pipe keeps
   * the size it has, which still works. */
  if (p->size)
    (void)fcntl(fds[1], F_SETPIPE_SZ, (int)p->size);
  cap = fcntl(fds[1], F_GETPIPE_SZ);
  out->rfd = fds[0];
  out->wfd = fds[1];
  out->cap = cap > 0 ? (size_t)cap : 4096;
  p->created++;
  return 0;
}
#else
static int pipe_new(zg_pipe_pool_t *p, zg_pipe_t *out) {
  (void)p;
  (void)out;
  return -ENOSYS;
}
#endif

int zg_pipe_get(zg_pipe_pool_t *p, zg_pipe_t *out) {
  int rc;
  if (p->limits && !zg_connlimit_pipe_take(p->limits)) {
    p->capped++;
    *out = ZG_PIPE_NONE;
    return -EBUSY;
  }
  if (p->n_free > 0) { /* the latest kept: its pages are the warmest */
    *out = p->kept[--p->n_free];
    p->n_busy++;
    return 0;
  }
  rc = pipe_new(p, out);
  if (rc < 0) {
    if (p->limits)
      zg_connlimit_pipe_give(p->limits);
    p->failures++;
    *out = ZG_PIPE_NONE;
    return rc;
  }
  p->n_busy++;
  return 0;
}

static void pipe_close(zg_pipe_t *pp) {
  close(pp->rfd);
  close(pp->wfd);
}

void zg_pipe_put(zg_pipe_pool_t *p, zg_pipe_t *pp, int empty) {
  if (pp->rfd < 0)
    return;
  p->n_busy--;
  if (p->limits)
    zg_connlimit_pipe_give(p->limits);
  if (empty && p->n_free < p->max_free) {
    p->kept[p->n_free++] = *pp;
  } else {
    pipe_close(pp);
  }
  *pp = ZG_PIPE_NONE;
}

void zg_pipe_pool_clear(zg_pipe_pool_t *p) {
  while (p->n_free > 0)
    pipe_close(&p->kept[--p->n_free]);
}
