/* Pipes for splice(2), kept on a small free list per loop (no locking) so
 * that a TCP session takes one only while bytes are in flight and gives it
 * back once the pipe is empty: idle sessions hold no pipe (and no file
 * descriptors beyond their sockets), and a busy loop makes no pipe2() per
 * transfer. A pipe that may still hold bytes is closed, never kept.
 * Busy pipes count against the process's cap ([proxy] max_pipes, in
 * connlimit.h, shared by every loop): past it a direction copies through
 * user space instead, so that pipes never take the descriptors that
 * max_connections = auto leaves for sockets. */
#ifndef ZKGATE_PIPE_POOL_H
#define ZKGATE_PIPE_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "core/connlimit.h"

/* The capacity asked of every pipe (F_SETPIPE_SZ); the kernel may give
 * less (pipe-user-pages-soft reached): zg_pipe_t.cap says what it is. */
#ifndef ZG_PIPE_SIZE
#define ZG_PIPE_SIZE (256 * 1024)
#endif
/* Empty pipes kept for reuse per loop; more are closed. Their descriptors
 * are part of the reserve that max_connections = auto leaves. */
#ifndef ZG_PIPE_KEEP
#define ZG_PIPE_KEEP 16
#endif

typedef struct zg_pipe {
  int rfd, wfd; /* -1: none */
  size_t cap;   /* bytes it holds at most */
} zg_pipe_t;

typedef struct zg_pipe_pool {
  zg_pipe_t kept[ZG_PIPE_KEEP]; /* empty pipes: [0, n_free) */
  unsigned n_free, max_free;    /* max_free <= ZG_PIPE_KEEP */
  size_t size;                  /* capacity asked of new pipes */
  uint64_t n_busy;              /* pipes handed out and not yet given back */
  uint64_t created, failures;
  uint64_t capped;        /* refused: the process's busy pipes at the cap */
  zg_connlimit_t *limits; /* the cap on busy pipes; NULL: none */
} zg_pipe_pool_t;

#define ZG_PIPE_NONE ((zg_pipe_t){.rfd = -1, .wfd = -1})

void zg_pipe_pool_init(zg_pipe_pool_t *p, size_t size, unsigned max_free,
                       zg_connlimit_t *limits);
/* An empty pipe into *out (non-blocking, close-on-exec): a kept one, else
 * a new one. 0, or a negative errno with *out left as ZG_PIPE_NONE:
 * -EBUSY when the process's busy pipes are at its cap (counted in
 * `capped`), else why no pipe could be made (EMFILE, ENFILE, ENOMEM:
 * counted in `failures`). */
int zg_pipe_get(zg_pipe_pool_t *p, zg_pipe_t *out);
/* Gives back *pp (ZG_PIPE_NONE is fine) and sets it to ZG_PIPE_NONE; kept
 * for reuse when `empty` (nothing is left in it) and there is room, else
 * closed. */
void zg_pipe_put(zg_pipe_pool_t *p, zg_pipe_t *pp, int empty);
/* Closes the kept pipes (those handed out stay their holders'). */
void zg_pipe_pool_clear(zg_pipe_pool_t *p);

#endif
