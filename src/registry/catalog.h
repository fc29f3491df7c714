/* The catalog: what a registry source does with what it has read, whatever
 * the registry. For every watched path (or key prefix) an entry: the pool
 * last published and its version, the coalescing of a burst of changes
 * into one pool, last-known-good (a lost connection changes no pool),
 * max_stale (past it without the registry, a service has no instance), and
 * the state file (loaded at start, written after changes). The source
 * (registry/zk_source.c for ZooKeeper) reads the registry, keeps each
 * entry's decoded instances, and tells the catalog when they changed
 * (zg_catalog_changed) and how the connection goes (state,
 * disconnected_ms).
 *
 * The source embeds a zg_catalog_t and one zg_catalog_entry_t per watched
 * path (its first member); the fields below marked "source" are the
 * source's to set. Everything runs on the source's loop. */
#ifndef ZKGATE_CATALOG_H
#define ZKGATE_CATALOG_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/instance.h"
#include "core/pool.h"
#include "registry/source.h"
#include "registry/state.h"

typedef struct zg_catalog zg_catalog_t;
typedef struct zg_catalog_entry zg_catalog_entry_t;

/* The instances of `e` now, for its next pool: with `list` NULL, how many
 * there are at most; else fills `list` (shallow copies: zg_pool_new copies
 * them) and returns how many it filled. */
typedef size_t (*zg_catalog_instances_fn)(zg_catalog_entry_t *e,
                                          zg_instance_t *list);
/* The catalog's loop handles are closed: the source may free its memory. */
typedef void (*zg_catalog_closed_cb)(zg_catalog_t *cat);

struct zg_catalog_entry {
  zg_catalog_t *cat;
  void *ctx;      /* the gateway's, given back with each pool */
  int root;       /* a discovery root: its children are reported by name */
  char *path;     /* owned */
  char *endpoint; /* owned; NULL: the instance's main address */
  /* source: */
  unsigned outstanding; /* reads in flight: a publication waits for them */
  int resync; /* a new session forgot the instances: nothing is published
                 until its first read has been applied */
  int synced; /* published at least once (roots: listed once) */
  /* the catalog's: */
  int dirty;            /* a publication is waiting for the window */
  uint64_t last_pub_ms; /* uv_now of the last publication (or its try); 0:
                           none: a change after a quiet window goes at once */
  int stale;     /* past max_stale: the gateway has an empty pool, `published`
                    still holds the last known one */
  int from_file; /* `published` came from the state file and
                    the registry has not confirmed it yet */
  int64_t file_fresh_ms;     /* from_file: known current then (wall) */
  int64_t published_wall_ms; /* when `published` was published */
  uint32_t lists, reads;     /* registry calls since the last publication
                                (source counts; they go on the pool) */
  uint64_t version;
  zg_pool_t *published;
};

struct zg_catalog {
  uv_loop_t *loop;
  const char *registry; /* "ZooKeeper": in messages */
  zg_source_publish_cb cb;
  zg_source_children_cb children_cb;
  void *cb_arg;
  zg_catalog_instances_fn instances;
  /* source: the connection, as stats and /ready see it */
  zg_source_state_t state;
  uint64_t disconnected_ms;     /* uv_now when the connection was lost (or
                                   the start, or before: the state file's) */
  zg_catalog_entry_t **entries; /* watched paths, roots included */
  size_t n_entries, cap_entries;
  uv_timer_t coalesce_timer;
  uint64_t coalesce_ms;
  int64_t last_update_wall_ms;     /* last pool published; 0: none yet */
  char *state_file;                /* NULL: none */
  uint64_t max_stale_ms;           /* 0: forever */
  zg_state_writer_t *state_writer; /* while started, with a state_file */
  int started, closing;
  zg_catalog_closed_cb closed_cb;
};

/* `registry` names the registry in messages. `coalesce_ms`: how long a
 * change waits for others before its entry's pool is published (0: at
 * once). */
void zg_catalog_init(zg_catalog_t *cat, uv_loop_t *loop, const char *registry,
                     uint64_t coalesce_ms, zg_source_publish_cb cb,
                     zg_source_children_cb children_cb, void *cb_arg,
                     zg_catalog_instances_fn instances);
/* Before zg_catalog_start(): the state file (NULL: none) and max_stale. */
int zg_catalog_set_state(zg_catalog_t *cat, const char *state_file,
                         uint64_t max_stale_ms);
/* Sets up an entry for `path` (not yet in the catalog). 0 or UV_ENOMEM. */
int zg_catalog_entry_init(zg_catalog_t *cat, zg_catalog_entry_t *e,
                          const char *path, const char *endpoint, int root);
/* Frees what the entry holds (not the entry). */
void zg_catalog_entry_clear(zg_catalog_entry_t *e);
/* Puts `e` in the catalog (watched with `ctx`). 0 or UV_ENOMEM. */
int zg_catalog_add(zg_catalog_t *cat, zg_catalog_entry_t *e, void *ctx);
/* Takes `e` out: no callback with its ctx comes after this, its pool is
 * dropped, and the state file forgets it. */
void zg_catalog_remove(zg_catalog_t *cat, zg_catalog_entry_t *e);
/* Starts: max_stale counts from now, the state file is loaded (discovery
 * roots' children reported first, then the pools) and kept up to date. */
void zg_catalog_start(zg_catalog_t *cat);
/* The instances of `e` changed: its pool is published after the coalesce
 * window (at once without one), unless it would be the same. */
void zg_catalog_changed(zg_catalog_entry_t *e);
/* The same, without the window (a publication already due). */
void zg_catalog_publish_now(zg_catalog_entry_t *e);
/* A discovery root's children, sorted by name (they are borrowed). */
void zg_catalog_children(zg_catalog_entry_t *e, const char *const *names,
                         size_t n);
/* From a periodic timer while not connected: applies max_stale. */
void zg_catalog_check_stale(zg_catalog_t *cat, uint64_t now);
/* The state file forgets nothing, but wants writing soon. */
void zg_catalog_state_changed(zg_catalog_t *cat);
/* At shutdown, while the entries are still there: the state file is
 * written a last time (off the loop); no publication follows. */
void zg_catalog_close(zg_catalog_t *cat);
/* After zg_catalog_close(), once the source has freed its entries: frees
 * the catalog's own memory and closes its timer. 1 when `cb` comes once
 * that is closed, 0 when there was nothing to wait for (never started). */
int zg_catalog_free(zg_catalog_t *cat, zg_catalog_closed_cb cb);

#endif
