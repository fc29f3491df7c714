/* What feeds the change feed (control/events.h) on the control loop:
 * hooks the gateway calls when it takes a pool or applies (or rejects) a
 * reload, and a timer that watches what has no hook: each registry's
 * connection (connected, disconnected, expired, stale past max_stale)
 * through zg_source_stats, and the passive health marks, which every
 * worker sets (upstream/marks.h), diffed against the last look. With
 * [proxy] workers = N the feed is the control loop's and tells of all:
 * the registry, the pools, the reloads and the marks are the process's.
 * This module does not include the gateway (which includes it): the
 * registry is reached through a probe the gateway gives. */
#ifndef ZKGATE_FEED_H
#define ZKGATE_FEED_H

#include <uv.h>

#include "control/events.h"
#include "registry/source.h"
#include "upstream/marks.h"

#define ZG_FEED_HISTORY 1000                /* events kept for ?since= ... */
#define ZG_FEED_HISTORY_BYTES (1024 * 1024) /* ... and their bytes at most */
#define ZG_FEED_POLL_MS 100 /* the registry and the marks looked at */

typedef struct zg_feed zg_feed_t;

/* The registries looked at: ZG_FEED_ZOOKEEPER, ZG_FEED_ETCD. */
#define ZG_FEED_SOURCES 2
#define ZG_FEED_ZOOKEEPER 0
#define ZG_FEED_ETCD 1

/* For registry `which`: fills *st and returns the names of the services
 * read from it (a new JSON array), or returns NULL when there is no such
 * registry. */
typedef json_t *(*zg_feed_probe_fn)(void *arg, int which,
                                    zg_source_stats_t *st);

/* NULL when out of memory. `marks` may be NULL. */
zg_feed_t *zg_feed_new(uv_loop_t *loop, zg_marks_t *marks,
                       zg_feed_probe_fn probe, void *probe_arg);
/* Stops the timer and frees (once the timer is closed). NULL is fine. */
void zg_feed_close(zg_feed_t *f);
zg_events_t *zg_feed_events(zg_feed_t *f); /* NULL is fine: NULL */

/* A service's pool replaced (either may be NULL). */
void zg_feed_pool(zg_feed_t *f, const char *service, const zg_pool_t *before,
                  const zg_pool_t *after);
/* A reload applied (`text`: its summary) or rejected (`text`: why). */
void zg_feed_reload(zg_feed_t *f, int applied, const char *text);

#endif
