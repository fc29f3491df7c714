/* A registry source: what the gateway sees of a service registry. The
 * gateway watches a path (or key prefix) as a service and gets pools of
 * decoded instances, watches a discovery root and gets child names, asks
 * for the connection state and the staleness, and never learns which
 * protocol is behind it. ZooKeeper is the first implementation
 * (registry/zk_source.h: zg_zk_source_new); a second one (etcd) implements
 * the same operations.
 *
 * Provenance travels with each instance of a pool: zg_instance_t's key
 * and version are the ZooKeeper node and its data version (for a key
 * store: the key and its revision).
 *
 * Contract for every source: callbacks come on the loop the source was made
 * on, never from inside a source call other than zg_source_start (which may
 * deliver what a state file remembers); a disconnection keeps every pool as
 * it was; max_stale, the state file and last-known-good behave the same for
 * every source. */
#ifndef ZKGATE_SOURCE_H
#define ZKGATE_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "core/pool.h"

typedef struct zg_source zg_source_t;

/* Called with a new pool for the path watched with `ctx`
 * (zg_source_watch); the callee takes the reference. */
typedef void (*zg_source_publish_cb)(void *arg, void *ctx, zg_pool_t *pool);
/* Called with the children of a discovery root (zg_source_watch_root),
 * sorted by name, whenever they change; the names are borrowed. */
typedef void (*zg_source_children_cb)(void *arg, void *ctx,
                                      const char *const *names, size_t n);

typedef enum {
  ZG_SOURCE_CONNECTING = 0, /* never connected yet in this session */
  ZG_SOURCE_CONNECTED,
  ZG_SOURCE_DISCONNECTED, /* had a session, lost the connection */
  ZG_SOURCE_CLOSED,
} zg_source_state_t;

typedef enum {
  ZG_SOURCE_ZOOKEEPER = 1,
  ZG_SOURCE_ETCD,
} zg_source_kind_t;

typedef struct {
  zg_source_kind_t kind;
  zg_source_state_t state;
  uint64_t disconnected_for_ms; /* 0 while connected */
  uint64_t max_stale_ms;        /* as set; 0: forever */
  uint64_t expiries;            /* sessions lost (expired, or disconnected
                                   past the session timeout) */
  uint64_t watch_events;        /* watches fired */
  int64_t last_update_wall_ms;  /* last pool published; 0: none yet */
  /* ZooKeeper's own books (kind ZG_SOURCE_ZOOKEEPER; zero otherwise). */
  struct {
    uint64_t lists, reads;
    uint64_t checks;       /* stats of the data sweep */
    size_t path_watches;   /* child or exists watches, one a path */
    size_t data_watches;   /* data watches, one an instance at most */
    size_t unwatched;      /* instances read without a data watch */
    uint64_t watch_bytes;  /* estimated SetWatches packet */
    uint64_t watch_budget; /* max_watch_bytes, or lower after a refusal */
  } zk;
  /* etcd's (kind ZG_SOURCE_ETCD; zero otherwise). */
  struct {
    int64_t revision;   /* the highest revision applied */
    uint64_t reads;     /* range reads */
    uint64_t rereads;   /* prefixes read again after a compaction */
    uint64_t failovers; /* moves to another endpoint */
    uint64_t streams;   /* watch streams opened */
    size_t prefixes;    /* watched */
    char endpoint[128]; /* the one in use */
    char error[192];    /* why the last call failed ("" after a success):
                           for /ready */
  } etcd;
} zg_source_stats_t;

/* The operations a source implements. */
typedef struct {
  /* Watches a path's children (a key prefix's keys) as instances, before or
   * after start (also from the callbacks). `endpoint` (may be NULL)
   * selects a named endpoint of the instance data. */
  int (*watch)(zg_source_t *src, const char *path, const char *endpoint,
               void *ctx);
  /* Watches a discovery root: its children are reported by name. A root
   * that vanishes reports nothing (its services stay) until it is back. */
  int (*watch_root)(zg_source_t *src, const char *root, void *ctx);
  /* No callback with `ctx` comes after this (also from the callbacks), and
   * the state file forgets what it watched. */
  void (*unwatch)(zg_source_t *src, void *ctx);
  /* What was watched with `old_ctx` is reported with `new_ctx` from now on
   * (a reloaded service taking over its predecessor's watch and pool). */
  void (*retarget)(zg_source_t *src, void *old_ctx, void *new_ctx);
  /* Loads the state file, then connects in the background. */
  int (*start)(zg_source_t *src);
  /* Closes the connection (shutdown only: may block briefly to say
   * goodbye) and frees the source once its loop handles are closed. Also
   * for a source never started. */
  void (*close)(zg_source_t *src);
  void (*stats)(const zg_source_t *src, zg_source_stats_t *out);
} zg_source_ops_t;

/* The first member of every source's own struct. */
struct zg_source {
  const zg_source_ops_t *ops;
};

static inline int zg_source_watch(zg_source_t *src, const char *path,
                                  const char *endpoint, void *ctx) {
  return src->ops->watch(src, path, endpoint, ctx);
}

static inline int zg_source_watch_root(zg_source_t *src, const char *root,
                                       void *ctx) {
  return src->ops->watch_root(src, root, ctx);
}

static inline void zg_source_unwatch(zg_source_t *src, void *ctx) {
  src->ops->unwatch(src, ctx);
}

static inline void zg_source_retarget(zg_source_t *src, void *old_ctx,
                                      void *new_ctx) {
  src->ops->retarget(src, old_ctx, new_ctx);
}

static inline int zg_source_start(zg_source_t *src) {
  return src->ops->start(src);
}

/* NULL is fine. */
static inline void zg_source_close(zg_source_t *src) {
  if (src)
    src->ops->close(src);
}

static inline void zg_source_stats(const zg_source_t *src,
                                   zg_source_stats_t *out) {
  src->ops->stats(src, out);
}

/* For logs and /ready: "connecting", "connected", "disconnected",
 * "closed". */
static inline const char *zg_source_state_name(zg_source_state_t s) {
  switch (s) {
  case ZG_SOURCE_CONNECTING:
    return "connecting";
  case ZG_SOURCE_CONNECTED:
    return "connected";
  case ZG_SOURCE_DISCONNECTED:
    return "disconnected";
  case ZG_SOURCE_CLOSED:
    return "closed";
  }
  return "unknown";
}

#endif
