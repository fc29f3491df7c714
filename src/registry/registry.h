/* The registry: one ZooKeeper session for the whole process, driven by the
 * control loop (uv_poll on the client's socket plus a timer), watching the
 * children of every service's zk_path and publishing a new pool snapshot
 * for a service whenever its set of decoded instances changes.
 *
 * Riding out trouble: a disconnection keeps every pool as it was; a session
 * expiry, or a disconnection longer than the session timeout, opens a new
 * session and resynchronises every service, replacing each pool in one step
 * (never through an empty pool unless the registry really is empty). */
#ifndef ZKGATE_REGISTRY_H
#define ZKGATE_REGISTRY_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/pool.h"

typedef struct zg_registry zg_registry_t;

/* Called on the registry's loop with a new pool for the path watched with
 * `ctx` (zg_registry_watch); the callee takes the reference. */
typedef void (*zg_registry_publish_cb)(void *arg, void *ctx, zg_pool_t *pool);
/* Called with the children of a discovery root (zg_registry_watch_root),
 * sorted by name, whenever they change; the names are borrowed. */
typedef void (*zg_registry_children_cb)(void *arg, void *ctx,
                                        const char *const *names, size_t n);

typedef enum {
  ZG_ZK_CONNECTING = 0, /* never connected yet in this session */
  ZG_ZK_CONNECTED,
  ZG_ZK_DISCONNECTED, /* had a session, lost the connection */
  ZG_ZK_CLOSED,
} zg_zk_state_t;

/* `coalesce_ms`: how long a change waits for others before its service's
 * pool is published (0: at once). */
zg_registry_t *zg_registry_new(uv_loop_t *loop, const char *hosts,
                               uint64_t session_timeout_ms,
                               uint64_t coalesce_ms, zg_registry_publish_cb cb,
                               zg_registry_children_cb children_cb,
                               void *cb_arg);
/* Watches a path's children as instances, before or after start (also from
 * the callbacks). `endpoint` (may be NULL) selects a serverset
 * additionalEndpoints entry. Pools come with `ctx`. */
int zg_registry_watch(zg_registry_t *reg, const char *zk_path,
                      const char *endpoint, void *ctx);
/* Watches a discovery root: its children are reported by name. A root that
 * vanishes reports nothing (its services stay) until it is back. */
int zg_registry_watch_root(zg_registry_t *reg, const char *zk_root, void *ctx);
/* Stops watching what was watched with `ctx`: no callback with it comes
 * after this (also from the callbacks), and the state file forgets it. */
void zg_registry_unwatch(zg_registry_t *reg, void *ctx);
/* What was watched with `old_ctx` is reported with `new_ctx` from now on
 * (a reloaded service taking over its predecessor's watch and pool). */
void zg_registry_retarget(zg_registry_t *reg, void *old_ctx, void *new_ctx);
/* The watch budget ([zookeeper] max_watch_bytes, 0: none): what the
 * session's watches may take to re-register on a reconnection (one
 * SetWatches packet, refused by a server whose jute.maxbuffer it exceeds).
 * Instances past it are read without a data watch; on a lost connection,
 * a session over it anyway is given up for a new one. */
void zg_registry_set_max_watch_bytes(zg_registry_t *reg, uint64_t bytes);
/* [zookeeper] data_sweep: how often instances read without a data watch
 * are checked for changes in place (0: never). Default 30 s. */
void zg_registry_set_data_sweep(zg_registry_t *reg, uint64_t interval_ms);
/* Before zg_registry_start(): the state file to load at start and keep up
 * to date (NULL: none), and how long last known pools serve without
 * ZooKeeper (0: forever). */
int zg_registry_set_state(zg_registry_t *reg, const char *state_file,
                          uint64_t max_stale_ms);
/* Before zg_registry_start(): digest credentials "user:password" that every
 * session authenticates with (NULL: none). Never logged; wiped when freed. */
int zg_registry_set_auth(zg_registry_t *reg, const char *digest);
int zg_registry_start(zg_registry_t *reg);
/* Closes the session (its ephemeral nodes vanish at once: this blocks for
 * as long as the client takes to say goodbye, so call it at shutdown only)
 * and closes the loop handles; the registry frees itself once they are
 * closed. */
void zg_registry_close(zg_registry_t *reg);

zg_zk_state_t zg_registry_state(const zg_registry_t *reg);
typedef struct {
  zg_zk_state_t state;
  uint64_t disconnected_for_ms; /* 0 while connected */
  uint64_t max_stale_ms;        /* as set; 0: forever */
  uint64_t expiries;            /* sessions lost (expired, or disconnected
                                   past the session timeout) */
  uint64_t watch_events;        /* watches fired (children, data, exists) */
  uint64_t lists, reads;
  uint64_t checks;             /* stats of the data sweep */
  size_t path_watches;         /* child or exists watches, one a path */
  size_t data_watches;         /* data watches, one an instance at most */
  size_t unwatched;            /* instances read without a data watch */
  uint64_t watch_bytes;        /* estimated SetWatches packet */
  uint64_t watch_budget;       /* max_watch_bytes, or lower after a refusal */
  int64_t last_update_wall_ms; /* last pool published; 0: none yet */
} zg_registry_stats_t;

void zg_registry_stats(const zg_registry_t *reg, zg_registry_stats_t *out);

/* Children lists and data reads issued since start. */
void zg_registry_counts(const zg_registry_t *reg, uint64_t *lists,
                        uint64_t *reads);

#endif
