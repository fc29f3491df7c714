/* What the workers of one process share ([proxy] workers = N): the health
 * marks and round-robin cursors (upstream/marks.h, so that N workers
 * balance like one), the connection caps, the board where the control loop
 * posts the registry's latest pools and discovered children for the other
 * workers to take, and isolation (every other worker paused at a known
 * point) for the admin listener to read their counters. One mutex guards
 * the board and isolation; nothing here is touched per request. */
#ifndef ZKGATE_SHARED_H
#define ZKGATE_SHARED_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/connlimit.h"
#include "core/log.h"
#include "core/pool.h"
#include "upstream/marks.h"

typedef struct zg_shared zg_shared_t;

zg_shared_t *zg_shared_new(void); /* NULL when out of memory */
void zg_shared_free(zg_shared_t *sh);

void zg_shared_lock(zg_shared_t *sh);
void zg_shared_unlock(zg_shared_t *sh);

/* ---- connection caps, for the whole process ---- */
/* The counters every worker admits client connections against
 * ([proxy] max_connections, max_head_connections). */
zg_connlimit_t *zg_shared_connlimit(zg_shared_t *sh);

/* ---- health marks and per-service-name state (upstream/marks.h) ---- */
zg_marks_t *zg_shared_marks(zg_shared_t *sh);

/* zg_ratelimit_allow on a limiter of the shared state, under the lock, on
 * the monotonic clock (not a loop's cached one). */
int zg_shared_log_allowed(zg_shared_t *sh, zg_ratelimit_t *rl,
                          uint64_t *dropped);

/* ---- the board: the control loop posts, the other workers take ---- */
/* The pool the registry published last for service `name` watching
 * zk_path (and endpoint); `pool` gets a reference of its own. */
void zg_shared_post_pool(zg_shared_t *sh, const char *name, const char *zk_path,
                         const char *endpoint, zg_pool_t *pool);
/* Drops what was posted for `name` if it watches zk_path (and endpoint):
 * the control loop no longer does (a removed service, a vanished child),
 * and a service of that name that comes back must wait for its own pool,
 * as the control loop does, rather than take an old one. */
void zg_shared_forget_pool(zg_shared_t *sh, const char *name,
                           const char *zk_path, const char *endpoint);
/* A new reference to the pool posted for `name` if it watches the same
 * zk_path and endpoint, else NULL. */
zg_pool_t *zg_shared_pool(zg_shared_t *sh, const char *name,
                          const char *zk_path, const char *endpoint);
/* The children of discover section `name` as last listed (copied). */
void zg_shared_post_children(zg_shared_t *sh, const char *name,
                             const char *const *names, size_t n);
/* Drops the list posted for `name` (a discover section that went). */
void zg_shared_forget_children(zg_shared_t *sh, const char *name);
/* When the list posted for `name` is newer than *seq: a copy in *names
 * (each and the array to be freed), *n, *seq updated, and 1. 0 when there
 * is nothing newer (or no memory: the next post tries again). */
int zg_shared_children(zg_shared_t *sh, const char *name, uint64_t *seq,
                       char ***names, size_t *n);

/* With the lock held: waits for a zg_shared_wake_all (spurious wake-ups
 * too: check the condition again). */
void zg_shared_wait(zg_shared_t *sh);
void zg_shared_wake_all(zg_shared_t *sh);

/* ---- isolation ---- */
/* A worker's part: its wake-up handle (to be sent under the lock only
 * while the worker is live) and whether it is paused. */
typedef struct zg_shared_peer {
  uv_async_t *wake;
  int live;   /* its loop runs and answers wake-ups */
  int paused; /* waiting in zg_shared_pause_point */
} zg_shared_peer_t;

/* Called by the control loop: every live peer of `peers` is woken and
 * waited for until paused; on return, the peers with paused set may be
 * read until zg_shared_release. */
void zg_shared_isolate(zg_shared_t *sh, zg_shared_peer_t *const *peers,
                       size_t n);
void zg_shared_release(zg_shared_t *sh);
/* Called by a worker, with the lock held, when woken: waits (unlocking
 * meanwhile) while an isolation is asked for. */
void zg_shared_pause_point(zg_shared_t *sh, zg_shared_peer_t *me);
/* Called by a worker, with the lock held, when its loop stops answering. */
void zg_shared_peer_gone(zg_shared_t *sh, zg_shared_peer_t *me);

#endif
